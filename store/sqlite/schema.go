package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// migrations returns the schema steps in order: migration i (from 0) brings
// the schema to version i+1. Steps are only ever added, never edited: a
// database records which versions it has applied.
func migrations() []string {
	return []string{
		// Version 1: the log, its changes, the current state of every
		// entity and the dead letters.
		`
CREATE TABLE records (
	position  INTEGER PRIMARY KEY,      -- 1, 2, ... contiguous
	id        TEXT    NOT NULL,         -- UUIDv7
	key       BLOB    NOT NULL UNIQUE,  -- Event.Key(): idempotence; the 32 bytes of the hex SHA-256 (see storedKey)
	appended  TEXT    NOT NULL,         -- logchain.TimeLayout, UTC
	type      TEXT    NOT NULL,         -- event type name, for queries (not hashed; checked by Verify)
	event     TEXT    NOT NULL,         -- JSON of bonnie.Event (Raw included), hashed as stored
	prev_hash BLOB    NOT NULL,
	hash      BLOB    NOT NULL
);
CREATE TABLE changes (
	position   INTEGER NOT NULL REFERENCES records(position),
	seq        INTEGER NOT NULL,        -- 0, 1, ... within the record
	entity     TEXT    NOT NULL,
	id         TEXT    NOT NULL,
	field      TEXT    NOT NULL,
	from_value TEXT    NOT NULL,
	to_value   TEXT    NOT NULL,
	actor      TEXT    NOT NULL,
	time       TEXT    NOT NULL,        -- event time, logchain.TimeLayout (text order = time order)
	PRIMARY KEY (position, seq)
) WITHOUT ROWID;
CREATE INDEX changes_entity ON changes(entity, id, position);
-- entity_state is derived from changes: the last change of every field in
-- (position, seq) order. Kept in the append transaction so that the
-- current state is a lookup; Verify recomputes it.
CREATE TABLE entity_state (
	entity   TEXT    NOT NULL,
	id       TEXT    NOT NULL,
	field    TEXT    NOT NULL,
	value    TEXT    NOT NULL,          -- '' = absent (kept to order later changes)
	time     TEXT    NOT NULL,
	position INTEGER NOT NULL,
	seq      INTEGER NOT NULL,
	PRIMARY KEY (entity, id, field)
) WITHOUT ROWID;
-- Find: which entities of a kind have field = value now. Flags and the
-- state field are left out: they are the most frequent changes by far, and
-- "set" or "present" on millions of messages is no use as an index key
-- (Find on them scans instead). Find repeats this WHERE clause word for
-- word so that SQLite can use the partial index.
CREATE INDEX entity_state_value ON entity_state(entity, field, value)
	WHERE field NOT GLOB 'flag:*' AND field <> 'state';
CREATE TABLE dead_letters (
	id       INTEGER PRIMARY KEY,
	received TEXT    NOT NULL,
	source   TEXT    NOT NULL,
	reason   TEXT    NOT NULL,
	raw      BLOB    NOT NULL,
	retried  TEXT    NOT NULL DEFAULT '',
	position INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_pending ON dead_letters(position, id);
-- Each sink's position in the log.
CREATE TABLE cursors (
	sink     TEXT    PRIMARY KEY,
	position INTEGER NOT NULL,
	updated  TEXT    NOT NULL
) WITHOUT ROWID;
`,
		// Version 2: a copy of each record's changes in the record row
		// (changecodec.go), so that reading the log is one query. NULL
		// on records appended before: the reader falls back to the
		// changes table for them.
		`ALTER TABLE records ADD COLUMN changes BLOB;`,
	}
}

// SchemaVersion is the schema version this code writes. Opening a database
// whose version is higher fails with ErrSchemaTooNew rather than risk
// writing rows a newer release would not understand.
func SchemaVersion() int { return len(migrations()) }

// migrate brings the database to SchemaVersion in one transaction.
func migrate(ctx context.Context, db *sql.DB) (err error) {
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE (see dsn): one migrator at a time
	if err != nil {
		return fmt.Errorf("sqlite: migrate: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
	version INTEGER PRIMARY KEY,
	applied TEXT NOT NULL
)`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	var have int
	if err = tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&have); err != nil {
		return fmt.Errorf("sqlite: migrate: read version: %w", err)
	}
	steps := migrations()
	if have > len(steps) {
		return fmt.Errorf("%w: database is at version %d, this code knows up to %d", ErrSchemaTooNew, have, len(steps))
	}
	for v := have + 1; v <= len(steps); v++ {
		if _, err = tx.ExecContext(ctx, steps[v-1]); err != nil {
			return fmt.Errorf("sqlite: migrate to version %d: %w", v, err)
		}
		if _, err = tx.ExecContext(ctx, `INSERT INTO schema_version(version, applied) VALUES (?, ?)`,
			v, logchain.FormatTime(time.Now())); err != nil {
			return fmt.Errorf("sqlite: migrate to version %d: %w", v, err)
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: migrate: commit: %w", err)
	}
	return nil
}
