package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/httpapi"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// directory: alice and bob are in finance; carol joins at joined.
type directory struct{ joined time.Time }

func (d directory) Resolve(_ context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	fin := bonnie.Ref{ID: "g-fin", Name: "finance"}
	user := func(login string, groups ...bonnie.Ref) bonnie.Identity {
		return bonnie.Identity{Subject: subject, Kind: bonnie.IdentityUser, ID: "id-" + login, Login: login,
			Addresses: []string{login + "@example.org"}, Groups: groups, Source: "test"}
	}
	switch subject {
	case "alice", "bob":
		return user(subject, fin), nil
	case "carol":
		if !at.Before(d.joined) {
			return user(subject, fin), nil
		}
		return user(subject), nil
	case "group:finance":
		members := []bonnie.Ref{{ID: "id-alice", Name: "alice"}, {ID: "id-bob", Name: "bob"}}
		if !at.Before(d.joined) {
			members = append(members, bonnie.Ref{ID: "id-carol", Name: "carol"})
		}
		return bonnie.Identity{Subject: subject, Kind: bonnie.IdentityGroup, ID: "g-fin", Login: "finance", Members: members, Source: "test"}, nil
	}
	return bonnie.PassThrough{}.Resolve(context.Background(), subject, at)
}

// bodies serves scripted messages by folder and UID.
type bodies struct {
	store *blob.Store
	mu    sync.Mutex
	msgs  map[string][]byte
}

