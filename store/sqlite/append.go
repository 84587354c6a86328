package sqlite

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

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// entry is one event ready for the writer. Everything that does not
// depend on the chain head (the key, the JSON, the stored form of the
// changes) is prepared by the caller's goroutine, so that this work runs in
// parallel and the single writer only hashes and inserts.
type entry struct {
	key     string
	skey    any // storedKey(key)
	typ     string
	event   []byte
	changes []logchain.Change
}

// request is one Append or AppendBatch waiting for the writer: its entries
// are written in order, all in the same transaction.
type request struct {
	ctx     context.Context
	entries []entry
	done    chan reply        // buffered: the writer never blocks on a caller
	res     []bonnie.Appended // set by the writer's commit
}

type reply struct {
	res []bonnie.Appended
	err error
}

func prepare(ev *bonnie.Event, changes []bonnie.Change) (entry, error) {
	if ev == nil {
		return entry{}, errors.New("sqlite: append: nil event")
	}
	js, err := json.Marshal(ev)
	if err != nil {
		return entry{}, fmt.Errorf("sqlite: append: encode event: %w", err)
	}
	e := entry{key: ev.Key(), typ: ev.Type.String(), event: js}
	e.skey = storedKey(e.key)
	if len(changes) > 0 {
		e.changes = make([]logchain.Change, len(changes))
		for i, c := range changes {
			e.changes[i] = logchain.FromChange(c)
		}
	}
	return e, nil
}

// Append stores ev and its changes (see bonnie.Log). Calls made at the
// same time share one transaction and one fsync.
//
// If ctx ends while the call waits for its batch, Append returns ctx.Err()
// but the event may still be appended (it may already be in a transaction
// being written). Appending it again is safe: it returns the position it
// landed at with dup true. An event whose context has already ended when
// its batch starts is left out of the batch.
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

// storedKey is how an event key is stored: Event.Key is the lower-case hex
// of a SHA-256, kept as its 32 bytes, which halves the unique index that
// every append updates at a random place (measured: about 10% more appends
// per second, and a dedupe index twice as likely to stay in the cache). A
// key of any other form is stored as text. The hash chain covers the hex
// text either way (see loadKey).
func storedKey(k string) any {
	if len(k) == 2*sha256.Size && strings.ToLower(k) == k {
		if b, err := hex.DecodeString(k); err == nil {
			return b
		}
	}
	return k
}

// loadKey turns a stored key back into Event.Key's form.
func loadKey(v any) (string, error) {
	switch k := v.(type) {
	case []byte:
		return hex.EncodeToString(k), nil
	case string:
		return k, nil
	default:
		return "", fmt.Errorf("sqlite: stored key of type %T", v)
	}
}

// writer owns the write connection and its prepared statements; only its
// goroutine uses them.
type writer struct {
	conn       *sql.Conn
	maxBatch   int
	head       *sql.Stmt
	begin      *sql.Stmt
	rollback   *sql.Stmt
	commitStmt *sql.Stmt
	insRec     *sql.Stmt
	selKey     *sql.Stmt
	insChg     *sql.Stmt
	upState    *sql.Stmt
	buf        []byte
	chbuf      []byte // the changes column of the record being inserted
	seen       map[string]bonnie.Position
	ckpt       *checkpointer
	sync       *syncer // answers callers; with SyncFull fsyncs first
	since      int     // records committed since the checkpointer was last woken
	stats      struct {
		records, dups, batches, commits atomic.Uint64
	}
}

// checkpointEvery is how many appended records (about 10 MiB of WAL) make
// the writer wake the checkpointer.
const checkpointEvery = 1000

// checkpointer runs PASSIVE checkpoints on its own connection, so that
// copying the WAL into the database (and syncing both files, which every
// checkpoint does) happens beside the writer, on another core, instead of
// inside the commit of whichever batch crossed the threshold. Measured
// here: checkpoints were half of the writer's time.
type checkpointer struct {
	conn   *sql.Conn
	kick   chan struct{}
	done   chan struct{}
	runs   atomic.Uint64
	errors atomic.Uint64
}

func newCheckpointer(ctx context.Context, db *sql.DB) (*checkpointer, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	c := &checkpointer{conn: conn, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go c.run()
	return c, nil
}

func (c *checkpointer) run() {
	defer close(c.done)
	for range c.kick {
		// PASSIVE never blocks the writer or readers; it copies what it
		// can. A failure (a busy lock) only means the next one does more.
		if _, err := c.conn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
			c.errors.Add(1)
		} else {
			c.runs.Add(1)
		}
	}
}

// wake asks for a checkpoint without waiting for it.
func (c *checkpointer) wake() {
	select {
	case c.kick <- struct{}{}:
	default: // one is already pending
	}
}

