package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/bonnie-archive/bonnie/internal/imapdial"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// TLSMode says how the IMAP connection is protected.
type TLSMode string

// TLS modes.
const (
	// TLSAuto is TLSNone for a loopback address, TLSStartTLS otherwise.
	TLSAuto     TLSMode = ""
	TLSNone     TLSMode = "none"     // plain text (loopback only, please)
	TLSStartTLS TLSMode = "starttls" // port 143, STARTTLS before logging in
	TLSImplicit TLSMode = "tls"      // port 993
)

// Authorize says as whom the fetcher reads a folder.
type Authorize string

const (
	// AuthorizeOwner (the default) authenticates with the admin's
	// credentials and authorizes as the folder's owner (SASL PLAIN with
	// an authorization identity): Cyrus lets an admin act as any user,
	// while an admin's own session may not read a user's folder (it gets
	// "NO Permission denied": admins have the l and a rights, not r).
	//
	// Cost: Cyrus sends Login and Logout events naming the owner for each
	// such session (indistinguishable, in the notification, from the owner
	// logging in; their clientIP:clientPort is this fetcher's). Sessions
	// are kept open per owner (IMAPOptions.Conns, IdleTimeout) to make
	// them few. Where that is not acceptable use the spool, or
	// AuthorizeSelf with an account that holds the r right.
	AuthorizeOwner Authorize = "owner"
	// AuthorizeSelf logs in as the configured user and reads with its own
	// rights: an account that was granted "lr" on the folders to archive
	// (e.g. SETACL user.alice archiver lr, inherited by new subfolders).
	// It is the only way for shared folders, which have no owner.
	AuthorizeSelf Authorize = "self"
)

// IMAPOptions configure an IMAP fetcher.
type IMAPOptions struct {
	Addr      string // host:port
	TLS       TLSMode
	TLSConfig *tls.Config // nil: system roots, ServerName from Addr
	User      string      // an admin (AuthorizeOwner) or a reader (AuthorizeSelf)
	Password  string
	Authorize Authorize // default AuthorizeOwner
	// Conns bounds the open connections (default 4); IdleTimeout closes
	// connections unused that long (default 5m).
	Conns       int
	IdleTimeout time.Duration
	// DialTimeout bounds connecting and logging in (default 10s).
	DialTimeout time.Duration
	Store       *blob.Store // where the bodies go (required)
	Logger      *slog.Logger
}

// IMAP fetches bodies over IMAP. It implements bonnie.BodyFetcher; its
// methods are safe for concurrent use.
type IMAP struct {
	o     IMAPOptions
	log   *slog.Logger
	slots chan struct{} // one per connection in use

	mu     sync.Mutex
	idle   []*conn // most recently used last
	open   int
	closed bool
}

type conn struct {
	c           *imapclient.Client
	who         string // authorization identity; "" = User itself
	selected    string
	uidValidity uint32
	used        time.Time
}

// NewIMAP returns a fetcher; it connects on first use.
func NewIMAP(o IMAPOptions) (*IMAP, error) {
	if o.Store == nil {
		return nil, errors.New("fetch: IMAPOptions.Store is required")
	}
	if o.Addr == "" || o.User == "" {
		return nil, errors.New("fetch: IMAP address and user are required")
	}
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("fetch: IMAP address %q: %w", o.Addr, err)
	}
	if o.TLS == TLSAuto {
		o.TLS = TLSStartTLS
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			o.TLS = TLSNone
		}
	}
	switch o.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return nil, fmt.Errorf("fetch: unknown TLS mode %q (none, starttls, tls)", o.TLS)
	}
	if o.TLSConfig == nil {
		o.TLSConfig = &tls.Config{ServerName: host}
	}
	switch o.Authorize {
	case "":
		o.Authorize = AuthorizeOwner
	case AuthorizeOwner, AuthorizeSelf:
	default:
		return nil, fmt.Errorf("fetch: unknown authorization %q (owner, self)", o.Authorize)
	}
	if o.Conns <= 0 {
		o.Conns = 4
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &IMAP{o: o, log: o.Logger.With("fetcher", "imap", "addr", o.Addr), slots: make(chan struct{}, o.Conns)}, nil
}

// String describes the fetcher for logs and the log's lifecycle events
// (no password).
func (f *IMAP) String() string {
	return fmt.Sprintf("imap://%s@%s (tls %s, authorize %s)", f.o.User, f.o.Addr, f.o.TLS, f.o.Authorize)
}

// FetchBodies implements bonnie.BodyFetcher.
func (f *IMAP) FetchBodies(ctx context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	return f.Fetch(ctx, ev.Mailbox.Name, ev.Mailbox.Owner, ev.Mailbox.UIDValidity, ev.UIDs)
}