func (b *bodies) FetchBodies(_ context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
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

func kolabEvent(uid, summary, location string) []byte {
	ics := strings.Join([]string{"BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//bonnie test//EN", "BEGIN:VEVENT",
		"UID:" + uid, "DTSTAMP:20261128T090000Z", "DTSTART:20261201T100000Z", "SUMMARY:" + summary,
		"LOCATION:" + location, "END:VEVENT", "END:VCALENDAR", ""}, "\r\n")
	return []byte(strings.Join([]string{
		"From: alice@example.org", "To: alice@example.org", "Subject: " + uid,
		"Message-ID: <" + strings.ReplaceAll(summary, " ", "-") + "." + uid + "@example.org>", "X-Kolab-Type: application/x-vnd.kolab.event",
		"MIME-Version: 1.0", `Content-Type: multipart/mixed; boundary="b1"`, "",
		"--b1", "Content-Type: text/plain", "", "This is a Kolab groupware object.",
		"--b1", "Content-Type: text/calendar; charset=utf-8", `Content-Disposition: attachment; filename="kolab.ics"`, "",
		ics + "--b1--", ""}, "\r\n"))
}

// TestScriptedDay: a day in alice's calendar folder, shared with group
// finance from 09:05 to 12:00 (carol joins finance at 11:00), with a
// Kolab appointment edited at 10:00 and a message in alice's inbox,
// through the API: group membership at the time decides, object
// revisions and diffs follow it, a user's full-text search does not
// reach mail they could not read.
func TestScriptedDay(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := blob.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	at := func(hm string) time.Time {
		d, _ := time.ParseDuration(strings.Replace(hm, ":", "h", 1) + "m")
		return day.Add(d)
	}
	ts := func(hm string) string { return at(hm).Format(time.RFC3339) }
	fetch := &bodies{store: store, msgs: map[string][]byte{
		"cal1/1": kolabEvent("evt-1", "Budget", "Room 1"),
		"cal1/2": kolabEvent("evt-1", "Budget review", "Room 2"),
		"inb1/1": []byte("From: Dave <dave@example.org>\r\nTo: alice@example.org\r\nSubject: Quarterly numbers\r\nMessage-ID: <q@example.org>\r\n\r\nThe turnover grew by twelve percent.\r\n"),
	}}
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err := bonnie.New(bonnie.Options{Store: lg, Resolver: directory{joined: at("11:00")}, Bodies: fetch, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	const (
		cal   = `"uri":"imap://h/user.alice.Calendar;UIDVALIDITY=5","mailboxID":"cal1"`
		own   = `alice\tlrswipkxtecdan\t`
		fin   = `group:finance\tlrs\t`
		sessA = `"vnd.cmu.sessionId":"s-alice"`
		sessB = `"vnd.cmu.sessionId":"s-bob"`
		sessC = `"vnd.cmu.sessionId":"s-carol"`
	)
	acl := func(entries ...string) string { return `"vnd.cmu.mailboxACL":"` + strings.Join(entries, "") + `"` }
	for _, js := range []string{
		`{"event":"Login","timestamp":"` + ts("09:00") + `","user":"alice",` + sessA + `,"clientIP":"10.0.0.1","clientPort":5000,"service":"imap"}`,
		`{"event":"MailboxCreate","timestamp":"` + ts("09:01") + `","user":"alice",` + sessA + `,` + cal + `,` + acl(own) + `}`,
		`{"event":"AclChange","timestamp":"` + ts("09:05") + `","user":"alice",` + sessA + `,` + cal + `,"aclSubject":"group:finance","aclRights":"lrs",` + acl(own, fin) + `}`,
		`{"event":"MessageAppend","timestamp":"` + ts("09:10") + `","user":"alice",` + sessA + `,"uri":"imap://h/user.alice.Calendar;UIDVALIDITY=5/;UID=1","mailboxID":"cal1","uidset":"1",` + acl(own, fin) + `}`,
		`{"event":"MessageNew","timestamp":"` + ts("09:20") + `","user":"alice","service":"lmtpunix","uri":"imap://h/user.alice;UIDVALIDITY=4/;UID=1","mailboxID":"inb1","uidset":"1",` + acl(own) + `}`,
		`{"event":"MessageAppend","timestamp":"` + ts("10:00") + `","user":"alice",` + sessA + `,"uri":"imap://h/user.alice.Calendar;UIDVALIDITY=5/;UID=2","mailboxID":"cal1","uidset":"2",` + acl(own, fin) + `}`,
		`{"event":"MessageTrash","timestamp":"` + ts("10:00") + `","user":"alice",` + sessA + `,` + cal + `,"uidset":"1",` + acl(own, fin) + `}`,
		`{"event":"MessageExpunge","timestamp":"` + ts("10:01") + `","user":"alice",` + sessA + `,` + cal + `,"uidset":"1",` + acl(own, fin) + `}`,
		`{"event":"Login","timestamp":"` + ts("10:30") + `","user":"bob",` + sessB + `,"clientIP":"10.0.0.2","clientPort":6000,"service":"imap"}`,
		`{"event":"MessageRead","timestamp":"` + ts("10:31") + `","user":"bob",` + sessB + `,` + cal + `,"uidset":"2",` + acl(own, fin) + `}`,
		`{"event":"Logout","timestamp":"` + ts("10:40") + `","user":"bob",` + sessB + `}`,
		`{"event":"Login","timestamp":"` + ts("11:30") + `","user":"carol",` + sessC + `,"clientIP":"10.0.0.3","clientPort":7000,"service":"imap"}`,
		`{"event":"MessageRead","timestamp":"` + ts("11:31") + `","user":"carol",` + sessC + `,` + cal + `,"uidset":"2",` + acl(own, fin) + `}`,
		`{"event":"AclChange","timestamp":"` + ts("12:00") + `","user":"alice",` + sessA + `,` + cal + `,"aclSubject":"group:finance",` + acl(own) + `}`,
		`{"event":"Logout","timestamp":"` + ts("12:30") + `","user":"alice",` + sessA + `}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(js), "test"); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
	}
	x, err := discovery.Open(ctx, discovery.Path(dir), store)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	e := &env{t: t, lg: lg, eng: eng, x: x, tok: map[string]string{}, now: day.Add(24 * time.Hour)}
	var lines []string
	for who, role := range map[string]httpapi.Role{"auditor": httpapi.RoleAuditor, "bob": httpapi.RoleUser,
		"carol@example.org": httpapi.RoleUser, "dave": httpapi.RoleUser} {
		tok, line, err := httpapi.NewToken(role, who, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		e.tok[strings.TrimSuffix(who, "@example.org")], lines = tok, append(lines, line)
	}
	e.tokens = filepath.Join(dir, "tokens")
	if err := os.WriteFile(e.tokens, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	toks, err := httpapi.LoadTokens(e.tokens)
	if err != nil {
		t.Fatal(err)
	}
	if e.api, err = httpapi.New(httpapi.Options{Index: x, Log: lg, Recorder: eng, Tokens: toks, Logger: quiet,
		Now: func() time.Time { return e.now }}); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.api)
	defer e.srv.Close()

	t.Run("folder through a group, at the time", func(t *testing.T) {
		const path = "/v1/history/folder/user.alice.Calendar?messages=true"
		seen := map[string][]string{}
		for _, who := range []string{"auditor", "bob", "carol", "dave"} {
			var tl []timeline
			if code := e.as(who, path, &tl); code != http.StatusOK || len(tl) != 1 {
				t.Fatalf("%s: %d", who, code)
			}
			for _, en := range tl[0].Entries {
				s := en.Time.Format("15:04") + " redacted"
				if !en.Redacted {
					s = en.Time.Format("15:04") + " " + en.Action
				}
				seen[who] = append(seen[who], s)
			}
		}
		want := map[string]string{
			"auditor": "09:01 created,09:05 acl granted,09:10 appended,10:00 appended,10:00 trashed,10:01 expunged,10:31 read,11:31 read,12:00 acl revoked",
			// bob is in finance all day: from the grant to the revocation.
			"bob": "09:01 redacted,09:05 acl granted,09:10 appended,10:00 appended,10:00 trashed,10:01 expunged,10:31 read,11:31 read,12:00 redacted",
			// carol joined finance at 11:00.
			"carol": "09:01 redacted,09:05 redacted,09:10 redacted,10:00 redacted,10:00 redacted,10:01 redacted,10:31 redacted,11:31 read,12:00 redacted",
			"dave":  "09:01 redacted,09:05 redacted,09:10 redacted,10:00 redacted,10:00 redacted,10:01 redacted,10:31 redacted,11:31 redacted,12:00 redacted",
		}
		for who, w := range want {
			if got := strings.Join(seen[who], ","); got != w {
				t.Errorf("%s:\n got %s\nwant %s", who, got, w)
			}
		}
		for who, code := range map[string]int{"bob": 200, "carol": 403, "dave": 403} {
			if got := e.as(who, "/v1/access?folder=user.alice.Calendar&at="+url.QueryEscape(ts("10:35")), nil); got != code {
				t.Errorf("%s, access at 10:35: %d, want %d", who, got, code)
			}
		}
		if got := e.as("carol", "/v1/access?folder=user.alice.Calendar&at="+url.QueryEscape(ts("11:35")), nil); got != 200 {
			t.Errorf("carol, access at 11:35: %d", got)
		}
		if got := e.as("bob", "/v1/access?folder=user.alice.Calendar&at="+url.QueryEscape(ts("12:10")), nil); got != 403 {
			t.Errorf("bob, access after the revocation: %d", got)
		}
	})

	t.Run("object revisions", func(t *testing.T) {
		var bh, dh httpapi.ObjectHistory
		if e.as("bob", "/v1/objects/evt-1", &bh) != 200 || e.as("dave", "/v1/objects/evt-1", &dh) != 200 {
			t.Fatal("object history")
		}
		if len(bh.Revisions) != 2 || bh.Revisions[0].Redacted || bh.Revisions[0].Login != "alice" || len(bh.Revisions[0].Ended) != 2 {
			t.Errorf("bob: %+v", bh)
		}
		if len(dh.Revisions) != 2 || !dh.Revisions[0].Redacted || !dh.Revisions[1].Redacted || dh.Revisions[1].Digest != "" || dh.Kind != "" {
			t.Errorf("dave: %+v", dh)
		}
		var c discovery.Content
		if e.as("bob", "/v1/objects/evt-1?rev=1", &c) != 200 || !strings.Contains(c.Text, "SUMMARY:Budget\r\n") {
			t.Errorf("bob, revision 1: %+v", c)
		}
		var d discovery.ObjectDiff
		if e.as("bob", "/v1/objects/evt-1?diff=1,2", &d) != 200 || len(d.Changes) != 2 {
			t.Errorf("bob, diff: %+v", d)
		}
		for _, p := range []string{"/v1/objects/evt-1?rev=1", "/v1/objects/evt-1?diff=1,2"} {
			if code := e.as("dave", p, nil); code != http.StatusForbidden {
				t.Errorf("dave %s: %d", p, code)
			}
		}
		if code := e.as("bob", "/v1/objects/evt-1?rev=3", nil); code != http.StatusNotFound {
			t.Errorf("revision 3: %d", code)
		}
	})

	t.Run("search", func(t *testing.T) {
		var hits []discovery.Hit
		if e.as("auditor", "/v1/search?text=turnover", &hits) != 200 || len(hits) != 1 {
			t.Errorf("auditor: %+v", hits)
		}
		if e.as("bob", "/v1/search?text=turnover", &hits) != 200 || len(hits) != 0 {
			t.Errorf("bob reaches alice's inbox: %+v", hits)
		}
		if e.as("bob", "/v1/search?subject=evt-1&type=MessageAppend", &hits) != 200 || len(hits) != 2 {
			t.Errorf("bob, the shared calendar: %+v", hits)
		}
		// The limit counts what the user may see: from 09:15 the first
		// hit is the delivery into alice's inbox, which bob cannot read.
		const since = "/v1/search?from=2026-11-28T09:15:00Z"
		var all, first []discovery.Hit
		if e.as("auditor", since+"&limit=1", &first) != 200 || len(first) != 1 {
			t.Fatalf("auditor, limit 1: %+v", first)
		}
		if e.as("bob", since, &all) != 200 || len(all) == 0 || all[0].Position == first[0].Position {
			t.Fatalf("the test needs bob's first hit to differ from the auditor's: %+v %+v", all, first)
		}
		if e.as("bob", since+"&limit=1", &hits) != 200 || len(hits) != 1 || hits[0].Position != all[0].Position {
			t.Errorf("bob, limit 1: %+v, want his first visible hit %d", hits, all[0].Position)
		}
		if e.as("bob", "/v1/search?type=NoSuchEvent", nil) != http.StatusBadRequest {
			t.Error("unknown type accepted")
		}
	})
}
