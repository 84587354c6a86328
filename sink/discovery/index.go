package discovery

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/projection"
)

// The actions a timeline names. A message's: delivered (lmtp), appended,
// restored (appended again after every copy of it was gone), read,
// unread, flagged, unflagged, trashed (\Deleted set, or moved into a
// trash folder), untrashed, copied, moved, expunged, expired. A folder's:
// created, renamed, acl granted, acl revoked, subscribed, unsubscribed,
// deleted. A person's: login, logout, query, and every other action they
// took.
const (
	ActDelivered    = "delivered"
	ActAppended     = "appended"
	ActRestored     = "restored"
	ActRead         = "read"
	ActUnread       = "unread"
	ActFlagged      = "flagged"
	ActUnflagged    = "unflagged"
	ActTrashed      = "trashed"
	ActUntrashed    = "untrashed"
	ActCopied       = "copied"
	ActMoved        = "moved"
	ActExpunged     = "expunged"
	ActExpired      = "expired"
	ActCreated      = "created"
	ActRenamed      = "renamed"
	ActACLGranted   = "acl granted"
	ActACLRevoked   = "acl revoked"
	ActSubscribed   = "subscribed"
	ActUnsubscribed = "unsubscribed"
	ActDeleted      = "deleted"
	ActLogin        = "login"
	ActLogout       = "logout"
	ActQuery        = "query"
)

// extraQuery is the member of a Query event that holds what was asked.
const extraQuery = "vnd.bonnie.query"

// batch indexes recs in one transaction and moves the position to pos
// (never back); records at or before the current position are skipped.
func (x *Index) batch(ctx context.Context, recs []bonnie.Record, pos bonnie.Position) error {
	// Read the bodies before the write transaction.
	bodies := map[string]*bodyInfo{}
	if x.blobs != nil {
		for _, rec := range recs {
			for _, b := range rec.Event.Bodies {
				if b.Digest == "" || bodies[b.Digest] != nil {
					continue
				}
				if bi := x.readBody(b.Digest); bi != nil {
					bodies[b.Digest] = bi
				}
			}
		}
	}
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	defer tx.Rollback()
	cur, err := projection.Position(ctx, tx)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	w := &writer{ctx: ctx, tx: tx, bodies: bodies}
	for _, rec := range recs {
		if rec.Position <= cur || rec.Event == nil {
			continue
		}
		if err := w.apply(rec); err != nil {
			return fmt.Errorf("discovery: position %d: %w", rec.Position, err)
		}
	}
	if err := projection.Advance(ctx, tx, pos); err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("discovery: commit: %w", err)
	}
	return nil
}

// writer applies records inside one transaction.
type writer struct {
	ctx    context.Context
	tx     *sql.Tx
	bodies map[string]*bodyInfo
}

func (w *writer) exec(q string, args ...any) error {
	_, err := w.tx.ExecContext(w.ctx, q, args...)
	return err
}

// act is one row of the acts table.
type act struct {
	seq                  int
	action               string
	folder, path         string
	fromFolder, fromPath string
	uid                  uint32
	msgkey, messageID    string
	flags                []string
	aclSubject           string
	aclRights            string
	detail               string
}

// base is what every row of one record shares.
type base struct {
	pos             bonnie.Position
	ev              *bonnie.Event
	login, actorID  string
	client, session string
	owner, ownerID  string
}

