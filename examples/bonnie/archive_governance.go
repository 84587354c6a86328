package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// keyFileEnv names the site key file when --key-file is not given (and
// for the commands outside `archive` that read bodies).
const keyFileEnv = "BONNIE_KEY_FILE"

// archiveFlags are the flags every archive subcommand shares.
type archiveFlags struct {
	keyFile string
	actor   string
}

// siteKey loads the site key named by --key-file or $BONNIE_KEY_FILE; nil
// when neither is set (af may be nil).
func (af *archiveFlags) siteKey() (*blob.SiteKey, error) {
	path := os.Getenv(keyFileEnv)
	if af != nil && af.keyFile != "" {
		path = af.keyFile
	}
	if path == "" {
		return nil, nil
	}
	k, err := blob.LoadKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w", err)
	}
	return k, nil
}

// blobOptions are the body store options of a command: the site key of
// --key-file, else of $BONNIE_KEY_FILE, if set. Commands outside
// `archive` (restore, export) pass nil.
func blobOptions(af *archiveFlags) ([]blob.Option, error) {
	k, err := af.siteKey()
	if err != nil || k == nil {
		return nil, err
	}
	return []blob.Option{blob.WithSiteKey(k)}, nil
}

// who returns the actor recorded in the log: --actor, else the OS user.
func (af *archiveFlags) who() (string, error) {
	if af.actor != "" {
		return af.actor, nil
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username, nil
	}
	if u := os.Getenv("USER"); u != "" {
		return u, nil
	}
	return "", errors.New("cannot tell who you are: give --actor")
}

// recorder appends through recordEvent (directly, or through a running
// bonnied).
func recorder(g *globals) archive.Recorder {
	return func(ctx context.Context, raw []byte) (bonnie.Position, error) { return recordEvent(ctx, g, raw) }
}

