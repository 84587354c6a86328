package archive_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// directory resolves alice and bob to persistent ids; alice is in the
// finance group.
type directory struct{}

func (directory) Resolve(_ context.Context, subject string, _ time.Time) (bonnie.Identity, error) {
	id := bonnie.Identity{Subject: subject, Kind: bonnie.IdentityLogin, ID: subject, Login: subject, Source: "test", ResolvedAt: time.Now().UTC()}
	switch subject {
	case "alice", "bob":
		id.Kind, id.ID = bonnie.IdentityUser, "uuid-"+subject
	}
	if subject == "alice" {
		id.Groups = []bonnie.Ref{{ID: "uuid-finance", Name: "finance"}}
	}
	return id, nil
}

// govFixture: alice and bob share body "shared"; alice has "mine" in her
// INBOX and "work" in user.alice.Work; bob has a recent "recent". Bodies
// are encrypted at rest.
type govFixture struct {
	lg     *sqlite.Log
	eng    *bonnie.Engine
	a      *archive.Archive
	store  *blob.Store
	bodies map[string][]byte
	rec    archive.Recorder
}

func (f *govFixture) digest(name string) string { return blob.Digest(f.bodies[name]) }

func newGovFixture(t *testing.T) *govFixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	key, err := blob.WriteKeyFile(filepath.Join(dir, "site.key"))
	if err != nil {
		t.Fatal(err)
	}
	blobs, proj := archive.Paths(dir)
	store, err := blob.Open(blobs, blob.WithSiteKey(key))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	bodies := map[string][]byte{}
	for _, n := range []string{"shared", "mine", "work", "recent"} {
		bodies[n] = fmt.Appendf(nil, "Message-ID: <%s@example.org>\r\nSubject: the %s one\r\nFrom: x@example.org\r\n\r\nBody of %s.\r\n", n, n, n)
	}
	f := &memFetcher{store: store, bodies: map[string][]byte{
		"fA/1": bodies["shared"], "fB/1": bodies["shared"],
		"fA/2": bodies["mine"], "fW/1": bodies["work"], "fB/2": bodies["recent"],
	}}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Bodies: f, Resolver: directory{}})
	if err != nil {
		t.Fatal(err)
	}
	create := func(id, name string) string {
		return fmt.Sprintf(`{"event":"MailboxCreate","timestamp":"2020-01-01T00:00:00Z","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7","user":"cyrus"}`, id, name)
	}
	add := func(id, name string, uid int, at string) string {
		return fmt.Sprintf(`{"event":"MessageNew","timestamp":"%s","mailboxID":"%s","uri":"imap://h/%s;UIDVALIDITY=7/;UID=%d","user":"cyrus"}`, at, id, name, uid)
	}
	for _, e := range []string{
		create("fA", "user.alice"), create("fB", "user.bob"), create("fW", "user.alice.Work"),
		add("fA", "user.alice", 1, "2020-01-10T00:00:00Z"), add("fB", "user.bob", 1, "2020-01-10T00:00:00Z"),
		add("fA", "user.alice", 2, "2020-01-11T00:00:00Z"), add("fW", "user.alice.Work", 1, "2020-02-01T00:00:00Z"),
		add("fB", "user.bob", 2, "2026-11-01T00:00:00Z"),
	} {
		if _, _, err := eng.Ingest(ctx, []byte(e), "test"); err != nil {
			t.Fatal(err)
		}
	}
	a, err := archive.Open(ctx, proj, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if _, err := a.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	rec := func(ctx context.Context, raw []byte) (bonnie.Position, error) {
		pos, _, err := eng.Record(ctx, raw, "test")
		return pos, err
	}
	return &govFixture{lg: lg, eng: eng, a: a, store: store, bodies: bodies, rec: rec}
}

func (f *govFixture) record(t *testing.T) func(raw []byte, err error) {
	return func(raw []byte, err error) { f.record1(t, raw, err) }
}

