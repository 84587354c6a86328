package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// TestHistoryAndExportGaps: the daemon was down from November 2nd to 3rd
// and a reconcile found <rep@x> appended then. history message marks its
// entry and names the repaired gap; a message of later days names none;
// an export over the gap says so on stderr.
func TestHistoryAndExportGaps(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	lg, err := sqlite.Open(ctx, filepath.Join(data, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{
		`{"event":"vnd.bonnie.DaemonStart","timestamp":"2026-11-01T09:00:00Z","service":"bonnied"}`,
		`{"event":"MailboxCreate","timestamp":"2026-11-01T10:00:00Z","mailboxID":"f1","uri":"imap://h/user.alice;UIDVALIDITY=5","user":"cyrus"}`,
		`{"event":"vnd.bonnie.DaemonStop","timestamp":"2026-11-02T10:00:00Z","service":"bonnied"}`,
		`{"event":"vnd.bonnie.DaemonStart","timestamp":"2026-11-03T10:00:00Z","service":"bonnied","vnd.bonnie.downSince":"2026-11-02T10:00:00Z","vnd.bonnie.cleanStop":true}`,
		`{"event":"vnd.bonnie.Reconcile","timestamp":"2026-11-03T10:01:00Z","uri":"imap://h/user.alice;UIDVALIDITY=5","mailboxID":"f1","modseq":12,"vnd.bonnie.crawl":{"run":"r","messages":[{"uid":4,"messageId":"<rep@x>","flags":[]}],"window":{"from":"2026-11-02T10:00:00Z","to":"2026-11-03T10:00:00Z","basis":"down"}}}`,
		`{"event":"MessageAppend","timestamp":"2026-11-04T10:00:00Z","mailboxID":"f1","uri":"imap://h/user.alice;UIDVALIDITY=5/;UID=5","user":"alice","vnd.cmu.midset":["<live@x>"]}`,
	} {
		ingest := eng.Record
		if !strings.Contains(raw, "vnd.bonnie.") {
			ingest = eng.Ingest
		}
		if _, _, err := ingest(ctx, []byte(raw), "test"); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
	}
	lg.Close()

	code, out, errs := bonnieCmd(t, nil, "--data", data, "history", "message", "<rep@x>", "--json")
	if code != 0 {
		t.Fatalf("history message: %d %s", code, errs)
	}
	var tl discovery.MessageTimeline
	if err := json.Unmarshal([]byte(out), &tl); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(tl.Entries) != 1 || tl.Entries[0].RecordedBy != "reconcile" || tl.Entries[0].Window == nil {
		t.Errorf("entries %+v", tl.Entries)
	}
	if len(tl.Gaps) != 1 || tl.Gaps[0].Path != "user.alice" || len(tl.Gaps[0].Periods) != 1 || tl.Gaps[0].Periods[0].Status != "repaired" {
		t.Errorf("gaps %+v", tl.Gaps)
	}
	code, out, errs = bonnieCmd(t, nil, "--data", data, "history", "message", "<rep@x>")
	for _, want := range []string{"recorded after the fact by reconcile, happened 2026-11-02T10:00:00Z .. 2026-11-03T10:00:00Z",
		"note: this history crosses periods",
		"gap user.alice: repaired 2026-11-02T10:00:00Z .. 2026-11-03T10:00:00Z at 2026-11-03T10:01:00Z"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("history message lacks %q: %d\n%s%s", want, code, out, errs)
		}
	}
	code, out, errs = bonnieCmd(t, nil, "--data", data, "history", "message", "<live@x>")
	if code != 0 || strings.Contains(out, "crosses") || strings.Contains(out, "after the fact") {
		t.Errorf("a message after the gap: %d\n%s%s", code, out, errs)
	}
	code, out, errs = bonnieCmd(t, nil, "--data", data, "history", "folder", "user.alice", "--messages")
	if code != 0 || !strings.Contains(out, "gap user.alice: repaired") || !strings.Contains(out, "by reconcile") {
		t.Errorf("history folder: %d\n%s%s", code, out, errs)
	}

	// No bodies were archived (an empty body store): the export holds no
	// message, but says which gap its period crosses.
	blobs, _ := archive.Paths(data)
	if _, err := blob.Open(blobs); err != nil {
		t.Fatal(err)
	}
	code, _, errs = bonnieCmd(t, nil, "--data", data, "export", "--custodian", "alice", "--folder", "user.alice",
		"--from", "2026-11-01T00:00:00Z", "--to", "2026-11-05T00:00:00Z", "-o", filepath.Join(t.TempDir(), "x.zip"))
	if code != 0 || !strings.Contains(errs, "crosses periods in which the log is not known complete") ||
		!strings.Contains(errs, "user.alice: repaired 2026-11-02T10:00:00Z") {
		t.Errorf("export over the gap: %d\n%s", code, errs)
	}
	code, _, errs = bonnieCmd(t, nil, "--data", data, "export", "--custodian", "alice", "--folder", "user.alice",
		"--from", "2026-11-04T00:00:00Z", "-o", filepath.Join(t.TempDir(), "y.zip"))
	if code != 0 || strings.Contains(errs, "crosses") {
		t.Errorf("export after the gap: %d\n%s", code, errs)
	}
}
