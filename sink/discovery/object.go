package discovery

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-ical"
	"github.com/emersion/go-message"
	"github.com/emersion/go-vcard"

	"github.com/bonnie-archive/bonnie"
)

// Revision is one version of a groupware object: the message a client
// appended to hold it (Kolab stores an object as a message whose Subject
// is the object's UID and whose X-Kolab-Type header names its kind; an
// edit appends the new version and trashes and expunges the old one).
type Revision struct {
	Rev      int             `json:"rev"`
	UID      string          `json:"uid"`
	Kind     string          `json:"kind"`
	Position bonnie.Position `json:"position"`
	Time     time.Time       `json:"time"`
	Event    string          `json:"event"`
	Login    string          `json:"login,omitempty"`
	ActorID  string          `json:"actorId,omitempty"`
	Client   string          `json:"client,omitempty"`
	Session  string          `json:"session,omitempty"`
	Folder   string          `json:"folder"`
	Path     string          `json:"path"`
	Message  string          `json:"message"`
	Digest   string          `json:"sha256"`
	// Ended is what replaced or removed this version's message (its
	// trash, expunge, move...), nil while it is current.
	Ended []Entry `json:"ended,omitempty"`
}

// ObjectHistory is every revision of one object, oldest first.
type ObjectHistory struct {
	UID       string     `json:"uid"`
	Kind      string     `json:"kind"`
	Revisions []Revision `json:"revisions"`
}

// ErrNoBodies: the index was opened without the archive's body store, or
// the body is not in it.
var ErrNoBodies = errors.New("discovery: body not available (is the archive running?)")

