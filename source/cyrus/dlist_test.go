package cyrus

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func newDListT(t *testing.T, opts Options) *DListSubscriber {
	t.Helper()
	s, err := NewDListSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dlistClient is a Cyrus stand-in: it connects, writes a request and
// reads the one-line reply in the background.
type dlistClient struct {
	conn  *net.UnixConn
	reply chan string
}

func dialDList(t *testing.T, path string, req []byte) *dlistClient {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	cl := &dlistClient{conn: c, reply: make(chan string, 1)}
	go func() {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && line == "" {
			line = "ERROR " + err.Error()
		}
		cl.reply <- line
	}()
	return cl
}

func (c *dlistClient) wait(t *testing.T) string {
	t.Helper()
	select {
	case r := <-c.reply:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
		return ""
	}
}

func TestDListOKOnlyAfterAck(t *testing.T) {
	opts, giveUps, rejects := testOptions(t, "notify-dlist")
	s := newDListT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	for _, name := range []string{"dlist-001-Login.bin", "dlist-006-MessageAppend.bin", "dlist-007-FlagsSet.bin"} {
		t.Run(name, func(t *testing.T) {
			req := readFile(t, name)
			cl := dialDList(t, opts.Path, req)
			var acked atomic.Bool
			// The reply, whenever it comes, must find the message acked.
			got := make(chan bool, 1)
			go func() {
				r := cl.wait(t)
				got <- acked.Load() && r == "OK NIL\r\n"
				if r != "OK NIL\r\n" {
					t.Errorf("reply %q", r)
				}
			}()

			m := recv(t, ch)
			if !bytes.Equal(m.Payload, req) {
				t.Fatalf("payload differs:\n got %q\nwant %q", m.Payload, req)
			}
			checkMeta(t, m, FramingDList, os.Getuid(), os.Getpid(), 1)
			// Hold the message: Cyrus must hear nothing meanwhile.
			time.Sleep(100 * time.Millisecond)
			select {
			case ok := <-got:
				t.Fatalf("replied before Ack (ok=%v)", ok)
			default:
			}
			acked.Store(true)
			m.Ack()
			if !<-got {
				t.Fatal("reply not OK NIL after Ack")
			}
		})
	}
	giveUps.none(t, "OnGiveUp")
	rejects.none(t, "OnReject")
}

func TestDListNackThenAck(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify-dlist")
	s := newDListT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	req := readFile(t, "dlist-001-Login.bin")
	cl := dialDList(t, opts.Path, req)
	first := recv(t, ch)
	first.Nack()
	second := recv(t, ch)
	if second.UUID != first.UUID || !bytes.Equal(second.Payload, req) {
		t.Fatal("redelivery differs")
	}
	checkMeta(t, second, FramingDList, os.Getuid(), os.Getpid(), 2)
	second.Ack()
	if r := cl.wait(t); r != "OK NIL\r\n" {
		t.Fatalf("reply %q", r)
	}
	giveUps.none(t, "OnGiveUp")
}

func TestDListNackBeyondMaxGivesNO(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify-dlist")
	opts.MaxRedeliveries = 1
	s := newDListT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	req := readFile(t, "dlist-006-MessageAppend.bin")
	cl := dialDList(t, opts.Path, req)
	recv(t, ch).Nack()
	recv(t, ch).Nack()
	if r := cl.wait(t); !strings.HasPrefix(r, "NO ") || !strings.HasSuffix(r, "\r\n") {
		t.Fatalf("reply %q", r)
	}
	g := giveUps.next(t)
	if !bytes.Equal(g.raw, req) || !strings.Contains(g.reason, "nacked 2 times") {
		t.Errorf("gave up %d bytes: %s", len(g.raw), g.reason)
	}
}

// Bad requests are answered NO and given up with the bytes read; none
// reaches the handler.
func TestDListBadRequests(t *testing.T) {
	login := readFile(t, "dlist-001-Login.bin")
	tests := []struct {
		name      string
		send      []byte
		closeSend bool // half-close after sending: the peer is gone mid-request
		maxSize   int
		wantRaw   []byte
		reason    string
	}{
		{name: "garbage", send: []byte("\x00\x01\x02 garbage\r\n"), wantRaw: []byte("\x00\x01\x02 garbage\r\n"), reason: "malformed"},
		{name: "unbalanced", send: []byte("NOTIFY %(METHOD log\r\n"), reason: "malformed"},
		{name: "oversized", send: login, maxSize: 100, reason: "too large"},
		{name: "oversized literal", send: []byte("NOTIFY %(MESSAGE {999999+}\r\nxx"), maxSize: 1000, reason: "too large"},
		{name: "closed mid-request", send: login[:300], closeSend: true, wantRaw: login[:300], reason: "closed mid-request"},
		{name: "closed mid-literal", send: login[:len(login)-40], closeSend: true, wantRaw: login[:len(login)-40], reason: "closed mid-request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts, giveUps, rejects := testOptions(t, "notify-dlist")
			opts.MaxRequestSize = tc.maxSize
			s := newDListT(t, opts)
			ch, _ := s.Subscribe(t.Context(), "")
			cl := dialDList(t, opts.Path, tc.send)
			if tc.closeSend {
				cl.conn.CloseWrite()
			}
			if r := cl.wait(t); !strings.HasPrefix(r, "NO ") {
				t.Errorf("reply %q", r)
			}
			g := giveUps.next(t)
			if !strings.Contains(g.reason, tc.reason) {
				t.Errorf("reason %q, want it to mention %q", g.reason, tc.reason)
			}
			switch {
			case tc.wantRaw != nil:
				if !bytes.Equal(g.raw, tc.wantRaw) {
					t.Errorf("raw %q, want %q", g.raw, tc.wantRaw)
				}
			default:
				if len(g.raw) == 0 || !bytes.HasPrefix(tc.send, g.raw) {
					t.Errorf("raw %q is not a prefix of what was sent", g.raw)
				}
				if tc.maxSize > 0 && len(g.raw) > tc.maxSize {
					t.Errorf("kept %d bytes, over the limit %d", len(g.raw), tc.maxSize)
				}
			}
			rejects.none(t, "OnReject")
			// Nothing reached the handler: the next message is a good one.
			small := []byte("NOTIFY %(METHOD log CLASS EVENT MESSAGE \"{}\")\r\n")
			good := dialDList(t, opts.Path, small)
			m := recv(t, ch)
			if !bytes.Equal(m.Payload, small) {
				t.Fatalf("handler got %q", m.Payload)
			}
			m.Ack()
			if r := good.wait(t); r != "OK NIL\r\n" {
				t.Errorf("good reply %q", r)
			}
		})
	}
}

