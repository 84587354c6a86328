package bonnie

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// CrawlMember is the JSON member of Backfill and Reconcile events that
// holds their Crawl.
const CrawlMember = "vnd.bonnie.crawl"

// Values of Crawl.Folder for a reconcile.
const (
	FolderCreated   = "created"   // on the server, unknown to the log
	FolderRenamed   = "renamed"   // same uniqueid, another name (OldPath)
	FolderDeleted   = "deleted"   // known to the log, gone from the server
	FolderRecreated = "recreated" // same uniqueid, new UIDVALIDITY (OldUIDValidity)
)

// Crawl is what one Backfill or Reconcile event found on the server about
// one folder (the event's mailboxID).
//
// Backfill and Reconcile events (see source/imap) say what a crawl of the
// server found, not what Cyrus notified. Both are bare JSON notifications
// appended through Engine.Record, with the standard members where Cyrus
// has one for the same fact, and one member of Bonnie's own for the rest:
//
//	{"event":"vnd.bonnie.Backfill",
//	 "timestamp":"2026-11-29T00:20:00.123Z",   // when the crawler saw this state
//	 "service":"bonnie-backfill",              // or bonnie-reconcile, bonnied-reconcile
//	 "uri":"imap://mail.example.org/user.alice.Work;UIDVALIDITY=1795910576",
//	 "mailboxID":"wffte283mlxgvc2s742c7lqh",   // Cyrus's uniqueid (RFC 8474 MAILBOXID)
//	 "vnd.cmu.mailboxACL":"alice\tlrswipkxtecdan\t",
//	 "uidnext":42, "modseq":97, "messages":41, // STATUS of the folder at the crawl
//	 "uidset":"1,2,3",                         // the UIDs of Crawl.Messages
//	 "vnd.cmu.midset":["<a@x>","NIL","<b@y>"], // and their Message-IDs
//	 "vnd.bonnie.crawl":{...}}                 // a Crawl, below
//
// A reconcile's verification of the folders it found in agreement names
// no folder: {"event":"vnd.bonnie.Reconcile", "timestamp", "service",
// "vnd.bonnie.crawl":{"run":..., "verified":[{"mailboxID":..., "modseq":...}]}}.
//
// "user" is left out: nobody acted; the changes such an event causes have
// no actor and the event's time, the moment the log learnt them.
//
// A backfill walks a folder in UID order and records it in chunks; each
// chunk's Crawl.LastUID becomes the folder's "backfillUid" field in the
// same transaction, so an interrupted backfill resumes after the last
// chunk that is durable and never records a message twice.
//
// A reconcile records, per folder whose server state differs from the
// log's, what was missed (appended, flags changed, expunged; the folder
// created, renamed, deleted or recreated) with the Window in which it
// must have happened, and for every folder checked the "verified" time and
// "highestModseq" it agreed at.
type Crawl struct {
	// Run identifies the crawl (backfill or reconcile run) that recorded
	// the event; one run records many events.
	Run string `json:"run"`
	// Messages are messages present on the server that the event brings
	// into the log, with their whole state: a backfill's chunk, or what a
	// reconcile found appended.
	Messages []MessageState `json:"messages,omitempty"`
	// Flags are known messages whose flags differ from the log's: their
	// full flag set on the server (the owner's view, \Seen included).
	Flags []MessageState `json:"flags,omitempty"`
	// Expunged are the UIDs the log holds as present and the server no
	// longer has: under the event's UIDVALIDITY, or under OldUIDValidity
	// for a recreated folder (all of the old ones).
	Expunged []uint32 `json:"expunged,omitempty"`
	// LastUID (backfill) is the highest UID this chunk covers: every
	// message of the folder up to it is now in the log. Done says the
	// folder was walked to the UIDNEXT it had when the walk began.
	LastUID uint32 `json:"lastUid,omitempty"`
	Done    bool   `json:"done,omitempty"`
	// Folder (reconcile) says what happened to the folder itself, one of
	// the Folder* values; OldPath and OldUIDValidity what it was. ACL says
	// its ACL (the event's vnd.cmu.mailboxACL) differed from the log's.
	Folder         string `json:"folder,omitempty"`
	OldPath        string `json:"oldPath,omitempty"`
	OldUIDValidity uint32 `json:"oldUidValidity,omitempty"`
	ACL            bool   `json:"acl,omitempty"`
	// Window (reconcile) is when what the event records must have
	// happened.
	Window *Window `json:"window,omitempty"`
	// Verified (reconcile) lists the folders a reconcile found in
	// agreement with the log. Such an event names no folder of its own
	// (no mailboxID): one event marks every folder of a run.
	Verified []VerifiedFolder `json:"verified,omitempty"`
}

// VerifiedFolder is a folder a reconcile found in agreement with the log,
// and its HIGHESTMODSEQ then.
type VerifiedFolder struct {
	MailboxID string `json:"mailboxID"`
	Modseq    uint64 `json:"modseq,omitempty"`
}

