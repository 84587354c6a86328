// Package backup restores what IMAP folders held at a past moment, from
// the log (which messages, with which flags) and the body store (their
// exact bytes), into a Maildir++ tree, an mbox file or an IMAP server.
//
// Plan computes the restore as a list of Items and touches nothing;
// WriteMaildir, WriteMbox and WriteIMAP write a plan out. Every writer is
// idempotent, so that running a restore again, or after an interruption,
// completes it without writing anything twice: WriteIMAP (APPEND with the
// flags and internal date, into a real server such as Cyrus) does not
// append a message whose SHA-256 the target folder already holds (see its
// documentation for why that key and what it costs).
//
// What a folder held at a time T is read from the log alone:
//
//   - the folders are those whose "path" field, folded up to T, is the
//     mailbox asked for (or under it, with Recursive): a folder renamed or
//     deleted after T is found by the name it had then;
//   - its messages are the Message entities whose "folder" field is the
//     folder's uniqueid and whose "state" folded up to T is "present";
//   - their flags are the flag:* fields folded up to T: the owner's view.
//     Cyrus keeps \Seen per user on a folder shared with others: a read by
//     someone other than the owner sets that reader's \Seen, which the log
//     keeps as the field seen:<user> (see the root package's Ingester), not
//     the owner's flag:\Seen. Query.SeenAs asks for another user's view:
//     \Seen then comes from seen:<that user> and the other flags, which
//     Cyrus shares, stay as they were.
//
// A folder is named as it was named at T in Cyrus's admin namespace,
// decoded ("user.alice.Archiv 2027"), or by its uniqueid (Cyrus's
// mailboxID, which survives renames).
//
// Cost: Plan uses the log's Find and StateAt only (no schema change). It
// lists every folder ever known (two scans of the current state table,
// Find on "state"), folds each one's changes up to T (one StateAt each),
// then for each matching folder finds its messages by the indexed "folder"
// field and folds each message (one StateAt each). So a restore costs
// O(folders + messages ever placed in the restored folders) queries; a
// MessageID query costs one indexed Find plus one StateAt per copy.
package backup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Query says what to restore.
type Query struct {
	// Mailbox is a folder name in Cyrus's admin namespace
	// ("user.alice.Work"), as it was named at At.
	Mailbox string
	// At is the moment to restore; zero means now.
	At time.Time
	// Recursive also restores the folders under Mailbox
	// ("user.alice" -> "user.alice.Work", "user.alice.Work.2026"...).
	Recursive bool
	// MessageID restricts the restore to the messages with this
	// Message-ID ("<...>"); with an empty Mailbox, wherever they were.
	MessageID string
	// SeenAs gives \Seen as this user saw it ("" or the folder's owner:
	// the owner's view, the default). Cyrus keeps \Seen per user on
	// shared folders; the other flags are the same for everyone.
	SeenAs string
}

// Separator is the hierarchy separator of folder names in the log.
const Separator = "."

// Item is one message to restore: where it was at the time asked for and
// what it was.
type Item struct {
	// Folder is the folder's uniqueid, Path its name at the time asked for.
	Folder string `json:"folder"`
	Path   string `json:"path"`
	// Message is the Message entity's id (bonnie.MessageKey).
	Message      string    `json:"message"`
	UID          uint32    `json:"uid"`
	MessageID    string    `json:"messageId,omitempty"`
	Digest       string    `json:"sha256,omitempty"` // SHA-256 hex of the body; "" when never fetched
	Size         int64     `json:"size,omitempty"`
	InternalDate time.Time `json:"internalDate"`
	// Flags are the flags at the time asked for, sorted: the owner's, or
	// with Query.SeenAs that user's \Seen.
	Flags []string `json:"flags"`
	// Missing says why the body cannot be had from the log ("" when it has
	// a digest; the writers add why the store cannot give it).
	Missing string `json:"missing,omitempty"`
}

