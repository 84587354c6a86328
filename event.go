package bonnie

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Class is the notification class of Cyrus's notify protocol.
type Class string

// The classes Cyrus sends.
const (
	ClassEvent Class = "EVENT" // RFC 5423 event, JSON message
	ClassMail  Class = "MAIL"  // lmtpd mailnotifier: From/Subject/To lines
	ClassSieve Class = "SIEVE" // Sieve notify action
)

// Framing says how a notification reached us.
type Framing string

// The three framings Cyrus uses.
const (
	FramingDatagram Framing = "datagram" // notifysocket: PATH (AF_UNIX SOCK_DGRAM)
	FramingDList    Framing = "dlist"    // notifysocket: dlist:PATH (synchronous stream)
	FramingJSON     Framing = "json"     // bare JSON, as an external notifier reads it on stdin
)

// MailboxURL is the RFC 5092 IMAP URL Cyrus puts in "uri", parsed (see
// ParseMailboxURL). Name is the mailbox name in Cyrus's admin namespace
// with percent-encoding undone ("user.alice.Bücher"); Owner is the user
// whose personal hierarchy holds it ("alice", or "alice@example.org" with
// virtual domains), empty for shared folders. User is the URL's userinfo:
// Cyrus 2.5 wrote user-relative URLs ("imap://alice@host/INBOX"), Cyrus 3
// writes none.
type MailboxURL struct {
	Server      string `json:"server,omitempty"`
	Name        string `json:"name,omitempty"`
	Owner       string `json:"owner,omitempty"`
	User        string `json:"user,omitempty"`
	UIDValidity uint32 `json:"uidValidity,omitempty"`
	UID         uint32 `json:"uid,omitempty"`
}

// ACLEntry is one identifier and its rights, as Cyrus lists them in
// vnd.cmu.mailboxACL ("alice\tlrswipkxtecdan\t").
type ACLEntry struct {
	Subject string `json:"subject"`
	Rights  string `json:"rights"`
}

// ACL is a mailbox's access control list in the order Cyrus gave it.
type ACL []ACLEntry

