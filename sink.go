package bonnie

import "context"

// Sink is what reads the log: archive, backup, discovery, interception,
// or a user's own. Like http.Handler it is small: a name (which keys its
// durable cursor, so keep it stable), the events it wants, and a handler
// that receives records in log order.
//
// A sink registered for the first time starts at position 0 and is given
// the whole log before it sees live events ("it announces its presence and
// works backwards"). A Handle that returns an error is retried with
// backoff, with the same record, until it succeeds or the engine stops; it
// holds back only that sink. Sinks only read: their state is a projection
// that can be dropped and rebuilt by replay.
type Sink interface {
	Name() string
	Events() EventMask
	Handle(ctx context.Context, rec Record) error
}

// BatchSink is a Sink that can take several records at once, as
// http.Flusher is a ResponseWriter that can flush: the engine then hands it
// the records of each page of the log it wants (in log order, at most a
// page), so that a sink with a database of its own writes them in one
// transaction instead of one per record. That is what lets a projection
// keep up with the ingest, and catch up at read speed. A batch that fails
// is retried whole, with backoff, like a record: HandleBatch must be
// idempotent, as Handle is.
type BatchSink interface {
	Sink
	HandleBatch(ctx context.Context, recs []Record) error
}

// PositionKeeper is a Sink that records, with its own data and in the same
// transaction, the last log position it has handled (a projection in a
// database of its own). The engine resumes it from that position rather
// than from its cursor in the log: it is exact after a crash (the cursor
// is written only now and then), and a projection dropped for a rebuild
// (a new schema, a deleted file) is replayed from where it says it is,
// not skipped to where the old one was.
type PositionKeeper interface {
	Sink
	Position(ctx context.Context) (Position, error)
}

// SinkFunc adapts a function to a Sink, like http.HandlerFunc.
func SinkFunc(name string, events EventMask, handle func(ctx context.Context, rec Record) error) Sink {
	return sinkFunc{name: name, events: events, handle: handle}
}

type sinkFunc struct {
	name   string
	events EventMask
	handle func(ctx context.Context, rec Record) error
}

func (s sinkFunc) Name() string                                 { return s.name }
func (s sinkFunc) Events() EventMask                            { return s.events }
func (s sinkFunc) Handle(ctx context.Context, rec Record) error { return s.handle(ctx, rec) }
