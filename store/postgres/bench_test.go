package postgres_test

import (
	"encoding/json"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// benchEvents returns n distinct realistic events, the same as
// store/sqlite's benchmarks use (variants of the real captures decoded by
// bonnie.Decode), with two changes each: the message created and flagged
// \Seen.
func benchEvents(n int) ([]*bonnie.Event, [][]bonnie.Change) {
	caps := storetest.Captures()
	evs := make([]*bonnie.Event, n)
	chs := make([][]bonnie.Change, n)
	for i := range n {
		ev := storetest.Variant(caps[i%len(caps)], i)
		if dec, err := bonnie.Decode(ev.Raw); err == nil {
			ev = dec
		}
		rec := bonnie.NewChanges(ev.User, ev.Time)
		m := bonnie.NewMessage(rec, bonnie.MessageKey("zhelole6j19gznuv4b0d24ep", 1795897409, uint32(i+1)), nil)
		m.Create()
		m.AddFlags(`\Seen`)
		evs[i], chs[i] = ev, rec.List()
	}
	return evs, chs
}

var syncModes = []struct {
	name string
	mode postgres.Sync
}{{"FULL", postgres.SyncFull}, {"NORMAL", postgres.SyncNormal}}

// appenders is how many goroutines append at once in BenchmarkAppend
// (BONNIE_BENCH_APPENDERS changes it; 256 as for store/sqlite).
func appenders() int {
	if n, err := strconv.Atoi(os.Getenv("BONNIE_BENCH_APPENDERS")); err == nil && n > 0 {
		return n
	}
	return 256
}

// BenchmarkAppend appends through the Log from many goroutines at once, so
// that group commit gathers them: the figure to compare with store/sqlite's
// BenchmarkAppend.
func BenchmarkAppend(b *testing.B) {
	for _, sm := range syncModes {
		b.Run(sm.name, func(b *testing.B) {
			evs, chs := benchEvents(b.N)
			_, dsn := pgtest.Schema(b)
			l, err := postgres.Open(b.Context(), dsn, postgres.WithSync(sm.mode))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if q := os.Getenv("PGALTER"); q != "" {
				if _, err := l.DB().Exec(q); err != nil {
					b.Fatal(err)
				}
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range appenders() {
				wg.Go(func() {
					for {
						i := int(next.Add(1)) - 1
						if i >= b.N {
							return
						}
						if _, dup, err := l.Append(b.Context(), evs[i], chs[i]); err != nil || dup {
							b.Errorf("append %d: dup %v err %v", i, dup, err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			st := l.Stats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(st.Records)/float64(max(st.Commits, 1)), "events/commit")
			b.ReportMetric(meanJSON(evs), "json-bytes/event")
		})
	}
}

// BenchmarkAppendSequential is one caller appending one event at a time:
// the latency a lone caller sees (one transaction, one WAL flush, per event).
func BenchmarkAppendSequential(b *testing.B) {
	for _, sm := range syncModes {
		b.Run(sm.name, func(b *testing.B) {
			evs, chs := benchEvents(b.N)
			_, dsn := pgtest.Schema(b)
			l, err := postgres.Open(b.Context(), dsn, postgres.WithSync(sm.mode))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.ResetTimer()
			for i := range b.N {
				if _, _, err := l.Append(b.Context(), evs[i], chs[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func meanJSON(evs []*bonnie.Event) float64 {
	total := 0
	for _, ev := range evs {
		js, _ := json.Marshal(ev)
		total += len(js)
	}
	return float64(total) / float64(len(evs))
}
