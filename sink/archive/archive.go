// Package archive is Bonnie's archival sink: it indexes every message body
// the log names, so that one can be found by Message-ID or SHA-256, an
// export made for a custodian and a time range, and the whole store
// verified against the log.
//
// The bodies themselves are fetched at ingest (bonnie.Options.Bodies,
// package fetch) into the content-addressed store (store/blob): the log
// holds each body's SHA-256 in the event that brought it (Event.Bodies)
// and in the changes of the Message entities (field "digest", copied to a
// copy or a move). This sink only reads the log (invariant 5) and keeps a
// projection, an SQLite file that can be deleted at any time and is
// rebuilt by replaying the log (Rebuild, or the engine giving a new sink
// the whole log):
//
//	bodies       digest -> size, Message-ID (from the body's own header), internal date, first log position
//	occurrences  each place a body was put: log position, time, event, folder (uniqueid), its name then, owner (custodian), UID
//	missing      each message whose body could not be fetched, with the reason (for a later backfill)
//	folder_names every name each folder (uniqueid) ever had
//	policies, holds, gone, erased_people   retention policies, legal holds, and the bodies erased or purged (governance.go)
//
// With a site key (store/blob.WithSiteKey) bodies are encrypted at rest,
// each under a data key of its own, and erasing one (GDPR) destroys its
// key: see governance.go for retention, holds, erasure and purge, which
// are all events in the log.
//
// Times are the event times (UTC): an occurrence's time is when the
// message arrived in that folder.
package archive

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/projection"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Name is the sink's name (its cursor in the log).
const Name = "archive"

// Where a data directory (bonnied --data) keeps the archive.
const (
	BlobsDir       = "blobs"              // the body store
	ProjectionFile = "archive/archive.db" // this sink's projection
)

// Paths returns the body store and projection paths of a data directory.
func Paths(dataDir string) (blobs, projection string) {
	return filepath.Join(dataDir, BlobsDir), filepath.Join(dataDir, filepath.FromSlash(ProjectionFile))
}

// Events are the events that carry bodies or name folders (the live ones,
// and those a backfill or a reconciliation found on the server), and
// Bonnie's governance events (GovernanceEvents).
var Events = bonnie.Mask(bonnie.MessageAppend, bonnie.MessageNew, bonnie.MessageCopy, bonnie.MessageMove,
	bonnie.MailboxCreate, bonnie.MailboxRename, bonnie.Backfill, bonnie.Reconcile) | GovernanceEvents

// schemaVersion: a projection of another version is dropped and rebuilt.
const schemaVersion = 2

const schema = `
CREATE TABLE bodies (
	digest         TEXT PRIMARY KEY,
	size           INTEGER NOT NULL,
	message_id     TEXT NOT NULL,
	internal_date  TEXT NOT NULL,
	first_position INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX bodies_message_id ON bodies(message_id);
CREATE TABLE occurrences (
	position     INTEGER NOT NULL,
	message      TEXT NOT NULL,   -- bonnie.MessageKey
	digest       TEXT NOT NULL,
	time         TEXT NOT NULL,   -- event time, fixed-width UTC
	event        TEXT NOT NULL,
	folder       TEXT NOT NULL,   -- uniqueid
	path         TEXT NOT NULL,   -- the folder's name at that time
	owner        TEXT NOT NULL,   -- login in the folder's name; '' for shared folders
	owner_id     TEXT NOT NULL,   -- persistent identity, when resolved
	owner_groups TEXT NOT NULL,   -- the owner's groups then: |id|name|id|name|
	uid_validity INTEGER NOT NULL,
	uid          INTEGER NOT NULL,
	PRIMARY KEY (position, message)
) WITHOUT ROWID;
CREATE INDEX occurrences_digest ON occurrences(digest);
CREATE INDEX occurrences_owner ON occurrences(owner, time);
CREATE INDEX occurrences_owner_id ON occurrences(owner_id, time);
CREATE TABLE missing (
	position INTEGER NOT NULL,
	message  TEXT NOT NULL,
	time     TEXT NOT NULL,
	folder   TEXT NOT NULL,
	path     TEXT NOT NULL,
	uid      INTEGER NOT NULL,
	error    TEXT NOT NULL,
	PRIMARY KEY (position, message)
) WITHOUT ROWID;
CREATE TABLE folder_names (
	folder   TEXT NOT NULL,
	path     TEXT NOT NULL,
	position INTEGER NOT NULL, -- last seen with this name
	PRIMARY KEY (folder, path)
) WITHOUT ROWID;
CREATE INDEX folder_names_path ON folder_names(path);
CREATE TABLE policies (
	id       TEXT PRIMARY KEY,
	spec     TEXT NOT NULL,    -- Policy as JSON
	position INTEGER NOT NULL, -- the event that set it
	time     TEXT NOT NULL,
	actor    TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE holds (
	id                TEXT PRIMARY KEY,
	spec              TEXT NOT NULL, -- Hold as JSON
	position          INTEGER NOT NULL,
	time              TEXT NOT NULL,
	actor             TEXT NOT NULL,
	released_position INTEGER NOT NULL DEFAULT 0,
	released_time     TEXT NOT NULL DEFAULT '',
	released_actor    TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE gone (
	digest   TEXT PRIMARY KEY,
	kind     TEXT NOT NULL,    -- erased | purged
	position INTEGER NOT NULL, -- the Erasure or Purge event
	time     TEXT NOT NULL,
	actor    TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE erased_people (
	person   TEXT PRIMARY KEY, -- a login or persistent id
	position INTEGER NOT NULL
) WITHOUT ROWID;
`

