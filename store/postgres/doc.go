// Package postgres is Bonnie's log on PostgreSQL: the same bonnie.Store as
// store/sqlite (Log, BatchAppender, StateSource, DeadLetters, Cursors),
// with the same hash chain (internal/logchain: a record copied from SQLite
// hashes to the same value here), for a site that has outgrown one
// machine. It passes store/storetest like every Log. It uses
// github.com/jackc/pgx/v5 through database/sql (sqlx for reads); the
// writer drives the pgx connection underneath to pipeline and COPY.
//
//	lg, err := postgres.Open(ctx, "postgres://bonnie@db/bonnie?sslmode=verify-full&search_path=site1")
//
// # Writing
//
// One writer goroutine per Log takes the Append and AppendBatch calls
// queued while the previous transaction committed, up to WithMaxBatch, and
// writes them in one transaction (group commit): a lone caller pays one
// commit, a burst shares one. A transaction costs few round trips: one
// pipelined for BEGIN, the chain lock, the head and the lookup of the keys
// already stored; the records and changes (with COPY from 16 records on);
// one pipelined for the entity state and COMMIT. Appending is idempotent on
// Event.Key, across processes too (a UNIQUE key, looked up under the lock).
//
// # Several processes
//
// Any number of Logs, in one process or many, may append to one schema
// and keep one chain: every appending transaction first takes a
// transaction-level advisory lock derived from the schema's name, and only
// then reads the head (in READ COMMITTED each statement sees what committed
// before it started), so appenders chain one after the other. The lock is
//
//	SELECT pg_advisory_xact_lock(hashtextextended('bonnie/log:' || current_schema(), 0))
//
// and any other tool that appends must take it too. Positions are given
// under the lock, in commit order, so a reader that sees record p sees
// every record before it; Read needs no snapshot.
//
// (Two bonnie.Engines appending to one log each keep their own cache of
// entity state: one does not see the other's changes until it reloads
// the entity, so the From values of changes made by two engines to the same
// entity at the same time may not chain. The log stays valid; the
// entity_state table always holds the last change in log order.)
//
// # Durability
//
// With SyncFull (the default) a commit returns once the server has
// flushed its WAL: synchronous_commit is left as the server has it unless
// it is off, which the Log overrides for its sessions. SyncNormal commits
// with synchronous_commit off. PostgreSQL makes a commit visible only once
// it is flushed (with synchronous_commit on), so Read and Head never show
// a record that a crash could take back.
//
// # Schema
//
// Versioned migrations (table schema_version) create, in the schema of
// WithSchema or the DSN's search_path (created if missing):
//
//	records      position bigint PRIMARY KEY (1..N), id (UUIDv7 text), key
//	             (bytea UNIQUE: the 32 bytes of Event.Key's hex), appended
//	             (text), type, event (the JSON of bonnie.Event, Raw included,
//	             text compressed with lz4 when the server has it), prev_hash,
//	             hash
//	changes      (position, seq) -> entity, id, field, from_value, to_value,
//	             actor (bytea), time (text); index on (entity, id, position)
//	entity_state (entity, id, field) -> value, time, position, seq; kept in
//	             the append transaction
//	dead_letters, cursors
//
// The strings of changes and entity_state are bytea, not text: they come
// from mail systems and may hold NUL bytes or invalid UTF-8, which text
// refuses and SQLite keeps; the chain covers them byte for byte. Read them
// with convert_from(col, 'UTF8'). Times are text in logchain.TimeLayout
// (timestamptz would lose the nanoseconds that are hashed), collated "C"
// so that text order is time order. A statement trigger refuses UPDATE,
// DELETE and TRUNCATE on records and changes: it stops mistakes, not a
// superuser, whom only Verify and anchors catch.
//
// # Evidence
//
// Verify reads the whole log from one REPEATABLE READ snapshot (appends go
// on meanwhile) and checks exactly what store/sqlite's Verify checks:
// every hash recomputed from the stored rows (the changes from the changes
// table), positions 1..N, no change without its record, the type column,
// entity_state against the changes; it names the first bad position in a
// *bonnie.ChainError. A removed or recomputed tail is detected only with an
// anchor kept outside the database (HeadHash, VerifyAnchored). An outside
// verifier can recompute the chain with plain SQL and internal/logchain's
// rules: encode(key, 'hex') gives the hashed key text.
//
// # From SQLite
//
// Import copies records with their hashes (checking each), and
// ImportDeadLetters dead letters with their ids; package fromsqlite and the
// command "bonnie migrate" use them to move a store/sqlite log here,
// resumably, and verify the copy against the source's head hash.
//
// # Tests
//
// Package pgtest gives each test a schema of its own on
// $BONNIE_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/test);
// tests skip when the server is unreachable, and fail when CI=true.
package postgres
