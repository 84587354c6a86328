package discovery_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/discovery"
)

// flaky is a directory that is down until up is set.
type flaky struct{ up atomic.Bool }

func (f *flaky) Resolve(ctx context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	if !f.up.Load() {
		return bonnie.Identity{Subject: subject}, errors.New("directory down")
	}
	if subject == "alice" {
		return bonnie.Identity{Subject: subject, Kind: bonnie.IdentityUser, ID: "id-alice", Login: "alice", Source: "test"}, nil
	}
	return bonnie.PassThrough{}.Resolve(ctx, subject, at)
}

// TestLateResolutionAndRestore: a login stored while the directory was
// down is the person's once the resolution pass has named them; a
// message appended again after every copy was expunged is "restored"; a
// full-text query without any indexed body says why it cannot answer.
func TestLateResolutionAndRestore(t *testing.T) {
	ctx := context.Background()
	lg := openLog(t)
	dir := &flaky{}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Resolver: dir, ResolveTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	box := `"uri":"imap://h/user.alice;UIDVALIDITY=3","mailboxID":"f1","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\t"`
	for _, js := range []string{
		`{"event":"Login","timestamp":"2026-11-28T09:00:00Z","user":"alice","vnd.cmu.sessionId":"s1","clientIP":"192.0.2.1","clientPort":1}`,
		`{"event":"MessageAppend","timestamp":"2026-11-28T09:01:00Z","user":"alice","vnd.cmu.sessionId":"s1",` + box + `,"uidset":"1","vnd.cmu.midset":"<x@example.org>"}`,
		`{"event":"MessageExpunge","timestamp":"2026-11-28T09:02:00Z","user":"alice","vnd.cmu.sessionId":"s1",` + box + `,"uidset":"1","vnd.cmu.midset":"<x@example.org>"}`,
		`{"event":"MessageAppend","timestamp":"2026-11-28T09:03:00Z","user":"alice","vnd.cmu.sessionId":"s1",` + box + `,"uidset":"2","vnd.cmu.midset":"<x@example.org>"}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(js), "test"); err != nil {
			t.Fatal(err)
		}
	}
	x := openIndex(t, filepath.Join(t.TempDir(), "d.db"), nil)
	if _, err := x.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	if _, es, _ := x.Person(ctx, "id-alice"); len(es) != 0 {
		t.Fatalf("resolved before the directory answered: %+v", es)
	}
	dir.up.Store(true)
	if n, err := eng.ResolvePending(ctx); err != nil || n == 0 {
		t.Fatalf("ResolvePending: %d %v", n, err)
	}
	if _, err := x.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	p, es, err := x.Person(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, e := range es {
		acts = append(acts, e.Action)
		if e.ActorID != "id-alice" {
			t.Errorf("not named after the resolution: %+v", e)
		}
	}
	if !slices.Equal(p.IDs, []string{"id-alice"}) || !slices.Equal(acts, []string{"login", "appended", "expunged", "restored"}) {
		t.Errorf("person %+v: %v", p, acts)
	}
	if _, ss, _ := x.Sessions(ctx, "id-alice", false); len(ss) != 1 || ss[0].ActorID != "id-alice" {
		t.Errorf("session: %+v", ss)
	}
	if _, err := x.Search(ctx, discovery.Search{Text: "anything"}); !errors.Is(err, discovery.ErrNoBodies) {
		t.Errorf("full text without bodies: %v", err)
	}
}
