package discovery_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// Folder ids of the real capture (testdata/cyrus-3.6.1).
const (
	inbox = "zhelole6j19gznuv4b0d24ep" // user.alice
	work  = "kwv2nc0rutdhxg2phbung3vj" // user.alice.Work, renamed Projects
)

func openLog(t *testing.T) *sqlite.Log {
	t.Helper()
	lg, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	return lg
}

func openIndex(t *testing.T, path string, blobs *blob.Store) *discovery.Index {
	t.Helper()
	x, err := discovery.Open(context.Background(), path, blobs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

// captureLog ingests the real Cyrus 3.6.1 session into a new log.
func captureLog(t *testing.T) *sqlite.Log {
	t.Helper()
	lg := openLog(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg})
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../../testdata/cyrus-3.6.1/*.bin")
	if len(files) != 98 {
		t.Fatalf("want 98 captures, got %d", len(files))
	}
	sort.Strings(files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := eng.Ingest(context.Background(), raw, "test"); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return lg
}

func actions(es []discovery.Entry) []string {
	var out []string
	for _, e := range es {
		s := e.Action + " " + e.Path
		if e.FromPath != "" {
			s += " <- " + e.FromPath
		}
		if len(e.Flags) > 0 && e.Action != discovery.ActRead && e.Action != discovery.ActTrashed {
			s += " " + strings.Join(e.Flags, ",")
		}
		if e.ACLSubject != "" {
			s += " " + e.ACLSubject + "=" + e.ACLRights
		}
		out = append(out, s)
	}
	return out
}

// TestCaptureTimelines replays the real Cyrus session and checks the
// timelines of a message, a folder and a person.
func TestCaptureTimelines(t *testing.T) {
	ctx := context.Background()
	lg := captureLog(t)
	x := openIndex(t, filepath.Join(t.TempDir(), "discovery.db"), nil)
	if _, err := x.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}

	t.Run("message", func(t *testing.T) {
		tl, err := x.Message(ctx, "harness-2@example.org")
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			`appended user.alice \Flagged,$Label1`,
			"read user.alice",                   // STORE 2 +FLAGS (\Seen)
			`flagged user.alice \Answered`,      // 021
			`flagged user.alice $Important`,     // 023
			`unflagged user.alice \Flagged`,     // 025
			`unread user.alice \Seen`,           // 027
			"read user.alice",                   // 029 MessageRead
			`flagged user.alice \Flagged,$Work`, // 030 (\Seen is the MessageRead)
			`unflagged user.alice \Answered,\Flagged,\Seen,$Label1,$Important,$Work`, // STORE FLAGS (\Draft)
			`flagged user.alice \Draft`,
			"moved user.alice.Work <- user.alice",
			"expunged user.alice",
			"renamed user.alice.Projects <- user.alice.Work",
			"deleted user.alice.Projects",
		}
		got := actions(tl.Entries)
		if len(got) != len(want) {
			t.Fatalf("timeline:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		for i := range want {
			if fieldsOf(got[i]) != fieldsOf(want[i]) {
				t.Errorf("entry %d: got %q, want %q", i, got[i], want[i])
			}
		}
		first := tl.Entries[0]
		if first.Login != "alice" || first.ActorID != "alice" || first.Client != "127.0.0.1:43172" || first.Session == "" || first.Position == 0 {
			t.Errorf("first entry: %+v", first)
		}
		if len(tl.Places) != 2 {
			t.Errorf("places: %+v", tl.Places)
		}
		for _, p := range tl.Places {
			if p.Subject == "" || !strings.Contains(p.From, "bob@example.org") {
				t.Errorf("place without envelope: %+v", p)
			}
		}
	})

	t.Run("message not found", func(t *testing.T) {
		if _, err := x.Message(ctx, "<nope@example.org>"); err == nil {
			t.Fatal("no error for an unknown Message-ID")
		}
	})

	t.Run("folder", func(t *testing.T) {
		for _, name := range []string{"user.alice.Work", "user.alice.Projects", work} {
			fts, err := x.Folder(ctx, name, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(fts) != 1 || fts[0].Folder != work {
				t.Fatalf("%s: %+v", name, fts)
			}
			var names []string
			for _, n := range fts[0].Names {
				names = append(names, n.Path)
			}
			if !slices.Equal(names, []string{"user.alice.Work", "user.alice.Projects"}) {
				t.Errorf("names: %v", names)
			}
			want := []string{
				"created user.alice.Work",
				"subscribed user.alice.Work",
				"unsubscribed user.alice.Work",
				"acl granted user.alice.Work bob=lrs",
				"acl revoked user.alice.Work bob=",
				"renamed user.alice.Projects <- user.alice.Work",
				"acl granted user.alice.Projects anyone=p",
				"deleted user.alice.Projects",
			}
			if got := actions(fts[0].Entries); !slices.Equal(got, want) {
				t.Errorf("%s:\n%s\nwant:\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
	})

	t.Run("person", func(t *testing.T) {
		p, sessions, err := x.Sessions(ctx, "alice", true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.IDs, []string{"alice"}) {
			t.Errorf("person: %+v", p)
		}
		var main *discovery.Session
		for i := range sessions {
			if sessions[i].Client == "127.0.0.1:43172" {
				main = &sessions[i]
			}
		}
		if main == nil {
			t.Fatalf("no session from 127.0.0.1:43172 in %+v", sessions)
		}
		if main.Start.IsZero() || main.End.IsZero() || main.Duration == "" || main.EndPos <= main.StartPos {
			t.Errorf("session: %+v", main)
		}
		if len(main.Entries) < 20 || main.Entries[0].Action != discovery.ActLogin || main.Entries[len(main.Entries)-1].Action != discovery.ActLogout {
			t.Errorf("session entries: %v", actions(main.Entries))
		}
	})

	t.Run("access", func(t *testing.T) {
		tl, err := x.Folder(ctx, work, false)
		if err != nil {
			t.Fatal(err)
		}
		var grant, revoke time.Time
		for _, e := range tl[0].Entries {
			switch e.Action {
			case discovery.ActACLGranted:
				if grant.IsZero() {
					grant = e.Time
				}
			case discovery.ActACLRevoked:
				revoke = e.Time
			}
		}
		between := grant.Add(revoke.Sub(grant) / 2)
		for _, tc := range []struct {
			at   time.Time
			want []string
		}{
			{grant.Add(-time.Millisecond), []string{"alice"}},
			{between, []string{"alice", "bob"}},
			{revoke, []string{"alice"}},
		} {
			fas, err := x.WhoCouldRead(ctx, "user.alice.Work", tc.at)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range fas[0].Readers {
				got = append(got, r.ID)
			}
			if !slices.Equal(got, tc.want) || fas[0].Path != "user.alice.Work" || !fas[0].Exists {
				t.Errorf("at %s: readers %v, want %v (%+v)", tc.at, got, tc.want, fas[0])
			}
		}
		pa, err := x.ReadableBy(ctx, "bob", between)
		if err != nil {
			t.Fatal(err)
		}
		if len(pa.Folders) != 2 || pa.Folders[0].Path != "user.alice.Work" || pa.Folders[0].Rights != "lrs" || pa.Folders[1].Path != "user.bob" {
			t.Errorf("bob could read: %+v", pa.Folders)
		}
		pa, err = x.ReadableBy(ctx, "alice", between)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, f := range pa.Folders {
			paths = append(paths, f.Path)
		}
		if !slices.Contains(paths, "user.alice") || !slices.Contains(paths, "user.alice.Work") {
			t.Errorf("alice could read: %v", paths)
		}
		// After DELETE, nobody.
		last := tl[0].Entries[len(tl[0].Entries)-1].Time
		fas, err := x.WhoCouldRead(ctx, work, last.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if fas[0].Exists || len(fas[0].Readers) != 0 {
			t.Errorf("deleted folder: %+v", fas[0])
		}
	})

	t.Run("search", func(t *testing.T) {
		hits, err := x.Search(ctx, discovery.Search{Custodian: "alice", Subject: "first message", Types: []bonnie.EventType{bonnie.MessageAppend}})
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 1 || hits[0].MessageID != "<harness-1@example.org>" || hits[0].Position == 0 {
			t.Fatalf("hits: %+v", hits)
		}
		hits, err = x.Search(ctx, discovery.Search{Sender: "bob@example.org", Folder: "user.alice.Projects"})
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) == 0 {
			t.Fatal("no hit in the renamed folder by its new name")
		}
		for _, h := range hits {
			if h.Folder != work {
				t.Errorf("hit outside the folder: %+v", h)
			}
		}
	})
}

// fieldsOf sorts the words of a line after the action and path, so that
// the order Cyrus lists flags in does not matter.
func fieldsOf(s string) string {
	f := strings.Fields(s)
	if len(f) > 2 {
		last := strings.Split(f[len(f)-1], ",")
		sort.Strings(last)
		f[len(f)-1] = strings.Join(last, ",")
	}
	return strings.Join(f, " ")
}

// TestRebuildFromLog deletes the index and catches up from position 0:
// the same answers.
func TestRebuildFromLog(t *testing.T) {
	ctx := context.Background()
	lg := captureLog(t)
	path := filepath.Join(t.TempDir(), "discovery.db")
	x := openIndex(t, path, nil)
	if _, err := x.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	before, err := x.Message(ctx, "<harness-2@example.org>")
	if err != nil {
		t.Fatal(err)
	}
	head, _ := lg.Head(ctx)
	if p, _ := x.Position(ctx); p != head {
		t.Fatalf("position %d, head %d", p, head)
	}
	// Handling records again (a retry, two catch-ups) changes nothing.
	recs, err := lg.Read(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := x.Handle(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	x.Close()
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		os.Remove(f)
	}
	y := openIndex(t, path, nil)
	if p, _ := y.Position(ctx); p != 0 {
		t.Fatalf("new index at %d", p)
	}
	if _, err := y.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	after, err := y.Message(ctx, "<harness-2@example.org>")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(actions(before.Entries), actions(after.Entries)) {
		t.Errorf("rebuilt:\n%v\nbefore:\n%v", actions(after.Entries), actions(before.Entries))
	}
	if _, err := y.Rebuild(ctx, lg); err != nil {
		t.Fatal(err)
	}
	again, _ := y.Message(ctx, "<harness-2@example.org>")
	if len(again.Entries) != len(before.Entries) {
		t.Errorf("Rebuild: %d entries, want %d", len(again.Entries), len(before.Entries))
	}
}

// TestFullTextWithoutBuildTags checks the reason the index uses FTS4:
// plain mattn/go-sqlite3 (no sqlite_fts5 tag, as the module builds) has
// FTS4 with the unicode61 tokenizer and lacks FTS5.
func TestFullTextWithoutBuildTags(t *testing.T) {
	db, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE VIRTUAL TABLE t USING fts4(body, tokenize=unicode61)`); err != nil {
		t.Fatalf("FTS4 missing: %v", err)
	}
	if _, err := db.Exec(`INSERT INTO t(body) VALUES ('Grüße aus München')`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM t WHERE t MATCH 'grüße'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("unicode61 match: %d, %v", n, err)
	}
	if _, err := db.Exec(`CREATE VIRTUAL TABLE t5 USING fts5(body)`); err == nil {
		t.Log("FTS5 is compiled in too (a build tag is set); the index still uses FTS4")
	}
}

func TestQueryEventIsRecorded(t *testing.T) {
	ctx := context.Background()
	lg := openLog(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := discovery.QueryEvent(discovery.Asked{By: "auditor", Command: "history message", Args: map[string]string{"messageId": "<m@x>"}}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	pos, _, err := eng.Record(ctx, raw, "test")
	if err != nil {
		t.Fatal(err)
	}
	// The same question twice is two events.
	raw2, _ := discovery.QueryEvent(discovery.Asked{By: "auditor", Command: "history message", Args: map[string]string{"messageId": "<m@x>"}}, time.Time{})
	pos2, dup, err := eng.Record(ctx, raw2, "test")
	if err != nil || dup || pos2 == pos {
		t.Fatalf("second query: %d %v %v", pos2, dup, err)
	}
	x := openIndex(t, filepath.Join(t.TempDir(), "d.db"), nil)
	if _, err := x.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	qs, err := x.Queries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 || qs[0].Login != "auditor" || qs[0].Position != pos || !strings.Contains(string(qs[0].Detail), `"command":"history message"`) {
		t.Fatalf("queries: %+v", qs)
	}
}

// TestAsEngineSink registers the index as a sink of an engine on a log
// that already holds the capture: the engine replays the log into it
// ("works backwards"), then gives it live events.
func TestAsEngineSink(t *testing.T) {
	lg := captureLog(t)
	x := openIndex(t, filepath.Join(t.TempDir(), "discovery.db"), nil)
	eng, err := bonnie.New(bonnie.Options{Store: lg, Sinks: []bonnie.Sink{x}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	live := `{"event":"MessageRead","timestamp":"2026-11-28T21:00:00Z","user":"alice","uri":"imap://h/user.alice;UIDVALIDITY=1795897409","mailboxID":"` +
		inbox + `","uidset":"1","vnd.cmu.midset":"<harness-1@example.org>"}`
	pos, _, err := eng.Ingest(ctx, []byte(live), "test")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p, _ := x.Position(ctx); p >= pos {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sink did not reach the live event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	tl, err := x.Message(ctx, "<harness-1@example.org>")
	if err != nil {
		t.Fatal(err)
	}
	if last := tl.Entries[len(tl.Entries)-1]; last.Position != pos || last.Action != discovery.ActRead {
		t.Errorf("last entry %+v, want the live read at %d", last, pos)
	}
}
