package imap

import (
	"context"
	"time"

	"github.com/bonnie-archive/bonnie/coverage"
)

// The coverage of a folder is computed by package coverage, which the
// sinks use too (an export or a timeline says when it crosses a gap);
// these names keep this package's API.

// Statuses of a coverage Period (see package coverage).
const (
	CoverageUnknown    = coverage.Unknown
	CoverageBackfilled = coverage.Backfilled
	CoverageComplete   = coverage.Complete
	CoverageGap        = coverage.Gap
	CoverageVerified   = coverage.Verified
	CoverageRepaired   = coverage.Repaired
)

type (
	// Period is one stretch of a folder's coverage.
	Period = coverage.Period
	// Repair is one Reconcile event that recorded something the log
	// missed in the folder.
	Repair = coverage.Repair
	// Coverage is, for one folder, when the log is known complete, when
	// it may not be, and what was repaired after the fact.
	Coverage = coverage.Coverage
)

// ErrNoFolder is returned by FolderCoverage for a folder the log does not
// know.
var ErrNoFolder = coverage.ErrNoFolder

// FolderCoverage reads the coverage of a folder, named by its uniqueid or
// its path (present, or else the last one that had it), from the log: see
// coverage.FolderCoverage.
func FolderCoverage(ctx context.Context, lg Log, folder string, now time.Time) (*Coverage, error) {
	return coverage.FolderCoverage(ctx, lg, folder, now)
}
