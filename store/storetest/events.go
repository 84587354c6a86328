package storetest

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// captures are real notifications from Cyrus 3.6.1 (datagram framing),
// copied from the project's capture set so the suite needs nothing outside
// the module at test time.
//
//go:embed testdata/*.bin
var captures embed.FS

// Captures returns one event per embedded capture, in capture order, built
// as literals with Raw set to the capture's bytes. The suite does not use
// the decoder, so that a log can be tested on its own; only the fields a
// log stores and tests look at are filled in.
func Captures() []*bonnie.Event {
	names, err := fs.Glob(captures, "testdata/*.bin")
	if err != nil {
		panic(err) // the pattern is constant
	}
	out := make([]*bonnie.Event, 0, len(names))
	for _, n := range names {
		raw, err := captures.ReadFile(n)
		if err != nil {
			panic(err) // embedded: cannot fail
		}
		out = append(out, fromRaw(raw))
	}
	return out
}

// Capture returns the event built from the capture whose file name starts
// with prefix ("097" for the 15 KB MessageAppend), or nil.
func Capture(prefix string) *bonnie.Event {
	names, _ := fs.Glob(captures, "testdata/"+prefix+"*.bin")
	if len(names) == 0 {
		return nil
	}
	raw, _ := captures.ReadFile(names[0])
	return fromRaw(raw)
}

// fromRaw splits Cyrus's datagram framing (method, class, priority, user,
// mailbox, option count, options, message, optional file path, each NUL
// terminated) and reads a few fields of an EVENT's JSON.
func fromRaw(raw []byte) *bonnie.Event {
	parts := strings.Split(string(raw), "\x00")
	ev := &bonnie.Event{Framing: bonnie.FramingDatagram, Raw: bytes.Clone(raw)}
	field := func(i int) string {
		if i < len(parts) {
			return parts[i]
		}
		return ""
	}
	ev.Method, ev.Class, ev.Priority, ev.NotifyUser, ev.NotifyMailbox = field(0), bonnie.Class(field(1)), field(2), field(3), field(4)
	nopt, _ := strconv.Atoi(field(5))
	for i := range nopt {
		ev.Options = append(ev.Options, field(6+i))
	}
	msg := field(6 + nopt)
	ev.FilePath = field(7 + nopt)
	switch ev.Class {
	case bonnie.ClassMail:
		ev.Type, ev.Message = bonnie.MailNotification, msg
	case bonnie.ClassSieve:
		ev.Type, ev.Message = bonnie.SieveNotification, msg
	default:
		var j struct {
			Event     string `json:"event"`
			Timestamp string `json:"timestamp"`
			Service   string `json:"service"`
			User      string `json:"user"`
			URI       string `json:"uri"`
			MailboxID string `json:"mailboxID"`
			Modseq    uint64 `json:"modseq"`
			PID       int    `json:"pid"`
		}
		_ = json.Unmarshal([]byte(msg), &j)
		ev.Type, _ = bonnie.ParseEventType(j.Event)
		ev.Name, ev.Timestamp, ev.Service, ev.User, ev.URI, ev.MailboxID, ev.Modseq, ev.PID =
			j.Event, j.Timestamp, j.Service, j.User, j.URI, j.MailboxID, j.Modseq, j.PID
		if t, err := time.Parse(time.RFC3339Nano, j.Timestamp); err == nil {
			ev.Time = t.UTC()
		}
	}
	if ev.Time.IsZero() {
		ev.Time = time.Date(2026, 11, 28, 20, 23, 40, 0, time.UTC)
	}
	return ev
}

// Variant returns a copy of ev that is a different notification: its
// timestamp moved by i milliseconds, in the event and in the raw bytes
// (so its key differs), everything else as captured. Tests and benchmarks
// use it to make many distinct, realistic events from a few captures.
func Variant(ev *bonnie.Event, i int) *bonnie.Event {
	v := *ev
	v.Time = ev.Time.Add(time.Duration(i) * time.Millisecond)
	if ev.Timestamp != "" {
		v.Timestamp = v.Time.Format("2006-01-02T15:04:05.000Z07:00")
		v.Raw = bytes.Replace(ev.Raw, []byte(`"timestamp":"`+ev.Timestamp+`"`), []byte(`"timestamp":"`+v.Timestamp+`"`), 1)
	} else {
		// MAIL and SIEVE carry no time: vary the message text instead.
		v.Message = fmt.Sprintf("%s\nX-Variant: %d", ev.Message, i)
		v.Raw = bytes.Replace(ev.Raw, []byte(ev.Message), []byte(v.Message), 1)
	}
	return &v
}
