// Package fetch reads message bodies back from Cyrus for Bonnie's ingest
// (bonnie.Options.Bodies) and stores them in the body store (store/blob).
//
// Cyrus 3.6 never puts a body in its notifications, so for every
// MessageAppend and MessageNew the engine asks a bonnie.BodyFetcher for
// the bytes of the new UIDs, before the event is applied. The fetchers:
//
//   - IMAP: an IMAP client pool logged in with an administrator's
//     credentials. It EXAMINEs the folder by its name in Cyrus's admin
//     namespace ("user.alice.Work", as the event names it) and runs
//     `UID FETCH uids (UID BODY.PEEK[] INTERNALDATE RFC822.SIZE)`: read
//     only, \Seen is never set. See IMAPOptions.Authorize for how it gets
//     the right to read (a Cyrus admin has no read right of its own).
//   - Spool: reads the message files straight from Cyrus's partitions, on
//     the same machine: no session, no event, no network. See Spool for
//     the layout it assumes.
//   - Chain: asks several in turn, the next only for what the previous
//     could not get (the spool first, IMAP for the rest).
//   - Relayed: the central ingest's fetcher for the bodies a relay
//     (examples/bonnie-relay) fetched next to Cyrus and published to
//     RabbitMQ beside the notification (source/amqp, "Bodies"): it waits
//     until the body the notification names is in the store.
//
// Every fetcher streams the bytes into the store (compressed as they
// arrive, never held whole in memory) and returns them described by
// SHA-256, size and internal date only once they are durable there.
package fetch
