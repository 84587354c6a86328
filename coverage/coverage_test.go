package coverage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

const (
	inbox = "covinbox000000000000000a" // user.alice, created live
	old   = "covold00000000000000000b" // user.alice.Old, backfilled
)

func day(month, d int) time.Time { return time.Date(2026, time.Month(month), d, 0, 0, 0, 0, time.UTC) }

func stamp(month, d int) string { return day(month, d).Format("2006-01-02T15:04:05.000Z") }

// testLog builds, through the engine, a log in which the daemon ran from
// January 1st, stopped on March 1st and started again on April 1st (its
// DaemonStart says it was down since March 1st); a reconcile on April 2nd
// found a message appended to user.alice while nobody listened.
// user.alice.Old was backfilled on January 10th and never reconciled.
// It returns the engine and the position of the reconcile.
func testLog(t *testing.T) (*sqlite.Log, *bonnie.Engine, bonnie.Position) {
	t.Helper()
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	eng, err := bonnie.New(bonnie.Options{Store: lg})
	if err != nil {
		t.Fatal(err)
	}
	var last bonnie.Position
	own := func(raw string) {
		t.Helper()
		if last, _, err = eng.Record(ctx, []byte(raw), "test"); err != nil {
			t.Fatalf("record %s: %v", raw, err)
		}
	}
	live := func(raw string) {
		t.Helper()
		if _, _, err := eng.Ingest(ctx, []byte(raw), "test"); err != nil {
			t.Fatalf("ingest %s: %v", raw, err)
		}
	}
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStart","timestamp":%q,"service":"bonnied"}`, stamp(1, 1)))
	live(fmt.Sprintf(`{"event":"MailboxCreate","timestamp":%q,"mailboxID":%q,"uri":"imap://h/user.alice;UIDVALIDITY=7","user":"cyrus"}`, stamp(1, 1), inbox))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.Backfill","timestamp":%q,"service":"bonnie-backfill","uri":"imap://h/user.alice.Old;UIDVALIDITY=3","mailboxID":%q,"vnd.bonnie.crawl":{"run":"b1","lastUid":1,"done":true,"messages":[{"uid":1,"flags":[]}]}}`,
		stamp(1, 10), old))
	live(fmt.Sprintf(`{"event":"MessageAppend","timestamp":%q,"mailboxID":%q,"uri":"imap://h/user.alice;UIDVALIDITY=7/;UID=1","user":"alice"}`, stamp(2, 1), inbox))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStop","timestamp":%q,"service":"bonnied"}`, stamp(3, 1)))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStart","timestamp":%q,"service":"bonnied","vnd.bonnie.downSince":%q,"vnd.bonnie.cleanStop":true}`,
		stamp(4, 1), day(3, 1).Format(time.RFC3339Nano)))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.Reconcile","timestamp":%q,"service":"bonnie-reconcile","uri":"imap://h/user.alice;UIDVALIDITY=7","mailboxID":%q,"vnd.bonnie.crawl":{"run":"r1","messages":[{"uid":2,"flags":[]}],"window":{"from":%q,"to":%q,"basis":"down"}}}`,
		stamp(4, 2), inbox, day(3, 1).Format(time.RFC3339), day(4, 1).Format(time.RFC3339)))
	return lg, eng, last
}

func periods(ps []coverage.Period) string {
	s := ""
	for _, p := range ps {
		s += fmt.Sprintf("[%s %s..%s", p.Status, p.From.Format("01-02"), p.To.Format("01-02"))
		if !p.At.IsZero() {
			s += " at " + p.At.Format("01-02")
		}
		s += "]"
	}
	return s
}

