package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/discovery"
)

// MessageTimeline is discovery.MessageTimeline as the principal may see
// it.
type MessageTimeline struct {
	MessageID string  `json:"messageId"`
	Places    []Place `json:"places"`
	Entries   []Entry `json:"entries"`
}

// Place is a discovery.Place, or {"redacted": true}.
type Place struct {
	discovery.Place
	Redacted bool `json:"redacted,omitempty"`
}

// MarshalJSON writes a redacted place without its content.
func (p Place) MarshalJSON() ([]byte, error) {
	if p.Redacted {
		return []byte(`{"redacted":true}`), nil
	}
	return json.Marshal(p.Place)
}

func (s *Server) historyMessage(ctx context.Context, c *call) (any, error) {
	mid := c.r.PathValue("msgid")
	c.args["messageId"] = mid
	if err := c.ask(ctx); err != nil {
		return nil, err
	}
	tl, err := s.o.Index.Message(ctx, mid)
	if err != nil {
		return nil, err
	}
	out := &MessageTimeline{MessageID: tl.MessageID, Places: []Place{}}
	if out.Entries, err = c.v.entries(ctx, tl.Entries); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, e := range out.Entries {
		if !e.Redacted {
			seen[e.Message] = true
		}
	}
	for _, p := range tl.Places {
		out.Places = append(out.Places, Place{Place: p, Redacted: !c.v.auditor() && !seen[p.Message]})
	}
	for i := range out.Places {
		if out.Places[i].Redacted {
			out.Places[i].Place = discovery.Place{}
		}
	}
	return out, nil
}

// FolderTimeline is discovery.FolderTimeline as the principal may see
// it.
type FolderTimeline struct {
	Folder  string       `json:"folder"`
	Names   []FolderName `json:"names"`
	Entries []Entry      `json:"entries"`
}

// FolderName is a discovery.FolderName, or its position and time with
// "redacted": true.
type FolderName struct {
	discovery.FolderName
	Redacted bool `json:"redacted,omitempty"`
}

// MarshalJSON writes a redacted name without the name.
func (n FolderName) MarshalJSON() ([]byte, error) {
	if n.Redacted {
		return json.Marshal(struct {
			Position bonnie.Position `json:"position"`
			Since    time.Time       `json:"since"`
			Redacted bool            `json:"redacted"`
		}{n.Position, n.Since, true})
	}
	return json.Marshal(n.FolderName)
}

func (s *Server) historyFolder(ctx context.Context, c *call) (any, error) {
	name := c.r.PathValue("folder")
	messages, err := boolParam(c, "messages")
	if err != nil {
		return nil, err
	}
	c.args["folder"], c.args["messages"] = name, messages
	if err := c.ask(ctx); err != nil {
		return nil, err
	}
	fts, err := s.o.Index.Folder(ctx, name, messages)
	if err != nil {
		return nil, err
	}
	out := []FolderTimeline{}
	for _, ft := range fts {
		vt := FolderTimeline{Folder: ft.Folder, Names: []FolderName{}}
		if vt.Entries, err = c.v.entries(ctx, ft.Entries); err != nil {
			return nil, err
		}
		shown := map[string]bool{}
		for _, e := range vt.Entries {
			if !e.Redacted {
				shown[e.Path], shown[e.FromPath] = true, true
			}
		}
		for _, n := range ft.Names {
			ok := c.v.auditor() || shown[n.Path] || ownPath(c.v, n.Path)
			if !ok {
				if ok, err = c.v.canRead(ctx, ft.Folder, n.Since); err != nil {
					return nil, err
				}
			}
			vn := FolderName{FolderName: n, Redacted: !ok}
			if !ok {
				vn.Path = ""
			}
			vt.Names = append(vt.Names, vn)
		}
		out = append(out, vt)
	}
	return out, nil
}

// UserHistory is what a person did (discovery.Index.Person) and their
// sessions (discovery.Index.Sessions).
type UserHistory struct {
	Query    string              `json:"query"`
	Person   discovery.Person    `json:"person"`
	Entries  []Entry             `json:"entries"`
	Sessions []discovery.Session `json:"sessions"`
}

func (s *Server) historyUser(ctx context.Context, c *call) (any, error) {
	q := c.r.PathValue("login")
	c.args["user"] = q
	if ok, err := c.v.sameAs(ctx, q); err != nil {
		return nil, err
	} else if !ok {
		return nil, forbidden("a user may ask only for their own history")
	}
	if err := c.ask(ctx); err != nil {
		return nil, err
	}
	p, es, err := s.o.Index.Person(ctx, q)
	if err != nil {
		return nil, err
	}
	out := &UserHistory{Query: q, Person: p, Sessions: []discovery.Session{}}
	if out.Entries, err = c.v.entries(ctx, es); err != nil {
		return nil, err
	}
	_, ss, err := s.o.Index.Sessions(ctx, q, false)
	if err != nil {
		return nil, err
	}
	if ss != nil {
		out.Sessions = ss
	}
	return out, nil
}

