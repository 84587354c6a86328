package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/jmoiron/sqlx"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// Read returns up to limit records after from, in position order, with
// their events decoded from the stored JSON and their changes. A limit of
// zero or less returns nothing. The records and their changes come from
// one snapshot. With SyncFull only durable records are returned: a sink
// never acts on a record that a power failure could take back.
func (l *Log) Read(ctx context.Context, from bonnie.Position, limit int) ([]bonnie.Record, error) {
	recs, _, err := l.read(ctx, from, limit, bonnie.AllEvents)
	return recs, err
}

// ReadMatching is Read for a reader that wants only the event types of
// mask (bonnie.FilteredReader): it scans up to limit records after from
// but returns only those whose type is in mask, and never loads nor
// decodes the others (the records table's type column says what each
// is). last is the position of the last record scanned, from when none
// was: a reader continues from there.
func (l *Log) ReadMatching(ctx context.Context, from bonnie.Position, limit int, mask bonnie.EventMask) ([]bonnie.Record, bonnie.Position, error) {
	return l.read(ctx, from, limit, mask)
}

func (l *Log) read(ctx context.Context, from bonnie.Position, limit int, mask bonnie.EventMask) ([]bonnie.Record, bonnie.Position, error) {
	if err := l.check(); err != nil {
		return nil, from, err
	}
	if limit <= 0 {
		return nil, from, nil
	}
	// The types wanted, as the type column spells them; nil is all.
	var wanted map[string]bool
	var inList string
	var inArgs []any
	if mask != bonnie.AllEvents {
		wanted = make(map[string]bool)
		for _, t := range mask.Types() {
			wanted[t.String()] = true
			inArgs = append(inArgs, t.String())
		}
		inList = "(" + strings.TrimSuffix(strings.Repeat("?,", len(inArgs)), ",") + ")"
		if len(inArgs) == 0 {
			inList = "(NULL)"
		}
	}
	tx, err := l.rdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, from, fmt.Errorf("sqlite: read: %w", err)
	}
	defer tx.Rollback()
	headSt, err := l.reads.headStmt(ctx)
	if err != nil {
		return nil, from, err
	}
	var head int64 // also starts the snapshot, before bound looks at the writer
	if err := tx.StmtContext(ctx, headSt).QueryRowContext(ctx).Scan(&head); err != nil {
		return nil, from, fmt.Errorf("sqlite: read: %w", err)
	}
	upto := l.bound(bonnie.Position(head))
	pageSt, done, err := l.reads.page(ctx, tx, mask)
	if err != nil {
		return nil, from, err
	}
	defer done()
	rows, err := pageSt.QueryContext(ctx, int64(from), int64(upto), limit)
	if err != nil {
		return nil, from, fmt.Errorf("sqlite: read: %w", err)
	}
	defer rows.Close()
	last := from
	var (
		recs []bonnie.Record
		outs []*decoded
		// Records appended before schema version 2 have no copy of their
		// changes in the row: those come from the changes table.
		oldest, newest bonnie.Position
	)
	// The events and changes are decoded on every core while this
	// goroutine steps through the rows.
	dec := newDecodePool()
	defer dec.wait()
	for rows.Next() {
		var (
			r        bonnie.Record
			appended string
			typ      string
			js       sql.NullString
			chs      []byte
			key      any
		)
		if err := rows.Scan(&r.Position, &r.ID, &key, &appended, &typ, &js, &r.PrevHash, &r.Hash, &chs); err != nil {
			return nil, from, fmt.Errorf("sqlite: read: %w", err)
		}
		last = r.Position
		if wanted != nil && !wanted[typ] {
			continue
		}
		if !js.Valid {
			return nil, from, fmt.Errorf("sqlite: read record %d: no event", r.Position)
		}
		if r.Key, err = loadKey(key); err != nil {
			return nil, from, err
		}
		if r.Appended, err = logchain.ParseTime(appended); err != nil {
			return nil, from, fmt.Errorf("sqlite: read record %d: %w", r.Position, err)
		}
		d := &decoded{fromTable: chs == nil}
		if d.fromTable {
			if oldest == 0 {
				oldest = r.Position
			}
			newest = r.Position
		}
		r.Event = &d.ev
		dec.add(decodeJob{pos: r.Position, js: js.String, chs: chs, out: d})
		recs = append(recs, r)
		outs = append(outs, d)
	}
	if err := rows.Err(); err != nil {
		return nil, from, fmt.Errorf("sqlite: read: %w", err)
	}
	rows.Close()
	tx.Rollback() // done with the snapshot: free the connection
	if len(recs) == 0 {
		return nil, last, nil
	}
	if err := dec.wait(); err != nil {
		return nil, from, err
	}
	for i, d := range outs {
		recs[i].Changes = d.chs
	}
	if oldest != 0 {
		// The changes are committed with their record and never change:
		// reading them after the snapshot is the same as reading them in it.
		q := `SELECT ` + changeCols + ` FROM changes WHERE position >= ? AND position <= ?`
		qArgs := []any{int64(oldest), int64(newest)}
		if wanted != nil {
			q += ` AND position IN (SELECT position FROM records WHERE position >= ? AND position <= ? AND type IN ` + inList + `)`
			qArgs = append(qArgs, int64(oldest), int64(newest))
			qArgs = append(qArgs, inArgs...)
		}
		chs, err := queryChanges(ctx, l.rdb, q+` ORDER BY position, seq`, qArgs)
		if err != nil {
			return nil, from, err
		}
		var old []bonnie.Record
		var idx []int
		for i, d := range outs {
			if d.fromTable {
				old = append(old, recs[i])
				idx = append(idx, i)
			}
		}
		if err := attachChanges(old, chs); err != nil {
			return nil, from, err
		}
		for k, i := range idx {
			recs[i].Changes = old[k].Changes
		}
	}
	return recs, last, nil
}

