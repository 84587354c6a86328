package bonnie

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// resolveParallel bounds how many subjects of one batch are resolved at
// the same time.
const resolveParallel = 8

// ResolveCursor is the name under which the log's Cursors keep how far
// ResolvePending has looked: every event before it is resolved (at ingest
// or by an IdentityResolved event).
const ResolveCursor = "vnd.bonnie.resolve"

// ResolveSource is the source name of the IdentityResolved events that
// ResolvePending appends.
const ResolveSource = "bonnie-resolve"

// subjects lists the names of an event that the resolver is asked about.
func subjects(ev *Event) []string {
	var out []string
	if ev.User != "" {
		out = append(out, ev.User)
	}
	if ev.Mailbox.Owner != "" {
		out = append(out, ev.Mailbox.Owner)
	}
	if ev.Type == AclChange && ev.ACLSubject != "" {
		out = append(out, ev.ACLSubject)
	}
	for _, a := range ev.MailboxACL {
		out = append(out, a.Subject)
	}
	return out
}

// resolveBatch stores in each event of the batch the identities behind its
// names. Every distinct (subject, time) is asked once; all of them share
// one deadline (ResolveTimeout), so that a slow or unreachable directory
// delays a batch by at most that much. What is not answered by then is
// stored marked Unresolved.
func (e *Engine) resolveBatch(ctx context.Context, evs []*Event) {
	r := e.opts.Resolver
	if r == nil {
		return
	}
	type key struct {
		subject string
		at      time.Time
	}
	index := map[key]int{}
	var keys []key
	for _, ev := range evs {
		if ev == nil || !resolvesIdentities(ev.Type) {
			continue
		}
		for _, s := range subjects(ev) {
			k := key{s, ev.Time}
			if _, ok := index[k]; !ok {
				index[k] = len(keys)
				keys = append(keys, k)
			}
		}
	}
	if len(keys) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, e.opts.ResolveTimeout)
	defer cancel()
	results := make([]Identity, len(keys))
	sem := make(chan struct{}, resolveParallel)
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
				results[i] = e.resolveOne(rctx, k.subject, k.at)
			case <-rctx.Done():
				results[i] = unresolved(Identity{}, k.subject, e.timeoutError(rctx))
			}
		}()
	}
	wg.Wait()
	failed, reason := 0, ""
	for i := range results {
		if results[i].Unresolved {
			failed++
			reason = results[i].Reason
		}
	}
	if failed > 0 {
		e.log.Warn("identities left unresolved; ResolvePending fills them in later", "subjects", failed, "of", len(keys), "reason", reason)
	}
	get := func(s string, at time.Time) *Identity {
		id := results[index[key{s, at}]] // a copy: each event owns its identities
		return &id
	}
	for _, ev := range evs {
		if ev == nil || !resolvesIdentities(ev.Type) || len(subjects(ev)) == 0 {
			continue
		}
		ids := &Identities{}
		if ev.User != "" {
			ids.Actor = get(ev.User, ev.Time)
		}
		if ev.Mailbox.Owner != "" {
			ids.Owner = get(ev.Mailbox.Owner, ev.Time)
		}
		if ev.Type == AclChange && ev.ACLSubject != "" {
			ids.Subject = get(ev.ACLSubject, ev.Time)
		}
		for _, a := range ev.MailboxACL {
			ids.ACL = append(ids.ACL, *get(a.Subject, ev.Time))
		}
		ev.Identities = ids
	}
}

func (e *Engine) timeoutError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %v", e.opts.ResolveTimeout)
	}
	return ctx.Err()
}

// resolveOne asks the resolver about one subject, waiting no longer than
// ctx allows even if the resolver itself does not honour ctx.
func (e *Engine) resolveOne(ctx context.Context, subject string, at time.Time) Identity {
	type answer struct {
		id  Identity
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				ch <- answer{err: fmt.Errorf("resolver panicked: %v", p)}
			}
		}()
		id, err := e.opts.Resolver.Resolve(ctx, subject, at)
		ch <- answer{id, err}
	}()
	var a answer
	select {
	case a = <-ch:
	case <-ctx.Done():
		a.err = e.timeoutError(ctx)
	}
	if a.err != nil {
		return unresolved(a.id, subject, a.err)
	}
	if a.id.Subject == "" {
		a.id.Subject = subject
	}
	if a.id.Kind == "" {
		a.id.Kind = IdentityLogin
	}
	if a.id.ResolvedAt.IsZero() {
		a.id.ResolvedAt = time.Now().UTC()
	}
	return a.id
}

// unresolved marks an identity that could not be resolved, keeping what
// the resolver knew without the directory (kind, negation).
func unresolved(id Identity, subject string, err error) Identity {
	out := Identity{Subject: subject, Kind: id.Kind, Negative: id.Negative, Source: id.Source,
		Unresolved: true, Reason: err.Error()}
	if out.Kind == "" {
		out.Kind = guessKind(subject)
		out.Negative = strings.HasPrefix(subject, "-")
	}
	return out
}

