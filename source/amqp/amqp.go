package amqp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
)

// Defaults used for zero Config fields.
const (
	// DefaultURL is a local RabbitMQ with its default account.
	DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"
	// DefaultTopic names the one fanout exchange the relays publish to
	// and the central ingest reads from.
	DefaultTopic = "bonnie.events"
	// DefaultGroup is the central ingest's consumer group.
	DefaultGroup = "ingest"
	// DefaultChannelPoolSize is how many channels watermill-amqp's
	// publisher (PublisherConfig) keeps open.
	DefaultChannelPoolSize = 8
	// DefaultPrefetch is how many unacknowledged messages RabbitMQ hands a
	// subscription: 1 keeps the publish order even across redeliveries.
	DefaultPrefetch = 1
	// DefaultRedeliveryDelay and DefaultMaxRedeliveryDelay bound the wait
	// before a Nacked message goes back to RabbitMQ (see Config).
	DefaultRedeliveryDelay    = 100 * time.Millisecond
	DefaultMaxRedeliveryDelay = 10 * time.Second
)

// Config is the topology and tuning shared by the relay's publisher and the
// central ingest's subscriber. The zero value means the defaults.
type Config struct {
	// URL is the broker, amqp://user:password@host:port/vhost (default
	// DefaultURL); amqps:// uses TLS with the system roots.
	URL string
	// Group is the consumer group: a subscriber consumes the durable
	// queue "<topic>.<group>" bound to the topic's exchange. Every group
	// gets every message once; the subscribers of one group (the ingest
	// processes of several central nodes) share its messages, each
	// message going to one of them. Default DefaultGroup.
	Group string
	// Groups are the groups a publisher declares the queues of (bound to
	// the exchange) before it publishes anything, so that a message
	// published before any subscriber of a group ever ran is kept for it:
	// a fanout exchange drops what no queue is bound to, and RabbitMQ
	// still confirms it. Default (nil): Group's value, or DefaultGroup;
	// an empty slice declares none.
	Groups []string
	// QueueType is the queues' x-queue-type: "" (the broker's default,
	// classic) or "quorum" (replicated across a RabbitMQ cluster). It is
	// fixed when a queue is first declared.
	QueueType string

	// ChannelPoolSize is the channel pool of watermill-amqp's publisher
	// in PublisherConfig (default DefaultChannelPoolSize); watermill-amqp
	// opens a channel per Publish without one, about 50 times slower.
	// Publisher does not use it: it pipelines on one channel.
	ChannelPoolSize int

	// Prefetch is how many messages RabbitMQ sends a subscription ahead of
	// its acknowledgements (default DefaultPrefetch). The subscription
	// still hands them over one at a time, each after the previous one is
	// acknowledged; more prefetch only hides the network's latency, and a
	// Nacked message then comes back after the ones prefetched behind it.
	Prefetch int
	// Window, when over 1, makes the subscriber hand over up to Window
	// messages in queue order before the first is settled, each
	// acknowledged separately (window.go): the central ingest's group
	// commit then gathers them. Prefetch is not used then (the window is
	// the prefetch). Default 1: one at a time, as watermill-amqp does,
	// which keeps the order even across Nacks.
	Window int
	// RedeliveryDelay is how long a subscription waits before handing a
	// Nacked message back to RabbitMQ, doubled after each Nack in a row up
	// to MaxRedeliveryDelay and reset by an Ack (defaults
	// DefaultRedeliveryDelay and DefaultMaxRedeliveryDelay). The message
	// keeps its place meanwhile: while the log is down, the ingest retries
	// at this pace instead of spinning. A negative value Nacks at once.
	RedeliveryDelay, MaxRedeliveryDelay time.Duration

	// Logger receives watermill-amqp's logs (default: none).
	Logger watermill.LoggerAdapter
	// Reconnect is the backoff between connection attempts after the
	// broker went away (default wamqp.DefaultReconnectConfig). The first
	// connection is not retried: the constructors fail if the broker is
	// down.
	Reconnect *wamqp.ReconnectConfig
}

func (c Config) withDefaults() Config {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.Groups == nil {
		c.Groups = []string{c.Group}
	}
	if c.ChannelPoolSize <= 0 {
		c.ChannelPoolSize = DefaultChannelPoolSize
	}
	if c.Prefetch <= 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.RedeliveryDelay == 0 {
		c.RedeliveryDelay = DefaultRedeliveryDelay
	}
	if c.MaxRedeliveryDelay <= 0 {
		c.MaxRedeliveryDelay = DefaultMaxRedeliveryDelay
	}
	if c.Logger == nil {
		c.Logger = watermill.NopLogger{}
	}
	return c
}

