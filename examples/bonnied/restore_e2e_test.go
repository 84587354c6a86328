package main

// End-to-end tests of `bonnie restore --to imap://` against a real Cyrus:
// bonnied ingests a mail history with --imap body fetching, then moments
// of that history are restored into the same Cyrus and compared with what
// Cyrus held at those moments.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/sink/backup"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// restoreEnv is a Cyrus with alice and bob and a bonnied archiving its
// bodies over IMAP.
type restoreEnv struct {
	s      *cyrustest.Server
	lv     *logView
	data   string
	pwFile string // the admin's password
	seq    int    // barriers so far
	d      *daemon
}

func newRestoreEnv(t *testing.T) *restoreEnv {
	t.Helper()
	requireEnv(t)
	sock := cyrustest.SocketPath(t, "notify.sock")
	s := startCyrus(t, cyrustest.Options{
		Users:        map[string]string{"alice": "alice-pw", "bob": "bob-pw"},
		NotifySocket: sock,
	})
	e := &restoreEnv{s: s, data: t.TempDir()}
	e.pwFile = filepath.Join(t.TempDir(), "admin.pw")
	if err := os.WriteFile(e.pwFile, []byte(cyrustest.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.lv = newLogView(e.data)
	e.d = startDaemon(t, "bonnied", daemonConfig{data: e.data, datagram: sock, extra: []string{
		"--imap", s.IMAPAddr(), "--imap-user", cyrustest.AdminUser, "--imap-password-file", e.pwFile,
	}}, e.lv)
	return e
}

// moment waits until bonnied has ingested everything Cyrus notified so far
// (a barrier: a folder created after it, whose event comes after theirs on
// the socket) and returns a time after all of it and before anything that
// follows.
func (e *restoreEnv) moment(t *testing.T) time.Time {
	t.Helper()
	e.seq++
	name := fmt.Sprintf("user.bob.barrier%d", e.seq)
	e.s.CreateMailbox(t, name)
	e.lv.waitFor(t, "MailboxCreate "+name, func(recs []bonnie.Record) bool {
		return slices.ContainsFunc(recs, func(r bonnie.Record) bool {
			return r.Event.Type == bonnie.MailboxCreate && r.Event.Mailbox.Name == name
		})
	})
	time.Sleep(5 * time.Millisecond)
	at := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)
	return at
}

// restore runs `bonnie restore` and returns its standard output.
func (e *restoreEnv) restore(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.tryRestore(t, args...)
	if err != nil {
		t.Fatalf("bonnie restore %q: %v\n%s", args, err, out)
	}
	t.Logf("bonnie restore %s\n%s", strings.Join(args, " "), out)
	return out
}

func (e *restoreEnv) tryRestore(t *testing.T, args ...string) (string, error) {
	t.Helper()
	all := append([]string{"--data", e.data, "restore", "--to", "imap://" + e.s.IMAPAddr(),
		"--user", cyrustest.AdminUser, "--password-file", e.pwFile}, args...)
	cmd := exec.Command(bonnieBin, all...)
	cmd.Env = cleanEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), err
}

// lockedBuilder is a strings.Builder safe for concurrent writers.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// folderState is what a folder holds, as its owner sees it: one line
// "sha256 flags internal-date" per message, sorted (\Recent left out).
func folderState(t *testing.T, s *cyrustest.Server, user, mailbox string) []string {
	t.Helper()
	pw, _ := s.Password(user)
	var wire lockedBuilder // what was said, for a failure (go-imap writes it from two goroutines)
	c, err := imapclient.DialInsecure(s.IMAPAddr(), &imapclient.Options{DebugWriter: &wire})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, pw).Wait(); err != nil {
		t.Fatalf("LOGIN %s: %v", user, err)
	}
	defer func() { c.Logout().Wait() }()
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("SELECT %s as %s: %v\n%s", mailbox, user, err, wire.String())
	}
	if sel.NumMessages == 0 {
		return nil
	}
	all := imap.SeqSet{}
	all.AddRange(1, 0)
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(all, &imap.FetchOptions{Flags: true, InternalDate: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		t.Fatalf("FETCH %s: %v", mailbox, err)
	}
	var out []string
	for _, m := range msgs {
		sum := sha256.Sum256(m.FindBodySection(section))
		var fl []string
		for _, f := range m.Flags {
			if !strings.EqualFold(string(f), `\Recent`) {
				fl = append(fl, string(f))
			}
		}
		slices.Sort(fl)
		out = append(out, hex.EncodeToString(sum[:])+" ["+strings.Join(fl, " ")+"] "+m.InternalDate.UTC().Format(time.RFC3339))
	}
	slices.Sort(out)
	return out
}

