package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

func TestChangesCodecRoundTrip(t *testing.T) {
	t1, t2 := "2026-11-28T20:37:10.123456789Z", "2026-11-28T20:37:11.000000000Z"
	for _, tc := range []struct {
		name string
		chs  []logchain.Change
	}{
		{"none", nil},
		{"one", []logchain.Change{ch("message", "F/1/4", "flag:\\Seen", "", "set", "alice", t1)}},
		{"shared time", []logchain.Change{
			ch("message", "F/1/4", "state", "", "present", "alice", t1),
			ch("message", "F/1/4", "flag:\\Seen", "", "set", "alice", t1),
			ch("folder", "F", "acl:group:staff", "lr", "", "", t1),
		}},
		{"times differ", []logchain.Change{
			ch("user", "u1", "login", "bob", "bobby", "admin", t1),
			ch("user", "u1", "address", "", "bob@example.org", "admin", t2),
			ch("user", "u1", "mail", "", "x", "admin", t1),
		}},
		{"empty and unicode strings", []logchain.Change{ch("folder", "F", "name", "user.alice.Über", "", "", t1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := appendChanges(nil, tc.chs)
			got, err := decodeChanges(b, 7)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.chs) {
				t.Fatalf("decoded %d changes, want %d", len(got), len(tc.chs))
			}
			for i, c := range got {
				if c.Cause != 7 {
					t.Errorf("change %d: cause %d, want 7", i, c.Cause)
				}
				if back := logchain.FromChange(c); back != tc.chs[i] {
					t.Errorf("change %d: %+v, want %+v", i, back, tc.chs[i])
				}
			}
			// The encoding is a function of the changes: Verify compares bytes.
			if again := appendChanges(nil, tc.chs); !bytes.Equal(again, b) {
				t.Error("encoding is not deterministic")
			}
		})
	}
}

func TestChangesCodecRejectsCorruption(t *testing.T) {
	good := appendChanges(nil, []logchain.Change{ch("message", "F/1/4", "state", "", "present", "alice", "2026-11-28T20:37:10.123456789Z")})
	for name, b := range map[string][]byte{
		"empty":          {},
		"unknown format": append([]byte{9}, good[1:]...),
		"huge count":     {changesV1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"truncated":      good[:len(good)-3],
		"trailing":       append(append([]byte{}, good...), 0),
		"bad time":       appendChanges(nil, []logchain.Change{ch("m", "i", "f", "", "", "", "yesterday")}),
		"no first time":  appendChanges(nil, []logchain.Change{ch("m", "i", "f", "", "", "", "")}),
	} {
		if _, err := decodeChanges(b, 1); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// FuzzDecodeChanges: a corrupt copy is an error, never a panic or a huge
// allocation; whatever decodes encodes back to the same bytes.
func FuzzDecodeChanges(f *testing.F) {
	f.Add(appendChanges(nil, []logchain.Change{
		ch("message", "F/1/4", "state", "", "present", "alice", "2026-11-28T20:37:10.123456789Z"),
		ch("message", "F/1/4", "flag:\\Seen", "", "set", "alice", "2026-11-28T20:37:10.123456789Z"),
	}))
	f.Add([]byte{changesV1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		chs, err := decodeChanges(bytes.Clone(b), 1)
		if err != nil {
			return
		}
		stored := make([]logchain.Change, len(chs))
		for i, c := range chs {
			stored[i] = logchain.FromChange(c)
		}
		// Times may be spelt differently (they are parsed), so compare
		// what the bytes decode to, not the bytes.
		again, err := decodeChanges(appendChanges(nil, stored), 1)
		if err != nil || !reflect.DeepEqual(again, chs) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, again, chs)
		}
	})
}

// TestReadWithoutChangesCopy reads a log whose first records were appended
// before schema version 2 (no copy of their changes in the row): Read and
// ReadMatching give the same records as from a log that has every copy.
func TestReadWithoutChangesCopy(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Enough records for a page to be read in several ranges at once.
	var evs []*bonnie.Event
	for i := 0; len(evs) < 1300; i++ {
		for _, ev := range storetest.Captures() {
			evs = append(evs, storetest.Variant(ev, i))
		}
	}
	l.cfg.shards = 3
	for i, ev := range evs {
		rec := bonnie.NewChanges(ev.User, ev.Time)
		if i%3 != 2 { // some records have no changes at all
			m := bonnie.NewMessage(rec, fmt.Sprintf("F/1/%d", i+1), nil)
			m.Create()
			m.SetFlags([]string{`\Seen`})
		}
		if _, _, err := l.Append(ctx, ev, rec.List()); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func(mask bonnie.EventMask, page int) []bonnie.Record {
		var out []bonnie.Record
		var pos bonnie.Position
		for {
			recs, last, err := l.ReadMatching(ctx, pos, page, mask)
			if err != nil {
				t.Fatal(err)
			}
			if last == pos {
				return out
			}
			out = append(out, recs...)
			pos = last
		}
	}
	masks := []bonnie.EventMask{bonnie.AllEvents, bonnie.Mask(bonnie.MessageNew, bonnie.MessageAppend, bonnie.FlagsSet)}
	var want [][]bonnie.Record
	for _, m := range masks {
		want = append(want, readAll(m, 7))
		// Pages of 1000 are read in three ranges at once: the same records.
		if got := readAll(m, 1000); !reflect.DeepEqual(got, want[len(want)-1]) {
			t.Errorf("mask %v: pages of 1000 read differently from pages of 7", m)
		}
	}
	if len(want[0]) != len(evs) {
		t.Fatalf("read %d records, want %d", len(want[0]), len(evs))
	}
	// As if the first half had been appended by schema version 1.
	if _, err := l.wdb.ExecContext(ctx, `UPDATE records SET changes = NULL WHERE position <= ?`, len(evs)/2); err != nil {
		t.Fatal(err)
	}
	for i, m := range masks {
		for _, page := range []int{7, 1000} {
			if got := readAll(m, page); !reflect.DeepEqual(got, want[i]) {
				t.Errorf("mask %v, pages of %d: records without the copy read differently", m, page)
			}
		}
	}
	if err := l.Verify(ctx); err != nil {
		t.Errorf("Verify with records of both versions: %v", err)
	}
}

func ch(entity, id, field, from, to, actor, time string) logchain.Change {
	return logchain.Change{Entity: entity, ID: id, Field: field, From: from, To: to, Actor: actor, Time: time}
}
