package bonnie_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/examples/bonnie-load/loadgen"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// The catch-up benchmarks read a log built once and cached, because
// building it (decode, apply, append) takes longer than reading it:
//
//	go test -run '^$' -bench SinkCatchUp .                            # 100k events
//	BONNIE_BENCH_EVENTS=1000000 go test -run '^$' -bench SinkCatchUp -benchtime 3x .
//
// BONNIE_BENCH_EVENTS sets the log's size (default 100000, 10000 with
// -short); BONNIE_BENCH_CACHE the directory of the cached logs (default
// $TMPDIR/bonnie-bench). A cache the current code cannot open, or of the
// wrong size, is rebuilt.

func benchEventCount(b *testing.B) int {
	if s := os.Getenv("BONNIE_BENCH_EVENTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("BONNIE_BENCH_EVENTS=%q: want a positive number", s)
		}
		return n
	}
	if testing.Short() {
		return 10_000
	}
	return 100_000
}

var (
	catchUpMu   sync.Mutex
	catchUpLogs = map[int]*sqlite.Log{}
)

// catchUpLog returns an open log of n realistic events, each decoded from
// a generated Cyrus notification (bonnie-load's templates: the real
// captures replayed in rounds with their UIDs shifted, so messages keep
// being created, flagged, copied and expunged) and applied with the
// ingester, so that it carries the changes the engine would have recorded.
// It is built with synchronous=NORMAL in batches of 5000 and kept under the
// cache directory for the next run.
func catchUpLog(b *testing.B, n int) *sqlite.Log {
	catchUpMu.Lock()
	defer catchUpMu.Unlock()
	if lg := catchUpLogs[n]; lg != nil {
		return lg
	}
	dir := os.Getenv("BONNIE_BENCH_CACHE")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "bonnie-bench")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	// The schema version is in the name: a log an older schema wrote would
	// be migrated, not rebuilt, and read the old way.
	path := filepath.Join(dir, fmt.Sprintf("catchup-v%d-%d.db", sqlite.SchemaVersion(), n))
	ctx := context.Background()
	if lg, err := sqlite.Open(ctx, path); err == nil {
		if head, err := lg.Head(ctx); err == nil && int(head) == n {
			catchUpLogs[n] = lg
			return lg
		}
		lg.Close()
	}
	b.Logf("building a log of %d events in %s (cached for later runs)", n, path)
	start := time.Now()
	tmp := path + ".building"
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(tmp + suffix)
		os.Remove(path + suffix)
	}
	if err := buildLog(ctx, tmp, n); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	b.Logf("built in %s", time.Since(start).Round(time.Millisecond))
	lg, err := sqlite.Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	catchUpLogs[n] = lg
	return lg
}

func buildLog(ctx context.Context, path string, n int) error {
	lg, err := sqlite.Open(ctx, path, sqlite.WithSync(sqlite.SyncNormal), sqlite.WithMaxBatch(5000))
	if err != nil {
		return err
	}
	gen, err := loadgen.New(loadgen.Options{Framing: loadgen.Datagram, RunID: 1})
	if err != nil {
		lg.Close()
		return err
	}
	in := bonnie.NewIngester(lg)
	const batch = 5000
	entries := make([]bonnie.Entry, 0, batch)
	var buf []byte
	for i := range n {
		buf = gen.Event(buf[:0], int64(i))
		ev, err := bonnie.Decode(buf)
		if err != nil {
			lg.Close()
			return fmt.Errorf("event %d: %w", i, err)
		}
		changes, err := in.Apply(ctx, ev)
		if err != nil {
			lg.Close()
			return fmt.Errorf("apply event %d: %w", i, err)
		}
		entries = append(entries, bonnie.Entry{Event: ev, Changes: changes})
		if len(entries) == batch || i == n-1 {
			res, err := lg.AppendBatch(ctx, entries)
			if err != nil {
				lg.Close()
				return err
			}
			for _, r := range res {
				if r.Dup {
					lg.Close()
					return errors.New("generated events must be distinct")
				}
			}
			entries = entries[:0]
		}
	}
	return lg.Close()
}

