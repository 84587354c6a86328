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
