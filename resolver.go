package bonnie

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// IdentityKind says what an Identity names.
type IdentityKind string

// The kinds of identity.
const (
	// IdentityUser is a person (or a functional account) known to the
	// directory: ID is the directory's persistent id.
	IdentityUser IdentityKind = "user"
	// IdentityGroup is a group (ACL subject "group:NAME"); Members lists
	// who was in it.
	IdentityGroup IdentityKind = "group"
	// IdentitySpecial is Cyrus's "anyone" or "anonymous": no directory
	// entry, ID is the name.
	IdentitySpecial IdentityKind = "special"
	// IdentityLogin is a login that was not resolved against a directory
	// (the PassThrough resolver, or a login the directory does not know,
	// like Cyrus's admin "cyrus"): ID is the login itself.
	IdentityLogin IdentityKind = "login"
)

// Ref names a group or role in an identity: its persistent id and its name
// at the time.
type Ref struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// Identity is what a login name or an ACL subject resolved to at an
// event's time: the persistent identity behind a volatile name. It is
// stored in the event (Event.Identities) and so hashed with it: a later
// change in the directory does not rewrite it.
type Identity struct {
	// Subject is the string that was resolved, as the event gave it
	// ("jdoe2", "group:finance", "-bob", "anyone").
	Subject string       `json:"subject"`
	Kind    IdentityKind `json:"kind"`
	// Negative is true for a negative ACL identifier ("-bob"): the
	// identity is the one after the minus.
	Negative bool `json:"negative,omitempty"`
	// ID is the persistent id: a directory's entryUUID (or nsUniqueId...)
	// for a user or group, the name for IdentitySpecial and
	// IdentityLogin. Empty when Unresolved.
	ID string `json:"id,omitempty"`
	// Login is the canonical login of a user (a group's name for a
	// group).
	Login string `json:"login,omitempty"`
	// Aliases are the other names the user can log in with; Addresses
	// are their mail addresses.
	Aliases     []string `json:"aliases,omitempty"`
	Addresses   []string `json:"addresses,omitempty"`
	DisplayName string   `json:"displayName,omitempty"`
	// Groups and Roles are a user's memberships at the time: the
	// snapshot.
	Groups []Ref `json:"groups,omitempty"`
	Roles  []Ref `json:"roles,omitempty"`
	// Members are a group's members at the time, each with its id and
	// login.
	Members []Ref `json:"members,omitempty"`
	// Source names the resolver that answered ("ldap", "static",
	// "passthrough").
	Source string `json:"source,omitempty"`
	// ResolvedAt is when the resolver answered: the ingest time, or for a
	// late resolution (Late) the time of the resolution pass, which is
	// also the time the memberships are true of.
	ResolvedAt time.Time `json:"resolvedAt,omitzero"`
	// Unresolved is true when the resolver could not answer in time (the
	// directory unreachable or slow); Reason says why. The event is
	// stored all the same, and ResolvePending appends the resolution
	// later as an IdentityResolved event.
	Unresolved bool   `json:"unresolved,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Late marks an identity resolved after the fact, by the resolution
	// pass rather than at ingest.
	Late bool `json:"late,omitempty"`
}

// Names returns every name the identity is known by: the subject (without
// a leading minus), the login, the aliases and the addresses, without
// duplicates.
func (id *Identity) Names() []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if s != "" && !seen[strings.ToLower(s)] {
			seen[strings.ToLower(s)] = true
			out = append(out, s)
		}
	}
	add(strings.TrimPrefix(id.Subject, "-"))
	add(id.Login)
	for _, a := range id.Aliases {
		add(a)
	}
	for _, a := range id.Addresses {
		add(a)
	}
	return out
}

// Identities are the resolutions stored with an event: who acted, whose
// mailbox it was, and who the ACL named. A nil field was not resolved
// (the event has no such subject, or the engine has no Resolver).
type Identities struct {
	Actor *Identity `json:"actor,omitempty"`
	// Owner is the owner of the event's mailbox (Event.Mailbox.Owner).
	Owner *Identity `json:"owner,omitempty"`
	// Subject is the aclSubject of an AclChange.
	Subject *Identity `json:"subject,omitempty"`
	// ACL holds one identity per entry of Event.MailboxACL, in its
	// order: who could see the folder, with group members, at the time.
	ACL []Identity `json:"acl,omitempty"`
	// Resolves is set on the resolution of an IdentityResolved event: the
	// position of the event whose unresolved identities this fills in.
	Resolves Position `json:"resolves,omitempty"`
}

// All returns pointers to every identity present, actor first.
func (ids *Identities) All() []*Identity {
	if ids == nil {
		return nil
	}
	var out []*Identity
	for _, p := range []*Identity{ids.Actor, ids.Owner, ids.Subject} {
		if p != nil {
			out = append(out, p)
		}
	}
	for i := range ids.ACL {
		out = append(out, &ids.ACL[i])
	}
	return out
}

// Unresolved reports whether any identity is marked unresolved.
func (ids *Identities) Unresolved() bool {
	for _, id := range ids.All() {
		if id.Unresolved {
			return true
		}
	}
	return false
}

// Resolver turns a login name or an ACL subject into a persistent
// identity as of time at. Subjects are what Cyrus puts in events: a login
// ("alice", "alice@example.org", Kolab's "john/doe@example.org"), or an
// ACL identifier ("group:finance", "anyone", "anonymous", "-bob").
//
// Implementations live in the identity package (LDAP, a static file); the
// interface is here, like http.Handler in net/http, so that the engine can
// use one without an import cycle. They must be safe for concurrent use.
//
// An error means that the resolver could not answer now (directory
// unreachable, timeout, bad credentials): the engine stores the event with
// the identity marked Unresolved, and a later Engine.ResolvePending fills
// it in. A subject the directory does not know is an answer, not an
// error: an Identity of kind IdentityLogin whose Reason says so. With an
// error, the Identity returned may carry what is known without the
// directory (Subject, Kind, Negative).
type Resolver interface {
	Resolve(ctx context.Context, subject string, at time.Time) (Identity, error)
}

// PassThrough is the Resolver for sites without a directory: every login
// is its own persistent id (kind IdentityLogin; "group:NAME" becomes a
// group named NAME without members, "anyone" and "anonymous" are
// special).
type PassThrough struct{}

// Resolve implements Resolver; it never fails.
func (PassThrough) Resolve(_ context.Context, subject string, _ time.Time) (Identity, error) {
	id := Identity{Subject: subject, Kind: IdentityLogin, Source: "passthrough", ResolvedAt: time.Now().UTC()}
	name := subject
	if n, ok := strings.CutPrefix(name, "-"); ok {
		id.Negative, name = true, n
	}
	name = normalizeSubject(name)
	switch {
	case strings.EqualFold(name, "anyone") || strings.EqualFold(name, "anonymous"):
		id.Kind, name = IdentitySpecial, strings.ToLower(name)
	case len(name) > 6 && strings.EqualFold(name[:6], "group:"):
		id.Kind, name = IdentityGroup, name[6:]
		id.ID, id.Login = "group:"+name, name
		return id, nil
	}
	id.ID, id.Login = name, name
	return id, nil
}

// The members of an IdentityResolved notification (Extra once decoded)
// that carry the late resolution.
const (
	extraResolves   = "vnd.bonnie.resolves"
	extraIdentities = "vnd.bonnie.identities"
	extraEventKey   = "vnd.bonnie.eventKey"
	extraEventTime  = "vnd.bonnie.eventTime"
)

// Resolution returns what an IdentityResolved event carries: the position
// of the event it resolves and the identities it fills in (every identity
// of that event, the unresolved ones now resolved and marked Late). It
// fails for any other event.
func (e *Event) Resolution() (*Identities, error) {
	if e.Type != IdentityResolved {
		return nil, fmt.Errorf("bonnie: %s is not an IdentityResolved event", e.Type)
	}
	raw, ok := e.Extra[extraIdentities]
	if !ok {
		return nil, errors.New("bonnie: IdentityResolved without " + extraIdentities)
	}
	ids := new(Identities)
	if err := json.Unmarshal(raw, ids); err != nil {
		return nil, fmt.Errorf("bonnie: IdentityResolved: %w", err)
	}
	var pos Position
	if err := json.Unmarshal(e.Extra[extraResolves], &pos); err != nil || pos == 0 {
		return nil, fmt.Errorf("bonnie: IdentityResolved without a valid %s", extraResolves)
	}
	ids.Resolves = pos
	return ids, nil
}

// ActorIdentity returns the identity the log holds for the event's actor:
// the resolved one, or for an event stored without resolution a
// pass-through identity of its login (nil for an event without user).
func (e *Event) ActorIdentity() *Identity {
	if e.Identities != nil && e.Identities.Actor != nil {
		return e.Identities.Actor
	}
	if e.User == "" {
		return nil
	}
	return &Identity{Subject: e.User, Kind: IdentityLogin, ID: e.User, Login: e.User}
}

// userKey is the id of the User entity of a resolved identity, or the
// login when it is not resolved (the pre-resolution keying).
func userKey(id *Identity, login string) string {
	if id != nil && !id.Unresolved && id.ID != "" && id.Kind == IdentityUser {
		return id.ID
	}
	return login
}

// resolvesIdentities reports whether the subjects of events of type t are
// resolved: those that Ingester.Apply applies to entities.
func resolvesIdentities(t EventType) bool {
	switch t {
	case MailboxModseq, MailNotification, SieveNotification, Cancelled,
		CalendarAlarm, ApplePushService, ApplePushServiceDAV, DaemonStart, DaemonStop, IdentityResolved:
		return false
	}
	return true
}
