package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --imap-ca-file and the other IMAP flags are internal/bodysource's (its
// tests check them); here, that the daemon registers them and refuses a
// CA file without a PEM certificate at start, before any socket exists.
// The TLS paths themselves are tested against a real Cyrus.
func TestIMAPCAFileFlag(t *testing.T) {
	base := []string{"--cyrus-socket", "/tmp/x"}
	notPEM := filepath.Join(t.TempDir(), "notpem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	imap := []string{"--imap", "mail.example.org:143", "--imap-password-file", "/pw", "--imap-tls", "starttls"}
	_, err := parse(append(append(base, imap...), "--imap-ca-file", notPEM), io.Discard)
	if want := "--imap-ca-file " + notPEM + ": no PEM certificate"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("--imap-ca-file %s: %v, want %q", notPEM, err, want)
	}
	c, err := parse(append(base, imap...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.sinks.bodies.IMAP != "mail.example.org:143" || c.sinks.bodies.TLS != "starttls" {
		t.Errorf("IMAP flags not registered: %+v", c.sinks.bodies)
	}
}
