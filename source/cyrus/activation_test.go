package cyrus

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const envActivation = "BONNIE_CYRUS_TEST_ACTIVATION" // "dgram" or "dlist"

// TestActivationChild is the daemon TestActivation starts with a socket
// passed the systemd way. It does nothing in a normal run.
func TestActivationChild(t *testing.T) {
	mode := os.Getenv(envActivation)
	if mode == "" {
		t.Skip("helper process of TestActivation")
	}
	path := os.Getenv(envPath)
	want, err := os.ReadFile(os.Getenv(envPayload))
	if err != nil {
		t.Fatal(err)
	}
	act := Activation()
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, set := os.LookupEnv(v); set {
			t.Errorf("%s still set", v)
		}
	}
	if act.Len() != 1 {
		t.Fatalf("%d inherited sockets", act.Len())
	}
	opts := Options{
		Path:           path,
		Activated:      act,
		ActivationName: "cyrus-notify",
		AllowedUIDs:    []int{os.Getuid()},
		Logger:         testLogger(),
	}
	var s listener
	if mode == "dgram" {
		s, err = NewDatagramSubscriber(opts)
	} else {
		s, err = NewDListSubscriber(opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	if act.Len() != 0 {
		t.Error("socket not claimed")
	}
	ch, err := s.Subscribe(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	// Sent before this process existed: it waited in the kernel.
	m := recv(t, ch)
	if !bytes.Equal(m.Payload, want) {
		t.Errorf("payload %q", m.Payload)
	}
	m.Ack()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed the inherited socket's file: %v", err)
	}
}

// TestActivation holds a socket like systemd does, sends to it before the
// daemon runs, then starts the daemon (this test binary) with the socket
// as fd 3 and LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES set. The daemon gets
// what was sent, and after it exits the socket and its file are still
// there, still working.
func TestActivation(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh to set LISTEN_PID to the daemon's pid")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"dgram", "dlist"} {
		t.Run(mode, func(t *testing.T) {
			dir := sockDir(t)
			path := filepath.Join(dir, "notify")
			var f *os.File
			var check func()
			var payload []byte
			if mode == "dgram" {
				payload = readFile(t, "064-SIEVE.bin")
				c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				// systemd's PassCredentials=yes: without it, what is queued
				// before the daemon starts carries no sender credentials.
				setPassCred(t, c)
				if f, err = c.File(); err != nil {
					t.Fatal(err)
				}
				sendDatagram(t, path, payload)
				check = func() {
					// The holder's socket still works.
					sendDatagram(t, path, []byte("after"))
					buf := make([]byte, 100)
					n, err := c.Read(buf)
					if err != nil || string(buf[:n]) != "after" {
						t.Errorf("holder read %q, %v", buf[:n], err)
					}
				}
			} else {
				payload = readFile(t, "dlist-006-MessageAppend.bin")
				l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				if f, err = l.File(); err != nil {
					t.Fatal(err)
				}
				// Cyrus connects and writes while no daemon runs: the
				// connection waits in the backlog.
				cl := dialDList(t, path, payload)
				check = func() {
					if r := cl.wait(t); r != "OK NIL\r\n" {
						t.Errorf("reply %q", r)
					}
					c, err := net.Dial("unix", path)
					if err != nil {
						t.Fatalf("socket gone after the daemon exited: %v", err)
					}
					defer c.Close()
					a, err := l.Accept()
					if err != nil {
						t.Fatal(err)
					}
					a.Close()
				}
			}
			defer f.Close()
			pf := filepath.Join(dir, "payload")
			if err := os.WriteFile(pf, payload, 0o644); err != nil {
				t.Fatal(err)
			}

			cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^TestActivationChild$' -test.v`, self)
			cmd.ExtraFiles = []*os.File{f} // fd 3, SD_LISTEN_FDS_START
			cmd.Env = append(os.Environ(),
				"LISTEN_FDS=1", "LISTEN_FDNAMES=cyrus-notify",
				envActivation+"="+mode, envPath+"="+path, envPayload+"="+pf)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS: TestActivationChild") {
				t.Fatalf("daemon: %v\n%s", err, out)
			}
			if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
				t.Fatalf("socket file gone: %v", err)
			}
			check()
		})
	}
}

