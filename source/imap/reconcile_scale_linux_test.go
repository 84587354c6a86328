package imap_test

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	crawl "github.com/bonnie-archive/bonnie/source/imap"
)

// TestReconcileFigureAtScale measures the figure: a reconcile of
// 100 folders of 10,000 messages each when nothing changed. APPENDing a
// million messages takes hours on this machine (16-70 a second), so the
// corpus is made the way Cyrus itself recovers mail: one APPEND per folder
// (Cyrus makes the folder's directory), then the other message files
// written into it and indexed by Cyrus's reconstruct (about 4,000 a
// second). The log is brought to the server's state by a backfill without
// bodies (a reconcile compares UIDs and flags, never bodies). Runs only
// with BONNIE_BENCH_SCALE=1; BONNIE_BENCH_FOLDERS and BONNIE_BENCH_MESSAGES
// size it.
func TestReconcileFigureAtScale(t *testing.T) {
	if os.Getenv("BONNIE_BENCH_SCALE") != "1" {
		t.Skip("set BONNIE_BENCH_SCALE=1 to measure (minutes, ~1 GB of spool)")
	}
	folders := envInt("BONNIE_BENCH_FOLDERS", 100)
	per := envInt("BONNIE_BENCH_MESSAGES", 10_000)
	e := newEnv(t)
	ctx := context.Background()
	cl := quickDial(t, e.cy, e.cy.QuietIMAPAddr(), "alice")
	u, err := user.Lookup("cyrus")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	setup := time.Now()
	for f := range folders {
		name := fmt.Sprintf("INBOX.f%03d", f)
		if err := cl.Create(name, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		appendMsgs(t, cl, name, 1, 1)
		dir := strings.TrimSpace(e.cy.Tool(t, "mbpath", fmt.Sprintf("user.alice.f%03d", f)))
		for i := 2; i <= per; i++ {
			p := filepath.Join(dir, fmt.Sprintf("%d.", i))
			msg := fmt.Sprintf("Message-ID: <f%d-%d@example.org>\r\nSubject: message %d of folder %d\r\nFrom: bob@example.org\r\n"+
				"To: alice@example.org\r\nDate: Mon, 02 Jan 2023 10:05:00 +0000\r\n\r\nBody of %d in folder %d.\r\n", f, i, i, f, i, f)
			if err := os.WriteFile(p, []byte(msg), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		e.cy.Tool(t, "reconstruct", "-q", fmt.Sprintf("user.alice.f%03d", f))
		st, err := cl.Status(name, &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil || st.NumMessages == nil || int(*st.NumMessages) != per {
			t.Fatalf("%s after reconstruct: %v %+v", name, err, st)
		}
	}
	t.Logf("corpus: %d folders x %d messages, made in %s", folders, per, time.Since(setup).Round(time.Second))

	pw, _ := e.cy.Password(cyrustest.AdminUser)
	crawler := func() *crawl.Crawler {
		c, err := crawl.New(crawl.Options{Addr: e.cy.QuietIMAPAddr(), User: cyrustest.AdminUser, Password: pw,
			Chunk: 1000, Server: e.cy.ServerName()}) // no Store: no bodies
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	start := time.Now()
	p, err := crawler().Backfill(ctx, e.lg, e.recorder(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backfill without bodies: %d messages in %s (%d events)", p.Fetched, time.Since(start).Round(time.Millisecond), p.Events)

	for _, what := range []string{"first reconcile after the backfill", "reconcile, nothing changed", "reconcile, nothing changed (again)"} {
		r, err := crawler().Reconcile(ctx, e.lg, e.recorder(nil))
		if err != nil {
			t.Fatal(err)
		}
		if r.Changed() {
			t.Fatalf("%s: found changes: %+v", what, r)
		}
		t.Logf("%s: %d folders (%d unchanged) in %s", what, r.Folders, r.Unchanged, r.Duration.Round(time.Millisecond))
	}
}
