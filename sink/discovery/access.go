package discovery

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Reader is someone who could read a folder (RFC 4314 right "r") at a
// time, and how.
type Reader struct {
	Kind  bonnie.IdentityKind `json:"kind"`
	ID    string              `json:"id"`
	Login string              `json:"login,omitempty"`
	// Rights are the effective rights: those every entry that names the
	// reader granted, less those its negative entries took away.
	Rights string `json:"rights"`
	// Via lists the ACL subjects that granted them ("bob",
	// "group:finance", "anyone").
	Via []string `json:"via"`
}

// FolderAccess answers "who could read folder F at time T".
type FolderAccess struct {
	Folder string    `json:"folder"`
	Path   string    `json:"path"`
	At     time.Time `json:"at"`
	// Position is the log position of the event whose ACL snapshot was in
	// force at At (0: the folder did not exist yet).
	Position bonnie.Position `json:"position"`
	Exists   bool            `json:"exists"`
	ACL      []ACLEntry      `json:"acl"`
	Readers  []Reader        `json:"readers"`
}

// FolderRight is one folder a person could read at a time.
type FolderRight struct {
	Folder   string          `json:"folder"`
	Path     string          `json:"path"`
	Rights   string          `json:"rights"`
	Via      []string        `json:"via"`
	Position bonnie.Position `json:"position"`
}

// PersonAccess answers "which folders could person P read at time T".
type PersonAccess struct {
	Person Person    `json:"person"`
	At     time.Time `json:"at"`
	// Groups are the person's groups at At, as the directory said at the
	// last event before At that named them.
	Groups  []bonnie.Ref  `json:"groups"`
	Folders []FolderRight `json:"folders"`
}

// snapshotAt returns the ACL in force for folder at time at.
func (x *Index) snapshotAt(ctx context.Context, folder string, at time.Time) (entries []ACLEntry, pos bonnie.Position, path string, exists bool, err error) {
	var js string
	var deleted bool
	err = x.db.QueryRowContext(ctx, `SELECT entries, position, path, deleted FROM acl WHERE folder = ? AND time <= ?
		ORDER BY position DESC LIMIT 1`, folder, fmtTime(at)).Scan(&js, &pos, &path, &deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, "", false, nil
	}
	if err != nil {
		return nil, 0, "", false, fmt.Errorf("discovery: %w", err)
	}
	if err := json.Unmarshal([]byte(js), &entries); err != nil {
		return nil, 0, "", false, fmt.Errorf("discovery: acl snapshot: %w", err)
	}
	return entries, pos, path, !deleted, nil
}

// who is a person as an ACL is checked against: ids, names and groups.
type who struct {
	ids    []string
	names  []string
	groups []bonnie.Ref
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

// matches reports whether ACL entry e names w (directly, through a group
// or as anyone).
func (w *who) matches(e ACLEntry) bool {
	switch e.Kind {
	case bonnie.IdentitySpecial:
		return e.ID == "anyone"
	case bonnie.IdentityGroup:
		for _, m := range e.Members {
			if slices.Contains(w.ids, m.ID) || containsFold(w.names, m.Name) {
				return true
			}
		}
		for _, g := range w.groups {
			if g.ID == e.ID || (g.Name != "" && strings.EqualFold(g.Name, e.Login)) {
				return true
			}
		}
		return false
	}
	if slices.Contains(w.ids, e.ID) || containsFold(w.names, e.Login) || containsFold(w.names, strings.TrimPrefix(e.Subject, "-")) {
		return true
	}
	for _, n := range e.Names {
		if containsFold(w.names, n) {
			return true
		}
	}
	return false
}

// effective returns w's rights under acl and the subjects that granted
// them.
func (w *who) effective(acl []ACLEntry) (string, []string) {
	var pos, neg string
	var via []string
	for _, e := range acl {
		if !w.matches(e) {
			continue
		}
		if e.Negative {
			neg += e.Rights
		} else {
			pos += e.Rights
			via = append(via, e.Subject)
		}
	}
	var out []byte
	for i := 0; i < len(pos); i++ {
		c := pos[i]
		if !strings.ContainsRune(neg, rune(c)) && !strings.ContainsRune(string(out), rune(c)) {
			out = append(out, c)
		}
	}
	return string(out), via
}

// WhoCouldRead answers who could read the folder(s) named name (a
// uniqueid or any name it had; see FolderIDs) at time at, from the ACL
// and the identities (group members included) captured with the last
// event before at.
func (x *Index) WhoCouldRead(ctx context.Context, name string, at time.Time) ([]FolderAccess, error) {
	ids, err := x.FolderIDs(ctx, name, at)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no folder named %q", ErrNotFound, name)
	}
	var out []FolderAccess
	for _, id := range ids {
		acl, pos, _, exists, err := x.snapshotAt(ctx, id, at)
		if err != nil {
			return nil, err
		}
		fa := FolderAccess{Folder: id, At: at.UTC(), Position: pos, Exists: exists, ACL: acl, Readers: []Reader{}}
		if fa.ACL == nil {
			fa.ACL = []ACLEntry{}
		}
		if fa.Path, err = x.NameAt(ctx, id, at); err != nil {
			return nil, err
		}
		if exists {
			fa.Readers = readers(acl)
		}
		out = append(out, fa)
	}
	return out, nil
}

