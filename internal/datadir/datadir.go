// Package datadir knows the layout of a Bonnie data directory (--data) and
// guards who may ingest into it.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LogFile is the SQLite log inside a data directory.
const LogFile = "log.db"

// lockFile is held by the one process that ingests into the directory.
const lockFile = "ingest.lock"

// ErrBusy means another process ingests into the directory.
var ErrBusy = errors.New("another process is ingesting into this data directory")

// LogPath returns the path of the log in dir.
func LogPath(dir string) string { return filepath.Join(dir, LogFile) }

// LockIngest takes the directory's ingest lock, waiting up to wait for it.
// Only one process may apply events to a log at a time: the engine keeps
// the entities it touched in memory, and a second writer would make the
// changes it records start from a stale value. Readers need no lock. The
// lock is released by the returned func or when the process dies.
func LockIngest(dir string, wait time.Duration) (unlock func() error, err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ingest lock: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("ingest lock: %w", err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("%s: %w", dir, ErrBusy)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() error {
		defer f.Close()
		return unix.Flock(int(f.Fd()), unix.LOCK_UN)
	}, nil
}
