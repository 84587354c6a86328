package cyrustest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// eventTimeout bounds every wait for a notification or a log line.
const eventTimeout = 15 * time.Second

// collector gathers the notifications a test's listener receives.
type collector struct {
	mu      sync.Mutex
	msgs    []map[string]any // the JSON of class EVENT notifications
	raw     [][]byte
	changed chan struct{}
}

func newCollector() *collector { return &collector{changed: make(chan struct{})} }

func (c *collector) add(raw []byte, msg map[string]any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw = append(c.raw, raw)
	if msg != nil {
		c.msgs = append(c.msgs, msg)
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// names returns the event names received so far.
func (c *collector) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		out = append(out, fmt.Sprint(m["event"]))
	}
	return out
}

// all returns the JSON messages received so far.
func (c *collector) all() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.msgs...)
}

// waitFor waits until an event with that name, for which match (if not nil)
// returns true, has arrived, and returns it.
func (c *collector) waitFor(t *testing.T, name string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		msgs, changed := append([]map[string]any(nil), c.msgs...), c.changed
		c.mu.Unlock()
		for _, m := range msgs {
			if m["event"] == name && (match == nil || match(m)) {
				return m
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s event after %v; got %v", name, eventTimeout, c.names())
			return nil
		}
	}
}

// parseDatagram decodes a notify datagram:
// method NUL class NUL priority NUL user NUL mailbox NUL nopt NUL
// {option NUL}*nopt message NUL [fname NUL].
func parseDatagram(b []byte) (class string, message []byte, err error) {
	f := bytes.Split(b, []byte{0})
	if len(f) < 8 {
		return "", nil, fmt.Errorf("%d fields", len(f))
	}
	nopt, err := strconv.Atoi(string(f[5]))
	if err != nil || len(f) < 7+nopt {
		return "", nil, fmt.Errorf("bad nopt %q", f[5])
	}
	return string(f[1]), f[6+nopt], nil
}

// listenDatagram binds an AF_UNIX SOCK_DGRAM socket at path and collects
// what arrives until the test ends.
func listenDatagram(t *testing.T, path string) *collector {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		buf := make([]byte, 128*1024)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			raw := append([]byte(nil), buf[:n]...)
			class, msg, err := parseDatagram(raw)
			var m map[string]any
			if err == nil && class == "EVENT" {
				if json.Unmarshal(msg, &m) != nil {
					m = nil
				}
			}
			c.add(raw, m)
		}
	}()
	return c
}

// literalRE matches a LITERAL+ announcement at the end of a dlist line.
var literalRE = regexp.MustCompile(`\{(\d+)\+?\}\r\n$`)

// messageRE finds the MESSAGE literal of a dlist NOTIFY request.
var messageRE = regexp.MustCompile(`(?s) MESSAGE \{(\d+)\+?\}\r\n`)

// listenDList binds an AF_UNIX SOCK_STREAM socket at path for Cyrus's dlist
// transport: it reads one request per connection and answers reply, or
// closes the connection without answering when reply is "".
func listenDList(t *testing.T, path, reply string) *collector {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	c := newCollector()
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { l.Close(); wg.Wait() })
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(eventTimeout))
				req, err := readDListRequest(bufio.NewReader(conn))
				if err != nil {
					t.Errorf("reading dlist request: %v", err)
					return
				}
				var m map[string]any
				if loc := messageRE.FindSubmatchIndex(req); loc != nil {
					n, _ := strconv.Atoi(string(req[loc[2]:loc[3]]))
					if loc[1]+n <= len(req) && json.Unmarshal(req[loc[1]:loc[1]+n], &m) != nil {
						m = nil
					}
				}
				c.add(req, m)
				if reply != "" {
					_, _ = io.WriteString(conn, reply)
				}
			}()
		}
	}()
	return c
}

// readDListRequest reads one dlist line, with its literals, up to the final
// CRLF.
func readDListRequest(r *bufio.Reader) ([]byte, error) {
	var req []byte
	for {
		line, err := r.ReadBytes('\n')
		req = append(req, line...)
		if err != nil {
			return req, err
		}
		m := literalRE.FindSubmatch(line)
		if m == nil {
			return req, nil
		}
		n, _ := strconv.Atoi(string(m[1]))
		lit := make([]byte, n)
		if _, err := io.ReadFull(r, lit); err != nil {
			return req, err
		}
		req = append(req, lit...)
	}
}

const testMessage = "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\n" +
	"Subject: cyrustest\r\nMessage-ID: <cyrustest-1@example.org>\r\n\r\nHello.\r\n"

