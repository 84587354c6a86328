// Package cyrustest starts a real Cyrus IMAP 3.6 server for tests, the way
// go-imap's imapclient tests start a real Dovecot.
//
// Each call to Start (or New) creates a fresh, private Cyrus: its own
// temporary directory (configuration, mail spool, databases, SASL users),
// its own loopback ports for IMAP and LMTP (and ManageSieve when asked for)
// and its own syslog capture. Several Servers can run at the same time in
// one test binary and in parallel test binaries; nothing is shared between
// them (except /dev/log in the syslog fallback described below), so a test's
// Cyrus is independent of every other test's.
//
// Cyrus sends its RFC 5423 event notifications to a unix socket that the
// test owns: Options.NotifySocket for the datagram transport (one
// AF_UNIX SOCK_DGRAM datagram per notification, NUL-separated fields
// "method class priority user mailbox nopt options... message [fname]"),
// Options.NotifyDList for the synchronous dlist stream transport (one
// SOCK_STREAM connection per notification carrying
// "NOTIFY %(METHOD log CLASS EVENT ... MESSAGE {n+}\r\n<json> FILEPATH NIL)\r\n";
// Cyrus waits for a reply line such as "OK NIL\r\n"). Start itself sends no
// notification: the users' INBOXes are created through a second IMAP
// service whose configuration has notifications off (see DialQuiet).
//
// Typical use:
//
//	path := cyrustest.SocketPath(t, "notify")
//	conn, _ := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
//	s := cyrustest.Start(t, cyrustest.Options{
//		Users:        map[string]string{"alice": "secret"},
//		NotifySocket: path,
//	})
//	c := s.Dial(t, "alice") // logged in; a Login event arrives on conn
//	s.LMTPDeliver(t, "bob@example.org", []string{"alice"}, msg)
//	if n := s.UnansweredNotifications(); n != 0 { t.Errorf(...) }
//
// Requirements: Linux, root (Cyrus's master must start as root and drops to
// user "cyrus" for its services) and the Debian/Ubuntu packages
// cyrus-imapd, cyrus-clients, cyrus-admin and sasl2-bin. When the binaries
// are missing, Start runs the project's .ci/install-cyrus.sh; when that is
// impossible it skips the test, except under CI=true where it fails.
//
// Syslog: Cyrus reports what goes wrong (including notifications it could
// not deliver) only to syslog, i.e. to /dev/log. When the process may create
// mount namespaces (root with CAP_SYS_ADMIN, the usual case), every Server
// runs its Cyrus processes in a private mount namespace whose /dev holds the
// Server's own syslog socket; nothing on the host changes. Otherwise a
// process-wide catcher binds /dev/log if it is absent and splits the lines by
// each Server's syslog_prefix; if /dev/log belongs to someone else, the log is
// not captured (Server.SyslogCaptured reports false).
package cyrustest

