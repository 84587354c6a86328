package backup

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/imapdial"
)

// IMAPOptions say where and how WriteIMAP restores.
type IMAPOptions struct {
	// Addr is the server's host:port.
	Addr string
	// TLS is as for the body fetcher: fetch.TLSAuto (plain text on
	// loopback, STARTTLS elsewhere), TLSNone, TLSStartTLS or TLSImplicit
	// (imaps, port 993).
	TLS       fetch.TLSMode
	TLSConfig *tls.Config // nil: system roots, ServerName from Addr
	// User and Password log in. With AuthorizeAs, User authenticates
	// (SASL PLAIN; a Cyrus admin may) and the session acts as AuthorizeAs.
	User, Password string
	AuthorizeAs    string
	// Mailbox is the restored Query.Mailbox ("" for a Message-ID restore),
	// Into the folder to restore it into ("": each folder under its own
	// name); see TargetName.
	Mailbox, Into string
	// Window is how many APPENDs are sent before the first is answered
	// (pipelining; default 8).
	Window int
	// DialTimeout bounds connecting and logging in (default 10s).
	DialTimeout time.Duration
	// Progress, when set, is called after each item with the number of
	// items done and the total.
	Progress func(done, total int)
	// ACLs, when set, are the rights to give each restored folder, by the
	// uniqueid of the folder its items come from (FolderACLs): each entry
	// is set with SETACL once the target folder exists, replacing that
	// identifier's rights there; identifiers not listed keep theirs (a
	// restore adds, never removes).
	ACLs map[string]bonnie.ACL
}

// TargetName returns the folder (admin namespace) that a message found in
// folder path is restored into, for a restore of mailbox into into: with
// into "" the folder itself; otherwise mailbox becomes into and a folder
// under it into.<the rest>; a folder not under mailbox (a Message-ID
// restore) is restored into into itself.
func TargetName(mailbox, into, path string) string {
	switch {
	case into == "":
		return path
	case mailbox == "" || path == mailbox:
		return into
	}
	if rel, ok := strings.CutPrefix(path, mailbox+Separator); ok {
		return into + Separator + rel
	}
	return into
}

// sessionName turns an admin-namespace name into the session's own: a
// user's session names its own folders INBOX and INBOX.Sub (Cyrus's
// standard namespace), and the hierarchy separator is the server's.
// Names already given as INBOX... are left alone.
func sessionName(name, me string, delim rune) string {
	if me != "" {
		home := "user" + Separator + me
		if name == home {
			name = "INBOX"
		} else if rest, ok := strings.CutPrefix(name, home+Separator); ok {
			name = "INBOX" + Separator + rest
		}
	}
	if delim != 0 && string(delim) != Separator {
		name = strings.ReplaceAll(name, Separator, string(delim))
	}
	return name
}

