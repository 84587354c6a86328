package cyrustest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Dial connects to the IMAP service (IMAPAddr) and logs in as user
// (AdminUser or a key of Options.Users). The connection is closed when the
// test ends, if it is still open. Cyrus sends the Logout event when the
// session ends, after LOGOUT or when the connection is just closed.
// Failures are fatal.
func (s *Server) Dial(t testing.TB, user string) *imapclient.Client {
	t.Helper()
	return s.dial(t, s.imapAddr, user)
}

// DialQuiet is Dial on QuietIMAPAddr: the session runs with event
// notifications disabled, so that what it does (e.g. preparing mailboxes)
// produces no events.
func (s *Server) DialQuiet(t testing.TB, user string) *imapclient.Client {
	t.Helper()
	return s.dial(t, s.quietAddr, user)
}

func (s *Server) dial(t testing.TB, addr, user string) *imapclient.Client {
	t.Helper()
	c, err := s.login(addr, user)
	if err != nil {
		t.Fatalf("cyrustest: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *Server) login(addr, user string) (*imapclient.Client, error) {
	pw, ok := s.Password(user)
	if !ok {
		return nil, fmt.Errorf("unknown user %q (not in Options.Users)", user)
	}
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		return nil, fmt.Errorf("dialing IMAP %s: %v", addr, err)
	}
	if err := c.Login(user, pw).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("LOGIN %s on %s: %v", user, addr, err)
	}
	return c, nil
}

// createInboxes creates user.NAME for every user, quietly.
func (s *Server) createInboxes() error {
	c, err := s.login(s.quietAddr, AdminUser)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, u := range s.sortedUsers() {
		if err := c.Create("user."+u, nil).Wait(); err != nil {
			return fmt.Errorf("CREATE user.%s: %v", u, err)
		}
	}
	return c.Logout().Wait()
}