import (
	"bufio"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BinDir is where Debian's cyrus-imapd package installs the Cyrus daemons and
// tools.
const BinDir = "/usr/lib/cyrus/bin"

// AdminUser is the Cyrus administrator ("admins: cyrus") that every Server
// has, with password AdminPassword.
const AdminUser = "cyrus"

// AdminPassword is the password of AdminUser.
const AdminPassword = "cyrustest-admin"

// DefaultServerName is the servername (and SASL realm) used when
// Options.ServerName is empty. It is the host part of the IMAP URLs in the
// events ("imap://cyrustest.localdomain/user.alice;UIDVALIDITY=...").
const DefaultServerName = "cyrustest.localdomain"

// DefaultEventGroups is the event_groups value used when
// Options.EventGroups is empty.
const DefaultEventGroups = "message quota flags access mailbox subscription"

// DefaultEventExtraParams is the event_extra_params value used when
// Options.EventExtraParams is empty: every parameter Cyrus 3.6.1 allows
// except vnd.fastmail.convExists, vnd.fastmail.convUnseen,
// vnd.fastmail.counters and vnd.fastmail.jmapStates, which make 3.6.1 abort
// the session at the first event that has no mailbox (e.g. Login).
const DefaultEventExtraParams = "bodyStructure clientAddress diskUsed flagNames messageContent " +
	"messageSize messages modseq service timestamp uidnext vnd.cmu.midset " +
	"vnd.cmu.unseenMessages vnd.cmu.envelope vnd.cmu.sessionId vnd.cmu.mailboxACL " +
	"vnd.cmu.mbtype vnd.cmu.davFilename vnd.cmu.davUid vnd.fastmail.clientId " +
	"vnd.fastmail.sessionId vnd.fastmail.cid vnd.fastmail.jmapEmail vnd.cmu.emailid " +
	"vnd.cmu.threadid"

// startTimeout bounds how long New waits for the IMAP greeting.
const startTimeout = 30 * time.Second

// Options configures a Server. The zero value starts a Cyrus with only the
// admin user and no event notifications.
type Options struct {
	// Users maps login names to passwords. The admin AdminUser always
	// exists in addition. Names must be valid Cyrus user names (lower case,
	// no dots: unixhierarchysep is off).
	Users map[string]string

	// NoInboxes, when true, leaves the users without mailboxes. By default
	// the admin creates "user.NAME" (the user's INBOX) for every user
	// before Start returns. This setup goes through a session that runs
	// with notifications disabled, so it produces no events.
	NoInboxes bool

	// NotifySocket is the path of an AF_UNIX SOCK_DGRAM socket that receives
	// one datagram per notification ("notifysocket: PATH"). The test owns
	// the socket (binds and reads it). It must be shorter than 108 bytes;
	// see SocketPath for a suitable path. When the socket exists at Start,
	// Start makes it writable for user cyrus (chmod 0666) and makes its
	// parent directories searchable for others (o+x).
	NotifySocket string

	// NotifyDList is the path of an AF_UNIX SOCK_STREAM socket for Cyrus's
	// synchronous dlist transport ("notifysocket: dlist:PATH"): one
	// connection per notification, and the IMAP/LMTP command waits, without
	// timeout, until the listener answers a line such as "OK NIL\r\n". A
	// listener that accepts but never answers blocks Cyrus (and the test).
	// Same permission handling as NotifySocket. At most one of NotifySocket
	// and NotifyDList may be set; with neither, event notifications are off.
	NotifyDList string

	// EventNotifier is the event_notifier value (the "method" of the
	// notifications), "log" when empty.
	EventNotifier string

	// EventGroups is the event_groups value, DefaultEventGroups when empty.
	EventGroups string

	// EventExtraParams is the event_extra_params value,
	// DefaultEventExtraParams when empty.
	EventExtraParams string

	// MailNotifier, when not empty, is the mailnotifier value: lmtpd then
	// sends a class MAIL notification per delivery.
	MailNotifier string

	// SieveNotifier, when not empty, is the sievenotifier value: Sieve's
	// "notify" action then sends a class SIEVE notification.
	SieveNotifier string

	// Sieve, when true, also runs timsieved (ManageSieve) on a loopback port;
	// see Server.SieveAddr.
	Sieve bool

	// NoConversations, when true, turns the per-user conversations database
	// off (it is on by default, so that vnd.fastmail.cid and
	// vnd.cmu.threadid carry real values).
	NoConversations bool

	// ServerName is the servername and SASL realm, DefaultServerName when
	// empty.
	ServerName string

	// TLS, when true, makes the server accept TLS: Start generates a
	// throwaway CA and a server certificate for 127.0.0.1, ::1, localhost
	// and the servername; the IMAP service (IMAPAddr) then offers
	// STARTTLS, and an imaps service (imapd -s) listens on IMAPSAddr.
	// CAFile, CAPEM and TLSConfig give the CA to trust. Plain-text LOGIN
	// stays allowed on IMAPAddr.
	TLS bool

	// Config holds additional imapd.conf settings (without the colon). They
	// are written after, and so override, the generated ones.
	Config map[string]string
}

// Server is a running Cyrus IMAP server. Its methods may be called from
// several goroutines.
type Server struct {
	opts       Options
	id         string
	dir        string
	serverName string
	uid, gid   int

	imapAddr  string
	quietAddr string
	lmtpAddr  string
	sieveAddr string
	imapsAddr string // Options.TLS only

	caPEM  []byte         // Options.TLS only
	caPool *x509.CertPool // Options.TLS only

	nsMode bool // Cyrus runs in a private mount namespace with our /dev/log
	syslog *net.UnixConn
	shared bool // registered with the process-wide /dev/log catcher

	cmd      *exec.Cmd
	waitDone chan struct{}
	waitErr  error

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced whenever lines grows

	stopOnce sync.Once
}

// ErrUnavailable is wrapped by the errors New returns when Cyrus cannot run
// on this machine (binaries missing and not installable, not root); Start
// turns such errors into a skip outside CI.
var ErrUnavailable = errors.New("cyrustest: Cyrus IMAP unavailable")

// Start starts a Cyrus IMAP server for the test and stops it, and removes its
// directory, when the test and its subtests have finished.
//
// If the Cyrus binaries are missing, Start runs .ci/install-cyrus.sh from the
// module root; if Cyrus still cannot run (or the process is not root), Start
// calls t.Skip with the reason, except when the environment variable CI is
// "true", where it calls t.Fatal: CI must have installed Cyrus. Any other
// failure is fatal.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		if errors.Is(err, ErrUnavailable) && os.Getenv("CI") != "true" {
			t.Skipf("skipping: %v", err)
		}
		t.Fatalf("%v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// New starts a Cyrus IMAP server outside of a test, e.g. in TestMain for a
// server shared by a whole package. The caller must call Stop. New installs
// missing binaries like Start does; errors that mean "Cyrus cannot run here"
// wrap ErrUnavailable (under CI=true they are returned all the same).
func New(opts Options) (*Server, error) {
	if err := ensureAvailable(); err != nil {
		return nil, err
	}
	if opts.NotifySocket != "" && opts.NotifyDList != "" {
		return nil, errors.New("cyrustest: set at most one of Options.NotifySocket and Options.NotifyDList")
	}
	for _, p := range []string{opts.NotifySocket, opts.NotifyDList} {
		if len(p) >= 108 {
			return nil, fmt.Errorf("cyrustest: notify socket path %q is %d bytes, the limit is 107", p, len(p))
		}
		if p != "" && !filepath.IsAbs(p) {
			return nil, fmt.Errorf("cyrustest: notify socket path %q must be absolute", p)
		}
	}
	for name := range opts.Users {
		if name == "" || name == AdminUser || strings.ContainsAny(name, ". \t\r\n/@\"") {
			return nil, fmt.Errorf("cyrustest: invalid user name %q", name)
		}
	}
	u, err := user.Lookup("cyrus")
	if err != nil {
		return nil, fmt.Errorf("cyrustest: %w: user cyrus: %v", ErrUnavailable, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s := &Server{opts: opts, uid: uid, gid: gid, changed: make(chan struct{})}
		s.serverName = opts.ServerName
		if s.serverName == "" {
			s.serverName = DefaultServerName
		}
		err := s.start()
		if err == nil {
			return s, nil
		}
		s.Stop()
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, lastErr
}

var errPortTaken = errors.New("cyrustest: a port chosen for Cyrus was taken by another process (3 attempts)")

// start does the work of New for one set of ports.
func (s *Server) start() error {
	base := "/tmp"
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "cyrustest-")
	if err != nil {
		return fmt.Errorf("cyrustest: %v", err)
	}
	s.dir = dir
	s.id = filepath.Base(dir)
	// The services run as user cyrus: they need to traverse the directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("cyrustest: %v", err)
	}
	if len(filepath.Join(dir, "lib/socket/lmtp")) >= 108 {
		return fmt.Errorf("cyrustest: temporary directory %q is too long for unix socket paths", dir)
	}

	nPorts := 4
	if s.opts.TLS {
		nPorts = 5
	}
	ports, err := pickPorts(nPorts)
	if err != nil {
		return fmt.Errorf("cyrustest: %v", err)
	}
	s.imapAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	s.quietAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	s.lmtpAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	if s.opts.Sieve {
		s.sieveAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[3]))
	}
	if s.opts.TLS {
		s.imapsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[4]))
	}

	for _, p := range []string{s.opts.NotifySocket, s.opts.NotifyDList} {
		if p != "" {
			makeReachable(p)
		}
	}
	if err := s.writeFiles(); err != nil {
		return fmt.Errorf("cyrustest: %v", err)
	}
	if s.opts.TLS {
		if err := s.makeTLS(); err != nil {
			return fmt.Errorf("cyrustest: TLS certificates: %v", err)
		}
	}
	if err := s.setupSyslog(); err != nil {
		return fmt.Errorf("cyrustest: syslog: %v", err)
	}
	if err := s.createUsers(); err != nil {
		return fmt.Errorf("cyrustest: %v", err)
	}

	if err := s.runMaster(); err != nil {
		return err
	}
	if !s.opts.NoInboxes && len(s.opts.Users) > 0 {
		if err := s.createInboxes(); err != nil {
			return fmt.Errorf("cyrustest: creating INBOXes: %v%s", err, s.logTail())
		}
	}
	return nil
}

