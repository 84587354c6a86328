package backup_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/backup"
	"github.com/bonnie-archive/bonnie/store/blob"
)

func TestSinkReportsBodiesARestoreWouldLack(t *testing.T) {
	store, err := blob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stored, err := store.Put([]byte("Subject: kept\r\n\r\nbody\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s := backup.NewSink(store, slog.New(slog.NewTextHandler(&logs, nil)))
	if s.Name() != backup.Name || !s.Events().Has(bonnie.MessageAppend) || s.Events().Has(bonnie.FlagsSet) {
		t.Fatalf("sink %s wants %v", s.Name(), s.Events())
	}
	ev := &bonnie.Event{Type: bonnie.MessageAppend, Bodies: []bonnie.BodyRef{
		{UID: 1, Digest: stored.Digest, Size: stored.Size},
		{UID: 2, Error: "expunged before it could be fetched"},
		{UID: 3, Digest: strings.Repeat("ab", 32), Size: 10},
	}}
	ev.Mailbox.Name = "user.alice"
	if err := s.Handle(context.Background(), bonnie.Record{Position: 7, Event: ev}); err != nil {
		t.Fatal(err)
	}
	if s.Checked() != 3 || s.Missing() != 2 {
		t.Errorf("checked %d, missing %d; want 3 and 2", s.Checked(), s.Missing())
	}
	for _, want := range []string{"uid=2", "could not be fetched", "uid=3", "not in the body store", "position=7"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
