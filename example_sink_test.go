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
