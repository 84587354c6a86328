// Package intercept is Bonnie's live interception sink: a time-bounded,
// warranted, audited real-time copy of one person's mail events and
// message bodies to an authorised destination.
//
// An interception is an event in the log (bonnie.Interception, appended
// only through bonnie.Engine.Record: the bonnie command's "intercept
// start" and "intercept stop"), naming the target by persistent identity
// (so that a renamed login does not escape it), the warrant, the window
// [from, to) in event time, the destination and who authorised it; see
// Notice for its JSON members. The sink learns of interceptions from the
// log itself, in log order, and covers a record only when it comes after
// the interception's start in the log, before its stop, and inside its
// window: a new sink replaying the log from position 0 never reaches back
// before a warrant, nor past its end.
//
// A covered record is one whose event concerns the target: as the actor,
// as the owner of the mailbox (or of the mailbox a rename or move came
// from), or as a sender or recipient in the message's envelope. Identities
// are compared by persistent id; an identity the directory did not answer
// for in time, and the envelope's addresses, are compared with the names
// the target is known by (those recorded with the interception, and every
// login and address the sink has since seen resolved to the target's id).
// A target named by login only (no directory) is matched by that login.
// The bodies of a covered record (bonnie.Event.Bodies, read from the body
// store) go with it. The destination (Destination) is a durable RabbitMQ
// queue with publisher confirms (AMQP) or a directory of files written
// atomically (Dir); every handover carries an idempotency key,
// "<interception id>/<position>".
//
// What was handed over is recorded in the log itself, as
// bonnie.InterceptDelivery events appended through Options.Record once the
// destination confirmed, one per batch handed over together, naming each
// record's log position, key, hash and idempotency key and each body's
// SHA-256 and size. Evidence of what left the system thus lives in the
// same hash chain, appended by the same rules, as the warrant that allowed
// it: one Verify covers both, and no second store can disagree with the
// log. (A table of the sink's own would be a projection, which invariant 5
// says may be dropped and rebuilt; a record of what was handed over cannot
// be rebuilt.) A batch is the record the engine hands over and the records
// after it already in the log, up to the next Interception event: a burst
// costs one confirm round trip and one commit, not one per record.
//
// A destination that fails is retried (the engine retries Handle with
// backoff, holding back only this sink); nothing is skipped. Nothing is
// sent twice: when the sink starts, it reads the InterceptDelivery
// records after its first record, and skips what they name; only a crash
// between the destination's confirm and the delivery record's commit can
// send a handover again, with the same idempotency key (AMQP message id;
// a file that exists is not written again).
//
// Sinks only read the log (invariant 5); this one appends its own
// InterceptDelivery events, as any program may through Engine.Record,
// and never changes what is there.
package intercept

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Name is the sink's name (its cursor in the log).
const Name = "intercept"

// Events are the events the sink reads: every mail event and the
// interceptions; not its own deliveries nor Bonnie's other own events.
var Events = (bonnie.AllEvents &^ bonnie.OwnEvents) | bonnie.Mask(bonnie.Interception)

// Recorder appends one of Bonnie's own events: bonnie.Engine.Record.
type Recorder func(ctx context.Context, raw []byte, source string) (bonnie.Position, bool, error)

// Options configure a Sink.
type Options struct {
	// Log is the log the engine runs on: the sink reads the interceptions
	// recorded before its cursor, and the deliveries already recorded,
	// when it starts. Required.
	Log bonnie.Log
	// Record appends the InterceptDelivery events (Engine.Record).
	// Required.
	Record Recorder
	// Blobs is the body store; nil hands over no bodies.
	Blobs *blob.Store
	// Open opens a destination (default: the package's Open with
	// AMQPPassword).
	Open func(dest, id string) (Destination, error)
	// AMQPPassword supplies the password of an AMQP destination whose URL
	// has a user and no password (the log never holds one).
	AMQPPassword func(u *url.URL) (string, error)
	Logger       *slog.Logger
	// Now is the clock of the delivery records (default time.Now).
	Now func() time.Time
}

// Sink is the interception sink. Create it with New; the engine calls
// Handle from one goroutine.
type Sink struct {
	opts Options

	mu        sync.Mutex
	ready     bool
	set       map[string]*Interception
	names     map[string]map[string]bool // target id -> known names, lower-cased
	delivered map[string]bool            // Handover.MessageID already recorded
	dests     map[string]Destination     // by interception id
	// ahead is the last position handed over in a batch read ahead of
	// the engine.
	ahead   bonnie.Position
	handled int // records handled, for pruning
}

