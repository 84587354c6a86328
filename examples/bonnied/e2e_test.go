package main

// End-to-end tests of bonnied against a real Cyrus IMAP 3.6 (internal/cyrustest):
// real sockets, the real IMAP client and LMTP, and the bonnied binary built
// once in TestMain and run as a subprocess, so that it can be killed with
// SIGKILL. This file holds the harness; the tests are in scenario_test.go,
// restart_test.go, deadletter_test.go and units_test.go.
//
// Nothing here skips silently under CI=true: cyrustest.Start fails there when
// Cyrus is missing, and every other requirement (root, the user cyrus) is
// checked the same way.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/sys/unix"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// waitTimeout bounds every wait for something the daemon or Cyrus does.
const waitTimeout = 30 * time.Second

var (
	// bonniedBin is the daemon under test, built by TestMain, and
	// bonnieBin the CLI that reads its log.
	bonniedBin, bonnieBin string
	// senderBin is a copy of this test binary in a directory user cyrus
	// can reach, run as Cyrus's uid to send hand-made notifications (see
	// senderMain).
	senderBin string
	// buildErr is why TestMain could not prepare the binaries; every test
	// fails with it.
	buildErr error
)

func TestMain(m *testing.M) {
	if os.Getenv(envSend) != "" {
		os.Exit(senderMain())
	}
	dir, err := os.MkdirTemp("/tmp", "bonnied-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bonnied e2e:", err)
		os.Exit(1)
	}
	buildErr = prepareBinaries(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// prepareBinaries builds bonnied (with the race detector when this test
// binary has it, so that the daemon's races fail the tests too) and copies
// the test binary for the sender.
func prepareBinaries(dir string) error {
	// Cyrus (user cyrus) runs the sender from here.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	bonniedBin = filepath.Join(dir, "bonnied")
	args := []string{"build", "-o", bonniedBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build bonnied: %v\n%s", err, out)
	}
	bonnieBin = filepath.Join(dir, "bonnie")
	if out, err := exec.Command("go", "build", "-o", bonnieBin, "../bonnie").CombinedOutput(); err != nil {
		return fmt.Errorf("go build bonnie: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	senderBin = filepath.Join(dir, "sender")
	return copyFile(self, senderBin, 0o755)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// startCyrus starts a Cyrus for the test (cyrustest.Start) and logs what
// Cyrus wrote to syslog if the test fails.
func startCyrus(t *testing.T, opts cyrustest.Options) *cyrustest.Server {
	t.Helper()
	s := cyrustest.Start(t, opts)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Cyrus's log:\n%s", strings.Join(s.Log(), "\n"))
		}
	})
	return s
}

// requireEnv fails (under CI) or skips the test when the end-to-end tests
// cannot run here: they need root, the user cyrus and the daemon binary.
func requireEnv(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("preparing the binaries: %v", buildErr)
	}
	var missing string
	if os.Geteuid() != 0 {
		missing = "not root (Cyrus's master must start as root)"
	} else if _, err := user.Lookup("cyrus"); err != nil {
		// cyrustest.Start installs Cyrus (and so the user) when it can:
		// let it decide between skip and failure.
		return
	}
	if missing != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot run the end-to-end tests under CI: %s", missing)
		}
		t.Skipf("skipping: %s", missing)
	}
}

// cyrusUID returns the uid and gid of user cyrus.
func cyrusUID(t *testing.T) (int, int) {
	t.Helper()
	u, err := user.Lookup("cyrus")
	if err != nil {
		t.Fatalf("user cyrus: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// ---------------------------------------------------------------------------
// The daemon

// lines is a concurrency-safe line collector for the daemon's output.
type lines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	all     []string
	changed chan struct{}
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		i := bytes.IndexByte(l.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.buf.Next(i + 1)[:i]))
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *lines) snapshot() ([]string, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.all)
	if l.buf.Len() > 0 {
		out = append(out, l.buf.String())
	}
	return out, l.changed
}

