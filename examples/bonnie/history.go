package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// logReader is what the identity commands read of a log.
type logReader interface {
	Read(ctx context.Context, from bonnie.Position, limit int) ([]bonnie.Record, error)
}

// eachRecord calls fn for every record in log order.
func eachRecord(ctx context.Context, lg logReader, fn func(rec bonnie.Record)) error {
	var pos bonnie.Position
	for {
		recs, err := lg.Read(ctx, pos, 1000)
		if err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		if len(recs) == 0 {
			return nil
		}
		for _, rec := range recs {
			if rec.Event != nil {
				fn(rec)
			}
			pos = rec.Position
		}
	}
}

// late is a resolution after the fact: the identities and the
// IdentityResolved record that holds them.
type late struct {
	ids *bonnie.Identities
	by  bonnie.Position
}

// lateResolutions maps each position that an IdentityResolved event
// resolved to that resolution (the first one, if several).
func lateResolutions(ctx context.Context, lg logReader) (map[bonnie.Position]late, error) {
	out := map[bonnie.Position]late{}
	err := eachRecord(ctx, lg, func(rec bonnie.Record) {
		if rec.Event.Type != bonnie.IdentityResolved {
			return
		}
		if res, err := rec.Event.Resolution(); err == nil {
			if _, seen := out[res.Resolves]; !seen {
				out[res.Resolves] = late{res, rec.Position}
			}
		}
	})
	return out, err
}

// eachResolution calls fn for every event with the identities the log
// holds for it: those stored with it, or the late resolution when one
// filled them in (lateBy is then that record), or for an event stored
// without a resolver the pass-through identity of its user.
func eachResolution(ctx context.Context, lg logReader, fn func(rec bonnie.Record, ev *bonnie.Event, ids *bonnie.Identities, lateBy bonnie.Position)) error {
	lates, err := lateResolutions(ctx, lg)
	if err != nil {
		return err
	}
	return eachRecord(ctx, lg, func(rec bonnie.Record) {
		ev := rec.Event
		if ev.Type == bonnie.IdentityResolved {
			return
		}
		ids, by := ev.Identities, bonnie.Position(0)
		if l, ok := lates[rec.Position]; ok {
			ids, by = l.ids, l.by
		}
		if ids == nil {
			if a := ev.ActorIdentity(); a != nil {
				ids = &bonnie.Identities{Actor: a}
			} else {
				return
			}
		}
		fn(rec, ev, ids, by)
	})
}

// historyEntry is one thing the person did.
type historyEntry struct {
	Position bonnie.Position `json:"position"`
	Time     time.Time       `json:"time"`
	Event    string          `json:"event"`
	// Login is the name the event gave (the one used then), ID the
	// person's persistent id.
	Login string `json:"login"`
	ID    string `json:"id"`
	// ResolvedBy is the IdentityResolved record that named the person,
	// for an event stored while the directory was unreachable.
	ResolvedBy bonnie.Position `json:"resolvedBy,omitempty"`
	Service    string          `json:"service,omitempty"`
	Session    string          `json:"session,omitempty"`
	Client     string          `json:"client,omitempty"`
	// End and Duration close a Login once its session's Logout is in the
	// log.
	End             *time.Time `json:"end,omitempty"`
	Duration        string     `json:"duration,omitempty"`
	DurationSeconds *float64   `json:"durationSeconds,omitempty"`
	Mailbox         string     `json:"mailbox,omitempty"`
	MailboxID       string     `json:"mailboxId,omitempty"`
	From            string     `json:"from,omitempty"`
	UIDs            []uint32   `json:"uids,omitempty"`
	MessageIDs      []string   `json:"messageIds,omitempty"`
	Flags           []string   `json:"flags,omitempty"`
	ACLSubject      string     `json:"aclSubject,omitempty"`
	ACLSubjectID    string     `json:"aclSubjectId,omitempty"`
	ACLRights       *string    `json:"aclRights,omitempty"`
	ACLMembers      []string   `json:"aclMembers,omitempty"`
}

// person is one persistent identity the query matched.
type person struct {
	ID    string              `json:"id"`
	Kind  bonnie.IdentityKind `json:"kind"`
	Login string              `json:"login"`
	// Names are every login, alias and address the log saw for it.
	Names       []string `json:"names"`
	DisplayName string   `json:"displayName,omitempty"`
}

