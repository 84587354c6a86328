package identity

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"github.com/bonnie-archive/bonnie"
)

// ErrUnavailable is wrapped by the errors of a resolver whose directory
// cannot be reached: the engine then stores the event with the identity
// marked unresolved.
var ErrUnavailable = errors.New("identity: directory unavailable")

// LDAPOptions configure the LDAP resolver. URL and BaseDN are required;
// everything else has defaults that fit OpenLDAP with the inetOrgPerson,
// groupOfNames/posixGroup and organizationalRole schemas (see
// DefaultLDAPOptions). For 389-DS (Kolab) set IDAttr to "nsUniqueId" and
// UserRoleAttrs to "nsRoleDN"; for Active Directory IDAttr "objectGUID".
type LDAPOptions struct {
	// URL is ldap://HOST:PORT or ldaps://HOST:PORT.
	URL string `json:"url" yaml:"url"`
	// BindDN and Password (or the first line of PasswordFile) are the
	// credentials; with no BindDN the resolver searches anonymously.
	BindDN       string `json:"bindDN,omitempty" yaml:"bindDN,omitempty"`
	Password     string `json:"-" yaml:"-"`
	PasswordFile string `json:"passwordFile,omitempty" yaml:"passwordFile,omitempty"`
	// StartTLS upgrades an ldap:// connection; TLSConfig is used for it
	// and for ldaps://.
	StartTLS  bool        `json:"startTLS,omitempty" yaml:"startTLS,omitempty"`
	TLSConfig *tls.Config `json:"-" yaml:"-"`

	// BaseDN is where users, groups and roles are searched (subtree);
	// UserBase, GroupBase and RoleBase narrow it per kind.
	BaseDN    string `json:"baseDN" yaml:"baseDN"`
	UserBase  string `json:"userBase,omitempty" yaml:"userBase,omitempty"`
	GroupBase string `json:"groupBase,omitempty" yaml:"groupBase,omitempty"`
	RoleBase  string `json:"roleBase,omitempty" yaml:"roleBase,omitempty"`

	// IDAttr holds the persistent id: "entryUUID" (OpenLDAP, RFC 4530),
	// "nsUniqueId" (389-DS), "objectGUID" (Active Directory).
	IDAttr string `json:"idAttr,omitempty" yaml:"idAttr,omitempty"`
	// UserFilter selects user entries; a lookup ANDs it with the login
	// match.
	UserFilter string `json:"userFilter,omitempty" yaml:"userFilter,omitempty"`
	// LoginAttrs are the attributes a login is matched against; the first
	// value of the first one is the canonical login, all values are
	// aliases.
	LoginAttrs []string `json:"loginAttrs,omitempty" yaml:"loginAttrs,omitempty"`
	// AddressAttrs hold a user's mail addresses.
	AddressAttrs []string `json:"addressAttrs,omitempty" yaml:"addressAttrs,omitempty"`
	// DisplayNameAttrs: the first one with a value is the display name.
	DisplayNameAttrs []string `json:"displayNameAttrs,omitempty" yaml:"displayNameAttrs,omitempty"`

	// GroupFilter selects group entries; GroupNameAttr is the name an
	// ACL's "group:NAME" matches.
	GroupFilter   string `json:"groupFilter,omitempty" yaml:"groupFilter,omitempty"`
	GroupNameAttr string `json:"groupNameAttr,omitempty" yaml:"groupNameAttr,omitempty"`
	// MemberAttrs hold member DNs (member, uniqueMember); MemberUIDAttr
	// holds member logins (posixGroup's memberUid).
	MemberAttrs   []string `json:"memberAttrs,omitempty" yaml:"memberAttrs,omitempty"`
	MemberUIDAttr string   `json:"memberUidAttr,omitempty" yaml:"memberUidAttr,omitempty"`
	// MaxNesting bounds how deep groups in groups are followed.
	MaxNesting int `json:"maxNesting,omitempty" yaml:"maxNesting,omitempty"`

	// RoleFilter selects role entries whose RoleOccupantAttr holds user
	// DNs (organizationalRole/roleOccupant); RoleNameAttr names a role.
	// UserRoleAttrs are attributes of the user entry that hold role DNs
	// (389-DS: nsRoleDN).
	RoleFilter       string   `json:"roleFilter,omitempty" yaml:"roleFilter,omitempty"`
	RoleNameAttr     string   `json:"roleNameAttr,omitempty" yaml:"roleNameAttr,omitempty"`
	RoleOccupantAttr string   `json:"roleOccupantAttr,omitempty" yaml:"roleOccupantAttr,omitempty"`
	UserRoleAttrs    []string `json:"userRoleAttrs,omitempty" yaml:"userRoleAttrs,omitempty"`

	// DefaultDomain lets a bare local part ("alice") match
	// "alice@DOMAIN" and the reverse.
	DefaultDomain string `json:"defaultDomain,omitempty" yaml:"defaultDomain,omitempty"`

	// PoolSize bounds the open connections (default 4).
	PoolSize int `json:"poolSize,omitempty" yaml:"poolSize,omitempty"`
	// DialTimeout bounds connecting and RequestTimeout each request
	// (defaults 3s and 5s); the engine's ResolveTimeout bounds the whole.
	DialTimeout    time.Duration `json:"dialTimeout,omitempty" yaml:"dialTimeout,omitempty"`
	RequestTimeout time.Duration `json:"requestTimeout,omitempty" yaml:"requestTimeout,omitempty"`
	// RetryAfter: once the directory could not be reached, lookups fail
	// at once for this long (default 5s) instead of each waiting for a
	// timeout.
	RetryAfter time.Duration `json:"retryAfter,omitempty" yaml:"retryAfter,omitempty"`

	// Cache configures the answers' cache (TTL 60s by default); NoCache
	// turns it off.
	Cache   CacheOptions `json:"-" yaml:"-"`
	NoCache bool         `json:"noCache,omitempty" yaml:"noCache,omitempty"`
}