func (l *lines) String() string {
	all, _ := l.snapshot()
	return strings.Join(all, "\n")
}

// matching returns the lines that match re.
func (l *lines) matching(re *regexp.Regexp) []string {
	all, _ := l.snapshot()
	var out []string
	for _, s := range all {
		if re.MatchString(s) {
			out = append(out, s)
		}
	}
	return out
}

// daemon is one bonnied process.
type daemon struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *lines
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
}

// daemonConfig says how to run bonnied.
type daemonConfig struct {
	data     string // --data
	datagram string // --cyrus-socket
	dlist    string // --cyrus-dlist
	extra    []string
	// activated, when set, is passed as fd 3 with LISTEN_FDS=1 and
	// LISTEN_PID set to the daemon's pid, as systemd does.
	activated *os.File
}

func (c daemonConfig) args() []string {
	args := []string{"--data", c.data, "--metrics", ""}
	if c.datagram != "" {
		args = append(args, "--cyrus-socket", c.datagram)
	}
	if c.dlist != "" {
		args = append(args, "--cyrus-dlist", c.dlist)
	}
	return append(args, c.extra...)
}

// cleanEnv is this process's environment without socket-activation
// variables (the test may itself run under a service manager).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LISTEN_") {
			continue
		}
		env = append(env, kv)
	}
	// A race in the daemon makes it exit with status 66 at the first one.
	return append(env, "GORACE=halt_on_error=1")
}

// startDaemon starts bonnied and waits until it has recorded its
// DaemonStart in the log. The process is killed when the test ends if it
// still runs; its output is logged when the test failed.
func startDaemon(t *testing.T, name string, cfg daemonConfig, lv *logView) *daemon {
	t.Helper()
	var cmd *exec.Cmd
	if cfg.activated != nil {
		// The pid is only known after fork: the shell exports its own
		// pid, then execs bonnied in the same process.
		cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, bonniedBin}, cfg.args()...)...)
		cmd.ExtraFiles = []*os.File{cfg.activated}
		cmd.Env = append(cleanEnv(), "LISTEN_FDS=1")
	} else {
		cmd = exec.Command(bonniedBin, cfg.args()...)
		cmd.Env = cleanEnv()
	}
	// If this test process dies (a test timeout panics without running
	// cleanups), the daemon goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d := &daemon{t: t, name: name, cmd: cmd, out: newLines(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if d.running() {
			_ = cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", name, cmd.Process.Pid, d.out)
		}
	})
	d.waitLine(t, regexp.MustCompile(`msg="bonnied started"`))
	lv.open(t)
	pid := cmd.Process.Pid
	lv.waitFor(t, fmt.Sprintf("%s's DaemonStart (pid %d)", name, pid), func(recs []bonnie.Record) bool {
		return slices.ContainsFunc(recs, func(r bonnie.Record) bool {
			return r.Event.Type == bonnie.DaemonStart && r.Event.PID == pid
		})
	})
	return d
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// waitLine waits until the daemon prints a line matching re; the test fails
// if the daemon exits first or nothing matches in time.
func (d *daemon) waitLine(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	seen := 0
	for {
		all, changed := d.out.snapshot()
		for _, l := range all[min(seen, len(all)):] {
			if re.MatchString(l) {
				return l
			}
		}
		seen = len(all)
		select {
		case <-changed:
		case <-d.done:
			if m := d.out.matching(re); len(m) > 0 {
				return m[0]
			}
			t.Fatalf("%s exited (%v) before printing %q:\n%s", d.name, d.err, re, d.out)
		case <-deadline.C:
			t.Fatalf("%s printed no line matching %q within %v:\n%s", d.name, re, waitTimeout, d.out)
		}
	}
}

