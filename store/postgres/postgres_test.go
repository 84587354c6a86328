package postgres_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// openTemp opens a log in a fresh schema, dropped when the test ends.
func openTemp(t *testing.T, opts ...postgres.Option) (*postgres.Log, string) {
	t.Helper()
	_, dsn := pgtest.Schema(t)
	l, err := postgres.Open(t.Context(), dsn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, dsn
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) bonnie.Log { l, _ := openTemp(t); return l })
}

func TestConformanceSyncNormal(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	storetest.Run(t, func(t *testing.T) bonnie.Log { l, _ := openTemp(t, postgres.WithSync(postgres.SyncNormal)); return l })
}

// Tiny batches exercise the gathering loop's limit.
func TestConformanceBatch2(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	storetest.Run(t, func(t *testing.T) bonnie.Log { l, _ := openTemp(t, postgres.WithMaxBatch(2)); return l })
}

// appendVariants appends events base..base+n-1 (variants of the
// captures, each with a change) from workers goroutines.
func appendVariants(t testing.TB, l *postgres.Log, base, n, workers int) {
	t.Helper()
	idx := make([]int, n)
	for i := range idx {
		idx[i] = base + i
	}
	appendIndexes(t, l, idx, workers)
}

// appendIndexes appends the variants numbered idx, in about that order,
// from workers goroutines.
func appendIndexes(t testing.TB, l *postgres.Log, idx []int, workers int) {
	t.Helper()
	caps := storetest.Captures()
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(idx) {
					return
				}
				k := idx[i]
				ev := storetest.Variant(caps[k%len(caps)], k)
				rec := bonnie.NewChanges(ev.User, ev.Time)
				m := bonnie.NewMessage(rec, "M", map[string]string{"state": bonnie.StatePresent})
				m.SetFolder(fmt.Sprintf("F%d", k))
				if _, _, err := l.Append(context.Background(), ev, rec.List()); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// helperIndexes is what process p (1 or 2) of TestTwoProcesses appends:
// n events, alternately one both processes append (even indexes below n)
// and one only this process appends.
func helperIndexes(p, n int) []int {
	idx := make([]int, n)
	for i := range idx {
		if i%2 == 0 {
			idx[i] = i
		} else {
			idx[i] = p*n + i
		}
	}
	return idx
}

// checkChain verifies the log and checks it holds want records with
// distinct keys at positions 1..want.
func checkChain(t *testing.T, l *postgres.Log, want int) {
	t.Helper()
	if err := l.Verify(t.Context()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	seen := map[string]bool{}
	var from bonnie.Position
	for {
		recs, err := l.Read(t.Context(), from, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Position != from+1 {
				t.Fatalf("position %d after %d", r.Position, from)
			}
			if seen[r.Key] {
				t.Fatalf("key %s stored twice", r.Key)
			}
			seen[r.Key] = true
			from = r.Position
		}
	}
	if len(seen) != want {
		t.Fatalf("%d records, want %d", len(seen), want)
	}
}

// Two Logs on one schema (two ingest processes' worth of writers) append
// at the same time, some of the same events through both: one chain, each
// event once.
func TestTwoLogsOneChain(t *testing.T) {
	a, dsn := openTemp(t)
	b, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = 600
	var wg sync.WaitGroup
	wg.Go(func() { appendVariants(t, a, 0, n, 16) })
	wg.Go(func() { appendVariants(t, b, n/2, n, 16) }) // overlaps a's second half
	wg.Wait()
	checkChain(t, a, n+n/2)
	// The entity state is the last change in log order, whichever Log made it.
	var last bonnie.Record
	recs, _ := b.Read(t.Context(), bonnie.Position(n+n/2-1), 1)
	last = recs[0]
	st, err := a.StateAt(t.Context(), bonnie.KindMessage, "M", time.Time{})
	if err != nil || st["folder"] != last.Changes[0].To {
		t.Fatalf("state of M = %v, %v; the last record set folder %q", st, err, last.Changes[0].To)
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("log a: %+v; log b: %+v", sa, sb)
	if sa.Records+sb.Records != n+n/2 || sa.Duplicates+sb.Duplicates != n/2 {
		t.Fatalf("records %d+%d, duplicates %d+%d", sa.Records, sb.Records, sa.Duplicates, sb.Duplicates)
	}
}

// TestHelperAppender is the body of TestTwoProcesses' child processes.
func TestHelperAppender(t *testing.T) {
	dsn := os.Getenv("BONNIE_PG_HELPER_DSN")
	if dsn == "" {
		t.Skip("helper process for TestTwoProcesses")
	}
	p, _ := strconv.Atoi(os.Getenv("BONNIE_PG_HELPER_PROC"))
	n, _ := strconv.Atoi(os.Getenv("BONNIE_PG_HELPER_N"))
	start, _ := strconv.ParseInt(os.Getenv("BONNIE_PG_HELPER_START"), 10, 64)
	l, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	time.Sleep(time.Until(time.Unix(0, start)))
	appendIndexes(t, l, helperIndexes(p, n), 16)
	fmt.Printf("stats %+v\n", l.Stats())
}

// Two OS processes append to one schema at the same moment.
func TestTwoProcesses(t *testing.T) {
	l, dsn := openTemp(t)
	const n = 500
	start := time.Now().Add(time.Second).UnixNano()
	var wg sync.WaitGroup
	outs := make([][]byte, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAppender$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "BONNIE_PG_HELPER_DSN="+dsn,
				"BONNIE_PG_HELPER_PROC="+strconv.Itoa(i+1), "BONNIE_PG_HELPER_N="+strconv.Itoa(n),
				"BONNIE_PG_HELPER_START="+strconv.FormatInt(start, 10))
			outs[i], errs[i] = cmd.CombinedOutput()
		})
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("process %d: %v\n%s", i, errs[i], outs[i])
		}
		for _, line := range strings.Split(string(outs[i]), "\n") {
			if strings.HasPrefix(line, "stats") {
				t.Logf("process %d: %s", i, line)
			}
		}
	}
	checkChain(t, l, n+n/2)
	// The two processes' records interleave: they really appended at the
	// same time, each chaining onto the other's.
	caps := storetest.Captures()
	who := map[string]int{} // key -> the only process that appended it
	for p := 1; p <= 2; p++ {
		for i, k := range helperIndexes(p, n) {
			if i%2 == 1 {
				who[storetest.Variant(caps[k%len(caps)], k).Key()] = p
			}
		}
	}
	recs, err := l.Read(t.Context(), 0, 2*n)
	if err != nil {
		t.Fatal(err)
	}
	switches, prev := 0, 0
	for _, r := range recs {
		if p := who[r.Key]; p != 0 {
			if prev != 0 && p != prev {
				switches++
			}
			prev = p
		}
	}
	t.Logf("the chain passes from one process's records to the other's %d times", switches)
	if switches < 2 {
		t.Errorf("the processes did not append concurrently (%d switches)", switches)
	}
}

