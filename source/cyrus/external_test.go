package cyrus

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// datagramFields splits a captured datagram at its NULs.
func datagramFields(b []byte) [][]byte {
	return bytes.Split(bytes.TrimSuffix(b, []byte{0}), []byte{0})
}

// The invocations below are what notify_external.c builds from the
// captured datagrams: "-c class -p priority -u user -m mailbox -f [fname]",
// message + "\n" on stdin.
func TestReadExternal(t *testing.T) {
	login := readFile(t, "001-Login.bin") // log EVENT "" "" "" 0 json
	loginJSON := datagramFields(login)[6]
	mail := readFile(t, "053-MAIL.bin") // log MAIL "" alice INBOX 0 message
	sieve := readFile(t, "064-SIEVE.bin")
	sf := datagramFields(sieve) // log SIEVE low alice "" 2 opt1 opt2 message fname

	tests := []struct {
		name        string
		args        []string
		stdin       []byte
		wantRaw     []byte
		wantFraming string
	}{
		{
			name:        "EVENT is bare JSON",
			args:        []string{"-c", "EVENT", "-p", "", "-u", "", "-m", "", "-f"},
			stdin:       append(append([]byte{}, loginJSON...), '\n'),
			wantRaw:     loginJSON,
			wantFraming: FramingJSON,
		},
		{
			name:        "JSON without arguments",
			stdin:       append(append([]byte{}, loginJSON...), '\n'),
			wantRaw:     loginJSON,
			wantFraming: FramingJSON,
		},
		{
			name:  "MAIL keeps user and mailbox",
			args:  []string{"-c", "MAIL", "-p", "", "-u", "alice", "-m", "INBOX", "-f"},
			stdin: append(append([]byte{}, datagramFields(mail)[6]...), '\n'),
			// The captured datagram with the method external notifyd ran.
			wantRaw:     append([]byte("external"), mail[len("log"):]...),
			wantFraming: FramingDatagram,
		},
		{
			name:  "SIEVE keeps priority and fname, loses options",
			args:  []string{"-c", "SIEVE", "-p", string(sf[2]), "-u", string(sf[3]), "-m", string(sf[4]), "-f", string(sf[9])},
			stdin: append(append([]byte{}, sf[8]...), '\n'),
			wantRaw: bytes.Join([][]byte{[]byte("external"), []byte("SIEVE"), []byte("low"), []byte("alice"), {},
				[]byte("0"), sf[8], sf[9], {}}, []byte{0}),
			wantFraming: FramingDatagram,
		},
		{
			name:        "EVENT that is not JSON is kept in datagram framing",
			args:        []string{"-c", "EVENT", "-p", "", "-u", "", "-m", "", "-f"},
			stdin:       []byte("{not json\n"),
			wantRaw:     []byte("external\x00EVENT\x00\x00\x00\x000\x00{not json\x00"),
			wantFraming: FramingDatagram,
		},
		{
			name:        "user starting with a dash",
			args:        []string{"-c", "MAIL", "-p", "", "-u", "-c", "-m", "INBOX", "-f"},
			stdin:       []byte("x\n"),
			wantRaw:     []byte("external\x00MAIL\x00\x00-c\x00INBOX\x000\x00x\x00"),
			wantFraming: FramingDatagram,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, framing, err := ReadExternal(tc.args, bytes.NewReader(tc.stdin), 0)
			if err != nil {
				t.Fatal(err)
			}
			if framing != tc.wantFraming || !bytes.Equal(raw, tc.wantRaw) {
				t.Errorf("got %s %q\nwant %s %q", framing, raw, tc.wantFraming, tc.wantRaw)
			}
		})
	}
}

func TestReadExternalErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		stdin   string
		max     int
		want    error
		wantRaw string
	}{
		{"unknown flag", []string{"-x", "y"}, "msg\n", 0, ErrMalformed, "msg"},
		{"flag without value", []string{"-c"}, "msg\n", 0, ErrMalformed, "msg"},
		{"flag twice", []string{"-c", "MAIL", "-c", "MAIL"}, "msg\n", 0, ErrMalformed, "msg"},
		{"NUL in message", []string{"-c", "MAIL"}, "a\x00b\n", 0, ErrMalformed, "a\x00b"},
		{"too large", []string{"-c", "MAIL"}, "0123456789\n", 5, ErrTooLarge, "01234"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, _, err := ReadExternal(tc.args, strings.NewReader(tc.stdin), tc.max)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if string(raw) != tc.wantRaw {
				t.Errorf("raw %q, want %q", raw, tc.wantRaw)
			}
		})
	}
	// Exactly max bytes plus notify_external's newline fits.
	if raw, _, err := ReadExternal([]string{"-c", "MAIL"}, strings.NewReader("01234\n"), 5); err != nil || !bytes.Contains(raw, []byte("01234\x00")) {
		t.Errorf("max-sized message: %q %v", raw, err)
	}
}

func TestExternalSubscriber(t *testing.T) {
	raw := []byte(`{"event":"Login"}`)
	t.Run("ack", func(t *testing.T) {
		giveUps := newHookRec()
		s, err := NewExternalSubscriber(raw, FramingJSON, Options{Logger: testLogger(), RedeliveryDelay: 1, OnGiveUp: giveUps.hook})
		if err != nil {
			t.Fatal(err)
		}
		ch, _ := s.Subscribe(t.Context(), "")
		m := recv(t, ch)
		checkMeta(t, m, FramingJSON, os.Getuid(), os.Getppid(), 1)
		m.Nack()
		m = recv(t, ch)
		if !bytes.Equal(m.Payload, raw) || m.Metadata.Get(MetaAttempt) != "2" {
			t.Fatalf("redelivery %q %v", m.Payload, m.Metadata)
		}
		m.Ack()
		<-s.Done()
		if s.Err() != nil {
			t.Fatal(s.Err())
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-ch; ok {
			t.Fatal("more than one message")
		}
		giveUps.none(t, "OnGiveUp")
	})
	t.Run("give up", func(t *testing.T) {
		giveUps := newHookRec()
		s, err := NewExternalSubscriber(raw, FramingJSON, Options{Logger: testLogger(), MaxRedeliveries: 1, RedeliveryDelay: 1, OnGiveUp: giveUps.hook})
		if err != nil {
			t.Fatal(err)
		}
		ch, _ := s.Subscribe(t.Context(), "")
		recv(t, ch).Nack()
		recv(t, ch).Nack()
		<-s.Done()
		if s.Err() == nil {
			t.Fatal("no error after giving up")
		}
		if g := giveUps.next(t); !bytes.Equal(g.raw, raw) {
			t.Errorf("gave up %q", g.raw)
		}
		s.Close()
	})
	t.Run("metadata", func(t *testing.T) {
		s, err := NewExternalSubscriber(raw, "", Options{Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ch, _ := s.Subscribe(t.Context(), "")
		m := recv(t, ch)
		if m.Metadata.Get(MetaFraming) != FramingDatagram || m.Metadata.Get(MetaPeerPID) != strconv.Itoa(os.Getppid()) {
			t.Errorf("metadata %v", m.Metadata)
		}
		m.Ack()
	})
}
