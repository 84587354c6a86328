package main

// End-to-end tests of bonnied's identity flags (--ldap-*, --default-domain,
// --identity-file, --identity-config, --resolve-timeout, --resolve-every):
// the real bonnied binary (built by TestMain), a real OpenLDAP per test
// (internal/slapdtest), and real Cyrus 3.6.1 notifications captured in
// testdata, sent to bonnied's datagram socket from Cyrus's uid. No Cyrus
// runs: the directory is what these tests are about. The events' stored
// identities are read back from the log (store/sqlite) and through the CLI
// (bonnie whois).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/identity"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/slapdtest"
)

// The captured notifications: alice logs in, then a message is appended to
// her INBOX (mailbox user.alice, so owner alice, ACL "alice lrswipkxtecdan").
const (
	aliceLogin  = "005-Login.bin"
	aliceAppend = "012-MessageAppend.bin"
)

// capture reads a notification captured from Cyrus 3.6.1.
func capture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cyrus-3.6.1", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// idRun is one bonnied run with a datagram socket and its log.
type idRun struct {
	cfg  daemonConfig
	lv   *logView
	d    *daemon
	sock string
}

// startIdentityDaemon starts bonnied on a fresh data directory with a
// datagram socket and the given identity flags.
func startIdentityDaemon(t *testing.T, name string, flags ...string) *idRun {
	t.Helper()
	r := &idRun{sock: cyrustest.SocketPath(t, "notify.sock")}
	r.cfg = daemonConfig{data: t.TempDir(), datagram: r.sock, extra: flags}
	r.lv = newLogView(r.cfg.data)
	r.d = startDaemon(t, name, r.cfg, r.lv)
	return r
}

// send sends the captured notifications, one datagram each, from Cyrus's
// uid (the daemon's only allowed sender).
func (r *idRun) send(t *testing.T, names ...string) {
	t.Helper()
	var payloads [][]byte
	for _, n := range names {
		payloads = append(payloads, capture(t, n))
	}
	uid, gid := cyrusUID(t)
	sendAs(t, uid, gid, "datagram", r.sock, payloads...)
}

// aliceRecord returns the record of alice's event of type typ, or nil.
func aliceRecord(recs []bonnie.Record, typ bonnie.EventType) *bonnie.Record {
	for i := range recs {
		if recs[i].Event.Type == typ && recs[i].Event.User == "alice" {
			return &recs[i]
		}
	}
	return nil
}

// waitAlice waits until alice's Login and MessageAppend are in the log and
// returns them.
func (r *idRun) waitAlice(t *testing.T) (login, appendRec bonnie.Record) {
	t.Helper()
	recs := r.lv.waitFor(t, "alice's Login and MessageAppend", func(recs []bonnie.Record) bool {
		return aliceRecord(recs, bonnie.Login) != nil && aliceRecord(recs, bonnie.MessageAppend) != nil
	})
	return *aliceRecord(recs, bonnie.Login), *aliceRecord(recs, bonnie.MessageAppend)
}

// sendAlice sends alice's Login and MessageAppend and returns their
// records and how long after the send the second was in the log.
func (r *idRun) sendAlice(t *testing.T) (login, appendRec bonnie.Record, took time.Duration) {
	t.Helper()
	r.send(t, aliceLogin, aliceAppend)
	sent := time.Now()
	login, appendRec = r.waitAlice(t)
	return login, appendRec, time.Since(sent)
}

// aliceWant is what alice must resolve to.
type aliceWant struct {
	id, login, source string
	groups            []bonnie.Ref // contained in the identity's groups
	addresses         []string     // contained in its addresses
	displayName       string
	late              bool
}

// ldapAlice is alice as the seeded directory has her.
func ldapAlice(t *testing.T, s *slapdtest.Server) aliceWant {
	t.Helper()
	return aliceWant{
		id: s.UUID(t, "alice"), login: "alice", source: "ldap",
		groups: []bonnie.Ref{
			{ID: s.GroupUUID(t, "finance"), Name: "finance"},
			{ID: s.GroupUUID(t, "finance-posix"), Name: "finance-posix"},
		},
		addresses:   []string{"alice@example.org", "alice.smith@example.org"},
		displayName: "Alice Smith",
	}
}

