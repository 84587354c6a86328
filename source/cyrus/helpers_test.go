package cyrus

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Environment variables that turn the test binary into a helper process
// (a sender running as another uid, an activated daemon).
const (
	envSender  = "BONNIE_CYRUS_TEST_SENDER" // "dgram" or "dlist"
	envPath    = "BONNIE_CYRUS_TEST_PATH"
	envPayload = "BONNIE_CYRUS_TEST_PAYLOAD" // file with the bytes to send
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envSender); mode != "" {
		os.Exit(runSender(mode, os.Getenv(envPath), os.Getenv(envPayload)))
	}
	os.Exit(m.Run())
}

// runSender sends one notification and, for dlist, prints the reply line.
func runSender(mode, path, payloadFile string) int {
	payload, err := os.ReadFile(payloadFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch mode {
	case "dgram":
		c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		if _, err := c.Write(payload); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "dlist":
		c, err := net.Dial("unix", path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		if _, err := c.Write(payload); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Print(line)
	default:
		return 2
	}
	return 0
}

// sockDir returns a fresh directory that other users can search (t.TempDir
// is 0700: Cyrus, or a test sender running as nobody, could not reach a
// socket in it).
func sockDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "bcy")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func testLogger() *slog.Logger {
	if os.Getenv("BONNIE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func currentUser(t testing.TB) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// hookCall is one OnGiveUp or OnReject call.
type hookCall struct {
	raw    []byte
	reason string
}

type hookRec chan hookCall

func newHookRec() hookRec { return make(hookRec, 1000) }

func (r hookRec) hook(_ context.Context, raw []byte, reason string) {
	r <- hookCall{raw: append([]byte(nil), raw...), reason: reason}
}

func (r hookRec) next(t testing.TB) hookCall {
	t.Helper()
	select {
	case c := <-r:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("hook not called")
		return hookCall{}
	}
}

func (r hookRec) none(t testing.TB, what string) {
	t.Helper()
	select {
	case c := <-r:
		t.Fatalf("%s called unexpectedly: %s (%d bytes)", what, c.reason, len(c.raw))
	default:
	}
}

// testOptions are Options for a socket in a fresh directory, owned by and
// accepting the test's own user.
func testOptions(t testing.TB, name string) (Options, hookRec, hookRec) {
	t.Helper()
	giveUps, rejects := newHookRec(), newHookRec()
	return Options{
		Path:            filepath.Join(sockDir(t), name),
		Logger:          testLogger(),
		AllowedUIDs:     []int{os.Getuid()},
		SocketUser:      currentUser(t),
		RedeliveryDelay: time.Millisecond,
		DrainTimeout:    10 * time.Second,
		OnGiveUp:        giveUps.hook,
		OnReject:        rejects.hook,
	}, giveUps, rejects
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func recv(t testing.TB, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription channel closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
		return nil
	}
}

func sendDatagram(t testing.TB, path string, b []byte) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// checkMeta verifies the metadata every delivered message carries.
func checkMeta(t testing.TB, m *message.Message, framing string, uid, pid int, attempt int) {
	t.Helper()
	md := m.Metadata
	if got := md.Get(MetaFraming); got != framing {
		t.Errorf("framing %q, want %q", got, framing)
	}
	if got := md.Get(MetaSource); got != DefaultSource {
		t.Errorf("source %q", got)
	}
	if got := md.Get(MetaPeerUID); got != strconv.Itoa(uid) {
		t.Errorf("peer uid %q, want %d", got, uid)
	}
	if pid > 0 {
		if got := md.Get(MetaPeerPID); got != strconv.Itoa(pid) {
			t.Errorf("peer pid %q, want %d", got, pid)
		}
	}
	if got := md.Get(MetaAttempt); got != strconv.Itoa(attempt) {
		t.Errorf("attempt %q, want %d", got, attempt)
	}
	rt, err := time.Parse(time.RFC3339Nano, md.Get(MetaReceived))
	if err != nil {
		t.Errorf("received %q: %v", md.Get(MetaReceived), err)
	} else if rt.Location() != time.UTC {
		t.Errorf("received %q is not UTC", md.Get(MetaReceived))
	}
	if got := md.Get(MetaSize); got != strconv.Itoa(len(m.Payload)) && md.Get(MetaTruncated) == "" {
		t.Errorf("size %q, payload %d bytes", got, len(m.Payload))
	}
	if m.UUID == "" {
		t.Error("empty UUID")
	}
}
