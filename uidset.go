package bonnie

import (
	"fmt"
	"strings"
)

// MaxUIDs bounds how many UIDs one event's uidset may expand to. A sequence
// set is tiny on the wire ("1:4294967295") but its expansion is not; the
// bound (4 MiB of UIDs) is far above what one Cyrus command touches in one
// mailbox, and an event over it is rejected with ErrTooLarge rather than
// exhausting memory.
const MaxUIDs = 1 << 20

// ParseUIDSet expands an IMAP sequence-set of UIDs ("1:3", "1,4:6", as in
// Cyrus's uidset and vnd.cmu.oldUidset) into the UIDs in the order written.
// A range may be written high:low. "*" is refused: Cyrus always writes
// explicit UIDs, and "the largest UID" cannot be known from the event. The
// empty string gives no UIDs. Errors wrap ErrMalformed, or ErrTooLarge past
// MaxUIDs.
func ParseUIDSet(s string) ([]uint32, error) {
	return appendUIDSet(nil, s)
}

// appendUIDSet appends the expansion of s to dst, keeping the total within
// MaxUIDs. It counts before allocating so that a hostile range costs nothing.
func appendUIDSet(dst []uint32, s string) ([]uint32, error) {
	if s == "" {
		return dst, nil
	}
	total := len(dst)
	for rest, more := s, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ",")
		lo, hi, err := uidRange(part)
		if err != nil {
			return dst, fmt.Errorf("%w: uid set %q: %v", ErrMalformed, s, err)
		}
		n := uint64(hi) - uint64(lo) + 1
		if uint64(total)+n > MaxUIDs {
			return dst, fmt.Errorf("%w: uid set %q expands to more than %d UIDs", ErrTooLarge, s, MaxUIDs)
		}
		total += int(n)
	}
	if cap(dst) < total {
		grown := make([]uint32, len(dst), total)
		copy(grown, dst)
		dst = grown
	}
	for rest, more := s, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ",")
		lo, hi, _ := uidRange(part)
		for u := uint64(lo); u <= uint64(hi); u++ {
			dst = append(dst, uint32(u))
		}
	}
	return dst, nil
}

// uidRange parses "n" or "n:m" into an ordered range.
func uidRange(part string) (lo, hi uint32, err error) {
	a, b, isRange := strings.Cut(part, ":")
	if lo, err = parseNZ32(a); err != nil {
		return 0, 0, fmt.Errorf("%q: %w", part, err)
	}
	hi = lo
	if isRange {
		if hi, err = parseNZ32(b); err != nil {
			return 0, 0, fmt.Errorf("%q: %w", part, err)
		}
	}
	if hi < lo {
		lo, hi = hi, lo
	}
	return lo, hi, nil
}
