package bonnie

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie/internal/dlist"
)

// capture is one real notification from testdata with what SUMMARY.tsv (or
// index.tsv) says about it.
type capture struct {
	seq, class, event, step string
	raw                     []byte
}

// datagramCaptures loads testdata/cyrus-3.6.1: 98 datagrams sent by a real
// Cyrus 3.6.1, keyed by sequence number ("025").
func datagramCaptures(t testing.TB) map[string]capture {
	t.Helper()
	dir := filepath.Join("testdata", "cyrus-3.6.1")
	summary, err := os.ReadFile(filepath.Join(dir, "SUMMARY.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]capture)
	for i, line := range strings.Split(strings.TrimSpace(string(summary)), "\n") {
		if i == 0 {
			continue // header
		}
		cols := strings.Split(line, "\t")
		if len(cols) != 6 {
			t.Fatalf("SUMMARY.tsv line %d: %d columns", i+1, len(cols))
		}
		files, _ := filepath.Glob(filepath.Join(dir, cols[0]+"-*.bin"))
		if len(files) != 1 {
			t.Fatalf("seq %s: %d files", cols[0], len(files))
		}
		raw, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		out[cols[0]] = capture{seq: cols[0], class: cols[1], event: cols[2], step: cols[5], raw: raw}
	}
	if len(out) != 98 {
		t.Fatalf("%d captures, want 98", len(out))
	}
	return out
}

// dlistCaptures loads testdata/cyrus-3.6.1-dlist, keyed by file name.
func dlistCaptures(t testing.TB) map[string]capture {
	t.Helper()
	dir := filepath.Join("testdata", "cyrus-3.6.1-dlist")
	index, err := os.ReadFile(filepath.Join(dir, "index.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]capture)
	for _, line := range strings.Split(strings.TrimSpace(string(index)), "\n") {
		cols := strings.Split(line, "\t")
		name := strings.Repeat("0", 3-len(cols[0])) + cols[0] + "-" + cols[4] + ".bin"
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = capture{seq: cols[0], class: "EVENT", event: cols[4], raw: raw}
	}
	return out
}

func TestDecodeEveryCapture(t *testing.T) {
	all := datagramCaptures(t)
	for _, c := range dlistCaptures(t) {
		all["dlist-"+c.seq] = c
	}
	for name, c := range all {
		t.Run(name, func(t *testing.T) {
			e, err := Decode(c.raw)
			if err != nil {
				t.Fatalf("%s (%s): %v", c.step, c.event, err)
			}
			if !bytes.Equal(e.Raw, c.raw) {
				t.Error("Raw differs from the input")
			}
			if string(e.Class) != c.class {
				t.Errorf("class %q, want %q", e.Class, c.class)
			}
			if c.class == "EVENT" && e.Name != c.event {
				t.Errorf("name %q, want %q", e.Name, c.event)
			}
			want := FramingDatagram
			if strings.HasPrefix(name, "dlist-") {
				want = FramingDList
			}
			if e.Framing != want {
				t.Errorf("framing %q, want %q", e.Framing, want)
			}
			if e.Method != "log" {
				t.Errorf("method %q", e.Method)
			}
			if c.class == "EVENT" {
				if e.Time.IsZero() || e.Time.Location() != time.UTC || e.Timestamp == "" {
					t.Errorf("time %v (%q)", e.Time, e.Timestamp)
				}
				if e.Mailbox.Server != "cyrus-harness.test" || e.Server != "cyrus-harness.test" {
					t.Errorf("server %q / %q", e.Mailbox.Server, e.Server)
				}
				if e.SessionID == "" || e.PID == 0 {
					t.Errorf("session %q pid %d", e.SessionID, e.PID)
				}
				// vnd.fastmail.sessionId equals vnd.cmu.sessionId in every
				// capture: nothing should be left over.
				if len(e.Extra) != 0 {
					t.Errorf("unexpected Extra %v", e.Extra)
				}
			}
			if e.Key() == "" || len(e.payload()) == 0 {
				t.Error("no key or payload")
			}
		})
	}
}

func u32(v ...uint32) []uint32 { return v }

func i64(v int64) *int64 { return &v }

func TestDecodeCaptureSteps(t *testing.T) {
	captures := datagramCaptures(t)
	const (
		aliceSession = "cyrus-harness-1795897410-30423-1-5233442537427230527"
		adminSession = "cyrus-harness-1795897408-30409-2-11634958752774090424"
		inboxID      = "zhelole6j19gznuv4b0d24ep"
		workID       = "kwv2nc0rutdhxg2phbung3vj"
		inboxValid   = 1795897409
		workValid    = 1795897411
	)
	aliceACL := ACL{{"alice", "lrswipkxtecdan"}}
	tests := map[string]func(t *testing.T, e *Event){
		"001": func(t *testing.T, e *Event) { // admin: LOGIN cyrus
			check(t, "type", e.Type, Login)
			check(t, "user", e.User, "cyrus")
			check(t, "uri", e.URI, "imap://cyrus-harness.test")
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "cyrus-harness.test"})
			check(t, "client", [2]any{e.ClientIP, e.ClientPort}, [2]any{"127.0.0.1", 43170})
			check(t, "server", [2]any{e.ServerDomain, e.ServerPort}, [2]any{"127.0.0.1", 14143})
			check(t, "pid", e.PID, 30409)
			check(t, "session", e.SessionID, adminSession)
			check(t, "service", e.Service, "imap")
			check(t, "time", e.Time, time.Date(2026, 11, 28, 20, 23, 28, 649e6, time.UTC))
			check(t, "timestamp", e.Timestamp, "2026-11-28T20:23:28.649Z")
		},
		"002": func(t *testing.T, e *Event) { // admin: CREATE user.alice
			check(t, "type", e.Type, MailboxCreate)
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "cyrus-harness.test", Name: "user.alice", Owner: "alice", UIDValidity: inboxValid})
			check(t, "mailboxID", e.MailboxID, inboxID)
			check(t, "user", e.User, "cyrus")
			check(t, "mbtype", e.MailboxType, "e")
			check(t, "acl", e.MailboxACL, aliceACL)
		},
		"003": func(t *testing.T, e *Event) { // admin: CREATE user.bob
			check(t, "owner", e.Mailbox.Owner, "bob")
			check(t, "acl", e.MailboxACL, ACL{{"bob", "lrswipkxtecdan"}})
		},
		"004": func(t *testing.T, e *Event) { // SETQUOTA user.alice (STORAGE 10000 MESSAGE 1000)
			check(t, "type", e.Type, QuotaChange)
			check(t, "quota root", e.Mailbox, MailboxURL{Server: "cyrus-harness.test", Name: "user.alice", Owner: "alice"})
			check(t, "quota", []*int64{e.DiskQuota, e.DiskUsed, e.MaxMessages, e.Messages},
				[]*int64{i64(10000), i64(0), i64(1000), i64(0)})
			check(t, "unseen absent", e.Unseen, (*int64)(nil))
		},
		"005": func(t *testing.T, e *Event) { // alice: LOGIN alice
			check(t, "type", e.Type, Login)
			check(t, "user", e.User, "alice")
			check(t, "session", e.SessionID, aliceSession)
		},
		"006": func(t *testing.T, e *Event) { // alice: CREATE INBOX.Work
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "cyrus-harness.test", Name: "user.alice.Work", Owner: "alice", UIDValidity: workValid})
			check(t, "mailboxID", e.MailboxID, workID)
			check(t, "clientId", e.ClientID, "harness-client-42")
		},
		"007": func(t *testing.T, e *Event) { // CREATE "INBOX.My Folder"
			check(t, "name", e.Mailbox.Name, "user.alice.My Folder")
			check(t, "owner", e.Mailbox.Owner, "alice")
		},
		"008": func(t *testing.T, e *Event) { // CREATE INBOX.B&APw-cher
			check(t, "name", e.Mailbox.Name, "user.alice.Bücher")
			check(t, "uidvalidity", e.Mailbox.UIDValidity, uint32(1795897413))
		},
		"009": func(t *testing.T, e *Event) { // SUBSCRIBE INBOX.Work
			check(t, "type", e.Type, MailboxSubscribe)
			check(t, "name", e.Mailbox.Name, "user.alice.Work")
		},
		"010": func(t *testing.T, e *Event) { // UNSUBSCRIBE INBOX.Work
			check(t, "type", e.Type, MailboxUnsubscribe)
			check(t, "name as sent", e.Name, "MailboxUnSubscribe")
			check(t, "type name", e.Type.String(), "MailboxUnsubscribe")
		},
		"011": func(t *testing.T, e *Event) { // MailboxModseq of APPEND
			check(t, "type", e.Type, MailboxModseq)
			check(t, "user", e.User, "")
			check(t, "acl", e.MailboxACL, aliceACL)
		},
		"012": func(t *testing.T, e *Event) { // APPEND INBOX msg1
			check(t, "type", e.Type, MessageAppend)
			check(t, "uids from the URL", e.UIDs, u32(1))
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "cyrus-harness.test", Name: "user.alice", Owner: "alice", UIDValidity: inboxValid, UID: 1})
			check(t, "message ids", e.MessageIDs, []string{"<harness-1@example.org>"})
			check(t, "size", e.Size, int64(244))
			check(t, "modseq", e.Modseq, uint64(10))
			check(t, "uidnext", e.UIDNext, uint32(2))
			check(t, "counts", []*int64{e.Messages, e.Unseen}, []*int64{i64(1), i64(1)})
			check(t, "emailid", e.EmailID, "M81d3c08a7d9d0ffb7bc33e7b")
			check(t, "threadid", e.ThreadID, "T1020196b76f404e9")
			check(t, "cid", e.ConversationID, "1020196b76f404e9")
			check(t, "envelope", strings.HasPrefix(e.Envelope, `("Mon, 02 Jan 2023 10:01:00 +0000" "first message"`), true)
			check(t, "bodystructure", e.BodyStructure, `("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 34 2 NIL NIL NIL NIL)`)
			var jm struct{ Subject string }
			if err := json.Unmarshal(e.JMAPEmail, &jm); err != nil || jm.Subject != "first message" {
				t.Errorf("jmapEmail %s: %v", e.JMAPEmail, err)
			}
			check(t, "no flags", len(e.Flags), 0)
			check(t, "no content in 3.6.1", len(e.MessageContent), 0)
		},
		"014": func(t *testing.T, e *Event) { // APPEND INBOX msg2 (\Flagged $Label1), sent as \\flagged
			check(t, "flags", e.Flags, []string{`\Flagged`, "$Label1"})
			check(t, "uids", e.UIDs, u32(2))
		},
		"016": func(t *testing.T, e *Event) { // APPEND msg3 multipart
			check(t, "uids", e.UIDs, u32(3))
			check(t, "size", e.Size, int64(390))
			check(t, "multipart", strings.Contains(e.BodyStructure, `"ALTERNATIVE"`), true)
		},
		"018": func(t *testing.T, e *Event) { // FETCH 1 BODY[] (implicit \Seen)
			check(t, "type", e.Type, MessageRead)
			check(t, "uids", e.UIDs, u32(1))
			check(t, "unseen", e.Unseen, i64(2))
		},
		"021": func(t *testing.T, e *Event) { // STORE 2 +FLAGS (\Answered)
			check(t, "type", e.Type, FlagsSet)
			check(t, "uids", e.UIDs, u32(2))
			check(t, "flags", e.Flags, []string{`\Answered`})
		},
		"023": func(t *testing.T, e *Event) { // STORE 2 +FLAGS ($Important)
			check(t, "flags", e.Flags, []string{"$Important"})
		},
		"025": func(t *testing.T, e *Event) { // STORE 2 -FLAGS (\Flagged)
			check(t, "type", e.Type, FlagsClear)
			check(t, "uids", e.UIDs, u32(2))
			check(t, "flags", e.Flags, []string{`\Flagged`})
			check(t, "user", e.User, "alice")
			check(t, "name", e.Mailbox.Name, "user.alice")
			check(t, "owner", e.Mailbox.Owner, "alice")
			check(t, "modseq", e.Modseq, uint64(17))
		},
		"027": func(t *testing.T, e *Event) { // STORE 2 -FLAGS (\Seen)
			check(t, "type", e.Type, FlagsClear)
			check(t, "flags", e.Flags, []string{`\Seen`})
		},
		"029": func(t *testing.T, e *Event) { // STORE 1:3 +FLAGS (\Seen \Flagged $Work): the \Seen part
			check(t, "type", e.Type, MessageRead)
			check(t, "uids", e.UIDs, u32(1, 2, 3))
			check(t, "message ids", len(e.MessageIDs), 3)
		},
		"030": func(t *testing.T, e *Event) { // ... the rest
			check(t, "type", e.Type, FlagsSet)
			check(t, "uids", e.UIDs, u32(1, 2, 3))
			check(t, "flags", e.Flags, []string{`\Flagged`, "$Work"})
			check(t, "message ids", e.MessageIDs, []string{"<harness-1@example.org>", "<harness-2@example.org>", "<harness-3@example.org>"})
			check(t, "no modseq for several messages", e.Modseq, uint64(0))
			check(t, "unseen present and zero", e.Unseen, i64(0))
		},
		"032": func(t *testing.T, e *Event) { // STORE 2 FLAGS (\Draft): clear
			check(t, "type", e.Type, FlagsClear)
			check(t, "flags", e.Flags, []string{`\Answered`, `\Flagged`, `\Seen`, "$Label1", "$Important", "$Work"})
		},
		"033": func(t *testing.T, e *Event) { // ... then set
			check(t, "type", e.Type, FlagsSet)
			check(t, "flags", e.Flags, []string{`\Draft`})
		},
		"035": func(t *testing.T, e *Event) { // STORE 3 +FLAGS (\Deleted)
			check(t, "type", e.Type, MessageTrash)
			check(t, "uids", e.UIDs, u32(3))
		},
		"038": func(t *testing.T, e *Event) { // COPY 1 INBOX.Work
			check(t, "type", e.Type, MessageCopy)
			check(t, "name", e.Name, "vnd.cmu.MessageCopy")
			check(t, "old uri", e.OldURI, "imap://cyrus-harness.test/user.alice;UIDVALIDITY=1795897409")
			check(t, "old mailbox", e.OldMailbox, &MailboxURL{Server: "cyrus-harness.test", Name: "user.alice", Owner: "alice", UIDValidity: inboxValid})
			check(t, "old uids", e.OldUIDs, u32(1))
			check(t, "target", e.Mailbox.Name, "user.alice.Work")
			check(t, "uids", e.UIDs, u32(1))
			check(t, "mailboxID is the target's", e.MailboxID, workID)
		},
		"040": func(t *testing.T, e *Event) { // MOVE 2 INBOX.Work
			check(t, "type", e.Type, MessageMove)
			check(t, "old", e.OldMailbox.Name, "user.alice")
			check(t, "old uids", e.OldUIDs, u32(2))
			check(t, "target", e.Mailbox.Name, "user.alice.Work")
			check(t, "uids", e.UIDs, u32(2))
		},
		"042": func(t *testing.T, e *Event) { // MOVE's expunge in the source
			check(t, "type", e.Type, MessageExpunge)
			check(t, "name", e.Mailbox.Name, "user.alice")
			check(t, "uids", e.UIDs, u32(2))
		},
		"046": func(t *testing.T, e *Event) { // SETACL INBOX.Work bob lrs
			check(t, "type", e.Type, AclChange)
			check(t, "subject", e.ACLSubject, "bob")
			check(t, "rights", e.ACLRights, "lrs")
			check(t, "removed", e.ACLRemoved, false)
			check(t, "acl", e.MailboxACL, ACL{{"alice", "lrswipkxtecdan"}, {"bob", "lrs"}})
			check(t, "name", e.Mailbox.Name, "user.alice.Work")
		},
		"048": func(t *testing.T, e *Event) { // DELETEACL INBOX.Work bob
			check(t, "type", e.Type, AclChange)
			check(t, "subject", e.ACLSubject, "bob")
			check(t, "rights", e.ACLRights, "")
			check(t, "removed", e.ACLRemoved, true)
			check(t, "acl", e.MailboxACL, aliceACL)
		},
		"050": func(t *testing.T, e *Event) { // RENAME INBOX.Work INBOX.Projects
			check(t, "type", e.Type, MailboxRename)
			check(t, "old", e.OldMailbox, &MailboxURL{Server: "cyrus-harness.test", Name: "user.alice.Work", Owner: "alice", UIDValidity: workValid})
			check(t, "new", e.Mailbox, MailboxURL{Server: "cyrus-harness.test", Name: "user.alice.Projects", Owner: "alice", UIDValidity: workValid})
			check(t, "same folder", e.MailboxID, workID)
		},
		"052": func(t *testing.T, e *Event) { // lmtp: deliver msg5 to alice
			check(t, "type", e.Type, MessageNew)
			check(t, "service", e.Service, "lmtpunix")
			check(t, "uids", e.UIDs, u32(4))
			check(t, "size", e.Size, int64(536))
		},
		"053": func(t *testing.T, e *Event) { // ... its class MAIL datagram
			check(t, "class", e.Class, ClassMail)
			check(t, "type", e.Type, MailNotification)
			check(t, "notify user", e.NotifyUser, "alice")
			check(t, "notify mailbox", e.NotifyMailbox, "INBOX")
			check(t, "message", e.Message, "From: Bob Sender <bob@example.org>\nSubject: delivered via LMTP\nTo: Alice <alice@example.org>\n")
			check(t, "no time", e.Time.IsZero(), true)
			check(t, "no file", e.FilePath, "")
		},
		"055": func(t *testing.T, e *Event) { // SETACL INBOX.Projects anyone p
			check(t, "subject", e.ACLSubject, "anyone")
			check(t, "rights", e.ACLRights, "p")
			check(t, "acl", e.MailboxACL, ACL{{"alice", "lrswipkxtecdan"}, {"anyone", "p"}})
		},
		"057": func(t *testing.T, e *Event) { // deliver to alice+Projects
			check(t, "type", e.Type, MessageNew)
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "cyrus-harness.test", Name: "user.alice.Projects", Owner: "alice", UIDValidity: workValid, UID: 3})
			check(t, "uids", e.UIDs, u32(3))
			check(t, "user", e.User, "")
		},
		"058": func(t *testing.T, e *Event) {
			check(t, "type", e.Type, MailNotification)
			check(t, "subject line", strings.Contains(e.Message, "Subject: delivered via LMTP to Projects\n"), true)
		},
		"064": func(t *testing.T, e *Event) { // Sieve notify => class SIEVE
			check(t, "class", e.Class, ClassSieve)
			check(t, "type", e.Type, SieveNotification)
			check(t, "priority", e.Priority, "low")
			check(t, "options", e.Options, []string{"harness-opt-1", "harness-opt-2"})
			check(t, "file", e.FilePath, "/tmp/cyrus-harness/spool/stage./30425-1795897421-0")
			check(t, "notify user", e.NotifyUser, "alice")
			check(t, "notify mailbox", e.NotifyMailbox, "")
			check(t, "message", e.Message, "sieve: Bob Sender <bob@example.org> / sieve notify test\n\nAction(s) taken:\nKept\n")
		},
		"068": func(t *testing.T, e *Event) { // cyr_expire -E 3
			check(t, "type", e.Type, MessageExpire)
			check(t, "uids", e.UIDs, u32(1, 4, 5, 6))
			check(t, "service", e.Service, "cyr_expire")
			check(t, "user", e.User, "")
			check(t, "message ids", len(e.MessageIDs), 4)
			check(t, "counts", []*int64{e.Messages, e.Unseen}, []*int64{i64(0), i64(0)})
		},
		"071": func(t *testing.T, e *Event) { // DELETE INBOX.Projects
			check(t, "type", e.Type, MailboxDelete)
			check(t, "name", e.Mailbox.Name, "user.alice.Projects")
			check(t, "acl", e.MailboxACL, ACL{{"alice", "lrswipkxtecdan"}, {"anyone", "p"}})
		},
		"073": func(t *testing.T, e *Event) { // DELETE "INBOX.My Folder"
			check(t, "name", e.Mailbox.Name, "user.alice.My Folder")
		},
		"074": func(t *testing.T, e *Event) { // alice: LOGOUT
			check(t, "type", e.Type, Logout)
			check(t, "client", [2]any{e.ClientIP, e.ClientPort}, [2]any{"127.0.0.1", 43172})
			check(t, "user", e.User, "alice")
			check(t, "session", e.SessionID, aliceSession)
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "cyrus-harness.test"})
		},
		"076": func(t *testing.T, e *Event) { // admin: SETACL user.bob cyrus x
			check(t, "subject", e.ACLSubject, "cyrus")
			check(t, "rights", e.ACLRights, "lrswipkxtecda")
			check(t, "owner", e.Mailbox.Owner, "bob")
			check(t, "actor", e.User, "cyrus")
		},
		"078": func(t *testing.T, e *Event) { // admin: DELETE user.bob
			check(t, "type", e.Type, MailboxDelete)
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "cyrus-harness.test", Name: "user.bob", Owner: "bob", UIDValidity: 1795897410})
		},
		"081": func(t *testing.T, e *Event) { // SETQUOTA (STORAGE 1 MESSAGE 1000) below usage
			check(t, "quota", []*int64{e.DiskQuota, e.DiskUsed, e.MaxMessages, e.Messages},
				[]*int64{i64(1), i64(0), i64(1000), i64(1)})
		},
		"087": func(t *testing.T, e *Event) { // SIEVE over quota
			check(t, "type", e.Type, SieveNotification)
			check(t, "options", len(e.Options), 2)
			check(t, "file", e.FilePath, "/tmp/cyrus-harness/spool/stage./30425-1795897425-0")
		},
		"089": func(t *testing.T, e *Event) { // SETQUOTA back within
			check(t, "quota", []*int64{e.DiskQuota, e.DiskUsed, e.MaxMessages, e.Messages},
				[]*int64{i64(10000), i64(4), i64(1000), i64(2)})
		},
		"097": func(t *testing.T, e *Event) { // the 15 KB event with a 7 KB Subject
			check(t, "raw size", len(e.Raw), 15587)
			check(t, "type", e.Type, MessageAppend)
			check(t, "uids", e.UIDs, u32(9))
			check(t, "size", e.Size, int64(7233))
			check(t, "envelope literal", strings.Contains(e.Envelope, "{6986}\r\nSSSS"), true)
			var jm struct{ Subject string }
			if err := json.Unmarshal(e.JMAPEmail, &jm); err != nil || len(jm.Subject) < 6900 {
				t.Errorf("jmapEmail subject %d bytes: %v", len(jm.Subject), err)
			}
		},
	}
	if len(tests) < 25 {
		t.Fatalf("only %d steps checked", len(tests))
	}
	for seq, fn := range tests {
		c := captures[seq]
		t.Run(seq+" "+c.step, func(t *testing.T) {
			e, err := Decode(c.raw)
			if err != nil {
				t.Fatal(err)
			}
			fn(t, e)
		})
	}
}

