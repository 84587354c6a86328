package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/bonnie-archive/bonnie"
)

// Errors callers branch on (with errors.Is); other errors wrap the
// driver's.
var (
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("postgres: log closed")
	// ErrSchemaTooNew means the schema was written by a newer Bonnie; this
	// code refuses to touch it.
	ErrSchemaTooNew = errors.New("postgres: database schema is newer than this code")
	// ErrNotFound is returned for a position or dead letter that does not
	// exist.
	ErrNotFound = errors.New("postgres: not found")
	// ErrDiffers is returned by Import and ImportDeadLetters when what is
	// imported does not continue, or does not match, what the log holds.
	ErrDiffers = errors.New("postgres: imported data differs from the log")
	// ErrNoLog is returned by Open with OnlyExisting when the schema holds
	// no log.
	ErrNoLog = errors.New("postgres: no Bonnie log in this schema")
)

// Sync is how durable an acknowledged append is.
type Sync int

const (
	// SyncFull commits with synchronous_commit on (or the server's
	// stronger setting, left alone): an acknowledged append is in the
	// server's flushed WAL and survives a crash of the machine. The
	// default.
	SyncFull Sync = iota
	// SyncNormal commits with synchronous_commit off: the server answers
	// before flushing its WAL, and a crash of the server's machine may lose
	// the last commits (about 3 x wal_writer_delay), never consistency.
	// Use it only where the source can replay.
	SyncNormal
)

type config struct {
	existing bool
	schema   string
	sync     Sync
	maxBatch int
	conns    int
}

// Option changes a default of Open.
type Option func(*config)

// WithSchema keeps the log's tables in this schema (created if missing)
// instead of the first schema of the connection's search_path. Several
// logs can share a database, one per schema.
func WithSchema(name string) Option { return func(c *config) { c.schema = name } }

// OnlyExisting makes Open fail with ErrNoLog rather than create a log
// where there is none: for tools that read a log, so that a mistyped DSN
// or schema is an error, not an empty log.
func OnlyExisting() Option { return func(c *config) { c.existing = true } }

// WithSync sets the durability of commits (default SyncFull).
func WithSync(s Sync) Option { return func(c *config) { c.sync = s } }

// WithMaxBatch caps how many appends share one transaction (default 1000).
func WithMaxBatch(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxBatch = n
		}
	}
}

// WithMaxConns sets how many connections the Log opens at most (default
// 8): one at a time for the writer, the rest for readers and small writes.
func WithMaxConns(n int) Option {
	return func(c *config) {
		if n >= 2 {
			c.conns = n
		}
	}
}

// Log is a bonnie.Store on PostgreSQL. It is safe for concurrent use, and
// several Logs, in one process or many, may append to the same schema: the
// chain stays one (see the package documentation).
type Log struct {
	cfg    config
	schema string // the schema the tables are in
	db     *sqlx.DB
	w      *writer

	mu     sync.RWMutex // guards sends on reqs against Close
	closed atomic.Bool
	reqs   chan *request
	done   chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var (
	_ bonnie.Log         = (*Log)(nil)
	_ bonnie.DeadLetters = (*Log)(nil)
	_ bonnie.Store       = (*Log)(nil)
)

// Open connects to the database named by dsn (a URL
// "postgres://user@host:5432/db?sslmode=disable" or key=value pairs, as
// pgx reads them; a search_path parameter selects the schema, and
// application_name defaults to "bonnie"), applies pending schema
// migrations and starts the writer. Connections are opened as needed and
// replaced when they break: a batch whose connection turns out to have
// been dropped (a server restart, a firewall's idle timeout) is written
// again on a new one, once; its events are reported as duplicates if the
// first commit went through after all.
func Open(ctx context.Context, dsn string, opts ...Option) (*Log, error) {
	cfg := config{sync: SyncFull, maxBatch: 1000, conns: 8}
	for _, o := range opts {
		o(&cfg)
	}
	pcfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if pcfg.RuntimeParams["application_name"] == "" {
		pcfg.RuntimeParams["application_name"] = "bonnie"
	}
	schema := cfg.schema
	if schema != "" {
		pcfg.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	} else if sp := pcfg.RuntimeParams["search_path"]; sp != "" {
		schema = firstSchema(sp)
	}
	db, err := openDB(ctx, pcfg, cfg)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, db.DB, schema, cfg.existing); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: open: current schema: %w", err)
	}
	l := &Log{
		cfg: cfg, schema: schema, db: db,
		w:    newWriter(db.DB, cfg.maxBatch),
		reqs: make(chan *request, cfg.maxBatch),
		done: make(chan struct{}),
	}
	go func() {
		defer close(l.done)
		l.w.run(l.reqs)
	}()
	return l, nil
}

// openDB opens the pool and makes sure its sessions commit as durably as
// cfg.sync asks: SyncFull overrides a server whose synchronous_commit is
// off, and leaves any other (local, on, remote_write, remote_apply) alone.
func openDB(ctx context.Context, pcfg *pgx.ConnConfig, cfg config) (*sqlx.DB, error) {
	open := func() *sqlx.DB {
		db := sqlx.NewDb(stdlib.OpenDB(*pcfg), "pgx")
		db.SetMaxOpenConns(cfg.conns)
		db.SetMaxIdleConns(cfg.conns)
		return db
	}
	if cfg.sync == SyncNormal {
		pcfg.RuntimeParams["synchronous_commit"] = "off"
		return open(), nil
	}
	db := open()
	var sc, enc string
	if err := db.QueryRowContext(ctx, `SELECT current_setting('synchronous_commit'), current_setting('server_encoding')`).Scan(&sc, &enc); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if enc != "UTF8" && enc != "SQL_ASCII" {
		db.Close()
		return nil, fmt.Errorf("postgres: open: server_encoding is %s; the log stores UTF-8 text byte for byte and needs UTF8", enc)
	}
	if sc == "off" {
		db.Close()
		pcfg.RuntimeParams["synchronous_commit"] = "on"
		db = open()
	}
	return db, nil
}

// firstSchema returns the first schema named in a search_path value.
func firstSchema(sp string) string {
	first, _, _ := strings.Cut(sp, ",")
	first = strings.TrimSpace(first)
	if len(first) >= 2 && first[0] == '"' && first[len(first)-1] == '"' {
		return strings.ReplaceAll(first[1:len(first)-1], `""`, `"`)
	}
	if first == "$user" {
		return ""
	}
	return strings.ToLower(first)
}

// Schema returns the schema the log's tables are in.
func (l *Log) Schema() string { return l.schema }

// DB returns the log's connection pool, for read-only queries of one's own
// (reports, an outside verifier). Writing through it bypasses the chain
// lock; do not.
func (l *Log) DB() *sql.DB { return l.db.DB }

// Close stops accepting appends, waits until every append already queued is
// committed and answered, and closes the connections. Calling it again
// returns nil.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed.Store(true)
		close(l.reqs)
		l.mu.Unlock()
		<-l.done
		l.closeErr = l.db.Close()
	})
	return l.closeErr
}

func (l *Log) check() error {
	if l.closed.Load() {
		return ErrClosed
	}
	return nil
}
