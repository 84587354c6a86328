package cyrus_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/source/cyrus"
)

// What the listeners and ReadExternal hand over is what the root decoder
// accepts, including the datagram framing ReadExternal rebuilds.
func TestRootDecoderAcceptsWhatSourcesProduce(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bin")
	if err != nil || len(files) == 0 {
		t.Fatal("no testdata", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bonnie.Decode(raw); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}

	login, _ := os.ReadFile("testdata/001-Login.bin")
	json := bytes.Split(login, []byte{0})[6]
	mail, _ := os.ReadFile("testdata/053-MAIL.bin")
	sieve, _ := os.ReadFile("testdata/064-SIEVE.bin")
	sf := bytes.Split(sieve, []byte{0})
	invocations := []struct {
		name    string
		args    []string
		stdin   []byte
		framing string
		class   bonnie.Class
	}{
		{"EVENT", []string{"-c", "EVENT", "-p", "", "-u", "", "-m", "", "-f"}, append(json, '\n'), cyrus.FramingJSON, bonnie.ClassEvent},
		{"MAIL", []string{"-c", "MAIL", "-p", "", "-u", "alice", "-m", "INBOX", "-f"}, append(bytes.Split(mail, []byte{0})[6], '\n'), cyrus.FramingDatagram, bonnie.ClassMail},
		{"SIEVE", []string{"-c", "SIEVE", "-p", "low", "-u", "alice", "-m", "", "-f", string(sf[9])}, append(sf[8], '\n'), cyrus.FramingDatagram, bonnie.ClassSieve},
	}
	for _, inv := range invocations {
		raw, framing, err := cyrus.ReadExternal(inv.args, bytes.NewReader(inv.stdin), 0)
		if err != nil || framing != inv.framing {
			t.Fatalf("%s: %s %v", inv.name, framing, err)
		}
		ev, err := bonnie.Decode(raw)
		if err != nil {
			t.Errorf("%s: %v", inv.name, err)
			continue
		}
		if string(ev.Framing) != framing || ev.Class != inv.class {
			t.Errorf("%s: decoded framing %s class %s", inv.name, ev.Framing, ev.Class)
		}
		if inv.class == bonnie.ClassSieve && ev.FilePath != string(sf[9]) {
			t.Errorf("SIEVE file path %q", ev.FilePath)
		}
		if inv.class == bonnie.ClassMail && (ev.NotifyUser != "alice" || ev.NotifyMailbox != "INBOX") {
			t.Errorf("MAIL user %q mailbox %q", ev.NotifyUser, ev.NotifyMailbox)
		}
	}
}
