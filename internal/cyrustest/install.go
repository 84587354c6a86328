package cyrustest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// InstallScript is the path, relative to the module root, of the script that
// installs Cyrus (idempotent, Debian/Ubuntu, root).
const InstallScript = ".ci/install-cyrus.sh"

// required lists the files without which a Server cannot run.
var required = []string{
	filepath.Join(BinDir, "master"),
	filepath.Join(BinDir, "imapd"),
	filepath.Join(BinDir, "lmtpd"),
	filepath.Join(BinDir, "ctl_cyrusdb"),
	"/usr/sbin/saslpasswd2",
}

// missing returns what is missing for running Cyrus, or "".
func missing() string {
	var m []string
	for _, f := range required {
		if _, err := os.Stat(f); err != nil {
			m = append(m, f)
		}
	}
	if _, err := user.Lookup("cyrus"); err != nil {
		m = append(m, "user cyrus")
	}
	return strings.Join(m, ", ")
}

var (
	installOnce sync.Once
	installErr  error
)

// ensureAvailable checks that Cyrus can run here, installing it (once per
// process) if it is missing and we are not in CI.
func ensureAvailable() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: needs Linux (Debian/Ubuntu packages), not %s", ErrUnavailable, runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: must run as root (Cyrus's master starts as root and runs its services as user cyrus); "+
			"run the tests as root, e.g. in a container or with sudo", ErrUnavailable)
	}
	m := missing()
	if m == "" {
		return nil
	}
	if os.Getenv("CI") == "true" {
		return fmt.Errorf("%w: not installed (missing %s), and CI=true: "+
			"the CI job must install it before running the tests: sudo %s", ErrUnavailable, m, InstallScript)
	}
	installOnce.Do(func() { installErr = runInstall() })
	if installErr != nil {
		return fmt.Errorf("%w: not installed (missing %s), and installing it failed: %v",
			ErrUnavailable, m, installErr)
	}
	if m := missing(); m != "" {
		return fmt.Errorf("%w: still missing after %s: %s", ErrUnavailable, InstallScript, m)
	}
	return nil
}

// runInstall runs the module's install script.
func runInstall() error {
	script, err := findInstallScript()
	if err != nil {
		return err
	}
	cmd := exec.Command("/bin/bash", script)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := string(out)
		if len(tail) > 4000 {
			tail = "..." + tail[len(tail)-4000:]
		}
		return fmt.Errorf("%s: %v (after %v)\n%s", script, err, time.Since(start).Round(time.Second), tail)
	}
	fmt.Fprintf(os.Stderr, "cyrustest: installed Cyrus IMAP with %s in %v\n", script, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// findInstallScript looks for InstallScript in the module root: above the
// working directory (go test runs in the package directory), then above
// this source file.
func findInstallScript() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			p := filepath.Join(dir, InstallScript)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				break // module root reached
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("%s not found above %s", InstallScript, strings.Join(starts, " or "))
}
