package bonnie_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// batchSink records the batches it is handed; its first fails batches
// fail.
type batchSink struct {
	mask    bonnie.EventMask
	mu      sync.Mutex
	fails   int
	batches [][]bonnie.Position
	single  int
}

func (s *batchSink) Name() string             { return "batch" }
func (s *batchSink) Events() bonnie.EventMask { return s.mask }
func (s *batchSink) Handle(context.Context, bonnie.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.single++
	return nil
}

func (s *batchSink) HandleBatch(_ context.Context, recs []bonnie.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fails > 0 {
		s.fails--
		return errors.New("database busy")
	}
	var ps []bonnie.Position
	for _, r := range recs {
		ps = append(ps, r.Position)
	}
	s.batches = append(s.batches, ps)
	return nil
}

// TestBatchSink: a sink that takes batches is handed every record it wants
// once, in log order, in batches (during catch-up a page at a time, not
// record by record), never one it does not want, never through Handle; a
// failed batch is retried whole.
func TestBatchSink(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	ingestAll(t, eng) // the log exists before the sink: it catches up
	mask := bonnie.Mask(bonnie.MessageNew, bonnie.MessageAppend, bonnie.FlagsSet, bonnie.Login)
	var want []bonnie.Position
	all, err := lg.Read(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if mask.Has(r.Event.Type) {
			want = append(want, r.Position)
		}
	}
	if len(want) < 10 {
		t.Fatalf("only %d records of the sink's types in the captures", len(want))
	}
	s := &batchSink{mask: mask, fails: 2}
	run, _ := bonnie.New(bonnie.Options{Store: lg, Sinks: []bonnie.Sink{s}, SinkBackoff: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		n := 0
		for _, b := range s.batches {
			n += len(b)
		}
		s.mu.Unlock()
		if n >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink got %d of %d records", n, len(want))
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var got []bonnie.Position
	for _, b := range s.batches {
		got = append(got, b...)
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if len(s.batches) != 1 {
		t.Errorf("catch-up of one page handed in %d batches: %v", len(s.batches), s.batches)
	}
	if s.single != 0 || s.fails != 0 {
		t.Errorf("Handle called %d times, %d failures left", s.single, s.fails)
	}
}

// keeperSink keeps its own position, as a projection does in its database.
type keeperSink struct {
	mu  sync.Mutex
	pos bonnie.Position
	got []bonnie.Position
}

func (s *keeperSink) Name() string             { return "keeper" }
func (s *keeperSink) Events() bonnie.EventMask { return bonnie.AllEvents }
func (s *keeperSink) Handle(_ context.Context, rec bonnie.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, rec.Position)
	s.pos = rec.Position
	return nil
}

func (s *keeperSink) Position(context.Context) (bonnie.Position, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos, nil
}

// TestPositionKeeperResumesFromItsOwnPosition: a sink that keeps its own
// position is resumed from it, not from its cursor in the log: one whose
// data was dropped for a rebuild (its position behind the cursor) gets the
// records again, and one ahead of the cursor (saved only now and then) is
// not handed what it has.
func TestPositionKeeperResumesFromItsOwnPosition(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	ingestAll(t, eng)
	ctx := context.Background()
	head, _ := lg.Head(ctx)
	for _, tc := range []struct {
		name        string
		own, cursor bonnie.Position
	}{
		{"rebuilt", 10, head},
		{"ahead of its cursor", 20, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := lg.SetCursor(ctx, "keeper", tc.cursor); err != nil {
				t.Fatal(err)
			}
			s := &keeperSink{pos: tc.own}
			run, _ := bonnie.New(bonnie.Options{Store: lg, Sinks: []bonnie.Sink{s}})
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- run.Run(rctx) }()
			deadline := time.Now().Add(30 * time.Second)
			for {
				p, _ := s.Position(ctx)
				if p == head || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.got) != int(head-tc.own) || s.got[0] != tc.own+1 || s.got[len(s.got)-1] != head {
				t.Fatalf("sink at %d, cursor %d: handed %d records (%v...), want %d-%d",
					tc.own, tc.cursor, len(s.got), s.got[:min(3, len(s.got))], tc.own+1, head)
			}
			if cur, _ := lg.Cursor(ctx, "keeper"); cur != head {
				t.Errorf("cursor after the run %d, want %d", cur, head)
			}
		})
	}
}

// TestSinkLingerGathersCommits: a caught-up sink waits SinkLinger after
// the log grows, so the events committed one by one meanwhile reach it as
// one page, not one page per commit.
func TestSinkLingerGathersCommits(t *testing.T) {
	lg := openStore(t)
	s := &batchSink{mask: bonnie.AllEvents}
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Sinks: []bonnie.Sink{s}, SinkLinger: 3 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	caps := captures(t)[:20]
	for _, raw := range caps { // one commit each: Ingest waits for it
		if _, _, err := eng.Ingest(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		n := 0
		for _, b := range s.batches {
			n += len(b)
		}
		s.mu.Unlock()
		if n >= len(caps) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.batches) > 2 {
		t.Errorf("%d commits reached the sink in %d pages, want at most 2: %v", len(caps), len(s.batches), s.batches)
	}
}
