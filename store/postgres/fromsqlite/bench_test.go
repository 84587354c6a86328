package fromsqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/postgres/fromsqlite"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
	"github.com/bonnie-archive/bonnie/store/sqlite"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// BenchmarkCopy copies a SQLite log of b.N records (decoded real captures,
// two changes each, as the append benchmarks) to PostgreSQL, verification
// of the copy included.
func BenchmarkCopy(b *testing.B) {
	path := filepath.Join(b.TempDir(), "log.db")
	src, err := sqlite.Open(b.Context(), path, sqlite.WithSync(sqlite.SyncNormal))
	if err != nil {
		b.Fatal(err)
	}
	caps := storetest.Captures()
	var batch []bonnie.Entry
	for i := range b.N {
		ev := storetest.Variant(caps[i%len(caps)], i)
		if dec, err := bonnie.Decode(ev.Raw); err == nil {
			ev = dec
		}
		rec := bonnie.NewChanges(ev.User, ev.Time)
		m := bonnie.NewMessage(rec, bonnie.MessageKey("zhelole6j19gznuv4b0d24ep", 1795897409, uint32(i+1)), nil)
		m.Create()
		m.AddFlags(`\Seen`)
		batch = append(batch, bonnie.Entry{Event: ev, Changes: rec.List()})
		if len(batch) == 1000 || i == b.N-1 {
			if _, err := src.AppendBatch(b.Context(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	src.Close()
	_, dsn := pgtest.Schema(b)
	dst, err := postgres.Open(b.Context(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	b.ResetTimer()
	res, err := fromsqlite.Copy(b.Context(), path, dst, fromsqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(res.Verified.Seconds(), "verify-s")
}
