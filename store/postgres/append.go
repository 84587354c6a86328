package postgres

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// entry is one event ready for the writer. Everything that does not
// depend on the chain head (key, JSON, stored changes) is prepared on the
// caller's goroutine.
type entry struct {
	key     string
	skey    []byte // storedKey(key)
	typ     string
	event   []byte
	changes []logchain.Change
}

// request is one Append or AppendBatch waiting for the writer: its entries
// are written in order, all in the same transaction.
type request struct {
	ctx     context.Context
	entries []entry
	done    chan reply // buffered: the writer never blocks on a caller
}

type reply struct {
	res []bonnie.Appended
	err error
}

func prepare(ev *bonnie.Event, changes []bonnie.Change) (entry, error) {
	if ev == nil {
		return entry{}, errors.New("postgres: append: nil event")
	}
	js, err := json.Marshal(ev)
	if err != nil {
		return entry{}, fmt.Errorf("postgres: append: encode event: %w", err)
	}
	e := entry{key: ev.Key(), typ: ev.Type.String(), event: js}
	if e.skey, err = storedKey(e.key); err != nil {
		return entry{}, err
	}
	if len(changes) > 0 {
		e.changes = make([]logchain.Change, len(changes))
		for i, c := range changes {
			e.changes[i] = logchain.FromChange(c)
		}
	}
	return e, nil
}

// storedKey is how an event key is stored: Event.Key is the lower-case hex
// of a SHA-256, kept as its 32 bytes (half the size of the unique index
// every append updates). The hash chain covers the hex text.
func storedKey(k string) ([]byte, error) {
	if len(k) == 2*sha256.Size && strings.ToLower(k) == k {
		if b, err := hex.DecodeString(k); err == nil {
			return b, nil
		}
	}
	return nil, fmt.Errorf("postgres: event key %q is not a lower-case hex SHA-256", k)
}

// loadKey turns a stored key back into Event.Key's form.
func loadKey(b []byte) string { return hex.EncodeToString(b) }

// Append stores ev and its changes (see bonnie.Log). Calls made at the
// same time share one transaction and one commit.
//
// If ctx ends while the call waits for its batch, Append returns ctx.Err()
// but the event may still be appended. Appending it again is safe: it
// returns the position it landed at with dup true. An event whose context
// has already ended when its batch starts is left out of the batch.
//
// The Cause of the changes given is ignored; the log sets it to the
// event's position.
func (l *Log) Append(ctx context.Context, ev *bonnie.Event, changes []bonnie.Change) (bonnie.Position, bool, error) {
	e, err := prepare(ev, changes)
	if err != nil {
		return 0, false, err
	}
	res, err := l.submit(ctx, []entry{e})
	if err != nil {
		return 0, false, err
	}
	return res[0].Position, res[0].Dup, nil
}

