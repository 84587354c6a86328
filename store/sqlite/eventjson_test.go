package sqlite

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/bonnie-archive/bonnie"
)

// checkDecode decodes js with decodeEvent and with encoding/json and wants
// the same Event (deeply equal, same re-encoding, same Key), or both
// failing. fast says whether the fast path must have taken it.
func checkDecode(t *testing.T, name string, js []byte, fast bool) {
	t.Helper()
	var want bonnie.Event
	werr := json.Unmarshal(js, &want)
	var got bonnie.Event
	gerr := decodeEvent(js, &got)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%s: encoding/json err %v, decodeEvent err %v", name, werr, gerr)
	}
	if werr != nil {
		return
	}
	if fast {
		var e bonnie.Event
		d := eventDecoder{b: js}
		if !d.event(&e) {
			t.Errorf("%s: fast path fell back", name)
		}
	}
	if !reflect.DeepEqual(&got, &want) {
		t.Fatalf("%s: decodeEvent differs from encoding/json:\n got %+v\nwant %+v", name, got, want)
	}
	// The same from an owned string, whose fields then point into it.
	var view bonnie.Event
	if err := decodeEventString(string(js), &view); err != nil {
		t.Fatalf("%s: decodeEventString: %v", name, err)
	}
	if !reflect.DeepEqual(&view, &want) {
		t.Fatalf("%s: decodeEventString differs from encoding/json:\n got %+v\nwant %+v", name, view, want)
	}
	a, _ := json.Marshal(&got)
	b, _ := json.Marshal(&want)
	if !bytes.Equal(a, b) {
		t.Fatalf("%s: re-encodings differ:\n%s\n%s", name, a, b)
	}
	if len(want.Raw) > 0 && got.Key() != want.Key() {
		t.Fatalf("%s: keys differ", name)
	}
}