// guessKind classifies a subject without a directory.
func guessKind(s string) IdentityKind {
	s = strings.TrimPrefix(s, "-")
	switch {
	case len(s) > 6 && strings.EqualFold(s[:6], "group:"):
		return IdentityGroup
	case strings.EqualFold(s, "anyone") || strings.EqualFold(s, "anonymous"):
		return IdentitySpecial
	}
	return IdentityUser
}

// ResolvePending is the resolution pass: it finds the events stored with
// identities marked Unresolved that no IdentityResolved event covers yet,
// resolves those identities now, and appends for each such event an
// IdentityResolved event naming its position and carrying its identities,
// the late ones marked Late (their memberships are those of the time of
// this pass, ResolvedAt). The log is append-only: nothing is rewritten.
//
// It returns how many events it resolved. An event whose identities still
// cannot be resolved is left for the next pass; after three such events in
// a row the pass stops (the directory is still away). The pass remembers
// how far everything is resolved (ResolveCursor), so the next one starts
// there. It needs Options.Resolver, and the same exclusive access to the
// log as ingest (one process).
func (e *Engine) ResolvePending(ctx context.Context) (int, error) {
	if e.opts.Resolver == nil {
		return 0, errors.New("bonnie: ResolvePending needs Options.Resolver")
	}
	e.resolving.Lock()
	defer e.resolving.Unlock()
	from, err := e.store.Cursor(ctx, ResolveCursor)
	if err != nil {
		return 0, fmt.Errorf("bonnie: resolve: %w", err)
	}
	var pending []Position
	done := map[Position]bool{}
	pos := from
	for {
		recs, err := e.store.Read(ctx, pos, 1000)
		if err != nil {
			return 0, fmt.Errorf("bonnie: resolve: read log: %w", err)
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			pos = rec.Position
			ev := rec.Event
			if ev == nil {
				continue
			}
			if ev.Type == IdentityResolved {
				if res, err := ev.Resolution(); err == nil {
					done[res.Resolves] = true
				}
				continue
			}
			if ev.Identities.Unresolved() {
				pending = append(pending, rec.Position)
			}
		}
	}
	n, failures := 0, 0
	var left Position
	for _, p := range pending {
		if done[p] {
			continue
		}
		if failures >= 3 {
			if left == 0 {
				left = p
			}
			break
		}
		recs, err := e.store.Read(ctx, p-1, 1)
		if err != nil || len(recs) == 0 || recs[0].Position != p {
			return n, fmt.Errorf("bonnie: resolve: read position %d: %v", p, err)
		}
		raw, err := e.lateResolution(ctx, recs[0])
		if err != nil {
			e.log.Info("identity still unresolved", "position", p, "err", err)
			failures++
			if left == 0 {
				left = p
			}
			continue
		}
		failures = 0
		if _, _, err := e.submit(ctx, &request{ctx: ctx, raw: raw, source: ResolveSource, internal: true, done: make(chan result, 1)}); err != nil {
			return n, fmt.Errorf("bonnie: resolve: append resolution of %d: %w", p, err)
		}
		n++
	}
	cursor := pos
	if left != 0 {
		cursor = left - 1
	}
	if cursor != from {
		if err := e.store.SetCursor(ctx, ResolveCursor, cursor); err != nil {
			return n, fmt.Errorf("bonnie: resolve: %w", err)
		}
	}
	return n, nil
}

// lateResolution resolves what rec's event left unresolved and returns the
// IdentityResolved notification that records it.
func (e *Engine) lateResolution(ctx context.Context, rec Record) ([]byte, error) {
	ev := rec.Event
	ids := &Identities{}
	if b, err := json.Marshal(ev.Identities); err != nil {
		return nil, err
	} else if err := json.Unmarshal(b, ids); err != nil { // a deep copy
		return nil, err
	}
	for _, id := range ids.All() {
		if !id.Unresolved {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, e.opts.ResolveTimeout)
		got := e.resolveOne(rctx, id.Subject, ev.Time)
		cancel()
		if got.Unresolved {
			return nil, fmt.Errorf("%s: %s", id.Subject, got.Reason)
		}
		got.Late = true
		*id = got
	}
	body := map[string]any{
		"event":         IdentityResolved.String(),
		"timestamp":     time.Now().UTC().Format(time.RFC3339Nano),
		"service":       ResolveSource,
		extraResolves:   rec.Position,
		extraEventKey:   rec.Key,
		extraEventTime:  ev.Time.UTC().Format(time.RFC3339Nano),
		extraIdentities: ids,
	}
	return json.Marshal(body)
}

// resolveLoop runs ResolvePending at start and every ResolveEvery until
// ctx ends.
func (e *Engine) resolveLoop(ctx context.Context) {
	t := time.NewTicker(e.opts.ResolveEvery)
	defer t.Stop()
	for {
		n, err := e.ResolvePending(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			e.log.Error("resolution pass", "err", err)
		case n > 0:
			e.log.Info("identities resolved after the fact", "events", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
