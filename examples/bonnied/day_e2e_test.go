package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/slapdtest"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/sink/intercept"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// dayMessage is a message between two addresses (testMessage is from
// bob, which would make every copy of it concern bob for the
// interception).
func dayMessage(from, to, msgID, subject, body string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: " + msgID +
		"\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\n" + body + "\r\n"
}

// unixGroupWithUsers creates, for the test, the unix group name and
// system accounts (no home, no shell) whose primary group it is, and
// removes them afterwards. Cyrus (auth_mech unix, its default) checks
// an ACL's "group:NAME" against the system's groups: getgrnam must know
// NAME when the ACL is set, and at login a user is in the group if
// /etc/group lists them or if it is their passwd entry's primary group.
// The shadow tools refuse to list a member that has no passwd entry, so
// the accounts are made with the group as primary group. bonnied asks
// the LDAP group of the same name (cn) who its members are.
func unixGroupWithUsers(t *testing.T, name string, users ...string) {
	t.Helper()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, u := range users {
		if _, err := user.Lookup(u); err == nil {
			t.Fatalf("a system account %q exists already: this test makes its own and removes it after", u)
		}
	}
	run("groupadd", name)
	t.Cleanup(func() {
		if out, err := exec.Command("groupdel", name).CombinedOutput(); err != nil {
			t.Logf("groupdel %s: %v: %s", name, err, out)
		}
	})
	for _, u := range users {
		run("useradd", "--system", "--no-create-home", "--no-user-group", "--gid", name, "--shell", "/usr/sbin/nologin", u)
		t.Cleanup(func() {
			if out, err := exec.Command("userdel", u).CombinedOutput(); err != nil {
				t.Logf("userdel %s: %v: %s", u, err, out)
			}
		})
	}
}

// countOf counts the records of type typ whose user is login (any user
// when login is empty) and, when owner is not empty, whose mailbox owner
// is owner.
func countOf(recs []bonnie.Record, typ bonnie.EventType, login, owner string) int {
	n := 0
	for _, r := range recs {
		ev := r.Event
		if ev.Type == typ && (login == "" || ev.User == login) && (owner == "" || ev.Mailbox.Owner == owner) {
			n++
		}
	}
	return n
}

// concernsPerson says whether the event names the person id as actor or
// as mailbox owner: by the identity stored with it, or, for an event
// whose identities are not resolved (Cyrus's MailboxModseq, by design),
// by the person's logins.
func concernsPerson(ev *bonnie.Event, id string, logins ...string) bool {
	var ids bonnie.Identities
	if ev.Identities != nil {
		ids = *ev.Identities
	}
	is := func(ident *bonnie.Identity, login string) bool {
		if login == "" {
			return false
		}
		if ident != nil && !ident.Unresolved && ident.ID != "" {
			return ident.ID == id
		}
		return slices.Contains(logins, login)
	}
	return is(ids.Actor, ev.User) || is(ids.Owner, ev.Mailbox.Owner)
}

