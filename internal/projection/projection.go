// Package projection opens the SQLite databases in which sinks keep what
// they derive from the log (sink/archive, sink/discovery): created when
// missing, dropped and created again when their schema version changes
// (the engine, or the sink's CatchUp, then replays the log into them),
// with the last log position handled kept in the same database, so that it
// moves in the same transaction as the data (bonnie.PositionKeeper).
//
// A projection needs no fsync per commit (synchronous=NORMAL): what a
// crash of the machine takes back, the log still has, and the position
// goes back with it.
package projection

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver

	"github.com/bonnie-archive/bonnie"
)

// Schema describes a projection's database.
type Schema struct {
	// Name prefixes errors ("archive").
	Name string
	// Version is stored in the meta table; another version found there
	// makes Open drop Tables and run DDL again.
	Version int
	// DDL creates the tables (not meta, which Open creates).
	DDL string
	// Tables lists every table DDL creates, dropped on a rebuild.
	Tables []string
}

// Open opens (creating it if needed) the projection at path and brings its
// schema to s (see Reset).
func Open(ctx context.Context, path string, s Schema) (*sql.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Name, err)
	}
	dsn := "file:" + path + "?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=30000&_txlock=immediate"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: open %s: %w", s.Name, path, err)
	}
	if err := Reset(ctx, db, s, false); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Reset empties the projection and creates its schema again, at position
// 0, if it is new, of another version, or force is true.
func Reset(ctx context.Context, db *sql.DB, s Schema, force bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	defer tx.Rollback()
	var v string
	err = tx.QueryRowContext(ctx, `SELECT v FROM meta WHERE k = 'version'`).Scan(&v)
	if !force && err == nil && v == strconv.Itoa(s.Version) {
		return nil
	}
	for _, t := range append([]string{"meta"}, s.Tables...) {
		if _, err := tx.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID`); err != nil {
		return fmt.Errorf("%s: create schema: %w", s.Name, err)
	}
	if _, err := tx.ExecContext(ctx, s.DDL); err != nil {
		return fmt.Errorf("%s: create schema: %w", s.Name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta(k, v) VALUES ('version', ?), ('position', '0')`, strconv.Itoa(s.Version)); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return tx.Commit()
}

// Querier is a *sql.DB or a *sql.Tx.
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Position returns the last log position the projection has handled.
func Position(ctx context.Context, q Querier) (bonnie.Position, error) {
	var v string
	if err := q.QueryRowContext(ctx, `SELECT v FROM meta WHERE k = 'position'`).Scan(&v); err != nil {
		return 0, err
	}
	p, err := strconv.ParseUint(v, 10, 64)
	return bonnie.Position(p), err
}

// Advance moves the projection's position to pos in tx, never back.
func Advance(ctx context.Context, tx *sql.Tx, pos bonnie.Position) error {
	_, err := tx.ExecContext(ctx, `UPDATE meta SET v = CAST(max(CAST(v AS INTEGER), ?) AS TEXT) WHERE k = 'position'`, uint64(pos))
	return err
}