// pruneEvery is how many records pass between two prunings of the
// delivered keys.
const pruneEvery = 4096

var _ bonnie.Sink = (*Sink)(nil)

// New returns the sink.
func New(opts Options) (*Sink, error) {
	if opts.Log == nil || opts.Record == nil {
		return nil, fmt.Errorf("intercept: Options.Log and Options.Record are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Open == nil {
		pw := opts.AMQPPassword
		opts.Open = func(dest, id string) (Destination, error) { return Open(dest, id, pw) }
	}
	return &Sink{opts: opts, dests: map[string]Destination{}}, nil
}

// Name implements bonnie.Sink.
func (s *Sink) Name() string { return Name }

// Events implements bonnie.Sink.
func (s *Sink) Events() bonnie.EventMask { return Events }

// Close closes the destinations.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, d := range s.dests {
		d.Close()
		delete(s.dests, id)
	}
	return nil
}

// Interceptions returns the interceptions the sink knows, in the order
// they were started.
func (s *Sink) Interceptions() []Interception {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Interception
	for _, it := range s.set {
		out = append(out, *it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Position < out[j].Position })
	return out
}

// Handle implements bonnie.Sink.
func (s *Sink) Handle(ctx context.Context, rec bonnie.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		if err := s.start(ctx, rec.Position); err != nil {
			return err
		}
	}
	ev := rec.Event
	if ev == nil {
		return nil
	}
	if ev.Type == bonnie.Interception {
		if err := apply(s.set, rec); err != nil {
			// A malformed interception covers nothing; retrying would
			// hold the sink for ever.
			s.opts.Logger.Error("interception event ignored", "position", rec.Position, "err", err)
			return nil
		}
		it := s.set[mustID(rec)]
		if it != nil && it.Position == rec.Position {
			s.learn(it.Target.ID, it.Target.Names...)
			s.opts.Logger.Info("interception started", "id", it.ID, "target", it.Target.ID, "warrant", it.Warrant,
				"from", it.From, "to", it.To, "destination", it.Destination)
		} else if it != nil {
			s.opts.Logger.Info("interception stopped", "id", it.ID, "position", rec.Position)
			if d := s.dests[it.ID]; d != nil {
				d.Close()
				delete(s.dests, it.ID)
			}
		}
		return nil
	}
	if len(s.set) == 0 {
		return nil
	}
	if s.handled++; s.handled%pruneEvery == 0 {
		s.prune(rec.Position)
	}
	if rec.Position <= s.ahead {
		// Already handed over with an earlier record's batch; the names
		// were learnt then too.
		return nil
	}
	return s.handOverFrom(ctx, rec)
}

func mustID(rec bonnie.Record) string {
	n, err := ParseNotice(rec)
	if err != nil {
		return ""
	}
	return n.ID
}

