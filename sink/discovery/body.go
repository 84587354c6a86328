package discovery

import (
	"bytes"
	"io"
	"mime"
	"strings"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decode the charsets mail uses
	"github.com/emersion/go-message/mail"
)

// maxText bounds the text of one body indexed for full-text search.
const maxText = 1 << 20

// bodyInfo is what the index reads from a stored body.
type bodyInfo struct {
	messageID, subject string
	sender, recipients string
	kolabType          string
	text               string
}

// readBody parses the body stored under digest (nil when it cannot be
// read: the index then keeps what the notification said).
func (x *Index) readBody(digest string) *bodyInfo {
	raw, err := x.blobs.Get(digest)
	if err != nil {
		return nil
	}
	return parseBody(raw)
}

func parseBody(raw []byte) *bodyInfo {
	e, err := message.Read(bytes.NewReader(raw))
	if e == nil || (err != nil && !message.IsUnknownCharset(err)) {
		return nil
	}
	h := mail.Header{Header: e.Header}
	bi := &bodyInfo{kolabType: strings.TrimSpace(e.Header.Get("X-Kolab-Type"))}
	bi.subject, _ = h.Subject()
	if id, err := h.MessageID(); err == nil && id != "" {
		bi.messageID = "<" + id + ">"
	}
	bi.sender = addressList(&h, "From")
	var rcpt []string
	for _, k := range []string{"To", "Cc", "Bcc"} {
		if s := addressList(&h, k); s != "" {
			rcpt = append(rcpt, s)
		}
	}
	bi.recipients = strings.Join(rcpt, ", ")
	var text strings.Builder
	_ = e.Walk(func(_ []int, part *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) {
			return nil
		}
		mt, _, _ := part.Header.ContentType()
		if mt == "" {
			mt = "text/plain"
		}
		if !strings.HasPrefix(mt, "text/") || text.Len() >= maxText {
			return nil
		}
		b, _ := io.ReadAll(io.LimitReader(part.Body, int64(maxText-text.Len())))
		if mt == "text/html" {
			b = stripTags(b)
		}
		text.Write(b)
		text.WriteByte('\n')
		return nil
	})
	bi.text = text.String()
	return bi
}

func addressList(h *mail.Header, key string) string {
	list, err := h.AddressList(key)
	if err != nil || len(list) == 0 {
		v, _ := h.Text(key)
		return v
	}
	out := make([]string, 0, len(list))
	for _, a := range list {
		out = append(out, formatAddress(a.Name, a.Address))
	}
	return strings.Join(out, ", ")
}

func formatAddress(name, addr string) string {
	if name == "" {
		return addr
	}
	return name + " <" + addr + ">"
}

// stripTags drops HTML markup, keeping the text between tags.
func stripTags(b []byte) []byte {
	out := make([]byte, 0, len(b))
	in := false
	for _, c := range b {
		switch {
		case c == '<':
			in = true
		case c == '>':
			in = false
			out = append(out, ' ')
		case !in:
			out = append(out, c)
		}
	}
	return out
}

// parseEnvelope reads vnd.cmu.envelope, an IMAP ENVELOPE (RFC 3501):
// (date subject from sender reply-to to cc bcc in-reply-to message-id).
// It returns what it can; a malformed envelope gives empty strings.
func parseEnvelope(s string) (subject, sender, recipients, messageID string) {
	if s == "" {
		return
	}
	p := &sexpParser{s: s}
	v, ok := p.value()
	list, isList := v.([]any)
	if !ok || !isList || len(list) < 10 {
		return
	}
	dec := new(mime.WordDecoder)
	str := func(v any) string {
		s, _ := v.(string)
		if d, err := dec.DecodeHeader(s); err == nil {
			return d
		}
		return s
	}
	addrs := func(v any) []string {
		l, _ := v.([]any)
		var out []string
		for _, a := range l {
			f, _ := a.([]any)
			if len(f) < 4 {
				continue
			}
			mbox, host := str(f[2]), str(f[3])
			if mbox == "" {
				continue
			}
			addr := mbox
			if host != "" {
				addr += "@" + host
			}
			out = append(out, formatAddress(str(f[0]), addr))
		}
		return out
	}
	subject = str(list[1])
	sender = strings.Join(addrs(list[2]), ", ")
	var rcpt []string
	for _, i := range []int{5, 6, 7} {
		rcpt = append(rcpt, addrs(list[i])...)
	}
	recipients = strings.Join(rcpt, ", ")
	messageID = str(list[9])
	return
}

// sexpParser reads IMAP data: NIL, atoms, quoted strings, literals and
// parenthesised lists (lists become []any, NIL nil, the rest string).
type sexpParser struct {
	s string
	i int
}

func (p *sexpParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\r' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *sexpParser) value() (any, bool) {
	p.skipSpace()
	if p.i >= len(p.s) {
		return nil, false
	}
	switch c := p.s[p.i]; c {
	case '(':
		p.i++
		list := []any{}
		for {
			p.skipSpace()
			if p.i >= len(p.s) {
				return nil, false
			}
			if p.s[p.i] == ')' {
				p.i++
				return list, true
			}
			v, ok := p.value()
			if !ok {
				return nil, false
			}
			list = append(list, v)
		}
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
				return b.String(), true
			default:
				b.WriteByte(c)
			}
		}
		return nil, false
	case '{':
		end := strings.IndexByte(p.s[p.i:], '}')
		if end < 0 {
			return nil, false
		}
		n := 0
		for _, d := range strings.TrimSuffix(p.s[p.i+1:p.i+end], "+") {
			if d < '0' || d > '9' {
				return nil, false
			}
			n = n*10 + int(d-'0')
		}
		p.i += end + 1
		if strings.HasPrefix(p.s[p.i:], "\r\n") {
			p.i += 2
		} else if strings.HasPrefix(p.s[p.i:], "\n") {
			p.i++
		}
		if p.i+n > len(p.s) {
			return nil, false
		}
		v := p.s[p.i : p.i+n]
		p.i += n
		return v, true
	default:
		start := p.i
		for p.i < len(p.s) && p.s[p.i] != ' ' && p.s[p.i] != '(' && p.s[p.i] != ')' {
			p.i++
		}
		atom := p.s[start:p.i]
		if strings.EqualFold(atom, "NIL") {
			return nil, true
		}
		return atom, true
	}
}