// stop sends SIGTERM and waits for a clean exit (status 0).
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", d.name, err)
	}
	select {
	case <-d.done:
	case <-time.After(waitTimeout + 30*time.Second): // beyond the sources' drain timeout
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Fatalf("%s did not stop within its drain timeout after SIGTERM:\n%s", d.name, d.out)
	}
	if d.err != nil {
		t.Errorf("%s exited with %v after SIGTERM:\n%s", d.name, d.err, d.out)
	}
	d.checkOutput(t)
}

// kill sends SIGKILL and waits until the process is gone. It returns the
// instants just before the signal and after the process was reaped.
func (d *daemon) kill(t *testing.T) (sent, dead time.Time) {
	t.Helper()
	sent = time.Now()
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", d.name, err)
	}
	<-d.done
	dead = time.Now()
	var ee *exec.ExitError
	if !errors.As(d.err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("%s: exit %v, want death by SIGKILL:\n%s", d.name, d.err, d.out)
	}
	d.checkOutput(t)
	return sent, dead
}

// badOutput matches what must never appear in the daemon's output: errors
// (slog level ERROR), panics and data races.
var badOutput = regexp.MustCompile(`level=ERROR|^panic:|WARNING: DATA RACE|fatal error:`)

func (d *daemon) checkOutput(t *testing.T) {
	t.Helper()
	if bad := d.out.matching(badOutput); len(bad) > 0 {
		t.Errorf("%s logged failures:\n%s\n--- full output:\n%s", d.name, strings.Join(bad, "\n"), d.out)
	}
}

// ---------------------------------------------------------------------------
// The log

// logView reads the daemon's log (store/sqlite, the same file bonnied
// writes; SQLite in WAL mode lets both processes use it) and caches the
// records read so far.
type logView struct {
	path string
	dsn  string // when set, the log is on PostgreSQL (bonnied --postgres)
	l    bonnie.Store
	recs []bonnie.Record
}

func newLogView(data string) *logView {
	return &logView{path: filepath.Join(data, "log.db")}
}

// open opens the log once the daemon has created it.
func (v *logView) open(t *testing.T) {
	t.Helper()
	if v.l != nil {
		return
	}
	var (
		l   bonnie.Store
		err error
	)
	if v.dsn != "" {
		l, err = postgres.Open(context.Background(), v.dsn, postgres.OnlyExisting())
	} else {
		l, err = sqlite.Open(context.Background(), v.path)
	}
	if err != nil {
		t.Fatalf("open log %s%s: %v", v.path, v.dsn, err)
	}
	v.l = l
	t.Cleanup(func() { l.Close() })
}

// records returns every record, reading what was appended since the last
// call.
func (v *logView) records(t *testing.T) []bonnie.Record {
	t.Helper()
	for {
		var from bonnie.Position
		if n := len(v.recs); n > 0 {
			from = v.recs[n-1].Position
		}
		recs, err := v.l.Read(context.Background(), from, 1000)
		if err != nil {
			t.Fatalf("read log: %v", err)
		}
		v.recs = append(v.recs, recs...)
		if len(recs) < 1000 {
			return v.recs
		}
	}
}

