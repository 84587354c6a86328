package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// tlsCyrus starts a Cyrus that accepts STARTTLS on IMAPAddr and implicit
// TLS on IMAPSAddr, with a certificate from a private CA (CAFile), and
// logs Cyrus's log if the test fails.
func tlsCyrus(t *testing.T) *cyrustest.Server {
	t.Helper()
	s := cyrustest.Start(t, cyrustest.Options{Users: map[string]string{"alice": "alice-pw"}, TLS: true})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Cyrus's log:\n%s", strings.Join(s.Log(), "\n"))
		}
	})
	return s
}

// writeFile writes a file in a fresh temporary directory.
func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// bodySums returns the SHA-256 of BODY.PEEK[] of every message of a
// folder of alice's, read over plain text, or an error (e.g. no such
// folder).
func bodySums(s *cyrustest.Server, mailbox string) ([]string, error) {
	c, err := imapclient.DialInsecure(s.IMAPAddr(), nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	pw, _ := s.Password("alice")
	if err := c.Login("alice", pw).Wait(); err != nil {
		return nil, err
	}
	defer func() { c.Logout().Wait() }()
	sel, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return nil, err
	}
	if sel.NumMessages == 0 {
		return nil, nil
	}
	all := imap.SeqSet{}
	all.AddRange(1, 0)
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range msgs {
		sum := sha256.Sum256(m.FindBodySection(section))
		out = append(out, hex.EncodeToString(sum[:]))
	}
	slices.Sort(out)
	return out, nil
}

// tlsSessions counts the TLS sessions Cyrus's service (imap or imaps)
// logged ("starttls: TLSv1.3 with cipher ...").
func tlsSessions(s *cyrustest.Server, service string) int {
	n := 0
	for _, l := range s.Log() {
		if strings.Contains(l, "/"+service+"[") && strings.Contains(l, "starttls: TLS") {
			n++
		}
	}
	return n
}

// aliceFolders lists alice's folders.
func aliceFolders(t *testing.T, s *cyrustest.Server) []string {
	t.Helper()
	var wire strings.Builder
	c, err := imapclient.DialInsecure(s.IMAPAddr(), &imapclient.Options{DebugWriter: &wire})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatal(err)
	}
	defer func() { c.Logout().Wait() }()
	list, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatalf("LIST: %v\n%s", err, wire.String())
	}
	var out []string
	for _, l := range list {
		out = append(out, l.Mailbox)
	}
	slices.Sort(out)
	return out
}