// recordGovernance records one governance event built by mk, as the
// actor, now.
func recordGovernance(ctx context.Context, g *globals, af *archiveFlags, mk func(actor string, at time.Time) ([]byte, error)) (bonnie.Position, error) {
	actor, err := af.who()
	if err != nil {
		return 0, err
	}
	raw, err := mk(actor, time.Now())
	if err != nil {
		return 0, err
	}
	return recordEvent(ctx, g, raw)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fmtWhen(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newArchiveKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen FILE",
		Short: "Write a new random site key for encryption at rest (mode 0400)",
		Long: `Writes 32 random bytes, as 64 hex digits, to FILE, which must not exist.
Give it to bonnied and bonnie as --key-file: every body stored from then on
is encrypted under a data key of its own, wrapped by this key. Keep a copy
somewhere safe: without it, no encrypted body can be read.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := blob.WriteKeyFile(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote site key %s to %s\n", k.ID(), args[0])
			return nil
		},
	}
}

func newArchiveRetentionCmd(g *globals, af *archiveFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retention",
		Short: "Set, list and remove retention policies",
		Long: `A retention policy keeps the messages that match it (by folder with its
subfolders, owner, group, all of them when none is given) for --keep after
they arrived in their folder; after that, 'bonnie archive purge' removes
them. Where several policies match, the longest wins; a message no policy
matches is kept for ever; a body shared by several recipients goes only
when every copy has expired. Each change is a vnd.bonnie.RetentionPolicy
event in the log.`,
	}
	var p archive.Policy
	set := &cobra.Command{
		Use:   "set ID --keep PERIOD [--folder F] [--owner LOGIN] [--group G]",
		Short: "Set (or replace) a retention policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.ID = args[0]
			pos, err := recordGovernance(cmd.Context(), g, af, func(actor string, at time.Time) ([]byte, error) {
				return archive.PolicyEvent(actor, at, archive.ActionSet, p)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "retention policy %s set (log position %d)\n", p.ID, pos)
			return nil
		},
	}
	set.Flags().StringVar(&p.Keep, "keep", "", "how long to keep: Ny, Nd or a duration (36h)")
	set.Flags().StringVar(&p.Folder, "folder", "", "a folder (name, with its subfolders, or uniqueid)")
	set.Flags().StringVar(&p.Owner, "owner", "", "the folders' owner (login or persistent id)")
	set.Flags().StringVar(&p.Group, "group", "", "a group the owner was in when the message arrived (id or name)")
	set.Flags().StringVar(&p.Note, "note", "", "why (recorded with the policy)")
	_ = set.MarkFlagRequired("keep")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the retention policies in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, a, err := openArchiveWith(ctx, g, af, false)
			if err != nil {
				return err
			}
			defer lg.Close()
			defer a.Close()
			ps, err := a.Policies(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				if ps == nil {
					ps = []archive.Policy{}
				}
				return printJSON(cmd.OutOrStdout(), ps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKEEP\tFOLDER\tOWNER\tGROUP\tSET BY\tAT\tPOSITION")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", p.ID, p.Keep, dash(p.Folder), dash(p.Owner), dash(p.Group), p.Actor, fmtWhen(p.Time), p.Position)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a retention policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			found, err := askArchive(ctx, g, af, func(a *archive.Archive) (bool, error) {
				ps, err := a.Policies(ctx)
				return slices.ContainsFunc(ps, func(p archive.Policy) bool { return p.ID == args[0] }), err
			})
			if err != nil {
				return err
			}
			if !found {
				return &exitError{msg: fmt.Sprintf("no retention policy %q", args[0])}
			}
			pos, err := recordGovernance(ctx, g, af, func(actor string, at time.Time) ([]byte, error) {
				return archive.PolicyEvent(actor, at, archive.ActionRemove, archive.Policy{ID: args[0]})
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "retention policy %s removed (log position %d)\n", args[0], pos)
			return nil
		},
	}
	cmd.AddCommand(set, list, remove)
	return cmd
}

// askArchive opens the archive index for one question and closes it.
func askArchive[T any](ctx context.Context, g *globals, af *archiveFlags, ask func(*archive.Archive) (T, error)) (T, error) {
	lg, a, err := openArchiveWith(ctx, g, af, false)
	if err != nil {
		var zero T
		return zero, err
	}
	defer lg.Close()
	defer a.Close()
	return ask(a)
}

// parseWhen reads a time flag: RFC 3339 or a date (UTC).
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want RFC 3339 (2026-01-02T15:04:05Z) or a date (2026-01-02)", s)
}

func newArchiveHoldCmd(g *globals, af *archiveFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hold",
		Short: "Place, release and list legal holds",
		Long: `A legal hold keeps what it matches from purge and erasure until it is
released: messages of a custodian, in a folder (with its subfolders), that
arrived in a date range, and/or whose body matches a query (terms
messageid:, sha256:, from:, to:, subject:, all required). Each placement
and release is a vnd.bonnie.LegalHold event in the log.`,
	}
	var h archive.Hold
	var from, to string
	place := &cobra.Command{
		Use:   "place ID [--matter M] [--custodian LOGIN] [--folder F] [--from T] [--to T] [--query Q]",
		Short: "Place a legal hold",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			h.ID = args[0]
			var err error
			if h.From, err = parseWhen(from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			if h.To, err = parseWhen(to); err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			if err := h.Validate(); err != nil {
				return err
			}
			lg, a, err := openArchiveWith(ctx, g, af, false)
			if err != nil {
				return err
			}
			hs, err := a.Holds(ctx, false)
			a.Close()
			lg.Close()
			if err != nil {
				return err
			}
			for _, o := range hs {
				if o.ID == h.ID {
					return &exitError{msg: fmt.Sprintf("hold %q is already placed (by %s at %s); release it first or choose another id", h.ID, o.Actor, fmtWhen(o.Time))}
				}
			}
			pos, err := recordGovernance(ctx, g, af, func(actor string, at time.Time) ([]byte, error) {
				return archive.HoldEvent(actor, at, archive.ActionPlace, h)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "hold %s placed (log position %d)\n", h.ID, pos)
			return nil
		},
	}
	place.Flags().StringVar(&h.Matter, "matter", "", "the matter (case) the hold is for")
	place.Flags().StringVar(&h.Custodian, "custodian", "", "the custodian: the folders' owner (login or persistent id)")
	place.Flags().StringVar(&h.Folder, "folder", "", "a folder (name, with its subfolders, or uniqueid)")
	place.Flags().StringVar(&from, "from", "", "messages that arrived at or after this time")
	place.Flags().StringVar(&to, "to", "", "messages that arrived before this time")
	place.Flags().StringVar(&h.Query, "query", "", "terms the body must match: messageid:X sha256:X from:X to:X subject:X")

	release := &cobra.Command{
		Use:   "release ID",
		Short: "Release a legal hold",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			found, err := askArchive(ctx, g, af, func(a *archive.Archive) (bool, error) {
				hs, err := a.Holds(ctx, false)
				return slices.ContainsFunc(hs, func(h archive.Hold) bool { return h.ID == args[0] }), err
			})
			if err != nil {
				return err
			}
			if !found {
				return &exitError{msg: fmt.Sprintf("no active hold %q", args[0])}
			}
			pos, err := recordGovernance(ctx, g, af, func(actor string, at time.Time) ([]byte, error) {
				return archive.HoldEvent(actor, at, archive.ActionRelease, archive.Hold{ID: args[0]})
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "hold %s released (log position %d)\n", args[0], pos)
			return nil
		},
	}

	var asJSON, all bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the active legal holds (--all: with the released ones)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, a, err := openArchiveWith(ctx, g, af, false)
			if err != nil {
				return err
			}
			defer lg.Close()
			defer a.Close()
			hs, err := a.Holds(ctx, all)
			if err != nil {
				return err
			}
			if asJSON {
				if hs == nil {
					hs = []archive.Hold{}
				}
				return printJSON(cmd.OutOrStdout(), hs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tMATTER\tCUSTODIAN\tFOLDER\tFROM\tTO\tQUERY\tPLACED BY\tAT\tRELEASED")
			for _, h := range hs {
				rel := "-"
				if h.Released != nil {
					rel = fmt.Sprintf("by %s at %s", h.Released.Actor, fmtWhen(h.Released.Time))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.ID, dash(h.Matter), dash(h.Custodian), dash(h.Folder),
					fmtWhen(h.From), fmtWhen(h.To), dash(h.Query), h.Actor, fmtWhen(h.Time), rel)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list.Flags().BoolVar(&all, "all", false, "also list released holds")
	cmd.AddCommand(place, release, list)
	return cmd
}

func newArchiveEraseCmd(g *globals, af *archiveFlags) *cobra.Command {
	var message, login, reason string
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "erase (--message <Message-ID|sha256> | --user LOGIN) [--reason R] [--dry-run]",
		Short: "Erase a message or a person's messages (GDPR): destroy their data keys",
		Long: `Makes bodies unrecoverable by destroying their data keys (on an encrypted
store; a body stored unencrypted is deleted, and copies of it elsewhere
survive), and records a vnd.bonnie.Erasure event naming what was erased,
by whom. The log itself is untouched: 'bonnie verify' still passes, and
'archive verify' lists the bodies as erased.

--message erases that body for everyone who received it. --user erases
the bodies only that person (or people erased before) received; one that
someone else still has is kept and listed. Bodies under legal hold are
never erased: the command fails naming the hold.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if (message == "") == (login == "") {
				return errors.New("give --message or --user")
			}
			actor, err := af.who()
			if err != nil {
				return err
			}
			lg, a, err := openArchiveWith(ctx, g, af, false)
			if err != nil {
				return err
			}
			defer lg.Close()
			defer a.Close()
			// Finish what an earlier run recorded and did not destroy.
			if err := finishUnfinished(ctx, a, cmd.ErrOrStderr(), dryRun); err != nil {
				return err
			}
			e, err := a.PlanErasure(ctx, message, login)
			if err != nil {
				return err
			}
			e.Reason = reason
			out := cmd.OutOrStdout()
			if asJSON && dryRun {
				return printJSON(out, e)
			}
			what := message
			if login != "" {
				what = "the messages of " + login
			}
			if len(e.Digests) == 0 {
				fmt.Fprintf(out, "nothing to erase for %s", what)
				if len(e.Kept) > 0 {
					fmt.Fprintf(out, " (%d bodies kept: others still have them)", len(e.Kept))
				}
				fmt.Fprintln(out)
				return nil
			}
			verb := "erased"
			if dryRun {
				verb = "would erase"
			} else {
				pos, err := a.Erase(ctx, lg, recorder(g), actor, e)
				if err != nil {
					return err
				}
				defer fmt.Fprintf(out, "recorded as vnd.bonnie.Erasure at log position %d, by %s\n", pos, actor)
			}
			if asJSON {
				return printJSON(out, e)
			}
			for _, d := range e.Digests {
				fmt.Fprintf(out, "%s %s\n", verb, d)
			}
			for _, k := range e.Kept {
				fmt.Fprintf(out, "kept %s: also held by %s\n", k.Digest, strings.Join(k.SharedWith, ", "))
			}
			fmt.Fprintf(out, "%s %d bodies of %s\n", verb, len(e.Digests), what)
			if !e.Encrypted {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: some bodies were stored unencrypted: their files are deleted, but copies elsewhere (backups) keep them")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&message, "message", "", "the Message-ID or sha256 of the message to erase")
	cmd.Flags().StringVar(&login, "user", "", "the person whose messages to erase (login or persistent id)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the erasure: a ticket, a request)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be erased; change nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the erasure as JSON")
	return cmd
}

// finishUnfinished destroys what the log says is gone and the store still
// holds (an erasure or purge cut short).
func finishUnfinished(ctx context.Context, a *archive.Archive, w io.Writer, dryRun bool) error {
	left, err := a.Unfinished(ctx)
	if err != nil {
		return err
	}
	for _, g := range left {
		if dryRun {
			fmt.Fprintf(w, "would finish: %s %s (log position %d)\n", g.Kind, g.Digest, g.Position)
			continue
		}
		if err := a.Finish(g); err != nil {
			return err
		}
		fmt.Fprintf(w, "finished: %s %s (log position %d)\n", g.Kind, g.Digest, g.Position)
	}
	return nil
}

func newArchivePurgeCmd(g *globals, af *archiveFlags) *cobra.Command {
	var execute, dryRun, asJSON bool
	var batch int
	var at string
	cmd := &cobra.Command{
		Use:   "purge [--execute] [--batch N]",
		Short: "Remove the bodies whose retention has expired (dry run unless --execute)",
		Long: `Lists the bodies whose retention (see 'archive retention') has ended: every
copy expired, no legal hold on it. With --execute it removes them, --batch
at a time: each batch is first recorded as a vnd.bonnie.Purge event naming
the bodies and the policies, then removed from the store. Interrupted, it
resumes: a new run finishes what a recorded batch had not removed, then
goes on. Held bodies are listed with their hold and never removed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if cmd.Flags().Changed("dry-run") && cmd.Flags().Changed("execute") && dryRun == execute {
				return errors.New("--dry-run and --execute contradict each other")
			}
			if cmd.Flags().Changed("dry-run") {
				execute = !dryRun
			}
			if batch <= 0 {
				return errors.New("--batch must be positive")
			}
			now := time.Now()
			if at != "" {
				t, err := parseWhen(at)
				if err != nil {
					return fmt.Errorf("--now: %w", err)
				}
				now = t
			}
			actor, err := af.who()
			if err != nil {
				return err
			}
			lg, a, err := openArchiveWith(ctx, g, af, false)
			if err != nil {
				return err
			}
			defer lg.Close()
			defer a.Close()
			stderr, out := cmd.ErrOrStderr(), cmd.OutOrStdout()
			if err := finishUnfinished(ctx, a, stderr, !execute); err != nil {
				return err
			}
			plan, err := a.PlanPurge(ctx, now)
			if err != nil {
				return err
			}
			if !execute {
				if asJSON {
					return printJSON(out, plan)
				}
				for _, b := range plan.Expired {
					fmt.Fprintf(out, "would purge %s (%d bytes, expired %s, policy %s)\n", b.Digest, b.Size, fmtWhen(b.Expired), strings.Join(b.Policies, ","))
				}
				for _, h := range plan.Held {
					fmt.Fprintf(out, "held %s: expired, kept by hold %s\n", h.Digest, h.Hold)
				}
				fmt.Fprintf(out, "dry run: %d bodies (%d bytes) would be purged, %d expired bodies are held; run with --execute to purge\n",
					len(plan.Expired), plan.Bytes, len(plan.Held))
				return nil
			}
			bar := newBar(stderr, int64(len(plan.Expired)), "purging", false)
			done := 0
			var positions []bonnie.Position
			for i := 0; i < len(plan.Expired); i += batch {
				part := plan.Expired[i:min(i+batch, len(plan.Expired))]
				pos, err := a.PurgeBatch(ctx, lg, recorder(g), actor, part)
				if err != nil {
					return fmt.Errorf("after %d of %d bodies: %w", done, len(plan.Expired), err)
				}
				positions = append(positions, pos)
				done += len(part)
				if bar != nil {
					bar.Set(done)
				} else {
					fmt.Fprintf(stderr, "purged %d/%d bodies (Purge event at log position %d)\n", done, len(plan.Expired), pos)
				}
			}
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(stderr)
			}
			if asJSON {
				return printJSON(out, map[string]any{"purged": plan.Expired, "held": plan.Held, "bytes": plan.Bytes, "positions": positions})
			}
			fmt.Fprintf(out, "purged %d bodies (%d bytes) in %d Purge events, by %s; %d expired bodies are held\n",
				len(plan.Expired), plan.Bytes, len(positions), actor, len(plan.Held))
			return nil
		},
	}
	cmd.Flags().BoolVar(&execute, "execute", false, "remove the bodies (default: a dry run)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", true, "only show what would be removed (the default)")
	cmd.Flags().IntVar(&batch, "batch", 500, "bodies per Purge event")
	cmd.Flags().StringVar(&at, "now", "", "judge expiry as of this time instead of now (RFC 3339 or a date)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
