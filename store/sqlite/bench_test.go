package sqlite_test

import (
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/sqlite"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// benchEvents returns n distinct realistic events (variants of the real
// captures, 117 bytes to 15 KB of raw notification, most 450-1800, decoded
// by bonnie.Decode) with two changes each: the message created and flagged
// \Seen. BONNIE_BENCH_NODECODE=1 keeps storetest's sparse literals
// instead (smaller JSON).
func benchEvents(n int) ([]*bonnie.Event, [][]bonnie.Change) {
	caps := storetest.Captures()
	evs := make([]*bonnie.Event, n)
	chs := make([][]bonnie.Change, n)
	decode := os.Getenv("BONNIE_BENCH_NODECODE") == ""
	for i := range n {
		ev := storetest.Variant(caps[i%len(caps)], i)
		if dec, err := bonnie.Decode(ev.Raw); err == nil && decode {
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
	mode sqlite.Sync
}{{"FULL", sqlite.SyncFull}, {"NORMAL", sqlite.SyncNormal}}

// appenders is how many goroutines append at once in BenchmarkAppend: an
// ingest fed by many Cyrus processes and relays. BONNIE_BENCH_APPENDERS
// changes it.
func appenders() int {
	if n, err := strconv.Atoi(os.Getenv("BONNIE_BENCH_APPENDERS")); err == nil && n > 0 {
		return n
	}
	return 256
}

// BenchmarkAppend appends through the Log from many goroutines at once, so
// that group commit gathers them.
func BenchmarkAppend(b *testing.B) {
	for _, sm := range syncModes {
		b.Run(sm.name, func(b *testing.B) {
			evs, chs := benchEvents(b.N)
			l, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "log.db"), sqlite.WithSync(sm.mode))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
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
// the latency a lone caller sees (one commit, one fsync, per event).
func BenchmarkAppendSequential(b *testing.B) {
	for _, sm := range syncModes {
		b.Run(sm.name, func(b *testing.B) {
			evs, chs := benchEvents(b.N)
			l, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "log.db"), sqlite.WithSync(sm.mode))
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

// meanJSON is the mean size of the events' JSON: the row size both the
// Log and the raw baseline write.
func meanJSON(evs []*bonnie.Event) float64 {
	total := 0
	for _, ev := range evs {
		js, _ := json.Marshal(ev)
		total += len(js)
	}
	return float64(total) / float64(len(evs))
}

// BenchmarkRawInsert is the baseline: the same rows (the events' stored
// JSON, a UUIDv7 each) inserted into a bare table with a prepared INSERT,
// 1000 rows per transaction, same WAL and synchronous mode. It is what
// SQLite itself can do here, with no key index, no changes, no hashing.
func BenchmarkRawInsert(b *testing.B) {
	for _, sm := range syncModes {
		b.Run(sm.name, func(b *testing.B) {
			evs, _ := benchEvents(b.N)
			rows := make([]string, b.N)
			total := 0
			for i, ev := range evs {
				js, err := json.Marshal(ev)
				if err != nil {
					b.Fatal(err)
				}
				rows[i] = string(js)
				total += len(js)
			}
			db, err := sql.Open("sqlite3", filepath.Join(b.TempDir(), "raw.db")+
				"?_journal_mode=WAL&_synchronous="+sm.name+"&_busy_timeout=5000")
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			if _, err := db.Exec(`CREATE TABLE raw (position INTEGER PRIMARY KEY, id TEXT NOT NULL, event TEXT NOT NULL)`); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for start := 0; start < b.N; start += 1000 {
				tx, err := db.Begin()
				if err != nil {
					b.Fatal(err)
				}
				st, err := tx.Prepare(`INSERT INTO raw(position, id, event) VALUES (?, ?, ?)`)
				if err != nil {
					b.Fatal(err)
				}
				for i := start; i < min(start+1000, b.N); i++ {
					id := uuid.Must(uuid.NewV7())
					if _, err := st.Exec(i+1, id.String(), rows[i]); err != nil {
						b.Fatal(err)
					}
				}
				st.Close()
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(total)/float64(b.N), "json-bytes/event")
		})
	}
}