// MessageState is one message as a crawl saw it.
type MessageState struct {
	UID          uint32    `json:"uid"`
	MessageID    string    `json:"messageId,omitempty"`
	Flags        []string  `json:"flags"`
	InternalDate time.Time `json:"internalDate,omitzero"`
	Size         int64     `json:"size,omitempty"`
	// Digest is the SHA-256 of the body, durable in the body store before
	// the event was recorded; Error says why the body could not be had.
	Digest string `json:"sha256,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Window is the period in which a change found by a reconcile must have
// happened. Basis says how it was bounded: "down" (the daemon was not
// listening: From is a DaemonStart's downSince, To its start), or
// "unverified" (From is when the folder was last verified or first
// known, To the reconcile: the notification was lost while listening, or
// the folder was never checked before).
type Window struct {
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Basis string    `json:"basis"`
}

// Window bases.
const (
	WindowDown       = "down"
	WindowUnverified = "unverified"
)

// Crawl returns what a Backfill or Reconcile event found.
func (e *Event) Crawl() (*Crawl, error) {
	if e.Type != Backfill && e.Type != Reconcile {
		return nil, fmt.Errorf("bonnie: %s is not a Backfill or Reconcile event", e.Type)
	}
	raw, ok := e.Extra[CrawlMember]
	if !ok {
		return nil, errors.New("bonnie: " + e.Type.String() + " without " + CrawlMember)
	}
	c := new(Crawl)
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("bonnie: %s: %w", e.Type, err)
	}
	return c, nil
}

// Folder fields that crawls maintain (beside path, owner, uidValidity and
// the ACL that every event keeps up to date).
const (
	// FieldBackfillUID is the highest UID a backfill recorded under the
	// folder's current UIDVALIDITY: the cursor a resumed backfill starts
	// after.
	FieldBackfillUID = "backfillUid"
	// FieldBackfilled is when a backfill finished walking the folder.
	FieldBackfilled = "backfilled"
	// FieldVerified is when a reconcile last found the log in agreement
	// with the server (after recording what it missed), and
	// FieldHighestModseq the folder's HIGHESTMODSEQ then: a later
	// reconcile that finds the same value skips the folder.
	FieldVerified      = "verified"
	FieldHighestModseq = "highestModseq"
)

// crawled applies a Backfill or Reconcile event: the folder, and the
// messages, flags and expunges it found, are set as if they had been seen
// live, at the event's time. An event whose Crawl cannot be read is kept
// in the log as it came and changes nothing.
func (a *apply) crawled() {
	ev := a.ev
	c, err := ev.Crawl()
	if err != nil {
		return
	}
	for _, v := range c.Verified {
		if ev.Type != Reconcile || v.MailboxID == "" {
			continue
		}
		f := a.folder(v.MailboxID)
		if !f.Exists() {
			continue
		}
		f.set(FieldVerified, formatTime(ev.Time))
		if v.Modseq != 0 {
			f.set(FieldHighestModseq, formatUint(v.Modseq))
		}
	}
	if ev.MailboxID == "" {
		return
	}
	f := a.folder(ev.MailboxID)
	if c.Folder == FolderDeleted {
		f.Delete()
		return
	}
	f.Create() // a crawl saw it: it exists, even if the log had it deleted
	if ev.Mailbox.Name != "" {
		f.SetPath(ev.Mailbox.Name)
		a.in.paths[ev.Mailbox.Name] = f.ID()
		f.SetOwner(ev.Mailbox.Owner)
	}
	uv := ev.Mailbox.UIDValidity
	if c.Folder == FolderRecreated || (uv != 0 && f.UIDValidity() != 0 && f.UIDValidity() != uv) {
		// A new UIDVALIDITY starts a new set of messages: the backfill
		// cursor of the old one means nothing any more.
		f.set(FieldBackfillUID, "")
	}
	if uv != 0 {
		f.SetUIDValidity(uv)
	}
	if ev.MailboxACL != nil {
		f.SetACL(ev.MailboxACL)
	}
	if c.OldUIDValidity != 0 && c.OldUIDValidity != uv {
		// The messages of the old UIDVALIDITY the crawler listed are gone.
		for _, uid := range c.Expunged {
			a.message(MessageKey(f.ID(), c.OldUIDValidity, uid)).Expunge()
		}
	} else {
		for _, uid := range c.Expunged {
			m := a.message(MessageKey(f.ID(), uv, uid))
			if m.Exists() {
				m.Expunge()
			}
		}
	}
	ev.Bodies = ev.Bodies[:0]
	for _, ms := range c.Messages {
		m := a.message(MessageKey(f.ID(), uv, ms.UID))
		m.Create()
		m.SetFolder(f.ID())
		m.SetUID(ms.UID)
		if ms.MessageID != "" {
			m.SetMessageID(ms.MessageID)
		}
		m.SetFlags(ms.Flags)
		if ms.Size > 0 {
			m.SetSize(ms.Size)
		}
		if !ms.InternalDate.IsZero() {
			m.SetInternalDate(ms.InternalDate)
		}
		if ms.Digest != "" {
			m.SetDigest(ms.Digest)
		}
		// Readers of Event.Bodies (the archive) find a crawl's bodies
		// where they find an append's.
		ev.Bodies = append(ev.Bodies, BodyRef{UID: ms.UID, Digest: ms.Digest, Size: ms.Size, InternalDate: ms.InternalDate, Error: ms.Error})
	}
	if len(ev.Bodies) == 0 {
		ev.Bodies = nil
	}
	for _, ms := range c.Flags {
		m := a.message(MessageKey(f.ID(), uv, ms.UID))
		if m.get("state") == "" {
			m.Create()
			m.SetFolder(f.ID())
			m.SetUID(ms.UID)
		}
		m.SetFlags(ms.Flags)
	}
	switch ev.Type {
	case Backfill:
		if c.LastUID > 0 && uint64(c.LastUID) > parseUint(f.get(FieldBackfillUID)) {
			f.set(FieldBackfillUID, formatUint(uint64(c.LastUID)))
		}
		if c.Done {
			f.set(FieldBackfilled, formatTime(ev.Time))
		}
	case Reconcile:
		f.set(FieldVerified, formatTime(ev.Time))
	}
	if ev.Modseq != 0 && (c.Done || ev.Type == Reconcile) {
		f.set(FieldHighestModseq, formatUint(ev.Modseq))
	}
}
