package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/sink/backup"
	crawl "github.com/bonnie-archive/bonnie/source/imap"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// rcItem is one message of alice's folders, as the server or the log
// (backup Plan at now) has it.
type rcItem struct {
	Path, Digest, Flags, MsgID string
	UID                        uint32
}

// rcServerState reads alice's folders as alice, quietly.
func rcServerState(t *testing.T, s *cyrustest.Server) []rcItem {
	t.Helper()
	cl := s.DialQuiet(t, "alice")
	defer cl.Logout()
	list, err := cl.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out []rcItem
	for _, l := range list {
		if _, err := cl.Select(l.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			t.Fatal(err)
		}
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
			out = append(out, rcItem{Path: "user.alice" + strings.TrimPrefix(l.Mailbox, "INBOX"), UID: uint32(m.UID),
				Digest: blob.Digest(m.BodySection[0].Bytes), Flags: strings.Join(flags, " "), MsgID: "<" + m.Envelope.MessageID + ">"})
		}
	}
	slices.SortFunc(out, func(a, b rcItem) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return int(a.UID) - int(b.UID)
	})
	return out
}

// rcLogState is what a restore of alice's mailbox now would hold.
func rcLogState(t *testing.T, lv *logView) []rcItem {
	t.Helper()
	lv.open(t)
	items, err := backup.Plan(context.Background(), lv.l, backup.Query{Mailbox: "user.alice", Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []rcItem
	for _, it := range items {
		out = append(out, rcItem{Path: it.Path, UID: it.UID, Digest: it.Digest, Flags: strings.Join(it.Flags, " "), MsgID: it.MessageID})
	}
	return out
}

func rcSame(t *testing.T, what string, server, log []rcItem) {
	t.Helper()
	if slices.Equal(server, log) {
		return
	}
	t.Errorf("%s: the log differs from the server\nserver: %+v\nlog:    %+v", what, server, log)
}

func rcStore(t *testing.T, c *imapclient.Client, uid imap.UID, op imap.StoreFlagsOp, flags ...imap.Flag) {
	t.Helper()
	if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Flags: flags, Silent: true}, nil).Close(); err != nil {
		t.Fatalf("STORE: %v", err)
	}
}