// asAdmin runs f in a fresh admin session on the IMAP service (so that
// events are sent as configured), logging out afterwards.
func (s *Server) asAdmin(t testing.TB, what string, f func(c *imapclient.Client) error) {
	t.Helper()
	c, err := s.login(s.imapAddr, AdminUser)
	if err != nil {
		t.Fatalf("cyrustest: %s: %v", what, err)
	}
	defer c.Close()
	if err := f(c); err != nil {
		t.Fatalf("cyrustest: %s: %v", what, err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("cyrustest: %s: LOGOUT: %v", what, err)
	}
}

// CreateMailbox creates a mailbox as the admin, in the admin namespace
// ("user.alice.Projects", "shared.board"). Events are sent as configured
// (the admin's Login, MailboxCreate, Logout).
func (s *Server) CreateMailbox(t testing.TB, name string) {
	t.Helper()
	s.asAdmin(t, "CREATE "+name, func(c *imapclient.Client) error {
		return c.Create(name, nil).Wait()
	})
}

// DeleteMailbox deletes a mailbox as the admin, first granting the admin the
// "x" right it needs for that in Cyrus.
func (s *Server) DeleteMailbox(t testing.TB, name string) {
	t.Helper()
	s.asAdmin(t, "DELETE "+name, func(c *imapclient.Client) error {
		if err := c.SetACL(name, AdminUser, imap.RightModificationAdd, imap.RightSet("x")).Wait(); err != nil {
			return err
		}
		return c.Delete(name).Wait()
	})
}

// SetACL sets the rights of identifier (a user, "anyone", "group:NAME") on
// mailbox as the admin: rights ("lrs") replace the current ones; with a
// leading "+" or "-" they are added or removed. Note that Cyrus's AclChange
// event then carries the modification ("w" for "+w") as aclRights and the
// resulting ACL in vnd.cmu.mailboxACL.
func (s *Server) SetACL(t testing.TB, mailbox, identifier, rights string) {
	t.Helper()
	s.asAdmin(t, fmt.Sprintf("SETACL %s %s %s", mailbox, identifier, rights), func(c *imapclient.Client) error {
		mod := imap.RightModificationReplace
		if rights != "" {
			switch rights[0] {
			case '+':
				mod, rights = imap.RightModificationAdd, rights[1:]
			case '-':
				mod, rights = imap.RightModificationRemove, rights[1:]
			}
		}
		return c.SetACL(mailbox, imap.RightsIdentifier(identifier), mod, imap.RightSet(rights)).Wait()
	})
}

// DeleteACL removes the ACL entry of identifier on mailbox as the admin
// (DELETEACL: the AclChange event has no aclRights).
func (s *Server) DeleteACL(t testing.TB, mailbox, identifier string) {
	t.Helper()
	s.AdminCommand(t, "DELETEACL "+quote(encodeMailbox(mailbox))+" "+quote(identifier))
}

// AdminCommand sends one raw IMAP command (without tag, e.g.
// `GETQUOTAROOT "user.alice"`; mailbox names in modified UTF-7) in a fresh
// admin session on the IMAP service, for what go-imap has no method for. It
// returns the untagged response lines (literals inlined) and fails the test
// unless the command completes with OK.
func (s *Server) AdminCommand(t testing.TB, command string) []string {
	t.Helper()
	lines, err := rawIMAP(s.imapAddr, AdminUser, AdminPassword, command)
	if err != nil {
		t.Fatalf("cyrustest: %s: %v", command, err)
	}
	return lines
}

// rawIMAP logs in, runs command, logs out.
func rawIMAP(addr, user, password, command string) ([]string, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(conn)
	readLine := func() (string, error) {
		var b strings.Builder
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return "", err
			}
			l = strings.TrimRight(l, "\r\n")
			b.WriteString(l)
			m := literalAtEnd.FindStringSubmatch(l)
			if m == nil {
				return b.String(), nil
			}
			n, _ := strconv.Atoi(m[1])
			lit := make([]byte, n)
			if _, err := io.ReadFull(r, lit); err != nil {
				return "", err
			}
			b.Write(lit)
		}
	}
	run := func(tag, cmd string) ([]string, error) {
		if _, err := io.WriteString(conn, tag+" "+cmd+"\r\n"); err != nil {
			return nil, err
		}
		var untagged []string
		for {
			l, err := readLine()
			if err != nil {
				return untagged, err
			}
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") {
					return untagged, fmt.Errorf("%s", strings.TrimPrefix(l, tag+" "))
				}
				return untagged, nil
			}
			untagged = append(untagged, l)
		}
	}
	if _, err := readLine(); err != nil { // greeting
		return nil, err
	}
	if _, err := run("a1", "LOGIN "+quote(user)+" "+quote(password)); err != nil {
		return nil, fmt.Errorf("LOGIN: %v", err)
	}
	lines, err := run("a2", command)
	if err != nil {
		return lines, err
	}
	_, _ = run("a3", "LOGOUT")
	return lines, nil
}

var literalAtEnd = regexp.MustCompile(`\{(\d+)\+?\}$`)

// quote returns s as an IMAP quoted string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

var utf7Base64 = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding)

// encodeMailbox encodes a mailbox name in modified UTF-7 (RFC 3501 5.1.3).
func encodeMailbox(name string) string {
	var b strings.Builder
	var pending []rune
	flush := func() {
		if len(pending) == 0 {
			return
		}
		var be []byte
		for _, u := range utf16.Encode(pending) {
			be = append(be, byte(u>>8), byte(u))
		}
		b.WriteString("&" + utf7Base64.EncodeToString(be) + "-")
		pending = nil
	}
	for _, r := range name {
		if r < 0x20 || r > 0x7e {
			pending = append(pending, r)
			continue
		}
		flush()
		if r == '&' {
			b.WriteString("&-")
		} else {
			b.WriteRune(r)
		}
	}
	flush()
	return b.String()
}