func check[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: got %s, want %s", what, show(got), show(want))
	}
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func TestDecodeDListCaptures(t *testing.T) {
	caps := dlistCaptures(t)
	e, err := Decode(caps["006-MessageAppend.bin"].raw)
	if err != nil {
		t.Fatal(err)
	}
	check(t, "framing", e.Framing, FramingDList)
	check(t, "type", e.Type, MessageAppend)
	check(t, "uids", e.UIDs, u32(1))
	check(t, "message ids", e.MessageIDs, []string{"<blk-201@example.org>"})
	check(t, "size", e.Size, int64(106))
	check(t, "notify fields", [4]string{e.Priority, e.NotifyUser, e.NotifyMailbox, e.FilePath}, [4]string{})
	check(t, "options", len(e.Options), 0)

	e, err = DecodeDList(caps["007-FlagsSet.bin"].raw)
	if err != nil {
		t.Fatal(err)
	}
	check(t, "flags", e.Flags, []string{`\Flagged`})
	check(t, "time", e.Time, time.Date(2026, 11, 28, 20, 24, 29, 34e6, time.UTC))

	// The request read from a stream by the dlist Reader is what Decode takes.
	var stream bytes.Buffer
	for _, name := range []string{"001-Login.bin", "002-MailboxCreate.bin", "003-Logout.bin"} {
		stream.Write(caps[name].raw)
	}
	r := dlist.NewReader(bufio.NewReader(&stream), MaxNotificationSize)
	var types []EventType
	for {
		raw, _, err := r.ReadRequest()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e, err := Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, e.Type)
	}
	check(t, "stream", types, []EventType{Login, MailboxCreate, Logout})
}

