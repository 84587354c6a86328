package cyrus

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxSunPath is the longest socket path Linux accepts (sun_path is 108
// bytes with the terminating NUL).
const maxSunPath = 107

// socketFile remembers the socket file this process created, so that
// Close removes that file and not one another process put there since.
type socketFile struct {
	path     string
	dev, ino uint64
}

// remove deletes the socket file if it is still the one we created.
func (f *socketFile) remove(log *slog.Logger) {
	if f == nil {
		return
	}
	var st unix.Stat_t
	if err := unix.Lstat(f.path, &st); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			log.Warn("socket file not removed", "path", f.path, "err", err)
		}
		return
	}
	if uint64(st.Dev) != f.dev || st.Ino != f.ino {
		log.Warn("socket file replaced by someone else; left in place", "path", f.path)
		return
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("socket file not removed", "path", f.path, "err", err)
	}
}

// owner is who the socket file is given to.
type owner struct {
	uid, gid int // -1: leave unchanged
	mode     fs.FileMode
	userUID  int // SocketUser's uid, for the directory check
	userGIDs map[int]bool
	userName string
}

// socketOwner works out the socket file's owner, group and mode from
// Options, per the rules documented on Options.SocketUser.
func (c *config) socketOwner() (*owner, error) {
	u, err := user.Lookup(c.SocketUser)
	if err != nil {
		return nil, fmt.Errorf("cyrus: socket user %q: %w", c.SocketUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	pgid, _ := strconv.Atoi(u.Gid)
	o := &owner{uid: -1, gid: -1, mode: c.SocketMode.Perm(), userUID: uid, userName: u.Username,
		userGIDs: map[int]bool{pgid: true}}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.Atoi(g); err == nil {
				o.userGIDs[n] = true
			}
		}
	}
	gid := -1
	if c.SocketGroup != "" {
		g, err := user.LookupGroup(c.SocketGroup)
		if err != nil {
			return nil, fmt.Errorf("cyrus: socket group %q: %w", c.SocketGroup, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	defaultMode := fs.FileMode(0o600)
	if gid >= 0 {
		defaultMode = 0o660
	}
	switch euid := os.Geteuid(); {
	case euid == 0:
		o.uid = uid
		o.gid = pgid
		if gid >= 0 {
			o.gid = gid
		}
	case euid == uid:
		o.gid = gid // -1 when no group: ours already
	default:
		// We cannot give the file away: share it through a group.
		o.gid = gid
		if o.gid < 0 {
			o.gid = pgid
		}
		defaultMode = 0o660
	}
	if o.mode == 0 {
		o.mode = defaultMode
	}
	return o, nil
}

// listenUnix creates a socket of type typ (unix.SOCK_DGRAM or
// unix.SOCK_STREAM) at path with the owner and mode of cfg, replacing a
// stale socket file but never a live one or a non-socket file.
func listenUnix(cfg *config, path string, typ int) (*os.File, *socketFile, error) {
	if path == "" {
		return nil, nil, errors.New("cyrus: Options.Path is empty")
	}
	if len(path) > maxSunPath {
		return nil, nil, fmt.Errorf("cyrus: socket path %q is %d bytes, the limit is %d", path, len(path), maxSunPath)
	}
	own, err := cfg.socketOwner()
	if err != nil {
		return nil, nil, err
	}
	if err := clearStale(cfg.Logger, path, typ); err != nil {
		return nil, nil, err
	}

	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("cyrus: socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	fail := func(err error) (*os.File, *socketFile, error) {
		f.Close()
		return nil, nil, err
	}
	// On Linux the file bind creates takes the socket inode's mode (less
	// the umask): setting it first means nobody else can connect in the
	// window before the chmod/chown below.
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return fail(fmt.Errorf("cyrus: fchmod socket: %w", err))
	}
	if typ == unix.SOCK_DGRAM {
		// Before bind: the kernel records a sender's credentials only if
		// the receiving socket asks for them when the datagram is sent.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			return fail(fmt.Errorf("cyrus: SO_PASSCRED: %w", err))
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return fail(fmt.Errorf("cyrus: bind %s: %w (%w)", path, ErrInUse, err))
		}
		return fail(fmt.Errorf("cyrus: bind %s: %w", path, err))
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fail(fmt.Errorf("cyrus: stat %s: %w", path, err))
	}
	sf := &socketFile{path: path, dev: uint64(st.Dev), ino: st.Ino}
	failRemove := func(err error) (*os.File, *socketFile, error) {
		sf.remove(cfg.Logger)
		return fail(err)
	}
	if own.uid >= 0 || own.gid >= 0 {
		if err := os.Lchown(path, own.uid, own.gid); err != nil {
			hint := ""
			if own.uid < 0 {
				hint = fmt.Sprintf(" (not running as root: this process must be a member of group %d, or set Options.SocketGroup to a group Cyrus's user %s and this process share)", own.gid, own.userName)
			}
			return failRemove(fmt.Errorf("cyrus: chown %s to %d:%d: %w%s", path, own.uid, own.gid, err, hint))
		}
	}
	if err := os.Chmod(path, own.mode); err != nil {
		return failRemove(fmt.Errorf("cyrus: chmod %s: %w", path, err))
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
			return failRemove(fmt.Errorf("cyrus: listen %s: %w", path, err))
		}
	}
	checkReachable(cfg.Logger, path, own)
	cfg.Logger.Info("listening for Cyrus notifications", "path", path, "type", sockTypeName(typ),
		"owner", own.uid, "group", own.gid, "mode", fmt.Sprintf("%#o", own.mode))
	return f, sf, nil
}

