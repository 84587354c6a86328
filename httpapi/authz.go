package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/discovery"
)

// viewer decides what one principal may see.
type viewer struct {
	s      *Server
	p      Principal
	person discovery.Person // a user's ids and names (FindPerson of the principal)

	readable map[readKey]bool
	byTime   map[int64][]string // ReadableBy answers, by time
}

type readKey struct {
	folder string
	at     int64
}

func (v *viewer) auditor() bool { return v.p.Role == RoleAuditor }

func foldIn(list []string, s string) bool {
	return s != "" && slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

// is reports whether id or login names the user.
func (v *viewer) is(id, login string) bool {
	return (id != "" && slices.Contains(v.person.IDs, id)) || foldIn(v.person.Names, login) || foldIn(v.person.Names, id)
}

// sameAs reports whether the person q names is the user.
func (v *viewer) sameAs(ctx context.Context, q string) (bool, error) {
	if v.auditor() {
		return true, nil
	}
	p, err := v.s.o.Index.FindPerson(ctx, q)
	if err != nil {
		return false, err
	}
	for _, id := range p.IDs {
		if slices.Contains(v.person.IDs, id) {
			return true, nil
		}
	}
	return false, nil
}

// canRead reports whether the user could read folder (a uniqueid) at
// time at, from the ACL in force then and the identities and group
// memberships captured with it: the readers discovery.Index.WhoCouldRead
// lists (users named, members of groups named, anyone); when the ACL
// names a group whose members were not captured, the answer is
// discovery.Index.ReadableBy's (the user's groups at that time).
func (v *viewer) canRead(ctx context.Context, folder string, at time.Time) (bool, error) {
	if v.auditor() {
		return true, nil
	}
	if folder == "" {
		return false, nil
	}
	k := readKey{folder, at.UnixNano()}
	if ok, seen := v.readable[k]; seen {
		return ok, nil
	}
	ok, err := v.canReadUncached(ctx, folder, at)
	if err != nil {
		return false, err
	}
	if v.readable == nil {
		v.readable = map[readKey]bool{}
	}
	v.readable[k] = ok
	return ok, nil
}

func (v *viewer) canReadUncached(ctx context.Context, folder string, at time.Time) (bool, error) {
	fas, err := v.s.o.Index.WhoCouldRead(ctx, folder, at)
	if errors.Is(err, discovery.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, fa := range fas {
		if fa.Folder != folder {
			continue
		}
		if !fa.Exists {
			return false, nil
		}
		for _, r := range fa.Readers {
			if (r.Kind == bonnie.IdentitySpecial && r.ID == "anyone") || (r.Kind != bonnie.IdentityGroup && v.is(r.ID, r.Login)) {
				return true, nil
			}
		}
		groups := false
		for _, e := range fa.ACL {
			if e.Kind == bonnie.IdentityGroup && !e.Negative && strings.Contains(e.Rights, "r") {
				groups = true
			}
		}
		if !groups {
			return false, nil
		}
		folders, err := v.readableAt(ctx, at)
		if err != nil {
			return false, err
		}
		return slices.Contains(folders, folder), nil
	}
	return false, nil
}

func (v *viewer) readableAt(ctx context.Context, at time.Time) ([]string, error) {
	if f, ok := v.byTime[at.UnixNano()]; ok {
		return f, nil
	}
	pa, err := v.s.o.Index.ReadableBy(ctx, v.p.Name, at)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range pa.Folders {
		out = append(out, f.Folder)
	}
	if v.byTime == nil {
		v.byTime = map[int64][]string{}
	}
	v.byTime[at.UnixNano()] = out
	return out, nil
}

// Entry is a timeline entry as the API gives it: discovery.Entry, or,
// for one the principal may not see, only its position and time with
// "redacted": true.
type Entry struct {
	discovery.Entry
	Redacted bool `json:"redacted,omitempty"`
}

// MarshalJSON writes a redacted entry without its content.
func (e Entry) MarshalJSON() ([]byte, error) {
	if e.Redacted {
		return json.Marshal(struct {
			Position bonnie.Position `json:"position"`
			Time     time.Time       `json:"time"`
			Redacted bool            `json:"redacted"`
		}{e.Position, e.Time, true})
	}
	return json.Marshal(e.Entry)
}

// entry returns e as the user may see it. A user sees what they did
// themselves, what happened in their own mailboxes (they are its
// owner), and what happened in folders they could read at the time; of
// a copy or move between a folder they could read and one they could
// not, the other folder is left out.
func (v *viewer) entry(ctx context.Context, e discovery.Entry) (Entry, error) {
	if v.auditor() || v.is(e.ActorID, e.Login) {
		return Entry{Entry: e}, nil
	}
	own := e.Folder != "" && v.is(e.OwnerID, e.Owner)
	to, err := v.canRead(ctx, e.Folder, e.Time)
	if err != nil {
		return Entry{}, err
	}
	from, err := v.canRead(ctx, e.FromFolder, e.Time)
	if err != nil {
		return Entry{}, err
	}
	switch {
	case own || to:
		if e.FromFolder != "" && !from && !ownPath(v, e.FromPath) {
			e.FromFolder, e.FromPath = "", ""
		}
		return Entry{Entry: e}, nil
	case from:
		e.Folder, e.Path, e.Message, e.UID, e.Owner, e.OwnerID = "", "", "", 0, "", ""
		return Entry{Entry: e}, nil
	}
	return Entry{Entry: discovery.Entry{Position: e.Position, Time: e.Time}, Redacted: true}, nil
}

// ownPath reports whether path is in the user's own mailbox
// ("user.LOGIN" or below, admin namespace).
func ownPath(v *viewer, path string) bool {
	rest, ok := strings.CutPrefix(path, "user.")
	if !ok {
		return false
	}
	login, _, _ := strings.Cut(rest, ".")
	return foldIn(v.person.Names, login)
}

func (v *viewer) entries(ctx context.Context, es []discovery.Entry) ([]Entry, error) {
	out := make([]Entry, 0, len(es))
	for _, e := range es {
		ve, err := v.entry(ctx, e)
		if err != nil {
			return nil, err
		}
		out = append(out, ve)
	}
	return out, nil
}
