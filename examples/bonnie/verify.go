package main

import (
	"errors"
	"fmt"

	"github.com/bonnie-archive/bonnie"
	"github.com/spf13/cobra"
)

func newVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the log's hash chain; exit 1 naming the first bad position",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			if err := lg.Verify(ctx); err != nil {
				var ce *bonnie.ChainError
				if errors.As(err, &ce) {
					fmt.Fprintf(cmd.OutOrStdout(), "BROKEN at position %d: %s\n", ce.Position, ce.Reason)
					return &exitError{}
				}
				return fmt.Errorf("verify: %w", err)
			}
			head, err := lg.Head(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d records, chain intact\n", head)
			return nil
		},
	}
}
