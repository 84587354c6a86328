package main

// The central side of relayed bodies (amqp.go): amqpSources consumes the
// bodies a relay publishes into DATA/blobs, and c.amqp.bodyFetcher names
// them on the events, whichever of the two queues is read first. A relay
// is played here by source/amqp's publisher (examples/bonnie-relay's
// TestRelayFetchesBodies runs the real one against a real Cyrus).

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/internal/testmail"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/source/amqp"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

func TestRelayedBodiesCentral(t *testing.T) {
	requireBroker(t)
	topic := "bonnie-test-bodies-" + watermill.NewUUID()
	t.Cleanup(func() {
		if conn, err := amqp091.Dial(amqpTestURL()); err == nil {
			if ch, err := conn.Channel(); err == nil {
				for _, tp := range []string{topic, amqp.BodiesTopic(topic)} {
					_, _ = ch.QueueDelete(amqp.QueueName(tp, amqp.DefaultGroup), false, false, false)
					_ = ch.ExchangeDelete(tp, false, false)
				}
			}
			conn.Close()
		}
	})
	data := t.TempDir()
	c, err := parse([]string{"--data", data, "--amqp", amqpTestURL(), "--amqp-topic", topic}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	lg, err := sqlite.Open(t.Context(), datadir.LogPath(data))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	srcs, err := amqpSources(c)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Sources: srcs, Bodies: c.amqp.bodyFetcher(nil), BodyTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	pub, err := amqp.NewPublisher(amqp.Config{URL: amqpTestURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	raws := map[string][]byte{}
	for _, n := range []string{"052-MessageNew", "057-MessageNew"} {
		if raws[n], err = os.ReadFile("../../testdata/cyrus-3.6.1/" + n + ".bin"); err != nil {
			t.Fatal(err)
		}
	}
	notify := func(raw []byte, body []byte) {
		ev, err := bonnie.Decode(raw)
		if err != nil || len(ev.UIDs) != 1 {
			t.Fatalf("capture: %v", err)
		}
		refs, _ := json.Marshal([]bonnie.BodyRef{{UID: ev.UIDs[0], Digest: blob.Digest(body), Size: int64(len(body)), InternalDate: time.Now().UTC()}})
		m := message.NewMessage(watermill.NewUUID(), raw)
		m.Metadata.Set(amqp.MetaBodies, string(refs))
		if err := pub.Publish(topic, m); err != nil {
			t.Fatal(err)
		}
	}
	body := func(b []byte) {
		if err := amqp.PublishBody(pub, amqp.BodiesTopic(topic), blob.Digest(b), int64(len(b)), bytes.NewReader(b), amqp.DefaultChunkSize); err != nil {
			t.Fatal(err)
		}
	}
	// The usual order (the body first), and the other (a 10 MiB body
	// published a second after its notification: the event waits for it).
	small := testmail.EightBit("central-small").Bytes
	big := testmail.Large("central-big", 10<<20, 3).Bytes
	body(small)
	notify(raws["052-MessageNew"], small)
	notify(raws["057-MessageNew"], big)
	time.Sleep(time.Second)
	body(big)

	store, err := blob.Open(mustBlobDir(data))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	var recs []bonnie.Record
	for {
		all, err := lg.Read(t.Context(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		recs = recs[:0]
		for _, r := range all {
			if r.Event.Type == bonnie.MessageNew {
				recs = append(recs, r)
			}
		}
		if len(recs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d MessageNew events", len(recs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, b := range [][]byte{small, big} {
		refs := recs[i].Event.Bodies
		if len(refs) != 1 || refs[0].Error != "" || refs[0].Digest != blob.Digest(b) || refs[0].Size != int64(len(b)) {
			t.Fatalf("event %d: %+v", recs[i].Position, refs)
		}
		got, err := store.Get(refs[0].Digest)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("DATA/blobs: %d bytes, %v", len(got), err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(data, "relay-bodies")); len(ents) != 0 {
		t.Fatalf("bodies left half assembled: %v", ents)
	}
	for c.amqp.relayed.Pending() != 0 { // forgotten once acknowledged
		if time.Now().After(deadline) {
			t.Fatalf("%d notifications still expected after their acknowledgement", c.amqp.relayed.Pending())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustBlobDir(data string) string {
	dir, _ := archive.Paths(data)
	return dir
}

// The whole chain with the binaries: Cyrus (dlist) -> bonnie-relay
// --cyrus-spool -> RabbitMQ -> bonnied --amqp: a 10 MiB message and a
// small one are in the central DATA/blobs byte for byte, named by their
// events. It runs once main.go hands c.amqp.bodyFetcher to the engine.
func TestRelayBodiesChain(t *testing.T) {
	if src, err := os.ReadFile("main.go"); err != nil || !bytes.Contains(src, []byte("c.amqp.bodyFetcher(")) {
		t.Skip("main.go does not give the engine c.amqp.bodyFetcher(sk.bodies) yet")
	}
	requireEnv(t)
	requireBroker(t)
	topic := "bonnie-test-chain-bodies-" + watermill.NewUUID()
	t.Cleanup(func() {
		if conn, err := amqp091.Dial(amqpTestURL()); err == nil {
			if ch, err := conn.Channel(); err == nil {
				for _, tp := range []string{topic, amqp.BodiesTopic(topic)} {
					_, _ = ch.QueueDelete(amqp.QueueName(tp, amqp.DefaultGroup), false, false, false)
					_ = ch.ExchangeDelete(tp, false, false)
				}
			}
			conn.Close()
		}
	})
	sock := cyrustest.SocketPath(t, "relay.sock")
	s := startCyrus(t, cyrustest.Options{Users: map[string]string{"alice": "alice-pw"}, NotifyDList: sock,
		Config: map[string]string{"munge8bit": "no"}})
	held := holdSocket(t, sock, true)
	relay := startRelayProc(t, "relay", held, "--metrics", "", "--cyrus-dlist", sock, "--spool", t.TempDir(),
		"--amqp", amqpTestURL(), "--topic", topic, "--cyrus-spool", filepath.Join(s.Dir(), "spool"))
	data := t.TempDir()
	lv := newLogView(data)
	central := startDaemon(t, "central", daemonConfig{data: data, extra: []string{"--amqp", amqpTestURL(), "--amqp-topic", topic}}, lv)

	alice := s.Dial(t, "alice")
	big := testmail.Large("chain-big", 10<<20, 9).Bytes
	small := testmail.EightBit("chain-small").Bytes
	for _, b := range [][]byte{big, small} {
		cmd := alice.Append("INBOX", int64(len(b)), nil)
		if _, err := cmd.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	recs := lv.waitFor(t, "two MessageAppend events", func(recs []bonnie.Record) bool {
		return len(ofType(recs, bonnie.MessageAppend)) >= 2
	})
	store, err := blob.Open(mustBlobDir(data))
	if err != nil {
		t.Fatal(err)
	}
	apps := ofType(recs, bonnie.MessageAppend)
	if len(apps) != 2 {
		t.Fatalf("%d MessageAppend events", len(apps))
	}
	for i, b := range [][]byte{big, small} {
		refs := apps[i].Event.Bodies
		if len(refs) != 1 || refs[0].Error != "" || refs[0].Digest != blob.Digest(b) {
			t.Fatalf("event %d: %+v", apps[i].Position, refs)
		}
		got, err := store.Get(refs[0].Digest)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("DATA/blobs: %d bytes, %v", len(got), err)
		}
	}
	central.stop(t)
	stopTolerant(t, relay)
}
