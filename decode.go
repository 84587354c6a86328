package bonnie

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/bonnie-archive/bonnie/internal/dlist"
)

// MaxNotificationSize is the largest notification Decode accepts, checked
// before any work. Cyrus's datagrams stop at 64 KiB; a dlist request can
// carry messageContent and so be larger, but not by orders of magnitude
// unless something is wrong. Larger input fails with ErrTooLarge.
const MaxNotificationSize = 1 << 20

// Sentinel errors wrapped by every *DecodeError, so that a source can decide
// with errors.Is what to do with input it could not decode (all of it is
// dead-lettered; the sentinel says why).
var (
	// ErrUnknownEvent is wrapped when a notification names an event type
	// Bonnie does not know. The notification is well-formed: Decode still
	// returns the event, so that it can be kept and replayed after an
	// upgrade.
	ErrUnknownEvent = errors.New("bonnie: unknown event type")
	// ErrUnknownClass is wrapped for a notification class other than
	// EVENT, MAIL and SIEVE; as with ErrUnknownEvent the event is returned.
	ErrUnknownClass = errors.New("bonnie: unknown notification class")
	// ErrMalformed is wrapped when the input is not a notification in any
	// framing, or a field does not have the syntax Cyrus gives it.
	ErrMalformed = errors.New("bonnie: malformed notification")
	// ErrTruncated is wrapped when the input ends inside a notification: a
	// datagram without its final NUL (a receive buffer too small), a dlist
	// request or bare JSON cut short.
	ErrTruncated = errors.New("bonnie: truncated notification")
	// ErrTooLarge is wrapped when the input exceeds MaxNotificationSize or
	// a uidset expands past MaxUIDs.
	ErrTooLarge = errors.New("bonnie: notification too large")
)

// DecodeError says where decoding failed: which framing, which field and at
// which byte of the raw input, so that a dead letter can be understood
// without re-running the decoder. Err wraps one of the sentinel errors (and
// the underlying cause, e.g. a *json.SyntaxError or a *dlist.Error).
type DecodeError struct {
	Framing Framing
	// Offset is the byte offset in the raw input where decoding went wrong,
	// -1 when not known.
	Offset int
	// Field names the notification or JSON field at fault, when there is one.
	Field string
	Err   error
}

// Error names the framing, field and offset before the cause, so that a
// dead letter's reason points at the byte to look at.
func (e *DecodeError) Error() string {
	var b strings.Builder
	b.WriteString("bonnie: decode")
	if e.Framing != "" {
		b.WriteString(" " + string(e.Framing))
	}
	if e.Field != "" {
		b.WriteString(" field " + strconv.Quote(e.Field))
	}
	if e.Offset >= 0 {
		b.WriteString(" at offset " + strconv.Itoa(e.Offset))
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "bonnie: "))
	}
	return b.String()
}

// Unwrap gives errors.Is and errors.As the sentinel and the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// decodeError builds a *DecodeError whose Err wraps kind, with a message.
func decodeError(f Framing, offset int, field string, kind error, format string, args ...any) *DecodeError {
	return &DecodeError{Framing: f, Offset: offset, Field: field,
		Err: fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))}
}

// causeError builds a *DecodeError whose Err wraps both kind and cause.
func causeError(f Framing, offset int, field string, kind, cause error) *DecodeError {
	return &DecodeError{Framing: f, Offset: offset, Field: field, Err: fmt.Errorf("%w: %w", kind, cause)}
}

