package imap_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/imapdial"
	"github.com/bonnie-archive/bonnie/internal/testmail"
)

// quickDial logs in as user on addr over a quick-ACK connection.
func quickDial(t *testing.T, cy *cyrustest.Server, addr, user string) *imapclient.Client {
	t.Helper()
	pw, _ := cy.Password(user)
	cl, err := imapdial.Dial(t.Context(), imapdial.Options{Addr: addr, User: user, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// envInt reads a positive integer from the environment, def otherwise.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// pipelinedAppends appends msgs to folder without waiting for each
// answer (the client pipelines them), then waits for all.
func pipelinedAppends(t *testing.T, cl *imapclient.Client, folder string, msgs [][]byte) {
	t.Helper()
	const window = 64
	var pending []*imapclient.AppendCommand
	flush := func() {
		for _, a := range pending {
			if _, err := a.Wait(); err != nil {
				t.Fatalf("APPEND %s: %v", folder, err)
			}
		}
		pending = pending[:0]
	}
	for i, m := range msgs {
		var flags []imap.Flag
		if i%4 == 0 {
			flags = []imap.Flag{imap.FlagSeen}
		}
		a := cl.Append(folder, int64(len(m)), &imap.AppendOptions{Flags: flags})
		if _, err := a.Write(m); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		pending = append(pending, a)
		if len(pending) == window {
			flush()
		}
	}
	flush()
}

// TestBackfillReconcileFigures measures, for BENCHMARKS.md, a backfill
// from a real Cyrus (messages/s and MB/s, bodies stored, events recorded
// in a SQLite log) and a reconcile of the same folders when nothing
// changed, and when every folder changed (one flag each). It runs only
// with BONNIE_BENCH=1; BONNIE_BENCH_FOLDERS, BONNIE_BENCH_MESSAGES (per
// folder) and BONNIE_BENCH_SIZE (bytes) size the corpus.
func TestBackfillReconcileFigures(t *testing.T) {
	if os.Getenv("BONNIE_BENCH") != "1" {
		t.Skip("set BONNIE_BENCH=1 to measure")
	}
	folders := envInt("BONNIE_BENCH_FOLDERS", 100)
	per := envInt("BONNIE_BENCH_MESSAGES", 100)
	size := envInt("BONNIE_BENCH_SIZE", 20_000)
	e := newEnv(t)
	ctx := context.Background()
	cl := quickDial(t, e.cy, e.cy.QuietIMAPAddr(), "alice")
	prose := testmail.Prose()
	setup := time.Now()
	for f := range folders {
		name := fmt.Sprintf("INBOX.f%03d", f)
		if err := cl.Create(name, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		msgs := make([][]byte, per)
		for i := range msgs {
			msgs[i] = testmail.Realistic(fmt.Sprintf("%d-%d", f, i), size, prose).Bytes
		}
		pipelinedAppends(t, cl, name, msgs)
	}
	t.Logf("corpus: %d folders x %d messages of ~%d bytes, appended in %s", folders, per, size, time.Since(setup).Round(time.Millisecond))

	start := time.Now()
	p, err := e.crawler(t, 200).Backfill(ctx, e.lg, e.recorder(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	t.Logf("backfill: %d messages, %.1f MB in %s: %.0f messages/s, %.1f MB/s (%d events)",
		p.Fetched, float64(p.Bytes)/1e6, el.Round(time.Millisecond), float64(p.Fetched)/el.Seconds(), float64(p.Bytes)/1e6/el.Seconds(), p.Events)

	for _, what := range []string{"first reconcile after the backfill", "reconcile, nothing changed"} {
		r, err := e.crawler(t, 200).Reconcile(ctx, e.lg, e.recorder(nil))
		if err != nil {
			t.Fatal(err)
		}
		if r.Changed() {
			t.Fatalf("%s: found changes: %+v", what, r)
		}
		t.Logf("%s: %d folders (%d unchanged) in %s", what, r.Folders, r.Unchanged, r.Duration.Round(time.Millisecond))
	}
	// One flag in every folder: each is compared in full.
	for f := range folders {
		name := fmt.Sprintf("INBOX.f%03d", f)
		if _, err := cl.Select(name, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		if err := cl.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}, Silent: true}, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	r, err := e.crawler(t, 200).Reconcile(ctx, e.lg, e.recorder(nil))
	if err != nil {
		t.Fatal(err)
	}
	if r.Flags != folders {
		t.Errorf("found %d flag changes, want %d", r.Flags, folders)
	}
	t.Logf("reconcile, one flag changed in every folder: %d folders compared in full (%d messages) in %s",
		r.Folders, folders*per, r.Duration.Round(time.Millisecond))
}
