package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The senders use blocking sockets and plain system calls, as Cyrus does
// (imap/notify.c): a datagram sendto() that blocks while the listener's
// kernel queue is full, and for dlist a blocking connect() (which waits
// while the listen backlog is full), a write, and a read of the reply.
// Going through Go's netpoller instead would turn those waits into
// EAGAIN errors (connect) or hide them.

// errFatal marks a failure that is a setup problem (nothing listens at
// the path, wrong socket type, no permission), not a load condition: the
// run stops at once.
type errFatal struct{ err error }

func (e *errFatal) Error() string { return e.err.Error() }
func (e *errFatal) Unwrap() error { return e.err }

func classify(op, path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return &errFatal{fmt.Errorf("%s %s: no such socket (is bonnied running with this path?)", op, path)}
	case errors.Is(err, unix.ECONNREFUSED):
		return &errFatal{fmt.Errorf("%s %s: connection refused: nobody listens there (stale socket file?)", op, path)}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return &errFatal{fmt.Errorf("%s %s: permission denied (the socket belongs to Cyrus's user: run as root or as that user)", op, path)}
	case errors.Is(err, unix.EPROTOTYPE), errors.Is(err, unix.ENOTSOCK):
		return &errFatal{fmt.Errorf("%s %s: %v (a datagram socket is --datagram, a stream socket --dlist)", op, path, err)}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// timeval converts a timeout for SO_SNDTIMEO/SO_RCVTIMEO (0: none).
func timeval(d time.Duration) *unix.Timeval {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	return &tv
}

// dgramSender sends datagrams from one unbound socket, as one Cyrus
// process does.
type dgramSender struct {
	fd      int
	addr    *unix.SockaddrUnix
	path    string
	timeout time.Duration
	aborted atomic.Bool
}

// sendSlice is how long one blocking sendto waits before the sender
// checks whether it was aborted.
const sendSlice = 100 * time.Millisecond

func newDgramSender(path string, timeout time.Duration) (*dgramSender, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, timeval(sendSlice)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("setsockopt: %w", err)
	}
	return &dgramSender{fd: fd, addr: &unix.SockaddrUnix{Name: path}, path: path, timeout: timeout}, nil
}

// send sends one datagram. blocked is the time sendto() waited because
// the listener's queue was full (0 if it did not); total is the whole
// call.
func (s *dgramSender) send(b []byte) (blocked, total time.Duration, err error) {
	t0 := time.Now()
	err = unix.Sendto(s.fd, b, unix.MSG_DONTWAIT, s.addr)
	if err == nil {
		return 0, time.Since(t0), nil
	}
	if !errors.Is(err, unix.EAGAIN) {
		return 0, time.Since(t0), classify("sendto", s.path, err)
	}
	// The queue is full: this is where Cyrus's sendto() blocks. The
	// socket's SO_SNDTIMEO is a short slice so that abort is seen; the
	// wait is the same as one long blocking call.
	t1 := time.Now()
	for {
		err = unix.Sendto(s.fd, b, 0, s.addr)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.EAGAIN) || s.aborted.Load() || (s.timeout > 0 && time.Since(t1) >= s.timeout) {
			break
		}
	}
	now := time.Now()
	switch {
	case err == nil:
	case errors.Is(err, unix.EAGAIN) && s.aborted.Load():
		err = errAborted
	case errors.Is(err, unix.EAGAIN):
		err = errors.New("sendto: timed out: the listener's queue stayed full for --timeout")
	default:
		err = classify("sendto", s.path, err)
	}
	return now.Sub(t1), now.Sub(t0), err
}

// abort makes a blocked send give up within a slice.
func (s *dgramSender) abort() { s.aborted.Store(true) }

func (s *dgramSender) close() { unix.Close(s.fd) }

// dlistClient makes one connection per request, as Cyrus does. abort
// (from another goroutine) shuts down the connection in progress.
type dlistClient struct {
	addr    *unix.SockaddrUnix
	path    string
	timeout time.Duration
	buf     []byte

	mu      sync.Mutex
	fd      int // -1 when no request is in progress
	aborted bool
}

func newDListClient(path string, timeout time.Duration) *dlistClient {
	return &dlistClient{addr: &unix.SockaddrUnix{Name: path}, path: path, timeout: timeout, fd: -1, buf: make([]byte, 512)}
}

// errNotOK is a reply whose first atom is not OK.
type errNotOK struct{ line string }

func (e *errNotOK) Error() string { return "reply " + e.line }

// request connects, writes req, reads the one-line reply and closes.
func (c *dlistClient) request(req []byte) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	c.mu.Lock()
	if c.aborted {
		c.mu.Unlock()
		unix.Close(fd)
		return errAborted
	}
	c.fd = fd
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.fd = -1
		unix.Close(fd)
		c.mu.Unlock()
	}()
	if c.timeout > 0 {
		tv := timeval(c.timeout)
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, tv); err != nil {
			return fmt.Errorf("setsockopt: %w", err)
		}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, tv); err != nil {
			return fmt.Errorf("setsockopt: %w", err)
		}
	}
	for {
		err = unix.Connect(fd, c.addr)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case errors.Is(err, unix.EAGAIN):
		return errors.New("connect: timed out: the listen backlog stayed full for --timeout")
	case err != nil && !errors.Is(err, unix.EISCONN):
		return classify("connect", c.path, err)
	}
	for b := req; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return errors.New("write: timed out")
			}
			return c.abortErr(fmt.Errorf("write: %w", err))
		}
		b = b[n:]
	}
	got := c.buf[:0]
	for {
		if len(got) == cap(got) {
			return fmt.Errorf("reply: no end of line in %d bytes", len(got))
		}
		n, err := unix.Read(fd, got[len(got):cap(got)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return errTimeout
			}
			return c.abortErr(fmt.Errorf("read reply: %w", err))
		}
		if n == 0 {
			if len(got) == 0 {
				return c.abortErr(errors.New("connection closed without a reply"))
			}
			return c.abortErr(fmt.Errorf("connection closed mid-reply: %q", got))
		}
		got = got[:len(got)+n]
		if i := bytes.IndexByte(got, '\n'); i >= 0 {
			line := string(bytes.TrimRight(got[:i], "\r"))
			if atom, _, _ := strings.Cut(line, " "); atom == "OK" {
				return nil
			}
			return &errNotOK{line: line}
		}
	}
}

var (
	errAborted = errors.New("aborted: stopped before the reply came")
	errTimeout = errors.New("no reply within --timeout")
)

func (c *dlistClient) abortErr(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return errAborted
	}
	return err
}

// abort makes the request in progress, and any later one, fail at once.
func (c *dlistClient) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	if c.fd >= 0 {
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
}
