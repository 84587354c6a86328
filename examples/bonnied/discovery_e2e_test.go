package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/sink/discovery"
)

// discoveryIdentities is the directory of the scripted day: bob and carol
// are in group users. (Cyrus, with its default auth_mech unix, accepts
// an ACL identifier group:NAME only for a group of the system; "users"
// is in every Debian's /etc/group. Who is in it is the directory's
// answer, captured at event time.)
const discoveryIdentities = `users:
  - {id: id-alice, login: alice@example.org, addresses: [alice@example.org]}
  - {id: id-bob, login: bob@example.org, addresses: [bob@example.org]}
  - {id: id-carol, login: carol@example.org, addresses: [carol@example.org]}
groups:
  - {id: g-users, name: users, members: [bob@example.org, carol@example.org]}
`

// kolabAppointment is a Kolab event object: Subject is its UID, the
// iCalendar is an attachment.
func kolabAppointment(uid, summary, location string) string {
	ics := "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bonnie e2e//EN\r\nBEGIN:VEVENT\r\nUID:" + uid +
		"\r\nDTSTAMP:20261128T090000Z\r\nDTSTART:20261201T100000Z\r\nSUMMARY:" + summary + "\r\nLOCATION:" + location +
		"\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
	return "From: alice@example.org\r\nTo: alice@example.org\r\nSubject: " + uid + "\r\n" +
		"Message-ID: <" + strings.ReplaceAll(summary, " ", "-") + "." + uid + "@bonnie.test>\r\n" +
		"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nX-Kolab-Type: application/x-vnd.kolab.event\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"kolab\"\r\n\r\n--kolab\r\nContent-Type: text/plain\r\n\r\n" +
		"This is a Kolab groupware object.\r\n--kolab\r\nContent-Type: text/calendar; charset=utf-8\r\n" +
		"Content-Disposition: attachment; filename=\"kolab.ics\"\r\n\r\n" + ics + "--kolab--\r\n"
}

