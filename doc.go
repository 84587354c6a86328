// Package bonnie turns the event notifications of a Cyrus IMAP server
// (RFC 5423) into an append-only, hash-chained record of everything that
// happened to mail, and drives pluggable sinks from it: archival,
// backup/restore, e-discovery and live interception.
//
// The vocabulary lives here:
//
//   - [Event] is one notification, decoded from any of Cyrus's three
//     framings ([Decode]): the notify datagram, the synchronous dlist
//     stream request, or bare JSON as an external notifier reads it. Its
//     [EventType] carries the RFC 5423 bit values Cyrus uses; an
//     [EventMask] says which events a consumer wants. Raw keeps the bytes
//     exactly as received, so a parser fix can be replayed over history.
//   - Volatile entities ([User], [Group], [Role], [Folder], [Message],
//     [Object], [Session]) have persistent ids and setters that record a
//     [Change] only when a value really changes; code that processes an
//     event only sets values, and the changelog follows. [Ingester] applies
//     events to them.
//   - A [Log] stores each event with the changes it caused in one
//     transaction, idempotently on the event's deterministic [Event.Key],
//     and chains every record to the one before by SHA-256, so that
//     [Log.Verify] finds the first record that was altered, removed or
//     inserted. The embedded default is store/sqlite.
//   - Cyrus never sends message bodies: a [BodyFetcher] (package fetch:
//     IMAP or the spool) stores them at ingest in the content-addressed
//     body store (store/blob), and [Event.Bodies] names each by SHA-256
//     in the log ([Options.Bodies]).
//   - A [Resolver] turns logins and ACL subjects into persistent
//     identities at ingest ([Identity], stored in [Event.Identities] with
//     group and role snapshots); what it could not resolve in time is filled
//     in later by an appended IdentityResolved event.
//   - The [Engine] ([New], [Engine.Run]) wires it together: sources
//     (Watermill subscribers) -> decode, resolve, fetch bodies -> apply ->
//     append, in batches that share one transaction, each source message
//     acknowledged only once durable; then every [Sink] ([SinkFunc]) reads
//     the log from its own durable cursor, a new one from position 0,
//     at least once: the cursor is written every [Options.CursorEvery]
//     and at stop, so after a crash a sink may be handed again the last
//     records it had handled. A [BatchSink] is handed a page at once; a
//     [PositionKeeper] (a projection that stores its position with its
//     data) resumes from its own position.
//   - What people and Bonnie's own tasks do to the record (legal holds,
//     erasures, interceptions, queries, backfills, reconciliations) is
//     itself an event in the same chain ([OwnEvents]), appended only
//     through [Engine.Record] and refused from every source.
//
// Adapters live in folders: source/ (where notifications come from),
// store/ (logs), sink/ (what reads the log), identity/ (who a login is),
// and examples/ holds the daemons and the bonnie command line.
//
// Invariants the code keeps: a notification is acknowledged only after its
// event and changes are durable; the log is never rewritten; identities are
// resolved at ingest time; raw bytes are kept; sinks only read the log; bad
// input becomes a dead letter with its bytes and a reason, never a crash or
// a silent drop; every time is stored in UTC with the original string.
package bonnie
