package identity_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/identity"
	"github.com/bonnie-archive/bonnie/internal/slapdtest"
)

// janeLDIF is a person with a uid that is not her mail's local part and
// two addresses: "jdoe2", "j.doe2@example.org" and "jane.doe@example.org"
// are all her.
const janeLDIF = `
dn: uid=jdoe2,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: jdoe2
cn: Jane Doe
sn: Doe
displayName: Jane Doe
mail: jane.doe@example.org
mail: j.doe2@example.org
`

func newLDAP(t *testing.T, s *slapdtest.Server, mod func(*identity.LDAPOptions)) *identity.LDAP {
	t.Helper()
	o := identity.LDAPOptions{URL: s.URL(), BaseDN: slapdtest.Suffix, DefaultDomain: slapdtest.Domain}
	if mod != nil {
		mod(&o)
	}
	l, err := identity.NewLDAP(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func resolve(t *testing.T, r bonnie.Resolver, subject string) bonnie.Identity {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := r.Resolve(ctx, subject, time.Now())
	if err != nil {
		t.Fatalf("Resolve(%q): %v", subject, err)
	}
	return id
}

func refNames(refs []bonnie.Ref) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Name)
	}
	return out
}

func TestLDAPUser(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	l := newLDAP(t, s, nil)
	a := resolve(t, l, "alice")
	want := bonnie.Identity{Subject: "alice", Kind: bonnie.IdentityUser, ID: s.UUID(t, "alice"), Login: "alice",
		Aliases: []string{"alice@example.org", "alice.smith@example.org"}, Addresses: []string{"alice@example.org", "alice.smith@example.org"},
		DisplayName: "Alice Smith", Source: "ldap"}
	if a.ID != want.ID || a.Login != want.Login || !slices.Equal(a.Aliases, want.Aliases) || !slices.Equal(a.Addresses, want.Addresses) ||
		a.DisplayName != want.DisplayName || a.Kind != want.Kind || a.Source != "ldap" || a.ResolvedAt.IsZero() {
		t.Errorf("alice:\n got %+v\nwant %+v", a, want)
	}
	if got := refNames(a.Groups); !slices.Equal(got, []string{"finance", "finance-posix"}) {
		t.Errorf("alice's groups %v", got)
	}
	if a.Groups[0].ID != s.GroupUUID(t, "finance") {
		t.Errorf("group id %s, want finance's entryUUID", a.Groups[0].ID)
	}
	if len(a.Roles) != 0 {
		t.Errorf("alice's roles %v", a.Roles)
	}
	c := resolve(t, l, "carol")
	if got := refNames(c.Roles); !slices.Equal(got, []string{"auditor"}) {
		t.Errorf("carol's roles %v", got)
	}
	b := resolve(t, l, "bob")
	if len(b.Groups) != 0 || b.ID == a.ID {
		t.Errorf("bob %+v", b)
	}
}

func TestLDAPAliasLoginsResolveToOnePerson(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{LDIF: janeLDIF})
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.NoCache = true })
	jane := s.UUID(t, "jdoe2")
	for _, login := range []string{"jdoe2", "JDOE2", "j.doe2@example.org", "jane.doe@example.org",
		"jdoe2@example.org",                          // uid with the default domain
		"j.doe2",                                     // a mail's local part, bare
		"j/doe2@example.org", "jane/doe@example.org", // Kolab's spelling
	} {
		id := resolve(t, l, login)
		if id.ID != jane || id.Login != "jdoe2" || id.Subject != login || id.Kind != bonnie.IdentityUser {
			t.Errorf("%s -> %+v, want jdoe2 %s", login, id, jane)
		}
	}
	alice := s.UUID(t, "alice")
	for _, login := range []string{"alice", "alice@example.org", "alice.smith@example.org", "alice/smith@example.org"} {
		if id := resolve(t, l, login); id.ID != alice {
			t.Errorf("%s -> %+v, want alice %s", login, id, alice)
		}
	}
	// Without the default domain a bare local part is only a uid.
	strict := newLDAP(t, s, func(o *identity.LDAPOptions) { o.DefaultDomain = ""; o.NoCache = true })
	if id := resolve(t, strict, "j.doe2"); id.Kind != bonnie.IdentityLogin {
		t.Errorf("j.doe2 without default domain -> %+v", id)
	}
}

