package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newObjectCmd(g *globals) *cobra.Command {
	var rev int
	var diff []int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "object UID [--rev N | --diff A B]",
		Short: "Revisions of a groupware object (Kolab), one revision's content, or the diff of two",
		Long: `object lists the revisions of the groupware object UID (Kolab stores an object as a message
whose Subject is its UID and whose X-Kolab-Type header names its kind; an edit appends the new
version and trashes and expunges the old one): who wrote each, when, from where, and what removed
it. --rev N prints revision N's content (iCalendar, vCard or Kolab XML) from the archive's body
store; --diff A B (or --diff A,B) compares two revisions property by property. Objects are
recognised from their bodies, so the archive must have stored them. The query is recorded.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				// --diff A B: the second number is a positional argument.
				b, err := strconv.Atoi(args[1])
				if err != nil || len(diff) != 1 {
					return fmt.Errorf("unexpected argument %q (use --diff A B)", args[1])
				}
				diff = append(diff, b)
			}
			if len(diff) != 0 && len(diff) != 2 {
				return errors.New("--diff needs two revisions: --diff A B")
			}
			if len(diff) == 2 && rev != 0 {
				return errors.New("give --rev or --diff, not both")
			}
			uid := args[0]
			ctx := cmd.Context()
			x, done, err := openDiscovery(ctx, g, "object", map[string]any{"uid": uid, "rev": rev, "diff": diff})
			if err != nil {
				return err
			}
			defer done()
			out := cmd.OutOrStdout()
			switch {
			case len(diff) == 2:
				d, err := x.Diff(ctx, uid, diff[0], diff[1])
				if err != nil {
					return discoveryNotFound(err)
				}
				if asJSON {
					return writeDiscoveryJSON(out, d)
				}
				fmt.Fprintf(out, "object %s: revision %d (#%d, %s by %s) -> %d (#%d, %s by %s), %s\n", uid,
					d.From.Rev, d.From.Position, d.From.Time.UTC().Format(time.RFC3339), d.From.Login,
					d.To.Rev, d.To.Position, d.To.Time.UTC().Format(time.RFC3339), d.To.Login, d.Format)
				tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "PROPERTY\tFROM\tTO")
				for _, c := range d.Changes {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Property, oneLine(c.From), oneLine(c.To))
				}
				return tw.Flush()
			case rev != 0:
				c, err := x.RevisionContent(ctx, uid, rev)
				if err != nil {
					return discoveryNotFound(err)
				}
				if asJSON {
					return writeDiscoveryJSON(out, c)
				}
				_, err = out.Write(c.Data)
				return err
			}
			h, err := x.Object(ctx, uid)
			if err != nil {
				return discoveryNotFound(err)
			}
			if asJSON {
				return writeDiscoveryJSON(out, h)
			}
			fmt.Fprintf(out, "object %s (%s)\n", h.UID, h.Kind)
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "REV\tPOS\tTIME\tBY\tCLIENT\tFOLDER\tSHA256\tENDED")
			for _, r := range h.Revisions {
				var ended []string
				for _, e := range r.Ended {
					ended = append(ended, fmt.Sprintf("%s #%d by %s", e.Action, e.Position, e.Login))
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%.12s\t%s\n", r.Rev, r.Position, r.Time.UTC().Format(time.RFC3339),
					r.Login, r.Client, r.Path, r.Digest, strings.Join(ended, "; "))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&rev, "rev", 0, "print revision N's content (1 is the first)")
	cmd.Flags().IntSliceVar(&diff, "diff", nil, "compare revisions A and B (--diff A B or --diff A,B)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// oneLine keeps a table cell on one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", `\n`, "\n", `\n`, "\t", " ").Replace(s)
}

// cell keeps a table cell on one line and at most n characters.
func cell(s string, n int) string {
	s = oneLine(s)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
