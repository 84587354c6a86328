package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// errPoolWait is wrapped when the pool had no free connection in time:
// local congestion, not a sign that the directory is away.
var errPoolWait = errors.New("waiting for a free LDAP connection")

// pool keeps up to size bound LDAP connections for reuse. A connection
// that failed is closed, never returned to the pool.
type pool struct {
	url      string
	bindDN   string
	password func() (string, error)
	startTLS bool
	tls      *tls.Config
	dial     time.Duration
	timeout  time.Duration

	slots chan struct{} // one token per connection that may exist
	mu    sync.Mutex
	idle  []*ldap.Conn
}

func newPool(o *LDAPOptions, password func() (string, error)) *pool {
	return &pool{url: o.URL, bindDN: o.BindDN, password: password, startTLS: o.StartTLS, tls: o.TLSConfig,
		dial: o.DialTimeout, timeout: o.RequestTimeout, slots: make(chan struct{}, o.PoolSize)}
}

// get returns an idle connection or dials a new one, waiting for a free
// slot no longer than ctx allows.
func (p *pool) get(ctx context.Context) (*ldap.Conn, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", errPoolWait, ctx.Err())
	}
	p.mu.Lock()
	for len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if !c.IsClosing() {
			p.mu.Unlock()
			return c, nil
		}
		c.Close()
	}
	p.mu.Unlock()
	c, err := p.connect(ctx)
	if err != nil {
		<-p.slots
		return nil, err
	}
	return c, nil
}

// put gives a connection back; a broken one is closed.
func (p *pool) put(c *ldap.Conn, broken bool) {
	if broken || c.IsClosing() {
		c.Close()
	} else {
		p.mu.Lock()
		p.idle = append(p.idle, c)
		p.mu.Unlock()
	}
	<-p.slots
}

// connect dials, starts TLS when asked, and binds.
func (p *pool) connect(ctx context.Context) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: p.dial}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < p.dial {
		d.Timeout = max(time.Until(dl), time.Millisecond)
	}
	opts := []ldap.DialOpt{ldap.DialWithDialer(d)}
	if p.tls != nil {
		opts = append(opts, ldap.DialWithTLSConfig(p.tls))
	}
	c, err := ldap.DialURL(p.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", p.url, err)
	}
	c.SetTimeout(p.timeout)
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	if err := runCtx(ctx, c, func() error {
		if p.startTLS {
			cfg := p.tls
			if cfg == nil {
				cfg = &tls.Config{}
			}
			if err := c.StartTLS(cfg); err != nil {
				return fmt.Errorf("StartTLS: %w", err)
			}
		}
		if p.bindDN == "" {
			return nil
		}
		pw, err := p.password()
		if err != nil {
			return err
		}
		if err := c.Bind(p.bindDN, pw); err != nil {
			return fmt.Errorf("bind as %s: %w", p.bindDN, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// close closes the idle connections.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.idle {
		c.Close()
	}
	p.idle = nil
}

// runCtx runs f on c, closing c if ctx ends first (go-ldap's synchronous
// calls do not take a context; closing the connection ends them).
func runCtx(ctx context.Context, c *ldap.Conn, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		c.Close()
		<-done
		return ctx.Err()
	}
}

// networkError reports whether err means the directory could not be
// reached or the connection broke (as opposed to an answer the directory
// gave).
func networkError(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var le *ldap.Error
	if errors.As(err, &le) {
		switch le.ResultCode {
		case ldap.ErrorNetwork, ldap.LDAPResultBusy, ldap.LDAPResultUnavailable, ldap.LDAPResultUnwillingToPerform,
			ldap.LDAPResultServerDown, ldap.LDAPResultTimeout, ldap.LDAPResultConnectError, ldap.LDAPResultTimeLimitExceeded:
			return true
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne)
}