// A connection that opens and closes without a byte (a liveness probe)
// is nothing to keep.
func TestDListEmptyConnectionIgnored(t *testing.T) {
	opts, giveUps, rejects := testOptions(t, "notify-dlist")
	s := newDListT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	c, err := net.Dial("unix", opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	login := readFile(t, "dlist-001-Login.bin")
	cl := dialDList(t, opts.Path, login)
	m := recv(t, ch)
	m.Ack()
	if r := cl.wait(t); r != "OK NIL\r\n" {
		t.Errorf("reply %q", r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	giveUps.none(t, "OnGiveUp")
	rejects.none(t, "OnReject")
}

func TestDListRequestTimeout(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify-dlist")
	opts.RequestTimeout = 100 * time.Millisecond
	s := newDListT(t, opts)
	s.Subscribe(t.Context(), "")
	cl := dialDList(t, opts.Path, []byte("NOTIFY %(METH"))
	if r := cl.wait(t); !strings.HasPrefix(r, "NO ") {
		t.Errorf("reply %q", r)
	}
	if g := giveUps.next(t); string(g.raw) != "NOTIFY %(METH" || !strings.Contains(g.reason, "RequestTimeout") {
		t.Errorf("gave up %q: %s", g.raw, g.reason)
	}
}

// Close answers a connection whose message is not acked in time with NO,
// and gives the request up.
func TestDListCloseAnswersPending(t *testing.T) {
	opts, giveUps, _ := testOptions(t, "notify-dlist")
	opts.DrainTimeout = 100 * time.Millisecond
	s := newDListT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	req := readFile(t, "dlist-001-Login.bin")
	cl := dialDList(t, opts.Path, req)
	m := recv(t, ch)
	go func() {
		for range ch {
		}
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r := cl.wait(t); !strings.HasPrefix(r, "NO ") {
		t.Errorf("reply %q", r)
	}
	if g := giveUps.next(t); !bytes.Equal(g.raw, req) {
		t.Errorf("gave up %q", g.raw)
	}
	m.Ack()
	if _, err := os.Lstat(opts.Path); !os.IsNotExist(err) {
		t.Errorf("socket file left: %v", err)
	}
}

// Several Cyrus processes at once: each waits for its own reply, and they
// are delivered concurrently (MaxInFlight).
func TestDListConcurrentConnections(t *testing.T) {
	const n = 20
	opts, _, _ := testOptions(t, "notify-dlist")
	s := newDListT(t, opts)
	ch, _ := s.Subscribe(t.Context(), "")
	req := readFile(t, "dlist-007-FlagsSet.bin")
	clients := make([]*dlistClient, n)
	for i := range clients {
		clients[i] = dialDList(t, opts.Path, req)
	}
	// All n are handed out before any is acked.
	held := make([]interface{ Ack() bool }, 0, n)
	for range n {
		held = append(held, recv(t, ch))
	}
	for _, m := range held {
		m.Ack()
	}
	for _, c := range clients {
		if r := c.wait(t); r != "OK NIL\r\n" {
			t.Errorf("reply %q", r)
		}
	}
}
