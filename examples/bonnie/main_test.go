package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// bonnieCmd runs the command line in-process and returns its exit status,
// stdout and stderr.
func bonnieCmd(t *testing.T, stdin []byte, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, bytes.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func captureFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../testdata/cyrus-3.6.1/*.bin")
	if err != nil || len(files) == 0 {
		t.Fatalf("captures: %v", err)
	}
	sort.Strings(files)
	return files
}

func TestDecodeEveryFraming(t *testing.T) {
	dgram, err := os.ReadFile("../../testdata/cyrus-3.6.1/025-FlagsClear.bin")
	if err != nil {
		t.Fatal(err)
	}
	dlist, err := os.ReadFile("../../testdata/cyrus-3.6.1-dlist/007-FlagsSet.bin")
	if err != nil {
		t.Fatal(err)
	}
	bare := []byte(`{"event":"Login","timestamp":"2026-11-29T01:53:28.649+05:30","user":"alice","uri":"imap://h"}` + "\n")
	for _, tc := range []struct {
		name, framing, typ string
		in                 []byte
	}{
		{"datagram", "datagram", "FlagsClear", dgram},
		{"dlist", "dlist", "FlagsSet", dlist},
		{"bare json", "json", "Login", bare},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := bonnieCmd(t, tc.in, "decode")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var ev bonnie.Event
			if err := json.Unmarshal([]byte(out), &ev); err != nil {
				t.Fatalf("output is not an event: %v\n%s", err, out)
			}
			if string(ev.Framing) != tc.framing || ev.Type.String() != tc.typ || !bytes.Equal(ev.Raw, tc.in) {
				t.Fatalf("decoded %s %s, raw kept %v", ev.Framing, ev.Type, bytes.Equal(ev.Raw, tc.in))
			}
		})
	}
}

func TestDecodeBadInputExitsOne(t *testing.T) {
	for name, in := range map[string]string{
		"empty":     "",
		"garbage":   "hello",
		"truncated": "log\x00EVENT\x00\x00\x00\x000\x00{\"event\":\"Login\"",
		"unknown":   `{"event":"NoSuch"}`,
	} {
		code, out, errs := bonnieCmd(t, []byte(in), "decode")
		if code != 1 || out != "" || !strings.HasPrefix(errs, "bonnie: decode:") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, code, out, errs)
		}
	}
}

// newLog fills a data directory with the real capture sequence.
func newLog(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range captureFiles(t) {
		raw, _ := os.ReadFile(f)
		if _, _, err := eng.Ingest(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestEvents(t *testing.T) {
	dir := newLog(t)
	n := len(captureFiles(t))

	code, out, errs := bonnieCmd(t, nil, "--data", dir, "events")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != n {
		t.Fatalf("exit %d, %d lines (want %d): %s", code, len(lines), n, errs)
	}
	// Capture 025 is "STORE 2 -FLAGS (\Flagged)" by alice in user.alice.
	if l := lines[24]; !strings.Contains(l, "FlagsClear") || !strings.Contains(l, "user=alice") ||
		!strings.Contains(l, "mailbox=user.alice ") || !strings.Contains(l, `uids=2`) || !strings.Contains(l, `flags=\Flagged`) {
		t.Errorf("line 25 = %q", l)
	}

	code, out, _ = bonnieCmd(t, nil, "--data", dir, "events", "--since", "90", "--json")
	lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != n-90 {
		t.Fatalf("--since 90 --json: exit %d, %d lines", code, len(lines))
	}
	var rec bonnie.Record
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil || rec.Position != 91 || len(rec.Hash) != 32 {
		t.Fatalf("first JSON line: %v %+v", err, rec.Position)
	}
}

func TestVerify(t *testing.T) {
	dir := newLog(t)
	code, out, _ := bonnieCmd(t, nil, "--data", dir, "verify")
	if code != 0 || !strings.HasPrefix(out, "ok: 98 records") {
		t.Fatalf("intact log: exit %d, %q", code, out)
	}
	// Tamper with one event in the file, as an attacker with the database would.
	db, err := sql.Open("sqlite3", filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE records SET event = replace(event, '"user":"alice"', '"user":"mallory"') WHERE position = 25`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "verify")
	if code != 1 || !strings.Contains(out, "BROKEN at position 25") {
		t.Fatalf("tampered log: exit %d, %q", code, out)
	}
}

func TestMissingDataDirIsAnError(t *testing.T) {
	code, _, errs := bonnieCmd(t, nil, "--data", filepath.Join(t.TempDir(), "nope"), "events")
	if code != 1 || !strings.Contains(errs, "no log at") {
		t.Fatalf("exit %d, %q", code, errs)
	}
}

func TestDeadLettersListAndRetry(t *testing.T) {
	dir := newLog(t)
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile("../../testdata/cyrus-3.6.1-dlist/004-Login.bin")
	// A letter that a fixed parser would accept (here: a valid request that
	// failed to append earlier), one that still fails, and a forged one.
	for _, d := range []bonnie.DeadLetter{
		{Source: "cyrus", Reason: "given up: disk full", Raw: good},
		{Source: "cyrus", Reason: "decode: malformed", Raw: []byte("junk")},
		{Source: "cyrus", Reason: bonnie.ReasonRejected + "uid 1000", Raw: good},
	} {
		if _, err := lg.PutDeadLetter(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	lg.Close()

	code, out, _ := bonnieCmd(t, nil, "--data", dir, "deadletters")
	if code != 0 || strings.Count(out, "pending") != 3 {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "deadletters", "retry")
	if code != 1 || !strings.Contains(out, "dead letter 1: ingested at position 99") || !strings.Contains(out, "1 ingested, 2 still failing") {
		t.Fatalf("retry: exit %d\n%s", code, out)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "deadletters", "--json")
	if code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("pending after retry: exit %d\n%s", code, out)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "deadletters", "--all")
	if code != 0 || !strings.Contains(out, "ingested@99") {
		t.Fatalf("--all: exit %d\n%s", code, out)
	}
}

func TestNotifyExternal(t *testing.T) {
	dir := t.TempDir()
	login := `{"event":"Login","timestamp":"2026-11-28T20:23:28.649Z","service":"imap","user":"alice","uri":"imap://h","vnd.cmu.sessionId":"s1"}`
	// notify_external writes the message and one newline.
	code, _, errs := bonnieCmd(t, []byte(login+"\n"), "notify-external", "--data", dir, "-c", "EVENT", "-p", "", "-u", "", "-m", "", "-f")
	if code != 0 {
		t.Fatalf("EVENT: exit %d: %s", code, errs)
	}
	mail := "From: Bob <bob@example.org>\nSubject: hi\nTo: alice@example.org\n"
	code, _, errs = bonnieCmd(t, []byte(mail+"\n"), "notify-external", "--data="+dir, "-c", "MAIL", "-p", "", "-u", "alice", "-m", "INBOX", "-f")
	if code != 0 {
		t.Fatalf("MAIL: exit %d: %s", code, errs)
	}
	code, out, _ := bonnieCmd(t, nil, "--data", dir, "events", "--json")
	var recs []bonnie.Record
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r bonnie.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if code != 0 || len(recs) != 2 || recs[0].Event.User != "alice" || recs[0].Event.Type != bonnie.Login ||
		recs[1].Event.Type != bonnie.MailNotification || recs[1].Event.NotifyUser != "alice" || recs[1].Event.Message != mail {
		t.Fatalf("log after two external notifications: %+v", recs)
	}

	// While another process ingests into the directory, the notification
	// is kept as a dead letter, not lost.
	unlock, err := datadir.LockIngest(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	code, _, errs = bonnieCmd(t, []byte(login+"\n"), "notify-external", "--data", dir, "--wait", "50ms", "-c", "EVENT", "-p", "", "-u", "", "-m", "", "-f")
	if code != 1 || !strings.Contains(errs, "dead letter") {
		t.Fatalf("busy: exit %d: %s", code, errs)
	}
	code, out, _ = bonnieCmd(t, nil, "--data", dir, "deadletters", "--json")
	var d bonnie.DeadLetter
	if code != 0 || json.Unmarshal([]byte(out), &d) != nil || string(d.Raw) != login || d.Source != "cyrus-external" {
		t.Fatalf("dead letter: %s", out)
	}
}
