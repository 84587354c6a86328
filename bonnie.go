package bonnie

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Metadata keys a source may set on the Watermill messages it delivers.
const (
	// MetaSource names where a notification came from; it is kept with a
	// dead letter.
	MetaSource = "bonnie.source"
	// MetaTruncated is "true" on a message whose payload is only the
	// beginning of what was sent (source/cyrus: a datagram over
	// MaxDatagramSize), and MetaSize then the size sent. Such input is
	// never an event, whatever its beginning decodes to: it is kept as a
	// dead letter.
	MetaTruncated = "bonnie.truncated"
	MetaSize      = "bonnie.size"
)

// ErrDeadLettered is returned by Engine.Ingest for input that could not
// become an event and was kept as a dead letter instead. The input is
// durable: a source acknowledges it like an appended event.
var ErrDeadLettered = errors.New("bonnie: dead-lettered")

// ErrNotRunning is returned when a method needs Run.
var ErrNotRunning = errors.New("bonnie: engine not running")

// Source is a named Watermill subscriber whose messages carry one raw
// notification each (source/cyrus, source/amqp...).
type Source struct {
	Name       string
	Subscriber message.Subscriber
	// Topic is passed to Subscribe; sources that have none ignore it.
	Topic string
}

// Options assemble an engine. Store is required; the rest has defaults.
type Options struct {
	Store   Store
	Sources []Source
	Sinks   []Sink
	Logger  *slog.Logger
	// Metrics receives the engine's counters; nil creates a private set
	// that Engine.Metrics returns.
	Metrics *Metrics
	// MaxBatch bounds how many events one transaction appends (default
	// 512).
	MaxBatch int
	// Lifecycle, when set, makes Run record a DaemonStart event (with when
	// the previous run stopped, or the last event it saw if it did not stop
	// cleanly: the window in which Cyrus found nobody listening) and a
	// DaemonStop event on a clean stop. Its value names the daemon
	// ("bonnied"); Details are added to both events.
	Lifecycle string
	Details   map[string]any
	// SinkBackoff is the first wait after a sink error, doubled up to
	// SinkMaxBackoff (defaults 100ms and 1m).
	SinkBackoff, SinkMaxBackoff time.Duration
	// CursorEvery is how often at most a sink's cursor is written to the
	// store while it moves (default 500ms); it is also written when the
	// sink stops. Why not after every page: at a live rate each event is a
	// page of its own, and a cursor write per sink and event competes with
	// the appends for the log's single writer (and its fsync), which is
	// what Cyrus waits for in dlist mode. Sinks receive records at least
	// once: after a crash a sink may be handed again up to CursorEvery's
	// worth of records it had handled, as it may without this.
	CursorEvery time.Duration
	// SinkLinger is how long a sink that has caught up waits, once the log
	// has grown, before it reads (default 5ms; negative: not at all). At a
	// live rate of hundreds of events a second every commit would
	// otherwise wake every sink for a page of one record; lingering
	// gathers the commits of those few milliseconds into one page, and
	// leaves the cores to the ingest, which Cyrus waits for.
	SinkLinger time.Duration
	// Resolver, when set, resolves each event's actor, mailbox owner and
	// ACL subjects to persistent identities before the event is applied
	// and appended (Event.Identities); users are then keyed by persistent
	// id. Nil: no resolution, users are keyed by login.
	Resolver Resolver
	// ResolveTimeout bounds how long a batch of events waits for the
	// Resolver (default 2s). Identities not resolved by then are stored
	// marked Unresolved: the events are never lost or held longer.
	ResolveTimeout time.Duration
	// ResolveEvery, when positive (and Resolver set), makes Run call
	// ResolvePending at start and then at this interval, so that
	// identities left unresolved are filled in once the directory
	// answers again.
	ResolveEvery time.Duration
	// Bodies, when set, fetches and stores the bodies of the messages that
	// MessageAppend and MessageNew add (Cyrus never sends them), before
	// the event is applied: Event.Bodies then names each by its SHA-256,
	// and the Message entity gets digest, size and internalDate. A body
	// that cannot be had is recorded as such; the event is never held
	// longer than BodyTimeout (default 1m) nor lost. At most
	// BodyConcurrency (default 4) fetches run at a time; one source's
	// events still enter the log in the order it delivered them.
	Bodies          BodyFetcher
	BodyTimeout     time.Duration
	BodyConcurrency int
}

