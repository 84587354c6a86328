package discovery

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
)

// Actions of what a crawl recorded after the fact (vnd.bonnie.Backfill,
// vnd.bonnie.Reconcile), beside the live ones: a backfill found a
// message present (found), a reconcile found its flags changed, its
// folder's ACL changed or the folder recreated under a new UIDVALIDITY;
// a backfill finished walking a folder. Messages a reconcile found
// appended or expunged, and folders it found created, renamed or
// deleted, take the live actions' names. Every such entry has
// RecordedBy set.
const (
	ActFound        = "found"
	ActFlagsChanged = "flags changed"
	ActACLChanged   = "acl changed"
	ActRecreated    = "recreated"
	ActBackfilled   = "backfilled"
)

// crawlDetail is the detail of an act a crawl recorded.
type crawlDetail struct {
	RecordedBy string         `json:"recordedBy"`
	Run        string         `json:"run,omitempty"`
	Window     *bonnie.Window `json:"window,omitempty"`
	// OldUIDValidity of a recreated folder.
	OldUIDValidity uint32 `json:"oldUidValidity,omitempty"`
}

// crawlActs indexes a Backfill or Reconcile event: one act per message it
// found, changed or expunged, and one for what it found of the folder
// itself, each with its crawlDetail. The folder's name and ACL snapshot
// were kept by apply, as for any event.
func (w *writer) crawlActs(rec bonnie.Record, b *base) error {
	ev := rec.Event
	cr, err := ev.Crawl()
	if err != nil || ev.MailboxID == "" {
		return nil // unreadable (kept in the log as it came), or a reconcile's verification: nothing happened
	}
	d := crawlDetail{RecordedBy: coverage.ByBackfill, Run: cr.Run}
	if ev.Type == bonnie.Reconcile {
		d.RecordedBy, d.Window = coverage.ByReconcile, cr.Window
	}
	js, _ := json.Marshal(d)
	detail := string(js)
	folder, path, uv := ev.MailboxID, ev.Mailbox.Name, ev.Mailbox.UIDValidity
	seq := 0
	put := func(a act) error {
		seq++
		a.seq, a.folder, a.path = seq, folder, path
		if a.detail == "" {
			a.detail = detail
		}
		return w.insertAct(b, a)
	}
	switch cr.Folder {
	case bonnie.FolderCreated:
		if err := put(act{action: ActCreated}); err != nil {
			return err
		}
	case bonnie.FolderRenamed:
		if cr.OldPath != "" {
			if err := w.folderName(rec, folder, cr.OldPath); err != nil {
				return err
			}
		}
		if err := put(act{action: ActRenamed, fromFolder: folder, fromPath: cr.OldPath}); err != nil {
			return err
		}
	case bonnie.FolderDeleted:
		return put(act{action: ActDeleted})
	case bonnie.FolderRecreated:
		rd := d
		rd.OldUIDValidity = cr.OldUIDValidity
		js, _ := json.Marshal(rd)
		if err := put(act{action: ActRecreated, detail: string(js)}); err != nil {
			return err
		}
	}
	if cr.ACL {
		if err := put(act{action: ActACLChanged}); err != nil {
			return err
		}
	}
	expungedUV := uv
	if cr.OldUIDValidity != 0 && cr.OldUIDValidity != uv {
		expungedUV = cr.OldUIDValidity
	}
	for _, uid := range cr.Expunged {
		key := bonnie.MessageKey(folder, expungedUV, uid)
		var known msgRow
		if err := w.message(key, &known); err != nil {
			return err
		}
		if known.state == "" {
			continue // never indexed: nothing to say it left
		}
		if err := w.exec(`UPDATE messages SET state = ? WHERE msgkey = ?`, bonnie.StateExpunged, key); err != nil {
			return err
		}
		if err := put(act{action: ActExpunged, uid: uid, msgkey: key, messageID: known.messageID}); err != nil {
			return err
		}
	}
	for _, ms := range cr.Messages {
		key := bonnie.MessageKey(folder, uv, ms.UID)
		row := msgRow{messageID: ms.MessageID, folder: folder, uid: ms.UID, digest: ms.Digest, state: bonnie.StatePresent}
		bi := w.bodies[ms.Digest]
		if bi != nil {
			row.subject, row.sender, row.recipients = bi.subject, bi.sender, bi.recipients
			row.messageID = cmpOr(row.messageID, bi.messageID)
		}
		if err := w.putMessage(key, row); err != nil {
			return err
		}
		if bi != nil {
			if err := w.indexText(row, bi); err != nil {
				return err
			}
		}
		action := ActFound
		if ev.Type == bonnie.Reconcile {
			action = ActAppended
		}
		if err := put(act{action: action, uid: ms.UID, msgkey: key, messageID: row.messageID, flags: ms.Flags}); err != nil {
			return err
		}
	}
	for _, ms := range cr.Flags {
		key := bonnie.MessageKey(folder, uv, ms.UID)
		var known msgRow
		if err := w.message(key, &known); err != nil {
			return err
		}
		if err := put(act{action: ActFlagsChanged, uid: ms.UID, msgkey: key, messageID: cmpOr(known.messageID, ms.MessageID),
			flags: ms.Flags}); err != nil {
			return err
		}
	}
	if ev.Type == bonnie.Backfill && cr.Done {
		return put(act{action: ActBackfilled})
	}
	return nil
}