// AppendBatch appends entries in order, all in one transaction: either all
// are stored (or found to be duplicates) or none. It shares that
// transaction with concurrent appends (group commit). An entry whose key is
// already in the log, or earlier in entries, stores nothing and reports the
// first position with Dup true. Context cancellation behaves as for Append.
func (l *Log) AppendBatch(ctx context.Context, entries []bonnie.Entry) ([]bonnie.Appended, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	es := make([]entry, len(entries))
	for i, en := range entries {
		var err error
		if es[i], err = prepare(en.Event, en.Changes); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return l.submit(ctx, es)
}

// submit hands entries to the writer and waits for the answer.
func (l *Log) submit(ctx context.Context, es []entry) ([]bonnie.Appended, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &request{ctx: ctx, entries: es, done: make(chan reply, 1)}
	l.mu.RLock()
	if l.closed.Load() {
		l.mu.RUnlock()
		return nil, ErrClosed
	}
	select {
	case l.reqs <- r:
		l.mu.RUnlock()
	case <-ctx.Done():
		l.mu.RUnlock()
		return nil, ctx.Err()
	}
	select {
	case rep := <-r.done:
		return rep.res, rep.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// writer commits batches of requests, one transaction each, on one
// connection at a time (taken from the pool per batch, so that a broken
// connection is replaced).
type writer struct {
	db       *sql.DB
	maxBatch int
	buf      []byte
	stats    struct {
		records, dups, batches, commits atomic.Uint64
	}
}

func newWriter(db *sql.DB, maxBatch int) *writer {
	return &writer{db: db, maxBatch: maxBatch}
}

// run serves requests until reqs is closed and drained. Each round takes
// what is queued, without waiting for more: under load the queue fills
// while the previous batch commits, so batches grow with the load and a
// lone caller pays one commit, never a timer.
func (w *writer) run(reqs <-chan *request) {
	batch := make([]*request, 0, w.maxBatch)
	for {
		r, ok := <-reqs
		if !ok {
			return
		}
		batch = append(batch[:0], r)
		n := len(r.entries)
		runtime.Gosched() // let appenders about to enqueue do so
	gather:
		for n < w.maxBatch {
			select {
			case r, ok := <-reqs:
				if !ok {
					break gather
				}
				batch = append(batch, r)
				n += len(r.entries)
			default:
				break gather
			}
		}
		w.serve(batch)
		clear(batch)
	}
}

// serve writes a batch and answers its callers. If the batch fails, each
// request is retried alone so that one bad request cannot fail the others.
func (w *writer) serve(batch []*request) {
	live := make([]*request, 0, len(batch))
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- reply{err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	w.stats.batches.Add(1)
	res, err := w.commit(live)
	if errors.Is(err, errConnLost) {
		// A connection the server dropped while idle (a restart, a
		// firewall's timeout): try once more on a new one. Appending is
		// idempotent, so this is safe even if the first commit went
		// through (its events are then reported as duplicates).
		res, err = w.commit(live)
	}
	if err == nil {
		for i, r := range live {
			r.done <- reply{res: res[i]}
		}
		return
	}
	if len(live) == 1 {
		live[0].done <- reply{err: err}
		return
	}
	for _, r := range live {
		res, err := w.commit([]*request{r})
		if err != nil {
			r.done <- reply{err: err}
		} else {
			r.done <- reply{res: res[0]}
		}
	}
}

// row is one record to insert, chained.
type row struct {
	rec  logchain.Record
	skey []byte
	typ  string
	prev []byte
	hash []byte
}

// commit writes batch in one transaction and returns each request's
// results: beginAppend (one pipelined round trip: begin, chain lock, head,
// keys already stored), the hashes, then finishAppend (the rows, the
// state, commit).
func (w *writer) commit(batch []*request) (res [][]bonnie.Appended, err error) {
	ctx := context.Background() // a batch is never cancelled half-way by one caller
	var keys [][]byte
	for _, r := range batch {
		for k := range r.entries {
			keys = append(keys, r.entries[k].skey)
		}
	}
	err = w.withConn(ctx, func(c *pgx.Conn) error {
		head, prev, known, err := beginAppend(ctx, c, keys)
		if err != nil {
			return err
		}
		res = make([][]bonnie.Appended, len(batch))
		var rows []row
		seen := make(map[string]bonnie.Position, len(keys))
		for i, r := range batch {
			res[i] = make([]bonnie.Appended, len(r.entries))
			for k := range r.entries {
				e := &r.entries[k]
				if p, ok := known[string(e.skey)]; ok {
					res[i][k] = bonnie.Appended{Position: p, Dup: true}
					continue
				}
				if p, ok := seen[e.key]; ok {
					res[i][k] = bonnie.Appended{Position: p, Dup: true}
					continue
				}
				id, err := uuid.NewV7()
				if err != nil {
					return fmt.Errorf("postgres: append: uuid: %w", err)
				}
				rw := row{rec: logchain.Record{
					Position: head + 1,
					ID:       id.String(),
					Key:      e.key,
					Appended: logchain.FormatTime(time.Now()),
					Event:    e.event,
					Changes:  e.changes,
				}, skey: e.skey, typ: e.typ, prev: prev}
				w.buf = logchain.AppendCanonical(w.buf[:0], &rw.rec)
				rw.hash = logchain.HashCanonical(prev, w.buf)
				rows = append(rows, rw)
				head, prev = rw.rec.Position, rw.hash
				seen[e.key] = head
				res[i][k] = bonnie.Appended{Position: head}
			}
		}
		if err := finishAppend(ctx, c, rows); err != nil {
			return err
		}
		w.stats.records.Add(uint64(len(rows)))
		w.stats.dups.Add(uint64(len(keys) - len(rows)))
		return nil
	})
	if err != nil {
		return nil, err
	}
	w.stats.commits.Add(1)
	return res, nil
}

// withConn runs fn on a pool connection as a pgx.Conn, and rolls back
// whatever transaction fn left open (after an error).
func (w *writer) withConn(ctx context.Context, fn func(c *pgx.Conn) error) error {
	return withPgx(ctx, w.db, fn)
}

// errConnLost marks an error after which the connection was found closed.
var errConnLost = errors.New("postgres: connection lost")

func withPgx(ctx context.Context, db *sql.DB, fn func(c *pgx.Conn) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("postgres: connect: %w", err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		err := fn(c)
		if err != nil && c.IsClosed() {
			return fmt.Errorf("%w: %w", errConnLost, err)
		}
		if c.PgConn().TxStatus() != 'I' && !c.IsClosed() {
			if _, rerr := c.Exec(ctx, "ROLLBACK"); rerr != nil {
				err = errors.Join(err, fmt.Errorf("postgres: rollback: %w", rerr))
			}
		}
		return err
	})
}

// beginAppend begins a transaction, takes the chain lock, and reads the
// head and which of keys are stored already, in one round trip. Each
// statement takes its own snapshot (READ COMMITTED), after the lock: the
// head read is the head every other appender left.
func beginAppend(ctx context.Context, c *pgx.Conn, keys [][]byte) (head bonnie.Position, prev []byte, known map[string]bonnie.Position, err error) {
	b := &pgx.Batch{}
	b.Queue(`BEGIN ISOLATION LEVEL READ COMMITTED`)
	b.Queue(lockChain)
	b.Queue(`SELECT position, hash FROM records ORDER BY position DESC LIMIT 1`)
	b.Queue(`SELECT key, position FROM records WHERE key = ANY($1)`, keys)
	br := c.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("postgres: append: %w", cerr)
		}
	}()
	if _, err = br.Exec(); err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: append: begin: %w", err)
	}
	if _, err = br.Exec(); err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: append: chain lock: %w", err)
	}
	var p int64
	switch err = br.QueryRow().Scan(&p, &prev); {
	case errors.Is(err, pgx.ErrNoRows):
		p, prev, err = 0, logchain.Genesis(), nil
	case err != nil:
		return 0, nil, nil, fmt.Errorf("postgres: append: read head: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: append: find duplicates: %w", err)
	}
	known = make(map[string]bonnie.Position)
	for rows.Next() {
		var k []byte
		var kp int64
		if err := rows.Scan(&k, &kp); err != nil {
			rows.Close()
			return 0, nil, nil, fmt.Errorf("postgres: append: find duplicates: %w", err)
		}
		known[string(k)] = bonnie.Position(kp)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, nil, nil, fmt.Errorf("postgres: append: find duplicates: %w", err)
	}
	return bonnie.Position(p), prev, known, nil
}

