package intercept

import (
	"strings"

	"github.com/bonnie-archive/bonnie"
)

// envelopeAddresses returns the mail addresses (local@domain, lower-cased)
// of an IMAP ENVELOPE as Cyrus sends it in vnd.cmu.envelope: from, sender,
// reply-to, to, cc and bcc. What cannot be parsed yields what was read so
// far: the envelope is a hint for matching senders and recipients, the
// actor and the mailbox owner come from the event's identities.
func envelopeAddresses(env string) []string {
	e, err := bonnie.ParseEnvelope(env)
	if err != nil || e == nil {
		return nil
	}
	var out []string
	for _, l := range [][]bonnie.Address{e.From, e.Sender, e.ReplyTo, e.To, e.Cc, e.Bcc} {
		for _, a := range l {
			if addr := a.Addr(); addr != "" { // not a group marker
				out = append(out, strings.ToLower(addr))
			}
		}
	}
	return out
}