// markCrawled sets RecordedBy and Window on an entry that a crawl
// recorded, from its detail.
func markCrawled(e *Entry) {
	if e.Event != bonnie.Backfill.String() && e.Event != bonnie.Reconcile.String() {
		return
	}
	e.RecordedBy = coverage.ByBackfill
	if e.Event == bonnie.Reconcile.String() {
		e.RecordedBy = coverage.ByReconcile
	}
	var d crawlDetail
	if len(e.Detail) > 0 && json.Unmarshal(e.Detail, &d) == nil {
		e.Window = d.Window
	}
}

// AddGaps sets the timeline's Gaps: what its span crosses in the
// coverage of the folders the message was in. The span runs from the
// first entry to the last one when no copy of the message is left, else
// to the timeline's Now (the message's story goes on). tl is the log's
// coverage (coverage.Read), lg the log.
func (t *MessageTimeline) AddGaps(ctx context.Context, tl *coverage.Timeline, lg coverage.Source) error {
	var folders []string
	open := false
	for _, p := range t.Places {
		folders = append(folders, p.Folder)
		open = open || p.State == bonnie.StatePresent
	}
	for _, e := range t.Entries {
		folders = append(folders, e.Folder)
	}
	var err error
	t.Gaps, err = EntryGaps(ctx, tl, lg, t.Entries, folders, open)
	return err
}

// AddGaps sets the timeline's Gaps: what its span, from its first entry
// (or name) to the timeline's Now, crosses in the folder's coverage.
func (t *FolderTimeline) AddGaps(ctx context.Context, tl *coverage.Timeline, lg coverage.Source) error {
	es := t.Entries
	if len(es) == 0 && len(t.Names) > 0 {
		es = []Entry{{Time: t.Names[0].Since}}
	}
	var err error
	t.Gaps, err = EntryGaps(ctx, tl, lg, es, []string{t.Folder}, true)
	return err
}

// EntryGaps returns what the span of entries crosses in the coverage of
// folders (uniqueids): from the first entry's time (or the start of its
// Window, for what a reconcile found: it happened then) to the last one's,
// or to tl.Now when open. No entries, no span, no gaps.
func EntryGaps(ctx context.Context, tl *coverage.Timeline, lg coverage.Source, entries []Entry, folders []string, open bool) ([]coverage.Crossing, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	from, to := entries[0].Time, entries[0].Time
	for _, e := range entries {
		if e.Time.Before(from) {
			from = e.Time
		}
		if e.Window != nil && !e.Window.From.IsZero() && e.Window.From.Before(from) {
			from = e.Window.From
		}
		if e.Time.After(to) {
			to = e.Time
		}
	}
	if open && tl.Now.After(to) {
		to = tl.Now
	}
	// The span includes its last moment: an entry at the end of a gap
	// (a reconcile's finding) crosses it.
	to = to.Add(time.Nanosecond)
	folders = slices.Compact(slices.Sorted(slices.Values(folders)))
	return tl.Crossings(ctx, lg, folders, from, to)
}
