package bonnie

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// jsonDecoder holds what decoding one RFC 5423 JSON message needs beyond
// the Event itself.
type jsonDecoder struct {
	e               *Event
	base            int // offset of the message in Raw
	sawEvent        bool
	eventOffset     int
	hasRights       bool
	fastmailSession json.RawMessage
}

// decodeEventJSON fills e from an RFC 5423 JSON message that starts at
// offset base of e.Raw. Every member lands in a typed field or, when the
// decoder does not know it, in Extra: nothing is dropped.
func (e *Event) decodeEventJSON(msg []byte, base int) error {
	d := jsonDecoder{e: e, base: base}
	if err := d.members(msg); err != nil {
		return err
	}
	return d.finish()
}

func (d *jsonDecoder) fail(offset int, field string, kind error, format string, args ...any) error {
	return decodeError(d.e.Framing, d.base+offset, field, kind, format, args...)
}

// syntaxError maps an encoding/json error to a *DecodeError.
func (d *jsonDecoder) syntaxError(dec *json.Decoder, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return causeError(d.e.Framing, d.base+int(se.Offset), "", ErrMalformed, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// Inside a datagram or dlist request the envelope is complete, so
		// JSON that ends early is malformed; bare JSON was cut short.
		kind := ErrMalformed
		if d.e.Framing == FramingJSON {
			kind = ErrTruncated
		}
		return decodeError(d.e.Framing, d.base+int(dec.InputOffset()), "", kind, "JSON message ends early")
	}
	return causeError(d.e.Framing, d.base+int(dec.InputOffset()), "", ErrMalformed, err)
}

// members walks the top-level object member by member, keeping offsets for
// errors and handing each value to set.
func (d *jsonDecoder) members(msg []byte) error {
	var buf [48]member
	if ms, ok := scanMembers(msg, buf[:0]); ok {
		for _, m := range ms {
			if err := d.set(m.key, m.raw, m.offset); err != nil {
				return err
			}
		}
		return nil
	}
	return d.membersSlow(msg, d.set)
}

// member is one member of the top-level object: its key, its value's
// bytes and where they start.
type member struct {
	key    string
	raw    json.RawMessage
	offset int
}

// scanMembers splits a well-formed JSON object into its members, as
// membersSlow's json.Decoder does, without its cost (the Decoder finds the
// end of each value through a formatted error: a third of decoding a
// notification). On anything unusual (an escaped key, malformed JSON,
// data after the object) it returns false and membersSlow decodes the
// message and reports the error with its offset.
func scanMembers(msg []byte, out []member) ([]member, bool) {
	i := skipSpace(msg, 0)
	if i >= len(msg) || msg[i] != '{' {
		return nil, false
	}
	i = skipSpace(msg, i+1)
	if i < len(msg) && msg[i] == '}' {
		return out, skipSpace(msg, i+1) == len(msg)
	}
	for {
		if i >= len(msg) || msg[i] != '"' {
			return nil, false
		}
		end := plainStringEnd(msg, i)
		if end < 0 {
			return nil, false
		}
		key := string(msg[i+1 : end-1])
		i = skipSpace(msg, end)
		if i >= len(msg) || msg[i] != ':' {
			return nil, false
		}
		start := skipSpace(msg, i+1)
		vend := valueEnd(msg, start)
		if vend < 0 || !json.Valid(msg[start:vend]) {
			return nil, false
		}
		out = append(out, member{key: key, raw: msg[start:vend:vend], offset: start})
		i = skipSpace(msg, vend)
		if i >= len(msg) {
			return nil, false
		}
		switch msg[i] {
		case ',':
			i = skipSpace(msg, i+1)
		case '}':
			return out, skipSpace(msg, i+1) == len(msg)
		default:
			return nil, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// plainStringEnd returns the index after the closing quote of the string
// at b[i], or -1 if it has an escape, a control character or invalid
// UTF-8, or does not end.
func plainStringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			if !utf8.Valid(b[i+1 : j]) {
				return -1
			}
			return j + 1
		case c == '\\' || c < 0x20:
			return -1
		}
	}
	return -1
}

