package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unitFile is a systemd unit as section -> key -> values (in order).
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unitFile) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// TestSystemdUnits checks the shipped bonnied.socket and bonnied.service:
// the socket is Cyrus's (owner cyrus, 0600, credentials passed), the
// service runs bonnied on that same path with flags bonnied accepts, and
// restarts always; and, where systemd-analyze works, that systemd parses
// both without a warning.
func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	sock := readUnit(t, "bonnied.socket")
	svc := readUnit(t, "bonnied.service")

	path := sock.get("Socket", "ListenDatagram")
	for k, want := range map[string]string{
		"ListenDatagram":  "/run/bonnie/notify.sock",
		"SocketUser":      "cyrus",
		"SocketMode":      "0600",
		"PassCredentials": "yes",
	} {
		if got := sock.get("Socket", k); got != want {
			t.Errorf("bonnied.socket: %s=%q, want %q", k, got, want)
		}
	}
	if sock.get("Install", "WantedBy") != "sockets.target" {
		t.Errorf("bonnied.socket is not wanted by sockets.target")
	}

	if got := svc.get("Service", "Restart"); got != "always" {
		t.Errorf("bonnied.service: Restart=%q, want always", got)
	}
	if !strings.Contains(svc.get("Unit", "Requires"), "bonnied.socket") ||
		!strings.Contains(svc.get("Unit", "After"), "bonnied.socket") {
		t.Errorf("bonnied.service does not require and follow bonnied.socket: %v", svc["Unit"])
	}
	argv := strings.Fields(svc.get("Service", "ExecStart"))
	if len(argv) == 0 || argv[0] != "/usr/local/bin/bonnied" {
		t.Fatalf("bonnied.service: ExecStart=%q", svc.get("Service", "ExecStart"))
	}
	cfg, err := parse(argv[1:], io.Discard)
	if err != nil {
		t.Fatalf("bonnied rejects the service's flags %q: %v", argv[1:], err)
	}
	// bonnied picks the inherited socket by this path.
	if cfg.socket != path || cfg.dlist != "" {
		t.Errorf("bonnied.service listens on datagram %q dlist %q; the socket unit holds %q", cfg.socket, cfg.dlist, path)
	}
	if want := "/var/lib/" + svc.get("Service", "StateDirectory"); cfg.data != want || cfg.data != "/var/lib/bonnie" {
		t.Errorf("bonnied.service: --data %q, StateDirectory gives %q", cfg.data, want)
	}

	t.Run("systemd-analyze", func(t *testing.T) {
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not installed; the units were checked by the parser above only")
		}
		if buildErr != nil {
			t.Fatal(buildErr)
		}
		// verify checks that ExecStart's program exists: point it at the
		// binary built for the tests, under the same unit names.
		dir := t.TempDir()
		for _, name := range []string{"bonnied.socket", "bonnied.service"} {
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/bonnied", bonniedBin))
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// First make sure verify works here at all (it needs no running
		// systemd, but it does need its unit search path).
		probe := filepath.Join(dir, "probe.service")
		if err := os.WriteFile(probe, []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(analyze, "verify", "--man=no", probe).CombinedOutput(); err != nil || len(out) > 0 {
			t.Skipf("systemd-analyze verify does not work in this environment (%v): %s", err, out)
		}
		args := []string{"verify", "--man=no", filepath.Join(dir, "bonnied.socket"), filepath.Join(dir, "bonnied.service")}
		out, err := exec.Command(analyze, args...).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		// And it does catch a mistake, so that silence above means something.
		bad := filepath.Join(dir, "bonnied.service")
		b, _ := os.ReadFile(bad)
		if err := os.WriteFile(bad, append(b, []byte("ListenDatagramm=/nowhere\n")...), 0o644); err != nil {
			t.Fatal(err)
		}
		out, _ = exec.Command(analyze, args...).CombinedOutput()
		if !slices.ContainsFunc(strings.Split(string(out), "\n"), func(l string) bool { return strings.Contains(l, "ListenDatagramm") }) {
			t.Errorf("systemd-analyze verify did not report an unknown key:\n%s", out)
		}
	})
}