// Object returns the revisions of the groupware object with UID uid.
// Objects are recognised from their bodies, so only those the archive
// stored are known.
func (x *Index) Object(ctx context.Context, uid string) (*ObjectHistory, error) {
	rows, err := x.db.QueryContext(ctx, `SELECT o.kind, o.msgkey, o.digest, `+actColumns+`
		FROM objects o JOIN acts a ON a.position = o.position AND a.msgkey = o.msgkey
		WHERE o.uid = ? ORDER BY o.position, o.msgkey`, uid)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	h := &ObjectHistory{UID: uid, Revisions: []Revision{}}
	for rows.Next() {
		var r Revision
		var e Entry
		var t, flags, detail string
		if err := rows.Scan(&r.Kind, &r.Message, &r.Digest, &e.Position, &t, &e.Event, &e.Action, &e.Login, &e.ActorID,
			&e.Client, &e.Session, &e.Service, &e.Folder, &e.Path, &e.FromFolder, &e.FromPath, &e.Owner, &e.OwnerID,
			&e.Message, &e.UID, &e.MessageID, &flags, &e.ACLSubject, &e.ACLRights, &detail); err != nil {
			rows.Close()
			return nil, fmt.Errorf("discovery: %w", err)
		}
		r.Rev, r.UID = len(h.Revisions)+1, uid
		r.Position, r.Time, r.Event = e.Position, parseTime(t), e.Event
		r.Login, r.ActorID, r.Client, r.Session = e.Login, e.ActorID, e.Client, e.Session
		r.Folder, r.Path = e.Folder, e.Path
		h.Kind = r.Kind
		h.Revisions = append(h.Revisions, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	if len(h.Revisions) == 0 {
		return nil, fmt.Errorf("%w: no groupware object %q", ErrNotFound, uid)
	}
	for i := range h.Revisions {
		r := &h.Revisions[i]
		r.Ended, err = x.entries(ctx, `SELECT `+actColumns+` FROM acts a WHERE a.msgkey = ? AND a.position > ?
			AND a.action IN (?, ?, ?, ?, ?) ORDER BY a.time, a.position, a.seq`,
			r.Message, uint64(r.Position), ActTrashed, ActExpunged, ActExpired, ActMoved, ActUntrashed)
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Content is the content of one revision: the object part of its
// message (an iCalendar, vCard or Kolab XML attachment; the whole body
// when none is found).
type Content struct {
	Revision  Revision `json:"revision"`
	MediaType string   `json:"mediaType"`
	Data      []byte   `json:"-"`
	// Text is Data as a string, for JSON.
	Text string `json:"content"`
}

// RevisionContent returns revision rev (1 is the first) of object uid,
// read from the archive's body store and checked against its SHA-256.
func (x *Index) RevisionContent(ctx context.Context, uid string, rev int) (*Content, error) {
	h, err := x.Object(ctx, uid)
	if err != nil {
		return nil, err
	}
	if rev < 1 || rev > len(h.Revisions) {
		return nil, fmt.Errorf("%w: object %q has revisions 1 to %d, not %d", ErrNotFound, uid, len(h.Revisions), rev)
	}
	r := h.Revisions[rev-1]
	if x.blobs == nil || r.Digest == "" {
		return nil, fmt.Errorf("%w: revision %d of %q", ErrNoBodies, rev, uid)
	}
	raw, err := x.blobs.Get(r.Digest) // Get checks the digest
	if err != nil {
		return nil, fmt.Errorf("%w: revision %d of %q: %v", ErrNoBodies, rev, uid, err)
	}
	mt, data := ObjectPart(raw, r.Kind)
	return &Content{Revision: r, MediaType: mt, Data: data, Text: string(data)}, nil
}

// ObjectPart finds the groupware object in a message: the first part
// whose type is kolabType, an iCalendar, vCard or XML type. It returns
// the whole message as message/rfc822 when there is none.
func ObjectPart(raw []byte, kolabType string) (mediaType string, data []byte) {
	e, err := message.Read(bytes.NewReader(raw))
	if e == nil || (err != nil && !message.IsUnknownCharset(err)) {
		return "message/rfc822", raw
	}
	_ = e.Walk(func(_ []int, part *message.Entity, err error) error {
		if data != nil || (err != nil && !message.IsUnknownCharset(err)) {
			return nil
		}
		mt, _, _ := part.Header.ContentType()
		if strings.HasPrefix(mt, "multipart/") {
			return nil
		}
		if mt == kolabType || objectFormat(mt) != "" {
			b, rerr := io.ReadAll(part.Body)
			if rerr == nil {
				mediaType, data = mt, b
			}
		}
		return nil
	})
	if data == nil {
		return "message/rfc822", raw
	}
	return mediaType, data
}

// objectFormat names the parser of a media type: "ical", "vcard", "xml"
// or "" for none.
func objectFormat(mt string) string {
	switch mt = strings.ToLower(mt); {
	case mt == "text/calendar" || mt == "application/ics":
		return "ical"
	case mt == "text/vcard" || mt == "text/x-vcard" || mt == "text/directory":
		return "vcard"
	case strings.HasSuffix(mt, "+xml") || mt == "application/xml" || mt == "text/xml" || strings.HasPrefix(mt, "application/x-vnd.kolab."):
		return "xml"
	}
	return ""
}

// PropertyChange is one property that differs between two revisions.
// From is "" for a property added, To "" for one removed.
type PropertyChange struct {
	Property string `json:"property"`
	From     string `json:"from"`
	To       string `json:"to"`
}

// ObjectDiff is the property-level difference between two revisions.
type ObjectDiff struct {
	UID     string           `json:"uid"`
	From    Revision         `json:"from"`
	To      Revision         `json:"to"`
	Format  string           `json:"format"`
	Changes []PropertyChange `json:"changes"`
}

// Diff compares revisions a and b of object uid property by property
// (iCalendar and vCard with emersion/go-ical and go-vcard, Kolab XML by
// element path).
func (x *Index) Diff(ctx context.Context, uid string, a, b int) (*ObjectDiff, error) {
	ca, err := x.RevisionContent(ctx, uid, a)
	if err != nil {
		return nil, err
	}
	cb, err := x.RevisionContent(ctx, uid, b)
	if err != nil {
		return nil, err
	}
	pa, fa, err := Properties(ca.MediaType, ca.Data)
	if err != nil {
		return nil, fmt.Errorf("discovery: revision %d of %q: %w", a, uid, err)
	}
	pb, fb, err := Properties(cb.MediaType, cb.Data)
	if err != nil {
		return nil, fmt.Errorf("discovery: revision %d of %q: %w", b, uid, err)
	}
	format := fa
	if fa != fb {
		format = fa + "/" + fb
	}
	return &ObjectDiff{UID: uid, From: ca.Revision, To: cb.Revision, Format: format, Changes: DiffProperties(pa, pb)}, nil
}

// Properties flattens an object into property path -> value: for
// iCalendar "VCALENDAR/VEVENT/SUMMARY", for vCard "FN", for XML the
// element path ("event/properties/summary/text"), with "[n]" after a
// name that repeats and parameters or attributes after the value.
func Properties(mediaType string, data []byte) (map[string]string, string, error) {
	out := map[string]string{}
	switch f := objectFormat(mediaType); f {
	case "ical":
		cal, err := ical.NewDecoder(bytes.NewReader(data)).Decode()
		if err != nil {
			return nil, f, err
		}
		flattenComponent(out, "", cal.Component)
		return out, f, nil
	case "vcard":
		card, err := vcard.NewDecoder(bytes.NewReader(data)).Decode()
		if err != nil {
			return nil, f, err
		}
		for name, fields := range card {
			for i, fl := range fields {
				key := name
				if fl.Group != "" {
					key = fl.Group + "." + key
				}
				if len(fields) > 1 {
					key += "[" + strconv.Itoa(i) + "]"
				}
				out[key] = withParams(fl.Value, fl.Params)
			}
		}
		return out, f, nil
	case "xml":
		return out, f, flattenXML(out, data)
	}
	out["content"] = string(data)
	return out, "text", nil
}

func withParams(value string, params map[string][]string) string {
	if len(params) == 0 {
		return value
	}
	var ps []string
	for _, k := range slices.Sorted(maps.Keys(params)) {
		ps = append(ps, k+"="+strings.Join(params[k], ","))
	}
	return value + " (" + strings.Join(ps, "; ") + ")"
}

func flattenComponent(out map[string]string, prefix string, c *ical.Component) {
	path := prefix + c.Name
	for name, props := range c.Props {
		for i, p := range props {
			key := path + "/" + name
			if len(props) > 1 {
				key += "[" + strconv.Itoa(i) + "]"
			}
			out[key] = withParams(p.Value, p.Params)
		}
	}
	count := map[string]int{}
	for _, ch := range c.Children {
		count[ch.Name]++
	}
	seen := map[string]int{}
	for _, ch := range c.Children {
		p := path + "/"
		if count[ch.Name] > 1 {
			// Children of one kind (VEVENT and its exceptions, VALARMs)
			// are told apart by their position.
			flattenComponent(out, p, &ical.Component{Name: ch.Name + "[" + strconv.Itoa(seen[ch.Name]) + "]", Props: ch.Props, Children: ch.Children})
			seen[ch.Name]++
			continue
		}
		flattenComponent(out, p, ch)
	}
}

// flattenXML maps every element with text and every attribute to its
// path.
func flattenXML(out map[string]string, data []byte) error {
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = false
	type level struct {
		path  string
		count map[string]int
		text  strings.Builder
		leaf  bool
	}
	stack := []*level{{count: map[string]int{}}}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		top := stack[len(stack)-1]
		switch t := tok.(type) {
		case xml.StartElement:
			top.leaf = false
			n := top.count[t.Name.Local]
			top.count[t.Name.Local] = n + 1
			path := t.Name.Local
			if top.path != "" {
				path = top.path + "/" + path
			}
			if n > 0 {
				path += "[" + strconv.Itoa(n) + "]"
			}
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || a.Name.Local == "xmlns" {
					continue
				}
				out[path+"/@"+a.Name.Local] = a.Value
			}
			stack = append(stack, &level{path: path, count: map[string]int{}, leaf: true})
		case xml.CharData:
			top.text.Write(t)
		case xml.EndElement:
			if len(stack) == 1 {
				continue
			}
			if s := strings.TrimSpace(top.text.String()); top.leaf || s != "" {
				if s != "" || top.leaf {
					out[top.path] = s
				}
			}
			stack = stack[:len(stack)-1]
		}
	}
}

// DiffProperties lists the properties whose values differ between a and
// b, sorted by property.
func DiffProperties(a, b map[string]string) []PropertyChange {
	out := []PropertyChange{}
	keys := slices.Sorted(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if a[k] != b[k] {
			out = append(out, PropertyChange{Property: k, From: a[k], To: b[k]})
		}
	}
	return out
}