// WriteIMAP restores items into an IMAP server with APPEND, each message
// with its flags and internal date, creating (and subscribing) the folders
// that are missing. Folders are named as TargetName says, in the session's
// namespace (see IMAPOptions.AuthorizeAs: a user's own folders are
// user.NAME... in the admin namespace, INBOX... in the user's).
//
// It never appends a message that is already there, so that running it
// again (after an interruption, or twice) completes what is missing and
// adds nothing else. A message is "already there" when the target folder
// holds a message with the same SHA-256 of its exact bytes (BODY.PEEK[]):
// the same key the log and the body store use, checked without altering
// the restored bytes (a marker header would; a Message-ID is neither
// unique nor always present). To keep that cheap, only the messages of
// the target whose RFC822.SIZE is the size of a message to restore are
// fetched and hashed. The comparison is a multiset: a folder that held two
// copies of a body gets two. A message already there whose flags differ
// from the item's gets the item's flags (UID STORE FLAGS), so that a
// restore into the folder itself after an accidental change (a mass
// \Deleted, a mass read) brings the flags back; messages that were not in
// the folder at that time are left alone (a restore adds, never removes).
//
// \Seen is per user in Cyrus: an APPEND with \Seen sets the \Seen of the
// session's user. Restore into a folder as its owner (AuthorizeAs) so that
// the owner's view is the owner's. \Recent cannot be set and is dropped.
//
// Limits: a server that rewrites what is appended stores other bytes than
// the archive's, and a re-run appends those messages again (Cyrus stores
// what it accepts byte for byte, as the tests check; raw 8-bit header
// bytes may be refused or rewritten, see its reject8bit and munge8bit).
// Cyrus with conversations on refuses more than
// conversations_max_guidinfolder (10) copies of one body in a folder
// ("NO Too many identical emails"): such a restore stops there with that
// error. The namespace mapping assumes Cyrus's standard namespace without
// virtual domains (altnamespace: no, as the log's names are).
// ACLs are restored when asked (IMAPOptions.ACLs); annotations and
// special-use attributes of folders are not.
//
// Cancelling ctx stops between commands and closes the connection; the
// report then says what was done, and the error is ctx's.
func WriteIMAP(ctx context.Context, items []Item, bodies Bodies, o IMAPOptions) (Report, error) {
	var rep Report
	if o.Addr == "" {
		return rep, errNoServer
	}
	if o.Window <= 0 {
		o.Window = 8
	}
	c, err := dialIMAP(ctx, o)
	if err != nil {
		return rep, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	w := &imapWriter{c: c, o: o, bodies: bodies, rep: &rep, total: len(items), me: o.User}
	if o.AuthorizeAs != "" {
		w.me = o.AuthorizeAs
	}
	// The hierarchy separator: LIST "" "" answers it.
	if l, err := c.List("", "", nil).Collect(); err == nil && len(l) > 0 {
		w.delim = l[0].Delim
	}
	// One pass per target folder, in the order of the items: the
	// comparison with what a folder holds must see all its items at once.
	var order []string
	byTarget := map[string][]Item{}
	for _, it := range items {
		target := TargetName(o.Mailbox, o.Into, it.Path)
		if _, ok := byTarget[target]; !ok {
			order = append(order, target)
		}
		byTarget[target] = append(byTarget[target], it)
	}
	for _, target := range order {
		if err := w.folder(ctx, sessionName(target, w.me, w.delim), byTarget[target]); err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			return rep, err
		}
	}
	if err := c.Logout().Wait(); err != nil && ctx.Err() == nil {
		return rep, fmt.Errorf("backup: imap: LOGOUT: %w", err)
	}
	return rep, ctx.Err()
}

// dialIMAP connects and logs in.
func dialIMAP(ctx context.Context, o IMAPOptions) (*imapclient.Client, error) {
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("backup: imap: address %q: %w", o.Addr, err)
	}
	mode := o.TLS
	if mode == fetch.TLSAuto {
		mode = fetch.TLSStartTLS
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			mode = fetch.TLSNone
		}
	}
	cfg := o.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{ServerName: host}
	}
	timeout := o.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	c, err := imapdial.Dial(ctx, imapdial.Options{
		Addr: o.Addr, TLS: string(mode), TLSConfig: cfg,
		User: o.User, Password: o.Password, AuthorizeAs: o.AuthorizeAs, Timeout: timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("backup: imap: %w", err)
	}
	return c, nil
}

// imapWriter is the state of one WriteIMAP.
type imapWriter struct {
	c      *imapclient.Client
	o      IMAPOptions
	bodies Bodies
	rep    *Report
	me     string // the session's user
	delim  rune
	done   int
	total  int
}

// present is a message already in the target folder.
type present struct {
	uid   imap.UID
	flags []imap.Flag
}

func (w *imapWriter) progress() {
	w.done++
	if w.o.Progress != nil {
		w.o.Progress(w.done, w.total)
	}
}

