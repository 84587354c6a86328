package bonnie_test

import (
	"fmt"

	"github.com/bonnie-archive/bonnie"
)

// A datagram as Cyrus 3.6 sends it for "STORE 2 -FLAGS (\Flagged)", shortened.
func ExampleDecode() {
	raw := []byte("log\x00EVENT\x00\x00\x00\x000\x00" +
		`{"event":"FlagsClear","timestamp":"2026-11-29T01:53:35.512+05:30",` +
		`"uri":"imap://mail.example.org/user.alice;UIDVALIDITY=1795897409",` +
		`"modseq":17,"uidset":"2","vnd.cmu.midset":["<m2@example.org>"],` +
		`"flagNames":"\\Flagged","user":"alice"}` + "\x00")

	e, err := bonnie.Decode(raw)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.Type, e.Framing, e.Time)
	fmt.Println(e.User, e.Mailbox.Name, e.Mailbox.Owner, e.Mailbox.UIDValidity)
	fmt.Println(e.UIDs, e.Flags, e.MessageIDs, e.Modseq)
	// Output:
	// FlagsClear datagram 2026-11-28 20:23:35.512 +0000 UTC
	// alice user.alice alice 1795897409
	// [2] [\Flagged] [<m2@example.org>] 17
}
