package imap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"

	"github.com/bonnie-archive/bonnie"
)

// Progress is what a crawl has done so far; a Progress callback gets it
// after every recorded chunk and at the end.
type Progress struct {
	Folders, FoldersDone int
	// Messages is how many messages the selected folders hold (LIST
	// STATUS), MessagesDone how many of them are in the log now (those a
	// resumed backfill found already done included), Fetched how many
	// this run read, Bytes their body bytes.
	Messages, MessagesDone int64
	Fetched, Bytes         int64
	Events                 int
	Started                time.Time
	// Folder is the folder being walked.
	Folder string
	// Skipped are the folders that could not be read, with why (no
	// right: a shared folder the admin may not read).
	Skipped map[string]string
}

// Rate is the messages fetched per second so far.
func (p Progress) Rate(now time.Time) float64 {
	if d := now.Sub(p.Started).Seconds(); d > 0 {
		return float64(p.Fetched) / d
	}
	return 0
}

// Remaining estimates the time left at the current rate (0 if unknown).
func (p Progress) Remaining(now time.Time) time.Duration {
	r := p.Rate(now)
	left := p.Messages - p.MessagesDone
	if r <= 0 || left <= 0 {
		return 0
	}
	return time.Duration(float64(left) / r * float64(time.Second))
}

// Backfill brings the log up to the present state of every selected
// folder: its uniqueid, name, ACL and UIDVALIDITY, and each message's UID,
// flags, internal date, size, Message-ID and body, recorded as
// vnd.bonnie.Backfill events (see bonnie.Crawl), a chunk of messages at a
// time, through rec.
//
// It resumes: the log (state) keeps, per folder, the highest UID a
// backfill recorded under the current UIDVALIDITY (bonnie.FieldBackfillUID,
// written in the same transaction as the chunk), and a folder is walked
// from the UID after it. An interrupted backfill (Ctrl-C, kill -9) run
// again records nothing twice. A folder whose UIDVALIDITY changed is
// walked again from the start, and the messages the log still holds under
// the old UIDVALIDITY are recorded as expunged.
func (c *Crawler) Backfill(ctx context.Context, state bonnie.StateSource, rec Recorder, progress func(Progress)) (Progress, error) {
	p := Progress{Started: c.o.Now()}
	if progress == nil {
		progress = func(Progress) {}
	}
	folders, err := c.Folders(ctx)
	if err != nil {
		return p, err
	}
	p.Folders = len(folders)
	for _, f := range folders {
		p.Messages += int64(f.Messages)
	}
	run := "backfill-" + uuid.Must(uuid.NewV7()).String()
	progress(p)
	for _, f := range folders {
		p.Folder = f.Name
		if err := c.backfillFolder(ctx, state, rec, run, f, &p, progress); err != nil {
			return p, err
		}
		p.FoldersDone++
		progress(p)
	}
	p.Folder = ""
	return p, nil
}

