package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie/store/blob"
)

// Bodies gives a body's exact bytes by SHA-256 (*blob.Store is one).
type Bodies interface {
	Get(digest string) ([]byte, error)
}

// Report says what a writer did.
type Report struct {
	Folders int `json:"folders"` // folders written (Maildir folders; mbox: folders seen; IMAP: target folders)
	// Created counts the folders an IMAP restore had to create.
	Created int `json:"created"`
	// Written counts the messages written this time, Kept those already
	// there from an earlier run (same digest), Updated those already
	// there whose flags were changed.
	Written int `json:"written"`
	Kept    int `json:"kept"`
	Updated int `json:"updated"`
	// Duplicates counts messages skipped because the same body was already
	// restored into the same folder (one file per digest and folder;
	// never for IMAP, which restores every copy).
	Duplicates int `json:"duplicates"`
	// ACLs counts the access rights an IMAP restore set (IMAPOptions.ACLs:
	// one per identifier and folder).
	ACLs int `json:"acls,omitempty"`
	// Missing lists the messages whose body could not be restored.
	Missing []Missing `json:"missing"`
}

// Missing is a message that could not be restored, and why.
type Missing struct {
	Item   Item   `json:"item"`
	Reason string `json:"reason"`
}

// body returns an item's checked bytes, or why it cannot.
func body(b Bodies, it Item) ([]byte, string) {
	if it.Missing != "" {
		return nil, it.Missing
	}
	data, err := b.Get(it.Digest)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return nil, "body sha256 " + it.Digest + " is not in the body store"
	case err != nil:
		return nil, "body sha256 " + it.Digest + ": " + err.Error()
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != it.Digest {
		return nil, "body sha256 " + it.Digest + " is corrupt in the store"
	}
	return data, ""
}

// infoLetters maps IMAP system flags to Maildir info letters.
var infoLetters = map[string]byte{`\Draft`: 'D', `\Flagged`: 'F', `\Answered`: 'R', `\Seen`: 'S', `\Deleted`: 'T'}

// Info returns the Maildir info ("2,FRS") of a set of flags: the letters
// of the system flags, sorted; keywords are not kept.
func Info(flags []string) string {
	var l []byte
	for _, f := range flags {
		if c, ok := infoLetters[f]; ok {
			l = append(l, c)
		}
	}
	slices.Sort(l)
	return "2," + string(slices.Compact(l))
}

// MaildirFolder returns the Maildir++ directory of folder path under root,
// for a restore of mailbox: mailbox itself is root, a folder under it
// root/.Sub.Folder; a folder not under mailbox (a Message-ID restore)
// root/.its.full.name.
func MaildirFolder(root, mailbox, path string) string {
	rel := path
	if mailbox != "" {
		if path == mailbox {
			return root
		}
		if r, ok := strings.CutPrefix(path, mailbox+Separator); ok {
			rel = r
		}
	}
	rel = strings.NewReplacer("/", "%2F", "%", "%25").Replace(rel)
	if rel == "" || rel == "." || rel == ".." {
		rel = "%" + rel
	}
	return filepath.Join(root, "."+rel)
}

// WriteMaildir writes items into a Maildir++ tree at root (see
// MaildirFolder; mailbox is Query.Mailbox): each message as
// cur/<sha256>:2,<info>, with the internal date as its modification time.
// It is idempotent: a message whose digest is already in the folder (cur/
// or new/) is kept, its flags brought to those of the item.
func WriteMaildir(ctx context.Context, items []Item, bodies Bodies, root, mailbox string) (Report, error) {
	var rep Report
	done := map[string]bool{} // dir/digest
	dirs := map[string]map[string]string{}
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		dir := MaildirFolder(root, mailbox, it.Path)
		existing, ok := dirs[dir]
		if !ok {
			var err error
			if existing, err = openMaildir(dir); err != nil {
				return rep, err
			}
			dirs[dir] = existing
			rep.Folders++
		}
		if it.Digest != "" && done[dir+"/"+it.Digest] {
			rep.Duplicates++
			continue
		}
		name := it.Digest + ":" + Info(it.Flags)
		if old, ok := existing[it.Digest]; ok && it.Digest != "" {
			done[dir+"/"+it.Digest] = true
			if old == filepath.Join(dir, "cur", name) {
				rep.Kept++
				continue
			}
			if err := os.Rename(old, filepath.Join(dir, "cur", name)); err != nil {
				return rep, fmt.Errorf("backup: %w", err)
			}
			existing[it.Digest] = filepath.Join(dir, "cur", name)
			rep.Updated++
			continue
		}
		data, why := body(bodies, it)
		if why != "" {
			rep.Missing = append(rep.Missing, Missing{Item: it, Reason: why})
			continue
		}
		tmp := filepath.Join(dir, "tmp", it.Digest)
		if err := writeFile(tmp, data, it.InternalDate); err != nil {
			return rep, err
		}
		final := filepath.Join(dir, "cur", name)
		if err := os.Rename(tmp, final); err != nil {
			return rep, fmt.Errorf("backup: %w", err)
		}
		existing[it.Digest] = final
		done[dir+"/"+it.Digest] = true
		rep.Written++
	}
	return rep, nil
}

// openMaildir creates dir's cur, new and tmp and returns the messages
// already there, by the digest their name starts with.
func openMaildir(dir string) (map[string]string, error) {
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
	}
	have := map[string]string{}
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		for _, e := range ents {
			d, _, _ := strings.Cut(e.Name(), ":")
			if blob.ValidDigest(d) {
				have[d] = filepath.Join(dir, sub, e.Name())
			}
		}
	}
	return have, nil
}

func writeFile(path string, data []byte, mtime time.Time) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && !mtime.IsZero() {
		err = os.Chtimes(path, mtime, mtime)
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// WriteMbox writes items into one mbox file (mboxrd: a "From
// MAILER-DAEMON <internal date>" line before each message, every line
// starting with ">*From " given one more '>', a blank line after each),
// replacing the file atomically, so that running it again gives the same
// file. A body restored twice into the same folder is written once. Flags
// are not written (mbox has no standard place for them without altering
// the message).
func WriteMbox(ctx context.Context, items []Item, bodies Bodies, file string) (Report, error) {
	var rep Report
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp*")
	if err != nil {
		return rep, fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	done := map[string]bool{}
	folders := map[string]bool{}
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if !folders[it.Folder] {
			folders[it.Folder] = true
			rep.Folders++
		}
		if it.Digest != "" && done[it.Folder+"/"+it.Digest] {
			rep.Duplicates++
			continue
		}
		data, why := body(bodies, it)
		if why != "" {
			rep.Missing = append(rep.Missing, Missing{Item: it, Reason: why})
			continue
		}
		done[it.Folder+"/"+it.Digest] = true
		fmt.Fprintf(bw, "From MAILER-DAEMON %s\n", it.InternalDate.UTC().Format("Mon Jan _2 15:04:05 2006"))
		bw.Write(QuoteMboxrd(data))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			bw.WriteByte('\n')
		}
		bw.WriteByte('\n')
		rep.Written++
	}
	if err := bw.Flush(); err != nil {
		return rep, fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return rep, fmt.Errorf("backup: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return rep, fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return rep, fmt.Errorf("backup: %w", err)
	}
	return rep, nil
}

// QuoteMboxrd gives every line (split on LF) that starts with zero or more
// '>' then "From " one more '>'.
func QuoteMboxrd(data []byte) []byte {
	var out bytes.Buffer
	out.Grow(len(data))
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		if bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From ")) {
			out.WriteByte('>')
		}
		out.Write(line)
		data = data[len(line):]
	}
	return out.Bytes()
}
