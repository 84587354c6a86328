package bonnie_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// A custom sink in ten lines: it wants flag changes only and prints who
// changed which flag. Registered on a log that already has events, it is
// first given the whole log ("works backwards"), then live events.
func ExampleSinkFunc() {
	dir, _ := os.MkdirTemp("", "bonnie-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()

	done := make(chan struct{})
	flags := bonnie.SinkFunc("flag-printer", bonnie.Mask(bonnie.FlagsSet, bonnie.FlagsClear),
		func(ctx context.Context, rec bonnie.Record) error {
			for _, c := range rec.Changes {
				fmt.Printf("%s: %s %q -> %q by %s\n", rec.Event.Type, c.Field, c.From, c.To, c.Actor)
			}
			if rec.Event.Type == bonnie.FlagsClear {
				close(done)
			}
			return nil
		})

	eng, _ := bonnie.New(bonnie.Options{Store: store, Sinks: []bonnie.Sink{flags}})
	for _, js := range []string{
		`{"event":"MessageAppend","timestamp":"2026-11-28T20:00:00Z","user":"alice","mailboxID":"f1","uri":"imap://h/user.alice;UIDVALIDITY=7/;UID=1"}`,
		`{"event":"FlagsSet","timestamp":"2026-11-28T20:01:00Z","user":"alice","mailboxID":"f1","uri":"imap://h/user.alice;UIDVALIDITY=7","uidset":"1","flagNames":"\\Flagged"}`,
		`{"event":"FlagsClear","timestamp":"2026-11-28T20:02:00Z","user":"alice","mailboxID":"f1","uri":"imap://h/user.alice;UIDVALIDITY=7","uidset":"1","flagNames":"\\Flagged"}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(js), "example"); err != nil {
			fmt.Println(err)
			return
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() { <-done; cancel() }()
	eng.Run(ctx)
	// Output:
	// FlagsSet: flag:\Flagged "" -> "set" by alice
	// FlagsClear: flag:\Flagged "set" -> "" by alice
}

// counter is a sink that takes the records of a page at once (a sink with
// a database of its own would write them in one transaction).
type counter struct {
	done chan struct{}
	n    int
}

func (c *counter) Name() string             { return "login-counter" }
func (c *counter) Events() bonnie.EventMask { return bonnie.Mask(bonnie.Login) }
func (c *counter) Handle(ctx context.Context, rec bonnie.Record) error {
	return c.HandleBatch(ctx, []bonnie.Record{rec})
}

func (c *counter) HandleBatch(_ context.Context, recs []bonnie.Record) error {
	c.n += len(recs)
	fmt.Printf("%d logins in one batch, %d in all\n", len(recs), c.n)
	if c.n == 3 {
		close(c.done)
	}
	return nil
}

// A BatchSink registered on a log that already holds events is handed
// them a page at a time during its catch-up.
func ExampleBatchSink() {
	dir, _ := os.MkdirTemp("", "bonnie-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	c := &counter{done: make(chan struct{})}
	eng, _ := bonnie.New(bonnie.Options{Store: store, Sinks: []bonnie.Sink{c}})
	for _, user := range []string{"alice", "bob", "carol"} {
		js := `{"event":"Login","timestamp":"2026-11-28T20:00:00Z","service":"imap","user":"` + user + `","vnd.cmu.sessionId":"s-` + user + `","uri":"imap://h"}`
		if _, _, err := eng.Ingest(ctx, []byte(js), "example"); err != nil {
			fmt.Println(err)
			return
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() { <-c.done; cancel() }()
	eng.Run(ctx)
	// Output:
	// 3 logins in one batch, 3 in all
}

// EachMatching reads the records of some types from any Log, using the
// log's own filtering when it has one (store/sqlite does): here, who
// logged in.
func ExampleEachMatching() {
	dir, _ := os.MkdirTemp("", "bonnie-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	eng, _ := bonnie.New(bonnie.Options{Store: store})
	for _, js := range []string{
		`{"event":"Login","timestamp":"2026-11-28T20:00:00Z","service":"imap","user":"alice","vnd.cmu.sessionId":"s1","uri":"imap://h"}`,
		`{"event":"MailboxCreate","timestamp":"2026-11-28T20:00:01Z","user":"alice","mailboxID":"f1","uri":"imap://h/user.alice.Work;UIDVALIDITY=7"}`,
		`{"event":"Login","timestamp":"2026-11-28T20:05:00Z","service":"imap","user":"bob","vnd.cmu.sessionId":"s2","uri":"imap://h"}`,
	} {
		if _, _, err := eng.Ingest(ctx, []byte(js), "example"); err != nil {
			fmt.Println(err)
			return
		}
	}
	last, err := bonnie.EachMatching(ctx, store, 0, bonnie.Mask(bonnie.Login), func(rec bonnie.Record) error {
		fmt.Println(rec.Position, rec.Event.User)
		return nil
	})
	fmt.Println("read up to", last, err)
	// Output:
	// 1 alice
	// 3 bob
	// read up to 3 <nil>
}