// Decode decodes one notification in whichever framing it came: a dlist
// request (it starts with "NOTIFY "), bare JSON as an external notifier
// reads it (it starts with '{' after optional whitespace), or else a notify
// datagram. It is what a source calls with the bytes it received.
//
// The event's Raw is a copy of raw (the caller may reuse its buffer).
// Errors are *DecodeError. On error the event is nil, except for
// ErrUnknownEvent and ErrUnknownClass: the notification was well-formed, so
// the event comes back with everything that could be decoded (Raw, Framing,
// Class, Name...) for the caller to keep. Decode never panics.
func Decode(raw []byte) (*Event, error) {
	if len(raw) == 0 {
		return nil, decodeError("", 0, "", ErrMalformed, "empty notification")
	}
	if len(raw) > MaxNotificationSize {
		return nil, decodeError("", MaxNotificationSize, "", ErrTooLarge, "%d bytes, more than %d", len(raw), MaxNotificationSize)
	}
	switch {
	case bytes.HasPrefix(raw, []byte("NOTIFY ")):
		return decodeDList(bytes.Clone(raw))
	case jsonStart(raw):
		return decodeBareJSON(bytes.Clone(raw))
	case bytes.IndexByte(raw, 0) >= 0:
		return decodeDatagram(bytes.Clone(raw))
	}
	return nil, decodeError("", 0, "", ErrMalformed, "not a datagram, dlist request or JSON object")
}

// DecodeDatagram decodes a notification received as a datagram on
// Cyrus's notifysocket:
//
//	method NUL class NUL priority NUL user NUL mailbox NUL nopt NUL {option NUL}*nopt message NUL [fname NUL]
func DecodeDatagram(raw []byte) (*Event, error) {
	if err := checkSize(FramingDatagram, raw); err != nil {
		return nil, err
	}
	return decodeDatagram(bytes.Clone(raw))
}

// DecodeDList decodes one request of Cyrus's synchronous dlist notify
// stream, terminator included, as internal/dlist's Reader returns it.
func DecodeDList(raw []byte) (*Event, error) {
	if err := checkSize(FramingDList, raw); err != nil {
		return nil, err
	}
	return decodeDList(bytes.Clone(raw))
}

// DecodeJSON decodes a bare RFC 5423 JSON event, as Cyrus's external
// notifier passes it; surrounding whitespace is allowed. The class is EVENT
// and the notify-protocol fields (Method...) are empty.
func DecodeJSON(raw []byte) (*Event, error) {
	if err := checkSize(FramingJSON, raw); err != nil {
		return nil, err
	}
	return decodeBareJSON(bytes.Clone(raw))
}

func checkSize(f Framing, raw []byte) error {
	if len(raw) == 0 {
		return decodeError(f, 0, "", ErrMalformed, "empty notification")
	}
	if len(raw) > MaxNotificationSize {
		return decodeError(f, MaxNotificationSize, "", ErrTooLarge, "%d bytes, more than %d", len(raw), MaxNotificationSize)
	}
	return nil
}

// notification is what the datagram and dlist framings carry, before the
// message is interpreted: the parts Key hashes.
type notification struct {
	method, class, priority, user, mailbox string
	options                                []string
	message                                []byte
	msgOffset                              int // where message starts in raw
	fname                                  string
}

func decodeDatagram(raw []byte) (*Event, error) {
	n, err := splitDatagram(raw)
	if err != nil {
		return nil, err
	}
	return fromNotification(raw, FramingDatagram, n)
}

func decodeDList(raw []byte) (*Event, error) {
	n, err := splitDList(raw)
	if err != nil {
		return nil, err
	}
	return fromNotification(raw, FramingDList, n)
}

func decodeBareJSON(raw []byte) (*Event, error) {
	start, end := trimJSONSpace(raw)
	e := &Event{Raw: raw, Framing: FramingJSON, Class: ClassEvent}
	if err := e.decodeEventJSON(raw[start:end], start); err != nil {
		if errors.Is(err, ErrUnknownEvent) {
			return e, err
		}
		return nil, err
	}
	return e, nil
}

