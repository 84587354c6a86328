// Package coverage reads from a Bonnie log when it is known complete:
// for each folder, the periods in which a daemon listened, those in which
// nobody did (gaps: Cyrus drops its datagrams then), whether a reconcile
// verified or repaired each gap since, and what was repaired after the
// fact.
//
// It is a reading of the log's own vocabulary (DaemonStart and DaemonStop,
// vnd.bonnie.Backfill and vnd.bonnie.Reconcile, the folders' verified and
// backfilled fields) and imports nothing but package bonnie, so that the
// crawler that writes those events (source/imap) and the sinks that answer
// from the record (sink/archive's export, sink/discovery's timelines) use
// the same computation: a timeline or an export says when it crosses a
// period in which the log may miss something, and which of its items were
// recorded after the fact ([Mark]).
//
// [Read] loads what is shared by all folders once (the daemon's lifecycle,
// the reconciles' repairs and windows); [Timeline.Folder]
// then gives one folder's [Coverage], and [Coverage.Crossing] what a span
// of time crosses in it.
package coverage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Statuses of a coverage Period.
const (
	// Unknown: before the log knew the folder (before Bonnie listened, or
	// before the folder existed).
	Unknown = "unknown"
	// Backfilled: the log learnt the folder from a backfill at To: its
	// state then is complete, the history before it is not.
	Backfilled = "backfilled"
	// Complete: a daemon listened; the log is complete as far as Bonnie
	// knows.
	Complete = "complete"
	// Gap: nobody listened and no reconcile has checked the folder since:
	// changes made then may be missing.
	Gap = "gap"
	// Verified: nobody listened, but a reconcile found the folder in
	// agreement afterwards: nothing was missed in its state (changes
	// undone within the gap leave no trace).
	Verified = "verified"
	// Repaired: nobody listened, and a reconcile recorded what was missed
	// (Repairs).
	Repaired = "repaired"
)

// How an item came into the log (Mark.RecordedBy).
const (
	// Live: Cyrus notified it as it happened.
	Live = "live"
	// ByBackfill: a crawl found it present at the event's time; when it
	// happened before is not recorded.
	ByBackfill = "backfill"
	// ByReconcile: a reconcile found it missing from the log; it happened
	// within the Mark's Window.
	ByReconcile = "reconcile"
)

// Source is what coverage reads: the log and the entities' state.
type Source interface {
	bonnie.Log
	bonnie.StateSource
}

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

	// createdLive: the log's first word of the folder is a live
	// MailboxCreate, so the folder did not exist before KnownSince and
	// its Unknown period hides nothing.
	createdLive bool
}

// DownGap is a period in which no daemon listened to Cyrus: in datagram
// mode Cyrus dropped what it notified then. From is the previous run's
// stop (or, after a crash, the last record it appended: vnd.bonnie.downSince
// of the DaemonStart event), To the DaemonStart; an Open gap (the last
// lifecycle event is a DaemonStop) lasts until now.
type DownGap struct {
	From      time.Time       `json:"from"`
	To        time.Time       `json:"to"`
	CleanStop bool            `json:"cleanStop"`
	Open      bool            `json:"open,omitempty"`
	Position  bonnie.Position `json:"position,omitempty"` // of the DaemonStart
}

// Mark says how one log record came into the log: live, or by a crawl
// after the fact, and then when and within which window.
type Mark struct {
	RecordedBy string `json:"recordedBy"`
	// At is when the crawl found it (backfill, reconcile).
	At time.Time `json:"recordedAt,omitzero"`
	// Window (reconcile) is when the change must have happened.
	Window *bonnie.Window `json:"window,omitempty"`
}

// Crossing is what a span of time crosses in one folder's coverage: the
// periods in it in which the log is not known complete, and the repairs
// recorded for it.
type Crossing struct {
	Folder  string   `json:"folder"` // uniqueid
	Path    string   `json:"path"`
	Periods []Period `json:"periods"`
	Repairs []Repair `json:"repairs,omitempty"`
}

// ErrNoFolder is returned by FolderCoverage for a folder the log does not
// know.
var ErrNoFolder = errors.New("coverage: no such folder in the log")

