package archive

// Governance of the archive: retention policies, legal holds, erasure and
// purge. Each is one of Bonnie's own events in the log (bonnie.OwnEvents,
// appended by bonnie.Engine.Record), so who set a policy, placed or
// released a hold, erased or purged what, and when, is evidence in the same
// hash chain as the mail. The event's user member is the actor; the
// details are in one vnd.bonnie.* member (a JSON object):
//
//	vnd.bonnie.RetentionPolicy  vnd.bonnie.action: set|remove, vnd.bonnie.policy: Policy
//	vnd.bonnie.LegalHold        vnd.bonnie.action: place|release, vnd.bonnie.hold: Hold
//	vnd.bonnie.Erasure          vnd.bonnie.erasure: Erasure (what was erased, and what was kept and why)
//	vnd.bonnie.Purge            vnd.bonnie.purge: PurgeRecord (what was removed, under which policies)
//
// The projection replays them like the mail events (tables policies,
// holds, gone, erased_people), so the current policies and holds are
// always those of the log.
//
// Rules:
//
//   - Retention is per occurrence (a body arriving in a folder): it ends
//     Keep after the occurrence's time, for the longest of the policies
//     that match it; an occurrence no policy matches is kept for ever. A
//     body (stored once for all its recipients) expires only when every
//     one of its occurrences has expired: a body shared with someone whose
//     retention is longer stays.
//   - A body is held when any active hold matches it: a hold's custodian,
//     folder and date range must all match one occurrence, and its query
//     the body. A held body is never purged or erased; the refusal names
//     the hold (ErrHeld, *HeldError).
//   - Erasing a message (by Message-ID or SHA-256) erases that body for
//     everyone who received it: the operator named the content.
//   - Erasing a person erases only the bodies that no one else still has:
//     a body whose occurrences all belong to the person (or to people
//     erased before) is erased; one that another person or a shared
//     folder also holds is kept, and the Erasure event lists it with whom
//     it is shared. When the last of them is erased, the body goes.
//   - Erasure and purge record the event first, then destroy the bodies
//     (blob.Store.Erase, Purge): a run that dies in between leaves the log
//     saying what must be gone, and the next run (or Unfinished) finishes
//     it. The log is never rewritten: its hashes stay verifiable.
//   - Erasure reaches the bodies. What the log itself holds of a message
//     (folder names, Message-IDs, the envelope Cyrus sent) is evidence in
//     the hash chain and stays.
//   - The same bytes delivered again after an erasure or a purge are a new
//     delivery: stored anew under a new data key, and no longer gone.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Members of Bonnie's governance events.
const (
	MemberAction  = "vnd.bonnie.action"
	MemberPolicy  = "vnd.bonnie.policy"
	MemberHold    = "vnd.bonnie.hold"
	MemberErasure = "vnd.bonnie.erasure"
	MemberPurge   = "vnd.bonnie.purge"
)

// Actions of policy and hold events.
const (
	ActionSet     = "set"
	ActionRemove  = "remove"
	ActionPlace   = "place"
	ActionRelease = "release"
)

// GovernanceEvents are the own events the projection indexes.
var GovernanceEvents = bonnie.Mask(bonnie.RetentionPolicy, bonnie.LegalHold, bonnie.Erasure, bonnie.Purge)

// ErrHeld is wrapped by every *HeldError.
var ErrHeld = errors.New("archive: held")

// ErrErased is returned for a body the log erased or purged.
var ErrErased = errors.New("archive: erased")

// HeldError refuses to purge or erase bodies under legal hold.
type HeldError struct {
	Action string          // "erase" or "purge"
	Held   map[string]Hold // digest -> one hold that holds it
}

func (e *HeldError) Error() string {
	byID := map[string]Hold{}
	for _, h := range e.Held {
		byID[h.ID] = h
	}
	var names []string
	for _, h := range byID {
		s := fmt.Sprintf("%q", h.ID)
		if h.Matter != "" {
			s += " (" + h.Matter + ")"
		}
		names = append(names, s+fmt.Sprintf(" placed by %s at %s", h.Actor, h.Time.UTC().Format(time.RFC3339)))
	}
	sort.Strings(names)
	return fmt.Sprintf("archive: refusing to %s: %d bodies are under legal hold %s", e.Action, len(e.Held), strings.Join(names, ", "))
}

