package intercept

import (
	"strconv"
	"strings"
)

// envelopeAddresses returns the mail addresses (local@domain, lower-cased)
// of an IMAP ENVELOPE as Cyrus sends it in vnd.cmu.envelope: from, sender,
// reply-to, to, cc and bcc. What cannot be parsed yields what was read so
// far: the envelope is a hint for matching senders and recipients, the
// actor and the mailbox owner come from the event's identities.
func envelopeAddresses(env string) []string {
	if env == "" {
		return nil
	}
	p := &envParser{s: env}
	v, ok := p.value()
	list, isList := v.([]any)
	if !ok || !isList {
		return nil
	}
	var out []string
	// ("date" "subject" from sender reply-to to cc bcc "in-reply-to" "message-id")
	for i := 2; i < len(list) && i < 8; i++ {
		addrs, _ := list[i].([]any)
		for _, a := range addrs {
			parts, _ := a.([]any)
			if len(parts) != 4 {
				continue
			}
			mailbox, _ := parts[2].(string)
			host, _ := parts[3].(string)
			if mailbox == "" || host == "" { // group syntax markers
				continue
			}
			out = append(out, strings.ToLower(mailbox+"@"+host))
		}
	}
	return out
}

// envParser reads IMAP's parenthesised syntax: lists, quoted strings,
// literals, NIL (nil) and atoms.
type envParser struct {
	s string
	i int
}

func (p *envParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\r' || p.s[p.i] == '\n' || p.s[p.i] == '\t') {
		p.i++
	}
}

// value reads one value; false at the end of input or on a syntax error.
func (p *envParser) value() (any, bool) {
	p.skipSpace()
	if p.i >= len(p.s) {
		return nil, false
	}
	switch c := p.s[p.i]; c {
	case '(':
		p.i++
		var list []any
		for {
			p.skipSpace()
			if p.i >= len(p.s) {
				return list, false
			}
			if p.s[p.i] == ')' {
				p.i++
				return list, true
			}
			v, ok := p.value()
			if !ok {
				return list, false
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
		n, err := strconv.Atoi(strings.TrimSuffix(p.s[p.i+1:p.i+end], "+"))
		p.i += end + 1
		if p.i < len(p.s) && p.s[p.i] == '\r' {
			p.i++
		}
		if p.i < len(p.s) && p.s[p.i] == '\n' {
			p.i++
		}
		if err != nil || n < 0 || p.i+n > len(p.s) {
			return nil, false
		}
		v := p.s[p.i : p.i+n]
		p.i += n
		return v, true
	case ')':
		return nil, false
	default:
		start := p.i
		for p.i < len(p.s) && !strings.ContainsRune(" ()\"", rune(p.s[p.i])) {
			p.i++
		}
		atom := p.s[start:p.i]
		if strings.EqualFold(atom, "NIL") {
			return nil, true
		}
		return atom, true
	}
}
