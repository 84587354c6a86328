package main

// Body fetching (--cyrus-spool, --imap): the relay reads the body of every
// message a MessageAppend or MessageNew adds, next to Cyrus, and publishes
// it before the notification. See source/amqp's package doc, "Bodies".

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/bodysource"
	"github.com/bonnie-archive/bonnie/source/amqp"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// bodyConfig holds the flags of body fetching.
type bodyConfig struct {
	bodysource.Flags
	timeout  time.Duration
	parallel int
	chunk    int
}

func (b *bodyConfig) register(fs *flag.FlagSet) {
	b.Register(fs, "cyrus-spool")
	fs.DurationVar(&b.timeout, "body-timeout", bonnie.DefaultBodyTimeout, "longest wait for one notification's bodies; past it the notification is published with the failure")
	fs.IntVar(&b.parallel, "body-parallel", bonnie.DefaultBodyConcurrency, "body fetches at a time")
	fs.IntVar(&b.chunk, "body-chunk-size", amqp.DefaultChunkSize, "largest body chunk published (bytes)")
}

func (b *bodyConfig) check() error {
	switch {
	case b.parallel <= 0:
		return errors.New("--body-parallel must be positive")
	case b.chunk < 1024 || b.chunk > 64<<20:
		return errors.New("--body-chunk-size must be between 1 KiB and 64 MiB")
	}
	return b.Check()
}

// openBodies opens the relay's body store (SPOOL/blobs: the bodies
// fetched and not yet published) and the fetchers; close closes them.
func (r *relay) openBodies(lg *slog.Logger) (close func(), err error) {
	b := &r.cfg.bodies
	if !b.Enabled() {
		return func() {}, nil
	}
	store, err := blob.Open(filepath.Join(r.cfg.spool, "blobs"))
	if err != nil {
		return nil, fmt.Errorf("relay body store: %w", err)
	}
	chain, names, closeAll, err := b.Open(store, lg)
	if err != nil {
		return nil, err
	}
	// A body fetched right before a crash, whose row was not updated,
	// is named by no row: fetched again when needed, removed now.
	removed := 0
	err = store.Walk(context.Background(), func(d string, _ int64, err error) error {
		if err != nil || d == "" {
			return nil
		}
		if used, err := r.sp.references(context.Background(), d); err == nil && !used {
			if os.Remove(store.Path(d)) == nil {
				removed++
			}
		}
		return nil
	})
	if err != nil || removed > 0 {
		lg.Info("relay body store: removed the bodies no spooled notification names", "removed", removed, "err", err)
	}
	r.fetcher, r.store = chain, store
	if len(chain) == 1 {
		r.fetcher = chain[0]
	}
	lg.Info("fetching message bodies", "from", strings.Join(names, "; "), "chunk", b.chunk, "topic", amqp.BodiesTopic(r.cfg.topic))
	return closeAll, nil
}

// After breakAfter whole fetches in a row failed (the IMAP server down or
// hanging), the relay stops asking for cooldown: notifications are
// published at once with the failure instead of each waiting
// --body-timeout (bonnie's engine does the same).
const (
	breakAfter = 3
	cooldown   = 15 * time.Second
)

// breaker is the state of that.
type breaker struct {
	mu        sync.Mutex
	failures  int
	openUntil time.Time
	last      string
}

// fetchRefs fetches the bodies of ev, bounded by --body-timeout. A
// failure of the whole fetch is recorded on every UID, as bonnie's engine
// does.
func (r *relay) fetchRefs(ctx context.Context, ev *bonnie.Event) []bonnie.BodyRef {
	var refs []bonnie.BodyRef
	var err error
	b := &r.breaker
	b.mu.Lock()
	open := time.Now().Before(b.openUntil)
	if open {
		err = fmt.Errorf("body source failing (%s); retrying after %s", b.last, b.openUntil.UTC().Format(time.RFC3339))
	}
	b.mu.Unlock()
	if !open {
		fctx, cancel := context.WithTimeout(ctx, r.cfg.bodies.timeout)
		refs, err = r.fetcher.FetchBodies(fctx, ev)
		cancel()
		if err == nil && len(refs) != len(ev.UIDs) {
			err = fmt.Errorf("fetcher returned %d bodies for %d UIDs", len(refs), len(ev.UIDs))
		}
		b.mu.Lock()
		if err != nil && ctx.Err() == nil {
			b.failures++
			b.last = err.Error()
			if b.failures >= breakAfter {
				b.openUntil = time.Now().Add(cooldown)
				r.lg.Warn("body fetching failing: notifications go without bodies for a while", "err", err, "until", b.openUntil)
			}
		} else if err == nil {
			b.failures = 0
		}
		b.mu.Unlock()
	}
	if err != nil {
		refs = make([]bonnie.BodyRef, len(ev.UIDs))
		for i, uid := range ev.UIDs {
			refs[i] = bonnie.BodyRef{UID: uid, Error: "not fetched by " + r.cfg.host + ": " + err.Error()}
		}
	}
	for i := range refs {
		if refs[i].Digest == "" && refs[i].Error == "" {
			refs[i].Error = "fetcher returned no digest"
		}
		if refs[i].Error != "" {
			r.bodiesFailed.Add(1)
		} else {
			r.bodiesFetched.Add(1)
		}
	}
	return refs
}

