package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Search selects events on messages (or, with Types, any event). Every
// field that is set must match; text matches use SQL LIKE semantics
// (case-insensitive substring) except Text, which is a full-text query
// (SQLite FTS4 MATCH syntax: words, "a phrase", prefix*, OR) over the
// archived bodies.
type Search struct {
	// Custodian is the owner of the folder: the login in its name
	// ("alice" of user.alice.*) or the persistent identity.
	Custodian string `json:"custodian,omitempty"`
	// Folder is a uniqueid or any name a folder had.
	Folder string `json:"folder,omitempty"`
	// From (inclusive) and To (exclusive) bound the event time.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Types restrict the event types; without them only events on
	// messages are searched.
	Types     []bonnie.EventType `json:"types,omitempty"`
	Actor     string             `json:"actor,omitempty"`
	Sender    string             `json:"sender,omitempty"`
	Recipient string             `json:"recipient,omitempty"`
	Subject   string             `json:"subject,omitempty"`
	MessageID string             `json:"messageId,omitempty"`
	Text      string             `json:"text,omitempty"`
	// Limit caps the hits (0: 1000); Offset skips the first hits, for
	// reading a search page by page.
	Limit  int `json:"limit,omitempty"`
	Offset int `json:"offset,omitempty"`
}

// Hit is one event that matched, with the message it concerns.
type Hit struct {
	Entry
	Subject string `json:"subject,omitempty"`
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
	Digest  string `json:"sha256,omitempty"`
}

// Search runs q and returns the matching events in time order.
func (x *Index) Search(ctx context.Context, q Search) ([]Hit, error) {
	where := []string{"1"}
	var args []any
	if len(q.Types) == 0 {
		where = append(where, "a.msgkey <> ''")
	} else {
		var names []string
		for _, t := range q.Types {
			names = append(names, t.String())
			args = append(args, t.String())
		}
		where = append(where, "a.event IN ("+placeholders(len(names))+")")
	}
	if q.Custodian != "" {
		where = append(where, "(a.owner = ? OR a.owner_id = ?)")
		args = append(args, q.Custodian, q.Custodian)
	}
	if q.Folder != "" {
		ids, err := x.FolderIDs(ctx, q.Folder, time.Time{})
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("%w: no folder named %q", ErrNotFound, q.Folder)
		}
		where = append(where, "a.folder IN ("+placeholders(len(ids))+")")
		for _, id := range ids {
			args = append(args, id)
		}
	}
	if !q.From.IsZero() {
		where = append(where, "a.time >= ?")
		args = append(args, fmtTime(q.From))
	}
	if !q.To.IsZero() {
		where = append(where, "a.time < ?")
		args = append(args, fmtTime(q.To))
	}
	if q.Actor != "" {
		p, err := x.FindPerson(ctx, q.Actor)
		if err != nil {
			return nil, err
		}
		where = append(where, "a.actor_id IN ("+placeholders(len(p.IDs))+")")
		for _, id := range p.IDs {
			args = append(args, id)
		}
	}
	like := func(col, v string) {
		if v != "" {
			where = append(where, col+" LIKE ? ESCAPE '\\'")
			args = append(args, "%"+escapeLike(v)+"%")
		}
	}
	like("COALESCE(m.sender, '')", q.Sender)
	like("COALESCE(m.recipients, '')", q.Recipient)
	like("COALESCE(m.subject, '')", q.Subject)
	if q.MessageID != "" {
		where = append(where, "a.message_id = ?")
		args = append(args, NormalizeMessageID(q.MessageID))
	}
	if q.Text != "" {
		var n int
		if err := x.db.QueryRowContext(ctx, `SELECT count(*) FROM texts`).Scan(&n); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("%w: no body is indexed for full-text search", ErrNoBodies)
		}
		where = append(where, `m.digest IN (SELECT t.digest FROM texts t JOIN fulltext f ON f.docid = t.docid WHERE fulltext MATCH ?)`)
		args = append(args, q.Text)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 1000
	}
	args = append(args, limit, max(q.Offset, 0))
	rows, err := x.db.QueryContext(ctx, `SELECT `+actColumns+`, COALESCE(m.subject, ''), COALESCE(m.sender, ''),
		COALESCE(m.recipients, ''), COALESCE(m.digest, '')
		FROM acts a LEFT JOIN messages m ON m.msgkey = a.msgkey AND a.msgkey <> ''
		WHERE `+strings.Join(where, " AND ")+` ORDER BY a.time, a.position, a.seq LIMIT ? OFFSET ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("discovery: search: %w", err)
	}
	defer rows.Close()
	out := []Hit{}
	for rows.Next() {
		var h Hit
		e := &h.Entry
		var t, flags, detail string
		if err := rows.Scan(&e.Position, &t, &e.Event, &e.Action, &e.Login, &e.ActorID, &e.Client, &e.Session, &e.Service,
			&e.Folder, &e.Path, &e.FromFolder, &e.FromPath, &e.Owner, &e.OwnerID, &e.Message, &e.UID, &e.MessageID, &flags,
			&e.ACLSubject, &e.ACLRights, &detail, &h.Subject, &h.From, &h.To, &h.Digest); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		e.Time = parseTime(t)
		if flags != "" {
			e.Flags = strings.Split(flags, " ")
		}
		if detail != "" && json.Valid([]byte(detail)) {
			e.Detail = json.RawMessage(detail)
		}
		markCrawled(e) // gaps.go
		out = append(out, h)
	}
	return out, rows.Err()
}

func escapeLike(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}
