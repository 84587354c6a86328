package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"
)

func newReconcileCmd(g *globals) *cobra.Command {
	var (
		f      crawlFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "reconcile --imap HOST:PORT --imap-password-file F [--mailbox NAME]...",
		Short: "Compare the log with the server and record what the log missed",
		Long: `reconcile compares every folder of the server (or those --mailbox names)
with the log: UIDVALIDITY, HIGHESTMODSEQ, the messages and their flags. What
the log missed (messages appended, flags changed, messages expunged, folders
created, renamed, deleted or recreated while nobody listened) is recorded as
vnd.bonnie.Reconcile events, each with the window in which it must have
happened (from the daemon's DaemonStart events). Folders whose HIGHESTMODSEQ
has not moved since the last verification are not opened. Safe while bonnied
runs: the events are then handed to it over its control socket.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			store, err := f.bodies(g)
			if err != nil {
				return err
			}
			c, err := f.crawler(store, "")
			if err != nil {
				return err
			}
			defer c.Close()
			tgt, err := openCrawlTarget(ctx, g)
			if err != nil {
				return err
			}
			defer tgt.close()
			r, err := c.Reconcile(ctx, tgt.log, tgt.record)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			fmt.Fprintf(out, "checked %d folders in %s (%d unchanged since last verified)\n", r.Folders, r.Duration.Round(time.Millisecond), r.Unchanged)
			if r.Changed() {
				fmt.Fprintf(out, "recorded in %s: %d folders created, %d renamed, %d deleted, %d recreated, %d ACLs changed; %d messages appended, %d flag changes, %d expunged (%d events)\n",
					tgt.via, r.Created, r.Renamed, r.Deleted, r.Recreated, r.ACLs, r.Appended, r.Flags, r.Expunged, r.Events)
			} else {
				fmt.Fprintln(out, "the log agrees with the server")
			}
			names := make([]string, 0, len(r.Skipped))
			for n := range r.Skipped {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				fmt.Fprintf(out, "skipped %s: %s\n", n, r.Skipped[n])
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
