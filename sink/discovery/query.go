package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
)

// ErrNotFound: the index holds nothing that matches.
var ErrNotFound = errors.New("discovery: not found")

// Entry is one line of a timeline: what happened, when, by whom (the
// login used and the persistent identity), from where, in which session,
// and the log position of the event that says so.
type Entry struct {
	Position bonnie.Position `json:"position"`
	Time     time.Time       `json:"time"`
	Event    string          `json:"event"`
	Action   string          `json:"action"`
	Login    string          `json:"login,omitempty"`
	ActorID  string          `json:"actorId,omitempty"`
	Client   string          `json:"client,omitempty"`
	Session  string          `json:"session,omitempty"`
	Service  string          `json:"service,omitempty"`
	// Folder is the folder's uniqueid, Path its name then (admin
	// namespace, decoded); FromFolder/FromPath the source of a copy or a
	// move, or a rename's old name.
	Folder     string `json:"folder,omitempty"`
	Path       string `json:"path,omitempty"`
	FromFolder string `json:"fromFolder,omitempty"`
	FromPath   string `json:"fromPath,omitempty"`
	// Owner is the login in the folder's name, OwnerID its persistent
	// identity (the custodian).
	Owner   string `json:"owner,omitempty"`
	OwnerID string `json:"ownerId,omitempty"`
	// Message is the message's place (bonnie.MessageKey), UID its UID.
	Message    string          `json:"message,omitempty"`
	UID        uint32          `json:"uid,omitempty"`
	MessageID  string          `json:"messageId,omitempty"`
	Flags      []string        `json:"flags,omitempty"`
	ACLSubject string          `json:"aclSubject,omitempty"`
	ACLRights  string          `json:"aclRights,omitempty"`
	Detail     json.RawMessage `json:"detail,omitempty"`
	// RecordedBy is "backfill" or "reconcile" for what a crawl recorded
	// after the fact (empty: Cyrus notified it live). Time is then when
	// the crawl found it; a backfill's entry happened before, a
	// reconcile's within Window.
	RecordedBy string         `json:"recordedBy,omitempty"`
	Window     *bonnie.Window `json:"window,omitempty"`
}

const actColumns = `a.position, a.time, a.event, a.action, a.login, a.actor_id, a.client, a.session, a.service,
	a.folder, a.path, a.from_folder, a.from_path, a.owner, a.owner_id, a.msgkey, a.uid, a.message_id, a.flags,
	a.acl_subject, a.acl_rights, a.detail`

func (x *Index) entries(ctx context.Context, query string, args ...any) ([]Entry, error) {
	rows, err := x.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	defer rows.Close()
	out := []Entry{}
	for rows.Next() {
		var e Entry
		var t, flags, detail string
		if err := rows.Scan(&e.Position, &t, &e.Event, &e.Action, &e.Login, &e.ActorID, &e.Client, &e.Session, &e.Service,
			&e.Folder, &e.Path, &e.FromFolder, &e.FromPath, &e.Owner, &e.OwnerID, &e.Message, &e.UID, &e.MessageID, &flags,
			&e.ACLSubject, &e.ACLRights, &detail); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		e.Time = parseTime(t)
		if flags != "" {
			e.Flags = strings.Split(flags, " ")
		}
		if detail != "" && json.Valid([]byte(detail)) {
			e.Detail = json.RawMessage(detail)
		}
		markCrawled(&e) // gaps.go
		out = append(out, e)
	}
	return out, rows.Err()
}

// NormalizeMessageID puts a Message-ID in the form messages carry it,
// with angle brackets.
func NormalizeMessageID(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasPrefix(s, "<") {
		return s
	}
	return "<" + s + ">"
}

// MessageTimeline is the history of one message, followed by its
// Message-ID across copies and moves: every place it was (Places), what
// happened to it there, in time order, and the renames and deletions of
// those folders while it was in them.
type MessageTimeline struct {
	MessageID string  `json:"messageId"`
	Places    []Place `json:"places"`
	Entries   []Entry `json:"entries"`
	// Gaps are the periods of the timeline's span in which the log of
	// the folders involved is not known complete (see AddGaps).
	Gaps []coverage.Crossing `json:"gaps,omitempty"`
}

