package cyrustest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TLS files of a Server, under its directory.
const (
	tlsDirName  = "tls"
	caFileName  = "ca.pem"
	crtFileName = "server.pem"
	keyFileName = "server.key"
)

// makeTLS generates a throwaway CA and a server certificate signed by it,
// valid for 127.0.0.1, ::1, localhost and the servername, and writes them
// under DIR/tls: ca.pem (0644), server.pem (0644) and server.key (0600),
// the server's files owned by user cyrus, which reads them.
func (s *Server) makeTLS() error {
	dir := filepath.Join(s.dir, tlsDirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cyrustest CA " + s.id},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: s.serverName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{s.serverName, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return err
	}
	s.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	crtPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	s.caPool = x509.NewCertPool()
	s.caPool.AddCert(caCert)

	files := []struct {
		name string
		b    []byte
		mode os.FileMode
	}{{caFileName, s.caPEM, 0o644}, {crtFileName, crtPEM, 0o644}, {keyFileName, keyPEM, 0o600}}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.b, f.mode); err != nil {
			return err
		}
		if err := os.Chown(p, s.uid, s.gid); err != nil {
			return err
		}
	}
	return nil
}

// tlsConf returns the imapd.conf settings for TLS, nil when Options.TLS is
// off.
func (s *Server) tlsConf() [][2]string {
	if !s.opts.TLS {
		return nil
	}
	dir := filepath.Join(s.dir, tlsDirName)
	return [][2]string{
		{"tls_server_cert", filepath.Join(dir, crtFileName)},
		{"tls_server_key", filepath.Join(dir, keyFileName)},
	}
}

// IMAPSAddr returns the host:port of the IMAP-over-TLS service (imapd -s,
// implicit TLS from the first byte), or "" unless Options.TLS was set.
func (s *Server) IMAPSAddr() string { return s.imapsAddr }

// CAPEM returns the PEM certificate of the Server's private CA, which
// signed the server certificate, or nil unless Options.TLS was set.
func (s *Server) CAPEM() []byte { return append([]byte(nil), s.caPEM...) }

// CAFile returns the path of a PEM file holding the Server's CA
// certificate (readable by everyone, removed by Stop), or "" unless
// Options.TLS was set.
func (s *Server) CAFile() string {
	if !s.opts.TLS {
		return ""
	}
	return filepath.Join(s.dir, tlsDirName, caFileName)
}

// TLSConfig returns a TLS client configuration that trusts only the
// Server's CA, for ServerName 127.0.0.1 (the certificate is also valid for
// ::1, localhost and the servername; set ServerName to use those). It
// returns nil unless Options.TLS was set.
func (s *Server) TLSConfig() *tls.Config {
	if !s.opts.TLS {
		return nil
	}
	return &tls.Config{RootCAs: s.caPool, ServerName: "127.0.0.1"}
}

// readGreetingTLS connects to the imaps service, completes the TLS
// handshake against the Server's CA and reads the IMAP greeting.
func (s *Server) readGreetingTLS() (string, error) {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", s.imapsAddr, s.TLSConfig())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	_, _ = io.WriteString(c, "x LOGOUT\r\n")
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "* OK") {
		return line, fmt.Errorf("unexpected IMAPS greeting %q", line)
	}
	return line, nil
}
