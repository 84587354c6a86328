package bonnie_test

import (
	"context"
	"encoding/json"
	"fmt"
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

// TestReadMatchingWithoutFilteredReader: bonnie.ReadMatching gives the same
// records and the same position to continue from with a log that filters
// (FilteredReader) and one that does not; EachMatching visits them all.
func TestReadMatchingWithoutFilteredReader(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	ingestAll(t, eng)
	ctx := context.Background()
	mask := bonnie.Mask(bonnie.MessageNew, bonnie.MessageAppend, bonnie.Login)
	for _, page := range []int{1, 7, 1000} {
		var a, b []bonnie.Position
		for _, store := range []bonnie.Store{lg, plainStore{lg}} {
			var got []bonnie.Position
			var pos bonnie.Position
			for {
				recs, last, err := bonnie.ReadMatching(ctx, store, pos, page, mask)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range recs {
					if !mask.Has(r.Event.Type) {
						t.Fatalf("record %d of type %s", r.Position, r.Event.Type)
					}
					got = append(got, r.Position)
				}
				if last == pos {
					break
				}
				pos = last
			}
			if head, _ := lg.Head(ctx); pos != head {
				t.Errorf("page %d: stopped at %d, head %d", page, pos, head)
			}
			if a == nil {
				a = got
			} else {
				b = got
			}
		}
		if len(a) == 0 || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("page %d: filtered %v, not filtered %v", page, a, b)
		}
	}
	var each []bonnie.Position
	if _, err := bonnie.EachMatching(ctx, plainStore{lg}, 0, mask, func(r bonnie.Record) error {
		each = append(each, r.Position)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	all, _, _ := bonnie.ReadMatching(ctx, lg, 0, 100000, mask)
	if len(each) != len(all) {
		t.Errorf("EachMatching visited %d, ReadMatching gives %d", len(each), len(all))
	}
}
