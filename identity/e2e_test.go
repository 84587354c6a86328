package identity_test

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/identity"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/slapdtest"
	"github.com/bonnie-archive/bonnie/source/cyrus"
)

// unixGroup makes sure the unix group exists for the test: Cyrus (auth_mech
// unix) refuses "group:NAME" in an ACL unless getgrnam knows NAME. A group
// the test created is removed afterwards.
func unixGroup(t *testing.T, name string) {
	t.Helper()
	if err := exec.Command("getent", "group", name).Run(); err == nil {
		return
	}
	out, err := exec.Command("groupadd", name).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 9 { // created meanwhile by someone else
			return
		}
		t.Fatalf("groupadd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("groupdel", name).CombinedOutput(); err != nil {
			t.Logf("groupdel %s: %v: %s", name, err, out)
		}
	})
}

// waitRecords polls the log until pred holds for its records.
func waitRecords(t *testing.T, lg interface {
	Read(context.Context, bonnie.Position, int) ([]bonnie.Record, error)
}, what string, pred func([]bonnie.Record) bool) []bonnie.Record {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		recs, err := lg.Read(context.Background(), 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		if pred(recs) {
			return recs
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, r := range recs {
				seen = append(seen, r.Event.Type.String()+"/"+r.Event.User)
			}
			t.Fatalf("timed out waiting for %s; log has %v", what, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func find(recs []bonnie.Record, match func(*bonnie.Event) bool) []*bonnie.Event {
	var out []*bonnie.Event
	for _, r := range recs {
		if match(r.Event) {
			out = append(out, r.Event)
		}
	}
	return out
}

func memberNames(id *bonnie.Identity) []string {
	var out []string
	for _, m := range id.Members {
		out = append(out, m.Name)
	}
	return out
}

// End to end: a real Cyrus notifies the engine over its datagram socket;
// the engine resolves against a real slapd. Alice acts, is renamed in the
// directory (uid and mail; Cyrus knows her under the new login too), acts
// again: both resolve to her entryUUID. A group ACL snapshots finance's
// members; a later membership change leaves that snapshot as it was.
func TestEndToEndCyrusAndLDAP(t *testing.T) {
	dir := slapdtest.Start(t, slapdtest.Options{})
	aliceID, carolID := dir.UUID(t, "alice"), dir.UUID(t, "carol")
	l := newLDAP(t, dir, func(o *identity.LDAPOptions) { o.Cache.TTL = time.Hour })
	unixGroup(t, "finance")

	path := cyrustest.SocketPath(t, "notify")
	sub, err := cyrus.NewDatagramSubscriber(cyrus.Options{Path: path, Source: "cyrus-e2e"})
	if err != nil {
		t.Fatal(err)
	}
	lg := openLog(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg, Resolver: l,
		Sources: []bonnie.Source{{Name: "cyrus-e2e", Subscriber: sub}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	cs := cyrustest.Start(t, cyrustest.Options{
		Users:        map[string]string{"alice": "pw-a", "alice2": "pw-a2", "bob": "pw-b", "carol": "pw-c"},
		NotifySocket: path,
	})
	msg := []byte("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: hello\r\nMessage-ID: <e2e-1@example.org>\r\n\r\nhi\r\n")

	// Alice, under her first login.
	c := cs.Dial(t, "alice")
	appendCmd := c.Append("INBOX", int64(len(msg)), nil)
	appendCmd.Write(msg)
	appendCmd.Close()
	if _, err := appendCmd.Wait(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()
	cs.SetACL(t, "user.alice", "group:finance", "lrs")
	waitRecords(t, lg, "alice's append and the group ACL", func(recs []bonnie.Record) bool {
		return len(find(recs, func(e *bonnie.Event) bool { return e.Type == bonnie.MessageAppend && e.User == "alice" })) > 0 &&
			len(find(recs, func(e *bonnie.Event) bool { return e.Type == bonnie.AclChange && e.ACLSubject == "group:finance" })) == 1 &&
			len(find(recs, func(e *bonnie.Event) bool { return e.Type == bonnie.Logout && e.User == "alice" })) > 0
	})

	// The directory renames her; she logs in under the new name.
	dir.Rename(t, "alice", "alice2", "alice2@example.org")
	c2 := cs.Dial(t, "alice2")
	if _, err := c2.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendCmd = c2.Append("INBOX", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagFlagged}})
	appendCmd.Write(msg)
	appendCmd.Close()
	if _, err := appendCmd.Wait(); err != nil {
		t.Fatal(err)
	}
	c2.Logout().Wait()

	// Finance gains bob; once the cache has let the old answer go, a new
	// group ACL snapshots the new membership.
	dir.AddMember(t, "finance", "bob")
	l.Cache().Purge()
	cs.SetACL(t, "user.alice2", "group:finance", "lr")

	recs := waitRecords(t, lg, "alice2's events and the second group ACL", func(recs []bonnie.Record) bool {
		return len(find(recs, func(e *bonnie.Event) bool { return e.Type == bonnie.MessageAppend && e.User == "alice2" })) > 0 &&
			len(find(recs, func(e *bonnie.Event) bool { return e.Type == bonnie.AclChange && e.ACLSubject == "group:finance" })) == 2
	})

	for _, login := range []string{"alice", "alice2"} {
		evs := find(recs, func(e *bonnie.Event) bool {
			return (e.Type == bonnie.Login || e.Type == bonnie.MessageAppend) && e.User == login
		})
		if len(evs) < 2 {
			t.Fatalf("%s: %d Login/MessageAppend events", login, len(evs))
		}
		for _, e := range evs {
			a := e.Identities.Actor
			if a == nil || a.ID != aliceID || a.Kind != bonnie.IdentityUser || a.Unresolved {
				t.Errorf("%s %s by %s: actor %+v, want entryUUID %s", e.Type, e.Name, login, a, aliceID)
			}
			if a != nil && a.Login != login {
				t.Errorf("%s by %s: canonical login %q", e.Type, login, a.Login)
			}
		}
	}
	acls := find(recs, func(e *bonnie.Event) bool { return e.Type == bonnie.AclChange && e.ACLSubject == "group:finance" })
	first, second := acls[0].Identities, acls[1].Identities
	if first.Subject == nil || !slices.Equal(memberNames(first.Subject), []string{"alice", "carol"}) ||
		first.Subject.Members[0].ID != aliceID || first.Subject.Members[1].ID != carolID {
		t.Errorf("first group snapshot: %+v", first.Subject)
	}
	if got := memberNames(second.Subject); !slices.Equal(got, []string{"alice2", "bob", "carol"}) {
		t.Errorf("second group snapshot: %v", got)
	}
	if first.Actor == nil || first.Actor.Kind != bonnie.IdentityLogin || first.Actor.ID != cyrustest.AdminUser {
		t.Errorf("the admin (not in the directory) as actor: %+v", first.Actor)
	}
	if first.Owner == nil || first.Owner.ID != aliceID || second.Owner == nil || second.Owner.ID != aliceID {
		t.Errorf("owners of user.alice and user.alice2: %+v / %+v", first.Owner, second.Owner)
	}
	var aclGroup *bonnie.Identity
	for i := range first.ACL {
		if first.ACL[i].Subject == "group:finance" {
			aclGroup = &first.ACL[i]
		}
	}
	if aclGroup == nil || !slices.Equal(memberNames(aclGroup), []string{"alice", "carol"}) {
		t.Errorf("first mailbox ACL snapshot: %+v", first.ACL)
	}
	// The user entity keyed by her id recorded the rename as a binding
	// change.
	hist, err := lg.History(context.Background(), bonnie.KindUser, aliceID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hist, func(c bonnie.Change) bool { return c.Field == "login" && c.From == "alice" && c.To == "alice2" }) {
		t.Errorf("no login alice -> alice2 in %v", hist)
	}
	if n := cs.UnansweredNotifications(); n != 0 {
		t.Errorf("Cyrus could not deliver %d notifications", n)
	}
	if err := lg.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		for _, r := range recs {
			if a := r.Event.ActorIdentity(); a != nil {
				t.Logf("%3d %-14s %-7s -> %s %s", r.Position, r.Event.Type, r.Event.User, a.Kind, a.ID)
			}
		}
	}
}