// SetQuota sets the quota of a quota root ("user.alice") as the admin, e.g.
// map[imap.QuotaResourceType]int64{imap.QuotaResourceStorage: 1024} (KiB).
// Cyrus 3.6.1 (Debian build) aborts the session for a QuotaChange with
// unlimited STORAGE and for QuotaExceed/QuotaWithin; avoid those.
func (s *Server) SetQuota(t testing.TB, root string, limits map[imap.QuotaResourceType]int64) {
	t.Helper()
	s.asAdmin(t, "SETQUOTA "+root, func(c *imapclient.Client) error {
		return c.SetQuota(root, limits).Wait()
	})
}

// LMTPDeliver delivers msg over LMTP (LMTPAddr) from the envelope sender from
// to the recipients to ("alice", "alice+Folder", "bob@example.org" with
// virtdomains off: the local part is the user). Bare LF line ends are
// converted to CRLF. The test fails unless every recipient is accepted and
// the message delivered to each.
func (s *Server) LMTPDeliver(t testing.TB, from string, to []string, msg []byte) {
	t.Helper()
	if err := lmtpDeliver(s.lmtpAddr, from, to, msg); err != nil {
		t.Fatalf("cyrustest: LMTP delivery to %v: %v", to, err)
	}
}

// lmtpDeliver is a minimal LMTP client (RFC 2033).
func lmtpDeliver(addr, from string, to []string, msg []byte) error {
	if len(to) == 0 {
		return fmt.Errorf("no recipients")
	}
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)

	reply := func() (int, string, error) {
		var text []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return 0, strings.Join(text, " "), err
			}
			line = strings.TrimRight(line, "\r\n")
			if len(line) < 3 {
				return 0, line, fmt.Errorf("malformed LMTP reply %q", line)
			}
			text = append(text, line)
			if len(line) == 3 || line[3] == ' ' {
				var code int
				fmt.Sscanf(line[:3], "%d", &code)
				return code, strings.Join(text, " | "), nil
			}
		}
	}
	cmd := func(format string, args ...any) (int, string, error) {
		fmt.Fprintf(w, format+"\r\n", args...)
		if err := w.Flush(); err != nil {
			return 0, "", err
		}
		return reply()
	}
	expect := func(want int, code int, text string, err error) error {
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("LMTP: %s", text)
		}
		return nil
	}

	if code, text, err := reply(); expect(220, code, text, err) != nil {
		return fmt.Errorf("greeting: %v", expect(220, code, text, err))
	}
	if code, text, err := cmd("LHLO cyrustest"); expect(250, code, text, err) != nil {
		return expect(250, code, text, err)
	}
	if code, text, err := cmd("MAIL FROM:<%s>", from); expect(250, code, text, err) != nil {
		return expect(250, code, text, err)
	}
	for _, rcpt := range to {
		if code, text, err := cmd("RCPT TO:<%s>", rcpt); expect(250, code, text, err) != nil {
			return fmt.Errorf("RCPT %s: %v", rcpt, expect(250, code, text, err))
		}
	}
	if code, text, err := cmd("DATA"); expect(354, code, text, err) != nil {
		return expect(354, code, text, err)
	}
	lines := bytes.Split(msg, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	for _, l := range lines {
		l = bytes.TrimSuffix(l, []byte("\r"))
		if len(l) > 0 && l[0] == '.' {
			w.WriteByte('.')
		}
		w.Write(l)
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	if err := w.Flush(); err != nil {
		return err
	}
	var failures []string
	for _, rcpt := range to {
		code, text, err := reply()
		if err != nil {
			return fmt.Errorf("after DATA: %v", err)
		}
		if code != 250 {
			failures = append(failures, rcpt+": "+text)
		}
	}
	cmd("QUIT")
	if len(failures) > 0 {
		return fmt.Errorf("not delivered: %s", strings.Join(failures, "; "))
	}
	return nil
}