// Fetch stores the bodies of uids of the folder named mailbox (admin
// namespace) owned by owner ("" for a shared folder), whose UIDVALIDITY
// must be uidValidity (0: any), and describes them in the order of uids.
// A message the server does not have (any more) is a BodyRef with Error;
// an error return means the server could not be used at all.
func (f *IMAP) Fetch(ctx context.Context, mailbox, owner string, uidValidity uint32, uids []uint32) ([]bonnie.BodyRef, error) {
	if mailbox == "" {
		return errRefs(uids, "event names no mailbox"), nil
	}
	who := ""
	if f.o.Authorize == AuthorizeOwner && owner != "" && owner != f.o.User {
		who = owner
	}
	c, err := f.acquire(ctx, who)
	if err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			return errRefs(uids, fmt.Sprintf("%s: %v", mailbox, err)), nil
		}
		return nil, fmt.Errorf("imap %s: %w", f.o.Addr, err)
	}
	// A server that stops answering must not hold the caller past ctx:
	// closing the connection ends every command on it.
	stop := context.AfterFunc(ctx, func() { c.c.Close() })
	refs, err := f.fetch(c, mailbox, uidValidity, uids)
	interrupted := !stop()
	if interrupted && err == nil {
		err = ctx.Err()
	}
	var ie *imap.Error
	healthy := err == nil || errors.As(err, &ie)
	f.release(c, healthy && !interrupted)
	if err != nil && errors.As(err, &ie) {
		// The server refused (no such folder, no right): the messages
		// cannot be had this way, the server itself is fine.
		return errRefs(uids, fmt.Sprintf("%s: %v", mailbox, err)), nil
	}
	if err != nil {
		if interrupted {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("imap %s: %w", f.o.Addr, err)
	}
	return refs, nil
}

type fetched struct {
	info blob.Info
	date time.Time
	size int64
	err  string
}

func (f *IMAP) fetch(c *conn, mailbox string, uidValidity uint32, uids []uint32) ([]bonnie.BodyRef, error) {
	if c.selected != mailbox {
		if err := f.examine(c, mailbox); err != nil {
			return nil, err
		}
	}
	if uidValidity != 0 && c.uidValidity != uidValidity {
		// Maybe the folder was recreated since we opened it: look again.
		if err := f.examine(c, mailbox); err != nil {
			return nil, err
		}
		if c.uidValidity != uidValidity {
			return errRefs(uids, fmt.Sprintf("%s: UIDVALIDITY is %d, the event's %d: those messages are gone", mailbox, c.uidValidity, uidValidity)), nil
		}
	}
	got := map[uint32]fetched{}
	if err := f.fetchInto(c, uids, got); err != nil {
		return nil, err
	}
	// A session sees messages appended after it opened the folder only
	// once the server tells it: NOOP, then open the folder afresh.
	for _, again := range []func() error{
		func() error { return c.c.Noop().Wait() },
		func() error { return f.examine(c, mailbox) },
	} {
		missing := missingUIDs(uids, got)
		if len(missing) == 0 {
			break
		}
		if err := again(); err != nil {
			return nil, err
		}
		if err := f.fetchInto(c, missing, got); err != nil {
			return nil, err
		}
	}
	refs := make([]bonnie.BodyRef, len(uids))
	for i, uid := range uids {
		g, ok := got[uid]
		switch {
		case !ok:
			refs[i] = bonnie.BodyRef{UID: uid, Error: fmt.Sprintf("%s: UID %d not found (expunged?)", mailbox, uid)}
		case g.err != "":
			refs[i] = bonnie.BodyRef{UID: uid, Error: fmt.Sprintf("%s: UID %d: %s", mailbox, uid, g.err)}
		default:
			if g.size != 0 && g.size != g.info.Size {
				f.log.Warn("RFC822.SIZE differs from the bytes of BODY[]", "mailbox", mailbox, "uid", uid, "rfc822size", g.size, "bytes", g.info.Size)
			}
			refs[i] = bonnie.BodyRef{UID: uid, Digest: g.info.Digest, Size: g.info.Size, InternalDate: g.date.UTC()}
		}
	}
	return refs, nil
}

func (f *IMAP) examine(c *conn, mailbox string) error {
	c.selected = ""
	data, err := c.c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return err
	}
	c.selected, c.uidValidity = mailbox, data.UIDValidity
	return nil
}

func missingUIDs(uids []uint32, got map[uint32]fetched) []uint32 {
	var m []uint32
	for _, u := range uids {
		if _, ok := got[u]; !ok {
			m = append(m, u)
		}
	}
	return m
}

