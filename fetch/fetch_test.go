package fetch_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/testmail"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// env is a real Cyrus whose notifications the test reads, decoded.
type env struct {
	s     *cyrustest.Server
	evs   chan *bonnie.Event
	store *blob.Store
}

func start(t *testing.T) *env {
	t.Helper()
	path := cyrustest.SocketPath(t, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e := &env{evs: make(chan *bonnie.Event, 1000)}
	go func() {
		buf := make([]byte, 1<<17)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if ev, err := bonnie.Decode(bytes.Clone(buf[:n])); err == nil {
				e.evs <- ev
			}
		}
	}()
	e.s = cyrustest.Start(t, cyrustest.Options{
		Users:        map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"},
		NotifySocket: path,
		// Cyrus replaces 8-bit bytes in headers by X unless told not to;
		// keep them, so that what was appended is what is archived.
		Config: map[string]string{"munge8bit": "no"},
	})
	e.s.CreateMailbox(t, "user.alice.Archiv 2027")
	if e.store, err = blob.Open(filepath.Join(t.TempDir(), "blobs")); err != nil {
		t.Fatal(err)
	}
	return e
}

// next returns the next event of type typ (others are dropped).
func (e *env) next(t *testing.T, typ bonnie.EventType) *bonnie.Event {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev := <-e.evs:
			if ev.Type == typ {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event", typ)
		}
	}
}

// drain returns the events that arrive within d.
func (e *env) drain(d time.Duration) []*bonnie.Event {
	var out []*bonnie.Event
	timeout := time.After(d)
	for {
		select {
		case ev := <-e.evs:
			out = append(out, ev)
		case <-timeout:
			return out
		}
	}
}

func appendMsg(t *testing.T, c *imapclient.Client, mailbox string, b []byte, date time.Time) uint32 {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(b)), &imap.AppendOptions{Time: date})
	if _, err := cmd.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("APPEND to %s: %v", mailbox, err)
	}
	return uint32(data.UID)
}