// scenario logs in as alice, creates INBOX.Projects and appends a message
// to it, asserting the Login, MailboxCreate and MessageAppend events.
func scenario(t *testing.T, s *Server, c *collector) {
	t.Helper()
	cl := s.Dial(t, "alice")
	c.waitFor(t, "Login", func(m map[string]any) bool { return m["user"] == "alice" })

	if err := cl.Create("INBOX.Projects", nil).Wait(); err != nil {
		t.Fatalf("CREATE: %v", err)
	}
	created := c.waitFor(t, "MailboxCreate", nil)
	if uri, _ := created["uri"].(string); !strings.Contains(uri, "user.alice.Projects") {
		t.Errorf("MailboxCreate uri = %q", uri)
	}

	app := cl.Append("INBOX.Projects", int64(len(testMessage)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagFlagged}})
	if _, err := io.WriteString(app, testMessage); err != nil {
		t.Fatal(err)
	}
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Wait(); err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	appended := c.waitFor(t, "MessageAppend", nil)
	if uri, _ := appended["uri"].(string); !strings.Contains(uri, "user.alice.Projects") || !strings.Contains(uri, ";UID=1") {
		t.Errorf("MessageAppend uri = %q", uri)
	}

	if err := cl.Logout().Wait(); err != nil {
		t.Fatalf("LOGOUT: %v", err)
	}
	c.waitFor(t, "Logout", nil)
}

func TestDatagramNotifications(t *testing.T) {
	t.Parallel()
	// A socket in t.TempDir() (0700) with the default mode: Start must make
	// it reachable for user cyrus.
	path := filepath.Join(t.TempDir(), "notify")
	c := listenDatagram(t, path)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := Start(t, Options{Users: map[string]string{"alice": "alice-pw"}, NotifySocket: path})
	t.Logf("Start took %v", time.Since(start))

	scenario(t, s, c)

	// Every datagram is class EVENT with method "log".
	c.mu.Lock()
	for _, raw := range c.raw {
		if !bytes.HasPrefix(raw, []byte("log\x00EVENT\x00")) {
			t.Errorf("datagram %q", raw)
		}
	}
	c.mu.Unlock()
	if n := s.UnansweredNotifications(); n != 0 {
		t.Errorf("UnansweredNotifications = %d, want 0\n%s", n, strings.Join(s.Log(), "\n"))
	}
}

func TestDListNotifications(t *testing.T) {
	t.Parallel()
	path := SocketPath(t, "notify")
	c := listenDList(t, path, "OK NIL\r\n")
	s := Start(t, Options{Users: map[string]string{"alice": "alice-pw"}, NotifyDList: path})

	scenario(t, s, c)

	c.mu.Lock()
	for _, raw := range c.raw {
		if !bytes.HasPrefix(raw, []byte("NOTIFY %(METHOD log CLASS EVENT ")) {
			t.Errorf("dlist request %q", raw)
		}
	}
	c.mu.Unlock()
	if n := s.UnansweredNotifications(); n != 0 {
		t.Errorf("UnansweredNotifications = %d, want 0\n%s", n, strings.Join(s.Log(), "\n"))
	}
}

func TestUnansweredNotificationsDList(t *testing.T) {
	t.Parallel()
	path := SocketPath(t, "notify")
	c := listenDList(t, path, "") // reads the request, closes without replying
	s := Start(t, Options{Users: map[string]string{"alice": "alice-pw"}, NotifyDList: path})
	if n := s.UnansweredNotifications(); n != 0 {
		t.Fatalf("UnansweredNotifications after Start = %d, want 0", n)
	}

	s.Dial(t, "alice") // Login event
	c.waitFor(t, "Login", nil)
	line := s.WaitLog(t, regexp.MustCompile(`NOTIFY\(EVENT\): error sending log to `+regexp.QuoteMeta(path)), eventTimeout)
	t.Logf("syslog: %s", line)
	if n := s.UnansweredNotifications(); n < 1 {
		t.Errorf("UnansweredNotifications = %d, want >= 1", n)
	}
}

func TestUnansweredNotificationsDatagram(t *testing.T) {
	t.Parallel()
	path := SocketPath(t, "nobody") // nobody listens here
	s := Start(t, Options{Users: map[string]string{"alice": "alice-pw"}, NotifySocket: path})

	s.Dial(t, "alice")
	line := s.WaitLog(t, regexp.MustCompile(`NOTIFY\(EVENT\): unable to sendto\(\) socket: No such file or directory`), eventTimeout)
	t.Logf("syslog: %s", line)
	if n := s.UnansweredNotifications(); n < 1 {
		t.Errorf("UnansweredNotifications = %d, want >= 1", n)
	}
}

