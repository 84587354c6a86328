package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// envDial makes the test binary a client that dials the socket it names
// and prints what happened: the foreign-uid test runs it as nobody.
const envDial = "BONNIE_CONTROL_TEST_DIAL"

func TestMain(m *testing.M) {
	if path := os.Getenv(envDial); path != "" {
		_, _, err := Send(context.Background(), path, []byte(`{"event":"x"}`))
		fmt.Println(err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type recorder struct {
	mu   sync.Mutex
	got  [][]byte
	seen map[string]uint64
}

func (r *recorder) handle(_ context.Context, raw []byte) (uint64, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.Contains(string(raw), "refuse") {
		return 0, false, errors.New("not one of Bonnie's own events\nsecond line")
	}
	if p, ok := r.seen[string(raw)]; ok {
		return p, true, nil
	}
	r.got = append(r.got, raw)
	p := uint64(len(r.got))
	r.seen[string(raw)] = p
	return p, false, nil
}

func sockPath(t *testing.T) string {
	// Unix socket paths are short: not under go test's long TempDir.
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, Socket)
}

func TestSendAndAnswers(t *testing.T) {
	path := sockPath(t)
	rec := &recorder{seen: map[string]uint64{}}
	srv, err := Listen(path, rec.handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	ctx := context.Background()
	tests := []struct {
		raw     string
		pos     uint64
		dup     bool
		wantErr error
	}{
		{`{"event":"vnd.bonnie.LegalHold","n":1}`, 1, false, nil},
		{`{"event":"vnd.bonnie.LegalHold","n":2}`, 2, false, nil},
		{`{"event":"vnd.bonnie.LegalHold","n":1}`, 1, true, nil},
		{`{"event":"refuse"}`, 0, false, ErrRefused},
	}
	for _, tt := range tests {
		pos, dup, err := Send(ctx, path, []byte(tt.raw))
		if !errors.Is(err, tt.wantErr) {
			t.Fatalf("%s: err %v, want %v", tt.raw, err, tt.wantErr)
		}
		if pos != tt.pos || dup != tt.dup {
			t.Errorf("%s: got (%d, %v), want (%d, %v)", tt.raw, pos, dup, tt.pos, tt.dup)
		}
	}
	if _, _, err := Send(ctx, path, []byte("{\n}")); err == nil {
		t.Error("a multi-line event was sent")
	}
	// A request over the limit is refused, not buffered without end.
	big := `{"x":"` + strings.Repeat("a", MaxRequest+10) + `"}`
	if _, _, err := Send(ctx, path, []byte(big)); !errors.Is(err, ErrRefused) {
		t.Errorf("oversized request: %v, want ErrRefused", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after Close: %v", err)
	}
	if _, _, err := Send(ctx, path, []byte(`{}`)); !errors.Is(err, ErrNoDaemon) {
		t.Errorf("after Close: %v, want ErrNoDaemon", err)
	}
}

func TestStaleSocketAndSecondDaemon(t *testing.T) {
	path := sockPath(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil { // stale leftover
		t.Fatal(err)
	}
	rec := &recorder{seen: map[string]uint64{}}
	srv, err := Listen(path, rec.handle, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer srv.Close()
	if _, err := Listen(path, rec.handle, nil); err == nil {
		t.Fatal("a second daemon took over a live control socket")
	}
	if _, _, err := Send(context.Background(), path, []byte(`{"a":1}`)); err != nil {
		t.Fatalf("first daemon lost its socket: %v", err)
	}
}

func TestForeignUIDCannotRecord(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	path := sockPath(t)
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{seen: map[string]uint64{}}
	srv, err := Listen(path, rec.handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(path), "client.test")
	in, _ := os.Open(self)
	out, _ := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	io.Copy(out, in)
	in.Close()
	out.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), envDial+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	done := make(chan struct{})
	var outb []byte
	go func() { outb, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("client as nobody hung")
	}
	if err != nil {
		t.Fatalf("client as nobody: %v: %s", err, outb)
	}
	if !strings.Contains(string(outb), "permission denied") {
		t.Errorf("client as nobody: %q, want permission denied", outb)
	}
	if len(rec.got) != 0 {
		t.Errorf("a foreign uid recorded %d events", len(rec.got))
	}
}