// DefaultLDAPOptions returns the defaults that NewLDAP fills in.
func DefaultLDAPOptions() LDAPOptions {
	return LDAPOptions{
		IDAttr:           "entryUUID",
		UserFilter:       "(|(objectClass=person)(objectClass=posixAccount))",
		LoginAttrs:       []string{"uid", "mail"},
		AddressAttrs:     []string{"mail", "mailAlternateAddress", "alias"},
		DisplayNameAttrs: []string{"displayName", "cn"},
		GroupFilter:      "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))",
		GroupNameAttr:    "cn",
		MemberAttrs:      []string{"member", "uniqueMember"},
		MemberUIDAttr:    "memberUid",
		MaxNesting:       3,
		RoleFilter:       "(objectClass=organizationalRole)",
		RoleNameAttr:     "cn",
		RoleOccupantAttr: "roleOccupant",
		PoolSize:         4,
		DialTimeout:      3 * time.Second,
		RequestTimeout:   5 * time.Second,
		RetryAfter:       5 * time.Second,
	}
}

// withDefaults fills in what o leaves empty.
func (o LDAPOptions) withDefaults() LDAPOptions {
	d := DefaultLDAPOptions()
	o.IDAttr = cmp.Or(o.IDAttr, d.IDAttr)
	o.UserFilter = cmp.Or(o.UserFilter, d.UserFilter)
	o.GroupFilter = cmp.Or(o.GroupFilter, d.GroupFilter)
	o.GroupNameAttr = cmp.Or(o.GroupNameAttr, d.GroupNameAttr)
	o.MemberUIDAttr = cmp.Or(o.MemberUIDAttr, d.MemberUIDAttr)
	o.RoleFilter = cmp.Or(o.RoleFilter, d.RoleFilter)
	o.RoleNameAttr = cmp.Or(o.RoleNameAttr, d.RoleNameAttr)
	o.RoleOccupantAttr = cmp.Or(o.RoleOccupantAttr, d.RoleOccupantAttr)
	if len(o.LoginAttrs) == 0 {
		o.LoginAttrs = d.LoginAttrs
	}
	if len(o.AddressAttrs) == 0 {
		o.AddressAttrs = d.AddressAttrs
	}
	if len(o.DisplayNameAttrs) == 0 {
		o.DisplayNameAttrs = d.DisplayNameAttrs
	}
	if len(o.MemberAttrs) == 0 {
		o.MemberAttrs = d.MemberAttrs
	}
	if o.MaxNesting <= 0 {
		o.MaxNesting = d.MaxNesting
	}
	if o.PoolSize <= 0 {
		o.PoolSize = d.PoolSize
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = d.DialTimeout
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = d.RequestTimeout
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = d.RetryAfter
	}
	o.UserBase = cmp.Or(o.UserBase, o.BaseDN)
	o.GroupBase = cmp.Or(o.GroupBase, o.BaseDN)
	o.RoleBase = cmp.Or(o.RoleBase, o.BaseDN)
	return o
}