// waitFor polls the log until cond holds.
func (v *logView) waitFor(t *testing.T, what string, cond func([]bonnie.Record) bool) []bonnie.Record {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		recs := v.records(t)
		if cond(recs) {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("log: no %s within %v (%d records)", what, waitTimeout, len(recs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// state returns an entity's current fields.
func (v *logView) state(t *testing.T, kind bonnie.EntityKind, id string) map[string]string {
	t.Helper()
	st, err := v.l.StateAt(context.Background(), kind, id, time.Time{})
	if err != nil {
		t.Fatalf("StateAt %s %s: %v", kind, id, err)
	}
	return st
}

// verify checks the hash chain and that there are no dead letters (or
// exactly want of them) and returns them.
func (v *logView) verify(t *testing.T, wantDeadLetters int) []bonnie.DeadLetter {
	t.Helper()
	ctx := context.Background()
	if err := v.l.Verify(ctx); err != nil {
		t.Errorf("log does not verify: %v", err)
	}
	dls, err := v.l.DeadLetters(ctx, false)
	if err != nil {
		t.Fatalf("dead letters: %v", err)
	}
	if len(dls) != wantDeadLetters {
		var b strings.Builder
		for _, d := range dls {
			fmt.Fprintf(&b, "\n  #%d %s: %s (%d bytes) %.200q", d.ID, d.Source, d.Reason, len(d.Raw), d.Raw)
		}
		t.Errorf("%d dead letters, want %d:%s", len(dls), wantDeadLetters, b.String())
	}
	return dls
}

// waitBody waits until the log holds the body of mailbox's message uid,
// and fails the test if it was recorded as lost. In datagram mode the body
// is fetched over IMAP while the event is ingested: a message expunged a
// few milliseconds after it arrived can be gone by then (Cyrus sends no
// bodies; see README "Archive"), so a test that deletes a message waits
// for its body first.
func waitBody(t *testing.T, lv *logView, mailbox string, uid uint32) {
	t.Helper()
	lv.waitFor(t, fmt.Sprintf("the body of %s UID %d", mailbox, uid), func(recs []bonnie.Record) bool {
		for _, r := range recs {
			if r.Event.Mailbox.Name != mailbox {
				continue
			}
			for _, b := range r.Event.Bodies {
				if b.UID == uid && b.Error != "" {
					t.Fatalf("the body of %s UID %d could not be had: %s", mailbox, uid, b.Error)
				}
				if b.UID == uid && b.Digest != "" {
					return true
				}
			}
		}
		return false
	})
}

// ofType returns the records of event type typ.
func ofType(recs []bonnie.Record, typ bonnie.EventType) []bonnie.Record {
	var out []bonnie.Record
	for _, r := range recs {
		if r.Event.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// extraString reads a detail of an event that the decoder keeps in Extra
// (vnd.bonnie.* of DaemonStart), as a string ("false" for false).
func extraString(ev *bonnie.Event, key string) (string, bool) {
	raw, ok := ev.Extra[key]
	if !ok {
		return "", false
	}
	s := strings.Trim(string(raw), `"`)
	return s, true
}

// ---------------------------------------------------------------------------
// Sockets

// checkSocketFile asserts that bonnied created the socket as documented:
// a socket owned by user cyrus, mode 0600.
func checkSocketFile(t *testing.T, path string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("socket %s: %v", path, err)
	}
	uid, _ := cyrusUID(t)
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o777 != 0o600 || int(st.Uid) != uid {
		t.Errorf("socket %s: mode %#o uid %d, want a socket, 0600, uid %d (cyrus)", path, st.Mode, st.Uid, uid)
	}
}

// holdSocket creates the socket the way systemd's .socket unit does
// (SocketUser=cyrus, SocketMode=0600, PassCredentials=yes for datagrams)
// and returns it; the test keeps it open across daemon restarts.
func holdSocket(t *testing.T, path string, dlist bool) *os.File {
	t.Helper()
	typ := unix.SOCK_DGRAM
	if dlist {
		typ = unix.SOCK_STREAM
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	t.Cleanup(func() { f.Close(); os.Remove(path) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatalf("bind %s: %v", path, err)
	}
	uid, gid := cyrusUID(t)
	if err := os.Lchown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if dlist {
		if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
			t.Fatal(err)
		}
	} else if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	return f
}

// ---------------------------------------------------------------------------
// IMAP

// dialIMAP logs user in on Cyrus's IMAP service over a connection the test
// dialled, so that the test knows the client address Cyrus reports.
func dialIMAP(t *testing.T, s *cyrustest.Server, user string) (*imapclient.Client, net.Addr) {
	t.Helper()
	pw, ok := s.Password(user)
	if !ok {
		t.Fatalf("no user %s", user)
	}
	conn, err := net.DialTimeout("tcp", s.IMAPAddr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := imapclient.New(conn, nil)
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, pw).Wait(); err != nil {
		t.Fatalf("LOGIN %s: %v", user, err)
	}
	return c, conn.LocalAddr()
}

// testMessage is a small message with a unique Message-ID.
func testMessage(msgID, subject string) string {
	return "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\n" +
		"Subject: " + subject + "\r\nMessage-ID: " + msgID + "\r\n" +
		"Date: Mon, 02 Jan 2023 10:00:00 +0000\r\n\r\nHello from the bonnied end-to-end test.\r\n"
}

// appendMessage APPENDs msg and returns its UID (UIDPLUS).
func appendMessage(c *imapclient.Client, mailbox, msg string, flags []imap.Flag) (imap.UID, error) {
	cmd := c.Append(mailbox, int64(len(msg)), &imap.AppendOptions{Flags: flags})
	if _, err := io.WriteString(cmd, msg); err != nil {
		return 0, err
	}
	if err := cmd.Close(); err != nil {
		return 0, err
	}
	data, err := cmd.Wait()
	if err != nil {
		return 0, err
	}
	return data.UID, nil
}

// ---------------------------------------------------------------------------
// The sender: this test binary, run as Cyrus's uid, sends what a test asks
// for to bonnied's sockets, so that the daemon sees an allowed sender
// (SCM_CREDENTIALS / SO_PEERCRED) without --allow-user root.

const (
	envSend     = "BONNIED_E2E_SEND"     // "datagram" or "dlist"
	envSendPath = "BONNIED_E2E_PATH"     // socket path
	envSendData = "BONNIED_E2E_PAYLOADS" // comma-separated payload files
)

// senderMain sends each payload file: one datagram each, or one dlist
// connection each (printing the reply line).
func senderMain() int {
	path := os.Getenv(envSendPath)
	for _, f := range strings.Split(os.Getenv(envSendData), ",") {
		payload, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		switch os.Getenv(envSend) {
		case "datagram":
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			// Raise the send buffer so that a 64 KiB datagram fits (as root
			// the test could force it; as cyrus the default wmem_max is
			// enough for one).
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
			err = unix.Sendto(fd, payload, 0, &unix.SockaddrUnix{Name: path})
			unix.Close(fd)
			if err != nil {
				fmt.Fprintf(os.Stderr, "sendto %d bytes: %v\n", len(payload), err)
				return 1
			}
		case "dlist":
			c, err := net.DialTimeout("unix", path, 10*time.Second)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			_ = c.SetDeadline(time.Now().Add(waitTimeout))
			if _, err := c.Write(payload); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			// A request cut short must end for bonnied: half-close.
			if err := c.(*net.UnixConn).CloseWrite(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				fmt.Fprintf(os.Stderr, "reading reply: %v\n", err)
				return 1
			}
			fmt.Print(line)
		default:
			fmt.Fprintln(os.Stderr, "unknown mode")
			return 1
		}
	}
	return 0
}

// sendAs runs the sender as uid:gid and returns what it printed (the dlist
// reply lines).
func sendAs(t *testing.T, uid, gid int, mode, path string, payloads ...[]byte) string {
	t.Helper()
	out, err := trySendAs(t, uid, gid, mode, path, payloads...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// trySendAs is sendAs returning the sender's failure.
func trySendAs(t *testing.T, uid, gid int, mode, path string, payloads ...[]byte) (string, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(dir); d != "/"; d = filepath.Dir(d) {
		// t.TempDir's parent is 0700 as well.
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				t.Fatal(err)
			}
		}
	}
	var files []string
	for i, p := range payloads {
		f := filepath.Join(dir, fmt.Sprintf("payload-%d", i))
		if err := os.WriteFile(f, p, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	cmd := exec.Command(senderBin)
	cmd.Env = append(cleanEnv(), envSend+"="+mode, envSendPath+"="+path, envSendData+"="+strings.Join(files, ","))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("sender (%s, uid %d): %v: %s", mode, uid, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// waitUntil polls cond until it holds; the test fails after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