// checkIdentity asserts that id (the identity of the subject "alice", in
// the role what) is w.
func checkIdentity(t *testing.T, what string, id *bonnie.Identity, w aliceWant) {
	t.Helper()
	if id == nil {
		t.Errorf("%s: no identity", what)
		return
	}
	if id.Unresolved || id.Kind != bonnie.IdentityUser || id.ID != w.id || id.Subject != "alice" ||
		id.Login != w.login || id.Source != w.source || id.Late != w.late || id.ResolvedAt.IsZero() {
		t.Errorf("%s: %+v\nwant a resolved user, subject alice, id %s, login %s, source %s, late %v",
			what, *id, w.id, w.login, w.source, w.late)
	}
	for _, g := range w.groups {
		if !slices.Contains(id.Groups, g) {
			t.Errorf("%s: groups %v, want %v among them", what, id.Groups, g)
		}
	}
	for _, a := range w.addresses {
		if !slices.Contains(id.Addresses, a) {
			t.Errorf("%s: addresses %v, want %s among them", what, id.Addresses, a)
		}
	}
	if w.displayName != "" && id.DisplayName != w.displayName {
		t.Errorf("%s: display name %q, want %q", what, id.DisplayName, w.displayName)
	}
}

// checkLoginIDs asserts the identities of alice's Login: only the actor.
func checkLoginIDs(t *testing.T, what string, ids *bonnie.Identities, w aliceWant) {
	t.Helper()
	if ids == nil {
		t.Fatalf("%s: no identities", what)
	}
	checkIdentity(t, what+" actor", ids.Actor, w)
	if ids.Owner != nil || ids.Subject != nil || len(ids.ACL) != 0 {
		t.Errorf("%s: identities %+v, want only the actor", what, *ids)
	}
}

// checkAppendIDs asserts the identities of alice's MessageAppend to
// user.alice: the actor, the owner and the one ACL entry are all alice.
func checkAppendIDs(t *testing.T, what string, ids *bonnie.Identities, w aliceWant) {
	t.Helper()
	if ids == nil {
		t.Fatalf("%s: no identities", what)
	}
	checkIdentity(t, what+" actor", ids.Actor, w)
	checkIdentity(t, what+" owner", ids.Owner, w)
	if len(ids.ACL) != 1 {
		t.Errorf("%s: %d ACL identities, want 1 (alice)", what, len(ids.ACL))
	} else {
		checkIdentity(t, what+" ACL[0]", &ids.ACL[0], w)
	}
	if ids.Subject != nil {
		t.Errorf("%s: an ACL subject identity %+v", what, *ids.Subject)
	}
}

// checkResolved asserts the identities stored with alice's Login and
// MessageAppend.
func checkResolved(t *testing.T, login, appendRec bonnie.Record, w aliceWant) {
	t.Helper()
	if appendRec.Event.Mailbox.Owner != "alice" {
		t.Errorf("MessageAppend: mailbox owner %q, want alice", appendRec.Event.Mailbox.Owner)
	}
	checkLoginIDs(t, "Login", login.Event.Identities, w)
	checkAppendIDs(t, "MessageAppend", appendRec.Event.Identities, w)
}

// checkUnresolved asserts that every identity of rec is marked unresolved
// with a reason, and returns the actor's.
func checkUnresolved(t *testing.T, rec bonnie.Record) *bonnie.Identity {
	t.Helper()
	ids := rec.Event.Identities
	if ids == nil || ids.Actor == nil {
		t.Fatalf("%s at %d: identities %+v, want an unresolved actor", rec.Event.Type, rec.Position, ids)
	}
	if !ids.Unresolved() {
		t.Errorf("%s at %d: identities not marked unresolved", rec.Event.Type, rec.Position)
	}
	for _, id := range ids.All() {
		if !id.Unresolved || id.Reason == "" || id.ID != "" || id.Subject != "alice" || id.Kind != bonnie.IdentityUser {
			t.Errorf("%s at %d: identity %+v, want subject alice, kind user, unresolved with a reason, no id",
				rec.Event.Type, rec.Position, *id)
		}
	}
	return ids.Actor
}

