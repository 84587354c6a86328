package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/bonnie-archive/bonnie"
	"github.com/spf13/cobra"
)

func newEventsCmd(g *globals) *cobra.Command {
	var since uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the log, one event per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out)
			enc.SetEscapeHTML(false)
			pos := bonnie.Position(since)
			for {
				recs, err := lg.Read(ctx, pos, 1000)
				if err != nil {
					return fmt.Errorf("read log: %w", err)
				}
				for _, rec := range recs {
					if asJSON {
						if err := enc.Encode(rec); err != nil {
							return err
						}
					} else if err := printEvent(out, rec); err != nil {
						return err
					}
					pos = rec.Position
				}
				if len(recs) == 0 {
					return nil
				}
			}
		},
	}
	cmd.Flags().Uint64Var(&since, "since", 0, "print events after this log position")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each record (event, changes, hashes) as one JSON line")
	return cmd
}

// printEvent writes one readable line: position, time, type, user, folder,
// UIDs, flags and how many changes it caused.
func printEvent(w io.Writer, rec bonnie.Record) error {
	ev := rec.Event
	var b strings.Builder
	fmt.Fprintf(&b, "%8d  %s  %-18s", rec.Position, ev.Time.UTC().Format("2006-01-02T15:04:05.000Z"), ev.Type)
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "  %s=%s", k, v)
		}
	}
	field("user", ev.User)
	field("mailbox", ev.Mailbox.Name)
	if ev.OldMailbox != nil {
		field("from", ev.OldMailbox.Name)
	}
	if len(ev.UIDs) > 0 {
		field("uids", uidList(ev.UIDs))
	}
	if len(ev.Flags) > 0 {
		field("flags", strings.Join(ev.Flags, ","))
	}
	field("subject", ev.ACLSubject)
	field("rights", ev.ACLRights)
	field("client", ev.ClientIP)
	if ev.Type == bonnie.DaemonStart || ev.Type == bonnie.DaemonStop {
		field("service", ev.Service)
		field("pid", fmt.Sprint(ev.PID))
		for _, k := range []string{"vnd.bonnie.cleanStop", "vnd.bonnie.downSince"} {
			if v, ok := ev.Extra[k]; ok {
				field(strings.TrimPrefix(k, "vnd.bonnie."), strings.Trim(string(v), `"`))
			}
		}
	}
	if len(rec.Changes) > 0 {
		field("changes", fmt.Sprint(len(rec.Changes)))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// uidList writes UIDs compactly as an IMAP sequence set ("1:3,7").
func uidList(uids []uint32) string {
	var b strings.Builder
	for i := 0; i < len(uids); {
		j := i
		for j+1 < len(uids) && uids[j+1] == uids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d:%d", uids[i], uids[j])
		} else {
			fmt.Fprintf(&b, "%d", uids[i])
		}
		i = j + 1
	}
	return b.String()
}
