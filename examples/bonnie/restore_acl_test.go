package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// aclData builds a data directory whose log has alice's Work, shared with
// bob (lr) and the group staff (lrs) on January 2nd, bob's rights revoked
// on January 4th, and one message.
func aclData(t *testing.T, msg []byte) string {
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
		`{"event":"MailboxCreate","timestamp":"2026-01-01T12:00:00.000Z","mailboxID":"w1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","user":"alice","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\t"}`,
		`{"event":"MessageAppend","timestamp":"2026-01-01T13:00:00.000Z","mailboxID":"w1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7/;UID=1","user":"alice"}`,
		`{"event":"AclChange","timestamp":"2026-01-02T12:00:00.000Z","mailboxID":"w1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","user":"alice","aclSubject":"bob","aclRights":"lr","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\tbob\tlr\t"}`,
		`{"event":"AclChange","timestamp":"2026-01-02T12:01:00.000Z","mailboxID":"w1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","user":"alice","aclSubject":"group:staff","aclRights":"lrs","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\tbob\tlr\tgroup:staff\tlrs\t"}`,
		`{"event":"AclChange","timestamp":"2026-01-04T12:00:00.000Z","mailboxID":"w1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","user":"alice","aclSubject":"bob","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\tgroup:staff\tlrs\t"}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(e), "test"); err != nil {
			t.Fatal(err)
		}
	}
	lg.Close()
	return data
}

// folderACL reads a folder's ACL from Cyrus as alice.
func folderACL(t *testing.T, s *cyrustest.Server, mailbox string) map[string]string {
	t.Helper()
	c, err := imapclient.DialInsecure(s.IMAPAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	defer func() { c.Logout().Wait() }()
	d, err := c.GetACL(mailbox).Wait()
	if err != nil {
		t.Fatalf("GETACL %s: %v", mailbox, err)
	}
	out := map[string]string{}
	for id, rights := range d.Rights {
		out[string(id)] = string(rights)
	}
	return out
}

// TestRestoreACLIntoCyrus: restore --acl gives the restored folder, in a
// real Cyrus, the rights others had on the source folder at --at (bob's
// before his revocation, not after), leaves the owner's rights to the
// target, and without --acl sets none.
func TestRestoreACLIntoCyrus(t *testing.T) {
	ctx := context.Background()
	s := cyrustest.Start(t, cyrustest.Options{Users: map[string]string{"alice": "alice-pw"}})
	data := aclData(t, []byte("Subject: shared\r\n\r\nFor the team.\r\n"))
	pw := writeFile(t, "pw", "alice-pw\n")
	restore := func(at, into string, acl bool) string {
		t.Helper()
		args := []string{"--data", data, "restore", "--mailbox", "user.alice.Work", "--at", at,
			"--to", "imap://" + s.IMAPAddr(), "--user", "alice", "--password-file", pw, "--into", into}
		if acl {
			args = append(args, "--acl")
		}
		var out, errb bytes.Buffer
		if rc := run(ctx, args, nil, &out, &errb); rc != 0 {
			t.Fatalf("restore %v: rc %d: %s %s", args, rc, out.String(), errb.String())
		}
		return out.String()
	}
	out := restore("2026-01-03T00:00:00Z", "user.alice.Shared", true)
	if !strings.Contains(out, "1 written") || !strings.Contains(out, "access rights set: 2") {
		t.Errorf("restore --acl: %q", out)
	}
	acl := folderACL(t, s, "INBOX.Shared")
	if acl["bob"] != "lr" || acl["group:staff"] != "lrs" || !strings.Contains(acl["alice"], "a") {
		t.Errorf("ACL of the folder restored as of Jan 3: %v", acl)
	}
	// As of January 5th bob had no rights any more: none given.
	restore("2026-01-05T00:00:00Z", "user.alice.Later", true)
	if acl := folderACL(t, s, "INBOX.Later"); acl["bob"] != "" || acl["group:staff"] != "lrs" {
		t.Errorf("ACL of the folder restored as of Jan 5: %v", acl)
	}
	// Without --acl: the target's default rights only.
	if out := restore("2026-01-03T00:00:00Z", "user.alice.Plain", false); strings.Contains(out, "access rights") {
		t.Errorf("restore without --acl: %q", out)
	}
	if acl := folderACL(t, s, "INBOX.Plain"); acl["bob"] != "" || acl["group:staff"] != "" {
		t.Errorf("ACL without --acl: %v", acl)
	}
	// --acl needs an IMAP target.
	var o, e bytes.Buffer
	if rc := run(ctx, []string{"--data", data, "restore", "--mailbox", "user.alice.Work", "--to", "mbox:" + filepath.Join(t.TempDir(), "x"), "--acl"}, nil, &o, &e); rc == 0 || !strings.Contains(e.String()+o.String(), "--acl is for an imap:// target") {
		t.Errorf("--acl with mbox: rc %d %q %q", rc, o.String(), e.String())
	}
}