// timeLayout sorts as text in time order.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(timeLayout, s)
	return t
}

// Archive is the sink and its projection. It implements bonnie.Sink.
type Archive struct {
	db    *sql.DB
	blobs *blob.Store
	path  string
}

// Open opens (creating it if needed) the projection at path; blobs is the
// body store the log's digests refer to (read for the Message-ID header of
// each new body; nil: Message-IDs come from the notifications only).
func Open(ctx context.Context, path string, blobs *blob.Store) (*Archive, error) {
	db, err := projection.Open(ctx, path, projectionSchema)
	if err != nil {
		return nil, err
	}
	return &Archive{db: db, blobs: blobs, path: path}, nil
}

// projectionSchema: a projection of another version is dropped and
// rebuilt; the engine or CatchUp replays the log into it.
var projectionSchema = projection.Schema{
	Name: "archive", Version: schemaVersion, DDL: schema,
	Tables: []string{"bodies", "occurrences", "missing", "folder_names", "policies", "holds", "gone", "erased_people"},
}

// Close closes the projection.
func (a *Archive) Close() error { return a.db.Close() }

// Blobs returns the body store.
func (a *Archive) Blobs() *blob.Store { return a.blobs }

// Name implements bonnie.Sink.
func (a *Archive) Name() string { return Name }

// Events implements bonnie.Sink.
func (a *Archive) Events() bonnie.EventMask { return Events }

// Handle implements bonnie.Sink: it indexes one record. Handling a record
// again changes nothing.
func (a *Archive) Handle(ctx context.Context, rec bonnie.Record) error {
	return a.batch(ctx, []bonnie.Record{rec})
}

// HandleBatch implements bonnie.BatchSink: it indexes records in one
// transaction. Handling them again changes nothing.
func (a *Archive) HandleBatch(ctx context.Context, recs []bonnie.Record) error {
	return a.batch(ctx, recs)
}

// Position returns the last log position the projection has handled
// (bonnie.PositionKeeper: the engine resumes the sink from it).
func (a *Archive) Position(ctx context.Context) (bonnie.Position, error) {
	p, err := projection.Position(ctx, a.db)
	if err != nil {
		return 0, fmt.Errorf("archive: %w", err)
	}
	return p, nil
}

// CatchUp indexes the records of lg after the projection's position, so
// that a query sees everything in the log now (whether or not a daemon
// runs the sink), and returns the new position.
func (a *Archive) CatchUp(ctx context.Context, lg bonnie.Log) (bonnie.Position, error) {
	pos, err := a.Position(ctx)
	if err != nil {
		return 0, err
	}
	// A store that filters by type never loads the records the archive
	// does not index (most of a log); pages as the engine reads them.
	for {
		recs, last, err := bonnie.ReadMatching(ctx, lg, pos, 4096, Events)
		if err != nil {
			return pos, fmt.Errorf("archive: read log: %w", err)
		}
		if last == pos {
			return pos, nil
		}
		if err := a.batchTo(ctx, recs, last); err != nil {
			return pos, err
		}
		pos = last
	}
}