func TestReopenContinuesChain(t *testing.T) {
	l, dsn := openTemp(t)
	appendVariants(t, l, 0, 5, 1)
	head, _ := l.HeadHash(t.Context())
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendVariants(t, l, 5, 5, 1)
	ev := storetest.Variant(storetest.Captures()[2], 2)
	if pos, dup, err := l.Append(t.Context(), ev, nil); err != nil || !dup || pos != 3 {
		t.Fatalf("re-append after reopen = %d %v %v", pos, dup, err)
	}
	if err := l.VerifyAnchored(t.Context(), head); err != nil {
		t.Fatal(err)
	}
	if h, _ := l.Head(t.Context()); h != 10 {
		t.Fatalf("Head = %d, want 10", h)
	}
}

func TestSchemaTooNew(t *testing.T) {
	l, dsn := openTemp(t)
	l.Close()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO schema_version(version, applied) VALUES ($1, 'later')`, postgres.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	if _, err = postgres.Open(t.Context(), dsn); !errors.Is(err, postgres.ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
}

// WithSchema creates its schema; two schemas of one database are two logs.
func TestWithSchema(t *testing.T) {
	pgtest.Require(t)
	name, _ := pgtest.Schema(t) // exists already
	other := name + "_b"        // created by Open
	t.Cleanup(func() {
		db, _ := sql.Open("pgx", pgtest.DSN())
		defer db.Close()
		db.Exec(`DROP SCHEMA IF EXISTS ` + other + ` CASCADE`)
	})
	a, err := postgres.Open(t.Context(), pgtest.DSN(), postgres.WithSchema(name))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := postgres.Open(t.Context(), pgtest.DSN(), postgres.WithSchema(other))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Schema() != name || b.Schema() != other {
		t.Fatalf("schemas %q %q", a.Schema(), b.Schema())
	}
	appendVariants(t, a, 0, 3, 1)
	appendVariants(t, b, 0, 5, 1)
	checkChain(t, a, 3)
	checkChain(t, b, 5)
}

// Strings a mail system may hand over (NUL bytes, invalid UTF-8) are
// stored and hashed byte for byte, and found again.
func TestBinaryStrings(t *testing.T) {
	l, _ := openTemp(t)
	ev := storetest.Captures()[0]
	odd := "a\x00b\xff\xfe"
	rec := bonnie.NewChanges("us\xe9r\x00", ev.Time)
	f := bonnie.NewFolder(rec, "F\x00\xc3", nil)
	f.Create()
	f.SetMetadata("/private/comment", odd)
	f.SetPath(strings.Repeat("long/", 2000)) // longer than any index entry may be
	pos, _, err := l.Append(t.Context(), ev, rec.List())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := l.Read(t.Context(), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range recs[0].Changes {
		w := rec.List()[i]
		w.Cause = pos
		if !c.Time.Equal(w.Time) {
			t.Fatalf("change %d time %v", i, c.Time)
		}
		c.Time, w.Time = time.Time{}, time.Time{}
		if c != w {
			t.Fatalf("change %d = %+q, want %+q", i, c, w)
		}
	}
	st, err := l.StateAt(t.Context(), bonnie.KindFolder, "F\x00\xc3", time.Time{})
	if err != nil || st["meta:/private/comment"] != odd {
		t.Fatalf("StateAt = %q, %v", st, err)
	}
	ids, err := l.Find(t.Context(), bonnie.KindFolder, "meta:/private/comment", odd)
	if err != nil || len(ids) != 1 || ids[0] != "F\x00\xc3" {
		t.Fatalf("Find = %q, %v", ids, err)
	}
	ids, err = l.Find(t.Context(), bonnie.KindFolder, "path", strings.Repeat("long/", 2000))
	if err != nil || len(ids) != 1 {
		t.Fatalf("Find(long path) = %q, %v", ids, err)
	}
	if err := l.Verify(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A dead letter's description with bytes text cannot hold is kept, cleaned.
	if _, err := l.PutDeadLetter(t.Context(), bonnie.DeadLetter{Source: "s\x00", Reason: "bad \xff", Raw: []byte{0, 0xff}}); err != nil {
		t.Fatal(err)
	}
	dls, err := l.DeadLetters(t.Context(), false)
	if err != nil || len(dls) != 1 || !bytes.Equal(dls[0].Raw, []byte{0, 0xff}) || dls[0].Reason != "bad \uFFFD" {
		t.Fatalf("dead letters = %+v, %v", dls, err)
	}
}

func storedOf(t *testing.T, l *postgres.Log) []postgres.Stored {
	t.Helper()
	db := l.DB()
	rows, err := db.QueryContext(t.Context(), `SELECT position, id, encode(key, 'hex'), appended, event, prev_hash, hash FROM records ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []postgres.Stored
	for rows.Next() {
		var s postgres.Stored
		var pos int64
		if err := rows.Scan(&pos, &s.ID, &s.Key, &s.Appended, &s.Event, &s.PrevHash, &s.Hash); err != nil {
			t.Fatal(err)
		}
		s.Position = bonnie.Position(pos)
		out = append(out, s)
	}
	for i := range out {
		chs, err := db.QueryContext(t.Context(), `SELECT entity, id, field, from_value, to_value, actor, time FROM changes WHERE position = $1 ORDER BY seq`, int64(out[i].Position))
		if err != nil {
			t.Fatal(err)
		}
		for chs.Next() {
			var c postgres.StoredChange
			if err := chs.Scan(&c.Entity, &c.ID, &c.Field, &c.From, &c.To, &c.Actor, &c.Time); err != nil {
				t.Fatal(err)
			}
			out[i].Changes = append(out[i].Changes, c)
		}
		chs.Close()
	}
	return out
}

