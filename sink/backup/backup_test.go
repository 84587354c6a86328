package backup_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/backup"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

const (
	fInbox = "inbox0000000000000000000a"
	fWork  = "work00000000000000000000b"
)

// memFetcher stores known bytes, as the IMAP fetcher would from Cyrus.
type memFetcher struct {
	store  *blob.Store
	bodies map[string][]byte // folder/uid
}

func (f *memFetcher) FetchBodies(_ context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	var refs []bonnie.BodyRef
	for _, uid := range ev.UIDs {
		b, ok := f.bodies[fmt.Sprintf("%s/%d", ev.MailboxID, uid)]
		if !ok {
			refs = append(refs, bonnie.BodyRef{UID: uid, Error: "UID not found (expunged?)"})
			continue
		}
		info, err := f.store.Put(b)
		if err != nil {
			return nil, err
		}
		refs = append(refs, bonnie.BodyRef{UID: uid, Digest: info.Digest, Size: info.Size, InternalDate: idate(uid)})
	}
	return refs, nil
}

func idate(uid uint32) time.Time { return time.Date(2020, 1, int(uid), 8, 0, 0, 0, time.UTC) }

func day(m, d int) time.Time { return time.Date(2026, time.Month(m), d, 12, 0, 0, 0, time.UTC) }

func ts(m, d int) string { return day(m, d).Format("2006-01-02T15:04:05.000Z") }

func body(n int) []byte {
	return fmt.Appendf(nil, "Message-ID: <m%d@example.org>\r\nSubject: %d\r\n\r\nFrom here on, body %d.\r\n>From quoted\r\n", n, n, n)
}

type fixture struct {
	lg    *sqlite.Log
	store *blob.Store
}

