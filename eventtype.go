package bonnie

import (
	"fmt"
	"math/bits"
	"strings"
)

// EventType names what happened. The RFC 5423 types carry exactly the bit
// values of the enum that Cyrus (imap/mboxevent.h) and Kolab use, so a mask
// written for either reads the same here. Vendor types live above bit 31 so
// that the RFC range can grow without renumbering them.
type EventType uint64

// RFC 5423 event types, with the bit values Cyrus uses.
const (
	Cancelled          EventType = 0
	MessageAppend      EventType = 1 << 0
	MessageExpire      EventType = 1 << 1
	MessageExpunge     EventType = 1 << 2
	MessageNew         EventType = 1 << 3
	MessageCopy        EventType = 1 << 4 // Cyrus: vnd.cmu.MessageCopy
	MessageMove        EventType = 1 << 5 // Cyrus: vnd.cmu.MessageMove
	QuotaExceed        EventType = 1 << 6
	QuotaWithin        EventType = 1 << 7
	QuotaChange        EventType = 1 << 8
	MessageRead        EventType = 1 << 9
	MessageTrash       EventType = 1 << 10
	FlagsSet           EventType = 1 << 11
	FlagsClear         EventType = 1 << 12
	Login              EventType = 1 << 13
	Logout             EventType = 1 << 14
	MailboxCreate      EventType = 1 << 15
	MailboxDelete      EventType = 1 << 16
	MailboxRename      EventType = 1 << 17
	MailboxSubscribe   EventType = 1 << 18
	MailboxUnsubscribe EventType = 1 << 19
	AclChange          EventType = 1 << 20
)

// Vendor and Bonnie event types.
const (
	// MailboxModseq is Cyrus's vendor event, sent once per index commit
	// with an empty user. It is kept in the log but changes no entity.
	MailboxModseq EventType = 1 << 32
	// MailNotification is a class MAIL notification (lmtpd's
	// mailnotifier): From/Subject/To lines of a delivered message.
	MailNotification EventType = 1 << 33
	// SieveNotification is a class SIEVE notification (a Sieve "notify"
	// action).
	SieveNotification EventType = 1 << 34
	// CalendarAlarm, ApplePushService and ApplePushServiceDAV are Cyrus
	// 3.x vendor events (imap/mboxevent.c) for calendar alarms and push
	// registration; kept in the log, they change no entity.
	CalendarAlarm       EventType = 1 << 35
	ApplePushService    EventType = 1 << 36
	ApplePushServiceDAV EventType = 1 << 37

	// DaemonStart and DaemonStop are Bonnie's own events: a daemon records
	// when it starts and stops, so the log says when nobody was listening
	// (Cyrus drops notifications then) and whether the stop was clean.
	DaemonStart EventType = 1 << 48
	DaemonStop  EventType = 1 << 49
	// IdentityResolved is Bonnie's own event that fills in, after the
	// fact, the identities an earlier event was stored without (the
	// directory was unreachable at ingest): see Engine.ResolvePending and
	// Event.Resolution. The log stays append-only: the earlier event is
	// not rewritten.
	IdentityResolved EventType = 1 << 50

	// The rest of Bonnie's own events record what people and Bonnie's own
	// tasks did to the record, so that who did it and when is evidence in
	// the same chain as the mail events. None comes from Cyrus; only
	// Engine.Record appends them (see OwnEvents).

	// RetentionPolicy sets or removes a retention policy of the archive.
	RetentionPolicy EventType = 1 << 51
	// LegalHold places or releases a legal hold.
	LegalHold EventType = 1 << 52
	// Erasure records that bodies were made unreadable (GDPR) by
	// destroying their data keys.
	Erasure EventType = 1 << 53
	// Purge records what an archive purge removed after its retention
	// expired.
	Purge EventType = 1 << 54
	// Interception authorises, changes or ends a live interception.
	Interception EventType = 1 << 55
	// InterceptDelivery records what an interception handed over.
	InterceptDelivery EventType = 1 << 56
	// Query records a discovery query: who asked what, and when.
	Query EventType = 1 << 57
	// Backfill records state found by crawling a server (mail that was
	// there before Bonnie listened), not notified live.
	Backfill EventType = 1 << 58
	// Reconcile records a change found by comparing the log with the
	// server, with the window in which it must have happened.
	Reconcile EventType = 1 << 59
)

// OwnEvents are the types only Bonnie itself appends (Engine.Record and
// the engine's own tasks). A source that delivers one is refused: from
// outside, such an event would be false evidence.
const OwnEvents = EventMask(DaemonStart | DaemonStop | IdentityResolved |
	RetentionPolicy | LegalHold | Erasure | Purge | Interception |
	InterceptDelivery | Query | Backfill | Reconcile)

