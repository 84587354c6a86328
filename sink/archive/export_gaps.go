package archive

import (
	"context"
	"fmt"

	"github.com/bonnie-archive/bonnie/coverage"
)

// exportCoverage reads the log's coverage and sets the manifest's Gaps:
// what the query's time span crosses in the coverage of the folders the
// query names and of those the exported messages arrived in. It returns
// the timeline, which also marks how each message was recorded.
func exportCoverage(ctx context.Context, lg coverage.Source, m *Manifest, bodies []Body) (*coverage.Timeline, error) {
	tl, err := coverage.Read(ctx, lg, m.CreatedAt)
	if err != nil {
		return nil, fmt.Errorf("archive: export: %w", err)
	}
	folders := append([]string(nil), m.Query.Folders...)
	for _, b := range bodies {
		for _, o := range b.Occurrences {
			folders = append(folders, o.Folder)
		}
	}
	to := m.Query.To
	if to.IsZero() {
		to = m.CreatedAt
	}
	if m.Gaps, err = tl.Crossings(ctx, lg, folders, m.Query.From, to); err != nil {
		return nil, fmt.Errorf("archive: export: %w", err)
	}
	return tl, nil
}

// recordedBy is how a message's occurrences came into the log: live when
// all of them did, else the first one recorded after the fact.
func recordedBy(tl *coverage.Timeline, occ []Occurrence) coverage.Mark {
	for _, o := range occ {
		if mk := tl.Mark(o.Position, o.Event, o.Time); mk.RecordedBy != coverage.Live {
			return mk
		}
	}
	return coverage.Mark{RecordedBy: coverage.Live}
}

// GapSummary says in words what the manifest's Gaps are, one line per
// period and per repair (see coverage.Crossing.Lines).
func (m *Manifest) GapSummary() []string {
	var out []string
	for i := range m.Gaps {
		out = append(out, m.Gaps[i].Lines()...)
	}
	return out
}