// clearStale removes a socket file nobody listens on. A live socket gives
// ErrInUse, anything that is not a socket gives ErrNotSocket: neither is
// ever removed.
func clearStale(log *slog.Logger, path string, typ int) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("cyrus: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("cyrus: %s: %w", path, ErrNotSocket)
	}
	// Connecting tells a live socket from a stale file without sending
	// anything: a datagram socket connect() succeeds only when a socket
	// is bound there, a stream connect() only when one listens.
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("cyrus: socket: %w", err)
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	unix.Close(fd)
	switch {
	case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINPROGRESS):
		// EAGAIN: a stream listener whose backlog is full is very much alive.
		return fmt.Errorf("cyrus: %s: %w", path, ErrInUse)
	case errors.Is(err, unix.EPROTOTYPE):
		return fmt.Errorf("cyrus: %s: %w (a socket of another type is listening)", path, ErrInUse)
	case errors.Is(err, unix.ECONNREFUSED):
		// Stale. Remove it only if it is still the file we looked at.
		var again unix.Stat_t
		if err := unix.Lstat(path, &again); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return fmt.Errorf("cyrus: stat %s: %w", path, err)
		}
		if again.Dev != st.Dev || again.Ino != st.Ino {
			return fmt.Errorf("cyrus: %s changed while checking it: %w", path, ErrInUse)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cyrus: remove stale socket %s: %w", path, err)
		}
		log.Info("removed stale socket file", "path", path)
		return nil
	default:
		return fmt.Errorf("cyrus: probing existing socket %s: %w", path, err)
	}
}

// checkReachable warns when SocketUser cannot search a parent directory
// of the socket: Cyrus would fail to connect and lose every event, and the
// only trace would be in Cyrus's syslog.
func checkReachable(log *slog.Logger, path string, own *owner) {
	if own.userUID == 0 {
		return
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			log.Warn("cannot check socket directory", "dir", dir, "err", err)
			return
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			perm := fi.Mode().Perm()
			var x fs.FileMode
			switch {
			case int(st.Uid) == own.userUID:
				x = perm & 0o100
			case own.userGIDs[int(st.Gid)]:
				x = perm & 0o010
			default:
				x = perm & 0o001
			}
			if x == 0 {
				log.Warn("Cyrus's user cannot reach the socket: a parent directory is not searchable by it",
					"user", own.userName, "dir", dir, "mode", fmt.Sprintf("%#o", perm))
			}
		}
		if dir == "/" || dir == "." {
			return
		}
	}
}

func sockTypeName(typ int) string {
	switch typ {
	case unix.SOCK_DGRAM:
		return "dgram"
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	}
	return "type " + strconv.Itoa(typ)
}

// cred is a sender's kernel-reported credentials.
type cred struct {
	ok            bool
	pid, uid, gid uint32
}

func (c cred) String() string {
	if !c.ok {
		return "unknown sender"
	}
	return fmt.Sprintf("uid %d gid %d pid %d", c.uid, c.gid, c.pid)
}

func (c cred) setMeta(it *item) {
	if !c.ok {
		return
	}
	it.meta[MetaPeerUID] = strconv.FormatUint(uint64(c.uid), 10)
	it.meta[MetaPeerGID] = strconv.FormatUint(uint64(c.gid), 10)
	it.meta[MetaPeerPID] = strconv.FormatUint(uint64(c.pid), 10)
}

// peerCred returns the credentials of a stream connection's peer
// (SO_PEERCRED: the process that called connect()).
func peerCred(c *net.UnixConn) (cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return cred{}, err
	}
	var uc *unix.Ucred
	var uerr error
	if err := rc.Control(func(fd uintptr) {
		uc, uerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return cred{}, err
	}
	if uerr != nil {
		return cred{}, uerr
	}
	return cred{ok: true, pid: uint32(uc.Pid), uid: uc.Uid, gid: uc.Gid}, nil
}

// writeReply writes a dlist reply with a bounded wait: Cyrus reads it at
// once; a peer that does not must not hold a worker.
func writeReply(c net.Conn, b []byte) error {
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Write(b)
	return err
}
