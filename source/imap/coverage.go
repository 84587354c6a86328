package imap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Statuses of a coverage Period.
const (
	// CoverageUnknown: before the log knew the folder (before Bonnie
	// listened, or before the folder existed).
	CoverageUnknown = "unknown"
	// CoverageBackfilled: the log learnt the folder from a backfill at
	// To: its state then is complete, the history before it is not.
	CoverageBackfilled = "backfilled"
	// CoverageComplete: a daemon listened; the log is complete as far as
	// Bonnie knows.
	CoverageComplete = "complete"
	// CoverageGap: nobody listened and no reconcile has checked the
	// folder since: changes made then may be missing.
	CoverageGap = "gap"
	// CoverageVerified: nobody listened, but a reconcile found the folder
	// in agreement afterwards: nothing was missed.
	CoverageVerified = "verified"
	// CoverageRepaired: nobody listened, and a reconcile recorded what
	// was missed (Repairs).
	CoverageRepaired = "repaired"
)

// Period is one stretch of a folder's coverage.
type Period struct {
	From   time.Time `json:"from,omitzero"`
	To     time.Time `json:"to"`
	Status string    `json:"status"`
	// At is when the period was verified or repaired.
	At time.Time `json:"at,omitzero"`
}

// Repair is one Reconcile event that recorded something the log missed in
// the folder.
type Repair struct {
	Position  bonnie.Position `json:"position"`
	At        time.Time       `json:"at"`
	Window    *bonnie.Window  `json:"window,omitempty"`
	Folder    string          `json:"folder,omitempty"` // created, renamed, deleted, recreated
	Appended  int             `json:"appended,omitempty"`
	Flags     int             `json:"flags,omitempty"`
	Expunged  int             `json:"expunged,omitempty"`
	ACL       bool            `json:"acl,omitempty"`
	OldPath   string          `json:"oldPath,omitempty"`
	Recreated uint32          `json:"oldUidValidity,omitempty"`
}

// Coverage is, for one folder, when the log is known complete, when it
// may not be, and what was repaired after the fact.
type Coverage struct {
	Folder     string    `json:"folder"` // uniqueid
	Path       string    `json:"path"`
	State      string    `json:"state"`
	KnownSince time.Time `json:"knownSince"`
	Backfilled time.Time `json:"backfilled,omitzero"`
	Verified   time.Time `json:"verified,omitzero"`
	Periods    []Period  `json:"periods"`
	Repairs    []Repair  `json:"repairs,omitempty"`
}

// ErrNoFolder is returned by FolderCoverage for a folder the log does not
// know.
var ErrNoFolder = errors.New("imap: no such folder in the log")

// FolderCoverage reads the coverage of a folder, named by its uniqueid or
// its path (present, or else the last one that had it), from the log:
// the folder's history, the daemon's lifecycle events (gaps) and the
// Reconcile events about it.
func FolderCoverage(ctx context.Context, lg Log, folder string, now time.Time) (*Coverage, error) {
	id, st, err := findFolder(ctx, lg, folder)
	if err != nil {
		return nil, err
	}
	hist, err := lg.History(ctx, bonnie.KindFolder, id)
	if err != nil {
		return nil, fmt.Errorf("imap: history of %s: %w", folder, err)
	}
	tl, err := readTimeline(ctx, lg, now)
	if err != nil {
		return nil, err
	}
	cov := &Coverage{Folder: id, Path: st["path"], State: st["state"],
		Backfilled: parseTime(st[bonnie.FieldBackfilled]), Verified: parseTime(st[bonnie.FieldVerified])}
	var verified []time.Time
	for i, ch := range hist {
		if i == 0 {
			cov.KnownSince = ch.Time
		}
		if ch.Field == bonnie.FieldVerified && ch.To != "" {
			verified = append(verified, parseTime(ch.To))
		}
	}
	if cov.KnownSince.IsZero() {
		cov.KnownSince = tl.start
	}
	if cov.Repairs, err = repairs(ctx, lg, id); err != nil {
		return nil, err
	}
	first := Period{To: cov.KnownSince, Status: CoverageUnknown}
	if !cov.Backfilled.IsZero() && firstIsBackfill(hist) {
		first.Status = CoverageBackfilled
	}
	cov.Periods = append(cov.Periods, first)
	cursor := cov.KnownSince
	end := now.UTC()
	if cov.State == bonnie.StateDeleted && len(hist) > 0 {
		end = hist[len(hist)-1].Time
	}
	for _, g := range tl.gaps {
		if !g.To.After(cursor) || !g.From.Before(end) {
			continue
		}
		from := later(g.From, cursor)
		if from.After(cursor) {
			cov.Periods = append(cov.Periods, Period{From: cursor, To: from, Status: CoverageComplete})
		}
		p := Period{From: from, To: g.To, Status: CoverageGap}
		for _, r := range cov.Repairs {
			if r.Window != nil && r.Window.From.Before(g.To) && r.Window.To.After(from) && !r.At.Before(g.To) {
				p.Status, p.At = CoverageRepaired, r.At
				break
			}
		}
		if p.Status == CoverageGap {
			for _, v := range verified {
				if !v.Before(g.To) {
					p.Status, p.At = CoverageVerified, v
					break
				}
			}
		}
		if g.Open {
			p.To = end
		}
		cov.Periods = append(cov.Periods, p)
		cursor = p.To
	}
	if end.After(cursor) {
		cov.Periods = append(cov.Periods, Period{From: cursor, To: end, Status: CoverageComplete})
	}
	return cov, nil
}

