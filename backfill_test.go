package bonnie_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
)

// crawlEvent writes a Backfill or Reconcile event as source/imap does.
func crawlEvent(typ, ts, folder, path string, uidValidity uint32, modseq uint64, crawl string) []byte {
	return fmt.Appendf(nil, `{"event":%q,"timestamp":%q,"service":"test","uri":"imap://h/%s;UIDVALIDITY=%d","mailboxID":%q,"modseq":%d,"vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\t","vnd.bonnie.crawl":%s}`,
		typ, ts, path, uidValidity, folder, modseq, crawl)
}

// TestCrawlEventsApply: Backfill and Reconcile events set the folder and
// its messages as if seen live; the backfill cursor follows the chunks; a
// new UIDVALIDITY expunges the old messages and resets the cursor; a
// verification marks folders; a deleted folder is deleted. They are
// refused from a source.
func TestCrawlEventsApply(t *testing.T) {
	ctx := context.Background()
	lg := openStore(t)
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	record := func(raw []byte) {
		t.Helper()
		if _, _, err := eng.Record(ctx, raw, "test"); err != nil {
			t.Fatalf("record %s: %v", raw, err)
		}
	}
	const f = "uniq0000000000000000000a"
	record(crawlEvent("vnd.bonnie.Backfill", "2026-11-29T00:00:00.000Z", f, "user.alice.Work", 7, 0,
		`{"run":"r1","lastUid":2,"messages":[{"uid":1,"messageId":"<a@x>","flags":["\\Seen","$Work"],"internalDate":"2020-01-02T08:00:00Z","size":10,"sha256":"`+strings.Repeat("a", 64)+`"},{"uid":2,"flags":[]}]}`))
	st := state(t, lg, bonnie.KindFolder, f)
	if st["state"] != "present" || st["path"] != "user.alice.Work" || st["owner"] != "alice" || st["uidValidity"] != "7" || st["backfillUid"] != "2" || st["acl:alice"] == "" || st["backfilled"] != "" {
		t.Errorf("folder after chunk 1: %v", st)
	}
	m := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(f, 7, 1))
	if m["state"] != "present" || m["messageId"] != "<a@x>" || m[`flag:\Seen`] != "set" || m["flag:$Work"] != "set" || m["digest"] != strings.Repeat("a", 64) || m["internalDate"] != "2020-01-02T08:00:00Z" || m["folder"] != f || m["uid"] != "1" {
		t.Errorf("message 1: %v", m)
	}
	recs, _ := lg.Read(ctx, 0, 10)
	if b := recs[0].Event.Bodies; len(b) != 2 || b[0].UID != 1 || b[0].Digest != strings.Repeat("a", 64) {
		t.Errorf("the event's Bodies: %+v", b)
	}
	record(crawlEvent("vnd.bonnie.Backfill", "2026-11-29T00:00:01.000Z", f, "user.alice.Work", 7, 40, `{"run":"r1","lastUid":3,"done":true,"messages":[{"uid":3,"flags":["\\Flagged"]}]}`))
	st = state(t, lg, bonnie.KindFolder, f)
	if st["backfillUid"] != "3" || st["backfilled"] != "2026-11-29T00:00:01Z" || st["highestModseq"] != "40" {
		t.Errorf("folder after the last chunk: %v", st)
	}
	// Reconcile: flags changed on 1, 2 expunged, 4 appended.
	record(crawlEvent("vnd.bonnie.Reconcile", "2026-11-29T01:00:00.000Z", f, "user.alice.Work", 7, 50,
		`{"run":"r2","flags":[{"uid":1,"flags":[]}],"expunged":[2],"messages":[{"uid":4,"flags":["\\Seen"]}],"window":{"from":"2026-11-29T00:10:00Z","to":"2026-11-29T00:50:00Z","basis":"down"}}`))
	if m := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(f, 7, 1)); m[`flag:\Seen`] != "" || m["flag:$Work"] != "" {
		t.Errorf("message 1 after reconcile: %v", m)
	}
	if m := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(f, 7, 2)); m["state"] != "expunged" {
		t.Errorf("message 2 after reconcile: %v", m)
	}
	if m := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(f, 7, 4)); m["state"] != "present" {
		t.Errorf("message 4 after reconcile: %v", m)
	}
	if st := state(t, lg, bonnie.KindFolder, f); st["verified"] != "2026-11-29T01:00:00Z" || st["highestModseq"] != "50" {
		t.Errorf("folder after reconcile: %v", st)
	}
	// Recreated: a new UIDVALIDITY; the old messages are gone, the cursor
	// reset.
	record(crawlEvent("vnd.bonnie.Reconcile", "2026-11-29T02:00:00.000Z", f, "user.alice.Work", 9, 60,
		`{"run":"r3","folder":"recreated","oldUidValidity":7,"expunged":[1,3,4],"messages":[{"uid":1,"flags":[]}]}`))
	for _, uid := range []uint32{1, 3, 4} {
		if m := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(f, 7, uid)); m["state"] != "expunged" {
			t.Errorf("old message %d: %v", uid, m)
		}
	}
	if m := state(t, lg, bonnie.KindMessage, bonnie.MessageKey(f, 9, 1)); m["state"] != "present" {
		t.Errorf("new message 1: %v", m)
	}
	if st := state(t, lg, bonnie.KindFolder, f); st["uidValidity"] != "9" || st["backfillUid"] != "" {
		t.Errorf("recreated folder: %v", st)
	}
	// Verification without findings, then deletion.
	record([]byte(`{"event":"vnd.bonnie.Reconcile","timestamp":"2026-11-29T03:00:00Z","service":"test","vnd.bonnie.crawl":{"run":"r4","verified":[{"mailboxID":"` + f + `","modseq":61}]}}`))
	if st := state(t, lg, bonnie.KindFolder, f); st["verified"] != "2026-11-29T03:00:00Z" || st["highestModseq"] != "61" {
		t.Errorf("verified folder: %v", st)
	}
	record(crawlEvent("vnd.bonnie.Reconcile", "2026-11-29T04:00:00.000Z", f, "user.alice.Work", 9, 0, `{"run":"r5","folder":"deleted"}`))
	if st := state(t, lg, bonnie.KindFolder, f); st["state"] != "deleted" {
		t.Errorf("deleted folder: %v", st)
	}
	// From a source: refused (dead letter).
	if _, _, err := eng.Ingest(ctx, crawlEvent("vnd.bonnie.Backfill", "2026-11-29T05:00:00.000Z", f, "user.alice.Work", 9, 0, `{"run":"x"}`), "src"); err == nil {
		t.Error("a Backfill event from a source was accepted")
	}
}
