package datadir

import (
	"errors"
	"testing"
	"time"
)

func TestLockIngestIsExclusive(t *testing.T) {
	dir := t.TempDir()
	unlock, err := LockIngest(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockIngest(dir, 50*time.Millisecond); !errors.Is(err, ErrBusy) {
		t.Fatalf("second lock: %v, want ErrBusy", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	unlock2, err := LockIngest(dir, 0)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}
