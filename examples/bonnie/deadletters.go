package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/spf13/cobra"
)

func newDeadLettersCmd(g *globals) *cobra.Command {
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "deadletters",
		Short: "List input that could not become an event (kept with its raw bytes and the reason)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			list, err := lg.DeadLetters(ctx, !all)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				for _, d := range list {
					if err := enc.Encode(d); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRECEIVED\tSOURCE\tBYTES\tSTATE\tREASON")
			for _, d := range list {
				state := "pending"
				if d.Position != 0 {
					state = fmt.Sprintf("ingested@%d", d.Position)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Received.UTC().Format(time.RFC3339), d.Source, len(d.Raw), state, d.Reason)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "include dead letters already re-ingested")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line, raw bytes in base64")
	cmd.AddCommand(newRetryCmd(g))
	return cmd
}

func newRetryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "retry",
		Short: "Re-ingest pending dead letters (after a parser fix); those that still fail stay",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			list, err := lg.DeadLetters(ctx, true)
			if err != nil {
				return err
			}
			eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger()})
			if err != nil {
				return err
			}
			var ok, failed int
			for _, d := range list {
				pos, _, err := eng.Retry(ctx, d)
				switch {
				case err == nil:
					ok++
					fmt.Fprintf(cmd.OutOrStdout(), "dead letter %d: ingested at position %d\n", d.ID, pos)
				case errors.Is(err, bonnie.ErrDeadLettered):
					failed++
					fmt.Fprintf(cmd.OutOrStdout(), "dead letter %d: still fails: %v\n", d.ID, err)
				default:
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d ingested, %d still failing\n", ok, failed)
			if failed > 0 {
				return &exitError{}
			}
			return nil
		},
	}
}