func TestFolderCoverage(t *testing.T) {
	ctx := context.Background()
	lg, _, rec := testLog(t)
	for _, tc := range []struct{ folder, want string }{
		{"user.alice", "[unknown 01-01..01-01][complete 01-01..03-01][repaired 03-01..04-01 at 04-02][complete 04-01..06-01]"},
		{inbox, "[unknown 01-01..01-01][complete 01-01..03-01][repaired 03-01..04-01 at 04-02][complete 04-01..06-01]"},
		{"user.alice.Old", "[backfilled 01-01..01-10][complete 01-10..03-01][gap 03-01..04-01][complete 04-01..06-01]"},
	} {
		cov, err := coverage.FolderCoverage(ctx, lg, tc.folder, day(6, 1))
		if err != nil {
			t.Fatal(err)
		}
		if got := periods(cov.Periods); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.folder, got, tc.want)
		}
	}
	cov, _ := coverage.FolderCoverage(ctx, lg, inbox, day(6, 1))
	if len(cov.Repairs) != 1 || cov.Repairs[0].Position != rec || cov.Repairs[0].Appended != 1 || cov.Repairs[0].Window.Basis != bonnie.WindowDown {
		t.Errorf("repairs %+v", cov.Repairs)
	}
	if _, err := coverage.FolderCoverage(ctx, lg, "user.nobody", day(6, 1)); !errors.Is(err, coverage.ErrNoFolder) {
		t.Errorf("unknown folder: %v", err)
	}
}

func TestCrossing(t *testing.T) {
	ctx := context.Background()
	lg, _, rec := testLog(t)
	tl, err := coverage.Read(ctx, lg, day(6, 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		folder   string
		from, to time.Time
		want     string // periods
		repairs  int
	}{
		{"across the gap", "user.alice", day(2, 1), day(5, 1), "[repaired 03-01..04-01 at 04-02]", 1},
		{"into the gap", "user.alice", day(2, 1), day(3, 15), "[repaired 03-01..04-01 at 04-02]", 1},
		{"unbounded", "user.alice", time.Time{}, time.Time{}, "[repaired 03-01..04-01 at 04-02]", 1},
		{"before: created live, nothing unknown", "user.alice", time.Time{}, day(2, 1), "", 0},
		{"ends where the gap begins", "user.alice", day(2, 1), day(3, 1), "", 0},
		{"after", "user.alice", day(4, 1), day(5, 1), "", 0},
		{"backfilled: unknown before", "user.alice.Old", time.Time{}, day(2, 1), "[backfilled 01-01..01-10]", 0},
		{"backfilled: the gap was never checked", "user.alice.Old", day(2, 1), day(5, 1), "[gap 03-01..04-01]", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cov, err := tl.Folder(ctx, lg, tc.folder)
			if err != nil {
				t.Fatal(err)
			}
			x := cov.Crossing(tc.from, tc.to)
			if tc.want == "" && tc.repairs == 0 {
				if x != nil {
					t.Fatalf("crosses %+v", x)
				}
				return
			}
			if x == nil {
				t.Fatal("crosses nothing")
			}
			if got := periods(x.Periods); got != tc.want || len(x.Repairs) != tc.repairs {
				t.Errorf("%s with %d repairs, want %s with %d", got, len(x.Repairs), tc.want, tc.repairs)
			}
			if len(x.Lines()) != len(x.Periods)+len(x.Repairs) {
				t.Errorf("lines %q", x.Lines())
			}
		})
	}
	xs, err := tl.Crossings(ctx, lg, []string{"user.alice", inbox, "user.alice.Old", "user.nobody", ""}, day(2, 1), day(5, 1))
	if err != nil || len(xs) != 2 || xs[0].Folder != inbox || xs[1].Folder != old {
		t.Errorf("crossings %+v, %v", xs, err)
	}
	if m := tl.Mark(rec, bonnie.Reconcile.String(), day(4, 2)); m.RecordedBy != coverage.ByReconcile || m.Window == nil || !m.At.Equal(day(4, 2)) {
		t.Errorf("mark of the reconcile: %+v", m)
	}
	if m := tl.Mark(1, bonnie.MessageAppend.String(), day(1, 1)); m.RecordedBy != coverage.Live || m.Window != nil {
		t.Errorf("mark of a live event: %+v", m)
	}
}

