package intercept_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/intercept"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// brokerURL is the RabbitMQ the tests use (BONNIE_TEST_AMQP overrides).
func brokerURL() string {
	if u := os.Getenv("BONNIE_TEST_AMQP"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// needBroker fails the test when RabbitMQ is not there (in CI it must be),
// unless BONNIE_TEST_NO_AMQP is set.
func needBroker(t testing.TB) {
	t.Helper()
	c, err := amqp091.Dial(brokerURL())
	if err != nil {
		if os.Getenv("BONNIE_TEST_NO_AMQP") != "" {
			t.Skip("no RabbitMQ:", err)
		}
		t.Fatalf("RabbitMQ at %s: %v", brokerURL(), err)
	}
	c.Close()
}

// people is a directory: login -> identity (persistent id u-...).
type people map[string]bonnie.Identity

func (p people) Resolve(ctx context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	if id, ok := p[subject]; ok {
		id.Subject, id.Kind, id.Source, id.ResolvedAt = subject, bonnie.IdentityUser, "test", time.Now().UTC()
		return id, nil
	}
	return bonnie.PassThrough{}.Resolve(ctx, subject, at)
}

// directory: Jane's login changes from janeg to janed (same person, id
// u-jane); Bob is another person.
var directory = people{
	"janeg": {ID: "u-jane", Login: "janeg", Addresses: []string{"janeg@example.org"}},
	"janed": {ID: "u-jane", Login: "janed", Addresses: []string{"janed@example.org", "janeg@example.org"}},
	"bob":   {ID: "u-bob", Login: "bob", Addresses: []string{"bob@example.org"}},
}

// memFetcher stores a body for every UID, like the IMAP fetcher would
// from Cyrus.
type memFetcher struct{ store *blob.Store }

func body(folder string, uid uint32) []byte {
	return fmt.Appendf(nil, "From: someone@example.org\r\nSubject: message %d in %s\r\n\r\nHello.\r\nFrom the start, a line an mbox must quote.\r\n", uid, folder)
}

func (f memFetcher) FetchBodies(_ context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	var refs []bonnie.BodyRef
	for _, uid := range ev.UIDs {
		info, err := f.store.Put(body(ev.MailboxID, uid))
		if err != nil {
			return nil, err
		}
		refs = append(refs, bonnie.BodyRef{UID: uid, Digest: info.Digest, Size: info.Size, InternalDate: ev.Time})
	}
	return refs, nil
}

// fixture is a log, a body store and an engine running the sink.
type fixture struct {
	t      *testing.T
	dir    string
	store  *sqlite.Log
	blobs  *blob.Store
	eng    *bonnie.Engine
	sink   *intercept.Sink
	cancel context.CancelFunc
	done   chan error
	uid    uint32
	seq    int

	resolver bonnie.Resolver
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, directory) }

// newFixtureWith is newFixture with another directory.
func newFixtureWith(t *testing.T, resolver bonnie.Resolver) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	blobs, err := blob.Open(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, dir: dir, store: st, blobs: blobs, resolver: resolver}
	f.startEngine()
	t.Cleanup(f.stop)
	return f
}