// datagramOf wraps a JSON event the way Cyrus sends it as a datagram.
func datagramOf(method string, msg []byte) []byte {
	return append(append([]byte(method+"\x00EVENT\x00\x00\x00\x00"+"0\x00"), msg...), 0)
}

// dlistOf wraps a JSON event the way Cyrus sends it on the dlist stream.
func dlistOf(msg []byte) []byte {
	var b bytes.Buffer
	b.WriteString("NOTIFY %(METHOD log CLASS EVENT PRIORITY NIL USER NIL MAILBOX NIL OPTIONS () MESSAGE {")
	b.WriteString(strconv.Itoa(len(msg)))
	b.WriteString("+}\r\n")
	b.Write(msg)
	b.WriteString(" FILEPATH NIL)\r\n")
	return b.Bytes()
}

func TestKeyAcrossFramings(t *testing.T) {
	var jsons [][]byte
	for _, c := range dlistCaptures(t) {
		e, err := Decode(c.raw)
		if err != nil {
			t.Fatal(err)
		}
		jsons = append(jsons, e.payload())
	}
	for _, c := range datagramCaptures(t) {
		if c.class == "EVENT" {
			e, err := Decode(c.raw)
			if err != nil {
				t.Fatal(err)
			}
			jsons = append(jsons, e.payload())
		}
	}
	keys := make(map[string]bool)
	for _, msg := range jsons {
		forms := map[string][]byte{
			"datagram":          datagramOf("log", msg),
			"datagram external": datagramOf("external", msg),
			"dlist":             dlistOf(msg),
			"json":              msg,
			"json with newline": append(append([]byte(" \n"), msg...), '\n'),
		}
		var key string
		var first *Event
		for name, raw := range forms {
			e, err := Decode(raw)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if key == "" {
				key, first = e.Key(), e
			} else if e.Key() != key {
				t.Fatalf("%s: key differs for %.60s", name, msg)
			}
			// The decoded fields agree too, framing aside.
			a, b := *e, *first
			for _, x := range []*Event{&a, &b} {
				x.Raw, x.Framing, x.Method, x.Priority, x.NotifyUser, x.NotifyMailbox, x.Options, x.FilePath = nil, "", "", "", "", "", nil, ""
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s: fields differ:\n%s\n%s", name, show(a), show(b))
			}
			// And the key survives a JSON round trip of the event.
			js, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var back Event
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatal(err)
			}
			if back.Key() != key {
				t.Fatalf("%s: key changed by a JSON round trip", name)
			}
		}
		if keys[key] {
			t.Fatalf("two different captures share key %s", key)
		}
		keys[key] = true
	}
	if len(keys) < 90 {
		t.Fatalf("only %d keys", len(keys))
	}
}

