package slapdtest

import (
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

func anonymousSearch(t *testing.T, s *Server, filter string, attrs ...string) []*ldap.Entry {
	t.Helper()
	c, err := ldap.DialURL(s.URL(), ldap.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Search(ldap.NewSearchRequest(Suffix, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 5, false, filter, attrs, nil))
	if err != nil {
		t.Fatal(err)
	}
	return res.Entries
}

func TestSeedAndUUIDs(t *testing.T) {
	s := Start(t, Options{})
	if !strings.HasPrefix(s.URL(), "ldap://127.0.0.1:") {
		t.Errorf("URL %q is not on loopback", s.URL())
	}
	es := anonymousSearch(t, s, "(objectClass=inetOrgPerson)", "uid", "mail", "entryUUID")
	var uids []string
	for _, e := range es {
		uids = append(uids, e.GetAttributeValue("uid"))
		if e.GetAttributeValue("entryUUID") == "" {
			t.Errorf("%s has no entryUUID", e.DN)
		}
	}
	slices.Sort(uids)
	if !slices.Equal(uids, []string{"alice", "bob", "carol"}) {
		t.Errorf("users %v", uids)
	}
	if a, b := s.UUID(t, "alice"), s.UUID(t, "bob"); a == b || a == "" {
		t.Errorf("uuids alice %q bob %q", a, b)
	}
	if got := s.Members(t, "finance"); len(got) != 2 {
		t.Errorf("finance members %v", got)
	}
}

func TestRenameKeepsUUIDAndRefint(t *testing.T) {
	s := Start(t, Options{})
	before := s.UUID(t, "alice")
	s.Rename(t, "alice", "alice2", "alice2@example.org")
	if after := s.UUID(t, "alice2"); after != before {
		t.Fatalf("entryUUID %s -> %s", before, after)
	}
	if es := anonymousSearch(t, s, "(uid=alice)"); len(es) != 0 {
		t.Errorf("uid=alice still there")
	}
	if got := s.Members(t, "finance"); !slices.Contains(got, UserDN("alice2")) || slices.Contains(got, UserDN("alice")) {
		t.Errorf("finance after rename: %v", got)
	}
	if got := s.Members(t, "finance-posix"); !slices.Contains(got, "alice2") || slices.Contains(got, "alice") {
		t.Errorf("finance-posix after rename: %v", got)
	}
	es := anonymousSearch(t, s, "(uid=alice2)", "mail")
	if len(es) != 1 || !slices.Equal(es[0].GetAttributeValues("mail"), []string{"alice2@example.org"}) {
		t.Errorf("alice2 mail: %v", es)
	}
}

func TestMembersAndExtraLDIF(t *testing.T) {
	s := Start(t, Options{LDIF: `
dn: uid=dave,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: dave
cn: Dave
sn: Dave
mail: dave@example.org
`})
	s.AddMember(t, "finance", "bob")
	s.AddMember(t, "finance", "bob") // idempotent
	if got := s.Members(t, "finance"); !slices.Contains(got, UserDN("bob")) {
		t.Errorf("finance: %v", got)
	}
	if got := s.Members(t, "finance-posix"); !slices.Contains(got, "bob") {
		t.Errorf("finance-posix twin: %v", got)
	}
	s.DelMember(t, "finance", "alice")
	if got := s.Members(t, "finance"); slices.Contains(got, UserDN("alice")) || len(got) != 2 {
		t.Errorf("finance after del: %v", got)
	}
	s.AddUser(t, "erin", "Erin Example", "erin@example.org")
	if s.UUID(t, "dave") == "" || s.UUID(t, "erin") == "" {
		t.Error("extra users missing")
	}
}

func TestStopStart(t *testing.T) {
	s := Start(t, Options{})
	id := s.UUID(t, "carol")
	s.Stop()
	if s.Running() {
		t.Fatal("running after Stop")
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.URL(), "ldap://"), time.Second); err == nil {
		c.Close()
		t.Fatal("port still answers after Stop")
	}
	s.Stop() // harmless
	s.Start(t)
	if got := s.UUID(t, "carol"); got != id {
		t.Errorf("after restart carol is %s, was %s", got, id)
	}
	dir := s.Dir()
	s.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory %s left behind (%v)", dir, err)
	}
}

func TestConcurrentServers(t *testing.T) {
	a := Start(t, Options{})
	b := Start(t, Options{})
	if a.URL() == b.URL() {
		t.Fatal("two servers on one URL")
	}
	a.Rename(t, "bob", "robert", "robert@example.org")
	if es := anonymousSearch(t, b, "(uid=bob)"); len(es) != 1 {
		t.Error("a rename on one server showed on the other")
	}
}