// folder restores items (all for the same target) into name.
func (w *imapWriter) folder(ctx context.Context, name string, items []Item) error {
	w.rep.Folders++
	l, err := w.c.List("", name, nil).Collect()
	if err != nil {
		return fmt.Errorf("backup: imap: LIST %s: %w", name, err)
	}
	toAppend := items
	if !slices.ContainsFunc(l, func(d *imap.ListData) bool {
		return d.Mailbox == name && !slices.Contains(d.Attrs, imap.MailboxAttrNoSelect) && !slices.Contains(d.Attrs, imap.MailboxAttrNonExistent)
	}) {
		if err := w.c.Create(name, nil).Wait(); err != nil {
			return fmt.Errorf("backup: imap: CREATE %s: %w", name, err)
		}
		w.rep.Created++
		if err := w.c.Subscribe(name).Wait(); err != nil {
			return fmt.Errorf("backup: imap: SUBSCRIBE %s: %w", name, err)
		}
	} else if toAppend, err = w.reconcile(ctx, name, items); err != nil {
		return err
	}
	if err := w.setACL(name, w.o.ACLs[items[0].Folder]); err != nil {
		return err
	}
	return w.appendAll(ctx, name, toAppend)
}

// setACL gives folder name the rights of acl, one SETACL per identifier.
func (w *imapWriter) setACL(name string, acl bonnie.ACL) error {
	for _, e := range acl {
		if err := w.c.SetACL(name, imap.RightsIdentifier(e.Subject), imap.RightModificationReplace, imap.RightSet(e.Rights)).Wait(); err != nil {
			return fmt.Errorf("backup: imap: SETACL %s %s %s: %w", name, e.Subject, e.Rights, err)
		}
		w.rep.ACLs++
	}
	return nil
}

// reconcile compares items with what folder name holds: the items already
// there are kept, their flags brought to the item's; it returns the others.
func (w *imapWriter) reconcile(ctx context.Context, name string, items []Item) ([]Item, error) {
	sel, err := w.c.Select(name, nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("backup: imap: SELECT %s: %w", name, err)
	}
	have, err := w.inventory(ctx, name, sel.NumMessages, items)
	if err != nil {
		return nil, err
	}
	var rest []Item
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ex := have[it.Digest]
		if it.Digest == "" || len(ex) == 0 {
			rest = append(rest, it)
			continue
		}
		have[it.Digest] = ex[1:]
		if flags := appendFlags(it.Flags); equalFlags(ex[0].flags, flags) {
			w.rep.Kept++
		} else {
			store := &imap.StoreFlags{Op: imap.StoreFlagsSet, Silent: true, Flags: flags}
			if err := w.c.Store(imap.UIDSetNum(ex[0].uid), store, nil).Close(); err != nil {
				return nil, fmt.Errorf("backup: imap: STORE FLAGS in %s (UID %d): %w", name, ex[0].uid, err)
			}
			w.rep.Updated++
		}
		w.progress()
	}
	// APPEND to the selected folder makes the server report EXISTS and
	// RECENT before each answer, which Cyrus writes in separate segments
	// (a delayed-ACK wait each): append unselected. Never CLOSE, which
	// would expunge.
	if len(rest) > 0 && (w.c.Caps().Has(imap.CapUnselect) || w.c.Caps().Has(imap.CapIMAP4rev2)) {
		if err := w.c.Unselect().Wait(); err != nil {
			return nil, fmt.Errorf("backup: imap: UNSELECT %s: %w", name, err)
		}
	}
	return rest, nil
}

// appendAll APPENDs items to folder name, up to Window at a time.
func (w *imapWriter) appendAll(ctx context.Context, name string, items []Item) error {
	var pending []*pendingAppend
	wait := func(p *pendingAppend) error {
		if _, err := p.cmd.Wait(); err != nil {
			return fmt.Errorf("backup: imap: APPEND to %s (UID %d at %s, %s): %w", name, p.item.UID, p.item.Path, p.item.MessageID, err)
		}
		w.rep.Written++
		w.progress()
		return nil
	}
	flush := func() error {
		for len(pending) > 0 {
			p := pending[0]
			pending = pending[1:]
			if err := wait(p); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			flush()
			return err
		}
		data, why := body(w.bodies, it)
		if why != "" {
			w.rep.Missing = append(w.rep.Missing, Missing{Item: it, Reason: why})
			w.progress()
			continue
		}
		cmd := w.c.Append(name, int64(len(data)), &imap.AppendOptions{Flags: appendFlags(it.Flags), Time: it.InternalDate})
		_, werr := cmd.Write(data)
		if cerr := cmd.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			flush()
			return fmt.Errorf("backup: imap: APPEND to %s: %w", name, werr)
		}
		pending = append(pending, &pendingAppend{cmd: cmd, item: it})
		if len(pending) >= w.o.Window {
			p := pending[0]
			pending = pending[1:]
			if err := wait(p); err != nil {
				flush()
				return err
			}
		}
	}
	return flush()
}

