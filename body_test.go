package bonnie_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie"
)

const bodyFolder = "f0lder0uniqueid0000000001"

func appendEvent(uid uint32, ts string) []byte {
	return fmt.Appendf(nil, `{"event":"MessageAppend","timestamp":"%s","service":"imap","mailboxID":"%s",`+
		`"uri":"imap://h/user.alice.Work;UIDVALIDITY=7/;UID=%d","user":"alice","messageSize":11,"vnd.cmu.midset":["<m%d@x>"]}`,
		ts, bodyFolder, uid, uid)
}

func flagsEvent(uid uint32, ts string) []byte {
	return fmt.Appendf(nil, `{"event":"FlagsSet","timestamp":"%s","service":"imap","mailboxID":"%s",`+
		`"uri":"imap://h/user.alice.Work;UIDVALIDITY=7","uidset":"%d","flagNames":"\\Flagged","user":"alice"}`,
		ts, bodyFolder, uid)
}

func loginEvent(i int) []byte {
	return fmt.Appendf(nil, `{"event":"Login","timestamp":"2026-11-28T21:00:00.000Z","service":"imap","user":"u%d","vnd.cmu.sessionId":"s%d","uri":"imap://h"}`, i, i)
}

// fakeFetcher "stores" body-of-UID-n and describes it, or fails as told.
type fakeFetcher struct {
	calls atomic.Int32
	fetch func(ctx context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error)
}

func (f *fakeFetcher) FetchBodies(ctx context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	f.calls.Add(1)
	if f.fetch != nil {
		return f.fetch(ctx, ev)
	}
	return goodBodies(ev), nil
}

var internalDate = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

func goodBodies(ev *bonnie.Event) []bonnie.BodyRef {
	var refs []bonnie.BodyRef
	for _, uid := range ev.UIDs {
		b := fmt.Appendf(nil, "body-of-%d", uid)
		sum := sha256.Sum256(b)
		refs = append(refs, bonnie.BodyRef{UID: uid, Digest: hex.EncodeToString(sum[:]), Size: int64(len(b)), InternalDate: internalDate})
	}
	return refs
}

func bodyCount(t *testing.T, m *bonnie.Metrics, outcome string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bonnie_bodies_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestBodiesFetchedAtIngest(t *testing.T) {
	lg := openStore(t)
	ff := &fakeFetcher{}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Bodies: ff})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pos, _, err := eng.Ingest(ctx, appendEvent(3, "2026-11-28T21:00:00.000Z"), "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.Ingest(ctx, flagsEvent(3, "2026-11-28T21:00:01.000Z"), "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := eng.Ingest(ctx, loginEvent(1), "test"); err != nil {
		t.Fatal(err)
	}
	if n := ff.calls.Load(); n != 1 {
		t.Fatalf("fetcher called %d times, want once (only MessageAppend needs a body)", n)
	}
	recs, err := lg.Read(ctx, pos-1, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := goodBodies(&bonnie.Event{UIDs: []uint32{3}})
	got := recs[0].Event.Bodies
	if len(got) != 1 || got[0].Digest != want[0].Digest || got[0].Size != want[0].Size || !got[0].InternalDate.Equal(internalDate) {
		t.Fatalf("stored bodies %+v, want %+v", got, want)
	}
	st := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(bodyFolder, 7, 3))
	if st["digest"] != want[0].Digest || st["size"] != "9" || st["internalDate"] != "2020-01-02T03:04:05Z" {
		t.Fatalf("message state %v", st)
	}
	if err := lg.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	if n := bodyCount(t, eng.Metrics(), "stored"); n != 1 {
		t.Fatalf("stored counter %v", n)
	}
}

