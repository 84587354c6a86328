package discovery_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// directory is a Resolver whose answers change at a time, like a real
// directory: carol joins group finance at joined.
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

// bodies is a BodyFetcher serving scripted messages by folder and UID.
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
		raw := b.msgs[fmt.Sprintf("%s/%d", ev.MailboxID, uid)]
		info, err := b.store.Put(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, bonnie.BodyRef{UID: uid, Digest: info.Digest, Size: info.Size})
	}
	return out, nil
}

// kolabEvent is a Kolab groupware message holding one appointment.
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

// scripted is a day in the shared calendar folder user.alice.Calendar
// (uniqueid cal1), whose ACL grants group finance read access from 09:05
// to 12:00; carol joins finance at 11:00.
func scripted(t *testing.T) (*discovery.Index, bonnie.Store) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	store, err := blob.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	at := func(hm string) string {
		d, _ := time.ParseDuration(strings.Replace(hm, ":", "h", 1) + "m")
		return day.Add(d).Format(time.RFC3339)
	}
	fetch := &bodies{store: store, msgs: map[string][]byte{
		"cal1/1": kolabEvent("evt-1", "Budget", "Room 1"),
		"cal1/2": kolabEvent("evt-1", "Budget review", "Room 2"),
		"inb1/1": []byte("From: Dave <dave@example.org>\r\nTo: alice@example.org\r\nSubject: Quarterly numbers\r\nMessage-ID: <q@example.org>\r\n\r\nThe turnover grew by twelve percent.\r\n"),
	}}
	lg := openLog(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg, Resolver: directory{joined: day.Add(11 * time.Hour)}, Bodies: fetch})
	if err != nil {
		t.Fatal(err)
	}
	const (
		cal   = `"uri":"imap://h/user.alice.Calendar;UIDVALIDITY=5","mailboxID":"cal1"`
		inb   = `"uri":"imap://h/user.alice;UIDVALIDITY=4","mailboxID":"inb1"`
		own   = `{"subject":"alice","rights":"lrswipkxtecdan"}`
		fin   = `{"subject":"group:finance","rights":"lrs"}`
		sessA = `"vnd.cmu.sessionId":"s-alice"`
		sessB = `"vnd.cmu.sessionId":"s-bob"`
		sessC = `"vnd.cmu.sessionId":"s-carol"`
	)
	acl := func(entries ...string) string {
		return `"vnd.cmu.mailboxACL":"` + strings.ReplaceAll(aclString(entries), `"`, `\"`) + `"`
	}
	for _, js := range []string{
		`{"event":"Login","timestamp":"` + at("09:00") + `","user":"alice",` + sessA + `,"clientIP":"10.0.0.1","clientPort":5000,"service":"imap"}`,
		`{"event":"MailboxCreate","timestamp":"` + at("09:01") + `","user":"alice",` + sessA + `,` + cal + `,` + acl(own) + `}`,
		`{"event":"AclChange","timestamp":"` + at("09:05") + `","user":"alice",` + sessA + `,` + cal + `,"aclSubject":"group:finance","aclRights":"lrs",` + acl(own, fin) + `}`,
		`{"event":"MessageAppend","timestamp":"` + at("09:10") + `","user":"alice",` + sessA + `,"uri":"imap://h/user.alice.Calendar;UIDVALIDITY=5/;UID=1","mailboxID":"cal1","uidset":"1",` + acl(own, fin) + `}`,
		`{"event":"MessageNew","timestamp":"` + at("09:20") + `","user":"alice","service":"lmtpunix","uri":"imap://h/user.alice;UIDVALIDITY=4/;UID=1","mailboxID":"inb1","uidset":"1",` + acl(own) + `}`,
		// The edit: the new version appended, the old one trashed and expunged.
		`{"event":"MessageAppend","timestamp":"` + at("10:00") + `","user":"alice",` + sessA + `,"uri":"imap://h/user.alice.Calendar;UIDVALIDITY=5/;UID=2","mailboxID":"cal1","uidset":"2",` + acl(own, fin) + `}`,
		`{"event":"MessageTrash","timestamp":"` + at("10:00") + `","user":"alice",` + sessA + `,` + cal + `,"uidset":"1",` + acl(own, fin) + `}`,
		`{"event":"MessageExpunge","timestamp":"` + at("10:01") + `","user":"alice",` + sessA + `,` + cal + `,"uidset":"1",` + acl(own, fin) + `}`,
		`{"event":"Login","timestamp":"` + at("10:30") + `","user":"bob",` + sessB + `,"clientIP":"10.0.0.2","clientPort":6000,"service":"imap"}`,
		`{"event":"MessageRead","timestamp":"` + at("10:31") + `","user":"bob",` + sessB + `,` + cal + `,"uidset":"2",` + acl(own, fin) + `}`,
		`{"event":"Logout","timestamp":"` + at("10:40") + `","user":"bob",` + sessB + `}`,
		`{"event":"Login","timestamp":"` + at("11:30") + `","user":"carol",` + sessC + `,"clientIP":"10.0.0.3","clientPort":7000,"service":"imap"}`,
		`{"event":"MessageRead","timestamp":"` + at("11:31") + `","user":"carol",` + sessC + `,` + cal + `,"uidset":"2",` + acl(own, fin) + `}`,
		`{"event":"AclChange","timestamp":"` + at("12:00") + `","user":"alice",` + sessA + `,` + cal + `,"aclSubject":"group:finance",` + acl(own) + `}`,
		`{"event":"Logout","timestamp":"` + at("12:30") + `","user":"alice",` + sessA + `}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(js), "test"); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
	}
	x := openIndex(t, discovery.Path(dir), store)
	if _, err := x.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	return x, lg
}

// aclString writes ACL entries as Cyrus's vnd.cmu.mailboxACL does.
func aclString(entries []string) string {
	var b strings.Builder
	for _, e := range entries {
		// {"subject":"S","rights":"R"}
		parts := strings.Split(e, `"`)
		b.WriteString(parts[3] + `\t` + parts[7] + `\t`)
	}
	return b.String()
}

