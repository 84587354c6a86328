package cyrus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sys/unix"
)

// DatagramSubscriber receives Cyrus's notifications on an AF_UNIX
// SOCK_DGRAM socket (imapd.conf `notifysocket: PATH`, the default
// transport) and hands each one, byte for byte, to a Watermill subscriber.
//
// Cyrus sends one datagram per notification and does not wait for any
// answer, so an acknowledgement cannot reach it; what protects events is
// that the kernel's queue is small (about 10 datagrams) and Cyrus's
// sendto blocks when it is full. A dedicated goroutine therefore does
// nothing but read datagrams into a bounded queue (Options.QueueSize);
// when that queue is full it stops reading, Cyrus blocks, and nothing is
// lost. A Nack redelivers after a backoff; after MaxRedeliveries the
// datagram goes to OnGiveUp.
//
// Senders are checked with SCM_CREDENTIALS: a datagram whose sender uid is
// not allowed, or that carries no credentials, goes to OnReject and is
// never delivered.
type DatagramSubscriber struct {
	cfg  *config
	hub  *hub
	conn *net.UnixConn
	file *socketFile // the socket file we created; nil when inherited
	path string

	rejects    chan rejected
	rejectDone chan struct{}
	stopping   chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

type rejected struct {
	raw    []byte
	reason string
}

// NewDatagramSubscriber creates the datagram socket at opts.Path (see
// Options.SocketUser for its owner and mode), or takes it from
// opts.Activated, and starts reading. A stale socket file at the path is
// replaced; a live one gives ErrInUse; a file that is not a socket gives
// ErrNotSocket.
func NewDatagramSubscriber(opts Options) (*DatagramSubscriber, error) {
	cfg, err := opts.resolve(1)
	if err != nil {
		return nil, err
	}
	var f *os.File
	var sf *socketFile
	if cfg.Activated != nil {
		f, err = cfg.Activated.claim(cfg.ActivationName, cfg.Path, unix.SOCK_DGRAM)
		if err == nil {
			cfg.Logger.Info("using inherited socket for Cyrus notifications", "name", f.Name(), "path", cfg.Path, "type", sockTypeName(unix.SOCK_DGRAM))
		}
	} else {
		f, sf, err = listenUnix(cfg, cfg.Path, unix.SOCK_DGRAM)
	}
	if err != nil {
		return nil, err
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		sf.remove(cfg.Logger)
		return nil, fmt.Errorf("cyrus: datagram socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		sf.remove(cfg.Logger)
		return nil, fmt.Errorf("cyrus: datagram socket is a %T", c)
	}
	s, err := newDatagram(cfg, uc, sf)
	if err != nil {
		sf.remove(cfg.Logger)
	}
	return s, err
}

// NewDatagramSubscriberFromConn uses a datagram socket the caller opened
// (a holder process's, a test's). The subscriber closes conn on Close and
// never removes its file.
func NewDatagramSubscriberFromConn(conn *net.UnixConn, opts Options) (*DatagramSubscriber, error) {
	cfg, err := opts.resolve(1)
	if err != nil {
		return nil, err
	}
	return newDatagram(cfg, conn, nil)
}

func newDatagram(cfg *config, conn *net.UnixConn, sf *socketFile) (*DatagramSubscriber, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cyrus: datagram socket: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var t int
		if t, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); serr == nil && t != unix.SOCK_DGRAM {
			serr = fmt.Errorf("socket type %s, want dgram", sockTypeName(t))
			return
		}
		// Ask the kernel for the sender's credentials with every datagram.
		// Datagrams queued before this (an inherited socket without
		// PassCredentials=yes) come without them: pid 0 and the overflow
		// uid, which are rejected.
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("cyrus: datagram socket: %w", errors.Join(err, serr))
	}
	s := &DatagramSubscriber{
		cfg:        cfg,
		hub:        newHub(cfg),
		conn:       conn,
		file:       sf,
		rejects:    make(chan rejected, 256),
		rejectDone: make(chan struct{}),
		stopping:   make(chan struct{}),
	}
	if a, ok := conn.LocalAddr().(*net.UnixAddr); ok && a != nil {
		s.path = a.Name
	}
	go s.rejectLoop()
	s.hub.intake.Add(1)
	go s.readLoop(rc)
	return s, nil
}

// Path returns the path the socket is bound to.
func (s *DatagramSubscriber) Path() string { return s.path }

// Subscribe returns the channel notifications are delivered on. topic is
// ignored: the socket is the topic. Only one subscription may run at a
// time (ErrSubscribed); when ctx ends the channel is closed, and what was
// not delivered waits for the next Subscribe. Each message must be Acked
// (the event is durable) or Nacked (redelivered after a backoff).
func (s *DatagramSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	return s.hub.subscribe(ctx)
}

