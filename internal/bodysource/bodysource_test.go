package bodysource

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie/store/blob"
)

// testCAFile writes a PEM file holding a fresh self-signed CA certificate.
func testCAFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func parse(t *testing.T, args ...string) *Flags {
	t.Helper()
	var f Flags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.Register(fs, "cyrus-spool")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &f
}

// TestCheckAndTLS: --imap needs a password file; --imap-ca-file is read
// at start (a file without a PEM certificate, or none, is refused); a CA
// file gives the IMAP clients a TLS configuration that trusts it, for
// --imap's host; without it, the system roots.
func TestCheckAndTLS(t *testing.T) {
	imap := []string{"--imap", "mail.example.org:143", "--imap-password-file", "/pw", "--imap-tls", "starttls"}
	if err := parse(t, "--imap", "h:143").Check(); err == nil || !strings.Contains(err.Error(), "--imap needs --imap-password-file") {
		t.Errorf("--imap without a password file: %v", err)
	}
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "notpem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want string }{
		{notPEM, "--imap-ca-file " + notPEM + ": no PEM certificate"},
		{filepath.Join(dir, "nope.pem"), "--imap-ca-file: open " + filepath.Join(dir, "nope.pem")},
	} {
		if err := parse(t, append(imap, "--imap-ca-file", tc.file)...).Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--imap-ca-file %s: %v, want %q", tc.file, err, tc.want)
		}
	}
	f := parse(t, append(imap, "--imap-ca-file", testCAFile(t))...)
	if err := f.Check(); err != nil {
		t.Fatal(err)
	}
	tc, err := f.TLSConfig()
	if err != nil || tc == nil || tc.RootCAs == nil || tc.ServerName != "mail.example.org" {
		t.Errorf("TLS config %+v, %v", tc, err)
	}
	if tc, err := parse(t, imap...).TLSConfig(); tc != nil || err != nil {
		t.Errorf("without --imap-ca-file: %+v, %v (want the system roots)", tc, err)
	}
}

// TestSpoolAndPassword: the spool flag is repeatable and comma-separated,
// named by the caller; the password is the file's first line.
func TestSpoolAndPassword(t *testing.T) {
	f := parse(t, "--cyrus-spool", "/a, /b", "--cyrus-spool", "/c", "--cyrus-spool-legacy")
	if strings.Join(f.Spool, " ") != "/a /b /c" || !f.SpoolLegacy || !f.Enabled() {
		t.Errorf("spool %q legacy %v enabled %v", f.Spool, f.SpoolLegacy, f.Enabled())
	}
	if parse(t).Enabled() {
		t.Error("enabled without a source")
	}
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\r\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := parse(t, "--imap-password-file", pw).Password(nil); got != "s3cret" || err != nil {
		t.Errorf("password %q, %v", got, err)
	}
	store, err := blob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	chain, names, closeAll, err := f.Open(store, nil)
	if err != nil || len(chain) != 1 || len(names) != 1 {
		t.Fatalf("Open with the spool only: %d fetchers %v, %v", len(chain), names, err)
	}
	closeAll()
}