// Unwrap returns ErrHeld.
func (e *HeldError) Unwrap() error { return ErrHeld }

// Policy is a retention policy: occurrences that match all of its
// criteria (none: every occurrence) are kept for Keep after they arrived.
type Policy struct {
	ID string `json:"id"`
	// Folder: a folder's uniqueid, or a name it had, with its subfolders
	// ("user.alice" covers user.alice.Work).
	Folder string `json:"folder,omitempty"`
	// Owner: the login in the folder's name, or the owner's persistent id.
	Owner string `json:"owner,omitempty"`
	// Group: a group (id or name) the owner belonged to when the message
	// arrived (the identity snapshot of the event).
	Group string `json:"group,omitempty"`
	// Keep: how long, "10y", "90d", "36h" (years of 365 days are calendar
	// years).
	Keep string `json:"keep"`
	Note string `json:"note,omitempty"`

	// From the log: the event that set it.
	Position bonnie.Position `json:"position,omitempty"`
	Time     time.Time       `json:"time,omitzero"`
	Actor    string          `json:"actor,omitempty"`
}

// ParseKeep checks a retention period: Ny (years), Nd (days) or a Go
// duration.
func ParseKeep(s string) (func(time.Time) time.Time, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "y"); ok {
		if v, err := strconv.Atoi(n); err == nil && v >= 0 {
			return func(t time.Time) time.Time { return t.AddDate(v, 0, 0) }, nil
		}
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if v, err := strconv.Atoi(n); err == nil && v >= 0 {
			return func(t time.Time) time.Time { return t.AddDate(0, 0, v) }, nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return func(t time.Time) time.Time { return t.Add(d) }, nil
	}
	return nil, fmt.Errorf("archive: retention %q: want Ny, Nd or a duration such as 36h", s)
}

// Validate checks a policy before it is recorded.
func (p Policy) Validate() error {
	if p.ID == "" {
		return errors.New("archive: a policy needs an id")
	}
	_, err := ParseKeep(p.Keep)
	return err
}

func (p Policy) matches(o Occurrence) bool {
	return (p.Folder == "" || inFolder(o, p.Folder)) &&
		(p.Owner == "" || o.Owner == p.Owner || o.OwnerID == p.Owner) &&
		(p.Group == "" || strings.Contains(o.groups, "|"+p.Group+"|"))
}

func inFolder(o Occurrence, f string) bool {
	return o.Folder == f || o.Path == f || strings.HasPrefix(o.Path, f+".") || strings.HasPrefix(o.Path, f+"/")
}

// Hold is a legal hold: a body is held when one of its occurrences
// matches Custodian, Folder and the range [From, To) together, and the
// body matches Query; criteria left empty match everything, but a hold
// needs at least one.
type Hold struct {
	ID     string `json:"id"`
	Matter string `json:"matter,omitempty"`
	// Custodian: the owner's login or persistent id.
	Custodian string    `json:"custodian,omitempty"`
	Folder    string    `json:"folder,omitempty"`
	From      time.Time `json:"from,omitzero"`
	To        time.Time `json:"to,omitzero"`
	// Query: space-separated terms, all of which must match the body:
	// messageid:<id>, sha256:<digest>, from:<text>, to:<text>,
	// subject:<text> (case-insensitive substrings of the header field).
	// A body whose header cannot be read (encrypted, no site key) matches
	// a header term: a hold errs on the side of keeping.
	Query string `json:"query,omitempty"`

	// From the log: who placed it, and who released it.
	Position bonnie.Position `json:"position,omitempty"`
	Time     time.Time       `json:"time,omitzero"`
	Actor    string          `json:"actor,omitempty"`
	Released *Release        `json:"released,omitempty"`
}

