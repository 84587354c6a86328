// Package loadgen makes realistic Cyrus IMAP event notifications for load
// tests: real notifications captured from Cyrus 3.6.1 (class EVENT, 92 of
// them, one IMAP/LMTP scenario from Login to Logout) replayed over and over,
// each copy made unique the way a real server makes them unique.
//
// Event i is template i mod N of round i / N (N templates), with:
//
//   - "timestamp": the wall clock, in milliseconds as Cyrus writes it,
//     strictly increasing across the generator (so two events are never
//     equal; above 1000 events/s the timestamps run ahead of the clock);
//   - "vnd.cmu.sessionId" and "vnd.fastmail.sessionId": one new session per
//     captured session and round (a Login and its Logout stay paired), and
//     unique to the generator's run id, so that two runs never collide;
//   - UIDs (the uri's ";UID=", "uidset", "vnd.cmu.oldUidset", "uidnext")
//     and "modseq": shifted by round × Stride, so that each round appends,
//     flags, copies and expunges messages of its own, as a busy server
//     does.
//
// Everything else is byte for byte what Cyrus sent, so sizes stay real
// (448 to 1800 bytes, and the 15 KB MessageAppend once per round). The JSON
// stays compact and valid with "event" first. Framing is the datagram one
// (notifysocket: PATH) or the dlist one (notifysocket: dlist:PATH), whose
// literal is re-counted.
package loadgen

