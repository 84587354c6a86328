package archive_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
	"github.com/bonnie-archive/bonnie/internal/exportcheck"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// day is midnight UTC of a day of 2026.
func day(month, d int) time.Time { return time.Date(2026, time.Month(month), d, 0, 0, 0, 0, time.UTC) }

func stamp(month, d int) string { return day(month, d).Format("2006-01-02T15:04:05.000Z") }

// gapFixture is a log in which the daemon ran from January, stopped on
// March 1st and started again on April 1st (its DaemonStart says it was
// down since March 1st); a reconcile on April 2nd found a message
// appended to user.alice while nobody listened. user.alice was created
// live; user.alice.Work was first known from a backfill on January 10th
// and never reconciled, so its gap stays a gap.
type gapFixture struct {
	lg                             *sqlite.Log
	a                              *archive.Archive
	live1, repaired, live3, filled string // digests
}

func setupGaps(t *testing.T) *gapFixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	blobs, proj := archive.Paths(dir)
	store, err := blob.Open(blobs)
	if err != nil {
		t.Fatal(err)
	}
	body := func(s string) []byte {
		return []byte("Message-ID: <" + s + "@example.org>\r\nSubject: " + s + "\r\n\r\n" + s + "\r\n")
	}
	f := &memFetcher{store: store, bodies: map[string][]byte{fInbox + "/1": body("live1"), fInbox + "/3": body("live3")}}
	put := func(b []byte) (string, int64) {
		info, err := store.Put(b)
		if err != nil {
			t.Fatal(err)
		}
		return info.Digest, info.Size
	}
	fx := &gapFixture{lg: lg, live1: blob.Digest(body("live1")), live3: blob.Digest(body("live3"))}
	var repairedSize, filledSize int64
	fx.repaired, repairedSize = put(body("repaired"))
	fx.filled, filledSize = put(body("filled"))
	eng, err := bonnie.New(bonnie.Options{Store: lg, Bodies: f})
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
	add := func(uid, m, d int) string {
		return fmt.Sprintf(`{"event":"MessageAppend","timestamp":%q,"mailboxID":%q,"uri":"imap://h/user.alice;UIDVALIDITY=7/;UID=%d","user":"alice"}`, stamp(m, d), fInbox, uid)
	}
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStart","timestamp":%q,"service":"bonnied"}`, stamp(1, 1)))
	live(fmt.Sprintf(`{"event":"MailboxCreate","timestamp":%q,"mailboxID":%q,"uri":"imap://h/user.alice;UIDVALIDITY=7","user":"cyrus"}`, stamp(1, 1), fInbox))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.Backfill","timestamp":%q,"service":"bonnie-backfill","uri":"imap://h/user.alice.Work;UIDVALIDITY=7","mailboxID":%q,"vnd.bonnie.crawl":{"run":"b1","lastUid":1,"done":true,"messages":[{"uid":1,"flags":[],"sha256":%q,"size":%d}]}}`,
		stamp(1, 10), fWork, fx.filled, filledSize))
	live(add(1, 2, 1))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStop","timestamp":%q,"service":"bonnied"}`, stamp(3, 1)))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.DaemonStart","timestamp":%q,"service":"bonnied","vnd.bonnie.downSince":%q,"vnd.bonnie.cleanStop":true}`,
		stamp(4, 1), day(3, 1).Format(time.RFC3339Nano)))
	own(fmt.Sprintf(`{"event":"vnd.bonnie.Reconcile","timestamp":%q,"service":"bonnie-reconcile","uri":"imap://h/user.alice;UIDVALIDITY=7","mailboxID":%q,"vnd.bonnie.crawl":{"run":"r1","messages":[{"uid":2,"flags":["\\Seen"],"sha256":%q,"size":%d}],"window":{"from":%q,"to":%q,"basis":"down"}}}`,
		stamp(4, 2), fInbox, fx.repaired, repairedSize, day(3, 1).Format(time.RFC3339), day(4, 1).Format(time.RFC3339)))
	live(add(3, 5, 1))
	a, err := archive.Open(ctx, proj, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if _, err := a.CatchUp(ctx, lg); err != nil {
		t.Fatal(err)
	}
	fx.a = a
	return fx
}

// TestExportGaps: an export says in its manifest which gaps in the log's
// coverage its period and folders cross, and how each message was
// recorded (live, or after the fact with its window); one that crosses
// no gap says nothing of gaps.
func TestExportGaps(t *testing.T) {
	fx := setupGaps(t)
	ctx := context.Background()
	type period struct {
		folder, status string
		from, to       time.Time
	}
	for _, tc := range []struct {
		name     string
		q        archive.Query
		gaps     []period
		repairs  int
		recorded map[string]string // digest -> recordedBy
	}{
		{name: "crosses the repaired gap",
			q:        archive.Query{Custodian: "alice", From: day(1, 15), To: day(6, 1), Folders: []string{"user.alice"}},
			gaps:     []period{{"user.alice", coverage.Repaired, day(3, 1), day(4, 1)}},
			repairs:  1,
			recorded: map[string]string{fx.live1: "live", fx.repaired: "reconcile", fx.live3: "live"}},
		{name: "after the gap",
			q:        archive.Query{Custodian: "alice", From: day(4, 15), To: day(6, 1)},
			recorded: map[string]string{fx.live3: "live"}},
		{name: "before the gap, from the start: the folder was created live",
			q:        archive.Query{Custodian: "alice", To: day(2, 15), Folders: []string{"user.alice"}},
			recorded: map[string]string{fx.live1: "live"}},
		{name: "a backfilled folder: unknown before, gap unrepaired",
			q: archive.Query{Custodian: "alice", Folders: []string{"user.alice.Work"}},
			gaps: []period{{"user.alice.Work", coverage.Backfilled, time.Time{}, day(1, 10)},
				{"user.alice.Work", coverage.Gap, day(3, 1), day(4, 1)}},
			recorded: map[string]string{fx.filled: "backfill"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "export.zip")
			res, err := fx.a.Export(ctx, archive.ExportRequest{Query: tc.q, Format: archive.FormatEMLZip, Output: out, Log: fx.lg})
			if err != nil {
				t.Fatal(err)
			}
			// The recipient reads the same from the sealed manifest.
			r, err := exportcheck.Zip(out)
			if err != nil {
				t.Fatal(err)
			}
			if r.ManifestSHA256 != res.ManifestSHA256 {
				t.Fatal("manifest differs")
			}
			m := res.Manifest
			var got []period
			repairs := 0
			for _, x := range m.Gaps {
				for _, p := range x.Periods {
					got = append(got, period{x.Path, p.Status, p.From, p.To})
				}
				repairs += len(x.Repairs)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.gaps) || repairs != tc.repairs {
				t.Errorf("gaps %v with %d repairs, want %v with %d\n%v", got, repairs, tc.gaps, tc.repairs, m.GapSummary())
			}
			if len(m.Messages) != len(tc.recorded) {
				t.Fatalf("%d messages, want %d", len(m.Messages), len(tc.recorded))
			}
			for _, me := range m.Messages {
				if me.RecordedBy != tc.recorded[me.SHA256] {
					t.Errorf("%s recorded by %q, want %q", me.SHA256[:8], me.RecordedBy, tc.recorded[me.SHA256])
				}
				switch me.RecordedBy {
				case "reconcile":
					if me.Window == nil || !me.Window.From.Equal(day(3, 1)) || !me.Window.To.Equal(day(4, 1)) || !me.RecordedAt.Equal(day(4, 2)) {
						t.Errorf("reconciled message: window %+v at %v", me.Window, me.RecordedAt)
					}
				case "backfill":
					if me.Window != nil || !me.RecordedAt.Equal(day(1, 10)) {
						t.Errorf("backfilled message: window %+v at %v", me.Window, me.RecordedAt)
					}
				case "live":
					if me.Window != nil || !me.RecordedAt.IsZero() {
						t.Errorf("live message: window %+v at %v", me.Window, me.RecordedAt)
					}
				}
			}
			if len(tc.gaps) > 0 && len(m.GapSummary()) == 0 {
				t.Error("no summary of the gaps")
			}
		})
	}
}

// TestExportWithoutLog: without the log, the manifest says nothing of
// gaps or recording (it cannot know).
func TestExportWithoutLog(t *testing.T) {
	fx := setupGaps(t)
	res, err := fx.a.Export(context.Background(), archive.ExportRequest{Query: archive.Query{Custodian: "alice"},
		Format: archive.FormatMbox, Output: filepath.Join(t.TempDir(), "x.mbox")})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Manifest.Gaps) != 0 || res.Manifest.Messages[0].RecordedBy != "" {
		t.Errorf("without the log: %+v", res.Manifest)
	}
}
