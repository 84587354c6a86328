package intercept_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/intercept"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// An interception of alice, recorded in the log, inside a window of event
// time, to a directory. Only her events inside the window are handed
// over, and each delivery is itself recorded in the log.
func Example() {
	dir, _ := os.MkdirTemp("", "bonnie-intercept")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

	quiet := slog.New(slog.DiscardHandler)
	var eng *bonnie.Engine
	sink, _ := intercept.New(intercept.Options{
		Log: store, Logger: quiet,
		Record: func(ctx context.Context, raw []byte, source string) (bonnie.Position, bool, error) {
			return eng.Record(ctx, raw, source) // deliveries are Bonnie's own events
		},
	})
	eng, _ = bonnie.New(bonnie.Options{Store: store, Sinks: []bonnie.Sink{sink}, Logger: quiet})

	// The interception: alice (no directory here, so her login is her
	// identity), 10:00 to 12:00, to the directory out.
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o700)
	alice := bonnie.Identity{Kind: bonnie.IdentityLogin, ID: "alice", Login: "alice"}
	raw, err := intercept.Start("case-1", intercept.TargetOf(&alice), "W-2026-001",
		time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC), time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC),
		"dir:"+out, "Judge Dredd", "example", time.Now())
	if err != nil {
		fmt.Println(err)
		return
	}
	eng.Record(ctx, raw, "example")
	for _, js := range []string{
		`{"event":"Login","timestamp":"2026-11-28T09:59:00Z","user":"alice","vnd.cmu.sessionId":"a1"}`, // before the window
		`{"event":"Login","timestamp":"2026-11-28T10:30:00Z","user":"alice","vnd.cmu.sessionId":"a2"}`,
		`{"event":"Login","timestamp":"2026-11-28T10:31:00Z","user":"bob","vnd.cmu.sessionId":"b1"}`, // not the target
		`{"event":"Logout","timestamp":"2026-11-28T11:00:00Z","user":"alice","vnd.cmu.sessionId":"a2"}`,
	} {
		eng.Ingest(ctx, []byte(js), "example")
	}

	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	var ds []intercept.Delivery
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ds, _ = intercept.Deliveries(ctx, store, "case-1"); len(ds) > 0 {
			break
		}
	}
	cancel()
	<-done

	files, _ := filepath.Glob(filepath.Join(out, "*.jsonl"))
	for _, f := range files {
		fmt.Println(filepath.Base(f))
	}
	for _, d := range ds {
		for _, it := range d.Items {
			fmt.Printf("delivered under %s: %s at %s, %s\n", d.Warrant, it.Type, it.Time.Format(time.Kitchen), it.MessageID)
		}
	}
	// Output:
	// 00000000000000000003-case-1.jsonl
	// 00000000000000000005-case-1.jsonl
	// delivered under W-2026-001: Login at 10:30AM, case-1/3
	// delivered under W-2026-001: Logout at 11:00AM, case-1/5
}
