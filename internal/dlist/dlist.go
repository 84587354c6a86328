// Package dlist reads the "dlist" wire format that Cyrus IMAP speaks on its
// synchronous notify stream (imapd.conf "notifysocket: dlist:PATH").
//
// Cyrus opens a stream connection per notification, writes one request
// line and blocks, without a timeout, until it reads a one-line reply whose
// first atom is OK. A request looks like
//
//	NOTIFY %(METHOD log CLASS EVENT PRIORITY NIL USER NIL MAILBOX NIL OPTIONS () MESSAGE {501+}\r\n<501 bytes> FILEPATH NIL)\r\n
//
// Values are atoms, NIL, quoted strings ("..." with backslash escapes),
// literals ({n}\r\n or the LITERAL+ form {n+}\r\n followed by n raw
// bytes), lists "(...)" and key/value lists "%(...)". Cyrus's file
// literals ("%{partition guid size}") belong to replication, never to
// NOTIFY, and are rejected.
//
// Parse reads one complete request held in memory; Reader reads exactly one
// request from a stream, bounded in size, and hands back the bytes it read so
// that the caller can keep them as evidence. Reply builds the answer Cyrus
// waits for.
package dlist

import (
	"errors"
	"fmt"
	"io"
)

// maxDepth bounds list nesting so that hostile input cannot exhaust the
// stack; NOTIFY nests two levels deep.
const maxDepth = 64

// ErrMalformed is wrapped by every *Error caused by input that is not a
// dlist request, so callers can tell bad input from I/O trouble.
var ErrMalformed = errors.New("dlist: malformed request")

// ErrTooLarge is wrapped when a request (or a literal it announces) is larger
// than the Reader allows. The stream is then out of step and must be closed.
var ErrTooLarge = errors.New("dlist: request too large")

// Error says where in the request the parser or reader gave up. Err is
// ErrMalformed, ErrTooLarge, io.ErrUnexpectedEOF (the input ended inside a
// request) or the underlying read error, so errors.Is works on any of them.
type Error struct {
	// Offset is the byte offset in the request at which the problem was
	// found.
	Offset int
	// Msg describes the problem.
	Msg string
	Err error
}

// Error says what was wrong and where, so a dead letter explains itself.
func (e *Error) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("dlist: at offset %d: %v", e.Offset, e.Err)
	}
	return fmt.Sprintf("dlist: %s at offset %d: %v", e.Msg, e.Offset, e.Err)
}

// Unwrap lets errors.Is see ErrMalformed, ErrTooLarge or io.ErrUnexpectedEOF.
func (e *Error) Unwrap() error { return e.Err }

// Kind is the syntactic form of a Value. The form is kept (not only the
// bytes) because the same text can travel as an atom, a quoted string or a
// literal and evidence should say which.
type Kind uint8

// The value forms of the dlist syntax.
const (
	Nil     Kind = iota // NIL: absent (Cyrus's NULL string)
	Atom                // a bare word
	Quoted              // "..." with backslash escapes
	Literal             // {n}\r\n or {n+}\r\n followed by n bytes
	List                // ( ... )
	KVList              // %( key value ... )
)

var kindNames = [...]string{"NIL", "atom", "quoted", "literal", "list", "kvlist"}

// String names the form, for error messages.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Value is one parsed dlist value.
type Value struct {
	Kind Kind
	// Key is the value's key when it is a member of a KVList.
	Key string
	// Data holds the bytes of an Atom, Quoted or Literal value (escapes of a
	// quoted string undone). For atoms and literals it is a sub-slice of the
	// parsed input, so it is only valid as long as that input is.
	Data []byte
	// Items are the members of a List or KVList.
	Items []Value
	// Offset is where the value starts in the parsed input, for error
	// messages that point at the byte that was wrong.
	Offset int
	// DataOffset is where Data starts in the input (after a literal's
	// header or a quoted string's opening quote), so that a caller parsing
	// Data further can report offsets in the whole request.
	DataOffset int
}

// IsString reports whether v carries bytes (atom, quoted string or literal),
// the forms Cyrus uses interchangeably for one string.
func (v *Value) IsString() bool {
	return v.Kind == Atom || v.Kind == Quoted || v.Kind == Literal
}

// Text returns the string value, "" for NIL and for lists. Cyrus writes a
// NULL string as NIL, so for its NOTIFY fields "" and absent mean the same.
func (v *Value) Text() string {
	if v.IsString() {
		return string(v.Data)
	}
	return ""
}

