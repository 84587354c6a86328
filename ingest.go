package bonnie

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// StateSource gives the current state of entities as the log knows it.
// Every Log is one.
type StateSource interface {
	// StateAt with a zero time returns the current fields of an entity
	// (empty for one never seen).
	StateAt(ctx context.Context, kind EntityKind, id string, at time.Time) (map[string]string, error)
	// Find returns the ids of the entities of kind whose current field
	// has value.
	Find(ctx context.Context, kind EntityKind, field, value string) ([]string, error)
}

// Ingester applies events to the volatile entities and returns the changes
// their setters recorded. It keeps the entities it has touched in memory,
// so that a run of events on one folder reads the log once; events must be
// applied in the order they are appended, and the ingester must be told
// (Forget) when an append did not store what it applied.
type Ingester struct {
	src StateSource
	// The cache has two generations: entities used since the last
	// rotation (cur) and before it (old). A rotation, only ever between
	// two events, drops old, so memory stays bounded without forgetting
	// what the events of an uncommitted batch just changed (they are in
	// cur, or moved back there on use).
	cur, old map[entityKey]map[string]string
	// paths maps a folder path set by a recent event to its id, for
	// copies and moves from a folder the log does not show yet.
	paths map[string]string
	// limit is the size of one generation.
	limit int
}

type entityKey struct {
	kind EntityKind
	id   string
}

// NewIngester returns an ingester reading entity state from src.
func NewIngester(src StateSource) *Ingester {
	return &Ingester{
		src:   src,
		cur:   make(map[entityKey]map[string]string),
		old:   make(map[entityKey]map[string]string),
		paths: make(map[string]string),
		limit: 50_000,
	}
}

// Forget drops the cached state of the entities the changes touched; the
// next event reloads them from the log. Call it for an event whose append
// failed or turned out to be a duplicate.
func (in *Ingester) Forget(changes []Change) {
	for _, c := range changes {
		k := entityKey{c.Entity, c.ID}
		delete(in.cur, k)
		delete(in.old, k)
	}
}

// Reset drops the whole cache.
func (in *Ingester) Reset() {
	clear(in.cur)
	clear(in.old)
	clear(in.paths)
}

// rotate starts a new generation when the current one is full.
func (in *Ingester) rotate() {
	if len(in.cur) < in.limit {
		return
	}
	in.old, in.cur = in.cur, in.old
	clear(in.cur)
	clear(in.paths)
}

// load returns the live fields of an entity, from the cache or the log.
// The returned map is the cache's own: setters update it in place.
func (in *Ingester) load(ctx context.Context, kind EntityKind, id string) (map[string]string, error) {
	k := entityKey{kind, id}
	if f, ok := in.cur[k]; ok {
		return f, nil
	}
	if f, ok := in.old[k]; ok {
		delete(in.old, k)
		in.cur[k] = f
		return f, nil
	}
	st, err := in.src.StateAt(ctx, kind, id, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("bonnie: load %s %s: %w", kind, id, err)
	}
	f := make(map[string]string, len(st))
	for k, v := range st {
		if v != "" {
			f[k] = v
		}
	}
	in.cur[k] = f
	return f, nil
}

// apply is the state of one Apply call.
type apply struct {
	ctx context.Context
	in  *Ingester
	ev  *Event
	rec *Changes
	err error
}

// entity returns the live entity (kind, id) recording into a.rec; after the
// first error it returns a detached one so that the caller can go on
// without checks, and Apply reports the error.
func (a *apply) entity(kind EntityKind, id string) entity {
	if a.err == nil {
		f, err := a.in.load(a.ctx, kind, id)
		if err == nil {
			return entity{kind: kind, id: id, fields: f, rec: a.rec}
		}
		a.err = err
	}
	return entity{kind: kind, id: id, fields: map[string]string{}}
}

func (a *apply) folder(id string) *Folder   { return &Folder{a.entity(KindFolder, id)} }
func (a *apply) message(id string) *Message { return &Message{a.entity(KindMessage, id)} }
func (a *apply) user(id string) *User       { return &User{a.entity(KindUser, id)} }
func (a *apply) group(id string) *Group     { return &Group{a.entity(KindGroup, id)} }
func (a *apply) role(id string) *Role       { return &Role{a.entity(KindRole, id)} }
func (a *apply) session(id string) *Session { return &Session{a.entity(KindSession, id)} }