// Rebuild empties the projection and replays the whole log into it.
func (a *Archive) Rebuild(ctx context.Context, lg bonnie.Log) (bonnie.Position, error) {
	if err := projection.Reset(ctx, a.db, projectionSchema, true); err != nil {
		return 0, err
	}
	return a.CatchUp(ctx, lg)
}

func (a *Archive) batch(ctx context.Context, recs []bonnie.Record) error {
	if len(recs) == 0 {
		return nil
	}
	return a.batchTo(ctx, recs, recs[len(recs)-1].Position)
}

// batchTo indexes recs in one transaction and moves the position to pos
// (never back).
func (a *Archive) batchTo(ctx context.Context, recs []bonnie.Record, pos bonnie.Position) error {
	// Read what is needed from the bodies before the write transaction.
	var items []item
	for _, rec := range recs {
		items = append(items, extract(rec)...)
	}
	mids := map[string]string{}
	for _, it := range items {
		if it.digest != "" && a.blobs != nil {
			if _, ok := mids[it.digest]; !ok {
				mids[it.digest] = a.headerMessageID(ctx, it.digest)
			}
		}
	}
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer tx.Rollback()
	for _, rec := range recs {
		ev := rec.Event
		if ev != nil && ev.MailboxID != "" && ev.Mailbox.Name != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO folder_names(folder, path, position) VALUES (?, ?, ?)
				ON CONFLICT(folder, path) DO UPDATE SET position = max(position, excluded.position)`,
				ev.MailboxID, ev.Mailbox.Name, rec.Position); err != nil {
				return fmt.Errorf("archive: %w", err)
			}
		}
	}
	for _, it := range items {
		if it.digest == "" {
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO missing(position, message, time, folder, path, uid, error)
				VALUES (?, ?, ?, ?, ?, ?, ?)`, it.position, it.message, fmtTime(it.time), it.folder, it.path, it.uid, it.err); err != nil {
				return fmt.Errorf("archive: %w", err)
			}
			continue
		}
		mid := mids[it.digest]
		if mid == "" {
			mid = it.messageID
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO bodies(digest, size, message_id, internal_date, first_position)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT(digest) DO UPDATE SET
				first_position = min(first_position, excluded.first_position),
				message_id = CASE WHEN message_id = '' THEN excluded.message_id ELSE message_id END,
				internal_date = CASE WHEN internal_date = '' THEN excluded.internal_date ELSE internal_date END,
				size = CASE WHEN size = 0 THEN excluded.size ELSE size END`,
			it.digest, it.size, mid, fmtTime(it.internalDate), it.position); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO occurrences(position, message, digest, time, event, folder, path, owner, owner_id, owner_groups, uid_validity, uid)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, it.position, it.message, it.digest, fmtTime(it.time), it.event,
			it.folder, it.path, it.owner, it.ownerID, it.groups, it.uidValidity, it.uid); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		// The same bytes delivered again after an erasure or a purge are
		// stored anew (a new delivery is new data).
		if _, err := tx.ExecContext(ctx, `DELETE FROM gone WHERE digest = ? AND position < ?`, it.digest, it.position); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		// The body fetched later than a failure fills the gap.
		if _, err := tx.ExecContext(ctx, `DELETE FROM missing WHERE message = ?`, it.message); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
	}
	for _, rec := range recs {
		if rec.Event != nil && GovernanceEvents.Has(rec.Event.Type) {
			if err := indexGovernance(ctx, tx, rec); err != nil {
				return err
			}
		}
	}
	if err := projection.Advance(ctx, tx, pos); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("archive: commit: %w", err)
	}
	return nil
}

// item is one message place a record speaks of: a body (digest) put
// there, or a body that could not be fetched (err).
type item struct {
	position     bonnie.Position
	message      string
	digest       string
	size         int64
	messageID    string
	internalDate time.Time
	time         time.Time
	event        string
	folder, path string
	owner        string
	ownerID      string
	groups       string
	uidValidity  uint32
	uid          uint32
	err          string
}

// extract finds the bodies a record names: the event's BodyRefs (append,
// delivery) and every Message whose digest the changes set (a copy or a
// move inherits its source's).
func extract(rec bonnie.Record) []item {
	ev := rec.Event
	if ev == nil {
		return nil
	}
	ownerID, groups := "", ""
	if ev.Identities != nil && ev.Identities.Owner != nil && !ev.Identities.Owner.Unresolved {
		ownerID = ev.Identities.Owner.ID
		for _, g := range ev.Identities.Owner.Groups {
			groups += "|" + g.ID + "|" + g.Name
		}
		if groups != "" {
			groups += "|"
		}
	}
	base := item{position: rec.Position, time: ev.Time, event: ev.Type.String(), folder: ev.MailboxID,
		path: ev.Mailbox.Name, owner: ev.Mailbox.Owner, ownerID: ownerID, groups: groups, uidValidity: ev.Mailbox.UIDValidity}
	var out []item
	seen := map[string]bool{}
	for i, b := range ev.Bodies {
		it := base
		it.message = bonnie.MessageKey(ev.MailboxID, ev.Mailbox.UIDValidity, b.UID)
		it.uid = b.UID
		it.digest, it.size, it.internalDate, it.err = b.Digest, b.Size, b.InternalDate, b.Error
		if it.digest == "" && it.err == "" {
			it.err = "no digest"
		}
		if len(ev.MessageIDs) == len(ev.UIDs) && i < len(ev.UIDs) && ev.UIDs[i] == b.UID {
			it.messageID = ev.MessageIDs[i]
		}
		seen[it.message] = true
		out = append(out, it)
	}
	// Fields the changes set, per message.
	fields := map[string]map[string]string{}
	var order []string
	for _, c := range rec.Changes {
		if c.Entity != bonnie.KindMessage {
			continue
		}
		if fields[c.ID] == nil {
			fields[c.ID] = map[string]string{}
			order = append(order, c.ID)
		}
		fields[c.ID][c.Field] = c.To
	}
	for _, id := range order {
		f := fields[id]
		if f["digest"] == "" || seen[id] {
			continue
		}
		it := base
		it.message, it.digest = id, f["digest"]
		it.size, _ = strconv.ParseInt(f["size"], 10, 64)
		it.internalDate, _ = time.Parse(time.RFC3339Nano, f["internalDate"])
		it.messageID = f["messageId"]
		folder, uv, uid := splitKey(id)
		if folder != ev.MailboxID {
			// Not the event's folder: its name is looked up at query time.
			it.folder, it.path, it.owner, it.ownerID, it.groups = folder, "", "", "", ""
		}
		it.uidValidity, it.uid = uv, uid
		out = append(out, it)
	}
	return out
}

func splitKey(key string) (string, uint32, uint32) {
	parts := strings.Split(key, "/")
	if len(parts) < 3 {
		return key, 0, 0
	}
	n := len(parts)
	uv, _ := strconv.ParseUint(parts[n-2], 10, 32)
	uid, _ := strconv.ParseUint(parts[n-1], 10, 32)
	return strings.Join(parts[:n-2], "/"), uint32(uv), uint32(uid)
}

// headerMessageID reads the Message-ID header of a stored body ("" when
// it has none, or the body cannot be read).
func (a *Archive) headerMessageID(ctx context.Context, digest string) string {
	r, err := a.blobs.Open(digest)
	if err != nil {
		return ""
	}
	defer r.Close()
	return HeaderField(r, "Message-ID")
}

// HeaderField returns the first value of a header field of the message
// read from r, unfolded and trimmed, reading no further than the header.
// It is tolerant: malformed lines are skipped, not fatal.
func HeaderField(r io.Reader, name string) string {
	br := bufio.NewReaderSize(io.LimitReader(r, 1<<20), 4096)
	var val []byte
	in := false
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// An overlong header line: keep reading it.
			if in {
				val = append(val, line...)
			}
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				if in {
					val = append(val, line...)
				}
			}
			continue
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			break // end of the header
		}
		if trimmed[0] == ' ' || trimmed[0] == '\t' {
			if in {
				val = append(val, ' ')
				val = append(val, bytes.TrimSpace(trimmed)...)
			}
		} else if in {
			break
		} else if k, v, ok := bytes.Cut(trimmed, []byte(":")); ok && strings.EqualFold(string(bytes.TrimSpace(k)), name) {
			in = true
			val = append(val[:0], bytes.TrimSpace(v)...)
		}
		if err != nil {
			break
		}
	}
	return strings.TrimSpace(string(val))
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

// Occurrence is one place a body was put.
type Occurrence struct {
	Position    bonnie.Position `json:"position"`
	Time        time.Time       `json:"time"`
	Event       string          `json:"event"`
	Message     string          `json:"message"`
	Folder      string          `json:"folder"`
	Path        string          `json:"path"`
	Owner       string          `json:"owner,omitempty"`
	OwnerID     string          `json:"ownerId,omitempty"`
	UIDValidity uint32          `json:"uidValidity"`
	UID         uint32          `json:"uid"`
	digest      string
	groups      string
}

// Body is one stored body and where it was put.
type Body struct {
	Digest       string       `json:"sha256"`
	Size         int64        `json:"size"`
	MessageID    string       `json:"messageId,omitempty"`
	InternalDate time.Time    `json:"internalDate,omitzero"`
	Occurrences  []Occurrence `json:"occurrences"`
}

// Missing is a message whose body could not be fetched.
type Missing struct {
	Position bonnie.Position `json:"position"`
	Message  string          `json:"message"`
	Time     time.Time       `json:"time"`
	Folder   string          `json:"folder"`
	Path     string          `json:"path"`
	UID      uint32          `json:"uid"`
	Error    string          `json:"error"`
}

// ErrNotFound: the archive holds nothing that matches.
var ErrNotFound = errors.New("archive: not found")

// Body returns the body with digest d and every place it was put.
func (a *Archive) Body(ctx context.Context, d string) (*Body, error) {
	bs, err := a.bodies(ctx, `WHERE b.digest = ?`, d)
	if err != nil {
		return nil, err
	}
	if len(bs) == 0 {
		return nil, fmt.Errorf("%w: no body %s", ErrNotFound, d)
	}
	return &bs[0], nil
}

// ByMessageID returns the different bodies that carry Message-ID mid
// (with or without angle brackets), oldest first.
func (a *Archive) ByMessageID(ctx context.Context, mid string) ([]Body, error) {
	return a.bodies(ctx, `WHERE b.message_id = ?`, NormalizeMessageID(mid))
}

// Count returns the number of distinct bodies and of occurrences.
func (a *Archive) Count(ctx context.Context) (bodies, occurrences int, err error) {
	err = a.db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM bodies), (SELECT count(*) FROM occurrences)`).Scan(&bodies, &occurrences)
	return
}