// Get returns the member of a KVList with the given key. Keys match without
// regard to ASCII case (Cyrus's own lookup is case-sensitive, but it only
// writes upper-case keys); the first match wins, as in Cyrus.
func (v *Value) Get(key string) (*Value, bool) {
	if v.Kind != KVList {
		return nil, false
	}
	for i := range v.Items {
		if equalFold(v.Items[i].Key, key) {
			return &v.Items[i], true
		}
	}
	return nil, false
}

// Request is one request line: a command name ("NOTIFY") and its argument.
type Request struct {
	Name  string
	Value Value
}

// Parse parses exactly one complete request, terminated by CRLF (a bare LF
// is accepted too), with nothing after it. A request cut short gives an
// *Error wrapping io.ErrUnexpectedEOF; anything else that is wrong wraps
// ErrMalformed.
func Parse(b []byte) (*Request, error) {
	p := parser{b: b}
	p.skipSpaces()
	if p.pos < len(p.b) && (p.b[p.pos] == '\r' || p.b[p.pos] == '\n') {
		return nil, p.malformed("empty request")
	}
	name, err := p.astring("command name")
	if err != nil {
		return nil, err
	}
	if p.pos >= len(p.b) {
		return nil, p.truncated()
	}
	if p.b[p.pos] != ' ' {
		return nil, p.malformed("expected a space after the command name")
	}
	p.skipSpaces()
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.skipSpaces()
	if err := p.eol(); err != nil {
		return nil, err
	}
	if p.pos != len(p.b) {
		return nil, p.malformed("data after the end of the request")
	}
	return &Request{Name: string(name), Value: v}, nil
}

type parser struct {
	b     []byte
	pos   int
	depth int
}

func (p *parser) malformed(msg string) error {
	return &Error{Offset: p.pos, Msg: msg, Err: ErrMalformed}
}

func (p *parser) truncated() error {
	return &Error{Offset: p.pos, Msg: "request ends early", Err: io.ErrUnexpectedEOF}
}

func (p *parser) skipSpaces() {
	for p.pos < len(p.b) && p.b[p.pos] == ' ' {
		p.pos++
	}
}

// eol consumes the line terminator.
func (p *parser) eol() error {
	if p.pos >= len(p.b) {
		return p.truncated()
	}
	switch p.b[p.pos] {
	case '\n':
		p.pos++
		return nil
	case '\r':
		p.pos++
		if p.pos >= len(p.b) {
			return p.truncated()
		}
		if p.b[p.pos] != '\n' {
			return p.malformed("CR not followed by LF")
		}
		p.pos++
		return nil
	}
	return p.malformed("expected the end of the request")
}

// value parses one value at p.pos.
func (p *parser) value() (Value, error) {
	if p.pos >= len(p.b) {
		return Value{}, p.truncated()
	}
	switch c := p.b[p.pos]; c {
	case '(':
		return p.list(false)
	case '%':
		if p.pos+1 >= len(p.b) {
			p.pos++
			return Value{}, p.truncated()
		}
		switch p.b[p.pos+1] {
		case '(':
			p.pos++
			v, err := p.list(true)
			v.Offset--
			return v, err
		case '{':
			return Value{}, p.malformed("file literals are not part of NOTIFY")
		}
		return p.atom()
	case '"':
		return p.quoted()
	case '{':
		return p.literal()
	case ')', ' ', '\r', '\n':
		return Value{}, p.malformed("expected a value")
	default:
		return p.atom()
	}
}

// list parses "(" items ")" at p.pos; kv says the items are key/value pairs.
func (p *parser) list(kv bool) (Value, error) {
	v := Value{Kind: List, Offset: p.pos}
	if kv {
		v.Kind = KVList
	}
	p.depth++
	if p.depth > maxDepth {
		return v, p.malformed("lists nested too deeply")
	}
	defer func() { p.depth-- }()
	p.pos++ // (
	p.skipSpaces()
	for first := true; ; first = false {
		if p.pos >= len(p.b) {
			return v, p.truncated()
		}
		if p.b[p.pos] == ')' {
			p.pos++
			return v, nil
		}
		if !first {
			if p.b[p.pos] != ' ' {
				return v, p.malformed("expected a space or ')' after a list item")
			}
			p.skipSpaces()
			if p.pos >= len(p.b) {
				return v, p.truncated()
			}
			if p.b[p.pos] == ')' {
				p.pos++
				return v, nil
			}
		}
		var key []byte
		if kv {
			var err error
			if key, err = p.astring("key"); err != nil {
				return v, err
			}
			if p.pos >= len(p.b) {
				return v, p.truncated()
			}
			if p.b[p.pos] != ' ' {
				return v, p.malformed("expected a space after a key")
			}
			p.skipSpaces()
		}
		item, err := p.value()
		if err != nil {
			return v, err
		}
		item.Key = string(key)
		v.Items = append(v.Items, item)
	}
}

