package bonnie_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// countingStore counts the cursor writes that reach the store.
type countingStore struct {
	bonnie.Store
	sets atomic.Int64
}

func (c *countingStore) SetCursor(ctx context.Context, sink string, pos bonnie.Position) error {
	c.sets.Add(1)
	return c.Store.SetCursor(ctx, sink, pos)
}

// TestSinkCursorSavedAtMostEveryInterval: a live sink handed one record
// per commit does not write its cursor per record (that write competes
// with the appends Cyrus waits for), but the cursor still reaches the
// last record once the sink stops moving, and is saved when it stops.
func TestSinkCursorSavedAtMostEveryInterval(t *testing.T) {
	lg := openStore(t)
	store := &countingStore{Store: lg}
	var handled atomic.Int64
	var last atomic.Uint64
	sink := bonnie.SinkFunc("live", bonnie.AllEvents, func(_ context.Context, rec bonnie.Record) error {
		handled.Add(1)
		last.Store(uint64(rec.Position))
		return nil
	})
	eng, err := bonnie.New(bonnie.Options{Store: store, Sinks: []bonnie.Sink{sink},
		CursorEvery: 200 * time.Millisecond, SinkLinger: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	caps := captures(t)
	start := time.Now()
	var head bonnie.Position
	for _, raw := range caps {
		// One event at a time, each waited for: a commit of its own.
		pos, _, err := eng.Ingest(ctx, raw, "test")
		if err != nil {
			t.Fatal(err)
		}
		head = max(head, pos)
		deadline := time.Now().Add(10 * time.Second)
		for bonnie.Position(last.Load()) < head && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	elapsed := time.Since(start)
	if bonnie.Position(last.Load()) < head {
		t.Fatalf("sink handled up to %d, head %d", last.Load(), head)
	}
	// At most one write per interval while moving, plus the one after it
	// stops moving.
	if max := int64(elapsed/(200*time.Millisecond)) + 2; store.sets.Load() > max {
		t.Errorf("%d cursor writes for %d records in %v, want at most %d", store.sets.Load(), handled.Load(), elapsed, max)
	}
	// Once it has stopped moving, the cursor reaches the last record.
	deadline := time.Now().Add(5 * time.Second)
	for {
		cur, err := lg.Cursor(ctx, "live")
		if err != nil {
			t.Fatal(err)
		}
		if cur == head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor at %d a while after the sink handled %d", cur, head)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSinkCursorSavedOnStop: with a cursor interval longer than the run,
// the cursor is still saved when the engine stops, so a restart does not
// hand the sink what it had handled.
func TestSinkCursorSavedOnStop(t *testing.T) {
	lg := openStore(t)
	var last atomic.Uint64
	sink := bonnie.SinkFunc("stop", bonnie.AllEvents, func(_ context.Context, rec bonnie.Record) error {
		last.Store(uint64(rec.Position))
		return nil
	})
	eng, err := bonnie.New(bonnie.Options{Store: lg, Sinks: []bonnie.Sink{sink}, CursorEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	ingestAll(t, eng)
	head, _ := lg.Head(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for bonnie.Position(last.Load()) < head && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if cur, _ := lg.Cursor(ctx, "stop"); cur != 0 {
		t.Errorf("cursor written (%d) before CursorEvery passed", cur)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if cur, _ := lg.Cursor(context.Background(), "stop"); cur != head {
		t.Fatalf("cursor after stop %d, want %d", cur, head)
	}
}
