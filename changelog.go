package bonnie

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Position is a record's place in the log: 1 for the first record, and
// strictly increasing. Position 0 means "before the first record", the
// place a new reader starts from.
type Position uint64

// Change is one field of one entity going from one value to another,
// recorded by the entity's setter while an event was applied. Values are
// strings; "" means absent (before creation, after removal).
type Change struct {
	Entity EntityKind `json:"entity"`
	ID     string     `json:"id"`
	Field  string     `json:"field"`
	From   string     `json:"from"`
	To     string     `json:"to"`
	// Actor is who caused the change, as the event named them.
	Actor string `json:"actor,omitempty"`
	// Time is the event's time (UTC).
	Time time.Time `json:"time"`
	// Cause is the log position of the event that caused the change; the
	// log fills it in on append.
	Cause Position `json:"cause,omitempty"`
}

func (c Change) String() string {
	return fmt.Sprintf("%s %s %s: %q -> %q", c.Entity, c.ID, c.Field, c.From, c.To)
}

// Record is one entry of the log: an event and the changes it caused,
// hash-chained to the record before it.
type Record struct {
	Position Position `json:"position"`
	// ID is a UUIDv7: time-ordered, unique across logs.
	ID string `json:"id"`
	// Key is the event's deterministic key (Event.Key); the log stores a
	// key once.
	Key      string    `json:"key"`
	Appended time.Time `json:"appended"`
	Event    *Event    `json:"event"`
	Changes  []Change  `json:"changes,omitempty"`
	// PrevHash and Hash chain the record: Hash = SHA-256(PrevHash ||
	// canonical bytes of the record).
	PrevHash []byte `json:"prevHash"`
	Hash     []byte `json:"hash"`
}

// Log is the append-only, hash-chained record of everything that
// happened. Implementations: store/sqlite (the embedded default); every
// implementation passes store/storetest.
type Log interface {
	// Append stores the event and its changes in one transaction and
	// returns the event's position. Appending an event whose Key is
	// already in the log stores nothing and returns the position it was
	// first stored at, with dup true.
	// Concurrent appends share transactions (group commit).
	Append(ctx context.Context, ev *Event, changes []Change) (pos Position, dup bool, err error)
	// Read returns up to limit records with positions after from, in
	// order. Only durable records are ever returned.
	Read(ctx context.Context, from Position, limit int) ([]Record, error)
	// Head returns the position of the last record (0 when empty).
	Head(ctx context.Context) (Position, error)
	// History returns every change of one entity in log order.
	History(ctx context.Context, kind EntityKind, id string) ([]Change, error)
	// StateAt folds an entity's changes whose event time is not after at
	// into field -> value (absent fields omitted), in log order: the order
	// they were applied in, so each change's From is what the fold held
	// before it. A zero at means now.
	StateAt(ctx context.Context, kind EntityKind, id string, at time.Time) (map[string]string, error)
	// Verify walks the hash chain and returns nil, or a *ChainError naming
	// the first bad position.
	Verify(ctx context.Context) error
	Close() error
}

// FilteredReader is an optional interface of a Log: a reader that wants
// only some event types (a sink's EventMask) has the log leave out the
// others without loading or decoding them. ReadMatching scans up to limit
// records with positions after from, in order, as Read does, and returns
// those whose event type is in mask (Events decoded, Changes included);
// last is the position of the last record scanned (from when there was
// none), where the reader continues. The engine uses it for sinks when the
// store has it, and Read otherwise.
type FilteredReader interface {
	ReadMatching(ctx context.Context, from Position, limit int, mask EventMask) (recs []Record, last Position, err error)
}

// ReadMatching reads up to limit records of lg after from and returns
// those whose event type is in mask, as FilteredReader.ReadMatching does:
// through the log's own filtering when it has it, else with Read, leaving
// the others out. last is the position of the last record scanned (from
// when there was none): a reader continues from there, and has read
// everything when last == from.
func ReadMatching(ctx context.Context, lg Log, from Position, limit int, mask EventMask) (recs []Record, last Position, err error) {
	if fr, ok := lg.(FilteredReader); ok {
		return fr.ReadMatching(ctx, from, limit, mask)
	}
	all, err := lg.Read(ctx, from, limit)
	if err != nil {
		return nil, from, err
	}
	if len(all) == 0 {
		return nil, from, nil
	}
	last = all[len(all)-1].Position
	if mask == AllEvents {
		return all, last, nil
	}
	recs = all[:0]
	for _, r := range all {
		if r.Event != nil && mask.Has(r.Event.Type) {
			recs = append(recs, r)
		}
	}
	return recs, last, nil
}

// EachMatching calls fn for every record of lg after from whose event type
// is in mask, in log order, reading a page at a time (ReadMatching), until
// the head or an error of fn; it returns the last position scanned.
func EachMatching(ctx context.Context, lg Log, from Position, mask EventMask, fn func(Record) error) (Position, error) {
	const page = 4096
	pos := from
	for {
		recs, last, err := ReadMatching(ctx, lg, pos, page, mask)
		if err != nil {
			return pos, err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return pos, err
			}
		}
		if last <= pos {
			return pos, nil
		}
		pos = last
	}
}

// ErrChainBroken is wrapped by every ChainError.
var ErrChainBroken = errors.New("bonnie: log hash chain broken")

// ChainError says where verification of the log failed and why.
type ChainError struct {
	Position Position
	Reason   string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("bonnie: log hash chain broken at position %d: %s", e.Position, e.Reason)
}

func (e *ChainError) Unwrap() error { return ErrChainBroken }

// DeadLetter is input that could not become an event (undecodable,
// unknown class, oversized, from a forbidden sender, or failing to append):
// kept with its raw bytes and the reason, never dropped.
type DeadLetter struct {
	ID       int64     `json:"id"`
	Received time.Time `json:"received"`
	// Source names where it came from ("cyrus-datagram:/run/bonnie.sock").
	Source string `json:"source"`
	Reason string `json:"reason"`
	Raw    []byte `json:"raw"`
	// Retried is when it was last re-ingested, Position where it landed
	// (0 while it still fails).
	Retried  time.Time `json:"retried,omitzero"`
	Position Position  `json:"position,omitempty"`
}

// DeadLetters keeps poison input. The SQLite log implements it beside Log.
type DeadLetters interface {
	PutDeadLetter(ctx context.Context, d DeadLetter) (int64, error)
	// DeadLetters lists them oldest first; pending only hides those that
	// were re-ingested.
	DeadLetters(ctx context.Context, pendingOnly bool) ([]DeadLetter, error)
	// ResolveDeadLetter records that letter id was re-ingested at pos.
	ResolveDeadLetter(ctx context.Context, id int64, pos Position) error
}