// Place is one message place (a folder, UIDVALIDITY and UID).
type Place struct {
	Message string `json:"message"`
	Folder  string `json:"folder"`
	Path    string `json:"path"`
	UID     uint32 `json:"uid"`
	State   string `json:"state"`
	Subject string `json:"subject,omitempty"`
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
	Digest  string `json:"sha256,omitempty"`
}

// Message returns the timeline of the message(s) with Message-ID mid
// (with or without angle brackets). It fails with ErrNotFound when the
// index knows no such message.
func (x *Index) Message(ctx context.Context, mid string) (*MessageTimeline, error) {
	mid = NormalizeMessageID(mid)
	res := &MessageTimeline{MessageID: mid, Places: []Place{}}
	rows, err := x.db.QueryContext(ctx, `SELECT m.msgkey, m.folder, m.uid, m.state, m.subject, m.sender, m.recipients, m.digest,
		COALESCE((SELECT a.path FROM acts a WHERE a.msgkey = m.msgkey ORDER BY a.position DESC LIMIT 1), '')
		FROM messages m WHERE m.message_id = ? ORDER BY m.msgkey`, mid)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	for rows.Next() {
		var p Place
		if err := rows.Scan(&p.Message, &p.Folder, &p.UID, &p.State, &p.Subject, &p.From, &p.To, &p.Digest, &p.Path); err != nil {
			rows.Close()
			return nil, fmt.Errorf("discovery: %w", err)
		}
		res.Places = append(res.Places, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	res.Entries, err = x.entries(ctx, `SELECT `+actColumns+` FROM acts a WHERE a.message_id = ?
		OR a.msgkey IN (SELECT msgkey FROM messages WHERE message_id = ?) ORDER BY a.time, a.position, a.seq`, mid, mid)
	if err != nil {
		return nil, err
	}
	if len(res.Places) == 0 && len(res.Entries) == 0 {
		return nil, fmt.Errorf("%w: no message %s", ErrNotFound, mid)
	}
	// The renames of the folders it was in, while it was there.
	type span struct{ from, to bonnie.Position }
	spans := map[string]*span{}
	for _, e := range res.Entries {
		if e.Message == "" {
			continue
		}
		s := spans[e.Folder]
		if s == nil {
			s = &span{from: e.Position, to: ^bonnie.Position(0) >> 1}
			spans[e.Folder] = s
		}
		if e.Action == ActExpunged || e.Action == ActExpired {
			s.to = e.Position
		}
	}
	for folder, s := range spans {
		if folder == "" {
			continue
		}
		ren, err := x.entries(ctx, `SELECT `+actColumns+` FROM acts a WHERE a.folder = ? AND a.msgkey = '' AND a.action IN (?, ?)
			AND a.position > ? AND a.position < ?`, folder, ActRenamed, ActDeleted, uint64(s.from), uint64(s.to))
		if err != nil {
			return nil, err
		}
		res.Entries = append(res.Entries, ren...)
	}
	sortEntries(res.Entries)
	return res, nil
}

func sortEntries(es []Entry) {
	slices.SortStableFunc(es, func(a, b Entry) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		if a.Position != b.Position {
			if a.Position < b.Position {
				return -1
			}
			return 1
		}
		return 0
	})
}

// FolderTimeline is the history of one folder: every name it had, and
// its creation, renames, ACL grants and revocations, subscriptions and
// deletion, in time order.
type FolderTimeline struct {
	Folder string       `json:"folder"`
	Names  []FolderName `json:"names"`
	// Entries are the folder's own events; with messages, also what
	// happened to the messages in it.
	Entries []Entry `json:"entries"`
	// Gaps are the periods of the timeline's span in which the folder's
	// log is not known complete (see AddGaps).
	Gaps []coverage.Crossing `json:"gaps,omitempty"`
}

// FolderName is one name a folder had, from when.
type FolderName struct {
	Path     string          `json:"path"`
	Since    time.Time       `json:"since"`
	Position bonnie.Position `json:"position"`
}

// FolderIDs returns the uniqueids of the folders named name: a uniqueid,
// or any name a folder ever had (admin namespace, decoded:
// "user.alice.Über"). When several folders had the name, those that had
// it at time at (zero: now) come first.
func (x *Index) FolderIDs(ctx context.Context, name string, at time.Time) ([]string, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT DISTINCT folder FROM folder_names WHERE folder = ? OR path = ? ORDER BY first_position`, name, name)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var ids []string
	for rows.Next() {
		var f string
		if err := rows.Scan(&f); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(ids) < 2 {
		return ids, err
	}
	var then, other []string
	for _, id := range ids {
		n, err := x.NameAt(ctx, id, at)
		if err != nil {
			return nil, err
		}
		if n == name || id == name {
			then = append(then, id)
		} else {
			other = append(other, id)
		}
	}
	return append(then, other...), nil
}

// NameAt returns the name folder had at time at (zero: its last name).
func (x *Index) NameAt(ctx context.Context, folder string, at time.Time) (string, error) {
	names, err := x.names(ctx, folder)
	if err != nil || len(names) == 0 {
		return "", err
	}
	name := names[0].Path
	for _, n := range names {
		if at.IsZero() || !n.Since.After(at) {
			name = n.Path
		}
	}
	return name, nil
}

func (x *Index) names(ctx context.Context, folder string) ([]FolderName, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT path, first_time, first_position FROM folder_names WHERE folder = ? ORDER BY first_position, path`, folder)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	defer rows.Close()
	out := []FolderName{}
	for rows.Next() {
		var n FolderName
		var t string
		if err := rows.Scan(&n.Path, &t, &n.Position); err != nil {
			return nil, err
		}
		n.Since = parseTime(t)
		out = append(out, n)
	}
	return out, rows.Err()
}

