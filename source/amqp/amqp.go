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
	// DefaultChannelPoolSize is how many channels a publisher keeps open:
	// how many Publish calls may wait for their confirms at once.
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

	// ChannelPoolSize is the publisher's channel pool (default
	// DefaultChannelPoolSize). watermill-amqp opens a channel per Publish
	// without one, about 50 times slower.
	ChannelPoolSize int

	// Prefetch is how many messages RabbitMQ sends a subscription ahead of
	// its acknowledgements (default DefaultPrefetch). The subscription
	// still hands them over one at a time, each after the previous one is
	// acknowledged; more prefetch only hides the network's latency, and a
	// Nacked message then comes back after the ones prefetched behind it.
	Prefetch int
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

// Publisher is the relay's publisher: watermill-amqp with publisher
// confirms and a channel pool, made to survive a broker restart. Publish
// returns nil once RabbitMQ has confirmed every message (written to its
// durable queues), so a relay may then drop the notifications from its
// spool. It fails at once while the broker is unreachable and buffers
// nothing: the relay's spool is what keeps notifications then.
//
// watermill-amqp v3.0.2's channel pool does not survive a broker restart:
// a Publish that fails to reopen a pooled channel loses that channel from
// the pool for good, so that after ChannelPoolSize such failures every
// Publish blocks forever, and Close then panics on the lost channel
// (measured here: no publish succeeded after a stop_app/start_app). So
// after any failed Publish this Publisher retires the watermill-amqp
// publisher it used (closing it in the background, its panic recovered)
// and connects a new one at the next Publish.
type Publisher struct {
	cfg  Config
	wcfg wamqp.Config

	mu      sync.Mutex
	pub     *wamqp.Publisher // nil: connect at the next Publish
	closed  bool
	retired sync.WaitGroup // closes of retired publishers

	reconnects atomic.Uint64
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher connects to the broker (once: an unreachable broker is an
// error here, and afterwards each Publish tries again).
func NewPublisher(c Config) (*Publisher, error) {
	c = c.withDefaults()
	return newPublisher(c, c.PublisherConfig())
}

func newPublisher(c Config, wcfg wamqp.Config) (*Publisher, error) {
	p := &Publisher{cfg: c, wcfg: wcfg}
	if _, err := p.get(); err != nil {
		return nil, err
	}
	return p, nil
}

// get returns the current watermill-amqp publisher, connecting one if
// there is none.
func (p *Publisher) get() (*wamqp.Publisher, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("amqp: publisher closed")
	}
	if p.pub == nil {
		pub, err := wamqp.NewPublisher(p.wcfg, p.cfg.Logger)
		if err != nil {
			return nil, fmt.Errorf("amqp: connect %s: %w", RedactURL(p.cfg.URL), err)
		}
		p.pub = pub
		p.reconnects.Add(1)
	}
	return p.pub, nil
}

// Publish sends messages to topic's exchange and waits for RabbitMQ's
// confirms. Metadata travel as AMQP headers (strings), the payload as the
// body, the UUID in a header; messages are persistent.
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	pub, err := p.get()
	if err != nil {
		return err
	}
	if err := safePublish(pub, topic, messages); err != nil {
		p.retire(pub)
		return fmt.Errorf("amqp: publish to %s: %w", topic, err)
	}
	return nil
}

func safePublish(pub *wamqp.Publisher, topic string, messages []*message.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("watermill-amqp panicked: %v", r)
		}
	}()
	return pub.Publish(topic, messages...)
}

// retire stops using pub, if it is still the current one, and closes it
// in the background.
func (p *Publisher) retire(pub *wamqp.Publisher) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pub != pub {
		return
	}
	p.pub = nil
	p.retired.Add(1)
	go func() {
		defer p.retired.Done()
		closeQuietly(pub)
	}()
}

// closeQuietly closes a watermill-amqp publisher whose pool may hold a
// channel that failed to reopen (Close panics on it, before closing the
// connection), and then its connection.
func closeQuietly(pub *wamqp.Publisher) {
	func() {
		defer func() { _ = recover() }()
		_ = pub.Close()
	}()
	_ = pub.ConnectionWrapper.Close() // a no-op if Close got that far
}

// Reconnects counts the connections the publisher made, the first
// included.
func (p *Publisher) Reconnects() uint64 { return p.reconnects.Load() }

// Close waits for nothing to be in flight on the current connection and
// closes it. Calling it again returns nil.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	pub := p.pub
	p.pub = nil
	p.mu.Unlock()
	if pub != nil {
		closeQuietly(pub)
	}
	p.retired.Wait()
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
	sub     *wamqp.Subscriber
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
	err := s.sub.Close()
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
