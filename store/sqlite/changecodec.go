package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// The records.changes column (schema version 2) holds a copy of the
// record's changes in seq order, so that reading the log is one query over
// one table: a sink catching up used to spend a third of its time stepping
// through the changes table row by row. The changes table stays the
// indexed form (History, StateAt, entity_state) and the one the hash
// covers; Verify checks that the copy says the same.
//
// Encoding: a version byte (changesV1), the number of changes as a
// uvarint, then per change seven uvarint-length-prefixed strings: entity,
// id, field, from, to, actor, time (logchain.TimeLayout). The changes of a
// record nearly always share their time: a time equal to the previous
// change's is stored as the empty string.
const changesV1 = 1

// errChangesCorrupt means a stored copy of the changes cannot be decoded.
var errChangesCorrupt = errors.New("sqlite: stored changes are corrupt")

// maxChangesPerRecord bounds a decoded count, so that a corrupt length
// cannot make the reader allocate without end.
const maxChangesPerRecord = 1 << 20

func appendChanges(dst []byte, chs []logchain.Change) []byte {
	dst = append(dst, changesV1)
	dst = binary.AppendUvarint(dst, uint64(len(chs)))
	prevTime := ""
	for i := range chs {
		c := &chs[i]
		t := c.Time
		if i > 0 && t == prevTime {
			t = ""
		}
		prevTime = c.Time
		for _, s := range [...]string{c.Entity, c.ID, c.Field, c.From, c.To, c.Actor, t} {
			dst = binary.AppendUvarint(dst, uint64(len(s)))
			dst = append(dst, s...)
		}
	}
	return dst
}

// decodeChanges decodes a stored copy into the changes of the record at
// pos. The changes' strings point into b, which the caller must not
// modify afterwards.
func decodeChanges(b []byte, pos bonnie.Position) ([]bonnie.Change, error) {
	if len(b) == 0 || b[0] != changesV1 {
		return nil, fmt.Errorf("%w at position %d: unknown encoding", errChangesCorrupt, pos)
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxChangesPerRecord || n > uint64(len(b)) {
		return nil, fmt.Errorf("%w at position %d: bad count", errChangesCorrupt, pos)
	}
	b = b[k:]
	if n == 0 {
		if len(b) != 0 {
			return nil, fmt.Errorf("%w at position %d: trailing bytes", errChangesCorrupt, pos)
		}
		return nil, nil
	}
	// The caller owns b and never changes it: the strings are views of
	// it, one allocation per record instead of one per field.
	all := unsafe.String(unsafe.SliceData(b), len(b))
	out := make([]bonnie.Change, n)
	off := 0
	field := func() (string, error) {
		l, k := binary.Uvarint(b[off:])
		if k <= 0 || l > uint64(len(b)-off-k) {
			return "", fmt.Errorf("%w at position %d: bad length", errChangesCorrupt, pos)
		}
		s := all[off+k : off+k+int(l)]
		off += k + int(l)
		return s, nil
	}
	var (
		prevTime string
		t        time.Time
	)
	for i := range out {
		var f [7]string
		for j := range f {
			s, err := field()
			if err != nil {
				return nil, err
			}
			f[j] = s
		}
		if f[6] != "" && f[6] != prevTime {
			var err error
			if t, err = logchain.ParseTime(f[6]); err != nil {
				return nil, fmt.Errorf("%w at position %d: %w", errChangesCorrupt, pos, err)
			}
			prevTime = f[6]
		} else if i == 0 {
			return nil, fmt.Errorf("%w at position %d: first change without a time", errChangesCorrupt, pos)
		}
		out[i] = bonnie.Change{
			Entity: bonnie.EntityKind(f[0]), ID: f[1], Field: f[2], From: f[3], To: f[4],
			Actor: f[5], Time: t, Cause: pos,
		}
	}
	if off != len(b) {
		return nil, fmt.Errorf("%w at position %d: trailing bytes", errChangesCorrupt, pos)
	}
	return out, nil
}
