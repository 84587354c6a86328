package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// CacheOptions configure a Cache.
type CacheOptions struct {
	// TTL is how long an answer is served from the cache (default 60s).
	// No answer is older than TTL: a change in the directory is seen at
	// most TTL after it was made.
	TTL time.Duration
	// NegativeTTL is how long "not in the directory" is cached (default
	// the smaller of TTL and 10s), so that a new account is seen soon.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache (default 100000); past it, it is
	// emptied.
	MaxEntries int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Cache is a Resolver that keeps the answers of another one for a TTL. It
// is made for resolvers that answer with the directory's current state,
// whatever the time asked about (like LDAP): it ignores that time.
//
// Besides expiry, it drops what a fresh answer shows to be out of date,
// so that no answer outlives a change the cache has seen: when a lookup
// finds that a persistent id now has other names, groups or members than
// a cached answer about it says (a rename: same entryUUID, new uid), every
// cached answer naming that id is dropped, with those about the groups it
// joined or left (or the members that joined or left); a cached user that
// a fresh group answer no longer lists as a member (or the reverse) is
// dropped; and a name that now belongs to another id drops the answers
// about the id it belonged to. Errors are never cached; concurrent lookups
// of one name share one call.
type Cache struct {
	next   bonnie.Resolver
	opts   CacheOptions
	hits   atomic.Int64
	misses atomic.Int64

	mu      sync.Mutex
	entries map[string]*cacheEntry
	byID    map[string]map[string]bool // persistent id -> keys whose answer names it
	calls   map[string]*cacheCall
}

type cacheEntry struct {
	id      bonnie.Identity
	expires time.Time
}

type cacheCall struct {
	done chan struct{}
	id   bonnie.Identity
	err  error
}

// NewCache wraps next with a cache.
func NewCache(next bonnie.Resolver, opts CacheOptions) *Cache {
	if opts.TTL <= 0 {
		opts.TTL = time.Minute
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = min(opts.TTL, 10*time.Second)
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 100_000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Cache{next: next, opts: opts, entries: map[string]*cacheEntry{},
		byID: map[string]map[string]bool{}, calls: map[string]*cacheCall{}}
}

// cacheKey is the cache's key for a subject: its kind and name, lower
// case, without negation (which is put back on every answer).
func cacheKey(sub Subject) string {
	return string(sub.Kind) + ":" + strings.ToLower(sub.Name)
}

// Resolve implements bonnie.Resolver.
func (c *Cache) Resolve(ctx context.Context, subject string, at time.Time) (bonnie.Identity, error) {
	sub := ParseSubject(subject)
	key := cacheKey(sub)
	c.mu.Lock()
	if e, ok := c.entries[key]; ok && c.opts.Now().Before(e.expires) {
		c.mu.Unlock()
		c.hits.Add(1)
		return answerFor(e.id, sub), nil
	}
	call, shared := c.calls[key]
	if !shared {
		call = &cacheCall{done: make(chan struct{})}
		c.calls[key] = call
	}
	c.mu.Unlock()
	c.misses.Add(1)
	if shared {
		select {
		case <-call.done:
			if call.err != nil {
				return partial(sub, ""), call.err
			}
			return answerFor(call.id, sub), nil
		case <-ctx.Done():
			return partial(sub, ""), ctx.Err()
		}
	}
	// Ask with the positive form of the subject: the answer is stored
	// for both.
	ask := subject
	if sub.Negative {
		ask = strings.TrimPrefix(strings.TrimSpace(subject), "-")
	}
	var id bonnie.Identity
	var err error
	func() {
		// Whatever happens, the call ends: those waiting on it are
		// released and the next lookup asks again.
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("identity: resolver panicked: %v", p)
			}
			call.id, call.err = id, err
			c.mu.Lock()
			delete(c.calls, key)
			if err == nil {
				c.store(key, id)
			}
			c.mu.Unlock()
			close(call.done)
		}()
		id, err = c.next.Resolve(ctx, ask, at)
	}()
	if err != nil {
		id.Subject, id.Negative = subject, sub.Negative
		return id, err
	}
	return answerFor(id, sub), nil
}

// answerFor is a cached answer as the answer to sub: its own copy, with
// the subject and negation of the question.
func answerFor(id bonnie.Identity, sub Subject) bonnie.Identity {
	id.Subject, id.Negative = sub.Raw, sub.Negative
	id.Aliases = slices.Clone(id.Aliases)
	id.Addresses = slices.Clone(id.Addresses)
	id.Groups = slices.Clone(id.Groups)
	id.Roles = slices.Clone(id.Roles)
	id.Members = slices.Clone(id.Members)
	return id
}

// fingerprint is what makes two answers about one id differ.
func fingerprint(id bonnie.Identity) string {
	id.Subject, id.Negative, id.ResolvedAt, id.Late = "", false, time.Time{}, false
	b, _ := json.Marshal(id)
	return string(b)
}

