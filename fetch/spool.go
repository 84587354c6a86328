package fetch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Spool reads message files straight from Cyrus's partitions. It needs
// to run on the Cyrus machine with read access to the spool (Cyrus
// writes its files 0600 as user cyrus, with umask 077: run as root or as
// cyrus, or give Bonnie's user a default ACL on the partitions).
//
// Layout assumed, as observed on Cyrus 3.6.1:
//
//	PARTITION/uuid/X/Y/MAILBOXID/UID.
//
// where PARTITION is the value of a partition-NAME (or archivepartition-
// NAME) setting of imapd.conf, MAILBOXID the folder's uniqueid (the
// event's mailboxID), X and Y its first two characters, and the file of
// UID 42 is named "42." with the exact bytes IMAP serves as BODY[]. Its
// modification time is the message's internal date. Folders created by
// Cyrus before 3.x (mailbox_legacy_dirs) live under their name instead;
// with Legacy set Spool also tries PARTITION/user/alice/Work/UID. for
// "user.alice.Work" (hashimapspool and fulldirhash off, no virtual
// domains, ASCII names only). Anything else: use IMAP (Chain).
//
// A message expunged but not yet removed from disk (Cyrus's default
// delayed expunge) is still found.
type Spool struct {
	// Partitions are the partition directories, searched in order.
	Partitions []string
	// Legacy also tries the pre-3.x name-based layout.
	Legacy bool
	Store  *blob.Store
}

// String describes the fetcher.
func (s *Spool) String() string { return "spool " + strings.Join(s.Partitions, ",") }

// FetchBodies implements bonnie.BodyFetcher.
func (s *Spool) FetchBodies(ctx context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	if s.Store == nil || len(s.Partitions) == 0 {
		return nil, errors.New("spool fetcher: no store or no partitions")
	}
	refs := make([]bonnie.BodyRef, len(ev.UIDs))
	for i, uid := range ev.UIDs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ref, err := s.one(ev, uid)
		if err != nil {
			return nil, err
		}
		refs[i] = ref
	}
	return refs, nil
}

// candidates returns the paths where the file of uid may be.
func (s *Spool) candidates(ev *bonnie.Event, uid uint32) []string {
	name := strconv.FormatUint(uint64(uid), 10) + "."
	var out []string
	id := ev.MailboxID
	if len(id) >= 2 && !strings.ContainsAny(id, "/\\.") {
		for _, p := range s.Partitions {
			out = append(out, filepath.Join(p, "uuid", id[:1], id[1:2], id, name))
		}
	}
	if s.Legacy && ev.Mailbox.Name != "" && !strings.Contains(ev.Mailbox.Name, "/") && !strings.Contains(ev.Mailbox.Name, "..") {
		rel := filepath.FromSlash(strings.ReplaceAll(ev.Mailbox.Name, ".", "/"))
		for _, p := range s.Partitions {
			out = append(out, filepath.Join(p, rel, name))
		}
	}
	return out
}

// one stores the body of one UID. Only a failure to store (the body
// store) is an error; a file that is not there is the message's Error.
func (s *Spool) one(ev *bonnie.Event, uid uint32) (bonnie.BodyRef, error) {
	paths := s.candidates(ev, uid)
	if len(paths) == 0 {
		return bonnie.BodyRef{UID: uid, Error: "no spool path for this folder"}, nil
	}
	var problems []string
	for _, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			f.Close()
			problems = append(problems, p+": not a regular file")
			continue
		}
		info, err := s.Store.PutReader(f)
		f.Close()
		if err != nil {
			return bonnie.BodyRef{}, fmt.Errorf("spool %s: %w", p, err)
		}
		if info.Size != fi.Size() {
			// Cyrus never rewrites a message file; a size that changed
			// while we read it is not the message.
			problems = append(problems, fmt.Sprintf("%s changed while read (%d bytes, now %d)", p, fi.Size(), info.Size))
			continue
		}
		return bonnie.BodyRef{UID: uid, Digest: info.Digest, Size: info.Size, InternalDate: fi.ModTime().UTC()}, nil
	}
	if len(problems) == 0 {
		return bonnie.BodyRef{UID: uid, Error: fmt.Sprintf("UID %d not in the spool (looked in %s)", uid, strings.Join(paths, ", "))}, nil
	}
	return bonnie.BodyRef{UID: uid, Error: strings.Join(problems, "; ")}, nil
}

// Chain asks each fetcher in turn, the next one only for the UIDs the
// previous ones could not get.
type Chain []bonnie.BodyFetcher

// FetchBodies implements bonnie.BodyFetcher.
func (ch Chain) FetchBodies(ctx context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	refs := make([]bonnie.BodyRef, len(ev.UIDs))
	for i, uid := range ev.UIDs {
		refs[i] = bonnie.BodyRef{UID: uid, Error: "no fetcher"}
	}
	var errs []error
	for _, f := range ch {
		var todo []int
		for i, r := range refs {
			if r.Digest == "" {
				todo = append(todo, i)
			}
		}
		if len(todo) == 0 {
			break
		}
		sub := *ev
		sub.UIDs = make([]uint32, len(todo))
		for j, i := range todo {
			sub.UIDs[j] = ev.UIDs[i]
		}
		got, err := f.FetchBodies(ctx, &sub)
		if err == nil && len(got) != len(todo) {
			err = fmt.Errorf("%v returned %d bodies for %d UIDs", f, len(got), len(todo))
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for j, i := range todo {
			if got[j].Digest != "" || refs[i].Error == "no fetcher" {
				refs[i] = got[j]
			} else {
				refs[i].Error += "; " + got[j].Error
			}
		}
	}
	if len(errs) == len(ch) && len(ch) > 0 {
		return nil, errors.Join(errs...)
	}
	for i := range refs {
		if refs[i].Digest == "" && len(errs) > 0 {
			refs[i].Error += "; " + errors.Join(errs...).Error()
		}
	}
	return refs, nil
}
