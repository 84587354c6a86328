package bonnie

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EntityKind names a kind of volatile entity.
type EntityKind string

// The entity kinds Bonnie tracks.
const (
	KindUser    EntityKind = "user"
	KindGroup   EntityKind = "group"
	KindRole    EntityKind = "role"
	KindFolder  EntityKind = "folder"
	KindMessage EntityKind = "message"
	KindObject  EntityKind = "object"
	KindSession EntityKind = "session"
)

// Values of the "state" field that every entity has. Creation is the
// change "" -> StatePresent, deletion StatePresent -> StateDeleted (or
// StateExpunged/StateExpired for a message).
const (
	StatePresent  = "present"
	StateDeleted  = "deleted"
	StateExpunged = "expunged"
	StateExpired  = "expired"
)

// Changes collects the changes that entity setters record while one event
// is applied. Code that processes an event only calls setters; the
// changelog follows from them.
type Changes struct {
	// Actor and Time are stamped on every change recorded.
	Actor string
	Time  time.Time
	list  []Change
}

// NewChanges starts an empty set of changes made by actor at t.
func NewChanges(actor string, t time.Time) *Changes {
	return &Changes{Actor: actor, Time: t.UTC()}
}

// List returns the changes in the order they were recorded.
func (c *Changes) List() []Change { return c.list }

// Len is the number of changes recorded.
func (c *Changes) Len() int { return len(c.list) }

func (c *Changes) record(kind EntityKind, id, field, from, to string) {
	c.list = append(c.list, Change{Entity: kind, ID: id, Field: field, From: from, To: to, Actor: c.Actor, Time: c.Time})
}

// entity is the state every entity kind shares: its identity and its
// fields as strings, the same shape the log folds changes into, so that
// an entity loads from Log.StateAt and records into Changes with one
// mechanism.
type entity struct {
	kind   EntityKind
	id     string
	fields map[string]string
	rec    *Changes
}

func newEntity(rec *Changes, kind EntityKind, id string, state map[string]string) entity {
	f := make(map[string]string, len(state))
	for k, v := range state {
		if v != "" {
			f[k] = v
		}
	}
	return entity{kind: kind, id: id, fields: f, rec: rec}
}

// Kind returns the entity's kind.
func (e *entity) Kind() EntityKind { return e.kind }

// ID returns the entity's persistent id.
func (e *entity) ID() string { return e.id }

// Fields returns a copy of the entity's fields (absent ones omitted).
func (e *entity) Fields() map[string]string { return maps.Clone(e.fields) }

// Exists reports whether the entity is present (created and not deleted).
func (e *entity) Exists() bool { return e.fields["state"] == StatePresent }

func (e *entity) get(field string) string { return e.fields[field] }

// set is the one place where a change is recorded: only when the value
// differs from the current one.
func (e *entity) set(field, to string) {
	from := e.fields[field]
	if from == to {
		return
	}
	if e.rec != nil {
		e.rec.record(e.kind, e.id, field, from, to)
	}
	if to == "" {
		delete(e.fields, field)
	} else {
		e.fields[field] = to
	}
}

// setSet makes the fields prefix+member for every member of want present
// (value "set") and removes the others, recording one change per member
// that differs, in sorted order.
func (e *entity) setSet(prefix string, want []string) {
	wanted := make(map[string]bool, len(want))
	for _, w := range want {
		wanted[w] = true
	}
	var names []string
	for k := range e.fields {
		if m, ok := strings.CutPrefix(k, prefix); ok && !wanted[m] {
			names = append(names, m)
		}
	}
	for m := range wanted {
		if e.fields[prefix+m] == "" {
			names = append(names, m)
		}
	}
	slices.Sort(names)
	for _, m := range names {
		if wanted[m] {
			e.set(prefix+m, "set")
		} else {
			e.set(prefix+m, "")
		}
	}
}

