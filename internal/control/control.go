// Package control is the local channel through which the bonnie command
// hands Bonnie's own events (a legal hold, an erasure, an interception, a
// reconciliation...) to a running bonnied: the SQLite log has one writer,
// and while bonnied ingests the command may not append itself.
//
// The socket lives in the data directory (Socket), is created mode 0600
// and only accepts peers with the daemon's own uid or root (SO_PEERCRED):
// whoever may write the data directory may already do anything to it.
//
// The protocol is one JSON notification per line; each is answered with
// "OK <position>" once durable, "DUP <position>" for one already in the
// log, or "NO <reason>".
package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Socket is the control socket's name inside a data directory.
const Socket = "control.sock"

// MaxRequest bounds one request line.
const MaxRequest = 1 << 20

// ErrNoDaemon means nothing listens on the control socket.
var ErrNoDaemon = errors.New("no daemon listens on the control socket")

// ErrRefused means the daemon refused the event; the error says why.
var ErrRefused = errors.New("refused by the daemon")

// Path returns the control socket of the data directory dir.
func Path(dir string) string { return filepath.Join(dir, Socket) }

// Handler appends one event and returns its position (dup: it was in the
// log already).
type Handler func(ctx context.Context, raw []byte) (pos uint64, dup bool, err error)

// Server serves the control socket.
type Server struct {
	ln   *net.UnixListener
	path string
	h    Handler
	log  *slog.Logger
	wg   sync.WaitGroup
}

// Listen creates the control socket at path (replacing a stale one) and
// serves it with h until Close.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another daemon listens on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The umask makes the socket 0600 from the start: no window in which
	// someone else could connect.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	s := &Server{ln: ln, path: path, h: h, log: log}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Close stops accepting, waits for the requests being answered and
// removes the socket.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.serve(c)
		}()
	}
}

func (s *Server) serve(c *net.UnixConn) {
	uid, err := peerUID(c)
	if err != nil || (uid != 0 && uid != os.Getuid()) {
		s.log.Warn("control socket: peer refused", "uid", uid, "err", err)
		fmt.Fprintf(c, "NO peer uid %d may not write this data directory\n", uid)
		return
	}
	r := bufio.NewReaderSize(c, 64<<10)
	for {
		line, err := readLine(r)
		if err != nil {
			if !errors.Is(err, errEOF) {
				fmt.Fprintf(c, "NO %s\n", oneLine(err.Error()))
			}
			return
		}
		// The request's context is not the connection's: an event whose
		// append started is finished even if the client goes away.
		pos, dup, err := s.h(context.Background(), line)
		switch {
		case err != nil:
			s.log.Info("control socket: refused", "uid", uid, "err", err)
			_, err = fmt.Fprintf(c, "NO %s\n", oneLine(err.Error()))
		case dup:
			_, err = fmt.Fprintf(c, "DUP %d\n", pos)
		default:
			s.log.Info("control socket: recorded", "uid", uid, "position", pos)
			_, err = fmt.Fprintf(c, "OK %d\n", pos)
		}
		if err != nil {
			return
		}
	}
}

var errEOF = errors.New("eof")

func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			if len(line) == 0 {
				return nil, errEOF
			}
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > MaxRequest {
			return nil, fmt.Errorf("request over %d bytes", MaxRequest)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var uc *unix.Ucred
	var uerr error
	if err := raw.Control(func(fd uintptr) {
		uc, uerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if uerr != nil {
		return -1, uerr
	}
	return int(uc.Uid), nil
}

// Send hands one event (a JSON notification) to the daemon listening on
// path and returns its position once the daemon made it durable.
func Send(ctx context.Context, path string, raw []byte) (pos uint64, dup bool, err error) {
	if strings.ContainsAny(string(raw), "\r\n") {
		return 0, false, errors.New("control: the event must be one line of JSON")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return 0, false, fmt.Errorf("%w (%s)", ErrNoDaemon, path)
		}
		return 0, false, fmt.Errorf("control: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if _, err := c.Write(append(append([]byte{}, raw...), '\n')); err != nil {
		return 0, false, fmt.Errorf("control: send: %w", err)
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			return 0, false, ctx.Err()
		}
		return 0, false, fmt.Errorf("control: no answer from the daemon: %w", err)
	}
	reply = strings.TrimRight(reply, "\n")
	word, rest, _ := strings.Cut(reply, " ")
	switch word {
	case "OK", "DUP":
		p, err := strconv.ParseUint(rest, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("control: bad answer %q", reply)
		}
		return p, word == "DUP", nil
	case "NO":
		return 0, false, fmt.Errorf("%w: %s", ErrRefused, rest)
	}
	return 0, false, fmt.Errorf("control: bad answer %q", reply)
}