// Release records who released a hold, and when.
type Release struct {
	Position bonnie.Position `json:"position"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
}

// Validate checks a hold before it is recorded.
func (h Hold) Validate() error {
	if h.ID == "" {
		return errors.New("archive: a hold needs an id")
	}
	if h.Custodian == "" && h.Folder == "" && h.From.IsZero() && h.To.IsZero() && h.Query == "" {
		return errors.New("archive: a hold needs a custodian, a folder, a date range or a query")
	}
	_, err := parseQuery(h.Query)
	return err
}

type term struct{ field, value string }

func parseQuery(q string) ([]term, error) {
	var out []term
	for _, f := range strings.Fields(q) {
		k, v, ok := strings.Cut(f, ":")
		k = strings.ToLower(k)
		switch {
		case !ok || v == "":
			return nil, fmt.Errorf("archive: query term %q: want field:value", f)
		case k == "messageid" || k == "sha256" || k == "from" || k == "to" || k == "subject":
			out = append(out, term{k, v})
		default:
			return nil, fmt.Errorf("archive: query term %q: fields are messageid, sha256, from, to, subject", f)
		}
	}
	return out, nil
}

func (h Hold) matchesOccurrence(o Occurrence) bool {
	return (h.Custodian == "" || o.Owner == h.Custodian || o.OwnerID == h.Custodian) &&
		(h.Folder == "" || inFolder(o, h.Folder)) &&
		(h.From.IsZero() || !o.Time.Before(h.From)) &&
		(h.To.IsZero() || o.Time.Before(h.To))
}

// holdsBody reports whether h holds b.
func (a *Archive) holdsBody(ctx context.Context, h Hold, b Body) bool {
	if h.Custodian != "" || h.Folder != "" || !h.From.IsZero() || !h.To.IsZero() {
		hit := false
		for _, o := range b.Occurrences {
			if h.matchesOccurrence(o) {
				hit = true
				break
			}
		}
		if !hit {
			return false
		}
	}
	terms, _ := parseQuery(h.Query)
	for _, t := range terms {
		switch t.field {
		case "messageid":
			if b.MessageID != NormalizeMessageID(t.value) {
				return false
			}
		case "sha256":
			if b.Digest != strings.ToLower(t.value) {
				return false
			}
		default:
			v, ok := a.header(b.Digest, t.field)
			if ok && !strings.Contains(strings.ToLower(v), strings.ToLower(t.value)) {
				return false
			}
		}
	}
	return true
}

// header reads a header field of a stored body; ok is false when the body
// cannot be read.
func (a *Archive) header(digest, field string) (string, bool) {
	if a.blobs == nil {
		return "", false
	}
	r, err := a.blobs.Open(digest)
	if err != nil {
		return "", false
	}
	defer r.Close()
	return HeaderField(r, field), true
}

// Erasure is what an Erasure event records.
type Erasure struct {
	// Message (a Message-ID or a SHA-256) or User (a login or persistent
	// id) names what was asked to be erased.
	Message string `json:"message,omitempty"`
	User    string `json:"user,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// People are the owner names and ids the user's occurrences carry.
	People []string `json:"people,omitempty"`
	// Digests are the bodies erased.
	Digests []string `json:"digests"`
	// Kept are the user's bodies that were not erased because others
	// still hold them.
	Kept []Kept `json:"kept,omitempty"`
	// Encrypted is false when some bodies were stored unencrypted: their
	// files were deleted, copies elsewhere (backups) keep them.
	Encrypted bool `json:"encrypted"`
}

// Kept is a body of an erased person that someone else still holds.
type Kept struct {
	Digest     string   `json:"sha256"`
	SharedWith []string `json:"sharedWith"`
}

// PurgeRecord is what a Purge event records.
type PurgeRecord struct {
	Bodies []PurgedBody `json:"bodies"`
}

// PurgedBody is one body a purge removed.
type PurgedBody struct {
	Digest string `json:"sha256"`
	Size   int64  `json:"size"`
	// Expired is when the last of its occurrences' retention ended;
	// Policies are the policies that set it.
	Expired  time.Time `json:"expired"`
	Policies []string  `json:"policies"`
}

