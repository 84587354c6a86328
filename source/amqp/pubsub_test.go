package amqp

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// testURL is the broker of the tests: $BONNIE_TEST_AMQP or the local one.
func testURL() string {
	if u := os.Getenv("BONNIE_TEST_AMQP"); u != "" {
		return u
	}
	return DefaultURL
}

var (
	brokerOnce sync.Once
	brokerErr  error
)

// requireBroker skips t when RabbitMQ cannot be reached, or fails it when
// CI is "true" (a CI machine must not pass by skipping).
func requireBroker(t testing.TB) {
	t.Helper()
	brokerOnce.Do(func() {
		conn, err := amqp091.DialConfig(testURL(), amqp091.Config{Dial: amqp091.DefaultDial(5 * time.Second)})
		if err == nil {
			conn.Close()
		}
		brokerErr = err
	})
	if brokerErr == nil {
		return
	}
	msg := fmt.Sprintf("RabbitMQ at %s is unreachable (set BONNIE_TEST_AMQP): %v", RedactURL(testURL()), brokerErr)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// declared records the exchanges and queues the tests make, to delete them
// afterwards: the broker is shared, and durable things stay.
type declared struct {
	mu        sync.Mutex
	exchanges map[string]bool
	queues    map[string]bool
}

func (d *declared) add(exchange, queue string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if exchange != "" {
		d.exchanges[exchange] = true
	}
	if queue != "" {
		d.queues[queue] = true
	}
}

// track registers the deletion, at the end of t, of what is declared.
func track(t testing.TB) *declared {
	d := &declared{exchanges: map[string]bool{}, queues: map[string]bool{}}
	t.Cleanup(func() {
		conn, err := amqp091.Dial(testURL())
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		d.mu.Lock()
		defer d.mu.Unlock()
		for q := range d.queues {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
				ch.Close()
			}
		}
		for e := range d.exchanges {
			if ch, err := conn.Channel(); err == nil {
				_ = ch.ExchangeDelete(e, false, false)
				ch.Close()
			}
		}
	})
	return d
}

// recorder wraps a topology builder to record names.
type recorder struct {
	wamqp.TopologyBuilder
	d      *declared
	groups []string
}

func (r *recorder) BuildTopology(ch *amqp091.Channel, p wamqp.BuildTopologyParams, c wamqp.Config, l watermill.LoggerAdapter) error {
	r.d.add(p.ExchangeName, p.QueueName)
	return r.TopologyBuilder.BuildTopology(ch, p, c, l)
}

func (r *recorder) ExchangeDeclare(ch *amqp091.Channel, exchange string, c wamqp.Config) error {
	r.d.add(exchange, "")
	for _, g := range r.groups {
		r.d.add("", QueueName(exchange, g))
	}
	return r.TopologyBuilder.ExchangeDeclare(ch, exchange, c)
}

// newPair makes what the relay and the ingest use, with names recorded.
func newPair(t testing.TB, d *declared, c Config) (message.Publisher, message.Subscriber) {
	t.Helper()
	c = c.withDefaults()
	pc := c.PublisherConfig()
	pc.TopologyBuilder = &recorder{TopologyBuilder: pc.TopologyBuilder, d: d, groups: c.Groups}
	pub, err := newPublisher(c, pc)
	if err != nil {
		t.Fatal(err)
	}
	sc := c.SubscriberConfig()
	sc.TopologyBuilder = &recorder{TopologyBuilder: sc.TopologyBuilder, d: d}
	if c.Window > 1 {
		return pub, &Subscriber{cfg: c, wcfg: sc, closing: make(chan struct{})}
	}
	inner, err := wamqp.NewSubscriber(sc, c.Logger)
	if err != nil {
		t.Fatal(err)
	}
	return pub, &Subscriber{cfg: c, sub: inner, closing: make(chan struct{})}
}

// runSuite runs Watermill's universal pub/sub tests on the configuration.
// The plain constructor's subscribers are all in one group, "test", which
// its publisher declares (as a relay declares the ingest's group); the
// consumer-group constructor's are in the group the suite names.
func runSuite(t *testing.T, c Config, f tests.Features) {
	requireBroker(t)
	d := track(t)
	c.URL = testURL()
	f.GenerateTopicFunc = func(tctx tests.TestContext) string { return "bonnie-test-" + string(tctx.TestID) }
	tests.TestPubSub(t, f,
		func(t *testing.T) (message.Publisher, message.Subscriber) {
			cc := c
			cc.Group = "test"
			return newPair(t, d, cc)
		},
		func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
			cc := c
			cc.Group, cc.Groups = group, []string{group}
			return newPair(t, d, cc)
		},
	)
}

// features are the guarantees of the default configuration (prefetch 1):
// consumer groups (a queue per group), persistence, and the publish order
// for one subscription, kept across Nacks because nothing is prefetched
// behind the Nacked message. Not exactly-once: a message whose Ack is lost
// (a crash, a broken connection) comes again.
func features() tests.Features {
	f := tests.Features{
		ConsumerGroups:                      true,
		ExactlyOnceDelivery:                 false,
		GuaranteedOrder:                     true,
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
		NewSubscriberReceivesOldMessages:    false, // a queue forgets what it delivered
		ContextPreserved:                    false, // a context does not cross the broker
	}
	if cmd := os.Getenv("BONNIE_AMQP_RESTART"); cmd != "" {
		f.RestartServiceCommand = strings.Fields(cmd)
	}
	return f
}