// TestRestoreCommandIMAPTLS restores alice's Work (restoreData's one
// message) into a real Cyrus over STARTTLS and over implicit TLS, trusting
// the server's private CA with --ca-file: the folder then holds exactly
// that message (SHA-256 of BODY.PEEK[]), and a re-run appends nothing.
// Without --ca-file the certificate is refused (x509: unknown authority)
// and nothing is appended; a --ca-file without a certificate is refused.
func TestRestoreCommandIMAPTLS(t *testing.T) {
	msg := []byte("From: carol@example.org\r\nSubject: over TLS\r\nMessage-ID: <tls-1@bonnie.test>\r\n\r\nFrom me, encrypted.\r\n")
	sum := sha256.Sum256(msg)
	want := []string{hex.EncodeToString(sum[:])}
	data := restoreData(t, msg)
	s := tlsCyrus(t)
	pw := writeFile(t, "pw", "alice-pw\n")
	restore := func(extra ...string) (int, string, string) {
		args := append([]string{"--data", data, "restore", "--mailbox", "user.alice.Work", "--at", "2026-01-02T13:00:00Z",
			"--user", "alice", "--password-file", pw}, extra...)
		return bonnieCmd(t, nil, args...)
	}
	before := aliceFolders(t, s)

	for _, tc := range []struct {
		name, into, service string
		args                []string
	}{
		{"STARTTLS", "INBOX.ViaStartTLS", "imap", []string{"--to", "imap://" + s.IMAPAddr(), "--starttls"}},
		{"implicit TLS", "INBOX.ViaIMAPS", "imaps", []string{"--to", "imaps://" + s.IMAPSAddr()}},
	} {
		args := append(tc.args, "--ca-file", s.CAFile(), "--into", "user.alice."+strings.TrimPrefix(tc.into, "INBOX."))
		sessions := tlsSessions(s, tc.service)
		for _, wantOut := range []string{"1 written, 0 already there", "0 written, 1 already there"} {
			if rc, out, errb := restore(args...); rc != 0 || !strings.Contains(out, wantOut) {
				t.Errorf("%s: rc %d, %q %q; want %q", tc.name, rc, out, errb, wantOut)
			}
		}
		got, err := bodySums(s, tc.into)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: %s holds %q (%v), want %q", tc.name, tc.into, got, err, want)
		}
		n := tlsSessions(s, tc.service)
		for deadline := time.Now().Add(5 * time.Second); s.SyslogCaptured() && n < sessions+2 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond) // syslog lines arrive asynchronously
			n = tlsSessions(s, tc.service)
		}
		if s.SyslogCaptured() && n < sessions+2 {
			t.Errorf("%s: Cyrus's %s service logged %d TLS sessions for 2 restores (%d before)", tc.name, tc.service, n, sessions)
		}
	}
	after := aliceFolders(t, s)

	// Without --ca-file: the system roots do not know the test CA.
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"STARTTLS", []string{"--to", "imap://" + s.IMAPAddr(), "--starttls", "--into", "user.alice.NoCA"}},
		{"implicit TLS", []string{"--to", "imaps://" + s.IMAPSAddr(), "--into", "user.alice.NoCA"}},
	} {
		rc, out, errb := restore(tc.args...)
		if rc == 0 || !strings.Contains(errb, "certificate") ||
			!(strings.Contains(errb, "x509") || strings.Contains(errb, "unknown authority")) {
			t.Errorf("%s without --ca-file: rc %d, %q %q; want a certificate error", tc.name, rc, out, errb)
		}
		t.Logf("%s without --ca-file: %s", tc.name, strings.TrimSpace(errb))
		if strings.Contains(out, "written") {
			t.Errorf("%s without --ca-file reported writing: %q", tc.name, out)
		}
	}
	if got := aliceFolders(t, s); !slices.Equal(got, after) {
		t.Errorf("folders changed by the refused restores: %q, before %q", got, after)
	}
	if _, err := bodySums(s, "INBOX.NoCA"); err == nil {
		t.Error("INBOX.NoCA exists after the refused restores")
	}
	if len(after) != len(before)+2 {
		t.Errorf("folders before %q, after %q", before, after)
	}

	// A --ca-file that holds no certificate.
	notPEM := writeFile(t, "notpem", "hello\n")
	rc, _, errb := restore("--to", "imaps://"+s.IMAPSAddr(), "--ca-file", notPEM, "--into", "user.alice.NoCA")
	if rc == 0 || !strings.Contains(errb, "restore: --ca-file "+notPEM+": no PEM certificate") {
		t.Errorf("--ca-file without PEM: rc %d, %q", rc, errb)
	}
}

