package cyrus

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
)

// otherUser is the uid a forged sender runs as.
const otherUID = 65534

// senderBinary copies the test binary where another user can run it (go
// test's work directory is 0700).
func senderBinary(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a sender as another uid")
	}
	if _, err := user.LookupId(strconv.Itoa(otherUID)); err != nil {
		t.Skipf("no user with uid %d: %v", otherUID, err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := sockDir(t)
	dst := filepath.Join(dir, "sender.test")
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// sendAs starts the test binary as uid to send payload to path; the
// returned function waits for it and returns what it printed (the dlist
// reply, which comes only after the message is acked).
func sendAs(t *testing.T, bin string, uid int, mode, path string, payload []byte) (wait func() string) {
	t.Helper()
	pf := filepath.Join(filepath.Dir(bin), "payload-"+mode)
	if err := os.WriteFile(pf, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envSender+"="+mode, envPath+"="+path, envPayload+"="+pf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("sender as uid %d: %v", uid, err)
	}
	return func() string {
		t.Helper()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("sender as uid %d: %v: %s", uid, err, stderr.String())
		}
		return stdout.String()
	}
}

type listener interface {
	message.Subscriber
	Path() string
}

// TestSenderCheck sends real notifications from another uid: rejected
// (OnReject, nothing delivered, NO for dlist) unless that uid is allowed.
func TestSenderCheck(t *testing.T) {
	bin := senderBinary(t)
	for _, mode := range []string{"dgram", "dlist"} {
		for _, allowOther := range []bool{false, true} {
			name := mode + "/forged"
			if allowOther {
				name = mode + "/allowed"
			}
			t.Run(name, func(t *testing.T) {
				opts, giveUps, rejects := testOptions(t, "notify")
				// The socket belongs to "Cyrus" (here: uid 65534), 0600, as in
				// production; root can write anyway.
				other, _ := user.LookupId(strconv.Itoa(otherUID))
				opts.SocketUser = other.Username
				if allowOther {
					opts.AllowedUIDs = append(opts.AllowedUIDs, otherUID)
				}
				var s listener
				var payload []byte
				var err error
				if mode == "dgram" {
					payload = readFile(t, "001-Login.bin")
					s, err = NewDatagramSubscriber(opts)
				} else {
					payload = readFile(t, "dlist-001-Login.bin")
					s, err = NewDListSubscriber(opts)
				}
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				fi, err := os.Stat(opts.Path)
				if err != nil {
					t.Fatal(err)
				}
				if st := fi.Sys().(*syscall.Stat_t); st.Uid != otherUID || fi.Mode().Perm() != 0o600 {
					t.Fatalf("socket owner %d mode %v", st.Uid, fi.Mode().Perm())
				}
				ch, _ := s.Subscribe(t.Context(), "")

				wait := sendAs(t, bin, otherUID, mode, opts.Path, payload)

				if allowOther {
					m := recv(t, ch)
					if !bytes.Equal(m.Payload, payload) {
						t.Fatal("payload differs")
					}
					checkMeta(t, m, map[string]string{"dgram": FramingDatagram, "dlist": FramingDList}[mode], otherUID, 0, 1)
					m.Ack()
					reply := wait()
					if mode == "dlist" {
						// The sender printed the reply after our Ack.
						if reply != "OK NIL\r\n" {
							t.Errorf("reply %q", reply)
						}
					}
					rejects.none(t, "OnReject")
					return
				}

				reply := wait()
				r := rejects.next(t)
				if !bytes.Equal(r.raw, payload) {
					t.Errorf("rejected raw differs: %q", r.raw)
				}
				if !strings.Contains(r.reason, "uid 65534") {
					t.Errorf("reason %q", r.reason)
				}
				if mode == "dlist" && !strings.HasPrefix(reply, "NO ") {
					t.Errorf("reply %q", reply)
				}
				// Nothing was delivered: the first message is the allowed
				// sender's, sent after the forged one.
				good := []byte("from an allowed sender")
				if mode == "dgram" {
					sendDatagram(t, opts.Path, good)
				} else {
					good = readFile(t, "dlist-007-FlagsSet.bin")
					cl := dialDList(t, opts.Path, good)
					defer func() {
						if r := cl.wait(t); r != "OK NIL\r\n" {
							t.Errorf("allowed reply %q", r)
						}
					}()
				}
				m := recv(t, ch)
				if !bytes.Equal(m.Payload, good) {
					t.Fatalf("handler got %q", m.Payload)
				}
				checkMeta(t, m, map[string]string{"dgram": FramingDatagram, "dlist": FramingDList}[mode], os.Getuid(), os.Getpid(), 1)
				m.Ack()
				giveUps.none(t, "OnGiveUp")
			})
		}
	}
}

// The default allowed sender is the user "cyrus", and the process's own
// uid is not allowed unless configured.
func TestDefaultAllowedSenders(t *testing.T) {
	u, err := user.Lookup(DefaultCyrusUser)
	if err != nil {
		t.Skip("no user cyrus here")
	}
	cfg, err := Options{}.resolve(1)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if !cfg.allowed[uint32(uid)] || len(cfg.allowed) != 1 {
		t.Errorf("allowed %v, want only %d", cfg.allowed, uid)
	}
	if _, err := (Options{AllowedUsers: []string{"no-such-user-bonnie"}}).resolve(1); err == nil {
		t.Error("unknown allowed user accepted")
	}
}