func (c *checkpointer) close() error {
	close(c.kick)
	<-c.done
	return c.conn.Close()
}

func newWriter(ctx context.Context, db *sql.DB, maxBatch int) (*writer, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	w := &writer{conn: conn, maxBatch: maxBatch, seen: make(map[string]bonnie.Position)}
	// The checkpointer copies the WAL into the database in the background
	// (see checkpointer). The writer's own automatic checkpoint stays on,
	// at 40 MiB, to finish what is left so that the WAL can start over.
	if _, err := conn.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 10000"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("set checkpoint: %w", err)
	}
	if w.ckpt, err = newCheckpointer(ctx, db); err != nil {
		conn.Close()
		return nil, err
	}
	for _, s := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&w.begin, `BEGIN IMMEDIATE`}, // take the write lock now: the head read below stays the head
		{&w.commitStmt, `COMMIT`},
		{&w.rollback, `ROLLBACK`},
		{&w.head, `SELECT position, hash FROM records ORDER BY position DESC LIMIT 1`},
		{&w.insRec, `INSERT INTO records(position, id, key, appended, type, event, prev_hash, hash, changes)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING`},
		{&w.selKey, `SELECT position FROM records WHERE key = ?`},
		{&w.insChg, `INSERT INTO changes(position, seq, entity, id, field, from_value, to_value, actor, time)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&w.upState, `INSERT INTO entity_state(entity, id, field, value, time, position, seq)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(entity, id, field) DO UPDATE SET
	value = excluded.value, time = excluded.time, position = excluded.position, seq = excluded.seq
WHERE (excluded.position, excluded.seq) > (entity_state.position, entity_state.seq)`},
	} {
		if *s.dst, err = conn.PrepareContext(ctx, s.sql); err != nil {
			w.close()
			return nil, fmt.Errorf("prepare: %w", err)
		}
	}
	return w, nil
}

func (w *writer) close() error {
	var errs []error
	for _, s := range []*sql.Stmt{w.begin, w.commitStmt, w.rollback, w.head, w.insRec, w.selKey, w.insChg, w.upState} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	errs = append(errs, w.ckpt.close(), w.conn.Close())
	return errors.Join(errs...)
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
		// Let goroutines that are about to append run first: under load
		// this fills the queue (bigger batches, fewer commits); when nobody
		// else is runnable it returns at once. No timer, no added latency
		// for a lone caller.
		runtime.Gosched()
	gather:
		for n < w.maxBatch {
			select {
			case r, ok := <-reqs:
				if !ok {
					break gather // closed: the outer receive ends the loop
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

// serve writes a batch and answers its callers (through the syncer with
// SyncFull). If the batch fails, each request is retried alone so that one
// bad request cannot fail the others.
func (w *writer) serve(batch []*request) {
	live := batch[:0:0] // a new slice: the syncer keeps it
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
	if w.sync.fsync {
		if err := w.sync.failed(); err != nil {
			for _, r := range live {
				r.done <- reply{err: err}
			}
			return
		}
	}
	w.stats.batches.Add(1)
	err := w.commitAndHandOff(live)
	if err == nil {
		return
	}
	if len(live) == 1 {
		live[0].done <- reply{err: err}
		return
	}
	for _, r := range live {
		if err := w.commitAndHandOff([]*request{r}); err != nil {
			r.done <- reply{err: err}
		}
	}
}

// commitAndHandOff commits batch and hands it to the syncer, which
// answers its callers (after an fsync with SyncFull) while the writer goes
// on with the next batch. With SyncFull the syncer's pending count goes up
// before the transaction begins, so that readers hide the batch from the
// moment it could be seen (see Log.bound).
func (w *writer) commitAndHandOff(batch []*request) error {
	if w.sync.fsync {
		w.sync.pending.Add(1)
	}
	if err := w.commit(batch); err != nil {
		if w.sync.fsync {
			w.sync.pending.Add(-1)
		}
		return err
	}
	w.sync.in <- batch
	return nil
}

// commit writes batch in one transaction and sets each request's res. The
// chain head is read inside the transaction (BEGIN IMMEDIATE holds the
// write lock), so the chain stays right even if another process appended
// since.
func (w *writer) commit(batch []*request) (err error) {
	ctx := context.Background() // a batch is never cancelled half-way by one caller
	// BEGIN and COMMIT are plain statements on the writer's own
	// connection rather than a database/sql Tx, because Tx.Stmt re-prepares
	// every statement prepared on a Conn, at every transaction.
	if _, err = w.begin.ExecContext(ctx); err != nil {
		return fmt.Errorf("sqlite: append: begin: %w", err)
	}
	defer func() {
		if err != nil {
			if _, rerr := w.rollback.ExecContext(ctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("sqlite: append: rollback: %w", rerr))
			}
			for _, r := range batch {
				r.res = nil
			}
		}
	}()
	var (
		pos  bonnie.Position
		prev []byte
	)
	if err = w.head.QueryRowContext(ctx).Scan(&pos, &prev); errors.Is(err, sql.ErrNoRows) {
		pos, prev, err = 0, logchain.Genesis(), nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: append: read head: %w", err)
	}
	insRec, selKey, insChg, upState := w.insRec, w.selKey, w.insChg, w.upState

	clear(w.seen)
	for _, r := range batch {
		r.res = make([]bonnie.Appended, len(r.entries))
		for k := range r.entries {
			e := &r.entries[k]
			if p, ok := w.seen[e.key]; ok {
				r.res[k] = bonnie.Appended{Position: p, Dup: true}
				continue
			}
			id, err := uuid.NewV7()
			if err != nil {
				return fmt.Errorf("sqlite: append: uuid: %w", err)
			}
			rec := logchain.Record{
				Position: pos + 1,
				ID:       id.String(),
				Key:      e.key,
				Appended: logchain.FormatTime(time.Now()),
				Event:    e.event,
				Changes:  e.changes,
			}
			w.buf = logchain.AppendCanonical(w.buf[:0], &rec)
			hash := logchain.HashCanonical(prev, w.buf)
			w.chbuf = appendChanges(w.chbuf[:0], rec.Changes)
			out, err := insRec.ExecContext(ctx, int64(rec.Position), rec.ID, e.skey, rec.Appended, e.typ,
				string(e.event), prev, hash, w.chbuf)
			if err != nil {
				return fmt.Errorf("sqlite: append: insert record: %w", err)
			}
			if n, err := out.RowsAffected(); err != nil {
				return fmt.Errorf("sqlite: append: %w", err)
			} else if n == 0 { // key already in the log
				var p int64
				if err := selKey.QueryRowContext(ctx, e.skey).Scan(&p); err != nil {
					return fmt.Errorf("sqlite: append: find duplicate: %w", err)
				}
				w.seen[e.key] = bonnie.Position(p)
				r.res[k] = bonnie.Appended{Position: bonnie.Position(p), Dup: true}
				continue
			}
			for i := range rec.Changes {
				c := &rec.Changes[i]
				if _, err := insChg.ExecContext(ctx, int64(rec.Position), i, c.Entity, c.ID, c.Field, c.From, c.To, c.Actor, c.Time); err != nil {
					return fmt.Errorf("sqlite: append: insert change: %w", err)
				}
				if _, err := upState.ExecContext(ctx, c.Entity, c.ID, c.Field, c.To, c.Time, int64(rec.Position), i); err != nil {
					return fmt.Errorf("sqlite: append: update state: %w", err)
				}
			}
			pos, prev = rec.Position, hash
			w.seen[e.key] = pos
			r.res[k] = bonnie.Appended{Position: pos}
		}
	}
	if _, err = w.commitStmt.ExecContext(ctx); err != nil {
		return fmt.Errorf("sqlite: append: commit: %w", err)
	}
	w.stats.commits.Add(1)
	for _, r := range batch {
		for _, a := range r.res {
			if a.Dup {
				w.stats.dups.Add(1)
			} else {
				w.stats.records.Add(1)
				w.since++
			}
		}
	}
	if w.since >= checkpointEvery {
		w.since = 0
		w.ckpt.wake()
	}
	return nil
}

// Stats counts the writer's work since Open, to see group commit at work.
type Stats struct {
	// Records and Duplicates count the entries committed: stored, or found
	// already in the log.
	Records, Duplicates uint64
	// Batches is how many rounds the writer ran; Commits how many
	// transactions committed (one per batch unless a batch failed and was
	// retried request by request). Records/Commits is the mean group size.
	Batches, Commits uint64
	// Checkpoints and CheckpointErrors count the background checkpoints.
	Checkpoints, CheckpointErrors uint64
	// Syncs counts the log's own fsyncs of the WAL (SyncFull); each
	// covers every batch committed before it.
	Syncs uint64
}

// Stats returns the writer's counters.
func (l *Log) Stats() Stats {
	s := &l.w.stats
	st := Stats{Records: s.records.Load(), Duplicates: s.dups.Load(), Batches: s.batches.Load(), Commits: s.commits.Load(),
		Checkpoints: l.w.ckpt.runs.Load(), CheckpointErrors: l.w.ckpt.errors.Load()}
	st.Syncs = l.w.sync.syncs.Load()
	return st
}