// QueueName returns the durable queue of group for topic.
func QueueName(topic, group string) string { return topic + "." + group }

// base is the watermill-amqp configuration both sides share: a durable
// fanout exchange named after the topic, durable queues, persistent
// messages (DefaultMarshaler: metadata as string headers).
func (c Config) base(group string) wamqp.Config {
	cfg := wamqp.NewDurablePubSubConfig(c.URL, func(topic string) string { return QueueName(topic, group) })
	cfg.Connection.Reconnect = c.Reconnect
	if c.QueueType != "" {
		cfg.Queue.Arguments = amqp091.Table{"x-queue-type": c.QueueType}
	}
	return cfg
}

// PublisherConfig returns the watermill-amqp configuration NewPublisher
// uses: publisher confirms, a channel pool, and the queues of c.Groups
// declared with the exchange.
func (c Config) PublisherConfig() wamqp.Config {
	c = c.withDefaults()
	cfg := c.base(c.Group)
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.ChannelPoolSize = c.ChannelPoolSize
	cfg.TopologyBuilder = &groupsTopology{groups: c.Groups, cfg: c}
	return cfg
}

// SubscriberConfig returns the watermill-amqp configuration NewSubscriber
// uses: the group's durable queue, the prefetch, requeue on Nack.
func (c Config) SubscriberConfig() wamqp.Config {
	c = c.withDefaults()
	cfg := c.base(c.Group)
	cfg.Consume.Qos.PrefetchCount = c.Prefetch
	cfg.Consume.NoRequeueOnNack = false
	return cfg
}

// groupsTopology declares, with the exchange, the queues of the groups the
// publisher knows of, and binds them.
type groupsTopology struct {
	wamqp.DefaultTopologyBuilder
	groups []string
	cfg    Config
}

func (g *groupsTopology) ExchangeDeclare(ch *amqp091.Channel, exchange string, config wamqp.Config) error {
	if err := g.DefaultTopologyBuilder.ExchangeDeclare(ch, exchange, config); err != nil {
		return err
	}
	for _, group := range g.groups {
		q := QueueName(exchange, group) // the exchange is named after the topic
		if _, err := ch.QueueDeclare(q, config.Queue.Durable, config.Queue.AutoDelete, config.Queue.Exclusive, false, config.Queue.Arguments); err != nil {
			return fmt.Errorf("declare queue %s: %w", q, err)
		}
		if err := ch.QueueBind(q, "", exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %s: %w", q, err)
		}
	}
	return nil
}

// Publisher is the relay's publisher: a message.Publisher that returns
// from Publish once RabbitMQ has confirmed every message (written to its
// durable queues), so a relay may then drop the notifications from its
// spool. It fails at once while the broker is unreachable and buffers
// nothing: the relay's spool is what keeps notifications then.
//
// Confirms are pipelined: Publish sends all its messages on a channel in
// confirm mode and then waits for their confirms together, and several
// Publish calls wait at once on the same channel. watermill-amqp's
// publisher waits for each message's confirm before sending the next (one
// broker round trip and fsync per message: about 1.3k msg/s here, see
// BENCHMARKS.md). The messages are the ones watermill-amqp would send
// (its Marshaler, the same exchange and queue declarations), so its
// subscriber reads them as its own.
//
// After any failure the connection is dropped and the next Publish
// connects again: a broker restart costs the Publish calls that were in
// flight (they return an error and the relay sends again; the log's
// idempotent append absorbs what had arrived).
type Publisher struct {
	cfg  Config
	wcfg wamqp.Config

	mu       sync.Mutex
	conn     *amqp091.Connection // nil: connect at the next Publish
	ch       *amqp091.Channel
	declared map[string]bool // exchanges declared on this connection
	closed   bool
	inflight sync.WaitGroup // Publish calls waiting for confirms

	reconnects atomic.Uint64
}

var _ message.Publisher = (*Publisher)(nil)

// ConfirmTimeout bounds the wait for RabbitMQ's confirms of one Publish.
const ConfirmTimeout = 30 * time.Second

// NewPublisher connects to the broker (once: an unreachable broker is an
// error here, and afterwards each Publish tries again).
func NewPublisher(c Config) (*Publisher, error) {
	c = c.withDefaults()
	return newPublisher(c, c.PublisherConfig())
}