// queryChanges reads changes with query, in position order, Cause set to
// their record's position, with a plain Scan (sqlx's reflection cost more
// than the rest).
func queryChanges(ctx context.Context, db *sqlx.DB, query string, args []any) ([]bonnie.Change, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read changes: %w", err)
	}
	defer rows.Close()
	var (
		out   []bonnie.Change
		c     changeRow
		ptime string // the changes of one event share its time: parse it once
		t     time.Time
	)
	for rows.Next() {
		if err := rows.Scan(&c.Position, &c.Seq, &c.Entity, &c.ID, &c.Field, &c.From, &c.To, &c.Actor, &c.Time); err != nil {
			return nil, fmt.Errorf("sqlite: read changes: %w", err)
		}
		if c.Time != ptime || t.IsZero() {
			if t, err = logchain.ParseTime(c.Time); err != nil {
				return nil, fmt.Errorf("sqlite: change %d/%d: %w", c.Position, c.Seq, err)
			}
			ptime = c.Time
		}
		out = append(out, bonnie.Change{
			Entity: bonnie.EntityKind(c.Entity), ID: c.ID, Field: c.Field, From: c.From, To: c.To,
			Actor: c.Actor, Time: t, Cause: bonnie.Position(c.Position),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read changes: %w", err)
	}
	return out, nil
}

// attachChanges hands each record (recs in position order) its changes
// (in position order); every change must have its record.
func attachChanges(recs []bonnie.Record, chs []bonnie.Change) error {
	i := 0
	for k, c := range chs {
		for i < len(recs) && recs[i].Position < c.Cause {
			i++
		}
		if i == len(recs) || recs[i].Position != c.Cause {
			return fmt.Errorf("sqlite: read: change for position %d without a record", c.Cause)
		}
		// Full slice expression: a sink appending to one record's changes
		// must not overwrite the next record's.
		j := k
		for j < len(chs) && chs[j].Cause == c.Cause {
			j++
		}
		if recs[i].Changes == nil {
			recs[i].Changes = chs[k:j:j]
		}
	}
	return nil
}

// decodePool decodes stored events on GOMAXPROCS goroutines, started on
// the first add, handing them batches of decodeBatch events (one wake-up
// per batch, not per event).
type decodePool struct {
	jobs    chan []decodeJob
	batch   []decodeJob
	wg      sync.WaitGroup
	mu      sync.Mutex
	errPos  bonnie.Position
	err     error
	started bool
	done    bool
}

const decodeBatch = 16

type decodeJob struct {
	pos bonnie.Position
	js  string
	chs []byte // the record's changes column; nil: read from the table
	out *decoded
}

// decoded is where a job puts a record's event and changes: one
// allocation per record, not moved while the workers write to it.
type decoded struct {
	ev        bonnie.Event
	chs       []bonnie.Change
	fromTable bool
}

func newDecodePool() *decodePool { return &decodePool{} }

func (p *decodePool) add(j decodeJob) {
	if !p.started {
		p.started = true
		p.jobs = make(chan []decodeJob, 64)
		for range runtime.GOMAXPROCS(0) {
			p.wg.Go(p.work)
		}
	}
	if p.batch == nil {
		p.batch = make([]decodeJob, 0, decodeBatch)
	}
	p.batch = append(p.batch, j)
	if len(p.batch) == decodeBatch {
		p.jobs <- p.batch
		p.batch = nil
	}
}

func (p *decodePool) work() {
	for batch := range p.jobs {
		for _, j := range batch {
			// The decoder only reads its input: a view of the string
			// saves copying the stored text once more.
			err := decodeEvent(unsafe.Slice(unsafe.StringData(j.js), len(j.js)), &j.out.ev)
			if err != nil {
				err = fmt.Errorf("sqlite: read record %d: decode event: %w", j.pos, err)
			} else if j.chs != nil {
				j.out.chs, err = decodeChanges(j.chs, j.pos)
			}
			if err != nil {
				p.mu.Lock()
				if p.err == nil || j.pos < p.errPos {
					p.err = err
					p.errPos = j.pos
				}
				p.mu.Unlock()
			}
		}
	}
}

// wait waits for every event added to be decoded and returns the error
// of the first (in log order) that could not be; it may be called again.
func (p *decodePool) wait() error {
	if p.started && !p.done {
		p.done = true
		if len(p.batch) > 0 {
			p.jobs <- p.batch
			p.batch = nil
		}
		close(p.jobs)
		p.wg.Wait()
	}
	return p.err
}

const changeCols = `position, seq, entity, id, field, from_value, to_value, actor, time`

// changeRow is a changes row as stored.
type changeRow struct {
	Position int64  `db:"position"`
	Seq      int64  `db:"seq"`
	Entity   string `db:"entity"`
	ID       string `db:"id"`
	Field    string `db:"field"`
	From     string `db:"from_value"`
	To       string `db:"to_value"`
	Actor    string `db:"actor"`
	Time     string `db:"time"`
}

func (c *changeRow) change() (bonnie.Change, error) {
	t, err := logchain.ParseTime(c.Time)
	if err != nil {
		return bonnie.Change{}, fmt.Errorf("sqlite: change %d/%d: %w", c.Position, c.Seq, err)
	}
	return bonnie.Change{
		Entity: bonnie.EntityKind(c.Entity), ID: c.ID, Field: c.Field, From: c.From, To: c.To,
		Actor: c.Actor, Time: t, Cause: bonnie.Position(c.Position),
	}, nil
}

func (c *changeRow) stored() logchain.Change {
	return logchain.Change{Entity: c.Entity, ID: c.ID, Field: c.Field, From: c.From, To: c.To, Actor: c.Actor, Time: c.Time}
}

// Head returns the position of the last record Read can return (0 when
// empty): the last committed one, and with SyncFull the last durable one.
func (l *Log) Head(ctx context.Context) (bonnie.Position, error) {
	if err := l.check(); err != nil {
		return 0, err
	}
	st, err := l.reads.headStmt(ctx)
	if err != nil {
		return 0, err
	}
	var p int64
	if err := st.QueryRowContext(ctx).Scan(&p); err != nil {
		return 0, fmt.Errorf("sqlite: head: %w", err)
	}
	return l.bound(bonnie.Position(p)), nil
}

// History returns every change of one entity in log order, each with Cause
// set to the position of the record that made it.
func (l *Log) History(ctx context.Context, kind bonnie.EntityKind, id string) ([]bonnie.Change, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var rows []changeRow
	if err := l.rdb.SelectContext(ctx, &rows, `SELECT `+changeCols+` FROM changes
WHERE entity = ? AND id = ? ORDER BY position, seq`, string(kind), id); err != nil {
		return nil, fmt.Errorf("sqlite: history: %w", err)
	}
	out := make([]bonnie.Change, 0, len(rows))
	for i := range rows {
		c, err := rows[i].change()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// StateAt folds an entity's changes into field -> value (see bonnie.Log).
// Changes are folded in log order (position, then the order the setters
// recorded them), which is the order they were applied in, so that every
// change's From is the value the fold had just before it; at only selects
// the changes whose event time is not after it. (Cyrus's arrival order is
// not timestamp order, and ordering by time would fold a chain of from/to
// values out of its own sequence.) A zero at reads the current state, kept
// in the entity_state table by every append.
func (l *Log) StateAt(ctx context.Context, kind bonnie.EntityKind, id string, at time.Time) (map[string]string, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var (
		rows *sql.Rows
		err  error
	)
	if at.IsZero() {
		rows, err = l.rdb.QueryContext(ctx, `SELECT field, value FROM entity_state
WHERE entity = ? AND id = ? AND value <> ''`, string(kind), id)
	} else {
		rows, err = l.rdb.QueryContext(ctx, `SELECT field, to_value FROM changes
WHERE entity = ? AND id = ? AND time <= ? ORDER BY position, seq`, string(kind), id, logchain.FormatTime(at))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: state: %w", err)
	}
	defer rows.Close()
	state := make(map[string]string)
	for rows.Next() {
		var f, v string
		if err := rows.Scan(&f, &v); err != nil {
			return nil, fmt.Errorf("sqlite: state: %w", err)
		}
		if v == "" {
			delete(state, f)
		} else {
			state[f] = v
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: state: %w", err)
	}
	return state, nil
}

// Anchor is a (position, hash) pair to keep outside the database (print
// it, mail it, have it timestamped). It is what lets VerifyAnchored detect
// a removed or rewritten tail, which the chain alone cannot (see
// internal/logchain).
type Anchor = logchain.Anchor

// HeadHash returns the last record's position and hash, the anchor to keep
// outside the database. An empty log returns position 0 and the genesis
// hash (32 zero bytes).
func (l *Log) HeadHash(ctx context.Context) (Anchor, error) {
	if err := l.check(); err != nil {
		return Anchor{}, err
	}
	var a Anchor
	var p int64
	err := l.rdb.QueryRowContext(ctx, `SELECT position, hash FROM records ORDER BY position DESC LIMIT 1`).Scan(&p, &a.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return Anchor{Hash: logchain.Genesis()}, nil
	}
	if err != nil {
		return Anchor{}, fmt.Errorf("sqlite: head hash: %w", err)
	}
	a.Position = bonnie.Position(p)
	return a, nil
}

// RecordHash returns the hash stored for the record at pos, for checking
// against a copy kept elsewhere. It wraps ErrNotFound if there is none.
func (l *Log) RecordHash(ctx context.Context, pos bonnie.Position) ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var h []byte
	err := l.rdb.QueryRowContext(ctx, `SELECT hash FROM records WHERE position = ?`, int64(pos)).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: record %d: %w", pos, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: record hash: %w", err)
	}
	return h, nil
}
