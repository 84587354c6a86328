package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/bonnie-archive/bonnie/internal/imapdial"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Options configure a Crawler. The IMAP settings are those of
// fetch.IMAPOptions: the crawler authenticates as a Cyrus admin, lists
// folders and reads their ACL and uniqueid as the admin, and reads each
// user's folder authorized as its owner (SASL PLAIN with an authorization
// identity), so that flags are the owner's (\Seen is per user in Cyrus).
type Options struct {
	Addr      string // host:port
	TLS       string // none, starttls, tls; "" is none on loopback, starttls otherwise
	TLSConfig *tls.Config
	User      string // a Cyrus admin
	Password  string
	// Mailboxes are LIST patterns in the admin namespace ("user.alice.*",
	// "user.alice"); empty means every folder ("*").
	Mailboxes []string
	// Store receives the bodies; nil records messages without them.
	Store *blob.Store
	// Server is the host named in the events' uri (default: Addr's host).
	Server string
	// Chunk is how many messages one event describes at most (default
	// 200): a chunk is also the unit a resumed backfill repeats at most.
	Chunk int
	// DeletedPrefix is Cyrus's deletedprefix (default "DELETED"): with
	// delayed delete a deleted folder lives on, for an admin's LIST, as
	// DELETED.user.alice.Work.6B0B6D29 until cyr_expire removes it. Such
	// folders are not crawled: for users they are gone.
	DeletedPrefix string
	// Service names the crawler in the events ("bonnie-backfill",
	// "bonnie-reconcile" by default).
	Service string
	// DialTimeout bounds connecting and logging in (default 10s).
	DialTimeout time.Duration
	Logger      *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Recorder appends one of Bonnie's own events (JSON) durably: an
// Engine.Record, or the control socket of a running bonnied. The crawler
// records each chunk before it fetches the next.
type Recorder func(ctx context.Context, raw []byte) error

// Crawler walks a Cyrus server's folders as an admin. Create it with New;
// it is not safe for concurrent use.
type Crawler struct {
	o   Options
	log *slog.Logger
	// sessions, one per authorization identity ("" = the admin itself).
	sessions map[string]*imapclient.Client
}

// New checks the options.
func New(o Options) (*Crawler, error) {
	if o.Addr == "" || o.User == "" {
		return nil, errors.New("imap: address and admin user are required")
	}
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("imap: address %q: %w", o.Addr, err)
	}
	if o.TLS == "" {
		o.TLS = "starttls"
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			o.TLS = "none"
		}
	}
	switch o.TLS {
	case "none", "starttls", "tls":
	default:
		return nil, fmt.Errorf("imap: unknown TLS mode %q (none, starttls, tls)", o.TLS)
	}
	if o.TLSConfig == nil {
		o.TLSConfig = &tls.Config{ServerName: host}
	}
	if o.Server == "" {
		o.Server = host
	}
	if o.Chunk <= 0 {
		o.Chunk = 200
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DeletedPrefix == "" {
		o.DeletedPrefix = "DELETED"
	}
	if len(o.Mailboxes) == 0 {
		o.Mailboxes = []string{"*"}
	}
	return &Crawler{o: o, log: o.Logger.With("crawler", "imap", "addr", o.Addr), sessions: map[string]*imapclient.Client{}}, nil
}

// Close logs out of every session.
func (c *Crawler) Close() error {
	for who, s := range c.sessions {
		_ = s.Logout().Wait()
		s.Close()
		delete(c.sessions, who)
	}
	return nil
}

