package dlist

import (
	"strings"
	"unicode/utf8"
)

// maxReplyText keeps a reply's text a quoted string: Cyrus writes strings
// of 1024 bytes or more as literals and a reply has no need to be long.
const maxReplyText = 1000

// Reply builds the one-line answer Cyrus waits for after a request. Cyrus
// only checks that the line parses and logs its first atom, but the
// synchronous protocol means "OK" is our promise that the notification is
// safe: send it only once the event is durable. ok false gives a NO line,
// whose text (sanitised to one quoted line) ends up in Cyrus's syslog.
func Reply(ok bool, text string) []byte {
	word := "NO"
	if ok {
		word = "OK"
	}
	if text == "" {
		return []byte(word + " NIL\r\n")
	}
	return []byte(word + " " + quote(text) + "\r\n")
}

// quote writes text as an atom when it can be one, else as a quoted string,
// with line breaks and other control characters replaced by spaces.
func quote(text string) string {
	if len(text) > maxReplyText {
		cut := maxReplyText
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	atom := !equalFold(text, "NIL")
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c < 0x20 || c == 0x7f:
			c = ' '
			atom = false
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			atom = false
		case c == ' ' || c == '(' || c == ')' || c == '{' || c == '%' || c == '*' || c >= 0x80:
			atom = false
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	if atom {
		return text
	}
	return b.String()
}
