package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/identity"
	"github.com/bonnie-archive/bonnie/internal/datadir"
)

// resolverFlags are the identity resolver settings of whois and resolve:
// the same flags as bonnied's, and --identity-config for a file with the
// same keys.
type resolverFlags struct {
	cfg        identity.Config
	configFile string
}

func (r *resolverFlags) register(cmd *cobra.Command) {
	fs := flag.NewFlagSet("identity", flag.ContinueOnError)
	r.cfg.RegisterFlags(fs)
	cmd.Flags().AddGoFlagSet(fs)
	cmd.Flags().StringVar(&r.configFile, "identity-config", "", "read the resolver settings from this YAML or JSON file (flags win)")
}

// open returns the configured resolver, nil when none is configured.
func (r *resolverFlags) open() (bonnie.Resolver, func() error, error) {
	if r.configFile != "" {
		c, err := identity.LoadConfig(r.configFile)
		if err != nil {
			return nil, nil, err
		}
		r.cfg.Merge(c)
	}
	return r.cfg.Open()
}

// logResolution is one resolution the log holds for a name.
type logResolution struct {
	Position bonnie.Position `json:"position"`
	Time     time.Time       `json:"time"`
	// Event is the type of the event it was stored with; for a late
	// resolution, of the event it resolves (Position), while ResolvedBy
	// is the IdentityResolved record.
	Event      string           `json:"event"`
	ResolvedBy bonnie.Position  `json:"resolvedBy,omitempty"`
	Identity   *bonnie.Identity `json:"identity"`
}

// whoisResult is what whois prints.
type whoisResult struct {
	Subject string    `json:"subject"`
	At      time.Time `json:"at"`
	// Log is the resolution the log would use at At: the one stored with
	// the last event at or before At that named Subject.
	Log *logResolution `json:"log"`
	// Changes are the earlier resolutions that differ from one another
	// (another person, login or membership), oldest first.
	Changes []logResolution `json:"changes,omitempty"`
	// Pending is the last event at or before At that named Subject while
	// the directory could not answer, if no resolution pass has filled
	// it in yet (its identity is marked unresolved, with the reason).
	Pending *logResolution `json:"pending,omitempty"`
	// Directory is what the configured resolver says now.
	Directory      *bonnie.Identity `json:"directory,omitempty"`
	DirectoryError string           `json:"directoryError,omitempty"`
}

