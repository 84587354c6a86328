package imap

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// settle drops the findings about messages a daemon ingested news of
// between the reconcile's first read of the log and its comparison with
// the server, and keeps the others.
func TestSettleLeavesLiveNewsAlone(t *testing.T) {
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	eng, err := bonnie.New(bonnie.Options{Store: lg})
	if err != nil {
		t.Fatal(err)
	}
	record := func(raw string) {
		t.Helper()
		if _, _, err := eng.Record(ctx, []byte(raw), "test"); err != nil {
			t.Fatal(err)
		}
	}
	const uri = `"uri":"imap://h/user.alice;UIDVALIDITY=5","mailboxID":"f1"`
	record(`{"event":"vnd.bonnie.Backfill","timestamp":"2026-11-29T00:00:00Z",` + uri + `,"vnd.bonnie.crawl":{"run":"b","lastUid":2,"done":true,"messages":[{"uid":1,"flags":[]},{"uid":2,"flags":[]}]}}`)
	f := Folder{Name: "user.alice", ID: "f1", UIDValidity: 5}
	logged, err := presentUIDs(ctx, lg, "f1", 5)
	if err != nil {
		t.Fatal(err)
	}
	// Meanwhile a daemon ingests: 1 flagged, 3 appended.
	record(`{"event":"vnd.bonnie.Backfill","timestamp":"2026-11-29T00:00:01Z",` + uri + `,"vnd.bonnie.crawl":{"run":"live","messages":[{"uid":1,"flags":["\\Flagged"]},{"uid":3,"flags":[]}]}}`)
	// The server's older answer: 1 seen, 2 gone, 3 new.
	head := &bonnie.Crawl{Flags: []bonnie.MessageState{{UID: 1, Flags: []string{`\Seen`}}}, Expunged: []uint32{2}}
	appended, err := settle(ctx, lg, f, logged, head, []uint32{3})
	if err != nil {
		t.Fatal(err)
	}
	if len(appended) != 0 || len(head.Flags) != 0 || !slices.Equal(head.Expunged, []uint32{2}) {
		t.Errorf("after settle: appended %v, flags %v, expunged %v; want only expunged [2]", appended, head.Flags, head.Expunged)
	}
}