// peek returns what the owner's own session sees as BODY.PEEK[], and the
// message's flags.
func peek(t *testing.T, c *imapclient.Client, mailbox string, uid uint32) ([]byte, []imap.Flag) {
	t.Helper()
	if _, err := c.Select(mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	bufs, err := c.Fetch(imap.UIDSetNum(imap.UID(uid)), &imap.FetchOptions{UID: true, Flags: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil || len(bufs) != 1 {
		t.Fatalf("peek %s %d: %v (%d)", mailbox, uid, err, len(bufs))
	}
	return bufs[0].BodySection[0].Bytes, bufs[0].Flags
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newIMAP(t *testing.T, e *env, o fetch.IMAPOptions) *fetch.IMAP {
	t.Helper()
	o.Addr, o.Store = e.s.IMAPAddr(), e.store
	if o.User == "" {
		o.User, o.Password = cyrustest.AdminUser, cyrustest.AdminPassword
	}
	f, err := fetch.NewIMAP(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func spool(e *env) *fetch.Spool {
	return &fetch.Spool{Partitions: []string{filepath.Join(e.s.Dir(), "spool")}, Store: e.store}
}

// TestFetchAwkwardMessages: what IMAP and the spool return is, byte for
// byte, what the owner's session reads as BODY.PEEK[], for 8-bit, binary,
// broken and large messages; \Seen is never set.
func TestFetchAwkwardMessages(t *testing.T) {
	e := start(t)
	alice := e.s.Dial(t, "alice")
	imapF := newIMAP(t, e, fetch.IMAPOptions{})
	spoolF := spool(e)
	date := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	for i, m := range testmail.Set("fetch", 2<<20) {
		mailbox := []string{"INBOX", "INBOX.Archiv 2027"}[i%2]
		uid := appendMsg(t, alice, mailbox, m.Bytes, date)
		ev := e.next(t, bonnie.MessageAppend)
		if len(ev.UIDs) != 1 || ev.UIDs[0] != uid {
			t.Fatalf("%s: event UIDs %v, appended %d", m.Name, ev.UIDs, uid)
		}
		want, _ := peek(t, alice, mailbox, uid)
		if !bytes.Equal(want, m.Bytes) {
			t.Fatalf("%s: Cyrus stored other bytes than appended (munge8bit?)", m.Name)
		}
		for name, f := range map[string]bonnie.BodyFetcher{"imap": imapF, "spool": spoolF} {
			refs, err := f.FetchBodies(context.Background(), ev)
			if err != nil {
				t.Fatalf("%s via %s: %v", m.Name, name, err)
			}
			if len(refs) != 1 || refs[0].Error != "" || refs[0].UID != uid {
				t.Fatalf("%s via %s: %+v", m.Name, name, refs)
			}
			if refs[0].Digest != sha(want) || refs[0].Size != int64(len(want)) {
				t.Fatalf("%s via %s: digest %s size %d, BODY.PEEK[] has %s and %d bytes", m.Name, name, refs[0].Digest, refs[0].Size, sha(want), len(want))
			}
			if !refs[0].InternalDate.Equal(date) {
				t.Fatalf("%s via %s: internal date %v, want %v", m.Name, name, refs[0].InternalDate, date)
			}
			got, err := e.store.Get(refs[0].Digest)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s via %s: stored bytes differ (%v)", m.Name, name, err)
			}
		}
		if _, flags := peek(t, alice, mailbox, uid); slices.Contains(flags, imap.FlagSeen) {
			t.Fatalf("%s: fetching set \\Seen", m.Name)
		}
	}
	for _, ev := range e.drain(300 * time.Millisecond) {
		if ev.Type == bonnie.MessageRead || ev.Type == bonnie.FlagsSet {
			t.Fatalf("fetching caused %s", ev.Type)
		}
	}
}

// The same message delivered to three recipients is three MessageNew
// events, three spool files, one body in the store.
func TestFetchLMTPDeliveryStoredOnce(t *testing.T) {
	e := start(t)
	e.s.LMTPDeliver(t, "news@example.org", []string{"alice", "bob", "carol"}, testmail.LMTP("once"))
	f := fetch.Chain{spool(e), newIMAP(t, e, fetch.IMAPOptions{})}
	digests := map[string]bool{}
	created := 0
	for range 3 {
		ev := e.next(t, bonnie.MessageNew)
		refs, err := f.FetchBodies(context.Background(), ev)
		if err != nil || len(refs) != 1 || refs[0].Error != "" {
			t.Fatalf("%s: %+v %v", ev.Mailbox.Name, refs, err)
		}
		digests[refs[0].Digest] = true
	}
	if len(digests) != 1 {
		t.Fatalf("%d different digests for one delivery", len(digests))
	}
	if err := e.store.Walk(context.Background(), func(string, int64, error) error { created++; return nil }); err != nil {
		t.Fatal(err)
	}
	if created != 1 {
		t.Fatalf("%d files in the store, want 1", created)
	}
}

func TestFetchExpungedAndMissing(t *testing.T) {
	e := start(t)
	alice := e.s.Dial(t, "alice")
	uid := appendMsg(t, alice, "INBOX", testmail.EightBit("gone").Bytes, time.Now())
	ev := e.next(t, bonnie.MessageAppend)
	if _, err := alice.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := alice.Store(imap.UIDSetNum(imap.UID(uid)), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := alice.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	f := newIMAP(t, e, fetch.IMAPOptions{})
	refs, err := f.FetchBodies(context.Background(), ev)
	if err != nil {
		t.Fatalf("an expunged message is not a server failure: %v", err)
	}
	if refs[0].Error == "" || refs[0].Digest != "" {
		t.Fatalf("expunged: %+v", refs)
	}
	// A UID that never existed, in a folder that does not exist.
	bad := *ev
	bad.UIDs = []uint32{9999}
	bad.Mailbox.Name = "user.alice.NoSuchFolder"
	bad.MailboxID = "nosuchid"
	for name, f := range map[string]bonnie.BodyFetcher{"imap": f, "spool": spool(e)} {
		refs, err := f.FetchBodies(context.Background(), &bad)
		if err != nil || len(refs) != 1 || refs[0].Error == "" {
			t.Fatalf("%s: %+v %v", name, refs, err)
		}
	}
}

// An admin reading with its own rights is refused by Cyrus (it has l and
// a, not r): each message says so; the fetcher does not fail as a whole.
func TestFetchAsAdminItselfIsRefused(t *testing.T) {
	e := start(t)
	alice := e.s.Dial(t, "alice")
	appendMsg(t, alice, "INBOX", testmail.EightBit("self").Bytes, time.Now())
	ev := e.next(t, bonnie.MessageAppend)
	f := newIMAP(t, e, fetch.IMAPOptions{Authorize: fetch.AuthorizeSelf})
	refs, err := f.FetchBodies(context.Background(), ev)
	if err != nil || refs[0].Error == "" || !strings.Contains(refs[0].Error, "ermission") {
		t.Fatalf("%+v %v", refs, err)
	}
	// A reader granted lr reads with AuthorizeSelf.
	e.s.SetACL(t, "user.alice", "bob", "lr")
	g := newIMAP(t, e, fetch.IMAPOptions{Authorize: fetch.AuthorizeSelf, User: "bob", Password: "bob-pw"})
	refs, err = g.FetchBodies(context.Background(), ev)
	if err != nil || refs[0].Error != "" || refs[0].Digest == "" {
		t.Fatalf("reader with lr: %+v %v", refs, err)
	}
}

func TestFetchServerDown(t *testing.T) {
	store, _ := blob.Open(t.TempDir())
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	f, err := fetch.NewIMAP(fetch.IMAPOptions{Addr: addr, User: "cyrus", Password: "x", Store: store})
	if err != nil {
		t.Fatal(err)
	}
	ev := &bonnie.Event{Type: bonnie.MessageAppend, MailboxID: "x", UIDs: []uint32{1},
		Mailbox: bonnie.MailboxURL{Name: "user.alice", Owner: "alice"}}
	if _, err := f.FetchBodies(context.Background(), ev); err == nil {
		t.Fatal("no error from a server that is down")
	}
	// A server that accepts and never answers: bounded by the context.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	g, _ := fetch.NewIMAP(fetch.IMAPOptions{Addr: ln2.Addr().String(), User: "cyrus", Password: "x", Store: store})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := g.FetchBodies(ctx, ev); err == nil {
		t.Fatal("no error from a silent server")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}