// readers lists everyone acl lets read: the users it names, the members
// of the groups it names (as captured then), and anyone.
func readers(acl []ACLEntry) []Reader {
	type cand struct {
		r Reader
		w who
	}
	var cands []*cand
	byID := map[string]*cand{}
	add := func(kind bonnie.IdentityKind, id, login string, names []string) {
		if id == "" {
			return
		}
		if c := byID[id]; c != nil {
			c.w.names = append(c.w.names, names...)
			return
		}
		c := &cand{r: Reader{Kind: kind, ID: id, Login: login}, w: who{ids: []string{id}, names: append([]string{login}, names...)}}
		byID[id] = c
		cands = append(cands, c)
	}
	for _, e := range acl {
		if e.Negative {
			continue
		}
		switch e.Kind {
		case bonnie.IdentitySpecial:
			if e.ID == "anyone" {
				add(e.Kind, e.ID, e.ID, nil)
			}
		case bonnie.IdentityGroup:
			for _, m := range e.Members {
				add(bonnie.IdentityUser, m.ID, m.Name, nil)
			}
			if len(e.Members) == 0 {
				// Members unknown (no directory): the group itself.
				add(e.Kind, e.ID, e.Login, nil)
				byID[e.ID].w.groups = []bonnie.Ref{{ID: e.ID, Name: e.Login}}
			}
		default:
			add(e.Kind, e.ID, e.Login, e.Names)
		}
	}
	out := []Reader{}
	for _, c := range cands {
		rights, via := c.w.effective(acl)
		if c.r.Kind == bonnie.IdentitySpecial {
			rights, via = specialRights(acl, c.r.ID)
		}
		if strings.Contains(rights, "r") {
			c.r.Rights, c.r.Via = rights, via
			out = append(out, c.r)
		}
	}
	return out
}

// specialRights are the rights of the ACL's own "anyone" entries.
func specialRights(acl []ACLEntry, id string) (string, []string) {
	var pos, neg string
	var via []string
	for _, e := range acl {
		if e.Kind == bonnie.IdentitySpecial && e.ID == id {
			if e.Negative {
				neg += e.Rights
			} else {
				pos += e.Rights
				via = append(via, e.Subject)
			}
		}
	}
	var out []byte
	for i := 0; i < len(pos); i++ {
		if !strings.ContainsRune(neg, rune(pos[i])) {
			out = append(out, pos[i])
		}
	}
	return string(out), via
}

// ReadableBy answers which folders the person named q (see FindPerson)
// could read at time at: every folder that existed then whose ACL in
// force granted them "r", directly, through a group they were in then,
// or as anyone.
func (x *Index) ReadableBy(ctx context.Context, q string, at time.Time) (*PersonAccess, error) {
	p, err := x.FindPerson(ctx, q)
	if err != nil {
		return nil, err
	}
	res := &PersonAccess{Person: p, At: at.UTC(), Groups: []bonnie.Ref{}, Folders: []FolderRight{}}
	w := &who{ids: p.IDs, names: p.Names}
	for _, id := range p.IDs {
		var js string
		err := x.db.QueryRowContext(ctx, `SELECT snapshot FROM idents WHERE kind = 'user' AND id = ? AND time <= ?
			ORDER BY position DESC LIMIT 1`, id, fmtTime(at)).Scan(&js)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		var s identSnapshot
		_ = json.Unmarshal([]byte(js), &s)
		for _, g := range s.Groups {
			if !slices.Contains(res.Groups, g) {
				res.Groups = append(res.Groups, g)
			}
		}
	}
	w.groups = res.Groups
	// The ACL in force at at of every folder: its last snapshot by then.
	rows, err := x.db.QueryContext(ctx, `SELECT a.folder, a.position, a.entries FROM acl a
		WHERE a.deleted = 0 AND a.position = (SELECT max(b.position) FROM acl b WHERE b.folder = a.folder AND b.time <= ?)
		ORDER BY a.folder`, fmtTime(at))
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	for rows.Next() {
		var f, js string
		var pos bonnie.Position
		if err := rows.Scan(&f, &pos, &js); err != nil {
			rows.Close()
			return nil, fmt.Errorf("discovery: %w", err)
		}
		var acl []ACLEntry
		if err := json.Unmarshal([]byte(js), &acl); err != nil {
			rows.Close()
			return nil, fmt.Errorf("discovery: acl snapshot: %w", err)
		}
		if rights, via := w.effective(acl); strings.Contains(rights, "r") {
			res.Folders = append(res.Folders, FolderRight{Folder: f, Rights: rights, Via: via, Position: pos})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	for i := range res.Folders {
		if res.Folders[i].Path, err = x.NameAt(ctx, res.Folders[i].Folder, at); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(res.Folders, func(a, b FolderRight) int { return strings.Compare(a.Path, b.Path) })
	return res, nil
}
