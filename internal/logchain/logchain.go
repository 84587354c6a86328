// Package logchain defines the canonical byte encoding of a log record and
// the hash chain built over it. It is the evidence format of Bonnie's log:
// anyone holding a copy of the stored records can recompute every hash with
// the rules below, without Bonnie's code. It knows nothing about storage, so
// that every log implementation (SQLite, PostgreSQL) chains records the same
// way and a verifier written once checks them all.
//
// # Encoding (version 1)
//
// Two primitive encodings are used:
//
//	u64(x) = x as 8 bytes, unsigned, big-endian
//	str(s) = u64(len(s)) || s           (the bytes of s, no terminator)
//
// The canonical bytes of a record are the concatenation, in this order, of:
//
//	str("bonnie/logchain/v1")         domain and version tag
//	u64(position)                     1 for the first record
//	str(id)                           the record's UUIDv7, lower-case text form
//	str(key)                          the event key (lower-case hex SHA-256)
//	str(appended)                     append time, see Times below
//	str(event)                        the event's JSON exactly as stored
//	u64(n)                            the number of changes
//	n times, in the record's change order (seq 0, 1, ...):
//	  str(entity) str(id) str(field) str(from) str(to) str(actor) str(time)
//
// Every string is the exact byte sequence the store holds (UTF-8 for
// text); nothing is normalised before hashing. Because every variable field
// is length-prefixed and the number of changes is given before them, the
// encoding is injective: two records that differ in any field, or in the
// number or order of their changes, have different canonical bytes.
//
// # Times
//
// Times (the append time and each change's time) are UTC, written with the
// Go layout "2006-01-02T15:04:05.000000000Z" (see [TimeLayout]): RFC 3339
// with exactly nine fractional digits and a literal "Z". The fixed width is
// deliberate: it makes the text order of stored times equal to their time
// order, so stores can compare them as strings.
//
// # Chain
//
//	hash(1) = SHA-256(genesis || canonical(1)),  genesis = 32 zero bytes
//	hash(p) = SHA-256(hash(p-1) || canonical(p))
//
// Each record stores the previous hash and its own hash. Positions are
// contiguous: 1, 2, ..., N.
//
// # What the chain proves
//
// A record whose hash recomputes proves that none of its fields changed since
// its hash was computed, and that it followed exactly the record whose hash
// it names. It cannot prove anything about the end of the log: someone who
// can write the store and knows this (public) algorithm can remove the last
// records, or rewrite every record from some position on and recompute their
// hashes, and the result is a valid chain. Only a (position, hash) pair kept
// outside the store (an [Anchor]: printed, mailed, timestamped by a third
// party) detects that: the record at that position must still have that
// hash, and the log must still reach that position.
package logchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Tag opens every canonical encoding; a future incompatible encoding gets a
// new tag, so that a hash can never be read under the wrong rules.
const Tag = "bonnie/logchain/v1"

// TimeLayout is how times are written before hashing and in storage: UTC,
// nine fractional digits, so that string order is time order.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

// Size is the length of a hash in bytes.
const Size = sha256.Size

// FormatTime renders t the way the chain hashes it (in UTC, see TimeLayout).
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// ParseTime reads a time written by FormatTime.
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(TimeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("logchain: bad time %q: %w", s, err)
	}
	return t, nil
}

// Genesis returns the previous hash of the first record: 32 zero bytes.
func Genesis() []byte { return make([]byte, Size) }

// Change is a change exactly as stored: every field as text, the time
// already formatted. Hashing the stored form rather than a bonnie.Change
// keeps the encoding independent of Go's formatting choices.
type Change struct {
	Entity, ID, Field, From, To, Actor, Time string
}

// FromChange converts a bonnie.Change into its stored form.
func FromChange(c bonnie.Change) Change {
	return Change{
		Entity: string(c.Entity), ID: c.ID, Field: c.Field,
		From: c.From, To: c.To, Actor: c.Actor, Time: FormatTime(c.Time),
	}
}

// Record is a record exactly as stored, the input of the canonical
// encoding.
type Record struct {
	Position bonnie.Position
	ID       string
	Key      string
	Appended string // FormatTime of the append time
	Event    []byte // the event's JSON as stored
	Changes  []Change
}

// Size returns the length of the canonical encoding of r.
func (r *Record) Size() int {
	n := 8 + len(Tag) + 8 + 8 + len(r.ID) + 8 + len(r.Key) + 8 + len(r.Appended) + 8 + len(r.Event) + 8
	for i := range r.Changes {
		c := &r.Changes[i]
		n += 7*8 + len(c.Entity) + len(c.ID) + len(c.Field) + len(c.From) + len(c.To) + len(c.Actor) + len(c.Time)
	}
	return n
}

// AppendCanonical appends the canonical encoding of r to dst, so that a
// caller hashing many records can reuse one buffer.
func AppendCanonical(dst []byte, r *Record) []byte {
	dst = appendStr(dst, Tag)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Position))
	dst = appendStr(dst, r.ID)
	dst = appendStr(dst, r.Key)
	dst = appendStr(dst, r.Appended)
	dst = binary.BigEndian.AppendUint64(dst, uint64(len(r.Event)))
	dst = append(dst, r.Event...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(len(r.Changes)))
	for i := range r.Changes {
		c := &r.Changes[i]
		for _, s := range [...]string{c.Entity, c.ID, c.Field, c.From, c.To, c.Actor, c.Time} {
			dst = appendStr(dst, s)
		}
	}
	return dst
}

