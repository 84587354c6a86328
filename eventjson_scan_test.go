package bonnie

import (
	"bytes"
	"encoding/json"
	"testing"
)

// slowMembers is what encoding/json's Decoder finds in msg.
func slowMembers(msg []byte) ([]member, error) {
	d := jsonDecoder{e: &Event{Framing: FramingJSON}}
	var out []member
	err := d.membersSlow(msg, func(key string, raw json.RawMessage, offset int) error {
		out = append(out, member{key: key, raw: append(json.RawMessage(nil), raw...), offset: offset})
		return nil
	})
	return out, err
}

// checkScan: when scanMembers accepts msg, the Decoder finds the same
// members (keys, value bytes, offsets) and no error.
func checkScan(t *testing.T, msg []byte) bool {
	t.Helper()
	fast, ok := scanMembers(msg, nil)
	if !ok {
		return false
	}
	slow, err := slowMembers(msg)
	if err != nil {
		t.Fatalf("scanMembers accepted %q, the Decoder says %v", msg, err)
	}
	if len(fast) != len(slow) {
		t.Fatalf("%q: %d members scanned, %d decoded", msg, len(fast), len(slow))
	}
	for i := range fast {
		f, s := fast[i], slow[i]
		if f.key != s.key || !bytes.Equal(f.raw, s.raw) || f.offset != s.offset {
			t.Fatalf("%q: member %d scanned %q=%s@%d, decoded %q=%s@%d", msg, i, f.key, f.raw, f.offset, s.key, s.raw, s.offset)
		}
	}
	return true
}

// TestScanMembersMatchesDecoder: every captured notification takes the
// fast path, with the Decoder's members; oddities either match too or go
// to the Decoder.
func TestScanMembersMatchesDecoder(t *testing.T) {
	n := 0
	for _, set := range []map[string]capture{datagramCaptures(t), dlistCaptures(t)} {
		for name, c := range set {
			e, err := Decode(c.raw)
			if err != nil || e.Class != ClassEvent {
				continue
			}
			if !checkScan(t, e.payload()) {
				t.Errorf("%s: the capture's JSON did not take the fast path", name)
			}
			n++
		}
	}
	if n < 100 {
		t.Fatalf("only %d captures checked", n)
	}
	for _, msg := range []string{
		`{}`, ` { } `, `{"a":1}`, `{"a" : [1, {"b":"}"}] , "c":"x\"y"}`, `{"a":1,}`, `{"a":1 "b":2}`,
		`{"a":1}x`, `{"a\u0062":1}`, `{"a":tru}`, `{"a":"\ud800"}`, `{"a":{"b":[}}`, `{"a":"é"}`,
		`{"a":-1.5e3,"b":null,"c":true,"d":false}`, `{"a":1`, `{"a":"x`, `[1]`, `"x"`, ``, `{"a":01}`,
		"{\"a\":\"x\ty\"}", "{\"\xff\":1}", `{"a":1}}`, `{"a":[1,2]]}`,
	} {
		checkScan(t, []byte(msg))
	}
}

func FuzzScanMembers(f *testing.F) {
	for _, c := range dlistCaptures(f) {
		if e, err := Decode(c.raw); err == nil && e.Class == ClassEvent {
			f.Add(e.payload())
		}
	}
	f.Add([]byte(`{"a" : [1, {"b":"}"}] , "c":"x\"y"}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		checkScan(t, msg)
	})
}