func (f *govFixture) record1(t *testing.T, raw []byte, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.rec(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.CatchUp(context.Background(), f.lg); err != nil {
		t.Fatal(err)
	}
}

func (f *govFixture) expired(t *testing.T, now time.Time) (expired, held []string) {
	t.Helper()
	plan, err := f.a.PlanPurge(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	names := func(d string) string {
		for n := range f.bodies {
			if f.digest(n) == d {
				return n
			}
		}
		return d
	}
	for _, b := range plan.Expired {
		expired = append(expired, names(b.Digest))
	}
	for _, b := range plan.Held {
		held = append(held, names(b.Digest)+"@"+b.Hold)
	}
	slices.Sort(expired)
	slices.Sort(held)
	return expired, held
}

var govNow = time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)

func TestRetentionByFolderOwnerAgeAndGroup(t *testing.T) {
	f := newGovFixture(t)
	at := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	if got, _ := f.expired(t, govNow); len(got) != 0 {
		t.Fatalf("no policy, expired %v", got)
	}
	// By folder (with subfolders): alice's bodies expire, except the one
	// bob still has (no policy covers his copy).
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "alice-1y", Folder: "user.alice", Keep: "1y"}))
	if got, _ := f.expired(t, govNow); !slices.Equal(got, []string{"mine", "work"}) {
		t.Fatalf("folder policy: expired %v", got)
	}
	// By owner and age: bob's 10 years keep the shared body; 1 year does
	// not, and his recent message is still within it.
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "bob", Owner: "bob", Keep: "10y"}))
	if got, _ := f.expired(t, govNow); !slices.Equal(got, []string{"mine", "work"}) {
		t.Fatalf("bob 10y: expired %v", got)
	}
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "bob", Owner: "bob", Keep: "365d"}))
	if got, _ := f.expired(t, govNow); !slices.Equal(got, []string{"mine", "shared", "work"}) {
		t.Fatalf("bob 365d: expired %v", got)
	}
	// The longest matching policy wins: a site-wide 7 years keeps all.
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "site", Keep: "7y"}))
	if got, _ := f.expired(t, govNow); len(got) != 0 {
		t.Fatalf("site 7y: expired %v", got)
	}
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionRemove, archive.Policy{ID: "site"}))
	// By group: alice was in finance when her mail arrived; 10 years for
	// finance keep all of hers (the shared body too), not bob's.
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "g", Group: "finance", Keep: "10y"}))
	if got, _ := f.expired(t, govNow); len(got) != 0 {
		t.Fatalf("finance 10y: expired %v", got)
	}
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "g", Group: "uuid-finance", Keep: "0d"}))
	if got, _ := f.expired(t, govNow); len(got) != 3 {
		t.Fatalf("after removal: expired %v", got)
	}
	// By persistent owner id.
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "bob", Owner: "uuid-bob", Keep: "10y"}))
	if got, _ := f.expired(t, govNow); !slices.Equal(got, []string{"mine", "work"}) {
		t.Fatalf("bob by id 10y: expired %v", got)
	}
	ps, err := f.a.Policies(context.Background())
	if err != nil || len(ps) != 3 || ps[0].ID != "alice-1y" || ps[0].Actor != "dpo" || ps[0].Position == 0 {
		t.Fatalf("policies %+v %v", ps, err)
	}
	if _, err := archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "x", Keep: "forever"}); err == nil {
		t.Error("bad keep accepted")
	}
}