// folderByPath finds the uniqueid of the present folder named path.
func (a *apply) folderByPath(path string) string {
	if a.err != nil || path == "" {
		return ""
	}
	ids, err := a.in.src.Find(a.ctx, KindFolder, "path", path)
	if err != nil {
		a.err = err
		return ""
	}
	for _, id := range ids {
		if f := a.folder(id); f.Exists() && f.Path() == path {
			return id
		}
	}
	// A folder named by a recent event may not be in the log yet.
	if id, ok := a.in.paths[path]; ok {
		if f := a.folder(id); f.Exists() && f.Path() == path {
			return id
		}
	}
	return ""
}

// Apply applies one event to the entities and returns the changes it
// caused, in the order the setters recorded them. MailboxModseq and the
// MAIL/SIEVE classes change nothing: they are kept in the log only.
func (in *Ingester) Apply(ctx context.Context, ev *Event) ([]Change, error) {
	in.rotate()
	a := &apply{ctx: ctx, in: in, ev: ev, rec: NewChanges(ev.User, ev.Time)}
	a.run()
	if a.err != nil {
		// What was applied to the cache may be half an event: reload.
		in.Forget(a.rec.List())
		return nil, a.err
	}
	return a.rec.List(), nil
}

func (a *apply) run() {
	ev := a.ev
	if ev.Type == IdentityResolved {
		a.lateBindings()
		return
	}
	switch ev.Type {
	case MailboxModseq, MailNotification, SieveNotification, Cancelled,
		CalendarAlarm, ApplePushService, ApplePushServiceDAV:
		return
	}
	if ev.Type == Backfill || ev.Type == Reconcile {
		// What a crawl of the server found (ingest_backfill.go).
		a.crawled()
		return
	}
	if OwnEvents.Has(ev.Type) {
		// Bonnie's other own records change no mailbox state.
		return
	}
	// Users are keyed by their persistent id once resolved (the login
	// otherwise); every identity the event resolved updates the bindings
	// of its user or group.
	ids := ev.Identities
	if ids == nil {
		ids = &Identities{}
	}
	actor := userKey(ids.Actor, ev.User)
	if ev.User != "" && ev.Service != "cyr_expire" {
		u := a.user(actor)
		u.Create()
		if !a.bindUser(u, ids.Actor) {
			u.SetLogin(ev.User)
		}
	}
	a.bindAll(ids.All(), false)
	var f *Folder
	if ev.MailboxID != "" {
		f = a.folder(ev.MailboxID)
		a.track(f)
	}
	switch ev.Type {
	case Login:
		s := a.session(ev.SessionID)
		s.Create()
		s.SetUser(ev.User)
		if actor != ev.User {
			s.set("userId", actor)
		}
		s.SetService(ev.Service)
		if ev.ClientIP != "" {
			s.SetClientAddr(net.JoinHostPort(ev.ClientIP, strconv.Itoa(ev.ClientPort)))
		}
		s.SetStart(ev.Time)
	case Logout:
		s := a.session(ev.SessionID)
		s.Create()
		s.SetUser(ev.User)
		s.SetEnd(ev.Time)
	case MailboxCreate:
		if f != nil {
			f.SetCreated(ev.Time)
		}
	case MailboxDelete:
		if f != nil {
			f.Delete()
		}
	case MailboxSubscribe, MailboxUnsubscribe:
		if ev.User != "" {
			id := ev.MailboxID
			if id == "" {
				id = ev.Mailbox.Name
			}
			v := ""
			if ev.Type == MailboxSubscribe {
				v = "set"
			}
			a.user(actor).set("subscribed:"+id, v)
		}
	case QuotaChange:
		if ev.Mailbox.Owner != "" {
			u := a.user(userKey(ids.Owner, ev.Mailbox.Owner))
			u.set("quota:"+ev.Mailbox.Name+":storage", optInt(ev.DiskQuota))
			u.set("quota:"+ev.Mailbox.Name+":messages", optInt(ev.MaxMessages))
		}
	case MessageAppend, MessageNew:
		if f == nil {
			return
		}
		for i, uid := range ev.UIDs {
			m := a.message(MessageKey(f.ID(), ev.Mailbox.UIDValidity, uid))
			a.place(m, f, uid)
			if len(ev.MessageIDs) == len(ev.UIDs) {
				m.SetMessageID(ev.MessageIDs[i])
			}
			if len(ev.UIDs) == 1 && ev.Size > 0 {
				m.SetSize(ev.Size)
			}
			a.setBody(m, uid) // digest, size, internalDate of the bytes fetched
			a.setFlags(m, f, ev.Flags)
		}
	case MessageCopy, MessageMove:
		if f == nil {
			return
		}
		var srcFolder string
		var srcValidity uint32
		if ev.OldMailbox != nil {
			srcFolder = a.folderByPath(ev.OldMailbox.Name)
			srcValidity = ev.OldMailbox.UIDValidity
		}
		for i, uid := range ev.UIDs {
			m := a.message(MessageKey(f.ID(), ev.Mailbox.UIDValidity, uid))
			a.place(m, f, uid)
			// Cyrus lists each distinct Message-ID once, so the list lines
			// up with the UIDs only when it is as long; otherwise the
			// source message says it.
			if len(ev.MessageIDs) == len(ev.UIDs) {
				m.SetMessageID(ev.MessageIDs[i])
			}
			if srcFolder == "" || i >= len(ev.OldUIDs) {
				continue
			}
			srcKey := MessageKey(srcFolder, srcValidity, ev.OldUIDs[i])
			src := a.message(srcKey)
			m.SetOrigin(srcKey)
			// Cyrus copies flags, size and date with the message; the
			// notification does not repeat them.
			m.SetFlags(src.Flags())
			for _, field := range []string{"size", "internalDate", "digest"} {
				if v := src.get(field); v != "" {
					m.set(field, v)
				}
			}
			if m.MessageID() == "" {
				// Cyrus's midset has one entry per distinct Message-ID,
				// not per UID: take it from the source when it is short.
				m.SetMessageID(src.MessageID())
			}
			if ev.Type == MessageMove {
				src.SetMovedTo(m.ID())
			}
		}
	case MessageRead, FlagsSet, FlagsClear, MessageTrash:
		if f == nil {
			return
		}
		flags := ev.Flags
		switch ev.Type {
		case MessageRead:
			flags = []string{`\Seen`}
		case MessageTrash:
			flags = []string{`\Deleted`}
		}
		for _, uid := range ev.UIDs {
			m := a.message(MessageKey(f.ID(), ev.Mailbox.UIDValidity, uid))
			a.place(m, f, uid)
			if ev.Type == FlagsClear {
				a.removeFlags(m, f, flags)
			} else {
				a.addFlags(m, f, flags)
			}
		}
	case MessageExpunge, MessageExpire:
		if f == nil {
			return
		}
		for _, uid := range ev.UIDs {
			m := a.message(MessageKey(f.ID(), ev.Mailbox.UIDValidity, uid))
			a.place(m, f, uid)
			if ev.Type == MessageExpunge {
				m.Expunge()
			} else {
				m.Expire()
			}
		}
	}
}