// start reads what the log says before the sink's first record: the
// interceptions started before it, and the deliveries recorded of it and
// of what follows.
func (s *Sink) start(ctx context.Context, first bonnie.Position) error {
	set := map[string]*Interception{}
	delivered := map[string]bool{}
	err := scan(ctx, s.opts.Log, 0, bonnie.Mask(bonnie.Interception, bonnie.InterceptDelivery), func(rec bonnie.Record) error {
		switch {
		case rec.Event.Type == bonnie.Interception && rec.Position < first:
			if err := apply(set, rec); err != nil {
				s.opts.Logger.Error("interception event ignored", "position", rec.Position, "err", err)
			}
		case rec.Event.Type == bonnie.InterceptDelivery:
			n, err := ParseNotice(rec)
			if err != nil {
				return nil
			}
			for _, item := range n.Delivered {
				if item.Position >= first {
					delivered[item.MessageID] = true
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.set, s.delivered, s.names = set, delivered, map[string]map[string]bool{}
	for _, it := range set {
		s.learn(it.Target.ID, it.Target.Names...)
	}
	s.ready = true
	return nil
}

func (s *Sink) sorted() []*Interception {
	out := make([]*Interception, 0, len(s.set))
	for _, it := range s.set {
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Position < out[j].Position })
	return out
}

// prune forgets the delivery keys of positions passed: the engine hands
// records in log order.
func (s *Sink) prune(pos bonnie.Position) {
	for k := range s.delivered {
		if p := keyPosition(k); p != 0 && p < pos {
			delete(s.delivered, k)
		}
	}
}

func keyPosition(k string) bonnie.Position {
	_, p, _ := strings.Cut(k, "/")
	var n uint64
	fmt.Sscanf(p, "%d", &n)
	return bonnie.Position(n)
}

// learn adds names under which a target was seen.
func (s *Sink) learn(id string, names ...string) {
	m := s.names[id]
	if m == nil {
		m = map[string]bool{}
		s.names[id] = m
	}
	for _, n := range names {
		if n != "" {
			m[strings.ToLower(n)] = true
		}
	}
}

// learnFrom adds the names of the event's resolved identities that belong
// to a target (a login renamed, an address added), and forgets a target's
// name once the directory gives it to someone else: a login freed by a
// rename and reused must not bring the new holder's events (matched by
// name when they carry no resolved identity, as MailboxModseq does) into
// the interception.
func (s *Sink) learnFrom(ev *bonnie.Event) {
	for _, id := range ev.Identities.All() {
		if id.Unresolved || id.ID == "" {
			continue
		}
		for target, names := range s.names {
			if target == id.ID {
				continue
			}
			for _, n := range id.Names() {
				delete(names, strings.ToLower(n))
			}
		}
		if _, known := s.names[id.ID]; known {
			s.learn(id.ID, id.Names()...)
		}
	}
}

// concerns reports whether ev concerns the target: as actor, as owner of
// the mailbox (or of the old mailbox of a rename or move), or as a sender
// or recipient named in the envelope.
func (s *Sink) concerns(t Target, ev *bonnie.Event) bool {
	names := s.names[t.ID]
	is := func(id *bonnie.Identity, login string) bool {
		if id != nil && !id.Unresolved && id.ID != "" {
			if t.Kind == bonnie.IdentityLogin && id.ID != t.ID {
				// A target named by login only (no directory knew it
				// when the interception started): the login decides.
				return slices.ContainsFunc(id.Names(), func(n string) bool { return strings.EqualFold(n, t.ID) })
			}
			return id.ID == t.ID
		}
		// Unresolved (the directory did not answer in time) or no
		// resolver at all: by the names the target is known by.
		n := strings.ToLower(strings.TrimPrefix(login, "-"))
		return n != "" && (names[n] || (t.Kind == bonnie.IdentityLogin && strings.EqualFold(n, t.ID)))
	}
	var ids bonnie.Identities
	if ev.Identities != nil {
		ids = *ev.Identities
	}
	if ev.User != "" && is(ids.Actor, ev.User) {
		return true
	}
	if ev.Mailbox.Owner != "" && is(ids.Owner, ev.Mailbox.Owner) {
		return true
	}
	if ev.OldMailbox != nil && ev.OldMailbox.Owner != "" && is(nil, ev.OldMailbox.Owner) {
		return true
	}
	for _, a := range envelopeAddresses(ev.Envelope) {
		if names[a] {
			return true
		}
	}
	return false
}

// Look-ahead bounds: how many records after the one handed to Handle are
// read from the log and handed over with it, and how many body bytes.
const (
	aheadRecords = 500
	aheadBytes   = 32 << 20
)

// handOverFrom hands over the record the engine gave and, in the same
// batch, the records after it that are already in the log (up to the next
// Interception event, which changes what is covered): each destination
// gets every handover of the batch with the broker's confirms awaited
// together, and each interception one InterceptDelivery record, before
// Handle returns. So the engine's cursor never passes a record whose
// delivery is not recorded, and a burst costs one commit per batch rather
// than one per record. The records handed later by the engine are then
// skipped (s.ahead).
func (s *Sink) handOverFrom(ctx context.Context, first bonnie.Record) error {
	more, err := s.readAhead(ctx, first)
	if err != nil {
		return err
	}
	batch := append([]bonnie.Record{first}, more...)
	type group struct {
		it    *Interception
		hs    []*Handover
		items []Item
	}
	groups := map[string]*group{}
	var order []*group
	var size int64
	last := first.Position
	for i, rec := range batch {
		if i > 0 && size > aheadBytes {
			break
		}
		s.learnFrom(rec.Event)
		for _, it := range s.sorted() {
			if !it.Covers(rec.Position, rec.Event.Time) || !s.concerns(it.Target, rec.Event) {
				continue
			}
			h, item, err := s.handover(it, rec)
			if err != nil {
				return err
			}
			if h == nil {
				continue // handed over and recorded before a restart
			}
			g := groups[it.ID]
			if g == nil {
				g = &group{it: it}
				groups[it.ID] = g
				order = append(order, g)
			}
			g.hs, g.items = append(g.hs, h), append(g.items, item)
			for _, b := range h.Bodies {
				size += b.Size
			}
		}
		last = rec.Position
	}
	for _, g := range order {
		if err := s.deliver(ctx, g.it, g.hs, g.items); err != nil {
			return err
		}
	}
	s.ahead = last
	return nil
}

// readAhead returns the records the sink wants after first that are in
// the log, up to aheadRecords and before the next Interception event. It
// fails when Options.Log does not hold first as the engine gave it: the
// sink would hand over records of another log.
func (s *Sink) readAhead(ctx context.Context, first bonnie.Record) ([]bonnie.Record, error) {
	recs, _, err := bonnie.ReadMatching(ctx, s.opts.Log, first.Position-1, aheadRecords, Events)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 || recs[0].Position != first.Position || !bytes.Equal(recs[0].Hash, first.Hash) {
		return nil, fmt.Errorf("intercept: Options.Log does not hold position %d as the engine gave it: not the engine's log", first.Position)
	}
	var out []bonnie.Record
	for _, rec := range recs[1:] {
		if rec.Event == nil || !Events.Has(rec.Event.Type) {
			continue
		}
		if rec.Event.Type == bonnie.Interception {
			break
		}
		out = append(out, rec)
	}
	return out, nil
}

// handover builds what one interception hands over of one record, with
// its bodies; nil when that was recorded as delivered already.
func (s *Sink) handover(it *Interception, rec bonnie.Record) (*Handover, Item, error) {
	h := &Handover{
		Interception: it.ID, Warrant: it.Warrant,
		MessageID: fmt.Sprintf("%s/%d", it.ID, rec.Position), Record: rec,
	}
	item := Item{
		Position: rec.Position, Key: rec.Key, Hash: hex.EncodeToString(rec.Hash), Type: rec.Event.Type.String(),
		Time: rec.Event.Time, MessageID: h.MessageID,
	}
	if s.delivered[h.MessageID] {
		return nil, item, nil
	}
	if s.opts.Blobs != nil {
		for _, b := range rec.Event.Bodies {
			if b.Digest == "" {
				continue
			}
			data, err := s.opts.Blobs.Get(b.Digest)
			if err != nil {
				return nil, item, fmt.Errorf("intercept: body %s of position %d: %w", b.Digest, rec.Position, err)
			}
			h.Bodies = append(h.Bodies, Body{UID: b.UID, SHA256: b.Digest, Size: int64(len(data)), Data: data})
			item.Bodies = append(item.Bodies, BodyItem{UID: b.UID, SHA256: b.Digest, Size: int64(len(data))})
		}
	}
	return h, item, nil
}

// deliver hands a batch to one interception's destination and records
// the delivery in the log.
func (s *Sink) deliver(ctx context.Context, it *Interception, hs []*Handover, items []Item) error {
	d := s.dests[it.ID]
	if d == nil {
		var err error
		if d, err = s.opts.Open(it.Destination, it.ID); err != nil {
			return err
		}
		s.dests[it.ID] = d
	}
	if err := d.Deliver(ctx, hs); err != nil {
		return err
	}
	raw, err := json.Marshal(Notice{
		Event: bonnie.InterceptDelivery.String(), Timestamp: stamp(s.opts.Now()), Service: Name,
		ID: it.ID, Warrant: it.Warrant, Destination: it.Destination, Interception: it.Position,
		Delivered: items,
	})
	if err != nil {
		return err
	}
	if _, _, err := s.opts.Record(ctx, raw, Name); err != nil {
		return fmt.Errorf("intercept: record delivery of positions %d-%d: %w", items[0].Position, items[len(items)-1].Position, err)
	}
	for _, item := range items {
		s.delivered[item.MessageID] = true
	}
	return nil
}