// GoneBody is a body the log erased or purged.
type GoneBody struct {
	Digest   string          `json:"sha256"`
	Kind     string          `json:"kind"` // blob.KindErased or blob.KindPurged
	Position bonnie.Position `json:"position"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
}

// Note is what the body store's tombstone says of it.
func (g GoneBody) Note() string {
	return fmt.Sprintf("%s by %s, log position %d", g.Kind, g.Actor, g.Position)
}

// ownEvent builds the notification of one of Bonnie's own events.
func ownEvent(t bonnie.EventType, actor string, at time.Time, members map[string]any) ([]byte, error) {
	m := map[string]any{"event": t.String(), "timestamp": at.UTC().Format(time.RFC3339Nano), "service": "bonnie-archive", "user": actor}
	for k, v := range members {
		m[k] = v
	}
	return json.Marshal(m)
}

// PolicyEvent is the RetentionPolicy notification that sets (ActionSet)
// or removes (ActionRemove) p, by actor at at.
func PolicyEvent(actor string, at time.Time, action string, p Policy) ([]byte, error) {
	if action == ActionSet {
		if err := p.Validate(); err != nil {
			return nil, err
		}
	}
	p.Position, p.Time, p.Actor = 0, time.Time{}, ""
	return ownEvent(bonnie.RetentionPolicy, actor, at, map[string]any{MemberAction: action, MemberPolicy: p})
}

// HoldEvent is the LegalHold notification that places (ActionPlace) or
// releases (ActionRelease) h.
func HoldEvent(actor string, at time.Time, action string, h Hold) ([]byte, error) {
	if action == ActionPlace {
		if err := h.Validate(); err != nil {
			return nil, err
		}
	}
	h.Position, h.Time, h.Actor, h.Released = 0, time.Time{}, "", nil
	return ownEvent(bonnie.LegalHold, actor, at, map[string]any{MemberAction: action, MemberHold: h})
}

// ErasureEvent is the Erasure notification of e.
func ErasureEvent(actor string, at time.Time, e Erasure) ([]byte, error) {
	return ownEvent(bonnie.Erasure, actor, at, map[string]any{MemberErasure: e})
}

// PurgeEvent is the Purge notification of p.
func PurgeEvent(actor string, at time.Time, p PurgeRecord) ([]byte, error) {
	return ownEvent(bonnie.Purge, actor, at, map[string]any{MemberPurge: p})
}

// indexGovernance applies one governance record to the projection.
func indexGovernance(ctx context.Context, tx *sql.Tx, rec bonnie.Record) error {
	ev := rec.Event
	member := func(name string, v any) error {
		raw, ok := ev.Extra[name]
		if !ok {
			return fmt.Errorf("archive: %s at position %d without %s", ev.Type, rec.Position, name)
		}
		return json.Unmarshal(raw, v)
	}
	var action string
	if raw, ok := ev.Extra[MemberAction]; ok {
		_ = json.Unmarshal(raw, &action)
	}
	pos, at, actor := rec.Position, fmtTime(ev.Time), ev.User
	var err error
	switch ev.Type {
	case bonnie.RetentionPolicy:
		var p Policy
		if err := member(MemberPolicy, &p); err != nil {
			return err
		}
		if action == ActionRemove {
			_, err = tx.ExecContext(ctx, `DELETE FROM policies WHERE id = ?`, p.ID)
			break
		}
		spec, _ := json.Marshal(p)
		_, err = tx.ExecContext(ctx, `INSERT INTO policies(id, spec, position, time, actor) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, position = excluded.position, time = excluded.time, actor = excluded.actor`,
			p.ID, string(spec), pos, at, actor)
	case bonnie.LegalHold:
		var h Hold
		if err := member(MemberHold, &h); err != nil {
			return err
		}
		if action == ActionRelease {
			_, err = tx.ExecContext(ctx, `UPDATE holds SET released_position = ?, released_time = ?, released_actor = ? WHERE id = ? AND released_position = 0`,
				pos, at, actor, h.ID)
			break
		}
		spec, _ := json.Marshal(h)
		_, err = tx.ExecContext(ctx, `INSERT INTO holds(id, spec, position, time, actor) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, position = excluded.position, time = excluded.time, actor = excluded.actor,
			released_position = 0, released_time = '', released_actor = ''`, h.ID, string(spec), pos, at, actor)
	case bonnie.Erasure:
		var e Erasure
		if err := member(MemberErasure, &e); err != nil {
			return err
		}
		for _, d := range e.Digests {
			if err = markGone(ctx, tx, d, "erased", pos, at, actor); err != nil {
				return err
			}
		}
		for _, p := range e.People {
			if _, err = tx.ExecContext(ctx, `INSERT OR IGNORE INTO erased_people(person, position) VALUES (?, ?)`, p, pos); err != nil {
				break
			}
		}
	case bonnie.Purge:
		var p PurgeRecord
		if err := member(MemberPurge, &p); err != nil {
			return err
		}
		for _, b := range p.Bodies {
			if err = markGone(ctx, tx, b.Digest, "purged", pos, at, actor); err != nil {
				return err
			}
		}
	}
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

func markGone(ctx context.Context, tx *sql.Tx, d, kind string, pos bonnie.Position, at, actor string) error {
	// Not when the body was delivered again after this event (replayed
	// in one batch with it).
	_, err := tx.ExecContext(ctx, `INSERT INTO gone(digest, kind, position, time, actor)
		SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM occurrences WHERE digest = ? AND position > ?)
		ON CONFLICT(digest) DO NOTHING`, d, kind, pos, at, actor, d, pos)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return nil
}

// Policies returns the retention policies in force, by id.
func (a *Archive) Policies(ctx context.Context) ([]Policy, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT spec, position, time, actor FROM policies ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer rows.Close()
	var out []Policy
	for rows.Next() {
		var p Policy
		var spec, t string
		if err := rows.Scan(&spec, &p.Position, &t, &p.Actor); err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		if err := json.Unmarshal([]byte(spec), &p); err != nil {
			return nil, fmt.Errorf("archive: policy: %w", err)
		}
		p.Time = parseTime(t)
		out = append(out, p)
	}
	return out, rows.Err()
}

// Holds returns the active holds (and the released ones with all), by id.
func (a *Archive) Holds(ctx context.Context, all bool) ([]Hold, error) {
	q := `SELECT spec, position, time, actor, released_position, released_time, released_actor FROM holds`
	if !all {
		q += ` WHERE released_position = 0`
	}
	rows, err := a.db.QueryContext(ctx, q+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer rows.Close()
	var out []Hold
	for rows.Next() {
		var h Hold
		var spec, t, rt, ra string
		var rp bonnie.Position
		if err := rows.Scan(&spec, &h.Position, &t, &h.Actor, &rp, &rt, &ra); err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		if err := json.Unmarshal([]byte(spec), &h); err != nil {
			return nil, fmt.Errorf("archive: hold: %w", err)
		}
		h.Time = parseTime(t)
		if rp != 0 {
			h.Released = &Release{Position: rp, Time: parseTime(rt), Actor: ra}
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// Gone returns how the log erased or purged the body with digest d, or
// nil when it did not.
func (a *Archive) Gone(ctx context.Context, d string) (*GoneBody, error) {
	g := &GoneBody{Digest: d}
	var t string
	err := a.db.QueryRowContext(ctx, `SELECT kind, position, time, actor FROM gone WHERE digest = ?`, d).Scan(&g.Kind, &g.Position, &t, &g.Actor)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	g.Time = parseTime(t)
	return g, nil
}

// GoneBodies returns every body the log erased or purged, in log order.
func (a *Archive) GoneBodies(ctx context.Context) ([]GoneBody, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT digest, kind, position, time, actor FROM gone ORDER BY position, digest`)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer rows.Close()
	var out []GoneBody
	for rows.Next() {
		var g GoneBody
		var t string
		if err := rows.Scan(&g.Digest, &g.Kind, &g.Position, &t, &g.Actor); err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		g.Time = parseTime(t)
		out = append(out, g)
	}
	return out, rows.Err()
}