// Bulk statements: one each for the records, the changes and the state
// of a batch, from arrays.
const (
	insRecords = `INSERT INTO records (position, id, key, appended, type, event, prev_hash, hash)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::bytea[])`
	insChanges = `INSERT INTO changes (position, seq, entity, id, field, from_value, to_value, actor, time)
SELECT * FROM unnest($1::bigint[], $2::int[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[], $7::bytea[], $8::bytea[], $9::text[])`
	// upState keeps the last change of every field in (position, seq)
	// order. The batch gives each (entity, id, field) once (the last), as
	// ON CONFLICT may touch a row only once per statement.
	upState = `INSERT INTO entity_state AS s (entity, id, field, value, time, position, seq)
SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::text[], $6::bigint[], $7::int[])
ON CONFLICT (entity, id, field) DO UPDATE SET
	value = excluded.value, time = excluded.time, position = excluded.position, seq = excluded.seq
WHERE (excluded.position, excluded.seq) > (s.position, s.seq)`
)

// copyMin is the batch size from which finishAppend sends the records and
// the changes with COPY: two more round trips than the pipelined INSERTs,
// but about half the server's time per event (measured: 24 against 60 µs
// per record of 4 KB).
const copyMin = 16

// finishAppend inserts rows (already chained), their changes and the
// entity state, and commits: in one pipelined round trip for a small
// batch, with COPY for a larger one.
func finishAppend(ctx context.Context, c *pgx.Conn, rows []row) (err error) {
	cols := columnsOf(rows)
	b := &pgx.Batch{}
	if len(rows) >= copyMin {
		if _, err := c.CopyFrom(ctx, pgx.Identifier{"records"}, recordCols, pgx.CopyFromSlice(len(rows), cols.recordRow)); err != nil {
			return fmt.Errorf("postgres: append: copy records: %w", err)
		}
		if len(cols.cpos) > 0 {
			if _, err := c.CopyFrom(ctx, pgx.Identifier{"changes"}, changeColNames, pgx.CopyFromSlice(len(cols.cpos), cols.changeRow)); err != nil {
				return fmt.Errorf("postgres: append: copy changes: %w", err)
			}
		}
	} else if len(rows) > 0 {
		b.Queue(insRecords, cols.pos, cols.ids, cols.keys, cols.apps, cols.types, cols.events, cols.prevs, cols.hashes)
		if len(cols.cpos) > 0 {
			b.Queue(insChanges, cols.cpos, cols.cseq, cols.ent, cols.id, cols.fld, cols.from, cols.to, cols.act, cols.tm)
		}
	}
	if len(cols.sEnt) > 0 {
		b.Queue(upState, cols.sEnt, cols.sID, cols.sFld, cols.sVal, cols.sTm, cols.sPos, cols.sSeq)
	}
	b.Queue(`COMMIT`)
	br := c.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("postgres: append: %w", cerr)
		}
	}()
	for range b.Len() - 1 {
		if _, err = br.Exec(); err != nil {
			return fmt.Errorf("postgres: append: insert: %w", err)
		}
	}
	if _, err = br.Exec(); err != nil {
		return fmt.Errorf("postgres: append: commit: %w", err)
	}
	return nil
}

