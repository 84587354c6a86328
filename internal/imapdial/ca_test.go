package imapdial

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCAConfig(t *testing.T) {
	dir := t.TempDir()
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
	good := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if c, err := CAConfig("--x", "", "h:1"); c != nil || err != nil {
		t.Errorf("no file: %v %v", c, err)
	}
	c, err := CAConfig("--x", good, "mail.example.org:993")
	if err != nil || c == nil || c.RootCAs == nil || c.ServerName != "mail.example.org" {
		t.Fatalf("good file: %+v %v", c, err)
	}
	if _, err := CAConfig("--x", bad, "h:1"); err == nil || err.Error() != "--x "+bad+": no PEM certificate" {
		t.Errorf("no PEM: %v", err)
	}
	if _, err := CAConfig("--x", filepath.Join(dir, "nope"), "h:1"); err == nil || !strings.HasPrefix(err.Error(), "--x: open ") {
		t.Errorf("missing file: %v", err)
	}
}