type pendingAppend struct {
	cmd  *imapclient.AppendCommand
	item Item
}

// inventory returns the messages of the selected folder (n of them) that
// are one of items, by digest: first their sizes, then the bodies of those
// whose size is one of the items', hashed.
func (w *imapWriter) inventory(ctx context.Context, name string, n uint32, items []Item) (map[string][]present, error) {
	have := map[string][]present{}
	if n == 0 {
		return have, nil
	}
	sizes := map[int64]bool{}
	for _, it := range items {
		if it.Digest == "" {
			continue
		}
		size := it.Size
		if size <= 0 {
			data, why := body(w.bodies, it)
			if why != "" {
				continue
			}
			size = int64(len(data))
		}
		sizes[size] = true
	}
	all := imap.SeqSet{}
	all.AddRange(1, 0) // 1:*
	msgs, err := w.c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true}).Collect()
	if err != nil {
		return nil, fmt.Errorf("backup: imap: FETCH sizes in %s: %w", name, err)
	}
	flags := map[imap.UID][]imap.Flag{}
	var cand []imap.UID
	for _, m := range msgs {
		if m.UID == 0 || !sizes[m.RFC822Size] {
			continue
		}
		cand = append(cand, m.UID)
		fl := make([]string, 0, len(m.Flags))
		for _, f := range m.Flags {
			fl = append(fl, string(f))
		}
		flags[m.UID] = appendFlags(fl)
	}
	for len(cand) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := cand[:min(len(cand), 100)]
		cand = cand[len(batch):]
		cmd := w.c.Fetch(imap.UIDSetNum(batch...), &imap.FetchOptions{
			UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}},
		})
		for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
			var uid imap.UID
			var sum string
			for item := msg.Next(); item != nil; item = msg.Next() {
				switch it := item.(type) {
				case imapclient.FetchItemDataUID:
					uid = it.UID
				case imapclient.FetchItemDataBodySection:
					if it.Literal == nil {
						continue
					}
					h := sha256.New()
					if _, err := io.Copy(h, it.Literal); err != nil {
						cmd.Close()
						return nil, fmt.Errorf("backup: imap: FETCH bodies in %s: %w", name, err)
					}
					sum = hex.EncodeToString(h.Sum(nil))
				}
			}
			if fl, ok := flags[uid]; ok && sum != "" {
				have[sum] = append(have[sum], present{uid: uid, flags: fl})
			}
		}
		if err := cmd.Close(); err != nil {
			return nil, fmt.Errorf("backup: imap: FETCH bodies in %s: %w", name, err)
		}
	}
	for _, l := range have {
		slices.SortFunc(l, func(a, b present) int { return cmp.Compare(a.uid, b.uid) })
	}
	return have, nil
}

// appendFlags returns flags as APPEND and STORE take them: without
// \Recent, which no client may set, sorted.
func appendFlags(flags []string) []imap.Flag {
	out := make([]imap.Flag, 0, len(flags))
	for _, f := range flags {
		if !strings.EqualFold(f, `\Recent`) && f != "" {
			out = append(out, imap.Flag(f))
		}
	}
	slices.SortFunc(out, func(a, b imap.Flag) int {
		return strings.Compare(strings.ToLower(string(a)), strings.ToLower(string(b)))
	})
	return out
}

// equalFlags compares two sorted flag lists as IMAP does: without regard
// to case.
func equalFlags(a, b []imap.Flag) bool {
	return slices.EqualFunc(a, b, func(x, y imap.Flag) bool { return strings.EqualFold(string(x), string(y)) })
}

// errNoServer is returned for an empty address.
var errNoServer = errors.New("backup: imap: no server address")