// fetchInto runs UID FETCH for uids, streaming each body into the store.
func (f *IMAP) fetchInto(c *conn, uids []uint32, got map[uint32]fetched) error {
	set := make([]imap.UID, len(uids))
	for i, u := range uids {
		set[i] = imap.UID(u)
	}
	cmd := c.c.Fetch(imap.UIDSetNum(set...), &imap.FetchOptions{
		UID: true, InternalDate: true, RFC822Size: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}, // BODY.PEEK[]: \Seen untouched
	})
	var storeErr error
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		var uid uint32
		var g fetched
		body := false
		for item := msg.Next(); item != nil; item = msg.Next() {
			switch it := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = uint32(it.UID)
			case imapclient.FetchItemDataInternalDate:
				g.date = it.Time
			case imapclient.FetchItemDataRFC822Size:
				g.size = it.Size
			case imapclient.FetchItemDataBodySection:
				if it.Literal == nil {
					g.err = "the server sent NIL for BODY[]"
					continue
				}
				body = true
				if storeErr != nil {
					continue // drained by the client
				}
				want := it.Literal.Size()
				info, err := f.o.Store.PutReader(it.Literal)
				if err != nil {
					storeErr = err
					continue
				}
				if info.Size != want {
					storeErr = fmt.Errorf("body literal of %d bytes, read %d", want, info.Size)
					continue
				}
				g.info = info
			}
		}
		if uid == 0 || (!body && g.err == "") {
			continue // unsolicited FETCH (a flag change seen by the session)
		}
		got[uid] = g
	}
	if err := cmd.Close(); err != nil {
		return err
	}
	return storeErr
}

func errRefs(uids []uint32, reason string) []bonnie.BodyRef {
	refs := make([]bonnie.BodyRef, len(uids))
	for i, u := range uids {
		refs[i] = bonnie.BodyRef{UID: u, Error: reason}
	}
	return refs
}

// acquire returns a connection authorized as who, reusing an idle one.
func (f *IMAP) acquire(ctx context.Context, who string) (*conn, error) {
	select {
	case f.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for an IMAP connection: %w", ctx.Err())
	}
	var evict []*conn
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		<-f.slots
		return nil, errors.New("fetcher closed")
	}
	now := time.Now()
	var found *conn
	keep := f.idle[:0]
	for _, c := range f.idle {
		switch {
		case now.Sub(c.used) > f.o.IdleTimeout:
			evict = append(evict, c)
		case c.who == who:
			found = c // the most recently used wins
			keep = append(keep, c)
		default:
			keep = append(keep, c)
		}
	}
	f.idle = keep
	if found != nil {
		f.idle = slices.DeleteFunc(f.idle, func(c *conn) bool { return c == found })
	} else if f.open-len(evict) >= f.o.Conns && len(f.idle) > 0 {
		// Full: give up the least recently used idle session.
		evict = append(evict, f.idle[0])
		f.idle = f.idle[1:]
	}
	f.open -= len(evict)
	if found == nil {
		f.open++
	}
	f.mu.Unlock()
	for _, c := range evict {
		go logout(c)
	}
	if found != nil {
		return found, nil
	}
	c, err := f.dial(ctx, who)
	if err != nil {
		f.mu.Lock()
		f.open--
		f.mu.Unlock()
		<-f.slots
		return nil, err
	}
	return c, nil
}

func (f *IMAP) release(c *conn, healthy bool) {
	f.mu.Lock()
	if healthy && !f.closed {
		c.used = time.Now()
		f.idle = append(f.idle, c)
		c = nil
	} else {
		f.open--
	}
	f.mu.Unlock()
	<-f.slots
	if c != nil {
		c.c.Close()
	}
}

func logout(c *conn) {
	_ = c.c.Logout().Wait()
	c.c.Close()
}

func (f *IMAP) dial(ctx context.Context, who string) (*conn, error) {
	c, err := imapdial.Dial(ctx, imapdial.Options{
		Addr: f.o.Addr, TLS: string(f.o.TLS), TLSConfig: f.o.TLSConfig,
		User: f.o.User, Password: f.o.Password, AuthorizeAs: who, Timeout: f.o.DialTimeout,
	})
	var le *imapdial.LoginError
	var ie *imap.Error
	if errors.As(err, &le) && who != "" && errors.As(le.Err, &ie) {
		// Authorization refused for this owner only (no such user):
		// say so on the messages, the server is fine.
		return nil, &imap.Error{Type: ie.Type, Code: ie.Code, Text: fmt.Sprintf("log in %s: %s", le.As, ie.Text)}
	}
	if err != nil {
		return nil, err
	}
	return &conn{c: c, who: who}, nil
}

// Close logs out every idle connection; connections in use close when
// released.
func (f *IMAP) Close() error {
	f.mu.Lock()
	f.closed = true
	idle := f.idle
	f.idle = nil
	f.open -= len(idle)
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Add(1)
		go func() {
			defer wg.Done()
			logout(c)
		}()
	}
	wg.Wait()
	return nil
}

var _ io.Closer = (*IMAP)(nil)
