// Package storetest is the conformance suite every bonnie.Log
// implementation must pass, in the manner of Watermill's universal pub/sub
// tests: an implementation's own tests call Run with a constructor, and
// the suite checks the contract of bonnie.Log (and of DeadLetters,
// BatchAppender, Cursors and StateSource when the log implements them).
//
// The suite checks behaviour only. Tampering tests depend on how a store
// keeps its rows and belong with the store.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Run runs the suite. open must return a new, empty log each time it is
// called (the suite calls it once per sub-test); the suite closes it, and
// Close must tolerate a second call.
func Run(t *testing.T, open func(t *testing.T) bonnie.Log) {
	tests := []struct {
		name string
		fn   func(t *testing.T, l bonnie.Log)
	}{
		{"AppendReadOrder", testAppendRead},
		{"ChainLinks", testChainLinks},
		{"IdempotentSequential", testIdempotentSequential},
		{"IdempotentConcurrent", testIdempotentConcurrent},
		{"IdempotentSameBatch", testIdempotentSameBatch},
		{"Concurrent50", testConcurrent50},
		{"CancelledAppends", testCancelled},
		{"History", testHistory},
		{"StateAtNow", testStateNow},
		{"StateAtPast", testStatePast},
		{"StateLateEvent", testStateLate},
		{"Verify", testVerify},
		{"ReadPaging", testPaging},
		{"RoundTrip", testRoundTrip},
		{"ReadMatching", testReadMatching},
		{"DeadLetters", testDeadLetters},
		{"Cursors", testCursors},
		{"Find", testFind},
		{"CloseThenUse", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := open(t)
			t.Cleanup(func() { _ = l.Close() })
			tc.fn(t, l)
		})
	}
}

func ctxT(t *testing.T) context.Context { return t.Context() }

// changesFor returns realistic changes for the i-th event: a message and
// its folder, stamped with the event's time.
func changesFor(ev *bonnie.Event, i int) []bonnie.Change {
	rec := bonnie.NewChanges(ev.User, ev.Time)
	f := bonnie.NewFolder(rec, ev.MailboxID+"-f", nil)
	f.Create()
	m := bonnie.NewMessage(rec, bonnie.MessageKey(ev.MailboxID+"-f", 1, uint32(i+1)), nil)
	m.Create()
	m.SetFlags([]string{`\Seen`})
	return rec.List()
}

func mustAppend(t *testing.T, l bonnie.Log, ev *bonnie.Event, ch []bonnie.Change) bonnie.Position {
	t.Helper()
	pos, dup, err := l.Append(ctxT(t), ev, ch)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if dup {
		t.Fatalf("Append: dup for a new event (pos %d)", pos)
	}
	return pos
}

