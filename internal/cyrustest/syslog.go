package cyrustest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// unansweredRE matches the syslog lines in which Cyrus 3.6.1 (imap/notify.c)
// reports a notification that it could not deliver, or that the dlist
// listener did not acknowledge with OK. The part in parentheses is the class
// and, for MAIL/SIEVE, user and mailbox ("NOTIFY(EVENT): ...",
// "NOTIFY(MAIL, alice, user.alice): ..."):
//
//	datagram:  NOTIFY(%s): unable to sendto() socket: %m
//	           NOTIFY(%s): short write to socket
//	           NOTIFY(%s): datagram too large
//	dlist:     NOTIFY(%s): failed to connect to %s: %m
//	           NOTIFY(%s): error sending %s to %s      (no reply line)
//	           NOTIFY(%s): response %s to method %s    (reply not OK)
//	both:      NOTIFY(%s): unable to create notify socket(): %m
//	           NOTIFY(%s): unable to getsockopt(SO_SNDBUF) on socket: %m
var unansweredRE = regexp.MustCompile(`NOTIFY\([^)]*\): (unable to sendto\(\) socket|short write to socket|` +
	`datagram too large|failed to connect to |error sending |response |unable to create notify socket|unable to getsockopt)`)

// okResponseRE matches a dlist reply that is OK after all (3.6.1 does not
// log those, older versions did).
var okResponseRE = regexp.MustCompile(`NOTIFY\([^)]*\): response OK to method `)

// Log returns the lines Cyrus has written to syslog so far (without the
// "<priority>" prefix, e.g. "Nov 28 21:30:00 cyrustest-123/imap[42]: login:
// ..."), followed, in arrival order, by what master and the services wrote
// to stdout/stderr (prefixed "master stdout: "/"master stderr: ").
func (s *Server) Log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// SyslogCaptured reports whether the Server captures Cyrus's syslog. It is
// false only when the process can create no mount namespace and /dev/log
// belongs to some other process (see the package documentation).
func (s *Server) SyslogCaptured() bool { return s.nsMode || s.shared }

// UnansweredNotifications returns how many syslog lines so far report a
// notification that Cyrus could not deliver to the notify socket (datagram
// mode: nobody listening, no permission, too large) or for which the dlist
// listener did not reply OK (dlist mode: connect failed, no reply line,
// reply other than OK). Such notifications are lost.
//
// Syslog lines arrive asynchronously: to wait for one use WaitLog. It panics
// if the Server does not capture syslog (SyslogCaptured is false), so that
// a test cannot pass by not seeing the log.
func (s *Server) UnansweredNotifications() int {
	if !s.SyslogCaptured() {
		panic("cyrustest: UnansweredNotifications: Cyrus's syslog is not captured " +
			"(no mount namespace and /dev/log is taken); see the cyrustest package documentation")
	}
	n := 0
	for _, l := range s.Log() {
		if unansweredRE.MatchString(l) && !okResponseRE.MatchString(l) {
			n++
		}
	}
	return n
}

// WaitLog waits until a log line (see Log) matches re and returns it; the
// test fails if none does within timeout.
func (s *Server) WaitLog(t testing.TB, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		s.mu.Lock()
		lines, changed := s.lines[seen:], s.changed
		seen = len(s.lines)
		s.mu.Unlock()
		for _, l := range lines {
			if re.MatchString(l) {
				return l
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("cyrustest: no log line matching %q after %v%s", re, timeout, s.logTail())
			return ""
		}
	}
}

func (s *Server) addLine(l string) {
	s.mu.Lock()
	s.lines = append(s.lines, l)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// logTail formats the last lines of the log for error messages.
func (s *Server) logTail() string {
	lines := s.Log()
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	if len(lines) == 0 {
		return "\n(Cyrus logged nothing)"
	}
	return "\nCyrus log (last lines):\n\t" + strings.Join(lines, "\n\t")
}

// cleanSyslog turns a raw syslog datagram into a log line.
func cleanSyslog(b []byte) string {
	b = bytes.TrimRight(b, "\x00\r\n")
	if len(b) > 0 && b[0] == '<' {
		if i := bytes.IndexByte(b, '>'); i > 0 && i < 5 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// setupSyslog arranges for Cyrus's syslog to reach s.addLine.
func (s *Server) setupSyslog() error {
	if namespacesWork() {
		p := filepath.Join(s.dir, "dev", "log")
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
		if err != nil {
			return err
		}
		if err := os.Chmod(p, 0o666); err != nil {
			c.Close()
			return err
		}
		s.syslog = c
		s.nsMode = true
		go func() {
			buf := make([]byte, 64*1024)
			for {
				n, _, err := c.ReadFromUnix(buf)
				if err != nil {
					return
				}
				s.addLine(cleanSyslog(buf[:n]))
			}
		}()
		return nil
	}
	ok, err := sharedSyslog.register(s)
	if err != nil {
		return err
	}
	s.shared = ok
	return nil
}

var (
	nsOnce sync.Once
	nsOK   bool
)

// namespacesWork reports (once per process) whether a child can be started
// in a private mount namespace and bind-mount there, as nsScript needs.
func namespacesWork() bool {
	nsOnce.Do(func() {
		if os.Geteuid() != 0 {
			return
		}
		f, err := os.CreateTemp("", "cyrustest-nsprobe-")
		if err != nil {
			return
		}
		f.Close()
		defer os.Remove(f.Name())
		cmd := exec.Command("/bin/sh", "-c", `mount --bind /dev/null "$1" && [ -c "$1" ]`, "probe", f.Name())
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		nsOK = cmd.Run() == nil
	})
	return nsOK
}

// sharedSyslog is the process-wide /dev/log catcher used when mount
// namespaces are not available. It exists only while Servers use it, and
// only if /dev/log was absent: it then removes /dev/log again.
var sharedSyslog = &syslogCatcher{servers: map[*Server]bool{}}

type syslogCatcher struct {
	mu      sync.Mutex
	conn    *net.UnixConn
	servers map[*Server]bool
}

const devLog = "/dev/log"

// register adds s; it reports false if /dev/log belongs to someone else.
func (c *syslogCatcher) register(s *Server) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		if _, err := os.Lstat(devLog); err == nil {
			return false, nil
		}
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: devLog, Net: "unixgram"})
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return false, nil
			}
			return false, fmt.Errorf("binding %s: %v", devLog, err)
		}
		_ = os.Chmod(devLog, 0o666)
		c.conn = conn
		go c.read(conn)
	}
	c.servers[s] = true
	return true, nil
}

func (c *syslogCatcher) read(conn *net.UnixConn) {
	buf := make([]byte, 64*1024)
	for {
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		line := cleanSyslog(buf[:n])
		c.mu.Lock()
		for s := range c.servers {
			if strings.Contains(line, " "+s.id+"/") {
				s.addLine(line)
			}
		}
		c.mu.Unlock()
	}
}

func (c *syslogCatcher) unregister(s *Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.servers, s)
	if len(c.servers) == 0 && c.conn != nil {
		c.conn.Close()
		c.conn = nil
		os.Remove(devLog)
	}
}

// lineWriter turns the output of master into log lines.
type lineWriter struct {
	s      *Server
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.s.addLine(w.prefix + strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
