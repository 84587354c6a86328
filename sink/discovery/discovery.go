// Package discovery is Bonnie's e-discovery sink: it indexes the log so
// that an investigator can ask what happened to a message, a folder or a
// groupware object, what a person did, who could read what at a given
// moment, and find messages by custodian, folder, time, event, sender,
// recipient, subject and (when the archive keeps bodies) full text.
//
// Like every sink it only reads the log (invariant 5). Its state is an
// SQLite file in the data directory (Path: DATA/discovery.db) that can be
// deleted at any time: the engine gives a new sink the whole log from
// position 0, and CatchUp does the same from a command line when no
// daemon ran the sink. Everything it answers comes from the log as it
// was recorded: identities, group memberships and ACLs are the snapshots
// taken at event time (Event.Identities, Event.MailboxACL), never
// today's directory.
//
// The index holds:
//
//	acts         one row per thing that happened to a message (per UID), a folder, or a session, with its actor (login and persistent id), client address, session and log position
//	messages     each message place (bonnie.MessageKey) with its Message-ID, subject, sender, recipients and body digest
//	folder_names every name a folder (uniqueid) had, and since when
//	acl          each folder's ACL snapshot (with the identities and group members resolved at that time) whenever it changed
//	idents       each person's and group's identity snapshots (names, groups, members) whenever they changed
//	sessions     logins with client address, start, end and duration
//	objects      revisions of groupware (Kolab) objects: the appended message that holds each version
//	fulltext     an FTS4 index of the text of every archived body
//
// What a crawl recorded after the fact (vnd.bonnie.Backfill and
// vnd.bonnie.Reconcile events) is indexed as acts too, which timelines
// mark (Entry.RecordedBy, Entry.Window); AddGaps says which periods of a
// timeline the log is not known complete in (package coverage).
//
// Full text uses SQLite's FTS4, which mattn/go-sqlite3 compiles in by
// default; FTS5 needs the sqlite_fts5 build tag, and neither the
// module's tests nor its CI builds use tags, so FTS4 keeps one build for
// everything (TestFullTextWithoutBuildTags checks it).
//
// Every query an investigator runs is itself evidence: QueryEvent builds
// the vnd.bonnie.Query event that the command line appends (through
// bonnie.Engine.Record) before it answers, so who asked what, and when,
// sits in the same hash chain.
package discovery

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/projection"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// Name is the sink's name (its cursor in the log).
const Name = "discovery"

// ProjectionFile is where a data directory (bonnied --data) keeps the
// index.
const ProjectionFile = "discovery.db"

// Path returns the index path of a data directory.
func Path(dataDir string) string { return filepath.Join(dataDir, ProjectionFile) }

// Events are the events the index reads: everything that happens to
// messages, folders and sessions, late identity resolutions and the
// queries themselves.
var Events = bonnie.Mask(bonnie.MessageAppend, bonnie.MessageNew, bonnie.MessageCopy, bonnie.MessageMove,
	bonnie.MessageRead, bonnie.MessageTrash, bonnie.FlagsSet, bonnie.FlagsClear, bonnie.MessageExpunge,
	bonnie.MessageExpire, bonnie.Login, bonnie.Logout, bonnie.MailboxCreate, bonnie.MailboxDelete,
	bonnie.MailboxRename, bonnie.MailboxSubscribe, bonnie.MailboxUnsubscribe, bonnie.AclChange,
	bonnie.IdentityResolved, bonnie.Query, bonnie.Backfill, bonnie.Reconcile)

// schemaVersion: an index of another version is dropped and rebuilt.
// 2: Backfill and Reconcile events are indexed (gaps.go).
// 3: messages indexed on (message_id, state).
const schemaVersion = 3