// runBonnie runs the bonnie command and returns its standard output.
func runBonnie(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(bonnieBin, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bonnie %q: %v\n%s%s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestReconcileAfterDatagramDowntime: bonnied listens in datagram mode;
// it stops, and meanwhile alice appends, flags and expunges messages,
// renames a folder, creates one. The daemon starts again with
// --reconcile-every: its first reconcile records every change with the
// downtime as the window, the log then holds what the server holds,
// `bonnie reconcile` while it runs finds nothing more, and `bonnie
// coverage` shows the gap repaired.
func TestReconcileAfterDatagramDowntime(t *testing.T) {
	requireEnv(t)
	sock := cyrustest.SocketPath(t, "notify.sock")
	s := startCyrus(t, cyrustest.Options{Users: map[string]string{"alice": "alice-pw"}, NotifySocket: sock})
	data := t.TempDir()
	pwFile := filepath.Join(t.TempDir(), "admin.pw")
	if err := os.WriteFile(pwFile, []byte(cyrustest.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	imapArgs := []string{"--imap", s.QuietIMAPAddr(), "--imap-user", cyrustest.AdminUser, "--imap-password-file", pwFile}
	lv := newLogView(data)
	d := startDaemon(t, "bonnied", daemonConfig{data: data, datagram: sock, extra: imapArgs}, lv)

	// Live: a folder and three messages, one flagged.
	c, _ := dialIMAP(t, s, "alice")
	if err := c.Create("INBOX.Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := appendMessage(c, "INBOX.Work", testMessage(fmt.Sprintf("<live%d@example.org>", i), "live"), nil); err != nil {
			t.Fatal(err)
		}
	}
	lv.waitFor(t, "three MessageAppend", func(recs []bonnie.Record) bool { return len(ofType(recs, bonnie.MessageAppend)) == 3 })
	d.stop(t)
	stopped := time.Now().UTC()

	// Nobody listens: Cyrus drops these notifications.
	for i := 1; i <= 2; i++ {
		if _, err := appendMessage(c, "INBOX.Work", testMessage(fmt.Sprintf("<down%d@example.org>", i), "down"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Select("INBOX.Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	rcStore(t, c, 1, imap.StoreFlagsAdd, imap.FlagFlagged, imap.FlagSeen)
	rcStore(t, c, 2, imap.StoreFlagsAdd, imap.FlagDeleted)
	if err := c.UIDExpunge(imap.UIDSetNum(2)).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename("INBOX.Work", "INBOX.Projects", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("INBOX.New", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := appendMessage(c, "INBOX.New", testMessage("<new1@example.org>", "new"), []imap.Flag{"$Important"}); err != nil {
		t.Fatal(err)
	}

	d = startDaemon(t, "bonnied (again)", daemonConfig{data: data, datagram: sock,
		extra: append(slices.Clone(imapArgs), "--reconcile-every", "1h")}, lv)
	d.waitLine(t, regexp.MustCompile(`msg="reconcile recorded what the log missed"`))
	recs := lv.records(t)
	starts := ofType(recs, bonnie.DaemonStart)
	start := starts[len(starts)-1].Event
	down, _ := extraString(start, "vnd.bonnie.downSince")
	downSince, err := time.Parse(time.RFC3339Nano, down)
	if err != nil || downSince.After(stopped) || downSince.Before(stopped.Add(-10*time.Second)) {
		t.Fatalf("DaemonStart downSince %q (stopped at %s)", down, stopped)
	}
	var found []string
	for _, r := range ofType(recs, bonnie.Reconcile) {
		cr, err := r.Event.Crawl()
		if err != nil {
			t.Fatal(err)
		}
		if r.Event.MailboxID == "" {
			continue // the verification of the folders in agreement
		}
		w := cr.Window
		if w == nil || w.Basis != bonnie.WindowDown || !w.From.Equal(downSince) || !w.To.Equal(start.Time) {
			t.Errorf("%s: window %+v, want down from %s to %s", r.Event.Mailbox.Name, w, downSince, start.Time)
		}
		found = append(found, fmt.Sprintf("%s folder=%q old=%q appended=%d flags=%d expunged=%d", r.Event.Mailbox.Name,
			cr.Folder, cr.OldPath, len(cr.Messages), len(cr.Flags), len(cr.Expunged)))
	}
	slices.Sort(found)
	want := []string{
		// INBOX was created quietly before the daemon first ran: the log
		// learns it now.
		`user.alice folder="created" old="" appended=0 flags=0 expunged=0`,
		`user.alice.New folder="created" old="" appended=1 flags=0 expunged=0`,
		`user.alice.Projects folder="renamed" old="user.alice.Work" appended=2 flags=1 expunged=1`,
	}
	if !slices.Equal(found, want) {
		t.Errorf("reconcile found\n%s\nwant\n%s", strings.Join(found, "\n"), strings.Join(want, "\n"))
	}
	rcSame(t, "after the reconcile", rcServerState(t, s), rcLogState(t, lv))

	// The bonnie command, through the running daemon: nothing more.
	out := runBonnie(t, append([]string{"--data", data, "reconcile"}, imapArgs...)...)
	if !strings.Contains(out, "the log agrees with the server") || !strings.Contains(out, "(3 unchanged") {
		t.Errorf("bonnie reconcile: %s", out)
	}
	// Coverage: the downtime is a repaired gap.
	var cov crawl.Coverage
	if err := json.Unmarshal([]byte(runBonnie(t, "--data", data, "coverage", "--folder", "user.alice.Projects", "--json")), &cov); err != nil {
		t.Fatal(err)
	}
	var gap *crawl.Period
	for i, p := range cov.Periods {
		if p.From.Equal(downSince) {
			gap = &cov.Periods[i]
		}
	}
	if gap == nil || gap.Status != crawl.CoverageRepaired || !gap.To.Equal(start.Time) || gap.At.Before(start.Time) || len(cov.Repairs) != 1 {
		t.Errorf("coverage: %+v", cov)
	}
	if text := runBonnie(t, "--data", data, "coverage", "--folder", "user.alice.Projects"); !strings.Contains(text, "repaired at") {
		t.Errorf("coverage text:\n%s", text)
	}
	d.stop(t)
	lv.verify(t, 0)
}

// TestBackfillKilledAndResumed: `bonnie backfill` of a mailbox that
// existed before Bonnie is killed with SIGKILL mid-way and run again: the
// log then holds every message exactly once, and a restore of the
// mailbox now is what the server holds.
func TestBackfillKilledAndResumed(t *testing.T) {
	requireEnv(t)
	s := startCyrus(t, cyrustest.Options{Users: map[string]string{"alice": "alice-pw"}})
	data := t.TempDir()
	pwFile := filepath.Join(t.TempDir(), "admin.pw")
	if err := os.WriteFile(pwFile, []byte(cyrustest.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := s.DialQuiet(t, "alice")
	const n = 200
	for i := 1; i <= n; i++ {
		var flags []imap.Flag
		if i%5 == 0 {
			flags = []imap.Flag{imap.FlagSeen}
		}
		if _, err := appendMessage(c, "INBOX", testMessage(fmt.Sprintf("<old%d@example.org>", i), "old")+strings.Repeat("x", 2000)+"\r\n", flags); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"--data", data, "backfill", "--imap", s.QuietIMAPAddr(), "--imap-user", cyrustest.AdminUser,
		"--imap-password-file", pwFile, "--chunk", "2"}
	cmd := exec.Command(bonnieBin, args...)
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lv := newLogView(data)
	waitUntil(t, waitTimeout, "some Backfill events", func() bool {
		if _, err := os.Stat(lv.path); err != nil {
			return false
		}
		lv.open(t)
		return len(ofType(lv.records(t), bonnie.Backfill)) >= 5
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	first := len(ofType(lv.records(t), bonnie.Backfill))
	if first >= n/2 {
		t.Fatalf("the backfill finished (%d events) before it was killed; output:\n%s", first, out.String())
	}
	t.Logf("killed after %d of %d chunks", first, n/2)
	res := runBonnie(t, args...)
	if !strings.Contains(res, "backfilled 1 folders") {
		t.Errorf("second run: %s", res)
	}
	seen := map[uint32]int{}
	for _, r := range ofType(lv.records(t), bonnie.Backfill) {
		cr, err := r.Event.Crawl()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range cr.Messages {
			seen[m.UID]++
		}
	}
	for uid := uint32(1); uid <= n; uid++ {
		if seen[uid] != 1 {
			t.Errorf("UID %d recorded %d times", uid, seen[uid])
		}
	}
	rcSame(t, "after the resumed backfill", rcServerState(t, s), rcLogState(t, lv))
	lv.verify(t, 0)
}

// --reconcile-every needs the IMAP settings it reads the server with.
func TestReconcileFlags(t *testing.T) {
	var sink strings.Builder
	if _, err := parse([]string{"--cyrus-socket", "/x", "--reconcile-every", "1h"}, &sink); err == nil || !strings.Contains(err.Error(), "--reconcile-every needs --imap") {
		t.Errorf("without --imap: %v", err)
	}
	c, err := parse([]string{"--cyrus-socket", "/x", "--reconcile-every", "30m", "--reconcile-mailbox", "user.alice.*",
		"--imap", "127.0.0.1:143", "--imap-password-file", "/pw"}, &sink)
	if err != nil {
		t.Fatal(err)
	}
	if c.reconcile.every != 30*time.Minute || !slices.Equal(c.reconcile.mailboxes, []string{"user.alice.*"}) {
		t.Errorf("parsed %+v", c.reconcile)
	}
	if rc, err := newReconciler(&config{}, nil); rc != nil || err != nil {
		t.Errorf("without --reconcile-every: %v, %v", rc, err)
	}
}