// eventNames is the canonical (RFC) spelling of each type, the one String
// returns and the one the log stores.
var eventNames = map[EventType]string{
	Cancelled:           "Cancelled",
	MessageAppend:       "MessageAppend",
	MessageExpire:       "MessageExpire",
	MessageExpunge:      "MessageExpunge",
	MessageNew:          "MessageNew",
	MessageCopy:         "MessageCopy",
	MessageMove:         "MessageMove",
	QuotaExceed:         "QuotaExceed",
	QuotaWithin:         "QuotaWithin",
	QuotaChange:         "QuotaChange",
	MessageRead:         "MessageRead",
	MessageTrash:        "MessageTrash",
	FlagsSet:            "FlagsSet",
	FlagsClear:          "FlagsClear",
	Login:               "Login",
	Logout:              "Logout",
	MailboxCreate:       "MailboxCreate",
	MailboxDelete:       "MailboxDelete",
	MailboxRename:       "MailboxRename",
	MailboxSubscribe:    "MailboxSubscribe",
	MailboxUnsubscribe:  "MailboxUnsubscribe",
	AclChange:           "AclChange",
	MailboxModseq:       "MailboxModseq",
	MailNotification:    "MailNotification",
	SieveNotification:   "SieveNotification",
	CalendarAlarm:       "CalendarAlarm",
	ApplePushService:    "ApplePushService",
	ApplePushServiceDAV: "ApplePushServiceDAV",
	DaemonStart:         "vnd.bonnie.DaemonStart",
	DaemonStop:          "vnd.bonnie.DaemonStop",
	IdentityResolved:    "vnd.bonnie.IdentityResolved",
	RetentionPolicy:     "vnd.bonnie.RetentionPolicy",
	LegalHold:           "vnd.bonnie.LegalHold",
	Erasure:             "vnd.bonnie.Erasure",
	Purge:               "vnd.bonnie.Purge",
	Interception:        "vnd.bonnie.Interception",
	InterceptDelivery:   "vnd.bonnie.InterceptDelivery",
	Query:               "vnd.bonnie.Query",
	Backfill:            "vnd.bonnie.Backfill",
	Reconcile:           "vnd.bonnie.Reconcile",
}

// eventAliases maps every spelling seen on the wire, lower-cased, to its
// type: the canonical names above, and the spellings below.
//
// Cyrus's own names, from the event-name switch of imap/mboxevent.c
// (identical from the first 2.5 code by Sébastien Michel through 3.x):
// "vnd.cmu.MessageCopy", "vnd.cmu.MessageMove" and "MailboxUnSubscribe"
// (capital S, as in RFC 5423); every other RFC and vendor name is spelt as
// in eventNames. Kolab's consumers normalised the vnd.cmu names to
// "MessageCopy"/"MessageMove" (egara_incoming_cyrus_imap.erl's
// EventMappings), which are the canonical names here already.
var eventAliases = func() map[string]EventType {
	m := make(map[string]EventType, 2*len(eventNames))
	for t, n := range eventNames {
		m[strings.ToLower(n)] = t
	}
	for alias, t := range map[string]EventType{
		// imap/mboxevent.c, Cyrus 2.5 and 3.x; seen in capture 038/040.
		"vnd.cmu.MessageCopy": MessageCopy,
		"vnd.cmu.MessageMove": MessageMove,
		// imap/mboxevent.c, Cyrus 2.5 and 3.x; seen in capture 010.
		"MailboxUnSubscribe": MailboxUnsubscribe,
		// Kolab's Bonnie worker registers its quota handler under this name
		// (kolab-groupware/bonnie, bonnie/worker/handlers/quotaexceeded.py).
		"QuotaExceeded": QuotaExceed,
	} {
		m[strings.ToLower(alias)] = t
	}
	return m
}()

// ParseEventType returns the type named by s in any spelling Cyrus or Kolab
// has used (case-insensitive). The second result is false for a name it does
// not know.
func ParseEventType(s string) (EventType, bool) {
	t, ok := eventAliases[strings.ToLower(strings.TrimSpace(s))]
	return t, ok
}

// String returns the RFC 5423 name of t (or Bonnie's name for a vendor type).
func (t EventType) String() string {
	if n, ok := eventNames[t]; ok {
		return n
	}
	return fmt.Sprintf("EventType(%#x)", uint64(t))
}

// MarshalText writes the canonical name, so JSON shows "FlagsSet", not a number.
func (t EventType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText accepts any known spelling.
func (t *EventType) UnmarshalText(b []byte) error {
	v, ok := ParseEventType(string(b))
	if !ok {
		return fmt.Errorf("bonnie: unknown event type %q: %w", b, ErrUnknownEvent)
	}
	*t = v
	return nil
}

// EventMask is a set of event types, built with Mask; a sink says with it
// which events it wants.
type EventMask uint64

// AllEvents matches every type, Cancelled included.
const AllEvents = ^EventMask(0)

// Mask returns the set of the given types.
func Mask(types ...EventType) EventMask {
	var m EventMask
	for _, t := range types {
		m |= EventMask(t)
	}
	return m
}

// Has reports whether t is in the set. Cancelled (0) is only in AllEvents.
func (m EventMask) Has(t EventType) bool {
	if t == Cancelled {
		return m == AllEvents
	}
	return uint64(m)&uint64(t) == uint64(t)
}

// Types lists the set's members in bit order.
func (m EventMask) Types() []EventType {
	var out []EventType
	for v := uint64(m); v != 0; v &= v - 1 {
		out = append(out, EventType(uint64(1)<<bits.TrailingZeros64(v)))
	}
	return out
}

// String lists the members, "|"-separated.
func (m EventMask) String() string {
	if m == AllEvents {
		return "all"
	}
	names := make([]string, 0, bits.OnesCount64(uint64(m)))
	for _, t := range m.Types() {
		names = append(names, t.String())
	}
	return strings.Join(names, "|")
}

// ParseEventMask reads a comma- or "|"-separated list of type names, or
// "all".
func ParseEventMask(s string) (EventMask, error) {
	if strings.EqualFold(strings.TrimSpace(s), "all") {
		return AllEvents, nil
	}
	var m EventMask
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '|' || r == ' ' }) {
		t, ok := ParseEventType(f)
		if !ok {
			return 0, fmt.Errorf("bonnie: unknown event type %q in mask: %w", f, ErrUnknownEvent)
		}
		m |= EventMask(t)
	}
	return m, nil
}
