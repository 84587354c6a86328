// Package imapdial connects and logs in to an IMAP server the way every
// IMAP client of Bonnie does (the body fetcher, the crawler, restore):
// plain, STARTTLS or implicit TLS, TCP_QUICKACK against Cyrus's Nagle
// delays, and a login as the admin, optionally authorized as another
// user (SASL PLAIN with an authorization identity).
package imapdial

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// TLS modes, spelt as the commands' --imap-tls flags spell them.
const (
	None     = "none"
	StartTLS = "starttls"
	Implicit = "tls"
)

// Options say where and as whom to connect.
type Options struct {
	Addr string
	// TLS is None, StartTLS or Implicit.
	TLS       string
	TLSConfig *tls.Config
	// User and Password log in; with AuthorizeAs the session acts as that
	// user (SASL PLAIN authzid: Cyrus lets an admin do so).
	User, Password, AuthorizeAs string
	// Timeout bounds connecting and logging in (0: only ctx).
	Timeout time.Duration
	// Client are the go-imap client options (TLSConfig is set from above).
	Client imapclient.Options
}

// LoginError is a refused login: the connection worked.
type LoginError struct {
	// As is who logged in: "user" or "user as authzid".
	As  string
	Err error
}

func (e *LoginError) Error() string { return "log in " + e.As + ": " + e.Err.Error() }
func (e *LoginError) Unwrap() error { return e.Err }

// Dial connects and logs in. A login the server refuses is a *LoginError.
func Dial(ctx context.Context, o Options) (*imapclient.Client, error) {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	// Cyrus's imapd writes a response in several segments without
	// TCP_NODELAY: see QuickAck.
	nc = QuickAck(nc)
	// A server that stops answering during the greeting or the login
	// is cut off when ctx ends.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	opts := o.Client
	opts.TLSConfig = o.TLSConfig
	var c *imapclient.Client
	switch o.TLS {
	case None, "":
		c = imapclient.New(nc, &opts)
	case Implicit:
		tc := tls.Client(nc, o.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		c = imapclient.New(tc, &opts)
	case StartTLS:
		if c, err = imapclient.NewStartTLS(nc, &opts); err != nil {
			nc.Close()
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	default:
		nc.Close()
		return nil, fmt.Errorf("unknown TLS mode %q (%s, %s, %s)", o.TLS, None, StartTLS, Implicit)
	}
	if o.AuthorizeAs == "" {
		err = c.Login(o.User, o.Password).Wait()
	} else {
		err = c.Authenticate(sasl.NewPlainClient(o.AuthorizeAs, o.User, o.Password))
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("log in: %w", ctx.Err())
		}
		as := o.User
		if o.AuthorizeAs != "" {
			as += " as " + o.AuthorizeAs
		}
		return nil, &LoginError{As: as, Err: err}
	}
	return c, nil
}
