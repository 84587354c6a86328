package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"github.com/bonnie-archive/bonnie"
)

// Errors callers branch on (with errors.Is); other errors wrap the
// driver's.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("sqlite: log closed")
	// ErrSchemaTooNew means the file was written by a newer Bonnie; this
	// code refuses to touch it.
	ErrSchemaTooNew = errors.New("sqlite: database schema is newer than this code")
	// ErrNotFound is returned for a position or dead letter that does not
	// exist.
	ErrNotFound = errors.New("sqlite: not found")
)

// Sync is how durable an acknowledged append is.
type Sync int

const (
	// SyncFull fsyncs the WAL after every commit, before anyone is
	// answered: an acknowledged append survives a machine crash. The
	// default.
	SyncFull Sync = iota
	// SyncNormal fsyncs only at checkpoints: a machine crash may lose the
	// last commits, never the file's consistency.
	SyncNormal
)

type config struct {
	sync        Sync
	maxBatch    int
	busyTimeout time.Duration
	readers     int
	cacheKiB    int
	// shards is how many ranges a long page is read in at once (0:
	// GOMAXPROCS, at most maxShards); tests set it.
	shards int
}

// Option changes a default of Open.
type Option func(*config)

// WithSync sets the durability of commits (default SyncFull).
func WithSync(s Sync) Option { return func(c *config) { c.sync = s } }

// WithMaxBatch caps how many appends share one transaction (default 1000).
// Larger batches amortise the fsync further but delay every caller in the
// batch until the whole batch is written.
func WithMaxBatch(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxBatch = n
		}
	}
}

// WithBusyTimeout sets how long a statement waits for another connection's
// lock before failing (default 5 s); it matters only when another process
// writes the same file.
func WithBusyTimeout(d time.Duration) Option { return func(c *config) { c.busyTimeout = d } }

// WithReaders sets how many read connections may run at once (default 4).
// WAL mode lets them read while the writer writes.
func WithReaders(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.readers = n
		}
	}
}

// WithCacheSize sets each connection's page cache in KiB (default 32 MiB
// for the writer). The unique key index receives random keys (SHA-256), so
// appends slow down once it no longer fits in the cache.
func WithCacheSize(kib int) Option {
	return func(c *config) {
		if kib > 0 {
			c.cacheKiB = kib
		}
	}
}

// Log is a bonnie.Log and bonnie.DeadLetters backed by one SQLite file.
// It is safe for concurrent use.
type Log struct {
	cfg  config
	path string
	wdb  *sql.DB  // the writer's and the checkpointer's connections, and one for small writes
	rdb  *sqlx.DB // read-only connections
	w    *writer
	// reads keeps the read queries prepared.
	reads *readStmts

	mu     sync.RWMutex // guards sends on reqs against Close
	closed atomic.Bool
	reqs   chan *request
	done   chan struct{} // closed when the writer has drained and exited

	closeOnce sync.Once
	closeErr  error
}

var (
	_ bonnie.Log         = (*Log)(nil)
	_ bonnie.DeadLetters = (*Log)(nil)
	_ bonnie.Store       = (*Log)(nil)
)

// Open opens (creating it if needed) the log at path, applies pending
// schema migrations and starts the writer. The path is a file name, not a
// URI; it must not contain '?'.
func Open(ctx context.Context, path string, opts ...Option) (*Log, error) {
	cfg := config{sync: SyncFull, maxBatch: 1000, busyTimeout: 5 * time.Second, readers: 4, cacheKiB: 32 << 10}
	for _, o := range opts {
		o(&cfg)
	}
	if path == "" || strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") || path == ":memory:" {
		return nil, fmt.Errorf("sqlite: open %q: need a plain file path (WAL needs a file)", path)
	}
	common := url.Values{}
	common.Set("_busy_timeout", strconv.FormatInt(cfg.busyTimeout.Milliseconds(), 10))
	// NORMAL in both modes: with SyncFull the log fsyncs the WAL itself
	// (see syncer). Checkpoints still sync the WAL before copying it.
	common.Set("_synchronous", "NORMAL")
	common.Set("_foreign_keys", "1")

	wq := url.Values{}
	for k, v := range common {
		wq[k] = v
	}
	wq.Set("_journal_mode", "WAL")
	wq.Set("_txlock", "immediate") // take the write lock at BEGIN: no upgrade deadlocks
	wq.Set("_cache_size", strconv.Itoa(-cfg.cacheKiB))
	wdb, err := sql.Open("sqlite3", path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(3) // the writer's, the checkpointer's, and one for small writes
	wdb.SetMaxIdleConns(3)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	if err := checkWAL(ctx, wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := migrate(ctx, wdb); err != nil {
		wdb.Close()
		return nil, err
	}

	rq := common
	rq.Set("_query_only", "1")
	rdb, err := sqlx.Open("sqlite3", path+"?"+rq.Encode())
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(cfg.readers)
	rdb.SetMaxIdleConns(cfg.readers)

	w, err := newWriter(ctx, wdb, cfg.maxBatch)
	if err != nil {
		rdb.Close()
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	var head int64
	err = wdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM records`).Scan(&head)
	if err == nil {
		w.sync, err = newSyncer(path, bonnie.Position(head), cfg.sync == SyncFull)
	}
	if err != nil {
		w.close()
		rdb.Close()
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	go w.sync.run()
	l := &Log{
		cfg: cfg, path: path, wdb: wdb, rdb: rdb, w: w, reads: &readStmts{db: rdb.DB},
		reqs: make(chan *request, cfg.maxBatch),
		done: make(chan struct{}),
	}
	go func() {
		defer close(l.done)
		w.run(l.reqs)
	}()
	return l, nil
}

func checkWAL(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not WAL", mode)
	}
	return nil
}

// Path returns the database file name.
func (l *Log) Path() string { return l.path }

// Close stops accepting appends, waits until every append already queued is
// committed and answered, and closes the database. Calling it again
// returns nil.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed.Store(true)
		close(l.reqs)
		l.mu.Unlock()
		<-l.done
		serr := l.w.sync.close() // answers the last batches
		l.reads.close()
		l.closeErr = errors.Join(serr, l.w.close(), l.rdb.Close(), l.wdb.Close())
	})
	return l.closeErr
}

// bound returns the highest position a reader whose snapshot ends at head
// may see: all of it, unless a batch is committed but not yet synced, in
// which case only what is durable. Call it after the snapshot is taken:
// a batch counts as pending from before its transaction begins until after
// the durable position has moved past it, so a snapshot taken earlier
// holds no unsynced record that this check could miss.
func (l *Log) bound(head bonnie.Position) bonnie.Position {
	s := l.w.sync
	if !s.fsync || s.pending.Load() == 0 {
		return head
	}
	return min(head, bonnie.Position(s.durable.Load()))
}

// synced makes a small write (dead letter, cursor) durable with SyncFull.
func (l *Log) synced() error {
	if !l.w.sync.fsync {
		return nil
	}
	return l.w.sync.syncWAL()
}

func (l *Log) check() error {
	if l.closed.Load() {
		return ErrClosed
	}
	return nil
}