func newPublisher(c Config, wcfg wamqp.Config) (*Publisher, error) {
	p := &Publisher{cfg: c, wcfg: wcfg}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.channel(); err != nil {
		return nil, err
	}
	return p, nil
}

// channel returns the confirm-mode channel, connecting when there is
// none. p.mu is held.
func (p *Publisher) channel() (*amqp091.Channel, error) {
	if p.closed {
		return nil, errors.New("amqp: publisher closed")
	}
	if p.ch != nil && !p.ch.IsClosed() {
		return p.ch, nil
	}
	p.dropLocked()
	conn, err := dialConfig(p.wcfg)
	if err != nil {
		return nil, fmt.Errorf("amqp: connect %s: %w", RedactURL(p.cfg.URL), err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("amqp: open a confirm channel on %s: %w", RedactURL(p.cfg.URL), err)
	}
	p.conn, p.ch, p.declared = conn, ch, map[string]bool{}
	p.reconnects.Add(1)
	return ch, nil
}

// dropLocked closes the connection (p.mu is held); the confirms waited for
// on it fail.
func (p *Publisher) dropLocked() {
	if p.conn != nil {
		_ = p.conn.Close()
	}
	p.conn, p.ch, p.declared = nil, nil, nil
}

// drop closes ch's connection if it is still the current one.
func (p *Publisher) drop(ch *amqp091.Channel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == ch {
		p.dropLocked()
	}
}

// Publish sends messages to topic's exchange and waits for RabbitMQ's
// confirms of all of them. Metadata travel as AMQP headers (strings), the
// payload as the body, the UUID in a header; messages are persistent. An
// error means some may not have been stored: send them all again.
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	pubs := make([]amqp091.Publishing, len(messages))
	for i, m := range messages {
		pub, err := p.wcfg.Marshaler.Marshal(m)
		if err != nil {
			return fmt.Errorf("amqp: marshal message %s: %w", m.UUID, err)
		}
		pubs[i] = pub
	}
	exchange := p.wcfg.Exchange.GenerateName(topic)
	p.mu.Lock()
	ch, err := p.channel()
	if err != nil {
		p.mu.Unlock()
		return err
	}
	if !p.declared[exchange] {
		if err := p.wcfg.TopologyBuilder.ExchangeDeclare(ch, exchange, p.wcfg); err != nil {
			p.dropLocked()
			p.mu.Unlock()
			return fmt.Errorf("amqp: declare %s: %w", exchange, err)
		}
		p.declared[exchange] = true
	}
	routingKey := p.wcfg.Publish.GenerateRoutingKey(topic)
	confirms := make([]*amqp091.DeferredConfirmation, len(pubs))
	for i := range pubs {
		dc, err := ch.PublishWithDeferredConfirm(exchange, routingKey, p.wcfg.Publish.Mandatory, p.wcfg.Publish.Immediate, pubs[i])
		if err != nil {
			p.dropLocked()
			p.mu.Unlock()
			return fmt.Errorf("amqp: publish to %s: %w", topic, err)
		}
		confirms[i] = dc
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()

	ctx, cancel := context.WithTimeout(context.Background(), ConfirmTimeout)
	defer cancel()
	for i, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			p.drop(ch)
			return fmt.Errorf("amqp: publish to %s: confirm of message %s: %w", topic, messages[i].UUID, err)
		}
		if !ok {
			// A nack, or the channel closed before the confirm came.
			p.drop(ch)
			return fmt.Errorf("amqp: publish to %s: RabbitMQ did not confirm message %s", topic, messages[i].UUID)
		}
	}
	return nil
}

// Reconnects counts the connections the publisher made, the first
// included.
func (p *Publisher) Reconnects() uint64 { return p.reconnects.Load() }

// Close waits for the Publish calls in flight to get their confirms and
// closes the connection. Calling it again returns nil.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.inflight.Wait()
	p.mu.Lock()
	p.dropLocked()
	p.mu.Unlock()
	return nil
}