// whoisOut is what `bonnie whois --json` prints (examples/bonnie/whois.go).
type whoisOut struct {
	Subject string `json:"subject"`
	Log     *struct {
		Position   bonnie.Position  `json:"position"`
		Event      string           `json:"event"`
		ResolvedBy bonnie.Position  `json:"resolvedBy"`
		Identity   *bonnie.Identity `json:"identity"`
	} `json:"log"`
	Pending *struct {
		Position bonnie.Position  `json:"position"`
		Event    string           `json:"event"`
		Identity *bonnie.Identity `json:"identity"`
	} `json:"pending"`
	Directory      *bonnie.Identity `json:"directory"`
	DirectoryError string           `json:"directoryError"`
}

// bonnieCLI runs the CLI and returns its standard output; it fails the test
// unless the exit status is wantExit.
func bonnieCLI(t *testing.T, wantExit int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bonnieBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("bonnie %s: %v", strings.Join(args, " "), err)
	}
	if code != wantExit {
		t.Fatalf("bonnie %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), code, wantExit, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// whois runs `bonnie whois NAME --data DIR` and its --json form; it checks
// that the text names the same identity as the JSON and returns the
// latter.
func whois(t *testing.T, data, name string, extra ...string) whoisOut {
	t.Helper()
	text := bonnieCLI(t, 0, append([]string{"whois", name, "--data", data}, extra...)...)
	out := bonnieCLI(t, 0, append([]string{"whois", name, "--data", data, "--json"}, extra...)...)
	var w whoisOut
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		t.Fatalf("bonnie whois --json: %v\n%s", err, out)
	}
	if w.Log != nil && w.Log.Identity != nil {
		want := "log:       " + string(w.Log.Identity.Kind) + " " + w.Log.Identity.ID
		if !strings.Contains(text, want) {
			t.Errorf("bonnie whois %s --data %s prints\n%s\nwant a line with %q", name, data, text, want)
		}
	}
	t.Logf("bonnie whois %s:\n%s", name, text)
	return w
}

// checkWhois asserts that whois finds alice's id in the log, resolved at
// ingest (resolvedBy 0) or by the IdentityResolved record resolvedBy.
func checkWhois(t *testing.T, data string, w aliceWant, resolvedBy bonnie.Position) whoisOut {
	t.Helper()
	res := whois(t, data, "alice")
	if res.Log == nil || res.Log.Identity == nil {
		t.Fatalf("bonnie whois alice: no resolution in the log: %+v", res)
	}
	if res.Log.Identity.ID != w.id || res.Log.Identity.Kind != bonnie.IdentityUser || res.Log.ResolvedBy != resolvedBy {
		t.Errorf("bonnie whois alice: log %s at %d resolved by %d: %+v\nwant id %s, resolved by %d",
			res.Log.Event, res.Log.Position, res.Log.ResolvedBy, *res.Log.Identity, w.id, resolvedBy)
	}
	if res.Pending != nil {
		t.Errorf("bonnie whois alice: pending %+v, want none", *res.Pending)
	}
	// The persistent id finds the same person.
	if byID := whois(t, data, w.id); byID.Log == nil || byID.Log.Identity == nil || byID.Log.Identity.ID != w.id {
		t.Errorf("bonnie whois %s (alice's id): %+v", w.id, byID)
	}
	return res
}

// writeFile writes content to a new file in a temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestIdentityLDAP runs bonnied against the seeded directory, anonymously
// and bound as the directory's admin, and checks the identities stored with
// alice's Login and MessageAppend: her entryUUID as actor, owner and ACL
// entry, her groups (finance, finance-posix), addresses and display name;
// and that `bonnie whois alice` finds the same id in the log. A wrong bind
// password leaves the identities unresolved (so the bind flags are used).
func TestIdentityLDAP(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	s := slapdtest.Start(t, slapdtest.Options{})
	want := ldapAlice(t, s)
	base := []string{"--ldap-url", s.URL(), "--ldap-base", slapdtest.Suffix}

	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"anonymous", nil},
		{"bind", []string{"--ldap-bind-dn", slapdtest.AdminDN,
			"--ldap-password-file", writeFile(t, "ldap.secret", slapdtest.AdminPassword+"\n")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startIdentityDaemon(t, "bonnied", append(slices.Clone(base), tc.flags...)...)
			r.d.waitLine(t, regexp.MustCompile(`msg="identities resolved against LDAP".*url=`+regexp.QuoteMeta(s.URL())))
			login, appendRec, took := r.sendAlice(t)
			t.Logf("stored %v after the send", took)
			r.d.stop(t)
			if bad := r.d.out.matching(regexp.MustCompile(`does not answer|left unresolved`)); len(bad) > 0 {
				t.Errorf("bonnied could not use the directory:\n%s", strings.Join(bad, "\n"))
			}
			checkResolved(t, login, appendRec, want)
			r.lv.verify(t, 0)
			res := checkWhois(t, r.cfg.data, want, 0)
			if res.Log.Position != appendRec.Position {
				t.Errorf("bonnie whois alice: the log's resolution is at %d, want %d (the MessageAppend, alice's last event)",
					res.Log.Position, appendRec.Position)
			}
			// With the same flags, whois also asks the directory: same id.
			now := whois(t, r.cfg.data, "alice", append(slices.Clone(base), tc.flags...)...)
			if now.Directory == nil || now.Directory.ID != want.id {
				t.Errorf("bonnie whois alice --ldap-url ...: directory %+v (%s), want id %s", now.Directory, now.DirectoryError, want.id)
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		r := startIdentityDaemon(t, "bonnied", append(slices.Clone(base),
			"--ldap-bind-dn", slapdtest.AdminDN,
			"--ldap-password-file", writeFile(t, "ldap.secret", "not-"+slapdtest.AdminPassword+"\n"),
			"--resolve-timeout", "2s")...)
		r.d.waitLine(t, regexp.MustCompile(`does not answer yet.*Invalid Credentials`))
		login, appendRec, _ := r.sendAlice(t)
		r.d.stop(t)
		for _, rec := range []bonnie.Record{login, appendRec} {
			if a := checkUnresolved(t, rec); !strings.Contains(a.Reason, "Invalid Credentials") {
				t.Errorf("%s: reason %q, want the directory's Invalid Credentials", rec.Event.Type, a.Reason)
			}
		}
		if ofType(r.lv.records(t), bonnie.IdentityResolved) != nil {
			t.Error("IdentityResolved events with a wrong bind password")
		}
		r.lv.verify(t, 0)
	})
}

// TestIdentityLDAPFlags checks the flags that shape a lookup:
// --ldap-id-attr picks the persistent id, --ldap-login-attrs what a login
// matches (and the canonical login), --default-domain lets the bare login
// "alice" match alice@example.org.
func TestIdentityLDAPFlags(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	s := slapdtest.Start(t, slapdtest.Options{})
	alice := ldapAlice(t, s)
	base := []string{"--ldap-url", s.URL(), "--ldap-base", slapdtest.Suffix}

	t.Run("id attr", func(t *testing.T) {
		r := startIdentityDaemon(t, "bonnied", append(slices.Clone(base), "--ldap-id-attr", "uidNumber")...)
		login, appendRec, _ := r.sendAlice(t)
		r.d.stop(t)
		w := alice
		w.id = "10001" // the seed's uidNumber of alice
		// The groups have no uidNumber: their DN stands in as their id.
		w.groups = []bonnie.Ref{
			{ID: slapdtest.GroupDN("finance"), Name: "finance"},
			{ID: slapdtest.GroupDN("finance-posix"), Name: "finance-posix"},
		}
		checkResolved(t, login, appendRec, w)
		checkWhois(t, r.cfg.data, w, 0)
	})

	t.Run("login attrs and default domain", func(t *testing.T) {
		r := startIdentityDaemon(t, "bonnied", append(slices.Clone(base),
			"--ldap-login-attrs", "mail", "--default-domain", slapdtest.Domain)...)
		login, appendRec, _ := r.sendAlice(t)
		r.d.stop(t)
		w := alice
		w.login = "alice@example.org" // the first mail value is the canonical login
		// Both groups: a posixGroup's memberUid names the RFC 2307 uid,
		// whatever the login attributes are.
		checkResolved(t, login, appendRec, w)
		if a := login.Event.Identities.Actor; a != nil && !slices.Contains(a.Aliases, "alice.smith@example.org") {
			t.Errorf("aliases %v, want alice.smith@example.org among them", a.Aliases)
		}
	})

	t.Run("login attrs without default domain", func(t *testing.T) {
		r := startIdentityDaemon(t, "bonnied", append(slices.Clone(base), "--ldap-login-attrs", "mail")...)
		login, _, _ := r.sendAlice(t)
		r.d.stop(t)
		// "alice" is no mail address: the directory answers that it does
		// not know her, which is an answer, not a failure.
		a := login.Event.Identities.Actor
		if a == nil || a.Unresolved || a.Kind != bonnie.IdentityLogin || a.ID != "alice" || a.Source != "ldap" ||
			!strings.Contains(a.Reason, "not in the directory") {
			t.Errorf("actor %+v, want kind login, id alice, source ldap, not in the directory", a)
		}
	})
}

// TestIdentityConfig gives the LDAP settings in an --identity-config file;
// a flag overrides the file's key (the file's ldap-id-attr uidNumber loses
// to --ldap-id-attr entryUUID).
func TestIdentityConfig(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	s := slapdtest.Start(t, slapdtest.Options{})
	want := ldapAlice(t, s)
	cfg := writeFile(t, "identity.yaml", "ldap-url: "+s.URL()+"\n"+
		"ldap-base: "+slapdtest.Suffix+"\n"+
		"ldap-bind-dn: "+slapdtest.AdminDN+"\n"+
		"ldap-password-file: "+writeFile(t, "ldap.secret", slapdtest.AdminPassword)+"\n"+
		"ldap-id-attr: uidNumber\n"+
		"ldap:\n  requestTimeout: 3s\n  poolSize: 2\n")
	r := startIdentityDaemon(t, "bonnied", "--identity-config", cfg, "--ldap-id-attr", "entryUUID")
	r.d.waitLine(t, regexp.MustCompile(`msg="identities resolved against LDAP".*id_attr=entryUUID`))
	login, appendRec, _ := r.sendAlice(t)
	r.d.stop(t)
	checkResolved(t, login, appendRec, want)
	checkWhois(t, r.cfg.data, want, 0)
}

// TestIdentityLDAPDown starts bonnied while the directory is down: alice's
// events are stored at once (nothing lost, no wait beyond the bounded one)
// with their identities marked unresolved, and whois reports them pending.
// Once slapd is back, the resolution pass (--resolve-every) appends an
// IdentityResolved event per event, naming its position and carrying
// alice's id; the original events are left as they were.
func TestIdentityLDAPDown(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	s := slapdtest.Start(t, slapdtest.Options{})
	want := ldapAlice(t, s) // read while it runs
	s.Stop()
	const resolveTimeout = 300 * time.Millisecond
	r := startIdentityDaemon(t, "bonnied", "--ldap-url", s.URL(), "--ldap-base", slapdtest.Suffix,
		"--resolve-every", "200ms", "--resolve-timeout", resolveTimeout.String())
	r.d.waitLine(t, regexp.MustCompile(`level=WARN msg="the directory does not answer yet`))

	login, appendRec, took := r.sendAlice(t)
	t.Logf("stored %v after the send, the directory down", took)
	// The directory refuses connections: nothing should wait for it. The
	// bound is loose (a loaded machine) but far below what an unbounded
	// wait on the LDAP library's timeouts would take.
	if limit := resolveTimeout + 2*time.Second; took > limit {
		t.Errorf("events stored %v after the send, want within %v (--resolve-timeout %v)", took, limit, resolveTimeout)
	}
	for _, rec := range []bonnie.Record{login, appendRec} {
		checkUnresolved(t, rec)
	}
	r.d.waitLine(t, regexp.MustCompile(`level=WARN msg="identities left unresolved`))
	// The resolution passes run, and fail, while it is down.
	r.d.waitLine(t, regexp.MustCompile(`msg="identity still unresolved" position=`+
		strconv.FormatUint(uint64(login.Position), 10)))
	if res := whois(t, r.cfg.data, "alice"); res.Log != nil || res.Pending == nil ||
		res.Pending.Position != appendRec.Position || res.Pending.Identity == nil || !res.Pending.Identity.Unresolved {
		t.Errorf("bonnie whois alice with the directory down: %+v, want no resolution and the MessageAppend at %d pending",
			res, appendRec.Position)
	}
	if n := len(ofType(r.lv.records(t), bonnie.IdentityResolved)); n != 0 {
		t.Fatalf("%d IdentityResolved events while the directory is down", n)
	}

	restarted := time.Now()
	s.Start(t)
	resolutions := map[bonnie.Position]bonnie.Record{}
	r.lv.waitFor(t, "IdentityResolved events for alice's two events", func(recs []bonnie.Record) bool {
		for _, rec := range ofType(recs, bonnie.IdentityResolved) {
			if res, err := rec.Event.Resolution(); err == nil {
				resolutions[res.Resolves] = rec
			}
		}
		_, l := resolutions[login.Position]
		_, a := resolutions[appendRec.Position]
		return l && a
	})
	t.Logf("resolved %v after slapd was back (the resolver retries a directory that was away after 5s)",
		time.Since(restarted).Round(time.Millisecond))
	late := want
	late.late = true
	for _, orig := range []bonnie.Record{login, appendRec} {
		rec := resolutions[orig.Position]
		if rec.Position <= appendRec.Position {
			t.Errorf("IdentityResolved at %d, want after the events it resolves", rec.Position)
		}
		if rec.Event.Service != bonnie.ResolveSource {
			t.Errorf("IdentityResolved at %d: service %q, want %q", rec.Position, rec.Event.Service, bonnie.ResolveSource)
		}
		res, err := rec.Event.Resolution()
		if err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("IdentityResolved at %d of the %s at %d", rec.Position, orig.Event.Type, res.Resolves)
		if orig.Event.Type == bonnie.Login {
			checkLoginIDs(t, what, res, late)
		} else {
			checkAppendIDs(t, what, res, late)
		}
		if res.Actor != nil && !res.Actor.ResolvedAt.After(restarted) {
			t.Errorf("%s: resolved at %v, before slapd was back (%v)", what, res.Actor.ResolvedAt, restarted)
		}
	}
	r.d.stop(t)
	after := r.lv.records(t)
	// Once per event, however many passes ran.
	if n := len(ofType(after, bonnie.IdentityResolved)); n != 2 {
		t.Errorf("%d IdentityResolved events, want 2", n)
	}
	// The stored events are not rewritten.
	for _, orig := range []bonnie.Record{login, appendRec} {
		i := slices.IndexFunc(after, func(x bonnie.Record) bool { return x.Position == orig.Position })
		if i < 0 || !after[i].Event.Identities.Unresolved() {
			t.Errorf("the %s at %d changed after the resolution", orig.Event.Type, orig.Position)
		}
	}
	r.lv.verify(t, 0)
	checkWhois(t, r.cfg.data, late, resolutions[appendRec.Position].Position)
}

// blackhole is a TCP listener that accepts connections and never answers:
// a directory that hangs.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "ldap://" + ln.Addr().String()
}