// members lists the names under prefix, sorted.
func (e *entity) members(prefix string) []string {
	var out []string
	for k := range e.fields {
		if m, ok := strings.CutPrefix(k, prefix); ok {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

// Create marks the entity present (a change "" -> present on first call).
func (e *entity) Create() { e.set("state", StatePresent) }

// Delete marks the entity deleted.
func (e *entity) Delete() { e.set("state", StateDeleted) }

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// User is a person as the mail system knows them: the login they use and
// the addresses they have. Its id is the persistent identity (a directory
// entryUUID once identities are resolved, the login until then).
type User struct{ entity }

// NewUser loads user id from its folded state (nil for a new one); its
// setters record into rec.
func NewUser(rec *Changes, id string, state map[string]string) *User {
	return &User{newEntity(rec, KindUser, id, state)}
}

func (u *User) Login() string           { return u.get("login") }
func (u *User) SetLogin(s string)       { u.set("login", s) }
func (u *User) DisplayName() string     { return u.get("displayName") }
func (u *User) SetDisplayName(s string) { u.set("displayName", s) }
func (u *User) Addresses() []string     { return u.members("address:") }
func (u *User) SetAddresses(a []string) { u.setSet("address:", a) }
func (u *User) Groups() []string        { return u.members("group:") }
func (u *User) SetGroups(g []string)    { u.setSet("group:", g) }
func (u *User) Roles() []string         { return u.members("role:") }
func (u *User) SetRoles(r []string)     { u.setSet("role:", r) }

// Group is a directory group; ACLs name it as "group:NAME".
type Group struct{ entity }

// NewGroup loads group id from its folded state.
func NewGroup(rec *Changes, id string, state map[string]string) *Group {
	return &Group{newEntity(rec, KindGroup, id, state)}
}

func (g *Group) Name() string          { return g.get("name") }
func (g *Group) SetName(s string)      { g.set("name", s) }
func (g *Group) Members() []string     { return g.members("member:") }
func (g *Group) SetMembers(m []string) { g.setSet("member:", m) }

// Role is a named function held by people (auditor, admin...).
type Role struct{ entity }

// NewRole loads role id from its folded state.
func NewRole(rec *Changes, id string, state map[string]string) *Role {
	return &Role{newEntity(rec, KindRole, id, state)}
}

func (r *Role) Name() string          { return r.get("name") }
func (r *Role) SetName(s string)      { r.set("name", s) }
func (r *Role) Members() []string     { return r.members("member:") }
func (r *Role) SetMembers(m []string) { r.setSet("member:", m) }

// Folder is an IMAP mailbox, identified by Cyrus's uniqueid (the event's
// mailboxID), which survives renames.
type Folder struct{ entity }

// NewFolder loads folder id from its folded state.
func NewFolder(rec *Changes, id string, state map[string]string) *Folder {
	return &Folder{newEntity(rec, KindFolder, id, state)}
}

// Path is the mailbox name in Cyrus's admin namespace ("user.alice.Work").
func (f *Folder) Path() string       { return f.get("path") }
func (f *Folder) SetPath(p string)   { f.set("path", p) }
func (f *Folder) Owner() string      { return f.get("owner") }
func (f *Folder) SetOwner(o string)  { f.set("owner", o) }
func (f *Folder) Created() time.Time { return parseTime(f.get("created")) }
func (f *Folder) SetCreated(t time.Time) {
	f.set("created", formatTime(t))
}

// UIDValidity is the folder's current UIDVALIDITY.
func (f *Folder) UIDValidity() uint32 {
	v, _ := strconv.ParseUint(f.get("uidValidity"), 10, 32)
	return uint32(v)
}
func (f *Folder) SetUIDValidity(v uint32) { f.set("uidValidity", formatUint(uint64(v))) }

// ACL returns the folder's ACL sorted by subject.
func (f *Folder) ACL() ACL {
	var acl ACL
	for _, s := range f.members("acl:") {
		acl = append(acl, ACLEntry{Subject: s, Rights: f.get("acl:" + s)})
	}
	return acl
}

// SetACL replaces the whole ACL, recording one change per subject whose
// rights differ (a grant is "" -> rights, a revoke rights -> "").
func (f *Folder) SetACL(acl ACL) {
	want := make(map[string]string, len(acl))
	for _, a := range acl {
		want[a.Subject] = a.Rights
	}
	for _, s := range f.members("acl:") {
		if _, ok := want[s]; !ok {
			f.set("acl:"+s, "")
		}
	}
	for _, s := range slices.Sorted(maps.Keys(want)) {
		f.set("acl:"+s, want[s])
	}
}

// SetRights sets one subject's rights ("" revokes).
func (f *Folder) SetRights(subject, rights string) { f.set("acl:"+subject, rights) }

// Metadata returns one metadata entry (IMAP METADATA / annotation).
func (f *Folder) Metadata(key string) string { return f.get("meta:" + key) }

// SetMetadata sets one metadata entry ("" removes it).
func (f *Folder) SetMetadata(key, value string) { f.set("meta:"+key, value) }

// Message is one message at one place: a folder (by uniqueid), its
// UIDVALIDITY and a UID. A move is the end of one Message and the start of
// another; MessageID and Digest follow the content across places.
type Message struct{ entity }

// MessageKey is the persistent id of the message at UID uid of folder
// folderID (a uniqueid) under UIDVALIDITY uidValidity.
func MessageKey(folderID string, uidValidity, uid uint32) string {
	return folderID + "/" + formatUint(uint64(uidValidity)) + "/" + formatUint(uint64(uid))
}

// NewMessage loads message id (see MessageKey) from its folded state.
func NewMessage(rec *Changes, id string, state map[string]string) *Message {
	return &Message{newEntity(rec, KindMessage, id, state)}
}

func (m *Message) Folder() string          { return m.get("folder") }
func (m *Message) SetFolder(id string)     { m.set("folder", id) }
func (m *Message) UID() uint32             { return uint32(parseUint(m.get("uid"))) }
func (m *Message) SetUID(uid uint32)       { m.set("uid", formatUint(uint64(uid))) }
func (m *Message) MessageID() string       { return m.get("messageId") }
func (m *Message) SetMessageID(s string)   { m.set("messageId", s) }
func (m *Message) Size() int64             { return int64(parseUint(m.get("size"))) }
func (m *Message) SetSize(n int64)         { m.set("size", formatUint(uint64(n))) }
func (m *Message) InternalDate() time.Time { return parseTime(m.get("internalDate")) }
func (m *Message) SetInternalDate(t time.Time) {
	m.set("internalDate", formatTime(t))
}

// Digest is the SHA-256 of the message bytes (hex), once known.
func (m *Message) Digest() string     { return m.get("digest") }
func (m *Message) SetDigest(s string) { m.set("digest", s) }

// Flags returns the message's flags, sorted.
func (m *Message) Flags() []string { return m.members("flag:") }

// SetFlags replaces the flags, recording one change per flag added or
// removed.
func (m *Message) SetFlags(flags []string) { m.setSet("flag:", flags) }

// AddFlags and RemoveFlags apply FlagsSet/FlagsClear.
func (m *Message) AddFlags(flags ...string) {
	for _, f := range flags {
		m.set("flag:"+f, "set")
	}
}

func (m *Message) RemoveFlags(flags ...string) {
	for _, f := range flags {
		m.set("flag:"+f, "")
	}
}

// State is present, expunged or expired.
func (m *Message) State() string        { return m.get("state") }
func (m *Message) Expunge()             { m.set("state", StateExpunged) }
func (m *Message) Expire()              { m.set("state", StateExpired) }
func (m *Message) MovedTo() string      { return m.get("movedTo") }
func (m *Message) SetMovedTo(id string) { m.set("movedTo", id) }
func (m *Message) Origin() string       { return m.get("origin") }
func (m *Message) SetOrigin(id string)  { m.set("origin", id) }

// Object is a groupware object (a Kolab event, contact, task...), stored
// as a message whose Subject is the object's UID; each edit appends a new
// message and expunges the old one, so the object outlives its messages.
type Object struct{ entity }

// NewObject loads object id (its Kolab UID) from its folded state.
func NewObject(rec *Changes, id string, state map[string]string) *Object {
	return &Object{newEntity(rec, KindObject, id, state)}
}

// Type is the X-Kolab-Type of the object ("application/x-vnd.kolab.event").
func (o *Object) Type() string     { return o.get("type") }
func (o *Object) SetType(s string) { o.set("type", s) }

// Revision is the revision number, 1 for the first version.
func (o *Object) Revision() int { return int(parseUint(o.get("revision"))) }

// Message is the message (MessageKey) holding the current revision.
func (o *Object) Message() string { return o.get("message") }

// AddRevision records a new revision held by message msg.
func (o *Object) AddRevision(msg string) {
	o.set("revision", formatUint(uint64(o.Revision()+1)))
	o.set("message", msg)
}

// Session is one IMAP/POP/LMTP session, from Login to Logout, identified
// by Cyrus's vnd.cmu.sessionId.
type Session struct{ entity }

// NewSession loads session id from its folded state.
func NewSession(rec *Changes, id string, state map[string]string) *Session {
	return &Session{newEntity(rec, KindSession, id, state)}
}

func (s *Session) User() string           { return s.get("user") }
func (s *Session) SetUser(u string)       { s.set("user", u) }
func (s *Session) Service() string        { return s.get("service") }
func (s *Session) SetService(v string)    { s.set("service", v) }
func (s *Session) ClientAddr() string     { return s.get("client") }
func (s *Session) SetClientAddr(a string) { s.set("client", a) }
func (s *Session) Start() time.Time       { return parseTime(s.get("start")) }
func (s *Session) SetStart(t time.Time)   { s.set("start", formatTime(t)) }
func (s *Session) End() time.Time         { return parseTime(s.get("end")) }

// SetEnd ends the session at t and records its duration.
func (s *Session) SetEnd(t time.Time) {
	s.set("end", formatTime(t))
	if st := s.Start(); !st.IsZero() && !t.IsZero() {
		s.set("duration", t.Sub(st).String())
	}
}

// Duration is End - Start, zero while open.
func (s *Session) Duration() time.Duration {
	d, _ := time.ParseDuration(s.get("duration"))
	return d
}

func formatUint(v uint64) string { return strconv.FormatUint(v, 10) }

func parseUint(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}
