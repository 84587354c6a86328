package imapdial

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
)

// CAConfig reads file, a PEM file of CA certificates given by the command
// line flag named flag (such as "--imap-ca-file"), and returns a TLS client
// configuration that trusts those CAs instead of the system's, with the
// ServerName of addr's host (HOST:PORT). With file empty it returns nil: the
// system roots. A file that cannot be read, or holds no PEM certificate,
// is an error that names the flag.
func CAConfig(flag, file, addr string) (*tls.Config, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s %s: no PEM certificate", flag, file)
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	return &tls.Config{RootCAs: pool, ServerName: host}, nil
}
