package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/source/cyrus"
	"github.com/bonnie-archive/bonnie/store/sqlite"
	"github.com/spf13/cobra"
)

// notifyExternalHelp tells how to plug the command into Cyrus.
const notifyExternalHelp = `Cyrus's notifyd runs its external notifier as
  PROGRAM -c CLASS -p PRIORITY -u USER -m MAILBOX -f [FNAME]
with the message on stdin, once per notification. It cannot pass --data, so
point notify_external (imapd.conf) at a wrapper script:

  #!/bin/sh
  exec /usr/local/bin/bonnie notify-external --data /var/lib/bonnie "$@"

and set event_notifier: external. The notification is appended to the log
under --data (created if missing). Only one process may ingest into a data
directory: while bonnied runs on it, this command waits up to --wait and then
keeps the notification as a dead letter rather than losing it. notifyd ignores
the exit status, so every failure is also a dead letter and a line on stderr
(Cyrus logs it).`

func newNotifyExternalCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "notify-external [--data DIR] [--wait D] -c CLASS -p PRIO -u USER -m MAILBOX -f [FNAME]",
		Short:              "Append one notification from Cyrus's external notifier (argv + stdin) to the log",
		Long:               notifyExternalHelp,
		DisableFlagParsing: true, // Cyrus's -c/-p/-u/-m/-f are not ours
		RunE: func(cmd *cobra.Command, args []string) error {
			data, wait, cyrusArgs, err := splitOwnFlags(g.data, args)
			if err != nil {
				return err
			}
			return notifyExternal(cmd.Context(), data, wait, cyrusArgs, cmd.InOrStdin())
		},
	}
}

// splitOwnFlags takes --data and --wait off the front of args; the rest is
// what Cyrus passed.
func splitOwnFlags(data string, args []string) (string, time.Duration, []string, error) {
	wait := 10 * time.Second
	for len(args) > 0 {
		name, val, hasVal := strings.Cut(args[0], "=")
		if name != "--data" && name != "--wait" {
			break
		}
		if !hasVal {
			if len(args) < 2 {
				return "", 0, nil, fmt.Errorf("%s needs a value", name)
			}
			val, args = args[1], args[1:]
		}
		args = args[1:]
		if name == "--data" {
			data = val
		} else {
			d, err := time.ParseDuration(val)
			if err != nil {
				return "", 0, nil, fmt.Errorf("--wait: %w", err)
			}
			wait = d
		}
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	return data, wait, args, nil
}

func notifyExternal(ctx context.Context, dir string, wait time.Duration, args []string, stdin io.Reader) error {
	raw, _, readErr := cyrus.ReadExternal(args, stdin, bonnie.MaxNotificationSize)
	if err := ensureDir(dir); err != nil {
		return err
	}
	lg, err := sqlite.Open(ctx, datadir.LogPath(dir))
	if err != nil {
		return fmt.Errorf("open log: %w (the notification is lost: %d bytes)", err, len(raw))
	}
	defer lg.Close()
	keep := func(reason string) error {
		d := bonnie.DeadLetter{Received: time.Now().UTC(), Source: "cyrus-external", Reason: reason, Raw: raw}
		if _, err := lg.PutDeadLetter(ctx, d); err != nil {
			return fmt.Errorf("%s; and it could not be kept as a dead letter: %w", reason, err)
		}
		return fmt.Errorf("%s (kept as a dead letter)", reason)
	}
	if readErr != nil {
		return keep("external notifier input: " + readErr.Error())
	}
	unlock, err := datadir.LockIngest(dir, wait)
	if err != nil {
		return keep(err.Error())
	}
	defer unlock()
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger()})
	if err != nil {
		return err
	}
	_, _, err = eng.Ingest(ctx, raw, "cyrus-external")
	if errors.Is(err, bonnie.ErrDeadLettered) {
		return err
	}
	if err != nil {
		return keep("append: " + err.Error())
	}
	return nil
}