func (c *Crawler) backfillFolder(ctx context.Context, state bonnie.StateSource, rec Recorder, run string, f Folder, p *Progress, progress func(Progress)) error {
	known, err := state.StateAt(ctx, bonnie.KindFolder, f.ID, time.Time{})
	if err != nil {
		return fmt.Errorf("imap: log state of %s: %w", f.Name, err)
	}
	s, who, err := c.sessionFor(ctx, f)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.drop(who) })
	defer stop()
	sel, err := examine(s, f)
	if err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			// Refused for this folder only: say so, go on with the others.
			c.log.Warn("folder not readable; skipped", "folder", f.Name, "err", err)
			if p.Skipped == nil {
				p.Skipped = map[string]string{}
			}
			p.Skipped[f.Name] = err.Error()
			return nil
		}
		c.drop(who)
		return err
	}
	// The walk covers the folder as the session opened it: UIDVALIDITY
	// and HIGHESTMODSEQ from the EXAMINE, so that a change made while we
	// walk shows as a later HIGHESTMODSEQ to the next reconcile.
	f.UIDValidity, f.UIDNext, f.HighestModseq, f.Messages = sel.UIDValidity, uint32(sel.UIDNext), sel.HighestModSeq, sel.NumMessages
	cursor := uint32(0)
	first := &bonnie.Crawl{Run: run}
	if v := known["uidValidity"]; v != "" && v != strconv.FormatUint(uint64(f.UIDValidity), 10) {
		old, _ := strconv.ParseUint(v, 10, 32)
		gone, err := presentUIDs(ctx, state, f.ID, uint32(old))
		if err != nil {
			return err
		}
		first.Folder, first.OldUIDValidity = bonnie.FolderRecreated, uint32(old)
		for uid := range gone {
			first.Expunged = append(first.Expunged, uid)
		}
		slices.Sort(first.Expunged)
	} else if v := known[bonnie.FieldBackfillUID]; v != "" {
		n, _ := strconv.ParseUint(v, 10, 32)
		cursor = uint32(n)
	}
	// Past one event's worth, the old messages go in events of their own
	// before the walk.
	for len(first.Expunged) > expungedPerEvent {
		cr := &bonnie.Crawl{Run: run, Folder: first.Folder, OldUIDValidity: first.OldUIDValidity, Expunged: first.Expunged[:expungedPerEvent]}
		if err := c.record(ctx, rec, bonnie.Backfill, f, cr, p); err != nil {
			return err
		}
		first.Expunged = first.Expunged[expungedPerEvent:]
	}
	uids, err := searchUIDs(s, cursor+1)
	if err != nil {
		c.drop(who)
		return fmt.Errorf("imap: UID SEARCH %s: %w", f.Name, err)
	}
	p.MessagesDone += max(int64(f.Messages)-int64(len(uids)), 0)
	if len(uids) == 0 {
		if known[bonnie.FieldBackfilled] != "" && first.Folder == "" && known["state"] == bonnie.StatePresent && known["path"] == f.Name {
			return nil // walked before, nothing new
		}
		first.LastUID, first.Done = cursor, true
		return c.record(ctx, rec, bonnie.Backfill, f, first, p)
	}
	for i := 0; i < len(uids); i += c.o.Chunk {
		chunk := uids[i:min(i+c.o.Chunk, len(uids))]
		msgs, n, err := c.fetchMessages(s, chunk)
		if err != nil {
			c.drop(who)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("imap: UID FETCH %s: %w", f.Name, err)
		}
		cr := &bonnie.Crawl{Run: run, Messages: msgs, LastUID: chunk[len(chunk)-1], Done: i+c.o.Chunk >= len(uids)}
		if i == 0 {
			cr.Folder, cr.OldUIDValidity, cr.Expunged = first.Folder, first.OldUIDValidity, first.Expunged
		}
		if err := c.record(ctx, rec, bonnie.Backfill, f, cr, p); err != nil {
			return err
		}
		p.Fetched += int64(len(msgs))
		p.MessagesDone += int64(len(chunk))
		p.Bytes += n
		progress(*p)
	}
	return nil
}

// record encodes and records one event.
func (c *Crawler) record(ctx context.Context, rec Recorder, t bonnie.EventType, f Folder, cr *bonnie.Crawl, p *Progress) error {
	raw, err := c.eventJSON(t, f, c.o.Now(), cr)
	if err != nil {
		return err
	}
	if err := rec(ctx, raw); err != nil {
		return fmt.Errorf("imap: record %s of %s: %w", t, f.Name, err)
	}
	if p != nil {
		p.Events++
	}
	return nil
}

// presentUIDs returns the UIDs (under uidValidity) of the messages the
// log holds as present in folder id, with their flags.
func presentUIDs(ctx context.Context, state bonnie.StateSource, id string, uidValidity uint32) (map[uint32][]string, error) {
	ids, err := state.Find(ctx, bonnie.KindMessage, "folder", id)
	if err != nil {
		return nil, fmt.Errorf("imap: messages of %s in the log: %w", id, err)
	}
	prefix := id + "/" + strconv.FormatUint(uint64(uidValidity), 10) + "/"
	out := map[uint32][]string{}
	for _, mid := range ids {
		if len(mid) <= len(prefix) || mid[:len(prefix)] != prefix {
			continue
		}
		st, err := state.StateAt(ctx, bonnie.KindMessage, mid, time.Time{})
		if err != nil {
			return nil, fmt.Errorf("imap: message %s in the log: %w", mid, err)
		}
		if st["state"] != bonnie.StatePresent || st["folder"] != id {
			continue
		}
		uid, err := strconv.ParseUint(mid[len(prefix):], 10, 32)
		if err != nil {
			continue
		}
		flags := []string{}
		for k, v := range st {
			if name, ok := strings.CutPrefix(k, "flag:"); ok && v != "" {
				flags = append(flags, name)
			}
		}
		slices.Sort(flags)
		out[uint32(uid)] = flags
	}
	return out, nil
}
