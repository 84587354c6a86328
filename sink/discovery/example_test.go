package discovery_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// The discovery index over a small log: a message's timeline, and who
// could read its folder when it was read.
func Example() {
	dir, _ := os.MkdirTemp("", "discovery-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lg.Close()
	eng, _ := bonnie.New(bonnie.Options{Store: lg})
	for _, js := range []string{
		`{"event":"Login","timestamp":"2026-11-28T09:00:00Z","user":"bob","vnd.cmu.sessionId":"s1","clientIP":"192.0.2.7","clientPort":50123}`,
		`{"event":"MessageNew","timestamp":"2026-11-28T09:01:00Z","user":"alice","uri":"imap://h/user.alice;UIDVALIDITY=7/;UID=1","mailboxID":"f1","uidset":"1","vnd.cmu.midset":"<m1@example.org>","vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\tbob\tlrs\t"}`,
		`{"event":"MessageRead","timestamp":"2026-11-28T09:02:00Z","user":"bob","vnd.cmu.sessionId":"s1","uri":"imap://h/user.alice;UIDVALIDITY=7","mailboxID":"f1","uidset":"1","vnd.cmu.midset":"<m1@example.org>"}`,
		`{"event":"vnd.cmu.MessageMove","timestamp":"2026-11-28T09:03:00Z","user":"alice","uri":"imap://h/user.alice.Archive;UIDVALIDITY=8","mailboxID":"f2","oldMailboxID":"imap://h/user.alice;UIDVALIDITY=7","uidset":"1","vnd.cmu.oldUidset":"1","vnd.cmu.midset":"<m1@example.org>"}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(js), "example"); err != nil {
			fmt.Println(err)
			return
		}
	}

	x, err := discovery.Open(ctx, discovery.Path(dir), nil) // nil: no body store
	if err != nil {
		fmt.Println(err)
		return
	}
	defer x.Close()
	if _, err := x.CatchUp(ctx, lg); err != nil { // or run x as a sink of the engine
		fmt.Println(err)
		return
	}
	tl, _ := x.Message(ctx, "m1@example.org")
	for _, e := range tl.Entries {
		fmt.Printf("#%d %s %-9s %-18s by %s from %q\n", e.Position, e.Time.Format("15:04"), e.Action, e.Path, e.Login, e.Client)
	}
	fas, _ := x.WhoCouldRead(ctx, "user.alice", time.Date(2026, 11, 28, 9, 2, 0, 0, time.UTC))
	for _, r := range fas[0].Readers {
		fmt.Println("could read user.alice:", r.ID, r.Rights)
	}
	// Output:
	// #2 09:01 delivered user.alice         by alice from ""
	// #3 09:02 read      user.alice         by bob from "192.0.2.7:50123"
	// #4 09:03 moved     user.alice.Archive by alice from ""
	// could read user.alice: alice lrswipkxtecdan
	// could read user.alice: bob lrs
}
