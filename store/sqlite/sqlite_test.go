package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
	"github.com/bonnie-archive/bonnie/store/sqlite"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

func openTemp(t *testing.T, opts ...sqlite.Option) *sqlite.Log {
	t.Helper()
	l, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "log.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) bonnie.Log { return openTemp(t) })
}

func TestConformanceSyncNormal(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	storetest.Run(t, func(t *testing.T) bonnie.Log { return openTemp(t, sqlite.WithSync(sqlite.SyncNormal)) })
}

// Tiny batches exercise the gathering loop's limit.
func TestConformanceBatch2(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	storetest.Run(t, func(t *testing.T) bonnie.Log { return openTemp(t, sqlite.WithMaxBatch(2)) })
}

func appendN(t *testing.T, l *sqlite.Log, from, n int) {
	t.Helper()
	caps := storetest.Captures()
	for i := from; i < from+n; i++ {
		ev := storetest.Variant(caps[i%len(caps)], i)
		rec := bonnie.NewChanges(ev.User, ev.Time)
		bonnie.NewMessage(rec, fmt.Sprintf("F/1/%d", i), nil).Create()
		if _, dup, err := l.Append(t.Context(), ev, rec.List()); err != nil || dup {
			t.Fatalf("append %d: dup %v err %v", i, dup, err)
		}
	}
}

func TestReopenContinuesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 0, 5)
	head, _ := l.HeadHash(t.Context())
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendN(t, l, 5, 5)
	// Appending what is already there, after a reopen, is still a dup.
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
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_version(version, applied) VALUES (?, 'later')`, sqlite.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqlite.Open(t.Context(), path)
	if !errors.Is(err, sqlite.ErrSchemaTooNew) {
		t.Fatalf("Open = %v, want ErrSchemaTooNew", err)
	}
}

func TestSchemaVersionRecorded(t *testing.T) {
	l := openTemp(t)
	l.Close()
	db, _ := sql.Open("sqlite3", l.Path())
	defer db.Close()
	var v int
	if err := db.QueryRow(`SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil || v != sqlite.SchemaVersion() {
		t.Fatalf("schema version %d, %v; want %d", v, err, sqlite.SchemaVersion())
	}
	var mode string
	db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	if mode != "wal" {
		t.Fatalf("journal mode %q", mode)
	}
}

func TestOpenBadPath(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		if l, err := sqlite.Open(t.Context(), p); err == nil {
			l.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
	if _, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "no", "such", "dir", "log.db")); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