func readAll(t *testing.T, l bonnie.Log) []bonnie.Record {
	t.Helper()
	var all []bonnie.Record
	var from bonnie.Position
	for {
		recs, err := l.Read(ctxT(t), from, 500)
		if err != nil {
			t.Fatalf("Read(%d): %v", from, err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
		from = recs[len(recs)-1].Position
	}
}

func checkContiguous(t *testing.T, recs []bonnie.Record) {
	t.Helper()
	for i, r := range recs {
		if r.Position != bonnie.Position(i+1) {
			t.Fatalf("record %d has position %d, want %d", i, r.Position, i+1)
		}
	}
}

func testAppendRead(t *testing.T, l bonnie.Log) {
	evs := Captures()
	for i, ev := range evs {
		if pos := mustAppend(t, l, ev, changesFor(ev, i)); pos != bonnie.Position(i+1) {
			t.Fatalf("event %d appended at %d, want %d", i, pos, i+1)
		}
	}
	head, err := l.Head(ctxT(t))
	if err != nil || head != bonnie.Position(len(evs)) {
		t.Fatalf("Head = %d, %v; want %d", head, err, len(evs))
	}
	recs := readAll(t, l)
	if len(recs) != len(evs) {
		t.Fatalf("read %d records, want %d", len(recs), len(evs))
	}
	checkContiguous(t, recs)
	for i, r := range recs {
		if r.Key != evs[i].Key() || r.Event.Key() != evs[i].Key() {
			t.Errorf("record %d: key %s / event key %s, want %s", r.Position, r.Key, r.Event.Key(), evs[i].Key())
		}
		if r.ID == "" || r.Appended.IsZero() || len(r.Hash) != 32 {
			t.Errorf("record %d: id %q appended %v hash %x", r.Position, r.ID, r.Appended, r.Hash)
		}
		want := changesFor(evs[i], i)
		if len(r.Changes) != len(want) {
			t.Fatalf("record %d: %d changes, want %d", r.Position, len(r.Changes), len(want))
		}
		for k, c := range r.Changes {
			w := want[k]
			w.Cause = r.Position
			if !c.Time.Equal(w.Time) {
				t.Errorf("record %d change %d: time %v, want %v", r.Position, k, c.Time, w.Time)
			}
			c.Time, w.Time = time.Time{}, time.Time{}
			if c != w {
				t.Errorf("record %d change %d: %+v, want %+v", r.Position, k, c, w)
			}
		}
	}
	// Record IDs are UUIDv7: unique and time ordered.
	ids := map[string]bool{}
	for _, r := range recs {
		if ids[r.ID] {
			t.Errorf("duplicate record id %s", r.ID)
		}
		ids[r.ID] = true
	}
}

func testChainLinks(t *testing.T, l bonnie.Log) {
	for i, ev := range Captures()[:5] {
		mustAppend(t, l, ev, changesFor(ev, i))
	}
	recs := readAll(t, l)
	if !bytes.Equal(recs[0].PrevHash, make([]byte, 32)) {
		t.Errorf("first record's previous hash is %x, want 32 zero bytes", recs[0].PrevHash)
	}
	for i := 1; i < len(recs); i++ {
		if !bytes.Equal(recs[i].PrevHash, recs[i-1].Hash) {
			t.Errorf("record %d's previous hash %x is not record %d's hash %x", i+1, recs[i].PrevHash, i, recs[i-1].Hash)
		}
	}
}

func testIdempotentSequential(t *testing.T, l bonnie.Log) {
	evs := Captures()
	a, b := evs[0], evs[1]
	pa := mustAppend(t, l, a, changesFor(a, 0))
	mustAppend(t, l, b, changesFor(b, 1))
	// The same notification again, with different changes: nothing stored.
	c := *a
	c.Raw = bytes.Clone(a.Raw) // a distinct value with the same bytes
	pos, dup, err := l.Append(ctxT(t), &c, changesFor(a, 7))
	if err != nil || !dup || pos != pa {
		t.Fatalf("re-append = %d, %v, %v; want %d, true, nil", pos, dup, err, pa)
	}
	if head, _ := l.Head(ctxT(t)); head != 2 {
		t.Fatalf("Head = %d after a duplicate, want 2", head)
	}
	recs := readAll(t, l)
	if len(recs) != 2 || len(recs[0].Changes) != len(changesFor(a, 0)) {
		t.Fatalf("duplicate stored something: %d records, %d changes", len(recs), len(recs[0].Changes))
	}
	h, err := l.History(ctxT(t), bonnie.KindMessage, bonnie.MessageKey(a.MailboxID+"-f", 1, 8))
	if err != nil || len(h) != 0 {
		t.Fatalf("a duplicate's changes were stored: %v %v", h, err)
	}
}

func testIdempotentConcurrent(t *testing.T, l bonnie.Log) {
	ev := Capture("097")
	const n = 32
	var wg sync.WaitGroup
	type res struct {
		pos bonnie.Position
		dup bool
		err error
	}
	out := make([]res, n)
	for i := range n {
		wg.Go(func() {
			p, d, err := l.Append(ctxT(t), ev, changesFor(ev, 0))
			out[i] = res{p, d, err}
		})
	}
	wg.Wait()
	firsts := 0
	for _, r := range out {
		if r.err != nil {
			t.Fatalf("Append: %v", r.err)
		}
		if r.pos != 1 {
			t.Fatalf("Append of one event returned position %d, want 1", r.pos)
		}
		if !r.dup {
			firsts++
		}
	}
	if firsts != 1 {
		t.Fatalf("%d appends reported a new event, want exactly 1", firsts)
	}
	if head, _ := l.Head(ctxT(t)); head != 1 {
		t.Fatalf("Head = %d, want 1", head)
	}
}

// testIdempotentSameBatch puts two identical events into one transaction:
// through AppendBatch when the log has it, and by racing pairs otherwise.
func testIdempotentSameBatch(t *testing.T, l bonnie.Log) {
	evs := Captures()
	if ba, ok := l.(bonnie.BatchAppender); ok {
		entries := []bonnie.Entry{
			{Event: evs[0], Changes: changesFor(evs[0], 0)},
			{Event: evs[1], Changes: changesFor(evs[1], 1)},
			{Event: evs[0], Changes: changesFor(evs[0], 5)},
			{Event: evs[2]},
		}
		res, err := ba.AppendBatch(ctxT(t), entries)
		if err != nil {
			t.Fatalf("AppendBatch: %v", err)
		}
		want := []bonnie.Appended{{Position: 1}, {Position: 2}, {Position: 1, Dup: true}, {Position: 3}}
		if !slices.Equal(res, want) {
			t.Fatalf("AppendBatch = %+v, want %+v", res, want)
		}
		// A batch of only known events stores nothing.
		res, err = ba.AppendBatch(ctxT(t), entries[:2])
		if err != nil || !slices.Equal(res, []bonnie.Appended{{Position: 1, Dup: true}, {Position: 2, Dup: true}}) {
			t.Fatalf("AppendBatch again = %+v, %v", res, err)
		}
		if recs := readAll(t, l); len(recs) != 3 || len(recs[0].Changes) != len(changesFor(evs[0], 0)) {
			t.Fatalf("after batch: %d records", len(recs))
		}
	}
	// Many pairs of identical events appended at the same moment, so
	// that group commit puts twins in one transaction.
	base, _ := l.Head(ctxT(t))
	const pairs = 40
	var wg sync.WaitGroup
	pos := make([][2]bonnie.Position, pairs)
	dups := make([][2]bool, pairs)
	errs := make(chan error, 2*pairs)
	start := make(chan struct{})
	for i := range pairs {
		ev := Variant(evs[i%len(evs)], 1000+i)
		for k := range 2 {
			wg.Go(func() {
				<-start
				p, d, err := l.Append(ctxT(t), ev, changesFor(ev, i))
				if err != nil {
					errs <- err
				}
				pos[i][k], dups[i][k] = p, d
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Append: %v", err)
	}
	for i := range pairs {
		if pos[i][0] != pos[i][1] || dups[i][0] == dups[i][1] {
			t.Fatalf("pair %d: positions %v dup %v; want one position, one dup", i, pos[i], dups[i])
		}
	}
	if head, _ := l.Head(ctxT(t)); head != base+pairs {
		t.Fatalf("Head = %d, want %d", head, base+pairs)
	}
	checkContiguous(t, readAll(t, l))
}

func testConcurrent50(t *testing.T, l bonnie.Log) {
	evs := Captures()
	const workers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	keys := make(map[string]bool)
	var mu sync.Mutex
	for w := range workers {
		wg.Go(func() {
			for k := range each {
				i := w*each + k
				ev := Variant(evs[i%len(evs)], i)
				pos, dup, err := l.Append(ctxT(t), ev, changesFor(ev, i))
				if err != nil || dup || pos == 0 {
					errs <- fmt.Errorf("append %d: pos %d dup %v err %v", i, pos, dup, err)
					continue
				}
				mu.Lock()
				keys[ev.Key()] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	recs := readAll(t, l)
	if len(recs) != workers*each {
		t.Fatalf("%d records, want %d", len(recs), workers*each)
	}
	checkContiguous(t, recs)
	for _, r := range recs {
		if !keys[r.Key] {
			t.Fatalf("record %d: unexpected or repeated key %s", r.Position, r.Key)
		}
		delete(keys, r.Key)
	}
	if err := l.Verify(ctxT(t)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

// testCancelled cancels some appenders while they wait. Whatever landed
// must be a valid chain with each event at most once, and appending every
// event again must fill in exactly the missing ones.
func testCancelled(t *testing.T, l bonnie.Log) {
	evs := Captures()
	const n = 200
	var wg sync.WaitGroup
	all := make([]*bonnie.Event, n)
	for i := range n {
		all[i] = Variant(evs[i%len(evs)], 5000+i)
		ctx, cancel := context.WithCancel(ctxT(t))
		wg.Go(func() {
			_, _, err := l.Append(ctx, all[i], changesFor(all[i], i))
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Append: %v", err)
			}
		})
		if i%3 == 0 {
			cancel()
		} else {
			defer cancel()
		}
	}
	wg.Wait()
	if err := l.Verify(ctxT(t)); err != nil {
		t.Fatalf("Verify after cancellations: %v", err)
	}
	landed := readAll(t, l)
	checkContiguous(t, landed)
	seen := map[string]bool{}
	for _, r := range landed {
		if seen[r.Key] {
			t.Fatalf("key %s stored twice", r.Key)
		}
		seen[r.Key] = true
	}
	for i, ev := range all {
		_, dup, err := l.Append(ctxT(t), ev, changesFor(ev, i))
		if err != nil {
			t.Fatalf("re-append: %v", err)
		}
		if dup != seen[ev.Key()] {
			t.Fatalf("re-append of event %d: dup %v, but landed %v", i, dup, seen[ev.Key()])
		}
	}
	if head, _ := l.Head(ctxT(t)); head != n {
		t.Fatalf("Head = %d, want %d", head, n)
	}
}

func testHistory(t *testing.T, l bonnie.Log) {
	evs := Captures()
	folder := "F1"
	var want []bonnie.Change
	for i := range 6 {
		ev := evs[i]
		rec := bonnie.NewChanges(ev.User, ev.Time)
		f := bonnie.NewFolder(rec, folder, nil)
		if i > 0 {
			f = bonnie.NewFolder(rec, folder, map[string]string{"state": bonnie.StatePresent, "path": fmt.Sprintf("user.alice.p%d", i-1)})
		} else {
			f.Create()
		}
		f.SetPath(fmt.Sprintf("user.alice.p%d", i))
		other := bonnie.NewMessage(rec, "M"+fmt.Sprint(i), nil)
		other.Create()
		pos := mustAppend(t, l, ev, rec.List())
		for _, c := range rec.List() {
			if c.Entity == bonnie.KindFolder {
				c.Cause = pos
				want = append(want, c)
			}
		}
	}
	got, err := l.History(ctxT(t), bonnie.KindFolder, folder)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("History: %d changes, want %d: %v", len(got), len(want), got)
	}
	for i := range got {
		if !got[i].Time.Equal(want[i].Time) {
			t.Errorf("change %d time %v, want %v", i, got[i].Time, want[i].Time)
		}
		got[i].Time, want[i].Time = time.Time{}, time.Time{}
		if got[i] != want[i] {
			t.Errorf("change %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if h, err := l.History(ctxT(t), bonnie.KindFolder, "nope"); err != nil || len(h) != 0 {
		t.Errorf("History of an unknown entity = %v, %v", h, err)
	}
}

// stateEvents appends four events changing message M at t0+1h, +2h, +3h,
// +4h: create with flags, flag, unflag and move, expunge.
func stateEvents(t *testing.T, l bonnie.Log, t0 time.Time, order []int) {
	evs := Captures()
	steps := []func(m *bonnie.Message){
		func(m *bonnie.Message) { m.Create(); m.SetFolder("F"); m.SetFlags([]string{`\Seen`}) },
		func(m *bonnie.Message) { m.AddFlags(`\Flagged`) },
		func(m *bonnie.Message) { m.RemoveFlags(`\Seen`); m.SetFolder("G") },
		func(m *bonnie.Message) { m.Expunge(); m.SetFolder("") },
	}
	states := []map[string]string{nil}
	for i, step := range steps {
		m := bonnie.NewMessage(nil, "M", states[i])
		step(m)
		states = append(states, m.Fields())
	}
	for _, i := range order {
		ev := Variant(evs[i], 100+i)
		ev.Time = t0.Add(time.Duration(i+1) * time.Hour)
		rec := bonnie.NewChanges("alice", ev.Time)
		steps[i](bonnie.NewMessage(rec, "M", states[i]))
		mustAppend(t, l, ev, rec.List())
	}
}

var stateWant = []map[string]string{
	{},
	{"state": "present", "folder": "F", `flag:\Seen`: "set"},
	{"state": "present", "folder": "F", `flag:\Seen`: "set", `flag:\Flagged`: "set"},
	{"state": "present", "folder": "G", `flag:\Flagged`: "set"},
	{"state": "expunged", `flag:\Flagged`: "set"},
}

func checkState(t *testing.T, l bonnie.Log, at time.Time, want map[string]string) {
	t.Helper()
	got, err := l.StateAt(ctxT(t), bonnie.KindMessage, "M", at)
	if err != nil {
		t.Fatalf("StateAt(%v): %v", at, err)
	}
	if !maps.Equal(got, want) {
		t.Errorf("StateAt(%v) = %v, want %v", at, got, want)
	}
}

func testStateNow(t *testing.T, l bonnie.Log) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stateEvents(t, l, t0, []int{0, 1, 2, 3})
	checkState(t, l, time.Time{}, stateWant[4])
	checkState(t, l, t0.Add(1000*time.Hour), stateWant[4])
	got, err := l.StateAt(ctxT(t), bonnie.KindMessage, "unknown", time.Time{})
	if err != nil || len(got) != 0 {
		t.Errorf("StateAt of an unknown entity = %v, %v", got, err)
	}
}

func testStatePast(t *testing.T, l bonnie.Log) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stateEvents(t, l, t0, []int{0, 1, 2, 3})
	checkState(t, l, t0, stateWant[0])
	for i := 1; i <= 4; i++ {
		at := t0.Add(time.Duration(i) * time.Hour)
		checkState(t, l, at, stateWant[i])                         // inclusive
		checkState(t, l, at.Add(-time.Nanosecond), stateWant[i-1]) // just before
		checkState(t, l, at.Add(30*time.Minute), stateWant[i])
	}
}

// testStateLate appends the events out of time order (Cyrus's arrival
// order is not timestamp order): StateAt selects changes by event time and
// folds them in log order, so the state at a time holds what had happened
// by then, now and in the past.
func testStateLate(t *testing.T, l bonnie.Log) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stateEvents(t, l, t0, []int{0, 2, 3, 1})
	checkState(t, l, time.Time{}, stateWant[4])
	for i := 1; i <= 4; i++ {
		checkState(t, l, t0.Add(time.Duration(i)*time.Hour), stateWant[i])
	}
}

func testVerify(t *testing.T, l bonnie.Log) {
	if err := l.Verify(ctxT(t)); err != nil {
		t.Fatalf("Verify of an empty log: %v", err)
	}
	for i, ev := range Captures() {
		mustAppend(t, l, ev, changesFor(ev, i))
		if err := l.Verify(ctxT(t)); err != nil {
			t.Fatalf("Verify after %d appends: %v", i+1, err)
		}
	}
}

func testPaging(t *testing.T, l bonnie.Log) {
	evs := Captures()
	const n = 53
	for i := range n {
		ev := Variant(evs[i%len(evs)], i)
		mustAppend(t, l, ev, changesFor(ev, i))
	}
	for _, page := range []int{1, 7, 53, 100} {
		var from bonnie.Position
		var got []bonnie.Position
		for {
			recs, err := l.Read(ctxT(t), from, page)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) > page {
				t.Fatalf("Read(%d, %d) returned %d records", from, page, len(recs))
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				got = append(got, r.Position)
				if len(r.Changes) != len(changesFor(evs[0], 0)) || r.Changes[0].Cause != r.Position {
					t.Fatalf("record %d: changes %v", r.Position, r.Changes)
				}
			}
			from = recs[len(recs)-1].Position
		}
		if len(got) != n || got[0] != 1 || got[n-1] != n {
			t.Fatalf("paging by %d read %v", page, got)
		}
	}
	for _, c := range []struct {
		from  bonnie.Position
		limit int
		want  int
	}{{n, 10, 0}, {n + 5, 10, 0}, {50, 10, 3}, {0, 0, 0}} {
		recs, err := l.Read(ctxT(t), c.from, c.limit)
		if err != nil || len(recs) != c.want {
			t.Errorf("Read(%d, %d) = %d records, %v; want %d", c.from, c.limit, len(recs), err, c.want)
		}
	}
}

// testReadMatching checks a log that implements bonnie.FilteredReader
// (skipped otherwise): paging with ReadMatching gives exactly the records
// of Read whose type is in the mask, with the same events and changes, and
// last always moves to the last record scanned.
func testReadMatching(t *testing.T, l bonnie.Log) {
	fr, ok := l.(bonnie.FilteredReader)
	if !ok {
		t.Skip("the log does not implement bonnie.FilteredReader")
	}
	evs := Captures()
	const n = 61
	for i := range n {
		ev := Variant(evs[i%len(evs)], i)
		mustAppend(t, l, ev, changesFor(ev, i))
	}
	all := readAll(t, l)
	if len(all) != n {
		t.Fatalf("read %d records, want %d", len(all), n)
	}
	masks := []bonnie.EventMask{
		bonnie.AllEvents, 0,
		bonnie.Mask(all[0].Event.Type),
		bonnie.Mask(bonnie.MessageNew, bonnie.MessageAppend, bonnie.FlagsSet),
		bonnie.Mask(bonnie.Cancelled),
	}
	for _, mask := range masks {
		var want []bonnie.Record
		for _, r := range all {
			if mask.Has(r.Event.Type) {
				want = append(want, r)
			}
		}
		for _, page := range []int{1, 7, 1000} {
			var got []bonnie.Record
			var from bonnie.Position
			for {
				recs, last, err := fr.ReadMatching(ctxT(t), from, page, mask)
				if err != nil {
					t.Fatalf("ReadMatching(%d, %d, %s): %v", from, page, mask, err)
				}
				if last < from || last > from+bonnie.Position(page) && page < n {
					t.Fatalf("ReadMatching(%d, %d, %s): last %d", from, page, mask, last)
				}
				for _, r := range recs {
					if r.Position <= from || r.Position > last {
						t.Fatalf("ReadMatching(%d, %d, %s): record %d outside (from, last=%d]", from, page, mask, r.Position, last)
					}
				}
				got = append(got, recs...)
				if last == from {
					break
				}
				from = last
			}
			if from != bonnie.Position(n) {
				t.Fatalf("mask %s page %d: stopped at %d, want %d", mask, page, from, n)
			}
			if len(got) != len(want) {
				t.Fatalf("mask %s page %d: %d records, want %d", mask, page, len(got), len(want))
			}
			for i := range got {
				g, w := got[i], want[i]
				a, _ := json.Marshal(g)
				b, _ := json.Marshal(w)
				if !bytes.Equal(a, b) || g.Event.Key() != w.Event.Key() || len(g.Changes) == 0 {
					t.Fatalf("mask %s page %d: record %d differs from Read's:\n got %s\nwant %s", mask, page, g.Position, a, b)
				}
			}
		}
	}
	if recs, last, err := fr.ReadMatching(ctxT(t), 5, 0, bonnie.AllEvents); err != nil || len(recs) != 0 || last != 5 {
		t.Errorf("ReadMatching with limit 0 = %d records, last %d, %v", len(recs), last, err)
	}
}

func testRoundTrip(t *testing.T, l bonnie.Log) {
	evs := Captures()
	// A fuller event than the captures give: every kind of field set.
	q, u := int64(10000), int64(-1)
	full := Variant(evs[len(evs)-1], 9)
	full.UIDs, full.OldUIDs = []uint32{1, 2, 5}, []uint32{7}
	full.Flags = []string{`\Seen`, "$Label1"}
	full.MailboxACL = bonnie.ACL{{Subject: "alice", Rights: "lrswipkxtecdan"}, {Subject: "group:staff", Rights: "lr"}}
	full.DiskQuota, full.MaxMessages = &q, &u
	full.OldMailbox = &bonnie.MailboxURL{Server: "s", Name: "user.alice.Bücher", Owner: "alice", UIDValidity: 7, UID: 3}
	full.JMAPEmail = json.RawMessage(`{"id":"M1","keywords":{"$seen":true}}`)
	full.Extra = map[string]json.RawMessage{"vnd.example.x": json.RawMessage(`[1,"two"]`)}
	full.MessageContent = []byte("Subject: hi\r\n\r\nbody\x00\xff")
	evs = append(evs, full)
	for i, ev := range evs {
		mustAppend(t, l, ev, changesFor(ev, i))
	}
	recs := readAll(t, l)
	for i, r := range recs {
		ev := evs[i]
		if !bytes.Equal(r.Event.Raw, ev.Raw) {
			t.Errorf("record %d: Raw differs (%d bytes, want %d)", r.Position, len(r.Event.Raw), len(ev.Raw))
		}
		if r.Event.Key() != ev.Key() {
			t.Errorf("record %d: Key %s, want %s", r.Position, r.Event.Key(), ev.Key())
		}
		a, _ := json.Marshal(ev)
		b, _ := json.Marshal(r.Event)
		if !bytes.Equal(a, b) {
			t.Errorf("record %d: event does not round-trip:\n got %s\nwant %s", r.Position, b, a)
		}
	}
	if len(Capture("097").Raw) < 15000 {
		t.Errorf("the 15 KB capture is missing")
	}
}

func testDeadLetters(t *testing.T, l bonnie.Log) {
	dl, ok := l.(bonnie.DeadLetters)
	if !ok {
		t.Skip("log does not keep dead letters")
	}
	raw := []byte("log\x00EVENT\x00\x00\x00\x00\x000\x00{\"event\":")
	t0 := time.Date(2026, 11, 28, 20, 0, 0, 123456789, time.UTC)
	id1, err := dl.PutDeadLetter(ctxT(t), bonnie.DeadLetter{Received: t0, Source: "cyrus-datagram:/run/x", Reason: "truncated JSON", Raw: raw})
	if err != nil {
		t.Fatal(err)
	}
	id2, err := dl.PutDeadLetter(ctxT(t), bonnie.DeadLetter{Source: "amqp", Reason: "unknown event", Raw: []byte{0xff, 0}})
	if err != nil || id2 == id1 {
		t.Fatalf("second dead letter: id %d, %v", id2, err)
	}
	all, err := dl.DeadLetters(ctxT(t), false)
	if err != nil || len(all) != 2 {
		t.Fatalf("DeadLetters = %v, %v", all, err)
	}
	if all[0].ID != id1 || !bytes.Equal(all[0].Raw, raw) || !all[0].Received.Equal(t0) || all[0].Reason != "truncated JSON" ||
		all[0].Source != "cyrus-datagram:/run/x" || all[0].Position != 0 || !all[0].Retried.IsZero() {
		t.Errorf("first dead letter = %+v", all[0])
	}
	if all[1].Received.IsZero() {
		t.Errorf("Received not set")
	}
	ev := Captures()[0]
	pos := mustAppend(t, l, ev, nil)
	if err := dl.ResolveDeadLetter(ctxT(t), id1, pos); err != nil {
		t.Fatal(err)
	}
	pending, err := dl.DeadLetters(ctxT(t), true)
	if err != nil || len(pending) != 1 || pending[0].ID != id2 {
		t.Fatalf("pending = %v, %v", pending, err)
	}
	all, _ = dl.DeadLetters(ctxT(t), false)
	if all[0].Position != pos || all[0].Retried.IsZero() {
		t.Errorf("resolved dead letter = %+v", all[0])
	}
	if err := dl.ResolveDeadLetter(ctxT(t), 9999, pos); err == nil {
		t.Errorf("resolving an unknown dead letter succeeded")
	}
}

func testCursors(t *testing.T, l bonnie.Log) {
	c, ok := l.(bonnie.Cursors)
	if !ok {
		t.Skip("log does not keep cursors")
	}
	if p, err := c.Cursor(ctxT(t), "archive"); err != nil || p != 0 {
		t.Fatalf("new cursor = %d, %v", p, err)
	}
	for _, p := range []bonnie.Position{5, 9} {
		if err := c.SetCursor(ctxT(t), "archive", p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetCursor(ctxT(t), "backup", 2); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Cursor(ctxT(t), "archive"); err != nil || p != 9 {
		t.Fatalf("cursor = %d, %v; want 9", p, err)
	}
	if p, _ := c.Cursor(ctxT(t), "backup"); p != 2 {
		t.Fatalf("backup cursor = %d, want 2", p)
	}
}

func testFind(t *testing.T, l bonnie.Log) {
	f, ok := l.(bonnie.StateSource)
	if !ok {
		t.Skip("log is not a StateSource")
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	stateEvents(t, l, t0, []int{0, 1, 2, 3})
	ev := Variant(Captures()[0], 77)
	rec := bonnie.NewChanges("alice", ev.Time)
	bonnie.NewMessage(rec, "N", nil).SetFolder("G")
	bonnie.NewMessage(rec, "O", nil).SetFolder("H")
	mustAppend(t, l, ev, rec.List())
	ids, err := f.Find(ctxT(t), bonnie.KindMessage, "folder", "G")
	if err != nil || !slices.Equal(ids, []string{"N"}) { // M left G when it was expunged
		t.Fatalf("Find(folder=G) = %v, %v; want [N]", ids, err)
	}
	ids, _ = f.Find(ctxT(t), bonnie.KindMessage, `flag:\Flagged`, "set")
	if !slices.Equal(ids, []string{"M"}) {
		t.Fatalf("Find(flagged) = %v; want [M]", ids)
	}
	if ids, _ = f.Find(ctxT(t), bonnie.KindFolder, "folder", "G"); len(ids) != 0 {
		t.Fatalf("Find on another kind = %v", ids)
	}
}

func testClose(t *testing.T, l bonnie.Log) {
	ev := Captures()[0]
	mustAppend(t, l, ev, nil)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, err := l.Append(ctxT(t), Captures()[1], nil); err == nil {
		t.Error("Append after Close succeeded")
	}
	if _, err := l.Read(ctxT(t), 0, 10); err == nil {
		t.Error("Read after Close succeeded")
	}
	if _, err := l.Head(ctxT(t)); err == nil {
		t.Error("Head after Close succeeded")
	}
	if _, err := l.History(ctxT(t), bonnie.KindFolder, "x"); err == nil {
		t.Error("History after Close succeeded")
	}
	if _, err := l.StateAt(ctxT(t), bonnie.KindFolder, "x", time.Time{}); err == nil {
		t.Error("StateAt after Close succeeded")
	}
	if err := l.Verify(ctxT(t)); err == nil {
		t.Error("Verify after Close succeeded")
	}
}