// EachBody calls fn for every body (without occurrences), in digest order.
func (a *Archive) EachBody(ctx context.Context, fn func(Body) error) error {
	rows, err := a.db.QueryContext(ctx, `SELECT digest, size, message_id, internal_date FROM bodies ORDER BY digest`)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	var all []Body
	for rows.Next() {
		var b Body
		var idate string
		if err := rows.Scan(&b.Digest, &b.Size, &b.MessageID, &idate); err != nil {
			rows.Close()
			return fmt.Errorf("archive: %w", err)
		}
		b.InternalDate = parseTime(idate)
		all = append(all, b)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	for _, b := range all {
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}

// Missing lists the messages whose body could not be fetched, in log
// order.
func (a *Archive) Missing(ctx context.Context) ([]Missing, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT position, message, time, folder, path, uid, error FROM missing ORDER BY position, message`)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer rows.Close()
	var out []Missing
	for rows.Next() {
		var m Missing
		var t string
		if err := rows.Scan(&m.Position, &m.Message, &t, &m.Folder, &m.Path, &m.UID, &m.Error); err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		m.Time = parseTime(t)
		out = append(out, m)
	}
	return out, rows.Err()
}

// bodies returns the bodies matching where (on bodies b) with all their
// occurrences, ordered by first position.
func (a *Archive) bodies(ctx context.Context, where string, args ...any) ([]Body, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT b.digest, b.size, b.message_id, b.internal_date FROM bodies b `+where+` ORDER BY b.first_position, b.digest`, args...)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	var out []Body
	for rows.Next() {
		var b Body
		var idate string
		if err := rows.Scan(&b.Digest, &b.Size, &b.MessageID, &idate); err != nil {
			rows.Close()
			return nil, fmt.Errorf("archive: %w", err)
		}
		b.InternalDate = parseTime(idate)
		out = append(out, b)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	for i := range out {
		occ, err := a.occurrences(ctx, `WHERE o.digest = ?`, out[i].Digest)
		if err != nil {
			return nil, err
		}
		out[i].Occurrences = occ
	}
	return out, nil
}

// occurrences returns occurrences matching where (on occurrences o), in
// log order, with the names of folders the record did not name filled in
// from the names the log gave them.
func (a *Archive) occurrences(ctx context.Context, where string, args ...any) ([]Occurrence, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT o.position, o.time, o.event, o.message, o.folder,
		CASE WHEN o.path <> '' THEN o.path ELSE COALESCE((SELECT n.path FROM folder_names n WHERE n.folder = o.folder AND n.position <= o.position ORDER BY n.position DESC LIMIT 1),
			(SELECT n.path FROM folder_names n WHERE n.folder = o.folder ORDER BY n.position LIMIT 1), '') END,
		o.owner, o.owner_id, o.uid_validity, o.uid, o.digest, o.owner_groups
		FROM occurrences o `+where+` ORDER BY o.position, o.message`, args...)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer rows.Close()
	var out []Occurrence
	for rows.Next() {
		var o Occurrence
		var t string
		if err := rows.Scan(&o.Position, &t, &o.Event, &o.Message, &o.Folder, &o.Path, &o.Owner, &o.OwnerID, &o.UIDValidity, &o.UID, &o.digest, &o.groups); err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		o.Time = parseTime(t)
		if o.Owner == "" && o.Path != "" {
			if u, err := bonnie.ParseMailboxURL("imap://x/" + urlPath(o.Path)); err == nil {
				o.Owner = u.Owner
			}
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// urlPath percent-encodes a mailbox name for ParseMailboxURL.
func urlPath(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x21 || c > 0x7e || c == '%' || c == ';' || c == '/' || c == '?' || c == '#' {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// FolderIDs returns the uniqueids of the folders named name (a uniqueid,
// or any name a folder ever had, in the admin namespace, decoded:
// "user.alice.Archiv 2027").
func (a *Archive) FolderIDs(ctx context.Context, name string) ([]string, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT DISTINCT folder FROM folder_names WHERE folder = ? OR path = ?
		UNION SELECT DISTINCT folder FROM occurrences WHERE folder = ? ORDER BY 1`, name, name, name)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var f string
		if err := rows.Scan(&f); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// Query selects what an export holds: the bodies put into a custodian's
// folders in a time range.
type Query struct {
	// Custodian is the owner of the folders: the login in their names
	// ("alice" of user.alice.*), or the persistent identity when
	// identities are resolved.
	Custodian string `json:"custodian"`
	// From (inclusive) and To (exclusive) bound the time the message
	// arrived in the folder (the event time); zero: unbounded.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Folders, if any, restrict to these folders (uniqueid or any name
	// they had).
	Folders []string `json:"folders,omitempty"`
}

// Find returns the bodies the query selects, each with the occurrences
// that matched, in the order they first arrived. A body that arrived
// several times (copies, several folders) is listed once.
func (a *Archive) Find(ctx context.Context, q Query) ([]Body, error) {
	if q.Custodian == "" {
		return nil, errors.New("archive: a query needs a custodian")
	}
	where := `WHERE (o.owner = ? OR o.owner_id = ?)`
	args := []any{q.Custodian, q.Custodian}
	if !q.From.IsZero() {
		where += ` AND o.time >= ?`
		args = append(args, fmtTime(q.From))
	}
	if !q.To.IsZero() {
		where += ` AND o.time < ?`
		args = append(args, fmtTime(q.To))
	}
	if len(q.Folders) > 0 {
		var ids []string
		for _, f := range q.Folders {
			got, err := a.FolderIDs(ctx, f)
			if err != nil {
				return nil, err
			}
			if len(got) == 0 {
				return nil, fmt.Errorf("%w: no folder named %q", ErrNotFound, f)
			}
			ids = append(ids, got...)
		}
		where += ` AND o.folder IN (` + strings.TrimSuffix(strings.Repeat("?,", len(ids)), ",") + `)`
		for _, id := range ids {
			args = append(args, id)
		}
	}
	occ, err := a.occurrences(ctx, where, args...)
	if err != nil {
		return nil, err
	}
	byDigest := map[string]*Body{}
	var order []string
	for _, o := range occ {
		d := o.digest
		b := byDigest[d]
		if b == nil {
			full, err := a.bodies(ctx, `WHERE b.digest = ?`, d)
			if err != nil || len(full) == 0 {
				return nil, fmt.Errorf("archive: body %s: %v", d, err)
			}
			b = &full[0]
			b.Occurrences = nil
			byDigest[d] = b
			order = append(order, d)
		}
		b.Occurrences = append(b.Occurrences, o)
	}
	out := make([]Body, len(order))
	for i, d := range order {
		out[i] = *byDigest[d]
	}
	return out, nil
}
