package sqlite

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/bonnie-archive/bonnie"
)

// decodeEvent decodes the stored JSON of an event into ev, with the same
// result as json.Unmarshal(js, ev) on a zero Event.
//
// The stored form is what encoding/json's Marshal wrote for a
// bonnie.Event, so a direct single-pass scanner for exactly that shape
// (known member names, each once, no null, strings without escapes or
// non-ASCII bytes) handles nearly every record at a fraction of the cost of
// the reflection-driven decoder, which first validates the whole document
// and then walks it again. Anything the fast path does not recognise, or
// any doubt at all, falls back to json.Unmarshal on a fresh Event, so the
// result is always what encoding/json gives (checked by
// TestDecodeEventMatchesEncodingJSON).
func decodeEvent(js []byte, ev *bonnie.Event) error {
	d := eventDecoder{b: js}
	if d.event(ev) {
		return nil
	}
	*ev = bonnie.Event{}
	return json.Unmarshal(js, ev)
}

// decodeEventString is decodeEvent for stored text the caller owns and
// never changes (a string from the driver): the event's strings are then
// views of it instead of copies, a fifth of the cost of reading a record.
// The event keeps the whole text alive as long as it keeps any of them.
func decodeEventString(js string, ev *bonnie.Event) error {
	b := unsafe.Slice(unsafe.StringData(js), len(js))
	d := eventDecoder{b: b, view: true}
	if d.event(ev) {
		return nil
	}
	*ev = bonnie.Event{}
	return json.Unmarshal(b, ev)
}

// eventDecoder is a cursor over one JSON document. Every method returns
// false on anything unexpected; the caller then falls back.
type eventDecoder struct {
	b []byte
	i int
	// view: b is the bytes of an immutable string, and strings without
	// escapes may point into it.
	view bool
}

func (d *eventDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\r', '\n':
			d.i++
		default:
			return
		}
	}
}

// next skips whitespace and returns the next byte without consuming it
// (0 at the end).
func (d *eventDecoder) next() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *eventDecoder) consume(c byte) bool {
	if d.next() != c {
		return false
	}
	d.i++
	return true
}

// rawString returns the bytes between the quotes of a simple string: no
// escape, no control character, no byte above 0x7f (those go to the
// fallback, which knows JSON's escapes and its UTF-8 repair).
func (d *eventDecoder) rawString() ([]byte, bool) {
	if !d.consume('"') {
		return nil, false
	}
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c == '"' {
			s := d.b[start:d.i]
			d.i++
			return s, true
		}
		if c == '\\' || c < 0x20 || c >= 0x80 {
			return nil, false
		}
		d.i++
	}
	return nil, false
}

// str decodes a JSON string: the bytes as they are when there is no
// escape and they are valid UTF-8 (what encoding/json does too), else
// encoding/json on that one string (Marshal escapes <, >, & and the
// backslash of IMAP's system flags, so such strings are common).
func (d *eventDecoder) str() (string, bool) {
	if !d.consume('"') {
		return "", false
	}
	start := d.i
	esc, high := false, false
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			if high && !utf8.Valid(s) {
				return d.slowString(start)
			}
			if esc {
				if out, ok := unescape(s); ok {
					return out, true
				}
				return d.slowString(start)
			}
			if d.view && len(s) > 0 {
				return unsafe.String(&s[0], len(s)), true
			}
			return string(s), true
		case c == '\\':
			esc = true
			d.i += 2
			continue
		case c < 0x20:
			return "", false
		case c >= 0x80:
			high = true
		}
		d.i++
	}
	return "", false
}

// slowString decodes the string token that starts at start-1 and ends
// before d.i with encoding/json itself.
func (d *eventDecoder) slowString(start int) (string, bool) {
	var out string
	if err := json.Unmarshal(d.b[start-1:d.i], &out); err != nil {
		return "", false
	}
	return out, true
}

