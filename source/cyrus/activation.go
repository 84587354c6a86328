package cyrus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// Activated holds the sockets a service manager passed to this process
// (systemd socket activation: LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES).
//
// Why: a socket this process creates dies with it, and while the daemon
// restarts Cyrus finds nobody listening and loses events (datagram) or
// fails the connection (dlist). A socket held by systemd (a .socket unit)
// or by `systemd-socket-activate` outlives the daemon: datagrams wait in
// the kernel queue and dlist connections in the listen backlog, and the
// next daemon picks them up. Such a socket is never removed by Close.
//
// Create it once per process with Activation and give it to every
// subscriber in Options.Activated; each subscriber claims the socket that
// fits it, so one daemon can serve a datagram and a dlist socket.
type Activated struct {
	mu    sync.Mutex
	files []*os.File // nil once claimed
}

// Activation takes the sockets passed by the service manager and unsets
// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, so that child processes do
// not believe the sockets are theirs. It returns an empty set, not an
// error, when the process was not socket-activated (a subscriber given an
// empty set then fails with ErrActivation). Call it once: a second call
// finds the environment already unset.
func Activation() *Activated {
	return &Activated{files: activation.Files(true)}
}

// Len returns how many inherited sockets are not claimed yet.
func (a *Activated) Len() int {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, f := range a.files {
		if f != nil {
			n++
		}
	}
	return n
}

// Close closes the inherited sockets no subscriber claimed. The service
// manager keeps its own copies.
func (a *Activated) Close() error {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for i, f := range a.files {
		if f != nil {
			errs = append(errs, f.Close())
			a.files[i] = nil
		}
	}
	return errors.Join(errs...)
}

// claim finds, checks and takes the socket for a subscriber: an AF_UNIX
// socket of type typ (listening, for streams), named name when name is
// set, bound to path when path is set.
func (a *Activated) claim(name, path string, typ int) (*os.File, error) {
	if a == nil {
		return nil, fmt.Errorf("%w: no activation", ErrActivation)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var problems []error
	found := -1
	for i, f := range a.files {
		if f == nil {
			continue
		}
		if name != "" && f.Name() != name {
			continue
		}
		bound, err := checkSocket(f, typ)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", f.Name(), err))
			continue
		}
		if path != "" && filepath.Clean(bound) != filepath.Clean(path) {
			problems = append(problems, fmt.Errorf("%s: bound to %q, not %q", f.Name(), bound, path))
			continue
		}
		if found >= 0 {
			return nil, fmt.Errorf("%w: more than one inherited %s socket fits; set ActivationName or Path",
				ErrActivation, sockTypeName(typ))
		}
		found = i
	}
	if found < 0 {
		problems = append([]error{fmt.Errorf("%w: no inherited %s socket (name %q, path %q) among %d",
			ErrActivation, sockTypeName(typ), name, path, len(a.files))}, problems...)
		return nil, errors.Join(problems...)
	}
	f := a.files[found]
	a.files[found] = nil
	return f, nil
}

// checkSocket verifies an inherited descriptor and returns the path it is
// bound to.
func checkSocket(f *os.File, typ int) (string, error) {
	fd := int(f.Fd())
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return "", fmt.Errorf("not a socket: %w", err)
	}
	if domain != unix.AF_UNIX {
		return "", fmt.Errorf("socket domain %d, not AF_UNIX", domain)
	}
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return "", err
	}
	if t != typ {
		return "", fmt.Errorf("socket type %s, want %s", sockTypeName(t), sockTypeName(typ))
	}
	if typ == unix.SOCK_STREAM {
		acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			return "", err
		}
		if acc == 0 {
			return "", errors.New("stream socket is not listening")
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return "", err
	}
	su, ok := sa.(*unix.SockaddrUnix)
	if !ok {
		return "", fmt.Errorf("unexpected address %T", sa)
	}
	return su.Name, nil
}