// valueEnd returns the index after the JSON value that starts at b[i]
// (not checked: the caller runs json.Valid on it), or -1 if it does not
// end.
func valueEnd(b []byte, i int) int {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			for j++; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
			}
			if j >= len(b) {
				return -1
			}
			if depth == 0 {
				return j + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j // the end of a scalar before the object's brace
			}
			depth--
			if depth == 0 {
				return j + 1
			}
		case ',', ' ', '\t', '\r', '\n':
			if depth == 0 {
				return j
			}
		}
	}
	if depth == 0 && len(b) > i {
		return len(b)
	}
	return -1
}

// membersSlow is members with encoding/json's Decoder (exact errors),
// handing each member to set.
func (d *jsonDecoder) membersSlow(msg []byte, set func(key string, raw json.RawMessage, offset int) error) error {
	if len(msg) == 0 {
		return d.fail(0, "", ErrMalformed, "empty message, want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(msg))
	tok, err := dec.Token()
	if err != nil {
		return d.syntaxError(dec, err)
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '{' {
		return d.fail(0, "", ErrMalformed, "message is not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return d.syntaxError(dec, err)
		}
		key, ok := tok.(string)
		if !ok {
			return d.fail(int(dec.InputOffset()), "", ErrMalformed, "object key is not a string")
		}
		offset := int(dec.InputOffset())
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return d.syntaxError(dec, err)
		}
		// InputOffset is now past the value; point at its start instead.
		offset = valueStart(msg, offset)
		if err := set(key, raw, offset); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return d.syntaxError(dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return d.fail(int(dec.InputOffset()), "", ErrMalformed, "data after the JSON object")
	}
	return nil
}

// valueStart skips the colon and whitespace after a key.
func valueStart(msg []byte, i int) int {
	for i < len(msg) && (msg[i] == ':' || msg[i] == ' ' || msg[i] == '\t' || msg[i] == '\r' || msg[i] == '\n') {
		i++
	}
	return i
}

// set stores one member. JSON null counts as absent for every known field.
func (d *jsonDecoder) set(key string, raw json.RawMessage, offset int) error {
	e := d.e
	if isNull(raw) && key != "event" {
		if _, known := stringFields[key]; known || knownFields[key] {
			return nil
		}
	}
	wrap := func(err error) error {
		if err == nil {
			return nil
		}
		kind := ErrMalformed
		if errors.Is(err, ErrTooLarge) {
			kind = ErrTooLarge
		}
		return causeError(e.Framing, d.base+offset, key, kind, err)
	}
	if dst, ok := stringFields[key]; ok {
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		*dst(e) = s
		return nil
	}
	switch key {
	case "event":
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		e.Name, d.sawEvent, d.eventOffset = s, true, offset
	case "timestamp":
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		t, err := parseTimestamp(s)
		if err != nil {
			return wrap(err)
		}
		e.Timestamp, e.Time = s, t
	case "user", "aclSubject":
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		if key == "user" {
			e.User = normalizeSubject(s)
		} else {
			e.ACLSubject = normalizeSubject(s)
		}
	case "aclRights":
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		e.ACLRights, d.hasRights = s, true
	case "vnd.fastmail.sessionId":
		if _, err := jsonString(raw); err != nil {
			return wrap(err)
		}
		d.fastmailSession = raw
	case "uri":
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		u, err := ParseMailboxURL(s)
		if err != nil {
			return wrap(err)
		}
		e.URI, e.Mailbox = s, u
	case "oldMailboxID":
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		e.OldURI, e.OldMailbox = s, nil
		if len(s) >= 7 && strings.EqualFold(s[:7], "imap://") {
			u, err := ParseMailboxURL(s)
			if err != nil {
				return wrap(err)
			}
			e.OldMailbox = &u
		}
	case "uidset":
		uids, err := jsonUIDs(raw)
		if err != nil {
			return wrap(err)
		}
		e.UIDs = uids
	case "vnd.cmu.oldUidset":
		uids, err := jsonUIDs(raw)
		if err != nil {
			return wrap(err)
		}
		e.OldUIDs = uids
	case "vnd.cmu.midset":
		ids, err := jsonMessageIDs(raw)
		if err != nil {
			return wrap(err)
		}
		e.MessageIDs = ids
	case "flagNames":
		flags, err := jsonFlags(raw)
		if err != nil {
			return wrap(err)
		}
		e.Flags = flags
	case "vnd.cmu.mailboxACL":
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		acl, err := ParseMailboxACL(s)
		if err != nil {
			return wrap(err)
		}
		e.MailboxACL = acl
	case "diskQuota", "diskUsed", "maxMessages", "messages", "vnd.cmu.unseenMessages":
		n, err := jsonInt(raw, 64)
		if err != nil {
			return wrap(err)
		}
		p := &n
		switch key {
		case "diskQuota":
			e.DiskQuota = p
		case "diskUsed":
			e.DiskUsed = p
		case "maxMessages":
			e.MaxMessages = p
		case "messages":
			e.Messages = p
		default:
			e.Unseen = p
		}
	case "pid", "clientPort", "serverPort":
		n, err := jsonInt(raw, 32)
		if err != nil {
			return wrap(err)
		}
		switch key {
		case "pid":
			e.PID = int(n)
		case "clientPort":
			e.ClientPort = int(n)
		default:
			e.ServerPort = int(n)
		}
	case "messageSize":
		n, err := jsonInt(raw, 64)
		if err != nil {
			return wrap(err)
		}
		e.Size = n
	case "modseq":
		n, err := jsonUint(raw, 64)
		if err != nil {
			return wrap(err)
		}
		e.Modseq = n
	case "uidnext":
		n, err := jsonUint(raw, 32)
		if err != nil {
			return wrap(err)
		}
		e.UIDNext = uint32(n)
	case "messageContent":
		s, err := jsonString(raw)
		if err != nil {
			return wrap(err)
		}
		e.MessageContent = []byte(s)
	case "vnd.fastmail.jmapEmail":
		e.JMAPEmail = raw
	default:
		if e.Extra == nil {
			e.Extra = make(map[string]json.RawMessage)
		}
		e.Extra[key] = raw
	}
	return nil
}

// stringFields are the members copied verbatim into a string field.
var stringFields = map[string]func(*Event) *string{
	"service":               func(e *Event) *string { return &e.Service },
	"vnd.cmu.sessionId":     func(e *Event) *string { return &e.SessionID },
	"clientIP":              func(e *Event) *string { return &e.ClientIP },
	"serverDomain":          func(e *Event) *string { return &e.ServerDomain },
	"serverFQDN":            func(e *Event) *string { return &e.Server },
	"mailboxID":             func(e *Event) *string { return &e.MailboxID },
	"vnd.cmu.mbtype":        func(e *Event) *string { return &e.MailboxType },
	"vnd.cmu.envelope":      func(e *Event) *string { return &e.Envelope },
	"bodyStructure":         func(e *Event) *string { return &e.BodyStructure },
	"vnd.cmu.emailid":       func(e *Event) *string { return &e.EmailID },
	"vnd.cmu.threadid":      func(e *Event) *string { return &e.ThreadID },
	"vnd.fastmail.cid":      func(e *Event) *string { return &e.ConversationID },
	"vnd.fastmail.clientId": func(e *Event) *string { return &e.ClientID },
}

// knownFields are the other members set handles (stringFields aside).
var knownFields = map[string]bool{
	"timestamp": true, "user": true, "aclSubject": true, "aclRights": true,
	"vnd.fastmail.sessionId": true, "uri": true, "oldMailboxID": true, "uidset": true,
	"vnd.cmu.oldUidset": true, "vnd.cmu.midset": true, "flagNames": true,
	"vnd.cmu.mailboxACL": true, "diskQuota": true, "diskUsed": true, "maxMessages": true,
	"messages": true, "vnd.cmu.unseenMessages": true, "pid": true, "clientPort": true,
	"serverPort": true, "messageSize": true, "modseq": true, "uidnext": true,
	"messageContent": true, "vnd.fastmail.jmapEmail": true,
}

// finish checks the event name and derives what depends on several members.
func (d *jsonDecoder) finish() error {
	e := d.e
	if !d.sawEvent {
		return d.fail(0, "event", ErrMalformed, "no \"event\" member")
	}
	e.Class = ClassEvent
	if d.fastmailSession != nil {
		s, _ := jsonString(d.fastmailSession)
		switch {
		case e.SessionID == "":
			e.SessionID = s
		case s != e.SessionID:
			if e.Extra == nil {
				e.Extra = make(map[string]json.RawMessage)
			}
			e.Extra["vnd.fastmail.sessionId"] = d.fastmailSession
		}
	}
	// Events about one message carry its UID in the URL instead of a
	// uidset (MessageAppend, MessageNew; Cyrus 2.5 did so for others too).
	if len(e.UIDs) == 0 && e.Mailbox.UID != 0 {
		e.UIDs = []uint32{e.Mailbox.UID}
	}
	if len(e.OldUIDs) == 0 && e.OldMailbox != nil && e.OldMailbox.UID != 0 {
		e.OldUIDs = []uint32{e.OldMailbox.UID}
	}
	t, ok := ParseEventType(e.Name)
	if ok && (t == Cancelled || t == MailNotification || t == SieveNotification) {
		ok = false // Bonnie's own names, not event names on the wire
	}
	if !ok {
		return d.fail(d.eventOffset, "event", ErrUnknownEvent, "%q", e.Name)
	}
	e.Type = t
	if t == AclChange && !d.hasRights {
		// Cyrus leaves aclRights out for DELETEACL (it sends "" for
		// SETACL with empty rights).
		e.ACLRemoved = true
	}
	return nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// jsonString decodes a JSON string member.
func jsonString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("got %.20s, want a string", raw)
	}
	// Most members are plain: no escape, no control character, valid
	// UTF-8. Their value is the bytes between the quotes, as
	// encoding/json would give (json.Unmarshal was a third of decoding).
	if body := raw[1:]; len(body) > 0 && body[len(body)-1] == '"' {
		body = body[:len(body)-1]
		plain := true
		for _, c := range body {
			if c == '\\' || c == '"' || c < 0x20 {
				plain = false
				break
			}
		}
		if plain && utf8.Valid(body) {
			return string(body), nil
		}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// integerText returns the digits of a JSON integer, accepting a numeric
// string too (older producers quoted numbers). The text is parsed with
// strconv, never through float64, so 64-bit values keep every digit.
func integerText(raw json.RawMessage) (string, error) {
	if len(raw) > 0 && raw[0] == '"' {
		return jsonString(raw)
	}
	if len(raw) == 0 || !(raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		return "", fmt.Errorf("got %.20s, want an integer", raw)
	}
	return string(raw), nil
}

func jsonInt(raw json.RawMessage, bits int) (int64, error) {
	s, err := integerText(raw)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(s, 10, bits)
}

func jsonUint(raw json.RawMessage, bits int) (uint64, error) {
	s, err := integerText(raw)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(s, 10, bits)
}

// jsonUIDs expands a uidset: an IMAP sequence-set string (Cyrus 3), a
// number, or a list of either (Cyrus 2.5).
func jsonUIDs(raw json.RawMessage) ([]uint32, error) {
	if len(raw) > 0 && raw[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, err
		}
		var uids []uint32
		for _, it := range items {
			s, err := uidSetText(it)
			if err != nil {
				return nil, err
			}
			if uids, err = appendUIDSet(uids, s); err != nil {
				return nil, err
			}
		}
		return uids, nil
	}
	s, err := uidSetText(raw)
	if err != nil {
		return nil, err
	}
	return ParseUIDSet(s)
}

func uidSetText(raw json.RawMessage) (string, error) {
	if len(raw) > 0 && raw[0] == '"' {
		return jsonString(raw)
	}
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return "", fmt.Errorf("got %.20s, want a uid set", raw)
	}
	return string(raw), nil
}

// jsonMessageIDs decodes vnd.cmu.midset: a list of Message-IDs, "NIL" (or
// null) for a message without one, stored as "". A space-separated string
// is accepted too.
func jsonMessageIDs(raw json.RawMessage) ([]string, error) {
	var items []*string
	if len(raw) > 0 && raw[0] == '"' {
		s, err := jsonString(raw)
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Fields(s) {
			items = append(items, &f)
		}
	} else if err := json.Unmarshal(raw, &items); err != nil {
		return nil, err
	}
	ids := make([]string, len(items))
	for i, p := range items {
		if p != nil && *p != "NIL" {
			ids[i] = *p
		}
	}
	return ids, nil
}

// systemFlags are the RFC 3501 system flags in their canonical case.
var systemFlags = [...]string{`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`, `\Recent`}

// normalizeFlag gives a system flag its canonical case: Cyrus sends
// "\\flagged" on MessageAppend when the client wrote it so, and flag
// comparisons downstream are exact. Keywords are kept as sent.
func normalizeFlag(f string) string {
	if strings.HasPrefix(f, `\`) {
		for _, s := range systemFlags {
			if strings.EqualFold(f, s) {
				return s
			}
		}
	}
	return f
}

// jsonFlags decodes flagNames: one space-separated string (or a list).
func jsonFlags(raw json.RawMessage) ([]string, error) {
	var flags []string
	if len(raw) > 0 && raw[0] == '[' {
		if err := json.Unmarshal(raw, &flags); err != nil {
			return nil, err
		}
	} else {
		s, err := jsonString(raw)
		if err != nil {
			return nil, err
		}
		flags = strings.Fields(s)
	}
	for i, f := range flags {
		flags[i] = normalizeFlag(f)
	}
	return flags, nil
}

// ParseMailboxACL parses Cyrus's vnd.cmu.mailboxACL, identifier and rights
// separated by TABs ("alice\tlrswipkxtecdan\tbob\tlrs\t"), keeping Cyrus's
// order. Identifiers go through the same normalisation as aclSubject so
// that they compare equal. Errors wrap ErrMalformed.
func ParseMailboxACL(s string) (ACL, error) {
	if s == "" {
		return nil, nil
	}
	fields := strings.Split(strings.TrimSuffix(s, "\t"), "\t")
	if len(fields)%2 != 0 {
		return nil, fmt.Errorf("%w: ACL %q: identifier without rights", ErrMalformed, s)
	}
	acl := make(ACL, 0, len(fields)/2)
	for i := 0; i < len(fields); i += 2 {
		acl = append(acl, ACLEntry{Subject: normalizeSubject(fields[i]), Rights: fields[i+1]})
	}
	return acl, nil
}

// normalizeSubject undoes the Kolab/Cyrus 2.5 form of a dotted user name.
// With unixhierarchysep Cyrus swaps '.' and '/' between its internal and
// external names, and Cyrus 2.5 applied the swap to user ids where it
// should not (cyrus-imapd issue #1600, "userid with dots and
// unixhierarchysep don't play well everywhere", and PR #67 by Kolab), so
// john.doe@example.org reached events as "john/doe@example.org". A '/' is
// the hierarchy separator and cannot be part of a user id under
// unixhierarchysep, so turning it back into '.' is unambiguous.
func normalizeSubject(s string) string {
	if strings.IndexByte(s, '/') < 0 {
		return s
	}
	return strings.ReplaceAll(s, "/", ".")
}

// timestampLayouts are the forms Cyrus has written: ISO 8601 with
// milliseconds and an offset, with or without the colon in the offset.
var timestampLayouts = [...]string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
}

// parseTimestamp reads an event timestamp into UTC.
func parseTimestamp(s string) (time.Time, error) {
	var err error
	for _, layout := range timestampLayouts {
		var t time.Time
		if t, err = time.Parse(layout, s); err == nil {
			t = t.UTC()
			if y := t.Year(); y < 1 || y > 9999 {
				return time.Time{}, fmt.Errorf("timestamp %q out of range", s)
			}
			return t, nil
		}
	}
	return time.Time{}, err
}
