package discovery

import (
	"bytes"
	"io"
	"mime"
	"strings"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decode the charsets mail uses
	"github.com/emersion/go-message/mail"

	"github.com/bonnie-archive/bonnie"
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

// parseEnvelope reads vnd.cmu.envelope (bonnie.ParseEnvelope) into the
// strings the index keeps, words decoded. A malformed envelope gives
// empty strings.
func parseEnvelope(s string) (subject, sender, recipients, messageID string) {
	e, err := bonnie.ParseEnvelope(s)
	if err != nil || e == nil {
		return
	}
	dec := new(mime.WordDecoder)
	str := func(s string) string {
		if d, err := dec.DecodeHeader(s); err == nil {
			return d
		}
		return s
	}
	addrs := func(l []bonnie.Address) []string {
		var out []string
		for _, a := range l {
			if a.Mailbox == "" {
				continue
			}
			addr := a.Mailbox
			if a.Host != "" {
				addr += "@" + a.Host
			}
			out = append(out, formatAddress(str(a.Name), addr))
		}
		return out
	}
	subject = str(e.Subject)
	sender = strings.Join(addrs(e.From), ", ")
	recipients = strings.Join(addrs(e.Recipients()), ", ")
	messageID = str(e.MessageID)
	return
}
