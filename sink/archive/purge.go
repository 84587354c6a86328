package archive

import (
	"context"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Recorder appends one of Bonnie's own events, given as its JSON
// notification, and returns its position once durable: a
// bonnie.Engine.Record, or the bonnie command's hand-off to a running
// daemon.
type Recorder func(ctx context.Context, raw []byte) (bonnie.Position, error)

// Erase carries out a planned erasure (PlanErasure): it records the
// Erasure event by actor, brings the projection up to lg, then destroys
// each body's data key (blob.Store.Erase). The event comes first: if the
// destruction is cut short, the log says what must be gone and Unfinished
// lists it.
func (a *Archive) Erase(ctx context.Context, lg bonnie.Log, rec Recorder, actor string, e *Erasure) (bonnie.Position, error) {
	// A hold placed since the plan was made wins.
	if err := a.checkHolds(ctx, "erase", e.Digests); err != nil {
		return 0, err
	}
	raw, err := ErasureEvent(actor, time.Now(), *e)
	if err != nil {
		return 0, err
	}
	pos, err := rec(ctx, raw)
	if err != nil {
		return 0, fmt.Errorf("archive: record the erasure: %w", err)
	}
	if _, err := a.CatchUp(ctx, lg); err != nil {
		return pos, err
	}
	for _, d := range e.Digests {
		g := GoneBody{Digest: d, Kind: "erased", Position: pos, Actor: actor}
		if err := a.Finish(g); err != nil {
			return pos, fmt.Errorf("archive: erase %s (recorded at position %d; run again to finish): %w", d, pos, err)
		}
	}
	return pos, nil
}

// PurgeBatch removes bodies a PurgePlan found expired: it checks again
// that none is held, records one Purge event by actor naming them, brings
// the projection up to lg, and purges them from the body store. A purge
// in batches is resumable: what a batch recorded is gone from the next
// plan, and what it had not yet destroyed is listed by Unfinished.
func (a *Archive) PurgeBatch(ctx context.Context, lg bonnie.Log, rec Recorder, actor string, bodies []PurgedBody) (bonnie.Position, error) {
	if len(bodies) == 0 {
		return 0, nil
	}
	digests := make([]string, len(bodies))
	for i, b := range bodies {
		digests[i] = b.Digest
	}
	if err := a.checkHolds(ctx, "purge", digests); err != nil {
		return 0, err
	}
	raw, err := PurgeEvent(actor, time.Now(), PurgeRecord{Bodies: bodies})
	if err != nil {
		return 0, err
	}
	pos, err := rec(ctx, raw)
	if err != nil {
		return 0, fmt.Errorf("archive: record the purge: %w", err)
	}
	if _, err := a.CatchUp(ctx, lg); err != nil {
		return pos, err
	}
	for _, b := range bodies {
		g := GoneBody{Digest: b.Digest, Kind: "purged", Position: pos, Actor: actor}
		if err := a.Finish(g); err != nil {
			return pos, fmt.Errorf("archive: purge %s (recorded at position %d; run again to finish): %w", b.Digest, pos, err)
		}
	}
	return pos, nil
}

// checkHolds fails with a *HeldError when an active hold holds any of the
// bodies.
func (a *Archive) checkHolds(ctx context.Context, action string, digests []string) error {
	holds, err := a.Holds(ctx, false)
	if err != nil || len(holds) == 0 {
		return err
	}
	held := map[string]Hold{}
	for _, d := range digests {
		b, err := a.fullBody(ctx, d)
		if err != nil {
			return err
		}
		if h := a.heldBy(ctx, holds, *b); h != nil {
			held[d] = *h
		}
	}
	if len(held) > 0 {
		return &HeldError{Action: action, Held: held}
	}
	return nil
}
