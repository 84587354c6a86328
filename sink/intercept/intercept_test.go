package intercept_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/intercept"
	"github.com/bonnie-archive/bonnie/store/blob"
)

func janeTarget() intercept.Target {
	id := directory["janeg"]
	id.Subject, id.Kind = "janeg", bonnie.IdentityUser
	return intercept.TargetOf(&id)
}

func uniqueQueue(t *testing.T) string {
	return fmt.Sprintf("bonnie.intercept.test-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
}

// recordPositions returns the positions of the record messages a consumer
// got, in order, and fails on any message id seen twice.
func recordPositions(t *testing.T, c *consumer) (recs []bonnie.Position, bodies map[string][]byte) {
	t.Helper()
	got, msgs := c.snapshot()
	for id, n := range got {
		if n != 1 {
			t.Errorf("message %s delivered %d times", id, n)
		}
	}
	bodies = map[string][]byte{}
	for _, m := range msgs {
		switch m.Headers["x-bonnie-kind"] {
		case "record":
			var h intercept.Handover
			if err := json.Unmarshal(m.Body, &h); err != nil {
				t.Fatal(err)
			}
			if m.MessageId != fmt.Sprintf("%s/%d", h.Interception, h.Record.Position) || h.Record.Event == nil {
				t.Errorf("message id %s for %s/%d", m.MessageId, h.Interception, h.Record.Position)
			}
			recs = append(recs, h.Record.Position)
		case "body":
			bodies[m.Headers["x-bonnie-sha256"].(string)] = m.Body
		default:
			t.Errorf("message %s of kind %v", m.MessageId, m.Headers["x-bonnie-kind"])
		}
	}
	return recs, bodies
}

// A day of events: an interception of Jane (by persistent id) whose window
// opens and closes in the middle of it, and one of Bob stopped in the
// middle. Exactly Jane's events inside the window reach her queue, with
// her new messages' bodies, across the rename of her login; a stop ends
// Bob's; the deliveries are in the log; replaying the whole log into a
// new sink sends nothing again.
func TestWindowRenameStop(t *testing.T) {
	needBroker(t)
	ctx := context.Background()
	f := newFixture(t)
	queue := uniqueQueue(t)
	c := consume(t, queue)
	bobDir := filepath.Join(f.dir, "bob-out")
	if err := os.Mkdir(bobDir, 0o700); err != nil {
		t.Fatal(err)
	}

	var wantJane, wantBob []bonnie.Position
	var janeBodies int
	jane := func(p bonnie.Position) { wantJane = append(wantJane, p) }

	f.newMessage("janeg", "x@example.org", at(8, 0)) // before any interception
	f.login("janeg", at(8, 30))
	f.login("janeg", at(10, 1)) // inside the window, but before the warrant in the log
	startJane := f.record(intercept.Start("i-jane", janeTarget(), "W-2026-042", at(10, 0), at(16, 0),
		"amqp://guest@127.0.0.1:5672/?queue="+queue, "Judge Dredd", "test", time.Now()))
	bob := directory["bob"]
	bob.Subject = "bob"
	f.record(intercept.Start("i-bob", intercept.TargetOf(&bob), "W-2026-043", at(0, 0), at(23, 59),
		"dir:"+bobDir, "Judge Anderson", "test", time.Now()))

	f.login("janeg", at(9, 30)) // after the start in the log, before the window
	jane(f.login("janeg", at(10, 5)))
	jane(f.flag("janeg", at(10, 10)))
	jane(f.newMessage("janeg", "x@example.org", at(11, 0)))
	janeBodies++
	wantBob = append(wantBob, f.login("bob", at(12, 0)))
	p := f.newMessage("bob", "janeg@example.org", at(12, 30)) // Jane sends to Bob
	jane(p)
	janeBodies++
	wantBob = append(wantBob, p)
	f.flag("janeg", at(9, 45)) // arrives late, happened before the window
	jane(f.ingest("MailboxRename", at(13, 0), map[string]any{"user": "cyrus", "mailboxID": "inbox-of-janeg",
		"uri": "imap://h/user.janed;UIDVALIDITY=1", "oldMailboxID": "imap://h/user.janeg;UIDVALIDITY=1"}))
	f.record(intercept.Stop("i-bob", "test", "warrant revoked", time.Now()))
	f.login("bob", at(13, 30))        // Bob's interception stopped
	jane(f.login("janed", at(14, 0))) // the renamed login does not escape
	jane(f.newMessage("bob", "janed@example.org", at(14, 30)))
	janeBodies++
	jane(f.newMessage("janed", "y@example.org", at(15, 0)))
	janeBodies++
	jane(f.flag("janed", at(15, 59)))
	f.flag("janed", at(16, 0)) // the window is [from, to)
	f.login("janed", at(17, 0))

	waitFor(t, 20*time.Second, "Jane's deliveries", func() bool {
		got, _ := c.snapshot()
		return len(got) >= len(wantJane)+janeBodies
	})
	f.caughtUp(20 * time.Second)
	time.Sleep(200 * time.Millisecond)
	recs, bodies := recordPositions(t, c)
	if !slices.Equal(recs, wantJane) {
		t.Errorf("Jane's queue got positions %v, want %v", recs, wantJane)
	}
	if len(bodies) != janeBodies {
		t.Errorf("%d bodies, want %d", len(bodies), janeBodies)
	}
	for d, b := range bodies {
		if blob.Digest(b) != d {
			t.Errorf("body %s has other bytes", d)
		}
	}

	// Bob's directory: his two events, with the body, and nothing after the stop.
	files, _ := filepath.Glob(filepath.Join(bobDir, "*"))
	var names []string
	for _, fn := range files {
		names = append(names, filepath.Base(fn))
	}
	want := []string{
		fmt.Sprintf("%020d-i-bob.jsonl", wantBob[0]),
		fmt.Sprintf("%020d-i-bob.jsonl", wantBob[1]),
		fmt.Sprintf("%020d-i-bob.mbox", wantBob[1]),
	}
	if !slices.Equal(names, want) {
		t.Errorf("Bob's directory holds %v, want %v", names, want)
	}
	mbox, _ := os.ReadFile(filepath.Join(bobDir, want[2]))
	if !bytes.Contains(mbox, []byte("\n>From the start")) || !bytes.HasPrefix(mbox, []byte("From bonnie-intercept-")) {
		t.Errorf("mbox:\n%s", mbox)
	}

	// The deliveries are in the log, and say what was handed over.
	ds, err := intercept.Deliveries(ctx, f.store, "i-jane")
	if err != nil {
		t.Fatal(err)
	}
	var logged []bonnie.Position
	var loggedBodies int
	for _, d := range ds {
		if d.Warrant != "W-2026-042" || d.Destination == "" {
			t.Errorf("delivery %+v", d)
		}
		for _, it := range d.Items {
			logged = append(logged, it.Position)
			loggedBodies += len(it.Bodies)
			for _, b := range it.Bodies {
				if _, ok := bodies[b.SHA256]; !ok {
					t.Errorf("the log says body %s was handed over; the queue did not get it", b.SHA256)
				}
			}
		}
	}
	if !slices.Equal(logged, wantJane) || loggedBodies != janeBodies {
		t.Errorf("deliveries in the log: %v (%d bodies), want %v (%d)", logged, loggedBodies, wantJane, janeBodies)
	}
	list, err := intercept.List(ctx, f.store)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	if list[0].ID != "i-jane" || list[0].Position != startJane || list[0].StoppedAt != 0 || list[0].Deliveries != len(ds) ||
		list[1].ID != "i-bob" || list[1].StoppedAt == 0 || list[1].StopReason != "warrant revoked" || list[1].Deliveries == 0 {
		t.Errorf("list: %+v %+v", list[0], list[1])
	}
	if err := f.store.Verify(ctx); err != nil {
		t.Fatal(err)
	}

	// A new sink (its cursor lost) replays the whole log: nothing is sent
	// twice, nothing recorded twice; live events still flow.
	f.stop()
	if err := f.store.SetCursor(ctx, intercept.Name, 0); err != nil {
		t.Fatal(err)
	}
	f.startEngine()
	f.caughtUp(20 * time.Second)
	live := f.login("janed", at(15, 30))
	wantJane = append(wantJane, live)
	waitFor(t, 10*time.Second, "the live event", func() bool {
		got, _ := c.snapshot()
		return got[fmt.Sprintf("i-jane/%d", live)] > 0
	})
	f.caughtUp(20 * time.Second)
	time.Sleep(200 * time.Millisecond)
	recs, _ = recordPositions(t, c)
	if !slices.Equal(recs, wantJane) {
		t.Errorf("after the replay Jane's queue got %v, want %v", recs, wantJane)
	}
	ds, _ = intercept.Deliveries(ctx, f.store, "i-jane")
	if n := items(ds); n != len(wantJane) {
		t.Errorf("%d deliveries recorded after the replay, want %d", n, len(wantJane))
	}
}

// The broker goes away (the connection is cut, new ones refused) while
// events concerning the target arrive: they are retried, and once it is
// back every one arrives, none twice, in log order.
func TestAMQPOutage(t *testing.T) {
	needBroker(t)
	f := newFixture(t)
	queue := uniqueQueue(t)
	c := consume(t, queue)
	px := newProxy(t, "127.0.0.1:5672")
	f.record(intercept.Start("i-out", janeTarget(), "W-1", at(0, 0), at(23, 0),
		"amqp://guest@"+px.addr+"/?queue="+queue, "Judge", "test", time.Now()))
	var want []bonnie.Position
	for i := range 5 {
		want = append(want, f.login("janeg", at(10, i)))
	}
	waitFor(t, 10*time.Second, "the first deliveries", func() bool { got, _ := c.snapshot(); return len(got) == 5 })
	px.down()
	for i := range 5 {
		want = append(want, f.login("janeg", at(11, i)))
	}
	want = append(want, f.newMessage("janeg", "x@example.org", at(11, 30)))
	time.Sleep(500 * time.Millisecond)
	if got, _ := c.snapshot(); len(got) != 5 {
		t.Fatalf("%d messages while the broker was unreachable", len(got))
	}
	px.up()
	waitFor(t, 20*time.Second, "the deliveries after the outage", func() bool {
		got, _ := c.snapshot()
		return len(got) == len(want)+1
	})
	f.caughtUp(20 * time.Second)
	time.Sleep(200 * time.Millisecond)
	recs, bodies := recordPositions(t, c)
	if !slices.Equal(recs, want) || len(bodies) != 1 {
		t.Errorf("got %v and %d bodies, want %v and 1", recs, len(bodies), want)
	}
	ds, _ := intercept.Deliveries(context.Background(), f.store, "i-out")
	if n := items(ds); n != len(want) {
		t.Errorf("%d deliveries recorded, want %d", n, len(want))
	}
}

// A directory that cannot be written holds the deliveries back; once it
// can, each record is written once, atomically.
func TestDirOutage(t *testing.T) {
	f := newFixture(t)
	out := filepath.Join(f.dir, "out") // missing: nothing can be written
	f.record(intercept.Start("i-dir", janeTarget(), "W-2", at(0, 0), at(23, 0), "dir:"+out, "Judge", "test", time.Now()))
	var want []bonnie.Position
	want = append(want, f.login("janeg", at(10, 0)))
	want = append(want, f.newMessage("janeg", "x@example.org", at(10, 1)))
	f.login("bob", at(10, 2))
	want = append(want, f.flag("janeg", at(10, 3)))
	time.Sleep(300 * time.Millisecond)
	if ds, _ := intercept.Deliveries(context.Background(), f.store, "i-dir"); len(ds) != 0 {
		t.Fatalf("%d deliveries recorded into a missing directory", len(ds))
	}
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	f.caughtUp(20 * time.Second)
	jsonl, _ := filepath.Glob(filepath.Join(out, "*.jsonl"))
	mbox, _ := filepath.Glob(filepath.Join(out, "*.mbox"))
	tmp, _ := filepath.Glob(filepath.Join(out, ".tmp*"))
	if len(jsonl) != len(want) || len(mbox) != 1 || len(tmp) != 0 {
		t.Fatalf("files %v %v %v", jsonl, mbox, tmp)
	}
	for i, fn := range jsonl {
		b, _ := os.ReadFile(fn)
		var h intercept.Handover
		if err := json.Unmarshal(b, &h); err != nil || h.Record.Position != want[i] || bytes.Count(b, []byte("\n")) != 1 {
			t.Errorf("%s: %v position %d, want %d", fn, err, h.Record.Position, want[i])
		}
	}
}

// items counts the records the deliveries name.
func items(ds []intercept.Delivery) int {
	n := 0
	for _, d := range ds {
		n += len(d.Items)
	}
	return n
}

// A target named by login only (the directory did not know it when the
// interception started) still matches the events whose identities resolve
// under that login; not others.
func TestLoginTarget(t *testing.T) {
	f := newFixture(t)
	out := filepath.Join(f.dir, "out")
	os.Mkdir(out, 0o700)
	bob := bonnie.Identity{Kind: bonnie.IdentityLogin, ID: "bob", Login: "bob"}
	f.record(intercept.Start("i-login", intercept.TargetOf(&bob), "W-3", at(0, 0), at(23, 0), "dir:"+out, "Judge", "test", time.Now()))
	want := f.login("bob", at(10, 0))
	f.login("janeg", at(10, 1))
	f.caughtUp(20 * time.Second)
	ds, _ := intercept.Deliveries(context.Background(), f.store, "i-login")
	if items(ds) != 1 || ds[0].Items[0].Position != want {
		t.Errorf("deliveries %+v, want position %d only", ds, want)
	}
}

// A sink given another log than the engine's refuses to hand anything
// over rather than read ahead in the wrong log.
func TestWrongLog(t *testing.T) {
	f := newFixture(t)
	other := newFixture(t)
	other.login("bob", at(9, 0))
	other.login("bob", at(9, 1))
	other.stop()
	f.stop()
	out := filepath.Join(f.dir, "out")
	os.Mkdir(out, 0o700)
	var eng *bonnie.Engine
	sink, _ := intercept.New(intercept.Options{Log: other.store, Logger: quiet(),
		Record: func(ctx context.Context, raw []byte, src string) (bonnie.Position, bool, error) {
			return eng.Record(ctx, raw, src)
		}})
	eng, _ = bonnie.New(bonnie.Options{Store: f.store, Sinks: []bonnie.Sink{sink}, Logger: quiet(), SinkBackoff: 10 * time.Millisecond})
	bob := bonnie.Identity{Kind: bonnie.IdentityLogin, ID: "bob", Login: "bob"}
	raw, _ := intercept.Start("i-w", intercept.TargetOf(&bob), "W", at(0, 0), at(23, 0), "dir:"+out, "Judge", "test", time.Now())
	ctx := context.Background()
	eng.Record(ctx, raw, "test")
	eng.Ingest(ctx, []byte(`{"event":"Login","timestamp":"2026-11-28T10:00:00Z","user":"bob","vnd.cmu.sessionId":"w1"}`), "test")
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	eng.Run(rctx)
	if files, _ := filepath.Glob(filepath.Join(out, "*")); len(files) != 0 {
		t.Errorf("handed over from the wrong log: %v", files)
	}
}

// reusedLogin is a directory in which Jane's old login janeg, freed by her
// rename to janed, is given to another person at noon.
type reusedLogin struct{}

func (reusedLogin) Resolve(ctx context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	if subject == "janeg" && !at.Before(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) {
		return bonnie.Identity{Subject: subject, Kind: bonnie.IdentityUser, ID: "u-other", Login: "janeg",
			Addresses: []string{"janeg@example.org"}, Source: "test", ResolvedAt: time.Now().UTC()}, nil
	}
	return directory.Resolve(ctx, subject, at)
}

// A login freed by a rename and given to someone else stops being one of
// the target's names: the new holder's events that carry no resolved
// identity (MailboxModseq names only the mailbox) are not intercepted.
func TestReusedLoginLeavesTheTarget(t *testing.T) {
	f := newFixtureWith(t, reusedLogin{})
	out := filepath.Join(f.dir, "out")
	os.Mkdir(out, 0o700)
	f.record(intercept.Start("i-reuse", janeTarget(), "W-4", at(0, 0), at(23, 0), "dir:"+out, "Judge", "test", time.Now()))
	modseq := func(owner string, when time.Time) bonnie.Position {
		return f.ingest("MailboxModseq", when, map[string]any{"mailboxID": "inbox-of-" + owner,
			"uri": fmt.Sprintf("imap://h/user.%s;UIDVALIDITY=1", owner), "modseq": 7})
	}
	want := []bonnie.Position{
		f.login("janeg", at(10, 0)), // Jane, under her old login
		modseq("janeg", at(10, 1)),  // her old mailbox, matched by name
		f.login("janed", at(11, 0)), // Jane renamed
	}
	f.login("janeg", at(12, 30)) // the login now belongs to someone else
	modseq("janeg", at(12, 31))  // so does the mailbox: not Jane's
	f.caughtUp(20 * time.Second)
	ds, _ := intercept.Deliveries(context.Background(), f.store, "i-reuse")
	var got []bonnie.Position
	for _, d := range ds {
		for _, it := range d.Items {
			got = append(got, it.Position)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("delivered positions %v, want %v", got, want)
	}
}
