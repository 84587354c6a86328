package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/intercept"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// runCLI runs the command and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// The interception commands on a data directory without a daemon: start
// records the interception (the target by the identity the log holds),
// refuses a password in the destination and an empty window; the sink
// (as bonnied --sinks intercept runs it) delivers and records; list,
// deliveries and stop read and write the log.
func TestInterceptCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	out := filepath.Join(dir, "handover")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	ingest := func(eng *bonnie.Engine, user string, at time.Time) bonnie.Position {
		t.Helper()
		pos, _, err := eng.Ingest(ctx, event(t, "Login", at, map[string]any{"user": user, "vnd.cmu.sessionId": at.String(),
			"clientIP": "198.51.100.4", "clientPort": 4000}), "test")
		if err != nil {
			t.Fatal(err)
		}
		return pos
	}
	lg, err := sqlite.Open(ctx, filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger()})
	ingest(eng, "janeg", now.Add(-2*time.Hour))
	lg.Close()

	from, to := now.Add(-time.Hour).Format(time.RFC3339), now.Add(24*time.Hour).Format(time.RFC3339)
	start := []string{"--data", dir, "intercept", "start", "--target", "janeg", "--warrant", "W-2026-7",
		"--from", from, "--to", to, "--authorised-by", "Judge Dredd"}
	if code, _, stderr := runCLI(t, append(start, "--dest", "amqp://guest:guest@127.0.0.1:5672/")...); code != 1 || !strings.Contains(stderr, "password") {
		t.Errorf("a password in --dest: exit %d, %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "--data", dir, "intercept", "start", "--target", "janeg", "--warrant", "W", "--from", to, "--to", from,
		"--authorised-by", "J", "--dest", "dir:"+out); code != 1 || !strings.Contains(stderr, "empty") {
		t.Errorf("an empty window: exit %d, %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, append(start, "--dest", "dir:"+out, "--id", "../x")...); code != 1 || !strings.Contains(stderr, "interception id") {
		t.Errorf("a bad id: exit %d, %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, append(start, "--dest", "dir:relative")...); code != 1 || !strings.Contains(stderr, "absolute") {
		t.Errorf("a relative directory: exit %d, %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, append(start, "--dest", "dir:"+out, "--id", "i-1")...)
	if code != 0 || !strings.Contains(stdout, "interception i-1 started at position 2") || stderr != "" {
		t.Fatalf("start: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "--data", dir, "intercept", "start", "--target", "nobody", "--warrant", "W", "--from", from, "--to", to,
		"--authorised-by", "J", "--dest", "dir:"+out, "--id", "i-2")
	if code != 0 || !strings.Contains(stderr, "not found in the log") {
		t.Errorf("an unknown target: exit %d, %s", code, stderr)
	}

	// The sink, as bonnied runs it, delivers Jane's new event.
	lg, err = sqlite.Open(ctx, filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	sink, err := intercept.New(intercept.Options{Log: lg, Logger: quietLogger(),
		Record: func(ctx context.Context, raw []byte, src string) (bonnie.Position, bool, error) {
			return eng.Record(ctx, raw, src)
		}})
	if err != nil {
		t.Fatal(err)
	}
	eng, _ = bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger(), Sinks: []bonnie.Sink{sink}, SinkBackoff: 10 * time.Millisecond})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- eng.Run(rctx) }()
	pos := ingest(eng, "janeg", now)
	ingest(eng, "bob", now)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ds, _ := intercept.Deliveries(ctx, lg, "i-1")
		if len(ds) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no delivery recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done

	code, stdout, _ = runCLI(t, "--data", dir, "intercept", "deliveries", "i-1", "--json")
	var ds []intercept.Delivery
	if err := json.Unmarshal([]byte(stdout), &ds); code != 0 || err != nil || len(ds) != 1 || len(ds[0].Items) != 1 ||
		ds[0].Items[0].Position != pos || ds[0].Warrant != "W-2026-7" {
		t.Fatalf("deliveries --json: exit %d %v\n%s", code, err, stdout)
	}
	if files, _ := filepath.Glob(filepath.Join(out, "*-i-1.jsonl")); len(files) != 1 {
		t.Errorf("handed over: %v", files)
	}
	code, stdout, _ = runCLI(t, "--data", dir, "intercept", "deliveries", "i-1")
	if code != 0 || !strings.Contains(stdout, "1 records and 0 bodies in 1 deliveries") || !strings.Contains(stdout, "i-1/") {
		t.Errorf("deliveries: exit %d\n%s", code, stdout)
	}
	if code, _, stderr := runCLI(t, "--data", dir, "intercept", "deliveries", "nosuch"); code != 1 || !strings.Contains(stderr, "no interception nosuch") {
		t.Errorf("deliveries of an unknown id: exit %d, %s", code, stderr)
	}

	if code, stdout, stderr := runCLI(t, "--data", dir, "intercept", "stop", "i-1", "--reason", "warrant expired early"); code != 0 ||
		!strings.Contains(stdout, "interception i-1 stopped at position") {
		t.Fatalf("stop: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, "--data", dir, "intercept", "stop", "i-1"); code != 1 || !strings.Contains(stderr, "stopped already") {
		t.Errorf("stop twice: exit %d, %s", code, stderr)
	}
	code, stdout, _ = runCLI(t, "--data", dir, "intercept", "list", "--json")
	var list []struct {
		intercept.Interception
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(stdout), &list); code != 0 || err != nil || len(list) != 2 {
		t.Fatalf("list --json: exit %d %v\n%s", code, err, stdout)
	}
	if l := list[0]; l.ID != "i-1" || l.State != "stopped" || l.Target.ID != "janeg" || l.Warrant != "W-2026-7" || l.AuthorisedBy != "Judge Dredd" ||
		l.Deliveries != 1 || l.StopReason != "warrant expired early" || !strings.Contains(l.RequestedBy, "uid") {
		t.Errorf("list: %+v", l)
	}
	if list[1].ID != "i-2" || list[1].State != "active" || list[1].Target.Kind != bonnie.IdentityLogin {
		t.Errorf("list: %+v", list[1])
	}
	code, stdout, _ = runCLI(t, "--data", dir, "intercept", "list")
	if code != 0 || !strings.Contains(stdout, "i-1") || !strings.Contains(stdout, "stopped (at") || !strings.Contains(stdout, "W-2026-7") {
		t.Errorf("list: exit %d\n%s", code, stdout)
	}
}
