package intercept

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
)

// Handover is what a destination is given for one record of the log that
// an interception covers: the record (event, changes, position, hash) and
// the bodies of the messages it added.
type Handover struct {
	Interception string `json:"interception"`
	Warrant      string `json:"warrant"`
	// MessageID is the idempotency key of the record: "<interception
	// id>/<position>"; a body's is "<MessageID>/<uid>".
	MessageID string        `json:"messageId"`
	Record    bonnie.Record `json:"record"`
	Bodies    []Body        `json:"bodies,omitempty"`
}

// Body is one message body handed over, its bytes exactly as archived.
type Body struct {
	UID    uint32 `json:"uid"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Data   []byte `json:"-"`
}

// BodyMessageID is the idempotency key of one body of a handover.
func (h *Handover) BodyMessageID(b Body) string {
	return h.MessageID + "/" + strconv.FormatUint(uint64(b.UID), 10)
}

// Destination receives handovers, in log order. Deliver returns nil only
// once the destination holds all of them durably (a broker's publisher confirms, a
// file synced and renamed into place). It may be called again with a
// handover it already holds (after a crash, or an error after part of it
// was written): the destination must make that harmless, by the message
// ids.
type Destination interface {
	Deliver(ctx context.Context, hs []*Handover) error
	// String names the destination without secrets.
	String() string
	Close() error
}

// ParseDestination checks a destination string: "amqp://" or "amqps://"
// URL (a durable queue, see AMQP) or "dir:PATH" (a directory, see Dir).
func ParseDestination(dest string) (kind string, err error) {
	switch {
	case strings.HasPrefix(dest, "dir:"):
		if !filepath.IsAbs(strings.TrimPrefix(dest, "dir:")) {
			return "", fmt.Errorf("intercept: destination %q: the directory must be an absolute path", dest)
		}
		return "dir", nil
	case strings.HasPrefix(dest, "amqp://"), strings.HasPrefix(dest, "amqps://"):
		u, err := url.Parse(dest)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("intercept: destination %q is not an AMQP URL", redact(dest))
		}
		return "amqp", nil
	}
	return "", fmt.Errorf("intercept: destination %q: want amqp://HOST/?queue=NAME or dir:/ABSOLUTE/PATH", redact(dest))
}

func redact(dest string) string {
	if u, err := url.Parse(dest); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return dest
}

// Open opens the destination of interception id. For AMQP, password
// (when not nil) supplies the password of a URL that has none.
func Open(dest, id string, password func(u *url.URL) (string, error)) (Destination, error) {
	kind, err := ParseDestination(dest)
	if err != nil {
		return nil, err
	}
	if kind == "dir" {
		return &Dir{Path: strings.TrimPrefix(dest, "dir:")}, nil
	}
	u, _ := url.Parse(dest)
	queue := u.Query().Get("queue")
	if queue == "" {
		queue = "bonnie.intercept." + id
	}
	q := u.Query()
	q.Del("queue")
	u.RawQuery = q.Encode()
	shown := u.String()
	if password != nil && u.User != nil {
		if _, has := u.User.Password(); !has {
			pw, err := password(u)
			if err != nil {
				return nil, fmt.Errorf("intercept: password for %s: %w", shown, err)
			}
			u.User = url.UserPassword(u.User.Username(), pw)
		}
	}
	return &AMQP{URL: u.String(), Queue: queue, shown: redact(shown)}, nil
}

// AMQP delivers to a durable RabbitMQ queue (declared if missing) through
// the default exchange, with publisher confirms: each record is one
// persistent message, content type application/json, whose body is the
// Handover's JSON and whose AMQP message-id is Handover.MessageID; each
// body follows as one message/rfc822 message with message-id
// BodyMessageID. Headers x-bonnie-interception, x-bonnie-warrant,
// x-bonnie-position, x-bonnie-kind ("record" or "body"), and for a body
// x-bonnie-sha256 and x-bonnie-uid, say what each is.
//
// After a failure the connection is dropped and the next Deliver dials
// again; a handover published again after a crash carries the same
// message ids, by which the receiver discards what it holds already.
type AMQP struct {
	URL, Queue string
	shown      string

	mu   sync.Mutex
	conn *amqp091.Connection
	ch   *amqp091.Channel
}

func (a *AMQP) String() string { return redact(a.shown) + " queue " + a.Queue }

func (a *AMQP) channel() (*amqp091.Channel, error) {
	if a.ch != nil && !a.ch.IsClosed() {
		return a.ch, nil
	}
	a.drop()
	conn, err := amqp091.DialConfig(a.URL, amqp091.Config{Heartbeat: 10 * time.Second, Dial: amqp091.DefaultDial(10 * time.Second)})
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err == nil {
		_, err = ch.QueueDeclare(a.Queue, true, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	a.conn, a.ch = conn, ch
	return ch, nil
}

func (a *AMQP) drop() {
	if a.conn != nil {
		a.conn.Close()
	}
	a.conn, a.ch = nil, nil
}

// Deliver publishes the records and their bodies and waits for the
// broker's confirms (at most ConfirmTimeout).
func (a *AMQP) Deliver(ctx context.Context, hs []*Handover) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, ConfirmTimeout)
	defer cancel()
	if err := a.deliver(ctx, hs); err != nil {
		a.drop()
		return fmt.Errorf("intercept: %s: %w", a, err)
	}
	return nil
}

// ConfirmTimeout bounds how long AMQP.Deliver waits for the broker: a
// connection that died silently is given up and dialled again.
const ConfirmTimeout = 15 * time.Second

func (a *AMQP) deliver(ctx context.Context, hs []*Handover) error {
	ch, err := a.channel()
	if err != nil {
		return err
	}
	var confirms []*amqp091.DeferredConfirmation
	for _, h := range hs {
		msgs, err := publishings(h)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", a.Queue, false, false, m)
			if err != nil {
				return err
			}
			confirms = append(confirms, dc)
		}
	}
	for _, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("the broker refused (nack) a message")
		}
	}
	return nil
}

// publishings returns the messages of one handover.
func publishings(h *Handover) ([]amqp091.Publishing, error) {
	js, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	headers := amqp091.Table{
		"x-bonnie-interception": h.Interception,
		"x-bonnie-warrant":      h.Warrant,
		"x-bonnie-position":     int64(h.Record.Position),
	}
	msgs := []amqp091.Publishing{{
		Headers: with(headers, amqp091.Table{"x-bonnie-kind": "record"}), ContentType: "application/json",
		DeliveryMode: amqp091.Persistent, MessageId: h.MessageID, Timestamp: time.Now(), Type: "vnd.bonnie.InterceptRecord", Body: js,
	}}
	for _, b := range h.Bodies {
		msgs = append(msgs, amqp091.Publishing{
			Headers:     with(headers, amqp091.Table{"x-bonnie-kind": "body", "x-bonnie-sha256": b.SHA256, "x-bonnie-uid": int64(b.UID)}),
			ContentType: "message/rfc822", DeliveryMode: amqp091.Persistent, MessageId: h.BodyMessageID(b),
			Timestamp: time.Now(), Type: "vnd.bonnie.InterceptBody", Body: b.Data,
		})
	}
	return msgs, nil
}

func with(a, b amqp091.Table) amqp091.Table {
	out := amqp091.Table{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// Close closes the connection.
func (a *AMQP) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.drop()
	return nil
}

// Dir delivers to a directory: for each record, the file
// POSITION-ID.jsonl (POSITION zero-padded to 20 digits, ID the
// interception's id) holding the Handover as one line of JSON, and when
// the record added messages, POSITION-ID.mbox holding their bodies
// (mboxrd, each "From " line naming its SHA-256). Concatenated in name
// order the files are one JSON-lines stream and one mbox. Each file is
// written to a temporary name, synced and renamed into place (and the
// directory synced), so a file that exists is complete; a file that
// exists already is left as it is, so a handover given twice is written
// once. The .jsonl file is written last.
type Dir struct{ Path string }

func (d *Dir) String() string { return "dir:" + d.Path }

// Close does nothing.
func (d *Dir) Close() error { return nil }

// Deliver writes the handovers' files.
func (d *Dir) Deliver(ctx context.Context, hs []*Handover) error {
	for _, h := range hs {
		if err := d.deliver(h); err != nil {
			return err
		}
	}
	return nil
}

func (d *Dir) deliver(h *Handover) error {
	stem := fmt.Sprintf("%020d-%s", h.Record.Position, safe(h.Interception))
	if len(h.Bodies) > 0 {
		var mb bytes.Buffer
		for _, b := range h.Bodies {
			writeMbox(&mb, b, h.Record.Event.Time)
		}
		if err := d.write(stem+".mbox", mb.Bytes()); err != nil {
			return err
		}
	}
	js, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return d.write(stem+".jsonl", append(js, '\n'))
}

func (d *Dir) write(name string, data []byte) error {
	final := filepath.Join(d.Path, name)
	if _, err := os.Lstat(final); err == nil {
		return nil // delivered before
	}
	f, err := os.CreateTemp(d.Path, ".tmp-"+name+"-*")
	if err != nil {
		return fmt.Errorf("intercept: %s: %w", d, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err == nil {
		err = syncDir(d.Path)
	}
	if err != nil {
		return fmt.Errorf("intercept: %s: %w", d, err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func safe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == ' ' || r == '.' {
			return '_'
		}
		return r
	}, s)
}

// writeMbox appends one body in mboxrd form: a "From " line, the body
// with "From " lines (after any '>') quoted by one more '>', LF line
// ends as in an mbox file, and an empty line.
func writeMbox(w *bytes.Buffer, b Body, t time.Time) {
	fmt.Fprintf(w, "From bonnie-intercept-%s %s\n", b.SHA256, t.UTC().Format("Mon Jan _2 15:04:05 2006"))
	sc := bufio.NewScanner(bytes.NewReader(b.Data))
	sc.Buffer(make([]byte, 0, 64<<10), len(b.Data)+1)
	for sc.Scan() {
		line := bytes.TrimSuffix(sc.Bytes(), []byte("\r"))
		if bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From ")) {
			w.WriteByte('>')
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	w.WriteByte('\n')
}