func TestAdminHelpersAndLMTP(t *testing.T) {
	t.Parallel()
	path := SocketPath(t, "notify")
	c := listenDatagram(t, path)
	s := Start(t, Options{
		Users:        map[string]string{"alice": "alice-pw", "bob": "bob-pw"},
		NotifySocket: path,
		MailNotifier: "log",
	})

	// Start's INBOX creation went through the quiet service: no events.
	if names := c.names(); len(names) != 0 {
		t.Errorf("events before the test did anything: %v", names)
	}
	// So does everything done through DialQuiet.
	q := s.DialQuiet(t, AdminUser)
	if err := q.Create("user.alice.Quiet", nil).Wait(); err != nil {
		t.Fatalf("quiet CREATE: %v", err)
	}
	if err := q.Logout().Wait(); err != nil {
		t.Fatal(err)
	}

	s.CreateMailbox(t, "user.alice.Shared")
	c.waitFor(t, "MailboxCreate", func(m map[string]any) bool {
		return strings.Contains(fmt.Sprint(m["uri"]), "user.alice.Shared") && m["user"] == AdminUser
	})
	s.SetACL(t, "user.alice.Shared", "bob", "lrs")
	c.waitFor(t, "AclChange", func(m map[string]any) bool {
		return m["aclSubject"] == "bob" && m["aclRights"] == "lrs"
	})
	s.SetACL(t, "user.alice.Shared", "bob", "+w")
	// Cyrus reports the modification as aclRights, the result in vnd.cmu.mailboxACL.
	c.waitFor(t, "AclChange", func(m map[string]any) bool {
		return m["aclSubject"] == "bob" && m["aclRights"] == "w" && strings.Contains(fmt.Sprint(m["vnd.cmu.mailboxACL"]), "bob\tlrsw\t")
	})
	s.DeleteACL(t, "user.alice.Shared", "bob")
	c.waitFor(t, "AclChange", func(m map[string]any) bool { _, ok := m["aclRights"]; return m["aclSubject"] == "bob" && !ok })
	if lines := s.AdminCommand(t, `GETACL "user.alice.Shared"`); len(lines) != 1 || strings.Contains(lines[0], "bob") {
		t.Errorf("GETACL after DELETEACL: %q", lines)
	}
	s.SetQuota(t, "user.alice", map[imap.QuotaResourceType]int64{imap.QuotaResourceStorage: 100000})
	c.waitFor(t, "QuotaChange", nil)

	s.LMTPDeliver(t, "bob@example.org", []string{"alice", "bob"}, []byte(strings.ReplaceAll(testMessage, "\r\n", "\n")))
	for _, u := range []string{"alice", "bob"} {
		c.waitFor(t, "MessageNew", func(m map[string]any) bool { return strings.Contains(fmt.Sprint(m["uri"]), "user."+u+";") })
	}
	// mailnotifier: one class MAIL datagram per delivery.
	deadline := time.Now().Add(eventTimeout)
	for {
		c.mu.Lock()
		mail := 0
		for _, raw := range c.raw {
			if class, _, err := parseDatagram(raw); err == nil && class == "MAIL" {
				mail++
			}
		}
		c.mu.Unlock()
		if mail >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d class MAIL datagrams, want 2", mail)
		}
		time.Sleep(20 * time.Millisecond)
	}

	s.DeleteMailbox(t, "user.alice.Shared")
	c.waitFor(t, "MailboxDelete", nil)

	for _, m := range c.all() {
		if strings.Contains(fmt.Sprint(m["uri"]), "Quiet") {
			t.Errorf("event from the quiet session: %v", m)
		}
	}

	out := s.Tool(t, "cyr_expire", "-E", "3", "-v")
	if !strings.Contains(out, "Expired") {
		t.Errorf("cyr_expire output: %s", out)
	}
	s.WaitLog(t, regexp.MustCompile(`/cyr_expire\[\d+\]: `), eventTimeout)
	if n := s.UnansweredNotifications(); n != 0 {
		t.Errorf("UnansweredNotifications = %d, want 0", n)
	}
}