func TestKeyDistinguishes(t *testing.T) {
	base := "log\x00SIEVE\x00low\x00alice\x00\x002\x00a\x00b\x00msg\x00/tmp/f\x00"
	variants := []string{
		"log\x00SIEVE\x00high\x00alice\x00\x002\x00a\x00b\x00msg\x00/tmp/f\x00",
		"log\x00SIEVE\x00low\x00bob\x00\x002\x00a\x00b\x00msg\x00/tmp/f\x00",
		"log\x00SIEVE\x00low\x00alice\x00INBOX\x002\x00a\x00b\x00msg\x00/tmp/f\x00",
		"log\x00SIEVE\x00low\x00alice\x00\x001\x00a\x00msg\x00/tmp/f\x00",
		"log\x00SIEVE\x00low\x00alice\x00\x002\x00a\x00c\x00msg\x00/tmp/f\x00",
		"log\x00SIEVE\x00low\x00alice\x00\x002\x00a\x00b\x00msg\x00/tmp/g\x00",
		"log\x00SIEVE\x00low\x00alice\x00\x002\x00a\x00b\x00msg\x00",
		"log\x00MAIL\x00low\x00alice\x00\x002\x00a\x00b\x00msg\x00/tmp/f\x00",
	}
	e, err := Decode([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	same, err := Decode([]byte("external" + base[3:]))
	if err != nil {
		t.Fatal(err)
	}
	if same.Key() != e.Key() {
		t.Error("the method must not change the key")
	}
	for _, v := range variants {
		o, err := Decode([]byte(v))
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		if o.Key() == e.Key() {
			t.Errorf("%q has the key of %q", v, base)
		}
	}
	// Events built in code, without Raw, still get a key from their fields.
	a := &Event{Class: ClassMail, NotifyUser: "alice", Message: "x"}
	b := &Event{Class: ClassMail, NotifyUser: "alice", Message: "y"}
	if a.Key() == b.Key() {
		t.Error("events without Raw must differ by message")
	}
}

func TestDecodeErrors(t *testing.T) {
	login := datagramCaptures(t)["001"].raw
	loginJSON := login[bytes.IndexByte(login, '{') : len(login)-1]
	tests := []struct {
		name  string
		in    []byte
		want  error
		field string
	}{
		{"empty", nil, ErrMalformed, ""},
		{"garbage", []byte("hello world"), ErrMalformed, ""},
		{"binary garbage", []byte{0xff, 0xfe, 0x01}, ErrMalformed, ""},
		{"truncated datagram", login[:len(login)/2], ErrTruncated, ""},
		{"datagram without final NUL", login[:len(login)-1], ErrTruncated, ""},
		{"too few fields", []byte("log\x00EVENT\x00"), ErrMalformed, "priority"},
		{"nopt larger than fields", []byte("log\x00SIEVE\x00low\x00alice\x00\x005\x00a\x00msg\x00"), ErrMalformed, "nopt"},
		{"non-numeric nopt", []byte("log\x00SIEVE\x00low\x00alice\x00\x00two\x00a\x00b\x00msg\x00"), ErrMalformed, "nopt"},
		{"negative nopt", []byte("log\x00SIEVE\x00low\x00alice\x00\x00-1\x00msg\x00"), ErrMalformed, "nopt"},
		{"extra fields", []byte("log\x00MAIL\x00\x00alice\x00INBOX\x000\x00msg\x00f\x00g\x00"), ErrMalformed, ""},
		{"bad JSON", datagramOf("log", []byte(`{"event":"Login",}`)), ErrMalformed, ""},
		{"JSON cut in datagram", datagramOf("log", loginJSON[:40]), ErrMalformed, ""},
		{"bare JSON cut", loginJSON[:40], ErrTruncated, ""},
		{"JSON not an object", datagramOf("log", []byte(`["event"]`)), ErrMalformed, ""},
		{"JSON trailing data", datagramOf("log", []byte(`{"event":"Login"} x`)), ErrMalformed, ""},
		{"JSON empty message", datagramOf("log", nil), ErrMalformed, ""},
		{"JSON missing event", []byte(`{"user":"alice"}`), ErrMalformed, "event"},
		{"JSON event not a string", []byte(`{"event":5}`), ErrMalformed, "event"},
		{"unknown event", []byte(`{"event":"vnd.example.Teleport","user":"alice"}`), ErrUnknownEvent, "event"},
		{"internal name as event", []byte(`{"event":"MailNotification"}`), ErrUnknownEvent, "event"},
		{"unknown class", []byte("log\x00PAGE\x00\x00alice\x00\x000\x00hi\x00"), ErrUnknownClass, "class"},
		{"bad timestamp", []byte(`{"event":"Login","timestamp":"yesterday"}`), ErrMalformed, "timestamp"},
		{"timestamp out of range", []byte(`{"event":"Login","timestamp":"0000-01-01T00:00:00+01:00"}`), ErrMalformed, "timestamp"},
		{"bad uri", []byte(`{"event":"Login","uri":"http://x"}`), ErrMalformed, "uri"},
		{"bad uidvalidity", []byte(`{"event":"Login","uri":"imap://h/user.a;UIDVALIDITY=x"}`), ErrMalformed, "uri"},
		{"bad percent", []byte(`{"event":"Login","uri":"imap://h/user.a%zz"}`), ErrMalformed, "uri"},
		{"pid not a number", []byte(`{"event":"Login","pid":"abc"}`), ErrMalformed, "pid"},
		{"pid float", []byte(`{"event":"Login","pid":1.5}`), ErrMalformed, "pid"},
		{"modseq negative", []byte(`{"event":"FlagsSet","modseq":-1}`), ErrMalformed, "modseq"},
		{"uidset star", []byte(`{"event":"FlagsSet","uidset":"1:*"}`), ErrMalformed, "uidset"},
		{"uidset zero", []byte(`{"event":"FlagsSet","uidset":"0"}`), ErrMalformed, "uidset"},
		{"uidset huge", []byte(`{"event":"FlagsSet","uidset":"1:4294967295"}`), ErrTooLarge, "uidset"},
		{"midset of numbers", []byte(`{"event":"FlagsSet","vnd.cmu.midset":[1]}`), ErrMalformed, "vnd.cmu.midset"},
		{"flags number", []byte(`{"event":"FlagsSet","flagNames":3}`), ErrMalformed, "flagNames"},
		{"acl odd", []byte(`{"event":"AclChange","vnd.cmu.mailboxACL":"alice"}`), ErrMalformed, "vnd.cmu.mailboxACL"},
		{"string field number", []byte(`{"event":"Login","service":1}`), ErrMalformed, "service"},
		{"dlist literal longer than data", []byte("NOTIFY %(CLASS EVENT MESSAGE {999+}\r\n{\"event\":\"Login\"})\r\n"), ErrTruncated, ""},
		{"dlist without terminator", []byte("NOTIFY %(CLASS EVENT MESSAGE NIL)"), ErrTruncated, ""},
		{"dlist garbage", []byte("NOTIFY ((((\r\n"), ErrMalformed, ""},
		{"dlist not a kvlist", []byte("NOTIFY (a b)\r\n"), ErrMalformed, ""},
		{"dlist no class", []byte("NOTIFY %(MESSAGE x)\r\n"), ErrMalformed, "CLASS"},
		{"dlist no message", []byte("NOTIFY %(CLASS MAIL)\r\n"), ErrMalformed, "MESSAGE"},
		{"dlist class a list", []byte("NOTIFY %(CLASS (EVENT) MESSAGE x)\r\n"), ErrMalformed, "CLASS"},
		{"dlist options not a list", []byte("NOTIFY %(CLASS SIEVE OPTIONS x MESSAGE x)\r\n"), ErrMalformed, "OPTIONS"},
		{"dlist option a list", []byte("NOTIFY %(CLASS SIEVE OPTIONS ((x)) MESSAGE x)\r\n"), ErrMalformed, "OPTIONS"},
		{"dlist message a list", []byte("NOTIFY %(CLASS SIEVE MESSAGE (x))\r\n"), ErrMalformed, "MESSAGE"},
		{"dlist unknown class", []byte("NOTIFY %(CLASS PAGE MESSAGE x)\r\n"), ErrUnknownClass, "class"},
		{"dlist bad JSON", []byte("NOTIFY %(CLASS EVENT MESSAGE {3+}\r\n{x} FILEPATH NIL)\r\n"), ErrMalformed, ""},
		{"oversized", append([]byte(`{"event":"Login","x":"`), bytes.Repeat([]byte("a"), MaxNotificationSize)...), ErrTooLarge, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Decode(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("%T is not a *DecodeError", err)
			}
			if de.Field != tt.field {
				t.Errorf("field %q, want %q (%v)", de.Field, tt.field, err)
			}
			if de.Offset > len(tt.in) {
				t.Errorf("offset %d beyond the input (%d bytes)", de.Offset, len(tt.in))
			}
			if !strings.HasPrefix(err.Error(), "bonnie: decode") {
				t.Errorf("message %q", err)
			}
			partial := errors.Is(err, ErrUnknownEvent) || errors.Is(err, ErrUnknownClass)
			if partial != (e != nil) {
				t.Fatalf("event %v with error %v", e, err)
			}
			if e != nil && !bytes.Equal(e.Raw, tt.in) {
				t.Error("partial event without its Raw")
			}
		})
	}
}

func TestDecodeErrorOffsets(t *testing.T) {
	// The offset points into Raw, through the framing, at the bad value.
	msg := []byte(`{"event":"FlagsSet","uidset":"1:x"}`)
	for name, raw := range map[string][]byte{
		"datagram": datagramOf("log", msg),
		"dlist":    dlistOf(msg),
		"json":     append([]byte("  "), msg...),
	} {
		_, err := Decode(raw)
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("%s: %v", name, err)
		}
		if de.Offset < 0 || !bytes.HasPrefix(raw[de.Offset:], []byte(`"1:x"`)) {
			t.Errorf("%s: offset %d points at %.10q", name, de.Offset, raw[max(de.Offset, 0):])
		}
		if de.Framing != Framing(name) {
			t.Errorf("%s: framing %q", name, de.Framing)
		}
	}
	_, err := Decode(datagramOf("log", []byte(`{"event":"Login" "x"}`)))
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		t.Errorf("the JSON syntax error is not reachable: %v", err)
	}
}

