// Command bonnie queries and checks a Bonnie log: decode a notification,
// list events, verify the hash chain, handle dead letters, resolve and look
// up identities, get, verify, export and restore archived mail, govern the
// archive (retention, holds, erasure, purge), ask discovery questions, run
// interceptions, backfill and reconcile from IMAP, migrate a log to
// PostgreSQL. Every command reads --data DIR (default ./bonnie-data) or,
// with --postgres DSN, a PostgreSQL log. Commands that record an event of
// their own append it themselves, or through a running bonnied's control
// socket.
//
//	bonnie [--data DIR] decode < notification
//	bonnie [--data DIR] events [--since N] [--json]
//	bonnie [--data DIR] verify
//	bonnie [--data DIR] deadletters [--all] [--json]
//	bonnie [--data DIR] deadletters retry
//	bonnie notify-external --data DIR -c CLASS -p PRIO -u USER -m MAILBOX -f [FNAME] < message
//	bonnie [--data DIR] archive get <Message-ID|sha256> [-o FILE]
//	bonnie [--data DIR] archive verify [--json] [--rebuild]
//	bonnie [--data DIR] export --custodian X --from T1 --to T2 [--folder F] --format mbox|eml-zip [-o FILE]
//	bonnie [--data DIR] archive keygen FILE
//	bonnie [--data DIR] archive retention set ID --keep 7y [--folder F] [--owner U] [--group G] | list [--json] | remove ID
//	bonnie [--data DIR] archive hold place ID [--matter M] [--custodian U] [--folder F] [--from T1] [--to T2] [--query Q] | release ID | list [--json]
//	bonnie [--data DIR] archive erase (--message ID|SHA256 | --user LOGIN) [--reason R] [--dry-run]
//	bonnie [--data DIR] archive purge [--execute] [--json]
//	bonnie [--data DIR] restore (--mailbox NAME | --message MSGID) [--at TIME] [--exact] --to maildir:DIR|mbox:FILE|imap://HOST:PORT [--user U --password-file F] [--into FOLDER] [--seen-as U] [--json]
//	bonnie [--data DIR] whois <login> [--at TIME]
//	bonnie [--data DIR] history user <login-or-id> [--json]
//	bonnie [--data DIR] history message <Message-ID> [--json]
//	bonnie [--data DIR] history folder <mailbox|uniqueid> [--messages] [--json]
//	bonnie [--data DIR] access (--folder F | --user P) [--at TIME] [--json]
//	bonnie [--data DIR] object <uid> [--rev N | --diff A B] [--json]
//	bonnie [--data DIR] search [--custodian X] [--folder F] [--from T1] [--to T2] [--type T] [--sender S] [--recipient R] [--subject S] [--text Q] [--json]
//	bonnie [--data DIR] intercept start --target LOGIN --warrant REF --from T1 --to T2 --dest URL --authorised-by NAME | stop ID | list [--json] | deliveries ID [--json]
//	bonnie [--data DIR] backfill --imap HOST:PORT --imap-user ADMIN --imap-password-file F [--mailbox PATTERN]
//	bonnie [--data DIR] reconcile --imap HOST:PORT --imap-user ADMIN --imap-password-file F
//	bonnie [--data DIR] coverage --folder F [--json]
//	bonnie [--data DIR] resolve
//	bonnie [--data DIR] migrate --to-postgres DSN
//	bonnie api token --role auditor|user --principal NAME [--expires 90d] [--append FILE]
//
// Exit status: 0 on success, 1 on any failure (bad input, a broken chain),
// with the reason on standard error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: tests call it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		var quiet *exitError
		if !errors.As(err, &quiet) || quiet.msg != "" {
			fmt.Fprintln(stderr, "bonnie:", err)
		}
		return 1
	}
	return 0
}

// exitError fails the command with a message already worded for the user.
type exitError struct{ msg string }

func (e *exitError) Error() string { return e.msg }

// globals are the flags every command shares.
type globals struct {
	data     string
	postgres string // --postgres: read this PostgreSQL log instead of DIR/log.db
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "bonnie",
		Short:         "Query and check a Bonnie mail event log",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.data, "data", "./bonnie-data", "data directory of the log")
	root.PersistentFlags().StringVar(&g.postgres, "postgres", "", "read the log on PostgreSQL at this DSN (search_path picks the schema) instead of DIR/log.db")
	root.AddCommand(
		newDecodeCmd(g),
		newEventsCmd(g),
		newVerifyCmd(g),
		newDeadLettersCmd(g),
		newNotifyExternalCmd(g),
		newWhoisCmd(g), newHistoryCmd(g), newResolveCmd(g),
		newMigrateCmd(g),
		newArchiveCmd(g), newExportCmd(g), newRestoreCmd(g),
		newAccessCmd(g), newObjectCmd(g), newSearchCmd(g),
		newBackfillCmd(g), newReconcileCmd(g), newCoverageCmd(g),
		newInterceptCmd(g),
		newAPICmd(g),
	)
	return root
}
