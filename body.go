package bonnie

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// BodyRef is what ingest learned about the body of one message that an
// event added: the SHA-256 of its exact bytes, its size and IMAP internal
// date. The bytes themselves are in the body store (store/blob) under
// Digest; a BodyFetcher puts them there before it returns, so the log
// never names a body the store does not hold.
//
// A body that could not be fetched (the message was expunged before it
// was read, the IMAP server was down) has Error set and no Digest: the
// event is kept all the same, and a later backfill can fill the gap.
type BodyRef struct {
	UID          uint32    `json:"uid"`
	Digest       string    `json:"sha256,omitempty"`
	Size         int64     `json:"size,omitempty"`
	InternalDate time.Time `json:"internalDate,omitzero"`
	Error        string    `json:"error,omitempty"`
}

// BodyFetcher stores the bodies of the messages an event added and
// describes them. Cyrus never puts bodies in its notifications, so they
// are read back from the server (package fetch: IMAP as an admin, or the
// spool files) while the event is ingested.
//
// FetchBodies returns one BodyRef per UID of ev.UIDs, in that order, each
// either with a Digest whose bytes are durable in the body store, or with
// Error saying why that message could not be had. An error return means
// nothing could be fetched (the server is unreachable); the engine then
// records it on every UID. It is called concurrently, for different
// events, and must give up when ctx ends.
type BodyFetcher interface {
	FetchBodies(ctx context.Context, ev *Event) ([]BodyRef, error)
}

// NeedsBodies reports whether ingest fetches bodies for ev: events that
// bring new bytes into a folder (MessageAppend, MessageNew). Copies and
// moves carry the bytes of a message already known, whose digest ingest
// copies from the source message.
func NeedsBodies(ev *Event) bool {
	return (ev.Type == MessageAppend || ev.Type == MessageNew) && len(ev.UIDs) > 0 && ev.MailboxID != ""
}

// Defaults of the body options.
const (
	DefaultBodyTimeout     = time.Minute
	DefaultBodyConcurrency = 4
	// After bodyBreakAfter fetches in a row fail as a whole, the engine
	// stops asking for bodyCooldown: events are recorded at once with the
	// failure, instead of each waiting its timeout while Cyrus waits for
	// us.
	bodyBreakAfter = 3
	bodyCooldown   = 15 * time.Second
)

// bodyStage fetches bodies in the request path, before a request enters
// the ingest loop, so that waiting on the network never holds the loop
// (nor the engine's mutex) and other sources' events commit meanwhile.
type bodyStage struct {
	fetcher     BodyFetcher
	timeout     time.Duration
	sem         chan struct{}
	metrics     *Metrics
	now         func() time.Time
	mu          sync.Mutex
	failures    int       // whole fetches failed in a row
	openUntil   time.Time // the breaker refuses fetches until then
	lastFailure string
}

func newBodyStage(opts Options, m *Metrics) *bodyStage {
	if opts.Bodies == nil {
		return nil
	}
	timeout := opts.BodyTimeout
	if timeout <= 0 {
		timeout = DefaultBodyTimeout
	}
	n := opts.BodyConcurrency
	if n <= 0 {
		n = DefaultBodyConcurrency
	}
	return &bodyStage{fetcher: opts.Bodies, timeout: timeout, sem: make(chan struct{}, n), metrics: m, now: time.Now}
}

// prefetch is a request decoded ahead of the loop, with its bodies being
// fetched until done is closed.
type prefetch struct {
	ev   *Event
	err  error
	done chan struct{}
}

// decoded returns the request's event, decoded by the body stage if it ran.
func (r *request) decoded() (*Event, error) {
	if r.pre != nil {
		return r.pre.ev, r.pre.err
	}
	return Decode(r.raw)
}

