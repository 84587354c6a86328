package amqp

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// A windowed subscription (Config.Window > 1) hands over up to Window
// messages, in queue order, before the first of them is settled, and
// acknowledges each to RabbitMQ separately when it is Acked.
// watermill-amqp's subscription hands over the next message only after
// the previous one was settled: with bonnie.Engine, which acknowledges
// once the event is durable, the central ingest then appends one event
// per transaction and is bounded by the append latency (about 1k events/s
// here, BENCHMARKS.md). With a window the engine's group commit gathers
// what arrived while the previous batch committed.
//
// The order of first deliveries is the queue's; a Nacked message comes
// back after the ones already handed over behind it (as with a prefetch
// over 1). A message whose acknowledgement is lost with the connection
// comes again, flagged redelivered; the log's idempotent append absorbs
// it.
//
// It speaks AMQP with amqp091 directly, with the same topology builder,
// marshaler and queue names as watermill-amqp's subscriber, so either
// reads what the other left in the queue.

// windowSubscribe runs one windowed subscription on the group's queue.
func (s *Subscriber) windowSubscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	wcfg := s.wcfg
	first, err := s.openWindow(wcfg, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		sess := first
		backoff := 100 * time.Millisecond
		for {
			s.consumeWindow(ctx, sess, out)
			sess.conn.Close()
			for {
				select {
				case <-s.closing:
					return
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				if sess, err = s.openWindow(wcfg, topic); err == nil {
					backoff = 100 * time.Millisecond
					break
				}
				backoff = min(2*backoff, 5*time.Second)
			}
		}
	}()
	return out, nil
}

// windowSession is one connection's consumer.
type windowSession struct {
	conn       *amqp091.Connection
	ch         *amqp091.Channel
	deliveries <-chan amqp091.Delivery
	wcfg       wamqp.Config
}

func (s *Subscriber) openWindow(wcfg wamqp.Config, topic string) (*windowSession, error) {
	conn, err := dialConfig(wcfg)
	if err != nil {
		return nil, fmt.Errorf("amqp: connect %s: %w", RedactURL(s.cfg.URL), err)
	}
	fail := func(what string, err error) (*windowSession, error) {
		conn.Close()
		return nil, fmt.Errorf("amqp: %s: %w", what, err)
	}
	ch, err := conn.Channel()
	if err != nil {
		return fail("open channel", err)
	}
	if err := ch.Qos(s.cfg.Window, 0, false); err != nil {
		return fail("set the window", err)
	}
	queue := wcfg.Queue.GenerateName(topic)
	params := wamqp.BuildTopologyParams{
		Topic:        topic,
		QueueName:    queue,
		ExchangeName: wcfg.Exchange.GenerateName(topic),
		RoutingKey:   wcfg.QueueBind.GenerateRoutingKey(topic),
	}
	if err := wcfg.TopologyBuilder.BuildTopology(ch, params, wcfg, s.cfg.Logger); err != nil {
		return fail("declare "+queue, err)
	}
	c := wcfg.Consume
	deliveries, err := ch.Consume(queue, c.Consumer, false, c.Exclusive, c.NoLocal, c.NoWait, c.Arguments)
	if err != nil {
		return fail("consume "+queue, err)
	}
	return &windowSession{conn: conn, ch: ch, deliveries: deliveries, wcfg: wcfg}, nil
}

// consumeWindow hands the session's deliveries over until it ends (the
// connection broke) or the subscription stops. Each message is settled by
// a goroutine of its own, so that the next can be handed over at once;
// RabbitMQ's prefetch (Window) bounds how many are unsettled.
func (s *Subscriber) consumeWindow(ctx context.Context, sess *windowSession, out chan<- *message.Message) {
	var delay atomic.Int64 // the Nack pacing, shared: reset by an Ack
	for {
		var d amqp091.Delivery
		var ok bool
		select {
		case d, ok = <-sess.deliveries:
			if !ok {
				return
			}
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		}
		msg, err := sess.wcfg.Marshaler.Unmarshal(d)
		if err != nil {
			// Not a message this system sent: keep it out of the way of
			// the others, where an operator can see it (RabbitMQ's
			// dead-letter exchange, if the queue has one).
			_ = d.Nack(false, false)
			continue
		}
		// The message's context ends once it is settled, as with
		// watermill-amqp.
		mctx, cancel := context.WithCancel(ctx)
		msg.SetContext(mctx)
		select {
		case out <- msg:
		case <-s.closing:
			cancel()
			_ = d.Nack(false, true)
			return
		case <-ctx.Done():
			cancel()
			_ = d.Nack(false, true)
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer cancel()
			s.settle(ctx, msg, d, &delay)
		}()
	}
}

// settle passes msg's Ack or Nack on to RabbitMQ; a Nack after the
// redelivery delay. An acknowledgement that fails (the connection broke)
// leaves the message to be redelivered.
func (s *Subscriber) settle(ctx context.Context, msg *message.Message, d amqp091.Delivery, delay *atomic.Int64) {
	select {
	case <-msg.Acked():
		delay.Store(0)
		_ = d.Ack(false)
	case <-msg.Nacked():
		if s.cfg.RedeliveryDelay > 0 {
			wait := min(max(2*time.Duration(delay.Load()), s.cfg.RedeliveryDelay), s.cfg.MaxRedeliveryDelay)
			delay.Store(int64(wait))
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.closing:
			case <-ctx.Done():
			}
			t.Stop()
		}
		_ = d.Nack(false, true)
	case <-s.closing:
		_ = d.Nack(false, true)
	case <-ctx.Done():
		_ = d.Nack(false, true)
	}
}

// windowInitialize declares the exchange, the group's queue and the
// binding on a connection of its own.
func (s *Subscriber) windowInitialize(topic string) error {
	conn, err := s.openWindowTopology(topic)
	if err != nil {
		return err
	}
	return conn.Close()
}

func (s *Subscriber) openWindowTopology(topic string) (*amqp091.Connection, error) {
	wcfg := s.wcfg
	conn, err := dialConfig(wcfg)
	if err != nil {
		return nil, fmt.Errorf("amqp: connect %s: %w", RedactURL(s.cfg.URL), err)
	}
	ch, err := conn.Channel()
	if err == nil {
		params := wamqp.BuildTopologyParams{
			Topic:        topic,
			QueueName:    wcfg.Queue.GenerateName(topic),
			ExchangeName: wcfg.Exchange.GenerateName(topic),
			RoutingKey:   wcfg.QueueBind.GenerateRoutingKey(topic),
		}
		err = wcfg.TopologyBuilder.BuildTopology(ch, params, wcfg, s.cfg.Logger)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("amqp: initialize %s: %w", topic, err)
	}
	return conn, nil
}

// dialConfig connects as watermill-amqp's connection would with the same
// configuration.
func dialConfig(wcfg wamqp.Config) (*amqp091.Connection, error) {
	c := wcfg.Connection
	switch {
	case c.AmqpConfig != nil:
		return amqp091.DialConfig(c.AmqpURI, *c.AmqpConfig)
	case c.TLSConfig != nil:
		return amqp091.DialTLS(c.AmqpURI, c.TLSConfig)
	default:
		return amqp091.Dial(c.AmqpURI)
	}
}