// Close stops reading (datagrams not yet read stay in the kernel queue;
// with an inherited socket the next process reads them), keeps
// delivering what was read while a subscription runs, waits for the
// acknowledgements up to Options.DrainTimeout, gives up what is left
// (OnGiveUp), closes the subscription's channel and removes the socket
// file it created. Safe to call more than once.
func (s *DatagramSubscriber) Close() error {
	s.closeOnce.Do(func() {
		s.hub.close(func() {
			close(s.stopping)
			s.closeErr = s.conn.Close()
		})
		close(s.rejects)
		<-s.rejectDone
		s.file.remove(s.cfg.Logger)
	})
	return s.closeErr
}

func (s *DatagramSubscriber) rejectLoop() {
	defer close(s.rejectDone)
	for r := range s.rejects {
		s.hub.reject(r.raw, r.reason)
	}
}

// readLoop reads datagrams and queues them. It does nothing slow: the
// kernel holds only about 10 datagrams before Cyrus blocks.
func (s *DatagramSubscriber) readLoop(rc interface {
	Read(func(uintptr) bool) error
}) {
	defer s.hub.intake.Done()
	buf := make([]byte, s.cfg.MaxDatagramSize)
	// Room for SCM_CREDENTIALS and for descriptors a misbehaving sender
	// might pass (they are closed).
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*64))
	for {
		var n, oobn, flags int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			// MSG_TRUNC makes n the datagram's real size even when it
			// does not fit the buffer.
			n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_TRUNC|unix.MSG_CMSG_CLOEXEC)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			select {
			case <-s.stopping:
			default:
				s.cfg.Logger.Error("datagram socket read failed; stopped reading", "err", err)
			}
			return
		}
		if rerr != nil {
			if rerr == unix.EINTR {
				continue
			}
			select {
			case <-s.stopping:
				return
			default:
			}
			s.cfg.Logger.Error("datagram receive failed", "err", rerr)
			time.Sleep(10 * time.Millisecond) // no hot loop on a persistent error
			continue
		}
		received := time.Now()
		kept := min(n, len(buf))
		raw := make([]byte, kept)
		copy(raw, buf[:kept])

		cr, fds := parseOOB(oob[:oobn])
		if fds > 0 {
			s.cfg.Logger.Warn("datagram carried file descriptors; closed them", "count", fds, "sender", cr.String())
		}
		it := newItem(raw, FramingDatagram, s.cfg.Source, received)
		it.meta[MetaSize] = strconv.Itoa(n)
		if n > kept {
			it.meta[MetaTruncated] = "true"
		}
		cr.setMeta(it)
		it.desc = fmt.Sprintf("datagram of %d bytes from %s", n, cr)

		var why string
		switch {
		case flags&unix.MSG_CTRUNC != 0 && !cr.ok:
			why = "control data truncated: no sender credentials"
		case !cr.ok:
			why = "no sender credentials (SCM_CREDENTIALS)"
		case cr.pid == 0:
			// What the kernel reports for a datagram sent while the socket
			// did not ask for credentials (or from a process it cannot
			// name): uid and gid are then the overflow ids, not the sender's.
			why = fmt.Sprintf("no sender credentials recorded (pid 0, uid %d): the socket lacked SO_PASSCRED when it was sent (systemd: PassCredentials=yes)", cr.uid)
		case !s.cfg.allowed[cr.uid]:
			why = fmt.Sprintf("sender uid %d is not an allowed sender", cr.uid)
		}
		if why != "" {
			r := rejected{raw: raw, reason: fmt.Sprintf("%s: %s", it.desc, why)}
			select {
			case s.rejects <- r:
			case <-s.hub.abort:
				s.hub.reject(r.raw, r.reason)
			}
			continue
		}
		if n > kept {
			s.cfg.Logger.Warn("datagram truncated; delivering what was kept",
				"size", n, "kept", kept, "sender", cr.String())
		}
		s.hub.enqueue(it)
	}
}

// parseOOB extracts the sender's credentials from a datagram's control
// data, closing any descriptors it carried, and returns how many there
// were.
func parseOOB(oob []byte) (cred, int) {
	var c cred
	nfds := 0
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return c, 0
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_CREDENTIALS:
			if uc, err := unix.ParseUnixCredentials(m); err == nil {
				c = cred{ok: true, pid: uint32(uc.Pid), uid: uc.Uid, gid: uc.Gid}
			}
		case unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(m); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
				nfds += len(fds)
			}
		}
	}
	return c, nfds
}