func sameState(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %d messages\n\t%s\n want %d messages\n\t%s", what, len(got), strings.Join(got, "\n\t"), len(want), strings.Join(want, "\n\t"))
	}
}

// restoreMessage is a small message numbered n.
func restoreMessage(n int) string {
	return fmt.Sprintf("From: Carol <carol@example.org>\r\nTo: alice@example.org\r\nSubject: restore %d\r\n"+
		"Message-ID: <restore-%d@bonnie.test>\r\nDate: Mon, 02 Jan 2023 10:00:00 +0000\r\n\r\nBody of message %d.\r\n%s",
		n, n, n, strings.Repeat("line\r\n", n))
}

// appendDated APPENDs message n with flags and an internal date of its own.
func appendDated(t *testing.T, c *imapclient.Client, mailbox string, n int, flags ...imap.Flag) {
	t.Helper()
	msg := restoreMessage(n)
	cmd := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: flags, Time: time.Date(2025, 3, n, 9, n, n, 0, time.UTC)})
	if _, err := cmd.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("APPEND %d to %s: %v", n, mailbox, err)
	}
}

// TestRestoreIMAP drives a history on a real Cyrus (appends with flags and
// dates, flag changes, a move, a read by another user of a shared folder,
// a mass deletion) with bonnied archiving it, and restores several moments
// of it with `bonnie restore --to imap://`: into a second user's folders
// and, undoing the deletion, into the folder itself. Each restored folder
// must hold what the folder held then: the same bytes (SHA-256 of
// BODY.PEEK[]), flags and internal dates. Re-runs add nothing; --message
// restores one message; the owner's \Seen is restored unless --seen-as.
func TestRestoreIMAP(t *testing.T) {
	t.Parallel()
	e := newRestoreEnv(t)
	s := e.s
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	const work = "user.alice.Work"
	c := s.Dial(t, "alice")
	must("CREATE", c.Create("INBOX.Work", nil).Wait())
	must("CREATE", c.Create("INBOX.Other", nil).Wait())
	appendDated(t, c, "INBOX.Work", 1, imap.FlagFlagged)
	appendDated(t, c, "INBOX.Work", 2)
	appendDated(t, c, "INBOX.Work", 3, imap.FlagAnswered, "$Label1")
	appendDated(t, c, "INBOX.Work", 4, imap.FlagSeen)
	appendDated(t, c, "INBOX.Work", 5)
	appendDated(t, c, "INBOX.Work", 6, imap.FlagDraft)
	t1 := e.moment(t)
	s1 := folderState(t, s, "alice", "INBOX.Work")
	if len(s1) != 6 {
		t.Fatalf("at t1 Work holds %d messages", len(s1))
	}

	_, err := c.Select("INBOX.Work", nil).Wait()
	must("SELECT", err)
	store := func(uid imap.UID, op imap.StoreFlagsOp, flags ...imap.Flag) {
		t.Helper()
		must("STORE", c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close())
	}
	store(2, imap.StoreFlagsAdd, imap.FlagSeen, imap.FlagFlagged)
	store(1, imap.StoreFlagsDel, imap.FlagFlagged)
	_, err = c.Move(imap.UIDSetNum(3), "INBOX.Other").Wait()
	must("MOVE", err)
	appendDated(t, c, "INBOX.Work", 7, "$Important")
	t2 := e.moment(t)
	s2 := folderState(t, s, "alice", "INBOX.Work")

	// Bob reads message 5 of alice's Work, shared with him: his \Seen.
	s.SetACL(t, work, "bob", "lrs")
	b := s.Dial(t, "bob")
	_, err = b.Select(work, nil).Wait()
	must("SELECT as bob", err)
	_, err = b.Fetch(imap.UIDSetNum(5), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	must("FETCH as bob", err)
	must("LOGOUT bob", b.Logout().Wait())
	t3 := e.moment(t)
	s3 := folderState(t, s, "alice", "INBOX.Work")
	bobs3 := folderState(t, s, "bob", work)
	t.Logf("Work at t1:\n\t%s\nat t2:\n\t%s\nat t3:\n\t%s\nat t3 as bob:\n\t%s", strings.Join(s1, "\n\t"),
		strings.Join(s2, "\n\t"), strings.Join(s3, "\n\t"), strings.Join(bobs3, "\n\t"))
	if slices.Equal(s3, bobs3) {
		t.Fatalf("bob's view equals alice's: his read did not set his own \\Seen\n%q", s3)
	}

	// The accident: everything in Work deleted.
	store(1, imap.StoreFlagsAdd, imap.FlagDeleted)
	all := imap.SeqSet{}
	all.AddRange(1, 0)
	must("STORE", c.Store(all, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close())
	must("EXPUNGE", c.Expunge().Close())
	must("LOGOUT", c.Logout().Wait())
	e.moment(t)
	if n := len(folderState(t, s, "alice", "INBOX.Work")); n != 0 {
		t.Fatalf("after the deletion Work holds %d", n)
	}
	at := func(t time.Time) string { return t.Format(time.RFC3339Nano) }

	// Each moment into a folder of bob's, as bob.
	for i, m := range []struct {
		at   time.Time
		want []string
	}{{t1, s1}, {t2, s2}, {t3, s3}} {
		into := fmt.Sprintf("user.bob.R%d", i+1)
		out := e.restore(t, "--mailbox", work, "--at", at(m.at), "--authorize", "bob", "--into", into)
		if !strings.Contains(out, fmt.Sprintf("%d written", len(m.want))) || !strings.Contains(out, "1 created") {
			t.Errorf("restore t%d: %s", i+1, out)
		}
		sameState(t, fmt.Sprintf("t%d restored into %s", i+1, into), folderState(t, s, "bob", fmt.Sprintf("INBOX.R%d", i+1)), m.want)
	}

	// A re-run adds nothing (and says so, here as JSON).
	out := e.restore(t, "--mailbox", work, "--at", at(t2), "--authorize", "bob", "--into", "user.bob.R2", "--json")
	var rep struct {
		Messages, Written, Kept, Updated, Created int
	}
	must("JSON report", json.Unmarshal([]byte(out), &rep))
	if rep.Messages != len(s2) || rep.Written != 0 || rep.Kept != len(s2) || rep.Created != 0 {
		t.Errorf("re-run: %s", out)
	}
	sameState(t, "t2 after a re-run", folderState(t, s, "bob", "INBOX.R2"), s2)

	// Bob's view of t3 (--seen-as): message 5 is \Seen, for alice not.
	e.restore(t, "--mailbox", work, "--at", at(t3), "--authorize", "bob", "--into", "user.bob.R3bob", "--seen-as", "bob")
	sameState(t, "t3 as bob saw it", folderState(t, s, "bob", "INBOX.R3bob"), bobs3)

	// Undo: t3 back into alice's Work itself, as alice.
	e.restore(t, "--mailbox", work, "--at", at(t3), "--authorize", "alice")
	sameState(t, "Work undeleted", folderState(t, s, "alice", "INBOX.Work"), s3)
	out = e.restore(t, "--mailbox", work, "--at", at(t3), "--authorize", "alice")
	if !strings.Contains(out, "0 written") {
		t.Errorf("undo re-run: %s", out)
	}
	sameState(t, "Work undeleted, re-run", folderState(t, s, "alice", "INBOX.Work"), s3)

	// Another accident, of flags only: everything marked \Deleted and
	// read, not expunged. The restore appends nothing and puts the flags
	// of t3 back.
	c = s.Dial(t, "alice")
	_, err = c.Select("INBOX.Work", nil).Wait()
	must("SELECT", err)
	must("STORE", c.Store(all, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted, imap.FlagSeen}}, nil).Close())
	must("LOGOUT", c.Logout().Wait())
	out = e.restore(t, "--mailbox", work, "--at", at(t3), "--authorize", "alice")
	if !strings.Contains(out, "0 written, 0 already there, 6 flags updated") {
		t.Errorf("flags undo: %s", out)
	}
	sameState(t, "Work's flags undone", folderState(t, s, "alice", "INBOX.Work"), s3)

	// One message by Message-ID, wherever it was at t2 (Other: it moved).
	out = e.restore(t, "--message", "<restore-3@bonnie.test>", "--at", at(t2), "--authorize", "bob", "--into", "user.bob.M")
	if !strings.Contains(out, "1 written") {
		t.Errorf("--message: %s", out)
	}
	other := folderState(t, s, "alice", "INBOX.Other")
	sameState(t, "--message", folderState(t, s, "bob", "INBOX.M"), other)

	// By uniqueid: the folder whatever its name.
	var workID string
	for _, r := range e.lv.records(t) {
		if r.Event.Type == bonnie.MailboxCreate && r.Event.Mailbox.Name == work {
			workID = r.Event.MailboxID
		}
	}
	if workID == "" {
		t.Fatal("no MailboxCreate for Work in the log")
	}
	e.restore(t, "--mailbox", workID, "--at", at(t1), "--authorize", "bob", "--into", "user.bob.ByID")
	sameState(t, "by uniqueid", folderState(t, s, "bob", "INBOX.ByID"), s1)

	// An interrupted restore, run again, completes without duplicates.
	ctx := context.Background()
	blobs, _ := archive.Paths(e.data)
	bodies, err := blob.Open(blobs)
	must("blob store", err)
	items, err := backup.Plan(ctx, e.lv.l, backup.Query{Mailbox: work, At: t2})
	must("plan", err)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o := backup.IMAPOptions{Addr: s.IMAPAddr(), User: cyrustest.AdminUser, Password: cyrustest.AdminPassword,
		AuthorizeAs: "bob", Mailbox: work, Into: "user.bob.Resumed", Window: 1,
		Progress: func(done, _ int) {
			if done == 2 {
				cancel()
			}
		}}
	r, err := backup.WriteIMAP(cctx, items, bodies, o)
	if !errors.Is(err, context.Canceled) || r.Written != 2 {
		t.Fatalf("interrupted: %+v %v", r, err)
	}
	if got := folderState(t, s, "bob", "INBOX.Resumed"); len(got) != 2 {
		t.Errorf("after the interruption: %d messages", len(got))
	}
	o.Progress = nil
	r, err = backup.WriteIMAP(ctx, items, bodies, o)
	must("resume", err)
	if r.Written != len(s2)-2 || r.Kept != 2 {
		t.Errorf("resumed: %+v", r)
	}
	sameState(t, "resumed", folderState(t, s, "bob", "INBOX.Resumed"), s2)
	e.lv.verify(t, 0)
}