// setup builds a log: alice's INBOX gets messages 1..5 and Work 6..7;
// flags change, one message moves INBOX -> Work, Work is renamed
// Archive, and INBOX is mass-expunged; INBOX/5's body was never fetched.
func setup(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	store, err := blob.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	f := &memFetcher{store: store, bodies: map[string][]byte{}}
	for i := 1; i <= 4; i++ {
		f.bodies[fmt.Sprintf("%s/%d", fInbox, i)] = body(i)
	}
	f.bodies[fWork+"/1"] = body(6)
	f.bodies[fWork+"/2"] = body(7)
	eng, err := bonnie.New(bonnie.Options{Store: lg, Bodies: f})
	if err != nil {
		t.Fatal(err)
	}
	create := func(id, name string, m, d int) string {
		return fmt.Sprintf(`{"event":"MailboxCreate","timestamp":"%s","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7","user":"alice"}`, ts(m, d), id, name)
	}
	add := func(id, name string, uid, m, d int) string {
		n := uid
		if id == fWork {
			n += 5
		}
		return fmt.Sprintf(`{"event":"MessageAppend","timestamp":"%s","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7/;UID=%d","user":"alice","messages":1,"vnd.cmu.midset":["<m%d@example.org>"]}`, ts(m, d), id, name, uid, n)
	}
	flags := func(typ, id, name, uids, flag string, m, d int) string {
		return fmt.Sprintf(`{"event":"%s","timestamp":"%s","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7","uidset":"%s","flagNames":%q,"user":"alice"}`, typ, ts(m, d), id, name, uids, flag)
	}
	events := []string{
		create(fInbox, "user.alice", 1, 1),
		create(fWork, "user.alice.Work", 1, 1),
		add(fInbox, "user.alice", 1, 1, 2),
		add(fInbox, "user.alice", 2, 1, 3),
		add(fInbox, "user.alice", 3, 1, 4),
		add(fInbox, "user.alice", 4, 1, 5),
		add(fInbox, "user.alice", 5, 1, 6), // body never fetched
		add(fWork, "user.alice.Work", 1, 1, 7),
		add(fWork, "user.alice.Work", 2, 1, 8),
		flags("FlagsSet", fInbox, "user.alice", "1:2", `\Seen`, 2, 1),
		flags("FlagsSet", fInbox, "user.alice", "2", `\Flagged`, 2, 1),
		flags("FlagsSet", fInbox, "user.alice", "3", `\Answered`, 2, 2),
		// Bob reads alice's INBOX/4: his \Seen, not alice's.
		strings.Replace(flags("FlagsSet", fInbox, "user.alice", "4", `\Seen`, 2, 3), `"user":"alice"`, `"user":"bob"`, 1),
		flags("FlagsClear", fInbox, "user.alice", "2", `\Seen`, 3, 1),
		// INBOX/1 moves to Work as UID 3 with its flags.
		fmt.Sprintf(`{"event":"vnd.cmu.MessageMove","timestamp":"%s","mailboxID":"%s","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","oldMailboxID":"imap://h/user.alice;UIDVALIDITY=7","uidset":"3","vnd.cmu.oldUidset":"1","vnd.cmu.midset":["<m1@example.org>"],"user":"alice"}`, ts(4, 1), fWork),
		fmt.Sprintf(`{"event":"MessageExpunge","timestamp":"%s","mailboxID":"%s","uri":"imap://h/user.alice;UIDVALIDITY=7","uidset":"1","user":"alice"}`, ts(4, 1), fInbox),
		fmt.Sprintf(`{"event":"MailboxRename","timestamp":"%s","mailboxID":"%s","uri":"imap://h/user.alice.Archive;UIDVALIDITY=7","oldMailboxID":"imap://h/user.alice.Work;UIDVALIDITY=7","user":"alice"}`, ts(5, 1), fWork),
		// The mass deletion.
		fmt.Sprintf(`{"event":"MessageExpunge","timestamp":"%s","mailboxID":"%s","uri":"imap://h/user.alice;UIDVALIDITY=7","uidset":"2:5","user":"alice"}`, ts(6, 1), fInbox),
	}
	for i, e := range events {
		if _, _, err := eng.Ingest(ctx, []byte(e), "test"); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	return &fixture{lg: lg, store: store}
}

// view is what a plan says of one folder: "n:FLAGS" per body, sorted,
// where n is the body number and "?" a message without a body.
func view(items []backup.Item) map[string][]string {
	out := map[string][]string{}
	for _, it := range items {
		n := "?"
		for i := 1; i <= 7; i++ {
			if it.Digest == blob.Digest(body(i)) {
				n = fmt.Sprint(i)
			}
		}
		out[it.Path] = append(out[it.Path], n+":"+strings.Join(it.Flags, ","))
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}

func plan(t *testing.T, f *fixture, q backup.Query) []backup.Item {
	t.Helper()
	items, err := backup.Plan(context.Background(), f.lg, q)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func TestPlanAtMoments(t *testing.T) {
	f := setup(t)
	cases := []struct {
		name string
		q    backup.Query
		want map[string][]string
	}{
		{"before anything", backup.Query{Mailbox: "user.alice", At: day(1, 1)}, map[string][]string{}},
		{"all appended", backup.Query{Mailbox: "user.alice", At: day(1, 20)}, map[string][]string{
			"user.alice": {"1:", "2:", "3:", "4:", "?:"},
		}},
		{"flags set, bob's read not alice's", backup.Query{Mailbox: "user.alice", At: day(2, 10)}, map[string][]string{
			"user.alice": {`1:\Seen`, `2:\Flagged,\Seen`, `3:\Answered`, "4:", "?:"},
		}},
		{"recursive, seen cleared", backup.Query{Mailbox: "user.alice", Recursive: true, At: day(3, 10)}, map[string][]string{
			"user.alice":      {`1:\Seen`, `2:\Flagged`, `3:\Answered`, "4:", "?:"},
			"user.alice.Work": {"6:", "7:"},
		}},
		{"after the move", backup.Query{Mailbox: "user.alice", Recursive: true, At: day(4, 10)}, map[string][]string{
			"user.alice":      {`2:\Flagged`, `3:\Answered`, "4:", "?:"},
			"user.alice.Work": {`1:\Seen`, "6:", "7:"},
		}},
		{"Work by its old name before the rename", backup.Query{Mailbox: "user.alice.Work", At: day(4, 10)}, map[string][]string{
			"user.alice.Work": {`1:\Seen`, "6:", "7:"},
		}},
		{"Work is not there by its old name after", backup.Query{Mailbox: "user.alice.Work", At: day(5, 10)}, map[string][]string{}},
		{"Archive after the rename", backup.Query{Mailbox: "user.alice.Archive", At: day(5, 10)}, map[string][]string{
			"user.alice.Archive": {`1:\Seen`, "6:", "7:"},
		}},
		{"after the mass deletion", backup.Query{Mailbox: "user.alice", At: day(6, 10)}, map[string][]string{}},
		{"now", backup.Query{Mailbox: "user.alice", Recursive: true}, map[string][]string{
			"user.alice.Archive": {`1:\Seen`, "6:", "7:"},
		}},
		{"by Message-ID", backup.Query{MessageID: "<m1@example.org>", At: day(4, 10)}, map[string][]string{
			"user.alice.Work": {`1:\Seen`},
		}},
		{"bob's \\Seen on alice's shared INBOX", backup.Query{Mailbox: "user.alice", At: day(2, 10), SeenAs: "bob"}, map[string][]string{
			"user.alice": {"1:", `2:\Flagged`, `3:\Answered`, `4:\Seen`, "?:"},
		}},
		{"--seen-as the owner is the owner's view", backup.Query{Mailbox: "user.alice", At: day(2, 10), SeenAs: "alice"}, map[string][]string{
			"user.alice": {`1:\Seen`, `2:\Flagged,\Seen`, `3:\Answered`, "4:", "?:"},
		}},
		{"by uniqueid, under the name it had then", backup.Query{Mailbox: fWork, At: day(5, 10)}, map[string][]string{
			"user.alice.Archive": {`1:\Seen`, "6:", "7:"},
		}},
		{"by uniqueid before the rename", backup.Query{Mailbox: fWork, At: day(4, 10)}, map[string][]string{
			"user.alice.Work": {`1:\Seen`, "6:", "7:"},
		}},
		{"by Message-ID as bob", backup.Query{MessageID: "<m4@example.org>", At: day(2, 10), SeenAs: "bob"}, map[string][]string{
			"user.alice": {`4:\Seen`},
		}},
		{"by Message-ID before the move", backup.Query{MessageID: "<m1@example.org>", At: day(3, 10)}, map[string][]string{
			"user.alice": {`1:\Seen`},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := view(plan(t, f, c.q))
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("got  %v\nwant %v", got, c.want)
			}
		})
	}
}

// TestMaildirUndoesMassDeletion restores INBOX as it was before the mass
// deletion, checks every file against the body's SHA-256, its flags and
// date, and that running again changes nothing.
func TestMaildirUndoesMassDeletion(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	q := backup.Query{Mailbox: "user.alice", Recursive: true, At: day(5, 10)}
	items := plan(t, f, q)
	root := t.TempDir()
	rep, err := backup.WriteMaildir(ctx, items, f.store, root, q.Mailbox)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Written != 6 || rep.Folders != 2 || len(rep.Missing) != 1 || !strings.Contains(rep.Missing[0].Reason, "not fetched") {
		t.Fatalf("report %+v", rep)
	}
	want := map[string]string{
		"cur/" + blob.Digest(body(2)) + ":2,F":          "",
		"cur/" + blob.Digest(body(3)) + ":2,R":          "",
		"cur/" + blob.Digest(body(4)) + ":2,":           "",
		".Archive/cur/" + blob.Digest(body(1)) + ":2,S": "",
		".Archive/cur/" + blob.Digest(body(6)) + ":2,":  "",
		".Archive/cur/" + blob.Digest(body(7)) + ":2,":  "",
	}
	check := func() {
		t.Helper()
		var got []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			got = append(got, filepath.ToSlash(rel))
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			d0, _, _ := strings.Cut(filepath.Base(p), ":")
			if blob.Digest(data) != d0 {
				t.Errorf("%s: bytes do not hash to the name", rel)
			}
			fi, _ := d.Info()
			n := 0
			for i := 1; i <= 7; i++ {
				if bytes.Equal(data, body(i)) {
					n = i
				}
			}
			// INBOX/uid has body uid; Work/1,2 have 6,7; the moved one keeps its date.
			wantDate := idate(uint32(n))
			if n >= 6 {
				wantDate = idate(uint32(n - 5))
			}
			if !fi.ModTime().Equal(wantDate) {
				t.Errorf("%s: mtime %v, want %v", rel, fi.ModTime(), wantDate)
			}
			return nil
		})
		slices.Sort(got)
		var w []string
		for k := range want {
			w = append(w, k)
		}
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Errorf("files\n%v\nwant\n%v", got, w)
		}
	}
	check()
	rep, err = backup.WriteMaildir(ctx, items, f.store, root, q.Mailbox)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Written != 0 || rep.Kept != 6 || len(rep.Missing) != 1 {
		t.Fatalf("second run %+v", rep)
	}
	check()
	// An earlier moment: INBOX/2 was \Seen too; its file is renamed, not duplicated.
	items = plan(t, f, backup.Query{Mailbox: "user.alice", At: day(2, 10)})
	rep, err = backup.WriteMaildir(ctx, items, f.store, root, "user.alice")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Written != 1 || rep.Updated != 1 || rep.Kept != 2 {
		t.Fatalf("third run %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(root, "cur", blob.Digest(body(2))+":2,FS")); err != nil {
		t.Error(err)
	}
}