// Plan lists the messages that Query names as they were at q.At, sorted by
// folder path then UID.
func Plan(ctx context.Context, src bonnie.StateSource, q Query) ([]Item, error) {
	if q.Mailbox == "" && q.MessageID == "" {
		return nil, errors.New("backup: plan: a mailbox or a Message-ID is needed")
	}
	var items []Item
	if q.Mailbox == "" {
		ids, err := src.Find(ctx, bonnie.KindMessage, "messageId", q.MessageID)
		if err != nil {
			return nil, fmt.Errorf("backup: plan: %w", err)
		}
		folders := map[string]Folder{} // folder id -> as it was at At
		for _, id := range ids {
			it, st, ok, err := message(ctx, src, id, q.At)
			if err != nil {
				return nil, err
			}
			if !ok || it.MessageID != q.MessageID {
				continue
			}
			f, seen := folders[it.Folder]
			if !seen {
				fst, err := src.StateAt(ctx, bonnie.KindFolder, it.Folder, q.At)
				if err != nil {
					return nil, fmt.Errorf("backup: plan: folder %s: %w", it.Folder, err)
				}
				f = Folder{ID: it.Folder, Path: fst["path"], Owner: fst["owner"]}
				folders[it.Folder] = f
			}
			it.Path = f.Path
			seenAs(&it, st, f.Owner, q.SeenAs)
			items = append(items, it)
		}
	} else {
		folders, err := Folders(ctx, src, q.Mailbox, q.Recursive, q.At)
		if err != nil {
			return nil, err
		}
		for _, f := range folders {
			ids, err := src.Find(ctx, bonnie.KindMessage, "folder", f.ID)
			if err != nil {
				return nil, fmt.Errorf("backup: plan: messages of %s: %w", f.Path, err)
			}
			for _, id := range ids {
				it, st, ok, err := message(ctx, src, id, q.At)
				if err != nil {
					return nil, err
				}
				if !ok || it.Folder != f.ID || (q.MessageID != "" && it.MessageID != q.MessageID) {
					continue
				}
				it.Path = f.Path
				seenAs(&it, st, f.Owner, q.SeenAs)
				items = append(items, it)
			}
		}
	}
	slices.SortFunc(items, func(a, b Item) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		if a.UID != b.UID {
			if a.UID < b.UID {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Message, b.Message)
	})
	return items, nil
}

// Folder is a folder as it was at some time.
type Folder struct {
	ID    string // uniqueid
	Path  string // name at that time
	Owner string // owner at that time ("" for a shared folder)
}