// startEngine runs an engine with a new interception sink.
func (f *fixture) startEngine() {
	t := f.t
	var eng *bonnie.Engine
	sink, err := intercept.New(intercept.Options{
		Log: f.store, Blobs: f.blobs, Logger: quiet(),
		Record: func(ctx context.Context, raw []byte, src string) (bonnie.Position, bool, error) {
			return eng.Record(ctx, raw, src)
		},
		AMQPPassword: func(u *url.URL) (string, error) { return "guest", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, err = bonnie.New(bonnie.Options{
		Store: f.store, Sinks: []bonnie.Sink{sink}, Logger: quiet(), Resolver: f.resolver,
		Bodies: memFetcher{f.blobs}, SinkBackoff: 10 * time.Millisecond, SinkMaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.eng, f.sink, f.cancel, f.done = eng, sink, cancel, make(chan error, 1)
	go func() { f.done <- eng.Run(ctx) }()
}

func (f *fixture) stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	<-f.done
	f.sink.Close()
	f.cancel = nil
}

// day is the day of the tests' events.
func at(hour, minute int) time.Time { return time.Date(2026, 11, 28, hour, minute, 0, 0, time.UTC) }

func envelope(from, to string) string {
	addr := func(a string) string {
		local, domain, _ := strings.Cut(a, "@")
		return fmt.Sprintf(`((NIL NIL "%s" "%s"))`, local, domain)
	}
	return fmt.Sprintf(`("Sat, 28 Nov 2026 10:00:00 +0000" "hi" %s %s %s %s NIL NIL NIL "<m@x>")`, addr(from), addr(from), addr(from), addr(to))
}

// ingest appends one notification and returns its position.
func (f *fixture) ingest(typ string, when time.Time, fields map[string]any) bonnie.Position {
	f.t.Helper()
	f.seq++
	m := map[string]any{"event": typ, "timestamp": when.Format("2006-01-02T15:04:05.000Z"), "service": "imap",
		"vnd.cmu.sessionId": fmt.Sprintf("s%d", f.seq)}
	for k, v := range fields {
		m[k] = v
	}
	raw, _ := json.Marshal(m)
	pos, _, err := f.eng.Ingest(context.Background(), raw, "test")
	if err != nil {
		f.t.Fatalf("ingest %s: %v", typ, err)
	}
	return pos
}

func (f *fixture) login(user string, when time.Time) bonnie.Position {
	return f.ingest("Login", when, map[string]any{"user": user, "clientIP": "192.0.2.1", "clientPort": 1234})
}

// newMessage delivers a message (with a body) into owner's INBOX (folder
// id owner-inbox), sent from from.
func (f *fixture) newMessage(owner, from string, when time.Time) bonnie.Position {
	f.uid++
	return f.ingest("MessageNew", when, map[string]any{
		"mailboxID":        "inbox-of-" + owner,
		"uri":              fmt.Sprintf("imap://h/user.%s;UIDVALIDITY=1/;UID=%d", owner, f.uid),
		"vnd.cmu.envelope": envelope(from, owner+"@example.org"), "messageSize": 100,
	})
}

func (f *fixture) flag(user string, when time.Time) bonnie.Position {
	return f.ingest("FlagsSet", when, map[string]any{"user": user, "mailboxID": "inbox-of-" + user,
		"uri": fmt.Sprintf("imap://h/user.%s;UIDVALIDITY=1", user), "uidset": "1", "flagNames": "\\Seen"})
}

// record appends one of Bonnie's own events.
func (f *fixture) record(raw []byte, err error) bonnie.Position {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
	pos, _, err := f.eng.Record(context.Background(), raw, "test")
	if err != nil {
		f.t.Fatal(err)
	}
	return pos
}

// caughtUp waits until the sink's cursor is at the log's head (and the
// head does not move: deliveries are records too).
func (f *fixture) caughtUp(timeout time.Duration) {
	f.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		head, _ := f.store.Head(ctx)
		cur, _ := f.store.Cursor(ctx, intercept.Name)
		if cur == head {
			time.Sleep(50 * time.Millisecond)
			if h2, _ := f.store.Head(ctx); h2 == head {
				if c2, _ := f.store.Cursor(ctx, intercept.Name); c2 == head {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	head, _ := f.store.Head(ctx)
	cur, _ := f.store.Cursor(ctx, intercept.Name)
	f.t.Fatalf("sink did not catch up in %v: cursor %d, head %d", timeout, cur, head)
}

// consumer reads a queue and counts what it got by message id.
type consumer struct {
	mu    sync.Mutex
	conn  *amqp091.Connection
	got   map[string]int
	msgs  []amqp091.Delivery
	times map[string]time.Time
}

func consume(t *testing.T, queue string) *consumer {
	t.Helper()
	conn, err := amqp091.Dial(brokerURL())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &consumer{conn: conn, got: map[string]int{}, times: map[string]time.Time{}}
	go func() {
		for d := range ds {
			c.mu.Lock()
			c.got[d.MessageId]++
			c.msgs = append(c.msgs, d)
			c.times[d.MessageId] = time.Now()
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			ch.QueueDelete(queue, false, false, false)
		}
		conn.Close()
	})
	return c
}

func (c *consumer) snapshot() (map[string]int, []amqp091.Delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := map[string]int{}
	for k, v := range c.got {
		got[k] = v
	}
	return got, append([]amqp091.Delivery(nil), c.msgs...)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy forwards TCP to RabbitMQ and can be cut (connections closed,
// new ones refused) and restored on the same port: a broker outage seen
// from the sink.
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, addr: ln.Addr().String(), target: target}
	p.serve(ln)
	t.Cleanup(p.down)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go func() { io.Copy(b, c); b.Close(); c.Close() }()
			go func() { io.Copy(c, b); b.Close(); c.Close() }()
		}
	}()
}

func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}