// TestIdentityLDAPHangs points bonnied at a directory that accepts
// connections and never answers. The start-up check gives up after its 5s,
// and the resolver then counts the directory as away and fails at once for
// RetryAfter: an event is stored at once, unresolved. Once that has passed,
// a lookup waits for the directory until --resolve-timeout (300ms), not the
// LDAP library's own timeouts (5s a request): the event is stored that
// soon, unresolved for want of an answer. With --resolve-every 0 no pass
// runs (and none shares its lookup with ingest).
func TestIdentityLDAPHangs(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	const resolveTimeout = 300 * time.Millisecond
	r := startIdentityDaemon(t, "bonnied", "--ldap-url", blackhole(t), "--ldap-base", slapdtest.Suffix,
		"--resolve-every", "0", "--resolve-timeout", resolveTimeout.String())
	r.d.waitLine(t, regexp.MustCompile(`level=WARN msg="the directory does not answer yet`))
	// The resolver counted the directory as away before that line.
	awayUntil := time.Now().Add(identity.DefaultLDAPOptions().RetryAfter)

	send := func(name string, typ bonnie.EventType) (bonnie.Record, time.Duration, time.Duration) {
		t.Helper()
		start := time.Now()
		r.send(t, name)
		sendTook := time.Since(start)
		recs := r.lv.waitFor(t, "alice's "+typ.String(), func(recs []bonnie.Record) bool { return aliceRecord(recs, typ) != nil })
		return *aliceRecord(recs, typ), time.Since(start), sendTook
	}
	login, took, _ := send(aliceLogin, bonnie.Login)
	reason := checkUnresolved(t, login).Reason
	t.Logf("Login stored %v after the send began, the directory away: %s", took, reason)
	if !strings.Contains(reason, "next try in") {
		t.Errorf("Login: reason %q, want the resolver's fail-fast answer for a directory away", reason)
	}

	time.Sleep(time.Until(awayUntil) + 100*time.Millisecond)
	appendRec, took, sendTook := send(aliceAppend, bonnie.MessageAppend)
	reason = checkUnresolved(t, appendRec).Reason
	t.Logf("MessageAppend stored %v after the send began (the sender took %v), the directory hanging: %s", took, sendTook, reason)
	// It waited for the directory, up to the deadline and not much more:
	// unbounded, the lookup would wait for the request timeout (5s).
	if limit := sendTook + resolveTimeout + 2*time.Second; took < resolveTimeout || took > limit {
		t.Errorf("MessageAppend stored %v after the send began, want between %v and %v (--resolve-timeout %v)",
			took, resolveTimeout, limit, resolveTimeout)
	}
	// The engine's deadline, or the resolver's lookup cut short by it; not
	// the fail-fast answer of a directory known to be away.
	if !strings.Contains(reason, "no answer within "+resolveTimeout.String()) &&
		(!strings.Contains(reason, "deadline exceeded") || strings.Contains(reason, "next try in")) {
		t.Errorf("MessageAppend: reason %q, want the --resolve-timeout deadline", reason)
	}
	r.d.stop(t)
	if n := len(ofType(r.lv.records(t), bonnie.IdentityResolved)); n != 0 {
		t.Errorf("%d IdentityResolved events with --resolve-every 0 and a directory that never answers", n)
	}
	r.lv.verify(t, 0)
}