// splitDatagram splits a datagram into its NUL-terminated fields.
func splitDatagram(raw []byte) (notification, error) {
	const f = FramingDatagram
	var n notification
	if len(raw) == 0 {
		return n, decodeError(f, 0, "", ErrMalformed, "empty datagram")
	}
	if raw[len(raw)-1] != 0 {
		return n, decodeError(f, len(raw), "", ErrTruncated, "datagram does not end with NUL")
	}
	var fields [][]byte
	var offsets []int
	for start := 0; start < len(raw); {
		end := start + bytes.IndexByte(raw[start:], 0)
		fields = append(fields, raw[start:end])
		offsets = append(offsets, start)
		start = end + 1
	}
	names := [...]string{"method", "class", "priority", "user", "mailbox", "nopt"}
	if len(fields) < len(names)+1 {
		return n, decodeError(f, len(raw), names[min(len(fields), len(names)-1)], ErrMalformed,
			"%d fields, at least %d needed", len(fields), len(names)+1)
	}
	nopt, ok := parseCount(fields[5])
	if !ok {
		return n, decodeError(f, offsets[5], "nopt", ErrMalformed, "option count %q is not a number", fields[5])
	}
	if nopt > len(fields)-len(names)-1 {
		return n, decodeError(f, offsets[5], "nopt", ErrMalformed,
			"%d options announced, %d fields follow", nopt, len(fields)-len(names))
	}
	msg := len(names) + nopt
	switch extra := len(fields) - msg - 1; {
	case extra == 1:
		n.fname = string(fields[msg+1])
	case extra > 1:
		return n, decodeError(f, offsets[msg+2], "", ErrMalformed, "%d unexpected fields after the file name", extra-1)
	}
	n.method = string(fields[0])
	n.class = string(fields[1])
	n.priority = string(fields[2])
	n.user = string(fields[3])
	n.mailbox = string(fields[4])
	for _, o := range fields[len(names):msg] {
		n.options = append(n.options, string(o))
	}
	n.message = fields[msg]
	n.msgOffset = offsets[msg]
	return n, nil
}