// TestConcurrentServers runs several Servers at once; each gets only its own
// events.
func TestConcurrentServers(t *testing.T) {
	t.Parallel()
	addrs := make(chan string, 4)
	for i := 0; i < 4; i++ {
		user := fmt.Sprintf("user%d", i)
		t.Run(user, func(t *testing.T) {
			t.Parallel()
			path := SocketPath(t, "n")
			c := listenDatagram(t, path)
			start := time.Now()
			s := Start(t, Options{Users: map[string]string{user: "pw"}, NotifySocket: path})
			t.Logf("Start took %v", time.Since(start))
			addrs <- s.IMAPAddr()
			cl := s.Dial(t, user)
			if err := cl.Create("INBOX.Mine", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			c.waitFor(t, "MailboxCreate", nil)
			for _, m := range c.all() {
				if u, _ := m["user"].(string); u != "" && u != user {
					t.Errorf("event of another server: %v", m)
				}
			}
		})
	}
	t.Cleanup(func() {
		close(addrs)
		seen := map[string]bool{}
		for a := range addrs {
			if seen[a] {
				t.Errorf("two servers on %s", a)
			}
			seen[a] = true
		}
	})
}

// TestPortTakenRetry makes the first choice of ports collide with a port in
// use: Start must notice and retry with other ports.
func TestPortTakenRetry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		p, err := freePorts(n)
		if err == nil && calls == 1 {
			p[2] = taken // LMTP
		}
		return p, err
	}
	defer func() { pickPorts = freePorts }()
	s := Start(t, Options{Users: map[string]string{"alice": "pw"}})
	if calls != 2 {
		t.Errorf("ports chosen %d times, want 2", calls)
	}
	if strings.HasSuffix(s.LMTPAddr(), ":"+strconv.Itoa(taken)) {
		t.Errorf("LMTP on the taken port %s", s.LMTPAddr())
	}
	s.LMTPDeliver(t, "bob@example.org", []string{"alice"}, []byte(testMessage))
}

// TestStopLeavesNothing checks that Stop ends every Cyrus process and removes
// the directory.
func TestStopLeavesNothing(t *testing.T) {
	s, err := New(Options{Users: map[string]string{"alice": "pw"}})
	if err != nil {
		if os.Getenv("CI") != "true" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	cl, err := s.login(s.IMAPAddr(), "alice")
	if err != nil {
		s.Stop()
		t.Fatal(err)
	}
	defer cl.Close()
	if !s.SyslogCaptured() {
		t.Error("syslog not captured")
	}
	pid := s.cmd.Process.Pid
	kids := descendants(pid)
	if len(kids) == 0 {
		t.Errorf("master %d has no children while a session is open", pid)
	}
	start := time.Now()
	s.Stop()
	t.Logf("Stop took %v", time.Since(start))
	for _, p := range append(kids, pid) {
		if alive(p) {
			t.Errorf("process %d still running after Stop", p)
		}
	}
	if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Stop (%v)", s.Dir(), err)
	}
}

// TestSharedSyslogFallback runs two Servers without mount namespaces: the
// process-wide catcher on /dev/log must split the lines between them.
func TestSharedSyslogFallback(t *testing.T) {
	if _, err := os.Lstat(devLog); err == nil {
		t.Skipf("%s exists: the fallback would not capture", devLog)
	}
	had := namespacesWork()
	nsOK = false
	defer func() { nsOK = had }()

	p1, p2 := SocketPath(t, "nobody"), SocketPath(t, "nobody")
	s1 := Start(t, Options{Users: map[string]string{"alice": "pw"}, NotifySocket: p1})
	s2 := Start(t, Options{Users: map[string]string{"bob": "pw"}, NotifySocket: p2})
	if s1.nsMode || s2.nsMode || !s1.SyslogCaptured() || !s2.SyslogCaptured() {
		t.Fatalf("nsMode %v/%v captured %v/%v", s1.nsMode, s2.nsMode, s1.SyslogCaptured(), s2.SyslogCaptured())
	}
	s1.Dial(t, "alice")
	s2.Dial(t, "bob")
	s1.WaitLog(t, regexp.MustCompile(`login: .* alice plaintext`), eventTimeout)
	s2.WaitLog(t, regexp.MustCompile(`login: .* bob plaintext`), eventTimeout)
	s1.WaitLog(t, regexp.MustCompile(`NOTIFY\(EVENT\): unable to sendto`), eventTimeout)
	for _, l := range s1.Log() {
		if strings.Contains(l, "bob") {
			t.Errorf("line of the other server: %s", l)
		}
	}
	s1.Stop()
	s2.Stop()
	if _, err := os.Lstat(devLog); err == nil {
		t.Errorf("%s left behind", devLog)
	}
}

func TestEncodeMailbox(t *testing.T) {
	for in, want := range map[string]string{
		"user.alice":        "user.alice",
		"user.alice.Bücher": "user.alice.B&APw-cher",
		"A&B":               "A&-B",
		"日本語":               "&ZeVnLIqe-",
	} {
		if got := encodeMailbox(in); got != want {
			t.Errorf("encodeMailbox(%q) = %q, want %q", in, got, want)
		}
	}
	if got := quote(`a"b\c`); got != `"a\"b\\c"` {
		t.Errorf("quote = %s", got)
	}
}