// TestPubSub is the universal suite on the production configuration,
// except that Nacks are paced at 1-5 ms instead of 100 ms-10 s: the suite
// Nacks hundreds of messages in a row and waits 15 s at most for each.
// TestPubSubDefaults runs it with the real pacing, in short mode.
func TestPubSub(t *testing.T) {
	runSuite(t, Config{RedeliveryDelay: time.Millisecond, MaxRedeliveryDelay: 5 * time.Millisecond}, features())
}

// TestPubSubDefaults runs the suite on the default configuration exactly
// (short mode: 5 Nacks in a row at most).
func TestPubSubDefaults(t *testing.T) {
	f := features()
	f.ForceShort = true
	runSuite(t, Config{}, f)
}

// TestPubSubPrefetch runs the suite with a prefetch of 64: the order is
// then not kept across a Nack (TestOrderAfterNack), so it is not claimed.
func TestPubSubPrefetch(t *testing.T) {
	f := features()
	f.GuaranteedOrder, f.GuaranteedOrderWithSingleSubscriber, f.ForceShort = false, false, true
	runSuite(t, Config{Prefetch: 64, RedeliveryDelay: -1}, f)
}

// TestPubSubWindow runs the suite on the windowed subscriber (Window 64):
// like a prefetch, the order is not kept across a Nack.
func TestPubSubWindow(t *testing.T) {
	f := features()
	f.GuaranteedOrder, f.GuaranteedOrderWithSingleSubscriber = false, false
	runSuite(t, Config{Window: 64, RedeliveryDelay: time.Millisecond, MaxRedeliveryDelay: 5 * time.Millisecond}, f)
}

// TestOrderAfterNack shows what the prefetch does to the order: with 1, a
// Nacked message comes back before the ones published after it; with more,
// the ones already prefetched come first.
func TestOrderAfterNack(t *testing.T) {
	requireBroker(t)
	for _, tc := range []struct {
		prefetch int
		keeps    bool
	}{{1, true}, {8, false}} {
		t.Run(fmt.Sprint("prefetch", tc.prefetch), func(t *testing.T) {
			d := track(t)
			topic := "bonnie-test-order-" + watermill.NewUUID()
			pub, sub := newPair(t, d, Config{URL: testURL(), Prefetch: tc.prefetch, RedeliveryDelay: -1})
			defer pub.Close()
			defer sub.Close()
			if err := sub.(*Subscriber).SubscribeInitialize(topic); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if err := pub.Publish(topic, message.NewMessage(fmt.Sprint(i), []byte{byte('0' + i)})); err != nil {
					t.Fatal(err)
				}
			}
			ch, err := sub.Subscribe(t.Context(), topic)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for len(got) < 5 {
				select {
				case m := <-ch:
					if m.UUID == "0" && len(got) == 0 && !Redelivered(m) {
						m.Nack() // the first delivery of the first message fails
						continue
					}
					got = append(got, m.UUID)
					m.Ack()
				case <-time.After(10 * time.Second):
					t.Fatalf("received %v", got)
				}
			}
			inOrder := strings.Join(got, "") == "01234"
			t.Logf("prefetch %d: order after a Nack of the first message: %v", tc.prefetch, got)
			if inOrder != tc.keeps {
				t.Fatalf("prefetch %d: order %v", tc.prefetch, got)
			}
		})
	}
}

// TestPublisherSurvivesRestart restarts the broker three times while four
// goroutines publish, and checks that publishing works again after each
// restart (watermill-amqp's own pooled publisher stops for good at the
// first). It restarts the shared broker, so it runs only when
// BONNIE_AMQP_RESTART names the command that does it (for instance a
// script running rabbitmqctl stop_app, start_app and await_startup).
func TestPublisherSurvivesRestart(t *testing.T) {
	restart := os.Getenv("BONNIE_AMQP_RESTART")
	if restart == "" {
		t.Skip("BONNIE_AMQP_RESTART is not set: not restarting the shared broker")
	}
	requireBroker(t)
	d := track(t)
	c := Config{URL: testURL(), ChannelPoolSize: 2, Group: "restart"}
	pub, sub := newPair(t, d, c)
	defer sub.Close()
	topic := "bonnie-test-restart-" + watermill.NewUUID()
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("x"))); err != nil {
					failed.Add(1)
					time.Sleep(10 * time.Millisecond)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	for i := range 3 {
		time.Sleep(time.Second)
		if out, err := exec.Command(restart).CombinedOutput(); err != nil {
			t.Fatalf("restart: %v\n%s", err, out)
		}
		before := ok.Load()
		deadline := time.Now().Add(15 * time.Second)
		for ok.Load() == before {
			if time.Now().After(deadline) {
				t.Fatalf("no publish succeeded within 15 s of restart %d", i+1)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("restart %d: publishing again (%d published, %d failed so far)", i+1, ok.Load(), failed.Load())
	}
	close(stop)
	wg.Wait()
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("connections made: %d", pub.(*Publisher).Reconnects())
}
