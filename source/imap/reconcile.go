package imap

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"

	"github.com/bonnie-archive/bonnie"
)

// Log is what a reconcile and a coverage report read of the log.
type Log interface {
	bonnie.Log
	bonnie.StateSource
}

// Report is what a reconcile found.
type Report struct {
	Run string `json:"run"`
	// Folders were checked; Unchanged of them had the HIGHESTMODSEQ the
	// log verified last and were not opened.
	Folders   int `json:"folders"`
	Unchanged int `json:"unchanged"`
	Created   int `json:"created"`
	Renamed   int `json:"renamed"`
	Deleted   int `json:"deleted"`
	Recreated int `json:"recreated"`
	Appended  int `json:"appended"`
	Flags     int `json:"flags"`
	Expunged  int `json:"expunged"`
	ACLs      int `json:"acls"` // folders whose ACL changed
	Events    int `json:"events"`
	// Skipped are folders that could not be read (no right, gone while
	// we looked), with why.
	Skipped  map[string]string `json:"skipped,omitempty"`
	Duration time.Duration     `json:"duration"`
}

// Changed reports whether the reconcile recorded any finding.
func (r Report) Changed() bool {
	return r.Created+r.Renamed+r.Deleted+r.Recreated+r.Appended+r.Flags+r.Expunged+r.ACLs > 0
}