// Restart stops Cyrus (SIGTERM to master and its services, as an
// operator's restart would) and starts it again on the same directory,
// ports and notification target: mail and mailboxes stay. IMAP sessions
// open before are cut.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.killAll()
	if err := s.runMaster(); err != nil {
		t.Fatalf("cyrustest: restart: %v", err)
	}
}

// runMaster starts master on the prepared directory and waits until it
// serves.
func (s *Server) runMaster() error {
	dir := s.dir
	// master starts as root, binds the listeners, then runs the services
	// as user cyrus. -D keeps stdin/stdout/stderr: its output lands in Log.
	args := []string{filepath.Join(BinDir, "master"), "-D",
		"-C", s.confPath(), "-M", filepath.Join(dir, "cyrus.conf"),
		"-p", filepath.Join(dir, "master.pid")}
	s.cmd = s.command(args...)
	s.cmd.Dir = dir
	s.cmd.Stdin = nil
	s.cmd.Stdout = &lineWriter{s: s, prefix: "master stdout: "}
	s.cmd.Stderr = &lineWriter{s: s, prefix: "master stderr: "}
	s.cmd.SysProcAttr.Setpgid = true
	s.cmd.WaitDelay = 2 * time.Second
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		return fmt.Errorf("cyrustest: starting master: %v", err)
	}
	s.waitDone = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.waitDone)
	}()

	return s.waitReady()
}