// Import copies records with their hashes, refuses what does not continue
// the log or does not hash to what it carries, and the copy appends on.
func TestImport(t *testing.T) {
	src, _ := openTemp(t)
	appendVariants(t, src, 0, 20, 4)
	recs := storedOf(t, src)
	dst, _ := openTemp(t)

	bad := slices.Clone(recs[:5])
	bad[3].Event = bytes.Replace(bad[3].Event, []byte(`"user":"`), []byte(`"user":"x`), 1)
	if err := dst.Import(t.Context(), bad); !errors.Is(err, postgres.ErrDiffers) || !strings.Contains(err.Error(), "record 4") {
		t.Fatalf("Import of a changed record = %v", err)
	}
	if h, _ := dst.Head(t.Context()); h != 0 {
		t.Fatalf("a refused import stored %d records", h)
	}
	if err := dst.Import(t.Context(), recs[1:5]); !errors.Is(err, postgres.ErrDiffers) {
		t.Fatalf("Import not starting at the head = %v", err)
	}
	if err := dst.Import(t.Context(), recs[:10]); err != nil {
		t.Fatal(err)
	}
	gap := []postgres.Stored{recs[11]}
	if err := dst.Import(t.Context(), gap); !errors.Is(err, postgres.ErrDiffers) {
		t.Fatalf("Import with a gap = %v", err)
	}
	if err := dst.Import(t.Context(), recs[10:]); err != nil {
		t.Fatal(err)
	}
	a, _ := src.HeadHash(t.Context())
	b, _ := dst.HeadHash(t.Context())
	if a.Position != b.Position || !bytes.Equal(a.Hash, b.Hash) {
		t.Fatalf("head %d %x, copy's %d %x", a.Position, a.Hash, b.Position, b.Hash)
	}
	if err := dst.VerifyAnchored(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	appendVariants(t, dst, 100, 3, 1)
	checkChain(t, dst, 23)

	// Dead letters keep their ids; a second import updates the resolution.
	d1 := bonnie.DeadLetter{ID: 7, Received: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Source: "s", Reason: "r", Raw: []byte("x")}
	if err := dst.ImportDeadLetters(t.Context(), []bonnie.DeadLetter{d1}); err != nil {
		t.Fatal(err)
	}
	d1.Position, d1.Retried = 3, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	if err := dst.ImportDeadLetters(t.Context(), []bonnie.DeadLetter{d1}); err != nil {
		t.Fatal(err)
	}
	other := d1
	other.Raw = []byte("y")
	if err := dst.ImportDeadLetters(t.Context(), []bonnie.DeadLetter{other}); !errors.Is(err, postgres.ErrDiffers) {
		t.Fatalf("ImportDeadLetters of another letter 7 = %v", err)
	}
	id, err := dst.PutDeadLetter(t.Context(), bonnie.DeadLetter{Source: "s", Reason: "new"})
	if err != nil || id != 8 {
		t.Fatalf("next dead letter id = %d, %v; want 8", id, err)
	}
	dls, _ := dst.DeadLetters(t.Context(), false)
	if len(dls) != 2 || dls[0].ID != 7 || dls[0].Position != 3 || !dls[0].Received.Equal(d1.Received) || !dls[0].Retried.Equal(d1.Retried) {
		t.Fatalf("dead letters = %+v", dls)
	}
}

// OnlyExisting refuses to create a log where there is none.
func TestOnlyExisting(t *testing.T) {
	_, dsn := pgtest.Schema(t)
	if _, err := postgres.Open(t.Context(), dsn, postgres.OnlyExisting()); !errors.Is(err, postgres.ErrNoLog) {
		t.Fatalf("Open of an empty schema = %v, want ErrNoLog", err)
	}
	if _, err := postgres.Open(t.Context(), pgtest.WithSearchPath(pgtest.DSN(), "bonnie_no_such_schema"), postgres.OnlyExisting()); !errors.Is(err, postgres.ErrNoLog) {
		t.Fatalf("Open of a missing schema = %v, want ErrNoLog", err)
	}
	l, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if l, err = postgres.Open(t.Context(), dsn, postgres.OnlyExisting()); err != nil {
		t.Fatal(err)
	}
	l.Close()
}

// Connections the server drops (a restart, an administrator) are replaced:
// the writer writes the batch again on a new connection.
func TestSurvivesDroppedConnections(t *testing.T) {
	name, dsn := pgtest.Schema(t)
	app := "bonnie-test-" + name
	l, err := postgres.Open(t.Context(), dsn+"&application_name="+app)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendVariants(t, l, 0, 20, 4)
	admin, err := sql.Open("pgx", pgtest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var killed int
	if err := admin.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&killed); err != nil || killed == 0 {
		t.Fatalf("terminated %d backends: %v", killed, err)
	}
	caps := storetest.Captures()
	failed := 0
	for i := 20; i < 40; i++ {
		ev := storetest.Variant(caps[i%len(caps)], i)
		for attempt := 0; ; attempt++ {
			_, _, err := l.Append(t.Context(), ev, nil)
			if err == nil {
				break
			}
			failed++
			if attempt == 2 {
				t.Fatalf("append %d after the connections were dropped: %v", i, err)
			}
		}
	}
	t.Logf("%d appends failed after %d connections were dropped", failed, killed)
	if failed != 0 {
		t.Errorf("the writer did not retry on a new connection")
	}
	if _, err := l.Read(t.Context(), 0, 100); err != nil {
		// a reader's pooled connection may be the dead one once
		if _, err := l.Read(t.Context(), 0, 100); err != nil {
			t.Fatal(err)
		}
	}
	checkChain(t, l, 40)
}
