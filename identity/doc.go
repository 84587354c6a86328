// Package identity resolves the volatile names in mail events (logins,
// ACL subjects) to persistent identities, as bonnie.Resolver
// implementations.
//
// Login names are volatile: "jdoe2", "j.doe2@example.org" and
// "jane.doe@example.org" can be one person, and "jane.gi@example.org" can
// become "jane.doe@example.org" tomorrow. Evidence must name the person,
// not the string. The engine (bonnie.Options.Resolver) asks a resolver
// about the actor, the mailbox owner and every ACL subject of each event
// at ingest and stores the answers in the event (bonnie.Event.Identities),
// hashed with it: the persistent id, the canonical login, aliases and
// addresses, and a snapshot of the user's groups and roles, or of a
// group's members. A later change in the directory does not rewrite
// history.
//
// Two resolvers are provided:
//
//   - LDAP (NewLDAP): any LDAP directory, the persistent id read from a
//     configurable attribute (entryUUID on OpenLDAP, nsUniqueId on
//     389-DS), with configurable bases, filters and attributes, a
//     connection pool, timeouts, fail-fast while the directory is down,
//     and a TTL cache (Cache) that also drops what a fresh answer shows
//     to be stale.
//   - Static (NewStatic, LoadStatic): a YAML or JSON file (File), for
//     sites without a directory and for examples; it can say which login
//     named whom during which time span.
//
// ParseSubject understands the subjects Cyrus writes: "anyone",
// "anonymous", "group:NAME", negative rights "-NAME", Kolab's
// "john/doe@example.org" for "john.doe@example.org", and, with a default
// domain, a bare local part. Config reads the resolver settings from
// flags and from a config file.
//
// When the directory cannot be reached, a resolver returns an error: the
// engine stores the event anyway, with the identity marked Unresolved,
// and bonnie.Engine.ResolvePending later appends the resolution as an
// IdentityResolved event.
package identity
