package logchain

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// The expected hashes below were computed by an independent Python
// implementation written from the package documentation alone (hashlib,
// struct.pack('>Q')), not from this code.
func golden() (r1, r2 Record) {
	r1 = Record{Position: 1, ID: "01936b2e-8c4a-7b3e-9f00-000000000001", Key: string(bytes.Repeat([]byte("a"), 64)),
		Appended: "2026-11-28T20:23:32.393000000Z", Event: []byte(`{"type":"Login","raw":"bG9n"}`)}
	r2 = Record{Position: 2, ID: "01936b2e-8c4a-7b3e-9f00-000000000002", Key: string(bytes.Repeat([]byte("b"), 64)),
		Appended: "2026-11-28T20:23:33.000000001Z", Event: []byte(`{"type":"MessageAppend","user":"Jürgen"}`),
		Changes: []Change{
			{"message", "F/1/1", "state", "", "present", "alice", "2026-11-28T20:23:32.000000000Z"},
			{"message", "F/1/1", `flag:\Seen`, "", "set", "", "2026-11-28T20:23:32.000000000Z"},
		}}
	return r1, r2
}

func TestGolden(t *testing.T) {
	r1, r2 := golden()
	c1 := Canonical(&r1)
	if len(c1) != 233 || hex.EncodeToString(c1[:40]) != "0000000000000012626f6e6e69652f6c6f67636861696e2f76310000000000000001000000000000" {
		t.Fatalf("canonical(1) = %d bytes %x...", len(c1), c1[:40])
	}
	if len(c1) != r1.Size() {
		t.Fatalf("Size = %d, encoding is %d bytes", r1.Size(), len(c1))
	}
	h1 := Hash(Genesis(), &r1)
	if got := hex.EncodeToString(h1); got != "faa2d0aec58032259672e11520ae72c4d75156cdc97e76bc2ab1c446be35ca61" {
		t.Fatalf("hash(1) = %s", got)
	}
	h2 := Hash(h1, &r2)
	if got := hex.EncodeToString(h2); got != "730189b870108b221a1de5b6fcc29e978fe5fa308bfd54e9b21542a2d41354cc" {
		t.Fatalf("hash(2) = %s", got)
	}
	if len(Canonical(&r2)) != r2.Size() {
		t.Fatal("Size disagrees with the encoding")
	}
}

// TestInjective changes one field at a time, including moves of bytes
// between neighbouring fields, and expects a different encoding each time.
func TestInjective(t *testing.T) {
	_, base := golden()
	variants := []func(r *Record){
		func(r *Record) { r.Position++ },
		func(r *Record) { r.ID += "x" },
		func(r *Record) { r.ID, r.Key = r.ID+r.Key[:1], r.Key[1:] }, // move a byte across a boundary
		func(r *Record) { r.Appended = "2026-11-28T20:23:33.000000002Z" },
		func(r *Record) { r.Event = append(bytes.Clone(r.Event), ' ') },
		func(r *Record) { r.Changes = r.Changes[:1] },
		func(r *Record) { r.Changes = []Change{r.Changes[1], r.Changes[0]} },
		func(r *Record) { c := r.Changes[0]; c.From, c.To = c.To, c.From; r.Changes = []Change{c, r.Changes[1]} },
		func(r *Record) {
			c := r.Changes[0]
			c.ID, c.Field = c.ID+"s", c.Field[1:]
			r.Changes = []Change{c, r.Changes[1]}
		},
		func(r *Record) { c := r.Changes[1]; c.Actor = "x"; r.Changes = []Change{r.Changes[0], c} },
		func(r *Record) { r.Changes = append(r.Changes, Change{}) },
	}
	seen := map[string]int{string(Canonical(&base)): -1}
	for i, v := range variants {
		_, r := golden()
		v(&r)
		c := string(Canonical(&r))
		if j, ok := seen[c]; ok {
			t.Errorf("variant %d encodes like %d", i, j)
		}
		seen[c] = i
	}
}