import (
	"bytes"
	"crypto/rand"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

//go:embed templates/*.bin
var embedded embed.FS

// Framing is how an event is put on the wire.
type Framing int

const (
	// Datagram is Cyrus's default transport: one AF_UNIX datagram per
	// notification, fields NUL-terminated.
	Datagram Framing = iota
	// DList is the synchronous transport: one dlist NOTIFY request per
	// connection, the JSON as a LITERAL+ ({n+}).
	DList
)

func (f Framing) String() string {
	if f == DList {
		return "dlist"
	}
	return "datagram"
}

// Template is one captured notification, split where the generator
// changes it.
type Template struct {
	// Name is the capture's file name ("012-MessageAppend.bin").
	Name string
	// Event is the JSON "event" name.
	Event string
	// Size is the captured datagram's size in bytes.
	Size   int
	method string
	parts  []part
}

type holeKind int

const (
	literal   holeKind = iota
	timestamp          // "timestamp":"<here>"
	session            // "vnd.cmu.sessionId":"<here>", vnd.fastmail.sessionId
	number             // "modseq":<here>, "uidnext":<here>, ";UID=<here>"
	uidset             // "uidset":"<here>", "vnd.cmu.oldUidset":"<here>"
)

type part struct {
	kind holeKind
	lit  []byte         // literal: the bytes; session: the prefix kept
	loc  *time.Location // timestamp: the zone the capture was written in
	n    uint64         // number: the captured value; session: its index
	set  []uint64       // uidset: pairs lo, hi (lo == hi for a single UID)
}

// Options configure a Generator.
type Options struct {
	Framing Framing
	// Templates are raw datagrams (as captured); nil uses the embedded
	// Cyrus 3.6.1 captures. Only class EVENT is used.
	Templates [][]byte
	// Names optionally name Templates, index for index.
	Names []string
	// RunID makes this run's sessions differ from every other run's; 0
	// picks a random one.
	RunID uint64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Generator makes events. Event is safe for concurrent use.
type Generator struct {
	framing   Framing
	templates []*Template
	sessions  int
	stride    uint64
	run       uint64
	now       func() time.Time
	lastMS    atomic.Int64
	skipped   []string
}

// Embedded returns the embedded captures and their file names, in capture
// order.
func Embedded() (raws [][]byte, names []string) {
	ents, err := fs.Glob(embedded, "templates/*.bin")
	if err != nil {
		panic(err) // constant pattern
	}
	slices.Sort(ents)
	for _, n := range ents {
		b, err := embedded.ReadFile(n)
		if err != nil {
			panic(err) // embedded
		}
		raws = append(raws, b)
		names = append(names, filepath.Base(n))
	}
	return raws, names
}

// ReadDir reads every *.bin file of dir (raw datagrams as Cyrus sent them),
// in name order.
func ReadDir(dir string) (raws [][]byte, names []string, err error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.bin"))
	if err != nil {
		return nil, nil, err
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("no *.bin captures in %s", dir)
	}
	slices.Sort(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		raws = append(raws, b)
		names = append(names, filepath.Base(f))
	}
	return raws, names, nil
}

// New compiles the templates.
func New(o Options) (*Generator, error) {
	raws, names := o.Templates, o.Names
	if raws == nil {
		raws, names = Embedded()
	}
	g := &Generator{framing: o.Framing, run: o.RunID, now: o.Now}
	if g.now == nil {
		g.now = time.Now
	}
	if g.run == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		g.run = binary.LittleEndian.Uint64(b[:]) | 1
	}
	sessions := map[string]uint64{}
	var max uint64
	for i, raw := range raws {
		name := fmt.Sprintf("template %d", i)
		if i < len(names) {
			name = names[i]
		}
		t, err := compile(name, raw, sessions, &max)
		if errors.Is(err, errNotEvent) {
			g.skipped = append(g.skipped, name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		g.templates = append(g.templates, t)
	}
	if len(g.templates) == 0 {
		return nil, errors.New("no usable template (class EVENT datagrams)")
	}
	g.sessions = len(sessions)
	g.stride = 1
	for g.stride <= max {
		g.stride *= 10
	}
	return g, nil
}

// Templates returns the templates one round replays, in order.
func (g *Generator) Templates() []*Template { return g.templates }

// Skipped names the inputs that were not class EVENT datagrams.
func (g *Generator) Skipped() []string { return g.skipped }

// Stride is the UID and modseq shift from one round to the next.
func (g *Generator) Stride() uint64 { return g.stride }

// RunID returns the run id in the session ids.
func (g *Generator) RunID() uint64 { return g.run }

// Framing returns the wire framing.
func (g *Generator) Framing() Framing { return g.framing }

var errNotEvent = errors.New("not a class EVENT datagram")

var (
	reTimestamp = regexp.MustCompile(`"timestamp":"([^"\\]*)"`)
	reSession   = regexp.MustCompile(`"(?:vnd\.cmu\.sessionId|vnd\.fastmail\.sessionId)":"([^"\\]*)"`)
	reNumber    = regexp.MustCompile(`"(?:modseq|uidnext)":([0-9]+)|/;UID=([0-9]+)"`)
	reUIDSet    = regexp.MustCompile(`"(?:uidset|vnd\.cmu\.oldUidset)":"([0-9:,]+)"`)
	reEvent     = regexp.MustCompile(`^\{"event":"([^"\\]+)"`)
)

const tsLayout = "2006-01-02T15:04:05.000Z07:00"

// compile splits one captured datagram. sessions numbers the session ids
// seen so far; max grows to the largest UID or modseq.
func compile(name string, raw []byte, sessions map[string]uint64, max *uint64) (*Template, error) {
	f := bytes.Split(raw, []byte{0})
	// method class priority user mailbox nopt message "" (trailing NUL)
	if len(f) < 8 || string(f[1]) != "EVENT" || string(f[5]) != "0" {
		return nil, errNotEvent
	}
	if len(f) != 8 || len(f[7]) != 0 || len(f[2])+len(f[3])+len(f[4]) != 0 {
		return nil, fmt.Errorf("unexpected EVENT datagram layout (%d fields)", len(f))
	}
	msg := f[6]
	m := reEvent.FindSubmatch(msg)
	if m == nil {
		return nil, errors.New(`message is not JSON starting with "event"`)
	}
	t := &Template{Name: name, Event: string(m[1]), Size: len(raw), method: string(f[0])}
	type hole struct {
		start, end int
		p          part
	}
	var holes []hole
	for _, ix := range reTimestamp.FindAllSubmatchIndex(msg, -1) {
		s := string(msg[ix[2]:ix[3]])
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, fmt.Errorf("timestamp %q: %w", s, err)
		}
		holes = append(holes, hole{ix[2], ix[3], part{kind: timestamp, loc: ts.Location()}})
	}
	for _, ix := range reSession.FindAllSubmatchIndex(msg, -1) {
		s := string(msg[ix[2]:ix[3]])
		n, ok := sessions[s]
		if !ok {
			n = uint64(len(sessions))
			sessions[s] = n
		}
		prefix := s
		if i := strings.LastIndexByte(s, '-'); i >= 0 {
			prefix = s[:i]
		}
		holes = append(holes, hole{ix[2], ix[3], part{kind: session, lit: []byte(prefix), n: n}})
	}
	for _, ix := range reNumber.FindAllSubmatchIndex(msg, -1) {
		a, b := ix[2], ix[3]
		if a < 0 {
			a, b = ix[4], ix[5]
		}
		v, err := strconv.ParseUint(string(msg[a:b]), 10, 64)
		if err != nil {
			return nil, err
		}
		*max = maxU(*max, v)
		holes = append(holes, hole{a, b, part{kind: number, n: v}})
	}
	for _, ix := range reUIDSet.FindAllSubmatchIndex(msg, -1) {
		set, err := parseSet(string(msg[ix[2]:ix[3]]))
		if err != nil {
			return nil, err
		}
		for _, v := range set {
			*max = maxU(*max, v)
		}
		holes = append(holes, hole{ix[2], ix[3], part{kind: uidset, set: set}})
	}
	if len(holes) == 0 {
		return nil, errors.New("nothing to vary (no timestamp, session, UID or modseq)")
	}
	slices.SortFunc(holes, func(a, b hole) int { return a.start - b.start })
	at := 0
	for _, h := range holes {
		if h.start < at {
			return nil, errors.New("overlapping fields")
		}
		t.parts = append(t.parts, part{kind: literal, lit: msg[at:h.start]}, h.p)
		at = h.end
	}
	t.parts = append(t.parts, part{kind: literal, lit: msg[at:]})
	return t, nil
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// parseSet reads an IMAP sequence set of UIDs ("1,4:6") as lo, hi pairs.
func parseSet(s string) ([]uint64, error) {
	var out []uint64
	for r := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(r, ":")
		a, err := strconv.ParseUint(lo, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("uid set %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 32); err != nil {
				return nil, fmt.Errorf("uid set %q: %w", s, err)
			}
		}
		out = append(out, a, b)
	}
	return out, nil
}

// Round returns which round and template event i is.
func (g *Generator) Round(i int64) (round int64, t *Template) {
	n := int64(len(g.templates))
	return i / n, g.templates[i%n]
}

// Event appends the wire form of event i (0, 1, ...) to dst.
func (g *Generator) Event(dst []byte, i int64) []byte {
	round, t := g.Round(i)
	switch g.framing {
	case DList:
		// The literal's length must be known before the JSON is written:
		// write the JSON after a worst-case-size gap, then slide it.
		dst = append(dst, "NOTIFY %(METHOD "...)
		dst = appendAtom(dst, t.method)
		dst = append(dst, " CLASS EVENT PRIORITY NIL USER NIL MAILBOX NIL OPTIONS () MESSAGE {"...)
		head := len(dst)
		const gap = 24 // "NNNNNNNNNN+}\r\n" with room to spare
		dst = append(dst, make([]byte, gap)...)
		js := len(dst)
		dst = g.json(dst, round, t)
		n := len(dst) - js
		var lit [gap]byte
		l := append(strconv.AppendInt(lit[:0], int64(n), 10), "+}\r\n"...)
		copy(dst[head:], l)
		copy(dst[head+len(l):], dst[js:])
		dst = dst[:head+len(l)+n]
		dst = append(dst, " FILEPATH NIL)\r\n"...)
		return dst
	default:
		dst = append(dst, t.method...)
		dst = append(dst, "\x00EVENT\x00\x00\x00\x00"+"0\x00"...)
		dst = g.json(dst, round, t)
		return append(dst, 0)
	}
}

// appendAtom writes a dlist atom, or a quoted string when s cannot be one.
func appendAtom(dst []byte, s string) []byte {
	if s != "" && !strings.ContainsAny(s, " ()[]{}%*\"\\\r\n") && !strings.EqualFold(s, "NIL") {
		return append(dst, s...)
	}
	return strconv.AppendQuote(dst, s)
}

func (g *Generator) json(dst []byte, round int64, t *Template) []byte {
	shift := uint64(round) * g.stride
	for i := range t.parts {
		p := &t.parts[i]
		switch p.kind {
		case literal:
			dst = append(dst, p.lit...)
		case timestamp:
			dst = time.UnixMilli(g.tick()).In(p.loc).AppendFormat(dst, tsLayout)
		case session:
			dst = append(dst, p.lit...)
			dst = append(dst, '-')
			dst = strconv.AppendUint(dst, mix(g.run+(uint64(round)*uint64(g.sessions)+p.n)*0x9e3779b97f4a7c15), 10)
		case number:
			dst = strconv.AppendUint(dst, p.n+shift, 10)
		case uidset:
			for j := 0; j < len(p.set); j += 2 {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = strconv.AppendUint(dst, p.set[j]+shift, 10)
				if p.set[j+1] != p.set[j] {
					dst = append(dst, ':')
					dst = strconv.AppendUint(dst, p.set[j+1]+shift, 10)
				}
			}
		}
	}
	return dst
}

// tick returns the wall clock in milliseconds, but always later than the
// last value returned.
func (g *Generator) tick() int64 {
	now := g.now().UnixMilli()
	for {
		last := g.lastMS.Load()
		next := max(now, last+1)
		if g.lastMS.CompareAndSwap(last, next) {
			return next
		}
	}
}

// mix is SplitMix64's finaliser: a bijection, so distinct inputs give
// distinct session numbers.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
