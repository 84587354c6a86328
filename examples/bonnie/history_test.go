package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/identity"
	"github.com/bonnie-archive/bonnie/internal/slapdtest"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

var h0 = time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)

// event is a bare-JSON Cyrus notification.
func event(t *testing.T, name string, at time.Time, members map[string]any) []byte {
	t.Helper()
	m := map[string]any{"event": name, "timestamp": at.Format("2006-01-02T15:04:05.000Z"), "service": "imap", "serverFQDN": "cyrus.test"}
	for k, v := range members {
		m[k] = v
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

const inboxURI = "imap://cyrus.test/user.alice;UIDVALIDITY=1795897409"

// identityLog fills a data directory with a working day of alice's,
// resolved against a real directory: she works as alice, is renamed
// alice2 (entryUUID kept), works again, and once more while the directory
// is down. Bob does something too. It returns the directory (running) and
// alice's entryUUID.
func identityLog(t *testing.T) (string, *slapdtest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	s := slapdtest.Start(t, slapdtest.Options{})
	alice := s.UUID(t, "alice")
	l, err := identity.NewLDAP(identity.LDAPOptions{URL: s.URL(), BaseDN: slapdtest.Suffix, DefaultDomain: slapdtest.Domain,
		RetryAfter: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger(), Resolver: l, ResolveTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	in := func(raw []byte) {
		t.Helper()
		if _, _, err := eng.Ingest(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	session := func(user, id string, at time.Time, port int) map[string]any {
		return map[string]any{"user": user, "vnd.cmu.sessionId": id, "clientIP": "198.51.100.4", "clientPort": port, "uri": "imap://cyrus.test"}
	}
	box := func(user, sess string, extra map[string]any) map[string]any {
		m := map[string]any{"user": user, "vnd.cmu.sessionId": sess, "mailboxID": "inbox-alice", "uri": inboxURI,
			"vnd.cmu.mailboxACL": "alice\tlrswipkxtecdan\t"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	in(event(t, "Login", h0, session("alice", "s1", h0, 40001)))
	in(event(t, "MessageRead", h0.Add(10*time.Second), box("alice", "s1", map[string]any{"uidset": "1"})))
	in(event(t, "FlagsSet", h0.Add(20*time.Second), box("alice", "s1", map[string]any{"uidset": "1", "flagNames": `\Flagged`})))
	in(event(t, "Logout", h0.Add(90*time.Second), session("alice", "s1", h0, 40001)))
	in(event(t, "Login", h0.Add(time.Minute), session("bob", "b1", h0, 40002)))

	s.Rename(t, "alice", "alice2", "alice2@example.org")
	l.Cache().Purge()
	h1 := h0.Add(time.Hour)
	in(event(t, "Login", h1, session("alice2", "s2", h1, 40003)))
	in(event(t, "vnd.cmu.MessageMove", h1.Add(time.Second), map[string]any{"user": "alice2", "vnd.cmu.sessionId": "s2",
		"mailboxID": "archive", "uri": "imap://cyrus.test/user.alice.Archive;UIDVALIDITY=7/;UID=1",
		"oldMailboxID": inboxURI + "/;UID=1", "uidset": "1", "vnd.cmu.oldUidset": "1"}))
	in(event(t, "MessageExpunge", h1.Add(2*time.Second), box("alice2", "s2", map[string]any{"uidset": "1"})))
	in(event(t, "AclChange", h1.Add(3*time.Second), box("alice2", "s2", map[string]any{"aclSubject": "group:finance", "aclRights": "lrs",
		"vnd.cmu.mailboxACL": "alice\tlrswipkxtecdan\tgroup:finance\tlrs\t"})))
	in(event(t, "Logout", h1.Add(5*time.Minute), session("alice2", "s2", h1, 40003)))

	l.Cache().Purge()
	s.Stop() // a third session while the directory is down
	h2 := h0.Add(2 * time.Hour)
	in(event(t, "Login", h2, session("alice2", "s3", h2, 40004)))
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	s.Start(t)
	return dir, s, alice
}

func ldapFlags(s *slapdtest.Server) []string {
	return []string{"--ldap-url", s.URL(), "--ldap-base", slapdtest.Suffix, "--default-domain", slapdtest.Domain}
}

func TestHistoryUserUnderEveryName(t *testing.T) {
	dir, s, alice := identityLog(t)

	// The event stored while the directory was down is named after the
	// resolution pass.
	code, out, errs := bonnieCmd(t, nil, append([]string{"--data", dir, "resolve"}, ldapFlags(s)...)...)
	if code != 0 || !strings.Contains(out, "1 events resolved") {
		t.Fatalf("resolve: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := bonnieCmd(t, nil, append([]string{"--data", dir, "resolve"}, ldapFlags(s)...)...); code != 0 || !strings.Contains(out, "0 events") {
		t.Errorf("a second resolve: %d %s", code, out)
	}

	var first historyResult
	for i, q := range []string{"alice", "alice2", "alice.smith@example.org", "ALICE2@example.org", alice} {
		code, out, errs := bonnieCmd(t, nil, "--data", dir, "history", "user", q, "--json")
		if code != 0 {
			t.Fatalf("history user %s: exit %d: %s", q, code, errs)
		}
		var res historyResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("history user %s: %v\n%s", q, err, out)
		}
		if len(res.Persons) != 1 || res.Persons[0].ID != alice {
			t.Fatalf("history user %s: persons %+v", q, res.Persons)
		}
		if i == 0 {
			first = res
			continue
		}
		if len(res.Events) != len(first.Events) {
			t.Errorf("history user %s: %d events, history user alice: %d", q, len(res.Events), len(first.Events))
		}
	}
	var kinds, logins []string
	for i, e := range first.Events {
		kinds = append(kinds, e.Event)
		logins = append(logins, e.Login)
		if e.ID != alice {
			t.Errorf("event %d: id %s", i, e.ID)
		}
		if i > 0 && e.Time.Before(first.Events[i-1].Time) {
			t.Errorf("event %d out of time order", i)
		}
	}
	wantKinds := []string{"Login", "MessageRead", "FlagsSet", "Logout", "Login", "MessageMove", "MessageExpunge", "AclChange", "Logout", "Login"}
	if !slices.Equal(kinds, wantKinds) {
		t.Fatalf("events %v, want %v", kinds, wantKinds)
	}
	wantLogins := []string{"alice", "alice", "alice", "alice", "alice2", "alice2", "alice2", "alice2", "alice2", "alice2"}
	if !slices.Equal(logins, wantLogins) {
		t.Errorf("logins %v", logins)
	}
	l1 := first.Events[0]
	if l1.Client != "198.51.100.4:40001" || l1.Duration != "1m30s" || l1.DurationSeconds == nil || *l1.DurationSeconds != 90 {
		t.Errorf("first login: %+v", l1)
	}
	if e := first.Events[2]; !slices.Equal(e.Flags, []string{`\Flagged`}) || !slices.Equal(e.UIDs, []uint32{1}) || e.Mailbox != "user.alice" {
		t.Errorf("flag change: %+v", e)
	}
	if e := first.Events[5]; e.From != "user.alice" || e.Mailbox != "user.alice.Archive" {
		t.Errorf("move: %+v", e)
	}
	if e := first.Events[7]; e.ACLSubject != "group:finance" || e.ACLRights == nil || *e.ACLRights != "lrs" ||
		e.ACLSubjectID != s.GroupUUID(t, "finance") || !slices.Equal(e.ACLMembers, []string{"alice2", "carol"}) {
		t.Errorf("acl change: %+v", e)
	}
	if e := first.Events[4]; e.Duration != "5m0s" {
		t.Errorf("second session: %+v", e)
	}
	if e := first.Events[9]; e.ResolvedBy == 0 || e.Login != "alice2" {
		t.Errorf("the login while the directory was down: %+v", e)
	}
	names := first.Persons[0].Names
	for _, n := range []string{"alice", "alice2", "alice@example.org", "alice.smith@example.org", "alice2@example.org"} {
		if !slices.Contains(names, n) {
			t.Errorf("names %v lack %s", names, n)
		}
	}
	// Bob is another person.
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "history", "user", "bob")
	if code != 0 || strings.Contains(out, "alice") || !strings.Contains(out, "Login") {
		t.Errorf("history user bob: %d\n%s", code, out)
	}
	code, out, errs = bonnieCmd(t, nil, "--data", dir, "history", "user", "alice")
	if code != 0 || !strings.Contains(out, "client=198.51.100.4:40001") || !strings.Contains(out, "identified later") {
		t.Errorf("text history: %d\n%s%s", code, out, errs)
	}
	if code, _, errs := bonnieCmd(t, nil, "--data", dir, "history", "user", "nobody"); code != 1 || !strings.Contains(errs, "nobody") {
		t.Errorf("history user nobody: %d %s", code, errs)
	}
}

func TestWhois(t *testing.T) {
	dir, s, alice := identityLog(t)
	whois := func(args ...string) whoisResult {
		t.Helper()
		code, out, errs := bonnieCmd(t, nil, append([]string{"--data", dir, "whois", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("whois %v: exit %d: %s", args, code, errs)
		}
		var r whoisResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("whois %v: %v\n%s", args, err, out)
		}
		return r
	}
	// Before the rename, "alice" was alice with her old names and groups.
	r := whois("alice", "--at", h0.Add(30*time.Second).Format(time.RFC3339))
	if r.Log == nil || r.Log.Identity.ID != alice || r.Log.Identity.Login != "alice" || r.Log.Position != 3 {
		t.Fatalf("whois alice at 09:00:30: %+v", r.Log)
	}
	if r.Directory != nil {
		t.Error("asked the directory without --ldap-url")
	}
	// After it, alice2 is the same person. Her last login, while the
	// directory was down, is pending until a resolution pass.
	r = whois("alice2")
	if r.Log == nil || r.Log.Identity.ID != alice || r.Log.Identity.Login != "alice2" {
		t.Fatalf("whois alice2: %+v", r.Log)
	}
	if r.Pending == nil || r.Pending.Position != 11 || !r.Pending.Identity.Unresolved {
		t.Errorf("whois alice2 pending: %+v", r.Pending)
	}
	if code, out, _ := bonnieCmd(t, nil, append([]string{"--data", dir, "resolve"}, ldapFlags(s)...)...); code != 0 || !strings.Contains(out, "1 events") {
		t.Fatalf("resolve: %d %s", code, out)
	}
	if r = whois("alice2"); r.Pending != nil || r.Log.Position != 11 || r.Log.ResolvedBy == 0 || !r.Log.Identity.Late {
		t.Errorf("whois alice2 after the resolution pass: log %+v pending %+v", r.Log, r.Pending)
	}
	// "alice" is no longer hers: the ACL entry "alice" stored after the
	// rename resolved to nobody in the directory; the log keeps both.
	r = whois("alice")
	if r.Log == nil || r.Log.Identity.Kind != bonnie.IdentityLogin || r.Log.Identity.Reason == "" {
		t.Errorf("whois alice now: %+v", r.Log.Identity)
	}
	if len(r.Changes) != 2 || r.Changes[0].Identity.ID != alice || r.Changes[1].Identity.Kind != bonnie.IdentityLogin {
		t.Errorf("whois alice over time: %+v", r.Changes)
	}
	// Before anything named it, the log has no answer.
	code, _, _ := bonnieCmd(t, nil, "--data", dir, "whois", "alice2", "--at", "2026-11-28")
	if code != 1 {
		t.Errorf("whois alice2 before the rename: exit %d", code)
	}
	// The group, as the ACL snapshot had it.
	if r = whois("group:finance"); r.Log == nil || r.Log.Identity.Kind != bonnie.IdentityGroup || len(r.Log.Identity.Members) != 2 {
		t.Errorf("whois group:finance: %+v", r.Log)
	}
	// With the directory configured, its present answer too.
	r = whois(append([]string{"alice2"}, ldapFlags(s)...)...)
	if r.Directory == nil || r.Directory.ID != alice || r.Directory.Login != "alice2" {
		t.Errorf("directory answer: %+v (%s)", r.Directory, r.DirectoryError)
	}
	// The same settings from a config file.
	cfg := filepath.Join(t.TempDir(), "identity.yaml")
	os.WriteFile(cfg, []byte("ldap-url: "+s.URL()+"\nldap-base: "+slapdtest.Suffix+"\nldap:\n  requestTimeout: 3s\n"), 0o600)
	if r = whois("carol", "--identity-config", cfg); r.Directory == nil || r.Directory.ID != s.UUID(t, "carol") {
		t.Errorf("directory answer via config file: %+v (%s)", r.Directory, r.DirectoryError)
	}
	code, out, errs := bonnieCmd(t, nil, "--data", dir, "whois", "alice")
	if code != 0 || !strings.Contains(out, "login=alice ") || !strings.Contains(out, "over time") || !strings.Contains(out, "not in the directory") {
		t.Errorf("text whois: %d\n%s%s", code, out, errs)
	}
}

func TestResolveNeedsADirectory(t *testing.T) {
	dir := newLog(t)
	code, _, errs := bonnieCmd(t, nil, "--data", dir, "resolve")
	if code != 1 || !strings.Contains(errs, "--ldap-url") {
		t.Errorf("resolve without a directory: %d %s", code, errs)
	}
	f := filepath.Join(t.TempDir(), "ids.yaml")
	os.WriteFile(f, []byte("users: [{id: u-alice, login: alice}]\n"), 0o600)
	// Events stored without a resolver have nothing unresolved.
	if code, out, errs := bonnieCmd(t, nil, "--data", dir, "resolve", "--identity-file", f); code != 0 || !strings.Contains(out, "0 events") {
		t.Errorf("resolve with a file: %d %s %s", code, out, errs)
	}
	// A log without identities still answers by login (pass-through).
	code, out, _ := bonnieCmd(t, nil, "--data", dir, "history", "user", "alice", "--json")
	var res historyResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res.Persons) != 1 || res.Persons[0].ID != "alice" || len(res.Events) == 0 {
		t.Errorf("history of a log without identities: %d %+v", code, res.Persons)
	}
}

// TestHistoryMessageAndFolder runs the discovery commands over the real
// capture sequence, without a daemon: the index is built from the log on
// demand, and every query is recorded in the log.
func TestHistoryMessageAndFolder(t *testing.T) {
	dir := newLog(t)
	code, out, errs := bonnieCmd(t, nil, "--data", dir, "history", "message", "harness-2@example.org", "--json")
	if code != 0 {
		t.Fatalf("history message: %d %s", code, errs)
	}
	var tl discovery.MessageTimeline
	if err := json.Unmarshal([]byte(out), &tl); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var acts []string
	for _, e := range tl.Entries {
		acts = append(acts, e.Action)
		if e.Position == 0 || e.Time.IsZero() {
			t.Errorf("entry without position or time: %+v", e)
		}
	}
	want := []string{"appended", "read", "flagged", "flagged", "unflagged", "unread", "read", "flagged", "unflagged", "flagged",
		"moved", "expunged", "renamed", "deleted"}
	if !slices.Equal(acts, want) {
		t.Errorf("actions %v\nwant %v", acts, want)
	}
	if e := tl.Entries[0]; e.Login != "alice" || e.Client != "127.0.0.1:43172" || e.Path != "user.alice" {
		t.Errorf("first entry: %+v", e)
	}

	code, out, errs = bonnieCmd(t, nil, "--data", dir, "history", "message", "<harness-2@example.org>")
	if code != 0 || !strings.Contains(out, "moved") || !strings.Contains(out, "from user.alice") || !strings.Contains(out, "127.0.0.1:43172") {
		t.Errorf("text: %d\n%s%s", code, out, errs)
	}
	if code, _, errs := bonnieCmd(t, nil, "--data", dir, "history", "message", "<none@example.org>"); code != 1 || !strings.Contains(errs, "none@example.org") {
		t.Errorf("unknown message: %d %s", code, errs)
	}

	code, out, errs = bonnieCmd(t, nil, "--data", dir, "history", "folder", "user.alice.Projects")
	if code != 0 {
		t.Fatalf("history folder: %d %s", code, errs)
	}
	for _, s := range []string{"named user.alice.Work", "named user.alice.Projects", "created", "acl granted", `bob="lrs"`, "acl revoked", "renamed", "deleted"} {
		if !strings.Contains(out, s) {
			t.Errorf("history folder lacks %q:\n%s", s, out)
		}
	}
	// A folder named in modified UTF-7 on the wire, by its decoded name.
	code, out, errs = bonnieCmd(t, nil, "--data", dir, "history", "folder", "user.alice.Bücher")
	if code != 0 || !strings.Contains(out, "created") || !strings.Contains(out, "named user.alice.Bücher") {
		t.Errorf("history folder user.alice.Bücher: %d\n%s%s", code, out, errs)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "history", "folder", "kwv2nc0rutdhxg2phbung3vj", "--messages", "--json")
	var fts []discovery.FolderTimeline
	if code != 0 || json.Unmarshal([]byte(out), &fts) != nil || len(fts) != 1 || len(fts[0].Entries) <= 8 {
		t.Errorf("history folder --messages: %d\n%s", code, out)
	}

	// The person's sessions are summarised.
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "history", "user", "alice", "--json")
	var res historyResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("history user: %d\n%s", code, out)
	}
	var main *sessionSummary
	for i := range res.Sessions {
		if res.Sessions[i].Client == "127.0.0.1:43172" {
			main = &res.Sessions[i]
		}
	}
	if main == nil || main.End == nil || main.EndPosition == 0 || main.Events < 20 {
		t.Fatalf("sessions: %+v", res.Sessions)
	}
	for _, e := range res.Events {
		if e.Session == main.Session && e.Client != main.Client {
			t.Errorf("event in the session without its client: %+v", e)
		}
	}

	// Each question above is a vnd.bonnie.Query event in the log.
	lg, err := sqlite.Open(context.Background(), filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	var commands []string
	if err := eachRecord(context.Background(), lg, func(rec bonnie.Record) {
		if rec.Event.Type == bonnie.Query {
			var q discovery.Asked
			_ = json.Unmarshal(rec.Event.Extra["vnd.bonnie.query"], &q)
			if q.By == "" || rec.Event.User != q.By {
				t.Errorf("query without its asker: %s", rec.Event.Raw)
			}
			commands = append(commands, q.Command)
		}
	}); err != nil {
		t.Fatal(err)
	}
	wantCmds := []string{"history message", "history message", "history message", "history folder", "history folder", "history folder", "history user"}
	if !slices.Equal(commands, wantCmds) {
		t.Errorf("recorded queries %v, want %v", commands, wantCmds)
	}
}