// session returns the session authorized as who ("" for the admin),
// dialling it on first use; a session that failed is dropped.
func (c *Crawler) session(ctx context.Context, who string) (*imapclient.Client, error) {
	if s, ok := c.sessions[who]; ok {
		return s, nil
	}
	s, err := imapdial.Dial(ctx, imapdial.Options{
		Addr: c.o.Addr, TLS: c.o.TLS, TLSConfig: c.o.TLSConfig,
		User: c.o.User, Password: c.o.Password, AuthorizeAs: who, Timeout: c.o.DialTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("imap %s: %w", c.o.Addr, err)
	}
	c.sessions[who] = s
	return s, nil
}

// drop closes a session after an error that may have left it unusable.
func (c *Crawler) drop(who string) {
	if s, ok := c.sessions[who]; ok {
		s.Close()
		delete(c.sessions, who)
	}
}

// Folder is one folder as the server reports it.
type Folder struct {
	Name          string // admin namespace ("user.alice.Work")
	Owner         string // "" for a shared folder
	ID            string // uniqueid (MAILBOXID)
	UIDValidity   uint32
	UIDNext       uint32
	HighestModseq uint64
	Messages      uint32
	ACL           bonnie.ACL
}

// uniqueidEntry is Cyrus's metadata entry for a folder's uniqueid, which
// an admin may read. (STATUS (MAILBOXID) of RFC 8474 is refused to an
// admin without the r right, and Cyrus 3.6.1 answered MAILBOXID in LIST
// ... RETURN (STATUS (... MAILBOXID)) with garbage bytes in one of our two
// tries: not to be relied on.)
const uniqueidEntry = "/shared/vendor/cmu/cyrus-imapd/uniqueid"

// Folders lists the folders the options select, with their status,
// uniqueid and ACL, sorted by name: one LIST-STATUS per pattern (which
// Cyrus answers to an admin), then one GETMETADATA and one GETACL per
// folder.
func (c *Crawler) Folders(ctx context.Context) ([]Folder, error) {
	s, err := c.session(ctx, "")
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.drop("") })
	defer stop()
	byName := map[string]*Folder{}
	for _, pat := range c.o.Mailboxes {
		list, err := s.List("", pat, &imap.ListOptions{ReturnStatus: &imap.StatusOptions{
			NumMessages: true, UIDNext: true, UIDValidity: true, HighestModSeq: true,
		}}).Collect()
		if err != nil {
			c.drop("")
			return nil, fmt.Errorf("imap: LIST %q: %w", pat, err)
		}
		for _, l := range list {
			if slices.Contains(l.Attrs, imap.MailboxAttrNoSelect) || slices.Contains(l.Attrs, imap.MailboxAttrNonExistent) ||
				strings.HasPrefix(l.Mailbox, c.o.DeletedPrefix+".") {
				continue
			}
			f := &Folder{Name: l.Mailbox, Owner: ownerOf(l.Mailbox)}
			if st := l.Status; st != nil {
				f.UIDValidity, f.UIDNext, f.HighestModseq = st.UIDValidity, uint32(st.UIDNext), st.HighestModSeq
				if st.NumMessages != nil {
					f.Messages = *st.NumMessages
				}
			}
			byName[f.Name] = f
		}
	}
	names := slices.Sorted(maps.Keys(byName))
	// Both commands for every folder are sent at once (pipelined) and
	// answered in one pass: one round trip, not two per folder.
	type pending struct {
		md  *imapclient.GetMetadataCommand
		acl *imapclient.GetACLCommand
	}
	cmds := make([]pending, len(names))
	for i, n := range names {
		cmds[i] = pending{md: s.GetMetadata(n, []string{uniqueidEntry}, nil), acl: s.GetACL(n)}
	}
	out := make([]Folder, 0, len(names))
	var firstErr error
	for i, n := range names {
		f := byName[n]
		md, err := cmds[i].md.Wait()
		acl, aerr := cmds[i].acl.Wait()
		if firstErr != nil {
			continue // wait for every answer all the same
		}
		if err != nil {
			firstErr = fmt.Errorf("imap: GETMETADATA %s: %w", n, err)
			continue
		}
		if aerr != nil {
			firstErr = fmt.Errorf("imap: GETACL %s: %w", n, aerr)
			continue
		}
		if v := md.Entries[uniqueidEntry]; v != nil {
			f.ID = string(*v)
		}
		if f.ID == "" {
			firstErr = fmt.Errorf("imap: %s: the server gives no uniqueid", n)
			continue
		}
		for _, id := range slices.Sorted(maps.Keys(acl.Rights)) {
			f.ACL = append(f.ACL, bonnie.ACLEntry{Subject: string(id), Rights: acl.Rights[id].String()})
		}
		out = append(out, *f)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// ownerOf derives the owner of a folder from its admin-namespace name, as
// Cyrus's event URLs do.
func ownerOf(name string) string {
	u, err := bonnie.ParseMailboxURL("imap://x/" + escapeName(name))
	if err != nil {
		return ""
	}
	return u.Owner
}

// escapeName percent-encodes a mailbox name for an IMAP URL as Cyrus does
// (UTF-8 bytes and URL specials).
func escapeName(name string) string {
	return strings.ReplaceAll(url.PathEscape(name), ";", "%3B")
}

// uri is the RFC 5092 URL of a folder under uidValidity.
func (c *Crawler) uri(name string, uidValidity uint32) string {
	u := "imap://" + c.o.Server + "/" + escapeName(name)
	if uidValidity != 0 {
		u += fmt.Sprintf(";UIDVALIDITY=%d", uidValidity)
	}
	return u
}

// sessionFor returns the session that reads folder f: authorized as its
// owner, or the admin's own for a shared folder.
func (c *Crawler) sessionFor(ctx context.Context, f Folder) (*imapclient.Client, string, error) {
	who := f.Owner
	if who == c.o.User {
		who = ""
	}
	// Folders come sorted by name, so one owner's come together: keep
	// the admin's session and the current owner's only, or a server of
	// many users would see as many sessions open.
	for other := range c.sessions {
		if other != "" && other != who {
			_ = c.sessions[other].Logout().Wait()
			c.drop(other)
		}
	}
	s, err := c.session(ctx, who)
	return s, who, err
}

// examine opens f read-only and returns its state as the session sees it.
func examine(s *imapclient.Client, f Folder) (*imap.SelectData, error) {
	data, err := s.Select(f.Name, &imap.SelectOptions{ReadOnly: true, CondStore: true}).Wait()
	if err != nil {
		return nil, fmt.Errorf("imap: EXAMINE %s: %w", f.Name, err)
	}
	return data, nil
}

// flagsOf returns the flags a message has, as ingest keeps them: \Recent
// (a session property) left out, sorted.
func flagsOf(fl []imap.Flag) []string {
	out := make([]string, 0, len(fl))
	for _, f := range fl {
		if strings.EqualFold(string(f), `\Recent`) {
			continue
		}
		out = append(out, normalFlag(string(f)))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// normalFlag spells system flags as ingest does (\Seen, not \seen).
func normalFlag(f string) string {
	for _, sys := range []string{`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`} {
		if strings.EqualFold(f, sys) {
			return sys
		}
	}
	return f
}

// uidFlags lists every message of the selected folder with its flags.
func uidFlags(s *imapclient.Client) (map[uint32][]string, error) {
	out := map[uint32][]string{}
	cmd := s.Fetch(imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true})
	for {
		msg := cmd.Next()
		if msg == nil {
			break
		}
		b, err := msg.Collect()
		if err != nil {
			cmd.Close()
			return nil, err
		}
		if b.UID != 0 {
			out[uint32(b.UID)] = flagsOf(b.Flags)
		}
	}
	if err := cmd.Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// fetchMessages reads uids of the selected folder in full: flags,
// internal date, size, Message-ID and, with a store, the body (stored
// before this returns). The result is in UID order; UIDs the server does
// not have are left out.
func (c *Crawler) fetchMessages(s *imapclient.Client, uids []uint32) ([]bonnie.MessageState, int64, error) {
	if len(uids) == 0 {
		return nil, 0, nil
	}
	set := make([]imap.UID, len(uids))
	for i, u := range uids {
		set[i] = imap.UID(u)
	}
	opts := &imap.FetchOptions{UID: true, Flags: true, InternalDate: true, RFC822Size: true, Envelope: true}
	if c.o.Store != nil {
		opts.BodySection = []*imap.FetchItemBodySection{{Peek: true}} // BODY.PEEK[]: \Seen untouched
	}
	cmd := s.Fetch(imap.UIDSetNum(set...), opts)
	var (
		out      []bonnie.MessageState
		bytes    int64
		storeErr error
	)
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		var m bonnie.MessageState
		for item := msg.Next(); item != nil; item = msg.Next() {
			switch it := item.(type) {
			case imapclient.FetchItemDataUID:
				m.UID = uint32(it.UID)
			case imapclient.FetchItemDataFlags:
				m.Flags = flagsOf(it.Flags)
			case imapclient.FetchItemDataInternalDate:
				m.InternalDate = it.Time.UTC()
			case imapclient.FetchItemDataRFC822Size:
				m.Size = it.Size
			case imapclient.FetchItemDataEnvelope:
				if it.Envelope != nil && it.Envelope.MessageID != "" {
					m.MessageID = "<" + it.Envelope.MessageID + ">"
				}
			case imapclient.FetchItemDataBodySection:
				if it.Literal == nil {
					m.Error = "the server sent NIL for BODY[]"
					continue
				}
				if storeErr != nil {
					continue // the client drains it
				}
				want := it.Literal.Size()
				info, err := c.o.Store.PutReader(it.Literal)
				if err != nil {
					storeErr = err
					continue
				}
				if info.Size != want {
					storeErr = fmt.Errorf("body literal of %d bytes, read %d", want, info.Size)
					continue
				}
				m.Digest, m.Size = info.Digest, info.Size
				bytes += info.Size
			}
		}
		if m.UID == 0 || m.Flags == nil {
			continue // an unsolicited FETCH
		}
		out = append(out, m)
	}
	if err := cmd.Close(); err != nil {
		return nil, 0, err
	}
	if storeErr != nil {
		return nil, 0, fmt.Errorf("imap: store body: %w", storeErr)
	}
	slices.SortFunc(out, func(a, b bonnie.MessageState) int { return int(int64(a.UID) - int64(b.UID)) })
	out = slices.CompactFunc(out, func(a, b bonnie.MessageState) bool { return a.UID == b.UID })
	return out, bytes, nil
}

// searchUIDs lists the UIDs of the selected folder from min on.
func searchUIDs(s *imapclient.Client, min uint32) ([]uint32, error) {
	crit := &imap.SearchCriteria{UID: []imap.UIDSet{{imap.UIDRange{Start: imap.UID(max(min, 1)), Stop: 0}}}}
	data, err := s.UIDSearch(crit, nil).Wait()
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, u := range data.AllUIDs() {
		if uint32(u) >= min {
			out = append(out, uint32(u))
		}
	}
	slices.Sort(out)
	return out, nil
}
