package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/intercept"
)

// newInterceptCmd is "bonnie intercept": lawful live interception, each
// start and stop an event in the log (see package sink/intercept; bonnied
// --sinks intercept delivers).
func newInterceptCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "intercept",
		Short: "Start, stop and list live interceptions, and show what each handed over (all recorded in the log)",
		Long: `An interception copies, in real time, every event concerning one person (as actor, mailbox owner,
sender or recipient) and the bodies of their new messages to an authorised destination, inside a window
of event time, under a warrant. Starting and stopping it are events in the log; so is every delivery.
bonnied delivers with --sinks intercept (a running bonnied is handed the event over its control socket).`,
	}
	cmd.AddCommand(newInterceptStartCmd(g), newInterceptStopCmd(g), newInterceptListCmd(g), newInterceptDeliveriesCmd(g))
	return cmd
}

func newInterceptStartCmd(g *globals) *cobra.Command {
	var (
		target, warrant, from, to, dest, authorised, id string
		rf                                              resolverFlags
	)
	cmd := &cobra.Command{
		Use:   "start --target LOGIN --warrant REF --from T1 --to T2 --dest amqp://USER@HOST:PORT/?queue=Q|dir:DIR --authorised-by NAME",
		Short: "Record an interception: from then on, the target's events inside [T1, T2) go to the destination",
		Long: `start records a vnd.bonnie.Interception event. The target is named by login (or address, or persistent
id) and recorded by persistent identity, as the log (or, with --ldap-url/--identity-file, the directory)
resolves it now, so a later rename does not escape it. The window is in event time; nothing before the
start's place in the log is ever delivered, whatever --from says. An AMQP destination is a durable queue
(default bonnie.intercept.ID); its password is never recorded: give it to bonnied
(--intercept-amqp-password-file). A dir: destination receives one POSITION-ID.jsonl file per event and
POSITION-ID.mbox with the bodies.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			t1, err := interceptTime("--from", from)
			if err != nil {
				return err
			}
			t2, err := interceptTime("--to", to)
			if err != nil {
				return err
			}
			if id == "" {
				u, err := uuid.NewV7()
				if err != nil {
					return err
				}
				id = u.String()
			}
			tgt, how, err := interceptTarget(ctx, g, &rf, target)
			if err != nil {
				return err
			}
			if how != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "bonnie: warning:", how)
			}
			raw, err := intercept.Start(id, tgt, warrant, t1, t2, dest, authorised, interceptRequestedBy(), time.Now())
			if err != nil {
				return err
			}
			pos, err := recordEvent(ctx, g, raw)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "interception %s started at position %d: target %s (%s), warrant %s, [%s, %s) -> %s\n",
				id, pos, tgt.Login, tgt.ID, warrant, t1.Format(time.RFC3339), t2.Format(time.RFC3339), dest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "", "the person: login, address or persistent id (required)")
	f.StringVar(&warrant, "warrant", "", "the warrant's reference (required)")
	f.StringVar(&from, "from", "", "start of the window, event time (RFC 3339 or YYYY-MM-DD; required)")
	f.StringVar(&to, "to", "", "end of the window, excluded (required)")
	f.StringVar(&dest, "dest", "", "amqp://USER@HOST:PORT/VHOST?queue=NAME or dir:DIR (required)")
	f.StringVar(&authorised, "authorised-by", "", "who authorised it, as on the warrant (required)")
	f.StringVar(&id, "id", "", "the interception's id (default: a new UUIDv7)")
	for _, name := range []string{"target", "warrant", "from", "to", "dest", "authorised-by"} {
		_ = cmd.MarkFlagRequired(name)
	}
	rf.register(cmd)
	return cmd
}

// interceptTime reads a time flag.
func interceptTime(flag, s string) (time.Time, error) {
	t, err := parseTime(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: want RFC 3339 (2026-11-28T20:00:00Z) or a date", flag, s)
	}
	return t, nil
}

// interceptTarget finds the persistent identity of name: as the log last
// resolved it, else as the directory does now (when configured), else the
// login itself (a site without a directory keys people by login); the
// second result warns about the last case.
func interceptTarget(ctx context.Context, g *globals, rf *resolverFlags, name string) (intercept.Target, string, error) {
	now := time.Now().UTC()
	if lg, err := openLog(ctx, g); err == nil {
		found, _, _, err := whoisLog(ctx, lg, name, now)
		lg.Close()
		if err != nil {
			return intercept.Target{}, "", err
		}
		if found != nil && found.Identity.ID != "" {
			return intercept.TargetOf(found.Identity), "", nil
		}
	}
	r, closeR, err := rf.open()
	if err != nil {
		return intercept.Target{}, "", err
	}
	if r != nil {
		defer closeR()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		id, err := r.Resolve(rctx, name, now)
		if err != nil {
			return intercept.Target{}, "", fmt.Errorf("--target %s: the directory does not answer: %w", name, err)
		}
		if id.Kind == bonnie.IdentityUser && id.ID != "" {
			return intercept.TargetOf(&id), "", nil
		}
	}
	id := bonnie.Identity{Subject: name, Kind: bonnie.IdentityLogin, ID: name, Login: name}
	return intercept.TargetOf(&id), fmt.Sprintf("%s was not found in the log nor in a directory: the interception follows the login %q as given, not a persistent identity", name, name), nil
}

// interceptRequestedBy says who runs the command, for the record.
func interceptRequestedBy() string {
	r := runBy()
	s := r.User
	if r.UID != "" {
		s += " (uid " + r.UID + ")"
	}
	if r.Host != "" {
		s += " on " + r.Host
	}
	return s + ": " + r.Command
}

func newInterceptStopCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "stop ID [--reason TEXT]",
		Short: "Record the end of an interception: nothing after this point in the log is delivered",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			list, err := intercept.List(ctx, lg)
			lg.Close()
			if list == nil && err != nil {
				return err
			}
			var it *intercept.Interception
			for _, x := range list {
				if x.ID == args[0] {
					it = x
				}
			}
			switch {
			case it == nil:
				return fmt.Errorf("no interception %s in the log (bonnie intercept list)", args[0])
			case it.StoppedAt != 0:
				return fmt.Errorf("interception %s was stopped already, at position %d", it.ID, it.StoppedAt)
			}
			raw, err := intercept.Stop(it.ID, interceptRequestedBy(), reason, time.Now())
			if err != nil {
				return err
			}
			pos, err := recordEvent(ctx, g, raw)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "interception %s stopped at position %d\n", it.ID, pos)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why it is stopped (recorded)")
	return cmd
}

// interceptionState says where an interception stands at now.
func interceptionState(it *intercept.Interception, now time.Time) string {
	switch {
	case it.StoppedAt != 0:
		return "stopped"
	case now.Before(it.From):
		return "pending"
	case now.Before(it.To):
		return "active"
	}
	return "ended"
}

// interceptListed is what list --json prints of one interception.
type interceptListed struct {
	*intercept.Interception
	State string `json:"state"`
}

func newInterceptListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the interceptions the log holds, with their state and number of deliveries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			list, err := intercept.List(ctx, lg)
			if list == nil && err != nil {
				return err
			}
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "bonnie: warning:", err)
			}
			now := time.Now()
			if asJSON {
				out := make([]interceptListed, 0, len(list))
				for _, it := range list {
					out = append(out, interceptListed{it, interceptionState(it, now)})
				}
				return interceptJSON(cmd.OutOrStdout(), out)
			}
			return printInterceptions(cmd.OutOrStdout(), list, now)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func interceptJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printInterceptions(w io.Writer, list []*intercept.Interception, now time.Time) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no interceptions")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tTARGET\tWARRANT\tFROM\tTO\tDESTINATION\tAUTHORISED BY\tSTARTED AT\tDELIVERIES")
	for _, it := range list {
		state := interceptionState(it, now)
		if it.StoppedAt != 0 {
			state += fmt.Sprintf(" (at %d)", it.StoppedAt)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s (%s)\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", it.ID, state, it.Target.Login, it.Target.ID, it.Warrant,
			it.From.Format(time.RFC3339), it.To.Format(time.RFC3339), it.Destination, it.AuthorisedBy, it.Position, it.Deliveries)
	}
	return tw.Flush()
}

func newInterceptDeliveriesCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "deliveries ID [--json]",
		Short: "Show everything an interception handed over: each log record (position, hash) and body (SHA-256)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			list, _ := intercept.List(ctx, lg)
			known := false
			for _, it := range list {
				known = known || it.ID == args[0]
			}
			if !known {
				return fmt.Errorf("no interception %s in the log (bonnie intercept list)", args[0])
			}
			ds, err := intercept.Deliveries(ctx, lg, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				if ds == nil {
					ds = []intercept.Delivery{}
				}
				return interceptJSON(cmd.OutOrStdout(), ds)
			}
			return printInterceptDeliveries(cmd.OutOrStdout(), ds)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printInterceptDeliveries(w io.Writer, ds []intercept.Delivery) error {
	if len(ds) == 0 {
		_, err := fmt.Fprintln(w, "nothing handed over")
		return err
	}
	var b strings.Builder
	items, bodies := 0, 0
	for _, d := range ds {
		fmt.Fprintf(&b, "delivery at position %d, confirmed %s, to %s:\n", d.Position, d.Confirmed.Format(time.RFC3339Nano), d.Destination)
		for _, it := range d.Items {
			items++
			fmt.Fprintf(&b, "  %d\t%s\t%s\t%s\thash %s\n", it.Position, it.Time.Format(time.RFC3339), it.Type, it.MessageID, it.Hash)
			for _, body := range it.Bodies {
				bodies++
				fmt.Fprintf(&b, "    body uid %d\tsha256 %s\t%d bytes\n", body.UID, body.SHA256, body.Size)
			}
		}
	}
	fmt.Fprintf(&b, "%d records and %d bodies in %d deliveries\n", items, bodies, len(ds))
	_, err := io.WriteString(w, b.String())
	return err
}
