package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
)

// nobodyUID is a sender that is not allowed (user nobody).
const nobodyUID = 65534

// TestGarbage sends garbage, truncated, empty and 64 KiB datagrams (and
// malformed dlist requests) to bonnied's sockets from Cyrus's uid, and a
// real notification from root (not an allowed sender). None stops the daemon; each becomes a
// dead letter with its bytes; valid events after them are still ingested.
func TestGarbage(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	dg := cyrustest.SocketPath(t, "notify.sock")
	dl := cyrustest.SocketPath(t, "notify-dlist.sock")
	s := startCyrus(t, cyrustest.Options{Users: map[string]string{"alice": "alice-pw"}, NotifySocket: dg})
	cfg := daemonConfig{data: t.TempDir(), datagram: dg, dlist: dl}
	lv := newLogView(cfg.data)
	d := startDaemon(t, "bonnied", cfg, lv)
	checkSocketFile(t, dg)
	checkSocketFile(t, dl)

	login, err := os.ReadFile(filepath.Join("testdata", "001-Login.bin"))
	if err != nil {
		t.Fatal(err)
	}
	dlistLogin, err := os.ReadFile(filepath.Join("testdata", "dlist-001-Login.bin"))
	if err != nil {
		t.Fatal(err)
	}
	header := []byte("log\x00EVENT\x00\x00\x00\x00" + "0\x00")
	// 64 KiB, the most Cyrus would ever send: a datagram whose JSON never
	// ends.
	big := append(slices.Clone(header), `{"event":"MessageAppend","subject":"`...)
	big = append(big, bytes.Repeat([]byte("x"), 65536-len(big))...)
	// Over 64 KiB: bonnied keeps the first 65536 bytes (Cyrus never sends
	// more), and those are a complete, valid notification: only the
	// truncation says that it is not what was sent.
	oversize := append(slices.Clone(header), login[len(header):bytes.LastIndexByte(login, 0)+1]...)
	oversize = bytes.Replace(oversize, []byte(`"pid":`), []byte(`"vnd.e2e":"oversize","pid":`), 1)
	oversize = append(oversize, bytes.Repeat([]byte("f"), 65535-len(oversize))...)
	oversize = append(oversize, 0)
	oversize = append(oversize, bytes.Repeat([]byte("cut off"), 1000)...)
	binary := make([]byte, 1000)
	for i := range binary {
		binary[i] = byte(i * 7)
	}

	type letter struct {
		name, source string
		raw          []byte
		rejected     bool
	}
	dgSource, dlSource := "cyrus-datagram:"+dg, "cyrus-dlist:"+dl
	datagrams := []letter{
		{name: "text", raw: []byte("this is not a notification")},
		{name: "binary", raw: binary},
		{name: "empty", raw: []byte{}},
		{name: "truncated", raw: login[:len(login)/2]},
		{name: "64 KiB", raw: big},
		{name: "over 64 KiB", raw: oversize},
	}
	var payloads [][]byte
	for i := range datagrams {
		datagrams[i].source = dgSource
		payloads = append(payloads, datagrams[i].raw)
	}
	datagrams[len(datagrams)-1].raw = oversize[:65536] // what bonnied can keep
	uid, gid := cyrusUID(t)
	sendAs(t, uid, gid, "datagram", dg, payloads...)
	// Another user cannot even write to the socket (0600, cyrus's).
	if _, err := trySendAs(t, nobodyUID, nobodyUID, "datagram", dg, login); err == nil ||
		!strings.Contains(err.Error(), "permission denied") {
		t.Errorf("uid %d sending to bonnied's socket: %v, want permission denied", nobodyUID, err)
	}
	// Root can, but is not an allowed sender: a real notification from it
	// is refused and kept as evidence.
	sendAs(t, 0, 0, "datagram", dg, login)
	want := append(datagrams, letter{name: "forged", source: dgSource, raw: login, rejected: true})

	// dlist: garbage and a request cut short are answered NO (and kept);
	// a valid request after them is answered OK.
	replies := sendAs(t, uid, gid, "dlist", dl,
		[]byte("HELLO this is not dlist\r\n"),
		dlistLogin[:len(dlistLogin)/2],
		dlistLogin)
	want = append(want,
		letter{name: "dlist garbage", source: dlSource, raw: []byte("HELLO this is not dlist\r\n")},
		letter{name: "dlist truncated", source: dlSource, raw: dlistLogin[:len(dlistLogin)/2]})
	if r := strings.Split(strings.TrimSpace(replies), "\n"); len(r) != 3 ||
		!strings.HasPrefix(r[0], "NO ") || !strings.HasPrefix(r[1], "NO ") || strings.TrimSpace(r[2]) != "OK NIL" {
		t.Errorf("dlist replies %q, want NO, NO, OK NIL", replies)
	}

	// A real event from Cyrus after all that.
	c, _ := dialIMAP(t, s, "alice")
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	lv.waitFor(t, "alice's Login and Logout, the dlist Login", func(recs []bonnie.Record) bool {
		var n int
		for _, r := range recs {
			ev := r.Event
			if (ev.Type == bonnie.Login || ev.Type == bonnie.Logout) && ev.User == "alice" && ev.Framing == bonnie.FramingDatagram {
				n++
			}
			if ev.Type == bonnie.Login && ev.Framing == bonnie.FramingDList && bytes.Equal(ev.Raw, dlistLogin) {
				n++
			}
		}
		return n == 3
	})
	if !d.running() {
		t.Fatalf("bonnied exited: %v\n%s", d.err, d.out)
	}
	d.stop(t)

	dls := lv.verify(t, len(want))
	if len(dls) == len(want) {
		// Datagrams and dlist requests are two streams: compare as sets.
		for _, w := range want {
			i := slices.IndexFunc(dls, func(d bonnie.DeadLetter) bool {
				return d.Source == w.source && bytes.Equal(d.Raw, w.raw) &&
					strings.HasPrefix(d.Reason, bonnie.ReasonRejected) == w.rejected && d.Reason != ""
			})
			if i < 0 {
				t.Errorf("no dead letter for the %s input (%d bytes, rejected %v)", w.name, len(w.raw), w.rejected)
				continue
			}
			t.Logf("%-16s -> dead letter %d: %s", w.name, dls[i].ID, dls[i].Reason)
			dls = slices.Delete(dls, i, i+1)
		}
	}
	for _, r := range lv.records(t) {
		if r.Event.Type == bonnie.Login && r.Event.Framing == bonnie.FramingDatagram && bytes.Equal(r.Event.Raw, login) {
			t.Errorf("the forged notification is in the log at %d", r.Position)
		}
		if _, ok := r.Event.Extra["vnd.e2e"]; ok {
			t.Errorf("the truncated datagram is in the log at %d (%d bytes kept as its raw)", r.Position, len(r.Event.Raw))
		}
	}

	// The CLI sees the same.
	out, err := exec.Command(bonnieBin, "--data", cfg.data, "deadletters", "--json").Output()
	if err != nil {
		t.Fatalf("bonnie deadletters: %v", err)
	}
	n := 0
	for dec := json.NewDecoder(bytes.NewReader(out)); dec.More(); n++ {
		var d bonnie.DeadLetter
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("bonnie deadletters --json: %v\n%s", err, out)
		}
	}
	if n != len(want) {
		t.Errorf("bonnie deadletters --json lists %d, want %d", n, len(want))
	}
	if out, err := exec.Command(bonnieBin, "--data", cfg.data, "verify").CombinedOutput(); err != nil {
		t.Errorf("bonnie verify: %v\n%s", err, out)
	}
}
