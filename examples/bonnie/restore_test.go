package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

type oneBody struct {
	store *blob.Store
	b     []byte
}

func (f oneBody) FetchBodies(_ context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	info, err := f.store.Put(f.b)
	if err != nil {
		return nil, err
	}
	return []bonnie.BodyRef{{UID: ev.UIDs[0], Digest: info.Digest, Size: info.Size}}, nil
}

// restoreData builds a data directory whose log has alice's Work with one
// message appended on 2026-01-02 and expunged on 2026-01-03.
func restoreData(t *testing.T, msg []byte) string {
	t.Helper()
	ctx := context.Background()
	data := t.TempDir()
	lg, err := sqlite.Open(ctx, filepath.Join(data, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := blob.Open(filepath.Join(data, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Bodies: oneBody{store, msg}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{
		`{"event":"MailboxCreate","timestamp":"2026-01-01T12:00:00.000Z","mailboxID":"w1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","user":"alice"}`,
		`{"event":"MessageAppend","timestamp":"2026-01-02T12:00:00.000Z","mailboxID":"w1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7/;UID=1","user":"alice"}`,
		`{"event":"MessageExpunge","timestamp":"2026-01-03T12:00:00.000Z","mailboxID":"w1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","uidset":"1","user":"alice"}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(e), "test"); err != nil {
			t.Fatal(err)
		}
	}
	lg.Close()
	return data
}

func TestRestoreCommand(t *testing.T) {
	ctx := context.Background()
	data := restoreData(t, []byte("Subject: hi\r\n\r\nFrom me.\r\n"))
	mbox := filepath.Join(t.TempDir(), "out.mbox")
	var out, errb bytes.Buffer
	if rc := run(ctx, []string{"--data", data, "restore", "--mailbox", "user.alice", "--at", "2026-01-02T13:00:00Z", "--to", "mbox:" + mbox}, nil, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s %s", rc, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "1 written") {
		t.Errorf("output %q", out.String())
	}
	got, _ := os.ReadFile(mbox)
	if !bytes.Contains(got, []byte("\r\n\r\n>From me.\r\n")) {
		t.Errorf("mbox %q", got)
	}
	dir := t.TempDir()
	out.Reset()
	if rc := run(ctx, []string{"--data", data, "restore", "--mailbox", "user.alice.Work", "--at", "2026-01-04", "--to", "maildir:" + dir}, nil, &out, &errb); rc != 0 || !strings.Contains(out.String(), "0 messages") {
		t.Errorf("after the expunge: rc %d, %q", rc, out.String())
	}
	// By uniqueid: the folder is the Maildir's root, as by its name.
	byID := t.TempDir()
	out.Reset()
	if rc := run(ctx, []string{"--data", data, "restore", "--mailbox", "w1", "--at", "2026-01-02T13:00:00Z", "--to", "maildir:" + byID}, nil, &out, &errb); rc != 0 {
		t.Errorf("by uniqueid: rc %d, %q", rc, out.String())
	}
	if ents, _ := os.ReadDir(filepath.Join(byID, "cur")); len(ents) != 1 {
		t.Errorf("by uniqueid: %d messages in %s/cur, want 1", len(ents), byID)
	}
	if rc := run(ctx, []string{"--data", data, "restore", "--mailbox", "x", "--to", "tar:x"}, nil, &out, &errb); rc != 1 {
		t.Error("bad --to accepted")
	}
}

// TestRestoreCommandIMAP restores into go-imap's in-memory server as
// alice: the message APPENDed with its internal date, once however often
// the command runs; and the IMAP flags are checked.
func TestRestoreCommandIMAP(t *testing.T) {
	ctx := context.Background()
	msg := []byte("Subject: hi\r\n\r\nFrom me.\r\n")
	data := restoreData(t, msg)
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
	defer srv.Close()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--data", data, "restore", "--mailbox", "user.alice.Work", "--at", "2026-01-02T13:00:00Z",
		"--to", "imap://" + ln.Addr().String(), "--user", "alice", "--password-file", pw}
	for _, want := range []string{"1 written, 0 already there", "0 written, 1 already there"} {
		var out, errb bytes.Buffer
		if rc := run(ctx, args, nil, &out, &errb); rc != 0 || !strings.Contains(out.String(), want) {
			t.Errorf("rc %d, %q %q; want %q", rc, out.String(), errb.String(), want)
		}
	}
	c, err := imapclient.DialInsecure(ln.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "pw").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX/Work", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("INBOX/Work: %v %+v", err, sel)
	}
	section := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{InternalDate: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatal(err)
	}
	if !bytes.Equal(msgs[0].FindBodySection(section), msg) {
		t.Errorf("body %q", msgs[0].FindBodySection(section))
	}

	for _, bad := range [][]string{
		{"--to", "imap://127.0.0.1:1"},                                             // no --user
		{"--to", "imap://127.0.0.1:1/INBOX", "--user", "a", "--password-file", pw}, // a path
		{"--to", "maildir:" + t.TempDir(), "--into", "x"},                          // --into without IMAP
	} {
		var out, errb bytes.Buffer
		if rc := run(ctx, append([]string{"--data", data, "restore", "--mailbox", "user.alice.Work"}, bad...), nil, &out, &errb); rc == 0 {
			t.Errorf("%q accepted", bad)
		}
	}
}