func TestHoldBlocksPurgeAndErase(t *testing.T) {
	ctx := context.Background()
	f := newGovFixture(t)
	at := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	f.record(t)(archive.PolicyEvent("dpo", at, archive.ActionSet, archive.Policy{ID: "all-1y", Keep: "1y"}))
	hold := archive.Hold{ID: "case-42", Matter: "Acme v. Us", Custodian: "alice",
		From: time.Date(2020, 2, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2020, 3, 1, 0, 0, 0, 0, time.UTC)}
	f.record(t)(archive.HoldEvent("counsel", at, archive.ActionPlace, hold))
	f.record(t)(archive.HoldEvent("counsel", at, archive.ActionPlace, archive.Hold{ID: "q", Query: "subject:SHARED"}))
	exp, held := f.expired(t, govNow)
	if !slices.Equal(exp, []string{"mine"}) || !slices.Equal(held, []string{"shared@q", "work@case-42"}) {
		t.Fatalf("expired %v, held %v", exp, held)
	}
	// Purging a held body is refused, naming the hold.
	_, err := f.a.PurgeBatch(ctx, f.lg, f.rec, "dpo", []archive.PurgedBody{{Digest: f.digest("work")}})
	if !errors.Is(err, archive.ErrHeld) || !strings.Contains(err.Error(), `"case-42" (Acme v. Us) placed by counsel`) {
		t.Fatalf("purge of a held body: %v", err)
	}
	// So is erasing it, alone or with a person.
	if _, err := f.a.PlanErasure(ctx, "<work@example.org>", ""); !errors.Is(err, archive.ErrHeld) {
		t.Fatalf("erase held message: %v", err)
	}
	if _, err := f.a.PlanErasure(ctx, "", "alice"); !errors.Is(err, archive.ErrHeld) {
		t.Fatalf("erase alice under hold: %v", err)
	}
	plan, _ := f.a.PlanPurge(ctx, govNow)
	if _, err := f.a.PurgeBatch(ctx, f.lg, f.rec, "dpo", plan.Expired); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Get(f.digest("mine")); !errors.Is(err, blob.ErrPurged) {
		t.Errorf("purged body: %v", err)
	}
	if _, err := f.store.Get(f.digest("work")); err != nil {
		t.Errorf("held body: %v", err)
	}
	// Released, the next purge takes it.
	f.record(t)(archive.HoldEvent("counsel", at, archive.ActionRelease, archive.Hold{ID: "case-42"}))
	exp, held = f.expired(t, govNow)
	if !slices.Equal(exp, []string{"work"}) || !slices.Equal(held, []string{"shared@q"}) {
		t.Fatalf("after release: expired %v, held %v", exp, held)
	}
	hs, _ := f.a.Holds(ctx, true)
	if len(hs) != 2 || hs[0].ID != "case-42" || hs[0].Released == nil || hs[0].Released.Actor != "counsel" {
		t.Fatalf("holds %+v", hs)
	}
	plan, _ = f.a.PlanPurge(ctx, govNow)
	if _, err := f.a.PurgeBatch(ctx, f.lg, f.rec, "dpo", plan.Expired); err != nil {
		t.Fatal(err)
	}
	rep, err := f.a.Verify(ctx, 1, nil)
	if err != nil || !rep.OK() || len(rep.Gone) != 2 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if err := f.lg.Verify(ctx); err != nil {
		t.Fatalf("log chain: %v", err)
	}
}

func TestEraseAPersonKeepsWhatOthersHave(t *testing.T) {
	ctx := context.Background()
	f := newGovFixture(t)
	e, err := f.a.PlanErasure(ctx, "", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.Digests, []string{f.digest("mine"), f.digest("work")}) && !slices.Equal(e.Digests, []string{f.digest("work"), f.digest("mine")}) {
		t.Fatalf("digests %v", e.Digests)
	}
	if len(e.Kept) != 1 || e.Kept[0].Digest != f.digest("shared") || !slices.Equal(e.Kept[0].SharedWith, []string{"uuid-bob"}) || !e.Encrypted {
		t.Fatalf("kept %+v", e.Kept)
	}
	pos, err := f.a.Erase(ctx, f.lg, f.rec, "dpo", e)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.store.Get(f.digest("mine"))
	if !errors.Is(err, blob.ErrErased) || !strings.Contains(err.Error(), fmt.Sprintf("position %d", pos)) {
		t.Fatalf("erased body: %v", err)
	}
	if got, err := f.store.Get(f.digest("shared")); err != nil || len(got) == 0 {
		t.Fatalf("shared body: %v", err)
	}
	g, _ := f.a.Gone(ctx, f.digest("work"))
	if g == nil || g.Kind != "erased" || g.Actor != "dpo" || g.Position != pos {
		t.Fatalf("gone %+v", g)
	}
	// An export of alice's mail carries the shared body and names the
	// erased ones.
	res, err := f.a.Export(ctx, archive.ExportRequest{Query: archive.Query{Custodian: "alice"}, Format: archive.FormatMbox,
		Output: filepath.Join(t.TempDir(), "alice.mbox"), Log: f.lg})
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Manifest; len(m.Messages) != 1 || m.Messages[0].SHA256 != f.digest("shared") || len(m.Gone) != 2 || m.Gone[0].Kind != "erased" {
		t.Fatalf("manifest: %+v", m)
	}
	// The event is in the log with its actor.
	recs, _ := f.lg.Read(ctx, pos-1, 1)
	if len(recs) != 1 || recs[0].Event.Type != bonnie.Erasure || recs[0].Event.User != "dpo" {
		t.Fatalf("log: %+v", recs)
	}
	// Once bob is erased too, nobody holds the shared body any more.
	e, err = f.a.PlanErasure(ctx, "", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Kept) != 0 || !slices.Contains(e.Digests, f.digest("shared")) {
		t.Fatalf("bob: %+v", e)
	}
	if _, err := f.a.Erase(ctx, f.lg, f.rec, "dpo", e); err != nil {
		t.Fatal(err)
	}
	rep, err := f.a.Verify(ctx, 1, nil)
	if err != nil || !rep.OK() || len(rep.Gone) != 4 || rep.Bodies != 0 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if err := f.lg.Verify(ctx); err != nil {
		t.Fatalf("log chain: %v", err)
	}
	// A rebuilt projection says the same.
	if _, err := f.a.Rebuild(ctx, f.lg); err != nil {
		t.Fatal(err)
	}
	if gs, _ := f.a.GoneBodies(ctx); len(gs) != 4 {
		t.Fatalf("after rebuild: %v", gs)
	}
}

