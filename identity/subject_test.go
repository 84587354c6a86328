package identity

import (
	"slices"
	"testing"

	"github.com/bonnie-archive/bonnie"
)

func TestParseSubject(t *testing.T) {
	for _, c := range []struct {
		in   string
		kind bonnie.IdentityKind
		name string
		neg  bool
	}{
		{"alice", bonnie.IdentityUser, "alice", false},
		{"alice@example.org", bonnie.IdentityUser, "alice@example.org", false},
		{"john/doe@example.org", bonnie.IdentityUser, "john.doe@example.org", false}, // Kolab
		{"-bob", bonnie.IdentityUser, "bob", true},
		{"anyone", bonnie.IdentitySpecial, "anyone", false},
		{"Anonymous", bonnie.IdentitySpecial, "anonymous", false},
		{"-anyone", bonnie.IdentitySpecial, "anyone", true},
		{"group:finance", bonnie.IdentityGroup, "finance", false},
		{"GROUP:finance", bonnie.IdentityGroup, "finance", false},
		{"-group:finance", bonnie.IdentityGroup, "finance", true},
		{"group:a/b", bonnie.IdentityGroup, "a/b", false}, // only user names carry Kolab's slash
		{" carol ", bonnie.IdentityUser, "carol", false},
		{"group:", bonnie.IdentityUser, "group:", false},
	} {
		got := ParseSubject(c.in)
		if got.Kind != c.kind || got.Name != c.name || got.Negative != c.neg || got.Raw != c.in {
			t.Errorf("ParseSubject(%q) = %+v, want kind %s name %q negative %v", c.in, got, c.kind, c.name, c.neg)
		}
	}
}

func TestCandidates(t *testing.T) {
	for _, c := range []struct {
		login, domain string
		want          []string
	}{
		{"alice", "", []string{"alice"}},
		{"alice", "example.org", []string{"alice", "alice@example.org"}},
		{"alice@example.org", "example.org", []string{"alice@example.org", "alice"}},
		{"alice@EXAMPLE.org", "example.org", []string{"alice@EXAMPLE.org", "alice"}},
		{"alice@other.org", "example.org", []string{"alice@other.org"}},
		{"@example.org", "example.org", []string{"@example.org"}},
	} {
		if got := Candidates(c.login, c.domain); !slices.Equal(got, c.want) {
			t.Errorf("Candidates(%q, %q) = %q, want %q", c.login, c.domain, got, c.want)
		}
	}
}
