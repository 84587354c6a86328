package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newAccessCmd(g *globals) *cobra.Command {
	var folder, user, at string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "access (--folder MAILBOX | --user PERSON) [--at TIME]",
		Short: "Who could read a folder, or which folders a person could read, at a time",
		Long: `access answers from the ACLs and the group memberships the log captured at event time, never
from today's directory:

  bonnie access --folder user.alice.Shared --at 2026-11-28T10:30:00Z
      who could read the folder (RFC 4314 right "r") then: the users its ACL named, the members
      its groups had then, anyone; with the rights and the entries that granted them
  bonnie access --user bob --at 2026-11-28T10:30:00Z
      which folders bob (any login, alias, address or persistent id he had) could read then,
      directly, through a group he was in then, or as anyone

The folder is named as Cyrus names it in its admin namespace, decoded ("user.alice.Über"), by any
name it had, or by its uniqueid. TIME is RFC 3339 (default: now). The answer names the log
position of the ACL snapshot in force. The query itself is recorded in the log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (folder == "") == (user == "") {
				return errors.New("give one of --folder or --user")
			}
			when := time.Now().UTC()
			if at != "" {
				t, err := parseRFC3339("--at", at)
				if err != nil {
					return err
				}
				when = t
			}
			ctx := cmd.Context()
			x, done, err := openDiscovery(ctx, g, "access", map[string]any{"folder": folder, "user": user, "at": when})
			if err != nil {
				return err
			}
			defer done()
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			defer tw.Flush()
			if folder != "" {
				fas, err := x.WhoCouldRead(ctx, folder, when)
				if err != nil {
					return discoveryNotFound(err)
				}
				if asJSON {
					return writeDiscoveryJSON(out, fas)
				}
				for _, fa := range fas {
					state := fmt.Sprintf("ACL of #%d", fa.Position)
					if !fa.Exists {
						state = "did not exist then"
					}
					fmt.Fprintf(tw, "folder %s (%s) at %s: %s\n", fa.Path, fa.Folder, when.Format(time.RFC3339Nano), state)
					fmt.Fprintln(tw, "READER\tKIND\tID\tRIGHTS\tVIA")
					for _, r := range fa.Readers {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Login, r.Kind, r.ID, r.Rights, strings.Join(r.Via, ", "))
					}
				}
				return nil
			}
			pa, err := x.ReadableBy(ctx, user, when)
			if err != nil {
				return discoveryNotFound(err)
			}
			if asJSON {
				return writeDiscoveryJSON(out, pa)
			}
			var groups []string
			for _, gr := range pa.Groups {
				groups = append(groups, gr.Name)
			}
			if len(groups) == 0 {
				groups = []string{"none known"}
			}
			fmt.Fprintf(tw, "person %s (%s) at %s, groups then: %s\n", user, strings.Join(pa.Person.IDs, ", "),
				when.Format(time.RFC3339Nano), strings.Join(groups, ", "))
			fmt.Fprintln(tw, "FOLDER\tUNIQUEID\tRIGHTS\tVIA\tACL OF")
			for _, f := range pa.Folders {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t#%d\n", f.Path, f.Folder, f.Rights, strings.Join(f.Via, ", "), f.Position)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&folder, "folder", "", "the folder (admin-namespace name, any name it had, or uniqueid)")
	cmd.Flags().StringVar(&user, "user", "", "the person (login, alias, address or persistent id)")
	cmd.Flags().StringVar(&at, "at", "", "the time, RFC 3339 (default: now)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