// TestCloseDrains closes the log while appends are in flight: each append
// either returns a position (and is then in the file) or fails with
// ErrClosed; none is lost after being acknowledged.
func TestCloseDrains(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	caps := storetest.Captures()
	const n = 300
	var wg sync.WaitGroup
	acked := make([]bonnie.Position, n)
	for i := range n {
		wg.Go(func() {
			ev := storetest.Variant(caps[i%len(caps)], i)
			pos, _, err := l.Append(context.Background(), ev, nil)
			switch {
			case err == nil:
				acked[i] = pos
			case errors.Is(err, sqlite.ErrClosed):
			default:
				t.Errorf("append: %v", err)
			}
		})
	}
	time.Sleep(2 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, _, err := l.Append(t.Context(), caps[0], nil); !errors.Is(err, sqlite.ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	l, err = sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	head, _ := l.Head(t.Context())
	got := 0
	for i, p := range acked {
		if p == 0 {
			continue
		}
		got++
		if p > head {
			t.Fatalf("append %d acknowledged at %d, but the log ends at %d", i, p, head)
		}
	}
	if bonnie.Position(got) != head {
		t.Fatalf("%d appends acknowledged, log has %d", got, head)
	}
	if err := l.Verify(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d appends landed before Close", got, n)
}

func TestHashes(t *testing.T) {
	l := openTemp(t)
	a, err := l.HeadHash(t.Context())
	if err != nil || a.Position != 0 || !bytes.Equal(a.Hash, make([]byte, 32)) {
		t.Fatalf("HeadHash of an empty log = %+v, %v", a, err)
	}
	appendN(t, l, 0, 4)
	recs, _ := l.Read(t.Context(), 0, 10)
	a, _ = l.HeadHash(t.Context())
	if a.Position != 4 || !bytes.Equal(a.Hash, recs[3].Hash) {
		t.Fatalf("HeadHash = %+v, want record 4's hash %x", a, recs[3].Hash)
	}
	for _, r := range recs {
		h, err := l.RecordHash(t.Context(), r.Position)
		if err != nil || !bytes.Equal(h, r.Hash) {
			t.Fatalf("RecordHash(%d) = %x, %v", r.Position, h, err)
		}
	}
	if _, err := l.RecordHash(t.Context(), 5); !errors.Is(err, sqlite.ErrNotFound) {
		t.Fatalf("RecordHash of a missing record = %v", err)
	}
	// An anchor that does not match.
	bad := sqlite.Anchor{Position: 2, Hash: make([]byte, 32)}
	var ce *bonnie.ChainError
	if err := l.VerifyAnchored(t.Context(), bad); !errors.As(err, &ce) || ce.Position != 2 {
		t.Fatalf("VerifyAnchored(bad) = %v", err)
	}
}

// TestOutsideVerifier recomputes every hash from the rows with nothing
// but SQL and internal/logchain, as an auditor with a copy of the file
// would.
func TestOutsideVerifier(t *testing.T) {
	f := buildLog(t)
	f.attack(t, func(db *sql.DB) {
		prev := logchain.Genesis()
		for p := bonnie.Position(1); p <= tamperN; p++ {
			r, sprev, shash := stored(t, db, p)
			if !bytes.Equal(sprev, prev) {
				t.Fatalf("record %d: previous hash mismatch", p)
			}
			h := logchain.Hash(prev, &r)
			if !bytes.Equal(h, shash) {
				t.Fatalf("record %d: hash mismatch", p)
			}
			prev = h
		}
		if !bytes.Equal(prev, f.anchors[tamperN].Hash) {
			t.Fatal("head differs from the anchor")
		}
	})
}

// Two Logs on one file (two processes, say) keep one chain: each batch
// reads the head inside its transaction.
func TestTwoWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	a, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	caps := storetest.Captures()
	var wg sync.WaitGroup
	for w, l := range []*sqlite.Log{a, b} {
		wg.Go(func() {
			for i := range 50 {
				ev := storetest.Variant(caps[i%len(caps)], w*1000+i)
				if _, _, err := l.Append(t.Context(), ev, nil); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if h, _ := a.Head(t.Context()); h != 100 {
		t.Fatalf("Head = %d, want 100", h)
	}
	if err := b.Verify(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestStats(t *testing.T) {
	l := openTemp(t)
	appendN(t, l, 0, 3)
	ev := storetest.Variant(storetest.Captures()[0], 0)
	l.Append(t.Context(), ev, nil)
	st := l.Stats()
	if st.Records != 3 || st.Duplicates != 1 || st.Commits != 4 {
		t.Fatalf("Stats = %+v", st)
	}
}

// TestRoundTripDecoded appends every capture as the decoder sees it (all
// fields, Extra, the JMAP email...) and reads it back unchanged.
func TestRoundTripDecoded(t *testing.T) {
	l := openTemp(t)
	var evs []*bonnie.Event
	for _, c := range storetest.Captures() {
		ev, err := bonnie.Decode(c.Raw)
		if err != nil {
			t.Fatalf("decode %q: %v", c.Name, err)
		}
		evs = append(evs, ev)
		if _, dup, err := l.Append(t.Context(), ev, nil); err != nil || dup {
			t.Fatalf("append: dup %v err %v", dup, err)
		}
	}
	recs, err := l.Read(t.Context(), 0, 100)
	if err != nil || len(recs) != len(evs) {
		t.Fatalf("Read = %d records, %v", len(recs), err)
	}
	for i, r := range recs {
		a, _ := json.Marshal(evs[i])
		b, _ := json.Marshal(r.Event)
		if !bytes.Equal(a, b) || r.Event.Key() != evs[i].Key() || !bytes.Equal(r.Event.Raw, evs[i].Raw) {
			t.Errorf("record %d does not round-trip:\n got %s\nwant %s", r.Position, b, a)
		}
	}
}