// Reconcile compares every selected folder on the server with what the
// log knows and records what the log missed as vnd.bonnie.Reconcile
// events (see bonnie.Crawl), each with the Window in which it must have
// happened: messages appended, flags changed, messages expunged, folders
// created, renamed, deleted or recreated (a new UIDVALIDITY) while nobody
// listened.
//
// A folder whose HIGHESTMODSEQ (CONDSTORE) is the one the log verified
// last is not opened: nothing changed in it since. The others are opened
// read-only and their UIDs and flags compared with the log's; only the
// messages the log does not have are fetched in full (with their bodies).
// The folders found in agreement are marked verified (one event for all of
// them) when that is news: they had changed, or nobody listened since
// they were last verified. That narrows the window of what a later
// reconcile finds and marks the gap verified in the coverage; a reconcile
// that finds nothing new records nothing.
//
// It is safe while a daemon ingests: the log is read before the server and
// again after it, and a finding about a message whose log state changed
// in between is dropped (the daemon had news at least as recent as the
// server's answer). What remains is recorded again harmlessly when its
// notification arrives (the setters record no change for a value the
// entity has).
func (c *Crawler) Reconcile(ctx context.Context, lg Log, rec Recorder) (Report, error) {
	start := c.o.Now()
	r := Report{Run: "reconcile-" + uuid.Must(uuid.NewV7()).String()}
	folders, err := c.Folders(ctx)
	if err != nil {
		return r, err
	}
	tl, err := readTimeline(ctx, lg, start)
	if err != nil {
		return r, err
	}
	known, err := logFolders(ctx, lg)
	if err != nil {
		return r, err
	}
	lastRun := time.Time{}
	for _, st := range known {
		lastRun = later(lastRun, parseTime(st[bonnie.FieldVerified]))
	}
	var verified []bonnie.VerifiedFolder
	onServer := map[string]bool{}
	for _, f := range folders {
		onServer[f.ID] = true
		r.Folders++
		st, ok := known[f.ID]
		if !ok {
			if st, err = lg.StateAt(ctx, bonnie.KindFolder, f.ID, time.Time{}); err != nil {
				return r, fmt.Errorf("imap: log state of %s: %w", f.Name, err)
			}
		}
		known := ok
		window := func() *bonnie.Window {
			since := lastRun
			if known {
				since = verifiedSince(ctx, lg, f.ID, st, tl)
			}
			return tl.window(since, start)
		}
		ok, err := c.reconcileFolder(ctx, lg, rec, f, st, window, &r)
		if err != nil {
			var ie *imap.Error
			if !errors.As(err, &ie) {
				return r, err
			}
			if r.Skipped == nil {
				r.Skipped = map[string]string{}
			}
			r.Skipped[f.Name] = err.Error()
			continue
		}
		// A folder in agreement is marked verified when that says
		// something new: it had changed (a new HIGHESTMODSEQ), was never
		// verified, or nobody listened for a while since it last was.
		// Otherwise an idle reconcile records nothing at all.
		if v := parseTime(st[bonnie.FieldVerified]); ok && (v.IsZero() || tl.gapAfter(v) ||
			st[bonnie.FieldHighestModseq] != strconv.FormatUint(f.HighestModseq, 10)) {
			verified = append(verified, bonnie.VerifiedFolder{MailboxID: f.ID, Modseq: f.HighestModseq})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(known)) {
		st := known[id]
		if onServer[id] || !c.selected(st["path"]) {
			continue
		}
		f := Folder{Name: st["path"], Owner: st["owner"], ID: id}
		uv, _ := strconv.ParseUint(st["uidValidity"], 10, 32)
		f.UIDValidity = uint32(uv)
		cr := &bonnie.Crawl{Run: r.Run, Folder: bonnie.FolderDeleted, Window: tl.window(verifiedSince(ctx, lg, id, st, tl), start)}
		if err := c.record(ctx, rec, bonnie.Reconcile, f, cr, nil); err != nil {
			return r, err
		}
		r.Deleted++
		r.Events++
	}
	for i := 0; i*verifiedPerEvent < len(verified); i++ {
		raw, err := c.verifiedJSON(r.Run, part(verified, i, verifiedPerEvent))
		if err != nil {
			return r, err
		}
		if err := rec(ctx, raw); err != nil {
			return r, fmt.Errorf("imap: record verification: %w", err)
		}
		r.Events++
	}
	r.Duration = c.o.Now().Sub(start)
	return r, nil
}

// reconcileFolder compares one folder and records what the log missed;
// it reports true when the folder was found in agreement (nothing
// recorded for it).
func (c *Crawler) reconcileFolder(ctx context.Context, lg Log, rec Recorder, f Folder, st map[string]string, window func() *bonnie.Window, r *Report) (bool, error) {
	head := &bonnie.Crawl{Run: r.Run}
	logUV, _ := strconv.ParseUint(st["uidValidity"], 10, 32)
	switch {
	case st["state"] != bonnie.StatePresent:
		head.Folder = bonnie.FolderCreated
	case st["path"] != f.Name:
		head.Folder, head.OldPath = bonnie.FolderRenamed, st["path"]
	}
	if head.Folder != bonnie.FolderCreated && logUV != 0 && uint32(logUV) != f.UIDValidity {
		head.Folder, head.OldUIDValidity = bonnie.FolderRecreated, uint32(logUV)
		if st["path"] != f.Name {
			head.OldPath = st["path"]
		}
	}
	head.ACL = head.Folder != bonnie.FolderCreated && !sameACL(st, f.ACL)
	if head.Folder == "" && !head.ACL && st[bonnie.FieldHighestModseq] != "" && st[bonnie.FieldHighestModseq] == strconv.FormatUint(f.HighestModseq, 10) {
		r.Unchanged++
		return true, nil
	}
	// The log is read before the server and checked again after: what a
	// daemon ingests meanwhile is then either in the server's state too,
	// or seen as a change of the log and left to the live stream (see
	// settle), never undone by an older snapshot.
	var logged map[uint32][]string
	var err error
	if head.Folder == bonnie.FolderRecreated {
		old, err := presentUIDs(ctx, lg, f.ID, head.OldUIDValidity)
		if err != nil {
			return false, err
		}
		head.Expunged = slices.Sorted(maps.Keys(old))
		logged = map[uint32][]string{}
	} else if head.Folder != bonnie.FolderCreated {
		if logged, err = presentUIDs(ctx, lg, f.ID, f.UIDValidity); err != nil {
			return false, err
		}
	}
	s, who, err := c.sessionFor(ctx, f)
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, func() { c.drop(who) })
	defer stop()
	listed := f.UIDValidity
	sel, err := examine(s, f)
	if err != nil {
		var ie *imap.Error
		if !errors.As(err, &ie) {
			c.drop(who)
		}
		return false, err
	}
	f.UIDValidity, f.UIDNext, f.HighestModseq, f.Messages = sel.UIDValidity, uint32(sel.UIDNext), sel.HighestModSeq, sel.NumMessages
	if f.UIDValidity != listed {
		return false, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "UIDVALIDITY changed while we looked; the next reconcile will see it"}
	}
	server, err := uidFlags(s)
	if err != nil {
		c.drop(who)
		return false, fmt.Errorf("imap: UID FETCH FLAGS %s: %w", f.Name, err)
	}
	var appended []uint32
	for _, uid := range slices.Sorted(maps.Keys(server)) {
		lf, ok := logged[uid]
		switch {
		case !ok:
			appended = append(appended, uid)
		case !slices.Equal(lf, server[uid]):
			head.Flags = append(head.Flags, bonnie.MessageState{UID: uid, Flags: server[uid]})
		}
	}
	if head.Folder != bonnie.FolderRecreated {
		for _, uid := range slices.Sorted(maps.Keys(logged)) {
			if _, ok := server[uid]; !ok {
				head.Expunged = append(head.Expunged, uid)
			}
		}
	}
	if head.Folder == "" && (len(appended) > 0 || len(head.Flags) > 0 || len(head.Expunged) > 0) {
		if appended, err = settle(ctx, lg, f, logged, head, appended); err != nil {
			return false, err
		}
	}
	if head.Folder == "" && !head.ACL && len(appended) == 0 && len(head.Flags) == 0 && len(head.Expunged) == 0 {
		return true, nil
	}
	if head.ACL {
		r.ACLs++
	}
	w := window()
	head.Window = w
	switch head.Folder {
	case bonnie.FolderCreated:
		r.Created++
	case bonnie.FolderRenamed:
		r.Renamed++
	case bonnie.FolderRecreated:
		r.Recreated++
	}
	r.Flags += len(head.Flags)
	r.Expunged += len(head.Expunged)
	// The first event carries the folder's news and the first part of
	// each list; further events carry the rest, so that no event grows
	// past bonnie.MaxNotificationSize.
	flags, expunged := head.Flags, head.Expunged
	for i := 0; ; i++ {
		cr := head
		if i > 0 {
			cr = &bonnie.Crawl{Run: r.Run, Window: w}
		}
		cr.Flags = part(flags, i, flagsPerEvent)
		cr.Expunged = part(expunged, i, expungedPerEvent)
		if ms := part(appended, i, c.o.Chunk); len(ms) > 0 {
			msgs, _, err := c.fetchMessages(s, ms)
			if err != nil {
				c.drop(who)
				return false, fmt.Errorf("imap: UID FETCH %s: %w", f.Name, err)
			}
			cr.Messages = msgs
			r.Appended += len(msgs)
		}
		if err := c.record(ctx, rec, bonnie.Reconcile, f, cr, nil); err != nil {
			return false, err
		}
		r.Events++
		if (i+1)*c.o.Chunk >= len(appended) && (i+1)*flagsPerEvent >= len(flags) && (i+1)*expungedPerEvent >= len(expunged) {
			break
		}
	}
	return false, nil
}

