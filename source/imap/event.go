package imap

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
)

// Services named in the events.
const (
	ServiceBackfill  = "bonnie-backfill"
	ServiceReconcile = "bonnie-reconcile"
)

// eventJSON encodes a Backfill or Reconcile event about folder f (see
// bonnie.Crawl for the members): the folder's standard members as Cyrus
// spells them, the UIDs and Message-IDs of the messages the event brings,
// and the crawl.
func (c *Crawler) eventJSON(t bonnie.EventType, f Folder, at time.Time, crawl *bonnie.Crawl) ([]byte, error) {
	service := c.o.Service
	if service == "" {
		service = ServiceBackfill
		if t == bonnie.Reconcile {
			service = ServiceReconcile
		}
	}
	ev := map[string]any{
		"event":            t.String(),
		"timestamp":        at.UTC().Format("2006-01-02T15:04:05.000000000Z"),
		"service":          service,
		bonnie.CrawlMember: crawl,
	}
	if f.ID != "" {
		ev["uri"] = c.uri(f.Name, f.UIDValidity)
		ev["mailboxID"] = f.ID
	}
	if f.ID != "" && crawl.Folder != bonnie.FolderDeleted {
		ev["uidnext"] = f.UIDNext
		ev["modseq"] = f.HighestModseq
		ev["messages"] = f.Messages
		if f.ACL != nil {
			ev["vnd.cmu.mailboxACL"] = formatACL(f.ACL)
		}
	}
	if len(crawl.Messages) > 0 {
		uids := make([]string, len(crawl.Messages))
		mids := make([]string, len(crawl.Messages))
		for i, m := range crawl.Messages {
			uids[i] = fmt.Sprint(m.UID)
			mids[i] = m.MessageID
			if mids[i] == "" {
				mids[i] = "NIL"
			}
		}
		ev["uidset"] = strings.Join(uids, ",")
		ev["vnd.cmu.midset"] = mids
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("imap: encode %s: %w", t, err)
	}
	if len(raw) > bonnie.MaxNotificationSize {
		return nil, fmt.Errorf("imap: %s event of %d bytes is over %d: use a smaller chunk", t, len(raw), bonnie.MaxNotificationSize)
	}
	return raw, nil
}

// formatACL writes an ACL as Cyrus's vnd.cmu.mailboxACL does.
func formatACL(acl bonnie.ACL) string {
	var b strings.Builder
	for _, e := range acl {
		b.WriteString(e.Subject)
		b.WriteByte('\t')
		b.WriteString(e.Rights)
		b.WriteByte('\t')
	}
	return b.String()
}