// FolderAccess is a discovery.FolderAccess, or only its time with
// "redacted": true for a folder the user could not read then.
type FolderAccess struct {
	discovery.FolderAccess
	Redacted bool `json:"redacted,omitempty"`
}

// MarshalJSON writes a redacted answer without its content.
func (f FolderAccess) MarshalJSON() ([]byte, error) {
	if f.Redacted {
		return json.Marshal(struct {
			At       time.Time `json:"at"`
			Redacted bool      `json:"redacted"`
		}{f.At, true})
	}
	return json.Marshal(f.FolderAccess)
}

func (s *Server) access(ctx context.Context, c *call) (any, error) {
	q := c.r.URL.Query()
	folder, user := q.Get("folder"), q.Get("user")
	if (folder == "") == (user == "") {
		return nil, badRequest("give one of folder= or user=")
	}
	at, err := s.parseAt(q, "at", s.o.Now().UTC())
	if err != nil {
		return nil, err
	}
	c.args["folder"], c.args["user"], c.args["at"] = folder, user, at
	if user != "" {
		if ok, err := c.v.sameAs(ctx, user); err != nil {
			return nil, err
		} else if !ok {
			return nil, forbidden("a user may ask only which folders they could read themselves")
		}
		if err := c.ask(ctx); err != nil {
			return nil, err
		}
		return s.o.Index.ReadableBy(ctx, user, at)
	}
	fas, err := s.o.Index.WhoCouldRead(ctx, folder, at)
	if err != nil {
		if errors.Is(err, discovery.ErrNotFound) && !c.v.auditor() {
			return nil, forbidden("a user may ask only who could read a folder they could read then")
		}
		if !errors.Is(err, discovery.ErrNotFound) {
			return nil, err
		}
	}
	out := []FolderAccess{}
	visible := 0
	for _, fa := range fas {
		ok := c.v.auditor() || ownPath(c.v, fa.Path)
		if !ok {
			if ok, err = c.v.canRead(ctx, fa.Folder, at); err != nil {
				return nil, err
			}
		}
		if ok {
			visible++
			out = append(out, FolderAccess{FolderAccess: fa})
		} else {
			out = append(out, FolderAccess{FolderAccess: discovery.FolderAccess{At: fa.At}, Redacted: true})
		}
	}
	if len(fas) > 0 && visible == 0 {
		return nil, forbidden("a user may ask only who could read a folder they could read then")
	}
	if err := c.ask(ctx); err != nil {
		return nil, err
	}
	if len(fas) == 0 {
		return nil, err // the index's ErrNotFound, for an auditor
	}
	return out, nil
}

// ObjectHistory is discovery.ObjectHistory as the principal may see it.
type ObjectHistory struct {
	UID       string     `json:"uid"`
	Kind      string     `json:"kind"`
	Revisions []Revision `json:"revisions"`
}

// Revision is a discovery.Revision (its Ended entries as the principal
// may see them), or its number, position and time with "redacted": true.
type Revision struct {
	discovery.Revision
	Ended    []Entry `json:"ended,omitempty"`
	Redacted bool    `json:"redacted,omitempty"`
}

// MarshalJSON writes a redacted revision without its content.
func (r Revision) MarshalJSON() ([]byte, error) {
	if r.Redacted {
		return json.Marshal(struct {
			Rev      int             `json:"rev"`
			Position bonnie.Position `json:"position"`
			Time     time.Time       `json:"time"`
			Redacted bool            `json:"redacted"`
		}{r.Rev, r.Position, r.Time, true})
	}
	type plain discovery.Revision
	return json.Marshal(struct {
		plain
		Ended []Entry `json:"ended,omitempty"`
	}{plain(r.Revision), r.Ended})
}