func TestScriptedDay(t *testing.T) {
	ctx := context.Background()
	x, _ := scripted(t)
	day := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

	t.Run("group access at a time", func(t *testing.T) {
		for _, tc := range []struct {
			at   string
			want []string
		}{
			{"09:02", []string{"id-alice"}},
			{"10:35", []string{"id-alice", "id-bob"}},             // finance: alice and bob
			{"11:35", []string{"id-alice", "id-bob", "id-carol"}}, // carol joined at 11:00
			{"12:10", []string{"id-alice"}},                       // revoked at 12:00
		} {
			d, _ := time.ParseDuration(strings.Replace(tc.at, ":", "h", 1) + "m")
			fas, err := x.WhoCouldRead(ctx, "user.alice.Calendar", day.Add(d))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range fas[0].Readers {
				got = append(got, r.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("at %s: %v, want %v", tc.at, got, tc.want)
			}
		}
		pa, err := x.ReadableBy(ctx, "bob@example.org", day.Add(10*time.Hour+35*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if len(pa.Folders) != 1 || pa.Folders[0].Path != "user.alice.Calendar" || !slices.Equal(pa.Folders[0].Via, []string{"group:finance"}) {
			t.Errorf("bob: %+v", pa)
		}
		if !slices.Contains(pa.Person.IDs, "id-bob") || len(pa.Groups) != 1 || pa.Groups[0].Name != "finance" {
			t.Errorf("bob's identity: %+v", pa)
		}
	})

	t.Run("object revisions and diff", func(t *testing.T) {
		h, err := x.Object(ctx, "evt-1")
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Revisions) != 2 || h.Kind != "application/x-vnd.kolab.event" {
			t.Fatalf("revisions: %+v", h)
		}
		r1, r2 := h.Revisions[0], h.Revisions[1]
		if r1.Login != "alice" || r1.ActorID != "id-alice" || r1.Client != "10.0.0.1:5000" || r2.Rev != 2 {
			t.Errorf("revisions: %+v", h.Revisions)
		}
		var ended []string
		for _, e := range r1.Ended {
			ended = append(ended, e.Action)
		}
		if !slices.Equal(ended, []string{"trashed", "expunged"}) || len(r2.Ended) != 0 {
			t.Errorf("ended: %v / %v", ended, r2.Ended)
		}
		c, err := x.RevisionContent(ctx, "evt-1", 1)
		if err != nil {
			t.Fatal(err)
		}
		if c.MediaType != "text/calendar" || !strings.Contains(c.Text, "SUMMARY:Budget\r\n") {
			t.Errorf("content: %s %q", c.MediaType, c.Text)
		}
		d, err := x.Diff(ctx, "evt-1", 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		want := []discovery.PropertyChange{
			{Property: "VCALENDAR/VEVENT/LOCATION", From: "Room 1", To: "Room 2"},
			{Property: "VCALENDAR/VEVENT/SUMMARY", From: "Budget", To: "Budget review"},
		}
		if d.Format != "ical" || !slices.Equal(d.Changes, want) {
			t.Errorf("diff: %+v", d)
		}
		if _, err := x.RevisionContent(ctx, "evt-1", 3); err == nil {
			t.Error("no error for revision 3")
		}
	})

	t.Run("person sessions", func(t *testing.T) {
		p, ss, err := x.Sessions(ctx, "carol", true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.IDs, []string{"id-carol"}) || len(ss) != 1 || ss[0].Client != "10.0.0.3:7000" || len(ss[0].Entries) != 2 {
			t.Fatalf("carol: %+v %+v", p, ss)
		}
		if e := ss[0].Entries[1]; e.Action != discovery.ActRead || e.Path != "user.alice.Calendar" || e.Client != "10.0.0.3:7000" {
			t.Errorf("carol's read: %+v", e)
		}
		_, ss, _ = x.Sessions(ctx, "bob", false)
		if len(ss) != 1 || ss[0].Duration != "10m0s" {
			t.Errorf("bob: %+v", ss)
		}
	})

	t.Run("search", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			q    discovery.Search
			want []string // message ids
		}{
			{"full text", discovery.Search{Text: "turnover"}, []string{"<q@example.org>"}},
			{"full text, no match", discovery.Search{Text: "nothing"}, nil},
			{"sender", discovery.Search{Sender: "dave@"}, []string{"<q@example.org>"}},
			{"recipient and subject", discovery.Search{Recipient: "alice@example.org", Subject: "evt-1", Types: []bonnie.EventType{bonnie.MessageAppend}},
				[]string{"<Budget.evt-1@example.org>", "<Budget-review.evt-1@example.org>"}},
			{"custodian and range", discovery.Search{Custodian: "alice", From: day.Add(10 * time.Hour), To: day.Add(11 * time.Hour),
				Types: []bonnie.EventType{bonnie.MessageRead}}, []string{"<Budget-review.evt-1@example.org>"}},
			{"actor", discovery.Search{Actor: "carol@example.org"}, []string{"<Budget-review.evt-1@example.org>"}},
			{"folder", discovery.Search{Folder: "user.alice", Types: []bonnie.EventType{bonnie.MessageNew}}, []string{"<q@example.org>"}},
		} {
			hits, err := x.Search(ctx, tc.q)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var got []string
			for _, h := range hits {
				got = append(got, h.MessageID)
				if h.Position == 0 {
					t.Errorf("%s: hit without position", tc.name)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}

func TestProperties(t *testing.T) {
	for _, tc := range []struct {
		name, mt, a, b string
		want           []discovery.PropertyChange
	}{
		{"vcard", "text/vcard",
			"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Jane Gi\r\nEMAIL;TYPE=work:jane.gi@example.org\r\nEND:VCARD\r\n",
			"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Jane Doe\r\nEMAIL;TYPE=work:jane.doe@example.org\r\nTEL:+49 30 1234\r\nEND:VCARD\r\n",
			[]discovery.PropertyChange{
				{Property: "EMAIL", From: "jane.gi@example.org (TYPE=work)", To: "jane.doe@example.org (TYPE=work)"},
				{Property: "FN", From: "Jane Gi", To: "Jane Doe"},
				{Property: "TEL", To: "+49 30 1234"},
			}},
		{"kolab xml", "application/calendar+xml",
			`<icalendar xmlns="urn:ietf:params:xml:ns:icalendar-2.0"><vcalendar><components><vevent><properties><summary><text>Budget</text></summary><location><text>Room 1</text></location></properties></vevent></components></vcalendar></icalendar>`,
			`<icalendar xmlns="urn:ietf:params:xml:ns:icalendar-2.0"><vcalendar><components><vevent><properties><summary><text>Budget</text></summary><location><text>Room 2</text></location><attendee><cal-address>mailto:bob@example.org</cal-address></attendee></properties></vevent></components></vcalendar></icalendar>`,
			[]discovery.PropertyChange{
				{Property: "icalendar/vcalendar/components/vevent/properties/attendee/cal-address", To: "mailto:bob@example.org"},
				{Property: "icalendar/vcalendar/components/vevent/properties/location/text", From: "Room 1", To: "Room 2"},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _, err := discovery.Properties(tc.mt, []byte(tc.a))
			if err != nil {
				t.Fatal(err)
			}
			b, _, err := discovery.Properties(tc.mt, []byte(tc.b))
			if err != nil {
				t.Fatal(err)
			}
			if got := discovery.DiffProperties(a, b); !slices.Equal(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