// store caches a fresh answer and drops what it shows to be stale.
// c.mu is held.
func (c *Cache) store(key string, id bonnie.Identity) {
	if len(c.entries) >= c.opts.MaxEntries {
		c.purgeLocked()
	}
	if old, ok := c.entries[key]; ok && old.id.ID != id.ID && old.id.ID != "" {
		// The name moved to another id: what was cached about the old
		// one may still list it.
		c.dropID(old.id.ID)
	}
	if id.ID != "" {
		c.dropStale(id)
	}
	ttl := c.opts.TTL
	if id.Kind == bonnie.IdentityLogin || (id.Kind == bonnie.IdentityGroup && id.ID == "") {
		ttl = c.opts.NegativeTTL
	}
	c.delete(key)
	c.entries[key] = &cacheEntry{id: id, expires: c.opts.Now().Add(ttl)}
	for _, ref := range cacheRefs(id) {
		if c.byID[ref] == nil {
			c.byID[ref] = map[string]bool{}
		}
		c.byID[ref][key] = true
	}
}

// dropStale drops the cached answers that a fresh answer about id
// contradicts. c.mu is held.
func (c *Cache) dropStale(id bonnie.Identity) {
	fresh := fingerprint(id)
	var changed []string
	stale := false
	var disagree []string
	for k := range c.byID[id.ID] {
		e := c.entries[k]
		switch {
		case e == nil:
		case e.id.ID == id.ID:
			// The same entry under this or another name: did it change?
			if fingerprint(e.id) != fresh {
				stale = true
				changed = append(changed, changedRefs(e.id, id)...)
			}
		case !lists(id, e.id.ID):
			// A user cached as in this group (or a group cached as
			// having this user) that the fresh answer does not confirm.
			disagree = append(disagree, k)
		}
	}
	// Users (groups) the fresh answer lists whose cached answers do not
	// list this group (user).
	for _, r := range cacheRelations(id) {
		for k := range c.byID[r] {
			if e := c.entries[k]; e != nil && e.id.ID == r && !lists(e.id, id.ID) {
				disagree = append(disagree, k)
			}
		}
	}
	for _, k := range disagree {
		c.delete(k)
	}
	if stale {
		// Its names or relations changed: drop every answer that names
		// it, and those about the groups or members that changed.
		c.dropID(id.ID)
		for _, r := range changed {
			c.dropID(r)
		}
	}
}

// cacheRelations are the ids an answer relates to: a user's groups, a
// group's members.
func cacheRelations(id bonnie.Identity) []string {
	var out []string
	for _, r := range slices.Concat(id.Groups, id.Members) {
		out = append(out, r.ID)
	}
	return out
}

// lists reports whether an answer names other among its groups or
// members.
func lists(id bonnie.Identity, other string) bool {
	return slices.ContainsFunc(slices.Concat(id.Groups, id.Members), func(r bonnie.Ref) bool { return r.ID == other })
}

// cacheRefs are the ids an answer depends on: its own, and its groups'
// (a user) or members' (a group).
func cacheRefs(id bonnie.Identity) []string {
	var out []string
	if id.ID != "" {
		out = append(out, id.ID)
	}
	return append(out, cacheRelations(id)...)
}

// changedRefs lists the groups and members that are in one answer and not
// in the other.
func changedRefs(a, b bonnie.Identity) []string {
	set := map[string]int{}
	for _, r := range slices.Concat(a.Groups, a.Members) {
		set[r.ID] |= 1
	}
	for _, r := range slices.Concat(b.Groups, b.Members) {
		set[r.ID] |= 2
	}
	var out []string
	for id, v := range set {
		if v != 3 {
			out = append(out, id)
		}
	}
	return out
}

// dropID drops every answer that depends on a persistent id. c.mu is held.
func (c *Cache) dropID(id string) {
	for k := range c.byID[id] {
		c.delete(k)
	}
	delete(c.byID, id)
}

// delete drops one key and its index entries. c.mu is held.
func (c *Cache) delete(key string) {
	e, ok := c.entries[key]
	if !ok {
		return
	}
	delete(c.entries, key)
	for _, ref := range cacheRefs(e.id) {
		if m := c.byID[ref]; m != nil {
			delete(m, key)
			if len(m) == 0 {
				delete(c.byID, ref)
			}
		}
	}
}

// Invalidate drops the cached answer about subject and everything cached
// about the id it named.
func (c *Cache) Invalidate(subject string) {
	key := cacheKey(ParseSubject(subject))
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && e.id.ID != "" {
		c.dropID(e.id.ID)
	}
	c.delete(key)
}

// Purge empties the cache.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purgeLocked()
}

func (c *Cache) purgeLocked() {
	clear(c.entries)
	clear(c.byID)
}

// Stats returns how many lookups were answered from the cache and how many
// went to the resolver behind it.
func (c *Cache) Stats() (hits, misses int64) { return c.hits.Load(), c.misses.Load() }