// track brings a folder up to what the event says of it: its name (which
// also catches a rename that was never notified), owner, UIDVALIDITY and
// full ACL. For a folder seen for the first time this is its creation in
// the log.
func (a *apply) track(f *Folder) {
	ev := a.ev
	if ev.Type == MailboxDelete {
		return
	}
	if ev.Type != MailboxCreate && !f.Exists() && f.get("state") == StateDeleted {
		// An event still in flight for a deleted folder does not revive it.
		return
	}
	f.Create()
	if ev.Mailbox.Name != "" {
		f.SetPath(ev.Mailbox.Name)
		a.in.paths[ev.Mailbox.Name] = f.ID()
		f.SetOwner(ev.Mailbox.Owner)
		if ev.Identities != nil && ev.Mailbox.Owner != "" {
			if o := userKey(ev.Identities.Owner, ""); o != "" {
				f.set("ownerId", o)
			}
		}
	}
	if ev.Mailbox.UIDValidity != 0 {
		f.SetUIDValidity(ev.Mailbox.UIDValidity)
	}
	if ev.MailboxACL != nil {
		if ev.Type == AclChange && ev.ACLSubject != "" {
			// Record the grant or revoke itself first; the full list
			// then only adds what drifted.
			rights := ev.ACLRights
			if ev.ACLRemoved {
				rights = ""
			}
			f.SetRights(ev.ACLSubject, rights)
		}
		f.SetACL(ev.MailboxACL)
	}
}

// place makes sure the message exists at its folder and UID.
func (a *apply) place(m *Message, f *Folder, uid uint32) {
	if m.get("state") == "" {
		m.Create()
	}
	m.SetFolder(f.ID())
	m.SetUID(uid)
}

