package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie/httpapi"
)

func newAPICmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Tokens of bonnied's discovery API (--http)",
	}
	cmd.AddCommand(newAPITokenCmd(g))
	return cmd
}

func newAPITokenCmd(_ *globals) *cobra.Command {
	var role, principal, expires, appendTo string
	cmd := &cobra.Command{
		Use:   "token --role auditor|user --principal NAME [--expires 90d|TIME] [--append FILE]",
		Short: "Make a token for the API: prints it once, and the line for bonnied's --http-tokens file",
		Long: `api token makes a random bearer token (256 bits) for bonnied's discovery API and prints it
once on standard output; the tokens file keeps only its SHA-256, on the line printed on standard
error (or appended to --append FILE, created with mode 0600). bonnied re-reads the file when it
changes: delete the line to revoke the token.

  --role auditor   sees everything
  --role user      sees what --principal (a login, alias, address or persistent id) could read
                   at the time of each entry; the rest comes back redacted

--expires is a duration in days (90d), hours (12h) or an RFC 3339 time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var until time.Time
			if expires != "" {
				t, err := parseExpiry(expires, time.Now())
				if err != nil {
					return err
				}
				until = t
			}
			token, line, err := httpapi.NewToken(httpapi.Role(role), principal, until)
			if err != nil {
				return err
			}
			if appendTo != "" {
				f, err := os.OpenFile(appendTo, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
				if err != nil {
					return fmt.Errorf("--append: %w", err)
				}
				if _, err := fmt.Fprintln(f, line); err != nil {
					f.Close()
					return fmt.Errorf("--append: %w", err)
				}
				if err := f.Close(); err != nil {
					return fmt.Errorf("--append: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "added to %s:\n%s\n", appendTo, line)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "add this line to bonnied's --http-tokens file:\n%s\n", line)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "the token (shown once; send it as 'Authorization: Bearer TOKEN'):\n")
			fmt.Fprintln(cmd.OutOrStdout(), token)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "auditor or user")
	f.StringVar(&principal, "principal", "", "who the token is for: for a user, their login or persistent id")
	f.StringVar(&expires, "expires", "", "expiry: 90d, 12h or an RFC 3339 time (default: never)")
	f.StringVar(&appendTo, "append", "", "append the line to this tokens file")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.MarkFlagRequired("principal")
	return cmd
}

// parseExpiry reads "90d", a Go duration ("12h") or an RFC 3339 time.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err == nil && n > 0 {
			return now.Add(time.Duration(n) * 24 * time.Hour).UTC().Truncate(time.Second), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		if !t.After(now) {
			return time.Time{}, errors.New("--expires: the time is past")
		}
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("--expires: want 90d, 12h or an RFC 3339 time, not %q", s)
}
