package sqlite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/bonnie-archive/bonnie"
)

// ErrSyncFailed is returned once an fsync of the log has failed. After a
// failed fsync the kernel may have dropped the data it could not write
// while reporting later fsyncs as successful, so the log refuses every
// further write until it is reopened (and Verify is run).
var ErrSyncFailed = errors.New("sqlite: fsync failed; log closed for writing")

// syncer answers the callers of committed batches, on its own goroutine
// so that the writer can start the next batch at once. With SyncFull it
// first makes them durable: SQLite runs with synchronous=NORMAL, so COMMIT
// only writes the WAL, and the syncer fsyncs the WAL file itself. The disk
// flush of one batch then overlaps the writing of the next instead of
// stalling the single writer (measured: the fsync was a third of the
// writer's time, and answering a hundred callers a few percent).
//
// This is exactly as durable as synchronous=FULL for what is acknowledged:
// SQLite's WAL recovery replays the longest prefix of valid frames, and
// every frame of an acknowledged batch was on disk before its callers
// heard back. Records that are committed but not yet synced are hidden
// from Read and Head (see Log.bound), so a reader never acts on a record
// that a power failure could take back.
type syncer struct {
	fsync   bool // SyncFull
	dir     string
	walPath string
	mu      sync.Mutex // guards wal and serialises fsyncs
	wal     *os.File
	err     atomic.Pointer[error]

	in      chan []*request
	done    chan struct{}
	pending atomic.Int64  // batches begun and not yet synced
	durable atomic.Uint64 // highest position known to be on disk
	syncs   atomic.Uint64
}

func newSyncer(dbPath string, head bonnie.Position, fsync bool) (*syncer, error) {
	s := &syncer{
		fsync:   fsync,
		dir:     filepath.Dir(dbPath),
		walPath: dbPath + "-wal",
		in:      make(chan []*request, 64),
		done:    make(chan struct{}),
	}
	if !fsync {
		return s, nil
	}
	// Make what is already there durable, the directory entries too, so
	// that the starting head is a durable head.
	for _, p := range []string{dbPath, s.walPath, s.dir} {
		if err := fsyncPath(p); err != nil && !(p == s.walPath && errors.Is(err, os.ErrNotExist)) {
			return nil, err
		}
	}
	s.durable.Store(uint64(head))
	return s, nil
}

func fsyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sqlite: fsync %s: %w", p, err)
	}
	return nil
}

// failed returns the sticky error, if an fsync has failed.
func (s *syncer) failed() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

// syncWAL fsyncs the WAL file. It opens the file on first use, and again
// if SQLite has replaced it (it only does when every connection closed,
// which cannot happen while the Log is open, but a stale descriptor would
// silently sync nothing, so it checks).
func (s *syncer) syncWAL() error {
	if err := s.failed(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if s.wal == nil {
			f, err := os.OpenFile(s.walPath, os.O_RDWR, 0)
			if err != nil {
				return s.fail(fmt.Errorf("open WAL: %w", err))
			}
			s.wal = f
			if err := fsyncPath(s.dir); err != nil { // the WAL's directory entry
				return s.fail(err)
			}
		}
		// fdatasync, as SQLite itself syncs on Linux: the WAL's data and
		// its size, without the journal commit that fsync makes for a
		// modification time alone (the WAL is rewritten in place after
		// each checkpoint), which sat in the tail of every reply.
		if err := fdatasync(s.wal); err != nil {
			return s.fail(err)
		}
		s.syncs.Add(1)
		a, errA := s.wal.Stat()
		b, errB := os.Stat(s.walPath)
		if errA == nil && errB == nil && os.SameFile(a, b) {
			return nil
		}
		if attempt > 0 {
			return s.fail(errors.New("WAL file keeps changing under the log"))
		}
		s.wal.Close()
		s.wal = nil
	}
}

func (s *syncer) fail(err error) error {
	err = fmt.Errorf("%w: %w", ErrSyncFailed, err)
	s.err.CompareAndSwap(nil, &err)
	return *s.err.Load()
}

// run syncs and answers committed batches in commit order, as many as are
// waiting per fsync.
func (s *syncer) run() {
	defer close(s.done)
	var items [][]*request
	for first := range s.in {
		items = append(items[:0], first)
	more:
		for {
			select {
			case b, ok := <-s.in:
				if !ok {
					break more
				}
				items = append(items, b)
			default:
				break more
			}
		}
		var err error
		if s.fsync {
			err = s.syncWAL()
		}
		if err == nil && s.fsync {
			var top bonnie.Position
			for _, batch := range items {
				for _, r := range batch {
					for _, a := range r.res {
						top = max(top, a.Position)
					}
				}
			}
			if uint64(top) > s.durable.Load() {
				s.durable.Store(uint64(top))
			}
		}
		// Lower pending only after durable has moved, so that a reader
		// that sees no pending batch also sees every synced record. After
		// a failure it stays up: readers keep to what is known durable.
		if err == nil && s.fsync {
			s.pending.Add(-int64(len(items)))
		}
		for _, batch := range items {
			for _, r := range batch {
				if err != nil {
					r.done <- reply{err: err}
				} else {
					r.done <- reply{res: r.res}
				}
			}
		}
		clear(items)
	}
}

func (s *syncer) close() error {
	close(s.in)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wal != nil {
		return s.wal.Close()
	}
	return nil
}