func TestDecodeUnknownEventKeepsEverything(t *testing.T) {
	raw := datagramOf("log", []byte(`{"event":"vnd.example.Teleport","timestamp":"2026-01-02T03:04:05.678+05:30","user":"alice","uri":"imap://h/user.alice.Calendar","alarmTime":"x"}`))
	e, err := Decode(raw)
	if !errors.Is(err, ErrUnknownEvent) || e == nil {
		t.Fatalf("%v %v", e, err)
	}
	check(t, "name", e.Name, "vnd.example.Teleport")
	check(t, "type", e.Type, Cancelled)
	check(t, "class", e.Class, ClassEvent)
	check(t, "framing", e.Framing, FramingDatagram)
	check(t, "user", e.User, "alice")
	check(t, "owner", e.Mailbox.Owner, "alice")
	check(t, "extra", string(e.Extra["alarmTime"]), `"x"`)
	check(t, "raw", e.Raw, raw)
	if e.Key() == "" {
		t.Error("a dead letter still needs a key")
	}
}

func TestDecodeJSONFields(t *testing.T) {
	tests := []struct {
		name string
		json string
		fn   func(t *testing.T, e *Event)
	}{
		{"offset timestamp", `{"event":"Login","timestamp":"2026-11-29T01:54:35.248+05:30"}`, func(t *testing.T, e *Event) {
			check(t, "time", e.Time, time.Date(2026, 11, 28, 20, 24, 35, 248e6, time.UTC))
			check(t, "timestamp kept", e.Timestamp, "2026-11-29T01:54:35.248+05:30")
		}},
		{"offset without colon", `{"event":"Login","timestamp":"2026-11-29T01:54:35.248+0530"}`, func(t *testing.T, e *Event) {
			check(t, "time", e.Time, time.Date(2026, 11, 28, 20, 24, 35, 248e6, time.UTC))
		}},
		{"no timestamp", `{"event":"Login"}`, func(t *testing.T, e *Event) {
			check(t, "time", e.Time.IsZero(), true)
		}},
		{"virtdomains internal name", `{"event":"MailboxCreate","uri":"imap://h/example.org!user.alice.Work;UIDVALIDITY=7"}`, func(t *testing.T, e *Event) {
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "h", Name: "example.org!user.alice.Work", Owner: "alice@example.org", UIDValidity: 7})
		}},
		{"virtdomains admin name", `{"event":"MailboxCreate","uri":"imap://h/user.alice.Work@example.org;UIDVALIDITY=7"}`, func(t *testing.T, e *Event) {
			check(t, "owner", e.Mailbox.Owner, "alice@example.org")
		}},
		{"unixhierarchysep dotted user", `{"event":"MailboxCreate","uri":"imap://h/user/john.doe/Work@example.org"}`, func(t *testing.T, e *Event) {
			check(t, "owner", e.Mailbox.Owner, "john.doe@example.org")
		}},
		{"shared folder", `{"event":"MailboxCreate","uri":"imap://h/shared.Team%20Docs"}`, func(t *testing.T, e *Event) {
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "h", Name: "shared.Team Docs"})
		}},
		{"Kolab subject and user", `{"event":"AclChange","user":"john/doe@example.org","aclSubject":"jane/roe@example.org","aclRights":"lrs","vnd.cmu.mailboxACL":"john/doe@example.org\tlrswipkxtecdan\tjane/roe@example.org\tlrs\t"}`, func(t *testing.T, e *Event) {
			check(t, "user", e.User, "john.doe@example.org")
			check(t, "subject", e.ACLSubject, "jane.roe@example.org")
			check(t, "acl", e.MailboxACL, ACL{{"john.doe@example.org", "lrswipkxtecdan"}, {"jane.roe@example.org", "lrs"}})
			check(t, "removed", e.ACLRemoved, false)
		}},
		{"group subject, empty rights", `{"event":"AclChange","aclSubject":"group:finance","aclRights":""}`, func(t *testing.T, e *Event) {
			check(t, "subject", e.ACLSubject, "group:finance")
			check(t, "removed", e.ACLRemoved, false)
		}},
		{"aclRights null means removed", `{"event":"AclChange","aclSubject":"bob","aclRights":null}`, func(t *testing.T, e *Event) {
			check(t, "removed", e.ACLRemoved, true)
		}},
		{"uidset list (Cyrus 2.5)", `{"event":"FlagsSet","uidset":["1:3",7,"9"]}`, func(t *testing.T, e *Event) {
			check(t, "uids", e.UIDs, u32(1, 2, 3, 7, 9))
		}},
		{"uidset number", `{"event":"FlagsSet","uidset":12}`, func(t *testing.T, e *Event) {
			check(t, "uids", e.UIDs, u32(12))
		}},
		{"reversed range", `{"event":"FlagsSet","uidset":"6:4"}`, func(t *testing.T, e *Event) {
			check(t, "uids", e.UIDs, u32(4, 5, 6))
		}},
		{"old UID from the URL (Cyrus 2.5)", `{"event":"vnd.cmu.MessageCopy","oldMailboxID":"imap://h/user.a;UIDVALIDITY=1/;UID=5","uri":"imap://h/user.a.b;UIDVALIDITY=2/;UID=9"}`, func(t *testing.T, e *Event) {
			check(t, "old uids", e.OldUIDs, u32(5))
			check(t, "uids", e.UIDs, u32(9))
		}},
		{"oldMailboxID not a URL", `{"event":"MailboxRename","oldMailboxID":"abc123"}`, func(t *testing.T, e *Event) {
			check(t, "old uri", e.OldURI, "abc123")
			check(t, "old mailbox", e.OldMailbox, (*MailboxURL)(nil))
		}},
		{"NIL message ids", `{"event":"MessageExpunge","uidset":"1:2","vnd.cmu.midset":["NIL","<a@b>",null]}`, func(t *testing.T, e *Event) {
			check(t, "ids", e.MessageIDs, []string{"", "<a@b>", ""})
		}},
		{"midset string", `{"event":"MessageExpunge","vnd.cmu.midset":"<a@b> NIL"}`, func(t *testing.T, e *Event) {
			check(t, "ids", e.MessageIDs, []string{"<a@b>", ""})
		}},
		{"flags normalised", `{"event":"MessageAppend","flagNames":"\\SEEN \\answered \\Recent \\draft \\deleted \\Custom $Junk"}`, func(t *testing.T, e *Event) {
			check(t, "flags", e.Flags, []string{`\Seen`, `\Answered`, `\Recent`, `\Draft`, `\Deleted`, `\Custom`, "$Junk"})
		}},
		{"flags list", `{"event":"FlagsSet","flagNames":["\\flagged"]}`, func(t *testing.T, e *Event) {
			check(t, "flags", e.Flags, []string{`\Flagged`})
		}},
		{"big integers keep precision", `{"event":"MessageAppend","modseq":18446744073709551615,"messageSize":9007199254740993,"diskQuota":-1,"maxMessages":-1,"uidnext":4294967295}`, func(t *testing.T, e *Event) {
			check(t, "modseq", e.Modseq, uint64(18446744073709551615))
			check(t, "size", e.Size, int64(9007199254740993))
			check(t, "unlimited", []*int64{e.DiskQuota, e.MaxMessages}, []*int64{i64(-1), i64(-1)})
			check(t, "uidnext", e.UIDNext, uint32(4294967295))
		}},
		{"quoted numbers", `{"event":"QuotaChange","diskQuota":"5","pid":"42","modseq":"7"}`, func(t *testing.T, e *Event) {
			check(t, "values", []any{e.DiskQuota, e.PID, e.Modseq}, []any{i64(5), 42, uint64(7)})
		}},
		{"nulls are absent", `{"event":"Login","user":null,"pid":null,"diskUsed":null,"uri":null}`, func(t *testing.T, e *Event) {
			check(t, "user", e.User, "")
			check(t, "diskUsed", e.DiskUsed, (*int64)(nil))
			check(t, "extra", len(e.Extra), 0)
		}},
		{"unknown members kept in Extra", `{"event":"MessageNew","vnd.cmu.davFilename":"x.ics","vnd.cmu.newMessages":3,"nested":{"a":[1,2]},"n":null}`, func(t *testing.T, e *Event) {
			check(t, "extra", map[string]string{"vnd.cmu.davFilename": string(e.Extra["vnd.cmu.davFilename"]),
				"vnd.cmu.newMessages": string(e.Extra["vnd.cmu.newMessages"]), "nested": string(e.Extra["nested"]), "n": string(e.Extra["n"])},
				map[string]string{"vnd.cmu.davFilename": `"x.ics"`, "vnd.cmu.newMessages": "3", "nested": `{"a":[1,2]}`, "n": "null"})
		}},
		{"fastmail session differing", `{"event":"Login","vnd.cmu.sessionId":"a","vnd.fastmail.sessionId":"b"}`, func(t *testing.T, e *Event) {
			check(t, "session", e.SessionID, "a")
			check(t, "extra", string(e.Extra["vnd.fastmail.sessionId"]), `"b"`)
		}},
		{"fastmail session alone", `{"event":"Login","vnd.fastmail.sessionId":"b"}`, func(t *testing.T, e *Event) {
			check(t, "session", e.SessionID, "b")
			check(t, "extra", len(e.Extra), 0)
		}},
		{"message content", `{"event":"MessageNew","messageContent":"Subject: x\r\n\r\nbody"}`, func(t *testing.T, e *Event) {
			check(t, "content", string(e.MessageContent), "Subject: x\r\n\r\nbody")
		}},
		{"escaped slashes (Cyrus 2.5 JSON)", `{"event":"Login","uri":"imap:\/\/h"}`, func(t *testing.T, e *Event) {
			check(t, "server", e.Mailbox.Server, "h")
		}},
		{"Cyrus 2.5 user-relative URL", `{"event":"MessageAppend","uri":"imap://john.doe@example.org@kolab.example.org/Calendar/Personal%20Calendar;UIDVALIDITY=3/;UID=4"}`, func(t *testing.T, e *Event) {
			check(t, "mailbox", e.Mailbox, MailboxURL{Server: "kolab.example.org", Name: "Calendar/Personal Calendar",
				Owner: "john.doe@example.org", User: "john.doe@example.org", UIDValidity: 3, UID: 4})
		}},
		{"alias QuotaExceeded", `{"event":"QuotaExceeded"}`, func(t *testing.T, e *Event) {
			check(t, "type", e.Type, QuotaExceed)
		}},
		{"duplicate member: last wins", `{"event":"Login","user":"a","user":"b"}`, func(t *testing.T, e *Event) {
			check(t, "user", e.User, "b")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, raw := range [][]byte{[]byte(tt.json), datagramOf("log", []byte(tt.json)), dlistOf([]byte(tt.json))} {
				e, err := Decode(raw)
				if err != nil {
					t.Fatalf("%q: %v", raw, err)
				}
				tt.fn(t, e)
			}
		})
	}
}

