package identity

import (
	"strings"

	"github.com/bonnie-archive/bonnie"
)

// Subject is a login name or an ACL identifier taken apart.
type Subject struct {
	// Raw is the string as given.
	Raw string
	// Kind is IdentityUser, IdentityGroup or IdentitySpecial.
	Kind bonnie.IdentityKind
	// Name is the user's login (Kolab's "john/doe@example.org" turned
	// into "john.doe@example.org"), the group's name without "group:",
	// or "anyone"/"anonymous".
	Name string
	// Negative is true for a negative ACL identifier ("-bob").
	Negative bool
}

// ParseSubject takes apart a login or an ACL identifier as Cyrus writes
// them: "anyone" and "anonymous" (any case) are special, "group:NAME" is a
// group, a leading "-" negates an ACL entry, and a '/' in a user name is
// Kolab's (Cyrus 2.5 with unixhierarchysep) spelling of a '.'.
func ParseSubject(s string) Subject {
	sub := Subject{Raw: s, Kind: bonnie.IdentityUser}
	name := strings.TrimSpace(s)
	if n, ok := strings.CutPrefix(name, "-"); ok {
		sub.Negative, name = true, n
	}
	switch {
	case strings.EqualFold(name, "anyone") || strings.EqualFold(name, "anonymous"):
		sub.Kind, name = bonnie.IdentitySpecial, strings.ToLower(name)
	case len(name) > 6 && strings.EqualFold(name[:6], "group:"):
		sub.Kind, name = bonnie.IdentityGroup, name[6:]
	default:
		name = strings.ReplaceAll(name, "/", ".")
	}
	sub.Name = name
	return sub
}

// Candidates returns the names a login may be stored under in a
// directory, most specific first: the login itself; with a default domain,
// a bare local part also as "local@domain", and "local@domain" also as the
// bare local part.
func Candidates(login, defaultDomain string) []string {
	out := []string{login}
	if defaultDomain == "" || login == "" {
		return out
	}
	local, domain, hasAt := strings.Cut(login, "@")
	switch {
	case !hasAt:
		out = append(out, login+"@"+defaultDomain)
	case strings.EqualFold(domain, defaultDomain) && local != "":
		out = append(out, local)
	}
	return out
}

// special returns the identity of "anyone" or "anonymous": no directory
// entry, the name is the id.
func special(sub Subject, source string) bonnie.Identity {
	return bonnie.Identity{Subject: sub.Raw, Kind: bonnie.IdentitySpecial, Negative: sub.Negative,
		ID: sub.Name, Login: sub.Name, Source: source}
}

// unknown returns the answer for a name the directory does not know: the
// login itself stands for the person (kind IdentityLogin), with the
// reason. An unknown group keeps its kind and has no id.
func unknown(sub Subject, source, reason string) bonnie.Identity {
	id := bonnie.Identity{Subject: sub.Raw, Kind: bonnie.IdentityLogin, Negative: sub.Negative,
		ID: sub.Name, Login: sub.Name, Source: source, Reason: reason}
	if sub.Kind == bonnie.IdentityGroup {
		id.Kind, id.ID = bonnie.IdentityGroup, ""
	}
	return id
}

// partial is what is known of a subject without the directory; resolvers
// return it with their errors.
func partial(sub Subject, source string) bonnie.Identity {
	return bonnie.Identity{Subject: sub.Raw, Kind: sub.Kind, Negative: sub.Negative, Source: source}
}