// settle drops the findings about messages whose state in the log
// changed since it was first read: a daemon ingested their news meanwhile
// (news at least as recent as the server's answer), which a finding from
// the older comparison must not undo.
func settle(ctx context.Context, lg Log, f Folder, logged map[uint32][]string, head *bonnie.Crawl, appended []uint32) ([]uint32, error) {
	now, err := presentUIDs(ctx, lg, f.ID, f.UIDValidity)
	if err != nil {
		return nil, err
	}
	same := func(uid uint32) bool {
		a, okA := logged[uid]
		b, okB := now[uid]
		return okA == okB && slices.Equal(a, b)
	}
	appended = slices.DeleteFunc(appended, func(uid uint32) bool { return !same(uid) })
	head.Flags = slices.DeleteFunc(head.Flags, func(m bonnie.MessageState) bool { return !same(m.UID) })
	head.Expunged = slices.DeleteFunc(head.Expunged, func(uid uint32) bool { return !same(uid) })
	return appended, nil
}

// How many flag changes, expunged UIDs and verified folders one event
// carries at most (about 200 KB of JSON each).
const (
	flagsPerEvent    = 2000
	expungedPerEvent = 20000
	verifiedPerEvent = 2000
)

// part returns the i-th slice of n elements of l (nil past its end).
func part[T any](l []T, i, n int) []T {
	if i*n >= len(l) {
		return nil
	}
	return l[i*n : min((i+1)*n, len(l))]
}

// sameACL reports whether the log's folder fields hold exactly acl.
func sameACL(st map[string]string, acl bonnie.ACL) bool {
	n := 0
	for k, v := range st {
		if strings.HasPrefix(k, "acl:") && v != "" {
			n++
		}
	}
	if n != len(acl) {
		return false
	}
	for _, e := range acl {
		if st["acl:"+e.Subject] != e.Rights {
			return false
		}
	}
	return true
}

// verifiedJSON encodes the Reconcile event that marks the folders found
// in agreement as verified now.
func (c *Crawler) verifiedJSON(run string, v []bonnie.VerifiedFolder) ([]byte, error) {
	return c.eventJSON(bonnie.Reconcile, Folder{}, c.o.Now(), &bonnie.Crawl{Run: run, Verified: v})
}

// logFolders returns the present folders of the log with their state.
func logFolders(ctx context.Context, lg Log) (map[string]map[string]string, error) {
	ids, err := lg.Find(ctx, bonnie.KindFolder, "state", bonnie.StatePresent)
	if err != nil {
		return nil, fmt.Errorf("imap: folders in the log: %w", err)
	}
	out := make(map[string]map[string]string, len(ids))
	for _, id := range ids {
		st, err := lg.StateAt(ctx, bonnie.KindFolder, id, time.Time{})
		if err != nil {
			return nil, fmt.Errorf("imap: folder %s in the log: %w", id, err)
		}
		if st["state"] == bonnie.StatePresent {
			out[id] = st
		}
	}
	return out, nil
}

// verifiedSince is the last moment the log knew folder id complete: when
// a reconcile last verified it, or a backfill finished it, or else when
// the log first heard of it.
func verifiedSince(ctx context.Context, lg Log, id string, st map[string]string, tl timeline) time.Time {
	t := later(parseTime(st[bonnie.FieldVerified]), parseTime(st[bonnie.FieldBackfilled]))
	if !t.IsZero() {
		return t
	}
	if h, err := lg.History(ctx, bonnie.KindFolder, id); err == nil && len(h) > 0 {
		return h[0].Time
	}
	return tl.Start
}

// selected reports whether a folder name matches the options' patterns
// (IMAP LIST wildcards: * anything, % anything but the separator).
func (c *Crawler) selected(name string) bool {
	for _, p := range c.o.Mailboxes {
		var b strings.Builder
		b.WriteString("^")
		for _, r := range p {
			switch r {
			case '*':
				b.WriteString(".*")
			case '%':
				b.WriteString(`[^.]*`)
			default:
				b.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		b.WriteString("$")
		if ok, _ := regexp.MatchString(b.String(), name); ok {
			return true
		}
	}
	return false
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
