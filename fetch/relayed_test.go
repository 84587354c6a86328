package fetch_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/store/blob"
)

func relayedEvent(t *testing.T) *bonnie.Event {
	t.Helper()
	raw, err := os.ReadFile("../testdata/cyrus-3.6.1/052-MessageNew.bin")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := bonnie.Decode(raw)
	if err != nil || !bonnie.NeedsBodies(ev) {
		t.Fatalf("capture: %v (needs bodies: %v)", err, ev != nil && bonnie.NeedsBodies(ev))
	}
	return ev
}

// The fetcher waits for a body the relay named until it is stored, and
// returns the relay's description of it.
func TestRelayedWaitsForTheBody(t *testing.T) {
	store, err := blob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ev := relayedEvent(t)
	body := []byte("Subject: relayed\r\n\r\n\xe4\xf6\xfc 8-bit\r\n")
	digest := blob.Digest(body)
	date := time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC)
	r := fetch.NewRelayed(store)
	refs := []bonnie.BodyRef{{UID: ev.UIDs[0], Digest: digest, Size: int64(len(body)), InternalDate: date}}
	forget := r.Expect(ev.Key(), refs)
	go func() {
		time.Sleep(300 * time.Millisecond)
		if _, err := store.Put(body); err != nil {
			t.Error(err)
		}
		r.Stored(digest)
	}()
	start := time.Now()
	got, err := r.FetchBodies(t.Context(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Digest != digest || got[0].Size != int64(len(body)) || !got[0].InternalDate.Equal(date) || got[0].Error != "" {
		t.Fatalf("got %+v", got)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("returned after %v, before the body was stored", d)
	}
	forget()
	forget() // harmless
	if n := r.Pending(); n != 0 {
		t.Fatalf("%d pending after forget", n)
	}
}

// A body that does not arrive in time, one the relay could not fetch, and
// a notification that came without refs are recorded as errors, at once
// or when ctx ends.
func TestRelayedFailures(t *testing.T) {
	store, err := blob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ev := relayedEvent(t)
	r := fetch.NewRelayed(store)
	got, err := r.FetchBodies(t.Context(), ev)
	if err != nil || len(got) != len(ev.UIDs) || !strings.Contains(got[0].Error, "sent no body") {
		t.Fatalf("no refs: %+v, %v", got, err)
	}

	forget := r.Expect(ev.Key(), []bonnie.BodyRef{{UID: ev.UIDs[0], Error: "imap 127.0.0.1:1: connection refused"}})
	got, err = r.FetchBodies(t.Context(), ev)
	if err != nil || !strings.Contains(got[0].Error, "relay: imap 127.0.0.1:1") || got[0].Digest != "" {
		t.Fatalf("relay's error: %+v, %v", got, err)
	}
	forget()

	forget = r.Expect(ev.Key(), []bonnie.BodyRef{{UID: ev.UIDs[0], Digest: blob.Digest([]byte("never")), Size: 5}})
	defer forget()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	got, err = r.FetchBodies(ctx, ev)
	if err != nil || got[0].Digest != "" || !strings.Contains(got[0].Error, "not received in time") {
		t.Fatalf("timeout: %+v, %v", got, err)
	}
}
