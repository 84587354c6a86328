package bonnie

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Envelope is a message's IMAP ENVELOPE (RFC 3501 section 7.4.2), as
// Cyrus sends it in vnd.cmu.envelope (Event.Envelope): the header fields
// a mail client lists, strings as they are in the header (a Subject may
// be RFC 2047-encoded; see mime.WordDecoder).
type Envelope struct {
	Date    string
	Subject string
	From    []Address
	Sender  []Address
	ReplyTo []Address
	To      []Address
	Cc      []Address
	Bcc     []Address
	// InReplyTo and MessageID keep their angle brackets.
	InReplyTo string
	MessageID string
}

// Address is one address of an envelope (RFC 3501's addr-name, addr-adl,
// addr-mailbox, addr-host). A group is marked by an address with Host ""
// before its members (Mailbox is the group's name) and one with Mailbox
// "" after them.
type Address struct {
	Name    string
	Mailbox string
	Host    string
}

// Addr returns mailbox@host, or "" for a group marker.
func (a Address) Addr() string {
	if a.Mailbox == "" || a.Host == "" {
		return ""
	}
	return a.Mailbox + "@" + a.Host
}

// Recipients returns To, Cc and Bcc together.
func (e *Envelope) Recipients() []Address {
	out := make([]Address, 0, len(e.To)+len(e.Cc)+len(e.Bcc))
	out = append(out, e.To...)
	out = append(out, e.Cc...)
	return append(out, e.Bcc...)
}

// ErrBadEnvelope means an envelope is not IMAP ENVELOPE syntax.
var ErrBadEnvelope = errors.New("bonnie: malformed envelope")

// ParseEnvelope parses an IMAP ENVELOPE: ( date subject from sender
// reply-to to cc bcc in-reply-to message-id ), with NIL, quoted strings,
// literals and atoms. An empty string is no envelope (nil, nil).
func ParseEnvelope(s string) (*Envelope, error) {
	if s == "" {
		return nil, nil
	}
	p := &sexp{s: s}
	v, err := p.value()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEnvelope, err)
	}
	list, ok := v.([]any)
	if !ok || len(list) != 10 {
		return nil, fmt.Errorf("%w: not a list of 10 fields", ErrBadEnvelope)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	addrs := func(i int) ([]Address, error) {
		if list[i] == nil {
			return nil, nil
		}
		l, ok := list[i].([]any)
		if !ok {
			return nil, fmt.Errorf("%w: field %d is not an address list", ErrBadEnvelope, i+1)
		}
		out := make([]Address, 0, len(l))
		for _, a := range l {
			f, ok := a.([]any)
			if !ok || len(f) != 4 {
				return nil, fmt.Errorf("%w: field %d: an address is not 4 fields", ErrBadEnvelope, i+1)
			}
			out = append(out, Address{Name: str(f[0]), Mailbox: str(f[2]), Host: str(f[3])})
		}
		return out, nil
	}
	e := &Envelope{Date: str(list[0]), Subject: str(list[1]), InReplyTo: str(list[8]), MessageID: str(list[9])}
	for i, dst := range []*[]Address{&e.From, &e.Sender, &e.ReplyTo, &e.To, &e.Cc, &e.Bcc} {
		if *dst, err = addrs(i + 2); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// ParseEnvelope parses the event's vnd.cmu.envelope (nil, nil without one).
func (e *Event) ParseEnvelope() (*Envelope, error) { return ParseEnvelope(e.Envelope) }

// sexp reads IMAP's parenthesised data: lists ([]any), NIL (nil), and
// quoted strings, literals and atoms (string).
type sexp struct {
	s     string
	i     int
	depth int
}

// maxEnvelopeDepth bounds nesting: an envelope is three levels deep.
const maxEnvelopeDepth = 8

func (p *sexp) skipSpace() {
	for p.i < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *sexp) value() (any, error) {
	p.skipSpace()
	if p.i >= len(p.s) {
		return nil, errors.New("unexpected end")
	}
	switch c := p.s[p.i]; c {
	case '(':
		if p.depth++; p.depth > maxEnvelopeDepth {
			return nil, errors.New("nested too deep")
		}
		defer func() { p.depth-- }()
		p.i++
		list := []any{}
		for {
			p.skipSpace()
			if p.i >= len(p.s) {
				return nil, errors.New("unclosed list")
			}
			if p.s[p.i] == ')' {
				p.i++
				return list, nil
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
	case ')':
		return nil, fmt.Errorf("unexpected ) at %d", p.i)
	case '"':
		p.i++
		var b strings.Builder
		for p.i < len(p.s) {
			c := p.s[p.i]
			p.i++
			switch c {
			case '\\':
				if p.i < len(p.s) {
					b.WriteByte(p.s[p.i])
					p.i++
				}
			case '"':
				return b.String(), nil
			default:
				b.WriteByte(c)
			}
		}
		return nil, errors.New("unclosed quoted string")
	case '{':
		end := strings.IndexByte(p.s[p.i:], '}')
		if end < 0 {
			return nil, errors.New("unclosed literal length")
		}
		n, err := strconv.Atoi(strings.TrimSuffix(p.s[p.i+1:p.i+end], "+"))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad literal length %q", p.s[p.i+1:p.i+end])
		}
		p.i += end + 1
		if strings.HasPrefix(p.s[p.i:], "\r\n") {
			p.i += 2
		} else if strings.HasPrefix(p.s[p.i:], "\n") {
			p.i++
		}
		if n > len(p.s)-p.i {
			return nil, errors.New("literal longer than the input")
		}
		v := p.s[p.i : p.i+n]
		p.i += n
		return v, nil
	default:
		start := p.i
		for p.i < len(p.s) && strings.IndexByte(" \t\r\n()\"", p.s[p.i]) < 0 {
			p.i++
		}
		atom := p.s[start:p.i]
		if strings.EqualFold(atom, "NIL") {
			return nil, nil
		}
		return atom, nil
	}
}
