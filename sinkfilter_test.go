package bonnie_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// plainStore hides the SQLite log's ReadMatching: the engine then reads
// with Read and filters itself.
type plainStore struct{ bonnie.Store }

// TestSelectiveSinkFilteredReader: a sink with a mask gets the same
// records, in order and whole, whether the store filters them
// (FilteredReader) or the engine does, and its cursor moves past the
// records it does not want, during catch-up and live.
func TestSelectiveSinkFilteredReader(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	ingestAll(t, eng)
	mask := bonnie.Mask(bonnie.MessageNew, bonnie.MessageAppend, bonnie.FlagsSet)
	live := []byte(`{"event":"Login","timestamp":"2026-11-28T21:00:00.000Z","service":"imap","user":"bob","vnd.cmu.sessionId":"s-live","uri":"imap://h"}`)
	run := func(name string, store bonnie.Store, ingest bool) []string {
		var mu sync.Mutex
		var got []string
		sink := bonnie.SinkFunc(name, mask, func(_ context.Context, rec bonnie.Record) error {
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if !mask.Has(rec.Event.Type) || rec.Event.Key() != rec.Key {
				t.Errorf("sink got record %d of type %s, key %s", rec.Position, rec.Event.Type, rec.Key)
			}
			mu.Lock()
			got = append(got, string(b))
			mu.Unlock()
			return nil
		})
		e, err := bonnie.New(bonnie.Options{Store: store, Sinks: []bonnie.Sink{sink}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		waitCursor := func(want bonnie.Position) {
			deadline := time.Now().Add(30 * time.Second)
			for {
				pos, err := lg.Cursor(context.Background(), name)
				if err != nil {
					t.Fatal(err)
				}
				if pos == want {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: cursor at %d, want %d", name, pos, want)
				}
				time.Sleep(time.Millisecond)
			}
		}
		head, _ := lg.Head(context.Background())
		waitCursor(head)
		if ingest {
			// A live event the sink does not want: the cursor still moves.
			pos, _, err := e.Ingest(ctx, live, "live")
			if err != nil {
				t.Fatal(err)
			}
			waitCursor(pos)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return got
	}
	filtered := run("filtered", lg, true)
	plain := run("plain", plainStore{lg}, false)
	if len(filtered) == 0 || len(filtered) != len(plain) {
		t.Fatalf("filtered sink got %d records, plain %d", len(filtered), len(plain))
	}
	for i := range filtered {
		if filtered[i] != plain[i] {
			t.Fatalf("record %d differs:\n%s\n%s", i, filtered[i], plain[i])
		}
	}
}
