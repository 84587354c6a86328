package archive

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"

	"github.com/bonnie-archive/bonnie/store/blob"
)

// Kinds of Problem.
const (
	ProblemMissing = "missing"       // the log names a body the store does not hold
	ProblemCorrupt = "corrupt"       // the file does not hold the bytes its name promises
	ProblemSize    = "size"          // the bytes hash right but their size is not the log's
	ProblemStore   = "store"         // a file in the store that is not a body file
	ProblemKey     = "key"           // an encrypted body, and no (or another) site key to check it
	ProblemNotGone = "not-destroyed" // the log erased or purged the body; the store still holds it
)

// Problem is one thing Verify found wrong, naming the file.
type Problem struct {
	Kind   string `json:"kind"`
	Digest string `json:"sha256,omitempty"`
	Path   string `json:"path"`
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	return fmt.Sprintf("%s: %s: %s", p.Kind, p.Path, p.Detail)
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	// Bodies is how many bodies the log names, Bytes their total size.
	Bodies int   `json:"bodies"`
	Bytes  int64 `json:"bytes"`
	// Problems are failures: the archive does not hold what the log says.
	Problems []Problem `json:"problems,omitempty"`
	// Unreferenced are body files no log record names (a fetch whose
	// event was never appended): harmless, listed for completeness.
	Unreferenced []string `json:"unreferenced,omitempty"`
	// Missing are the messages whose bodies could not be fetched at
	// ingest: gaps the log recorded (a backfill can fill them).
	Missing []Missing `json:"missing,omitempty"`
	// Gone are the bodies the log erased or purged (their Erasure or Purge
	// event): not checked, not failures.
	Gone []GoneBody `json:"gone,omitempty"`
}

// OK reports whether every body the log names is in the store, intact.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// Verify recomputes the SHA-256 of every body the log names (through the
// projection: CatchUp or Rebuild it first) from the store's files and
// checks it and the size against the log; it also lists the store's files
// the log does not name and the gaps the log recorded. Files are read by
// workers (default GOMAXPROCS) in parallel; progress, if set, is called
// after each body with how many are done out of how many.
func (a *Archive) Verify(ctx context.Context, workers int, progress func(done, total int)) (*VerifyReport, error) {
	if a.blobs == nil {
		return nil, errors.New("archive: verify needs the body store")
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var all []Body
	if err := a.EachBody(ctx, func(b Body) error { all = append(all, b); return nil }); err != nil {
		return nil, err
	}
	gone, err := a.GoneBodies(ctx)
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{}
	known := make(map[string]bool, len(all))
	for _, g := range gone {
		known[g.Digest] = true
		if ok, err := a.blobs.Has(g.Digest); err != nil {
			return nil, err
		} else if ok {
			rep.Problems = append(rep.Problems, Problem{Kind: ProblemNotGone, Digest: g.Digest, Path: a.blobs.Path(g.Digest),
				Detail: fmt.Sprintf("%s at log position %d; the store still holds it (run the erasure or purge again to finish)", g.Kind, g.Position)})
		}
		rep.Gone = append(rep.Gone, g)
	}
	live := all[:0]
	for _, b := range all {
		if known[b.Digest] {
			continue
		}
		known[b.Digest] = true
		rep.Bytes += b.Size
		live = append(live, b)
	}
	all = live
	rep.Bodies = len(all)

	var mu sync.Mutex
	done := 0
	jobs := make(chan Body)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range jobs {
				p := a.verifyOne(b)
				mu.Lock()
				if p != nil {
					rep.Problems = append(rep.Problems, *p)
				}
				done++
				if progress != nil {
					progress(done, len(all))
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, b := range all {
		select {
		case jobs <- b:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	sort.Slice(rep.Problems, func(i, j int) bool { return rep.Problems[i].Path < rep.Problems[j].Path })

	if err := a.blobs.Walk(ctx, func(d string, _ int64, werr error) error {
		var ce *blob.CorruptError
		switch {
		case errors.As(werr, &ce):
			rep.Problems = append(rep.Problems, Problem{Kind: ProblemStore, Path: ce.Path, Detail: ce.Reason})
		case werr != nil:
			return werr
		case !known[d]:
			rep.Unreferenced = append(rep.Unreferenced, a.blobs.Path(d))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("archive: walk the store: %w", err)
	}
	missing, err := a.Missing(ctx)
	if err != nil {
		return nil, err
	}
	rep.Missing = missing
	return rep, nil
}

func (a *Archive) verifyOne(b Body) *Problem {
	path := a.blobs.Path(b.Digest)
	n, err := a.blobs.Verify(b.Digest)
	var ce *blob.CorruptError
	var ge *blob.GoneError
	switch {
	case errors.As(err, &ge):
		return &Problem{Kind: ProblemMissing, Digest: b.Digest, Path: path, Detail: "the store says " + ge.Error() + ", the log records no such erasure or purge"}
	case errors.Is(err, blob.ErrNoSiteKey), errors.Is(err, blob.ErrWrongSiteKey):
		return &Problem{Kind: ProblemKey, Digest: b.Digest, Path: path, Detail: err.Error()}
	case errors.Is(err, blob.ErrNotFound):
		return &Problem{Kind: ProblemMissing, Digest: b.Digest, Path: path, Detail: "the log names this body; the store does not hold it"}
	case errors.As(err, &ce):
		return &Problem{Kind: ProblemCorrupt, Digest: b.Digest, Path: path, Detail: ce.Reason}
	case err != nil:
		return &Problem{Kind: ProblemCorrupt, Digest: b.Digest, Path: path, Detail: err.Error()}
	case b.Size != 0 && n != b.Size:
		return &Problem{Kind: ProblemSize, Digest: b.Digest, Path: path, Detail: fmt.Sprintf("%d bytes, the log says %d", n, b.Size)}
	}
	return nil
}