// staticYAML is an identity file in which alice's canonical login is her
// full address: "alice" only matches it with a default domain.
const staticYAML = `users:
  - id: 7d1f0a52-5b0e-4f7e-9a11-static-alice
    login: alice@example.org
    addresses: [alice@example.org]
    displayName: Alice from the file
  - id: static-bob
    login: bob@example.org
groups:
  - {id: g-finance, name: finance, members: [alice@example.org, static-bob]}
roles:
  - {id: r-auditor, name: auditor, members: [7d1f0a52-5b0e-4f7e-9a11-static-alice]}
`

// TestIdentityFile resolves against a static --identity-file (YAML and
// the same in JSON): the actor and owner are the file's id for alice, with
// the file's group and role; without --default-domain (and none in the
// file) "alice" is not in the file and stays a plain login.
func TestIdentityFile(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	want := aliceWant{id: "7d1f0a52-5b0e-4f7e-9a11-static-alice", login: "alice@example.org", source: "static",
		groups: []bonnie.Ref{{ID: "g-finance", Name: "finance"}}, addresses: []string{"alice@example.org"},
		displayName: "Alice from the file"}
	jsonFile := `{"users": [
  {"id": "7d1f0a52-5b0e-4f7e-9a11-static-alice", "login": "alice@example.org",
   "addresses": ["alice@example.org"], "displayName": "Alice from the file"},
  {"id": "static-bob", "login": "bob@example.org"}],
 "groups": [{"id": "g-finance", "name": "finance", "members": ["alice@example.org", "static-bob"]}],
 "roles": [{"id": "r-auditor", "name": "auditor", "members": ["7d1f0a52-5b0e-4f7e-9a11-static-alice"]}]}`

	for _, tc := range []struct{ name, file, content string }{
		{"yaml", "identities.yaml", staticYAML},
		{"json", "identities.json", jsonFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.file, tc.content)
			r := startIdentityDaemon(t, "bonnied", "--identity-file", path, "--default-domain", "example.org")
			r.d.waitLine(t, regexp.MustCompile(`msg="identities resolved from a file" file=`+regexp.QuoteMeta(path)))
			login, appendRec, _ := r.sendAlice(t)
			r.d.stop(t)
			checkResolved(t, login, appendRec, want)
			if a := login.Event.Identities.Actor; a != nil && !slices.Equal(a.Roles, []bonnie.Ref{{ID: "r-auditor", Name: "auditor"}}) {
				t.Errorf("actor roles %v, want auditor", a.Roles)
			}
			r.lv.verify(t, 0)
			checkWhois(t, r.cfg.data, want, 0)
		})
	}

	t.Run("no default domain", func(t *testing.T) {
		r := startIdentityDaemon(t, "bonnied", "--identity-file", writeFile(t, "identities.yaml", staticYAML))
		login, _, _ := r.sendAlice(t)
		r.d.stop(t)
		a := login.Event.Identities.Actor
		if a == nil || a.Unresolved || a.Kind != bonnie.IdentityLogin || a.ID != "alice" || a.Source != "static" {
			t.Errorf("actor %+v, want the plain login alice (kind login, source static)", a)
		}
	})
}