// Folder returns the timeline of the folder(s) named name (see
// FolderIDs); withMessages adds what happened to the messages in it.
func (x *Index) Folder(ctx context.Context, name string, withMessages bool) ([]FolderTimeline, error) {
	ids, err := x.FolderIDs(ctx, name, time.Time{})
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w: no folder named %q", ErrNotFound, name)
	}
	var out []FolderTimeline
	for _, id := range ids {
		ft := FolderTimeline{Folder: id}
		if ft.Names, err = x.names(ctx, id); err != nil {
			return nil, err
		}
		q := `SELECT ` + actColumns + ` FROM acts a WHERE a.folder = ? AND a.msgkey = '' ORDER BY a.time, a.position, a.seq`
		if withMessages {
			q = `SELECT ` + actColumns + ` FROM acts a WHERE a.folder = ? ORDER BY a.time, a.position, a.seq`
		}
		if ft.Entries, err = x.entries(ctx, q, id); err != nil {
			return nil, err
		}
		out = append(out, ft)
	}
	return out, nil
}

// Session is one login session.
type Session struct {
	Session  string          `json:"session"`
	Login    string          `json:"login"`
	ActorID  string          `json:"actorId"`
	Service  string          `json:"service,omitempty"`
	Client   string          `json:"client,omitempty"`
	Start    time.Time       `json:"start,omitzero"`
	StartPos bonnie.Position `json:"startPosition,omitempty"`
	End      time.Time       `json:"end,omitzero"`
	EndPos   bonnie.Position `json:"endPosition,omitempty"`
	Duration string          `json:"duration,omitempty"`
	// Entries is what was done in the session (Sessions with acts).
	Entries []Entry `json:"entries,omitempty"`
}

// Person names whose history is asked: persistent ids and every name.
type Person struct {
	IDs   []string `json:"ids"`
	Names []string `json:"names"`
}