// LDAP resolves logins and ACL subjects against an LDAP directory, with a
// connection pool and a cache (see Cache). Create it with NewLDAP; it is
// safe for concurrent use.
type LDAP struct {
	opts  LDAPOptions
	pool  *pool
	cache *Cache

	mu        sync.Mutex
	downUntil time.Time
	downErr   error
}

// NewLDAP checks the options and returns a resolver. It does not connect:
// the first lookup does (see Ping to check the settings at start-up).
func NewLDAP(opts LDAPOptions) (*LDAP, error) {
	o := opts.withDefaults()
	if o.URL == "" {
		return nil, errors.New("identity: LDAP URL is required")
	}
	if !strings.HasPrefix(o.URL, "ldap://") && !strings.HasPrefix(o.URL, "ldaps://") {
		return nil, fmt.Errorf("identity: LDAP URL %q: want ldap://HOST:PORT or ldaps://HOST:PORT", o.URL)
	}
	if o.BaseDN == "" {
		return nil, errors.New("identity: LDAP base DN is required")
	}
	for _, b := range []string{o.BaseDN, o.UserBase, o.GroupBase, o.RoleBase} {
		if _, err := ldap.ParseDN(b); err != nil {
			return nil, fmt.Errorf("identity: base DN %q: %w", b, err)
		}
	}
	for _, f := range []string{o.UserFilter, o.GroupFilter, o.RoleFilter} {
		if _, err := ldap.CompileFilter(f); err != nil {
			return nil, fmt.Errorf("identity: filter %q: %w", f, err)
		}
	}
	password := func() (string, error) { return o.Password, nil }
	if o.PasswordFile != "" {
		if _, err := readPassword(o.PasswordFile); err != nil {
			return nil, err
		}
		password = func() (string, error) { return readPassword(o.PasswordFile) }
	}
	l := &LDAP{opts: o, pool: newPool(&o, password)}
	if !o.NoCache {
		l.cache = NewCache(lookupFunc(l.Lookup), o.Cache)
	}
	return l, nil
}

// readPassword reads the first line of a password file (read at each
// connection, so that a rotated password is picked up).
func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("identity: LDAP password file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSuffix(pw, "\r"), nil
}

// lookupFunc adapts LDAP.Lookup to bonnie.Resolver for the cache.
type lookupFunc func(ctx context.Context, subject string, at time.Time) (bonnie.Identity, error)

// Resolve implements bonnie.Resolver.
func (f lookupFunc) Resolve(ctx context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	return f(ctx, subject, at)
}

// Resolve implements bonnie.Resolver, through the cache unless NoCache.
// The directory only knows its present state: at is not used, and the
// answer's ResolvedAt says when the directory gave it.
func (l *LDAP) Resolve(ctx context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	if l.cache != nil {
		return l.cache.Resolve(ctx, subject, at)
	}
	return l.Lookup(ctx, subject, at)
}

