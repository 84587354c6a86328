package identity_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/identity"
)

const staticYAML = `
defaultDomain: example.org
users:
  - id: u-jane
    login: jane.doe@example.org
    aliases: [jdoe2, j.doe2@example.org]
    addresses: [jane.doe@example.org, j.doe2@example.org]
    displayName: Jane Doe
    formerLogins:
      - {login: jane.gi@example.org, until: 2026-03-01T00:00:00Z}
  - id: u-bob
    login: bob
    addresses: [bob@example.org]
groups:
  - {id: g-finance, name: finance, members: [jdoe2, u-bob]}
roles:
  - {id: r-auditor, name: auditor, members: [bob@example.org]}
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStaticAliasesAreOnePerson(t *testing.T) {
	r, err := identity.LoadStatic(writeFile(t, "ids.yaml", staticYAML))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, login := range []string{"jdoe2", "j.doe2@example.org", "jane.doe@example.org", "JDOE2", "jdoe2@example.org", "j/doe2@example.org", "jane.doe"} {
		id, err := r.Resolve(ctx, login, now)
		if err != nil {
			t.Fatal(err)
		}
		if id.ID != "u-jane" || id.Login != "jane.doe@example.org" || id.Kind != bonnie.IdentityUser || id.Subject != login {
			t.Errorf("%s -> %+v", login, id)
		}
		if !slices.Equal(id.Groups, []bonnie.Ref{{ID: "g-finance", Name: "finance"}}) {
			t.Errorf("%s groups %v", login, id.Groups)
		}
	}
	bob, _ := r.Resolve(ctx, "-bob", now)
	if bob.ID != "u-bob" || !bob.Negative || !slices.Equal(bob.Roles, []bonnie.Ref{{ID: "r-auditor", Name: "auditor"}}) {
		t.Errorf("-bob -> %+v", bob)
	}
}

func TestStaticFormerLoginIsTimeBound(t *testing.T) {
	r, err := identity.LoadStatic(writeFile(t, "ids.json", `{"users":[{"id":"u-jane","login":"jane.doe@example.org",
		"formerLogins":[{"login":"jane.gi@example.org","until":"2026-03-01T00:00:00Z"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := r.Resolve(context.Background(), "jane.gi@example.org", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	if before.ID != "u-jane" || before.Login != "jane.gi@example.org" || !slices.Contains(before.Aliases, "jane.doe@example.org") {
		t.Errorf("jane.gi in February: %+v", before)
	}
	after, _ := r.Resolve(context.Background(), "jane.gi@example.org", time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC))
	if after.Kind != bonnie.IdentityLogin || after.ID != "jane.gi@example.org" || after.Reason == "" {
		t.Errorf("jane.gi in April (no longer hers): %+v", after)
	}
}

func TestStaticGroupsAndSpecials(t *testing.T) {
	f, err := identity.ParseFile([]byte(staticYAML))
	if err != nil {
		t.Fatal(err)
	}
	r, err := identity.NewStatic(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	g, _ := r.Resolve(ctx, "group:finance", time.Now())
	if g.Kind != bonnie.IdentityGroup || g.ID != "g-finance" ||
		!slices.Equal(g.Members, []bonnie.Ref{{ID: "u-bob", Name: "bob"}, {ID: "u-jane", Name: "jane.doe@example.org"}}) {
		t.Errorf("group:finance -> %+v", g)
	}
	for _, s := range []string{"anyone", "anonymous"} {
		id, _ := r.Resolve(ctx, s, time.Now())
		if id.Kind != bonnie.IdentitySpecial || id.ID != s {
			t.Errorf("%s -> %+v", s, id)
		}
	}
	none, _ := r.Resolve(ctx, "group:nope", time.Now())
	if none.Kind != bonnie.IdentityGroup || none.ID != "" || none.Reason == "" {
		t.Errorf("group:nope -> %+v", none)
	}
	cyrus, _ := r.Resolve(ctx, "cyrus", time.Now())
	if cyrus.Kind != bonnie.IdentityLogin || cyrus.ID != "cyrus" {
		t.Errorf("cyrus -> %+v", cyrus)
	}
}

func TestStaticFileErrors(t *testing.T) {
	for name, content := range map[string]string{
		"unknown key":    "users: [{id: a, login: a, logn: b}]",
		"no id":          "users: [{login: a}]",
		"duplicate id":   "users: [{id: a, login: a}, {id: a, login: b}]",
		"shared name":    "users: [{id: a, login: a, aliases: [x]}, {id: b, login: b, aliases: [x]}]",
		"unknown member": "users: [{id: a, login: a}]\ngroups: [{id: g, name: g, members: [zz]}]",
		"not yaml":       "users: [",
	} {
		if _, err := identity.ParseFile([]byte(content)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if f, err := identity.ParseFile(nil); err != nil || len(f.Users) != 0 {
		t.Errorf("empty file: %v", err)
	}
}

func TestStaticReloadsChangedFile(t *testing.T) {
	p := writeFile(t, "ids.yaml", "users: [{id: u1, login: alice}]\n")
	r, err := identity.LoadStatic(p)
	if err != nil {
		t.Fatal(err)
	}
	r.ReloadEvery = time.Nanosecond
	ctx := context.Background()
	if id, _ := r.Resolve(ctx, "alice", time.Now()); id.ID != "u1" {
		t.Fatalf("alice -> %+v", id)
	}
	// The rename: same id, new login. The file's size changes, so the
	// reload does not depend on the file system's time resolution.
	if err := os.WriteFile(p, []byte("users: [{id: u1, login: alice2, aliases: [a2]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if id, _ := r.Resolve(ctx, "alice2", time.Now()); id.ID != "u1" || id.Login != "alice2" {
		t.Errorf("after the edit alice2 -> %+v", id)
	}
	// A broken edit keeps what was loaded and says so.
	if err := os.WriteFile(p, []byte("users: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if id, _ := r.Resolve(ctx, "alice2", time.Now()); id.ID != "u1" {
		t.Errorf("after a broken edit alice2 -> %+v", id)
	}
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Err() = %v", err)
	}
}

// A site without a directory lists its people in a file; the resolver
// names the person behind every login they used.
func ExampleStatic() {
	f, err := identity.ParseFile([]byte(`
defaultDomain: example.org
users:
  - id: 5f0c2a9e-0b7e-4c1e-9a57-1c0d6f0e2b11
    login: jane.doe@example.org
    aliases: [jdoe2, j.doe2@example.org]
    displayName: Jane Doe
    formerLogins:
      - {login: jane.gi@example.org, until: 2026-03-01T00:00:00Z}
groups:
  - {id: g-finance, name: finance, members: [jdoe2]}
`))
	if err != nil {
		panic(err)
	}
	r, err := identity.NewStatic(f)
	if err != nil {
		panic(err)
	}
	feb := time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC)
	for _, login := range []string{"jdoe2", "j.doe2@example.org", "jane.gi@example.org", "group:finance"} {
		id, _ := r.Resolve(context.Background(), login, feb)
		fmt.Printf("%-20s -> %s %s (%s)\n", login, id.Kind, id.ID, id.Login)
	}
	// Output:
	// jdoe2                -> user 5f0c2a9e-0b7e-4c1e-9a57-1c0d6f0e2b11 (jane.doe@example.org)
	// j.doe2@example.org   -> user 5f0c2a9e-0b7e-4c1e-9a57-1c0d6f0e2b11 (jane.doe@example.org)
	// jane.gi@example.org  -> user 5f0c2a9e-0b7e-4c1e-9a57-1c0d6f0e2b11 (jane.gi@example.org)
	// group:finance        -> group g-finance (finance)
}
