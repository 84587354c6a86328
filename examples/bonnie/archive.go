package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/store/blob"
)

func newArchiveCmd(g *globals) *cobra.Command {
	af := &archiveFlags{}
	cmd := &cobra.Command{
		Use:   "archive",
		Short: "Get, verify, reindex, retain, hold, erase and purge the archived message bodies",
		Long: `The archive holds every message body once, under its SHA-256, in DIR/blobs
(zstd files, encrypted when bonnied runs with --key-file), and an index of
where each was put in DIR/archive/archive.db, rebuilt from the log at will.
Every command first brings the index up to the log's head.

Retention policies, legal holds, erasures and purges are events in the log
(vnd.bonnie.RetentionPolicy, LegalHold, Erasure, Purge) naming who did them
(--actor, default: your user name): evidence in the same hash chain.`,
	}
	cmd.PersistentFlags().StringVar(&af.keyFile, "key-file", "", "site key file of an encrypted body store (default $"+keyFileEnv+")")
	cmd.PersistentFlags().StringVar(&af.actor, "actor", "", "who runs the command, recorded in the log (default: the OS user)")
	cmd.AddCommand(newArchiveGetCmd(g, af), newArchiveVerifyCmd(g, af), newArchiveReindexCmd(g, af),
		newArchiveKeygenCmd(), newArchiveRetentionCmd(g, af), newArchiveHoldCmd(g, af), newArchiveEraseCmd(g, af), newArchivePurgeCmd(g, af))
	return cmd
}

// openArchive opens the log, the body store and the archive's index of a
// data directory, and brings the index up to the log (rebuilt from
// nothing with rebuild). The site key of an encrypted store is read from
// $BONNIE_KEY_FILE.
func openArchive(ctx context.Context, g *globals, rebuild bool) (bonnie.Store, *archive.Archive, error) {
	return openArchiveWith(ctx, g, nil, rebuild)
}

// openArchiveWith is openArchive with the archive command's flags (af may
// be nil).
func openArchiveWith(ctx context.Context, g *globals, af *archiveFlags, rebuild bool) (bonnie.Store, *archive.Archive, error) {
	opts, err := blobOptions(af)
	if err != nil {
		return nil, nil, err
	}
	blobs, proj := archive.Paths(g.data)
	if _, err := os.Stat(blobs); errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no body store at %s (bonnied --data %s --sinks archive creates it)", blobs, g.data)
	}
	lg, err := openLog(ctx, g)
	if err != nil {
		return nil, nil, err
	}
	store, err := blob.Open(blobs, opts...)
	if err != nil {
		lg.Close()
		return nil, nil, err
	}
	a, err := archive.Open(ctx, proj, store)
	if err != nil {
		lg.Close()
		return nil, nil, err
	}
	if rebuild {
		_, err = a.Rebuild(ctx, lg)
	} else {
		_, err = a.CatchUp(ctx, lg)
	}
	if err != nil {
		a.Close()
		lg.Close()
		return nil, nil, fmt.Errorf("index the log: %w", err)
	}
	return lg, a, nil
}