// Timeline is what the log says, for all folders at once, of when it
// listened and what crawls recorded after the fact. Read it once and ask
// it about as many folders and records as needed.
type Timeline struct {
	// Start is the time of the log's first record, Now the end of the
	// last period.
	Start time.Time `json:"start"`
	Now   time.Time `json:"now"`
	// Gaps are the periods in which no daemon listened, in log order.
	Gaps []DownGap `json:"gaps"`
	// Held are the periods in which no daemon ran but its sources kept
	// what Cyrus sent (sockets held by systemd, a broker's queues): Cyrus
	// waited, nothing was lost, so they are no gap. A period is held
	// when the runs on both sides of it said so (HeldWhileDown in their
	// DaemonStart).
	Held    []DownGap `json:"held,omitempty"`
	repairs map[string][]Repair
	windows map[bonnie.Position]*bonnie.Window // of the Reconcile events
}

// readEvents are the events Read loads. Backfill events are not among
// them: they repair no gap, and a large backfill is most of a log.
var readEvents = bonnie.Mask(bonnie.DaemonStart, bonnie.DaemonStop, bonnie.Reconcile)

// Read reads the daemon's lifecycle events (DaemonStart, DaemonStop) and
// the Reconcile events from the log, in one pass; with a
// bonnie.FilteredReader only those are loaded. now ends an open gap.
func Read(ctx context.Context, lg bonnie.Log, now time.Time) (*Timeline, error) {
	tl := &Timeline{Now: now.UTC(), repairs: map[string][]Repair{}, windows: map[bonnie.Position]*bonnie.Window{}}
	recs, err := lg.Read(ctx, 0, 1) // the log's first record dates its start
	if err != nil {
		return nil, fmt.Errorf("coverage: read log: %w", err)
	}
	if len(recs) > 0 && recs[0].Event != nil {
		tl.Start = recs[0].Event.Time.UTC()
	}
	var last *bonnie.Event
	held := false // the last DaemonStart said its sources were held
	err = each(ctx, lg, readEvents, func(rec bonnie.Record) {
		ev := rec.Event
		switch ev.Type {
		case bonnie.DaemonStart, bonnie.DaemonStop:
			last = ev
			if g, ok := downGap(rec); ok {
				if held && heldWhileDown(ev) {
					tl.Held = append(tl.Held, g)
				} else {
					tl.Gaps = append(tl.Gaps, g)
				}
			}
			if ev.Type == bonnie.DaemonStart {
				held = heldWhileDown(ev)
			}
		case bonnie.Reconcile:
			cr, err := ev.Crawl()
			if err != nil {
				return // kept in the log as it came; it changed nothing
			}
			if cr.Window != nil {
				tl.windows[rec.Position] = cr.Window
			}
			if ev.MailboxID != "" {
				tl.repairs[ev.MailboxID] = append(tl.repairs[ev.MailboxID], Repair{Position: rec.Position, At: ev.Time,
					Window: cr.Window, Folder: cr.Folder, Appended: len(cr.Messages), Flags: len(cr.Flags),
					Expunged: len(cr.Expunged), ACL: cr.ACL, OldPath: cr.OldPath, Recreated: cr.OldUIDValidity})
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if last != nil && last.Type == bonnie.DaemonStop {
		g := DownGap{From: last.Time.UTC(), To: tl.Now, CleanStop: true, Open: true}
		if held {
			tl.Held = append(tl.Held, g) // the holder keeps what comes meanwhile
		} else {
			tl.Gaps = append(tl.Gaps, g)
		}
	}
	return tl, nil
}

// HeldWhileDown is the DaemonStart detail that says every source of the
// daemon keeps what Cyrus sends while the daemon is down: its Cyrus
// sockets were inherited from a holder that outlives it (systemd socket
// activation), or it reads from brokers' durable queues only.
const HeldWhileDown = "vnd.bonnie.heldWhileDown"

func heldWhileDown(ev *bonnie.Event) bool {
	var held bool
	raw, ok := ev.Extra[HeldWhileDown]
	return ok && json.Unmarshal(raw, &held) == nil && held
}

// downGap is the gap a DaemonStart closes, from its vnd.bonnie.downSince.
func downGap(rec bonnie.Record) (DownGap, bool) {
	ev := rec.Event
	if ev.Type != bonnie.DaemonStart {
		return DownGap{}, false
	}
	var down string
	raw, ok := ev.Extra["vnd.bonnie.downSince"]
	if !ok || json.Unmarshal(raw, &down) != nil {
		return DownGap{}, false
	}
	from, err := time.Parse(time.RFC3339Nano, down)
	if err != nil {
		return DownGap{}, false
	}
	clean := false
	if raw, ok := ev.Extra["vnd.bonnie.cleanStop"]; ok {
		_ = json.Unmarshal(raw, &clean)
	}
	return DownGap{From: from.UTC(), To: ev.Time.UTC(), CleanStop: clean, Position: rec.Position}, true
}

// each calls fn for every record of lg whose event is in mask.
func each(ctx context.Context, lg bonnie.Log, mask bonnie.EventMask, fn func(bonnie.Record)) error {
	_, err := bonnie.EachMatching(ctx, lg, 0, mask, func(r bonnie.Record) error { fn(r); return nil })
	if err != nil {
		return fmt.Errorf("coverage: read log: %w", err)
	}
	return nil
}

// Mark says how the record at pos came into the log, from its event's
// type (as a string: what the archive and the discovery index keep) and
// time: a record of another type than Backfill or Reconcile is Live; a
// Reconcile's Window is the one its event recorded.
func (tl *Timeline) Mark(pos bonnie.Position, eventType string, at time.Time) Mark {
	switch eventType {
	case bonnie.Backfill.String():
		return Mark{RecordedBy: ByBackfill, At: at.UTC()}
	case bonnie.Reconcile.String():
		return Mark{RecordedBy: ByReconcile, At: at.UTC(), Window: tl.windows[pos]}
	}
	return Mark{RecordedBy: Live}
}

// FolderCoverage reads the coverage of a folder, named by its uniqueid or
// its path (present, or else the last one that had it), from the log:
// the folder's history, the daemon's lifecycle events (gaps) and the
// Reconcile events about it.
func FolderCoverage(ctx context.Context, lg Source, folder string, now time.Time) (*Coverage, error) {
	tl, err := Read(ctx, lg, now)
	if err != nil {
		return nil, err
	}
	return tl.Folder(ctx, lg, folder)
}

// Folder returns the coverage of a folder (uniqueid or path, see
// FolderCoverage) on this timeline; lg is the log it was read from.
func (tl *Timeline) Folder(ctx context.Context, lg Source, folder string) (*Coverage, error) {
	id, st, err := findFolder(ctx, lg, folder)
	if err != nil {
		return nil, err
	}
	hist, err := lg.History(ctx, bonnie.KindFolder, id)
	if err != nil {
		return nil, fmt.Errorf("coverage: history of %s: %w", folder, err)
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
		cov.KnownSince = tl.Start
	}
	if len(hist) > 0 && hist[0].Cause > 0 {
		if recs, err := lg.Read(ctx, hist[0].Cause-1, 1); err == nil && len(recs) > 0 && recs[0].Event != nil {
			cov.createdLive = recs[0].Position == hist[0].Cause && recs[0].Event.Type == bonnie.MailboxCreate
		}
	}
	cov.Repairs = tl.repairs[id]
	first := Period{To: cov.KnownSince, Status: Unknown}
	if !cov.Backfilled.IsZero() && firstIsBackfill(hist) {
		first.Status = Backfilled
	}
	cov.Periods = append(cov.Periods, first)
	cursor := cov.KnownSince
	end := tl.Now
	if cov.State == bonnie.StateDeleted && len(hist) > 0 {
		end = hist[len(hist)-1].Time
	}
	for _, g := range tl.Gaps {
		if !g.To.After(cursor) || !g.From.Before(end) {
			continue
		}
		from := later(g.From, cursor)
		if from.After(cursor) {
			cov.Periods = append(cov.Periods, Period{From: cursor, To: from, Status: Complete})
		}
		p := Period{From: from, To: g.To, Status: Gap}
		for _, r := range cov.Repairs {
			if r.Window != nil && r.Window.From.Before(g.To) && r.Window.To.After(from) && !r.At.Before(g.To) {
				p.Status, p.At = Repaired, r.At
				break
			}
		}
		if p.Status == Gap {
			for _, v := range verified {
				if !v.Before(g.To) {
					p.Status, p.At = Verified, v
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
		cov.Periods = append(cov.Periods, Period{From: cursor, To: end, Status: Complete})
	}
	return cov, nil
}

// Crossing returns what the span from..to (a zero bound: unbounded)
// crosses in the folder's coverage: the periods overlapping it in which
// the log is not known complete (gaps, verified or repaired gaps, and the
// time before the log knew the folder, unless a live MailboxCreate says
// it did not exist then), and the repairs whose window overlaps it. It
// returns nil when the span lies wholly in complete periods.
func (c *Coverage) Crossing(from, to time.Time) *Crossing {
	x := &Crossing{Folder: c.Folder, Path: c.Path}
	for i, p := range c.Periods {
		if p.Status == Complete || (i == 0 && c.createdLive && p.Status == Unknown) {
			continue
		}
		if overlaps(p.From, p.To, from, to) {
			x.Periods = append(x.Periods, p)
		}
	}
	for _, r := range c.Repairs {
		wf, wt := r.At, r.At
		if r.Window != nil {
			wf, wt = r.Window.From, r.Window.To
		}
		if overlaps(wf, wt, from, to) || (wf.Equal(wt) && within(wf, from, to)) {
			x.Repairs = append(x.Repairs, r)
		}
	}
	if len(x.Periods) == 0 && len(x.Repairs) == 0 {
		return nil
	}
	return x
}

// Crossings returns what the span from..to crosses in the coverage of
// each of folders (uniqueids or paths), in the order given, leaving out
// the folders it crosses nothing in and those the log does not know.
func (tl *Timeline) Crossings(ctx context.Context, lg Source, folders []string, from, to time.Time) ([]Crossing, error) {
	var out []Crossing
	seen := map[string]bool{}
	for _, f := range folders {
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		cov, err := tl.Folder(ctx, lg, f)
		if errors.Is(err, ErrNoFolder) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if seen[cov.Folder] && cov.Folder != f {
			continue
		}
		seen[cov.Folder] = true
		if x := cov.Crossing(from, to); x != nil {
			out = append(out, *x)
		}
	}
	return out, nil
}

// Lines says what the crossing is in words, one line per period and per
// repair, each starting with the folder's path:
//
//	user.alice: repaired 2026-11-28T10:00:00Z .. 2026-11-28T11:00:00Z at 2026-11-28T12:00:00Z
//	user.alice: repair #42 at 2026-11-28T12:00:00Z: 2 appended, 1 flag changes, 0 expunged; happened 2026-11-28T10:00:00Z .. 2026-11-28T11:00:00Z (down)
func (x *Crossing) Lines() []string {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	name := x.Path
	if name == "" {
		name = x.Folder
	}
	var out []string
	for _, p := range x.Periods {
		line := fmt.Sprintf("%s: %s %s .. %s", name, p.Status, ts(p.From), ts(p.To))
		if !p.At.IsZero() {
			line += " at " + ts(p.At)
		}
		out = append(out, line)
	}
	for _, r := range x.Repairs {
		line := fmt.Sprintf("%s: repair #%d at %s: %d appended, %d flag changes, %d expunged", name, r.Position, ts(r.At),
			r.Appended, r.Flags, r.Expunged)
		if r.ACL {
			line += ", ACL changed"
		}
		if r.Folder != "" {
			line += ", folder " + r.Folder
		}
		if r.Window != nil {
			line += fmt.Sprintf("; happened %s .. %s (%s)", ts(r.Window.From), ts(r.Window.To), r.Window.Basis)
		}
		out = append(out, line)
	}
	return out
}

// overlaps reports whether [af, at) and [bf, bt) share a moment; a zero
// bound is unbounded (a zero af or bf: since always; a zero at or bt:
// until always).
func overlaps(af, at, bf, bt time.Time) bool {
	return (at.IsZero() || bf.IsZero() || at.After(bf)) && (bt.IsZero() || af.IsZero() || af.Before(bt))
}

// within reports whether t lies in [from, to), zero bounds unbounded.
func within(t, from, to time.Time) bool {
	return (from.IsZero() || !t.Before(from)) && (to.IsZero() || t.Before(to))
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
func findFolder(ctx context.Context, lg Source, folder string) (string, map[string]string, error) {
	st, err := lg.StateAt(ctx, bonnie.KindFolder, folder, time.Time{})
	if err != nil {
		return "", nil, fmt.Errorf("coverage: folder %s: %w", folder, err)
	}
	if st["state"] != "" {
		return folder, st, nil
	}
	ids, err := lg.Find(ctx, bonnie.KindFolder, "path", folder)
	if err != nil {
		return "", nil, fmt.Errorf("coverage: folder %s: %w", folder, err)
	}
	var id string
	for _, cand := range ids {
		s, err := lg.StateAt(ctx, bonnie.KindFolder, cand, time.Time{})
		if err != nil {
			return "", nil, fmt.Errorf("coverage: folder %s: %w", cand, err)
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

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