// TestIdentityBadFlags gives bonnied identity settings it must refuse: it
// exits with status 1 and a clear message, without serving (no socket, no
// DaemonStart).
func TestIdentityBadFlags(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	okFile := writeFile(t, "identities.yaml", staticYAML)
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error
	}{
		{"bad scheme", []string{"--ldap-url", "http://127.0.0.1:389", "--ldap-base", slapdtest.Suffix},
			`LDAP URL "http://127.0.0.1:389": want ldap://HOST:PORT or ldaps://HOST:PORT`},
		{"no scheme", []string{"--ldap-url", "127.0.0.1:389", "--ldap-base", slapdtest.Suffix},
			`want ldap://HOST:PORT`},
		{"no base", []string{"--ldap-url", "ldap://127.0.0.1:389"}, "LDAP base DN is required"},
		{"bad base", []string{"--ldap-url", "ldap://127.0.0.1:389", "--ldap-base", "not a DN"}, `base DN "not a DN"`},
		{"LDAP and a file", []string{"--ldap-url", "ldap://127.0.0.1:389", "--ldap-base", slapdtest.Suffix,
			"--identity-file", okFile}, "give an LDAP URL or an identity file, not both"},
		{"missing password file", []string{"--ldap-url", "ldap://127.0.0.1:389", "--ldap-base", slapdtest.Suffix,
			"--ldap-bind-dn", slapdtest.AdminDN, "--ldap-password-file", "/nonexistent/ldap.secret"},
			"LDAP password file: open /nonexistent/ldap.secret"},
		{"missing identity file", []string{"--identity-file", "/nonexistent/identities.yaml"},
			"static file: stat /nonexistent/identities.yaml"},
		{"bad identity file", []string{"--identity-file", writeFile(t, "typo.yaml", "users:\n  - {id: a, login: alice, groupz: [x]}\n")},
			"field groupz not found"},
		{"identity file with a dangling member", []string{"--identity-file",
			writeFile(t, "dangling.yaml", "users:\n  - {id: a, login: alice}\ngroups:\n  - {id: g, name: finance, members: [nobody]}\n")},
			`group finance member "nobody" is no user`},
		{"missing config", []string{"--identity-config", "/nonexistent/identity.yaml"},
			"identity: config: open /nonexistent/identity.yaml"},
		{"bad config", []string{"--identity-config", writeFile(t, "identity.yaml", "ldap-uri: ldap://127.0.0.1:389\n")},
			"field ldap-uri not found"},
		{"config and a file", []string{"--identity-config",
			writeFile(t, "identity.yaml", "ldap-url: ldap://127.0.0.1:389\nldap-base: dc=example,dc=org\n"),
			"--identity-file", okFile}, "not both"},
		{"bad resolve timeout", []string{"--resolve-timeout", "soon"}, `invalid value "soon" for flag -resolve-timeout`},
		{"bad resolve every", []string{"--resolve-every", "hourly"}, `invalid value "hourly" for flag -resolve-every`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := cyrustest.SocketPath(t, "notify.sock")
			data := filepath.Join(t.TempDir(), "data")
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, bonniedBin, append([]string{"--data", data, "--metrics", "",
				"--cyrus-socket", sock}, tc.args...)...)
			cmd.Env = cleanEnv()
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("bonnied %s: %v, want exit status 1\n%s", strings.Join(tc.args, " "), err, stderr.String())
			}
			out := stderr.String()
			if !strings.Contains(out, "bonnied: ") || !strings.Contains(out, tc.want) {
				t.Errorf("bonnied %s printed\n%s\nwant an error with %q", strings.Join(tc.args, " "), out, tc.want)
			}
			if strings.Contains(out, "bonnied started") || badOutput.MatchString(out) {
				t.Errorf("bonnied %s started or failed badly:\n%s", strings.Join(tc.args, " "), out)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("bonnied %s left %s behind (%v): it must fail before creating its sockets",
					strings.Join(tc.args, " "), sock, err)
			}
			// The settings are checked before the data directory is made:
			// a refused start leaves nothing behind.
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("bonnied %s created %s (%v) before refusing", strings.Join(tc.args, " "), data, err)
			}
			t.Logf("%s", strings.TrimSpace(out))
		})
	}
}
