package sqlite_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

func Example() {
	dir, err := os.MkdirTemp("", "bonnie-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	lg, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer lg.Close()

	// A Login notification as Cyrus sends it on its notify socket.
	raw := []byte("log\x00EVENT\x00\x00\x00\x00\x000\x00" +
		`{"event":"Login","timestamp":"2026-11-28T20:23:30.100Z","service":"imap","user":"alice"}` + "\x00")
	at := time.Date(2026, 11, 28, 20, 23, 30, 100e6, time.UTC)
	ev := &bonnie.Event{Type: bonnie.Login, Class: bonnie.ClassEvent, Framing: bonnie.FramingDatagram,
		Method: "log", Time: at, User: "alice", Service: "imap", Raw: raw}
	changes := bonnie.NewChanges("alice", at)
	s := bonnie.NewSession(changes, "s1", nil)
	s.SetUser("alice")
	s.SetStart(at)

	pos, dup, err := lg.Append(ctx, ev, changes.List())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("appended at", pos, "dup", dup)

	// The same notification delivered again is stored once.
	pos, dup, _ = lg.Append(ctx, ev, changes.List())
	fmt.Println("again at", pos, "dup", dup)

	recs, err := lg.Read(ctx, 0, 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		fmt.Println(r.Position, r.Event.Type, r.Event.User, len(r.Changes), "changes, same key:", r.Key == ev.Key())
	}
	state, _ := lg.StateAt(ctx, bonnie.KindSession, "s1", time.Time{})
	fmt.Println("session user:", state["user"])

	fmt.Println("verify:", lg.Verify(ctx))
	// Keep the head hash somewhere else: it is what proves, later, that
	// nothing was removed or rewritten up to here.
	head, _ := lg.HeadHash(ctx)
	fmt.Println("anchor at", head.Position, "verify anchored:", lg.VerifyAnchored(ctx, head))
	// Output:
	// appended at 1 dup false
	// again at 1 dup true
	// 1 Login alice 2 changes, same key: true
	// session user: alice
	// verify: <nil>
	// anchor at 1 verify anchored: <nil>
}
