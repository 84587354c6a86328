package amqp

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie/store/blob"
)

// bigMessage returns a MIME message of about size bytes: 8-bit header and
// text bytes, and a binary attachment (Content-Transfer-Encoding: binary)
// holding every byte value, NUL, bare CR and LF included.
func bigMessage(size int, seed uint64) []byte {
	var b bytes.Buffer
	b.WriteString("From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nSubject: Gr\xc3\xbc\xc3\x9fe \xe4\xf6\xfc raw 8-bit\r\n")
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n")
	b.WriteString("Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xe4\xf6\xfc\xdf\r\n--b1\r\n")
	b.WriteString("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n")
	r := rand.New(rand.NewPCG(seed, seed))
	for b.Len() < size-20 {
		b.WriteByte(byte(r.Uint32()))
	}
	b.WriteString("\r\n--b1--\r\n")
	return b.Bytes()
}

// A body over the chunk size and a small one go through RabbitMQ and
// arrive byte for byte in the store; publishing one again is harmless.
func TestBodiesThroughRabbitMQ(t *testing.T) {
	requireBroker(t)
	d := track(t)
	topic := BodiesTopic("bonnie-test-bodies-" + watermill.NewUUID())
	d.add(topic, QueueName(topic, DefaultGroup))

	store, err := blob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sub, err := NewSubscriber(Config{URL: testURL(), Prefetch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.SubscribeInitialize(topic); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(Config{URL: testURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	big := bigMessage(10<<20+12345, 1)
	small := []byte("Subject: small \xe4\r\n\r\nhello\r\n")
	for _, b := range [][]byte{big, small, big} {
		if err := PublishBody(pub, topic, blob.Digest(b), int64(len(b)), bytes.NewReader(b), DefaultChunkSize); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := sub.Subscribe(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	staging := t.TempDir()
	stored := make(chan string, 16)
	recv := &BodyReceiver{Store: store, Dir: staging, Logger: quiet(), OnStored: func(d string) { stored <- d }}
	go recv.Run(ch)
	want := map[string][]byte{blob.Digest(big): big, blob.Digest(small): small}
	deadline := time.After(60 * time.Second)
	for n := 0; n < 3; n++ { // big, small, big again (found stored)
		select {
		case <-stored:
		case <-deadline:
			t.Fatalf("bodies not stored; counts %v", fmt.Sprint(recv.Counts()))
		}
	}
	for d, b := range want {
		got, err := store.Get(d)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("body %s: %d bytes, %v; want %d bytes", d, len(got), err, len(b))
		}
	}
	if chunks, _, bad := recv.Counts(); chunks != 3+1+3 || bad != 0 {
		t.Fatalf("chunks %d bad %d, want 7 and 0", chunks, bad)
	}
	if ents, _ := os.ReadDir(staging); len(ents) != 0 {
		t.Fatalf("staging not emptied: %v", ents)
	}
}

func chunks(body []byte, chunk int) []*message.Message {
	d := blob.Digest(body)
	parts := (len(body) + chunk - 1) / chunk
	var out []*message.Message
	for p := 0; p < parts; p++ {
		end := min(len(body), (p+1)*chunk)
		m := message.NewMessage(ChunkID(d, p), body[p*chunk:end])
		m.Metadata = message.Metadata{MetaBodyDigest: d, MetaBodySize: strconv.Itoa(len(body)),
			MetaBodyPart: strconv.Itoa(p), MetaBodyParts: strconv.Itoa(parts), MetaBodyOffset: strconv.Itoa(p * chunk)}
		out = append(out, m)
	}
	return out
}

// Chunks in any order, twice, across a restart of the receiver (what was
// acknowledged is on disk) assemble the body; bad chunks are refused as
// such and leave nothing in the store.
func TestBodyReceiverAssembles(t *testing.T) {
	store, err := blob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	staging := t.TempDir()
	body := bigMessage(300_000, 2)
	cs := chunks(body, 64<<10) // 5 parts
	r1 := &BodyReceiver{Store: store, Dir: staging}
	for _, i := range []int{4, 0, 2, 0} {
		if err := r1.Handle(cs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := store.Has(blob.Digest(body)); ok {
		t.Fatal("stored before all parts came")
	}
	r2 := &BodyReceiver{Store: store, Dir: staging} // a restart
	for _, i := range []int{3, 1} {
		if err := r2.Handle(cs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := store.Get(blob.Digest(body)); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("assembled: %v", err)
	}
	if _, err := os.Stat(filepath.Join(staging, blob.Digest(body))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staging left: %v", err)
	}
	if err := r2.Handle(cs[2]); err != nil { // late duplicate
		t.Fatal(err)
	}
	if err := r2.Handle(cs[0]); err != nil { // a half-sent body, abandoned
		t.Fatal(err)
	}
	if n, err := r2.RemoveStale(time.Hour); n != 0 || err != nil {
		t.Fatalf("removed %d fresh: %v", n, err)
	}
	old := time.Now().Add(-2 * time.Hour)
	filepath.Walk(staging, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, old, old) })
	if n, err := r2.RemoveStale(time.Hour); n != 0 || err != nil { // cs[0]'s body is stored: nothing staged
		t.Fatalf("removed %d: %v", n, err)
	}

	half := chunks(bigMessage(200_000, 5), 64<<10)
	if err := r2.Handle(half[1]); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(staging, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, old, old) })
	if n, err := r2.RemoveStale(time.Hour); n != 1 || err != nil {
		t.Fatalf("removed %d stale: %v", n, err)
	}

	// A chunk whose bytes are not the body's.
	other := bigMessage(200_000, 3)
	bad := chunks(other, 64<<10)
	forged := chunks(bigMessage(200_000, 4), 64<<10)
	for i := range bad {
		m := bad[i]
		if i == 1 {
			m = message.NewMessage(m.UUID, forged[1].Payload)
			m.Metadata = bad[i].Metadata
		}
		err := r2.Handle(m)
		if i < len(bad)-1 && err != nil {
			t.Fatal(err)
		}
		if i == len(bad)-1 && !errors.Is(err, ErrBadChunk) {
			t.Fatalf("forged body: %v", err)
		}
	}
	if ok, _ := store.Has(blob.Digest(other)); ok {
		t.Fatal("a forged body was stored")
	}
	single := chunks([]byte("x"), 64)[0]
	single.Payload = []byte("y")
	if err := r2.Handle(single); !errors.Is(err, ErrBadChunk) {
		t.Fatalf("wrong single chunk: %v", err)
	}
	noDigest := message.NewMessage("x", []byte("x"))
	if err := r2.Handle(noDigest); !errors.Is(err, ErrBadChunk) {
		t.Fatalf("no headers: %v", err)
	}
}