// TestRestoreIMAPThroughput measures restore messages/s into Cyrus: with
// BONNIE_RESTORE_BENCH=N it archives N messages through bonnied, restores
// them into a fresh folder with `bonnie restore` and logs the rate (see
// BENCHMARKS.md). Skipped without the variable.
func TestRestoreIMAPThroughput(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("BONNIE_RESTORE_BENCH"))
	if n <= 0 {
		t.Skip("set BONNIE_RESTORE_BENCH=N to measure")
	}
	e := newRestoreEnv(t)
	c := e.s.Dial(t, "alice")
	if err := c.Create("INBOX.Big", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	fill := time.Now()
	for i := 1; i <= n; i++ {
		msg := restoreMessage(i%50) + strings.Repeat(fmt.Sprintf("%d filler text of a typical mail body.\r\n", i), 100)
		if _, err := appendMessage(c, "INBOX.Big", msg, []imap.Flag{imap.FlagSeen}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("baseline: %d plain APPENDs by alice in %.2fs (%.0f msg/s; bonnied archiving them)",
		n, time.Since(fill).Seconds(), float64(n)/time.Since(fill).Seconds())
	at := e.moment(t)
	for i, run := range []struct {
		window string
		daemon bool
	}{{"1", true}, {"8", true}, {"1", false}, {"8", false}} {
		if !run.daemon && e.d.running() {
			// Without bonnied archiving each restored message as it comes.
			e.d.stop(t)
		}
		window := run.window
		start := time.Now()
		out := e.restore(t, "--mailbox", "user.alice.Big", "--at", at.Format(time.RFC3339Nano), "--authorize", "bob",
			"--into", fmt.Sprintf("user.bob.Big%d", i), "--window", window, "--json")
		elapsed := time.Since(start)
		var rep struct {
			Written int
			Seconds float64
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Written != n {
			t.Fatalf("restore: %v %s", err, out)
		}
		t.Logf("window %s, bonnied running %v: %d messages restored in %.2fs (%.0f msg/s; %.2fs with planning and process start)",
			window, run.daemon, n, rep.Seconds, float64(n)/rep.Seconds, elapsed.Seconds())
	}
}

// TestRestoreIMAPKilled kills `bonnie restore` (SIGKILL) in the middle of
// a restore into Cyrus and runs it again: the folder then holds what the
// original held, each message once, whatever APPEND was in flight.
func TestRestoreIMAPKilled(t *testing.T) {
	t.Parallel()
	e := newRestoreEnv(t)
	c := e.s.Dial(t, "alice")
	if err := c.Create("INBOX.Many", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := 1; i <= n; i++ {
		appendDated(t, c, "INBOX.Many", i, imap.FlagSeen)
	}
	at := e.moment(t)
	want := folderState(t, e.s, "alice", "INBOX.Many")
	if len(want) != n {
		t.Fatalf("Many holds %d messages", len(want))
	}
	what := []string{"--authorize", "bob", "--mailbox", "user.alice.Many",
		"--at", at.Format(time.RFC3339Nano), "--into", "user.bob.Many", "--window", "1"}
	cmd := exec.Command(bonnieBin, append([]string{"--data", e.data, "restore", "--to", "imap://" + e.s.IMAPAddr(),
		"--user", cyrustest.AdminUser, "--password-file", e.pwFile}, what...)...)
	cmd.Env = cleanEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Kill it once some messages are in.
	count := func() uint32 {
		lines, err := statusMessages(e.s, "bob", "INBOX.Many")
		if err != nil {
			return 0
		}
		return lines
	}
	deadline := time.Now().Add(waitTimeout)
	for count() < 20 {
		select {
		case err := <-done:
			t.Fatalf("restore ended before it could be killed (%v): %s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the restore appended nothing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-done
	partial := count()
	if partial >= n {
		t.Fatalf("the restore completed (%d) before the kill", partial)
	}
	out := e.restore(t, what...)
	if !strings.Contains(out, fmt.Sprintf("%d written, %d already there", n-int(partial), partial)) {
		t.Errorf("after a kill at %d: %s", partial, out)
	}
	sameState(t, "restored after a kill", folderState(t, e.s, "bob", "INBOX.Many"), want)
}

// statusMessages returns the number of messages in mailbox, asked by user
// with STATUS.
func statusMessages(s *cyrustest.Server, user, mailbox string) (uint32, error) {
	c, err := imapclient.DialInsecure(s.IMAPAddr(), nil)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	pw, _ := s.Password(user)
	if err := c.Login(user, pw).Wait(); err != nil {
		return 0, err
	}
	st, err := c.Status(mailbox, &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		return 0, err
	}
	_ = c.Logout().Wait()
	if st.NumMessages == nil {
		return 0, errors.New("no MESSAGES in STATUS")
	}
	return *st.NumMessages, nil
}