// TestOpenGap: a log whose last lifecycle event is a DaemonStop is in a
// gap until now.
func TestOpenGap(t *testing.T) {
	ctx := context.Background()
	lg, eng, _ := testLog(t)
	if _, _, err := eng.Record(ctx, fmt.Appendf(nil, `{"event":"vnd.bonnie.DaemonStop","timestamp":%q,"service":"bonnied"}`, stamp(5, 1)), "test"); err != nil {
		t.Fatal(err)
	}
	tl, err := coverage.Read(ctx, lg, day(6, 1))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(tl.Gaps); n != 2 || !tl.Gaps[1].Open || !tl.Gaps[1].From.Equal(day(5, 1)) || !tl.Gaps[1].To.Equal(day(6, 1)) {
		t.Fatalf("gaps %+v", tl.Gaps)
	}
	cov, err := tl.Folder(ctx, lg, "user.alice")
	if err != nil {
		t.Fatal(err)
	}
	if x := cov.Crossing(day(5, 15), time.Time{}); x == nil || periods(x.Periods) != "[gap 05-01..06-01]" {
		t.Errorf("crossing the open gap: %+v", x)
	}
}

// TestHeldDowntimeIsNoGap: a downtime between two runs whose sockets were
// held (socket activation: Cyrus waited) is no gap, and neither is the
// open one after such a run stopped; a downtime after a run that created
// its own sockets is one, whatever the next run does.
func TestHeldDowntimeIsNoGap(t *testing.T) {
	ctx := context.Background()
	lg, eng, _ := testLog(t) // runs Jan 1 - Mar 1 and from Apr 1, sockets not held
	rec := func(raw string) {
		t.Helper()
		if _, _, err := eng.Record(ctx, []byte(raw), "test"); err != nil {
			t.Fatal(err)
		}
	}
	start := func(m, d int, since time.Time, held bool) {
		rec(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStart","timestamp":%q,"service":"bonnied","vnd.bonnie.downSince":%q,"vnd.bonnie.cleanStop":true,%q:%v}`,
			stamp(m, d), since.Format(time.RFC3339Nano), coverage.HeldWhileDown, held))
	}
	stop := func(m, d int) {
		rec(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStop","timestamp":%q,"service":"bonnied"}`, stamp(m, d)))
	}
	stop(4, 10)
	start(4, 11, day(4, 10), true) // the run before made its own socket: a gap
	stop(4, 20)
	start(4, 21, day(4, 20), true) // held on both sides: no gap
	stop(5, 1)                     // and held since
	tl, err := coverage.Read(ctx, lg, day(6, 1))
	if err != nil {
		t.Fatal(err)
	}
	var gaps, held []string
	for _, g := range tl.Gaps {
		gaps = append(gaps, g.From.Format("01-02")+".."+g.To.Format("01-02"))
	}
	for _, g := range tl.Held {
		held = append(held, g.From.Format("01-02")+".."+g.To.Format("01-02"))
	}
	if fmt.Sprint(gaps) != "[03-01..04-01 04-10..04-11]" || fmt.Sprint(held) != "[04-20..04-21 05-01..06-01]" {
		t.Fatalf("gaps %v, held %v", gaps, held)
	}
	cov, err := tl.Folder(ctx, lg, "user.alice")
	if err != nil {
		t.Fatal(err)
	}
	if x := cov.Crossing(day(4, 15), time.Time{}); x != nil {
		t.Errorf("crossing from Apr 15 (only held downtime): %+v", x)
	}
	if x := cov.Crossing(day(4, 5), day(4, 15)); x == nil || periods(x.Periods) != "[gap 04-10..04-11]" {
		t.Errorf("crossing Apr 5-15: %+v", x)
	}
}
