package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/examples/bonnie-load/loadgen"
)

var fixedNow = time.Date(2026, 11, 28, 20, 24, 27, 22e6, time.UTC)

func newGen(t testing.TB, f loadgen.Framing, run uint64, now func() time.Time) *loadgen.Generator {
	t.Helper()
	g, err := loadgen.New(loadgen.Options{Framing: f, RunID: run, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// jsonOf returns the notification's JSON message, checking the framing.
func jsonOf(t testing.TB, f loadgen.Framing, raw []byte) []byte {
	t.Helper()
	if f == loadgen.Datagram {
		const head = "log\x00EVENT\x00\x00\x00\x000\x00"
		if !bytes.HasPrefix(raw, []byte(head)) || raw[len(raw)-1] != 0 {
			t.Fatalf("datagram framing: %q", raw[:min(len(raw), 40)])
		}
		return raw[len(head) : len(raw)-1]
	}
	i := bytes.Index(raw, []byte("+}\r\n"))
	if i < 0 || !bytes.HasSuffix(raw, []byte(" FILEPATH NIL)\r\n")) {
		t.Fatalf("dlist framing: %q", raw[:min(len(raw), 120)])
	}
	return raw[i+4 : len(raw)-len(" FILEPATH NIL)\r\n")]
}

// TestEventsDecodeAndAreDistinct: every generated event, in both framings,
// is valid compact JSON with "event" first, decodes with bonnie.Decode to
// the template's type, has a realistic size, and no two share a key (the
// log would deduplicate them).
func TestEventsDecodeAndAreDistinct(t *testing.T) {
	n := int64(10000)
	if testing.Short() {
		n = 3000
	}
	for _, f := range []loadgen.Framing{loadgen.Datagram, loadgen.DList} {
		t.Run(f.String(), func(t *testing.T) {
			g := newGen(t, f, 0, nil)
			if got := len(g.Templates()); got != 92 {
				t.Fatalf("%d templates, want the 92 class EVENT captures", got)
			}
			keys := make(map[string]int64, n)
			var big, small int
			var buf []byte
			for i := range n {
				buf = g.Event(buf[:0], i)
				_, tpl := g.Round(i)
				js := jsonOf(t, f, buf)
				if !json.Valid(js) || !bytes.HasPrefix(js, []byte(`{"event":"`)) || bytes.ContainsAny(js, "\n\r") {
					t.Fatalf("event %d (%s): not compact JSON with event first: %.200s", i, tpl.Name, js)
				}
				ev, err := bonnie.Decode(buf)
				if err != nil {
					t.Fatalf("event %d (%s): %v\n%.300q", i, tpl.Name, err, buf)
				}
				if ev.Name != tpl.Event {
					t.Fatalf("event %d: decoded %q, template %s", i, ev.Name, tpl.Name)
				}
				wantFraming := bonnie.FramingDatagram
				if f == loadgen.DList {
					wantFraming = bonnie.FramingDList
				}
				if ev.Framing != wantFraming {
					t.Fatalf("event %d: framing %v", i, ev.Framing)
				}
				k := ev.Key()
				if j, dup := keys[k]; dup {
					t.Fatalf("events %d and %d have the same key", j, i)
				}
				keys[k] = i
				// Sizes stay those of the capture, give or take the
				// session ids' random part and the longer UIDs of later
				// rounds.
				if d := len(js) - (tpl.Size - len("log\x00EVENT\x00\x00\x00\x000\x00\x00")); d < -12 || d > 60 {
					t.Fatalf("event %d (%s): JSON of %d bytes, capture's %d", i, tpl.Name, len(js), tpl.Size)
				}
				switch {
				case len(buf) > 10000:
					big++
				case len(buf) < 440 || len(buf) > 2000: // dlist framing adds ~100 bytes
					t.Fatalf("event %d (%s): %d bytes, outside 440-2000", i, tpl.Name, len(buf))
				default:
					small++
				}
			}
			// The 15 KB MessageAppend is one per round of 92.
			if want := int(n / 92); big < want || big > want+1 {
				t.Errorf("%d events over 10 KB in %d, want about %d", big, n, want)
			}
		})
	}
}

// TestRoundsShiftUIDsAndSessions: round r moves UIDs and modseq by
// r*Stride and gets sessions of its own, while a Login and the Logout of
// the same captured session stay paired within a round.
func TestRoundsShiftUIDsAndSessions(t *testing.T) {
	g := newGen(t, loadgen.Datagram, 42, func() time.Time { return fixedNow })
	n := int64(len(g.Templates()))
	find := func(name string) int64 {
		for i, tp := range g.Templates() {
			if strings.HasPrefix(tp.Name, name) {
				return int64(i)
			}
		}
		t.Fatalf("no template %s", name)
		return 0
	}
	decode := func(i int64) *bonnie.Event {
		ev, err := bonnie.Decode(g.Event(nil, i))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	stride := uint32(g.Stride())
	if stride < 100 {
		t.Fatalf("stride %d: the captures have modseq up to 56", stride)
	}
	app, flags, login, logout := find("012-"), find("030-"), find("005-"), find("074-")
	for _, r := range []int64{0, 1, 7, 10000} {
		shift := uint32(r) * stride
		ev := decode(r*n + app)
		if len(ev.UIDs) != 1 || ev.UIDs[0] != 1+shift || ev.Modseq != uint64(10+shift) {
			t.Errorf("round %d append: uids %v modseq %d, want [%d] %d", r, ev.UIDs, ev.Modseq, 1+shift, 10+shift)
		}
		ev = decode(r*n + flags)
		if want := []uint32{1 + shift, 2 + shift, 3 + shift}; len(ev.UIDs) != 3 || ev.UIDs[0] != want[0] || ev.UIDs[2] != want[2] {
			t.Errorf("round %d FlagsSet: uids %v, want %v", r, ev.UIDs, want)
		}
		in, out := decode(r*n+login), decode(r*n+logout)
		if in.SessionID == "" || in.SessionID != out.SessionID {
			t.Errorf("round %d: Login session %q, Logout session %q", r, in.SessionID, out.SessionID)
		}
		if r > 0 && in.SessionID == decode(login).SessionID {
			t.Errorf("round %d reuses round 0's session %q", r, in.SessionID)
		}
	}
	// The same run id and clock give the same events; another run id,
	// other sessions.
	a := newGen(t, loadgen.Datagram, 42, func() time.Time { return fixedNow }).Event(nil, login)
	b := newGen(t, loadgen.Datagram, 43, func() time.Time { return fixedNow }).Event(nil, login)
	if ea, eb := mustDecode(t, a), mustDecode(t, b); ea.SessionID == eb.SessionID {
		t.Errorf("two runs share session %q", ea.SessionID)
	}
}

func mustDecode(t *testing.T, raw []byte) *bonnie.Event {
	t.Helper()
	ev, err := bonnie.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestTimestamps: the wall clock in Cyrus's format (milliseconds, Z),
// strictly increasing even when the clock stands still.
func TestTimestamps(t *testing.T) {
	g := newGen(t, loadgen.Datagram, 1, func() time.Time { return fixedNow })
	var last time.Time
	for i := range int64(200) {
		ev := mustDecode(t, g.Event(nil, i))
		if len(ev.Timestamp) != len("2026-11-28T20:24:27.022Z") || !strings.HasSuffix(ev.Timestamp, "Z") {
			t.Fatalf("timestamp %q", ev.Timestamp)
		}
		if i == 0 && !ev.Time.Equal(fixedNow) {
			t.Fatalf("first timestamp %s, want the clock %s", ev.Time, fixedNow)
		}
		if !ev.Time.After(last) {
			t.Fatalf("event %d: timestamp %s not after %s", i, ev.Time, last)
		}
		last = ev.Time
	}
}

// TestDListFramingIsCyrus: the dlist request is framed as Cyrus frames it
// (compared with a real capture), its literal counts the JSON's bytes, and
// it carries the same notification as the datagram of the same event.
func TestDListFramingIsCyrus(t *testing.T) {
	capture, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cyrus-3.6.1-dlist", "006-MessageAppend.bin"))
	if err != nil {
		t.Fatal("dlist capture missing from the repository:", err)
	}
	clock := func() time.Time { return fixedNow }
	d := newGen(t, loadgen.DList, 9, clock)
	g := newGen(t, loadgen.Datagram, 9, clock)
	for i := range int64(200) {
		raw := d.Event(nil, i)
		head, _, _ := bytes.Cut(raw, []byte("{"))
		want, _, _ := bytes.Cut(capture, []byte("{"))
		if !bytes.Equal(head, want) {
			t.Fatalf("request starts %q, Cyrus's %q", head, want)
		}
		js := jsonOf(t, loadgen.DList, raw)
		lit := []byte("{" + itoa(len(js)) + "+}\r\n")
		if !bytes.Contains(raw, lit) {
			t.Fatalf("event %d: literal of %d bytes not announced as %q", i, len(js), lit)
		}
		dg := g.Event(nil, i)
		if !bytes.Equal(js, jsonOf(t, loadgen.Datagram, dg)) {
			t.Fatalf("event %d: dlist and datagram JSON differ", i)
		}
		if mustDecode(t, raw).Key() != mustDecode(t, dg).Key() {
			t.Fatalf("event %d: dlist and datagram keys differ", i)
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestEmbeddedTemplatesAreTheCaptures keeps the embedded copy in step with
// the project's capture set.
func TestEmbeddedTemplatesAreTheCaptures(t *testing.T) {
	raws, names := loadgen.Embedded()
	for i, n := range names {
		want, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cyrus-3.6.1", n))
		if err != nil {
			t.Fatal("capture missing from the repository:", err)
		}
		if !bytes.Equal(raws[i], want) {
			t.Errorf("%s differs from testdata/cyrus-3.6.1/%s", n, n)
		}
	}
}

// TestGeneratorConcurrent: workers share one generator.
func TestGeneratorConcurrent(t *testing.T) {
	g := newGen(t, loadgen.DList, 0, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	keys := map[string]bool{}
	for w := range 4 {
		wg.Go(func() {
			var buf []byte
			for i := int64(w); i < 2000; i += 4 {
				buf = g.Event(buf[:0], i)
				ev, err := bonnie.Decode(buf)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				keys[ev.Key()] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(keys) != 2000 {
		t.Errorf("%d distinct keys in 2000 events", len(keys))
	}
}

// TestTemplatesDir: captures from a directory; MAIL and SIEVE skipped.
func TestTemplatesDir(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "cyrus-3.6.1")
	raws, names, err := loadgen.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	g, err := loadgen.New(loadgen.Options{Templates: raws, Names: names})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Templates()) != 92 || len(g.Skipped()) != 6 {
		t.Errorf("%d templates, %d skipped (%v); want 92 and the 6 MAIL/SIEVE", len(g.Templates()), len(g.Skipped()), g.Skipped())
	}
	if _, err := loadgen.New(loadgen.Options{Templates: [][]byte{[]byte("log\x00MAIL\x00\x00a\x00b\x000\x00hi\x00")}}); err == nil {
		t.Error("no EVENT template: want an error")
	}
}