// Event is one notification, decoded. Every field Cyrus 3.6 sends has a typed
// home here; fields the decoder does not know are kept in Extra, and Raw holds
// the notification bytes exactly as received so that a parser fix can be
// replayed over history.
type Event struct {
	Type EventType `json:"type"`
	// Name is the event name exactly as sent ("vnd.cmu.MessageCopy").
	Name    string  `json:"name,omitempty"`
	Class   Class   `json:"class"`
	Framing Framing `json:"framing"`

	// Time is the event's timestamp in UTC; Timestamp is the string the
	// source sent (server local time with offset), kept as evidence.
	Time      time.Time `json:"time"`
	Timestamp string    `json:"timestamp,omitempty"`

	Service string `json:"service,omitempty"`
	// User is the acting user ("cyrus" when an admin acts, "" on
	// MailboxModseq), with the Kolab/Cyrus 2.5 form "john/doe@example.org"
	// turned back into "john.doe@example.org" (Raw keeps what was sent).
	User      string `json:"user,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
	PID       int    `json:"pid,omitempty"`

	ClientIP     string `json:"clientIP,omitempty"`
	ClientPort   int    `json:"clientPort,omitempty"`
	ServerDomain string `json:"serverDomain,omitempty"`
	ServerPort   int    `json:"serverPort,omitempty"`
	Server       string `json:"serverFQDN,omitempty"`

	URI         string      `json:"uri,omitempty"`
	Mailbox     MailboxURL  `json:"mailbox"`
	MailboxID   string      `json:"mailboxID,omitempty"`     // the folder's persistent uniqueid
	OldURI      string      `json:"oldMailboxURI,omitempty"` // oldMailboxID as sent: an IMAP URL
	OldMailbox  *MailboxURL `json:"oldMailbox,omitempty"`
	MailboxType string      `json:"mailboxType,omitempty"` // vnd.cmu.mbtype

	UIDs    []uint32 `json:"uids,omitempty"`    // uidset expanded (or the URL's UID)
	OldUIDs []uint32 `json:"oldUids,omitempty"` // vnd.cmu.oldUidset expanded (or oldMailboxID's UID)
	// MessageIDs is vnd.cmu.midset, with "" where Cyrus wrote "NIL" (a
	// message without a Message-ID). Cyrus adds each Message-ID once
	// (strarray_add), in UID order, so MessageIDs[i] belongs to UIDs[i]
	// only when both have the same length; duplicates (two messages with
	// the same Message-ID, or two without one) shorten the list.
	MessageIDs []string `json:"messageIds,omitempty"`
	Flags      []string `json:"flags,omitempty"` // system flags case-normalised

	// ACLSubject is normalised like User (and so are MailboxACL's
	// identifiers).
	ACLSubject string `json:"aclSubject,omitempty"`
	ACLRights  string `json:"aclRights,omitempty"`
	// ACLRemoved is true for an AclChange without aclRights (DELETEACL).
	ACLRemoved bool `json:"aclRemoved,omitempty"`
	MailboxACL ACL  `json:"mailboxACL,omitempty"`

	DiskQuota   *int64 `json:"diskQuota,omitempty"`
	DiskUsed    *int64 `json:"diskUsed,omitempty"`
	MaxMessages *int64 `json:"maxMessages,omitempty"` // -1: unlimited
	Messages    *int64 `json:"messages,omitempty"`
	Unseen      *int64 `json:"unseenMessages,omitempty"`

	Modseq  uint64 `json:"modseq,omitempty"`
	UIDNext uint32 `json:"uidnext,omitempty"`
	Size    int64  `json:"messageSize,omitempty"`

	Envelope       string          `json:"envelope,omitempty"`      // vnd.cmu.envelope, IMAP syntax as sent
	BodyStructure  string          `json:"bodyStructure,omitempty"` // IMAP syntax as sent
	MessageContent []byte          `json:"messageContent,omitempty"`
	EmailID        string          `json:"emailId,omitempty"`
	ThreadID       string          `json:"threadId,omitempty"`
	ConversationID string          `json:"cid,omitempty"`
	ClientID       string          `json:"clientId,omitempty"`
	JMAPEmail      json.RawMessage `json:"jmapEmail,omitempty"`

	// Extra holds the JSON fields the decoder does not know, as sent.
	Extra map[string]json.RawMessage `json:"extra,omitempty"`

	// The notify protocol's own fields (datagram and dlist framings).
	Method        string   `json:"method,omitempty"`
	Priority      string   `json:"priority,omitempty"`
	NotifyUser    string   `json:"notifyUser,omitempty"`
	NotifyMailbox string   `json:"notifyMailbox,omitempty"`
	Options       []string `json:"options,omitempty"`
	// Message is the notification's message text for classes MAIL and
	// SIEVE (for EVENT it is the JSON, already decoded above).
	Message  string `json:"message,omitempty"`
	FilePath string `json:"filePath,omitempty"`

	// Identities are the persistent identities behind the event's names
	// (actor, mailbox owner, ACL subjects), resolved at ingest by the
	// engine's Resolver; nil without one. They are stored and hashed with
	// the event; Key does not depend on them.
	Identities *Identities `json:"identities,omitempty"`

	// Bodies describe the bodies of the messages a MessageAppend or
	// MessageNew added, one per UID, fetched at ingest (Options.Bodies)
	// and stored in the body store under their SHA-256. Stored and hashed
	// with the event; Key does not depend on them.
	Bodies []BodyRef `json:"bodies,omitempty"`

	// Raw is the notification exactly as received, framing included.
	Raw []byte `json:"raw"`
}

// Key is the event's deterministic identity: the SHA-256 of the parts of
// the notification that do not depend on how it travelled, so that the same
// notification redelivered, relayed, or read once as a datagram, once from
// the dlist stream and once as bare JSON yields the same key and the log
// stores it once.
//
// The parts are read back from Raw (see notifyParts): class, priority,
// notify user and mailbox, options, message (the JSON for class EVENT, as
// sent) and file path. The method is left out: it is the server's
// event_notifier setting, absent from bare JSON, and says nothing about
// what happened. Each part is length-prefixed so that no two different
// notifications hash the same bytes.
func (e *Event) Key() string {
	n := e.notifyParts()
	h := sha256.New()
	var size [8]byte
	part := func(b []byte) {
		binary.BigEndian.PutUint64(size[:], uint64(len(b)))
		h.Write(size[:])
		h.Write(b)
	}
	part([]byte(canonicalClass(n.class)))
	part([]byte(n.priority))
	part([]byte(n.user))
	part([]byte(n.mailbox))
	binary.BigEndian.PutUint64(size[:], uint64(len(n.options)))
	h.Write(size[:])
	for _, o := range n.options {
		part([]byte(o))
	}
	part(n.message)
	part([]byte(n.fname))
	return hex.EncodeToString(h.Sum(nil))
}
