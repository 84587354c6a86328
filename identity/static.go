package identity

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bonnie-archive/bonnie"
)

// File is the content of a static identity file (YAML or JSON):
//
//	defaultDomain: example.org
//	users:
//	  - id: 5f0c2a9e-0b7e-4c1e-9a57-1c0d6f0e2b11
//	    login: jane.doe@example.org
//	    aliases: [jdoe2, j.doe2@example.org]
//	    addresses: [jane.doe@example.org]
//	    displayName: Jane Doe
//	    formerLogins:
//	      - {login: jane.gi@example.org, until: 2026-03-01T00:00:00Z}
//	groups:
//	  - {id: g-finance, name: finance, members: [jane.doe@example.org, bob]}
//	roles:
//	  - {id: r-auditor, name: auditor, members: [bob]}
//
// Group and role members name users by id or by any of their names.
type File struct {
	DefaultDomain string      `json:"defaultDomain,omitempty" yaml:"defaultDomain,omitempty"`
	Users         []FileUser  `json:"users,omitempty" yaml:"users,omitempty"`
	Groups        []FileGroup `json:"groups,omitempty" yaml:"groups,omitempty"`
	Roles         []FileGroup `json:"roles,omitempty" yaml:"roles,omitempty"`
}

// FileUser is one person in a static identity file.
type FileUser struct {
	ID          string   `json:"id" yaml:"id"`
	Login       string   `json:"login" yaml:"login"`
	Aliases     []string `json:"aliases,omitempty" yaml:"aliases,omitempty"`
	Addresses   []string `json:"addresses,omitempty" yaml:"addresses,omitempty"`
	DisplayName string   `json:"displayName,omitempty" yaml:"displayName,omitempty"`
	// FormerLogins are logins that named this person during a time span
	// (Since inclusive, Until exclusive, either open): an event of that
	// time under that login resolves to this person, with it as the
	// canonical login.
	FormerLogins []FormerLogin `json:"formerLogins,omitempty" yaml:"formerLogins,omitempty"`
}

// FormerLogin is a login that was valid from Since until Until.
type FormerLogin struct {
	Login string    `json:"login" yaml:"login"`
	Since time.Time `json:"since,omitzero" yaml:"since,omitempty"`
	Until time.Time `json:"until,omitzero" yaml:"until,omitempty"`
}

// FileGroup is a group or role: its id, name and members.
type FileGroup struct {
	ID      string   `json:"id" yaml:"id"`
	Name    string   `json:"name" yaml:"name"`
	Members []string `json:"members,omitempty" yaml:"members,omitempty"`
}

// ParseFile reads a static identity file from YAML or JSON (JSON is YAML)
// and checks it: every user and group has an id and a name, ids are
// unique, members exist. Unknown keys are errors, so that a typo does not
// silently drop a binding.
func ParseFile(data []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, fmt.Errorf("identity: static file: %w", err)
	}
	if _, err := newIndex(&f); err != nil {
		return nil, err
	}
	return &f, nil
}

// index is a File ready for lookups.
type index struct {
	file    *File
	byName  map[string]*FileUser // every current name, lower case
	byID    map[string]*FileUser
	groups  map[string]*FileGroup // by lower-case name
	groupOf map[string][]bonnie.Ref
	roleOf  map[string][]bonnie.Ref
	members map[string][]bonnie.Ref // group id -> members
}

func newIndex(f *File) (*index, error) {
	ix := &index{file: f, byName: map[string]*FileUser{}, byID: map[string]*FileUser{},
		groups: map[string]*FileGroup{}, groupOf: map[string][]bonnie.Ref{}, roleOf: map[string][]bonnie.Ref{},
		members: map[string][]bonnie.Ref{}}
	for i := range f.Users {
		u := &f.Users[i]
		if u.ID == "" || u.Login == "" {
			return nil, fmt.Errorf("identity: static file: user %d needs an id and a login", i+1)
		}
		if ix.byID[u.ID] != nil {
			return nil, fmt.Errorf("identity: static file: user id %q used twice", u.ID)
		}
		ix.byID[u.ID] = u
		for _, n := range staticNames(u) {
			k := strings.ToLower(n)
			if o := ix.byName[k]; o != nil && o != u {
				return nil, fmt.Errorf("identity: static file: name %q belongs to %s and %s", n, o.ID, u.ID)
			}
			ix.byName[k] = u
		}
	}
	user := func(what, name string) (*FileUser, error) {
		if u := ix.byID[name]; u != nil {
			return u, nil
		}
		if u := ix.byName[strings.ToLower(name)]; u != nil {
			return u, nil
		}
		return nil, fmt.Errorf("identity: static file: %s member %q is no user", what, name)
	}
	seen := map[string]bool{}
	for _, list := range []struct {
		what  string
		items []FileGroup
		of    map[string][]bonnie.Ref
	}{{"group", f.Groups, ix.groupOf}, {"role", f.Roles, ix.roleOf}} {
		for i := range list.items {
			g := &list.items[i]
			if g.ID == "" || g.Name == "" {
				return nil, fmt.Errorf("identity: static file: %s %d needs an id and a name", list.what, i+1)
			}
			if seen[g.ID] || ix.byID[g.ID] != nil {
				return nil, fmt.Errorf("identity: static file: id %q used twice", g.ID)
			}
			seen[g.ID] = true
			if list.what == "group" {
				ix.groups[strings.ToLower(g.Name)] = g
			}
			for _, m := range g.Members {
				u, err := user(list.what+" "+g.Name, m)
				if err != nil {
					return nil, err
				}
				list.of[u.ID] = append(list.of[u.ID], bonnie.Ref{ID: g.ID, Name: g.Name})
				if list.what == "group" {
					ix.members[g.ID] = append(ix.members[g.ID], bonnie.Ref{ID: u.ID, Name: u.Login})
				}
			}
		}
	}
	for _, m := range []map[string][]bonnie.Ref{ix.groupOf, ix.roleOf, ix.members} {
		for _, refs := range m {
			sortRefs(refs)
		}
	}
	return ix, nil
}