// unescape undoes JSON's escapes in s (valid UTF-8, no control
// character). A \u escape of a surrogate half is left to encoding/json,
// which pairs them or repairs them its own way.
func unescape(s []byte) (string, bool) {
	buf := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			buf = append(buf, c)
			continue
		}
		i++
		if i == len(s) {
			return "", false
		}
		switch s[i] {
		case '"', '\\', '/':
			buf = append(buf, s[i])
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			if i+5 > len(s) {
				return "", false
			}
			var r rune
			for _, h := range s[i+1 : i+5] {
				switch {
				case h >= '0' && h <= '9':
					h -= '0'
				case h >= 'a' && h <= 'f':
					h -= 'a' - 10
				case h >= 'A' && h <= 'F':
					h -= 'A' - 10
				default:
					return "", false
				}
				r = r<<4 | rune(h)
			}
			if utf16.IsSurrogate(r) {
				return "", false
			}
			buf = utf8.AppendRune(buf, r)
			i += 4
		default:
			return "", false
		}
	}
	return string(buf), true
}

// number returns the text of a JSON integer (no fraction, no exponent,
// no leading zero).
func (d *eventDecoder) number() ([]byte, bool) {
	d.ws()
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.i - digits
	if n == 0 || (n > 1 && d.b[digits] == '0') {
		return nil, false
	}
	if d.i < len(d.b) {
		switch d.b[d.i] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	return d.b[start:d.i], true
}

func (d *eventDecoder) int(bits int) (int64, bool) {
	t, ok := d.number()
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(t), 10, bits)
	return n, err == nil
}

func (d *eventDecoder) uint(bits int) (uint64, bool) {
	t, ok := d.number()
	if !ok || t[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(t), 10, bits)
	return n, err == nil
}

func (d *eventDecoder) bool() (bool, bool) {
	d.ws()
	switch {
	case len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "true":
		d.i += 4
		return true, true
	case len(d.b)-d.i >= 5 && string(d.b[d.i:d.i+5]) == "false":
		d.i += 5
		return false, true
	}
	return false, false
}

// bytes decodes base64 as encoding/json does for a []byte.
func (d *eventDecoder) bytes() ([]byte, bool) {
	if !d.consume('"') {
		return nil, false
	}
	end := bytes.IndexByte(d.b[d.i:], '"')
	if end < 0 {
		return nil, false
	}
	s := d.b[d.i : d.i+end]
	// Decode rejects every byte outside the alphabet (a backslash, a
	// control character, a byte above 0x7f) except CR and LF, which it
	// skips and JSON forbids raw.
	if bytes.IndexByte(s, '\r') >= 0 || bytes.IndexByte(s, '\n') >= 0 {
		return nil, false
	}
	d.i += end + 1
	b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(b, s)
	if err != nil {
		return nil, false
	}
	return b[:n], true
}

func (d *eventDecoder) time() (time.Time, bool) {
	d.ws()
	start := d.i
	if _, ok := d.rawString(); !ok {
		return time.Time{}, false
	}
	var t time.Time
	if err := t.UnmarshalJSON(d.b[start:d.i]); err != nil {
		return time.Time{}, false
	}
	return t, true
}

// array calls elem for each element of a JSON array; an empty array gives
// a non-nil empty slice in encoding/json, which the callers mirror.
func (d *eventDecoder) array(elem func() bool) bool {
	if !d.consume('[') {
		return false
	}
	if d.consume(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if d.consume(',') {
			continue
		}
		return d.consume(']')
	}
}

// object calls member for each key of a JSON object.
func (d *eventDecoder) object(member func(key []byte) bool) bool {
	if !d.consume('{') {
		return false
	}
	if d.consume('}') {
		return true
	}
	for {
		k, ok := d.rawString()
		if !ok || !d.consume(':') || !member(k) {
			return false
		}
		if d.consume(',') {
			continue
		}
		return d.consume('}')
	}
}

func (d *eventDecoder) strings() ([]string, bool) {
	out := make([]string, 0, 4)
	ok := d.array(func() bool {
		s, ok := d.str()
		out = append(out, s)
		return ok
	})
	return out, ok
}

func (d *eventDecoder) uids() ([]uint32, bool) {
	out := make([]uint32, 0, 4)
	ok := d.array(func() bool {
		n, ok := d.uint(32)
		out = append(out, uint32(n))
		return ok
	})
	return out, ok
}

func (d *eventDecoder) int64p() (*int64, bool) {
	n, ok := d.int(64)
	return &n, ok
}