func TestVerifyEncryptedTampering(t *testing.T) {
	ctx := context.Background()
	f := newGovFixture(t)
	p := f.store.Path(f.digest("recent"))
	b, _ := os.ReadFile(p)
	b[len(b)-3] ^= 0x40
	os.Chmod(p, 0o600)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := f.a.Verify(ctx, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Kind != archive.ProblemCorrupt || rep.Problems[0].Path != p ||
		!strings.Contains(rep.Problems[0].Detail, "authenticate") {
		t.Fatalf("report %+v", rep)
	}
}

func TestPurgeResumesAfterACrash(t *testing.T) {
	ctx := context.Background()
	f := newGovFixture(t)
	// A purge recorded its event and died before removing the body.
	f.record(t)(archive.PurgeEvent("dpo", govNow, archive.PurgeRecord{Bodies: []archive.PurgedBody{{Digest: f.digest("mine")}}}))
	left, err := f.a.Unfinished(ctx)
	if err != nil || len(left) != 1 || left[0].Digest != f.digest("mine") || left[0].Kind != "purged" {
		t.Fatalf("unfinished %+v %v", left, err)
	}
	rep, _ := f.a.Verify(ctx, 1, nil)
	if rep.OK() || rep.Problems[0].Kind != archive.ProblemNotGone {
		t.Fatalf("verify before finishing: %+v", rep)
	}
	if err := f.a.Finish(left[0]); err != nil {
		t.Fatal(err)
	}
	if left, _ := f.a.Unfinished(ctx); len(left) != 0 {
		t.Fatalf("still unfinished: %+v", left)
	}
	if _, err := f.store.Get(f.digest("mine")); !errors.Is(err, blob.ErrPurged) {
		t.Fatalf("after finishing: %v", err)
	}
	rep, _ = f.a.Verify(ctx, 1, nil)
	if !rep.OK() {
		t.Fatalf("verify: %+v", rep)
	}
}

func TestHoldPlacedAfterThePlanWins(t *testing.T) {
	ctx := context.Background()
	f := newGovFixture(t)
	e, err := f.a.PlanErasure(ctx, f.digest("recent"), "")
	if err != nil || len(e.Digests) != 1 {
		t.Fatalf("plan: %+v %v", e, err)
	}
	f.record(t)(archive.HoldEvent("counsel", govNow, archive.ActionPlace, archive.Hold{ID: "late", Custodian: "uuid-bob"}))
	if _, err := f.a.Erase(ctx, f.lg, f.rec, "dpo", e); !errors.Is(err, archive.ErrHeld) || !strings.Contains(err.Error(), `"late"`) {
		t.Fatalf("erase: %v", err)
	}
	if _, err := f.store.Get(f.digest("recent")); err != nil {
		t.Fatalf("held body: %v", err)
	}
	recs, _ := f.lg.Read(ctx, 0, 1000)
	for _, r := range recs {
		if r.Event.Type == bonnie.Erasure {
			t.Fatal("a refused erasure was recorded")
		}
	}
}
