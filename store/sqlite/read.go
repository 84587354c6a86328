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
	// The head is read before bound looks at the writer (see bound).
	head, err := l.committedHead(ctx)
	if err != nil {
		return nil, from, err
	}
	upto := l.bound(head)
	// Positions are contiguous (1, 2, ...), so the page is the range
	// (from, end]. A long page is read as several shorter ranges at once,
	// each on its own connection, stepped and decoded by its own goroutine:
	// stepping SQLite's rows is as much work as decoding them, and one
	// goroutine stepping kept the other cores waiting. The records up to
	// upto are committed and never change, so every connection reads the
	// same rows whatever its snapshot. No range holds a connection while
	// it waits for another (several readers at once cannot deadlock on
	// the pool).
	end := upto
	if upto > from && uint64(upto-from) > uint64(limit) {
		end = from + bonnie.Position(limit)
	}
	if end <= from {
		return nil, from, nil
	}
	n := int(end - from)
	shards := 1
	if n >= 2*minShard {
		want := l.cfg.shards
		if want <= 0 {
			want = runtime.GOMAXPROCS(0)
		}
		shards = max(1, min(want, n/minShard, maxShards))
	}
	parts := make([]readShard, shards)
	var wg sync.WaitGroup
	for i := range parts {
		lo := from + bonnie.Position(n*i/shards)
		hi := from + bonnie.Position(n*(i+1)/shards)
		run := func() { parts[i] = l.readRange(ctx, lo, hi, mask) }
		if i == shards-1 {
			run()
			continue
		}
		wg.Go(run)
	}
	wg.Wait()
	total := 0
	last := from
	for i := range parts {
		if parts[i].err != nil {
			return nil, from, parts[i].err
		}
		total += len(parts[i].recs)
		last = max(last, parts[i].last)
	}
	recs := parts[0].recs
	if shards > 1 {
		recs = make([]bonnie.Record, 0, total)
		for i := range parts {
			recs = append(recs, parts[i].recs...)
		}
	}
	if err := l.oldChanges(ctx, recs, parts, mask); err != nil {
		return nil, from, err
	}
	if len(recs) == 0 {
		return nil, last, nil
	}
	return recs, last, nil
}

// minShard is the fewest records a shard of a page reads; maxShards
// bounds the connections one page takes (the log opens 4 for readers).
const (
	minShard  = 256
	maxShards = 4
)

// readShard is what one range of a page gave.
type readShard struct {
	recs []bonnie.Record
	last bonnie.Position
	// old lists the indexes in recs of records appended before schema
	// version 2, whose changes are not in their row.
	old []int
	err error
}

// readRange reads the records in (lo, hi] whose type is in mask, decoded.
func (l *Log) readRange(ctx context.Context, lo, hi bonnie.Position, mask bonnie.EventMask) (out readShard) {
	out.last = lo
	st, done, err := l.reads.page(ctx, mask)
	if err != nil {
		out.err = err
		return out
	}
	defer done()
	rows, err := st.QueryContext(ctx, int64(lo), int64(hi), int64(hi-lo))
	if err != nil {
		out.err = fmt.Errorf("sqlite: read: %w", err)
		return out
	}
	defer rows.Close()
	// The events are allocated a block at a time, not one by one; a
	// reader of every event gets the range's in one block, a selective
	// one blocks of 64 (most records of its range are not decoded).
	block := 64
	if mask == bonnie.AllEvents {
		block = int(hi - lo)
		out.recs = make([]bonnie.Record, 0, block)
	}
	var evs []bonnie.Event
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
			out.err = fmt.Errorf("sqlite: read: %w", err)
			return out
		}
		out.last = r.Position
		if !js.Valid {
			if mask != bonnie.AllEvents {
				if t, ok := bonnie.ParseEventType(typ); !ok || !mask.Has(t) {
					continue // not wanted: the query left its text unread
				}
			}
			out.err = fmt.Errorf("sqlite: read record %d: no event", r.Position)
			return out
		}
		if r.Key, err = loadKey(key); err != nil {
			out.err = err
			return out
		}
		if r.Appended, err = logchain.ParseTime(appended); err != nil {
			out.err = fmt.Errorf("sqlite: read record %d: %w", r.Position, err)
			return out
		}
		if len(evs) == cap(evs) {
			evs = make([]bonnie.Event, 0, block) // earlier events stay where they are
		}
		evs = append(evs, bonnie.Event{})
		ev := &evs[len(evs)-1]
		if err := decodeEventString(js.String, ev); err != nil {
			out.err = fmt.Errorf("sqlite: read record %d: decode event: %w", r.Position, err)
			return out
		}
		r.Event = ev
		if chs == nil {
			out.old = append(out.old, len(out.recs))
		} else if r.Changes, err = decodeChanges(chs, r.Position); err != nil {
			out.err = fmt.Errorf("sqlite: read record %d: decode event: %w", r.Position, err)
			return out
		}
		out.recs = append(out.recs, r)
	}
	if err := rows.Err(); err != nil {
		out.err = fmt.Errorf("sqlite: read: %w", err)
	}
	return out
}

// oldChanges attaches their changes, from the changes table, to the
// records appended before schema version 2 (which have no copy in their
// row). The changes are committed with their record and never change:
// reading them after the snapshot is the same as reading them in it.
func (l *Log) oldChanges(ctx context.Context, recs []bonnie.Record, parts []readShard, mask bonnie.EventMask) error {
	var old []bonnie.Record
	var idx []int
	base := 0
	for i := range parts {
		for _, k := range parts[i].old {
			old = append(old, recs[base+k])
			idx = append(idx, base+k)
		}
		base += len(parts[i].recs)
	}
	if len(old) == 0 {
		return nil
	}
	oldest, newest := old[0].Position, old[len(old)-1].Position
	q := `SELECT ` + changeCols + ` FROM changes WHERE position >= ? AND position <= ?`
	qArgs := []any{int64(oldest), int64(newest)}
	if mask != bonnie.AllEvents {
		in := []string{"NULL"}
		qArgs = append(qArgs, int64(oldest), int64(newest))
		for _, t := range mask.Types() {
			in = append(in, "?")
			qArgs = append(qArgs, t.String())
		}
		q += ` AND position IN (SELECT position FROM records WHERE position >= ? AND position <= ? AND type IN (` + strings.Join(in, ",") + `))`
	}
	chs, err := queryChanges(ctx, l.rdb, q+` ORDER BY position, seq`, qArgs)
	if err != nil {
		return err
	}
	if err := attachChanges(old, chs); err != nil {
		return err
	}
	for k, i := range idx {
		recs[i].Changes = old[k].Changes
	}
	return nil
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
	head, err := l.committedHead(ctx)
	if err != nil {
		return 0, err
	}
	return l.bound(head), nil
}

// committedHead is the highest position committed, durable or not.
func (l *Log) committedHead(ctx context.Context) (bonnie.Position, error) {
	st, err := l.reads.headStmt(ctx)
	if err != nil {
		return 0, err
	}
	var p int64
	if err := st.QueryRowContext(ctx).Scan(&p); err != nil {
		return 0, fmt.Errorf("sqlite: head: %w", err)
	}
	return bonnie.Position(p), nil
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