func newArchiveGetCmd(g *globals, af *archiveFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get <Message-ID|sha256>",
		Short: "Write a message's exact original bytes (to stdout, or -o FILE)",
		Long: `Writes the exact bytes of one archived message, checked against its SHA-256
before a byte is written. A Message-ID that names several different bodies
(a resent or altered message) lists them: run again with the sha256 of the
one you want. An erased or purged body fails with what the log says of it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			lg, a, err := openArchiveWith(ctx, g, af, false)
			if err != nil {
				return err
			}
			defer lg.Close()
			defer a.Close()
			digest, err := resolveBody(ctx, a, args[0], cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if gone, err := a.Gone(ctx, digest); err != nil {
				return err
			} else if gone != nil {
				return fmt.Errorf("%s: %w: %s by %s at %s (log position %d); the body cannot be read any more",
					digest, archive.ErrErased, gone.Kind, gone.Actor, gone.Time.UTC().Format(time.RFC3339), gone.Position)
			}
			// Check the whole body first: never write bytes that are not
			// the archived message.
			if _, err := a.Blobs().Verify(digest); err != nil {
				return fmt.Errorf("%s: %w", digest, err)
			}
			r, err := a.Blobs().Open(digest)
			if err != nil {
				return err
			}
			defer r.Close()
			if out == "" || out == "-" {
				_, err := io.Copy(cmd.OutOrStdout(), r)
				return err
			}
			return writeAtomic(out, r)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file (atomically) instead of stdout")
	return cmd
}

// resolveBody turns a sha256 or a Message-ID into one digest, or explains
// why it cannot.
func resolveBody(ctx context.Context, a *archive.Archive, arg string, stderr io.Writer) (string, error) {
	if d := strings.ToLower(arg); blob.ValidDigest(d) {
		if _, err := a.Body(ctx, d); err == nil {
			return d, nil
		}
		if ok, _ := a.Blobs().Has(d); ok {
			return d, nil // stored, though no log record names it (yet)
		}
		return "", &exitError{msg: fmt.Sprintf("no body %s in the archive", d)}
	}
	bodies, err := a.ByMessageID(ctx, arg)
	if err != nil {
		return "", err
	}
	switch len(bodies) {
	case 0:
		return "", &exitError{msg: fmt.Sprintf("no message with Message-ID %s in the archive", archive.NormalizeMessageID(arg))}
	case 1:
		return bodies[0].Digest, nil
	}
	fmt.Fprintf(stderr, "Message-ID %s names %d different bodies; give the sha256 of the one you want:\n",
		archive.NormalizeMessageID(arg), len(bodies))
	tw := tabwriter.NewWriter(stderr, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SHA256\tSIZE\tFIRST SEEN\tWHERE")
	for _, b := range bodies {
		var where []string
		first := ""
		for i, o := range b.Occurrences {
			if i == 0 {
				first = o.Time.UTC().Format("2006-01-02T15:04:05Z")
			}
			where = append(where, fmt.Sprintf("%s UID %d (position %d)", o.Path, o.UID, o.Position))
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", b.Digest, b.Size, first, strings.Join(where, "; "))
	}
	tw.Flush()
	return "", &exitError{}
}

// writeAtomic writes r to path through a temporary file, synced and
// renamed; path must not exist.
func writeAtomic(path string, r io.Reader) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s exists; not overwriting", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func newArchiveVerifyCmd(g *globals, af *archiveFlags) *cobra.Command {
	var asJSON, rebuild, skipChain bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute every stored body's SHA-256 and check it against the log",
		Long: `Checks the log's hash chain, then reads every body the log names from the
store, decompressing it, and compares its SHA-256 and size with the log's.
A missing or altered file is reported by its path (exit status 1). Also
listed: bodies the log recorded as not fetched, bodies the log erased or
purged (its Erasure and Purge events: listed as such, not as failures),
and store files no record names. Encrypted bodies need the site key
(--key-file); a tampered encrypted file does not authenticate and is
reported as corrupt. --rebuild rebuilds the index from the whole log
first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, a, err := openArchiveWith(ctx, g, af, rebuild)
			if err != nil {
				return err
			}
			defer lg.Close()
			defer a.Close()
			out := cmd.OutOrStdout()
			chainOK := true
			if !skipChain {
				if err := lg.Verify(ctx); err != nil {
					var ce *bonnie.ChainError
					if !errors.As(err, &ce) {
						return fmt.Errorf("verify log: %w", err)
					}
					chainOK = false
					fmt.Fprintf(out, "BROKEN log at position %d: %s\n", ce.Position, ce.Reason)
				}
			}
			var bar *progressbar.ProgressBar
			progress := func(done, total int) {
				if bar == nil {
					bar = newBar(cmd.ErrOrStderr(), int64(total), "verifying bodies", false)
				}
				if bar != nil {
					bar.Set(done)
				}
			}
			rep, err := a.Verify(ctx, 0, progress)
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(cmd.ErrOrStderr())
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintf(out, "%s %s: %s\n", strings.ToUpper(p.Kind), p.Path, p.Detail)
				}
				for _, m := range rep.Missing {
					fmt.Fprintf(out, "not fetched: position %d %s UID %d: %s\n", m.Position, m.Path, m.UID, m.Error)
				}
				for _, gb := range rep.Gone {
					fmt.Fprintf(out, "%s: %s by %s at %s (log position %d)\n", gb.Kind, gb.Digest, gb.Actor, gb.Time.UTC().Format(time.RFC3339), gb.Position)
				}
				for _, u := range rep.Unreferenced {
					fmt.Fprintf(out, "unreferenced: %s (no log record names it)\n", u)
				}
				if rep.OK() {
					fmt.Fprintf(out, "ok: %d bodies (%d bytes) match the log", rep.Bodies, rep.Bytes)
					if len(rep.Gone) > 0 {
						fmt.Fprintf(out, "; %d erased or purged as the log records", len(rep.Gone))
					}
					fmt.Fprintln(out)
				} else {
					fmt.Fprintf(out, "FAILED: %d of %d bodies do not match the log\n", len(rep.Problems), rep.Bodies)
				}
			}
			if !rep.OK() || !chainOK {
				return &exitError{}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().BoolVar(&rebuild, "rebuild", false, "rebuild the index from the whole log first")
	cmd.Flags().BoolVar(&skipChain, "skip-chain", false, "do not verify the log's hash chain")
	return cmd
}

func newArchiveReindexCmd(g *globals, af *archiveFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "reindex",
		Short: "Drop the archive's index and rebuild it from the log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			lg, a, err := openArchiveWith(ctx, g, af, true)
			if err != nil {
				return err
			}
			defer lg.Close()
			defer a.Close()
			b, o, err := a.Count(ctx)
			if err != nil {
				return err
			}
			pos, _ := a.Position(ctx)
			fmt.Fprintf(cmd.OutOrStdout(), "reindexed up to position %d: %d bodies in %d places\n", pos, b, o)
			return nil
		},
	}
}

// newBar returns a progress bar on w when w is a terminal, nil otherwise.
func newBar(w io.Writer, max int64, what string, showBytes bool) *progressbar.ProgressBar {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	opts := []progressbar.Option{progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100e6)}
	if showBytes {
		opts = append(opts, progressbar.OptionShowBytes(true))
	}
	return progressbar.NewOptions64(max, opts...)
}
