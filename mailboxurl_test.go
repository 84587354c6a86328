package bonnie

import (
	"errors"
	"testing"
)

func TestParseMailboxURL(t *testing.T) {
	tests := []struct {
		in   string
		want MailboxURL
	}{
		{"imap://cyrus-harness.test", MailboxURL{Server: "cyrus-harness.test"}},
		{"IMAP://h/", MailboxURL{Server: "h"}},
		{"imap://h:143/user.alice", MailboxURL{Server: "h:143", Name: "user.alice", Owner: "alice"}},
		{"imap://h/user.alice.B%C3%BCcher;UIDVALIDITY=1795897413", MailboxURL{Server: "h", Name: "user.alice.Bücher", Owner: "alice", UIDValidity: 1795897413}},
		{"imap://h/user.alice;UIDVALIDITY=1795897409/;UID=1", MailboxURL{Server: "h", Name: "user.alice", Owner: "alice", UIDValidity: 1795897409, UID: 1}},
		{"imap://h/user.alice;uidvalidity=5/;uid=6;SECTION=1.2", MailboxURL{Server: "h", Name: "user.alice", Owner: "alice", UIDValidity: 5, UID: 6}},
		{"imap://h/user.alice/;UID=6", MailboxURL{Server: "h", Name: "user.alice", Owner: "alice", UID: 6}},
		{"imap://h/user.alice?SUBJECT%20x", MailboxURL{Server: "h", Name: "user.alice", Owner: "alice"}},
		{"imap://h/user.john^doe.Work", MailboxURL{Server: "h", Name: "user.john^doe.Work", Owner: "john.doe"}},
		{"imap://h/user/john.doe/Work", MailboxURL{Server: "h", Name: "user/john.doe/Work", Owner: "john.doe"}},
		{"imap://h/example.org!user.alice.Sent", MailboxURL{Server: "h", Name: "example.org!user.alice.Sent", Owner: "alice@example.org"}},
		{"imap://h/example.org!shared.team", MailboxURL{Server: "h", Name: "example.org!shared.team"}},
		{"imap://h/user.alice.Sent@example.org", MailboxURL{Server: "h", Name: "user.alice.Sent@example.org", Owner: "alice@example.org"}},
		{"imap://h/user.alice.me@home", MailboxURL{Server: "h", Name: "user.alice.me@home", Owner: "alice"}},
		{"imap://h/shared.Team%20Docs", MailboxURL{Server: "h", Name: "shared.Team Docs"}},
		{"imap://h/Users", MailboxURL{Server: "h", Name: "Users"}},
		{"imap://h/user.", MailboxURL{Server: "h", Name: "user."}},
		{"imap://h/user", MailboxURL{Server: "h", Name: "user"}},
		// Cyrus 2.5: user-relative, the user in the authority.
		{"imap://cassandane@localhost.localdomain/INBOX;UIDVALIDITY=7/;UID=1", MailboxURL{Server: "localhost.localdomain", Name: "INBOX", Owner: "cassandane", User: "cassandane", UIDValidity: 7, UID: 1}},
		{"imap://john.doe@example.org@kolab.example.org/Calendar", MailboxURL{Server: "kolab.example.org", Name: "Calendar", Owner: "john.doe@example.org", User: "john.doe@example.org"}},
		{"imap://john.doe@example.org@k/Other%20Users/jane.roe/Calendar", MailboxURL{Server: "k", Name: "Other Users/jane.roe/Calendar", Owner: "jane.roe@example.org", User: "john.doe@example.org"}},
		{"imap://john.doe@example.org@k/Shared%20Folders/shared/Team", MailboxURL{Server: "k", Name: "Shared Folders/shared/Team", User: "john.doe@example.org"}},
		{"imap://john@k/user/jane/Work", MailboxURL{Server: "k", Name: "user/jane/Work", Owner: "jane", User: "john"}},
		{"imap://john;AUTH=*@k/INBOX", MailboxURL{Server: "k", Name: "INBOX", Owner: "john", User: "john"}},
	}
	for _, tt := range tests {
		got, err := ParseMailboxURL(tt.in)
		if err != nil {
			t.Errorf("ParseMailboxURL(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseMailboxURL(%q) =\n %+v, want\n %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseMailboxURLErrors(t *testing.T) {
	for _, in := range []string{
		"", "imap:/h", "http://h/user.a", "imap://", "imap:///user.a",
		"imap://h/user.a;UIDVALIDITY=0", "imap://h/user.a;UIDVALIDITY=x",
		"imap://h/user.a;UIDVALIDITY=4294967296", "imap://h/user.a/;UID=-1",
		"imap://h/user.a/;UID=+1", "imap://h/user.%zz", "imap://%zz@h/INBOX",
	} {
		if _, err := ParseMailboxURL(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseMailboxURL(%q) = %v, want ErrMalformed", in, err)
		}
	}
}