func TestDecodeFramingFunctions(t *testing.T) {
	c := datagramCaptures(t)["012"]
	msg := c.raw[bytes.IndexByte(c.raw, '{') : len(c.raw)-1]
	if _, err := DecodeDatagram(c.raw); err != nil {
		t.Error(err)
	}
	if _, err := DecodeJSON(msg); err != nil {
		t.Error(err)
	}
	if _, err := DecodeDList(dlistOf(msg)); err != nil {
		t.Error(err)
	}
	// Each refuses the other framings.
	if _, err := DecodeDatagram(msg); !errors.Is(err, ErrTruncated) {
		t.Errorf("DecodeDatagram(JSON): %v", err)
	}
	if _, err := DecodeJSON(c.raw); !errors.Is(err, ErrMalformed) {
		t.Errorf("DecodeJSON(datagram): %v", err)
	}
	if _, err := DecodeDList(c.raw); !errors.Is(err, ErrMalformed) {
		t.Errorf("DecodeDList(datagram): %v", err)
	}
	for _, fn := range []func([]byte) (*Event, error){DecodeDatagram, DecodeDList, DecodeJSON} {
		if _, err := fn(nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("empty: %v", err)
		}
		if _, err := fn(make([]byte, MaxNotificationSize+1)); !errors.Is(err, ErrTooLarge) {
			t.Errorf("oversized: %v", err)
		}
	}
	// Decode copies: the caller may reuse its buffer.
	buf := slices.Clone(c.raw)
	e, err := Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	clear(buf)
	if !bytes.Equal(e.Raw, c.raw) || e.Key() == "" {
		t.Error("Raw aliases the caller's buffer")
	}
	// MAIL over dlist.
	e, err = Decode([]byte("NOTIFY %(METHOD log CLASS MAIL PRIORITY NIL USER alice MAILBOX INBOX OPTIONS () MESSAGE {8+}\r\nFrom: x\n FILEPATH NIL)\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	check(t, "mail", [4]string{string(e.Class), e.NotifyUser, e.NotifyMailbox, e.Message}, [4]string{"MAIL", "alice", "INBOX", "From: x\n"})
}

// FuzzDecode checks that Decode never panics, and that what it accepts
// keeps the input as Raw and keeps its Key through a JSON round trip.
func FuzzDecode(f *testing.F) {
	for _, c := range datagramCaptures(f) {
		f.Add(c.raw)
	}
	for _, c := range dlistCaptures(f) {
		f.Add(c.raw)
		if e, err := Decode(c.raw); err == nil {
			f.Add(e.payload())
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := Decode(in)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DecodeError", err)
			}
			if e != nil && !bytes.Equal(e.Raw, in) {
				t.Fatal("partial event without its Raw")
			}
			return
		}
		if !bytes.Equal(e.Raw, in) {
			t.Fatal("Raw differs from the input")
		}
		key := e.Key()
		// Key does not depend on the UIDs; a huge legal uidset ("1:1000000")
		// would only make the round trip slow, so leave such lists out.
		rt := *e
		if len(rt.UIDs)+len(rt.OldUIDs) > 1<<12 {
			rt.UIDs, rt.OldUIDs = nil, nil
		}
		js, err := json.Marshal(&rt)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back Event
		if err := json.Unmarshal(js, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", js, err)
		}
		if back.Key() != key {
			t.Fatalf("key changed by a JSON round trip of %q", in)
		}
	})
}
