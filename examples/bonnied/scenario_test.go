package main

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
)

// TestScenario drives a real Cyrus through a mail session in both transports
// (datagram and dlist) with bonnied listening, stops bonnied with SIGTERM and
// checks the log: every event present once, in Cyrus's order, with the right
// user, folder (decoded names) and UIDs; the resulting entity state
// (flags per message, a move's source and target, a rename's path history,
// an ACL grant and revoke, the session); the hash chain; no dead letters.
func TestScenario(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	for _, mode := range []string{"datagram", "dlist"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			runScenario(t, mode)
		})
	}
}

// want is one event the scenario must produce: its type and a check of its
// fields. They are listed in the order Cyrus sends them.
type want struct {
	name  string
	typ   bonnie.EventType
	match func(ev *bonnie.Event) bool
}

func runScenario(t *testing.T, mode string) {
	sock := cyrustest.SocketPath(t, "notify.sock")
	opts := cyrustest.Options{Users: map[string]string{"alice": "alice-pw", "bob": "bob-pw"}}
	cfg := daemonConfig{data: t.TempDir()}
	if mode == "datagram" {
		opts.NotifySocket, cfg.datagram = sock, sock
	} else {
		opts.NotifyDList, cfg.dlist = sock, sock
	}
	// Cyrus first: the socket does not exist yet, so Start leaves its mode
	// alone and what is checked below is bonnied's own doing.
	s := startCyrus(t, opts)
	lv := newLogView(cfg.data)
	d := startDaemon(t, "bonnied", cfg, lv)
	checkSocketFile(t, sock)

	// --- the mail session -------------------------------------------------
	before := time.Now()
	c, clientAddr := dialIMAP(t, s, "alice")
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for _, mb := range []string{"INBOX.Work", "INBOX.My Folder", "INBOX.Bücher"} {
		must("CREATE "+mb, c.Create(mb, nil).Wait())
	}
	msgID := func(n int) string { return fmt.Sprintf("<e2e-%s-%d@bonnie.test>", mode, n) }
	appendTo := func(mb string, n int, flags ...imap.Flag) imap.UID {
		t.Helper()
		uid, err := appendMessage(c, mb, testMessage(msgID(n), "message "+strconv.Itoa(n)), flags)
		must("APPEND", err)
		return uid
	}
	uid1 := appendTo("INBOX", 1)                                         // plain
	uid2 := appendTo("INBOX", 2, imap.FlagFlagged, imap.Flag("$Label1")) // with flags
	uid3 := appendTo("INBOX", 3)
	uidB := appendTo("INBOX.Bücher", 4, imap.FlagDraft)
	if uid1 != 1 || uid2 != 2 || uid3 != 3 || uidB != 1 {
		t.Fatalf("APPEND UIDs %d %d %d %d, want 1 2 3 1", uid1, uid2, uid3, uidB)
	}

	sel, err := c.Select("INBOX", nil).Wait()
	must("SELECT INBOX", err)
	// FETCH BODY[] (not PEEK) sets \Seen.
	_, err = c.Fetch(imap.UIDSetNum(1), &imap.FetchOptions{
		BodySection: []*imap.FetchItemBodySection{{}},
	}).Collect()
	must("FETCH 1 BODY[]", err)
	store := func(uid imap.UID, op imap.StoreFlagsOp, flags ...imap.Flag) {
		t.Helper()
		must("STORE", c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close())
	}
	store(2, imap.StoreFlagsAdd, imap.FlagAnswered, imap.Flag("$Important"))
	store(2, imap.StoreFlagsDel, imap.FlagFlagged)
	_, err = c.Copy(imap.UIDSetNum(1), "INBOX.My Folder").Wait()
	must("COPY 1", err)
	_, err = c.Move(imap.UIDSetNum(2), "INBOX.Work").Wait()
	must("MOVE 2", err)
	store(3, imap.StoreFlagsAdd, imap.FlagDeleted)
	must("EXPUNGE", c.Expunge().Close())
	must("RENAME", c.Rename("INBOX.Work", "INBOX.Projects", nil).Wait())
	// Pipelined: four STOREs sent before the first answer. Cyrus runs them
	// in order and sends their notifications back to back; only a log that
	// keeps that order ends with $Pipelined cleared.
	var pipelined []*imapclient.FetchCommand
	for i := range 4 {
		op := imap.StoreFlagsAdd
		if i%2 == 1 {
			op = imap.StoreFlagsDel
		}
		pipelined = append(pipelined, c.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{"$Pipelined"}}, nil))
	}
	for _, cmd := range pipelined {
		must("pipelined STORE", cmd.Close())
	}
	must("SETACL", c.SetACL("INBOX.My Folder", "bob", imap.RightModificationReplace, imap.RightSet("lrs")).Wait())
	s.DeleteACL(t, "user.alice.My Folder", "bob") // by the admin: go-imap has no DELETEACL
	s.LMTPDeliver(t, "carol@example.org", []string{"alice"}, []byte(testMessage(msgID(5), "delivered")))
	must("LOGOUT", c.Logout().Wait())
	wall := time.Since(before)

	// --- what the log must hold, in this order ----------------------------
	inbox, work, projects := "user.alice", "user.alice.Work", "user.alice.Projects"
	myFolder, books := "user.alice.My Folder", "user.alice.Bücher"
	at := func(mb string, uids ...uint32) func(*bonnie.Event) bool {
		return func(ev *bonnie.Event) bool {
			return ev.Mailbox.Name == mb && slices.Equal(ev.UIDs, uids)
		}
	}
	and := func(fs ...func(*bonnie.Event) bool) func(*bonnie.Event) bool {
		return func(ev *bonnie.Event) bool {
			for _, f := range fs {
				if !f(ev) {
					return false
				}
			}
			return true
		}
	}
	by := func(user string) func(*bonnie.Event) bool {
		return func(ev *bonnie.Event) bool { return ev.User == user }
	}
	flags := func(fl ...string) func(*bonnie.Event) bool {
		return func(ev *bonnie.Event) bool {
			got := slices.Clone(ev.Flags)
			slices.Sort(got)
			slices.Sort(fl)
			return slices.Equal(got, fl)
		}
	}
	mid := func(n int) func(*bonnie.Event) bool {
		return func(ev *bonnie.Event) bool { return slices.Equal(ev.MessageIDs, []string{msgID(n)}) }
	}
	from := func(mb string, uids ...uint32) func(*bonnie.Event) bool {
		return func(ev *bonnie.Event) bool {
			return ev.OldMailbox != nil && ev.OldMailbox.Name == mb && slices.Equal(ev.OldUIDs, uids)
		}
	}
	clientIP, clientPort, _ := net.SplitHostPort(clientAddr.String())
	wants := []want{
		{"Login", bonnie.Login, and(by("alice"), func(ev *bonnie.Event) bool {
			return ev.ClientIP == clientIP && strconv.Itoa(ev.ClientPort) == clientPort && ev.SessionID != ""
		})},
		{"CREATE Work", bonnie.MailboxCreate, and(by("alice"), at(work))},
		{"CREATE My Folder", bonnie.MailboxCreate, and(by("alice"), at(myFolder))},
		{"CREATE Bücher", bonnie.MailboxCreate, and(by("alice"), at(books))},
		{"APPEND 1", bonnie.MessageAppend, and(by("alice"), at(inbox, 1), mid(1), flags())},
		{"APPEND 2 (flags)", bonnie.MessageAppend, and(by("alice"), at(inbox, 2), mid(2), flags(`\Flagged`, "$Label1"))},
		{"APPEND 3", bonnie.MessageAppend, and(by("alice"), at(inbox, 3), mid(3), flags())},
		{"APPEND Bücher", bonnie.MessageAppend, and(by("alice"), at(books, 1), mid(4), flags(`\Draft`))},
		{"FETCH BODY[] 1", bonnie.MessageRead, and(by("alice"), at(inbox, 1))},
		{"STORE 2 +FLAGS", bonnie.FlagsSet, and(by("alice"), at(inbox, 2), flags(`\Answered`, "$Important"))},
		{"STORE 2 -FLAGS", bonnie.FlagsClear, and(by("alice"), at(inbox, 2), flags(`\Flagged`))},
		{"COPY 1", bonnie.MessageCopy, and(by("alice"), at(myFolder, 1), from(inbox, 1), mid(1))},
		{"MOVE 2 (target)", bonnie.MessageMove, and(by("alice"), at(work, 1), from(inbox, 2), mid(2))},
		{"MOVE 2 (source)", bonnie.MessageExpunge, and(by("alice"), at(inbox, 2))},
		{"STORE 3 +FLAGS \\Deleted", bonnie.MessageTrash, and(by("alice"), at(inbox, 3))},
		{"EXPUNGE", bonnie.MessageExpunge, and(by("alice"), at(inbox, 3))},
		{"RENAME", bonnie.MailboxRename, and(by("alice"), at(projects), func(ev *bonnie.Event) bool {
			return ev.OldMailbox != nil && ev.OldMailbox.Name == work
		})},
		{"pipelined +FLAGS 1", bonnie.FlagsSet, and(by("alice"), at(inbox, 1), flags("$Pipelined"))},
		{"pipelined -FLAGS 2", bonnie.FlagsClear, and(by("alice"), at(inbox, 1), flags("$Pipelined"))},
		{"pipelined +FLAGS 3", bonnie.FlagsSet, and(by("alice"), at(inbox, 1), flags("$Pipelined"))},
		{"pipelined -FLAGS 4", bonnie.FlagsClear, and(by("alice"), at(inbox, 1), flags("$Pipelined"))},
		{"SETACL", bonnie.AclChange, and(by("alice"), at(myFolder), func(ev *bonnie.Event) bool {
			return ev.ACLSubject == "bob" && ev.ACLRights == "lrs" && !ev.ACLRemoved
		})},
		{"DELETEACL", bonnie.AclChange, and(by(cyrustest.AdminUser), at(myFolder), func(ev *bonnie.Event) bool {
			return ev.ACLSubject == "bob" && ev.ACLRemoved
		})},
		{"LMTP", bonnie.MessageNew, and(by("alice"), at(inbox, 4), mid(5))},
		{"LOGOUT", bonnie.Logout, by("alice")},
	}

	// In datagram mode Cyrus does not wait: poll until everything arrived.
	// In dlist mode it is all durable already (Cyrus waited for each OK).
	recs := lv.waitFor(t, "complete scenario", func(recs []bonnie.Record) bool {
		_, missing := matchWants(recs, wants)
		return len(missing) == 0
	})
	d.stop(t)
	recs = lv.records(t)

	pos, missing := matchWants(recs, wants)
	if len(missing) > 0 {
		t.Fatalf("events missing from the log: %v\n%s", missing, dump(recs))
	}
	idx := func(name string) int {
		t.Helper()
		i := slices.IndexFunc(wants, func(w want) bool { return w.name == name })
		if i < 0 {
			t.Fatalf("no wanted event %q", name)
		}
		return i
	}
	// Cyrus sent them in this order (each command completed before the
	// next, the pipelined ones ran in order), so the log must have them in
	// this order.
	reordered := false
	for i := 1; i < len(wants); i++ {
		if pos[i] <= pos[i-1] {
			reordered = true
			t.Errorf("%s (position %d) is not after %s (position %d): the log reordered Cyrus's notifications",
				wants[i].name, pos[i], wants[i-1].name, pos[i-1])
		}
	}
	// Within a folder Cyrus's modseq grows with every change it notifies,
	// and one process at a time changed each folder here: in the log the
	// modseqs of a folder must not go down. And an APPEND's MailboxModseq
	// comes before its MessageAppend.
	lastModseq := map[string]uint64{}
	for i, r := range recs {
		ev := r.Event
		if ev.Modseq != 0 && ev.MailboxID != "" {
			if ev.Modseq < lastModseq[ev.MailboxID] {
				reordered = true
				t.Errorf("record %d (%s on %s) has modseq %d after modseq %d: reordered",
					r.Position, ev.Type, ev.Mailbox.Name, ev.Modseq, lastModseq[ev.MailboxID])
			}
			lastModseq[ev.MailboxID] = ev.Modseq
		}
		if ev.Type == bonnie.MessageAppend && (i == 0 || recs[i-1].Event.Type != bonnie.MailboxModseq ||
			recs[i-1].Event.MailboxID != ev.MailboxID) {
			reordered = true
			t.Errorf("record %d (MessageAppend on %s) does not follow its MailboxModseq: reordered", r.Position, ev.Mailbox.Name)
		}
	}
	if reordered {
		t.Logf("log:\n%s", dump(recs))
	}
	// Nothing else but what the scenario explains: Cyrus's MailboxModseq,
	// the admin session of DELETEACL, the daemon's own events.
	matched := map[bonnie.Position]bool{}
	for _, p := range pos {
		matched[p] = true
	}
	for _, r := range recs {
		ev := r.Event
		switch {
		case matched[r.Position], ev.Type == bonnie.MailboxModseq,
			ev.Type == bonnie.DaemonStart, ev.Type == bonnie.DaemonStop,
			(ev.Type == bonnie.Login || ev.Type == bonnie.Logout) && ev.User == cyrustest.AdminUser:
		default:
			t.Errorf("unexpected record %d: %s user=%s mailbox=%s uids=%v", r.Position, ev.Type, ev.User, ev.Mailbox.Name, ev.UIDs)
		}
	}
	if first, last := recs[0].Event, recs[len(recs)-1].Event; first.Type != bonnie.DaemonStart || last.Type != bonnie.DaemonStop {
		t.Errorf("log starts with %s and ends with %s, want DaemonStart ... DaemonStop", first.Type, last.Type)
	}
	for _, r := range recs {
		switch r.Event.Framing {
		case bonnie.Framing(mode), "json": // json: the daemon's own events
		default:
			t.Errorf("record %d came as %s, not %s", r.Position, r.Event.Framing, mode)
		}
	}

	// --- entity state -----------------------------------------------------
	evAt := func(i int) *bonnie.Event { return recByPos(recs, pos[i]).Event }
	folderID := map[string]string{}
	validity := map[string]uint32{}
	for i, w := range wants {
		ev := evAt(i)
		if ev.MailboxID != "" && w.typ != bonnie.MailboxRename {
			folderID[ev.Mailbox.Name] = ev.MailboxID
			validity[ev.Mailbox.Name] = ev.Mailbox.UIDValidity
		}
	}
	if validity[inbox] != sel.UIDValidity {
		t.Errorf("INBOX UIDVALIDITY in the events %d, SELECT says %d", validity[inbox], sel.UIDValidity)
	}
	if folderID[work] == "" || folderID[work] != evAt(idx("RENAME")).MailboxID {
		t.Errorf("the renamed folder changed id: %q before, %q after", folderID[work], evAt(idx("RENAME")).MailboxID)
	}
	key := func(mb string, uid uint32) string {
		return bonnie.MessageKey(folderID[mb], validity[mb], uid)
	}
	checkMessage := func(name, id, state string, wantFlags []string, extra map[string]string) {
		t.Helper()
		st := lv.state(t, bonnie.KindMessage, id)
		var got []string
		for k := range st {
			if f, ok := strings.CutPrefix(k, "flag:"); ok {
				got = append(got, f)
			}
		}
		slices.Sort(got)
		slices.Sort(wantFlags)
		if st["state"] != state || !slices.Equal(got, wantFlags) {
			t.Errorf("%s (%s): state %q flags %q, want %q %q\n%v", name, id, st["state"], got, state, wantFlags, st)
		}
		for k, v := range extra {
			if st[k] != v {
				t.Errorf("%s: %s = %q, want %q", name, k, st[k], v)
			}
		}
	}
	checkMessage("INBOX 1 (read, copied)", key(inbox, 1), bonnie.StatePresent, []string{`\Seen`},
		map[string]string{"messageId": msgID(1), "folder": folderID[inbox], "uid": "1"})
	checkMessage("INBOX 2 (flags changed, moved)", key(inbox, 2), bonnie.StateExpunged,
		[]string{`$Important`, `$Label1`, `\Answered`},
		map[string]string{"messageId": msgID(2), "movedTo": key(work, 1)})
	checkMessage("Projects 1 (moved here)", key(work, 1), bonnie.StatePresent,
		[]string{`$Important`, `$Label1`, `\Answered`},
		map[string]string{"messageId": msgID(2), "origin": key(inbox, 2), "folder": folderID[work]})
	checkMessage("INBOX 3 (deleted)", key(inbox, 3), bonnie.StateExpunged, []string{`\Deleted`},
		map[string]string{"messageId": msgID(3)})
	checkMessage("My Folder 1 (copy)", key(myFolder, 1), bonnie.StatePresent, []string{`\Seen`},
		map[string]string{"messageId": msgID(1), "origin": key(inbox, 1)})
	checkMessage("Bücher 1", key(books, 1), bonnie.StatePresent, []string{`\Draft`},
		map[string]string{"messageId": msgID(4)})
	checkMessage("INBOX 4 (LMTP)", key(inbox, 4), bonnie.StatePresent, nil,
		map[string]string{"messageId": msgID(5)})

	ctx := context.Background()
	// The renamed folder: path history, and the state before and after.
	hist, err := lv.l.History(ctx, bonnie.KindFolder, folderID[work])
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, ch := range hist {
		if ch.Field == "path" {
			paths = append(paths, ch.From+" -> "+ch.To)
		}
	}
	if wantPaths := []string{" -> " + work, work + " -> " + projects}; !slices.Equal(paths, wantPaths) {
		t.Errorf("path history of the renamed folder %q, want %q", paths, wantPaths)
	}
	renamed := evAt(idx("RENAME")).Time
	for _, c := range []struct {
		at   time.Time
		path string
	}{{renamed.Add(-time.Millisecond), work}, {renamed, projects}} {
		st, err := lv.l.StateAt(ctx, bonnie.KindFolder, folderID[work], c.at)
		if err != nil {
			t.Fatal(err)
		}
		if st["path"] != c.path {
			t.Errorf("folder path at %s = %q, want %q", c.at.Format(time.RFC3339Nano), st["path"], c.path)
		}
	}
	for mb, want := range map[string]string{myFolder: myFolder, books: books, inbox: inbox} {
		if st := lv.state(t, bonnie.KindFolder, folderID[mb]); st["path"] != want || st["state"] != bonnie.StatePresent || st["owner"] != "alice" {
			t.Errorf("folder %s: %v", mb, st)
		}
	}

	// The ACL: granted by alice, revoked by the admin.
	hist, err = lv.l.History(ctx, bonnie.KindFolder, folderID[myFolder])
	if err != nil {
		t.Fatal(err)
	}
	var acl []string
	for _, ch := range hist {
		if ch.Field == "acl:bob" {
			acl = append(acl, fmt.Sprintf("%q->%q by %s at %d", ch.From, ch.To, ch.Actor, ch.Cause))
		}
	}
	wantACL := []string{
		fmt.Sprintf("%q->%q by %s at %d", "", "lrs", "alice", pos[idx("SETACL")]),
		fmt.Sprintf("%q->%q by %s at %d", "lrs", "", cyrustest.AdminUser, pos[idx("DELETEACL")]),
	}
	if !slices.Equal(acl, wantACL) {
		t.Errorf("ACL history of bob on %s:\n got %q\nwant %q", myFolder, acl, wantACL)
	}
	if st := lv.state(t, bonnie.KindFolder, folderID[myFolder]); st["acl:bob"] != "" || st["acl:alice"] == "" {
		t.Errorf("ACL of %s now: %v", myFolder, st)
	}

	// The session: client address, start, end, duration.
	login, logout := evAt(0), evAt(len(wants)-1)
	if logout.SessionID != login.SessionID {
		t.Errorf("Logout of session %q, Login of %q", logout.SessionID, login.SessionID)
	}
	sess := lv.state(t, bonnie.KindSession, login.SessionID)
	dur, err := time.ParseDuration(sess["duration"])
	if sess["user"] != "alice" || sess["service"] != "imap" || sess["client"] != clientAddr.String() ||
		err != nil || dur <= 0 || dur > wall+time.Second || dur != logout.Time.Sub(login.Time) {
		t.Errorf("session %s: %v (measured %v)", login.SessionID, sess, wall)
	}
	if st := lv.state(t, bonnie.KindUser, "alice"); st["state"] != bonnie.StatePresent {
		t.Errorf("user alice: %v", st)
	}

	lv.verify(t, 0)
	if n := s.UnansweredNotifications(); n != 0 {
		t.Errorf("Cyrus logged %d notifications as unanswered/unsent:\n%s", n, strings.Join(s.Log(), "\n"))
	}
}

