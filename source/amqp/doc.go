// Package amqp carries Cyrus notifications from the relays on the IMAP
// hosts to the central ingest over RabbitMQ, with Watermill's AMQP
// binding (github.com/ThreeDotsLabs/watermill-amqp/v3).
//
// # Topology
//
// One durable fanout exchange per Watermill topic (Bonnie uses one topic,
// DefaultTopic "bonnie.events"), and one durable queue per consumer group,
// "<topic>.<group>", bound to it. Every group gets every message once; the
// subscribers of one group (the ingest processes of several central
// nodes) share its queue, each message going to one of them. Messages are
// persistent. The relay's publisher declares the queues of the groups it
// is told of (Config.Groups) before it publishes, because a fanout
// exchange drops, and RabbitMQ still confirms, whatever no queue is bound
// to yet.
//
// # Messages
//
// One message is one raw notification exactly as Cyrus sent it (the
// payload), with the metadata a source sets (bonnie.MetaSource and the
// like: AMQP headers, strings only) and Watermill's UUID: what
// bonnie.Engine's sources deliver (see source/cyrus).
//
// # Guarantees
//
// Publish returns once RabbitMQ has confirmed (publisher confirms), so a
// relay may drop a notification from its durable spool then. A subscriber
// acknowledges a message to RabbitMQ only when it is Acked, which
// bonnie.Engine does once the event is durable in the log; a message Nacked,
// or in flight when the subscriber or its connection closes, is requeued
// and comes again, and the log's idempotent append (on Event.Key) absorbs
// a message whose event was already stored. Delivery is at least once, not
// exactly once.
//
// By default (Config.Window 1, watermill-amqp's subscription) a
// subscription hands messages over one at a time, the next after the
// previous is settled, in the queue's order. With Prefetch 1 a Nacked
// message comes back before the ones behind it, so the publish order is
// kept; with more prefetch the ones already prefetched come first. The
// order across the subscribers of one group is not kept.
//
// Because the next message then comes only once the previous one is
// Acked, one subscription gives the engine one event per transaction: its
// group commit cannot gather a burst. Config.Window over 1 (bonnied's
// --amqp-window, 256 by default) hands over a window of messages in queue
// order and acknowledges each separately, so the engine commits them
// together: about 5 to 7 times the events/s (BENCHMARKS.md), at the cost
// of the order across a Nack, as with a prefetch.
//
// Watermill's universal pub/sub tests (pubsub/tests.TestPubSub) pass on
// both against a real RabbitMQ, with ConsumerGroups and Persistent, and
// GuaranteedOrder and GuaranteedOrderWithSingleSubscriber for Window 1.
//
// # Bodies
//
// Cyrus never puts a message body in a notification, and a relay next to
// Cyrus can read it where the centre cannot: from the spool files (a
// message expunged seconds after delivery is still there under Cyrus's
// delayed expunge), or over IMAP on the loopback. So the relay
// (examples/bonnie-relay --cyrus-spool, --imap) fetches the bodies of
// every MessageAppend and MessageNew after spooling the notification, and
// publishes them before it, as separately addressed blobs:
//
//   - Each body goes to the fanout exchange BodiesTopic(topic),
//     "<topic>.bodies", whose queues are "<topic>.bodies.<group>" (declared
//     by the publisher like the notifications' ones), with PublishBody: in
//     chunks of at most DefaultChunkSize (4 MiB), persistent, each
//     confirmed, headers MetaBodyDigest (SHA-256), MetaBodySize,
//     MetaBodyPart, MetaBodyParts and MetaBodyOffset, message id
//     ChunkID (sha256.part): the same body published twice is the same
//     messages, and the receiver keeps each digest once.
//   - The notification follows, confirmed too, payload untouched, with
//     MetaBodies: the JSON of its bonnie.BodyRef (uid, sha256, size,
//     internalDate; or the fetch's error).
//   - At the centre a BodyReceiver consumes the bodies queue into the
//     body store, checking SHA-256 and size (a body of one chunk at once;
//     the chunks of a larger one each fsynced into a staging directory
//     before it is acknowledged, in any order, then hashed and stored), and
//     ExpectBodies hands each notification's refs to fetch.Relayed, the
//     engine's BodyFetcher, which waits (bounded by
//     bonnie.Options.BodyTimeout) until the bodies are in the store: the
//     event is appended with its Bodies exactly as if fetched locally. The
//     two queues are consumed independently, so the body may come second
//     (a redelivery, a slower consumer): the wait covers it, and a body that
//     never comes is recorded on the event as not received.
//
// Why not the body in the notification: the payload must stay the bytes
// Cyrus sent (bonnie.Event.Raw and Key depend on it), the events queue
// would carry megabytes between notifications of a hundred bytes (a
// classic queue hands them over in order: one large message delays all
// behind it, and the engine's group commit with them), and RabbitMQ
// refuses messages over max_message_size (128 MiB by default in 3.x; a
// mailbox may accept larger) and goes into memory alarms long before.
// Why chunks rather than one message per body: a chunk bounds the broker's
// and the receiver's memory whatever the body's size, each is small enough
// to be confirmed and fsynced quickly, and a body interrupted halfway is
// resumed from the chunks already on disk. Why content addressing: a relay
// that dies between the two publishes (kill -9) publishes both again; the
// second body is recognised by its digest and acknowledged at once, the
// second notification is absorbed by the log's idempotent append.
//
// # Failures
//
// The publisher pipelines its confirms (a batch is sent, then its confirms
// are awaited together; concurrent calls share the channel). It fails at
// once while the broker is unreachable and buffers nothing; it reconnects
// at the next Publish after any failure. The subscriber reconnects by itself, and paces Nacks
// (Config.RedeliveryDelay) so that an ingest whose log is down retries
// slowly instead of spinning. Neither retries the very first connection:
// the constructors fail if the broker is down.
package amqp
