package amqp

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.URL != DefaultURL || c.Group != DefaultGroup || len(c.Groups) != 1 || c.Groups[0] != DefaultGroup ||
		c.ChannelPoolSize != DefaultChannelPoolSize || c.Prefetch != 1 || c.RedeliveryDelay != DefaultRedeliveryDelay {
		t.Fatalf("defaults %+v", c)
	}
	if g := (Config{Group: "archive"}).withDefaults().Groups; len(g) != 1 || g[0] != "archive" {
		t.Fatalf("Groups default to Group: %v", g)
	}
	pc := Config{ChannelPoolSize: 3}.PublisherConfig()
	if !pc.Publish.ConfirmDelivery || pc.Publish.ChannelPoolSize != 3 || !pc.Exchange.Durable || pc.Exchange.Type != "fanout" || !pc.Queue.Durable {
		t.Fatalf("publisher config %+v", pc)
	}
	sc := Config{Prefetch: 9, Group: "g", QueueType: "quorum"}.SubscriberConfig()
	if sc.Consume.Qos.PrefetchCount != 9 || sc.Queue.GenerateName("bonnie.events") != "bonnie.events.g" ||
		sc.Queue.Arguments["x-queue-type"] != "quorum" || sc.Consume.NoRequeueOnNack {
		t.Fatalf("subscriber config %+v", sc)
	}
	if got := RedactURL("amqp://relay:s3cret@mq:5672/v"); got != "amqp://relay:xxx@mq:5672/v" {
		t.Fatalf("RedactURL = %s", got)
	}
}

// NewSource declares the group's queue at once: what is published before
// the engine runs waits there.
func TestNewSourceDeclaresQueue(t *testing.T) {
	requireBroker(t)
	d := track(t)
	topic := "bonnie-test-src-" + watermill.NewUUID()
	d.add(topic, QueueName(topic, "early"))
	src, err := NewSource("amqp", topic, Config{URL: testURL(), Group: "early"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Subscriber.Close()
	if src.Topic != topic || src.Name != "amqp" {
		t.Fatalf("source %+v", src)
	}
	pub, err := NewPublisher(Config{URL: testURL(), Groups: []string{}}) // declares no queue itself
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(topic, message.NewMessage("m1", []byte("x"))); err != nil {
		t.Fatal(err)
	}
	ch, err := src.Subscriber.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		if m.UUID != "m1" {
			t.Fatalf("got %s", m.UUID)
		}
		m.Ack()
	case <-time.After(10 * time.Second):
		t.Fatal("the message published before Subscribe was lost")
	}
}

// Quorum queues (replicated in a RabbitMQ cluster) carry the same traffic.
func TestQuorumQueue(t *testing.T) {
	requireBroker(t)
	d := track(t)
	topic := "bonnie-test-quorum-" + watermill.NewUUID()
	pub, sub := newPair(t, d, Config{URL: testURL(), QueueType: "quorum", Group: "q"})
	defer pub.Close()
	defer sub.Close()
	for i := range 10 {
		if err := pub.Publish(topic, message.NewMessage(string(rune('a'+i)), []byte{byte(i)})); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := amqp091.Dial(testURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclarePassive(QueueName(topic, "q"), true, false, false, false, amqp091.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("no quorum queue: %v", err)
	}
	msgs, err := sub.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		select {
		case m := <-msgs:
			if m.UUID != string(rune('a'+i)) {
				t.Fatalf("message %d is %s", i, m.UUID)
			}
			m.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("received %d of 10", i)
		}
	}
}