func newWhoisCmd(g *globals) *cobra.Command {
	var (
		at     string
		asJSON bool
		rf     resolverFlags
	)
	cmd := &cobra.Command{
		Use:   "whois LOGIN",
		Short: "Show the persistent identity a login or ACL subject resolves to, as the log holds it (and the directory, when configured)",
		Long: `whois shows the resolution the log would use for LOGIN (a login, an address, "group:NAME", a persistent id)
at --at (default: now): the identity stored with the last event at or before that time that named it,
resolved at ingest or, when the directory was unreachable then, by a later resolution pass. With
--ldap-url or --identity-file it also asks the directory, which only knows the present.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			when := time.Now().UTC()
			if at != "" {
				t, err := parseTime(at)
				if err != nil {
					return err
				}
				when = t
			}
			res := whoisResult{Subject: args[0], At: when}
			r, closeR, err := rf.open()
			if err != nil {
				return err
			}
			defer closeR()
			lg, err := openLog(ctx, g)
			if err != nil && r == nil {
				return err
			}
			if err == nil {
				defer lg.Close()
				if res.Log, res.Changes, res.Pending, err = whoisLog(ctx, lg, args[0], when); err != nil {
					return err
				}
			}
			if r != nil {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				id, err := r.Resolve(rctx, args[0], when)
				cancel()
				if err != nil {
					res.DirectoryError = err.Error()
				} else {
					res.Directory = &id
				}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetEscapeHTML(false)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			printWhois(cmd.OutOrStdout(), &res)
			if res.Log == nil && res.Directory == nil && res.Pending == nil {
				return &exitError{msg: fmt.Sprintf("%s: no resolution in the log at %s", args[0], when.Format(time.RFC3339))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&at, "at", "", "time to resolve at (RFC 3339, or YYYY-MM-DD); default now")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rf.register(cmd)
	return cmd
}

// parseTime reads --at.
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("--at %q: want RFC 3339 (2026-11-28T20:00:00Z) or a date", s)
}

// named reports whether an identity answers to name: as the subject it
// was asked as, by any of its names, or by its persistent id.
func named(id *bonnie.Identity, name string) bool {
	if id == nil || id.Unresolved {
		return false
	}
	name = strings.TrimPrefix(name, "-")
	if id.ID != "" && id.ID == name {
		return true
	}
	for _, n := range id.Names() {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// whoisLog finds the last resolution of name at or before at, the
// distinct earlier ones, and the last mention still unresolved.
func whoisLog(ctx context.Context, lg logReader, name string, at time.Time) (*logResolution, []logResolution, *logResolution, error) {
	var found []logResolution
	var pending *logResolution
	err := eachResolution(ctx, lg, func(rec bonnie.Record, ev *bonnie.Event, ids *bonnie.Identities, late bonnie.Position) {
		if ev.Time.After(at) {
			return
		}
		for _, id := range ids.All() {
			if named(id, name) {
				found = append(found, logResolution{Position: rec.Position, Time: ev.Time, Event: ev.Type.String(), ResolvedBy: late, Identity: id})
				return
			}
		}
		for _, id := range ids.All() {
			if id.Unresolved && strings.EqualFold(strings.TrimPrefix(id.Subject, "-"), strings.TrimPrefix(name, "-")) {
				if pending == nil || !ev.Time.Before(pending.Time) {
					pending = &logResolution{Position: rec.Position, Time: ev.Time, Event: ev.Type.String(), Identity: id}
				}
				return
			}
		}
	})
	if err != nil || len(found) == 0 {
		return nil, nil, pending, err
	}
	// The answer is the latest by event time (a late resolution counts at
	// the time of the event it resolves).
	last := 0
	for i := range found {
		if !found[i].Time.Before(found[last].Time) {
			last = i
		}
	}
	var changes []logResolution
	prev := ""
	for _, f := range found {
		key := resolutionKey(f.Identity)
		if key != prev {
			changes = append(changes, f)
			prev = key
		}
	}
	if pending != nil && pending.Time.Before(found[last].Time) {
		pending = nil // resolved since
	}
	return &found[last], changes, pending, nil
}

// resolutionKey is what makes two resolutions differ for whois.
func resolutionKey(id *bonnie.Identity) string {
	c := *id
	c.Subject, c.Negative, c.ResolvedAt, c.Late, c.Source = "", false, time.Time{}, false, ""
	b, _ := json.Marshal(c)
	return string(b)
}

func printWhois(w io.Writer, r *whoisResult) {
	fmt.Fprintf(w, "%s at %s\n", r.Subject, r.At.Format(time.RFC3339))
	if r.Log != nil {
		how := "at ingest"
		if r.Log.ResolvedBy != 0 {
			how = fmt.Sprintf("after the fact, by record %d", r.Log.ResolvedBy)
		}
		fmt.Fprintf(w, "  log:       %s\n", describe(r.Log.Identity))
		fmt.Fprintf(w, "             stored with %s at position %d (%s), resolved %s\n",
			r.Log.Event, r.Log.Position, r.Log.Time.Format(time.RFC3339), how)
	} else {
		fmt.Fprintf(w, "  log:       no event named it by then\n")
	}
	if p := r.Pending; p != nil {
		fmt.Fprintf(w, "  pending:   named by %s at position %d (%s), not resolved yet: %s\n",
			p.Event, p.Position, p.Time.Format(time.RFC3339), p.Identity.Reason)
	}
	if len(r.Changes) > 1 {
		fmt.Fprintf(w, "  over time:\n")
		for _, c := range r.Changes {
			fmt.Fprintf(w, "    %s  #%-6d %s\n", c.Time.Format(time.RFC3339), c.Position, describe(c.Identity))
		}
	}
	switch {
	case r.Directory != nil:
		fmt.Fprintf(w, "  directory: %s (now)\n", describe(r.Directory))
	case r.DirectoryError != "":
		fmt.Fprintf(w, "  directory: %s\n", r.DirectoryError)
	}
}

// describe is one line about an identity.
func describe(id *bonnie.Identity) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", id.Kind, id.ID)
	if id.Login != "" && id.Login != id.ID {
		fmt.Fprintf(&b, " login=%s", id.Login)
	}
	if id.DisplayName != "" {
		fmt.Fprintf(&b, " %q", id.DisplayName)
	}
	if len(id.Aliases) > 0 {
		fmt.Fprintf(&b, " aliases=%s", strings.Join(id.Aliases, ","))
	}
	names := func(refs []bonnie.Ref) string {
		var out []string
		for _, r := range refs {
			out = append(out, r.Name)
		}
		return strings.Join(out, ",")
	}
	if len(id.Groups) > 0 {
		fmt.Fprintf(&b, " groups=%s", names(id.Groups))
	}
	if len(id.Roles) > 0 {
		fmt.Fprintf(&b, " roles=%s", names(id.Roles))
	}
	if id.Kind == bonnie.IdentityGroup {
		fmt.Fprintf(&b, " members=%s", names(id.Members))
	}
	if id.Reason != "" {
		fmt.Fprintf(&b, " (%s)", id.Reason)
	}
	return b.String()
}

func newResolveCmd(g *globals) *cobra.Command {
	var (
		rf   resolverFlags
		wait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "resolve",
		Short: "Resolve the identities that events were stored without (the directory was unreachable at ingest)",
		Long: `resolve is the resolution pass: it finds events whose identities are marked unresolved, resolves
them now against the directory, and appends for each an IdentityResolved event naming the original
position. Nothing is rewritten. It ingests, so it cannot run while bonnied runs on the same data
directory; bonnied does the same pass by itself (--resolve-every).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, closeR, err := rf.open()
			if err != nil {
				return err
			}
			defer closeR()
			if r == nil {
				return errors.New("resolve needs a directory: --ldap-url ... or --identity-file F (or --identity-config F)")
			}
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			unlock, err := datadir.LockIngest(g.data, wait)
			if err != nil {
				return fmt.Errorf("%w (bonnied resolves by itself: --resolve-every)", err)
			}
			defer unlock()
			eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger(), Resolver: r})
			if err != nil {
				return err
			}
			n, err := eng.ResolvePending(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d events resolved after the fact\n", n)
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Second, "how long to wait for the data directory's ingest lock")
	rf.register(cmd)
	return cmd
}
