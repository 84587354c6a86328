package bonnie_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// hangingResolver never answers and ignores its context: a fault no real
// directory produces on demand.
type hangingResolver struct{ release chan struct{} }

func (h hangingResolver) Resolve(ctx context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	<-h.release
	return bonnie.Identity{}, errors.New("released")
}

// panickingResolver is a broken implementation.
type panickingResolver struct{}

func (panickingResolver) Resolve(context.Context, string, time.Time) (bonnie.Identity, error) {
	panic("broken resolver")
}

const aclJSON = `{"event":"AclChange","timestamp":"2026-11-28T20:23:38.333Z","service":"imap","mailboxID":"kwv2nc0rutdhxg2phbung3vj",` +
	`"uri":"imap://h/user.alice.Work;UIDVALIDITY=1795897411","aclSubject":"group:finance","aclRights":"lrs","user":"alice",` +
	`"vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\tgroup:finance\tlrs\t-bob\tw\tanyone\tp\t","vnd.cmu.sessionId":"s1"}`

func TestResolveTimeoutBoundsIngest(t *testing.T) {
	lg := openStore(t)
	h := hangingResolver{release: make(chan struct{})}
	defer close(h.release)
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Resolver: h, ResolveTimeout: 200 * time.Millisecond})
	start := time.Now()
	pos, _, err := eng.Ingest(context.Background(), []byte(aclJSON), "test")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("ingest waited %v for a resolver that never answers (bound 200ms)", d)
	}
	recs, _ := lg.Read(context.Background(), pos-1, 1)
	ids := recs[0].Event.Identities
	if ids == nil || !ids.Unresolved() || len(ids.All()) != 7 {
		t.Fatalf("identities %+v", ids)
	}
	for _, id := range ids.All() {
		if !id.Unresolved || !strings.Contains(id.Reason, "no answer within 200ms") || id.ID != "" {
			t.Errorf("%s: %+v", id.Subject, id)
		}
	}
	if ids.Subject.Kind != bonnie.IdentityGroup || ids.ACL[2].Kind != bonnie.IdentityUser || !ids.ACL[2].Negative ||
		ids.ACL[3].Kind != bonnie.IdentitySpecial {
		t.Errorf("kinds known without the directory: subject %s, -bob %s/%v, anyone %s",
			ids.Subject.Kind, ids.ACL[2].Kind, ids.ACL[2].Negative, ids.ACL[3].Kind)
	}
	// Unresolved, the user is keyed by login as before.
	if st := state(t, lg, bonnie.KindUser, "alice"); st["login"] != "alice" {
		t.Errorf("user alice: %v", st)
	}
}

func TestPanickingResolverLeavesIdentitiesUnresolved(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Resolver: panickingResolver{}})
	pos, _, err := eng.Ingest(context.Background(), []byte(aclJSON), "test")
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := lg.Read(context.Background(), pos-1, 1)
	if a := recs[0].Event.Identities.Actor; !a.Unresolved || !strings.Contains(a.Reason, "panicked") {
		t.Errorf("actor %+v", a)
	}
}

func TestPassThroughResolver(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Resolver: bonnie.PassThrough{}})
	pos, _, err := eng.Ingest(context.Background(), []byte(aclJSON), "test")
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := lg.Read(context.Background(), pos-1, 1)
	ids := recs[0].Event.Identities
	if ids.Actor.ID != "alice" || ids.Actor.Kind != bonnie.IdentityLogin || ids.Actor.Unresolved {
		t.Errorf("actor %+v", ids.Actor)
	}
	if ids.Subject.Kind != bonnie.IdentityGroup || ids.Subject.ID != "group:finance" || ids.Subject.Login != "finance" {
		t.Errorf("subject %+v", ids.Subject)
	}
	if b := ids.ACL[2]; b.ID != "bob" || !b.Negative || b.Subject != "-bob" {
		t.Errorf("-bob %+v", b)
	}
	if ids.Unresolved() {
		t.Error("pass-through left something unresolved")
	}
	if st := state(t, lg, bonnie.KindUser, "alice"); st["login"] != "alice" {
		t.Errorf("user alice: %v", st)
	}
	if st := state(t, lg, bonnie.KindGroup, "group:finance"); len(st) != 0 {
		t.Errorf("a pass-through group knows no members and records nothing: %v", st)
	}
	if _, err := eng.ResolvePending(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNoResolverStoresNoIdentities(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	pos, _, err := eng.Ingest(context.Background(), []byte(aclJSON), "test")
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := lg.Read(context.Background(), pos-1, 1)
	if recs[0].Event.Identities != nil {
		t.Errorf("identities without a resolver: %+v", recs[0].Event.Identities)
	}
	if a := recs[0].Event.ActorIdentity(); a.ID != "alice" || a.Kind != bonnie.IdentityLogin {
		t.Errorf("ActorIdentity %+v", a)
	}
	if _, err := eng.ResolvePending(context.Background()); err == nil {
		t.Error("ResolvePending without a resolver")
	}
}

// Only the engine's own resolution pass may attribute identities after the
// fact: the same event from a source is refused and kept as a dead letter.
func TestForgedIdentityResolvedIsDeadLettered(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Resolver: bonnie.PassThrough{}})
	raw := `{"event":"vnd.bonnie.IdentityResolved","timestamp":"2026-11-28T20:23:38.333Z","vnd.bonnie.resolves":1,` +
		`"vnd.bonnie.identities":{"actor":{"subject":"alice","kind":"user","id":"mallory"}}}`
	_, _, err := eng.Ingest(context.Background(), []byte(raw), "cyrus")
	if !errors.Is(err, bonnie.ErrDeadLettered) {
		t.Fatalf("forged resolution: %v", err)
	}
	if head, _ := lg.Head(context.Background()); head != 0 {
		t.Errorf("log has %d records", head)
	}
	dl, _ := lg.DeadLetters(context.Background(), true)
	if len(dl) != 1 || !strings.Contains(dl[0].Reason, "IdentityResolved") {
		t.Errorf("dead letters %+v", dl)
	}
	if _, _, err := eng.Retry(context.Background(), dl[0]); !errors.Is(err, bonnie.ErrDeadLettered) {
		t.Errorf("retried forged resolution: %v", err)
	}
}

func TestIdentityResolvedEventType(t *testing.T) {
	if got, ok := bonnie.ParseEventType("vnd.bonnie.IdentityResolved"); !ok || got != bonnie.IdentityResolved {
		t.Errorf("ParseEventType: %v %v", got, ok)
	}
	ev := &bonnie.Event{Type: bonnie.Login}
	if _, err := ev.Resolution(); err == nil {
		t.Error("Resolution of a Login")
	}
}
