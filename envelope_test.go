package bonnie_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/bonnie-archive/bonnie"
)

func TestParseEnvelope(t *testing.T) {
	bob := bonnie.Address{Name: "Bob Sender", Mailbox: "bob", Host: "example.org"}
	for _, tc := range []struct {
		name string
		in   string
		want *bonnie.Envelope
		err  bool
	}{
		{"as Cyrus 3.6.1 sends it (capture 052)",
			`("Mon, 02 Jan 2023 10:05:00 +0000" "delivered via LMTP" (("Bob Sender" NIL "bob" "example.org")) (("Bob Sender" NIL "bob" "example.org")) (("Bob Sender" NIL "bob" "example.org")) (("Alice" NIL "alice" "example.org")) NIL NIL NIL "<harness-5@example.org>")`,
			&bonnie.Envelope{Date: "Mon, 02 Jan 2023 10:05:00 +0000", Subject: "delivered via LMTP",
				From: []bonnie.Address{bob}, Sender: []bonnie.Address{bob}, ReplyTo: []bonnie.Address{bob},
				To: []bonnie.Address{{Name: "Alice", Mailbox: "alice", Host: "example.org"}}, MessageID: "<harness-5@example.org>"}, false},
		{"quoted specials, a literal, a group, cc and bcc",
			"(NIL {5}\r\nhi (x ((\"A \\\"Q\\\"\" NIL \"A\" \"Example.ORG\")) NIL NIL ((NIL NIL \"team\" NIL)(NIL NIL \"c\" \"d.e\")(NIL NIL NIL NIL)) ((NIL NIL \"cc\" \"x.y\")) ((NIL NIL \"bcc\" \"x.y\")) \"<r@x>\" NIL)",
			&bonnie.Envelope{Subject: "hi (x",
				From: []bonnie.Address{{Name: `A "Q"`, Mailbox: "A", Host: "Example.ORG"}},
				To:   []bonnie.Address{{Mailbox: "team"}, {Mailbox: "c", Host: "d.e"}, {}},
				Cc:   []bonnie.Address{{Mailbox: "cc", Host: "x.y"}}, Bcc: []bonnie.Address{{Mailbox: "bcc", Host: "x.y"}},
				InReplyTo: "<r@x>"}, false},
		{"none", "", nil, false},
		{"unclosed", `("d" "s" ((NIL NIL "a" "b.c")) (`, nil, true},
		{"nine fields", `(NIL NIL NIL NIL NIL NIL NIL NIL NIL)`, nil, true},
		{"an address of three fields", `(NIL NIL ((NIL "a" "b")) NIL NIL NIL NIL NIL NIL NIL)`, nil, true},
		{"a literal longer than the input", `(NIL {99}` + "\r\n" + `x NIL NIL NIL NIL NIL NIL NIL NIL)`, nil, true},
		{"a huge literal length", `(NIL {99999999999999999999}` + "\r\n" + `x)`, nil, true},
		{"nested too deep", `((((((((((((x))))))))))))`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bonnie.ParseEnvelope(tc.in)
			if tc.err {
				if !errors.Is(err, bonnie.ErrBadEnvelope) {
					t.Fatalf("err %v, want ErrBadEnvelope", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if a := (bonnie.Address{Mailbox: "team"}); a.Addr() != "" {
		t.Errorf("a group marker has the address %q", a.Addr())
	}
}

// Every envelope in the real captures parses.
func TestParseEnvelopeCaptures(t *testing.T) {
	n := 0
	for i, raw := range captures(t) {
		ev, err := bonnie.Decode(raw)
		if err != nil || ev.Envelope == "" {
			continue
		}
		env, err := ev.ParseEnvelope()
		if err != nil || env == nil || len(env.From) == 0 {
			t.Errorf("capture %d: %v %+v", i, err, env)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no capture has an envelope")
	}
}

// FuzzParseEnvelope: vnd.cmu.envelope is outside input; nothing panics
// or runs away, and what parses has its ten fields.
func FuzzParseEnvelope(f *testing.F) {
	for _, raw := range captures(f) {
		if ev, err := bonnie.Decode(raw); err == nil && ev.Envelope != "" {
			f.Add(ev.Envelope)
		}
	}
	f.Add("({3}\r\nabc)")
	f.Fuzz(func(t *testing.T, s string) {
		e, err := bonnie.ParseEnvelope(s)
		if err == nil && s != "" && e == nil {
			t.Fatal("no envelope and no error")
		}
	})
}