const schema = `
CREATE TABLE acts (
	position    INTEGER NOT NULL,
	seq         INTEGER NOT NULL,
	time        TEXT NOT NULL,
	event       TEXT NOT NULL,
	action      TEXT NOT NULL,
	login       TEXT NOT NULL,
	actor_id    TEXT NOT NULL,
	client      TEXT NOT NULL,
	session     TEXT NOT NULL,
	service     TEXT NOT NULL,
	folder      TEXT NOT NULL,
	path        TEXT NOT NULL,
	from_folder TEXT NOT NULL,
	from_path   TEXT NOT NULL,
	owner       TEXT NOT NULL,
	owner_id    TEXT NOT NULL,
	uid         INTEGER NOT NULL,
	msgkey      TEXT NOT NULL,
	message_id  TEXT NOT NULL,
	flags       TEXT NOT NULL,
	acl_subject TEXT NOT NULL,
	acl_rights  TEXT NOT NULL,
	detail      TEXT NOT NULL,
	PRIMARY KEY (position, seq)
) WITHOUT ROWID;
CREATE INDEX acts_message_id ON acts(message_id) WHERE message_id <> '';
CREATE INDEX acts_msgkey ON acts(msgkey) WHERE msgkey <> '';
CREATE INDEX acts_folder ON acts(folder, position);
CREATE INDEX acts_actor ON acts(actor_id, position);
CREATE INDEX acts_login ON acts(login, position);
CREATE INDEX acts_session ON acts(session) WHERE session <> '';
CREATE INDEX acts_time ON acts(time);
CREATE TABLE messages (
	msgkey     TEXT PRIMARY KEY,
	message_id TEXT NOT NULL,
	folder     TEXT NOT NULL,
	uid        INTEGER NOT NULL,
	digest     TEXT NOT NULL,
	subject    TEXT NOT NULL,
	sender     TEXT NOT NULL,
	recipients TEXT NOT NULL,
	state      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX messages_message_id ON messages(message_id, state);
CREATE INDEX messages_digest ON messages(digest) WHERE digest <> '';
CREATE TABLE folder_names (
	folder         TEXT NOT NULL,
	path           TEXT NOT NULL,
	first_position INTEGER NOT NULL,
	first_time     TEXT NOT NULL,
	PRIMARY KEY (folder, path)
) WITHOUT ROWID;
CREATE INDEX folder_names_path ON folder_names(path);
CREATE TABLE acl (
	folder   TEXT NOT NULL,
	position INTEGER NOT NULL,
	time     TEXT NOT NULL,
	path     TEXT NOT NULL,
	deleted  INTEGER NOT NULL,
	entries  TEXT NOT NULL,
	PRIMARY KEY (folder, position)
) WITHOUT ROWID;
CREATE TABLE idents (
	kind     TEXT NOT NULL,
	id       TEXT NOT NULL,
	position INTEGER NOT NULL,
	time     TEXT NOT NULL,
	snapshot TEXT NOT NULL,
	PRIMARY KEY (kind, id, position)
) WITHOUT ROWID;
CREATE TABLE sessions (
	session   TEXT PRIMARY KEY,
	login     TEXT NOT NULL,
	actor_id  TEXT NOT NULL,
	service   TEXT NOT NULL,
	client    TEXT NOT NULL,
	start     TEXT NOT NULL,
	start_pos INTEGER NOT NULL,
	end       TEXT NOT NULL,
	end_pos   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_actor ON sessions(actor_id);
CREATE TABLE objects (
	uid      TEXT NOT NULL,
	position INTEGER NOT NULL,
	msgkey   TEXT NOT NULL,
	kind     TEXT NOT NULL,
	digest   TEXT NOT NULL,
	PRIMARY KEY (uid, position, msgkey)
) WITHOUT ROWID;
CREATE TABLE texts (docid INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE);
CREATE VIRTUAL TABLE fulltext USING fts4(subject, sender, recipients, body, tokenize=unicode61);
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

// Index is the discovery sink and its index. It implements bonnie.Sink;
// its query methods are safe for concurrent use.
type Index struct {
	db    *sql.DB
	blobs *blob.Store
	path  string
}

// Open opens (creating it if needed) the index at path. blobs is the body
// store of the archive (DATA/blobs): with it, bodies are indexed for full
// text, groupware objects are recognised by their X-Kolab-Type header and
// their revisions can be read and compared; nil indexes what the
// notifications carry only.
func Open(ctx context.Context, path string, blobs *blob.Store) (*Index, error) {
	db, err := projection.Open(ctx, path, projectionSchema)
	if err != nil {
		return nil, err
	}
	return &Index{db: db, blobs: blobs, path: path}, nil
}

var projectionSchema = projection.Schema{
	Name: "discovery", Version: schemaVersion, DDL: schema,
	Tables: []string{"acts", "messages", "folder_names", "acl", "idents", "sessions", "objects", "texts", "fulltext"},
}

// Close closes the index.
func (x *Index) Close() error { return x.db.Close() }

// Name implements bonnie.Sink.
func (x *Index) Name() string { return Name }

// Events implements bonnie.Sink.
func (x *Index) Events() bonnie.EventMask { return Events }

// Handle implements bonnie.Sink: it indexes one record. A record at or
// before the index's position changes nothing, so handling one again (a
// retry, the daemon and a command line catching up together) is safe.
func (x *Index) Handle(ctx context.Context, rec bonnie.Record) error {
	return x.batch(ctx, []bonnie.Record{rec}, rec.Position)
}

// HandleBatch implements bonnie.BatchSink: it indexes records in one
// transaction; those at or before the index's position change nothing.
func (x *Index) HandleBatch(ctx context.Context, recs []bonnie.Record) error {
	if len(recs) == 0 {
		return nil
	}
	return x.batch(ctx, recs, recs[len(recs)-1].Position)
}

// Position returns the last log position the index has handled
// (bonnie.PositionKeeper: the engine resumes the sink from it).
func (x *Index) Position(ctx context.Context) (bonnie.Position, error) {
	p, err := projection.Position(ctx, x.db)
	if err != nil {
		return 0, fmt.Errorf("discovery: %w", err)
	}
	return p, nil
}

// CatchUp indexes the records of lg after the index's position, so that a
// query sees everything in the log now whether or not a daemon runs the
// sink, and returns the new position.
func (x *Index) CatchUp(ctx context.Context, lg bonnie.Log) (bonnie.Position, error) {
	pos, err := x.Position(ctx)
	if err != nil {
		return 0, err
	}
	for {
		recs, last, err := bonnie.ReadMatching(ctx, lg, pos, 4096, Events)
		if err != nil {
			return pos, fmt.Errorf("discovery: read log: %w", err)
		}
		if last == pos {
			return pos, nil
		}
		if err := x.batch(ctx, recs, last); err != nil {
			return pos, err
		}
		pos = last
	}
}

// Rebuild empties the index and replays the whole log into it.
func (x *Index) Rebuild(ctx context.Context, lg bonnie.Log) (bonnie.Position, error) {
	if err := projection.Reset(ctx, x.db, projectionSchema, true); err != nil {
		return 0, err
	}
	return x.CatchUp(ctx, lg)
}