// astring parses a key or command name: an atom, quoted string or literal
// (NIL is taken as the three letters).
func (p *parser) astring(what string) ([]byte, error) {
	if p.pos >= len(p.b) {
		return nil, p.truncated()
	}
	var v Value
	var err error
	switch p.b[p.pos] {
	case '"':
		v, err = p.quoted()
	case '{':
		v, err = p.literal()
	case '(', ')', ' ', '\r', '\n', '%':
		return nil, p.malformed("expected a " + what)
	default:
		start := p.pos
		p.pos = atomEnd(p.b, p.pos)
		return p.b[start:p.pos], nil
	}
	return v.Data, err
}

// atomEnd returns the offset just past the atom that starts at i.
func atomEnd(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '(', ')', '"', '\r', '\n':
			return i
		}
		i++
	}
	return i
}

func (p *parser) atom() (Value, error) {
	start := p.pos
	p.pos = atomEnd(p.b, p.pos)
	data := p.b[start:p.pos]
	if len(data) == 3 && equalFold(string(data), "NIL") {
		return Value{Kind: Nil, Offset: start, DataOffset: start}, nil
	}
	return Value{Kind: Atom, Data: data, Offset: start, DataOffset: start}, nil
}

func (p *parser) quoted() (Value, error) {
	start := p.pos
	p.pos++        // "
	var out []byte // nil until an escape forces a copy
	from := p.pos
	for p.pos < len(p.b) {
		switch c := p.b[p.pos]; c {
		case '"':
			data := p.b[from:p.pos]
			if out != nil {
				data = append(out, data...)
			}
			p.pos++
			return Value{Kind: Quoted, Data: data, Offset: start, DataOffset: start + 1}, nil
		case '\\':
			if p.pos+1 >= len(p.b) {
				p.pos++
				return Value{}, p.truncated()
			}
			out = append(out, p.b[from:p.pos]...)
			out = append(out, p.b[p.pos+1])
			p.pos += 2
			from = p.pos
		case '\r', '\n':
			return Value{}, p.malformed("line break inside a quoted string")
		default:
			p.pos++
		}
	}
	return Value{}, p.truncated()
}

// maxLiteralDigits bounds the length field of a literal: ten digits already
// exceed any size a Reader accepts.
const maxLiteralDigits = 10

// literalHeader parses "{n}" or "{n+}" and the line break after it, at
// b[i] == '{'. It returns n and the offset of the literal's first byte;
// needMore says the input ended inside the header, a non-empty msg says why
// the header is malformed (data is then where it went wrong).
func literalHeader(b []byte, i int) (n, data int, needMore bool, msg string) {
	i++ // {
	digits := 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if digits == maxLiteralDigits {
			return 0, i, false, "literal length too long"
		}
		n = n*10 + int(b[i]-'0')
		digits++
	}
	if i >= len(b) {
		return 0, i, true, ""
	}
	if digits == 0 {
		return 0, i, false, "literal without a length"
	}
	if b[i] == '+' {
		i++
		if i >= len(b) {
			return 0, i, true, ""
		}
	}
	if b[i] != '}' {
		return 0, i, false, "expected '}' in a literal header"
	}
	i++
	if i >= len(b) {
		return 0, i, true, ""
	}
	if b[i] == '\r' {
		i++
		if i >= len(b) {
			return 0, i, true, ""
		}
	}
	if b[i] != '\n' {
		return 0, i, false, "literal header not followed by a line break"
	}
	return n, i + 1, false, ""
}

func (p *parser) literal() (Value, error) {
	start := p.pos
	n, data, needMore, msg := literalHeader(p.b, p.pos)
	if needMore {
		p.pos = data
		return Value{}, p.truncated()
	}
	if msg != "" {
		p.pos = data
		return Value{}, p.malformed(msg)
	}
	if n > len(p.b)-data {
		p.pos = len(p.b)
		return Value{}, &Error{Offset: start, Msg: fmt.Sprintf("literal of %d bytes longer than the data", n), Err: io.ErrUnexpectedEOF}
	}
	p.pos = data + n
	return Value{Kind: Literal, Data: p.b[data:p.pos], Offset: start, DataOffset: data}, nil
}

// equalFold is ASCII-only case folding: keys and NIL are ASCII, and
// strings.EqualFold would also fold non-ASCII runes.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
