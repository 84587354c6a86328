package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// The crawl commands check their flags before touching anything. (They
// run against a real Cyrus and bonnied in examples/bonnied's
// TestReconcileAfterDatagramDowntime and TestBackfillKilledAndResumed.)
func TestCrawlCommandsNeedTheirFlags(t *testing.T) {
	data := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data", data, "backfill"}, "--imap and --imap-password-file are required"},
		{[]string{"--data", data, "reconcile", "--imap", "127.0.0.1:143"}, "--imap and --imap-password-file are required"},
		{[]string{"--data", data, "backfill", "--imap", "127.0.0.1:143", "--imap-password-file", filepath.Join(data, "nope")}, "--imap-password-file"},
		{[]string{"--data", data, "coverage"}, "--folder is required"},
	} {
		code, _, stderr := bonnieCmd(t, nil, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("bonnie %q: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}

// coverage reads a folder's periods from the log: a folder backfilled,
// a daemon that stopped and started, a reconcile that repaired the gap.
func TestCoverageCommand(t *testing.T) {
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
		`{"event":"vnd.bonnie.Backfill","timestamp":"2026-11-01T10:00:00Z","uri":"imap://h/user.alice;UIDVALIDITY=5","mailboxID":"f1","modseq":9,"vnd.bonnie.crawl":{"run":"b","lastUid":3,"done":true,"messages":[{"uid":3,"flags":[]}]}}`,
		`{"event":"vnd.bonnie.DaemonStop","timestamp":"2026-11-02T10:00:00Z","service":"bonnied"}`,
		`{"event":"vnd.bonnie.DaemonStart","timestamp":"2026-11-03T10:00:00Z","service":"bonnied","vnd.bonnie.downSince":"2026-11-02T10:00:00Z","vnd.bonnie.cleanStop":true}`,
		`{"event":"vnd.bonnie.Reconcile","timestamp":"2026-11-03T10:01:00Z","uri":"imap://h/user.alice;UIDVALIDITY=5","mailboxID":"f1","modseq":12,"vnd.bonnie.crawl":{"run":"r","messages":[{"uid":4,"flags":[]}],"window":{"from":"2026-11-02T10:00:00Z","to":"2026-11-03T10:00:00Z","basis":"down"}}}`,
	} {
		if _, _, err := eng.Record(ctx, []byte(raw), "test"); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
	}
	lg.Close()
	code, out, stderr := bonnieCmd(t, nil, "--data", data, "coverage", "--folder", "user.alice")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"folder user.alice (f1, present), known since 2026-11-01T10:00:00Z",
		"2026-11-01T10:00:00Z             backfilled",
		"2026-11-01T10:00:00Z             2026-11-02T10:00:00Z             complete",
		"2026-11-02T10:00:00Z             2026-11-03T10:00:00Z             repaired at 2026-11-03T10:01:00Z",
		"repair at 2026-11-03T10:01:00Z (position 4): 1 appended, 0 flag changes, 0 expunged in 2026-11-02T10:00:00Z .. 2026-11-03T10:00:00Z (down)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("coverage output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = bonnieCmd(t, nil, "--data", data, "coverage", "--folder", "f1", "--json")
	if code != 0 || !strings.Contains(out, `"status": "repaired"`) {
		t.Errorf("coverage --json: exit %d\n%s", code, out)
	}
	code, _, stderr = bonnieCmd(t, nil, "--data", data, "coverage", "--folder", "user.bob")
	if code != 1 || !strings.Contains(stderr, "no such folder") {
		t.Errorf("unknown folder: exit %d, %s", code, stderr)
	}
}