// TestScriptedDayWithLDAPAndInterception is issue #7's day, with every
// part real: Cyrus, slapd as bonnied's directory, RabbitMQ as the
// interception's destination, bonnied with the archive, discovery and
// intercept sinks, and the bonnie command line.
//
// The morning: alice creates a shared folder and grants an LDAP group
// (whose name is also a unix group, so that Cyrus enforces it) "lrs";
// she appends, reads, flags and moves a message into it, deletes a
// delivered one, and edits a Kolab appointment (APPEND v2, \Deleted and
// EXPUNGE of v1); bob, a member, reads in the shared folder; carol
// leaves the group in the directory and alice's next append in the folder
// records the new membership.
//
// Midday an interception of bob starts (bonnie intercept start, handed
// to bonnied over its control socket). Bob reads and appends, dave
// delivers to him, alice works on her own; then the person is renamed in
// the directory (uid bob -> robert, same entryUUID; Cyrus has an account
// robert, the new login), and robert reads in the shared folder,
// appends, is delivered to. The interception is stopped; robert and alice
// go on (alice revokes the group's access).
//
// Then: the queue got exactly bob's events between the start and the
// stop, under both logins, each once, with their bodies, and `bonnie
// intercept deliveries` lists the same; and the discovery questions
// (message, folder and person timelines, access before and after the
// grant, the group change and the revoke, the appointment's diff,
// searches) answer from the record, each recorded as a Query.
func TestScriptedDayWithLDAPAndInterception(t *testing.T) {
	requireEnv(t)
	requireBroker(t)
	t.Parallel()

	group := fmt.Sprintf("bday%d", os.Getpid()%1000000)
	unixGroupWithUsers(t, group, "bob", "robert")
	dir := slapdtest.Start(t, slapdtest.Options{LDIF: fmt.Sprintf(`dn: %s
objectClass: groupOfNames
cn: %s
description: the team of the scripted day (also a unix group, for Cyrus)
member: %s
member: %s
`, slapdtest.GroupDN(group), group, slapdtest.UserDN("bob"), slapdtest.UserDN("carol"))})
	aliceID, bobID, carolID := dir.UUID(t, "alice"), dir.UUID(t, "bob"), dir.UUID(t, "carol")
	groupID := dir.GroupUUID(t, group)

	sock := cyrustest.SocketPath(t, "notify.sock")
	s := startCyrus(t, cyrustest.Options{
		Users:        map[string]string{"alice": "alice-pw", "bob": "bob-pw", "robert": "robert-pw"},
		NotifySocket: sock,
	})
	data := t.TempDir()
	secrets := t.TempDir()
	adminPW := filepath.Join(secrets, "admin.pw")
	amqpPW := filepath.Join(secrets, "amqp.pw")
	for p, v := range map[string]string{adminPW: cyrustest.AdminPassword, amqpPW: "guest"} {
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The destination: a durable queue, consumed while the day runs.
	queue := fmt.Sprintf("bonnie.intercept.day-%d", time.Now().UnixNano())
	conn, err := amqp091.Dial(amqpTestURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)
	consumed, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		arrivals = map[string]int{} // AMQP message id -> times received
		handed   []intercept.Handover
		bodies   = map[string][]byte{}
	)
	go func() {
		for d := range consumed {
			mu.Lock()
			arrivals[d.MessageId]++
			if d.Headers["x-bonnie-kind"] == "body" {
				if sum, ok := d.Headers["x-bonnie-sha256"].(string); ok {
					bodies[sum] = d.Body
				}
			} else {
				var h intercept.Handover
				if err := json.Unmarshal(d.Body, &h); err == nil {
					handed = append(handed, h)
				}
			}
			mu.Unlock()
		}
	}()

	lv := newLogView(data)
	d := startDaemon(t, "bonnied", daemonConfig{data: data, datagram: sock, extra: []string{
		"--imap", s.QuietIMAPAddr(), "--imap-user", cyrustest.AdminUser, "--imap-password-file", adminPW,
		"--ldap-url", dir.URL(), "--ldap-base", slapdtest.Suffix, "--default-domain", slapdtest.Domain,
		// The directory changes during the day: answers are reused for
		// 100ms only, so each step sees the directory as it is then.
		"--ldap-cache-ttl", "100ms",
		"--sinks", "archive,discovery,intercept", "--intercept-amqp-password-file", amqpPW,
	}}, lv)

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	store := func(c *imapclient.Client, uid imap.UID, flag imap.Flag) {
		t.Helper()
		must("STORE +FLAGS "+string(flag), c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{flag}}, nil).Close())
	}
	read := func(c *imapclient.Client, mailbox string, uids ...imap.UID) {
		t.Helper()
		_, err := c.Select(mailbox, nil).Wait()
		must("SELECT "+mailbox, err)
		_, err = c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
		must("FETCH BODY[] in "+mailbox, err)
	}
	// A person does not delete a message within milliseconds of its
	// arrival; a script does. bonnied fetches a body at ingest, and a
	// message expunged before that is recorded without it (BodyRef.Error,
	// datagram mode): each step that destroys a message waits until its
	// body is in the log.
	bonnieOut := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bonnieBin, append([]string{"--data", data}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("bonnie %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// ------------------------------------------------------------ morning
	alice, aliceAddr := dialIMAP(t, s, "alice")
	for _, mb := range []string{"INBOX.Shared", "INBOX.Calendar"} {
		must("CREATE "+mb, alice.Create(mb, nil).Wait())
	}
	time.Sleep(50 * time.Millisecond) // the folder exists a moment before the grant
	must("SETACL group", alice.SetACL("INBOX.Shared", imap.RightsIdentifier("group:"+group), imap.RightModificationReplace, imap.RightSet("lrs")).Wait())
	_, err = appendMessage(alice, "INBOX", dayMessage("alice@example.org", "alice@example.org", "<report@bonnie.test>", "Quarterly report", "The numbers are fine."), nil)
	must("APPEND report", err)
	s.LMTPDeliver(t, "dave@example.org", []string{"alice"}, []byte(dayMessage("Dave <dave@example.org>", "alice@example.org",
		"<lunch@bonnie.test>", "Lunch", "Shall we meet for lunch at the zeppelin museum?")))
	waitBody(t, lv, "user.alice", 1)
	waitBody(t, lv, "user.alice", 2)
	read(alice, "INBOX", 1)
	store(alice, 1, imap.FlagFlagged)
	_, err = alice.Move(imap.UIDSetNum(1), "INBOX.Shared").Wait()
	must("MOVE report to Shared", err)
	store(alice, 2, imap.FlagDeleted)
	must("EXPUNGE INBOX", alice.Expunge().Close())
	_, err = appendMessage(alice, "INBOX.Calendar", kolabAppointment("evt-day", "Budget", "Room 1"), nil)
	must("APPEND appointment", err)
	_, err = appendMessage(alice, "INBOX.Calendar", kolabAppointment("evt-day", "Budget review", "Room 2"), nil)
	must("APPEND appointment v2", err)
	waitBody(t, lv, "user.alice.Calendar", 1)
	waitBody(t, lv, "user.alice.Calendar", 2)
	_, err = alice.Select("INBOX.Calendar", nil).Wait()
	must("SELECT Calendar", err)
	store(alice, 1, imap.FlagDeleted)
	must("EXPUNGE Calendar", alice.Expunge().Close())

	bob, _ := dialIMAP(t, s, "bob")
	read(bob, "user.alice.Shared", 1) // Cyrus lets him: group:GROUP, his primary unix group
	_, err = appendMessage(bob, "INBOX", dayMessage("bob@example.org", "bob@example.org", "<bob-note@bonnie.test>", "Note to self", "Remember the milk."), nil)
	must("bob APPEND", err)
	must("bob LOGOUT", bob.Logout().Wait())

	// Carol leaves the group in the directory; the folder's next event
	// captures the membership as it is now.
	recs := lv.waitFor(t, "the morning's events", func(recs []bonnie.Record) bool {
		return countOf(recs, bonnie.Logout, "bob", "") == 1 && countOf(recs, bonnie.AclChange, "", "") >= 1
	})
	var grant time.Time
	for _, r := range ofType(recs, bonnie.AclChange) {
		if r.Event.Mailbox.Name == "user.alice.Shared" && r.Event.ACLSubject == "group:"+group {
			grant = r.Event.Time
			// The ACL subject is the LDAP group, with its members then.
			var sub *bonnie.Identity
			if r.Event.Identities != nil {
				sub = r.Event.Identities.Subject
			}
			var members []string
			if sub != nil {
				for _, m := range sub.Members {
					members = append(members, m.ID)
				}
			}
			slices.Sort(members)
			if sub == nil || sub.Kind != bonnie.IdentityGroup || sub.ID != groupID ||
				!slices.Equal(members, slices.Sorted(slices.Values([]string{bobID, carolID}))) {
				t.Errorf("the grant's subject identity %+v, want group %s (%s) with bob and carol", sub, group, groupID)
			}
		}
	}
	dir.DelMember(t, group, "carol")
	time.Sleep(300 * time.Millisecond) // past the cache's TTL
	_, err = appendMessage(alice, "INBOX.Shared", dayMessage("alice@example.org", "alice@example.org", "<minutes@bonnie.test>", "Minutes", "Minutes of the budget meeting."), nil)
	must("APPEND minutes", err)
	recs = lv.waitFor(t, "the minutes in the shared folder", func(recs []bonnie.Record) bool {
		return countOf(recs, bonnie.MessageAppend, "alice", "") >= 4
	})
	var groupChanged time.Time
	for _, r := range ofType(recs, bonnie.MessageAppend) {
		if r.Event.Mailbox.Name == "user.alice.Shared" {
			groupChanged = r.Event.Time
		}
	}
	if grant.IsZero() || groupChanged.IsZero() {
		t.Fatalf("grant %v, group change %v:\n%s", grant, groupChanged, dump(recs))
	}

	// ------------------------------------------------------------- midday
	windowFrom := time.Now().UTC()
	out := bonnieOut("intercept", "start", "--target", "bob", "--warrant", "W-DAY", "--from", windowFrom.Format(time.RFC3339Nano),
		"--to", windowFrom.Add(24*time.Hour).Format(time.RFC3339Nano), "--dest", "amqp://guest@127.0.0.1:5672/?queue="+queue,
		"--authorised-by", "Judge Dredd", "--id", "i-day")
	if !strings.Contains(out, "interception i-day started") || !strings.Contains(out, bobID) {
		t.Fatalf("bonnie intercept start: %s\nwant the start, with target %s (bob's entryUUID)", out, bobID)
	}

	bob, _ = dialIMAP(t, s, "bob")
	read(bob, "user.alice.Shared", 2) // the minutes
	_, err = appendMessage(bob, "INBOX", dayMessage("bob@example.org", "bob@example.org", "<bob-window@bonnie.test>", "In the window", "Bob writes during the interception."), nil)
	must("bob APPEND in the window", err)
	s.LMTPDeliver(t, "dave@example.org", []string{"bob"}, []byte(dayMessage("Dave <dave@example.org>", "bob@example.org",
		"<tipoff@bonnie.test>", "Tip-off", "Meet me at the harbour.")))
	must("bob LOGOUT", bob.Logout().Wait())
	// Alice works on her own meanwhile: none of it is bob's.
	_, err = appendMessage(alice, "INBOX", dayMessage("alice@example.org", "alice@example.org", "<alice-window@bonnie.test>", "Alice alone", "Nothing for bob."), nil)
	must("alice APPEND in the window", err)
	lv.waitFor(t, "bob's second session", func(recs []bonnie.Record) bool {
		return countOf(recs, bonnie.Logout, "bob", "") == 2 && countOf(recs, bonnie.MessageNew, "", "bob") >= 1 &&
			countOf(recs, bonnie.MessageAppend, "alice", "") >= 5
	})

	// The rename: same entryUUID, new uid and mail; Cyrus knows him as
	// robert from now on.
	dir.Rename(t, "bob", "robert", "robert@example.org")
	if got := dir.UUID(t, "robert"); got != bobID {
		t.Fatalf("robert's entryUUID %s, want bob's %s", got, bobID)
	}
	time.Sleep(300 * time.Millisecond) // past the cache's TTL
	robert, _ := dialIMAP(t, s, "robert")
	read(robert, "user.alice.Shared", 1, 2)
	_, err = appendMessage(robert, "INBOX", dayMessage("robert@example.org", "robert@example.org", "<robert-window@bonnie.test>", "As robert", "Same person, new name."), nil)
	must("robert APPEND in the window", err)
	s.LMTPDeliver(t, "dave@example.org", []string{"robert"}, []byte(dayMessage("Dave <dave@example.org>", "robert@example.org",
		"<tipoff-2@bonnie.test>", "Tip-off again", "The harbour, at noon.")))
	must("robert LOGOUT", robert.Logout().Wait())
	lv.waitFor(t, "robert's session", func(recs []bonnie.Record) bool {
		return countOf(recs, bonnie.Logout, "robert", "") == 1 && countOf(recs, bonnie.MessageNew, "", "robert") >= 1
	})
	out = bonnieOut("intercept", "stop", "i-day", "--reason", "warrant expired")
	if !strings.Contains(out, "interception i-day stopped") {
		t.Fatalf("bonnie intercept stop: %s", out)
	}

	// ---------------------------------------------------------- afternoon
	robert, _ = dialIMAP(t, s, "robert")
	_, err = appendMessage(robert, "INBOX", dayMessage("robert@example.org", "robert@example.org", "<robert-after@bonnie.test>", "After the window", "Not intercepted."), nil)
	must("robert APPEND after the window", err)
	must("robert LOGOUT", robert.Logout().Wait())
	s.LMTPDeliver(t, "dave@example.org", []string{"robert"}, []byte(dayMessage("Dave <dave@example.org>", "robert@example.org",
		"<late@bonnie.test>", "Too late", "Nobody is listening now.")))
	// go-imap has no DELETEACL: replace with no rights.
	must("SETACL none", alice.SetACL("INBOX.Shared", imap.RightsIdentifier("group:"+group), imap.RightModificationReplace, imap.RightSet("")).Wait())
	must("alice LOGOUT", alice.Logout().Wait())

	recs = lv.waitFor(t, "the day's last events", func(recs []bonnie.Record) bool {
		return countOf(recs, bonnie.Logout, "robert", "") == 2 && countOf(recs, bonnie.Logout, "alice", "") == 1 &&
			countOf(recs, bonnie.AclChange, "", "") >= 2 && countOf(recs, bonnie.MessageNew, "", "robert") >= 2
	})
	var startPos, stopPos bonnie.Position
	var revoke time.Time
	for _, r := range recs {
		switch ev := r.Event; {
		case ev.Type == bonnie.Interception && startPos == 0:
			startPos = r.Position
		case ev.Type == bonnie.Interception:
			stopPos = r.Position
		case ev.Type == bonnie.AclChange && ev.Mailbox.Name == "user.alice.Shared" && ev.ACLRights != "lrs":
			revoke = ev.Time
		}
	}
	if startPos == 0 || stopPos == 0 || revoke.IsZero() {
		t.Fatalf("interception start %d, stop %d, revoke %v:\n%s", startPos, stopPos, revoke, dump(recs))
	}

	// What the interception must have handed over: every event of bob's
	// (by persistent id, as actor or owner) after the start and before the
	// stop, and nothing else.
	var want, before, after []bonnie.Position
	wantBodies := map[string]bool{}
	logins := map[string]bool{}
	for _, r := range recs {
		ev := r.Event
		if bonnie.OwnEvents.Has(ev.Type) || !concernsPerson(ev, bobID, "bob", "robert") {
			continue
		}
		switch {
		case r.Position < startPos:
			before = append(before, r.Position)
		case r.Position > stopPos:
			after = append(after, r.Position)
		default:
			if ev.Time.Before(windowFrom) {
				t.Errorf("%s at %d happened at %v, before the window's start %v", ev.Type, r.Position, ev.Time, windowFrom)
			}
			want = append(want, r.Position)
			logins[ev.User+"/"+ev.Mailbox.Owner] = true
			if ev.Type == bonnie.MessageNew {
				logins["delivered to "+ev.Mailbox.Name] = true
			}
			for _, b := range ev.Bodies {
				if b.Digest != "" {
					wantBodies[b.Digest] = true
				}
			}
		}
	}
	if len(before) == 0 || len(after) == 0 {
		t.Errorf("bob's events: %d before the start, %d after the stop; want some of each", len(before), len(after))
	}
	// After the stop he acts under the new login only: the stop, not the
	// rename, is what ends the copy.
	for _, p := range after {
		if ev := recs[slices.IndexFunc(recs, func(r bonnie.Record) bool { return r.Position == p })].Event; ev.User == "bob" || ev.Mailbox.Owner == "bob" {
			t.Errorf("%s at %d by %q in %s after the stop: want only robert's", ev.Type, p, ev.User, ev.Mailbox.Name)
		}
	}
	// Under both logins: in his own mailbox, in the shared folder, and
	// delivered to (LMTP: the recipient is the event's user), and Cyrus's
	// MailboxModseq (no user, identities not resolved by design: matched
	// by his logins).
	for _, k := range []string{"bob/bob", "robert/robert", "/bob", "/robert", "bob/alice", "robert/alice",
		"delivered to user.bob", "delivered to user.robert"} {
		if !logins[k] {
			t.Errorf("no event of user/owner %s inside the window (have %v)", k, logins)
		}
	}
	t.Logf("bob's events: %d before the interception (position %d), %d inside it, %d after its stop (position %d); %d bodies",
		len(before), startPos, len(want), len(after), stopPos, len(wantBodies))
	waitUntil(t, waitTimeout, "the interception's handovers", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handed) >= len(want) && len(bodies) >= len(wantBodies)
	})
	time.Sleep(500 * time.Millisecond) // anything more would show now
	func() {
		mu.Lock()
		defer mu.Unlock()
		var got []bonnie.Position
		for _, h := range handed {
			got = append(got, h.Record.Position)
			if h.Interception != "i-day" || h.Warrant != "W-DAY" {
				t.Errorf("handover %s: interception %q, warrant %q", h.MessageID, h.Interception, h.Warrant)
			}
			for _, b := range h.Record.Event.Bodies {
				if body, ok := bodies[b.Digest]; !ok || blob.Digest(body) != b.Digest {
					t.Errorf("body %s of position %d not handed over intact", b.Digest, h.Record.Position)
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("the queue got positions %v,\nwant bob's inside the window %v", got, want)
			for _, r := range recs {
				if slices.Contains(got, r.Position) != slices.Contains(want, r.Position) {
					t.Logf("  %d %s user %q owner %q (handed %v)", r.Position, r.Event.Type, r.Event.User, r.Event.Mailbox.Owner, slices.Contains(got, r.Position))
				}
			}
		}
		for id, n := range arrivals {
			if n != 1 {
				t.Errorf("AMQP message %s arrived %d times", id, n)
			}
		}
		if len(bodies) != len(wantBodies) {
			t.Errorf("%d bodies handed over, want %d", len(bodies), len(wantBodies))
		}
	}()
	var ds []intercept.Delivery
	if err := json.Unmarshal([]byte(bonnieOut("intercept", "deliveries", "i-day", "--json")), &ds); err != nil {
		t.Fatal(err)
	}
	var listed []bonnie.Position
	for _, d := range ds {
		for _, it := range d.Items {
			listed = append(listed, it.Position)
		}
	}
	if !slices.Equal(listed, want) {
		t.Errorf("bonnie intercept deliveries i-day lists %v, want %v", listed, want)
	}
	var its []struct {
		intercept.Interception
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(bonnieOut("intercept", "list", "--json")), &its); err != nil {
		t.Fatal(err)
	}
	if len(its) != 1 || its[0].ID != "i-day" || its[0].Target.ID != bobID || its[0].Position != startPos ||
		its[0].StoppedAt != stopPos || its[0].StopReason != "warrant expired" || its[0].State != "stopped" ||
		its[0].Deliveries != len(ds) || !its[0].From.Equal(windowFrom) {
		t.Errorf("bonnie intercept list: %+v\nwant i-day on %s, started at %d, stopped at %d (warrant expired), %d deliveries, from %v",
			its, bobID, startPos, stopPos, len(ds), windowFrom)
	}

	// Let the discovery sink reach the head, then ask with bonnied stopped.
	head := lv.records(t)[len(lv.records(t))-1].Position
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

	var asked []string // the discovery commands run, in order
	cli := func(command string, args ...string) string {
		t.Helper()
		asked = append(asked, command)
		cmd := exec.Command(bonnieBin, append([]string{"--data", data}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			var ee *exec.ExitError
			if errors.As(err, &ee) {
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
	at := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

	t.Run("message timeline", func(t *testing.T) {
		var tl discovery.MessageTimeline
		decode(cli("history message", "history", "message", "<report@bonnie.test>", "--json"), &tl)
		var got []string
		for _, e := range tl.Entries {
			got = append(got, e.Action+" "+e.Path+" "+e.Login+" "+e.ActorID)
		}
		want := []string{
			"appended user.alice alice " + aliceID,
			"read user.alice alice " + aliceID,
			"flagged user.alice alice " + aliceID,
			"moved user.alice.Shared alice " + aliceID,
			"expunged user.alice alice " + aliceID,
			"read user.alice.Shared bob " + bobID,
			"read user.alice.Shared robert " + bobID,
		}
		if !slices.Equal(got, want) {
			t.Errorf("timeline\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		if len(tl.Entries) > 0 && tl.Entries[0].Client != aliceAddr.String() {
			t.Errorf("appended from %q, want alice's client %s", tl.Entries[0].Client, aliceAddr)
		}
		var lunch discovery.MessageTimeline
		decode(cli("history message", "history", "message", "lunch@bonnie.test", "--json"), &lunch)
		got = nil
		for _, e := range lunch.Entries {
			got = append(got, e.Action)
		}
		if !slices.Equal(got, []string{"delivered", "trashed", "expunged"}) {
			t.Errorf("lunch: %v", got)
		}
	})

	t.Run("folder timeline", func(t *testing.T) {
		var fts []discovery.FolderTimeline
		decode(cli("history folder", "history", "folder", "user.alice.Shared", "--json"), &fts)
		if len(fts) != 1 {
			t.Fatalf("%d folders named user.alice.Shared", len(fts))
		}
		var got []string
		for _, e := range fts[0].Entries {
			got = append(got, strings.TrimSpace(e.Action+" "+e.ACLSubject+" "+e.ACLRights))
		}
		want := []string{"created", "acl granted group:" + group + " lrs", "acl revoked group:" + group}
		if !slices.Equal(got, want) {
			t.Errorf("folder: %q, want %q", got, want)
		}
	})

	t.Run("person across the rename", func(t *testing.T) {
		type historyOut struct {
			Persons []struct {
				ID    string   `json:"id"`
				Login string   `json:"login"`
				Names []string `json:"names"`
			} `json:"persons"`
			Events []struct {
				Event string `json:"event"`
				Login string `json:"login"`
				ID    string `json:"id"`
			} `json:"events"`
		}
		for _, q := range []string{"bob", "robert", bobID} {
			var h historyOut
			decode(cli("history user", "history", "user", q, "--json"), &h)
			if len(h.Persons) != 1 || h.Persons[0].ID != bobID || h.Persons[0].Login != "robert" ||
				!slices.Contains(h.Persons[0].Names, "bob") || !slices.Contains(h.Persons[0].Names, "robert") {
				t.Errorf("history user %s: persons %+v, want one, id %s, login robert, names bob and robert", q, h.Persons, bobID)
			}
			var logins []string
			for _, e := range h.Events {
				if e.ID != bobID {
					t.Errorf("history user %s: %s by %s with id %s", q, e.Event, e.Login, e.ID)
				}
				if e.Event == "Login" {
					logins = append(logins, e.Login)
				}
			}
			if !slices.Equal(logins, []string{"bob", "bob", "robert", "robert"}) {
				t.Errorf("history user %s: logins %v, want bob twice then robert twice", q, logins)
			}
		}
	})

	t.Run("access", func(t *testing.T) {
		readers := func(when time.Time) []string {
			t.Helper()
			var fas []discovery.FolderAccess
			decode(cli("access", "access", "--folder", "user.alice.Shared", "--at", at(when), "--json"), &fas)
			if len(fas) != 1 {
				t.Fatalf("access at %v: %d folders", when, len(fas))
			}
			var got []string
			for _, r := range fas[0].Readers {
				got = append(got, r.ID+" via "+strings.Join(r.Via, ","))
			}
			slices.Sort(got)
			return got
		}
		sorted := func(s ...string) []string { slices.Sort(s); return s }
		via := " via group:" + group
		for _, tc := range []struct {
			what string
			when time.Time
			want []string
		}{
			{"before the grant", grant.Add(-time.Millisecond), []string{aliceID + " via alice"}},
			{"after the grant", grant.Add(groupChanged.Sub(grant) / 2), sorted(aliceID+" via alice", bobID+via, carolID+via)},
			{"after carol left the group", groupChanged.Add(revoke.Sub(groupChanged) / 2), sorted(aliceID+" via alice", bobID+via)},
			{"after the revoke", revoke.Add(time.Millisecond), []string{aliceID + " via alice"}},
		} {
			if got := readers(tc.when); !slices.Equal(got, tc.want) {
				t.Errorf("readers %s (%s): %v, want %v", tc.what, at(tc.when), got, tc.want)
			}
		}
		paths := func(who string, when time.Time) []string {
			t.Helper()
			var pa discovery.PersonAccess
			decode(cli("access", "access", "--user", who, "--at", at(when), "--json"), &pa)
			var out []string
			for _, f := range pa.Folders {
				out = append(out, f.Path)
			}
			return out
		}
		mid := grant.Add(groupChanged.Sub(grant) / 2)
		if p := paths("bob", mid); !slices.Contains(p, "user.alice.Shared") || slices.Contains(p, "user.alice") {
			t.Errorf("bob could read %v after the grant", p)
		}
		if p := paths("robert", revoke.Add(-time.Millisecond)); !slices.Contains(p, "user.alice.Shared") {
			t.Errorf("robert (bob renamed) could read %v before the revoke", p)
		}
		if p := paths("robert", revoke.Add(time.Millisecond)); slices.Contains(p, "user.alice.Shared") {
			t.Errorf("robert could read %v after the revoke", p)
		}
	})

	t.Run("appointment", func(t *testing.T) {
		var h discovery.ObjectHistory
		decode(cli("object", "object", "evt-day", "--json"), &h)
		if len(h.Revisions) != 2 || h.Revisions[0].Login != "alice" || len(h.Revisions[1].Ended) != 0 {
			t.Fatalf("revisions: %+v", h)
		}
		var diff discovery.ObjectDiff
		decode(cli("object", "object", "evt-day", "--diff", "1", "2", "--json"), &diff)
		want := []discovery.PropertyChange{
			{Property: "VCALENDAR/VEVENT/LOCATION", From: "Room 1", To: "Room 2"},
			{Property: "VCALENDAR/VEVENT/SUMMARY", From: "Budget", To: "Budget review"},
		}
		if !slices.Equal(diff.Changes, want) {
			t.Errorf("diff: %+v", diff.Changes)
		}
	})

	t.Run("search", func(t *testing.T) {
		var hits []discovery.Hit
		decode(cli("search", "search", "--text", "zeppelin", "--json"), &hits)
		if len(hits) == 0 || hits[0].MessageID != "<lunch@bonnie.test>" {
			t.Errorf("full text zeppelin: %+v", hits)
			for _, r := range ofType(recs, bonnie.MessageNew) {
				t.Logf("  %d MessageNew in %s, bodies %+v", r.Position, r.Event.Mailbox.Name, r.Event.Bodies)
			}
		}
		decode(cli("search", "search", "--subject", "Tip-off", "--json"), &hits)
		var ids []string
		for _, h := range hits {
			ids = append(ids, h.MessageID)
		}
		slices.Sort(ids)
		if ids = slices.Compact(ids); !slices.Equal(ids, []string{"<tipoff-2@bonnie.test>", "<tipoff@bonnie.test>"}) {
			t.Errorf("subject Tip-off: %v", ids)
		}
		decode(cli("search", "search", "--actor", "robert", "--type", "MessageAppend", "--json"), &hits)
		var subjects []string
		for _, h := range hits {
			subjects = append(subjects, h.Subject)
		}
		if !slices.Equal(subjects, []string{"Note to self", "In the window", "As robert", "After the window"}) {
			t.Errorf("appends by robert under any of his names: %v", subjects)
		}
	})

	t.Run("recorded queries", func(t *testing.T) {
		var hits []discovery.Hit
		decode(cli("search", "search", "--type", "vnd.bonnie.Query", "--json"), &hits)
		var commands []string
		for _, h := range hits {
			var a discovery.Asked
			if err := json.Unmarshal(h.Detail, &a); err != nil || a.By == "" {
				t.Errorf("query %d: %v %s", h.Position, err, h.Detail)
			}
			commands = append(commands, a.Command)
		}
		if !slices.Equal(commands, asked) {
			t.Errorf("recorded queries\n  %v\nwant\n  %v", commands, asked)
		}
	})
	lv.verify(t, 0)
}