type historyResult struct {
	Query   string         `json:"query"`
	Persons []person       `json:"persons"`
	Events  []historyEntry `json:"events"`
	// Sessions summarises the person's sessions (login to logout), each
	// with the number of events in it; the events themselves are in
	// Events, with the session's id and client address.
	Sessions []sessionSummary `json:"sessions"`
	// Gaps are the periods between the first and the last event in which
	// the log of the folders they name is not known complete: the person
	// may have done more then than the log says.
	Gaps []coverage.Crossing `json:"gaps,omitempty"`
}

// sessionSummary is one session of the person.
type sessionSummary struct {
	Session       string          `json:"session"`
	Login         string          `json:"login"`
	ID            string          `json:"id"`
	Service       string          `json:"service,omitempty"`
	Client        string          `json:"client,omitempty"`
	Start         time.Time       `json:"start"`
	StartPosition bonnie.Position `json:"startPosition"`
	End           *time.Time      `json:"end,omitempty"`
	EndPosition   bonnie.Position `json:"endPosition,omitempty"`
	Duration      string          `json:"duration,omitempty"`
	Events        int             `json:"events"`
}

func newHistoryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show the history of an entity",
	}
	cmd.AddCommand(newHistoryUserCmd(g), newHistoryMessageCmd(g), newHistoryFolderCmd(g))
	return cmd
}

func newHistoryUserCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "user LOGIN-OR-ID",
		Short: "Everything a person did under any of their names, in time order",
		Long: `history user finds the persons the log resolved LOGIN-OR-ID to (a login, alias, address they
had at any time, or a persistent id) and lists, in time order, every event they acted in under
any of their names: logins with client address and session duration, reads, flag changes, moves,
deletions, ACL changes they made... Identities come from the log (resolved at ingest, or later by
the resolution pass), never from the directory now. Every event of a session carries the session's
client address; --json adds a summary of each session (start, end, duration, client, number of
events). A note (--json: "gaps") names the periods between the first and the last event in which
the log of the folders they name is not known complete. The query itself is recorded in the log
(vnd.bonnie.Query).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			lg, err := openLog(ctx, g)
			if err != nil {
				return err
			}
			defer lg.Close()
			if err := recordQuery(ctx, g, "history user", map[string]any{"user": args[0]}); err != nil {
				return err
			}
			res, err := userHistory(ctx, lg, args[0])
			if err != nil {
				return err
			}
			if res.Gaps, err = userGaps(ctx, lg, res.Events); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetEscapeHTML(false)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printHistory(out, res)
			}
			if len(res.Persons) == 0 {
				return &exitError{msg: fmt.Sprintf("nobody in the log was ever named %q", args[0])}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// userHistory runs the query: who was ever named q, and what they did.
func userHistory(ctx context.Context, lg logReader, q string) (*historyResult, error) {
	res := &historyResult{Query: q, Persons: []person{}, Events: []historyEntry{}, Sessions: []sessionSummary{}}
	// Pass 1: the persons, and every name each had.
	persons := map[string]*person{}
	var order []string
	err := eachResolution(ctx, lg, func(_ bonnie.Record, _ *bonnie.Event, ids *bonnie.Identities, _ bonnie.Position) {
		for _, id := range ids.All() {
			if id.Unresolved || id.ID == "" || (id.Kind != bonnie.IdentityUser && id.Kind != bonnie.IdentityLogin) {
				continue
			}
			p := persons[id.ID]
			if p == nil {
				p = &person{ID: id.ID, Kind: id.Kind}
				persons[id.ID] = p
				order = append(order, id.ID)
			}
			p.Login, p.DisplayName = id.Login, cmp.Or(id.DisplayName, p.DisplayName)
			for _, n := range id.Names() {
				if !slices.ContainsFunc(p.Names, func(x string) bool { return strings.EqualFold(x, n) }) {
					p.Names = append(p.Names, n)
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	targets := map[string]bool{}
	for _, id := range order {
		p := persons[id]
		if p.ID == q || slices.ContainsFunc(p.Names, func(n string) bool { return strings.EqualFold(n, q) }) {
			targets[id] = true
		}
	}
	if len(targets) == 0 {
		return res, nil
	}
	acted := map[string]bool{}
	// Pass 2: what they did.
	sessions := map[string]int{} // session id -> index of its Login entry
	err = eachResolution(ctx, lg, func(rec bonnie.Record, ev *bonnie.Event, ids *bonnie.Identities, by bonnie.Position) {
		a := ids.Actor
		if a == nil || a.Unresolved || !targets[a.ID] {
			return
		}
		acted[a.ID] = true
		e := historyEntry{Position: rec.Position, Time: ev.Time, Event: ev.Type.String(), Login: ev.User, ID: a.ID,
			ResolvedBy: by, Service: ev.Service, Session: ev.SessionID, Mailbox: ev.Mailbox.Name, MailboxID: ev.MailboxID,
			UIDs: ev.UIDs, MessageIDs: ev.MessageIDs, Flags: ev.Flags}
		if ev.ClientIP != "" {
			e.Client = net.JoinHostPort(ev.ClientIP, strconv.Itoa(ev.ClientPort))
		}
		if ev.OldMailbox != nil {
			e.From = ev.OldMailbox.Name
		}
		if ev.Type == bonnie.AclChange {
			e.ACLSubject = ev.ACLSubject
			rights := ev.ACLRights
			if !ev.ACLRemoved {
				e.ACLRights = &rights
			}
			if s := ids.Subject; s != nil && !s.Unresolved {
				e.ACLSubjectID = s.ID
				for _, m := range s.Members {
					e.ACLMembers = append(e.ACLMembers, m.Name)
				}
			}
		}
		if e.Client == "" && ev.SessionID != "" {
			// Cyrus names the client on Login only: the session carries it.
			if i, ok := sessions[ev.SessionID]; ok {
				e.Client = res.Events[i].Client
			}
		}
		switch ev.Type {
		case bonnie.Login:
			if ev.SessionID != "" {
				sessions[ev.SessionID] = len(res.Events)
			}
		case bonnie.Logout:
			if i, ok := sessions[ev.SessionID]; ok && ev.SessionID != "" {
				start := &res.Events[i]
				end := ev.Time
				d := end.Sub(start.Time)
				secs := d.Seconds()
				start.End, start.Duration, start.DurationSeconds = &end, d.String(), &secs
				e.Duration, e.DurationSeconds = d.String(), &secs
			}
		}
		res.Events = append(res.Events, e)
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(res.Events, func(a, b historyEntry) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.Position, b.Position))
	})
	res.Sessions = summariseSessions(res.Events)
	// The persons: those of the directory, and the bare logins (unknown
	// to the directory) that did something.
	for _, id := range order {
		if p := persons[id]; targets[id] && (p.Kind == bonnie.IdentityUser || acted[id]) {
			res.Persons = append(res.Persons, *p)
		}
	}
	return res, nil
}

// userGaps is what the span of a person's events crosses in the coverage
// of the folders they name.
func userGaps(ctx context.Context, lg coverage.Source, events []historyEntry) ([]coverage.Crossing, error) {
	if len(events) == 0 {
		return nil, nil
	}
	tl, err := coverage.Read(ctx, lg, time.Now())
	if err != nil {
		return nil, err
	}
	es := make([]discovery.Entry, 0, len(events))
	var folders []string
	for _, e := range events {
		es = append(es, discovery.Entry{Time: e.Time})
		folders = append(folders, e.MailboxID)
	}
	return discovery.EntryGaps(ctx, tl, lg, es, folders, false)
}

// withCoverage reads the log's coverage for fn (a timeline's gaps).
func withCoverage(ctx context.Context, g *globals, fn func(tl *coverage.Timeline, lg coverage.Source) error) error {
	lg, err := openLog(ctx, g)
	if err != nil {
		return err
	}
	defer lg.Close()
	tl, err := coverage.Read(ctx, lg, time.Now())
	if err != nil {
		return err
	}
	return fn(tl, lg)
}

// printGaps says which periods a timeline crosses in which the log is
// not known complete.
func printGaps(w io.Writer, gaps []coverage.Crossing) {
	if len(gaps) == 0 {
		return
	}
	fmt.Fprintln(w, "note: this history crosses periods in which the log is not known complete (entries recorded after the fact are marked):")
	for i := range gaps {
		for _, l := range gaps[i].Lines() {
			fmt.Fprintln(w, "  gap "+l)
		}
	}
}

func printHistory(w io.Writer, r *historyResult) {
	for _, p := range r.Persons {
		fmt.Fprintf(w, "%s %s %q, names: %s\n", p.Kind, p.ID, p.DisplayName, strings.Join(p.Names, ", "))
	}
	for _, e := range r.Events {
		var b strings.Builder
		fmt.Fprintf(&b, "%8d  %s  %-16s as %-20s", e.Position, e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Event, e.Login)
		field := func(k, v string) {
			if v != "" {
				fmt.Fprintf(&b, "  %s=%s", k, v)
			}
		}
		field("client", e.Client)
		field("session", e.Duration)
		field("mailbox", e.Mailbox)
		field("from", e.From)
		if len(e.UIDs) > 0 {
			field("uids", uidList(e.UIDs))
		}
		field("flags", strings.Join(e.Flags, ","))
		field("subject", e.ACLSubject)
		if e.ACLRights != nil {
			fmt.Fprintf(&b, "  rights=%q", *e.ACLRights)
		}
		if len(e.ACLMembers) > 0 {
			field("members", strings.Join(e.ACLMembers, ","))
		}
		if e.ResolvedBy != 0 {
			fmt.Fprintf(&b, "  (identified later, #%d)", e.ResolvedBy)
		}
		fmt.Fprintln(w, b.String())
	}
	printGaps(w, r.Gaps)
}

// summariseSessions lists the sessions the events open, in time order,
// with their end and the number of events in each.
func summariseSessions(events []historyEntry) []sessionSummary {
	out := []sessionSummary{}
	index := map[string]int{}
	for _, e := range events {
		if e.Event == bonnie.Login.String() && e.Session != "" {
			index[e.Session] = len(out)
			s := sessionSummary{Session: e.Session, Login: e.Login, ID: e.ID, Service: e.Service, Client: e.Client,
				Start: e.Time, StartPosition: e.Position, End: e.End, Duration: e.Duration}
			out = append(out, s)
		}
	}
	for _, e := range events {
		i, ok := index[e.Session]
		if !ok {
			continue
		}
		out[i].Events++
		if e.Event == bonnie.Logout.String() {
			out[i].EndPosition = e.Position
		}
	}
	return out
}

// recordQuery appends the vnd.bonnie.Query event that records a
// discovery question (who asked, what, from where) before it is
// answered: no answer without its record in the chain of custody.
func recordQuery(ctx context.Context, g *globals, command string, args any) error {
	by := runBy()
	raw, err := discovery.QueryEvent(discovery.Asked{By: by.User, Command: command, Args: args, Host: by.Host}, time.Time{})
	if err != nil {
		return err
	}
	if _, err := recordEvent(ctx, g, raw); err != nil {
		return fmt.Errorf("record the query (chain of custody): %w", err)
	}
	return nil
}

// openDiscovery opens the log and the discovery index of the data
// directory (DATA/discovery.db, with the archive's body store when there
// is one), records the query, and brings the index up to the log's head,
// so that a query works whether or not bonnied runs the discovery sink.
func openDiscovery(ctx context.Context, g *globals, command string, args any) (*discovery.Index, func(), error) {
	lg, err := openLog(ctx, g)
	if err != nil {
		return nil, nil, err
	}
	if err := recordQuery(ctx, g, command, args); err != nil {
		lg.Close()
		return nil, nil, err
	}
	var blobs *blob.Store
	if dir, _ := archive.Paths(g.data); isDirectory(dir) {
		opts, err := blobOptions(nil) // $BONNIE_KEY_FILE for encrypted bodies
		if err != nil {
			lg.Close()
			return nil, nil, err
		}
		if blobs, err = blob.Open(dir, opts...); err != nil {
			lg.Close()
			return nil, nil, fmt.Errorf("body store: %w", err)
		}
	}
	if err := ensureDir(g.data); err != nil {
		lg.Close()
		return nil, nil, err
	}
	x, err := discovery.Open(ctx, discovery.Path(g.data), blobs)
	if err != nil {
		lg.Close()
		return nil, nil, err
	}
	if _, err := x.CatchUp(ctx, lg); err != nil {
		x.Close()
		lg.Close()
		return nil, nil, err
	}
	lg.Close()
	return x, func() { x.Close() }, nil
}

func isDirectory(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// writeDiscoveryJSON writes v indented, without HTML escaping.
func writeDiscoveryJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// discoveryNotFound turns the index's ErrNotFound into a quiet failure with its
// message.
func discoveryNotFound(err error) error {
	if errors.Is(err, discovery.ErrNotFound) || errors.Is(err, discovery.ErrNoBodies) {
		return &exitError{msg: err.Error()}
	}
	return err
}

// printEntries writes a timeline as a table.
func printEntries(w io.Writer, es []discovery.Entry) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POS\tTIME\tACTION\tFOLDER\tUID\tBY\tCLIENT\tSESSION\tDETAIL")
	for _, e := range es {
		by := e.Login
		if e.ActorID != "" && e.ActorID != e.Login {
			by += " (" + e.ActorID + ")"
		}
		if by == "" {
			by = e.Service
		}
		uid := ""
		if e.UID != 0 {
			uid = strconv.FormatUint(uint64(e.UID), 10)
		}
		var detail []string
		if e.FromPath != "" {
			detail = append(detail, "from "+e.FromPath)
		}
		if len(e.Flags) > 0 {
			detail = append(detail, "flags "+strings.Join(e.Flags, " "))
		}
		if e.ACLSubject != "" {
			detail = append(detail, fmt.Sprintf("%s=%q", e.ACLSubject, e.ACLRights))
		}
		if e.Action == discovery.ActQuery && len(e.Detail) > 0 {
			detail = append(detail, string(e.Detail))
		}
		if e.MessageID != "" {
			detail = append(detail, e.MessageID)
		}
		if e.RecordedBy != "" {
			mark := "recorded after the fact by " + e.RecordedBy
			if e.Window != nil {
				mark += fmt.Sprintf(", happened %s .. %s", e.Window.From.UTC().Format(time.RFC3339), e.Window.To.UTC().Format(time.RFC3339))
			} else if e.RecordedBy == coverage.ByBackfill {
				mark += ", happened before"
			}
			detail = append(detail, mark)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Position, e.Time.UTC().Format("2006-01-02T15:04:05.000Z"),
			e.Action, e.Path, uid, by, e.Client, shortSession(e.Session), strings.Join(detail, "; "))
	}
	tw.Flush()
}

// shortSession keeps the end of a Cyrus session id, which tells sessions
// apart ("...-30423-1-5233442537427230527" -> "30423-1-52334425").
func shortSession(s string) string {
	if len(s) <= 24 {
		return s
	}
	return "…" + s[len(s)-23:]
}

func newHistoryMessageCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "message MESSAGE-ID",
		Short: "Everything that happened to a message, followed across copies, moves and folder renames",
		Long: `history message lists, in time order, every place the message with MESSAGE-ID was (folder,
UID) and what happened to it there: delivered or appended, read, flagged and unflagged, copied,
moved, trashed, expunged, expired, restored, and the renames and deletion of the folders it was
in. Each line names the actor (the login used and the persistent identity), the client address,
the session and the log position of the event. What a backfill or a reconcile recorded after the
fact is marked (with the window in which it happened), and a note (--json: "gaps") names the periods
of the history in which the log of its folders is not known complete. The query itself is recorded
in the log.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			x, done, err := openDiscovery(ctx, g, "history message", map[string]any{"messageId": args[0]})
			if err != nil {
				return err
			}
			defer done()
			tl, err := x.Message(ctx, args[0])
			if err != nil {
				return discoveryNotFound(err)
			}
			if err := withCoverage(ctx, g, func(cov *coverage.Timeline, lg coverage.Source) error {
				return tl.AddGaps(ctx, cov, lg)
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeDiscoveryJSON(out, tl)
			}
			fmt.Fprintf(out, "message %s\n", tl.MessageID)
			for _, p := range tl.Places {
				fmt.Fprintf(out, "  %s uid %d (%s)  subject %q  from %s", p.Path, p.UID, p.State, cell(p.Subject, 60), p.From)
				if p.Digest != "" {
					fmt.Fprintf(out, "  sha256 %s", p.Digest)
				}
				fmt.Fprintln(out)
			}
			printEntries(out, tl.Entries)
			printGaps(out, tl.Gaps)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newHistoryFolderCmd(g *globals) *cobra.Command {
	var asJSON, messages bool
	cmd := &cobra.Command{
		Use:   "folder MAILBOX",
		Short: "A folder's life: every name it had, creation, renames, ACL changes, deletion",
		Long: `history folder names the folder as Cyrus does in its admin namespace, decoded
("user.alice.Über"), by any name it ever had, or by its uniqueid, and lists every name it had and,
in time order, its creation, renames, ACL grants and revocations, subscriptions and deletion, with
actor, client, session and log position. --messages adds what happened to the messages in it.
What a backfill or a reconcile recorded after the fact is marked, and a note (--json: "gaps") names
the periods in which the folder's log is not known complete.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			x, done, err := openDiscovery(ctx, g, "history folder", map[string]any{"folder": args[0], "messages": messages})
			if err != nil {
				return err
			}
			defer done()
			fts, err := x.Folder(ctx, args[0], messages)
			if err != nil {
				return discoveryNotFound(err)
			}
			if err := withCoverage(ctx, g, func(cov *coverage.Timeline, lg coverage.Source) error {
				for i := range fts {
					if err := fts[i].AddGaps(ctx, cov, lg); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeDiscoveryJSON(out, fts)
			}
			for _, ft := range fts {
				fmt.Fprintf(out, "folder %s\n", ft.Folder)
				for _, n := range ft.Names {
					fmt.Fprintf(out, "  named %s since %s (#%d)\n", n.Path, n.Since.UTC().Format(time.RFC3339Nano), n.Position)
				}
				printEntries(out, ft.Entries)
				printGaps(out, ft.Gaps)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&messages, "messages", false, "also list what happened to the messages in the folder")
	return cmd
}