// Engine wires sources -> ingest -> log -> sinks. Create it with New, run
// it with Run.
type Engine struct {
	opts    Options
	store   Store
	log     *slog.Logger
	metrics *Metrics

	mu sync.Mutex // guards the ingester; batches are applied in log order
	// epoch counts the times the ingester's cache was found not to match
	// the log (a failed append, a duplicate that changed it). A batch
	// applied in an older epoch was applied on top of that state and is
	// refused (its sources redeliver it) rather than appended.
	epoch uint64
	// Commits take turns in the order their batches were applied (a
	// ticket taken under mu), even when a caller of Ingest races with
	// Run's loop: the log order must be the apply order.
	commitMu   sync.Mutex
	commitTurn *sync.Cond // on commitMu
	nextTicket uint64     // under mu
	turn       uint64     // under commitMu
	ingester   *Ingester
	bodies     *bodyStage // nil without Options.Bodies
	// resolving serialises ResolvePending passes.
	resolving sync.Mutex

	requests chan *request
	running  atomic.Bool
	// inflight counts source messages handed to ingest and not yet
	// acknowledged or refused.
	inflight atomic.Int64
	head     notifier
}

type request struct {
	ctx    context.Context
	raw    []byte
	source string
	// retry is the dead letter being re-ingested, nil for new input.
	retry *DeadLetter
	// pre is the request decoded, and its bodies fetched, before it
	// entered the loop (nil without Options.Bodies).
	pre *prefetch
	// internal marks Bonnie's own events (IdentityResolved), which are
	// refused from any outside source.
	internal bool
	done     chan result
}

type result struct {
	pos Position
	dup bool
	err error
}

// New checks the options and returns an engine.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, errors.New("bonnie: Options.Store is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.SinkBackoff <= 0 {
		opts.SinkBackoff = 100 * time.Millisecond
	}
	if opts.SinkMaxBackoff <= 0 {
		opts.SinkMaxBackoff = time.Minute
	}
	if opts.ResolveTimeout <= 0 {
		opts.ResolveTimeout = 2 * time.Second
	}
	if opts.SinkLinger == 0 {
		opts.SinkLinger = 5 * time.Millisecond
	}
	if opts.CursorEvery <= 0 {
		opts.CursorEvery = 500 * time.Millisecond
	}
	names := map[string]bool{}
	for _, s := range opts.Sinks {
		if s.Name() == "" || names[s.Name()] {
			return nil, fmt.Errorf("bonnie: sink names must be unique and not empty: %q", s.Name())
		}
		names[s.Name()] = true
	}
	e := &Engine{
		opts:     opts,
		store:    opts.Store,
		log:      opts.Logger,
		metrics:  opts.Metrics,
		ingester: NewIngester(opts.Store),
		bodies:   newBodyStage(opts, opts.Metrics),
		requests: make(chan *request, 4*opts.MaxBatch),
		head:     newNotifier(),
	}
	e.commitTurn = sync.NewCond(&e.commitMu)
	return e, nil
}

// Metrics returns the engine's counters.
func (e *Engine) Metrics() *Metrics { return e.metrics }

