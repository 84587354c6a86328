package imap

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Gap is a period in which no daemon listened to Cyrus: in datagram mode
// Cyrus dropped what it notified then. From is the previous run's stop
// (or, after a crash, the last record it appended: vnd.bonnie.downSince of
// the DaemonStart event), To the DaemonStart; an Open gap (the last
// lifecycle event is a DaemonStop) lasts until now.
type Gap struct {
	From      time.Time       `json:"from"`
	To        time.Time       `json:"to"`
	CleanStop bool            `json:"cleanStop"`
	Open      bool            `json:"open,omitempty"`
	Position  bonnie.Position `json:"position,omitempty"` // of the DaemonStart
}

// timeline is what the log says of when it listened.
type timeline struct {
	start time.Time // the first record's time
	gaps  []Gap
}

// readTimeline reads the daemon's lifecycle events (DaemonStart,
// DaemonStop) from the log; with a FilteredReader only those are loaded.
func readTimeline(ctx context.Context, lg bonnie.Log, now time.Time) (*timeline, error) {
	tl := &timeline{}
	mask := bonnie.Mask(bonnie.DaemonStart, bonnie.DaemonStop)
	fr, _ := lg.(bonnie.FilteredReader)
	var pos bonnie.Position
	var last *bonnie.Event
	first := true
	for {
		var (
			recs []bonnie.Record
			next bonnie.Position
			err  error
		)
		if first {
			// The log's first record dates its start.
			if recs, err = lg.Read(ctx, 0, 1); err != nil {
				return nil, fmt.Errorf("imap: read log: %w", err)
			}
			if len(recs) > 0 && recs[0].Event != nil {
				tl.start = recs[0].Event.Time
			}
			first = false
		}
		if fr != nil {
			recs, next, err = fr.ReadMatching(ctx, pos, 1000, mask)
		} else {
			recs, err = lg.Read(ctx, pos, 1000)
			if len(recs) > 0 {
				next = recs[len(recs)-1].Position
			} else {
				next = pos
			}
		}
		if err != nil {
			return nil, fmt.Errorf("imap: read log: %w", err)
		}
		for _, rec := range recs {
			ev := rec.Event
			if ev == nil || !mask.Has(ev.Type) {
				continue
			}
			last = ev
			if ev.Type != bonnie.DaemonStart {
				continue
			}
			var down string
			if raw, ok := ev.Extra["vnd.bonnie.downSince"]; ok && json.Unmarshal(raw, &down) == nil {
				from, err := time.Parse(time.RFC3339Nano, down)
				if err != nil {
					continue
				}
				clean := false
				if raw, ok := ev.Extra["vnd.bonnie.cleanStop"]; ok {
					_ = json.Unmarshal(raw, &clean)
				}
				tl.gaps = append(tl.gaps, Gap{From: from.UTC(), To: ev.Time.UTC(), CleanStop: clean, Position: rec.Position})
			}
		}
		if next <= pos {
			break
		}
		pos = next
	}
	if last != nil && last.Type == bonnie.DaemonStop {
		tl.gaps = append(tl.gaps, Gap{From: last.Time.UTC(), To: now.UTC(), CleanStop: true, Open: true})
	}
	return tl, nil
}

// gapAfter reports whether nobody listened at some moment after t.
func (tl *timeline) gapAfter(t time.Time) bool {
	for _, g := range tl.gaps {
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
func (tl *timeline) window(since, now time.Time) *bonnie.Window {
	since = later(since, tl.start)
	var w *bonnie.Window
	for _, g := range tl.gaps {
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
