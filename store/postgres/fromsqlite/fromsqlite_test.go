package fromsqlite_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/postgres/fromsqlite"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
	"github.com/bonnie-archive/bonnie/store/sqlite"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// fill appends events from..to-1 to the SQLite log, in batches, each with
// changes (one of them with bytes PostgreSQL's text would refuse).
func fill(t *testing.T, l *sqlite.Log, from, to int) {
	t.Helper()
	caps := storetest.Captures()
	var batch []bonnie.Entry
	flush := func() {
		if _, err := l.AppendBatch(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	for i := from; i < to; i++ {
		ev := storetest.Variant(caps[i%len(caps)], i)
		rec := bonnie.NewChanges(ev.User, ev.Time)
		m := bonnie.NewMessage(rec, fmt.Sprintf("F/1/%d", i), nil)
		m.Create()
		m.SetFlags([]string{`\Seen`})
		if i%100 == 7 {
			f := bonnie.NewFolder(rec, "F\x00odd", nil)
			f.SetMetadata("/private/x", fmt.Sprintf("v\xff\x00%d", i))
		}
		batch = append(batch, bonnie.Entry{Event: ev, Changes: rec.List()})
		if len(batch) == 250 {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
}

type source struct {
	path string
	log  *sqlite.Log
}

func newSource(t *testing.T, n int) *source {
	t.Helper()
	s := &source{path: filepath.Join(t.TempDir(), "log.db")}
	var err error
	if s.log, err = sqlite.Open(t.Context(), s.path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.log.Close() })
	fill(t, s.log, 0, n)
	return s
}

func newTarget(t *testing.T) *postgres.Log {
	t.Helper()
	_, dsn := pgtest.Schema(t)
	l, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// same checks that both logs read back the same records, dead letters
// and cursors.
func same(t *testing.T, a *sqlite.Log, b *postgres.Log, sinks ...string) {
	t.Helper()
	ctx := t.Context()
	var from bonnie.Position
	for {
		ra, err := a.Read(ctx, from, 700)
		if err != nil {
			t.Fatal(err)
		}
		rb, err := b.Read(ctx, from, 700)
		if err != nil {
			t.Fatal(err)
		}
		if len(ra) != len(rb) {
			t.Fatalf("after %d: %d records in SQLite, %d in PostgreSQL", from, len(ra), len(rb))
		}
		if len(ra) == 0 {
			break
		}
		for i := range ra {
			ja, _ := json.Marshal(ra[i])
			jb, _ := json.Marshal(rb[i])
			if !bytes.Equal(ja, jb) {
				t.Fatalf("record %d differs:\n%s\n%s", ra[i].Position, ja, jb)
			}
		}
		from = ra[len(ra)-1].Position
	}
	da, _ := a.DeadLetters(ctx, false)
	db, _ := b.DeadLetters(ctx, false)
	ja, _ := json.Marshal(da)
	jb, _ := json.Marshal(db)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("dead letters differ:\n%s\n%s", ja, jb)
	}
	for _, s := range sinks {
		ca, _ := a.Cursor(ctx, s)
		cb, _ := b.Cursor(ctx, s)
		if ca != cb {
			t.Fatalf("cursor %s: %d in SQLite, %d in PostgreSQL", s, ca, cb)
		}
	}
	ha, _ := a.HeadHash(ctx)
	hb, _ := b.HeadHash(ctx)
	if ha.Position != hb.Position || !bytes.Equal(ha.Hash, hb.Hash) {
		t.Fatalf("heads %d %x and %d %x", ha.Position, ha.Hash, hb.Position, hb.Hash)
	}
}

func TestCopy(t *testing.T) {
	src := newSource(t, 2345)
	ctx := t.Context()
	id1, _ := src.log.PutDeadLetter(ctx, bonnie.DeadLetter{Source: "cyrus", Reason: "truncated", Raw: []byte("log\x00EV")})
	src.log.PutDeadLetter(ctx, bonnie.DeadLetter{Source: "amqp", Reason: "unknown event", Raw: []byte{0xff}})
	src.log.ResolveDeadLetter(ctx, id1, 17)
	src.log.SetCursor(ctx, "archive", 2000)
	src.log.SetCursor(ctx, "backup", 12)

	dst := newTarget(t)
	var calls []int64
	res, err := fromsqlite.Copy(ctx, src.path, dst, fromsqlite.Options{Progress: func(done, total int64) {
		if total != 2345 {
			t.Errorf("progress total %d", total)
		}
		calls = append(calls, done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Start != 0 || res.End != 2345 || res.Head.Position != 2345 || res.DeadLetters != 2 || res.Cursors != 2 {
		t.Fatalf("result %+v", res)
	}
	if fmt.Sprint(calls) != "[1000 2000 2345]" {
		t.Fatalf("progress %v", calls)
	}
	same(t, src.log, dst, "archive", "backup")
	if st, _ := dst.StateAt(ctx, bonnie.KindFolder, "F\x00odd", time.Time{}); st["meta:/private/x"] != "v\xff\x002307" {
		t.Fatalf("state copied as %q", st)
	}
	// The copy is a log: it appends on, and dead letter ids continue.
	ev := storetest.Variant(storetest.Captures()[0], 99999)
	if pos, dup, err := dst.Append(ctx, ev, nil); err != nil || dup || pos != 2346 {
		t.Fatalf("append to the copy = %d %v %v", pos, dup, err)
	}
	if id, err := dst.PutDeadLetter(ctx, bonnie.DeadLetter{Reason: "x"}); err != nil || id != 3 {
		t.Fatalf("next dead letter id %d, %v", id, err)
	}
	if err := dst.Verify(ctx); err != nil {
		t.Fatal(err)
	}
}

// A source that grew (or a copy that stopped) continues from the
// target's head.
func TestCopyResumes(t *testing.T) {
	src := newSource(t, 300)
	ctx := t.Context()
	id, _ := src.log.PutDeadLetter(ctx, bonnie.DeadLetter{Source: "s", Reason: "r", Raw: []byte("x")})
	dst := newTarget(t)
	if _, err := fromsqlite.Copy(ctx, src.path, dst, fromsqlite.Options{}); err != nil {
		t.Fatal(err)
	}
	fill(t, src.log, 300, 777)
	src.log.ResolveDeadLetter(ctx, id, 301)
	src.log.SetCursor(ctx, "archive", 700)
	res, err := fromsqlite.Copy(ctx, src.path, dst, fromsqlite.Options{Batch: 100})
	if err != nil {
		t.Fatal(err)
	}
	if res.Start != 300 || res.End != 777 {
		t.Fatalf("result %+v", res)
	}
	same(t, src.log, dst, "archive")
	// Nothing new: nothing copied, still verified.
	if res, err = fromsqlite.Copy(ctx, src.path, dst, fromsqlite.Options{}); err != nil || res.Start != 777 || res.End != 777 {
		t.Fatalf("copy again = %+v, %v", res, err)
	}
}

// A copy interrupted after its first batch continues where it stopped.
func TestCopyInterrupted(t *testing.T) {
	src := newSource(t, 1000)
	dst := newTarget(t)
	ctx, cancel := context.WithCancel(t.Context())
	_, err := fromsqlite.Copy(ctx, src.path, dst, fromsqlite.Options{Batch: 300, Progress: func(done, _ int64) {
		if done >= 300 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted copy = %v", err)
	}
	if h, _ := dst.Head(t.Context()); h != 300 {
		t.Fatalf("interrupted at %d, want 300 (a batch boundary)", h)
	}
	res, err := fromsqlite.Copy(t.Context(), src.path, dst, fromsqlite.Options{Batch: 300})
	if err != nil || res.Start != 300 || res.End != 1000 {
		t.Fatalf("resumed copy = %+v, %v", res, err)
	}
	same(t, src.log, dst)
}

// A target whose records are not the source's is refused and left alone.
func TestCopyRefusesAnotherLog(t *testing.T) {
	src := newSource(t, 50)
	ctx := t.Context()

	other := newTarget(t) // the same events, appended by another log: other ids and times
	caps := storetest.Captures()
	for i := range 10 {
		if _, _, err := other.Append(ctx, storetest.Variant(caps[i%len(caps)], i), nil); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := other.HeadHash(ctx)
	if _, err := fromsqlite.Copy(ctx, src.path, other, fromsqlite.Options{}); !errors.Is(err, fromsqlite.ErrDiffers) || !errors.Is(err, postgres.ErrDiffers) {
		t.Fatalf("copy into another log = %v, want ErrDiffers", err)
	}
	after, _ := other.HeadHash(ctx)
	if after.Position != before.Position || !bytes.Equal(after.Hash, before.Hash) {
		t.Fatalf("a refused copy changed the target")
	}

	longer := newTarget(t) // the source's records and more
	if _, err := fromsqlite.Copy(ctx, src.path, longer, fromsqlite.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := longer.Append(ctx, storetest.Variant(caps[0], 5000), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := fromsqlite.Copy(ctx, src.path, longer, fromsqlite.Options{}); !errors.Is(err, fromsqlite.ErrDiffers) {
		t.Fatalf("copy into a longer log = %v, want ErrDiffers", err)
	}

	// A dead letter of the target's own with a source letter's id.
	dl := newTarget(t)
	if _, err := dl.PutDeadLetter(ctx, bonnie.DeadLetter{Reason: "mine"}); err != nil {
		t.Fatal(err)
	}
	src.log.PutDeadLetter(ctx, bonnie.DeadLetter{Reason: "source's"})
	if _, err := fromsqlite.Copy(ctx, src.path, dl, fromsqlite.Options{}); !errors.Is(err, fromsqlite.ErrDiffers) {
		t.Fatalf("copy onto another dead letter = %v, want ErrDiffers", err)
	}
	if h, _ := dl.Head(ctx); h != 0 {
		t.Fatalf("a copy refused for its dead letters wrote %d records", h)
	}
}

func TestCopyEmpty(t *testing.T) {
	src := newSource(t, 0)
	dst := newTarget(t)
	res, err := fromsqlite.Copy(t.Context(), src.path, dst, fromsqlite.Options{})
	if err != nil || res.End != 0 || res.Head.Position != 0 {
		t.Fatalf("copy of an empty log = %+v, %v", res, err)
	}
	if _, err := fromsqlite.Copy(t.Context(), filepath.Join(t.TempDir(), "none.db"), dst, fromsqlite.Options{}); err == nil {
		t.Fatal("copy of a missing file succeeded")
	}
}

// The copied state is the source's state.
func TestCopyState(t *testing.T) {
	src := newSource(t, 120)
	dst := newTarget(t)
	if _, err := fromsqlite.Copy(t.Context(), src.path, dst, fromsqlite.Options{Batch: 7}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"F/1/0", "F/1/119"} {
		a, _ := src.log.StateAt(t.Context(), bonnie.KindMessage, id, time.Time{})
		b, _ := dst.StateAt(t.Context(), bonnie.KindMessage, id, time.Time{})
		if len(a) == 0 || !maps.Equal(a, b) {
			t.Fatalf("state of %s: %v and %v", id, a, b)
		}
	}
	a, _ := src.log.Find(t.Context(), bonnie.KindFolder, "meta:/private/x", "v\xff\x00107")
	b, _ := dst.Find(t.Context(), bonnie.KindFolder, "meta:/private/x", "v\xff\x00107")
	if len(a) != 1 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("Find: %q and %q", a, b)
	}
}