// TestDiscoveryScriptedDay drives a real Cyrus through a working day with
// bonnied running the archive and discovery sinks (and a directory file
// for identities and groups), then asks the bonnie command line: the
// timeline of a message moved into a shared folder, the folder's
// history, who could read it while group users was granted, what bob
// could read then, the revisions and property diff of an edited Kolab
// appointment, a full-text search, and the queries recorded in the log.
func TestDiscoveryScriptedDay(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	sock := cyrustest.SocketPath(t, "notify.sock")
	s := startCyrus(t, cyrustest.Options{
		Users:        map[string]string{"alice": "alice-pw", "bob": "bob-pw"},
		NotifySocket: sock,
	})
	data := t.TempDir()
	secrets := t.TempDir()
	adminPW := filepath.Join(secrets, "admin.pw")
	ids := filepath.Join(secrets, "identities.yaml")
	if err := os.WriteFile(adminPW, []byte(cyrustest.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ids, []byte(discoveryIdentities), 0o600); err != nil {
		t.Fatal(err)
	}
	lv := newLogView(data)
	d := startDaemon(t, "bonnied", daemonConfig{data: data, datagram: sock, extra: []string{
		"--imap", s.QuietIMAPAddr(), "--imap-user", cyrustest.AdminUser, "--imap-password-file", adminPW,
		"--identity-file", ids, "--default-domain", "example.org", "--sinks", "archive,discovery",
	}}, lv)

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	alice, aliceAddr := dialIMAP(t, s, "alice")
	for _, mb := range []string{"INBOX.Shared", "INBOX.Calendar"} {
		must("CREATE "+mb, alice.Create(mb, nil).Wait())
	}
	must("SETACL", alice.SetACL("INBOX.Shared", "group:users", imap.RightModificationReplace, imap.RightSet("lrs")).Wait())
	_, err := appendMessage(alice, "INBOX", testMessage("<report@bonnie.test>", "Quarterly report"), nil)
	must("APPEND report", err)
	s.LMTPDeliver(t, "dave@example.org", []string{"alice"}, []byte(
		"From: Dave <dave@example.org>\r\nTo: alice@example.org\r\nSubject: Lunch\r\nMessage-ID: <lunch@bonnie.test>\r\n\r\n"+
			"Shall we meet for lunch at the zeppelin museum?\r\n"))
	_, err = alice.Select("INBOX", nil).Wait()
	must("SELECT INBOX", err)
	_, err = alice.Fetch(imap.UIDSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	must("FETCH 1 BODY[]", err)
	must("STORE 1 +FLAGS \\Flagged", alice.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close())
	_, err = alice.Move(imap.UIDSetNum(1), "INBOX.Shared").Wait()
	must("MOVE 1 Shared", err)
	waitBody(t, lv, "user.alice", 2) // not expunged before its body was fetched
	must("STORE 2 +FLAGS \\Deleted", alice.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	must("EXPUNGE", alice.Expunge().Close())

	// The appointment, then its edit as a Kolab client makes it.
	_, err = appendMessage(alice, "INBOX.Calendar", kolabAppointment("evt-e2e", "Budget", "Room 1"), nil)
	must("APPEND appointment", err)
	_, err = appendMessage(alice, "INBOX.Calendar", kolabAppointment("evt-e2e", "Budget review", "Room 2"), nil)
	must("APPEND appointment v2", err)
	waitBody(t, lv, "user.alice.Calendar", 1)
	_, err = alice.Select("INBOX.Calendar", nil).Wait()
	must("SELECT Calendar", err)
	must("STORE 1 +FLAGS \\Deleted", alice.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	must("EXPUNGE Calendar", alice.Expunge().Close())

	bob, _ := dialIMAP(t, s, "bob")
	_, err = appendMessage(bob, "INBOX", testMessage("<bob-note@bonnie.test>", "Note to self"), nil)
	must("bob APPEND", err)
	must("bob LOGOUT", bob.Logout().Wait())

	// Revoke the group's access (go-imap has no DELETEACL: replace with none).
	must("SETACL none", alice.SetACL("INBOX.Shared", "group:users", imap.RightModificationReplace, imap.RightSet("")).Wait())
	must("LOGOUT", alice.Logout().Wait())

	recs := lv.waitFor(t, "the day's last events", func(recs []bonnie.Record) bool {
		acl := ofType(recs, bonnie.AclChange)
		return len(acl) >= 2 && len(ofType(recs, bonnie.Logout)) >= 2 && len(ofType(recs, bonnie.MessageExpunge)) >= 3
	})
	var grant, revoke time.Time
	for _, r := range ofType(recs, bonnie.AclChange) {
		if r.Event.Mailbox.Name == "user.alice.Shared" && r.Event.ACLSubject == "group:users" {
			if r.Event.ACLRights == "lrs" {
				grant = r.Event.Time
			} else {
				revoke = r.Event.Time
			}
		}
	}
	if grant.IsZero() || revoke.IsZero() {
		t.Fatalf("grant %v, revoke %v:\n%s", grant, revoke, dump(recs))
	}
	// Let the daemon's sinks reach the head, then stop it.
	head := recs[len(recs)-1].Position
	waitUntil(t, waitTimeout, "the discovery sink at the head", func() bool {
		x, err := discovery.Open(context.Background(), discovery.Path(data), nil)
		if err != nil {
			return false
		}
		defer x.Close()
		p, err := x.Position(context.Background())
		return err == nil && p >= head
	})
	d.stop(t)

	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bonnieBin, append([]string{"--data", data}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("bonnie %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
		return string(out)
	}
	decode := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}

	t.Run("message timeline", func(t *testing.T) {
		var tl discovery.MessageTimeline
		decode(cli("history", "message", "<report@bonnie.test>", "--json"), &tl)
		var got []string
		for _, e := range tl.Entries {
			got = append(got, e.Action+" "+e.Path)
		}
		want := []string{"appended user.alice", "read user.alice", "flagged user.alice", "moved user.alice.Shared", "expunged user.alice"}
		if !slices.Equal(got, want) {
			t.Fatalf("timeline %v, want %v", got, want)
		}
		e := tl.Entries[0]
		if e.Login != "alice" || e.ActorID != "id-alice" || e.Client != aliceAddr.String() || e.Session == "" || e.Position == 0 {
			t.Errorf("appended: %+v (client %s)", e, aliceAddr)
		}
		if len(tl.Places) != 2 || !slices.ContainsFunc(tl.Places, func(p discovery.Place) bool {
			return p.Path == "user.alice.Shared" && p.State == bonnie.StatePresent && p.Digest != ""
		}) {
			t.Errorf("places: %+v", tl.Places)
		}
		var lunch discovery.MessageTimeline
		decode(cli("history", "message", "lunch@bonnie.test", "--json"), &lunch)
		got = nil
		for _, e := range lunch.Entries {
			got = append(got, e.Action)
		}
		if !slices.Equal(got, []string{"delivered", "trashed", "expunged"}) {
			t.Errorf("lunch: %v", got)
		}
	})

	t.Run("folder", func(t *testing.T) {
		var fts []discovery.FolderTimeline
		decode(cli("history", "folder", "user.alice.Shared", "--json"), &fts)
		var got []string
		for _, e := range fts[0].Entries {
			got = append(got, e.Action+" "+e.ACLSubject)
		}
		want := []string{"created ", "acl granted group:users", "acl revoked group:users"}
		if len(fts) != 1 || !slices.Equal(got, want) {
			t.Errorf("folder: %v, want %v", got, want)
		}
	})

	t.Run("access", func(t *testing.T) {
		between := grant.Add(revoke.Sub(grant) / 2).Format(time.RFC3339Nano)
		var fas []discovery.FolderAccess
		decode(cli("access", "--folder", "user.alice.Shared", "--at", between, "--json"), &fas)
		var got []string
		for _, r := range fas[0].Readers {
			got = append(got, r.ID+" via "+strings.Join(r.Via, ","))
		}
		want := []string{"id-alice via alice", "id-bob via group:users", "id-carol via group:users"}
		if !slices.Equal(got, want) {
			t.Errorf("readers at %s: %v, want %v", between, got, want)
		}
		decode(cli("access", "--folder", "user.alice.Shared", "--at", revoke.Add(time.Millisecond).Format(time.RFC3339Nano), "--json"), &fas)
		if len(fas[0].Readers) != 1 || fas[0].Readers[0].ID != "id-alice" {
			t.Errorf("readers after the revoke: %+v", fas[0].Readers)
		}
		var pa discovery.PersonAccess
		decode(cli("access", "--user", "bob@example.org", "--at", between, "--json"), &pa)
		var paths []string
		for _, f := range pa.Folders {
			paths = append(paths, f.Path)
		}
		if !slices.Contains(paths, "user.alice.Shared") || slices.Contains(paths, "user.alice") {
			t.Errorf("bob could read %v", paths)
		}
	})

	t.Run("object", func(t *testing.T) {
		var h discovery.ObjectHistory
		decode(cli("object", "evt-e2e", "--json"), &h)
		if len(h.Revisions) != 2 || h.Revisions[0].Login != "alice" || len(h.Revisions[0].Ended) != 2 || len(h.Revisions[1].Ended) != 0 {
			t.Fatalf("revisions: %+v", h)
		}
		var d discovery.ObjectDiff
		decode(cli("object", "evt-e2e", "--diff", "1", "2", "--json"), &d)
		want := []discovery.PropertyChange{
			{Property: "VCALENDAR/VEVENT/LOCATION", From: "Room 1", To: "Room 2"},
			{Property: "VCALENDAR/VEVENT/SUMMARY", From: "Budget", To: "Budget review"},
		}
		if !slices.Equal(d.Changes, want) {
			t.Errorf("diff: %+v", d.Changes)
		}
		if out := cli("object", "evt-e2e", "--rev", "1"); !strings.Contains(out, "SUMMARY:Budget\r\n") {
			t.Errorf("revision 1:\n%s", out)
		}
	})

	t.Run("search", func(t *testing.T) {
		var hits []discovery.Hit
		decode(cli("search", "--text", "zeppelin", "--json"), &hits)
		if len(hits) == 0 || hits[0].MessageID != "<lunch@bonnie.test>" || hits[0].Position == 0 {
			t.Errorf("full text: %+v", hits)
		}
		decode(cli("search", "--custodian", "bob", "--type", "MessageAppend", "--json"), &hits)
		if len(hits) != 1 || hits[0].Subject != "Note to self" {
			t.Errorf("bob's appends: %+v", hits)
		}
	})

	t.Run("chain of custody", func(t *testing.T) {
		var hits []discovery.Hit
		decode(cli("search", "--type", "vnd.bonnie.Query", "--json"), &hits)
		var commands []string
		for _, h := range hits {
			var a discovery.Asked
			if err := json.Unmarshal(h.Detail, &a); err != nil || a.By == "" {
				t.Errorf("query %d: %v %s", h.Position, err, h.Detail)
			}
			commands = append(commands, a.Command)
		}
		if len(commands) < 10 || commands[0] != "history message" || commands[len(commands)-1] != "search" {
			t.Errorf("recorded queries: %v", commands)
		}
	})
	lv.verify(t, 0)
}
