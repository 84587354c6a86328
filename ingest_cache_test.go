package bonnie

import (
	"context"
	"testing"
	"time"
)

// emptyState is a log that has committed nothing yet: everything the
// ingester knows of the entities it changed is in its cache.
type emptyState struct{ loads int }

func (s *emptyState) StateAt(context.Context, EntityKind, string, time.Time) (map[string]string, error) {
	s.loads++
	return nil, nil
}

func (s *emptyState) Find(context.Context, EntityKind, string, string) ([]string, error) {
	return nil, nil
}

func flagsEvent(typ EventType, uid uint32, flag string) *Event {
	return &Event{
		Type: typ, User: "alice", MailboxID: "F", Time: time.Unix(int64(uid), 0),
		Mailbox: MailboxURL{Name: "user.alice", Owner: "alice", UIDValidity: 7},
		UIDs:    []uint32{uid}, Flags: []string{flag},
	}
}

// TestIngesterCacheIsBoundedAndKeepsRecentChanges: memory stays bounded
// by two generations, and an entity changed recently keeps its uncommitted
// state across a rotation.
func TestIngesterCacheIsBoundedAndKeepsRecentChanges(t *testing.T) {
	src := &emptyState{}
	in := NewIngester(src)
	in.limit = 100
	ctx := context.Background()
	if _, err := in.Apply(ctx, flagsEvent(FlagsSet, 1, `\Flagged`)); err != nil {
		t.Fatal(err)
	}
	for uid := uint32(2); uid < 2000; uid++ {
		if _, err := in.Apply(ctx, flagsEvent(FlagsSet, uid, "$Work")); err != nil {
			t.Fatal(err)
		}
		if n := len(in.cur) + len(in.old); n > 2*in.limit+10 {
			t.Fatalf("cache holds %d entities, limit %d per generation", n, in.limit)
		}
		if uid%50 == 0 {
			// Touch message 1 now and then: it stays cached, so its
			// uncommitted flag is not lost to a reload from the log.
			ch, err := in.Apply(ctx, flagsEvent(FlagsSet, 1, `\Flagged`))
			if err != nil || len(ch) != 0 {
				t.Fatalf("uid %d: re-setting a set flag recorded %v (%v): the cache lost it", uid, ch, err)
			}
		}
	}
	ch, err := in.Apply(ctx, flagsEvent(FlagsClear, 1, `\Flagged`))
	if err != nil || len(ch) != 1 || ch[0].From != "set" {
		t.Fatalf("clear after many rotations: %v %v", ch, err)
	}
}

// TestCopyFromFolderNotYetCommitted: a copy out of a folder created by an
// event of the same, not yet committed, batch finds its source.
func TestCopyFromFolderNotYetCommitted(t *testing.T) {
	in := NewIngester(&emptyState{})
	ctx := context.Background()
	create := &Event{Type: MailboxCreate, User: "alice", MailboxID: "SRC", Time: time.Unix(1, 0),
		Mailbox: MailboxURL{Name: "user.alice.Src", Owner: "alice", UIDValidity: 5}}
	appendEv := &Event{Type: MessageAppend, User: "alice", MailboxID: "SRC", Time: time.Unix(2, 0),
		Mailbox: MailboxURL{Name: "user.alice.Src", Owner: "alice", UIDValidity: 5, UID: 1}, UIDs: []uint32{1}, Flags: []string{`\Flagged`}}
	cp := &Event{Type: MessageCopy, User: "alice", MailboxID: "DST", Time: time.Unix(3, 0),
		Mailbox:    MailboxURL{Name: "user.alice.Dst", Owner: "alice", UIDValidity: 6},
		OldMailbox: &MailboxURL{Name: "user.alice.Src", UIDValidity: 5}, UIDs: []uint32{9}, OldUIDs: []uint32{1}}
	for _, ev := range []*Event{create, appendEv, cp} {
		if _, err := in.Apply(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := in.load(ctx, KindMessage, MessageKey("DST", 6, 9))
	if m["origin"] != MessageKey("SRC", 5, 1) || m[`flag:\Flagged`] != "set" {
		t.Fatalf("copy = %v", m)
	}
}

// TestCopyCarriesMessageID: a copy whose notification names no Message-ID
// for it (Cyrus lists each distinct Message-ID once) takes the source's.
func TestCopyCarriesMessageID(t *testing.T) {
	in := NewIngester(&emptyState{})
	ctx := context.Background()
	evs := []*Event{
		{Type: MailboxCreate, User: "alice", MailboxID: "SRC", Time: time.Unix(1, 0),
			Mailbox: MailboxURL{Name: "user.alice.Src", Owner: "alice", UIDValidity: 5}},
		{Type: MessageAppend, User: "alice", MailboxID: "SRC", Time: time.Unix(2, 0),
			Mailbox: MailboxURL{Name: "user.alice.Src", Owner: "alice", UIDValidity: 5, UID: 1}, UIDs: []uint32{1}, MessageIDs: []string{"<same@x>"}},
		{Type: MessageAppend, User: "alice", MailboxID: "SRC", Time: time.Unix(3, 0),
			Mailbox: MailboxURL{Name: "user.alice.Src", Owner: "alice", UIDValidity: 5, UID: 2}, UIDs: []uint32{2}, MessageIDs: []string{"<same@x>"}},
		{Type: MessageCopy, User: "alice", MailboxID: "DST", Time: time.Unix(4, 0),
			Mailbox:    MailboxURL{Name: "user.alice.Dst", Owner: "alice", UIDValidity: 6},
			OldMailbox: &MailboxURL{Name: "user.alice.Src", UIDValidity: 5}, UIDs: []uint32{8, 9}, OldUIDs: []uint32{1, 2},
			MessageIDs: []string{"<same@x>"}},
	}
	for _, ev := range evs {
		if _, err := in.Apply(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, uid := range []uint32{8, 9} {
		m, _ := in.load(ctx, KindMessage, MessageKey("DST", 6, uid))
		if m["messageId"] != "<same@x>" {
			t.Errorf("copy uid %d: messageId %q", uid, m["messageId"])
		}
	}
}
