package amqp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// captures returns the real Cyrus 3.6.1 notifications of the project's
// capture set, in order.
func captures(t *testing.T) [][]byte {
	t.Helper()
	files, err := filepath.Glob("../../testdata/cyrus-3.6.1/*.bin")
	if err != nil || len(files) == 0 {
		t.Fatalf("captures: %v", err)
	}
	sort.Strings(files)
	out := make([][]byte, len(files))
	for i, f := range files {
		if out[i], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// flakyStore reports the first failAppends batches as failed after
// storing them: the commit happened but its answer was lost, so the
// engine Nacks messages whose events are durable.
type flakyStore struct {
	*sqlite.Log
	failAppends atomic.Int32
}

func (s *flakyStore) AppendBatch(ctx context.Context, entries []bonnie.Entry) ([]bonnie.Appended, error) {
	res, err := s.Log.AppendBatch(ctx, entries)
	if err == nil && s.failAppends.Add(-1) >= 0 {
		return nil, errors.New("simulated: the commit's answer was lost")
	}
	return res, err
}

// ingestRun is a central ingest (bonnie.Engine on store/sqlite, one
// amqp source) and a relay's publisher, on a topic of their own.
type ingestRun struct {
	topic, group string
	store        *flakyStore
	pub          *Publisher
	eng          *bonnie.Engine
	stop         context.CancelFunc
	done         chan error
}

func startIngest(t *testing.T, c Config, failAppends int32) *ingestRun {
	t.Helper()
	requireBroker(t)
	d := track(t)
	r := &ingestRun{topic: "bonnie-test-ingest-" + watermill.NewUUID(), group: "ingest"}
	c.URL, c.Group = testURL(), r.group
	lg, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	r.store = &flakyStore{Log: lg}
	r.store.failAppends.Store(failAppends)

	pub, sub := newPair(t, d, c) // the relay's publisher declares the ingest's queue
	r.pub = pub.(*Publisher)
	t.Cleanup(func() { r.pub.Close() })
	if err := sub.(*Subscriber).SubscribeInitialize(r.topic); err != nil {
		t.Fatal(err)
	}
	r.eng, err = bonnie.New(bonnie.Options{
		Store:   r.store,
		Sources: []bonnie.Source{{Name: "amqp", Subscriber: sub, Topic: r.topic}},
		Logger:  quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.eng.Run(ctx) }()
	t.Cleanup(func() { r.shutdown(t) })
	return r
}

func (r *ingestRun) shutdown(t *testing.T) {
	if r.stop == nil {
		return
	}
	r.stop()
	r.stop = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("engine: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("engine did not stop")
	}
}

// publish sends each notification as a relay does: one message each,
// the raw bytes as payload, where it came from as metadata.
func (r *ingestRun) publish(t *testing.T, raws [][]byte) {
	t.Helper()
	for _, raw := range raws {
		m := message.NewMessage(watermill.NewUUID(), raw)
		m.Metadata.Set(bonnie.MetaSource, "cyrus-datagram:/run/cyrus/notify@imap1")
		m.Metadata.Set("bonnie.framing", "datagram")
		if err := r.pub.Publish(r.topic, m); err != nil {
			t.Fatal(err)
		}
	}
}

// waitHead waits until the log holds n records.
func (r *ingestRun) waitHead(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		h, err := r.store.Head(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if int(h) == n {
			return
		}
		if int(h) > n || time.Now().After(deadline) {
			t.Fatalf("log head %d, want %d", h, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkOnce checks that the log holds each notification exactly once, in
// publish order, with its raw bytes and the relay's source.
func (r *ingestRun) checkOnce(t *testing.T, raws [][]byte) {
	t.Helper()
	recs, err := r.store.Read(t.Context(), 0, 10*len(raws))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(raws) {
		t.Fatalf("%d records for %d notifications", len(recs), len(raws))
	}
	for i, rec := range recs {
		ev, err := bonnie.Decode(raws[i])
		if err != nil {
			t.Fatal(err)
		}
		if rec.Key != ev.Key() || string(rec.Event.Raw) != string(raws[i]) {
			t.Fatalf("record %d is not notification %d", rec.Position, i)
		}
	}
	if err := r.store.Verify(t.Context()); err != nil {
		t.Fatal(err)
	}
	if dls, _ := r.store.DeadLetters(t.Context(), false); len(dls) != 0 {
		t.Fatalf("dead letters: %+v", dls)
	}
}

// queueEmpty checks, with the engine stopped, that RabbitMQ holds nothing
// for the group: every message was acknowledged.
func (r *ingestRun) queueEmpty(t *testing.T) {
	t.Helper()
	conn, err := amqp091.Dial(testURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(QueueName(r.topic, r.group), true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 0 {
		t.Fatalf("%d messages left in %s", q.Messages, q.Name)
	}
}

// The real captures, published by a relay, land in the log once each, in
// order; one published twice (a relay that did not get its confirm sends
// again) is absorbed by the log's idempotent append.
func TestEngineIngestsOnce(t *testing.T) {
	raws := captures(t)
	r := startIngest(t, Config{}, 0)
	r.publish(t, raws)
	r.publish(t, raws[11:13]) // sent again
	r.waitHead(t, len(raws))
	deadline := time.Now().Add(30 * time.Second)
	for r.store.Stats().Duplicates < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.shutdown(t)
	r.checkOnce(t, raws)
	if st := r.store.Stats(); st.Duplicates != 2 {
		t.Fatalf("log stats %+v: want 2 duplicates", st)
	}
	r.queueEmpty(t)
}

// Messages whose events were stored but whose commit answer was lost are
// Nacked by the engine, redelivered by RabbitMQ after RedeliveryDelay, and
// found in the log as duplicates: still once each, still in order.
func TestEngineRedeliveryAbsorbed(t *testing.T) {
	raws := captures(t)
	r := startIngest(t, Config{RedeliveryDelay: 10 * time.Millisecond}, 3)
	r.publish(t, raws)
	r.waitHead(t, len(raws))
	deadline := time.Now().Add(30 * time.Second)
	for r.store.failAppends.Load() >= 0 || r.store.Stats().Duplicates < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("failures left %d, log stats %+v", r.store.failAppends.Load(), r.store.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	r.shutdown(t)
	r.checkOnce(t, raws)
	t.Logf("log stats: %+v", r.store.Stats())
	r.queueEmpty(t)
}

// A stopped ingest loses nothing: what is published meanwhile waits in
// the group's durable queue, and the next run takes it.
func TestEngineRestartLosesNothing(t *testing.T) {
	raws := captures(t)
	r := startIngest(t, Config{Prefetch: 16}, 0)
	r.publish(t, raws[:40])
	r.waitHead(t, 40)
	r.shutdown(t)
	r.publish(t, raws[40:]) // nobody consuming

	// A new engine on the same log and queue.
	c := Config{URL: testURL(), Group: r.group, Prefetch: 16}
	sub, err := NewSubscriber(c)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: r.store, Sources: []bonnie.Source{{Name: "amqp", Subscriber: sub, Topic: r.topic}}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop, r.done = cancel, make(chan error, 1)
	go func() { r.done <- eng.Run(ctx) }()
	r.waitHead(t, len(raws))
	r.shutdown(t)
	r.checkOnce(t, raws)
	r.queueEmpty(t)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