// Unfinished returns the bodies the log erased or purged that the body
// store still holds (a run that died between the event and the
// destruction): destroy them to finish.
func (a *Archive) Unfinished(ctx context.Context) ([]GoneBody, error) {
	all, err := a.GoneBodies(ctx)
	if err != nil || a.blobs == nil {
		return nil, err
	}
	var out []GoneBody
	for _, g := range all {
		if ok, err := a.blobs.Has(g.Digest); err != nil {
			return nil, err
		} else if ok {
			out = append(out, g)
		}
	}
	return out, nil
}

// Finish destroys in the body store what the log says is gone (g).
func (a *Archive) Finish(g GoneBody) error {
	if g.Kind == "purged" {
		return a.blobs.Purge(g.Digest, g.Note())
	}
	return a.blobs.Erase(g.Digest, g.Note())
}

// heldBy returns one active hold that holds b, or nil.
func (a *Archive) heldBy(ctx context.Context, holds []Hold, b Body) *Hold {
	for i := range holds {
		if a.holdsBody(ctx, holds[i], b) {
			return &holds[i]
		}
	}
	return nil
}

// HeldBy returns the active holds that hold the body with digest d.
func (a *Archive) HeldBy(ctx context.Context, d string) ([]Hold, error) {
	holds, err := a.Holds(ctx, false)
	if err != nil {
		return nil, err
	}
	b, err := a.fullBody(ctx, d)
	if err != nil {
		return nil, err
	}
	var out []Hold
	for _, h := range holds {
		if a.holdsBody(ctx, h, *b) {
			out = append(out, h)
		}
	}
	return out, nil
}

