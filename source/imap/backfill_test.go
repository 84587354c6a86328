package imap_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/sink/backup"
	crawl "github.com/bonnie-archive/bonnie/source/imap"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// env is a Cyrus with user alice, a log, a body store and an engine.
type env struct {
	cy    *cyrustest.Server
	lg    *sqlite.Log
	store *blob.Store
	eng   *bonnie.Engine
	dir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cy := cyrustest.Start(t, cyrustest.Options{Users: map[string]string{"alice": "alicepw"}})
	dir := t.TempDir()
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	store, err := blob.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return &env{cy: cy, lg: lg, store: store, dir: dir, eng: newEngine(t, lg, "")}
}

func newEngine(t *testing.T, lg *sqlite.Log, lifecycle string) *bonnie.Engine {
	t.Helper()
	eng, err := bonnie.New(bonnie.Options{Store: lg, Lifecycle: lifecycle})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

func (e *env) crawler(t *testing.T, chunk int, mailboxes ...string) *crawl.Crawler {
	t.Helper()
	pw, _ := e.cy.Password(cyrustest.AdminUser)
	c, err := crawl.New(crawl.Options{Addr: e.cy.QuietIMAPAddr(), User: cyrustest.AdminUser, Password: pw,
		Store: e.store, Chunk: chunk, Mailboxes: mailboxes, Server: e.cy.ServerName()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recorder appends through e.eng and counts.
func (e *env) recorder(n *int) crawl.Recorder {
	return func(ctx context.Context, raw []byte) error {
		_, _, err := e.eng.Record(ctx, raw, "test")
		if err == nil && n != nil {
			*n++
		}
		return err
	}
}

// appendMsgs appends n messages to alice's folder (her namespace:
// "INBOX", "INBOX.Work"), quietly, with the given flags on every third.
func appendMsgs(t *testing.T, cl *imapclient.Client, folder string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		msg := fmt.Sprintf("Message-ID: <m%d@example.org>\r\nSubject: message %d\r\nFrom: bob@example.org\r\n\r\nBody of %d in %s.\r\n", i, i, i, folder)
		var flags []imap.Flag
		if i%3 == 0 {
			flags = []imap.Flag{imap.FlagFlagged, imap.FlagSeen, "$Work"}
		}
		app := cl.Append(folder, int64(len(msg)), &imap.AppendOptions{Flags: flags, Time: time.Date(2020, 1, 1+i%28, 8, 0, 0, 0, time.UTC)})
		if _, err := io.WriteString(app, msg); err != nil {
			t.Fatal(err)
		}
		if err := app.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := app.Wait(); err != nil {
			t.Fatalf("APPEND %s: %v", folder, err)
		}
	}
}

// serverItem is one message as the server has it, in the form of a
// backup.Item's comparable part.
type serverItem struct {
	Path   string
	UID    uint32
	Digest string
	Size   int64
	Flags  string
	MsgID  string
}

// serverState reads alice's folders in full as alice.
func serverState(t *testing.T, cy *cyrustest.Server) []serverItem {
	t.Helper()
	cl := cy.DialQuiet(t, "alice")
	defer cl.Logout()
	list, err := cl.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out []serverItem
	for _, l := range list {
		if _, err := cl.Select(l.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			t.Fatal(err)
		}
		path := "user.alice" + strings.TrimPrefix(l.Mailbox, "INBOX")
		msgs, err := cl.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, Envelope: true,
			BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			var flags []string
			for _, f := range m.Flags {
				if f != `\Recent` {
					flags = append(flags, string(f))
				}
			}
			slices.Sort(flags)
			b := m.BodySection[0].Bytes
			out = append(out, serverItem{Path: path, UID: uint32(m.UID), Digest: blob.Digest(b), Size: int64(len(b)),
				Flags: strings.Join(flags, " "), MsgID: "<" + m.Envelope.MessageID + ">"})
		}
	}
	slices.SortFunc(out, func(a, b serverItem) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return int(a.UID) - int(b.UID)
	})
	return out
}

// logState is what a restore of user.alice now would hold (backup.Plan).
func logState(t *testing.T, lg bonnie.StateSource) []serverItem {
	t.Helper()
	items, err := backup.Plan(context.Background(), lg, backup.Query{Mailbox: "user.alice", Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []serverItem
	for _, it := range items {
		out = append(out, serverItem{Path: it.Path, UID: it.UID, Digest: it.Digest, Size: it.Size,
			Flags: strings.Join(it.Flags, " "), MsgID: it.MessageID})
	}
	return out
}

func diffState(t *testing.T, what string, want, got []serverItem) {
	t.Helper()
	if slices.Equal(want, got) {
		return
	}
	t.Errorf("%s: the log (backup Plan) differs from the server: %d vs %d messages", what, len(got), len(want))
	for i := 0; i < max(len(want), len(got)); i++ {
		var w, g serverItem
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			t.Errorf("  server %+v\n  log    %+v", w, g)
		}
	}
}

// TestBackfillSameAsServer: folders that existed before Bonnie are
// backfilled; the backup Plan at now holds what the server holds, the
// bodies included, and a second run records nothing new.
func TestBackfillSameAsServer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cl := e.cy.DialQuiet(t, "alice")
	if err := cl.Create("INBOX.Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsgs(t, cl, "INBOX", 1, 7)
	appendMsgs(t, cl, "INBOX.Work", 100, 5)
	e.cy.SetACL(t, "user.alice.Work", "bob", "lr")

	var events int
	var last crawl.Progress
	p, err := e.crawler(t, 3).Backfill(ctx, e.lg, e.recorder(&events), func(p crawl.Progress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	if p.Folders != 2 || p.FoldersDone != 2 || p.Fetched != 12 || p.MessagesDone != 12 || p.Messages != 12 || last.FoldersDone != 2 {
		t.Errorf("progress = %+v", p)
	}
	if events != 3+2 {
		t.Errorf("%d events, want 5 (chunks of 3)", events)
	}
	diffState(t, "after backfill", serverState(t, e.cy), logState(t, e.lg))
	for _, it := range logState(t, e.lg) {
		if ok, _ := e.store.Has(it.Digest); !ok {
			t.Errorf("body %s of %s/%d not in the store", it.Digest, it.Path, it.UID)
		}
	}
	// The folder: uniqueid, ACL, UIDVALIDITY, cursor.
	ids, _ := e.lg.Find(ctx, bonnie.KindFolder, "path", "user.alice.Work")
	if len(ids) != 1 {
		t.Fatalf("folders named user.alice.Work: %v", ids)
	}
	st, _ := e.lg.StateAt(ctx, bonnie.KindFolder, ids[0], time.Time{})
	if st["acl:bob"] != "lr" || st["acl:alice"] == "" || st["uidValidity"] == "" || st[bonnie.FieldBackfillUID] != "5" || st[bonnie.FieldBackfilled] == "" || st["owner"] != "alice" {
		t.Errorf("folder state = %v", st)
	}

	// Again: nothing to record.
	events = 0
	p, err = e.crawler(t, 3).Backfill(ctx, e.lg, e.recorder(&events), nil)
	if err != nil {
		t.Fatal(err)
	}
	if events != 0 || p.Fetched != 0 || p.MessagesDone != 12 {
		t.Errorf("second run: %d events, progress %+v", events, p)
	}
	// A new message is picked up by the next run, and only it.
	appendMsgs(t, cl, "INBOX.Work", 200, 1)
	p, err = e.crawler(t, 3).Backfill(ctx, e.lg, e.recorder(&events), nil)
	if err != nil {
		t.Fatal(err)
	}
	if events != 1 || p.Fetched != 1 {
		t.Errorf("third run: %d events, progress %+v", events, p)
	}
	diffState(t, "after the third run", serverState(t, e.cy), logState(t, e.lg))
	if err := e.lg.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBackfillResume: a backfill that dies after some chunks is run
// again: every message is recorded exactly once.
func TestBackfillResume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cl := e.cy.DialQuiet(t, "alice")
	appendMsgs(t, cl, "INBOX", 1, 10)

	boom := errors.New("killed")
	n := 0
	dying := func(ctx context.Context, raw []byte) error {
		if n == 2 {
			return boom
		}
		n++
		_, _, err := e.eng.Record(ctx, raw, "test")
		return err
	}
	if _, err := e.crawler(t, 3).Backfill(ctx, e.lg, dying, nil); !errors.Is(err, boom) {
		t.Fatalf("first run: %v", err)
	}
	var events int
	p, err := e.crawler(t, 3).Backfill(ctx, e.lg, e.recorder(&events), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Fetched != 4 || events != 2 {
		t.Errorf("resumed run fetched %d in %d events, want 4 in 2 (UIDs 7..10)", p.Fetched, events)
	}
	// Count how often each UID was recorded in the log.
	seen := map[uint32]int{}
	recs, err := e.lg.Read(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		cr, err := r.Event.Crawl()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range cr.Messages {
			seen[m.UID]++
		}
	}
	for uid := uint32(1); uid <= 10; uid++ {
		if seen[uid] != 1 {
			t.Errorf("UID %d recorded %d times", uid, seen[uid])
		}
	}
	diffState(t, "after resuming", serverState(t, e.cy), logState(t, e.lg))
}
