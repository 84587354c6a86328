// Package imap crawls a Cyrus IMAP server as an admin to work backwards:
// it brings the log up to the server's present state (Backfill: mail that
// was there before Bonnie listened) and finds what the log missed while
// nobody listened (Reconcile), and reads from the log when it is known
// complete (FolderCoverage).
//
// What it finds is recorded as Bonnie's own events, vnd.bonnie.Backfill
// and vnd.bonnie.Reconcile, through a Recorder (bonnie.Engine.Record, or
// the control socket of a running bonnied): they say they come from a
// crawl at a given time and are never mistaken for live notifications.
// Their JSON is documented with bonnie.Crawl; ingest applies them to the
// folders and messages as if they had been seen live, at the crawl's time,
// so that the changelog and the sinks (backup's Plan) see the server's
// state.
//
// How the server is read (Cyrus 3.6.1, checked against a real one):
//
//   - the admin lists the folders with LIST "" pattern RETURN (STATUS
//     (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)) (LIST-STATUS, which
//     Cyrus answers to an admin although STATUS itself is refused to one),
//     skipping the DELETED.* folders of delayed delete;
//   - each folder's uniqueid comes from GETMETADATA
//     /shared/vendor/cmu/cyrus-imapd/uniqueid, its ACL from GETACL (both
//     pipelined: one round trip for all folders). Cyrus 3.6 advertises
//     OBJECTID (RFC 8474), but STATUS (MAILBOXID) is refused to an admin
//     and MAILBOXID in LIST-STATUS came back as garbage bytes in one of
//     two tries;
//   - a user's folder is read authorized as its owner (SASL PLAIN with an
//     authorization identity, as package fetch does), so that \Seen is the
//     owner's; EXAMINE (CONDSTORE) gives the UIDVALIDITY and HIGHESTMODSEQ
//     the walk covers; UID FETCH (UID FLAGS INTERNALDATE RFC822.SIZE
//     ENVELOPE BODY.PEEK[]) streams the bodies into the body store.
//
// Resuming: a backfill records each folder in chunks of Options.Chunk
// messages in UID order; the chunk's last UID becomes the folder's
// backfillUid field in the same transaction, so that a backfill killed at
// any moment and run again starts after the last durable chunk and records
// nothing twice. A folder whose UIDVALIDITY changed is walked again, and
// the messages of the old UIDVALIDITY are recorded as expunged.
//
// Reconciling: a folder whose HIGHESTMODSEQ is the one the log recorded
// at its last verification is not opened. The others are compared UID by
// UID (and flag by flag) with the log; what the log missed is recorded
// with the Window in which it must have happened: the gaps in which no
// daemon listened (from the DaemonStart events' vnd.bonnie.downSince),
// or, without a gap, the time since the folder was last verified.
package imap