func TestTime(t *testing.T) {
	at := time.Date(2026, 11, 28, 21, 23, 32, 393000000, time.FixedZone("CET", 3600))
	s := FormatTime(at)
	if s != "2026-11-28T20:23:32.393000000Z" {
		t.Fatalf("FormatTime = %s", s)
	}
	back, err := ParseTime(s)
	if err != nil || !back.Equal(at) {
		t.Fatalf("ParseTime = %v, %v", back, err)
	}
	// Text order is time order.
	a, b := FormatTime(at), FormatTime(at.Add(time.Nanosecond))
	if !(a < b) {
		t.Fatalf("%s !< %s", a, b)
	}
	if _, err := ParseTime("yesterday"); err == nil {
		t.Fatal("ParseTime accepted garbage")
	}
}

func TestFromChange(t *testing.T) {
	c := bonnie.Change{Entity: bonnie.KindMessage, ID: "m", Field: "state", To: "present", Actor: "a",
		Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Cause: 9}
	want := Change{"message", "m", "state", "", "present", "a", "2026-01-02T03:04:05.000000006Z"}
	if got := FromChange(c); got != want {
		t.Fatalf("FromChange = %+v", got)
	}
}

func chain(n int) (recs []Record, prevs, hashes [][]byte) {
	prev := Genesis()
	for i := 1; i <= n; i++ {
		r := Record{Position: bonnie.Position(i), ID: "id", Key: string(rune('a' + i)), Appended: "t", Event: []byte{byte(i)}}
		h := Hash(prev, &r)
		recs, prevs, hashes = append(recs, r), append(prevs, prev), append(hashes, h)
		prev = h
	}
	return
}

func TestVerifier(t *testing.T) {
	recs, prevs, hashes := chain(6)
	walk := func(v *Verifier, recs []Record, prevs, hashes [][]byte) *bonnie.ChainError {
		for i := range recs {
			if err := v.Next(&recs[i], prevs[i], hashes[i]); err != nil {
				return err
			}
		}
		return v.Finish()
	}
	if err := walk(NewVerifier(), recs, prevs, hashes); err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(Anchor{Position: 6, Hash: hashes[5]}, Anchor{Position: 3, Hash: hashes[2]})
	if err := walk(v, recs, prevs, hashes); err != nil {
		t.Fatal(err)
	}
	if p, h := v.Head(); p != 6 || !bytes.Equal(h, hashes[5]) {
		t.Fatalf("Head = %d %x", p, h)
	}
	for _, tc := range []struct {
		name    string
		mutate  func(recs []Record, prevs, hashes [][]byte) ([]Record, [][]byte, [][]byte)
		anchors []Anchor
		want    bonnie.Position
	}{
		{"gap", func(r []Record, p, h [][]byte) ([]Record, [][]byte, [][]byte) {
			return append(r[:2:2], r[3:]...), append(p[:2:2], p[3:]...), append(h[:2:2], h[3:]...)
		}, nil, 3},
		{"content", func(r []Record, p, h [][]byte) ([]Record, [][]byte, [][]byte) {
			r[3].Event = []byte("x")
			return r, p, h
		}, nil, 4},
		{"genesis", func(r []Record, p, h [][]byte) ([]Record, [][]byte, [][]byte) {
			p[0] = bytes.Repeat([]byte{1}, 32)
			return r, p, h
		}, nil, 1},
		{"short of anchor", func(r []Record, p, h [][]byte) ([]Record, [][]byte, [][]byte) {
			return r[:4], p[:4], h[:4]
		}, []Anchor{{Position: 6}}, 5},
		{"anchor differs", func(r []Record, p, h [][]byte) ([]Record, [][]byte, [][]byte) { return r, p, h },
			[]Anchor{{Position: 2, Hash: make([]byte, 32)}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, p, h := chain(6)
			r, p, h = tc.mutate(r, p, h)
			err := walk(NewVerifier(tc.anchors...), r, p, h)
			if err == nil || err.Position != tc.want {
				t.Fatalf("got %v, want an error at %d", err, tc.want)
			}
		})
	}
}

func BenchmarkHash(b *testing.B) {
	_, r := golden()
	r.Event = bytes.Repeat([]byte("x"), 2700) // a typical stored event
	prev := Genesis()
	var buf []byte
	b.SetBytes(int64(r.Size()))
	for b.Loop() {
		buf = AppendCanonical(buf[:0], &r)
		prev = HashCanonical(prev, buf)
	}
}