// Run runs the ingest loop, the sources and the sinks until ctx ends, then
// stops the sources, finishes what they handed over (every message is
// acknowledged or refused), lets the sinks stop at a record boundary, and
// returns.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("bonnie: engine already running")
	}
	defer e.running.Store(false)

	loopCtx, stopLoop := context.WithCancel(context.WithoutCancel(ctx))
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		e.loop(loopCtx)
	}()

	if e.opts.Lifecycle != "" {
		if err := e.recordStart(ctx); err != nil {
			stopLoop()
			<-loopDone
			return err
		}
	}

	var wg sync.WaitGroup
	if e.opts.Resolver != nil && e.opts.ResolveEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.resolveLoop(ctx)
		}()
	}
	for _, s := range e.opts.Sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.runSink(ctx, s)
		}()
	}

	srcCtx := context.WithoutCancel(ctx)
	var srcWG sync.WaitGroup
	errs := make(chan error, 2*len(e.opts.Sources))
	for _, src := range e.opts.Sources {
		ch, err := src.Subscriber.Subscribe(srcCtx, src.Topic)
		if err != nil {
			errs <- fmt.Errorf("bonnie: subscribe %s: %w", src.Name, err)
			continue
		}
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			e.consume(srcCtx, src.Name, ch)
		}()
	}
	<-ctx.Done()
	// Let what was handed over be answered before the sources close: a
	// broker connection closed first would lose the acknowledgements (the
	// messages would come back as duplicates: harmless, but avoidable).
	for deadline := time.Now().Add(5 * time.Second); e.inflight.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	// Close the sources: each drains what it has read (every message is
	// acknowledged or refused) and then closes its channel.
	for _, src := range e.opts.Sources {
		if err := src.Subscriber.Close(); err != nil {
			errs <- fmt.Errorf("bonnie: close %s: %w", src.Name, err)
		}
	}
	srcWG.Wait()
	if e.opts.Lifecycle != "" {
		if err := e.recordLifecycle(loopCtx, DaemonStop, nil); err != nil {
			errs <- err
		}
	}
	// Every message handed over has its answer: stop the loop only now.
	stopLoop()
	<-loopDone
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// recordStart appends DaemonStart with what the log says of the previous
// run.
func (e *Engine) recordStart(ctx context.Context) error {
	details := map[string]any{}
	head, err := e.store.Head(ctx)
	if err != nil {
		return fmt.Errorf("bonnie: read log head: %w", err)
	}
	if head > 0 {
		recs, err := e.store.Read(ctx, head-1, 1)
		if err != nil || len(recs) == 0 {
			return fmt.Errorf("bonnie: read last record: %w", err)
		}
		last := recs[0]
		details["vnd.bonnie.cleanStop"] = last.Event != nil && last.Event.Type == DaemonStop
		// The daemon was surely down from its stop; after a crash, from
		// some moment after the last record it appended.
		details["vnd.bonnie.downSince"] = last.Appended.UTC().Format(time.RFC3339Nano)
		details["vnd.bonnie.lastPosition"] = last.Position
	}
	return e.recordLifecycle(ctx, DaemonStart, details)
}

func (e *Engine) recordLifecycle(ctx context.Context, t EventType, extra map[string]any) error {
	host, _ := os.Hostname()
	ev := map[string]any{
		"event":      t.String(),
		"timestamp":  time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z"),
		"service":    e.opts.Lifecycle,
		"serverFQDN": host,
		"pid":        os.Getpid(),
	}
	for k, v := range e.opts.Details {
		ev[k] = v
	}
	for k, v := range extra {
		ev[k] = v
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("bonnie: encode %s: %w", t, err)
	}
	if _, _, err := e.submit(ctx, &request{ctx: ctx, raw: raw, source: e.opts.Lifecycle, internal: true, done: make(chan result, 1)}); err != nil {
		return fmt.Errorf("bonnie: record %s: %w", t, err)
	}
	return nil
}

// consume feeds one source's messages to the ingest loop in the order the
// source delivers them, without waiting for each commit (so that a burst
// shares transactions), and acknowledges each once its event is durable.
// A Watermill Router would run one goroutine per message and lose that
// order, which the state of flags depends on.
func (e *Engine) consume(ctx context.Context, name string, ch <-chan *message.Message) {
	var acks sync.WaitGroup
	defer acks.Wait()
	feed, flush := e.feeder(ctx) // fetches bodies ahead, keeps the order
	defer flush()
	for msg := range ch {
		src := msg.Metadata.Get(MetaSource)
		if src == "" {
			src = name
		}
		e.metrics.received.WithLabelValues(src).Inc()
		if msg.Metadata.Get(MetaTruncated) == "true" {
			reason := fmt.Sprintf("truncated: only the first %d of %s bytes sent were kept", len(msg.Payload), msg.Metadata.Get(MetaSize))
			if err := e.DeadLetter(ctx, msg.Payload, src, reason); err != nil {
				msg.Nack()
			} else {
				msg.Ack()
			}
			continue
		}
		r := &request{ctx: ctx, raw: msg.Payload, source: src, done: make(chan result, 1)}
		start := time.Now()
		feed(r)
		acks.Add(1)
		e.inflight.Add(1)
		go func() {
			defer acks.Done()
			defer e.inflight.Add(-1)
			res := <-r.done
			e.metrics.ingestTime.Observe(time.Since(start).Seconds())
			if res.err == nil || errors.Is(res.err, ErrDeadLettered) {
				msg.Ack() // durable in the log, or as a dead letter
				return
			}
			e.log.Warn("ingest failed; the source will redeliver", "source", src, "err", res.err)
			msg.Nack()
		}()
	}
}

