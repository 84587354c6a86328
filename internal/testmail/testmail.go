// Package testmail makes the messages Bonnie's archive tests and
// benchmarks store: the awkward ones a real mail store holds (8-bit
// headers and bodies, binary attachments, broken MIME, large bodies), as
// exact bytes with CRLF line ends, the way an IMAP server keeps them.
package testmail

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Message is a named test message.
type Message struct {
	Name      string
	MessageID string
	Bytes     []byte
}

func header(msgID, subject string, extra ...string) string {
	h := "From: Sender <sender@example.org>\r\nTo: Alice <alice@example.org>\r\n" +
		"Date: Mon, 02 Nov 2026 10:00:00 +0100\r\nMessage-ID: " + msgID + "\r\nSubject: " + subject + "\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h
}

// EightBit is a message with raw UTF-8 and Latin-1 bytes in its headers
// and body, announced as 8bit.
func EightBit(id string) Message {
	mid := "<8bit-" + id + "@example.org>"
	b := header(mid, "Gr\xc3\xbc\xc3\x9fe aus M\xc3\xbcnchen \xe2\x82\xac",
		"MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit") +
		"\r\nStra\xc3\x9fe, na\xc3\xafve, \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e, and one Latin-1 byte: caf\xe9.\r\n" +
		"From here on a line that mbox would quote.\r\nFrom the start of a line, too.\r\n>From already quoted.\r\n"
	return Message{Name: "8-bit", MessageID: mid, Bytes: []byte(b)}
}

