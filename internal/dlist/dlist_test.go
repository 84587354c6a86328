package dlist

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// captures returns the real Cyrus 3.6.1 dlist requests kept in testdata.
func captures(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../../testdata/cyrus-3.6.1-dlist/*.bin")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dlist captures found: %v", err)
	}
	out := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func TestParseCaptures(t *testing.T) {
	for name, raw := range captures(t) {
		t.Run(name, func(t *testing.T) {
			req, err := Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if req.Name != "NOTIFY" || req.Value.Kind != KVList {
				t.Fatalf("got %q %v, want NOTIFY kvlist", req.Name, req.Value.Kind)
			}
			want := map[string]Kind{"METHOD": Atom, "CLASS": Atom, "PRIORITY": Nil, "USER": Nil,
				"MAILBOX": Nil, "OPTIONS": List, "MESSAGE": Literal, "FILEPATH": Nil}
			if len(req.Value.Items) != len(want) {
				t.Fatalf("%d keys, want %d", len(req.Value.Items), len(want))
			}
			for k, kind := range want {
				v, ok := req.Value.Get(k)
				if !ok || v.Kind != kind {
					t.Errorf("%s: got %v %v, want %v", k, v, ok, kind)
				}
			}
			m, _ := req.Value.Get("message")
			if !bytes.HasPrefix(m.Data, []byte(`{"event":"`)) || !bytes.HasSuffix(m.Data, []byte("}")) {
				t.Errorf("MESSAGE is not the JSON: %.40q", m.Data)
			}
			// The literal is a view into the input, at the offset the
			// header announced.
			if !bytes.Equal(raw[m.DataOffset:m.DataOffset+len(m.Data)], m.Data) {
				t.Error("MESSAGE DataOffset does not point at its bytes")
			}
			if c, _ := req.Value.Get("CLASS"); c.Text() != "EVENT" {
				t.Errorf("CLASS %q", c.Text())
			}
		})
	}
}

func TestParseForms(t *testing.T) {
	raw := "NOTIFY %(METHOD \"l\\\"og\" CLASS SIEVE PRIORITY low USER alice MAILBOX \"\" " +
		"OPTIONS (opt-1 {3}\r\na b nil) MESSAGE {5+}\r\nhi\r\n! FILEPATH /tmp/x NESTED %(A (B (C))))\r\n"
	req, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	get := func(k string) *Value {
		v, ok := req.Value.Get(k)
		if !ok {
			t.Fatalf("no %s", k)
		}
		return v
	}
	if v := get("METHOD"); v.Kind != Quoted || v.Text() != `l"og` {
		t.Errorf("METHOD %v %q", v.Kind, v.Text())
	}
	if v := get("MAILBOX"); v.Kind != Quoted || v.Text() != "" {
		t.Errorf("MAILBOX %v %q", v.Kind, v.Text())
	}
	opts := get("OPTIONS")
	if len(opts.Items) != 3 || opts.Items[0].Text() != "opt-1" || opts.Items[1].Text() != "a b" || opts.Items[2].Kind != Nil {
		t.Errorf("OPTIONS %+v", opts.Items)
	}
	if v := get("MESSAGE"); v.Kind != Literal || v.Text() != "hi\r\n!" {
		t.Errorf("MESSAGE %v %q", v.Kind, v.Text())
	}
	if v := get("FILEPATH"); v.Text() != "/tmp/x" {
		t.Errorf("FILEPATH %q", v.Text())
	}
	n := get("NESTED")
	if a, ok := n.Get("A"); !ok || a.Kind != List || a.Items[1].Items[0].Text() != "C" {
		t.Errorf("NESTED %+v", n)
	}
	if v := get("MESSAGE"); v.Offset != strings.Index(raw, "{5+}") {
		t.Errorf("MESSAGE offset %d", v.Offset)
	}
	if _, ok := opts.Get("x"); ok {
		t.Error("Get on a list must fail")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     error
	}{
		{"empty", "", io.ErrUnexpectedEOF},
		{"empty line", "\r\n", ErrMalformed},
		{"no value", "NOTIFY\r\n", ErrMalformed},
		{"no terminator", "NOTIFY %(CLASS EVENT)", io.ErrUnexpectedEOF},
		{"CR only", "NOTIFY %(CLASS EVENT)\r", io.ErrUnexpectedEOF},
		{"CR then junk", "NOTIFY %(CLASS EVENT)\rx", ErrMalformed},
		{"unclosed list", "NOTIFY %(CLASS EVENT\r\n", ErrMalformed},
		{"cut in list", "NOTIFY %(CLASS EVENT", io.ErrUnexpectedEOF},
		{"literal longer than data", "NOTIFY %(MESSAGE {10+}\r\nabc)\r\n", io.ErrUnexpectedEOF},
		{"literal without length", "NOTIFY %(MESSAGE {+}\r\nabc)\r\n", ErrMalformed},
		{"literal bad header", "NOTIFY %(MESSAGE {3x}\r\nabc)\r\n", ErrMalformed},
		{"literal no break", "NOTIFY %(MESSAGE {3}abc)\r\n", ErrMalformed},
		{"literal huge", "NOTIFY %(MESSAGE {99999999999}\r\nabc)\r\n", ErrMalformed},
		{"literal header cut", "NOTIFY %(MESSAGE {3", io.ErrUnexpectedEOF},
		{"quoted unterminated", "NOTIFY %(METHOD \"log)\r\n", ErrMalformed},
		{"quoted cut", "NOTIFY %(METHOD \"lo", io.ErrUnexpectedEOF},
		{"quoted escape cut", "NOTIFY %(METHOD \"lo\\", io.ErrUnexpectedEOF},
		{"file literal", "NOTIFY %(MESSAGE %{default abc 3}\r\nabc)\r\n", ErrMalformed},
		{"missing space", "NOTIFY %(A (b)c)\r\n", ErrMalformed},
		{"key without value", "NOTIFY %(A)\r\n", ErrMalformed},
		{"trailing data", "NOTIFY %(A b)\r\nNOTIFY", ErrMalformed},
		{"two values", "NOTIFY a b\r\n", ErrMalformed},
		{"stray paren", "NOTIFY )\r\n", ErrMalformed},
		{"too deep", "NOTIFY " + strings.Repeat("(", maxDepth+1) + strings.Repeat(")", maxDepth+1) + "\r\n", ErrMalformed},
		{"percent cut", "NOTIFY %", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%q) = %v, want %v", tt.in, err, tt.want)
			}
			var de *Error
			if !errors.As(err, &de) || de.Offset < 0 || de.Offset > len(tt.in) {
				t.Fatalf("error %v is not an *Error with a sane offset", err)
			}
		})
	}
}

func TestParseLenient(t *testing.T) {
	// What Cyrus's own parser accepts and a careful peer might write.
	for _, in := range []string{
		"NOTIFY %(A b)\n",
		"NOTIFY  %( A b  C d )  \r\n",
		"NOTIFY %(A {1}\nx)\r\n",
		"NOTIFY %(a nil B NIL)\r\n",
		"{6}\r\nNOTIFY %(A b)\r\n",
		"\"NOTIFY\" %(A b)\r\n",
	} {
		req, err := Parse([]byte(in))
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if req.Name != "NOTIFY" {
			t.Errorf("Parse(%q): name %q", in, req.Name)
		}
	}
}

func TestReaderSequence(t *testing.T) {
	var stream bytes.Buffer
	var want [][]byte
	for _, name := range []string{"001-Login.bin", "006-MessageAppend.bin", "009-Logout.bin"} {
		b := captures(t)[name]
		want = append(want, b)
		stream.Write(b)
	}
	// One byte at a time: the reader must not depend on how reads split.
	r := NewReader(bufio.NewReaderSize(iotest.OneByteReader(&stream), 16), 0)
	for i, w := range want {
		raw, req, err := r.ReadRequest()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !bytes.Equal(raw, w) {
			t.Fatalf("request %d: raw differs", i)
		}
		if req.Name != "NOTIFY" {
			t.Fatalf("request %d: %q", i, req.Name)
		}
	}
	if raw, _, err := r.ReadRequest(); err != io.EOF || len(raw) != 0 {
		t.Fatalf("at end: %q %v, want io.EOF", raw, err)
	}
}

func TestReaderLimits(t *testing.T) {
	capture := captures(t)["006-MessageAppend.bin"]
	tests := []struct {
		name string
		in   string
		max  int
		want error
	}{
		{"exact fit", string(capture), len(capture), nil},
		{"one byte over", string(capture), len(capture) - 1, ErrTooLarge},
		{"literal over", "NOTIFY %(MESSAGE {5000+}\r\n", 100, ErrTooLarge},
		{"huge literal announced", "NOTIFY %(MESSAGE {9999999999}\r\n", 1 << 20, ErrTooLarge},
		{"endless line", strings.Repeat("x", 5000), 1000, ErrTooLarge},
		{"truncated literal", "NOTIFY %(MESSAGE {10+}\r\nabc", 1000, io.ErrUnexpectedEOF},
		{"truncated line", "NOTIFY %(MESSAGE", 1000, io.ErrUnexpectedEOF},
		{"truncated header", "NOTIFY %(MESSAGE {1", 1000, io.ErrUnexpectedEOF},
		{"bad literal header", "NOTIFY %(MESSAGE {x}\r\n", 1000, ErrMalformed},
		{"line break in list", "NOTIFY %(MESSAGE\r\n", 1000, ErrMalformed},
		{"line break in quote", "NOTIFY %(M \"a\nb\")\r\n", 1000, ErrMalformed},
		{"unbalanced", "NOTIFY ))\r\n", 1000, ErrMalformed},
		{"too deep", "NOTIFY " + strings.Repeat("(", maxDepth+1), 1000, ErrMalformed},
		{"parse error after scan", "NOTIFY %(A)\r\n", 1000, ErrMalformed},
		{"brace inside atom is not a literal", "NOTIFY a{3}\r\n", 1000, nil},
		{"quoted parens and braces", "NOTIFY %(A \"(){9}\\\"\")\r\n", 1000, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bufio.NewReaderSize(strings.NewReader(tt.in), 16), tt.max)
			raw, _, err := r.ReadRequest()
			if tt.want == nil {
				if err != nil || string(raw) != tt.in {
					t.Fatalf("got %q, %v", raw, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if len(raw) > tt.max || cap(raw) > tt.max {
				t.Fatalf("raw len %d cap %d above max %d", len(raw), cap(raw), tt.max)
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("%T is not *Error", err)
			}
		})
	}
}

func TestReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(bufio.NewReader(iotest.ErrReader(boom)), 0)
	if _, _, err := r.ReadRequest(); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	r = NewReader(bufio.NewReader(io.MultiReader(strings.NewReader("NOTIFY (a"), iotest.ErrReader(boom))), 0)
	if raw, _, err := r.ReadRequest(); !errors.Is(err, boom) || string(raw) != "NOTIFY (a" {
		t.Fatalf("got %q %v", raw, err)
	}
}

func TestReply(t *testing.T) {
	tests := []struct {
		ok   bool
		text string
		want string
	}{
		{true, "", "OK NIL\r\n"},
		{false, "", "NO NIL\r\n"},
		{false, "busy", "NO busy\r\n"},
		{true, "stored", "OK stored\r\n"},
		{false, "NIL", "NO \"NIL\"\r\n"},
		{false, "disk full", "NO \"disk full\"\r\n"},
		{false, "a\"b\\c\r\nd", "NO \"a\\\"b\\\\c  d\"\r\n"},
		{false, "Bücher", "NO \"Bücher\"\r\n"},
	}
	for _, tt := range tests {
		got := string(Reply(tt.ok, tt.text))
		if got != tt.want {
			t.Errorf("Reply(%v, %q) = %q, want %q", tt.ok, tt.text, got, tt.want)
		}
		// Every reply must parse as Cyrus parses it: a key and a value.
		if _, err := Parse([]byte(got)); err != nil {
			t.Errorf("Reply(%v, %q) does not parse: %v", tt.ok, tt.text, err)
		}
	}
	long := string(Reply(false, strings.Repeat("é", 2000)))
	if len(long) > maxReplyText+10 || !strings.HasSuffix(long, "\"\r\n") {
		t.Errorf("long reply not cut: %d bytes", len(long))
	}
	if _, err := Parse([]byte(long)); err != nil {
		t.Errorf("long reply does not parse: %v", err)
	}
}

func TestKindString(t *testing.T) {
	if Literal.String() != "literal" || Kind(99).String() != "Kind(99)" {
		t.Error(Literal.String(), Kind(99).String())
	}
}

// FuzzDListParse checks that neither Parse nor the Reader panics, that they
// agree, and that the Reader never holds more than its maximum.
func FuzzDListParse(f *testing.F) {
	for _, b := range captures(f) {
		f.Add(b)
	}
	files, _ := filepath.Glob("../../testdata/cyrus-3.6.1/*.bin")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("NOTIFY %(A {3+}\r\nabc B \"q\\\"\" C (NIL x))\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		req, perr := Parse(in)
		if perr == nil && req == nil {
			t.Fatal("nil request without error")
		}
		const max = 4096
		r := NewReader(bufio.NewReader(bytes.NewReader(in)), max)
		raw, rreq, rerr := r.ReadRequest()
		if len(raw) > max || cap(raw) > max {
			t.Fatalf("reader holds %d/%d bytes, max %d", len(raw), cap(raw), max)
		}
		if !bytes.HasPrefix(in, raw) {
			t.Fatal("raw is not a prefix of the input")
		}
		if rerr == nil {
			if rreq == nil {
				t.Fatal("nil request without error")
			}
			// What the reader accepted, Parse accepts alone.
			if _, err := Parse(raw); err != nil {
				t.Fatalf("reader accepted %q, Parse: %v", raw, err)
			}
		}
		// A complete request within the limit is read whole.
		if perr == nil && len(in) <= max && (rerr != nil || len(raw) != len(in)) {
			t.Fatalf("Parse accepted %q, reader: %q %v", in, raw, rerr)
		}
	})
}
