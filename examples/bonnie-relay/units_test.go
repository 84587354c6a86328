package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitValue returns the value of key in section of a systemd unit file.
func unitValue(t *testing.T, file, section, key string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cur := ""
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			cur = strings.Trim(line, "[]")
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && cur == section && k == key {
			return v
		}
	}
	t.Fatalf("%s: no %s= in [%s]", file, key, section)
	return ""
}

// TestSystemdUnits: the service's command line is one the relay accepts,
// it listens where the socket unit holds the socket, and spools where
// systemd gives it a state directory.
func TestSystemdUnits(t *testing.T) {
	sock := unitValue(t, "bonnie-relay.socket", "Socket", "ListenStream")
	if u := unitValue(t, "bonnie-relay.socket", "Socket", "SocketUser"); u != "cyrus" {
		t.Errorf("SocketUser=%s, want cyrus", u)
	}
	exec0 := unitValue(t, "bonnie-relay.service", "Service", "ExecStart")
	exec0 = strings.ReplaceAll(exec0, "${BONNIE_AMQP}", "amqp://guest:guest@127.0.0.1:5672/")
	exec0 = strings.ReplaceAll(exec0, "$BONNIE_RELAY_BODIES", "--cyrus-spool /var/spool/cyrus/mail") // relay.env's example
	fields := strings.Fields(exec0)
	if fields[0] != "/usr/local/bin/bonnie-relay" {
		t.Fatalf("ExecStart runs %s", fields[0])
	}
	cfg, err := parse(fields[1:], io.Discard)
	if err != nil {
		t.Fatalf("the relay refuses ExecStart's flags: %v", err)
	}
	if cfg.dlist != sock || cfg.socket != "" {
		t.Errorf("the service listens on dlist %q datagram %q; the socket unit holds %q", cfg.dlist, cfg.socket, sock)
	}
	if want := "/var/lib/" + unitValue(t, "bonnie-relay.service", "Service", "StateDirectory"); cfg.spool != want {
		t.Errorf("--spool %s, StateDirectory gives %s", cfg.spool, want)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: the units were checked by the parser above only")
		return
	}
	dir := t.TempDir()
	for _, name := range []string{"bonnie-relay.socket", "bonnie-relay.service"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		// verify wants ExecStart's program to exist: the binary built for
		// the tests stands in.
		b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/bonnie-relay", relayBin))
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	probe := filepath.Join(dir, "probe.service")
	os.WriteFile(probe, []byte("[Service]\nExecStart=/bin/true\n"), 0o644)
	if out, err := exec.Command(analyze, "verify", "--man=no", probe).CombinedOutput(); err != nil || len(out) > 0 {
		t.Logf("systemd-analyze verify does not work here (%v): %s", err, out)
		return
	}
	out, err := exec.Command(analyze, "verify", "--man=no",
		filepath.Join(dir, "bonnie-relay.socket"), filepath.Join(dir, "bonnie-relay.service")).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
