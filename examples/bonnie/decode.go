package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/bonnie-archive/bonnie"
	"github.com/spf13/cobra"
)

func newDecodeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "decode",
		Short: "Decode one notification (datagram, dlist request or bare JSON) from stdin and print it as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), bonnie.MaxNotificationSize+1))
			if err != nil {
				return fmt.Errorf("read stdin: %w", err)
			}
			ev, err := bonnie.Decode(raw)
			if err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			return enc.Encode(ev)
		},
	}
}