// A copy inherits the digest from its source: no fetch.
func TestCopyInheritsDigest(t *testing.T) {
	lg := openStore(t)
	ff := &fakeFetcher{}
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Bodies: ff})
	ctx := context.Background()
	create := fmt.Appendf(nil, `{"event":"MailboxCreate","timestamp":"2026-11-28T20:59:00.000Z","service":"imap","mailboxID":"%s","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","user":"alice"}`, bodyFolder)
	cp := []byte(`{"event":"vnd.cmu.MessageCopy","timestamp":"2026-11-28T21:00:02.000Z","service":"imap","mailboxID":"other0uniqueid","uri":"imap://h/user.alice.Keep;UIDVALIDITY=9","oldMailboxID":"imap://h/user.alice.Work;UIDVALIDITY=7","uidset":"1","vnd.cmu.oldUidset":"3","user":"alice"}`)
	for _, raw := range [][]byte{create, appendEvent(3, "2026-11-28T21:00:00.000Z"), cp} {
		if _, _, err := eng.Ingest(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := ff.calls.Load(); n != 1 {
		t.Fatalf("fetcher called %d times, want 1", n)
	}
	src := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(bodyFolder, 7, 3))
	dst := state(t, lg, bonnie.KindMessage, bonnie.MessageKey("other0uniqueid", 9, 1))
	if src["digest"] == "" || dst["digest"] != src["digest"] || dst["internalDate"] != src["internalDate"] {
		t.Fatalf("copy did not inherit: src %v dst %v", src, dst)
	}
}

// A failed fetch never loses the event: it is stored with the failure on
// each UID, the message has no digest, and the failure is counted. After
// a few failures in a row the engine stops asking for a while.
func TestBodyFetchFailureKeepsEvent(t *testing.T) {
	lg := openStore(t)
	ff := &fakeFetcher{fetch: func(context.Context, *bonnie.Event) ([]bonnie.BodyRef, error) {
		return nil, errors.New("dial tcp 127.0.0.1:143: connection refused")
	}}
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Bodies: ff})
	ctx := context.Background()
	for uid := uint32(1); uid <= 5; uid++ {
		pos, _, err := eng.Ingest(ctx, appendEvent(uid, fmt.Sprintf("2026-11-28T21:00:0%d.000Z", uid)), "test")
		if err != nil {
			t.Fatalf("uid %d: %v", uid, err)
		}
		recs, _ := lg.Read(ctx, pos-1, 1)
		b := recs[0].Event.Bodies
		if len(b) != 1 || b[0].UID != uid || b[0].Digest != "" || b[0].Error == "" {
			t.Fatalf("uid %d: bodies %+v, want the failure recorded", uid, b)
		}
		if st := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(bodyFolder, 7, uid)); st["digest"] != "" || st["state"] != bonnie.StatePresent {
			t.Fatalf("uid %d: state %v", uid, st)
		}
	}
	if n := ff.calls.Load(); n != 3 {
		t.Fatalf("fetcher called %d times, want 3 (then the breaker opens)", n)
	}
	if f, s := bodyCount(t, eng.Metrics(), "failed"), bodyCount(t, eng.Metrics(), "skipped"); f != 3 || s != 2 {
		t.Fatalf("failed %v skipped %v, want 3 and 2", f, s)
	}
}

func TestBodyFetchIsBounded(t *testing.T) {
	lg := openStore(t)
	ff := &fakeFetcher{fetch: func(ctx context.Context, _ *bonnie.Event) ([]bonnie.BodyRef, error) {
		<-ctx.Done() // a server that never answers
		return nil, ctx.Err()
	}}
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Bodies: ff, BodyTimeout: 100 * time.Millisecond})
	start := time.Now()
	if _, _, err := eng.Ingest(context.Background(), appendEvent(1, "2026-11-28T21:00:00.000Z"), "test"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("ingest took %v", d)
	}
}

// A fetcher that returns something else than one BodyRef per UID is a
// failure, not a silent mismatch.
func TestBodyFetcherContractChecked(t *testing.T) {
	lg := openStore(t)
	ff := &fakeFetcher{fetch: func(_ context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
		return []bonnie.BodyRef{{UID: 99, Digest: "ab"}}, nil
	}}
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Bodies: ff})
	pos, _, err := eng.Ingest(context.Background(), appendEvent(1, "2026-11-28T21:00:00.000Z"), "test")
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := lg.Read(context.Background(), pos-1, 1)
	if b := recs[0].Event.Bodies; len(b) != 1 || b[0].UID != 1 || b[0].Error == "" || b[0].Digest != "" {
		t.Fatalf("bodies %+v", b)
	}
}