// TestBackfillIMAPCAFile backfills alice's folders from a Cyrus that has a
// certificate of a private CA, over STARTTLS and over implicit TLS, with
// --imap-ca-file: the log gets a vnd.bonnie.Backfill event per folder with
// every message (UID and body SHA-256). Without --imap-ca-file the
// certificate is refused and nothing is recorded; an --imap-ca-file
// without a PEM certificate is refused by backfill and reconcile before
// anything is dialled.
func TestBackfillIMAPCAFile(t *testing.T) {
	s := tlsCyrus(t)
	c := s.DialQuiet(t, "alice")
	if err := c.Create("INBOX.Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	wantSums := map[string][]string{}
	for i, mbox := range []string{"INBOX", "INBOX", "INBOX.Work", "INBOX", "INBOX.Work"} {
		msg := fmt.Sprintf("From: carol@example.org\r\nSubject: old %d\r\nMessage-ID: <old-%d@bonnie.test>\r\n\r\nMessage %d.\r\n", i, i, i)
		cmd := c.Append(mbox, int64(len(msg)), &imap.AppendOptions{Time: time.Date(2025, 1, i+1, 0, 0, 0, 0, time.UTC)})
		if _, err := cmd.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := cmd.Wait(); err != nil {
			t.Fatalf("APPEND to %s: %v", mbox, err)
		}
		sum := sha256.Sum256([]byte(msg))
		name := "user.alice" + strings.TrimPrefix(mbox, "INBOX")
		wantSums[name] = append(wantSums[name], hex.EncodeToString(sum[:]))
	}
	c.Logout().Wait()
	for _, v := range wantSums {
		slices.Sort(v)
	}
	pwFile := writeFile(t, "admin.pw", cyrustest.AdminPassword+"\n")
	backfill := func(data string, extra ...string) (int, string, string) {
		args := append([]string{"--data", data, "backfill", "--imap-user", cyrustest.AdminUser,
			"--imap-password-file", pwFile, "--mailbox", "user.alice", "--mailbox", "user.alice.*"}, extra...)
		return bonnieCmd(t, nil, args...)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"STARTTLS", []string{"--imap", s.IMAPAddr(), "--imap-tls", "starttls"}},
		{"implicit TLS", []string{"--imap", s.IMAPSAddr(), "--imap-tls", "tls"}},
	} {
		data := t.TempDir()
		rc, out, errb := backfill(data, append(tc.args, "--imap-ca-file", s.CAFile())...)
		if rc != 0 || !strings.Contains(out, "backfilled 2 folders: 5 messages") {
			t.Errorf("%s: rc %d, %q %q", tc.name, rc, out, errb)
			continue
		}
		got := backfilledSums(t, data)
		for name, want := range wantSums {
			if !slices.Equal(got[name], want) {
				t.Errorf("%s: %s backfilled %q, want %q", tc.name, name, got[name], want)
			}
		}
		if len(got) != len(wantSums) {
			t.Errorf("%s: backfilled folders %v", tc.name, got)
		}
	}

	// Without --imap-ca-file: refused, nothing recorded.
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"STARTTLS", []string{"--imap", s.IMAPAddr(), "--imap-tls", "starttls"}},
		{"implicit TLS", []string{"--imap", s.IMAPSAddr(), "--imap-tls", "tls"}},
	} {
		data := t.TempDir()
		rc, out, errb := backfill(data, tc.args...)
		if rc == 0 || !strings.Contains(errb, "certificate") ||
			!(strings.Contains(errb, "x509") || strings.Contains(errb, "unknown authority")) {
			t.Errorf("%s without --imap-ca-file: rc %d, %q %q; want a certificate error", tc.name, rc, out, errb)
		}
		t.Logf("%s without --imap-ca-file: %s", tc.name, strings.TrimSpace(errb))
		if got := backfilledSums(t, data); len(got) != 0 {
			t.Errorf("%s without --imap-ca-file recorded %v", tc.name, got)
		}
	}

	// A file without a certificate, or none at all: refused before dialling.
	notPEM := writeFile(t, "notpem", "-----BEGIN NOTHING-----\n")
	data := t.TempDir()
	for _, cmd := range []string{"backfill", "reconcile"} {
		for _, tc := range []struct{ file, want string }{
			{notPEM, "--imap-ca-file " + notPEM + ": no PEM certificate"},
			{filepath.Join(data, "nope.pem"), "--imap-ca-file: open " + filepath.Join(data, "nope.pem")},
		} {
			rc, _, errb := bonnieCmd(t, nil, "--data", data, cmd, "--imap", "127.0.0.1:1", "--imap-tls", "tls",
				"--imap-password-file", pwFile, "--imap-ca-file", tc.file)
			if rc != 1 || !strings.Contains(errb, tc.want) {
				t.Errorf("%s --imap-ca-file %s: rc %d, %q; want %q", cmd, tc.file, rc, errb, tc.want)
			}
		}
	}
}

// backfilledSums reads the Backfill events of a data directory's log: the
// body SHA-256s recorded per folder, sorted.
func backfilledSums(t *testing.T, data string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	if _, err := os.Stat(filepath.Join(data, "log.db")); err != nil {
		return out
	}
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(data, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	var pos bonnie.Position
	for {
		recs, err := lg.Read(ctx, pos, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			pos = r.Position
			if r.Event.Type != bonnie.Backfill {
				continue
			}
			cr, err := r.Event.Crawl()
			if err != nil {
				t.Fatal(err)
			}
			name := r.Event.Mailbox.Name
			for _, m := range cr.Messages {
				if m.Digest == "" {
					t.Errorf("%s UID %d backfilled without a body", name, m.UID)
				}
				out[name] = append(out[name], m.Digest)
			}
			if _, ok := out[name]; !ok {
				out[name] = nil
			}
		}
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}
