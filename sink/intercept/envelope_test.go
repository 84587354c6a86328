package intercept

import (
	"slices"
	"testing"
)

func TestEnvelopeAddresses(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want []string
	}{
		// As Cyrus 3.6 sends it (capture 052).
		{`("Mon, 02 Jan 2023 10:05:00 +0000" "delivered via LMTP" (("Bob Sender" NIL "bob" "example.org")) (("Bob Sender" NIL "bob" "example.org")) (("Bob Sender" NIL "bob" "example.org")) (("Alice" NIL "alice" "example.org")) NIL NIL NIL "<harness-5@example.org>")`,
			[]string{"bob@example.org", "bob@example.org", "bob@example.org", "alice@example.org"}},
		// Quoted specials, a literal, cc and bcc, a group.
		{"(NIL {5}\r\nhi (x ((\"A \\\"Q\\\"\" NIL \"A\" \"Example.ORG\")) NIL NIL ((NIL NIL \"team\" NIL)(NIL NIL \"c\" \"d.e\")(NIL NIL NIL NIL)) ((NIL NIL \"cc\" \"x.y\")) ((NIL NIL \"bcc\" \"x.y\")) NIL NIL)",
			[]string{"a@example.org", "c@d.e", "cc@x.y", "bcc@x.y"}},
		{"", nil},
		{"(garbage", nil},
		{`("d" "s" ((NIL NIL "a" "b.c")) (`, []string{}},
	} {
		got := envelopeAddresses(tc.env)
		if len(got) != len(tc.want) || (len(got) > 0 && !slices.Equal(got, tc.want)) {
			t.Errorf("%q: %q, want %q", tc.env, got, tc.want)
		}
	}
}

func FuzzEnvelopeAddresses(f *testing.F) {
	f.Add(`("d" "s" ((NIL NIL "a" "b.c")) NIL NIL NIL NIL NIL NIL "<m>")`)
	f.Add("({3}\r\nabc)")
	f.Fuzz(func(t *testing.T, s string) { envelopeAddresses(s) })
}