// firstIsBackfill reports whether the folder's first change came from a
// backfill (its backfill cursor or time was set with its creation).
func firstIsBackfill(hist []bonnie.Change) bool {
	if len(hist) == 0 {
		return false
	}
	t := hist[0].Time
	for _, ch := range hist {
		if !ch.Time.Equal(t) {
			break
		}
		if ch.Field == bonnie.FieldBackfillUID || ch.Field == bonnie.FieldBackfilled {
			return true
		}
	}
	return false
}

// findFolder resolves a uniqueid or a path to a folder of the log.
func findFolder(ctx context.Context, lg Log, folder string) (string, map[string]string, error) {
	st, err := lg.StateAt(ctx, bonnie.KindFolder, folder, time.Time{})
	if err != nil {
		return "", nil, fmt.Errorf("imap: folder %s: %w", folder, err)
	}
	if st["state"] != "" {
		return folder, st, nil
	}
	ids, err := lg.Find(ctx, bonnie.KindFolder, "path", folder)
	if err != nil {
		return "", nil, fmt.Errorf("imap: folder %s: %w", folder, err)
	}
	var id string
	for _, cand := range ids {
		s, err := lg.StateAt(ctx, bonnie.KindFolder, cand, time.Time{})
		if err != nil {
			return "", nil, fmt.Errorf("imap: folder %s: %w", cand, err)
		}
		if s["path"] != folder {
			continue
		}
		if id == "" || s["state"] == bonnie.StatePresent {
			id, st = cand, s
		}
	}
	if id == "" {
		return "", nil, fmt.Errorf("%w: %s", ErrNoFolder, folder)
	}
	return id, st, nil
}

// repairs lists the Reconcile events about folder id that recorded a
// finding.
func repairs(ctx context.Context, lg Log, id string) ([]Repair, error) {
	mask := bonnie.Mask(bonnie.Reconcile)
	fr, _ := lg.(bonnie.FilteredReader)
	var out []Repair
	var pos bonnie.Position
	for {
		var (
			recs []bonnie.Record
			next bonnie.Position
			err  error
		)
		if fr != nil {
			recs, next, err = fr.ReadMatching(ctx, pos, 1000, mask)
		} else {
			recs, err = lg.Read(ctx, pos, 1000)
			next = pos
			if len(recs) > 0 {
				next = recs[len(recs)-1].Position
			}
		}
		if err != nil {
			return nil, fmt.Errorf("imap: read log: %w", err)
		}
		for _, rec := range recs {
			ev := rec.Event
			if ev == nil || ev.Type != bonnie.Reconcile || ev.MailboxID != id {
				continue
			}
			cr, err := ev.Crawl()
			if err != nil {
				continue
			}
			out = append(out, Repair{Position: rec.Position, At: ev.Time, Window: cr.Window, Folder: cr.Folder,
				Appended: len(cr.Messages), Flags: len(cr.Flags), Expunged: len(cr.Expunged),
				ACL: cr.ACL, OldPath: cr.OldPath, Recreated: cr.OldUIDValidity})
		}
		if next <= pos {
			return out, nil
		}
		pos = next
	}
}