// command returns an exec.Cmd for a Cyrus program (or master) that runs, in
// namespace mode, in a private mount namespace whose /dev/log is the
// Server's syslog socket.
func (s *Server) command(args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if s.nsMode {
		cmd = exec.Command("/bin/sh", append([]string{"-c", nsScript, "cyrustest-ns", filepath.Join(s.dir, "dev")}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	} else {
		cmd = exec.Command(args[0], args[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	return cmd
}

// waitReady waits until master answers on the IMAP port with a greeting and
// owns the IMAP and LMTP listening sockets; with Options.TLS, also until
// the imaps port answers a TLS handshake (verified against the Server's CA)
// with a greeting.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	imapUp := false
	var tlsErr error
	for {
		select {
		case <-s.waitDone:
			if s.portsTakenInLog() {
				return errPortTaken
			}
			return fmt.Errorf("cyrustest: master exited during start-up (%v)%s", s.waitErr, s.logTail())
		default:
		}
		if !imapUp {
			if greeting, err := readGreeting(s.imapAddr); err == nil {
				if !strings.HasPrefix(greeting, "* OK") {
					return fmt.Errorf("cyrustest: unexpected IMAP greeting %q%s", greeting, s.logTail())
				}
				for _, a := range []string{s.imapAddr, s.quietAddr, s.lmtpAddr, s.sieveAddr, s.imapsAddr} {
					if a != "" && !s.ownsListener(a) {
						return errPortTaken
					}
				}
				imapUp = true
			}
		}
		if imapUp {
			if s.imapsAddr == "" {
				return nil
			}
			if _, tlsErr = s.readGreetingTLS(); tlsErr == nil {
				return nil
			}
		}
		if s.portsTakenInLog() {
			return errPortTaken
		}
		if time.Now().After(deadline) {
			if imapUp {
				return fmt.Errorf("cyrustest: no IMAPS greeting on %s after %v: %v%s", s.imapsAddr, startTimeout, tlsErr, s.logTail())
			}
			return fmt.Errorf("cyrustest: no IMAP greeting on %s after %v%s", s.imapAddr, startTimeout, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readGreeting(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	_, _ = io.WriteString(c, "x LOGOUT\r\n")
	return strings.TrimRight(line, "\r\n"), nil
}

// portsTakenInLog reports whether master logged that it could not bind one
// of our ports.
func (s *Server) portsTakenInLog() bool {
	for _, l := range s.Log() {
		if strings.Contains(l, "Address already in use") {
			return true
		}
	}
	return false
}

// ownsListener reports whether the TCP socket listening on addr belongs to
// our master process (and not to some other process that grabbed the port
// between freePorts and master's bind).
func (s *Server) ownsListener(addr string) bool {
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	inode := listeningInode(port)
	if inode == "" {
		return false
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.cmd.Process.Pid))
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", s.cmd.Process.Pid, fd.Name()))
		if err == nil && l == want {
			return true
		}
	}
	return false
}

// listeningInode returns the inode of the socket listening on
// 127.0.0.1:port, from /proc/net/tcp.
func listeningInode(port int) string {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return ""
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 10 && f[1] == want && f[3] == "0A" {
			return f[9]
		}
	}
	return ""
}

// pickPorts chooses the ports of a Server (a variable for tests).
var pickPorts = freePorts

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Stop stops Cyrus (every process of the server), closes the syslog capture
// and removes the Server's directory. Start registers Stop with t.Cleanup;
// calling it again is harmless.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			s.killAll()
		}
		if s.syslog != nil {
			s.syslog.Close()
		}
		if s.shared {
			sharedSyslog.unregister(s)
		}
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
	})
}

// killAll terminates master and every process started under it.
func (s *Server) killAll() {
	pid := s.cmd.Process.Pid
	select {
	case <-s.waitDone:
	default:
		// Collect the descendants first: once master is gone they are
		// re-parented and could no longer be found.
		victims := descendants(pid)
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-s.waitDone:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-s.waitDone
		}
		// Services that left the process group, or ignored SIGTERM.
		time.Sleep(10 * time.Millisecond)
		for _, v := range victims {
			if alive(v) {
				_ = syscall.Kill(v, syscall.SIGKILL)
			}
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	// Wait (bounded) until no process of the group is left running.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if len(groupMembers(pid)) == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// descendants returns the PIDs of every running descendant of pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	for _, p := range procs() {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// groupMembers returns the PIDs of the processes of process group pgid that
// are not zombies.
func groupMembers(pgid int) []int {
	var out []int
	for _, p := range procs() {
		if p.pgid == pgid && p.state != "Z" {
			out = append(out, p.pid)
		}
	}
	return out
}

func alive(pid int) bool {
	for _, p := range procs() {
		if p.pid == pid {
			return p.state != "Z"
		}
	}
	return false
}

type procInfo struct {
	pid, ppid, pgid int
	state           string
}

// procs lists the processes of the machine from /proc.
func procs() []procInfo {
	ents, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pgid, _ := strconv.Atoi(f[2])
		out = append(out, procInfo{pid: pid, ppid: ppid, pgid: pgid, state: f[0]})
	}
	return out
}

// IMAPAddr returns the host:port of the IMAP service (plain text, LOGIN
// allowed), with event notifications as configured.
func (s *Server) IMAPAddr() string { return s.imapAddr }

// QuietIMAPAddr returns the host:port of a second IMAP service of the same
// server whose sessions run with event notifications disabled: what is done
// through it produces no events. DialQuiet connects to it.
func (s *Server) QuietIMAPAddr() string { return s.quietAddr }

// LMTPAddr returns the host:port of the LMTP service (pre-authenticated,
// lmtpd -a).
func (s *Server) LMTPAddr() string { return s.lmtpAddr }

// SieveAddr returns the host:port of the ManageSieve service, or "" unless
// Options.Sieve was set.
func (s *Server) SieveAddr() string { return s.sieveAddr }

// Dir returns the Server's temporary directory (configuration, spool,
// databases). It is removed by Stop.
func (s *Server) Dir() string { return s.dir }

// ConfigPath returns the path of the Server's imapd.conf, for Cyrus tools
// (see Tool).
func (s *Server) ConfigPath() string { return s.confPath() }

// ServerName returns the servername (and SASL realm) of the Server.
func (s *Server) ServerName() string { return s.serverName }

// Password returns the password of a user of the Server (AdminPassword for
// AdminUser) and whether the user exists.
func (s *Server) Password(user string) (string, bool) {
	if user == AdminUser {
		return AdminPassword, true
	}
	pw, ok := s.opts.Users[user]
	return pw, ok
}

// Tool runs a Cyrus tool from BinDir (such as "cyr_expire", "reconstruct",
// "ctl_conversationsdb") as user cyrus with "-C imapd.conf" prepended to
// args, and returns its combined output. Its syslog lines are captured like
// the server's. A non-zero exit fails the test.
func (s *Server) Tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := s.command(append([]string{filepath.Join(BinDir, name), "-C", s.confPath()}, args...)...)
	cmd.Dir = s.dir
	if s.nsMode {
		// The namespace set-up needs root; the script drops to cyrus.
		cmd.Env = append(cmd.Env, fmt.Sprintf("CYRUSTEST_RUNAS=%d:%d", s.uid, s.gid))
	} else {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.uid), Gid: uint32(s.gid)}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cyrustest: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sortedUsers returns the names of Options.Users in order.
func (s *Server) sortedUsers() []string {
	var names []string
	for n := range s.opts.Users {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// SocketPath returns a path for a unix socket the test will bind (e.g. for
// Options.NotifySocket): short enough for sun_path, in a directory that
// user cyrus can traverse, removed when the test ends. The file does not
// exist yet; chmod it 0666 after binding (or let Start do it).
func SocketPath(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cyrustest-sock-")
	if err != nil {
		t.Fatalf("cyrustest.SocketPath: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("cyrustest.SocketPath: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, name)
	if len(p) >= 108 {
		t.Fatalf("cyrustest.SocketPath: %q is too long for a unix socket", p)
	}
	return p
}

// makeReachable lets user cyrus reach the socket at p: the socket (if it
// exists already) becomes 0666 and every parent directory gets o+x.
func makeReachable(p string) {
	if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 && fi.Mode().Perm()&0o002 == 0 {
		_ = os.Chmod(p, 0o666)
	}
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			_ = os.Chmod(d, fi.Mode().Perm()|0o001)
		}
		if d == "/" || d == "." {
			break
		}
	}
}
