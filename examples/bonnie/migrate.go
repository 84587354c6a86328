package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/postgres/fromsqlite"
)

const migrateHelp = `Copy the SQLite log of --data into PostgreSQL: every record (positions, ids,
keys, append times, events, changes, hashes), the dead letters and the sinks'
cursors. Then verify the chain on PostgreSQL and check that its head hash is
the source's (equal head hashes mean equal logs).

DSN is a PostgreSQL URL or key=value string; its search_path parameter picks
the schema (created if missing), e.g.
  postgres://bonnie@db.example/bonnie?sslmode=verify-full&search_path=site1

Each batch of records is one transaction: an interrupted copy (or a source
that has grown since) continues from PostgreSQL's head when run again. A
PostgreSQL log whose records are not the source's is refused and left alone.
The source may be in use by bonnied; stop it before the last run for an
exact copy, then point bonnied and bonnie (--postgres) at PostgreSQL.`

func newMigrateCmd(g *globals) *cobra.Command {
	var dsn string
	var batch int
	cmd := &cobra.Command{
		Use:   "migrate --to-postgres DSN",
		Short: "Copy the log of --data to PostgreSQL and verify the copy (resumable)",
		Long:  migrateHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dsn == "" {
				return errors.New("migrate: --to-postgres DSN is required")
			}
			ctx := cmd.Context()
			src := filepath.Join(g.data, logFile)
			if _, err := os.Stat(src); err != nil {
				return fmt.Errorf("migrate: no log at %s (is --data right?)", src)
			}
			dst, err := postgres.Open(ctx, dsn)
			if err != nil {
				return fmt.Errorf("migrate: %w", err)
			}
			defer dst.Close()
			prog := newProgress(cmd.ErrOrStderr())
			res, err := fromsqlite.Copy(ctx, src, dst, fromsqlite.Options{Batch: batch, Progress: prog.update})
			prog.finish()
			if err != nil {
				if errors.Is(err, fromsqlite.ErrDiffers) {
					return fmt.Errorf("migrate: refused: %w", err)
				}
				if ctx.Err() != nil {
					return fmt.Errorf("migrate: interrupted after record %d; run it again to continue: %w", res.End, err)
				}
				return fmt.Errorf("migrate: %w", err)
			}
			out := cmd.OutOrStdout()
			if res.End > res.Start {
				fmt.Fprintf(out, "copied records %d..%d to PostgreSQL (schema %s)\n", res.Start+1, res.End, dst.Schema())
			} else {
				fmt.Fprintf(out, "no records to copy: PostgreSQL (schema %s) has all %d\n", dst.Schema(), res.End)
			}
			fmt.Fprintf(out, "copied %d dead letters, %d cursors\n", res.DeadLetters, res.Cursors)
			fmt.Fprintf(out, "ok: %d records, chain intact on PostgreSQL (verified in %s); head hash %s equals the source's\n",
				res.Head.Position, res.Verified.Round(time.Millisecond), hex.EncodeToString(res.Head.Hash))
			return nil
		},
	}
	cmd.Flags().StringVar(&dsn, "to-postgres", "", "the PostgreSQL log to copy to (DSN)")
	cmd.Flags().IntVar(&batch, "batch", 1000, "records per transaction")
	return cmd
}

// progress reports the copy on standard error: a bar on a terminal, a line
// every few seconds otherwise.
type progress struct {
	w    io.Writer
	bar  *progressbar.ProgressBar
	last time.Time
	done int64
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, last: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("copying records"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("records"),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	return p
}

func (p *progress) update(done, total int64) {
	p.done = done
	if p.bar != nil {
		p.bar.ChangeMax64(total)
		_ = p.bar.Set64(done)
		return
	}
	if time.Since(p.last) >= 5*time.Second || done == total {
		p.last = time.Now()
		fmt.Fprintf(p.w, "copied %d of %d records\n", done, total)
	}
}

func (p *progress) finish() {
	if p.bar != nil && p.done > 0 {
		_ = p.bar.Finish()
	}
}
