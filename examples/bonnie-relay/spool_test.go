package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie"
)

// TestSpoolCountsBodyBytes: the bodies fetched for spooled notifications
// count against --spool-max-bytes (they sit in SPOOL/blobs until
// published): past the limit new notifications are refused, and what the
// broker confirmed frees its bodies' bytes, also after a restart.
func TestSpoolCountsBodyBytes(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	sp, err := openSpool(ctx, path, 100, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	msg := func() *message.Message { return message.NewMessage(watermill.NewUUID(), make([]byte, 100)) }
	if n, err := sp.put(ctx, []*message.Message{msg(), msg()}); n != 2 || err != nil {
		t.Fatalf("put: %d, %v", n, err)
	}
	rows, err := sp.unfetched(ctx, 10)
	if err != nil || len(rows) != 2 {
		t.Fatalf("unfetched: %d, %v", len(rows), err)
	}
	refs, _ := json.Marshal([]bonnie.BodyRef{{UID: 1, Digest: "aa", Size: 6000}, {UID: 2, Error: "gone"}})
	if err := sp.setBodies(ctx, map[int64][]byte{rows[0].seq: refs, rows[1].seq: {}}); err != nil {
		t.Fatal(err)
	}
	if n, b, bb := sp.size(); n != 2 || b != 200 || bb != 6000 {
		t.Fatalf("size %d notifications, %d bytes, %d body bytes; want 2, 200, 6000", n, b, bb)
	}
	// 200 + 6000 + 4000 > 10 000: refused.
	big := message.NewMessage(watermill.NewUUID(), make([]byte, 4000))
	if n, err := sp.put(ctx, []*message.Message{big}); n != 0 || !errors.Is(err, errSpoolFull) {
		t.Fatalf("put over the limit with the bodies: %d, %v", n, err)
	}
	sp.Close()
	sp, err = openSpool(ctx, path, 100, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if _, _, bb := sp.size(); bb != 6000 {
		t.Fatalf("after reopening: %d body bytes, want 6000", bb)
	}
	all, err := sp.next(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.remove(ctx, all[:1]); err != nil {
		t.Fatal(err)
	}
	if n, b, bb := sp.size(); n != 1 || b != 100 || bb != 0 {
		t.Fatalf("after the first is confirmed: %d, %d, %d; want 1, 100, 0", n, b, bb)
	}
	if n, err := sp.put(ctx, []*message.Message{big}); n != 1 || err != nil {
		t.Fatalf("put once the bodies are published: %d, %v", n, err)
	}
}
