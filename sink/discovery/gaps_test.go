package discovery_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

const (
	gapInbox = "gapinbox000000000000000a"
	gapOld   = "gapold00000000000000000b"
)

func gapDay(month, d int) time.Time {
	return time.Date(2026, time.Month(month), d, 0, 0, 0, 0, time.UTC)
}

func gapStamp(month, d int) string { return gapDay(month, d).Format("2006-01-02T15:04:05.000Z") }

// gapLog is a log in which the daemon ran from January, stopped on March
// 1st and started again on April 1st (its DaemonStart says it was down
// since March 1st); user.alice.Old, with <old@x>, was backfilled on
// January 10th and never reconciled; a reconcile on April 2nd found <rep@x> appended and
// <live1@x> read while nobody listened. <early@x> came and went in
// January, <live3@x> came in May.
func gapLog(t *testing.T) *sqlite.Log {
	t.Helper()
	ctx := context.Background()
	lg := openLog(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg})
	if err != nil {
		t.Fatal(err)
	}
	own := func(raw string) {
		t.Helper()
		if _, _, err := eng.Record(ctx, []byte(raw), "test"); err != nil {
			t.Fatalf("record %s: %v", raw, err)
		}
	}
	live := func(raw string) {
		t.Helper()
		if _, _, err := eng.Ingest(ctx, []byte(raw), "test"); err != nil {
			t.Fatalf("ingest %s: %v", raw, err)
		}
	}
	msg := func(typ string, uid, m, d int, extra string) string {
		return fmt.Sprintf(`{"event":%q,"timestamp":%q,"mailboxID":%q,"uri":"imap://h/user.alice;UIDVALIDITY=7/;UID=%d","user":"alice"%s}`,
			typ, gapStamp(m, d), gapInbox, uid, extra)
	}
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStart","timestamp":%q,"service":"bonnied"}`, gapStamp(1, 1)))
	live(fmt.Sprintf(`{"event":"MailboxCreate","timestamp":%q,"mailboxID":%q,"uri":"imap://h/user.alice;UIDVALIDITY=7","user":"cyrus"}`, gapStamp(1, 1), gapInbox))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.Backfill","timestamp":%q,"service":"bonnie-backfill","uri":"imap://h/user.alice.Old;UIDVALIDITY=3","mailboxID":%q,"vnd.bonnie.crawl":{"run":"b1","lastUid":1,"done":true,"messages":[{"uid":1,"messageId":"<old@x>","flags":["\\Seen"]}]}}`,
		gapStamp(1, 10), gapOld))
	live(msg("MessageAppend", 4, 1, 5, `,"vnd.cmu.midset":["<early@x>"]`))
	live(msg("MessageExpunge", 4, 1, 20, ""))
	live(msg("MessageAppend", 1, 2, 1, `,"vnd.cmu.midset":["<live1@x>"]`))
	live(msg("FlagsSet", 1, 2, 2, `,"flagNames":"\\Flagged"`))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStop","timestamp":%q,"service":"bonnied"}`, gapStamp(3, 1)))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStart","timestamp":%q,"service":"bonnied","vnd.bonnie.downSince":%q,"vnd.bonnie.cleanStop":true}`,
		gapStamp(4, 1), gapDay(3, 1).Format(time.RFC3339Nano)))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.Reconcile","timestamp":%q,"service":"bonnie-reconcile","uri":"imap://h/user.alice;UIDVALIDITY=7","mailboxID":%q,"vnd.bonnie.crawl":{"run":"r1","messages":[{"uid":2,"messageId":"<rep@x>","flags":[]}],"flags":[{"uid":1,"flags":["\\Flagged","\\Seen"]}],"window":{"from":%q,"to":%q,"basis":"down"}}}`,
		gapStamp(4, 2), gapInbox, gapDay(3, 1).Format(time.RFC3339), gapDay(4, 1).Format(time.RFC3339)))
	live(msg("MessageAppend", 3, 5, 1, `,"vnd.cmu.midset":["<live3@x>"]`))
	return lg
}

// TestTimelineGaps: a timeline marks what a reconcile recorded after the
// fact (with the window it happened in) and says when its span crosses a
// gap in the coverage of its folders; one that does not cross it says
// nothing.
func TestTimelineGaps(t *testing.T) {
	ctx := context.Background()
	lg := gapLog(t)
	x := openIndex(t, t.TempDir()+"/discovery.db", nil)
	if _, err := x.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	tl, err := coverage.Read(ctx, lg, gapDay(6, 1))
	if err != nil {
		t.Fatal(err)
	}
	repairedGap := []string{"user.alice: repaired 2026-03-01T00:00:00Z .. 2026-04-01T00:00:00Z at 2026-04-02T00:00:00Z", "repair 1"}
	for _, tc := range []struct {
		message string
		actions []string // action[/recordedBy]
		gaps    []string
	}{
		{"<live1@x>", []string{"appended", "flagged", "flags changed/reconcile"}, repairedGap},
		{"<rep@x>", []string{"appended/reconcile"}, repairedGap},
		{"<live3@x>", []string{"appended"}, nil},
		{"<early@x>", []string{"appended", "expunged"}, nil},
		{"<old@x>", []string{discovery.ActFound + "/backfill"}, []string{"user.alice.Old: gap 2026-03-01T00:00:00Z .. 2026-04-01T00:00:00Z"}},
	} {
		t.Run(tc.message, func(t *testing.T) {
			mt, err := x.Message(ctx, tc.message)
			if err != nil {
				t.Fatal(err)
			}
			if err := mt.AddGaps(ctx, tl, lg); err != nil {
				t.Fatal(err)
			}
			var acts []string
			for _, e := range mt.Entries {
				a := e.Action
				if e.RecordedBy != "" {
					a += "/" + e.RecordedBy
				}
				if e.RecordedBy == coverage.ByReconcile {
					if e.Window == nil || !e.Window.From.Equal(gapDay(3, 1)) || !e.Window.To.Equal(gapDay(4, 1)) {
						t.Errorf("%s: window %+v", a, e.Window)
					}
				} else if e.Window != nil {
					t.Errorf("%s with a window", a)
				}
				acts = append(acts, a)
			}
			if !slices.Equal(acts, tc.actions) {
				t.Errorf("entries %v, want %v", acts, tc.actions)
			}
			if got := gapLines(mt.Gaps); !slices.Equal(got, tc.gaps) {
				t.Errorf("gaps %q, want %q", got, tc.gaps)
			}
		})
	}
	fts, err := x.Folder(ctx, "user.alice", true)
	if err != nil || len(fts) != 1 {
		t.Fatal(fts, err)
	}
	if err := fts[0].AddGaps(ctx, tl, lg); err != nil {
		t.Fatal(err)
	}
	if got := gapLines(fts[0].Gaps); !slices.Equal(got, repairedGap) {
		t.Errorf("folder gaps %q", got)
	}
	marked := 0
	for _, e := range fts[0].Entries {
		if e.RecordedBy == coverage.ByReconcile {
			marked++
		}
	}
	if marked != 2 {
		t.Errorf("%d entries of the folder marked as reconciled, want 2", marked)
	}
}

// gapLines is the crossings' periods, and "repair N" for N repairs.
func gapLines(gaps []coverage.Crossing) []string {
	var out []string
	repairs := 0
	for i := range gaps {
		for _, l := range gaps[i].Lines() {
			if !strings.Contains(l, ": repair #") {
				out = append(out, l)
			}
		}
		repairs += len(gaps[i].Repairs)
	}
	if repairs > 0 {
		out = append(out, fmt.Sprintf("repair %d", repairs))
	}
	return out
}