func TestMbox(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	items := plan(t, f, backup.Query{Mailbox: "user.alice", At: day(5, 10)})
	// A body lost from the store is reported, not fatal.
	os.Remove(f.store.Path(blob.Digest(body(4))))
	out := filepath.Join(t.TempDir(), "alice.mbox")
	for range 2 {
		rep, err := backup.WriteMbox(ctx, items, f.store, out)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Written != 2 || len(rep.Missing) != 2 || !strings.Contains(rep.Missing[0].Reason+rep.Missing[1].Reason, "not in the body store") {
			t.Fatalf("report %+v", rep)
		}
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, n := range []int{2, 3} {
		want = append(want, fmt.Sprintf("From MAILER-DAEMON %s\n", idate(uint32(n)).Format("Mon Jan _2 15:04:05 2006"))...)
		b := bytes.Replace(body(n), []byte("\n>From"), []byte("\n>>From"), 1)
		want = append(want, bytes.Replace(b, []byte("\nFrom here"), []byte("\n>From here"), 1)...)
		want = append(want, '\n')
	}
	if !bytes.Equal(got, want) {
		t.Errorf("mbox\n%q\nwant\n%q", got, want)
	}
}

func TestQuoteMboxrd(t *testing.T) {
	in := "From a\n>From b\nx From c\n>>From d\nFrom"
	want := ">From a\n>>From b\nx From c\n>>>From d\nFrom"
	if got := string(backup.QuoteMboxrd([]byte(in))); got != want {
		t.Errorf("got %q", got)
	}
}
