package main

import (
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie/sink/archive"
)

func newExportCmd(g *globals) *cobra.Command {
	var (
		custodian, from, to, format, output string
		folders                             []string
	)
	cmd := &cobra.Command{
		Use:   "export --custodian X [--from T1] [--to T2] [--folder F]... --format mbox|eml-zip [-o FILE]",
		Short: "Export a custodian's messages with a manifest a recipient can check without Bonnie",
		Long: `Writes the messages that arrived in the custodian's folders between --from
(inclusive) and --to (exclusive), RFC 3339 times, optionally only in the
given folders (a name the folder has or had in Cyrus's admin namespace,
decoded, e.g. "user.alice.Archiv 2027", or its uniqueid), each message
once, with a manifest: the query, who ran it and when, the log's head, and
per message its SHA-256, size, Message-ID, the log positions of its
arrivals and how it was recorded (recordedBy: live, or backfill or
reconcile after the fact, with the window in which it arrived). When the
period and folders cross a time in which the log is not known complete
(nobody listened, or before the folder was first backfilled), the
manifest's "gaps" name each such period per folder and what reconciles
repaired in it, and the command says so on stderr.

  eml-zip  FILE is a zip of SHA256.eml files (the exact bytes) with
           manifest.json and manifest.json.sha256 inside.
  mbox     FILE is an mbox (mboxrd quoting, which changes bytes: the
           manifest's hashes are of the original messages and it says how
           to recover them), with FILE.manifest.json and
           FILE.manifest.json.sha256 beside it.

The export is written atomically (temporary files, renamed when complete):
an interrupted export leaves nothing; run it again. It is not resumable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			q := archive.Query{Custodian: custodian, Folders: folders}
			var err error
			if q.From, err = parseRFC3339("--from", from); err != nil {
				return err
			}
			if q.To, err = parseRFC3339("--to", to); err != nil {
				return err
			}
			if !q.From.IsZero() && !q.To.IsZero() && !q.To.After(q.From) {
				return fmt.Errorf("--to %s is not after --from %s", to, from)
			}
			f := archive.Format(format)
			if f != archive.FormatMbox && f != archive.FormatEMLZip {
				return fmt.Errorf("--format must be mbox or eml-zip, not %q", format)
			}
			if output == "" {
				ext := ".zip"
				if f == archive.FormatMbox {
					ext = ".mbox"
				}
				output = fmt.Sprintf("export-%s-%s%s", safeName(custodian), time.Now().UTC().Format("20060102T150405Z"), ext)
			}
			if _, err := os.Lstat(output); err == nil {
				return fmt.Errorf("%s exists; not overwriting an export", output)
			}
			lg, a, err := openArchive(ctx, g, false)
			if err != nil {
				return err
			}
			defer lg.Close()
			defer a.Close()
			var bar *progressbar.ProgressBar
			res, err := a.Export(ctx, archive.ExportRequest{
				Query: q, Format: f, Output: output, Log: lg, RunBy: runBy(),
				Progress: func(done, total int, bytes int64) {
					if bar == nil {
						bar = newBar(cmd.ErrOrStderr(), int64(total), "exporting", false)
					}
					if bar != nil {
						bar.Set(done)
					}
				},
			})
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(cmd.ErrOrStderr())
			}
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			m := res.Manifest
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d messages, %d bytes\n", strings.Join(res.Files, ", "), m.Count, m.Bytes)
			fmt.Fprintf(cmd.OutOrStdout(), "manifest SHA-256: %s\n", res.ManifestSHA256)
			if m.Count == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "note: no message matched the query; the export documents that")
			}
			if lines := m.GapSummary(); len(lines) > 0 {
				// The manifest says it (gaps, and each message's
				// recordedBy); whoever runs the export should know too.
				after := 0
				for _, me := range m.Messages {
					if me.RecordedBy != "" && me.RecordedBy != "live" {
						after++
					}
				}
				errw := cmd.ErrOrStderr()
				fmt.Fprintf(errw, "note: the export crosses periods in which the log is not known complete; %d of %d messages were recorded after the fact (manifest: gaps, recordedBy):\n", after, m.Count)
				for _, l := range lines {
					fmt.Fprintln(errw, "  "+l)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&custodian, "custodian", "", "owner of the folders (login, or persistent id when identities are resolved)")
	cmd.Flags().StringVar(&from, "from", "", "earliest arrival time, RFC 3339 (inclusive)")
	cmd.Flags().StringVar(&to, "to", "", "latest arrival time, RFC 3339 (exclusive)")
	cmd.Flags().StringArrayVar(&folders, "folder", nil, "only this folder (admin-namespace name or uniqueid; repeatable)")
	cmd.Flags().StringVar(&format, "format", "eml-zip", "mbox or eml-zip")
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write (default export-CUSTODIAN-TIME.zip|.mbox)")
	cmd.MarkFlagRequired("custodian")
	return cmd
}

func parseRFC3339(flag, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time (2026-11-28T21:00:00Z, 2026-11-28T22:00:00+01:00)", flag, s)
	}
	return t.UTC(), nil
}

// runBy says who runs the command: the OS user (and the one behind sudo).
func runBy() archive.RunBy {
	r := archive.RunBy{Command: strings.Join(os.Args, " ")}
	if u, err := user.Current(); err == nil {
		r.User, r.UID = u.Username, u.Uid
	}
	if s := os.Getenv("SUDO_USER"); s != "" && s != r.User {
		r.User += " (sudo by " + s + ")"
	}
	r.Host, _ = os.Hostname()
	return r
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r == ' ' {
			return '_'
		}
		return r
	}, s)
}