// claim checks type, listening state, name and path of inherited sockets.
func TestActivatedClaim(t *testing.T) {
	dir := sockDir(t)
	bind := func(name string, typ int, listen bool) *os.File {
		fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, name)}); err != nil {
			t.Fatal(err)
		}
		if listen {
			if err := unix.Listen(fd, 1); err != nil {
				t.Fatal(err)
			}
		}
		f := os.NewFile(uintptr(fd), name)
		t.Cleanup(func() { f.Close() })
		return f
	}
	regular, err := os.Create(filepath.Join(dir, "file"))
	if err != nil {
		t.Fatal(err)
	}
	regular.Close()
	regularFD, err := unix.Open(filepath.Join(dir, "file"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := &Activated{files: []*os.File{
		bind("dg", unix.SOCK_DGRAM, false),
		bind("st", unix.SOCK_STREAM, true),
		bind("idle", unix.SOCK_STREAM, false),
		os.NewFile(uintptr(regularFD), "file"),
	}}
	tests := []struct {
		name, fdname, path string
		typ                int
		ok                 bool
	}{
		{"wrong type by name", "st", "", unix.SOCK_DGRAM, false},
		{"not listening", "idle", "", unix.SOCK_STREAM, false},
		{"not a socket", "file", "", unix.SOCK_DGRAM, false},
		{"wrong path", "", filepath.Join(dir, "elsewhere"), unix.SOCK_STREAM, false},
		{"unknown name", "nope", "", unix.SOCK_DGRAM, false},
		{"dgram by type", "", "", unix.SOCK_DGRAM, true},
		{"dgram claimed already", "", "", unix.SOCK_DGRAM, false},
		{"stream by path", "", filepath.Join(dir, "st"), unix.SOCK_STREAM, true},
	}
	for _, tc := range tests {
		f, err := a.claim(tc.fdname, tc.path, tc.typ)
		if tc.ok != (err == nil) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && !errors.Is(err, ErrActivation) {
			t.Errorf("%s: %v does not wrap ErrActivation", tc.name, err)
		}
		if f != nil {
			f.Close()
		}
	}
	if n := a.Len(); n != 2 { // idle and file are left
		t.Errorf("Len %d", n)
	}
	if err := a.Close(); err != nil || a.Len() != 0 {
		t.Errorf("Close: %v, Len %d", err, a.Len())
	}
}

func TestActivationWithoutSockets(t *testing.T) {
	t.Setenv("LISTEN_PID", "1") // not us
	t.Setenv("LISTEN_FDS", "1")
	act := Activation()
	if act.Len() != 0 {
		t.Fatal("took sockets meant for another process")
	}
	opts, _, _ := testOptions(t, "notify")
	opts.Activated = act
	if _, err := NewDatagramSubscriber(opts); !errors.Is(err, ErrActivation) {
		t.Fatalf("got %v", err)
	}
}

func setPassCred(t *testing.T, c *net.UnixConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
}

// A datagram queued while the socket did not ask for credentials (a
// systemd socket without PassCredentials=yes) cannot be attributed: it is
// rejected, not delivered.
func TestDatagramQueuedWithoutPassCred(t *testing.T) {
	opts, _, rejects := testOptions(t, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: opts.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	sendDatagram(t, opts.Path, []byte("early"))
	s, err := NewDatagramSubscriberFromConn(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ch, _ := s.Subscribe(t.Context(), "")
	r := rejects.next(t)
	if string(r.raw) != "early" || !strings.Contains(r.reason, "SO_PASSCRED") {
		t.Errorf("rejected %q: %s", r.raw, r.reason)
	}
	sendDatagram(t, opts.Path, []byte("late"))
	m := recv(t, ch)
	if string(m.Payload) != "late" {
		t.Errorf("got %q", m.Payload)
	}
	m.Ack()
}