// BinaryAttachment is a multipart message whose second part is n random
// bytes, base64-encoded, and whose third part is 8-bit binary sent as is
// (Content-Transfer-Encoding: binary; no NUL, CR or LF inside a line,
// which IMAP servers refuse).
func BinaryAttachment(id string, n int, seed uint64) Message {
	mid := "<binary-" + id + "@example.org>"
	r := rand.New(rand.NewPCG(seed, 1))
	raw := make([]byte, n)
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	var b strings.Builder
	b.WriteString(header(mid, "binary attachment", "MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="=_b0undary"`))
	b.WriteString("\r\n--=_b0undary\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n")
	b.WriteString("--=_b0undary\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n" +
		"Content-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(raw)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	b.WriteString("--=_b0undary\r\nContent-Type: application/octet-stream; name=\"raw.bin\"\r\nContent-Transfer-Encoding: binary\r\n\r\n")
	line := make([]byte, 0, 80)
	for i := 0; i < n/4; i++ {
		c := byte(r.Uint32())
		if c == 0 || c == '\r' || c == '\n' {
			c = 0xff
		}
		line = append(line, c)
		if len(line) == 78 {
			b.Write(line)
			b.WriteString("\r\n")
			line = line[:0]
		}
	}
	b.Write(line)
	b.WriteString("\r\n--=_b0undary--\r\n")
	return Message{Name: "binary attachment", MessageID: mid, Bytes: []byte(b.String())}
}

// BrokenMIME is a message a MIME parser chokes on: a multipart whose
// boundary never appears closed, a part with invalid base64, a
// Content-Type with an unterminated quote, a header folded oddly, and no
// final line end.
func BrokenMIME(id string) Message {
	mid := "<broken-" + id + "@example.org>"
	b := header(mid, "=?utf-8?B?bm90IHZhbGlk?= =?broken", "MIME-Version: 1.0",
		"Content-Type: multipart/mixed; boundary=\"never-closed",
		"X-Folded: first line\r\n\tsecond line\r\n  third") +
		"\r\n--never-closed\r\nContent-Type: text/plain; charset=\"unknown-8bit\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n!!!! this is not base64 ====\r\n" +
		"--never-closed\r\nContent-Type: text/html\r\n\r\n<p>unterminated <b>html\r\n" +
		"--never-closed-but-not-quite\r\nends without a line end"
	return Message{Name: "broken MIME", MessageID: mid, Bytes: []byte(b)}
}

// Large is a message of about size bytes: text and a base64 attachment.
func Large(id string, size int, seed uint64) Message {
	mid := "<large-" + id + "@example.org>"
	// n random bytes make 4n/3 of base64 (with line ends) and n/4 of raw
	// binary: about 1.62n in all.
	m := BinaryAttachment(id, size*100/162, seed)
	b := bytes.Replace(m.Bytes, []byte(m.MessageID), []byte(mid), 1)
	b = bytes.Replace(b, []byte("Subject: binary attachment"), []byte("Subject: large"), 1)
	return Message{Name: "large", MessageID: mid, Bytes: b}
}

// Typical is a plain message of about size bytes of text, different for
// each id.
func Typical(id string, size int) Message {
	mid := "<typical-" + id + "@example.org>"
	var b strings.Builder
	b.WriteString(header(mid, "Quarterly figures "+id, "MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii"))
	b.WriteString("\r\n")
	words := []string{"the", "figures", "for", "this", "quarter", "are", "attached", "please", "review", "before",
		"Monday", "budget", "meeting", "regards", "invoice", "project", "customer", "report", id}
	r := rand.New(rand.NewPCG(uint64(len(id)), uint64(size)))
	for i := 0; b.Len() < size; i++ {
		b.WriteString(words[r.IntN(len(words))])
		if i%12 == 11 {
			b.WriteString("\r\n")
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteString("\r\n")
	return Message{Name: "typical", MessageID: mid, Bytes: []byte(b.String())}
}

// Set is one of each awkward kind, the large one of about largeSize bytes.
func Set(id string, largeSize int) []Message {
	return []Message{EightBit(id), BinaryAttachment(id, 20_000, 7), BrokenMIME(id), Large(id, largeSize, 9)}
}

// LMTP is a message for LMTP delivery (LF line ends are fine there).
func LMTP(id string) []byte {
	return fmt.Appendf(nil, "From: News <news@example.org>\nTo: staff@example.org\nMessage-ID: <lmtp-%s@example.org>\nSubject: to everyone\n\nHello all, %s.\n", id, id)
}

// Prose returns a few hundred kilobytes of real English text and HTML to
// cut message bodies from (the Go specification, which every Go
// installation has), or nil when it cannot be read.
func Prose() []byte {
	b, err := os.ReadFile(filepath.Join(runtime.GOROOT(), "doc", "go_spec.html"))
	if err != nil {
		return nil
	}
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// Realistic is a message of about size bytes as mail really arrives: a
// relayed header (Received lines, a DKIM signature, list headers), then
// a body cut from prose at a place that depends on id. Without prose it
// falls back to Typical.
func Realistic(id string, size int, prose []byte) Message {
	if len(prose) < 2*size {
		return Typical(id, size)
	}
	mid := "<real-" + id + "@mail.example.org>"
	h := fnv64(id)
	var b strings.Builder
	fmt.Fprintf(&b, "Return-Path: <sender-%x@example.org>\r\n", h%9973)
	for i := 0; i < 3; i++ {
		fmt.Fprintf(&b, "Received: from mx%d.example.net (mx%d.example.net [192.0.2.%d])\r\n\tby mail.example.org (Postfix) with ESMTPS id %X\r\n\tfor <alice@example.org>; Mon, 2 Nov 2026 10:%02d:%02d +0100 (CET)\r\n",
			i, i, (h>>uint(i*8))%250, h>>uint(i*4), (h>>3)%60, (h>>9)%60)
	}
	fmt.Fprintf(&b, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=2026;\r\n\th=from:to:subject:date:message-id; bh=%s;\r\n\tb=%s\r\n",
		base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("%032x", h))), base64.StdEncoding.EncodeToString([]byte(strings.Repeat(fmt.Sprintf("%x", h), 12))))
	b.WriteString(header(mid, "Re: "+id+" review", "MIME-Version: 1.0", "Content-Type: text/html; charset=utf-8",
		"List-Id: <staff.example.org>", "X-Mailer: Bonnie test corpus"))
	b.WriteString("\r\n")
	// Whole lines only: a cut CRLF would be a bare CR or LF, which IMAP
	// servers refuse.
	start := int(h % uint64(len(prose)-size))
	start += bytes.Index(prose[start:], []byte("\r\n")) + 2
	body := prose[start : start+max(0, size-b.Len())]
	body = body[:bytes.LastIndex(body, []byte("\r\n"))+2]
	b.Write(body)
	return Message{Name: "realistic", MessageID: mid, Bytes: []byte(b.String())}
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