// crashAfterBodies, for the tests only, kills the relay (SIGKILL) once the
// bodies of a batch are confirmed and before its notifications are
// published.
var crashAfterBodies = os.Getenv("BONNIE_RELAY_TEST_CRASH_AFTER_BODIES") == "1"

// fetchAhead fetches the bodies of the spooled notifications, oldest
// first, as soon as they are spooled and whether or not the broker is
// reachable (a message expunged meanwhile is lost to IMAP, and to the
// spool files once Cyrus cleans its expunged messages up), and records
// them in the spool rows. It returns when ctx ends; a fetch interrupted
// then is recorded by nobody and done again at the next start.
func (r *relay) fetchAhead(ctx context.Context) {
	for ctx.Err() == nil {
		rows, err := r.sp.unfetched(ctx, 4*r.cfg.bodies.parallel)
		if err != nil {
			r.lg.Warn("body fetcher: spool read failed", "err", err)
		}
		if len(rows) == 0 || err != nil {
			select {
			case <-r.sp.addedFetch:
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		results := make(map[int64][]byte, len(rows))
		var mu sync.Mutex
		sem := make(chan struct{}, r.cfg.bodies.parallel)
		var wg sync.WaitGroup
		for _, row := range rows {
			ev, err := bonnie.Decode(row.raw)
			if err != nil || !bonnie.NeedsBodies(ev) {
				mu.Lock()
				results[row.seq] = []byte{} // a dead letter at the centre, or no body to fetch
				mu.Unlock()
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				js, err := json.Marshal(r.fetchRefs(ctx, ev))
				if err != nil {
					return
				}
				mu.Lock()
				results[row.seq] = js
				mu.Unlock()
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return // stopping: fetch again next time, record nothing
		}
		if err := r.sp.setBodies(context.Background(), results); err != nil {
			r.lg.Warn("body fetcher: spool write failed; fetching again", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		select {
		case r.fetched <- struct{}{}:
		default:
		}
	}
}

// withBodies returns the longest prefix of the batch whose bodies were
// fetched (fetchAhead), after publishing those bodies to the bodies topic
// with confirms and naming them in the rows' metadata. Bodies published
// before a crash are published again (the central store keeps each digest
// once).
func (r *relay) withBodies(pub *amqp.Publisher, rows []row) ([]row, error) {
	for i := range rows {
		if rows[i].bodies == nil {
			rows = rows[:i] // not fetched yet
			break
		}
	}
	topic := amqp.BodiesTopic(r.cfg.topic)
	sent := map[string]bool{}
	for i := range rows {
		if len(rows[i].bodies) == 0 {
			continue // nothing to fetch for it
		}
		var refs []bonnie.BodyRef
		if err := json.Unmarshal(rows[i].bodies, &refs); err != nil {
			return nil, fmt.Errorf("spool row %d: bodies: %w", rows[i].seq, err)
		}
		changed := false
		for j, ref := range refs {
			if ref.Digest == "" || sent[ref.Digest] {
				continue
			}
			rc, err := r.store.Open(ref.Digest)
			if errors.Is(err, blob.ErrNotFound) {
				// Cannot happen unless SPOOL/blobs was tampered with.
				refs[j] = bonnie.BodyRef{UID: ref.UID, Error: fmt.Sprintf("body %s lost from the store of relay %s before it was published", ref.Digest, r.cfg.host)}
				changed = true
				continue
			}
			if err != nil {
				return nil, err
			}
			err = amqp.PublishBody(pub, topic, ref.Digest, ref.Size, rc, r.cfg.bodies.chunk)
			rc.Close()
			if err != nil {
				return nil, err
			}
			sent[ref.Digest] = true
			r.bodiesSent.Add(1)
			r.bodyBytes.Add(ref.Size)
		}
		if changed {
			js, err := json.Marshal(refs)
			if err != nil {
				return nil, err
			}
			if err := r.sp.setBodies(context.Background(), map[int64][]byte{rows[i].seq: js}); err != nil {
				return nil, err
			}
			rows[i].bodies = js
		}
		if rows[i].meta == nil {
			rows[i].meta = map[string]string{}
		}
		rows[i].meta[amqp.MetaBodies] = string(rows[i].bodies)
	}
	if crashAfterBodies && len(sent) > 0 {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Minute)
	}
	return rows, nil
}

// forgetBodies removes from the relay's store the bodies of rows the
// broker confirmed, unless a row still spooled names them too.
func (r *relay) forgetBodies(rows []row) {
	if r.store == nil {
		return
	}
	seen := map[string]bool{}
	for _, row := range rows {
		if len(row.bodies) == 0 {
			continue
		}
		var refs []bonnie.BodyRef
		if json.Unmarshal(row.bodies, &refs) != nil {
			continue
		}
		for _, ref := range refs {
			if ref.Digest == "" || seen[ref.Digest] {
				continue
			}
			seen[ref.Digest] = true
			if used, err := r.sp.references(context.Background(), ref.Digest); err != nil || used {
				continue
			}
			if err := os.Remove(r.store.Path(ref.Digest)); err != nil && !errors.Is(err, os.ErrNotExist) {
				r.lg.Warn("relay body store: could not remove a published body", "sha256", ref.Digest, "err", err)
			}
		}
	}
}