func TestLDAPSpecialsUnknownsAndGroups(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	l := newLDAP(t, s, nil)
	for _, sub := range []string{"anyone", "anonymous"} {
		if id := resolve(t, l, sub); id.Kind != bonnie.IdentitySpecial || id.ID != sub {
			t.Errorf("%s -> %+v", sub, id)
		}
	}
	neg := resolve(t, l, "-bob")
	if !neg.Negative || neg.ID != s.UUID(t, "bob") || neg.Subject != "-bob" {
		t.Errorf("-bob -> %+v", neg)
	}
	// The cache keeps negation per question.
	if pos := resolve(t, l, "bob"); pos.Negative || pos.ID != neg.ID {
		t.Errorf("bob after -bob -> %+v", pos)
	}
	cy := resolve(t, l, "cyrus")
	if cy.Kind != bonnie.IdentityLogin || cy.ID != "cyrus" || cy.Reason == "" || cy.Unresolved {
		t.Errorf("cyrus (not in the directory) -> %+v", cy)
	}
	alice, carol := s.UUID(t, "alice"), s.UUID(t, "carol")
	for _, g := range []string{"group:finance", "group:finance-posix", "-group:finance"} {
		id := resolve(t, l, g)
		if id.Kind != bonnie.IdentityGroup || id.ID == "" ||
			!slices.Equal(id.Members, []bonnie.Ref{{ID: alice, Name: "alice"}, {ID: carol, Name: "carol"}}) {
			t.Errorf("%s -> %+v", g, id)
		}
	}
	none := resolve(t, l, "group:nosuch")
	if none.Kind != bonnie.IdentityGroup || none.ID != "" || none.Reason == "" {
		t.Errorf("group:nosuch -> %+v", none)
	}
}

func TestLDAPNestedGroupsAndConfigurableID(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{LDIF: `
dn: cn=all-staff,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: all-staff
member: cn=finance,ou=groups,dc=example,dc=org
member: uid=bob,ou=people,dc=example,dc=org
member: uid=gone,ou=people,dc=example,dc=org
`})
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.IDAttr = "uidNumber" })
	g := resolve(t, l, "group:all-staff")
	if got := refNames(g.Members); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Errorf("all-staff members %v (nested finance, dangling DN dropped)", got)
	}
	a := resolve(t, l, "alice")
	if a.ID != "10001" {
		t.Errorf("alice with IDAttr uidNumber: %q", a.ID)
	}
	if got := refNames(a.Groups); !slices.Equal(got, []string{"all-staff", "finance", "finance-posix"}) {
		t.Errorf("alice's groups with nesting: %v", got)
	}
	// An id attribute the entries lack is an answer with a reason, not
	// an outage.
	bad := newLDAP(t, s, func(o *identity.LDAPOptions) { o.IDAttr = "nsUniqueId" })
	if id := resolve(t, bad, "alice"); id.Kind != bonnie.IdentityLogin || id.Reason == "" {
		t.Errorf("alice without nsUniqueId -> %+v", id)
	}
}

// A rename keeps entryUUID: both names resolve to the same id, and the
// cache does not keep the old name alive once the new one was looked up.
func TestLDAPRenameKeepsID(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.Cache.TTL = time.Hour })
	before := resolve(t, l, "alice")
	s.Rename(t, "alice", "alice2", "alice2@example.org")
	after := resolve(t, l, "alice2")
	if after.ID != before.ID || after.Login != "alice2" || !slices.Equal(after.Addresses, []string{"alice2@example.org"}) {
		t.Fatalf("after rename alice2 -> %+v, before alice was %s", after, before.ID)
	}
	if !slices.Equal(refNames(after.Groups), []string{"finance", "finance-posix"}) {
		t.Errorf("alice2's groups %v", refNames(after.Groups))
	}
	// The fresh answer about the id showed the change: the cached answer
	// for "alice" is gone, though its TTL (an hour) has not passed.
	if old := resolve(t, l, "alice"); old.Kind != bonnie.IdentityLogin {
		t.Errorf("alice after the rename -> %+v", old)
	}
	// The old value was not touched.
	if before.Login != "alice" {
		t.Errorf("the first answer changed: %+v", before)
	}
}

func TestLDAPCacheTTL(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.Cache = identity.CacheOptions{TTL: time.Minute, Now: clock} })
	first := resolve(t, l, "group:finance")
	s.AddMember(t, "finance", "bob")
	if again := resolve(t, l, "group:finance"); len(again.Members) != 2 {
		t.Errorf("within the TTL the cached answer is served: %v", refNames(again.Members))
	}
	hits, misses := l.Cache().Stats()
	if hits != 1 || misses != 1 {
		t.Errorf("hits %d misses %d", hits, misses)
	}
	now.Add(int64(time.Minute))
	later := resolve(t, l, "group:finance")
	if got := refNames(later.Members); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Errorf("after the TTL: %v", got)
	}
	if got := refNames(first.Members); !slices.Equal(got, []string{"alice", "carol"}) {
		t.Errorf("the earlier snapshot changed: %v", got)
	}
	// bob's cached answer (no groups) would be stale now: looking him up
	// after the group changed shows finance.
	if got := refNames(resolve(t, l, "bob").Groups); !slices.Equal(got, []string{"finance", "finance-posix"}) {
		t.Errorf("bob's groups %v", got)
	}
	l.Cache().Invalidate("group:finance")
	l.Cache().Purge()
}

