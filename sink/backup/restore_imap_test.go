package backup_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/bonnie-archive/bonnie/sink/backup"
)

// memIMAP starts go-imap's in-memory server on loopback with user alice
// (hierarchy separator "/") and returns its address.
func memIMAP(t *testing.T) string {
	t.Helper()
	mem := imapmemserver.New()
	u := imapmemserver.NewUser("alice", "pw")
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}},
		InsecureAuth: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// folderView is what a folder on the server holds: "sha256-prefix flags
// internal-date" per message, sorted.
func folderView(t *testing.T, addr, mailbox string) []string {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "pw").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("SELECT %s: %v", mailbox, err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	all := imap.SeqSet{}
	all.AddRange(1, 0)
	msgs, err := c.Fetch(all, &imap.FetchOptions{Flags: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		sum := sha256.Sum256(m.FindBodySection(&imap.FetchItemBodySection{Peek: true}))
		var fl []string
		for _, f := range m.Flags {
			if !strings.EqualFold(string(f), `\Recent`) {
				fl = append(fl, string(f))
			}
		}
		slices.Sort(fl)
		out = append(out, fmt.Sprintf("%s %s %s", hex.EncodeToString(sum[:4]), strings.Join(fl, ","), m.InternalDate.UTC().Format(time.RFC3339)))
	}
	slices.Sort(out)
	return out
}

// planView is folderView's line for each item of a plan with a body.
func planView(items []backup.Item) map[string][]string {
	out := map[string][]string{}
	for _, it := range items {
		if it.Digest == "" {
			continue
		}
		fl := slices.Clone(it.Flags)
		slices.Sort(fl)
		out[it.Path] = append(out[it.Path], fmt.Sprintf("%s %s %s", it.Digest[:8], strings.Join(fl, ","), it.InternalDate.UTC().Format(time.RFC3339)))
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

func TestTargetName(t *testing.T) {
	for _, c := range []struct{ mailbox, into, path, want string }{
		{"user.alice", "", "user.alice.Work", "user.alice.Work"},
		{"user.alice", "user.bob.R", "user.alice", "user.bob.R"},
		{"user.alice", "user.bob.R", "user.alice.Work.2026", "user.bob.R.Work.2026"},
		{"", "user.bob.R", "user.alice.Work", "user.bob.R"},
		{"user.alice.Work", "INBOX.R", "user.alice.Other", "INBOX.R"},
	} {
		if got := backup.TargetName(c.mailbox, c.into, c.path); got != c.want {
			t.Errorf("TargetName(%q, %q, %q) = %q, want %q", c.mailbox, c.into, c.path, got, c.want)
		}
	}
}

// TestWriteIMAP restores into go-imap's in-memory server (a "/"
// separator, the user's own namespace): bodies, flags and dates as
// planned, the body never fetched reported missing, a re-run keeps
// everything, a restore of another moment only brings flags back, and an
// interrupted restore completes on a re-run without duplicates.
func TestWriteIMAP(t *testing.T) {
	ctx := context.Background()
	f := setup(t)
	addr := memIMAP(t)
	opts := backup.IMAPOptions{Addr: addr, User: "alice", Password: "pw", Mailbox: "user.alice"}
	items := plan(t, f, backup.Query{Mailbox: "user.alice", Recursive: true, At: day(3, 10)})
	want := planView(items)

	rep, err := backup.WriteIMAP(ctx, items, f.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Written != 6 || rep.Kept != 0 || rep.Created != 1 || len(rep.Missing) != 1 || rep.Folders != 2 {
		t.Errorf("first run: %+v", rep)
	}
	check := func(mailbox, path string) {
		t.Helper()
		if got := folderView(t, addr, mailbox); !slices.Equal(got, want[path]) {
			t.Errorf("%s:\n got  %q\n want %q", mailbox, got, want[path])
		}
	}
	check("INBOX", "user.alice")
	check("INBOX/Work", "user.alice.Work")

	rep, err = backup.WriteIMAP(ctx, items, f.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Written != 0 || rep.Kept != 6 || rep.Updated != 0 || rep.Created != 0 {
		t.Errorf("re-run: %+v", rep)
	}
	check("INBOX", "user.alice")

	// An earlier moment: message 2 was \Seen too; nothing is appended.
	earlier := plan(t, f, backup.Query{Mailbox: "user.alice", Recursive: true, At: day(2, 10)})
	rep, err = backup.WriteIMAP(ctx, earlier, f.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Written != 0 || rep.Updated != 1 || rep.Kept != 5 {
		t.Errorf("earlier moment: %+v", rep)
	}
	want = planView(earlier)
	check("INBOX", "user.alice")

	// Interrupted after two messages, then run again: complete, once each.
	into := opts
	into.Into = "INBOX.Restored"
	cctx, cancel := context.WithCancel(ctx)
	into.Progress = func(done, _ int) {
		if done == 2 {
			cancel()
		}
	}
	into.Window = 1
	rep, err = backup.WriteIMAP(cctx, items, f.store, into)
	if !errors.Is(err, context.Canceled) || rep.Written != 2 {
		t.Fatalf("interrupted: %+v, %v", rep, err)
	}
	into.Progress = nil
	rep, err = backup.WriteIMAP(ctx, items, f.store, into)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Written != 4 || rep.Kept != 2 {
		t.Errorf("resumed: %+v", rep)
	}
	want = planView(items)
	check("INBOX/Restored", "user.alice")
	check("INBOX/Restored/Work", "user.alice.Work")

	// Two copies of one body in a folder are two messages, once.
	two := []backup.Item{items[0], items[0]}
	two[1].UID++
	into.Into = "INBOX.Twice"
	for run, wantWritten := range []int{2, 0} {
		rep, err = backup.WriteIMAP(ctx, two, f.store, into)
		if err != nil || rep.Written != wantWritten || rep.Kept != 2-wantWritten {
			t.Errorf("copies, run %d: %+v %v", run, rep, err)
		}
	}
	if got := folderView(t, addr, "INBOX/Twice"); len(got) != 2 {
		t.Errorf("copies: %q", got)
	}
}
