package cyrus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/ThreeDotsLabs/watermill/message"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func newDatagramT(t *testing.T, opts Options) *DatagramSubscriber {
	t.Helper()
	s, err := NewDatagramSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestDatagramDeliversCapturesByteExact(t *testing.T) {
	opts, giveUps, rejects := testOptions(t, "notify")
	s := newDatagramT(t, opts)
	ch, err := s.Subscribe(t.Context(), "ignored")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, name := range []string{"001-Login.bin", "012-MessageAppend.bin", "053-MAIL.bin", "064-SIEVE.bin"} {
		t.Run(name, func(t *testing.T) {
			want := readFile(t, name)
			sendDatagram(t, opts.Path, want)
			m := recv(t, ch)
			if !bytes.Equal(m.Payload, want) {
				t.Fatalf("payload differs:\n got %q\nwant %q", m.Payload, want)
			}
			checkMeta(t, m, FramingDatagram, os.Getuid(), os.Getpid(), 1)
			if m.Metadata.Get(MetaTruncated) != "" {
				t.Error("marked truncated")
			}
			if seen[m.UUID] {
				t.Errorf("UUID %s reused", m.UUID)
			}
			seen[m.UUID] = true
			m.Ack()
		})
	}
	giveUps.none(t, "OnGiveUp")
	rejects.none(t, "OnReject")
}

func TestDatagramNackRedelivers(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify")
	s := newDatagramT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	want := readFile(t, "001-Login.bin")
	sendDatagram(t, opts.Path, want)

	first := recv(t, ch)
	first.Nack()
	second := recv(t, ch)
	if second.UUID != first.UUID {
		t.Errorf("redelivery UUID %s, first %s", second.UUID, first.UUID)
	}
	if !bytes.Equal(second.Payload, want) {
		t.Error("redelivered payload differs")
	}
	checkMeta(t, second, FramingDatagram, os.Getuid(), os.Getpid(), 2)
	second.Ack()

	// The next datagram is the next message: the acked one is gone.
	sendDatagram(t, opts.Path, []byte("next"))
	if m := recv(t, ch); string(m.Payload) != "next" {
		t.Fatalf("got %q", m.Payload)
	} else {
		m.Ack()
	}
	giveUps.none(t, "OnGiveUp")
}

func TestDatagramGiveUpAfterMaxRedeliveries(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify")
	opts.MaxRedeliveries = 2
	s := newDatagramT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	want := readFile(t, "012-MessageAppend.bin")
	sendDatagram(t, opts.Path, want)

	for attempt := 1; attempt <= 3; attempt++ {
		m := recv(t, ch)
		if got := m.Metadata.Get(MetaAttempt); got != strconv.Itoa(attempt) {
			t.Fatalf("attempt %s, want %d", got, attempt)
		}
		m.Nack()
	}
	g := giveUps.next(t)
	if !bytes.Equal(g.raw, want) {
		t.Errorf("OnGiveUp raw differs")
	}
	if !strings.Contains(g.reason, "nacked 3 times") {
		t.Errorf("reason %q", g.reason)
	}
	// Given up means not delivered again: the next message is new.
	sendDatagram(t, opts.Path, []byte("after"))
	if m := recv(t, ch); string(m.Payload) != "after" {
		t.Fatalf("got %q", m.Payload)
	} else {
		m.Ack()
	}
}

// A burst sent as fast as a client can: every datagram arrives, because
// the reader blocks the sender rather than dropping.
func TestDatagramBurst(t *testing.T) {
	const n = 10000
	opts, giveUps, rejects := testOptions(t, "notify")
	s := newDatagramT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")

	errc := make(chan error, 1)
	go func() {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: opts.Path, Net: "unixgram"})
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		for i := range n {
			if _, err := fmt.Fprintf(c, "log\x00EVENT\x00\x00\x00\x000\x00{\"event\":\"Burst\",\"n\":%d}\x00", i); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()

	seen := make([]bool, n)
	for range n {
		m := recv(t, ch)
		var i int
		p := string(m.Payload)
		if _, err := fmt.Sscanf(p[strings.Index(p, `"n":`):], `"n":%d}`, &i); err != nil || i < 0 || i >= n {
			t.Fatalf("bad payload %q: %v", p, err)
		}
		if seen[i] {
			t.Fatalf("datagram %d delivered twice", i)
		}
		seen[i] = true
		m.Ack()
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i, ok := range seen {
		if !ok {
			t.Fatalf("datagram %d missing", i)
		}
	}
	giveUps.none(t, "OnGiveUp")
	rejects.none(t, "OnReject")
}

// With many messages in flight, each is still handed out in the order it
// was read: acknowledgements come late and out of order, deliveries not.
func TestDatagramInFlightKeepsOrder(t *testing.T) {
	const n = 2000
	opts, giveUps, _ := testOptions(t, "notify")
	opts.MaxInFlight = 64
	s := newDatagramT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")

	go func() {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: opts.Path, Net: "unixgram"})
		if err != nil {
			return
		}
		defer c.Close()
		for i := range n {
			fmt.Fprintf(c, "log\x00EVENT\x00\x00\x00\x000\x00{\"event\":\"Burst\",\"n\":%d}\x00", i)
		}
	}()

	var pending []*message.Message
	for want := range n {
		m := recv(t, ch)
		p := string(m.Payload)
		var i int
		if _, err := fmt.Sscanf(p[strings.Index(p, `"n":`):], `"n":%d}`, &i); err != nil {
			t.Fatalf("bad payload %q: %v", p, err)
		}
		if i != want {
			t.Fatalf("delivery %d is datagram %d: out of order", want, i)
		}
		pending = append(pending, m)
		if len(pending) == opts.MaxInFlight {
			// Acknowledge newest first, so acks are out of order.
			for j := len(pending) - 1; j >= 0; j-- {
				pending[j].Ack()
			}
			pending = pending[:0]
		}
	}
	for _, m := range pending {
		m.Ack()
	}
	giveUps.none(t, "OnGiveUp")
}