// Cache returns the resolver's cache (nil with NoCache).
func (l *LDAP) Cache() *Cache { return l.cache }

// Close closes the pooled connections.
func (l *LDAP) Close() error {
	l.pool.close()
	return nil
}

// Ping connects, binds and reads the base DN: it checks the settings.
func (l *LDAP) Ping(ctx context.Context) error {
	return l.with(ctx, func(c *ldap.Conn) error {
		_, err := l.search(c, l.opts.BaseDN, ldap.ScopeBaseObject, "(objectClass=*)", []string{"1.1"})
		return err
	})
}

// Lookup asks the directory, bypassing the cache.
func (l *LDAP) Lookup(ctx context.Context, subject string, _ time.Time) (bonnie.Identity, error) {
	sub := ParseSubject(subject)
	if sub.Kind == bonnie.IdentitySpecial {
		return special(sub, "ldap"), nil
	}
	if sub.Name == "" {
		return unknown(sub, "ldap", "empty name"), nil
	}
	var id bonnie.Identity
	err := l.with(ctx, func(c *ldap.Conn) error {
		var err error
		if sub.Kind == bonnie.IdentityGroup {
			id, err = l.group(c, sub)
		} else {
			id, err = l.user(c, sub)
		}
		return err
	})
	if err != nil {
		return partial(sub, "ldap"), err
	}
	id.Subject, id.Negative, id.Source = sub.Raw, sub.Negative, "ldap"
	id.ResolvedAt = time.Now().UTC()
	return id, nil
}