var (
	recordCols     = []string{"position", "id", "key", "appended", "type", "event", "prev_hash", "hash"}
	changeColNames = []string{"position", "seq", "entity", "id", "field", "from_value", "to_value", "actor", "time"}
)

// columns are a batch's rows as column arrays: the records, their changes,
// and the entity state they leave (the last change of each field).
type columns struct {
	pos                         []int64
	ids, apps, types, events    []string
	keys, prevs, hashes         [][]byte
	cpos                        []int64
	cseq                        []int32
	ent, id, fld, from, to, act [][]byte
	tm                          []string
	sEnt, sID, sFld, sVal       [][]byte
	sTm                         []string
	sPos                        []int64
	sSeq                        []int32
}

func columnsOf(rows []row) *columns {
	n := len(rows)
	c := &columns{
		pos: make([]int64, n), ids: make([]string, n), apps: make([]string, n), types: make([]string, n), events: make([]string, n),
		keys: make([][]byte, n), prevs: make([][]byte, n), hashes: make([][]byte, n),
	}
	type fieldKey struct{ entity, id, field string }
	last := map[fieldKey]int{} // index in the change columns of the last change of each field
	for i := range rows {
		r := &rows[i]
		c.pos[i], c.ids[i], c.keys[i], c.apps[i], c.types[i], c.events[i], c.prevs[i], c.hashes[i] =
			int64(r.rec.Position), r.rec.ID, r.skey, r.rec.Appended, r.typ, string(r.rec.Event), r.prev, r.hash
		for k := range r.rec.Changes {
			ch := &r.rec.Changes[k]
			last[fieldKey{ch.Entity, ch.ID, ch.Field}] = len(c.cpos)
			c.cpos, c.cseq, c.tm = append(c.cpos, int64(r.rec.Position)), append(c.cseq, int32(k)), append(c.tm, ch.Time)
			c.ent, c.id, c.fld = append(c.ent, []byte(ch.Entity)), append(c.id, []byte(ch.ID)), append(c.fld, []byte(ch.Field))
			c.from, c.to, c.act = append(c.from, []byte(ch.From)), append(c.to, []byte(ch.To)), append(c.act, []byte(ch.Actor))
		}
	}
	// The state statement gives each field once, in change order, so that
	// ON CONFLICT touches a row once and the statement is deterministic.
	for i := range c.cpos {
		if last[fieldKey{string(c.ent[i]), string(c.id[i]), string(c.fld[i])}] != i {
			continue
		}
		c.sEnt, c.sID, c.sFld, c.sVal = append(c.sEnt, c.ent[i]), append(c.sID, c.id[i]), append(c.sFld, c.fld[i]), append(c.sVal, c.to[i])
		c.sTm, c.sPos, c.sSeq = append(c.sTm, c.tm[i]), append(c.sPos, c.cpos[i]), append(c.sSeq, c.cseq[i])
	}
	return c
}

func (c *columns) recordRow(i int) ([]any, error) {
	return []any{c.pos[i], c.ids[i], c.keys[i], c.apps[i], c.types[i], c.events[i], c.prevs[i], c.hashes[i]}, nil
}

func (c *columns) changeRow(i int) ([]any, error) {
	return []any{c.cpos[i], c.cseq[i], c.ent[i], c.id[i], c.fld[i], c.from[i], c.to[i], c.act[i], c.tm[i]}, nil
}

// Stats counts the writer's work since Open, to see group commit at work.
type Stats struct {
	// Records and Duplicates count the entries committed: stored, or found
	// already in the log.
	Records, Duplicates uint64
	// Batches is how many rounds the writer ran; Commits how many
	// transactions committed. Records/Commits is the mean group size.
	Batches, Commits uint64
}

// Stats returns the writer's counters.
func (l *Log) Stats() Stats {
	s := &l.w.stats
	return Stats{Records: s.records.Load(), Duplicates: s.dups.Load(), Batches: s.batches.Load(), Commits: s.commits.Load()}
}