// Subscriber is the central ingest's subscriber: watermill-amqp on the
// group's durable queue, with Nacks paced by Config.RedeliveryDelay. A
// message is acknowledged to RabbitMQ when it is Acked (bonnie.Engine Acks
// once the event is durable in the log) and requeued when it is Nacked or
// the subscriber closes first; a requeued message comes again, and the
// log's idempotent append absorbs it if it had been stored.
type Subscriber struct {
	cfg     Config
	sub     *wamqp.Subscriber // nil for a windowed subscriber (Config.Window)
	wcfg    wamqp.Config      // the windowed subscriber's topology, marshaler, names
	closing chan struct{}
	mu      sync.Mutex // guards closed and wg.Add against Close
	closed  bool
	wg      sync.WaitGroup
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber connects to the broker for the ingest's consumer group.
func NewSubscriber(c Config) (*Subscriber, error) {
	c = c.withDefaults()
	if c.Window > 1 {
		// A connection now, so that an unreachable broker is an error
		// here as with watermill-amqp's subscriber.
		conn, err := dialConfig(c.SubscriberConfig())
		if err != nil {
			return nil, fmt.Errorf("amqp: subscriber: connect %s: %w", RedactURL(c.URL), err)
		}
		conn.Close()
		return &Subscriber{cfg: c, wcfg: c.SubscriberConfig(), closing: make(chan struct{})}, nil
	}
	sub, err := wamqp.NewSubscriber(c.SubscriberConfig(), c.Logger)
	if err != nil {
		return nil, fmt.Errorf("amqp: subscriber: %w", err)
	}
	return &Subscriber{cfg: c, sub: sub, closing: make(chan struct{})}, nil
}

// NewSource returns a bonnie.Source reading topic (DefaultTopic if empty)
// for the engine, after declaring the group's queue so that nothing
// published from now on is lost even before the engine runs.
func NewSource(name, topic string, c Config) (bonnie.Source, error) {
	if topic == "" {
		topic = DefaultTopic
	}
	sub, err := NewSubscriber(c)
	if err != nil {
		return bonnie.Source{}, err
	}
	if err := sub.SubscribeInitialize(topic); err != nil {
		sub.Close()
		return bonnie.Source{}, err
	}
	return bonnie.Source{Name: name, Subscriber: sub, Topic: topic}, nil
}

// SubscribeInitialize declares the exchange, the group's queue and the
// binding, without consuming.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if s.sub == nil {
		return s.windowInitialize(topic)
	}
	if err := s.sub.SubscribeInitialize(topic); err != nil {
		return fmt.Errorf("amqp: initialize %s: %w", topic, err)
	}
	return nil
}

// Subscribe consumes the group's queue for topic. Messages come one at a
// time: the next only after the previous one is Acked or Nacked. The
// channel closes when ctx ends or the subscriber closes; a message handed
// over and not yet acknowledged then is requeued.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("amqp: subscriber closed")
	}
	if s.sub == nil {
		return s.windowSubscribe(ctx, topic)
	}
	in, err := s.sub.Subscribe(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("amqp: subscribe %s: %w", topic, err)
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		s.relay(ctx, in, out)
	}()
	return out, nil
}

// relay hands each message of in over as a new message with the same
// UUID, payload, metadata and context, and settles the original as the
// copy is settled, delaying Nacks.
func (s *Subscriber) relay(ctx context.Context, in <-chan *message.Message, out chan<- *message.Message) {
	var delay time.Duration
	for m := range in {
		c := message.NewMessage(m.UUID, m.Payload)
		c.Metadata = m.Metadata
		c.SetContext(m.Context())
		select {
		case out <- c:
		case <-s.closing:
			m.Nack()
			continue // in closes soon: watermill-amqp is closing too
		case <-ctx.Done():
			m.Nack()
			continue
		}
		select {
		case <-c.Acked():
			m.Ack()
			delay = 0
		case <-c.Nacked():
			if s.cfg.RedeliveryDelay > 0 {
				delay = min(max(2*delay, s.cfg.RedeliveryDelay), s.cfg.MaxRedeliveryDelay)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-s.closing:
				case <-ctx.Done():
				}
				t.Stop()
			}
			m.Nack()
		case <-s.closing:
			m.Nack()
		case <-ctx.Done():
			m.Nack()
		}
	}
}

// Close stops every subscription (a message handed over and not yet
// settled is requeued), waits for them, and closes the connection.
// Calling it again returns nil.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	var err error
	if s.sub != nil {
		err = s.sub.Close()
	}
	s.wg.Wait()
	return err
}

// Redelivered reports whether RabbitMQ flagged msg as delivered before
// (to this or another consumer, not acknowledged). Such a message may
// already be in the log; appending it again is harmless.
func Redelivered(msg *message.Message) bool {
	return msg.Metadata.Get(wamqp.MetadataRedeliveredKey) == "true"
}

// RedactURL returns url without its password, for logs.
func RedactURL(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return url
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return url
	}
	user, _, _ := strings.Cut(rest[:at], ":")
	return scheme + "://" + user + ":xxx@" + rest[at+1:]
}