// start decodes r and, when its event needs bodies, starts fetching them;
// r.pre.done is closed once ev.Bodies is set. Nothing to do without a
// fetcher.
func (b *bodyStage) start(ctx context.Context, r *request) {
	if b == nil || r.pre != nil {
		return
	}
	ev, err := Decode(r.raw)
	p := &prefetch{ev: ev, err: err, done: make(chan struct{})}
	r.pre = p
	if err != nil || !NeedsBodies(ev) {
		close(p.done)
		return
	}
	go func() {
		defer close(p.done)
		select {
		case b.sem <- struct{}{}:
		case <-ctx.Done():
			ev.Bodies = failed(ev, "not fetched: "+ctx.Err().Error())
			b.count(ev.Bodies, "failed")
			return
		}
		defer func() { <-b.sem }()
		ev.Bodies = b.fetch(ctx, ev)
	}()
}

// wait blocks until r's bodies are fetched (each fetch is bounded by the
// timeout).
func (r *request) wait() {
	if r.pre != nil {
		<-r.pre.done
	}
}

func (b *bodyStage) fetch(ctx context.Context, ev *Event) []BodyRef {
	b.mu.Lock()
	if b.now().Before(b.openUntil) {
		reason := fmt.Sprintf("not fetched: body source failing (%s); retrying after %s", b.lastFailure, b.openUntil.UTC().Format(time.RFC3339))
		b.mu.Unlock()
		refs := failed(ev, reason)
		b.count(refs, "skipped")
		return refs
	}
	b.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	refs, err := b.fetcher.FetchBodies(ctx, ev)
	if err == nil {
		refs, err = matchBodies(ev, refs)
	}
	b.mu.Lock()
	if err != nil {
		b.failures++
		b.lastFailure = err.Error()
		if b.failures >= bodyBreakAfter {
			b.openUntil = b.now().Add(bodyCooldown)
		}
	} else {
		b.failures = 0
	}
	b.mu.Unlock()
	if err != nil {
		refs = failed(ev, "not fetched: "+err.Error())
	}
	b.count(refs, "")
	return refs
}

// matchBodies checks that refs describe ev.UIDs in order.
func matchBodies(ev *Event, refs []BodyRef) ([]BodyRef, error) {
	if len(refs) != len(ev.UIDs) {
		return nil, fmt.Errorf("fetcher returned %d bodies for %d UIDs", len(refs), len(ev.UIDs))
	}
	for i, r := range refs {
		if r.UID != ev.UIDs[i] {
			return nil, fmt.Errorf("fetcher returned UID %d in place of %d", r.UID, ev.UIDs[i])
		}
		if r.Error == "" && r.Digest == "" {
			refs[i].Error = "fetcher returned no digest"
		}
	}
	return refs, nil
}

func failed(ev *Event, reason string) []BodyRef {
	refs := make([]BodyRef, len(ev.UIDs))
	for i, uid := range ev.UIDs {
		refs[i] = BodyRef{UID: uid, Error: reason}
	}
	return refs
}

func (b *bodyStage) count(refs []BodyRef, outcome string) {
	for _, r := range refs {
		o := outcome
		if o == "" {
			o = "stored"
			if r.Error != "" {
				o = "failed"
			}
		}
		b.metrics.bodies.WithLabelValues(o).Inc()
	}
}

// feeder returns how one source hands requests to the loop: in the order
// the source delivered them, each once its bodies are fetched, while the
// fetches of several requests run at the same time. flush waits until
// everything fed has been handed over.
func (e *Engine) feeder(ctx context.Context) (feed func(*request), flush func()) {
	if e.bodies == nil {
		return func(r *request) { e.requests <- r }, func() {}
	}
	queue := make(chan *request, 8*cap(e.bodies.sem))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range queue {
			r.wait()
			e.requests <- r
		}
	}()
	return func(r *request) {
			e.bodies.start(ctx, r)
			queue <- r
		}, func() {
			close(queue)
			<-done
		}
}

// setBody gives message m, at uid, what the event's BodyRef says of its
// bytes.
func (a *apply) setBody(m *Message, uid uint32) {
	for _, b := range a.ev.Bodies {
		if b.UID != uid || b.Error != "" || b.Digest == "" {
			continue
		}
		m.SetDigest(b.Digest)
		m.SetSize(b.Size)
		if !b.InternalDate.IsZero() {
			m.SetInternalDate(b.InternalDate)
		}
		return
	}
}