// Folders returns the folders named mailbox at time at (and those under
// it with recursive), sorted by path. mailbox may also be a folder's
// uniqueid: the folder it names, under the name it had at that time.
// Cost: one Find per possible state and one StateAt per folder ever known.
func Folders(ctx context.Context, src bonnie.StateSource, mailbox string, recursive bool, at time.Time) ([]Folder, error) {
	var ids []string
	for _, st := range []string{bonnie.StatePresent, bonnie.StateDeleted} {
		l, err := src.Find(ctx, bonnie.KindFolder, "state", st)
		if err != nil {
			return nil, fmt.Errorf("backup: folders: %w", err)
		}
		ids = append(ids, l...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	states := make(map[string]map[string]string, len(ids))
	for _, id := range ids {
		st, err := src.StateAt(ctx, bonnie.KindFolder, id, at)
		if err != nil {
			return nil, fmt.Errorf("backup: folder %s: %w", id, err)
		}
		states[id] = st
	}
	if st, ok := states[mailbox]; ok && st["state"] == bonnie.StatePresent && st["path"] != "" {
		mailbox = st["path"] // a uniqueid
	}
	var out []Folder
	for _, id := range ids {
		st := states[id]
		p := st["path"]
		if st["state"] != bonnie.StatePresent || p == "" {
			continue
		}
		if p == mailbox || (recursive && strings.HasPrefix(p, mailbox+Separator)) {
			out = append(out, Folder{ID: id, Path: p, Owner: st["owner"]})
		}
	}
	slices.SortFunc(out, func(a, b Folder) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// FolderACLs returns the access control list each folder had at at, by
// uniqueid, for a restore to give back (IMAPOptions.ACLs), without the
// entry of the folder's owner: the owner of the target folder keeps the
// rights the target server gave them, and a folder restored into another
// user's hierarchy does not give its former owner access there.
func FolderACLs(ctx context.Context, src bonnie.StateSource, folders []string, at time.Time) (map[string]bonnie.ACL, error) {
	out := make(map[string]bonnie.ACL, len(folders))
	for _, id := range folders {
		if _, done := out[id]; done {
			continue
		}
		st, err := src.StateAt(ctx, bonnie.KindFolder, id, at)
		if err != nil {
			return nil, fmt.Errorf("backup: folder %s: %w", id, err)
		}
		owner := pathOwner(st["path"])
		var acl bonnie.ACL
		for k, rights := range st {
			subject, ok := strings.CutPrefix(k, "acl:")
			if !ok || rights == "" || subject == owner {
				continue
			}
			acl = append(acl, bonnie.ACLEntry{Subject: subject, Rights: rights})
		}
		slices.SortFunc(acl, func(a, b bonnie.ACLEntry) int { return strings.Compare(a.Subject, b.Subject) })
		out[id] = acl
	}
	return out, nil
}

// pathOwner is the user whose personal hierarchy holds a folder named in
// the admin namespace ("user.alice.Work": alice), "" for a shared folder.
func pathOwner(path string) string {
	rest, ok := strings.CutPrefix(path, "user"+Separator)
	if !ok {
		return ""
	}
	owner, _, _ := strings.Cut(rest, Separator)
	return owner
}

// message folds message id up to at and returns it with its fields; ok
// is false unless it was present.
func message(ctx context.Context, src bonnie.StateSource, id string, at time.Time) (Item, map[string]string, bool, error) {
	st, err := src.StateAt(ctx, bonnie.KindMessage, id, at)
	if err != nil {
		return Item{}, nil, false, fmt.Errorf("backup: message %s: %w", id, err)
	}
	if st["state"] != bonnie.StatePresent {
		return Item{}, nil, false, nil
	}
	it := Item{
		Folder:    st["folder"],
		Message:   id,
		MessageID: st["messageId"],
		Digest:    st["digest"],
	}
	if v, err := strconv.ParseUint(st["uid"], 10, 32); err == nil {
		it.UID = uint32(v)
	}
	if v, err := strconv.ParseInt(st["size"], 10, 64); err == nil {
		it.Size = v
	}
	if t, err := time.Parse(time.RFC3339Nano, st["internalDate"]); err == nil {
		it.InternalDate = t
	}
	for k, v := range st {
		if f, ok := strings.CutPrefix(k, "flag:"); ok && v != "" {
			it.Flags = append(it.Flags, f)
		}
	}
	slices.Sort(it.Flags)
	if it.Digest == "" {
		it.Missing = "the log has no digest for it: its body was not fetched at ingest"
	}
	return it, st, true, nil
}

// seenFlag is the IMAP \Seen flag.
const seenFlag = `\Seen`

// seenAs replaces the item's \Seen by user's (from the message's fields
// st) unless user is "" or owns the folder; it mirrors where the
// Ingester records \Seen (flag:\Seen for the owner, seen:<user> for
// anyone else). A folder without an owner (shared.*) has only the
// flag:\Seen the log recorded for whoever read it.
func seenAs(it *Item, st map[string]string, owner, user string) {
	if user == "" || owner == "" || user == owner || strings.HasPrefix(owner, user+"@") {
		return
	}
	it.Flags = slices.DeleteFunc(it.Flags, func(f string) bool { return f == seenFlag })
	if st["seen:"+user] != "" {
		it.Flags = append(it.Flags, seenFlag)
		slices.Sort(it.Flags)
	}
}
