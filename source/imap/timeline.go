package imap

import (
	"context"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
)

// timeline is what the log says of when it listened (package coverage
// reads it), with the questions a reconciliation asks of it.
type timeline struct{ *coverage.Timeline }

// readTimeline reads the daemon's lifecycle from the log; now ends an open
// gap.
func readTimeline(ctx context.Context, lg bonnie.Log, now time.Time) (timeline, error) {
	tl, err := coverage.Read(ctx, lg, now)
	return timeline{tl}, err
}

// gapAfter reports whether nobody listened at some moment after t.
func (tl timeline) gapAfter(t time.Time) bool {
	for _, g := range tl.Gaps {
		if g.To.After(t) {
			return true
		}
	}
	return false
}

// window bounds when a change found at now, in a folder last known
// complete at since, must have happened: within the gaps after since if
// there were any (the daemon was not listening), else anywhere between
// since and now (a notification lost while listening, or a folder never
// checked).
func (tl timeline) window(since, now time.Time) *bonnie.Window {
	since = later(since, tl.Start)
	var w *bonnie.Window
	for _, g := range tl.Gaps {
		if !g.To.After(since) {
			continue
		}
		if w == nil {
			w = &bonnie.Window{From: later(g.From, since), To: g.To, Basis: bonnie.WindowDown}
			continue
		}
		w.To = later(w.To, g.To)
	}
	if w == nil {
		w = &bonnie.Window{From: since.UTC(), To: now.UTC(), Basis: bonnie.WindowUnverified}
	}
	return w
}
