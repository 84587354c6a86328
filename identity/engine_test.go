package identity_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/identity"
	"github.com/bonnie-archive/bonnie/internal/slapdtest"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

func openLog(t *testing.T) *sqlite.Log {
	t.Helper()
	lg, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	return lg
}

// notification is a bare-JSON Cyrus event (the external notifier's
// framing) with the given members.
func notification(t *testing.T, event string, at time.Time, members map[string]any) []byte {
	t.Helper()
	m := map[string]any{"event": event, "timestamp": at.UTC().Format("2006-01-02T15:04:05.000Z"), "service": "imap",
		"serverFQDN": "cyrus.test", "pid": 4242}
	for k, v := range members {
		m[k] = v
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func ingest(t *testing.T, eng *bonnie.Engine, raw []byte) bonnie.Position {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pos, dup, err := eng.Ingest(ctx, raw, "test")
	if err != nil || dup {
		t.Fatalf("ingest %s: pos %d dup %v err %v", raw, pos, dup, err)
	}
	return pos
}

func record(t *testing.T, lg *sqlite.Log, pos bonnie.Position) bonnie.Record {
	t.Helper()
	recs, err := lg.Read(context.Background(), pos-1, 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("read %d: %v %v", pos, recs, err)
	}
	return recs[0]
}

func all(t *testing.T, lg *sqlite.Log) []bonnie.Record {
	t.Helper()
	recs, err := lg.Read(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

var t0 = time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC)

func login(t *testing.T, user, session string, at time.Time) []byte {
	return notification(t, "Login", at, map[string]any{"user": user, "vnd.cmu.sessionId": session,
		"clientIP": "192.0.2.7", "clientPort": 50123, "uri": "imap://cyrus.test"})
}

// A user renamed in the directory (uid and mail changed, entryUUID kept)
// between two events resolves to the same id; the User entity, keyed by
// that id, records the binding change, and is found under both names.
func TestEngineRenameResolvesToSameID(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.Cache.TTL = time.Hour })
	lg := openLog(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg, Resolver: l})
	if err != nil {
		t.Fatal(err)
	}
	uuid := s.UUID(t, "alice")
	p1 := ingest(t, eng, login(t, "alice", "s1", t0))
	s.Rename(t, "alice", "alice2", "alice2@example.org")
	p2 := ingest(t, eng, login(t, "alice2", "s2", t0.Add(time.Hour)))

	a1, a2 := record(t, lg, p1).Event.Identities.Actor, record(t, lg, p2).Event.Identities.Actor
	if a1.ID != uuid || a2.ID != uuid {
		t.Fatalf("actors %s and %s, want both %s", a1.ID, a2.ID, uuid)
	}
	if a1.Login != "alice" || a2.Login != "alice2" || a1.Subject != "alice" || a2.Subject != "alice2" {
		t.Errorf("logins %q/%q subjects %q/%q", a1.Login, a2.Login, a1.Subject, a2.Subject)
	}
	hist, err := lg.History(context.Background(), bonnie.KindUser, uuid)
	if err != nil {
		t.Fatal(err)
	}
	var sawRename bool
	for _, c := range hist {
		if c.Field == "login" && c.From == "alice" && c.To == "alice2" && c.Cause == p2 {
			sawRename = true
		}
	}
	if !sawRename {
		t.Errorf("no login change alice -> alice2 in the user's history: %v", hist)
	}
	for _, name := range []string{"alice", "alice2", "alice.smith@example.org", "alice2@example.org"} {
		ids, err := lg.Find(context.Background(), bonnie.KindUser, "name:"+name, "set")
		if err != nil || !slices.Equal(ids, []string{uuid}) {
			t.Errorf("user named %s: %v %v", name, ids, err)
		}
	}
	st, _ := lg.StateAt(context.Background(), bonnie.KindSession, "s2", time.Time{})
	if st["userId"] != uuid || st["user"] != "alice2" {
		t.Errorf("session s2: %v", st)
	}
	if err := lg.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func aclChange(t *testing.T, subject, rights, acl string, at time.Time) []byte {
	return notification(t, "AclChange", at, map[string]any{"user": "alice", "vnd.cmu.sessionId": "s1",
		"mailboxID": "kwv2nc0rutdhxg2phbung3vj", "uri": "imap://cyrus.test/user.alice.Work;UIDVALIDITY=1795897411",
		"aclSubject": subject, "aclRights": rights, "vnd.cmu.mailboxACL": acl})
}

// A group ACL's snapshot lists the members at that time; a later
// membership change does not alter it.
func TestEngineGroupACLSnapshot(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.Cache.TTL = time.Hour })
	lg := openLog(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Resolver: l})
	alice, bob, carol := s.UUID(t, "alice"), s.UUID(t, "bob"), s.UUID(t, "carol")
	finance := s.GroupUUID(t, "finance")

	p1 := ingest(t, eng, aclChange(t, "group:finance", "lrs", "alice\tlrswipkxtecdan\tgroup:finance\tlrs\t", t0))
	s.AddMember(t, "finance", "bob")
	l.Cache().Purge() // as if the TTL had passed
	p2 := ingest(t, eng, aclChange(t, "group:finance", "lrsw", "alice\tlrswipkxtecdan\tgroup:finance\tlrsw\t", t0.Add(time.Minute)))

	members := func(id *bonnie.Identity) []string {
		var out []string
		for _, m := range id.Members {
			out = append(out, m.Name)
		}
		return out
	}
	ids1 := record(t, lg, p1).Event.Identities
	if ids1.Subject == nil || ids1.Subject.Kind != bonnie.IdentityGroup || ids1.Subject.ID != finance ||
		!slices.Equal(members(ids1.Subject), []string{"alice", "carol"}) {
		t.Fatalf("first snapshot: %+v", ids1.Subject)
	}
	if len(ids1.ACL) != 2 || ids1.ACL[0].ID != alice || !slices.Equal(members(&ids1.ACL[1]), []string{"alice", "carol"}) {
		t.Errorf("first ACL snapshot: %+v", ids1.ACL)
	}
	if ids1.Owner == nil || ids1.Owner.ID != alice || ids1.Actor.ID != alice {
		t.Errorf("owner %+v actor %+v", ids1.Owner, ids1.Actor)
	}
	if got := refNames(ids1.Actor.Groups); !slices.Equal(got, []string{"finance", "finance-posix"}) {
		t.Errorf("actor's group snapshot %v", got)
	}
	ids2 := record(t, lg, p2).Event.Identities
	if !slices.Equal(members(ids2.Subject), []string{"alice", "bob", "carol"}) {
		t.Errorf("second snapshot: %v", members(ids2.Subject))
	}
	// The first record, read again after the change, is what it was.
	if again := record(t, lg, p1).Event.Identities; !slices.Equal(members(again.Subject), []string{"alice", "carol"}) {
		t.Errorf("the first snapshot changed: %v", members(again.Subject))
	}
	// The group's entity recorded the membership change at the second
	// event.
	st, _ := lg.StateAt(context.Background(), bonnie.KindGroup, finance, t0.Add(30*time.Second))
	if st["member:"+alice] != "set" || st["member:"+carol] != "set" || st["member:"+bob] != "" || st["name"] != "finance" {
		t.Errorf("group state between the events: %v", st)
	}
	st, _ = lg.StateAt(context.Background(), bonnie.KindGroup, finance, time.Time{})
	if st["member:"+bob] != "set" {
		t.Errorf("group state now: %v", st)
	}
	fst, _ := lg.StateAt(context.Background(), bonnie.KindFolder, "kwv2nc0rutdhxg2phbung3vj", time.Time{})
	if fst["ownerId"] != alice || fst["acl:group:finance"] != "lrsw" {
		t.Errorf("folder: %v", fst)
	}
	if err := lg.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The directory down during ingest: every event is stored without delay