// Ingest decodes one raw notification, applies it to the entities and
// appends it with its changes, returning its log position once durable.
// A duplicate (the same notification again) returns the first position and
// dup true. Input that cannot be decoded is kept as a dead letter and the
// error wraps ErrDeadLettered. Safe for concurrent use; while Run runs,
// concurrent calls share transactions.
func (e *Engine) Ingest(ctx context.Context, raw []byte, source string) (Position, bool, error) {
	e.metrics.received.WithLabelValues(source).Inc()
	return e.submit(ctx, &request{ctx: ctx, raw: raw, source: source, done: make(chan result, 1)})
}

// Record appends one of Bonnie's own events (a type in OwnEvents: a legal
// hold, an erasure, an interception, a query, a backfill...) given as a
// JSON notification, with its changes, and returns its position once
// durable. These events are refused from every source, so Record is how
// an embedding program or a command says what a person or a task did to
// the record. Any other type is refused with ErrUnknownEvent; an
// undecodable one is not kept as a dead letter (the caller has it).
func (e *Engine) Record(ctx context.Context, raw []byte, source string) (Position, bool, error) {
	ev, err := DecodeJSON(raw)
	if err != nil {
		return 0, false, fmt.Errorf("bonnie: record: %w", err)
	}
	if !OwnEvents.Has(ev.Type) {
		return 0, false, fmt.Errorf("%w: record: %s is not one of Bonnie's own events", ErrUnknownEvent, ev.Type)
	}
	e.metrics.received.WithLabelValues(source).Inc()
	return e.submit(ctx, &request{ctx: ctx, raw: raw, source: source, internal: true, done: make(chan result, 1)})
}

// Retry re-ingests a dead letter, after a parser fix, and marks it
// resolved with the position it landed at. One that still fails stays
// pending (the error wraps ErrDeadLettered; no second letter is made). A
// letter whose sender was refused (ReasonRejected) is evidence of a
// forgery attempt, never an event: Retry refuses it.
func (e *Engine) Retry(ctx context.Context, d DeadLetter) (Position, bool, error) {
	if strings.HasPrefix(d.Reason, ReasonRejected) {
		return 0, false, fmt.Errorf("%w: dead letter %d was refused at the source (%s) and is never ingested", ErrDeadLettered, d.ID, d.Reason)
	}
	return e.submit(ctx, &request{ctx: ctx, raw: d.Raw, source: d.Source, retry: &d, done: make(chan result, 1)})
}

// ReasonRejected starts the reason of a dead letter whose sender a source
// refused (wrong uid): such input is kept as evidence and never ingested.
const ReasonRejected = "rejected sender: "