// matchWants finds each wanted event in the log, in order of the wants:
// the first record after the previous match that fits (so that a
// reordering shows as a missing event rather than a wrong match), falling
// back to any unmatched record that fits. It returns the positions and the
// names of those not found.
func matchWants(recs []bonnie.Record, wants []want) ([]bonnie.Position, []string) {
	pos := make([]bonnie.Position, len(wants))
	used := map[bonnie.Position]bool{}
	var missing []string
	for i, w := range wants {
		fits := func(r bonnie.Record) bool {
			return !used[r.Position] && r.Event.Type == w.typ && w.match(r.Event)
		}
		var found *bonnie.Record
		for j := range recs {
			if fits(recs[j]) && (i == 0 || recs[j].Position > pos[i-1]) {
				found = &recs[j]
				break
			}
		}
		if found == nil {
			for j := range recs {
				if fits(recs[j]) {
					found = &recs[j]
					break
				}
			}
		}
		if found == nil {
			missing = append(missing, w.name)
			continue
		}
		pos[i] = found.Position
		used[found.Position] = true
	}
	return pos, missing
}

func recByPos(recs []bonnie.Record, p bonnie.Position) bonnie.Record {
	i, _ := slices.BinarySearchFunc(recs, p, func(r bonnie.Record, p bonnie.Position) int {
		return int(r.Position) - int(p)
	})
	return recs[i]
}

// dump lists records one per line, for failure messages.
func dump(recs []bonnie.Record) string {
	var b strings.Builder
	for _, r := range recs {
		ev := r.Event
		fmt.Fprintf(&b, "%5d %-16s user=%s mailbox=%q uids=%v flags=%v mids=%v", r.Position, ev.Type, ev.User, ev.Mailbox.Name, ev.UIDs, ev.Flags, ev.MessageIDs)
		if ev.OldMailbox != nil {
			fmt.Fprintf(&b, " from=%q%v", ev.OldMailbox.Name, ev.OldUIDs)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
