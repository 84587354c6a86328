package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/discovery"
)

func newSearchCmd(g *globals) *cobra.Command {
	var q discovery.Search
	var from, to string
	var types []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "search [--custodian X] [--folder F] [--from T1] [--to T2] [--type T] [--sender S] [--recipient R] [--subject S] [--text Q]",
		Short: "Find events on messages by custodian, folder, time, event type, sender, recipient, subject or full text",
		Long: `search lists, in time order, the events that match every criterion given, each with its log
position, the message (Message-ID, subject, sender) and the actor. Without --type only events on
messages are searched; --type (repeatable, or comma-separated: MessageNew, MessageRead,
vnd.bonnie.Query...) searches those types only. --sender, --recipient and --subject match a
substring, case-insensitively; --text is a full-text query over the archived bodies (words,
"a phrase", prefix*, OR), available when the archive stores bodies. Folders are named as in the
admin namespace, decoded, or by uniqueid; times are RFC 3339. The query itself is recorded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if q.From, err = parseRFC3339("--from", from); err != nil {
				return err
			}
			if q.To, err = parseRFC3339("--to", to); err != nil {
				return err
			}
			for _, t := range types {
				for _, name := range strings.Split(t, ",") {
					et, ok := bonnie.ParseEventType(name)
					if !ok {
						return fmt.Errorf("--type: unknown event type %q", name)
					}
					q.Types = append(q.Types, et)
				}
			}
			ctx := cmd.Context()
			x, done, err := openDiscovery(ctx, g, "search", q)
			if err != nil {
				return err
			}
			defer done()
			hits, err := x.Search(ctx, q)
			if err != nil {
				return discoveryNotFound(err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeDiscoveryJSON(out, hits)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "POS\tTIME\tEVENT\tFOLDER\tUID\tBY\tMESSAGE-ID\tFROM\tSUBJECT")
			for _, h := range hits {
				uid := ""
				if h.UID != 0 {
					uid = strconv.FormatUint(uint64(h.UID), 10)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Position, h.Time.UTC().Format("2006-01-02T15:04:05Z"),
					h.Event, h.Path, uid, h.Login, h.MessageID, cell(h.From, 40), cell(h.Subject, 60))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "%d hits\n", len(hits))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Custodian, "custodian", "", "owner of the folders (login, or persistent id)")
	f.StringVar(&q.Folder, "folder", "", "folder (admin-namespace name, any name it had, or uniqueid)")
	f.StringVar(&from, "from", "", "earliest event time, RFC 3339 (inclusive)")
	f.StringVar(&to, "to", "", "latest event time, RFC 3339 (exclusive)")
	f.StringArrayVar(&types, "type", nil, "event type (repeatable, or comma-separated)")
	f.StringVar(&q.Actor, "actor", "", "who acted (login, alias, address or persistent id)")
	f.StringVar(&q.Sender, "sender", "", "sender contains")
	f.StringVar(&q.Recipient, "recipient", "", "a recipient (To, Cc, Bcc) contains")
	f.StringVar(&q.Subject, "subject", "", "subject contains")
	f.StringVar(&q.MessageID, "message-id", "", "this Message-ID")
	f.StringVar(&q.Text, "text", "", "full-text query over archived bodies")
	f.IntVar(&q.Limit, "limit", 1000, "at most this many hits")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