func (e *Engine) submit(ctx context.Context, r *request) (Position, bool, error) {
	start := time.Now()
	defer func() { e.metrics.ingestTime.Observe(time.Since(start).Seconds()) }()
	e.bodies.start(ctx, r)
	r.wait()
	if e.running.Load() {
		select {
		case e.requests <- r:
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
		select {
		case res := <-r.done:
			return res.pos, res.dup, res.err
		case <-ctx.Done():
			// The event may still be appended; a redelivery is a duplicate.
			return 0, false, ctx.Err()
		}
	}
	e.process(ctx, []*request{r})
	res := <-r.done
	return res.pos, res.dup, res.err
}

// DeadLetter keeps input that a source refused (a forged sender, a request
// over the size limit, one given up after retries).
func (e *Engine) DeadLetter(ctx context.Context, raw []byte, source, reason string) error {
	e.metrics.deadLetters.WithLabelValues(source).Inc()
	_, err := e.store.PutDeadLetter(ctx, DeadLetter{Received: time.Now().UTC(), Source: source, Reason: reason, Raw: raw})
	if err != nil {
		e.log.Error("dead letter could not be stored", "source", source, "reason", reason, "bytes", len(raw), "err", err)
		return fmt.Errorf("bonnie: store dead letter: %w", err)
	}
	e.log.Warn("dead letter", "source", source, "reason", reason, "bytes", len(raw))
	return nil
}

// loop gathers requests that arrive while the previous batch commits and
// processes them together.
func (e *Engine) loop(ctx context.Context) {
	// The next batch is applied while the previous one commits: at most
	// one batch waits for the committer, so apply and fsync overlap.
	pending := make(chan *prepared, 1)
	committed := make(chan struct{})
	go func() {
		defer close(committed)
		for p := range pending {
			e.commit(ctx, p)
		}
	}()
	defer func() {
		close(pending)
		<-committed
	}()
	batch := make([]*request, 0, e.opts.MaxBatch)
	for {
		select {
		case r := <-e.requests:
			batch = append(batch[:0], r)
		drain:
			for len(batch) < e.opts.MaxBatch {
				select {
				case r := <-e.requests:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			if p := e.prepare(ctx, batch); p != nil {
				pending <- p
			}
		case <-ctx.Done():
			// Answer whatever is still queued so no caller waits forever.
			for {
				select {
				case r := <-e.requests:
					if p := e.prepare(context.Background(), []*request{r}); p != nil {
						pending <- p
					}
				default:
					return
				}
			}
		}
	}
}

// prepared is a batch decoded, resolved and applied, waiting to be
// appended.
type prepared struct {
	entries []Entry
	owners  []*request
	epoch   uint64
	ticket  uint64
}

// process prepares and commits a batch in the caller's goroutine.
func (e *Engine) process(ctx context.Context, batch []*request) {
	if p := e.prepare(ctx, batch); p != nil {
		e.commit(ctx, p)
	}
}

// prepare decodes, resolves and applies a batch in arrival order; requests
// that fail there are answered at once. Resolution may wait on the
// network: it runs before the lock, bounded by ResolveTimeout.
func (e *Engine) prepare(ctx context.Context, batch []*request) *prepared {
	evs := make([]*Event, len(batch))
	for i, r := range batch {
		evs[i] = e.decode(ctx, r)
	}
	e.resolveBatch(ctx, evs)

	e.mu.Lock()
	defer e.mu.Unlock()
	p := &prepared{epoch: e.epoch}
	for i, r := range batch {
		ev := evs[i]
		if ev == nil {
			continue // answered by decode
		}
		changes, err := e.ingester.Apply(ctx, ev)
		if err != nil {
			r.done <- result{err: err}
			continue
		}
		p.entries = append(p.entries, Entry{Event: ev, Changes: changes})
		p.owners = append(p.owners, r)
	}
	if len(p.entries) == 0 {
		return nil
	}
	p.ticket = e.nextTicket
	e.nextTicket++
	return p
}

// commit appends a prepared batch in one transaction and answers each
// request.
func (e *Engine) commit(ctx context.Context, p *prepared) {
	e.commitMu.Lock()
	for e.turn != p.ticket {
		e.commitTurn.Wait()
	}
	defer func() {
		e.turn++
		e.commitTurn.Broadcast()
		e.commitMu.Unlock()
	}()
	e.mu.Lock()
	stale := p.epoch != e.epoch
	e.mu.Unlock()
	if stale {
		for _, r := range p.owners {
			r.done <- result{err: errors.New("bonnie: applied on top of a batch that was not stored; retry")}
		}
		return
	}
	start := time.Now()
	res, err := e.store.AppendBatch(ctx, p.entries)
	e.metrics.appendTime.Observe(time.Since(start).Seconds())
	if err != nil {
		// Nothing of the batch is stored: what was applied to the cache,
		// by it and by any batch prepared after it, is not the log's state.
		e.mu.Lock()
		e.ingester.Reset()
		e.epoch++
		e.mu.Unlock()
		e.metrics.appendErrors.Inc()
		e.log.Error("append failed", "events", len(p.entries), "err", err)
		for _, r := range p.owners {
			r.done <- result{err: fmt.Errorf("bonnie: append: %w", err)}
		}
		return
	}
	for i, r := range p.owners {
		if res[i].Dup {
			if len(p.entries[i].Changes) > 0 {
				// The redelivery was applied to the cache as if new.
				e.mu.Lock()
				e.ingester.Forget(p.entries[i].Changes)
				e.epoch++
				e.mu.Unlock()
			}
			e.metrics.duplicates.Inc()
		} else {
			e.metrics.appended.Inc()
		}
		if r.retry != nil {
			if err := e.store.ResolveDeadLetter(ctx, r.retry.ID, res[i].Position); err != nil {
				e.log.Error("mark dead letter resolved", "id", r.retry.ID, "position", res[i].Position, "err", err)
			}
		}
		r.done <- result{pos: res[i].Position, dup: res[i].Dup}
	}
	e.head.notify()
}

// decode decodes a request's notification; on failure it answers the
// request (keeping the input as a dead letter) and returns nil.
func (e *Engine) decode(ctx context.Context, r *request) *Event {
	ev, err := r.decoded()
	if err == nil && !r.internal && OwnEvents.Has(ev.Type) {
		// Only the engine itself may attribute identities or say when it
		// was down: from a source, such an event would be false evidence.
		err = fmt.Errorf("%w: %s is Bonnie's own event and is not accepted from a source", ErrUnknownEvent, ev.Type)
	}
	if err != nil && r.retry != nil {
		r.done <- result{err: fmt.Errorf("%w: %w", ErrDeadLettered, err)}
		return nil
	}
	if err != nil {
		if derr := e.DeadLetter(ctx, r.raw, r.source, err.Error()); derr != nil {
			r.done <- result{err: derr}
		} else {
			r.done <- result{err: fmt.Errorf("%w: %w", ErrDeadLettered, err)}
		}
		return nil
	}
	return ev
}

// runSink delivers the log to one sink from its cursor on, forever. The
// next page is read while the sink handles the current one. The cursor is
// saved at most every Options.CursorEvery while it moves, once more when
// it has stopped moving, and when the sink stops.
func (e *Engine) runSink(ctx context.Context, s Sink) {
	name, mask := s.Name(), s.Events()
	lg := e.log.With("sink", name)
	pos, err := e.cursor(ctx, s, lg)
	if err != nil {
		return
	}
	if pos == 0 {
		lg.Info("new sink: replaying the whole log")
	}
	rctx, cancel := context.WithCancel(ctx)
	pages := make(chan sinkPage, 1)
	go e.readPages(rctx, pos, mask, lg, pages)
	saved, savedAt := pos, time.Now()
	save := func() {
		if pos != saved {
			e.saveCursor(name, pos, lg)
			saved, savedAt = pos, time.Now()
		}
	}
	defer func() {
		cancel()
		for range pages { // wait for the reader to stop
		}
		save()
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var pg sinkPage
		select {
		case p, ok := <-pages:
			if !ok {
				return
			}
			pg = p
		case <-timer.C:
			save()
			continue
		}
		// A page holds only the records the sink wants (ReadMatching).
		if bs, ok := s.(BatchSink); ok {
			if len(pg.recs) > 0 && !e.deliverBatch(ctx, bs, pg.recs, lg) {
				return
			}
		} else {
			for _, rec := range pg.recs {
				if !e.deliver(ctx, s, rec, lg) {
					return
				}
				pos = rec.Position
			}
		}
		pos = max(pos, pg.last)
		if wait := e.opts.CursorEvery - time.Since(savedAt); wait <= 0 {
			save()
		} else {
			timer.Reset(wait)
		}
		if pg.head > 0 {
			e.metrics.sinkLag.WithLabelValues(name).Set(float64(pg.head - min(pos, pg.head)))
		}
	}
}

// sinkPage is one read of the log for a sink: the records it wants, the
// last position read (past records it does not want), and the head then
// (0 if unknown).
type sinkPage struct {
	recs []Record
	last Position
	head Position
}

// readPages reads the log after from for a sink, a page at a time, and
// sends every page that moved on; when at the head it waits for the log
// to grow. It closes out when ctx ends. A store that can filter by type
// (FilteredReader) never loads nor decodes the records the sink does not
// want; the pages still move past them (ReadMatching).
func (e *Engine) readPages(ctx context.Context, from Position, mask EventMask, lg *slog.Logger, out chan<- sinkPage) {
	defer close(out)
	// A page of 4096 records: catching up over 1M events, pages of 1000
	// read 90-102k events/s and of 4096 118-142k on the same machine
	// (BenchmarkSinkCatchUp). Held at most three at a time per sink (being
	// handled, waiting, being read): ~40 MB while catching up, a few
	// records when live.
	const page = 4096
	pos := from
	for ctx.Err() == nil {
		wait := e.head.wait()
		var (
			pg  sinkPage
			err error
		)
		pg.recs, pg.last, err = ReadMatching(ctx, e.store, pos, page, mask)
		caughtUp := pg.last <= pos // nothing after pos
		if err != nil {
			if ctx.Err() == nil {
				lg.Error("read log", "err", err)
				sleep(ctx, e.opts.SinkBackoff)
			}
			continue
		}
		if pg.last > pos {
			pos = pg.last
			if head, err := e.store.Head(ctx); err == nil {
				pg.head = head
				caughtUp = caughtUp || pos >= head
			}
			select {
			case out <- pg:
			case <-ctx.Done():
				return
			}
		}
		if caughtUp {
			select {
			case <-wait:
				if e.opts.SinkLinger > 0 {
					sleep(ctx, e.opts.SinkLinger)
				}
			case <-ctx.Done():
			}
		}
	}
}

// cursor returns where a sink resumes: the position a PositionKeeper
// reports, else its cursor in the log.
func (e *Engine) cursor(ctx context.Context, s Sink, lg *slog.Logger) (Position, error) {
	backoff := e.opts.SinkBackoff
	for {
		var pos Position
		var err error
		if pk, ok := s.(PositionKeeper); ok {
			pos, err = pk.Position(ctx)
			if err == nil {
				if cur, cerr := e.store.Cursor(ctx, s.Name()); cerr == nil && cur > pos {
					lg.Info("sink resumes from its own position, behind its cursor (rebuilt?)", "position", pos, "cursor", cur)
				}
			}
		} else {
			pos, err = e.store.Cursor(ctx, s.Name())
		}
		if err == nil {
			return pos, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		lg.Error("read cursor", "err", err)
		sleep(ctx, backoff)
		backoff = min(2*backoff, e.opts.SinkMaxBackoff)
	}
}

// deliver hands one record to a sink, retrying with backoff; false when
// the engine stops first.
func (e *Engine) deliver(ctx context.Context, s Sink, rec Record, lg *slog.Logger) bool {
	backoff := e.opts.SinkBackoff
	for {
		err := s.Handle(ctx, rec)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		e.metrics.sinkErrors.WithLabelValues(s.Name()).Inc()
		lg.Warn("sink failed, retrying", "position", rec.Position, "retry_in", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, e.opts.SinkMaxBackoff)
	}
}

// deliverBatch hands records to a BatchSink, retrying the whole batch
// with backoff; false when the engine stops first.
func (e *Engine) deliverBatch(ctx context.Context, s BatchSink, recs []Record, lg *slog.Logger) bool {
	backoff := e.opts.SinkBackoff
	for {
		err := s.HandleBatch(ctx, recs)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		e.metrics.sinkErrors.WithLabelValues(s.Name()).Inc()
		lg.Warn("sink failed, retrying", "positions", fmt.Sprintf("%d-%d", recs[0].Position, recs[len(recs)-1].Position),
			"records", len(recs), "retry_in", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(2*backoff, e.opts.SinkMaxBackoff)
	}
}

func (e *Engine) saveCursor(name string, pos Position, lg *slog.Logger) {
	// The cursor is saved even while stopping: a context that ended must
	// not cost the sink its progress.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.store.SetCursor(ctx, name, pos); err != nil {
		lg.Error("save cursor", "position", pos, "err", err)
	}
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// notifier wakes every waiter when the log grows.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() notifier { return notifier{ch: make(chan struct{})} }

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	close(n.ch)
	n.ch = make(chan struct{})
	n.mu.Unlock()
}
