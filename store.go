package bonnie

import "context"

// Entry is one event with the changes applying it caused, ready to append.
type Entry struct {
	Event   *Event
	Changes []Change
}

// Appended is the outcome of appending one Entry.
type Appended struct {
	Position Position
	// Dup is true when the event's key was already in the log: nothing
	// was stored and Position is where it was stored first.
	Dup bool
}

// BatchAppender appends several entries in order in one transaction: the
// engine's ingest loop gathers what arrived while the previous commit ran,
// so a burst pays one fsync, and the log order is the order of applying.
type BatchAppender interface {
	AppendBatch(ctx context.Context, entries []Entry) ([]Appended, error)
}

// Cursors keeps each sink's position durably.
type Cursors interface {
	// Cursor returns the sink's position, 0 for a sink never seen.
	Cursor(ctx context.Context, sink string) (Position, error)
	SetCursor(ctx context.Context, sink string, pos Position) error
}

// Store is everything the engine needs of its storage. store/sqlite
// provides all of it in one file.
type Store interface {
	Log
	StateSource
	BatchAppender
	DeadLetters
	Cursors
}
