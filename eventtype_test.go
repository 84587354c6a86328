package bonnie

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// TestEventTypeBits pins the values to Cyrus's enum event_type
// (imap/mboxevent.h) so that a mask means the same on both sides.
func TestEventTypeBits(t *testing.T) {
	want := []struct {
		t    EventType
		bit  uint
		name string
	}{
		{MessageAppend, 0, "MessageAppend"},
		{MessageExpire, 1, "MessageExpire"},
		{MessageExpunge, 2, "MessageExpunge"},
		{MessageNew, 3, "MessageNew"},
		{MessageCopy, 4, "MessageCopy"},
		{MessageMove, 5, "MessageMove"},
		{QuotaExceed, 6, "QuotaExceed"},
		{QuotaWithin, 7, "QuotaWithin"},
		{QuotaChange, 8, "QuotaChange"},
		{MessageRead, 9, "MessageRead"},
		{MessageTrash, 10, "MessageTrash"},
		{FlagsSet, 11, "FlagsSet"},
		{FlagsClear, 12, "FlagsClear"},
		{Login, 13, "Login"},
		{Logout, 14, "Logout"},
		{MailboxCreate, 15, "MailboxCreate"},
		{MailboxDelete, 16, "MailboxDelete"},
		{MailboxRename, 17, "MailboxRename"},
		{MailboxSubscribe, 18, "MailboxSubscribe"},
		{MailboxUnsubscribe, 19, "MailboxUnsubscribe"},
		{AclChange, 20, "AclChange"},
		{MailboxModseq, 32, "MailboxModseq"},
		{MailNotification, 33, "MailNotification"},
		{SieveNotification, 34, "SieveNotification"},
	}
	for _, w := range want {
		if uint64(w.t) != 1<<w.bit {
			t.Errorf("%s = %#x, want 1<<%d", w.name, uint64(w.t), w.bit)
		}
		if w.t.String() != w.name {
			t.Errorf("String() = %q, want %q", w.t.String(), w.name)
		}
		got, ok := ParseEventType(w.name)
		if !ok || got != w.t {
			t.Errorf("ParseEventType(%q) = %v, %v", w.name, got, ok)
		}
	}
	if Cancelled != 0 || Cancelled.String() != "Cancelled" {
		t.Error("Cancelled")
	}
	if s := EventType(1 << 40).String(); s != "EventType(0x10000000000)" {
		t.Errorf("unknown type String() = %q", s)
	}
}

func TestEventTypeAliases(t *testing.T) {
	for alias, want := range map[string]EventType{
		"vnd.cmu.MessageCopy": MessageCopy,
		"vnd.cmu.MessageMove": MessageMove,
		"MailboxUnSubscribe":  MailboxUnsubscribe,
		"mailboxunsubscribe":  MailboxUnsubscribe,
		"QuotaExceeded":       QuotaExceed,
		"MessageCopy":         MessageCopy,
		" FLAGSSET ":          FlagsSet,
	} {
		if got, ok := ParseEventType(alias); !ok || got != want {
			t.Errorf("ParseEventType(%q) = %v, %v; want %v", alias, got, ok, want)
		}
	}
	for _, bad := range []string{"", "vnd.example.Teleport", "vnd.cmu.MailboxModseq", "vnd.cmu.FlagsSet", "Message Append"} {
		if _, ok := ParseEventType(bad); ok {
			t.Errorf("ParseEventType(%q) accepted", bad)
		}
	}
}

func TestEventTypeText(t *testing.T) {
	b, err := json.Marshal(struct{ T EventType }{MessageCopy})
	if err != nil || string(b) != `{"T":"MessageCopy"}` {
		t.Fatalf("%s %v", b, err)
	}
	var v struct{ T EventType }
	if err := json.Unmarshal([]byte(`{"T":"vnd.cmu.MessageMove"}`), &v); err != nil || v.T != MessageMove {
		t.Fatalf("%v %v", v.T, err)
	}
	if err := json.Unmarshal([]byte(`{"T":"Nope"}`), &v); !errors.Is(err, ErrUnknownEvent) {
		t.Fatalf("unknown name: %v", err)
	}
}

func TestEventMask(t *testing.T) {
	m := Mask(FlagsSet, FlagsClear, MailboxModseq)
	for _, tt := range []struct {
		t    EventType
		want bool
	}{{FlagsSet, true}, {FlagsClear, true}, {MailboxModseq, true}, {MessageNew, false}, {Cancelled, false}} {
		if m.Has(tt.t) != tt.want {
			t.Errorf("Has(%v) = %v", tt.t, !tt.want)
		}
	}
	if !AllEvents.Has(Cancelled) || !AllEvents.Has(SieveNotification) {
		t.Error("AllEvents must have everything")
	}
	if got := m.Types(); !slices.Equal(got, []EventType{FlagsSet, FlagsClear, MailboxModseq}) {
		t.Errorf("Types() = %v", got)
	}
	if Mask().Types() != nil || Mask().String() != "" {
		t.Error("empty mask")
	}
	if s := m.String(); s != "FlagsSet|FlagsClear|MailboxModseq" {
		t.Errorf("String() = %q", s)
	}
	if AllEvents.String() != "all" {
		t.Errorf("AllEvents.String() = %q", AllEvents.String())
	}
	for in, want := range map[string]EventMask{
		"FlagsSet|FlagsClear|MailboxModseq":  m,
		"flagsset, flagsclear MailboxModseq": m,
		"all":                                AllEvents,
		" ALL ":                              AllEvents,
		"":                                   0,
		"vnd.cmu.MessageCopy,Login":          Mask(MessageCopy, Login),
	} {
		got, err := ParseEventMask(in)
		if err != nil || got != want {
			t.Errorf("ParseEventMask(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseEventMask("Login|Bogus"); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("ParseEventMask with an unknown name: %v", err)
	}
	// A mask round-trips through its string.
	back, err := ParseEventMask(m.String())
	if err != nil || back != m {
		t.Errorf("round trip: %v %v", back, err)
	}
}