// Canonical returns the canonical encoding of r.
func Canonical(r *Record) []byte { return AppendCanonical(make([]byte, 0, r.Size()), r) }

func appendStr(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(len(s)))
	return append(dst, s...)
}

// Hash returns SHA-256(prev || canonical(r)).
func Hash(prev []byte, r *Record) []byte {
	return HashCanonical(prev, Canonical(r))
}

// HashCanonical returns SHA-256(prev || canonical) for canonical bytes
// already encoded.
func HashCanonical(prev, canonical []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(canonical)
	return h.Sum(make([]byte, 0, Size))
}

// Anchor is a (position, hash) pair kept outside the store. It is the only
// thing that detects a removed or rewritten tail (see the package doc).
type Anchor struct {
	Position bonnie.Position
	Hash     []byte
}

// lookback is how many recent hashes a Verifier remembers to tell an
// insertion (a record chained to an older record than its predecessor) from
// other damage.
const lookback = 1024

// Verifier checks stored records one by one, in position order, and names
// the first bad position. Storage code feeds it what it reads; the checks
// and their wording are the same for every store.
type Verifier struct {
	next    bonnie.Position
	prev    []byte
	buf     []byte
	anchors map[bonnie.Position][]byte
	maxAnch bonnie.Position
	recent  map[string]bonnie.Position // hash -> position, last lookback records
	ring    [lookback]string
}

// NewVerifier starts a walk at position 1 that will also check anchors.
func NewVerifier(anchors ...Anchor) *Verifier {
	v := &Verifier{next: 1, prev: Genesis(), anchors: make(map[bonnie.Position][]byte, len(anchors)),
		recent: make(map[string]bonnie.Position, lookback)}
	for _, a := range anchors {
		v.anchors[a.Position] = a.Hash
		v.maxAnch = max(v.maxAnch, a.Position)
	}
	return v
}

// Expect returns the position the next record must have.
func (v *Verifier) Expect() bonnie.Position { return v.next }

// Next checks the next stored record r, whose stored previous hash and hash
// are storedPrev and storedHash. It returns nil or the first error found;
// after an error the walk must stop.
func (v *Verifier) Next(r *Record, storedPrev, storedHash []byte) *bonnie.ChainError {
	p := v.next
	if r.Position != p {
		if r.Position > p {
			return &bonnie.ChainError{Position: p, Reason: fmt.Sprintf("record %d missing (next stored record is %d)", p, r.Position)}
		}
		return &bonnie.ChainError{Position: p, Reason: fmt.Sprintf("record out of order: position %d where %d was expected", r.Position, p)}
	}
	v.buf = AppendCanonical(v.buf[:0], r)
	if !bytes.Equal(storedPrev, v.prev) {
		if j, ok := v.recent[string(storedPrev)]; ok && j < p-1 {
			what := fmt.Sprintf("records %d..%d are", j+1, p-1)
			if j+1 == p-1 {
				what = fmt.Sprintf("record %d is", j+1)
			}
			return &bonnie.ChainError{Position: j + 1, Reason: fmt.Sprintf(
				"%s not in the chain: record %d is chained to record %d (inserted)", what, p, j)}
		}
		if p > 1 && bytes.Equal(HashCanonical(storedPrev, v.buf), storedHash) {
			return &bonnie.ChainError{Position: p - 1, Reason: fmt.Sprintf(
				"record %d is not the record that record %d was chained to (replaced, hash recomputed)", p-1, p)}
		}
		return &bonnie.ChainError{Position: p, Reason: "stored previous hash does not match the previous record's hash"}
	}
	h := HashCanonical(v.prev, v.buf)
	if !bytes.Equal(h, storedHash) {
		return &bonnie.ChainError{Position: p, Reason: "hash mismatch: the record or its changes differ from what was hashed"}
	}
	if want, ok := v.anchors[p]; ok && !bytes.Equal(want, h) {
		return &bonnie.ChainError{Position: p, Reason: fmt.Sprintf(
			"hash differs from the anchor: the log at or before position %d was rewritten with recomputed hashes", p)}
	}
	slot := &v.ring[p%lookback]
	if *slot != "" {
		delete(v.recent, *slot)
	}
	*slot = string(h)
	v.recent[*slot] = p
	v.prev = h
	v.next++
	return nil
}

// Finish ends the walk and checks that the log reaches every anchor.
func (v *Verifier) Finish() *bonnie.ChainError {
	last := v.next - 1
	if v.maxAnch > last {
		return &bonnie.ChainError{Position: last + 1, Reason: fmt.Sprintf(
			"log ends at position %d but an anchor names position %d: records were removed from the tail", last, v.maxAnch)}
	}
	return nil
}

// Head returns the last verified position and its hash.
func (v *Verifier) Head() (bonnie.Position, []byte) { return v.next - 1, v.prev }
