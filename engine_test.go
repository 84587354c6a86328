package bonnie_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// Folder and message ids from the capture (testdata/cyrus-3.6.1).
const (
	inbox     = "zhelole6j19gznuv4b0d24ep" // user.alice
	work      = "kwv2nc0rutdhxg2phbung3vj" // user.alice.Work, renamed Projects
	inboxUV   = 1795897409
	workUV    = 1795897411
	captureNo = 98
)

func openStore(t *testing.T) *sqlite.Log {
	t.Helper()
	lg, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	return lg
}

// captures returns the real datagrams in the order Cyrus sent them.
func captures(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/cyrus-3.6.1/*.bin")
	if err != nil || len(files) != captureNo {
		t.Fatalf("want %d captures, got %d (%v)", captureNo, len(files), err)
	}
	sort.Strings(files)
	out := make([][]byte, len(files))
	for i, f := range files {
		if out[i], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func ingestAll(t *testing.T, eng *bonnie.Engine) {
	t.Helper()
	for i, raw := range captures(t) {
		if _, _, err := eng.Ingest(context.Background(), raw, "test"); err != nil {
			t.Fatalf("capture %03d: %v", i+1, err)
		}
	}
}

func state(t *testing.T, lg *sqlite.Log, kind bonnie.EntityKind, id string) map[string]string {
	t.Helper()
	st, err := lg.StateAt(context.Background(), kind, id, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func flags(st map[string]string) []string {
	var out []string
	for k := range st {
		if f, ok := strings.CutPrefix(k, "flag:"); ok {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// TestIngestCaptureSequence replays the real Cyrus session and checks the
// entity state and changelog that follow from what each IMAP step did.
func TestIngestCaptureSequence(t *testing.T) {
	lg := openStore(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg})
	if err != nil {
		t.Fatal(err)
	}
	ingestAll(t, eng)
	ctx := context.Background()

	head, _ := lg.Head(ctx)
	if head != captureNo {
		t.Fatalf("head = %d, want %d (every datagram is an event)", head, captureNo)
	}
	if err := lg.Verify(ctx); err != nil {
		t.Fatal(err)
	}

	msg := func(folder string, uv, uid uint32) map[string]string {
		return state(t, lg, bonnie.KindMessage, bonnie.MessageKey(folder, uv, uid))
	}
	tests := []struct {
		name      string
		st        map[string]string
		flags     []string
		fields    map[string]string
		notFields []string
	}{
		{
			name:   "uid 1: read, then +FLAGS (\\Seen \\Flagged $Work), then expired by cyr_expire",
			st:     msg(inbox, inboxUV, 1),
			flags:  []string{"$Work", `\Flagged`, `\Seen`},
			fields: map[string]string{"state": bonnie.StateExpired, "messageId": "<harness-1@example.org>", "size": "244"},
		},
		{
			name:   "uid 2: FLAGS (\\Draft) replace, then moved to Work and expunged",
			st:     msg(inbox, inboxUV, 2),
			flags:  []string{`\Draft`},
			fields: map[string]string{"state": bonnie.StateExpunged, "movedTo": bonnie.MessageKey(work, workUV, 2)},
		},
		{
			name:   "uid 3: +\\Deleted then EXPUNGE",
			st:     msg(inbox, inboxUV, 3),
			flags:  []string{"$Work", `\Deleted`, `\Flagged`, `\Seen`},
			fields: map[string]string{"state": bonnie.StateExpunged},
		},
		{
			name:   "the copy of uid 1 in Work keeps its flags and knows its origin",
			st:     msg(work, workUV, 1),
			flags:  []string{"$Work", `\Flagged`, `\Seen`},
			fields: map[string]string{"state": bonnie.StatePresent, "origin": bonnie.MessageKey(inbox, inboxUV, 1), "messageId": "<harness-1@example.org>"},
		},
		{
			name:   "the moved uid 2 in Work has the flags it had",
			st:     msg(work, workUV, 2),
			flags:  []string{`\Draft`},
			fields: map[string]string{"state": bonnie.StatePresent, "origin": bonnie.MessageKey(inbox, inboxUV, 2)},
		},
		{
			name:      "Work: renamed to Projects, bob granted then revoked, deleted",
			st:        state(t, lg, bonnie.KindFolder, work),
			fields:    map[string]string{"path": "user.alice.Projects", "owner": "alice", "state": bonnie.StateDeleted, "acl:alice": "lrswipkxtecdan"},
			notFields: []string{"acl:bob"},
		},
		{
			name:   "Bücher is named decoded",
			st:     state(t, lg, bonnie.KindFolder, "0yq7wy6agzhs91zmb8qg0qkn"),
			fields: map[string]string{"path": "user.alice.Bücher", "state": bonnie.StatePresent},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.flags != nil {
				if got := flags(tt.st); !slices.Equal(got, tt.flags) {
					t.Errorf("flags = %v, want %v", got, tt.flags)
				}
			}
			for k, v := range tt.fields {
				if tt.st[k] != v {
					t.Errorf("%s = %q, want %q", k, tt.st[k], v)
				}
			}
			for _, k := range tt.notFields {
				if v, ok := tt.st[k]; ok {
					t.Errorf("%s = %q, want absent", k, v)
				}
			}
		})
	}

	t.Run("folder history shows the rename and the ACL grant and revoke", func(t *testing.T) {
		hist, err := lg.History(ctx, bonnie.KindFolder, work)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range hist {
			if c.Field == "path" || c.Field == "acl:bob" {
				got = append(got, c.Field+":"+c.From+">"+c.To)
			}
		}
		want := []string{"path:>user.alice.Work", "acl:bob:>lrs", "acl:bob:lrs>", "path:user.alice.Work>user.alice.Projects"}
		if !slices.Equal(got, want) {
			t.Errorf("history = %v, want %v", got, want)
		}
	})

	t.Run("alice's first session has client address, start, end and duration", func(t *testing.T) {
		st := state(t, lg, bonnie.KindSession, "cyrus-harness-1795897410-30423-1-5233442537427230527")
		if st["user"] != "alice" || !strings.HasPrefix(st["client"], "127.0.0.1:") || st["start"] == "" || st["end"] == "" || st["duration"] == "" {
			t.Errorf("session = %v", st)
		}
	})

	t.Run("MailboxModseq is in the log but changes nothing", func(t *testing.T) {
		recs, err := lg.Read(ctx, 0, captureNo)
		if err != nil {
			t.Fatal(err)
		}
		var modseq int
		for _, r := range recs {
			if r.Event.Type == bonnie.MailboxModseq {
				modseq++
				if len(r.Changes) != 0 {
					t.Errorf("position %d: MailboxModseq caused %v", r.Position, r.Changes)
				}
			}
		}
		if modseq < 30 {
			t.Errorf("only %d MailboxModseq events in the log", modseq)
		}
	})
}

func TestIngestIsIdempotent(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	ingestAll(t, eng)
	ctx := context.Background()
	before, _ := lg.Head(ctx)
	for i, raw := range captures(t) {
		pos, dup, err := eng.Ingest(ctx, raw, "redelivery")
		if err != nil || !dup || pos != bonnie.Position(i+1) {
			t.Fatalf("redelivery of %03d: pos %d dup %v err %v", i+1, pos, dup, err)
		}
	}
	if after, _ := lg.Head(ctx); after != before {
		t.Fatalf("head moved from %d to %d on redelivery", before, after)
	}
	// State is unchanged by the redelivery.
	st := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(inbox, inboxUV, 2))
	if got := flags(st); !slices.Equal(got, []string{`\Draft`}) {
		t.Fatalf("flags after redelivery = %v", got)
	}
}

func TestBadInputBecomesDeadLetter(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	ctx := context.Background()
	bad := map[string][]byte{
		"garbage":   []byte("\x00\x01\x02garbage"),
		"truncated": []byte("log\x00EVENT\x00\x00\x00\x00"),
		"unknown":   []byte(`{"event":"NoSuchEvent","timestamp":"2026-11-28T20:23:28.649Z"}`),
		"oversized": append([]byte(`{"event":"Login","x":"`), make([]byte, bonnie.MaxNotificationSize)...),
	}
	for name, raw := range bad {
		_, _, err := eng.Ingest(ctx, raw, name)
		if !errors.Is(err, bonnie.ErrDeadLettered) {
			t.Errorf("%s: err = %v, want ErrDeadLettered", name, err)
		}
	}
	list, err := lg.DeadLetters(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(bad) {
		t.Fatalf("%d dead letters, want %d", len(list), len(bad))
	}
	for _, d := range list {
		if !slices.Equal(d.Raw, bad[d.Source]) || d.Reason == "" {
			t.Errorf("dead letter %q: raw kept %v, reason %q", d.Source, slices.Equal(d.Raw, bad[d.Source]), d.Reason)
		}
	}
	if head, _ := lg.Head(ctx); head != 0 {
		t.Fatalf("bad input reached the log: head %d", head)
	}
}

// TestNewSinkCatchesUpThenGoesLive: a sink registered on an existing log
// gets every record from position 1, in order, then live events; after a
// restart it resumes from its cursor without repeats.
func TestNewSinkCatchesUpThenGoesLive(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	ingestAll(t, eng)

	var mu sync.Mutex
	var seen []bonnie.Position
	got := make(chan struct{}, 1000)
	sink := bonnie.SinkFunc("collector", bonnie.AllEvents, func(ctx context.Context, rec bonnie.Record) error {
		mu.Lock()
		seen = append(seen, rec.Position)
		mu.Unlock()
		got <- struct{}{}
		return nil
	})
	runFor := func(extra []byte, want int) {
		eng, err := bonnie.New(bonnie.Options{Store: lg, Sinks: []bonnie.Sink{sink}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- eng.Run(ctx) }()
		if extra != nil {
			// Wait for the catch-up, then send a live event.
			waitN(t, got, captureNo)
			if _, _, err := eng.Ingest(ctx, extra, "live"); err != nil {
				t.Fatal(err)
			}
			want -= captureNo
		}
		waitN(t, got, want)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	live := []byte(`{"event":"Login","timestamp":"2026-11-28T21:00:00.000Z","service":"imap","user":"bob","vnd.cmu.sessionId":"s-live","uri":"imap://h"}`)
	runFor(live, captureNo+1)
	mu.Lock()
	for i, p := range seen {
		if p != bonnie.Position(i+1) {
			t.Fatalf("record %d delivered at position %d: out of order or repeated", i, p)
		}
	}
	mu.Unlock()

	// A second run: one more event, and only it is delivered.
	eng2, _ := bonnie.New(bonnie.Options{Store: lg})
	if _, _, err := eng2.Ingest(context.Background(), []byte(strings.Replace(string(live), "s-live", "s-live2", 1)), "t"); err != nil {
		t.Fatal(err)
	}
	runFor(nil, 1)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != captureNo+2 || seen[len(seen)-1] != captureNo+2 {
		t.Fatalf("after restart the sink saw %v...", seen[captureNo:])
	}
}

// TestFailingSinkIsRetriedAndDoesNotBlockOthers.
func TestFailingSinkIsRetriedAndDoesNotBlockOthers(t *testing.T) {
	lg := openStore(t)
	var mu sync.Mutex
	fails := 3
	var flaky, steady []bonnie.Position
	done := make(chan struct{})
	sinks := []bonnie.Sink{
		bonnie.SinkFunc("flaky", bonnie.Mask(bonnie.Login), func(ctx context.Context, rec bonnie.Record) error {
			mu.Lock()
			defer mu.Unlock()
			if fails > 0 {
				fails--
				return errors.New("destination down")
			}
			flaky = append(flaky, rec.Position)
			if len(flaky) == 3 {
				close(done)
			}
			return nil
		}),
		bonnie.SinkFunc("steady", bonnie.AllEvents, func(ctx context.Context, rec bonnie.Record) error {
			mu.Lock()
			defer mu.Unlock()
			steady = append(steady, rec.Position)
			return nil
		}),
	}
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Sinks: sinks, SinkBackoff: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go eng.Run(ctx)
	ingestAll(t, eng)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("flaky sink never caught up")
	}
	mu.Lock()
	defer mu.Unlock()
	// Login events in the capture: positions 1, 5, 80, ... the first three.
	if flaky[0] != 1 || flaky[1] != 5 || fails != 0 {
		t.Fatalf("flaky sink got %v (fails left %d)", flaky, fails)
	}
	if len(steady) == 0 {
		t.Fatal("steady sink got nothing")
	}
}

// TestConcurrentIngestWhileRunning: many callers at once share
// transactions, and every event lands exactly once.
func TestConcurrentIngestWhileRunning(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- eng.Run(ctx) }()
	const n = 2000
	var wg sync.WaitGroup
	positions := make([]bonnie.Position, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := fmt.Appendf(nil, `{"event":"Login","timestamp":"2026-11-28T21:00:00.000Z","service":"imap","user":"u%d","vnd.cmu.sessionId":"s%d","uri":"imap://h"}`, i, i)
			pos, dup, err := eng.Ingest(context.Background(), raw, "load")
			if err != nil || dup {
				t.Errorf("event %d: dup %v err %v", i, dup, err)
			}
			positions[i] = pos
		}()
	}
	wg.Wait()
	cancel()
	<-done
	slices.Sort(positions)
	for i, p := range positions {
		if p != bonnie.Position(i+1) {
			t.Fatalf("positions not 1..%d exactly once: %v...", n, positions[:min(i+3, n)])
		}
	}
	if err := lg.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func waitN(t *testing.T, ch <-chan struct{}, n int) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for range n {
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("timed out waiting for %d deliveries", n)
		}
	}
}

// TestLifecycleRecordsDowntime: the daemon's start says whether the
// previous run stopped cleanly and since when nobody listened.
func TestLifecycleRecordsDowntime(t *testing.T) {
	lg := openStore(t)
	ctx := context.Background()
	run := func() {
		eng, err := bonnie.New(bonnie.Options{Store: lg, Lifecycle: "bonnied"})
		if err != nil {
			t.Fatal(err)
		}
		c, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- eng.Run(c) }()
		time.Sleep(50 * time.Millisecond)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	run() // start, clean stop
	run() // start after a clean stop
	// A crash: the last record is an ordinary event, not a stop.
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	if _, _, err := eng.Ingest(ctx, captures(t)[0], "t"); err != nil {
		t.Fatal(err)
	}
	run()

	recs, err := lg.Read(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		ev := r.Event
		s := ev.Type.String()
		if ev.Type == bonnie.DaemonStart && len(ev.Extra) > 0 {
			s += " clean=" + string(ev.Extra["vnd.bonnie.cleanStop"])
			var since time.Time
			if err := since.UnmarshalJSON(ev.Extra["vnd.bonnie.downSince"]); err != nil {
				t.Fatalf("downSince: %v", err)
			}
			prev := recs[r.Position-2]
			if !since.Equal(prev.Appended) {
				t.Errorf("position %d: downSince %v, want the previous record's %v", r.Position, since, prev.Appended)
			}
		}
		got = append(got, s)
	}
	want := []string{"vnd.bonnie.DaemonStart", "vnd.bonnie.DaemonStop",
		"vnd.bonnie.DaemonStart clean=true", "vnd.bonnie.DaemonStop",
		"Login", "vnd.bonnie.DaemonStart clean=false", "vnd.bonnie.DaemonStop"}
	if !slices.Equal(got, want) {
		t.Fatalf("log = %v\nwant %v", got, want)
	}
}

// flakyStore fails every nth AppendBatch, as a full disk or a lost
// connection would: a fault the real store cannot be made to produce on
// demand.
type flakyStore struct {
	*sqlite.Log
	mu       sync.Mutex
	n, every int
}

func (f *flakyStore) AppendBatch(ctx context.Context, entries []bonnie.Entry) ([]bonnie.Appended, error) {
	f.mu.Lock()
	f.n++
	fail := f.n%f.every == 0
	f.mu.Unlock()
	if fail {
		return nil, errors.New("injected: disk full")
	}
	return f.Log.AppendBatch(ctx, entries)
}

// TestFailedAppendsLoseNothingAndDuplicateNothing: with appends failing
// now and then while batches are applied ahead of their commit, callers
// that retry get every event stored exactly once, and the changelog is
// the same as without failures.
func TestFailedAppendsLoseNothingAndDuplicateNothing(t *testing.T) {
	lg := openStore(t)
	store := &flakyStore{Log: lg, every: 3}
	eng, _ := bonnie.New(bonnie.Options{Store: store, Logger: quietLog()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- eng.Run(ctx) }()

	// Independent events, many at once, so that batches form and are
	// applied while earlier ones commit.
	const n = 600
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := fmt.Appendf(nil, `{"event":"Login","timestamp":"2026-11-28T21:00:00.000Z","service":"imap","user":"u%d","vnd.cmu.sessionId":"s%d","uri":"imap://h","clientIP":"127.0.0.1","clientPort":%d}`, i, i, 1000+i)
			for try := 0; ; try++ {
				_, _, err := eng.Ingest(context.Background(), raw, "load")
				if err == nil {
					return
				}
				if try > 50 {
					t.Errorf("event %d never stored: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// And the real sequence, in order, each retried until stored.
	for i, raw := range captures(t) {
		for try := 0; ; try++ {
			if _, _, err := eng.Ingest(context.Background(), raw, "test"); err == nil {
				break
			} else if try > 50 {
				t.Fatalf("capture %03d never stored: %v", i+1, err)
			}
		}
	}
	cancel()
	<-done

	head, _ := lg.Head(context.Background())
	if head != n+captureNo {
		t.Fatalf("head %d, want %d: lost or duplicated", head, n+captureNo)
	}
	if err := lg.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		hist, err := lg.History(context.Background(), bonnie.KindSession, fmt.Sprintf("s%d", i))
		if err != nil || len(hist) == 0 || hist[0].Field != "state" || hist[0].To != bonnie.StatePresent {
			t.Fatalf("session s%d history %v %v", i, hist, err)
		}
		for _, c := range hist[1:] {
			if c.Field == "state" {
				t.Fatalf("session s%d created twice: %v", i, hist)
			}
		}
	}
	// The capture sequence ends in the same state as without failures.
	st := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(work, workUV, 2))
	if got := flags(st); !slices.Equal(got, []string{`\Draft`}) || st["origin"] != bonnie.MessageKey(inbox, inboxUV, 2) {
		t.Fatalf("moved message = %v", st)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestOwnEventsRefusedFromSources: a source cannot forge the daemon's
// start or stop (which say when the log may be incomplete).
func TestOwnEventsRefusedFromSources(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Logger: quietLog()})
	for _, t0 := range bonnie.OwnEvents.Types() {
		name := t0.String()
		raw := []byte(`{"event":"` + name + `","timestamp":"2026-11-28T21:00:00.000Z","service":"bonnied","vnd.bonnie.cleanStop":true}`)
		if _, _, err := eng.Ingest(context.Background(), raw, "cyrus"); !errors.Is(err, bonnie.ErrDeadLettered) {
			t.Errorf("%s from a source: %v, want a dead letter", name, err)
		}
	}
	if head, _ := lg.Head(context.Background()); head != 0 {
		t.Fatalf("forged events reached the log: head %d", head)
	}
}

func TestRecordAppendsOnlyOwnEvents(t *testing.T) {
	lg := openStore(t)
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Logger: quietLog()})
	ctx := context.Background()
	hold := []byte(`{"event":"vnd.bonnie.LegalHold","timestamp":"2026-11-28T21:00:00.000Z","service":"bonnie-cli","user":"auditor","vnd.bonnie.hold":"case-7"}`)
	pos, dup, err := eng.Record(ctx, hold, "cli")
	if err != nil || dup || pos != 1 {
		t.Fatalf("Record: pos %d dup %v err %v", pos, dup, err)
	}
	if pos2, dup, err := eng.Record(ctx, hold, "cli"); err != nil || !dup || pos2 != pos {
		t.Errorf("the same event again: pos %d dup %v err %v, want a duplicate of %d", pos2, dup, err, pos)
	}
	recs, err := lg.Read(ctx, 0, 10)
	if err != nil || len(recs) != 1 || recs[0].Event.Type != bonnie.LegalHold || recs[0].Event.User != "auditor" {
		t.Fatalf("log after Record: %+v %v", recs, err)
	}
	if len(recs[0].Changes) != 0 {
		t.Errorf("a hold changed mailbox state: %+v", recs[0].Changes)
	}
	for _, raw := range []string{
		`{"event":"MessageRead","timestamp":"2026-11-28T21:00:00.000Z","user":"alice"}`,
		`not json`,
	} {
		if _, _, err := eng.Record(ctx, []byte(raw), "cli"); err == nil {
			t.Errorf("Record(%s) appended", raw)
		}
	}
	if head, _ := lg.Head(ctx); head != 1 {
		t.Errorf("head %d after refused records, want 1", head)
	}
}
