package sqlite

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// TestBound checks that, while a batch is committed but not yet synced,
// readers see only the durable prefix.
func TestBound(t *testing.T) {
	l, err := Open(t.Context(), filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 3 {
		if _, dup, err := l.Append(t.Context(), storetest.Variant(storetest.Captures()[0], i), nil); err != nil || dup {
			t.Fatal(dup, err)
		}
	}
	s := l.w.sync
	if !s.fsync {
		t.Fatal("SyncFull does not fsync")
	}
	if st := l.Stats(); st.Syncs < 3 {
		t.Fatalf("Stats = %+v, want a sync per append", st)
	}
	// Pretend record 3 is committed but its fsync has not returned.
	s.pending.Add(1)
	s.durable.Store(2)
	if h, _ := l.Head(t.Context()); h != 2 {
		t.Fatalf("Head = %d while 3 is unsynced, want 2", h)
	}
	if recs, _ := l.Read(t.Context(), 0, 10); len(recs) != 2 {
		t.Fatalf("Read returned %d records while 3 is unsynced, want 2", len(recs))
	}
	s.durable.Store(3)
	s.pending.Add(-1)
	if recs, _ := l.Read(t.Context(), 0, 10); len(recs) != 3 {
		t.Fatalf("Read returned %d records, want 3", len(recs))
	}
}

func TestNormalDoesNotSync(t *testing.T) {
	l, err := Open(t.Context(), filepath.Join(t.TempDir(), "log.db"), WithSync(SyncNormal))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.w.sync.fsync {
		t.Fatal("SyncNormal fsyncs")
	}
	if _, _, err := l.Append(t.Context(), &bonnie.Event{Type: bonnie.Login, Raw: []byte("x")}, nil); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.Syncs != 0 || st.Records != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

// TestSyncFailureIsSticky: after a failed fsync every write fails with
// ErrSyncFailed.
func TestSyncFailureIsSticky(t *testing.T) {
	l, err := Open(t.Context(), filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.w.sync.fail(errSimulated)
	if _, _, err := l.Append(t.Context(), &bonnie.Event{Type: bonnie.Login, Raw: []byte("x")}, nil); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("Append after a failed fsync = %v", err)
	}
	if err := l.SetCursor(t.Context(), "s", 1); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("SetCursor after a failed fsync = %v", err)
	}
}

var errSimulated = errors.New("simulated EIO")