// parseCount parses a decimal option count: digits only, as Cyrus writes it.
func parseCount(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// splitDList parses a dlist NOTIFY request into its fields.
func splitDList(raw []byte) (notification, error) {
	const f = FramingDList
	var n notification
	req, err := dlist.Parse(raw)
	if err != nil {
		off := -1
		var de *dlist.Error
		if errors.As(err, &de) {
			off = de.Offset
		}
		kind := ErrMalformed
		if errors.Is(err, io.ErrUnexpectedEOF) {
			kind = ErrTruncated
		}
		return n, causeError(f, off, "", kind, err)
	}
	if !strings.EqualFold(req.Name, "NOTIFY") {
		return n, decodeError(f, 0, "", ErrMalformed, "command %q, want NOTIFY", req.Name)
	}
	body := &req.Value
	if body.Kind != dlist.KVList {
		return n, decodeError(f, body.Offset, "", ErrMalformed, "NOTIFY argument is a %v, want a kvlist", body.Kind)
	}
	str := func(key string, required bool) (string, error) {
		v, ok := body.Get(key)
		switch {
		case !ok && required:
			return "", decodeError(f, body.Offset, key, ErrMalformed, "no %s", key)
		case !ok || v.Kind == dlist.Nil:
			return "", nil
		case !v.IsString():
			return "", decodeError(f, v.Offset, key, ErrMalformed, "%s is a %v, want a string", key, v.Kind)
		}
		return v.Text(), nil
	}
	if n.method, err = str("METHOD", false); err != nil {
		return n, err
	}
	if n.class, err = str("CLASS", true); err != nil {
		return n, err
	}
	if n.priority, err = str("PRIORITY", false); err != nil {
		return n, err
	}
	if n.user, err = str("USER", false); err != nil {
		return n, err
	}
	if n.mailbox, err = str("MAILBOX", false); err != nil {
		return n, err
	}
	if n.fname, err = str("FILEPATH", false); err != nil {
		return n, err
	}
	if opts, ok := body.Get("OPTIONS"); ok && opts.Kind != dlist.Nil {
		if opts.Kind != dlist.List {
			return n, decodeError(f, opts.Offset, "OPTIONS", ErrMalformed, "OPTIONS is a %v, want a list", opts.Kind)
		}
		for _, o := range opts.Items {
			if o.Kind != dlist.Nil && !o.IsString() {
				return n, decodeError(f, o.Offset, "OPTIONS", ErrMalformed, "option is a %v, want a string", o.Kind)
			}
			n.options = append(n.options, o.Text())
		}
	}
	msg, ok := body.Get("MESSAGE")
	switch {
	case !ok:
		return n, decodeError(f, body.Offset, "MESSAGE", ErrMalformed, "no MESSAGE")
	case msg.Kind == dlist.Nil:
		n.msgOffset = msg.Offset
	case msg.IsString():
		n.message, n.msgOffset = msg.Data, msg.DataOffset
	default:
		return n, decodeError(f, msg.Offset, "MESSAGE", ErrMalformed, "MESSAGE is a %v, want a string", msg.Kind)
	}
	return n, nil
}

// fromNotification builds the event of a datagram or dlist notification.
func fromNotification(raw []byte, framing Framing, n notification) (*Event, error) {
	e := &Event{
		Raw:           raw,
		Framing:       framing,
		Class:         canonicalClass(n.class),
		Method:        n.method,
		Priority:      n.priority,
		NotifyUser:    n.user,
		NotifyMailbox: n.mailbox,
		Options:       n.options,
		FilePath:      n.fname,
	}
	switch e.Class {
	case ClassEvent:
		if err := e.decodeEventJSON(n.message, n.msgOffset); err != nil {
			if errors.Is(err, ErrUnknownEvent) {
				return e, err
			}
			return nil, err
		}
	case ClassMail:
		e.Type = MailNotification
		e.Message = string(n.message)
	case ClassSieve:
		e.Type = SieveNotification
		e.Message = string(n.message)
	default:
		e.Message = string(n.message)
		return e, decodeError(framing, -1, "class", ErrUnknownClass, "class %q", n.class)
	}
	return e, nil
}

// canonicalClass spells a known class as Cyrus does, whatever its case.
func canonicalClass(s string) Class {
	for _, c := range [...]Class{ClassEvent, ClassMail, ClassSieve} {
		if strings.EqualFold(s, string(c)) {
			return c
		}
	}
	return Class(s)
}

// jsonStart reports whether raw is a JSON object after optional whitespace.
func jsonStart(raw []byte) bool {
	start, end := trimJSONSpace(raw)
	return start < end && raw[start] == '{'
}

// trimJSONSpace returns the bounds of raw without surrounding JSON
// whitespace (not bytes.TrimSpace, which also drops Unicode spaces).
func trimJSONSpace(raw []byte) (start, end int) {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	end = len(raw)
	for start < end && isSpace(raw[start]) {
		start++
	}
	for end > start && isSpace(raw[end-1]) {
		end--
	}
	return start, end
}

// notifyParts returns the framing-independent parts of the notification,
// read back from Raw: the same notification gives the same parts whether it
// came as a datagram, a dlist request or bare JSON, and whatever a JSON
// round trip of the Event did to its string fields. An event without a
// decodable Raw (built in code) falls back to its fields.
func (e *Event) notifyParts() notification {
	switch e.Framing {
	case FramingDatagram:
		if n, err := splitDatagram(e.Raw); err == nil {
			return n
		}
	case FramingDList:
		if n, err := splitDList(e.Raw); err == nil {
			return n
		}
	case FramingJSON:
		if len(e.Raw) > 0 {
			start, end := trimJSONSpace(e.Raw)
			return notification{class: string(ClassEvent), message: e.Raw[start:end], msgOffset: start}
		}
	}
	return notification{
		method:   e.Method,
		class:    string(e.Class),
		priority: e.Priority,
		user:     e.NotifyUser,
		mailbox:  e.NotifyMailbox,
		options:  e.Options,
		message:  []byte(e.Message),
		fname:    e.FilePath,
	}
}

// payload returns the notification's message part re-extracted from Raw:
// the JSON bytes for class EVENT, the text for MAIL and SIEVE.
func (e *Event) payload() []byte { return e.notifyParts().message }
