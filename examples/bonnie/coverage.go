package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie/coverage"
)

func newCoverageCmd(g *globals) *cobra.Command {
	var (
		folder string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "coverage --folder NAME|UNIQUEID [--json]",
		Short: "When the log is known complete for a folder, and what was repaired after the fact",
		Long: `coverage prints, for one folder, the periods in which the log is known
complete (a daemon listened), those in which it may not be (nobody listened:
gaps), whether a reconcile verified or repaired each gap since, and every
repair (what a reconcile found missing, with its window).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if folder == "" {
				return errors.New("--folder is required")
			}
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			cov, err := coverage.FolderCoverage(ctx, lg, folder, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(cov)
			}
			ts := func(t time.Time) string {
				if t.IsZero() {
					return "-"
				}
				return t.UTC().Format(time.RFC3339Nano)
			}
			fmt.Fprintf(out, "folder %s (%s, %s), known since %s\n", cov.Path, cov.Folder, cov.State, ts(cov.KnownSince))
			if !cov.Backfilled.IsZero() {
				fmt.Fprintf(out, "backfilled %s\n", ts(cov.Backfilled))
			}
			if !cov.Verified.IsZero() {
				fmt.Fprintf(out, "last verified %s\n", ts(cov.Verified))
			}
			for _, p := range cov.Periods {
				line := fmt.Sprintf("%-32s %-32s %s", ts(p.From), ts(p.To), p.Status)
				if !p.At.IsZero() {
					line += " at " + ts(p.At)
				}
				fmt.Fprintln(out, line)
			}
			for _, r := range cov.Repairs {
				what := fmt.Sprintf("%d appended, %d flag changes, %d expunged", r.Appended, r.Flags, r.Expunged)
				if r.ACL {
					what += ", ACL changed"
				}
				if r.Folder != "" {
					what = "folder " + r.Folder + "; " + what
				}
				w := ""
				if r.Window != nil {
					w = fmt.Sprintf(" in %s .. %s (%s)", ts(r.Window.From), ts(r.Window.To), r.Window.Basis)
				}
				fmt.Fprintf(out, "repair at %s (position %d): %s%s\n", ts(r.At), r.Position, what, w)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&folder, "folder", "", "the folder: its name in the admin namespace or its uniqueid")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the coverage as JSON")
	return cmd
}
