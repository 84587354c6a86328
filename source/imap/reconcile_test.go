package imap_test

import (
	"context"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/bonnie-archive/bonnie"
	crawl "github.com/bonnie-archive/bonnie/source/imap"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// runDaemon runs an engine with a lifecycle (DaemonStart, and DaemonStop
// when stop is called) on lg.
func runDaemon(t *testing.T, lg *sqlite.Log) (eng *bonnie.Engine, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	head, _ := lg.Head(ctx)
	eng = newEngine(t, lg, "bonnied-test")
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if h, _ := lg.Head(ctx); h > head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no DaemonStart")
		}
	}
	return eng, func() {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestReconcileAfterDowntime: while no daemon listened, messages were
// appended, flagged and expunged, a folder renamed, one created and one
// deleted. A reconcile (while the daemon runs again) records each change
// with the downtime as its window, the log then matches the server, a
// second reconcile finds nothing and opens no folder, and the coverage
// shows the gap repaired.
func TestReconcileAfterDowntime(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cl := e.cy.DialQuiet(t, "alice")
	for _, f := range []string{"INBOX.Work", "INBOX.Gone"} {
		if err := cl.Create(f, nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	appendMsgs(t, cl, "INBOX", 1, 5)
	appendMsgs(t, cl, "INBOX.Work", 10, 3)
	appendMsgs(t, cl, "INBOX.Gone", 20, 2)
	if _, err := e.crawler(t, 100).Backfill(ctx, e.lg, e.recorder(nil), nil); err != nil {
		t.Fatal(err)
	}
	_, stop := runDaemon(t, e.lg)
	stop()
	downSince := time.Now().UTC()

	// Nobody listens.
	appendMsgs(t, cl, "INBOX", 30, 2)
	if _, err := cl.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagDeleted}, Silent: true}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := cl.UIDExpunge(imap.UIDSetNum(2)).Close(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Rename("INBOX.Work", "INBOX.Projects", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := cl.Create("INBOX.New", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMsgs(t, cl, "INBOX.New", 40, 1)
	if err := cl.Delete("INBOX.Gone").Wait(); err != nil {
		t.Fatal(err)
	}
	e.cy.SetACL(t, "user.alice", "anyone", "lr")

	eng, stop := runDaemon(t, e.lg)
	defer stop()
	started := time.Now().UTC()
	rec := func(ctx context.Context, raw []byte) error {
		_, _, err := eng.Record(ctx, raw, "test")
		return err
	}
	r, err := e.crawler(t, 100).Reconcile(ctx, e.lg, rec)
	if err != nil {
		t.Fatal(err)
	}
	if r.Appended != 3 || r.Flags != 1 || r.Expunged != 1 || r.Renamed != 1 || r.Created != 1 || r.Deleted != 1 || r.ACLs != 1 || r.Folders != 3 {
		t.Errorf("report = %+v", r)
	}
	// Every finding carries the downtime as its window.
	recs, err := e.lg.Read(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rc := range recs {
		if rc.Event.Type != bonnie.Reconcile || rc.Event.MailboxID == "" {
			continue
		}
		n++
		cr, err := rc.Event.Crawl()
		if err != nil {
			t.Fatal(err)
		}
		w := cr.Window
		if w == nil || w.Basis != bonnie.WindowDown || w.From.After(downSince) || w.From.Before(downSince.Add(-5*time.Second)) ||
			w.To.Before(downSince) || w.To.After(started) {
			t.Errorf("%s %s: window %+v, want down from ~%s to before %s", rc.Event.Mailbox.Name, cr.Folder, w, downSince, started)
		}
	}
	if n != 4 { // INBOX, Projects (renamed), New (created), Gone (deleted)
		t.Errorf("%d Reconcile events about folders, want 4", n)
	}
	diffState(t, "after reconcile", serverState(t, e.cy), logState(t, e.lg))
	ids, _ := e.lg.Find(ctx, bonnie.KindFolder, "path", "user.alice")
	if st, _ := e.lg.StateAt(ctx, bonnie.KindFolder, ids[0], time.Time{}); len(ids) != 1 || st["acl:anyone"] != "lr" {
		t.Errorf("INBOX's ACL in the log: %v", st)
	}

	// Nothing changed since: nothing found, no folder opened.
	r, err = e.crawler(t, 100).Reconcile(ctx, e.lg, rec)
	if err != nil {
		t.Fatal(err)
	}
	if r.Changed() || r.Unchanged != 3 || r.Events != 0 {
		t.Errorf("second reconcile: %+v", r)
	}

	// The coverage of INBOX: backfilled, complete, the gap repaired,
	// complete.
	cov, err := crawl.FolderCoverage(ctx, e.lg, "user.alice", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// Two gaps: between the backfill and the first start, and the
	// downtime; the reconcile's window covers both.
	var statuses []string
	repaired := 0
	for _, p := range cov.Periods {
		statuses = append(statuses, p.Status)
		switch p.Status {
		case crawl.CoverageGap:
			t.Errorf("a gap left unrepaired: %+v", cov.Periods)
		case crawl.CoverageRepaired:
			repaired++
		}
	}
	if statuses[0] != crawl.CoverageBackfilled || statuses[len(statuses)-1] != crawl.CoverageComplete || repaired != 2 {
		t.Errorf("coverage periods %v, want backfilled first, complete last, two repaired gaps", statuses)
	}
	if len(cov.Repairs) != 1 || cov.Repairs[0].Appended != 2 || cov.Repairs[0].Expunged != 1 || cov.Repairs[0].Flags != 1 {
		t.Errorf("repairs = %+v", cov.Repairs)
	}
	// A folder checked after the gap without findings is verified.
	cov, err = crawl.FolderCoverage(ctx, e.lg, "user.alice.Projects", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if cov.Periods[4].Status != crawl.CoverageRepaired { // renamed while down
		t.Errorf("Projects coverage %+v", cov.Periods)
	}
	if err := e.lg.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestReconcileRecreatedFolder: the log knows a folder (by uniqueid)
// under another UIDVALIDITY than the server's (the folder was recreated,
// or reconstructed): a reconcile records its old messages expunged and
// the server's messages present, and so does a backfill.
func TestReconcileRecreatedFolder(t *testing.T) {
	for _, how := range []string{"reconcile", "backfill"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			cl := e.cy.DialQuiet(t, "alice")
			appendMsgs(t, cl, "INBOX", 1, 3)
			folders, err := e.crawler(t, 10).Folders(ctx)
			if err != nil {
				t.Fatal(err)
			}
			id := folders[0].ID
			// What the log knew: the same folder under UIDVALIDITY 1, with
			// messages 1 and 7.
			old := `{"event":"vnd.bonnie.Backfill","timestamp":"2026-01-01T00:00:00Z","uri":"imap://h/user.alice;UIDVALIDITY=1","mailboxID":"` + id +
				`","vnd.bonnie.crawl":{"run":"old","lastUid":7,"done":true,"messages":[{"uid":1,"flags":[]},{"uid":7,"flags":[]}]}}`
			if _, _, err := e.eng.Record(ctx, []byte(old), "test"); err != nil {
				t.Fatal(err)
			}
			if how == "reconcile" {
				r, err := e.crawler(t, 10).Reconcile(ctx, e.lg, e.recorder(nil))
				if err != nil {
					t.Fatal(err)
				}
				if r.Recreated != 1 || r.Expunged != 2 || r.Appended != 3 {
					t.Errorf("report %+v", r)
				}
			} else {
				p, err := e.crawler(t, 10).Backfill(ctx, e.lg, e.recorder(nil), nil)
				if err != nil {
					t.Fatal(err)
				}
				if p.Fetched != 3 {
					t.Errorf("backfill fetched %d, want 3 (from UID 1 again)", p.Fetched)
				}
			}
			for _, uid := range []uint32{1, 7} {
				if st, _ := e.lg.StateAt(ctx, bonnie.KindMessage, bonnie.MessageKey(id, 1, uid), time.Time{}); st["state"] != bonnie.StateExpunged {
					t.Errorf("old message %d: %v", uid, st)
				}
			}
			diffState(t, "after "+how, serverState(t, e.cy), logState(t, e.lg))
		})
	}
}
