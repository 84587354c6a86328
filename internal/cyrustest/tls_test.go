package cyrustest

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"
)

// TestTLS starts a Cyrus with Options.TLS: STARTTLS on the IMAP port and
// implicit TLS on the imaps port both complete against the Server's CA
// (from TLSConfig, and from CAFile/CAPEM), logins work over both, and a
// client trusting only the system roots refuses the certificate.
func TestTLS(t *testing.T) {
	s := Start(t, Options{Users: map[string]string{"alice": "pw"}, TLS: true})
	if s.IMAPSAddr() == "" || s.CAFile() == "" || len(s.CAPEM()) == 0 || s.TLSConfig() == nil {
		t.Fatalf("TLS accessors empty: %q %q %d", s.IMAPSAddr(), s.CAFile(), len(s.CAPEM()))
	}
	fromFile, err := os.ReadFile(s.CAFile())
	if err != nil || string(fromFile) != string(s.CAPEM()) {
		t.Fatalf("CAFile: %v", err)
	}
	if g, err := readGreeting(s.IMAPAddr()); err != nil || !strings.Contains(g, "STARTTLS") {
		t.Errorf("IMAP greeting does not offer STARTTLS: %q, %v", g, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(fromFile) {
		t.Fatal("CAFile holds no certificate")
	}
	for _, tc := range []struct {
		name string
		dial func(string, *imapclient.Options) (*imapclient.Client, error)
		addr string
		conf *tls.Config
	}{
		{"STARTTLS", imapclient.DialStartTLS, s.IMAPAddr(), s.TLSConfig()},
		{"imaps", imapclient.DialTLS, s.IMAPSAddr(), s.TLSConfig()},
		{"imaps by servername, CA from the file", imapclient.DialTLS, s.IMAPSAddr(), &tls.Config{RootCAs: pool, ServerName: s.ServerName()}},
	} {
		c, err := tc.dial(tc.addr, &imapclient.Options{TLSConfig: tc.conf})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if err := c.Login("alice", "pw").Wait(); err != nil {
			t.Errorf("%s: LOGIN: %v", tc.name, err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Errorf("%s: SELECT: %v", tc.name, err)
		}
		c.Logout().Wait()
		c.Close()
	}
	// Without the CA: an unknown authority.
	for _, tc := range []struct {
		name string
		dial func(string, *imapclient.Options) (*imapclient.Client, error)
		addr string
	}{{"STARTTLS", imapclient.DialStartTLS, s.IMAPAddr()}, {"imaps", imapclient.DialTLS, s.IMAPSAddr()}} {
		c, err := tc.dial(tc.addr, &imapclient.Options{TLSConfig: &tls.Config{ServerName: "127.0.0.1"}})
		if err == nil {
			// go-imap may report the handshake failure at the first command.
			err = c.Login("alice", "pw").Wait()
			c.Close()
		}
		var ua x509.UnknownAuthorityError
		if err == nil || (!errors.As(err, &ua) && !strings.Contains(err.Error(), "unknown authority")) {
			t.Errorf("%s without the CA: %v, want an unknown authority", tc.name, err)
		}
	}
	// The plain-text service is still there, and so is the quiet one.
	s.Dial(t, "alice")
	s.DialQuiet(t, "alice")
	// A restart comes back with TLS.
	s.Restart(t)
	c, err := imapclient.DialTLS(s.IMAPSAddr(), &imapclient.Options{TLSConfig: s.TLSConfig()})
	if err != nil {
		t.Fatalf("imaps after Restart: %v", err)
	}
	c.Close()
}

// Without Options.TLS, nothing of TLS is configured or exposed.
func TestNoTLSByDefault(t *testing.T) {
	s := Start(t, Options{})
	if s.IMAPSAddr() != "" || s.CAFile() != "" || s.CAPEM() != nil || s.TLSConfig() != nil {
		t.Errorf("TLS accessors set without Options.TLS: %q %q", s.IMAPSAddr(), s.CAFile())
	}
	conf, err := os.ReadFile(s.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(conf), "tls_") {
		t.Errorf("imapd.conf has TLS settings:\n%s", conf)
	}
	if _, err := os.Stat(s.Dir() + "/tls"); err == nil {
		t.Error("a tls directory without Options.TLS")
	}
	if g, err := readGreeting(s.IMAPAddr()); err != nil || strings.Contains(g, "STARTTLS") {
		t.Errorf("greeting without Options.TLS: %q, %v", g, err)
	}
}
