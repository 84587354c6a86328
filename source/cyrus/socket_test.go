package cyrus

import (
	"errors"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// kinds runs a test for both socket types.
var kinds = []struct {
	name string
	new  func(Options) (io.Closer, error)
	// leaveStale binds a socket at path and closes it without removing the
	// file, as a crashed listener would.
	leaveStale func(t *testing.T, path string)
	// live binds a socket at path and keeps it open until the test ends.
	live func(t *testing.T, path string)
}{
	{
		name: "dgram",
		new:  func(o Options) (io.Closer, error) { return NewDatagramSubscriber(o) },
		leaveStale: func(t *testing.T, path string) {
			c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		},
		live: func(t *testing.T, path string) {
			c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
		},
	},
	{
		name: "dlist",
		new:  func(o Options) (io.Closer, error) { return NewDListSubscriber(o) },
		leaveStale: func(t *testing.T, path string) {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close()
		},
		live: func(t *testing.T, path string) {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		},
	},
}

func TestSocketFileLifecycle(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name+"/stale replaced", func(t *testing.T) {
			opts, _, _ := testOptions(t, "notify")
			k.leaveStale(t, opts.Path)
			if fi, err := os.Lstat(opts.Path); err != nil || fi.Mode().Type() != os.ModeSocket {
				t.Fatalf("no stale socket file: %v", err)
			}
			s, err := k.new(opts)
			if err != nil {
				t.Fatalf("stale socket not replaced: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(opts.Path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Close left the socket file: %v", err)
			}
		})
		t.Run(k.name+"/live in use", func(t *testing.T) {
			opts, _, _ := testOptions(t, "notify")
			k.live(t, opts.Path)
			if _, err := k.new(opts); !errors.Is(err, ErrInUse) {
				t.Fatalf("got %v, want ErrInUse", err)
			}
			if _, err := os.Lstat(opts.Path); err != nil {
				t.Errorf("live socket file touched: %v", err)
			}
		})
		t.Run(k.name+"/other type in use", func(t *testing.T) {
			opts, _, _ := testOptions(t, "notify")
			// A live socket of the other type is somebody else's too.
			other := kinds[0]
			if k.name == "dgram" {
				other = kinds[1]
			}
			other.live(t, opts.Path)
			if _, err := k.new(opts); !errors.Is(err, ErrInUse) {
				t.Fatalf("got %v, want ErrInUse", err)
			}
		})
		t.Run(k.name+"/not a socket", func(t *testing.T) {
			opts, _, _ := testOptions(t, "notify")
			if err := os.WriteFile(opts.Path, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := k.new(opts); !errors.Is(err, ErrNotSocket) {
				t.Fatalf("got %v, want ErrNotSocket", err)
			}
			if b, err := os.ReadFile(opts.Path); err != nil || string(b) != "precious" {
				t.Errorf("file changed: %q %v", b, err)
			}
		})
		t.Run(k.name+"/replaced file not removed", func(t *testing.T) {
			opts, _, _ := testOptions(t, "notify")
			s, err := k.new(opts)
			if err != nil {
				t.Fatal(err)
			}
			// Someone else took the path meanwhile.
			os.Remove(opts.Path)
			k.leaveStale(t, opts.Path)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(opts.Path); err != nil {
				t.Errorf("Close removed a socket file it did not create: %v", err)
			}
		})
		t.Run(k.name+"/path too long", func(t *testing.T) {
			opts, _, _ := testOptions(t, strings.Repeat("x", 120))
			if _, err := k.new(opts); err == nil || !strings.Contains(err.Error(), "limit") {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestSocketOwnerAndMode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	nobody, err := user.LookupId(strconv.Itoa(otherUID))
	if err != nil {
		t.Skip("no uid 65534")
	}
	grp, err := user.LookupGroupId("0")
	if err != nil {
		t.Skip("no group 0")
	}
	primary, _ := strconv.Atoi(nobody.Gid)
	tests := []struct {
		name     string
		group    string
		mode     os.FileMode
		wantGID  int
		wantMode os.FileMode
	}{
		{name: "user only", wantGID: primary, wantMode: 0o600},
		{name: "with group", group: grp.Name, wantGID: 0, wantMode: 0o660},
		{name: "explicit mode", group: grp.Name, mode: 0o620, wantGID: 0, wantMode: 0o620},
	}
	for _, k := range kinds {
		for _, tc := range tests {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				opts, _, _ := testOptions(t, "notify")
				opts.SocketUser = nobody.Username
				opts.SocketGroup = tc.group
				opts.SocketMode = tc.mode
				s, err := k.new(opts)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				fi, err := os.Lstat(opts.Path)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if int(st.Uid) != otherUID || int(st.Gid) != tc.wantGID || fi.Mode().Perm() != tc.wantMode {
					t.Errorf("owner %d:%d mode %v, want %d:%d %v", st.Uid, st.Gid, fi.Mode().Perm(), otherUID, tc.wantGID, tc.wantMode)
				}
			})
		}
	}
}

func TestSocketUnknownUser(t *testing.T) {
	opts, _, _ := testOptions(t, "notify")
	opts.SocketUser = "no-such-user-bonnie"
	if _, err := NewDatagramSubscriber(opts); err == nil {
		t.Fatal("unknown socket user accepted")
	}
	if _, err := os.Lstat(opts.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file created anyway: %v", err)
	}
}

// Not root and not the socket user: the file can only be shared through a
// group this process belongs to; otherwise the error says what to do.
func TestSocketNotRootForeignUser(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs as a non-root user (e.g. setpriv --reuid=65534)")
	}
	root, err := user.LookupId("0")
	if err != nil {
		t.Skip("no root user")
	}
	opts, _, _ := testOptions(t, "notify")
	opts.SocketUser = root.Username // root's primary group: not ours
	_, err = NewDatagramSubscriber(opts)
	if err == nil || !strings.Contains(err.Error(), "SocketGroup") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Lstat(opts.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after the failure: %v", err)
	}
	// With a group we belong to it works, mode 0660.
	me, _ := user.Current()
	g, err := user.LookupGroupId(me.Gid)
	if err != nil {
		t.Skip(err)
	}
	opts.SocketGroup = g.Name
	s, err := NewDatagramSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Lstat(opts.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)) != me.Gid {
		t.Errorf("mode %v gid %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
}