// value skips one JSON value and returns its bytes, checked with
// json.Valid (used for the rare members kept raw or handed to
// json.Unmarshal).
func (d *eventDecoder) value() ([]byte, bool) {
	d.ws()
	start := d.i
	depth := 0
scan:
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case '"':
			d.i++
			for d.i < len(d.b) && d.b[d.i] != '"' {
				if d.b[d.i] == '\\' {
					d.i++
				}
				d.i++
			}
			if d.i >= len(d.b) {
				return nil, false
			}
			d.i++
			if depth == 0 {
				break scan
			}
		case '{', '[':
			depth++
			d.i++
		case '}', ']':
			if depth == 0 {
				break scan
			}
			depth--
			d.i++
			if depth == 0 {
				break scan
			}
		case ',':
			if depth == 0 {
				break scan
			}
			d.i++
		default:
			d.i++
		}
	}
	v := d.b[start:d.i]
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t' || v[len(v)-1] == '\r' || v[len(v)-1] == '\n') {
		v = v[:len(v)-1]
	}
	if len(v) == 0 || !json.Valid(v) {
		return nil, false
	}
	return v, true
}

func (d *eventDecoder) rawMessage() (json.RawMessage, bool) {
	v, ok := d.value()
	if !ok {
		return nil, false
	}
	return append(json.RawMessage(nil), v...), true
}