// TestDecodeEventMatchesEncodingJSON runs the fast decoder over the JSON
// of every captured notification (as the log stores it: bonnie.Decode
// then json.Marshal), with and without identities and bodies, and over
// hand-made oddities that must fall back.
func TestDecodeEventMatchesEncodingJSON(t *testing.T) {
	var files []string
	for _, dir := range []string{"cyrus-3.6.1", "cyrus-3.6.1-dlist"} {
		m, err := filepath.Glob(filepath.Join("..", "..", "testdata", dir, "*"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 100 {
		t.Fatalf("found %d captures", len(files))
	}
	n := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := bonnie.Decode(raw)
		if err != nil {
			continue // not a notification capture
		}
		js, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		checkDecode(t, f, js, true)
		// Indented, and with identities, bodies and extras.
		var ind bytes.Buffer
		json.Indent(&ind, js, "", "  ")
		checkDecode(t, f+" (indented)", ind.Bytes(), true)
		ev.Identities = &bonnie.Identities{Actor: &bonnie.Identity{Subject: ev.User, ID: "x"}, ACL: []bonnie.Identity{{Subject: "a"}}}
		ev.Bodies = []bonnie.BodyRef{{UID: 7, Digest: "abc", Size: 12}}
		ev.Extra = map[string]json.RawMessage{"x-a": json.RawMessage(`{"b":[1,"]",{}]}`), "x-b": json.RawMessage(`"s\"}"`), "x-c": json.RawMessage(`12.5e3`)}
		ev.JMAPEmail = json.RawMessage(`{"id":"M1","keywords":{"$seen":true}}`)
		ev.MessageContent = []byte("From: a\r\n\r\nbody")
		q, u := int64(-1), int64(0)
		ev.MaxMessages, ev.Unseen = &q, &u
		ev.OldMailbox = &bonnie.MailboxURL{Name: "user.a", UID: 3}
		ev.OldUIDs = []uint32{}
		ev.ACLRemoved = true
		js, err = json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		checkDecode(t, f+" (extended)", js, true)
		n++
	}
	if n < 100 {
		t.Fatalf("decoded only %d captures", n)
	}
	base := `{"type":"Login","class":"EVENT","framing":"json","time":"2026-01-02T03:04:05.5Z","mailbox":{},"raw":"eyJhIjoxfQ=="`
	for _, tc := range []struct {
		js   string
		fast bool
	}{
		{base + `}`, true},
		{base + `,"user":"b\u00e9b \"q\" <x>"}`, false},
		{base + `,"user":"bébé"}`, false},
		{base + `,"user":"\xff"}`, false},
		{base + `,"user":null}`, false},
		{base + `,"User":"x"}`, false},
		{base + `,"user":"a","user":"b"}`, false},
		{base + `,"mailbox":{"name":"a"}}`, false},
		{base + `,"unknown":1}`, false},
		{base + `,"pid":1.0}`, false},
		{base + `,"pid":01}`, false},
		{base + `,"pid":"1"}`, false},
		{base + `,"uids":[1,-2]}`, false},
		{base + `,"uids":[]}`, true},
		{base + `,"uidnext":4294967296}`, false},
		{base + `,"type":"Nope"}`, false},
		{base + `,"raw":"!!"}`, false},
		{`{"type":"Login","class":"EVENT","framing":"json","time":"2026-01-02T03:04:05.5Z","mailbox":{},"raw":""}`, true},
		{`{"type":"Login","class":"EVENT","framing":"json","time":"2026-01-02T03:04:05.5Z","mailbox":{},"raw":null}`, false},
		{base + `,"flags":["\\Seen","b\u00e9\ud83d\ude00\ud800"],"envelope":"\u003cx\u003e"}`, true},
		{base + `,"time":"yesterday"}`, false},
		{base + `,"extra":{"a":tru}}`, false},
		{base + `,"extra":{"a":[1,2}}`, false},
		{base + `,"extra":{"a":1,"a":2}}`, false},
		{base + `,"jmapEmail":{"a":"}"}}`, true},
		{base + `,"user":"a\/b\b\f\n\r\t\u0000\u001fZ\u00E9\u20AC"}`, true},
		{base + `,"user":"\ud83d\ude00 \udc00 \ud800x"}`, false},
		{base + `,"user":"é\"x\""}`, true},
		{base + `,"user":"\u12"}`, false},
		{base + `,"user":"\u12g4"}`, false},
		{base + `,"user":"\x"}`, false},
		{base + `,"user":"a\"}`, false},
		{base + `,"user":"a` + "\t" + `b"}`, false},
		{base + `,"raw":"eyJh` + "\n" + `IjoxfQ=="}`, false},
		{base + `,"raw":"eyJh\u0041IjoxfQ=="}`, false},
		{base + `} x`, false},
		{base + `,}`, false},
		{base, false},
		{`[]`, false},
		{``, false},
	} {
		checkDecode(t, tc.js, []byte(tc.js), tc.fast)
	}
}

// TestDecodeEventBenchLog compares the fast decoder with encoding/json
// over every record of the cached benchmark log, when there is one
// (BONNIE_BENCH_CACHE or $TMPDIR/bonnie-bench, built by the root
// package's catch-up benchmarks).
func TestDecodeEventBenchLog(t *testing.T) {
	dir := os.Getenv("BONNIE_BENCH_CACHE")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "bonnie-bench")
	}
	path := filepath.Join(dir, "catchup-10000.db")
	if testing.Short() {
		t.Skip("-short")
	}
	if _, err := os.Stat(path); err != nil {
		t.Skip("no cached benchmark log")
	}
	ctx := context.Background()
	l, err := Open(ctx, path)
	if err != nil {
		t.Skip(err)
	}
	defer l.Close()
	rows, err := l.rdb.QueryContext(ctx, `SELECT position, event FROM records ORDER BY position`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var p int64
		var js []byte
		if err := rows.Scan(&p, &js); err != nil {
			t.Fatal(err)
		}
		checkDecode(t, "record", js, true)
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d records decoded alike", n)
}

// FuzzDecodeEvent: on any input the log's own event decoder agrees with
// encoding/json (same error or none, same Event, same re-encoding). The
// stored JSON is ours, but a tampered database can hold anything.
func FuzzDecodeEvent(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "cyrus-3.6.1", "*.bin"))
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		if ev, err := bonnie.Decode(raw); err == nil {
			js, _ := json.Marshal(ev)
			f.Add(js)
		}
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		checkDecode(t, "fuzz", js, false)
	})
}