// seenField returns where the \Seen flag of the acting user lives: Cyrus
// keeps \Seen per user on shared folders, so a read by someone other than
// the owner sets that reader's seen state, not the owner's.
func (a *apply) seenField(f *Folder) string {
	u := a.ev.User
	if u == "" || f.Owner() == "" || u == f.Owner() || strings.HasPrefix(f.Owner(), u+"@") {
		return "flag:" + `\Seen`
	}
	return "seen:" + u
}

func (a *apply) setFlags(m *Message, f *Folder, flags []string) {
	for _, fl := range flags {
		a.addFlags(m, f, []string{fl})
	}
}

func (a *apply) addFlags(m *Message, f *Folder, flags []string) {
	for _, fl := range flags {
		if fl == `\Seen` {
			m.set(a.seenField(f), "set")
			continue
		}
		m.AddFlags(fl)
	}
}

func (a *apply) removeFlags(m *Message, f *Folder, flags []string) {
	for _, fl := range flags {
		if fl == `\Seen` {
			m.set(a.seenField(f), "")
			continue
		}
		m.RemoveFlags(fl)
	}
}

func optInt(p *int64) string {
	if p == nil {
		return ""
	}
	return strconv.FormatInt(*p, 10)
}

// bindUser brings a user entity's bindings up to a resolved identity: its
// canonical login, aliases, addresses, display name, groups and roles, and
// a "name:" field (never removed) for every name it was ever known by, so
// that the person is found under a name they no longer have. A new login
// or address for a known id is thus a recorded change (login from -> to).
// It reports false, changing nothing, for an identity that is not a
// resolved user.
func (a *apply) bindUser(u *User, id *Identity) bool {
	if id == nil || id.Unresolved || id.Kind != IdentityUser || id.ID == "" {
		return false
	}
	u.Create()
	u.SetLogin(id.Login)
	u.SetDisplayName(id.DisplayName)
	u.setSet("alias:", id.Aliases)
	u.SetAddresses(id.Addresses)
	for _, n := range id.Names() {
		u.set("name:"+strings.ToLower(n), "set")
	}
	groups := make([]string, 0, len(id.Groups))
	for _, g := range id.Groups {
		groups = append(groups, g.ID)
		if g.Name != "" {
			ge := a.group(g.ID)
			ge.Create()
			ge.SetName(g.Name)
		}
	}
	u.SetGroups(groups)
	roles := make([]string, 0, len(id.Roles))
	for _, r := range id.Roles {
		roles = append(roles, r.ID)
		if r.Name != "" {
			re := a.role(r.ID)
			re.Create()
			re.SetName(r.Name)
		}
	}
	u.SetRoles(roles)
	return true
}

// bindGroup brings a group entity up to a resolved group identity: its
// name and its members (by id), so that the group's entity records each
// membership change the directory showed. A pass-through group knows no
// members and changes nothing.
func (a *apply) bindGroup(id *Identity) {
	if id.Unresolved || id.Kind != IdentityGroup || id.ID == "" || id.Source == "passthrough" {
		return
	}
	g := a.group(id.ID)
	g.Create()
	g.SetName(id.Login)
	members := make([]string, 0, len(id.Members))
	for _, m := range id.Members {
		members = append(members, m.ID)
	}
	g.SetMembers(members)
}

// bindAll binds every resolved user and group identity once (by id); with
// lateOnly, only those resolved after the fact.
func (a *apply) bindAll(ids []*Identity, lateOnly bool) {
	done := map[string]bool{}
	for _, id := range ids {
		if id.Unresolved || id.ID == "" || done[string(id.Kind)+"\x00"+id.ID] || (lateOnly && !id.Late) {
			continue
		}
		done[string(id.Kind)+"\x00"+id.ID] = true
		switch id.Kind {
		case IdentityUser:
			a.bindUser(a.user(id.ID), id)
		case IdentityGroup:
			a.bindGroup(id)
		}
	}
}

// lateBindings applies an IdentityResolved event: the identities it
// resolved after the fact update their entities now (at the resolution's
// time); those that were already resolved at ingest were bound then and
// are left alone, so that an older snapshot never overwrites a newer one.
func (a *apply) lateBindings() {
	res, err := a.ev.Resolution()
	if err != nil {
		return // kept in the log as it came; nothing to apply
	}
	a.bindAll(res.All(), true)
}