func (a *Archive) fullBody(ctx context.Context, d string) (*Body, error) {
	bs, err := a.bodies(ctx, `WHERE b.digest = ?`, d)
	if err != nil {
		return nil, err
	}
	if len(bs) == 0 {
		return nil, fmt.Errorf("%w: no body %s", ErrNotFound, d)
	}
	return &bs[0], nil
}

// PurgePlan is what a purge would remove now.
type PurgePlan struct {
	// Expired bodies, not held: the purge removes them.
	Expired []PurgedBody `json:"expired"`
	// Held are expired bodies a hold keeps, with the hold.
	Held []HeldBody `json:"held,omitempty"`
	// Bytes is the total size of Expired.
	Bytes int64 `json:"bytes"`
}

// HeldBody is an expired body under hold.
type HeldBody struct {
	Digest string `json:"sha256"`
	Hold   string `json:"hold"`
}

// PlanPurge finds the bodies whose retention has ended at now (see the
// rules above) and splits them into those a purge removes and those held.
func (a *Archive) PlanPurge(ctx context.Context, now time.Time) (*PurgePlan, error) {
	policies, err := a.Policies(ctx)
	if err != nil {
		return nil, err
	}
	holds, err := a.Holds(ctx, false)
	if err != nil {
		return nil, err
	}
	keeps := make([]func(time.Time) time.Time, len(policies))
	for i, p := range policies {
		if keeps[i], err = ParseKeep(p.Keep); err != nil {
			return nil, fmt.Errorf("policy %s: %w", p.ID, err)
		}
	}
	plan := &PurgePlan{}
	if len(policies) == 0 {
		return plan, nil
	}
	gone, err := a.GoneBodies(ctx)
	if err != nil {
		return nil, err
	}
	isGone := make(map[string]bool, len(gone))
	for _, g := range gone {
		isGone[g.Digest] = true
	}
	var all []Body
	if err := a.EachBody(ctx, func(b Body) error {
		if !isGone[b.Digest] {
			all = append(all, b)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	// The occurrences of planChunk bodies at a time: one query per chunk,
	// not per body (a purge plans over every body of the archive).
	const planChunk = 500
	for start := 0; start < len(all); start += planChunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := all[start:min(start+planChunk, len(all))]
		args := make([]any, len(chunk))
		for i := range chunk {
			args[i] = chunk[i].Digest
		}
		occ, err := a.occurrences(ctx, `WHERE o.digest IN (?`+strings.Repeat(",?", len(chunk)-1)+`)`, args...)
		if err != nil {
			return nil, err
		}
		byDigest := map[string][]Occurrence{}
		for _, o := range occ { // in log order, as fullBody gives them
			byDigest[o.digest] = append(byDigest[o.digest], o)
		}
		for i := range chunk {
			chunk[i].Occurrences = byDigest[chunk[i].Digest]
			a.planBody(ctx, plan, &chunk[i], policies, keeps, holds, now)
		}
	}
	return plan, nil
}

// planBody adds b to plan if its retention has ended at now.
func (a *Archive) planBody(ctx context.Context, plan *PurgePlan, b *Body, policies []Policy, keeps []func(time.Time) time.Time, holds []Hold, now time.Time) {
	d := b.Digest
	var last time.Time
	used := map[string]bool{}
	expired := len(b.Occurrences) > 0
	for _, o := range b.Occurrences {
		var end time.Time
		var by string
		for i, p := range policies {
			if p.matches(o) {
				if e := keeps[i](o.Time); e.After(end) || by == "" {
					end, by = e, p.ID
				}
			}
		}
		if by == "" || end.After(now) {
			expired = false
			break
		}
		used[by] = true
		if end.After(last) {
			last = end
		}
	}
	if !expired {
		return
	}
	if h := a.heldBy(ctx, holds, *b); h != nil {
		plan.Held = append(plan.Held, HeldBody{Digest: d, Hold: h.ID})
		return
	}
	var ids []string
	for id := range used {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	plan.Expired = append(plan.Expired, PurgedBody{Digest: d, Size: b.Size, Expired: last, Policies: ids})
	plan.Bytes += b.Size
}

// PlanErasure works out what erasing a message (by Message-ID or SHA-256)
// or a person (user: a login or persistent id) destroys, following the
// rules above. It fails with a *HeldError naming the holds when any body
// to erase is held, and with ErrNotFound when nothing matches.
func (a *Archive) PlanErasure(ctx context.Context, message, user string) (*Erasure, error) {
	if (message == "") == (user == "") {
		return nil, errors.New("archive: erase a message or a user")
	}
	e := &Erasure{Message: message, User: user, Digests: []string{}, Encrypted: true}
	var cands []Body
	if message != "" {
		if d := strings.ToLower(message); len(d) == 64 {
			if b, err := a.fullBody(ctx, d); err == nil {
				cands = append(cands, *b)
			}
		}
		if len(cands) == 0 {
			bs, err := a.ByMessageID(ctx, message)
			if err != nil {
				return nil, err
			}
			cands = bs
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("%w: no message %s", ErrNotFound, message)
		}
	} else {
		occ, err := a.occurrences(ctx, `WHERE o.owner = ? OR o.owner_id = ?`, user, user)
		if err != nil {
			return nil, err
		}
		if len(occ) == 0 {
			return nil, fmt.Errorf("%w: no message of %s", ErrNotFound, user)
		}
		people := map[string]bool{user: true}
		seen := map[string]bool{}
		for _, o := range occ {
			for _, p := range []string{o.Owner, o.OwnerID} {
				if p != "" {
					people[p] = true
				}
			}
			if !seen[o.digest] {
				seen[o.digest] = true
				if g, err := a.Gone(ctx, o.digest); err != nil {
					return nil, err
				} else if g != nil {
					continue
				}
				b, err := a.fullBody(ctx, o.digest)
				if err != nil {
					return nil, err
				}
				cands = append(cands, *b)
			}
		}
		rows, err := a.db.QueryContext(ctx, `SELECT person FROM erased_people`)
		if err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		erased := map[string]bool{}
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err == nil {
				erased[p] = true
			}
		}
		rows.Close()
		for p := range people {
			e.People = append(e.People, p)
		}
		sort.Strings(e.People)
		// Keep what someone else (not erased) still holds.
		keep := cands[:0]
		for _, b := range cands {
			others := map[string]bool{}
			for _, o := range b.Occurrences {
				mine := people[o.Owner] || (o.OwnerID != "" && people[o.OwnerID])
				gone := erased[o.Owner] || (o.OwnerID != "" && erased[o.OwnerID])
				if mine || gone {
					continue
				}
				switch {
				case o.OwnerID != "":
					others[o.OwnerID] = true
				case o.Owner != "":
					others[o.Owner] = true
				default:
					others["shared folder "+o.Path] = true
				}
			}
			if len(others) > 0 {
				k := Kept{Digest: b.Digest}
				for o := range others {
					k.SharedWith = append(k.SharedWith, o)
				}
				sort.Strings(k.SharedWith)
				e.Kept = append(e.Kept, k)
				continue
			}
			keep = append(keep, b)
		}
		cands = keep
	}
	holds, err := a.Holds(ctx, false)
	if err != nil {
		return nil, err
	}
	held := map[string]Hold{}
	for _, b := range cands {
		if g, err := a.Gone(ctx, b.Digest); err != nil {
			return nil, err
		} else if g != nil {
			continue
		}
		if h := a.heldBy(ctx, holds, b); h != nil {
			held[b.Digest] = *h
			continue
		}
		e.Digests = append(e.Digests, b.Digest)
		if a.blobs != nil {
			if enc, _ := a.blobs.Encrypted(b.Digest); !enc {
				e.Encrypted = false
			}
		}
	}
	if len(held) > 0 {
		return nil, &HeldError{Action: "erase", Held: held}
	}
	return e, nil
}