// staticNames are a user's current names.
func staticNames(u *FileUser) []string {
	return append(append([]string{u.Login}, u.Aliases...), u.Addresses...)
}

// identity builds the identity of u as of at; former is the login that
// named u then, if it was a former one.
func (ix *index) identity(u *FileUser, former string) bonnie.Identity {
	id := bonnie.Identity{Kind: bonnie.IdentityUser, ID: u.ID, Login: u.Login, DisplayName: u.DisplayName,
		Addresses: append([]string(nil), u.Addresses...), Groups: ix.groupOf[u.ID], Roles: ix.roleOf[u.ID]}
	for _, a := range u.Aliases {
		if !containsFold(id.Aliases, a) && !strings.EqualFold(a, u.Login) {
			id.Aliases = append(id.Aliases, a)
		}
	}
	if former != "" && !strings.EqualFold(former, u.Login) {
		// Then, the former login was the canonical one.
		id.Aliases = append([]string{u.Login}, id.Aliases...)
		id.Login = former
	}
	return id
}

// lookup resolves sub as of at; domain is the default domain when the
// file names none.
func (ix *index) lookup(sub Subject, at time.Time, domain string) bonnie.Identity {
	domain = cmp.Or(ix.file.DefaultDomain, domain)
	switch sub.Kind {
	case bonnie.IdentitySpecial:
		return special(sub, "static")
	case bonnie.IdentityGroup:
		for _, n := range Candidates(sub.Name, domain) {
			if g := ix.groups[strings.ToLower(n)]; g != nil {
				return bonnie.Identity{Kind: bonnie.IdentityGroup, ID: g.ID, Login: g.Name, Members: ix.members[g.ID]}
			}
		}
		return unknown(sub, "static", "no such group in the identity file")
	}
	for _, n := range Candidates(sub.Name, domain) {
		// A former login valid at that time wins: it is what the name
		// meant then.
		for i := range ix.file.Users {
			u := &ix.file.Users[i]
			for _, fl := range u.FormerLogins {
				if strings.EqualFold(fl.Login, n) && (fl.Since.IsZero() || !at.Before(fl.Since)) && (fl.Until.IsZero() || at.Before(fl.Until)) {
					return ix.identity(u, fl.Login)
				}
			}
		}
		if u := ix.byName[strings.ToLower(n)]; u != nil {
			return ix.identity(u, "")
		}
	}
	return unknown(sub, "static", "not in the identity file")
}

// Static resolves against a static identity file. With a path (LoadStatic)
// it re-reads the file when it changes, at most once per ReloadEvery; a
// file that fails to parse is reported and the previous content kept.
type Static struct {
	path string
	// ReloadEvery is how often the file is checked for changes (default
	// 1s).
	ReloadEvery time.Duration
	// DefaultDomain applies when the file sets none.
	DefaultDomain string

	mu      sync.Mutex
	ix      *index
	checked time.Time
	modTime time.Time
	size    int64
	loadErr error
}

// NewStatic returns a resolver over f (which must not be changed
// afterwards).
func NewStatic(f *File) (*Static, error) {
	ix, err := newIndex(f)
	if err != nil {
		return nil, err
	}
	return &Static{ix: ix}, nil
}

// LoadStatic reads a static identity file (YAML or JSON) and returns a
// resolver that follows its changes.
func LoadStatic(path string) (*Static, error) {
	s := &Static{path: path, ReloadEvery: time.Second}
	if err := s.reload(true); err != nil {
		return nil, err
	}
	return s, nil
}

// reload re-reads the file if it changed (or when forced).
func (s *Static) reload(force bool) error {
	st, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("identity: static file: %w", err)
	}
	if !force && st.ModTime().Equal(s.modTime) && st.Size() == s.size {
		return nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("identity: static file: %w", err)
	}
	f, err := ParseFile(data)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	ix, _ := newIndex(f)
	s.ix, s.modTime, s.size = ix, st.ModTime(), st.Size()
	return nil
}

// Err returns the last error re-reading the file (nil when the content in
// use is the file's).
func (s *Static) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadErr
}

// Resolve implements bonnie.Resolver. It never fails: the file is always
// at hand.
func (s *Static) Resolve(_ context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	s.mu.Lock()
	if s.path != "" && time.Since(s.checked) >= cmp.Or(s.ReloadEvery, time.Second) {
		s.checked = time.Now()
		s.loadErr = s.reload(false)
	}
	ix := s.ix
	s.mu.Unlock()
	sub := ParseSubject(subject)
	id := ix.lookup(sub, at, s.DefaultDomain)
	id.Subject, id.Negative, id.Source = subject, sub.Negative, "static"
	id.ResolvedAt = time.Now().UTC()
	return id, nil
}
