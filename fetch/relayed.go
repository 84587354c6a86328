package fetch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Relayed is the central ingest's fetcher for the bodies a relay
// (examples/bonnie-relay) fetched next to Cyrus and published beside the
// notification (source/amqp: the "<topic>.bodies" exchange, and the refs
// in the notification's metadata). It fetches nothing itself: the
// notification's subscriber hands it the refs the relay sent (Expect, see
// amqp.ExpectBodies), an amqp.BodyReceiver puts the bytes into Store
// (checked against their SHA-256) and calls Stored, and FetchBodies waits,
// as long as its ctx allows (bonnie.Options.BodyTimeout), until every
// named body is in the store. The two queues are not ordered with respect
// to each other (the relay publishes the bodies first, but a redelivery or
// a slower consumer can swap them): the wait covers that.
//
// A body the relay could not fetch keeps the relay's error; one that did
// not arrive in time is an error too, so that the event is recorded, not
// held. A notification that came with no refs (another source, a relay
// that does not fetch bodies) gets an error for each UID at once: put
// Relayed first in a Chain to let a local fetcher try those.
type Relayed struct {
	Store *blob.Store
	// Poll is how often the store is looked at while waiting, besides
	// Stored's wake-ups (default 200ms).
	Poll time.Duration

	mu       sync.Mutex
	expected map[string]*expected
	wake     chan struct{} // closed and replaced by Stored
}

type expected struct {
	refs []bonnie.BodyRef
	n    int // messages in flight with this key
}

// NewRelayed returns a fetcher waiting for bodies in store.
func NewRelayed(store *blob.Store) *Relayed {
	return &Relayed{Store: store}
}

// String describes the fetcher.
func (r *Relayed) String() string { return "relayed bodies (" + r.Store.Root() + ")" }

// Expect records the refs a relayed notification with event key key
// carries; forget drops them (once the message is settled).
func (r *Relayed) Expect(key string, refs []bonnie.BodyRef) (forget func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.expected == nil {
		r.expected = map[string]*expected{}
	}
	e := r.expected[key]
	if e == nil {
		e = &expected{}
		r.expected[key] = e
	}
	e.refs = refs
	e.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			if e.n--; e.n == 0 && r.expected[key] == e {
				delete(r.expected, key)
			}
		})
	}
}

// Stored wakes the fetches waiting for a body (any body: each looks at
// the store again).
func (r *Relayed) Stored(string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
	}
}

func (r *Relayed) waitCh() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.wake == nil {
		r.wake = make(chan struct{})
	}
	return r.wake
}

// Pending returns how many relayed notifications have refs recorded.
func (r *Relayed) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.expected)
}

// FetchBodies implements bonnie.BodyFetcher.
func (r *Relayed) FetchBodies(ctx context.Context, ev *bonnie.Event) ([]bonnie.BodyRef, error) {
	r.mu.Lock()
	var sent []bonnie.BodyRef
	if e := r.expected[ev.Key()]; e != nil {
		sent = e.refs
	}
	r.mu.Unlock()
	if sent == nil {
		return errRefs(ev.UIDs, "the relay sent no body for this notification"), nil
	}
	byUID := make(map[uint32]bonnie.BodyRef, len(sent))
	for _, s := range sent {
		byUID[s.UID] = s
	}
	out := make([]bonnie.BodyRef, len(ev.UIDs))
	var waiting []int
	for i, uid := range ev.UIDs {
		s, ok := byUID[uid]
		switch {
		case !ok:
			out[i] = bonnie.BodyRef{UID: uid, Error: "the relay sent no body for this UID"}
		case s.Error != "" || s.Digest == "":
			out[i] = bonnie.BodyRef{UID: uid, Error: "relay: " + s.Error}
		case !blob.ValidDigest(s.Digest):
			out[i] = bonnie.BodyRef{UID: uid, Error: fmt.Sprintf("relay: bad digest %q", s.Digest)}
		default:
			out[i] = bonnie.BodyRef{UID: uid, Digest: s.Digest, Size: s.Size, InternalDate: s.InternalDate}
			waiting = append(waiting, i)
		}
	}
	poll := r.Poll
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		wake := r.waitCh() // before looking, so that a Stored in between is seen
		left := waiting[:0]
		for _, i := range waiting {
			ok, err := r.Store.Has(out[i].Digest)
			if err != nil {
				return nil, err
			}
			if !ok {
				left = append(left, i)
			}
		}
		waiting = left
		if len(waiting) == 0 {
			return out, nil
		}
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			for _, i := range waiting {
				out[i] = bonnie.BodyRef{UID: out[i].UID, Error: fmt.Sprintf("relayed body %s (%d bytes) not received in time (%v)", out[i].Digest, out[i].Size, ctx.Err())}
			}
			return out, nil
		}
	}
}