// beyond the bound, marked unresolved; once the directory is back, the
// periodic resolution pass appends the resolution of each, and a second
// pass finds nothing left.
func TestEngineDirectoryDownLosesNothing(t *testing.T) {
	s := slapdtest.Start(t, slapdtest.Options{})
	alice, carol := s.UUID(t, "alice"), s.UUID(t, "carol")
	l := newLDAP(t, s, func(o *identity.LDAPOptions) { o.RetryAfter = 100 * time.Millisecond })
	s.Stop()
	lg := openLog(t)
	const bound = 700 * time.Millisecond
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Resolver: l, ResolveTimeout: bound, ResolveEvery: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	var pending []bonnie.Position
	for i, raw := range [][]byte{
		login(t, "alice", "s1", t0),
		aclChange(t, "group:finance", "lrs", "alice\tlrswipkxtecdan\tgroup:finance\tlrs\t", t0.Add(time.Second)),
		login(t, "carol", "s3", t0.Add(2*time.Second)),
	} {
		start := time.Now()
		pending = append(pending, ingest(t, eng, raw))
		if d := time.Since(start); d > bound+2*time.Second {
			t.Errorf("event %d waited %v with the directory down (bound %v)", i, d, bound)
		}
	}
	for _, p := range pending {
		ids := record(t, lg, p).Event.Identities
		if !ids.Unresolved() || !ids.Actor.Unresolved || ids.Actor.Reason == "" || ids.Actor.ID != "" {
			t.Errorf("position %d stored with %+v, want the actor unresolved", p, ids.Actor)
		}
	}
	if ids := record(t, lg, pending[1]).Event.Identities; ids.Subject.Kind != bonnie.IdentityGroup || !ids.Subject.Unresolved {
		t.Errorf("unresolved group subject %+v", ids.Subject)
	}
	// Meanwhile the entities are keyed by login.
	if st, _ := lg.StateAt(context.Background(), bonnie.KindUser, "alice", time.Time{}); st["login"] != "alice" {
		t.Errorf("user alice (by login) while unresolved: %v", st)
	}

	s.Start(t)
	resolved := map[bonnie.Position]*bonnie.Identities{}
	deadline := time.Now().Add(30 * time.Second)
	for len(resolved) < len(pending) {
		if time.Now().After(deadline) {
			t.Fatalf("resolved %d of %d after the directory came back", len(resolved), len(pending))
		}
		time.Sleep(50 * time.Millisecond)
		for _, rec := range all(t, lg) {
			if rec.Event.Type == bonnie.IdentityResolved {
				res, err := rec.Event.Resolution()
				if err != nil {
					t.Fatal(err)
				}
				resolved[res.Resolves] = res
			}
		}
	}
	if a := resolved[pending[0]].Actor; a.ID != alice || !a.Late || a.Unresolved || a.Subject != "alice" {
		t.Errorf("late actor of %d: %+v", pending[0], a)
	}
	if a := resolved[pending[2]].Actor; a.ID != carol {
		t.Errorf("late actor of %d: %+v", pending[2], a)
	}
	if sub := resolved[pending[1]].Subject; sub.Kind != bonnie.IdentityGroup || len(sub.Members) != 2 || !sub.Late {
		t.Errorf("late group subject: %+v", sub)
	}
	// The original events are untouched; the late bindings are applied.
	if ids := record(t, lg, pending[0]).Event.Identities; !ids.Actor.Unresolved {
		t.Error("the original event was rewritten")
	}
	if st, _ := lg.StateAt(context.Background(), bonnie.KindUser, alice, time.Time{}); st["login"] != "alice" || st["name:alice@example.org"] != "set" {
		t.Errorf("user %s after the late resolution: %v", alice, st)
	}
	if n, err := eng.ResolvePending(context.Background()); n != 0 || err != nil {
		t.Errorf("a second pass resolved %d (%v)", n, err)
	}
	if err := lg.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}