// with runs f on a pooled connection, honouring ctx, and keeps track of
// whether the directory is reachable: after a network failure, calls fail
// at once until RetryAfter has passed.
func (l *LDAP) with(ctx context.Context, f func(c *ldap.Conn) error) error {
	l.mu.Lock()
	if until, last := l.downUntil, l.downErr; time.Now().Before(until) {
		l.mu.Unlock()
		return fmt.Errorf("%w: %s unreachable (%v); next try in %v", ErrUnavailable, l.opts.URL, last, time.Until(until).Round(time.Millisecond))
	}
	l.mu.Unlock()
	// A failed connection means the directory is away; so does a
	// caller's deadline that passed while a connect or a request was in
	// flight for a second or more (a healthy directory answers in
	// milliseconds): a hanging directory then costs one timeout per
	// RetryAfter, not one per lookup.
	away := func(err error, start time.Time) bool {
		if errors.Is(err, errPoolWait) || !networkError(err) {
			return false
		}
		return ctx.Err() == nil || (errors.Is(ctx.Err(), context.DeadlineExceeded) && time.Since(start) >= time.Second)
	}
	start := time.Now()
	c, err := l.pool.get(ctx)
	if err != nil {
		if away(err, start) {
			l.down(err)
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	start = time.Now()
	err = runCtx(ctx, c, func() error { return f(c) })
	broken := networkError(err)
	l.pool.put(c, broken)
	if broken {
		if away(err, start) {
			l.down(err)
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// down makes lookups fail at once for RetryAfter.
func (l *LDAP) down(err error) {
	l.mu.Lock()
	l.downUntil, l.downErr = time.Now().Add(l.opts.RetryAfter), err
	l.mu.Unlock()
}

func (l *LDAP) search(c *ldap.Conn, base string, scope int, filter string, attrs []string) ([]*ldap.Entry, error) {
	secs := int((l.opts.RequestTimeout + time.Second - 1) / time.Second)
	res, err := c.Search(ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, 0, secs, false, filter, attrs, nil))
	if err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return nil, nil
		}
		return nil, err
	}
	return res.Entries, nil
}

// anyOf is the filter (|(a1=v1)(a1=v2)(a2=v1)...), values escaped.
func anyOf(attrs, values []string) string {
	var b strings.Builder
	b.WriteString("(|")
	for _, a := range attrs {
		for _, v := range values {
			fmt.Fprintf(&b, "(%s=%s)", a, ldap.EscapeFilter(v))
		}
	}
	b.WriteString(")")
	return b.String()
}

func (l *LDAP) userAttrs() []string {
	// uid is what an RFC 2307 posixGroup's memberUid names, whichever
	// attributes are logins here.
	return slices.Concat([]string{l.opts.IDAttr, "uid"}, l.opts.LoginAttrs, l.opts.AddressAttrs, l.opts.DisplayNameAttrs, l.opts.UserRoleAttrs)
}

// user resolves a login.
func (l *LDAP) user(c *ldap.Conn, sub Subject) (bonnie.Identity, error) {
	cands := Candidates(sub.Name, l.opts.DefaultDomain)
	entries, err := l.search(c, l.opts.UserBase, ldap.ScopeWholeSubtree,
		"(&"+l.opts.UserFilter+anyOf(l.opts.LoginAttrs, cands)+")", l.userAttrs())
	if err != nil {
		return bonnie.Identity{}, err
	}
	if len(entries) == 0 {
		return unknown(sub, "ldap", "not in the directory"), nil
	}
	e := entries[0]
	if len(entries) > 1 {
		// Prefer the one entry whose canonical login is the name as given.
		var exact []*ldap.Entry
		for _, x := range entries {
			if strings.EqualFold(first(x, l.opts.LoginAttrs[:1]), sub.Name) {
				exact = append(exact, x)
			}
		}
		if len(exact) != 1 {
			return unknown(sub, "ldap", fmt.Sprintf("ambiguous: %d directory entries match", len(entries))), nil
		}
		e = exact[0]
	}
	return l.userIdentity(c, e)
}

// userIdentity builds the identity of a user entry, with its groups and
// roles as the directory has them now.
func (l *LDAP) userIdentity(c *ldap.Conn, e *ldap.Entry) (bonnie.Identity, error) {
	id := bonnie.Identity{Kind: bonnie.IdentityUser, ID: idValue(e, l.opts.IDAttr)}
	if id.ID == "" {
		return unknown(Subject{Raw: e.DN, Name: first(e, l.opts.LoginAttrs)}, "ldap",
			fmt.Sprintf("entry %s has no %s", e.DN, l.opts.IDAttr)), nil
	}
	id.Login = first(e, l.opts.LoginAttrs)
	for _, a := range l.opts.LoginAttrs {
		for _, v := range e.GetEqualFoldAttributeValues(a) {
			if !strings.EqualFold(v, id.Login) && !containsFold(id.Aliases, v) {
				id.Aliases = append(id.Aliases, v)
			}
		}
	}
	for _, a := range l.opts.AddressAttrs {
		for _, v := range e.GetEqualFoldAttributeValues(a) {
			if !containsFold(id.Addresses, v) {
				id.Addresses = append(id.Addresses, v)
			}
		}
	}
	id.DisplayName = first(e, l.opts.DisplayNameAttrs)
	// memberUid holds the RFC 2307 uid; the first login attribute too, for
	// directories that put logins there.
	memberUIDs := slices.Concat(e.GetEqualFoldAttributeValues("uid"), e.GetEqualFoldAttributeValues(l.opts.LoginAttrs[0]))
	groups, err := l.groupsOf(c, e.DN, slices.Compact(memberUIDs))
	if err != nil {
		return bonnie.Identity{}, err
	}
	id.Groups = groups
	roles, err := l.rolesOf(c, e)
	if err != nil {
		return bonnie.Identity{}, err
	}
	id.Roles = roles
	return id, nil
}

// groupsOf returns the groups a DN (and its logins, for memberUid) is in,
// and the groups those are in, up to MaxNesting levels.
func (l *LDAP) groupsOf(c *ldap.Conn, dn string, logins []string) ([]bonnie.Ref, error) {
	var out []bonnie.Ref
	seen := map[string]bool{}
	dns := []string{dn}
	for level := 0; level < l.opts.MaxNesting && len(dns) > 0; level++ {
		match := anyOf(l.opts.MemberAttrs, dns)
		if level == 0 && len(logins) > 0 && l.opts.MemberUIDAttr != "" {
			match = "(|" + match + anyOf([]string{l.opts.MemberUIDAttr}, logins) + ")"
		}
		entries, err := l.search(c, l.opts.GroupBase, ldap.ScopeWholeSubtree, "(&"+l.opts.GroupFilter+match+")",
			[]string{l.opts.IDAttr, l.opts.GroupNameAttr})
		if err != nil {
			return nil, err
		}
		dns = nil
		for _, g := range entries {
			ref := bonnie.Ref{ID: cmp.Or(idValue(g, l.opts.IDAttr), g.DN), Name: g.GetEqualFoldAttributeValue(l.opts.GroupNameAttr)}
			if seen[ref.ID] {
				continue
			}
			seen[ref.ID] = true
			out = append(out, ref)
			dns = append(dns, g.DN)
		}
	}
	sortRefs(out)
	return out, nil
}

// rolesOf returns the roles whose occupant the user is, and those its
// entry names.
func (l *LDAP) rolesOf(c *ldap.Conn, e *ldap.Entry) ([]bonnie.Ref, error) {
	var out []bonnie.Ref
	seen := map[string]bool{}
	add := func(r bonnie.Ref) {
		if !seen[r.ID] {
			seen[r.ID] = true
			out = append(out, r)
		}
	}
	if l.opts.RoleOccupantAttr != "" {
		entries, err := l.search(c, l.opts.RoleBase, ldap.ScopeWholeSubtree,
			"(&"+l.opts.RoleFilter+anyOf([]string{l.opts.RoleOccupantAttr}, []string{e.DN})+")",
			[]string{l.opts.IDAttr, l.opts.RoleNameAttr})
		if err != nil {
			return nil, err
		}
		for _, r := range entries {
			add(bonnie.Ref{ID: cmp.Or(idValue(r, l.opts.IDAttr), r.DN), Name: r.GetEqualFoldAttributeValue(l.opts.RoleNameAttr)})
		}
	}
	for _, a := range l.opts.UserRoleAttrs {
		for _, dn := range e.GetEqualFoldAttributeValues(a) {
			ref := bonnie.Ref{ID: dn, Name: rdnValue(dn)}
			entries, err := l.search(c, dn, ldap.ScopeBaseObject, "(objectClass=*)", []string{l.opts.IDAttr, l.opts.RoleNameAttr})
			if err != nil {
				return nil, err
			}
			if len(entries) == 1 {
				ref.ID = cmp.Or(idValue(entries[0], l.opts.IDAttr), dn)
				ref.Name = cmp.Or(entries[0].GetEqualFoldAttributeValue(l.opts.RoleNameAttr), ref.Name)
			}
			add(ref)
		}
	}
	sortRefs(out)
	return out, nil
}

// group resolves "group:NAME" to the group and its members now.
func (l *LDAP) group(c *ldap.Conn, sub Subject) (bonnie.Identity, error) {
	attrs := slices.Concat([]string{l.opts.IDAttr, l.opts.GroupNameAttr, l.opts.MemberUIDAttr}, l.opts.MemberAttrs)
	entries, err := l.search(c, l.opts.GroupBase, ldap.ScopeWholeSubtree,
		"(&"+l.opts.GroupFilter+anyOf([]string{l.opts.GroupNameAttr}, Candidates(sub.Name, l.opts.DefaultDomain))+")", attrs)
	if err != nil {
		return bonnie.Identity{}, err
	}
	switch len(entries) {
	case 0:
		return unknown(sub, "ldap", "no such group in the directory"), nil
	case 1:
	default:
		return unknown(sub, "ldap", fmt.Sprintf("ambiguous: %d groups match", len(entries))), nil
	}
	g := entries[0]
	id := bonnie.Identity{Kind: bonnie.IdentityGroup, ID: cmp.Or(idValue(g, l.opts.IDAttr), g.DN),
		Login: cmp.Or(g.GetEqualFoldAttributeValue(l.opts.GroupNameAttr), sub.Name)}
	members := map[string]bonnie.Ref{}
	if err := l.members(c, g, members, map[string]bool{g.DN: true}, 0); err != nil {
		return bonnie.Identity{}, err
	}
	for _, m := range members {
		id.Members = append(id.Members, m)
	}
	sortRefs(id.Members)
	return id, nil
}

// members collects a group entry's members (users, by id), following
// nested groups up to MaxNesting.
func (l *LDAP) members(c *ldap.Conn, g *ldap.Entry, out map[string]bonnie.Ref, visited map[string]bool, depth int) error {
	userAttrs := slices.Concat([]string{l.opts.IDAttr}, l.opts.LoginAttrs)
	addUser := func(e *ldap.Entry) {
		if id := idValue(e, l.opts.IDAttr); id != "" {
			out[id] = bonnie.Ref{ID: id, Name: first(e, l.opts.LoginAttrs)}
		}
	}
	for _, a := range l.opts.MemberAttrs {
		for _, dn := range g.GetEqualFoldAttributeValues(a) {
			users, err := l.search(c, dn, ldap.ScopeBaseObject, l.opts.UserFilter, userAttrs)
			if err != nil {
				return err
			}
			if len(users) == 1 {
				addUser(users[0])
				continue
			}
			if depth+1 >= l.opts.MaxNesting || visited[dn] {
				continue
			}
			groups, err := l.search(c, dn, ldap.ScopeBaseObject, l.opts.GroupFilter,
				slices.Concat([]string{l.opts.IDAttr, l.opts.MemberUIDAttr}, l.opts.MemberAttrs))
			if err != nil {
				return err
			}
			if len(groups) == 1 { // a nested group
				visited[dn] = true
				if err := l.members(c, groups[0], out, visited, depth+1); err != nil {
					return err
				}
			}
			// Anything else is a dangling DN: nobody's access.
		}
	}
	if uids := g.GetEqualFoldAttributeValues(l.opts.MemberUIDAttr); len(uids) > 0 {
		users, err := l.search(c, l.opts.UserBase, ldap.ScopeWholeSubtree,
			"(&"+l.opts.UserFilter+anyOf(l.opts.LoginAttrs[:1], uids)+")", userAttrs)
		if err != nil {
			return err
		}
		for _, u := range users {
			addUser(u)
		}
	}
	return nil
}

// first returns the first value of the first attribute that has one.
func first(e *ldap.Entry, attrs []string) string {
	for _, a := range attrs {
		if v := e.GetEqualFoldAttributeValue(a); v != "" {
			return v
		}
	}
	return ""
}

// idValue reads a persistent id: text as is (entryUUID, nsUniqueId), a
// 16-byte binary GUID (Active Directory's objectGUID) in its usual text
// form, other binary values in hex.
func idValue(e *ldap.Entry, attr string) string {
	raw := e.GetEqualFoldRawAttributeValue(attr)
	if len(raw) == 0 {
		return ""
	}
	if utf8.Valid(raw) && !strings.ContainsFunc(string(raw), func(r rune) bool { return !unicode.IsPrint(r) }) {
		return string(raw)
	}
	if len(raw) == 16 {
		// Microsoft's GUID layout: the first three fields little-endian.
		b := raw
		return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x",
			b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8:10], b[10:16])
	}
	return hex.EncodeToString(raw)
}

// rdnValue is the value of a DN's first RDN ("auditor" for
// "cn=auditor,ou=roles,...").
func rdnValue(dn string) string {
	d, err := ldap.ParseDN(dn)
	if err != nil || len(d.RDNs) == 0 || len(d.RDNs[0].Attributes) == 0 {
		return dn
	}
	return d.RDNs[0].Attributes[0].Value
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

func sortRefs(r []bonnie.Ref) {
	slices.SortFunc(r, func(a, b bonnie.Ref) int {
		return cmp.Or(strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)), strings.Compare(a.ID, b.ID))
	})
}
