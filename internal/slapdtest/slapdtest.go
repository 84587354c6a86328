// Package slapdtest starts a real OpenLDAP directory (slapd) for tests, the
// way internal/cyrustest starts a real Cyrus IMAP.
//
// Each Start gives a fresh, private slapd: its own temporary directory
// (slapd.conf, an mdb database), its own loopback port, seeded with a small
// organisation. Nothing is shared between Servers, and no system-wide
// directory is involved.
//
// The seed (suffix dc=example,dc=org, admin cn=admin,dc=example,dc=org with
// password "secret", anonymous read allowed):
//
//	ou=people  uid=alice (mail alice@example.org and alice.smith@example.org)
//	           uid=bob   (bob@example.org)
//	           uid=carol (carol@example.org)
//	           all inetOrgPerson + posixAccount
//	ou=groups  cn=finance        groupOfNames, member alice and carol
//	           cn=finance-posix  posixGroup, memberUid alice and carol
//	ou=roles   cn=auditor        organizationalRole, roleOccupant carol
//
// The refint overlay keeps member and roleOccupant DNs right when a user is
// renamed (Rename waits for it: refint works in the background). Every
// entry has an entryUUID that slapd generates and keeps across renames.
//
// Typical use:
//
//	s := slapdtest.Start(t, slapdtest.Options{})
//	id := s.UUID(t, "alice")
//	s.Rename(t, "alice", "alice2", "alice2@example.org") // id unchanged
//	s.AddMember(t, "finance", "bob")
//	s.Stop()  // the directory is down (data kept)
//	s.Start(t) // and back, on the same URL
//
// Requirements: Linux and Debian's slapd and ldap-utils packages. When
// slapd is missing, Start runs the module's .ci/install-slapd.sh (as root);
// when that is impossible it skips the test, except under CI=true, where it
// fails: CI must have installed slapd.
package slapdtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// The seeded directory.
const (
	Suffix        = "dc=example,dc=org"
	AdminDN       = "cn=admin," + Suffix
	AdminPassword = "secret"
	PeopleDN      = "ou=people," + Suffix
	GroupsDN      = "ou=groups," + Suffix
	RolesDN       = "ou=roles," + Suffix
	Domain        = "example.org"
)

// InstallScript is the path, relative to the module root, of the script
// that installs slapd (idempotent, Debian/Ubuntu, root).
const InstallScript = ".ci/install-slapd.sh"

// Binaries and schemas a Server needs.
const (
	SlapdBin  = "/usr/sbin/slapd"
	SlapAdd   = "/usr/sbin/slapadd"
	SchemaDir = "/etc/ldap/schema"
	ModuleDir = "/usr/lib/ldap"
)

// startTimeout bounds how long a start waits for slapd to answer.
const startTimeout = 20 * time.Second

// ErrUnavailable is wrapped by the errors New returns when slapd cannot
// run here; Start turns them into a skip outside CI.
var ErrUnavailable = errors.New("slapdtest: slapd unavailable")

// Options configure a Server. The zero value starts the seeded directory.
type Options struct {
	// LDIF is added to the directory after the seed (with slapadd,
	// before slapd starts): more users, groups, roles.
	LDIF string
	// NoSeed leaves out the seed below the suffix entry and the three
	// organisational units.
	NoSeed bool
	// Debug is slapd's -d level ("stats", "any"); the default "0" logs
	// only start-up and errors. The log is in Log.
	Debug string
}

// Server is a running (or stopped) slapd. Its methods may be called from
// several goroutines.
type Server struct {
	opts Options
	dir  string
	port int
	url  string

	mu       sync.Mutex
	cmd      *exec.Cmd
	waitDone chan struct{}
	log      lockedBuffer
	closed   bool
}

// Start starts a directory for the test and removes it when the test and
// its subtests have finished.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		if errors.Is(err, ErrUnavailable) && os.Getenv("CI") != "true" {
			t.Skipf("skipping: %v", err)
		}
		t.Fatalf("%v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a directory outside of a test (e.g. in TestMain); the caller
// must Close it. Errors meaning "slapd cannot run here" wrap
// ErrUnavailable.
func New(opts Options) (*Server, error) {
	if err := ensureAvailable(); err != nil {
		return nil, err
	}
	if opts.Debug == "" {
		opts.Debug = "0"
	}
	dir, err := os.MkdirTemp("", "slapdtest-")
	if err != nil {
		return nil, fmt.Errorf("slapdtest: %w", err)
	}
	s := &Server{opts: opts, dir: dir}
	if err := s.create(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("slapdtest: %w", err)
		}
		s.port, s.url = port, "ldap://127.0.0.1:"+strconv.Itoa(port)
		if last = s.start(); last == nil {
			return s, nil
		}
		if !errors.Is(last, errPortTaken) {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, last
}

// URL is ldap://127.0.0.1:PORT; it stays the same across Stop and Start.
func (s *Server) URL() string { return s.url }

// Dir is the Server's directory (slapd.conf, data/, seed.ldif).
func (s *Server) Dir() string { return s.dir }

// Log returns what slapd wrote to its standard error.
func (s *Server) Log() string { return s.log.String() }

// Running reports whether slapd runs.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runningLocked()
}

func (s *Server) runningLocked() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.waitDone:
		return false
	default:
		return true
	}
}