func (d *eventDecoder) mailbox(m *bonnie.MailboxURL) bool {
	var seen uint8
	return d.object(func(k []byte) bool {
		var bit uint8
		var ok bool
		switch string(k) {
		case "server":
			bit = 1
			m.Server, ok = d.str()
		case "name":
			bit = 2
			m.Name, ok = d.str()
		case "owner":
			bit = 4
			m.Owner, ok = d.str()
		case "user":
			bit = 8
			m.User, ok = d.str()
		case "uidValidity":
			bit = 16
			var n uint64
			n, ok = d.uint(32)
			m.UIDValidity = uint32(n)
		case "uid":
			bit = 32
			var n uint64
			n, ok = d.uint(32)
			m.UID = uint32(n)
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return ok
	})
}

func (d *eventDecoder) acl() (bonnie.ACL, bool) {
	out := make(bonnie.ACL, 0, 2)
	ok := d.array(func() bool {
		var e bonnie.ACLEntry
		var seen uint8
		ok := d.object(func(k []byte) bool {
			var bit uint8
			var ok bool
			switch string(k) {
			case "subject":
				bit = 1
				e.Subject, ok = d.str()
			case "rights":
				bit = 2
				e.Rights, ok = d.str()
			default:
				return false
			}
			if seen&bit != 0 {
				return false
			}
			seen |= bit
			return ok
		})
		out = append(out, e)
		return ok
	})
	return out, ok
}

// eventFields numbers the members of bonnie.Event's JSON form, to catch a
// member given twice (encoding/json would merge, not replace, some).
var eventFields = map[string]uint{}

func init() {
	for i, k := range []string{
		"type", "name", "class", "framing", "time", "timestamp", "service", "user",
		"sessionId", "pid", "clientIP", "clientPort", "serverDomain", "serverPort",
		"serverFQDN", "uri", "mailbox", "mailboxID", "oldMailboxURI", "oldMailbox",
		"mailboxType", "uids", "oldUids", "messageIds", "flags", "aclSubject",
		"aclRights", "aclRemoved", "mailboxACL", "diskQuota", "diskUsed",
		"maxMessages", "messages", "unseenMessages", "modseq", "uidnext",
		"messageSize", "envelope", "bodyStructure", "messageContent", "emailId",
		"threadId", "cid", "clientId", "jmapEmail", "extra", "method", "priority",
		"notifyUser", "notifyMailbox", "options", "message", "filePath",
		"identities", "bodies", "raw",
	} {
		eventFields[k] = uint(i)
	}
}

func (d *eventDecoder) event(e *bonnie.Event) bool {
	var seen uint64
	ok := d.object(func(k []byte) bool {
		bit, known := eventFields[string(k)]
		if !known || seen&(1<<bit) != 0 {
			return false
		}
		seen |= 1 << bit
		if d.next() == 'n' { // null: leave it to encoding/json
			return false
		}
		var ok bool
		switch string(k) {
		case "type":
			var s []byte
			if s, ok = d.rawString(); ok {
				ok = e.Type.UnmarshalText(s) == nil
			}
		case "name":
			e.Name, ok = d.str()
		case "class":
			var s string
			s, ok = d.str()
			e.Class = bonnie.Class(s)
		case "framing":
			var s string
			s, ok = d.str()
			e.Framing = bonnie.Framing(s)
		case "time":
			e.Time, ok = d.time()
		case "timestamp":
			e.Timestamp, ok = d.str()
		case "service":
			e.Service, ok = d.str()
		case "user":
			e.User, ok = d.str()
		case "sessionId":
			e.SessionID, ok = d.str()
		case "pid":
			var n int64
			n, ok = d.int(strconv.IntSize)
			e.PID = int(n)
		case "clientIP":
			e.ClientIP, ok = d.str()
		case "clientPort":
			var n int64
			n, ok = d.int(strconv.IntSize)
			e.ClientPort = int(n)
		case "serverDomain":
			e.ServerDomain, ok = d.str()
		case "serverPort":
			var n int64
			n, ok = d.int(strconv.IntSize)
			e.ServerPort = int(n)
		case "serverFQDN":
			e.Server, ok = d.str()
		case "uri":
			e.URI, ok = d.str()
		case "mailbox":
			ok = d.mailbox(&e.Mailbox)
		case "mailboxID":
			e.MailboxID, ok = d.str()
		case "oldMailboxURI":
			e.OldURI, ok = d.str()
		case "oldMailbox":
			e.OldMailbox = new(bonnie.MailboxURL)
			ok = d.mailbox(e.OldMailbox)
		case "mailboxType":
			e.MailboxType, ok = d.str()
		case "uids":
			e.UIDs, ok = d.uids()
		case "oldUids":
			e.OldUIDs, ok = d.uids()
		case "messageIds":
			e.MessageIDs, ok = d.strings()
		case "flags":
			e.Flags, ok = d.strings()
		case "aclSubject":
			e.ACLSubject, ok = d.str()
		case "aclRights":
			e.ACLRights, ok = d.str()
		case "aclRemoved":
			e.ACLRemoved, ok = d.bool()
		case "mailboxACL":
			e.MailboxACL, ok = d.acl()
		case "diskQuota":
			e.DiskQuota, ok = d.int64p()
		case "diskUsed":
			e.DiskUsed, ok = d.int64p()
		case "maxMessages":
			e.MaxMessages, ok = d.int64p()
		case "messages":
			e.Messages, ok = d.int64p()
		case "unseenMessages":
			e.Unseen, ok = d.int64p()
		case "modseq":
			e.Modseq, ok = d.uint(64)
		case "uidnext":
			var n uint64
			n, ok = d.uint(32)
			e.UIDNext = uint32(n)
		case "messageSize":
			e.Size, ok = d.int(64)
		case "envelope":
			e.Envelope, ok = d.str()
		case "bodyStructure":
			e.BodyStructure, ok = d.str()
		case "messageContent":
			e.MessageContent, ok = d.bytes()
		case "emailId":
			e.EmailID, ok = d.str()
		case "threadId":
			e.ThreadID, ok = d.str()
		case "cid":
			e.ConversationID, ok = d.str()
		case "clientId":
			e.ClientID, ok = d.str()
		case "jmapEmail":
			e.JMAPEmail, ok = d.rawMessage()
		case "extra":
			e.Extra = make(map[string]json.RawMessage)
			ok = d.object(func(k []byte) bool {
				if _, dup := e.Extra[string(k)]; dup {
					return false
				}
				v, ok := d.rawMessage()
				e.Extra[string(k)] = v
				return ok
			})
		case "method":
			e.Method, ok = d.str()
		case "priority":
			e.Priority, ok = d.str()
		case "notifyUser":
			e.NotifyUser, ok = d.str()
		case "notifyMailbox":
			e.NotifyMailbox, ok = d.str()
		case "options":
			e.Options, ok = d.strings()
		case "message":
			e.Message, ok = d.str()
		case "filePath":
			e.FilePath, ok = d.str()
		case "identities":
			var v []byte
			if v, ok = d.value(); ok {
				ok = json.Unmarshal(v, &e.Identities) == nil
			}
		case "bodies":
			var v []byte
			if v, ok = d.value(); ok {
				ok = json.Unmarshal(v, &e.Bodies) == nil
			}
		case "raw":
			e.Raw, ok = d.bytes()
		}
		return ok
	})
	if !ok {
		return false
	}
	d.ws()
	return d.i == len(d.b)
}