// BenchmarkSinkCatchUp is a sink registered on a log that already holds
// n events: Engine.Run replays the whole log to it before live events.
// Each iteration is a new sink (a new name, so cursor 0) and ends when the
// sink has been given the last record it wants. events/s is the catch-up speed: records of the log read per
// second.
func BenchmarkSinkCatchUp(b *testing.B) {
	n := benchEventCount(b)
	lg := catchUpLog(b, n)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, bc := range []struct {
		name string
		mask bonnie.EventMask
	}{
		{"AllEvents", bonnie.AllEvents},
		// A sink that wants only new messages still reads every record.
		{"MessageNew+Append", bonnie.Mask(bonnie.MessageNew, bonnie.MessageAppend)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// The last record the sink wants: the catch-up is over when
			// it has been handed that one (its cursor is saved only every
			// Options.CursorEvery, too coarse a clock for this).
			lastWanted, wanted := lastMatching(b, lg, bc.mask)
			var delivered int
			b.ResetTimer()
			for i := range b.N {
				ctx, cancel := context.WithCancel(context.Background())
				name := fmt.Sprintf("bench-%s-%d-%d", bc.name, time.Now().UnixNano(), i)
				var seen atomic.Int64
				reached := make(chan struct{})
				sink := bonnie.SinkFunc(name, bc.mask, func(_ context.Context, rec bonnie.Record) error {
					seen.Add(1)
					if rec.Position == lastWanted {
						close(reached)
					}
					return nil
				})
				eng, err := bonnie.New(bonnie.Options{Store: lg, Sinks: []bonnie.Sink{sink}, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				ran := make(chan error, 1)
				go func() { ran <- eng.Run(ctx) }()
				select {
				case <-reached:
				case <-time.After(10 * time.Minute):
					b.Fatalf("sink got %d of %d records after 10 minutes", seen.Load(), wanted)
				}
				cancel()
				if err := <-ran; err != nil {
					b.Fatal(err)
				}
				if int(seen.Load()) != wanted {
					b.Fatalf("sink got %d records, want %d", seen.Load(), wanted)
				}
				delivered = wanted
			}
			b.StopTimer()
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(delivered), "delivered/op")
		})
	}
}

// lastMatching returns the position of the last record of lg whose type
// is in mask, and how many there are.
func lastMatching(b *testing.B, lg *sqlite.Log, mask bonnie.EventMask) (bonnie.Position, int) {
	var last, pos bonnie.Position
	n := 0
	for {
		recs, next, err := lg.ReadMatching(context.Background(), pos, 10000, mask)
		if err != nil {
			b.Fatal(err)
		}
		if next == pos {
			break
		}
		for _, r := range recs {
			last = r.Position
			n++
		}
		pos = next
	}
	if n == 0 {
		b.Fatal("no record of the sink's types in the log")
	}
	return last, n
}

// BenchmarkLogRead is the store alone: Read in pages of 1000 (the
// engine's page) from 0 to the head, decoding every event and its changes.
// Comparing it with BenchmarkSinkCatchUp separates the engine's cost from
// the store's.
func BenchmarkLogRead(b *testing.B) {
	n := benchEventCount(b)
	lg := catchUpLog(b, n)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		var pos bonnie.Position
		for {
			recs, err := lg.Read(ctx, pos, 1000)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			pos = recs[len(recs)-1].Position
		}
		if int(pos) != n {
			b.Fatalf("read up to %d, want %d", pos, n)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkEngineIngest is the engine's ingest path without sockets:
// 256 goroutines call Engine.Ingest with generated dlist requests while
// Run runs (so that concurrent calls share transactions, as the sources'
// do). It is the ceiling bonnied's sources feed into.
func BenchmarkEngineIngest(b *testing.B) {
	for _, sm := range []struct {
		name string
		mode sqlite.Sync
	}{{"FULL", sqlite.SyncFull}, {"NORMAL", sqlite.SyncNormal}} {
		b.Run(sm.name, func(b *testing.B) {
			gen, err := loadgen.New(loadgen.Options{Framing: loadgen.DList})
			if err != nil {
				b.Fatal(err)
			}
			raws := make([][]byte, b.N)
			for i := range raws {
				raws[i] = gen.Event(nil, int64(i))
			}
			lg, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "log.db"), sqlite.WithSync(sm.mode))
			if err != nil {
				b.Fatal(err)
			}
			defer lg.Close()
			eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			ran := make(chan error, 1)
			go func() { ran <- eng.Run(ctx) }()
			time.Sleep(100 * time.Millisecond) // Run has started: Ingest calls now share batches
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range 256 {
				wg.Go(func() {
					for {
						i := int(next.Add(1)) - 1
						if i >= b.N {
							return
						}
						if _, dup, err := eng.Ingest(ctx, raws[i], "bench"); err != nil || dup {
							b.Errorf("ingest %d: dup %v err %v", i, dup, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			cancel()
			if err := <-ran; err != nil {
				b.Fatal(err)
			}
			st := lg.Stats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(st.Records)/float64(max(st.Commits, 1)), "events/commit")
		})
	}
}