// Stop stops slapd, keeping its data: the directory is unreachable until
// Start. Stopping a stopped Server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if !s.runningLocked() {
		return
	}
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-s.waitDone:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-s.waitDone
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL) // anything left in its group
}

// Start starts a stopped Server again on the same URL with the same data.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	closed, running := s.closed, s.runningLocked()
	s.mu.Unlock()
	if closed {
		t.Fatal("slapdtest: Start after Close")
	}
	if running {
		return
	}
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		// The port may linger for a moment after the previous slapd.
		if err = s.start(); !errors.Is(err, errPortTaken) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("slapdtest: restart: %v", err)
	}
}

// Close stops slapd and removes its directory. Start registers it with
// t.Cleanup; calling it again is harmless.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.stopLocked()
	os.RemoveAll(s.dir)
}

var errPortTaken = errors.New("slapdtest: port taken")

// start runs slapd in the foreground of its own process group and waits
// until it answers.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command(SlapdBin, "-d", s.opts.Debug, "-h", s.url+"/", "-f", s.confPath())
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.Dir = s.dir
	cmd.Stdout = &s.log
	cmd.Stderr = &s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	mark := s.log.Len()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("slapdtest: start slapd: %w", err)
	}
	done := make(chan struct{})
	s.cmd, s.waitDone = cmd, done
	go func() {
		_ = cmd.Wait() // how it ended is in the log
		close(done)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			out := s.log.String()[mark:]
			if strings.Contains(out, "Address already in use") || strings.Contains(out, "bind(") {
				return errPortTaken
			}
			return fmt.Errorf("slapdtest: slapd exited during start-up:\n%s", tail(out))
		default:
		}
		if err := s.ping(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			return fmt.Errorf("slapdtest: slapd did not answer on %s within %v:\n%s", s.url, startTimeout, tail(s.log.String()[mark:]))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping binds as the admin and reads the suffix.
func (s *Server) ping() error {
	c, err := ldap.DialURL(s.url, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetTimeout(2 * time.Second)
	if err := c.Bind(AdminDN, AdminPassword); err != nil {
		return err
	}
	_, err = c.Search(ldap.NewSearchRequest(Suffix, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 2, false,
		"(objectClass=*)", []string{"1.1"}, nil))
	return err
}

func (s *Server) confPath() string { return filepath.Join(s.dir, "slapd.conf") }

// create writes slapd.conf and loads the seed with slapadd.
func (s *Server) create() error {
	if err := os.MkdirAll(filepath.Join(s.dir, "data"), 0o700); err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	if err := os.WriteFile(s.confPath(), []byte(s.conf()), 0o600); err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	seed := filepath.Join(s.dir, "seed.ldif")
	if err := os.WriteFile(seed, []byte(s.seed()), 0o600); err != nil {
		return fmt.Errorf("slapdtest: %w", err)
	}
	out, err := exec.Command(SlapAdd, "-q", "-f", s.confPath(), "-l", seed).CombinedOutput()
	if err != nil {
		return fmt.Errorf("slapdtest: slapadd of the seed: %v\n%s", err, out)
	}
	return nil
}

func (s *Server) conf() string {
	return fmt.Sprintf(`# slapdtest: throwaway directory, loopback only
include         %[1]s/core.schema
include         %[1]s/cosine.schema
include         %[1]s/inetorgperson.schema
include         %[1]s/nis.schema

pidfile         %[2]s/slapd.pid
argsfile        %[2]s/slapd.args
modulepath      %[3]s
moduleload      back_mdb
moduleload      refint
sizelimit       unlimited

database        mdb
suffix          "%[4]s"
rootdn          "%[5]s"
rootpw          %[6]s
directory       %[2]s/data
maxsize         104857600
dbnosync
index           objectClass eq
index           uid,mail,cn eq
index           member,memberUid,roleOccupant eq
index           entryUUID eq
access to * by * read

# keep member and roleOccupant DNs right when a user is renamed or deleted
overlay         refint
refint_attributes member roleOccupant
`, SchemaDir, s.dir, ModuleDir, Suffix, AdminDN, AdminPassword)
}

func (s *Server) seed() string {
	var b strings.Builder
	fmt.Fprintf(&b, `dn: %s
objectClass: dcObject
objectClass: organization
dc: example
o: Example Org

dn: %s
objectClass: organizationalUnit
ou: people

dn: %s
objectClass: organizationalUnit
ou: groups

dn: %s
objectClass: organizationalUnit
ou: roles

`, Suffix, PeopleDN, GroupsDN, RolesDN)
	if !s.opts.NoSeed {
		for i, u := range []struct{ uid, given, sn string }{{"alice", "Alice", "Smith"}, {"bob", "Bob", "Jones"}, {"carol", "Carol", "White"}} {
			fmt.Fprintf(&b, "dn: uid=%s,%s\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: %[1]s\n"+
				"cn: %[3]s %[4]s\ngivenName: %[3]s\nsn: %[4]s\ndisplayName: %[3]s %[4]s\nmail: %[1]s@%[5]s\n",
				u.uid, PeopleDN, u.given, u.sn, Domain)
			if u.uid == "alice" {
				fmt.Fprintf(&b, "mail: alice.smith@%s\n", Domain)
			}
			fmt.Fprintf(&b, "uidNumber: %d\ngidNumber: 10000\nhomeDirectory: /home/%s\n\n", 10001+i, u.uid)
		}
		fmt.Fprintf(&b, `dn: cn=finance,%[1]s
objectClass: groupOfNames
cn: finance
description: Finance (groupOfNames, member DNs)
member: uid=alice,%[2]s
member: uid=carol,%[2]s

dn: cn=finance-posix,%[1]s
objectClass: posixGroup
cn: finance-posix
description: Finance (posixGroup, memberUid)
gidNumber: 5000
memberUid: alice
memberUid: carol

dn: cn=auditor,%[3]s
objectClass: organizationalRole
cn: auditor
roleOccupant: uid=carol,%[2]s

`, GroupsDN, PeopleDN, RolesDN)
	}
	if s.opts.LDIF != "" {
		b.WriteString(strings.TrimSpace(s.opts.LDIF))
		b.WriteString("\n")
	}
	return b.String()
}

// freePort returns a TCP port free on 127.0.0.1 at the moment.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string) string {
	if len(s) > 3000 {
		return "..." + s[len(s)-3000:]
	}
	return s
}

// lockedBuffer is a bytes.Buffer safe for the writer goroutines of exec
// and readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// ---------------------------------------------------------------- install

var (
	installOnce sync.Once
	installErr  error
)

// missing returns what is missing for running slapd, or "".
func missing() string {
	var m []string
	for _, f := range []string{SlapdBin, SlapAdd, filepath.Join(ModuleDir, "back_mdb.la"), filepath.Join(ModuleDir, "refint.la")} {
		if _, err := os.Stat(f); err != nil {
			m = append(m, f)
		}
	}
	for _, sc := range []string{"core", "cosine", "inetorgperson", "nis"} {
		if _, err := os.Stat(filepath.Join(SchemaDir, sc+".schema")); err != nil {
			m = append(m, filepath.Join(SchemaDir, sc+".schema"))
		}
	}
	return strings.Join(m, ", ")
}

// ensureAvailable checks that slapd can run here, installing it (once per
// process) if it is missing and we are not in CI.
func ensureAvailable() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: needs Linux (Debian/Ubuntu packages), not %s", ErrUnavailable, runtime.GOOS)
	}
	m := missing()
	if m == "" {
		return nil
	}
	if os.Getenv("CI") == "true" {
		return fmt.Errorf("%w: not installed (missing %s), and CI=true: the CI job must install it first: %s",
			ErrUnavailable, m, InstallScript)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not installed (missing %s); install it as root with %s", ErrUnavailable, m, InstallScript)
	}
	installOnce.Do(func() { installErr = runInstall() })
	if installErr != nil {
		return fmt.Errorf("%w: not installed (missing %s), and installing it failed: %v", ErrUnavailable, m, installErr)
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
	start := time.Now()
	out, err := exec.Command("/bin/bash", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v (after %v)\n%s", script, err, time.Since(start).Round(time.Second), tail(string(out)))
	}
	fmt.Fprintf(os.Stderr, "slapdtest: installed slapd with %s in %v\n", script, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// findInstallScript looks for InstallScript in the module root above the
// working directory, then above this source file.
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
				break
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