func (w *writer) insertAct(b *base, a act) error {
	flags := strings.Join(a.flags, " ")
	return w.exec(`INSERT OR IGNORE INTO acts(position, seq, time, event, action, login, actor_id, client, session, service,
		folder, path, from_folder, from_path, owner, owner_id, uid, msgkey, message_id, flags, acl_subject, acl_rights, detail)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		uint64(b.pos), a.seq, fmtTime(b.ev.Time), b.ev.Type.String(), a.action, b.login, b.actorID, b.client, b.session, b.ev.Service,
		a.folder, a.path, a.fromFolder, a.fromPath, b.owner, b.ownerID, a.uid, a.msgkey, a.messageID, flags, a.aclSubject, a.aclRights, a.detail)
}

// actorID is the persistent id of the event's actor: the resolved
// identity's, or the login when it was not resolved.
func actorID(ev *bonnie.Event) string {
	if ids := ev.Identities; ids != nil && ids.Actor != nil && !ids.Actor.Unresolved && ids.Actor.ID != "" {
		return ids.Actor.ID
	}
	return ev.User
}

func ownerID(ev *bonnie.Event) string {
	if ids := ev.Identities; ids != nil && ids.Owner != nil && !ids.Owner.Unresolved && ids.Owner.ID != "" {
		return ids.Owner.ID
	}
	return ev.Mailbox.Owner
}

func (w *writer) apply(rec bonnie.Record) error {
	ev := rec.Event
	if ev.Type == bonnie.IdentityResolved {
		return w.late(rec)
	}
	b := &base{pos: rec.Position, ev: ev, login: ev.User, actorID: actorID(ev), session: ev.SessionID,
		owner: ev.Mailbox.Owner, ownerID: ownerID(ev)}
	if ev.ClientIP != "" {
		b.client = net.JoinHostPort(ev.ClientIP, strconv.Itoa(ev.ClientPort))
	} else if ev.SessionID != "" {
		// Cyrus names the client on Login only; the session carries it.
		err := w.tx.QueryRowContext(w.ctx, `SELECT client FROM sessions WHERE session = ?`, ev.SessionID).Scan(&b.client)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	if err := w.identities(rec); err != nil {
		return err
	}
	if ev.MailboxID != "" {
		if err := w.folderName(rec, ev.MailboxID, ev.Mailbox.Name); err != nil {
			return err
		}
		if err := w.aclSnapshot(rec); err != nil {
			return err
		}
	}
	folderAct := act{folder: ev.MailboxID, path: ev.Mailbox.Name}
	switch ev.Type {
	case bonnie.Login:
		folderAct.action = ActLogin
		if err := w.exec(`INSERT INTO sessions(session, login, actor_id, service, client, start, start_pos, end, end_pos)
			VALUES (?, ?, ?, ?, ?, ?, ?, '', 0) ON CONFLICT(session) DO UPDATE SET login = excluded.login,
			actor_id = excluded.actor_id, service = excluded.service, client = excluded.client, start = excluded.start,
			start_pos = excluded.start_pos`, sessionKey(ev, rec.Position), b.login, b.actorID, ev.Service, b.client,
			fmtTime(ev.Time), uint64(rec.Position)); err != nil {
			return err
		}
	case bonnie.Logout:
		folderAct.action = ActLogout
		if err := w.exec(`INSERT INTO sessions(session, login, actor_id, service, client, start, start_pos, end, end_pos)
			VALUES (?, ?, ?, ?, ?, '', 0, ?, ?) ON CONFLICT(session) DO UPDATE SET end = excluded.end, end_pos = excluded.end_pos`,
			sessionKey(ev, rec.Position), b.login, b.actorID, ev.Service, b.client, fmtTime(ev.Time), uint64(rec.Position)); err != nil {
			return err
		}
	case bonnie.Query:
		folderAct.action = ActQuery
		folderAct.detail = string(ev.Extra[extraQuery])
	case bonnie.MailboxCreate:
		folderAct.action = ActCreated
	case bonnie.MailboxDelete:
		folderAct.action = ActDeleted
	case bonnie.MailboxRename:
		folderAct.action = ActRenamed
		if ev.OldMailbox != nil {
			folderAct.fromFolder, folderAct.fromPath = ev.MailboxID, ev.OldMailbox.Name
			if err := w.folderName(rec, ev.MailboxID, ev.OldMailbox.Name); err != nil {
				return err
			}
		}
	case bonnie.MailboxSubscribe:
		folderAct.action = ActSubscribed
	case bonnie.MailboxUnsubscribe:
		folderAct.action = ActUnsubscribed
	case bonnie.AclChange:
		folderAct.action, folderAct.aclSubject, folderAct.aclRights = ActACLGranted, ev.ACLSubject, ev.ACLRights
		if ev.ACLRemoved || ev.ACLRights == "" {
			// DELETEACL, or SETACL with no rights (what a client without
			// DELETEACL sends): the subject lost every right.
			folderAct.action, folderAct.aclRights = ActACLRevoked, ""
		}
		if ids := ev.Identities; ids != nil && ids.Subject != nil {
			d, _ := json.Marshal(ids.Subject)
			folderAct.detail = string(d)
		}
	case bonnie.Backfill, bonnie.Reconcile:
		return w.crawlActs(rec, b) // gaps.go
	default:
		return w.messageActs(rec, b)
	}
	return w.insertAct(b, folderAct)
}

// sessionKey is the session's id; a Login without one (no
// vnd.cmu.sessionId) is its own session.
func sessionKey(ev *bonnie.Event, pos bonnie.Position) string {
	if ev.SessionID != "" {
		return ev.SessionID
	}
	return "#" + strconv.FormatUint(uint64(pos), 10)
}

func (w *writer) folderName(rec bonnie.Record, folder, path string) error {
	if path == "" {
		return nil
	}
	return w.exec(`INSERT OR IGNORE INTO folder_names(folder, path, first_position, first_time) VALUES (?, ?, ?, ?)`,
		folder, path, uint64(rec.Position), fmtTime(rec.Event.Time))
}

// messageActs writes one row per UID of a message event.
func (w *writer) messageActs(rec bonnie.Record, b *base) error {
	ev := rec.Event
	changed := map[string]map[string]string{} // message key -> field -> new value
	for _, c := range rec.Changes {
		if c.Entity == bonnie.KindMessage {
			if changed[c.ID] == nil {
				changed[c.ID] = map[string]string{}
			}
			changed[c.ID][c.Field] = c.To
		}
	}
	digests := map[uint32]string{}
	for _, bd := range ev.Bodies {
		digests[bd.UID] = bd.Digest
	}
	var fromFolder, fromPath string
	if ev.OldMailbox != nil {
		fromPath = ev.OldMailbox.Name
		// The source folder's uniqueid: the last folder that had the name.
		err := w.tx.QueryRowContext(w.ctx, `SELECT folder FROM folder_names WHERE path = ? ORDER BY first_position DESC LIMIT 1`, fromPath).
			Scan(&fromFolder)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	for i, uid := range ev.UIDs {
		key := bonnie.MessageKey(ev.MailboxID, ev.Mailbox.UIDValidity, uid)
		a := act{seq: i + 1, folder: ev.MailboxID, path: ev.Mailbox.Name, uid: uid, msgkey: key, flags: ev.Flags}
		if len(ev.MessageIDs) == len(ev.UIDs) {
			a.messageID = ev.MessageIDs[i]
		}
		if a.messageID == "" {
			a.messageID = changed[key]["messageId"]
		}
		var known msgRow
		if err := w.message(key, &known); err != nil {
			return err
		}
		if a.messageID == "" {
			a.messageID = known.messageID
		}
		switch ev.Type {
		case bonnie.MessageAppend, bonnie.MessageNew:
			a.action = ActAppended
			if ev.Type == bonnie.MessageNew {
				a.action = ActDelivered
			}
			row := msgRow{messageID: a.messageID, folder: ev.MailboxID, uid: uid, digest: digests[uid], state: bonnie.StatePresent}
			row.subject, row.sender, row.recipients, row.envMessageID = parseEnvelope(ev.Envelope)
			bi := w.bodies[row.digest]
			if bi != nil {
				row.subject = cmpOr(row.subject, bi.subject)
				row.sender = cmpOr(row.sender, bi.sender)
				row.recipients = cmpOr(row.recipients, bi.recipients)
				row.messageID = cmpOr(row.messageID, bi.messageID)
			}
			row.messageID = cmpOr(row.messageID, row.envMessageID)
			a.messageID = row.messageID
			if a.messageID != "" && ev.Type == bonnie.MessageAppend {
				gone, err := w.allGone(a.messageID)
				if err != nil {
					return err
				}
				if gone {
					a.action = ActRestored
				}
			}
			if err := w.putMessage(key, row); err != nil {
				return err
			}
			if bi != nil {
				if err := w.indexText(row, bi); err != nil {
					return err
				}
				if bi.kolabType != "" && bi.subject != "" {
					if err := w.exec(`INSERT OR IGNORE INTO objects(uid, position, msgkey, kind, digest) VALUES (?, ?, ?, ?, ?)`,
						bi.subject, uint64(rec.Position), key, bi.kolabType, row.digest); err != nil {
						return err
					}
				}
			}
		case bonnie.MessageCopy, bonnie.MessageMove:
			a.action = ActCopied
			if ev.Type == bonnie.MessageMove {
				a.action = ActMoved
				if isTrash(ev.Mailbox.Name) {
					a.action = ActTrashed
				}
			}
			a.fromPath = fromPath
			row := msgRow{messageID: a.messageID, folder: ev.MailboxID, uid: uid, state: bonnie.StatePresent}
			if origin := changed[key]["origin"]; origin != "" {
				var src msgRow
				if err := w.message(origin, &src); err != nil {
					return err
				}
				row.digest, row.subject, row.sender, row.recipients = src.digest, src.subject, src.sender, src.recipients
				row.messageID = cmpOr(row.messageID, src.messageID)
				a.fromFolder = src.folder
				a.detail = `{"from":` + strconv.Quote(origin) + `}`
			} else {
				a.fromFolder = fromFolder
			}
			a.messageID = row.messageID
			if err := w.putMessage(key, row); err != nil {
				return err
			}
		case bonnie.MessageRead:
			a.action, a.flags = ActRead, []string{`\Seen`}
		case bonnie.MessageTrash:
			a.action, a.flags = ActTrashed, []string{`\Deleted`}
		case bonnie.FlagsSet, bonnie.FlagsClear:
			a.action = flagAction(ev.Type == bonnie.FlagsSet, ev.Flags)
		case bonnie.MessageExpunge, bonnie.MessageExpire:
			a.action = ActExpunged
			st := bonnie.StateExpunged
			if ev.Type == bonnie.MessageExpire {
				a.action, st = ActExpired, bonnie.StateExpired
			}
			if err := w.exec(`UPDATE messages SET state = ? WHERE msgkey = ?`, st, key); err != nil {
				return err
			}
		default:
			continue
		}
		if err := w.insertAct(b, a); err != nil {
			return err
		}
	}
	return nil
}

// flagAction names a FlagsSet (set) or FlagsClear: \Seen alone is a read
// (or unread), \Deleted alone a trash (or untrash), anything else a flag.
func flagAction(set bool, flags []string) string {
	only := func(f string) bool { return len(flags) == 1 && strings.EqualFold(flags[0], f) }
	switch {
	case set && only(`\Seen`):
		return ActRead
	case !set && only(`\Seen`):
		return ActUnread
	case set && only(`\Deleted`):
		return ActTrashed
	case !set && only(`\Deleted`):
		return ActUntrashed
	case set:
		return ActFlagged
	}
	return ActUnflagged
}

// isTrash reports whether a folder name's last level names a trash
// folder, as mail clients name them.
func isTrash(path string) bool {
	last := path
	if i := strings.LastIndexAny(path, "./"); i >= 0 {
		last = path[i+1:]
	}
	switch strings.ToLower(last) {
	case "trash", "deleted items", "deleted messages", "papierkorb", "gelöschte elemente", "corbeille":
		return true
	}
	return false
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// msgRow is one row of the messages table.
type msgRow struct {
	messageID, envMessageID     string
	folder                      string
	uid                         uint32
	digest                      string
	subject, sender, recipients string
	state                       string
}

func (w *writer) message(key string, m *msgRow) error {
	err := w.tx.QueryRowContext(w.ctx, `SELECT message_id, folder, uid, digest, subject, sender, recipients, state FROM messages WHERE msgkey = ?`, key).
		Scan(&m.messageID, &m.folder, &m.uid, &m.digest, &m.subject, &m.sender, &m.recipients, &m.state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	return err
}

func (w *writer) putMessage(key string, m msgRow) error {
	return w.exec(`INSERT INTO messages(msgkey, message_id, folder, uid, digest, subject, sender, recipients, state)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(msgkey) DO UPDATE SET
		message_id = CASE WHEN excluded.message_id <> '' THEN excluded.message_id ELSE message_id END,
		digest = CASE WHEN excluded.digest <> '' THEN excluded.digest ELSE digest END,
		subject = CASE WHEN excluded.subject <> '' THEN excluded.subject ELSE subject END,
		sender = CASE WHEN excluded.sender <> '' THEN excluded.sender ELSE sender END,
		recipients = CASE WHEN excluded.recipients <> '' THEN excluded.recipients ELSE recipients END,
		state = excluded.state`,
		key, m.messageID, m.folder, m.uid, m.digest, m.subject, m.sender, m.recipients, m.state)
}

// allGone reports whether Message-ID mid was seen before and no copy of
// it is present any more.
func (w *writer) allGone(mid string) (bool, error) {
	// Two index seeks (messages_message_id is on message_id, state), not
	// a count of every copy: a message sent to a whole organisation has
	// thousands.
	var seen, present bool
	err := w.tx.QueryRowContext(w.ctx, `SELECT EXISTS(SELECT 1 FROM messages WHERE message_id = ?1),
	EXISTS(SELECT 1 FROM messages WHERE message_id = ?1 AND state = 'present')`, mid).Scan(&seen, &present)
	return seen && !present, err
}

func (w *writer) indexText(m msgRow, bi *bodyInfo) error {
	if m.digest == "" {
		return nil
	}
	res, err := w.tx.ExecContext(w.ctx, `INSERT OR IGNORE INTO texts(digest) VALUES (?)`, m.digest)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // indexed already
	}
	docid, err := res.LastInsertId()
	if err != nil {
		return err
	}
	return w.exec(`INSERT INTO fulltext(docid, subject, sender, recipients, body) VALUES (?, ?, ?, ?, ?)`,
		docid, cmpOr(bi.subject, m.subject), cmpOr(bi.sender, m.sender), cmpOr(bi.recipients, m.recipients), bi.text)
}

// identities keeps a snapshot of every resolved person and group the
// event names, when it differs from the last one.
func (w *writer) identities(rec bonnie.Record) error {
	ids := rec.Event.Identities
	if ids == nil {
		return nil
	}
	return w.snapshotIdentities(rec, ids.All())
}

func (w *writer) snapshotIdentities(rec bonnie.Record, all []*bonnie.Identity) error {
	for _, id := range all {
		if id.Unresolved || id.ID == "" || (id.Kind != bonnie.IdentityUser && id.Kind != bonnie.IdentityGroup && id.Kind != bonnie.IdentityLogin) {
			continue
		}
		snap := identSnapshot{Login: id.Login, DisplayName: id.DisplayName, Names: id.Names(), Groups: id.Groups, Members: id.Members}
		if id.Kind == bonnie.IdentityGroup {
			snap.Names = []string{id.Login, strings.TrimPrefix(id.Subject, "-")}
		}
		js, _ := json.Marshal(snap)
		kind := string(id.Kind)
		if kind == string(bonnie.IdentityLogin) {
			kind = string(bonnie.IdentityUser)
		}
		var last string
		err := w.tx.QueryRowContext(w.ctx, `SELECT snapshot FROM idents WHERE kind = ? AND id = ? ORDER BY position DESC LIMIT 1`, kind, id.ID).Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if last == string(js) {
			continue
		}
		if err := w.exec(`INSERT OR REPLACE INTO idents(kind, id, position, time, snapshot) VALUES (?, ?, ?, ?, ?)`,
			kind, id.ID, uint64(rec.Position), fmtTime(rec.Event.Time), string(js)); err != nil {
			return err
		}
	}
	return nil
}

// identSnapshot is what the index keeps of an identity at one time.
type identSnapshot struct {
	Login       string       `json:"login,omitempty"`
	DisplayName string       `json:"displayName,omitempty"`
	Names       []string     `json:"names,omitempty"`
	Groups      []bonnie.Ref `json:"groups,omitempty"`
	Members     []bonnie.Ref `json:"members,omitempty"`
}

// ACLEntry is one entry of a folder's ACL as it was at a time, with the
// identity its subject resolved to then (group members included).
type ACLEntry struct {
	Subject  string              `json:"subject"`
	Rights   string              `json:"rights"`
	Negative bool                `json:"negative,omitempty"`
	Kind     bonnie.IdentityKind `json:"kind,omitempty"`
	ID       string              `json:"id,omitempty"`
	Login    string              `json:"login,omitempty"`
	Names    []string            `json:"names,omitempty"`
	Members  []bonnie.Ref        `json:"members,omitempty"`
}

// aclEntries pairs the event's ACL with the identities resolved for it.
func aclEntries(ev *bonnie.Event, ids *bonnie.Identities) []ACLEntry {
	out := make([]ACLEntry, 0, len(ev.MailboxACL))
	for i, a := range ev.MailboxACL {
		e := ACLEntry{Subject: a.Subject, Rights: a.Rights, Negative: strings.HasPrefix(a.Subject, "-")}
		name := strings.TrimPrefix(a.Subject, "-")
		switch {
		case strings.EqualFold(name, "anyone"), strings.EqualFold(name, "anonymous"):
			e.Kind, e.ID = bonnie.IdentitySpecial, strings.ToLower(name)
		case strings.HasPrefix(strings.ToLower(name), "group:"):
			e.Kind, e.ID, e.Login = bonnie.IdentityGroup, name, name[len("group:"):]
		default:
			e.Kind, e.ID, e.Login = bonnie.IdentityLogin, name, name
		}
		if ids != nil && len(ids.ACL) == len(ev.MailboxACL) {
			if id := ids.ACL[i]; !id.Unresolved && id.ID != "" {
				e.Kind, e.ID, e.Login, e.Members = id.Kind, id.ID, id.Login, id.Members
				if id.Kind == bonnie.IdentityUser {
					e.Names = id.Names()
				}
			}
		}
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b ACLEntry) int { return strings.Compare(a.Subject, b.Subject) })
	return out
}

// aclSnapshot keeps the folder's ACL when it differs from the last one
// (and marks a deletion).
func (w *writer) aclSnapshot(rec bonnie.Record) error {
	ev := rec.Event
	if ev.MailboxACL == nil && ev.Type != bonnie.MailboxDelete {
		return nil
	}
	var lastEntries string
	var lastDeleted bool
	err := w.tx.QueryRowContext(w.ctx, `SELECT entries, deleted FROM acl WHERE folder = ? ORDER BY position DESC LIMIT 1`, ev.MailboxID).
		Scan(&lastEntries, &lastDeleted)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	deleted := ev.Type == bonnie.MailboxDelete
	if lastDeleted && !deleted && ev.Type != bonnie.MailboxCreate {
		return nil // an event in flight for a deleted folder does not revive it
	}
	entries := lastEntries
	if ev.MailboxACL != nil {
		js, _ := json.Marshal(aclEntries(ev, ev.Identities))
		entries = string(js)
	}
	if entries == "" {
		entries = "[]"
	}
	if entries == lastEntries && deleted == lastDeleted {
		return nil
	}
	return w.exec(`INSERT OR REPLACE INTO acl(folder, position, time, path, deleted, entries) VALUES (?, ?, ?, ?, ?, ?)`,
		ev.MailboxID, uint64(rec.Position), fmtTime(ev.Time), ev.Mailbox.Name, deleted, entries)
}

// late applies an IdentityResolved event: the actor and ACL identities of
// the event it resolves, filled in after the fact.
func (w *writer) late(rec bonnie.Record) error {
	res, err := rec.Event.Resolution()
	if err != nil {
		return nil // kept in the log as it came; nothing to index
	}
	if err := w.snapshotIdentities(rec, res.All()); err != nil {
		return err
	}
	p := uint64(res.Resolves)
	if a := res.Actor; a != nil && !a.Unresolved && a.ID != "" {
		if err := w.exec(`UPDATE acts SET actor_id = ? WHERE position = ?`, a.ID, p); err != nil {
			return err
		}
		if err := w.exec(`UPDATE sessions SET actor_id = ? WHERE start_pos = ?`, a.ID, p); err != nil {
			return err
		}
	}
	if o := res.Owner; o != nil && !o.Unresolved && o.ID != "" {
		if err := w.exec(`UPDATE acts SET owner_id = ? WHERE position = ?`, o.ID, p); err != nil {
			return err
		}
	}
	if len(res.ACL) == 0 {
		return nil
	}
	rows, err := w.tx.QueryContext(w.ctx, `SELECT folder, entries FROM acl WHERE position = ?`, p)
	if err != nil {
		return err
	}
	type upd struct{ folder, entries string }
	var ups []upd
	for rows.Next() {
		var folder, js string
		if err := rows.Scan(&folder, &js); err != nil {
			rows.Close()
			return err
		}
		var es []ACLEntry
		if json.Unmarshal([]byte(js), &es) != nil {
			continue
		}
		ev := &bonnie.Event{}
		for _, e := range es {
			ev.MailboxACL = append(ev.MailboxACL, bonnie.ACLEntry{Subject: e.Subject, Rights: e.Rights})
		}
		// The resolution lists the ACL in the event's order, which the
		// snapshot sorted; pair them by subject.
		byName := map[string]bonnie.Identity{}
		for _, id := range res.ACL {
			byName[id.Subject] = id
		}
		ids := &bonnie.Identities{}
		for _, a := range ev.MailboxACL {
			ids.ACL = append(ids.ACL, byName[a.Subject])
		}
		out, _ := json.Marshal(aclEntries(ev, ids))
		ups = append(ups, upd{folder, string(out)})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, u := range ups {
		if err := w.exec(`UPDATE acl SET entries = ? WHERE folder = ? AND position = ?`, u.entries, u.folder, p); err != nil {
			return err
		}
	}
	return nil
}
