package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// --imap-ca-file is read at start: a file without a PEM certificate, or
// none, is refused by parse; a CA file gives the IMAP clients a TLS
// configuration that trusts it, for --imap's host.
func TestIMAPCAFileFlag(t *testing.T) {
	base := []string{"--cyrus-socket", "/tmp/x"}
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "notpem")
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	imap := []string{"--imap", "mail.example.org:143", "--imap-password-file", "/pw", "--imap-tls", "starttls"}
	for _, tc := range []struct{ file, want string }{
		{notPEM, "--imap-ca-file " + notPEM + ": no PEM certificate"},
		{filepath.Join(dir, "nope.pem"), "--imap-ca-file: open " + filepath.Join(dir, "nope.pem")},
	} {
		_, err := parse(append(append(base, imap...), "--imap-ca-file", tc.file), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--imap-ca-file %s: %v, want %q", tc.file, err, tc.want)
		}
	}
	c, err := parse(append(append(base, imap...), "--imap-ca-file", testCAFile(t)), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.sinks.imapTLSConfig()
	if err != nil || tc == nil || tc.RootCAs == nil || tc.ServerName != "mail.example.org" {
		t.Errorf("TLS config %+v, %v", tc, err)
	}
	c, err = parse(append(base, imap...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := c.sinks.imapTLSConfig(); tc != nil || err != nil {
		t.Errorf("without --imap-ca-file: %+v, %v (want the system roots)", tc, err)
	}
}
