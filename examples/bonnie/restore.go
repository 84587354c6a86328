package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/sink/backup"
	"github.com/bonnie-archive/bonnie/store/blob"
)

func newRestoreCmd(g *globals) *cobra.Command {
	var (
		q       backup.Query
		at, to  string
		nonRecu bool
	)
	cmd := &cobra.Command{
		Use:   "restore (--mailbox NAME | --message MESSAGE-ID) [--at TIME] --to maildir:DIR|mbox:FILE",
		Short: "Restore folders or a message as they were at a time, from the log and the body store",
		Long: `Computes from the log what a folder held at --at (now without it): the folder
named so then (a folder renamed since is found by its old name), with the
folders under it for a mailbox such as user.alice (--exact: only that one),
its messages present then with the owner's flags then, and writes their
exact bytes from DIR/blobs:

  maildir:DIR  Maildir++: the mailbox in DIR, folders under it in DIR/.Sub.Folder,
               each message cur/<sha256>:2,<flags> dated its internal date;
               running again adds nothing twice (flags are brought to --at)
  mbox:FILE    one mboxrd file, replaced atomically

Messages whose body is missing are listed with the reason; the exit status is
then 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.Mailbox == "" && q.MessageID == "" {
				return errors.New("restore: --mailbox or --message is needed")
			}
			if at != "" {
				t, err := parseTime(at)
				if err != nil {
					return err
				}
				q.At = t
			}
			q.Recursive = !nonRecu
			kind, dest, ok := strings.Cut(to, ":")
			if !ok || dest == "" || (kind != "maildir" && kind != "mbox") {
				return fmt.Errorf("restore: --to %q: want maildir:DIR or mbox:FILE", to)
			}
			ctx := cmd.Context()
			blobsDir, _ := archive.Paths(g.data)
			if _, err := os.Stat(blobsDir); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no body store at %s (bonnied --data %s --sinks archive creates it)", blobsDir, g.data)
			}
			store, err := blob.Open(blobsDir)
			if err != nil {
				return err
			}
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			items, err := backup.Plan(ctx, lg, q)
			if err != nil {
				return err
			}
			var rep backup.Report
			if kind == "maildir" {
				rep, err = backup.WriteMaildir(ctx, items, store, dest, q.Mailbox)
			} else {
				rep, err = backup.WriteMbox(ctx, items, store, dest)
			}
			if err != nil {
				return err
			}
			when := "now"
			if !q.At.IsZero() {
				when = q.At.Format(time.RFC3339)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "restored as of %s to %s: %d folders, %d messages: %d written, %d already there, %d flags updated, %d duplicate bodies, %d missing\n",
				when, to, rep.Folders, len(items), rep.Written, rep.Kept, rep.Updated, rep.Duplicates, len(rep.Missing))
			for _, m := range rep.Missing {
				fmt.Fprintf(out, "missing: %s UID %d %s: %s\n", m.Item.Path, m.Item.UID, m.Item.MessageID, m.Reason)
			}
			if len(rep.Missing) > 0 {
				return &exitError{msg: fmt.Sprintf("%d messages could not be restored", len(rep.Missing))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&q.Mailbox, "mailbox", "", "folder name at --at, admin namespace (user.alice.Work)")
	cmd.Flags().BoolVar(&nonRecu, "exact", false, "only that folder, not the folders under it")
	cmd.Flags().StringVar(&q.MessageID, "message", "", "only the messages with this Message-ID (<...>)")
	cmd.Flags().StringVar(&at, "at", "", "the moment to restore (RFC 3339 or a date, UTC); default now")
	cmd.Flags().StringVar(&to, "to", "", "maildir:DIR or mbox:FILE")
	return cmd
}
