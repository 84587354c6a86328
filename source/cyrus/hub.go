package cyrus

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
)

// item is one notification read from Cyrus, on its way to the subscriber.
type item struct {
	uuid string
	raw  []byte
	meta message.Metadata
	// desc names the item in logs and reasons ("datagram from uid 109 pid 42").
	desc string
	// finish, when set, is called exactly once with the outcome: acked
	// (ok) or given up (after OnGiveUp ran). The dlist listener replies
	// to Cyrus from it.
	finish func(ok bool, reason string)
}

func newItem(raw []byte, framing, source string, received time.Time) *item {
	id, err := uuid.NewV7()
	if err != nil { // only when the system's random source fails
		id = uuid.New()
	}
	return &item{
		uuid: id.String(),
		raw:  raw,
		meta: message.Metadata{
			MetaSource:   source,
			MetaFraming:  framing,
			MetaReceived: received.UTC().Format(time.RFC3339Nano),
			MetaSize:     strconv.Itoa(len(raw)),
		},
	}
}

// message builds the Watermill message for one delivery attempt. Each
// attempt gets its own copy of the payload, so that a handler that
// modifies it cannot alter what a later attempt or OnGiveUp sees.
func (it *item) message(attempt int) *message.Message {
	payload := make([]byte, len(it.raw))
	copy(payload, it.raw)
	m := message.NewMessage(it.uuid, payload)
	for k, v := range it.meta {
		m.Metadata[k] = v
	}
	m.Metadata[MetaAttempt] = strconv.Itoa(attempt)
	return m
}

// subscription is one Subscribe call's output.
type subscription struct {
	ctx     context.Context
	out     chan *message.Message
	stop    chan struct{} // closed when the subscription ends
	senders sync.WaitGroup
}

// hub moves items from a bounded queue to the current subscription, one
// delivery at a time per worker, and owns redelivery, giving up and the
// drain on Close. The listeners only produce items.
type hub struct {
	cfg   *config
	log   *slog.Logger
	queue chan *item

	mu      sync.Mutex
	sub     *subscription
	changed chan struct{} // closed and replaced when sub or closing changes
	closing bool

	abort     chan struct{} // closed when Close stops waiting
	abortOnce sync.Once
	abortCtx  context.Context // cancelled with abort
	cancelAb  context.CancelFunc

	queued    atomic.Int64   // items ever enqueued
	intake    sync.WaitGroup // producers that may still enqueue
	workers   sync.WaitGroup
	closeOnce sync.Once
	closed    chan struct{}
}

func newHub(cfg *config) *hub {
	h := &hub{
		cfg:     cfg,
		log:     cfg.Logger,
		queue:   make(chan *item, cfg.QueueSize),
		changed: make(chan struct{}),
		abort:   make(chan struct{}),
		closed:  make(chan struct{}),
	}
	h.abortCtx, h.cancelAb = context.WithCancel(context.Background())
	h.workers.Add(1)
	go h.dispatch()
	return h
}

// hookCtx is the context hooks run with: not cancelled by Close, since a
// hook's job is precisely to keep what Close could not deliver.
func (h *hub) hookCtx() context.Context { return context.Background() }

// signal wakes workers waiting for a subscription change. h.mu held.
func (h *hub) signal() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *hub) subscribe(ctx context.Context) (<-chan *message.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return nil, ErrClosed
	}
	if h.sub != nil {
		return nil, ErrSubscribed
	}
	sub := &subscription{ctx: ctx, out: make(chan *message.Message), stop: make(chan struct{})}
	h.sub = sub
	h.signal()
	go func() {
		select {
		case <-ctx.Done():
			h.endSub(sub)
		case <-sub.stop:
		}
	}()
	return sub.out, nil
}

// endSub ends a subscription: no worker sends on it any more, then its
// channel is closed (what tells a Router the subscriber is done).
func (h *hub) endSub(sub *subscription) {
	h.mu.Lock()
	if h.sub != sub {
		h.mu.Unlock()
		return
	}
	h.sub = nil
	close(sub.stop)
	h.signal()
	h.mu.Unlock()
	sub.senders.Wait()
	close(sub.out)
}

// acquire returns the current subscription, registered as being sent to.
func (h *hub) acquire() (sub *subscription, changed <-chan struct{}, closing bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sub != nil {
		h.sub.senders.Add(1)
	}
	return h.sub, h.changed, h.closing
}

// enqueue hands an item to the workers, waiting while the queue is full
// (back-pressure). It reports false when Close gave up waiting; the item
// has then been given up.
func (h *hub) enqueue(it *item) bool {
	select {
	case h.queue <- it:
		h.queued.Add(1)
		return true
	default:
	}
	select {
	case h.queue <- it:
		h.queued.Add(1)
		return true
	case <-h.abort:
		h.giveUp(it, fmt.Sprintf("%s: %v before it could be queued", it.desc, ErrClosed))
		return false
	}
}