// FindPerson returns the persistent ids and every name of the persons
// the log ever named q (a login, alias, address or persistent id). For a
// name no resolved identity had, q itself (a bare login) is returned.
func (x *Index) FindPerson(ctx context.Context, q string) (Person, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT id, snapshot FROM idents WHERE kind = 'user'`)
	if err != nil {
		return Person{}, fmt.Errorf("discovery: %w", err)
	}
	defer rows.Close()
	p := Person{}
	add := func(list *[]string, s string) {
		if s != "" && !slices.ContainsFunc(*list, func(x string) bool { return strings.EqualFold(x, s) }) {
			*list = append(*list, s)
		}
	}
	for rows.Next() {
		var id, js string
		if err := rows.Scan(&id, &js); err != nil {
			return Person{}, err
		}
		var s identSnapshot
		_ = json.Unmarshal([]byte(js), &s)
		if id == q || strings.EqualFold(s.Login, q) || slices.ContainsFunc(s.Names, func(n string) bool { return strings.EqualFold(n, q) }) {
			add(&p.IDs, id)
			add(&p.Names, s.Login)
			for _, n := range s.Names {
				add(&p.Names, n)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return Person{}, err
	}
	if len(p.IDs) == 0 {
		p.IDs, p.Names = []string{q}, []string{q}
	}
	return p, nil
}

// Sessions returns the sessions of the person named q (see FindPerson),
// in time order, each with what was done in it when withActs.
func (x *Index) Sessions(ctx context.Context, q string, withActs bool) (Person, []Session, error) {
	p, err := x.FindPerson(ctx, q)
	if err != nil {
		return p, nil, err
	}
	args := []any{}
	for _, id := range p.IDs {
		args = append(args, id)
	}
	rows, err := x.db.QueryContext(ctx, `SELECT session, login, actor_id, service, client, start, start_pos, end, end_pos
		FROM sessions WHERE actor_id IN (`+placeholders(len(p.IDs))+`) ORDER BY CASE WHEN start <> '' THEN start ELSE end END, start_pos`, args...)
	if err != nil {
		return p, nil, fmt.Errorf("discovery: %w", err)
	}
	var out []Session
	for rows.Next() {
		var s Session
		var start, end string
		if err := rows.Scan(&s.Session, &s.Login, &s.ActorID, &s.Service, &s.Client, &start, &s.StartPos, &end, &s.EndPos); err != nil {
			rows.Close()
			return p, nil, err
		}
		s.Start, s.End = parseTime(start), parseTime(end)
		if !s.Start.IsZero() && !s.End.IsZero() {
			s.Duration = s.End.Sub(s.Start).String()
		}
		out = append(out, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return p, nil, err
	}
	if withActs {
		for i := range out {
			if out[i].Session == "" || strings.HasPrefix(out[i].Session, "#") {
				continue
			}
			if out[i].Entries, err = x.entries(ctx, `SELECT `+actColumns+` FROM acts a WHERE a.session = ? AND a.actor_id IN (`+
				placeholders(len(p.IDs))+`) ORDER BY a.time, a.position, a.seq`, append([]any{out[i].Session}, args...)...); err != nil {
				return p, nil, err
			}
		}
	}
	return p, out, nil
}

// Person returns everything the person named q did (see FindPerson), in
// time order.
func (x *Index) Person(ctx context.Context, q string) (Person, []Entry, error) {
	p, err := x.FindPerson(ctx, q)
	if err != nil {
		return p, nil, err
	}
	args := []any{}
	for _, id := range p.IDs {
		args = append(args, id)
	}
	es, err := x.entries(ctx, `SELECT `+actColumns+` FROM acts a WHERE a.actor_id IN (`+placeholders(len(p.IDs))+`)
		ORDER BY a.time, a.position, a.seq`, args...)
	return p, es, err
}

func placeholders(n int) string {
	if n == 0 {
		return "NULL"
	}
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}
