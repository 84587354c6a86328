package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

func TestRestoreCommand(t *testing.T) {
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
	msg := []byte("Subject: hi\r\n\r\nFrom me.\r\n")
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
	if rc := run(ctx, []string{"--data", data, "restore", "--mailbox", "x", "--to", "tar:x"}, nil, &out, &errb); rc != 1 {
		t.Error("bad --to accepted")
	}
}