func (s *Server) object(ctx context.Context, c *call) (any, error) {
	uid := c.r.PathValue("uid")
	q := c.r.URL.Query()
	c.args["uid"] = uid
	var rev int
	var diff []int
	if v := q.Get("rev"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, badRequest("rev: want a revision number from 1, not %q", v)
		}
		rev = n
		c.args["rev"] = n
	}
	if v := q.Get("diff"); v != "" {
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return nil, badRequest("diff: want two revision numbers A,B, not %q", v)
			}
			diff = append(diff, n)
		}
		if len(diff) != 2 {
			return nil, badRequest("diff: want two revision numbers A,B, not %q", v)
		}
		c.args["diff"] = diff
	}
	if rev != 0 && diff != nil {
		return nil, badRequest("give rev= or diff=, not both")
	}
	h, err := s.o.Index.Object(ctx, uid)
	if err != nil {
		if errors.Is(err, discovery.ErrNotFound) {
			if err := c.ask(ctx); err != nil {
				return nil, err
			}
		}
		return nil, err
	}
	out := &ObjectHistory{UID: h.UID, Kind: h.Kind, Revisions: []Revision{}}
	for _, r := range h.Revisions {
		e, err := c.v.entry(ctx, discovery.Entry{Position: r.Position, Time: r.Time, Event: r.Event, Login: r.Login,
			ActorID: r.ActorID, Folder: r.Folder, Path: r.Path})
		if err != nil {
			return nil, err
		}
		vr := Revision{Revision: r, Redacted: e.Redacted || e.Folder != r.Folder}
		if vr.Redacted {
			vr.Revision = discovery.Revision{Rev: r.Rev, Position: r.Position, Time: r.Time}
		} else if vr.Ended, err = c.v.entries(ctx, r.Ended); err != nil {
			return nil, err
		}
		vr.Revision.Ended = nil
		out.Revisions = append(out.Revisions, vr)
	}
	if !c.v.auditor() && !slices.ContainsFunc(out.Revisions, func(r Revision) bool { return !r.Redacted }) {
		out.Kind = "" // nothing of it is theirs to see
	}
	for _, n := range append([]int{rev}, diff...) {
		if n > 0 && n <= len(out.Revisions) && out.Revisions[n-1].Redacted {
			return nil, forbidden("revision %d of %q is not one the user could read", n, uid)
		}
	}
	if err := c.ask(ctx); err != nil {
		return nil, err
	}
	switch {
	case diff != nil:
		return s.o.Index.Diff(ctx, uid, diff[0], diff[1])
	case rev != 0:
		return s.o.Index.RevisionContent(ctx, uid, rev)
	}
	return out, nil
}

// maxLimit bounds the hits of one search.
const maxLimit = 10000

func (s *Server) search(ctx context.Context, c *call) (any, error) {
	q := c.r.URL.Query()
	var sq discovery.Search
	var err error
	sq.Custodian, sq.Folder, sq.Actor = q.Get("custodian"), q.Get("folder"), q.Get("actor")
	sq.Sender, sq.Recipient, sq.Subject = q.Get("sender"), q.Get("recipient"), q.Get("subject")
	sq.MessageID, sq.Text = q.Get("messageId"), q.Get("text")
	if sq.From, err = s.parseAt(q, "from", time.Time{}); err != nil {
		return nil, err
	}
	if sq.To, err = s.parseAt(q, "to", time.Time{}); err != nil {
		return nil, err
	}
	for _, t := range q["type"] {
		for _, name := range strings.Split(t, ",") {
			et, ok := bonnie.ParseEventType(strings.TrimSpace(name))
			if !ok {
				return nil, badRequest("type: unknown event type %q", name)
			}
			sq.Types = append(sq.Types, et)
		}
	}
	sq.Limit = 1000
	if v := q.Get("limit"); v != "" {
		if sq.Limit, err = strconv.Atoi(v); err != nil || sq.Limit < 1 || sq.Limit > maxLimit {
			return nil, badRequest("limit: want 1 to %d, not %q", maxLimit, v)
		}
	}
	c.args["search"] = sq
	if err := c.ask(ctx); err != nil {
		return nil, err
	}
	if c.v.auditor() {
		return s.o.Index.Search(ctx, sq)
	}
	// A user's search would otherwise tell what the bodies and headers
	// of mail they may not read contain: hits they may not see are left
	// out, not redacted. The limit counts what they may see, so the
	// search is read page by page until it is reached (at most
	// maxScanned hits looked at, so that a user cannot make the server
	// walk the whole index).
	c.w.Header().Set("Bonnie-Filtered", "true")
	limit := sq.Limit
	out := []discovery.Hit{}
	for scanned := 0; len(out) < limit && scanned < maxScanned; {
		hits, err := s.o.Index.Search(ctx, sq)
		if err != nil {
			return nil, err
		}
		for _, h := range hits {
			e, err := c.v.entry(ctx, h.Entry)
			if err != nil {
				return nil, err
			}
			if e.Redacted || e.Folder != h.Folder {
				continue
			}
			h.Entry = e.Entry
			if out = append(out, h); len(out) == limit {
				break
			}
		}
		if len(hits) < sq.Limit {
			break // the end of the search
		}
		scanned += len(hits)
		sq.Offset += len(hits)
	}
	return out, nil
}

// maxScanned bounds the hits one user's search looks at.
const maxScanned = 10 * maxLimit

// Whoami is who the token authenticates, and for a user the person the
// log knows by that name.
type Whoami struct {
	Principal Principal         `json:"principal"`
	Person    *discovery.Person `json:"person,omitempty"`
}

func (s *Server) whoami(ctx context.Context, c *call) (any, error) {
	if err := c.ask(ctx); err != nil {
		return nil, err
	}
	out := &Whoami{Principal: c.p}
	if c.p.Role == RoleUser {
		out.Person = &c.v.person
	}
	return out, nil
}

func boolParam(c *call, name string) (bool, error) {
	v := c.r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("%s: want true or false, not %q", name, v)
	}
	return b, nil
}
