// Package sqlite is Bonnie's embedded log: a bonnie.Store (Log,
// DeadLetters, Cursors, BatchAppender, StateSource) in one SQLite file,
// hash-chained with internal/logchain. It is the default for a site on one
// machine; every Log implementation passes store/storetest.
//
// # Writing
//
// One writer goroutine owns the write connection. Concurrent Append and
// AppendBatch calls queue to it; it takes everything queued (up to the
// batch size, without waiting for more) into one transaction, then answers
// each caller. This group commit is what makes durable appends fast: an
// fsync costs about the same for one record as for a hundred. A lone caller
// pays one commit and no timer.
//
// Appending is idempotent on Event.Key: an event whose key is in the log,
// or earlier in the same batch, stores nothing and reports the first
// position with dup true.
//
// # Durability
//
// The default, SyncFull, makes an append durable before Append returns: it
// survives a power failure or a kernel crash, not only a crash of the
// process. Bonnie acknowledges the mail server only after Append returns
// (in dlist mode Cyrus waits for that), so anything weaker could lose an
// event that both sides believe delivered. It is as durable as SQLite's
// synchronous=FULL (one WAL fsync per commit, before anyone is answered)
// but the log does the fsync itself, beside the writer, so that it overlaps
// the writing of the next batch; records become visible to Read and Head
// only once durable. WithSync(SyncNormal) trades that for speed: a crash of
// the machine can then lose the last commits (never corrupt the file); use
// it where the source can replay (a durable spool, a relay with publisher
// confirms). Dead letters and cursors are synced the same way.
//
// Checkpoints (copying the WAL into the database file) run in the
// background on their own connection.
//
// # Schema
//
// Versioned migrations (table schema_version) create:
//
//	records      position INTEGER PRIMARY KEY (1..N), id (UUIDv7), key (UNIQUE,
//	             the 32 bytes of Event.Key's hex), appended, type, event (the
//	             JSON of bonnie.Event, Raw included), prev_hash, hash
//	changes      (position, seq) -> entity, id, field, from_value, to_value,
//	             actor, time; index on (entity, id, position)
//	entity_state (entity, id, field) -> value and the (position, seq)
//	             of the change that set it; kept in the append transaction
//	dead_letters, cursors
//
// Times are text in logchain.TimeLayout (UTC, fixed width, so text order
// is time order). An entity's state folds its changes in (time, position,
// seq) order: a change takes effect at its event's time, even if the event
// arrived late.
//
// # Evidence
//
// Verify recomputes every hash from the stored rows (the changes from the
// changes table, not from a copy), checks that positions run 1..N, that no
// change lacks its record, that the type column and the entity_state table
// agree with what is hashed, and names the first bad position in a
// *bonnie.ChainError. It detects any change, insertion, removal or
// reordering of records or changes, except at the tail: removing the last
// records, appending forged ones, or rewriting a tail with recomputed hashes
// leaves a valid chain. Only an anchor kept outside the file detects that:
// save HeadHash regularly somewhere the database's writers cannot reach, and
// check with VerifyAnchored. See internal/logchain for the hash format, which
// an outside verifier can reimplement from the rows with plain SQL
// (lower(hex(key)) gives the hashed key text).
//
// # Files and processes
//
// The database is in WAL mode; keep the -wal and -shm files beside it. Each
// write transaction reads the chain head inside the transaction, so two
// Logs (or processes) on one file keep one valid chain, only slower.
package sqlite