// With nobody consuming and a queue of 1, the reader stops reading and
// the sender blocks; once a subscriber comes, everything arrives in order.
func TestDatagramBackPressure(t *testing.T) {
	const n = 60 // far more than the kernel queue (about 10) plus ours
	opts, _, _ := testOptions(t, "notify")
	opts.QueueSize = 1
	s := newDatagramT(t, opts)

	done := make(chan error, 1)
	go func() {
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: opts.Path, Net: "unixgram"})
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		for i := range n {
			if _, err := fmt.Fprintf(c, "%d", i); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	// The sender cannot finish while nobody consumes.
	select {
	case err := <-done:
		t.Fatalf("sender finished without a consumer (err %v): datagrams were dropped or buffered without bound", err)
	case <-time.After(200 * time.Millisecond):
	}
	ch, _ := s.Subscribe(t.Context(), "")
	for i := range n {
		m := recv(t, ch)
		if string(m.Payload) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, m.Payload)
		}
		m.Ack()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDatagramOversizeIsDeliveredTruncated(t *testing.T) {
	opts, _, _ := testOptions(t, "notify")
	opts.MaxDatagramSize = 1024
	s := newDatagramT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	big := bytes.Repeat([]byte("0123456789"), 300)
	sendDatagram(t, opts.Path, big)
	m := recv(t, ch)
	if !bytes.Equal(m.Payload, big[:1024]) {
		t.Errorf("payload is %d bytes, want the first 1024", len(m.Payload))
	}
	if m.Metadata.Get(MetaTruncated) != "true" || m.Metadata.Get(MetaSize) != "3000" {
		t.Errorf("metadata %v", m.Metadata)
	}
	m.Ack()
}

// Cyrus's largest datagram (65536 bytes) arrives whole with the default
// limit.
func TestDatagramLargest(t *testing.T) {
	opts, _, _ := testOptions(t, "notify")
	s := newDatagramT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	big := bytes.Repeat([]byte{'x'}, DefaultMaxDatagramSize)
	sendDatagram(t, opts.Path, big)
	m := recv(t, ch)
	if !bytes.Equal(m.Payload, big) || m.Metadata.Get(MetaTruncated) != "" {
		t.Errorf("payload %d bytes, metadata %v", len(m.Payload), m.Metadata)
	}
	m.Ack()
}

func TestDatagramSubscribeRules(t *testing.T) {
	opts, _, _ := testOptions(t, "notify")
	s := newDatagramT(t, opts)
	ctx, cancel := context.WithCancel(t.Context())
	ch, err := s.Subscribe(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Subscribe(t.Context(), ""); !errors.Is(err, ErrSubscribed) {
		t.Fatalf("second Subscribe: %v", err)
	}
	// Ending the context ends the subscription; what arrives meanwhile
	// waits for the next one.
	cancel()
	for range ch {
	}
	sendDatagram(t, opts.Path, []byte("kept"))
	ch2, err := s.Subscribe(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, ch2)
	if string(m.Payload) != "kept" {
		t.Fatalf("got %q", m.Payload)
	}
	m.Ack()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-ch2; ok {
		t.Fatal("channel open after Close")
	}
	if _, err := s.Subscribe(t.Context(), ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Close keeps delivering what was read while the subscription runs and
// returns once everything is acked.
func TestDatagramCloseDrains(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify")
	s := newDatagramT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	const n = 5
	for i := range n {
		sendDatagram(t, opts.Path, []byte(strconv.Itoa(i)))
	}
	held := recv(t, ch)
	// Wait until the reader has queued all five.
	for s.hub.queued.Load() < n {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	held.Ack()
	got := []string{string(held.Payload)}
	for m := range ch {
		got = append(got, string(m.Payload))
		m.Ack()
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "0,1,2,3,4" {
		t.Errorf("delivered %v", got)
	}
	giveUps.none(t, "OnGiveUp")
	if _, err := os.Lstat(opts.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left behind: %v", err)
	}
}

// What is not acked within DrainTimeout is given up, not lost.
func TestDatagramCloseTimeoutGivesUp(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify")
	opts.DrainTimeout = 100 * time.Millisecond
	s := newDatagramT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	sendDatagram(t, opts.Path, []byte("held"))
	m := recv(t, ch)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range ch {
		}
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	g := giveUps.next(t)
	if string(g.raw) != "held" || !strings.Contains(g.reason, "drain timeout") {
		t.Errorf("gave up %q: %s", g.raw, g.reason)
	}
	m.Ack() // too late, and harmless
}

// Without a subscription, Close gives up what was read (the engine keeps
// it as a dead letter) rather than dropping it.
func TestDatagramCloseWithoutSubscriberGivesUp(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify")
	s := newDatagramT(t, opts)
	sendDatagram(t, opts.Path, []byte("orphan"))
	for s.hub.queued.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	g := giveUps.next(t)
	if string(g.raw) != "orphan" || !strings.Contains(g.reason, ErrClosed.Error()) {
		t.Errorf("gave up %q: %s", g.raw, g.reason)
	}
}