// dispatch hands items out in queue order, up to MaxInFlight at once:
// each item's first delivery happens before the next item's, so a
// consumer that feeds them to one ordered pipeline sees Cyrus's order
// even with many unacknowledged (only a redelivery after a Nack comes
// later). Waiting for acknowledgements runs concurrently.
func (h *hub) dispatch() {
	defer h.workers.Done()
	slots := make(chan struct{}, h.cfg.MaxInFlight)
	for it := range h.queue {
		slots <- struct{}{}
		sent := make(chan struct{})
		h.workers.Add(1)
		go func() {
			defer h.workers.Done()
			defer func() { <-slots }()
			h.deliver(it, sent)
		}()
		<-sent
	}
}

func (h *hub) backoff(attempt int) time.Duration {
	d := h.cfg.RedeliveryDelay
	for i := 1; i < attempt && d < h.cfg.MaxRedeliveryDelay; i++ {
		d *= 2
	}
	return min(d, h.cfg.MaxRedeliveryDelay)
}

// deliver hands one item out until it is acked or given up. It closes
// sent once the first delivery is on the subscription's channel (or the
// item is given up), which lets dispatch go on to the next item.
func (h *hub) deliver(it *item, sent chan struct{}) {
	firstSent := func() {
		if sent != nil {
			close(sent)
			sent = nil
		}
	}
	defer firstSent()
	attempt := 0
	for {
		sub, changed, closing := h.acquire()
		if sub == nil {
			if closing {
				h.giveUp(it, fmt.Sprintf("%s: %v before delivery (no subscription)", it.desc, ErrClosed))
				return
			}
			select {
			case <-changed:
				continue
			case <-h.abort:
				h.giveUp(it, fmt.Sprintf("%s: %v before delivery", it.desc, ErrClosed))
				return
			}
		}

		msg := it.message(attempt + 1)
		msg.SetContext(sub.ctx)
		select {
		case sub.out <- msg:
			sub.senders.Done()
			attempt++
			firstSent()
		case <-sub.stop:
			sub.senders.Done()
			continue
		case <-h.abort:
			sub.senders.Done()
			h.giveUp(it, fmt.Sprintf("%s: %v before delivery", it.desc, ErrClosed))
			return
		}

		select {
		case <-msg.Acked():
			if it.finish != nil {
				it.finish(true, "")
			}
			return
		case <-msg.Nacked():
		case <-h.abort:
			h.giveUp(it, fmt.Sprintf("%s: not acknowledged before Close's drain timeout (%s)", it.desc, h.cfg.DrainTimeout))
			return
		}

		if h.cfg.maxRedel >= 0 && attempt > h.cfg.maxRedel {
			h.giveUp(it, fmt.Sprintf("%s: nacked %d times (MaxRedeliveries %d)", it.desc, attempt, h.cfg.maxRedel))
			return
		}
		wait := h.backoff(attempt)
		h.log.Debug("notification nacked, redelivering", "what", it.desc, "uuid", it.uuid, "attempt", attempt, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-h.abort:
			t.Stop()
			h.giveUp(it, fmt.Sprintf("%s: nacked %d times, then %v", it.desc, attempt, ErrClosed))
			return
		}
	}
}

// giveUp logs, calls OnGiveUp and finishes the item negatively.
func (h *hub) giveUp(it *item, reason string) {
	h.log.Warn("giving up on notification", "uuid", it.uuid, "reason", reason, "bytes", len(it.raw))
	h.cfg.OnGiveUp(h.hookCtx(), it.raw, reason)
	if it.finish != nil {
		it.finish(false, reason)
	}
}

// reject logs and calls OnReject: the notification is never delivered.
func (h *hub) reject(raw []byte, reason string) {
	h.log.Warn("rejecting notification", "reason", reason, "bytes", len(raw))
	h.cfg.OnReject(h.hookCtx(), raw, reason)
}

// stopAbort stops Close's waiting: workers give up what they hold.
func (h *hub) stopAbort() {
	h.abortOnce.Do(func() {
		close(h.abort)
		h.cancelAb()
	})
}

// close drains and shuts the hub. stopIntake must stop the listener so
// that no new producer starts; producers already running finish (they
// are counted in h.intake and give up their item once abort is closed).
func (h *hub) close(stopIntake func()) {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closing = true
		h.signal()
		h.mu.Unlock()

		timer := time.AfterFunc(h.cfg.DrainTimeout, h.stopAbort)
		stopIntake()
		h.intake.Wait()
		close(h.queue)
		h.workers.Wait()
		timer.Stop()
		h.stopAbort()

		h.mu.Lock()
		sub := h.sub
		h.mu.Unlock()
		if sub != nil {
			h.endSub(sub)
		}
		close(h.closed)
	})
	<-h.closed
}

// The three subscribers are Watermill subscribers.
var (
	_ message.Subscriber = (*DatagramSubscriber)(nil)
	_ message.Subscriber = (*DListSubscriber)(nil)
	_ message.Subscriber = (*ExternalSubscriber)(nil)
)
