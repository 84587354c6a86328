package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// scriptedBodies stores scripted messages (by folder/UID) in the body
// store, as the fetchers do at ingest.
type scriptedBodies struct {
	store *blob.Store
	msgs  map[string][]byte
}

func (b scriptedBodies) FetchBodies(_ context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	var out []bonnie.BodyRef
	for _, uid := range ev.UIDs {
		info, err := b.store.Put(b.msgs[fmt.Sprintf("%s/%d", ev.MailboxID, uid)])
		if err != nil {
			return nil, err
		}
		out = append(out, bonnie.BodyRef{UID: uid, Digest: info.Digest, Size: info.Size})
	}
	return out, nil
}

// kolabContact is a Kolab contact object holding a vCard.
func kolabContact(uid, fn, email string) []byte {
	vcf := "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:" + uid + "\r\nFN:" + fn + "\r\nEMAIL:" + email + "\r\nEND:VCARD\r\n"
	return []byte("From: alice@example.org\r\nTo: alice@example.org\r\nSubject: " + uid + "\r\n" +
		"X-Kolab-Type: application/x-vnd.kolab.contact\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nKolab object\r\n" +
		"--b\r\nContent-Type: text/vcard\r\n\r\n" + vcf + "--b--\r\n")
}

func TestObjectRevisions(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	blobDir, _ := archive.Paths(dir)
	store, err := blob.Open(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	lg, err := sqlite.Open(ctx, filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger(), Bodies: scriptedBodies{store, map[string][]byte{
		"contacts/1": kolabContact("c-42", "Jane Gi", "jane.gi@example.org"),
		"contacts/2": kolabContact("c-42", "Jane Doe", "jane.doe@example.org"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	box := func(uid int) map[string]any {
		return map[string]any{"user": "alice", "vnd.cmu.sessionId": "s1", "mailboxID": "contacts",
			"uri": fmt.Sprintf("imap://cyrus.test/user.alice.Contacts;UIDVALIDITY=9/;UID=%d", uid), "uidset": fmt.Sprint(uid)}
	}
	for _, raw := range [][]byte{
		event(t, "Login", h0, map[string]any{"user": "alice", "vnd.cmu.sessionId": "s1", "clientIP": "203.0.113.9", "clientPort": 993}),
		event(t, "MessageAppend", h0.Add(time.Minute), box(1)),
		event(t, "MessageAppend", h0.Add(time.Hour), box(2)),
		event(t, "MessageTrash", h0.Add(time.Hour), box(1)),
		event(t, "MessageExpunge", h0.Add(time.Hour+time.Second), box(1)),
	} {
		if _, _, err := eng.Ingest(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	lg.Close()

	code, out, errs := bonnieCmd(t, nil, "--data", dir, "object", "c-42", "--json")
	if code != 0 {
		t.Fatalf("object: %d %s", code, errs)
	}
	var h discovery.ObjectHistory
	if err := json.Unmarshal([]byte(out), &h); err != nil || len(h.Revisions) != 2 || h.Kind != "application/x-vnd.kolab.contact" {
		t.Fatalf("%v\n%s", err, out)
	}
	if r := h.Revisions[0]; r.Login != "alice" || r.Client != "203.0.113.9:993" || len(r.Ended) != 2 || r.Path != "user.alice.Contacts" {
		t.Errorf("revision 1: %+v", r)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "object", "c-42")
	if code != 0 || !strings.Contains(out, "trashed") || !strings.Contains(out, "203.0.113.9:993") {
		t.Errorf("table: %d\n%s", code, out)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "object", "c-42", "--rev", "1")
	if code != 0 || !strings.HasPrefix(out, "BEGIN:VCARD") || !strings.Contains(out, "FN:Jane Gi") {
		t.Errorf("--rev 1: %d\n%s", code, out)
	}
	for _, args := range [][]string{{"--diff", "1", "2"}, {"--diff", "1,2"}} {
		code, out, errs = bonnieCmd(t, nil, append([]string{"--data", dir, "object", "c-42", "--json"}, args...)...)
		var d discovery.ObjectDiff
		if code != 0 || json.Unmarshal([]byte(out), &d) != nil {
			t.Fatalf("%v: %d %s%s", args, code, out, errs)
		}
		want := []discovery.PropertyChange{{Property: "EMAIL", From: "jane.gi@example.org", To: "jane.doe@example.org"}, {Property: "FN", From: "Jane Gi", To: "Jane Doe"}}
		if d.Format != "vcard" || fmt.Sprint(d.Changes) != fmt.Sprint(want) {
			t.Errorf("%v: %+v", args, d)
		}
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "object", "c-42", "--diff", "1", "2")
	if code != 0 || !strings.Contains(out, "FN") || !strings.Contains(out, "Jane Doe") {
		t.Errorf("diff table: %d\n%s", code, out)
	}
	for _, args := range [][]string{{"nope"}, {"c-42", "--rev", "3"}, {"c-42", "--diff", "1"}, {"c-42", "--rev", "1", "--diff", "1,2"}} {
		if code, _, errs := bonnieCmd(t, nil, append([]string{"--data", dir, "object"}, args...)...); code != 1 || errs == "" {
			t.Errorf("%v: %d %q", args, code, errs)
		}
	}
}