// The cache drops a user's answer when a fresh group answer shows that
// user joining or leaving, before the TTL.
func TestLDAPCacheDropsMembersThatChanged(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.Cache.TTL = time.Hour })
	if got := refNames(resolve(t, l, "carol").Groups); !slices.Equal(got, []string{"finance", "finance-posix"}) {
		t.Fatalf("carol %v", got)
	}
	resolve(t, l, "group:finance-posix")
	s.DelMember(t, "finance", "carol")
	l.Cache().Invalidate("group:finance-posix")
	// A fresh group answer without carol...
	if got := refNames(resolve(t, l, "group:finance-posix").Members); slices.Contains(got, "carol") {
		t.Fatalf("finance-posix still lists carol: %v", got)
	}
	// ...drops carol's cached answer.
	if got := refNames(resolve(t, l, "carol").Groups); len(got) != 0 {
		t.Errorf("carol's groups after leaving: %v", got)
	}
}

func TestLDAPDownFailsFastAndRecovers(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.RetryAfter = 2 * time.Second })
	alice := resolve(t, l, "alice").ID
	s.Stop()
	ctx := context.Background()
	start := time.Now()
	_, err := l.Resolve(ctx, "bob", time.Now())
	if !errors.Is(err, identity.ErrUnavailable) {
		t.Fatalf("directory down: err %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the failure took %v", d)
	}
	// Within RetryAfter the next lookup does not even try.
	start = time.Now()
	if _, err := l.Resolve(ctx, "carol", time.Now()); !errors.Is(err, identity.ErrUnavailable) {
		t.Errorf("second lookup while down: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("fail-fast took %v", d)
	}
	// A cached answer within its TTL is still served.
	if id, err := l.Resolve(ctx, "alice", time.Now()); err != nil || id.ID != alice {
		t.Errorf("cached alice while down: %v %v", id.ID, err)
	}
	s.Start(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		id, err := l.Resolve(ctx, "bob", time.Now())
		if err == nil {
			if id.ID != s.UUID(t, "bob") {
				t.Errorf("bob after restart: %+v", id)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A server that accepts connections and never answers is a fault a real
// directory does not produce on demand: a bare TCP listener stands in.
func TestLDAPSilentServerHonoursContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { defer conns.Done(); <-done; c.Close() }()
		}
	}()
	l, err := identity.NewLDAP(identity.LDAPOptions{URL: "ldap://" + ln.Addr().String(), BaseDN: slapdtest.Suffix,
		BindDN: slapdtest.AdminDN, Password: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = l.Resolve(ctx, "alice", time.Now())
	if err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("silent server: err %v after %v", err, time.Since(start))
	}
	// A request that hangs for a second or more marks the directory
	// down: the next lookup does not wait again.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel2()
	if _, err := l.Resolve(ctx2, "bob", time.Now()); err == nil {
		t.Fatal("silent server answered")
	}
	start = time.Now()
	if _, err := l.Resolve(context.Background(), "carol", time.Now()); !errors.Is(err, identity.ErrUnavailable) || time.Since(start) > 500*time.Millisecond {
		t.Errorf("after a hang: err %v after %v, want an immediate ErrUnavailable", err, time.Since(start))
	}
}

func TestLDAPBindWithPasswordFile(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(slapdtest.AdminPassword+"\n"), 0o600)
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.BindDN = slapdtest.AdminDN; o.PasswordFile = good })
	if err := l.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if id := resolve(t, l, "bob"); id.Kind != bonnie.IdentityUser {
		t.Errorf("bob -> %+v", id)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("wrong\n"), 0o600)
	lb := newLDAP(t, s, func(o *identity.LDAPOptions) { o.BindDN = slapdtest.AdminDN; o.PasswordFile = bad })
	if _, err := lb.Resolve(context.Background(), "bob", time.Now()); err == nil {
		t.Error("a wrong password resolved")
	}
	if _, err := identity.NewLDAP(identity.LDAPOptions{URL: s.URL(), BaseDN: slapdtest.Suffix, PasswordFile: filepath.Join(dir, "none")}); err == nil {
		t.Error("a missing password file was accepted")
	}
}

func TestLDAPOptionErrors(t *testing.T) {
	for name, o := range map[string]identity.LDAPOptions{
		"no url":     {BaseDN: "dc=x"},
		"bad scheme": {URL: "http://x", BaseDN: "dc=x"},
		"no base":    {URL: "ldap://127.0.0.1:1"},
		"bad base":   {URL: "ldap://127.0.0.1:1", BaseDN: "not a dn"},
		"bad filter": {URL: "ldap://127.0.0.1:1", BaseDN: "dc=x", UserFilter: "(uid=x"},
	} {
		if _, err := identity.NewLDAP(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLDAPConcurrentLookups(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{LDIF: janeLDIF})
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.PoolSize = 2; o.NoCache = true })
	want := map[string]string{"alice": s.UUID(t, "alice"), "bob": s.UUID(t, "bob"), "jane.doe@example.org": s.UUID(t, "jdoe2")}
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for login, id := range want {
				got, err := l.Resolve(context.Background(), login, time.Now())
				if err != nil || got.ID != id {
					errs <- fmt.Errorf("%s -> %v %v", login, got.ID, err)
					return
				}
			}
			if g, err := l.Resolve(context.Background(), "group:finance", time.Now()); err != nil || len(g.Members) != 2 {
				errs <- fmt.Errorf("group -> %v %v", g.Members, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