// chanSub is a source that delivers what the test sends, without waiting
// for acknowledgements (like source/cyrus).
type chanSub struct {
	ch     chan *message.Message
	closed sync.Once
}

func newChanSub() *chanSub { return &chanSub{ch: make(chan *message.Message, 100)} }

func (s *chanSub) Subscribe(context.Context, string) (<-chan *message.Message, error) {
	return s.ch, nil
}

func (s *chanSub) Close() error {
	s.closed.Do(func() { close(s.ch) })
	return nil
}

func (s *chanSub) send(raw []byte) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), raw)
	s.ch <- m
	return m
}

// A slow body fetch holds back only the events of its own source that
// come after it (their order matters), not other sources' events; and the
// source's order is kept in the log.
func TestSlowFetchDoesNotBlockOtherSources(t *testing.T) {
	lg := openStore(t)
	release := make(chan struct{})
	ff := &fakeFetcher{fetch: func(ctx context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return goodBodies(ev), nil
	}}
	a, b := newChanSub(), newChanSub()
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Bodies: ff, BodyTimeout: time.Minute,
		Sources: []bonnie.Source{{Name: "a", Subscriber: a}, {Name: "b", Subscriber: b}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- eng.Run(ctx) }()

	appendMsg := a.send(appendEvent(1, "2026-11-28T21:00:00.000Z"))
	flagMsg := a.send(flagsEvent(1, "2026-11-28T21:00:01.000Z"))
	var others []*message.Message
	for i := range 20 {
		others = append(others, b.send(loginEvent(i)))
	}
	for i, m := range others {
		select {
		case <-m.Acked():
		case <-time.After(10 * time.Second):
			t.Fatalf("source b's event %d waited for source a's body fetch", i)
		}
	}
	select {
	case <-flagMsg.Acked():
		t.Fatal("an event after the pending append was acknowledged before it")
	default:
	}
	close(release)
	for _, m := range []*message.Message{appendMsg, flagMsg} {
		select {
		case <-m.Acked():
		case <-time.After(10 * time.Second):
			t.Fatal("source a's events not acknowledged after the fetch")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	recs, err := lg.Read(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var order []bonnie.EventType
	for _, r := range recs {
		if r.Event.MailboxID == bodyFolder {
			order = append(order, r.Event.Type)
		}
	}
	if len(order) != 2 || order[0] != bonnie.MessageAppend || order[1] != bonnie.FlagsSet {
		t.Fatalf("source a's events in the log: %v", order)
	}
	if recs[len(recs)-1].Event.Type != bonnie.FlagsSet {
		t.Fatalf("last event %v: the other source's events should have gone first", recs[len(recs)-1].Event.Type)
	}
}

// Many appends from one source are fetched concurrently, not one after
// the other, and land in the log in the source's order.
func TestFetchesRunConcurrently(t *testing.T) {
	lg := openStore(t)
	var inFlight, peak atomic.Int32
	ff := &fakeFetcher{fetch: func(ctx context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
		inFlight.Add(-1)
		return goodBodies(ev), nil
	}}
	a := newChanSub()
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Bodies: ff, BodyConcurrency: 4,
		Sources: []bonnie.Source{{Name: "a", Subscriber: a}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- eng.Run(ctx) }()
	var msgs []*message.Message
	for uid := uint32(1); uid <= 16; uid++ {
		msgs = append(msgs, a.send(appendEvent(uid, "2026-11-28T21:00:00.000Z")))
	}
	for _, m := range msgs {
		select {
		case <-m.Acked():
		case <-time.After(20 * time.Second):
			t.Fatal("not acknowledged")
		}
	}
	cancel()
	<-done
	if p := peak.Load(); p < 2 || p > 4 {
		t.Fatalf("peak concurrent fetches %d, want 2..4", p)
	}
	recs, _ := lg.Read(context.Background(), 0, 100)
	var uids []uint32
	for _, r := range recs {
		if r.Event.Type == bonnie.MessageAppend {
			uids = append(uids, r.Event.UIDs[0])
		}
	}
	for i, u := range uids {
		if u != uint32(i+1) {
			t.Fatalf("log order %v, want 1..16", uids)
		}
	}
}
