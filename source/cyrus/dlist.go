package cyrus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sys/unix"

	"github.com/bonnie-archive/bonnie/internal/dlist"
)

// DListSubscriber receives Cyrus's notifications on an AF_UNIX
// SOCK_STREAM socket (imapd.conf `notifysocket: dlist:PATH`), the
// synchronous transport: for each notification Cyrus connects, writes one
// dlist request ("NOTIFY %(...)") and waits, without a timeout, for a
// one-line reply whose first atom is OK.
//
// That wait is what makes this transport lossless: the request is handed
// to the Watermill subscriber byte for byte, and Cyrus gets "OK NIL" only
// when the message is Acked, i.e. when the handler has made the event
// durable. A Nack redelivers after a backoff while Cyrus's connection is
// held (back-pressure on that IMAP session); after MaxRedeliveries Cyrus
// gets a NO line (it only logs it) and the request goes to OnGiveUp. The
// price is latency: every reply delay is added to the IMAP command that
// caused the event.
//
// Requests that are not dlist (garbage), larger than MaxRequestSize, cut
// short by the peer or silent for RequestTimeout are answered NO (when the
// peer is still there) and given to OnGiveUp with the bytes read. A
// connection whose peer (SO_PEERCRED) is not an allowed uid is answered NO
// and its request goes to OnReject.
type DListSubscriber struct {
	cfg  *config
	hub  *hub
	ln   *net.UnixListener
	file *socketFile
	path string

	slots     chan struct{} // MaxConnections
	stopping  chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// NewDListSubscriber creates the stream socket at opts.Path (see
// Options.SocketUser for its owner and mode), or takes the listening
// socket from opts.Activated, and starts accepting. A stale socket file at
// the path is replaced; a live one gives ErrInUse; a file that is not a
// socket gives ErrNotSocket.
func NewDListSubscriber(opts Options) (*DListSubscriber, error) {
	cfg, err := opts.resolve(DefaultDListInFlight)
	if err != nil {
		return nil, err
	}
	var f *os.File
	var sf *socketFile
	if cfg.Activated != nil {
		f, err = cfg.Activated.claim(cfg.ActivationName, cfg.Path, unix.SOCK_STREAM)
		if err == nil {
			cfg.Logger.Info("using inherited socket for Cyrus notifications", "name", f.Name(), "path", cfg.Path, "type", sockTypeName(unix.SOCK_STREAM))
		}
	} else {
		f, sf, err = listenUnix(cfg, cfg.Path, unix.SOCK_STREAM)
	}
	if err != nil {
		return nil, err
	}
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		sf.remove(cfg.Logger)
		return nil, fmt.Errorf("cyrus: dlist socket: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		sf.remove(cfg.Logger)
		return nil, fmt.Errorf("cyrus: dlist socket is a %T", l)
	}
	return newDList(cfg, ul, sf), nil
}

// NewDListSubscriberFromListener uses a listening stream socket the
// caller opened. The subscriber closes l on Close and never removes its
// file (the file belongs to whoever created it; note that a listener made
// by net.ListenUnix removes its own file when closed unless
// SetUnlinkOnClose(false) was called).
func NewDListSubscriberFromListener(l *net.UnixListener, opts Options) (*DListSubscriber, error) {
	cfg, err := opts.resolve(DefaultDListInFlight)
	if err != nil {
		return nil, err
	}
	return newDList(cfg, l, nil), nil
}

func newDList(cfg *config, l *net.UnixListener, sf *socketFile) *DListSubscriber {
	s := &DListSubscriber{
		cfg:      cfg,
		hub:      newHub(cfg),
		ln:       l,
		file:     sf,
		slots:    make(chan struct{}, cfg.MaxConnections),
		stopping: make(chan struct{}),
	}
	if a, ok := l.Addr().(*net.UnixAddr); ok && a != nil {
		s.path = a.Name
	}
	s.hub.intake.Add(1)
	go s.acceptLoop()
	return s
}

// Path returns the path the socket is bound to.
func (s *DListSubscriber) Path() string { return s.path }

// Subscribe returns the channel requests are delivered on. topic is
// ignored. Only one subscription may run at a time (ErrSubscribed); when
// ctx ends the channel is closed and pending requests wait, with their
// connections held, for the next Subscribe. Ack a message only when its
// event is durable: the Ack is what tells Cyrus OK.
func (s *DListSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.hub.subscribe(ctx)
}

// Close stops accepting (connections still in the listen backlog of an
// inherited socket wait there for the next process; those of a socket this
// subscriber created are reset, and Cyrus logs them as failed), keeps
// delivering the
// requests already read while a subscription runs, waits for their
// acknowledgements up to Options.DrainTimeout, answers every pending
// connection (OK for what was acked, NO for the rest, which goes to
// OnGiveUp), closes the subscription's channel and removes the socket file
// it created. Safe to call more than once.
func (s *DListSubscriber) Close() error {
	s.closeOnce.Do(func() {
		s.hub.close(func() {
			close(s.stopping)
			s.closeErr = s.ln.Close()
		})
		s.file.remove(s.cfg.Logger)
	})
	return s.closeErr
}

func (s *DListSubscriber) acceptLoop() {
	defer s.hub.intake.Done()
	for {
		// Take a slot first: beyond MaxConnections, Cyrus waits in the
		// kernel's backlog instead of in our memory.
		select {
		case s.slots <- struct{}{}:
		case <-s.stopping:
			return
		}
		c, err := s.ln.AcceptUnix()
		if err != nil {
			<-s.slots
			select {
			case <-s.stopping:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.cfg.Logger.Error("dlist accept failed", "err", err)
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: no hot loop
			continue
		}
		s.hub.intake.Add(1)
		go s.serve(c)
	}
}

// serve reads one request from c and queues it; the reply is written when
// the item finishes (acked or given up).
func (s *DListSubscriber) serve(c *net.UnixConn) {
	queued := false
	defer func() {
		if !queued {
			c.Close()
			<-s.slots
		}
		s.hub.intake.Done()
	}()
	received := time.Now()
	cr, err := peerCred(c)
	if err != nil {
		s.cfg.Logger.Warn("dlist peer credentials unavailable", "err", err)
	}

	// Close's drain timeout interrupts a read that is still going on.
	stop := context.AfterFunc(s.hub.abortCtx, func() { _ = c.SetReadDeadline(time.Now()) })
	_ = c.SetReadDeadline(received.Add(s.cfg.RequestTimeout))
	raw, req, rerr := dlist.NewReader(bufio.NewReaderSize(c, 4096), s.cfg.MaxRequestSize).ReadRequest()
	stop()
	_ = c.SetReadDeadline(time.Time{})

	desc := fmt.Sprintf("dlist request of %d bytes from %s", len(raw), cr)
	if rerr == nil && !strings.EqualFold(req.Name, "NOTIFY") {
		rerr = fmt.Errorf("%w: command %q is not NOTIFY", ErrMalformed, req.Name)
	}
	if rerr != nil {
		if errors.Is(rerr, io.EOF) && len(raw) == 0 {
			// Connected and closed without a byte (a liveness probe such
			// as clearStale's): nothing to keep.
			s.cfg.Logger.Debug("dlist connection closed without a request", "peer", cr.String())
			return
		}
		var why string
		switch {
		case errors.Is(rerr, dlist.ErrTooLarge):
			why = fmt.Sprintf("%v: larger than MaxRequestSize %d", ErrTooLarge, s.cfg.MaxRequestSize)
		case errors.Is(rerr, io.ErrUnexpectedEOF):
			why = "connection closed mid-request"
		case errors.Is(rerr, os.ErrDeadlineExceeded):
			why = "request not complete within RequestTimeout or before Close"
		case errors.Is(rerr, dlist.ErrMalformed):
			why = fmt.Sprintf("%v: %v", ErrMalformed, rerr)
		default:
			why = rerr.Error()
		}
		reason := fmt.Sprintf("%s: %s", desc, why)
		if !cr.ok || !s.cfg.allowed[cr.uid] {
			// Garbage from a stranger is still a stranger's.
			s.hub.reject(raw, reason)
		} else {
			s.hub.giveUp(&item{uuid: "-", raw: raw}, reason)
		}
		if err := writeReply(c, dlist.Reply(false, why)); err != nil {
			s.cfg.Logger.Debug("dlist NO reply not written", "err", err)
		}
		return
	}

	switch {
	case !cr.ok:
		s.hub.reject(raw, desc+": no peer credentials (SO_PEERCRED)")
		_ = writeReply(c, dlist.Reply(false, "sender unknown"))
		return
	case !s.cfg.allowed[cr.uid]:
		s.hub.reject(raw, fmt.Sprintf("%s: sender uid %d is not an allowed sender", desc, cr.uid))
		_ = writeReply(c, dlist.Reply(false, "sender not allowed"))
		return
	}

	it := newItem(raw, FramingDList, s.cfg.Source, received)
	cr.setMeta(it)
	it.desc = desc
	it.finish = func(ok bool, reason string) {
		defer func() {
			c.Close()
			<-s.slots
		}()
		text := ""
		if !ok {
			text = reason
		}
		if err := writeReply(c, dlist.Reply(ok, text)); err != nil {
			// Cyrus went away (imapd killed): it will not see the answer,
			// and there is nothing to undo.
			s.cfg.Logger.Warn("dlist reply not delivered to Cyrus", "ok", ok, "uuid", it.uuid, "err", err)
		}
	}
	queued = true
	s.hub.enqueue(it)
}
