package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/control"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/internal/imapdial"
	"github.com/bonnie-archive/bonnie/sink/archive"
	crawl "github.com/bonnie-archive/bonnie/source/imap"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// crawlFlags are the IMAP flags of backfill and reconcile, spelt as
// bonnied's.
type crawlFlags struct {
	addr, user, passFile, tls string
	caFile                    string
	mailboxes                 []string
	chunk                     int
	keyFile                   string
}

func (f *crawlFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.addr, "imap", "", "the Cyrus IMAP server, HOST:PORT (required)")
	cmd.Flags().StringVar(&f.user, "imap-user", "cyrus", "a Cyrus admin: lists every folder, reads each authorized as its owner")
	cmd.Flags().StringVar(&f.passFile, "imap-password-file", "", "file holding the IMAP password (first line; required)")
	cmd.Flags().StringVar(&f.tls, "imap-tls", "", "none, starttls or tls (default: none on loopback, starttls otherwise)")
	cmd.Flags().StringVar(&f.caFile, "imap-ca-file", "", "PEM file of the CA certificates to trust for IMAP TLS instead of the system's")
	cmd.Flags().StringArrayVar(&f.mailboxes, "mailbox", nil, "a folder or LIST pattern in the admin namespace (user.alice, user.alice.*); repeatable; default: every folder")
	cmd.Flags().IntVar(&f.chunk, "chunk", 200, "messages per recorded event")
	cmd.Flags().StringVar(&f.keyFile, "key-file", "", "site key file of an encrypted body store (default $"+keyFileEnv+"): new bodies are encrypted as bonnied's")
}

// bodies opens the body store of the data directory (DATA/blobs), with
// the site key when the store is encrypted.
func (f *crawlFlags) bodies(g *globals) (*blob.Store, error) {
	key, err := (&archiveFlags{keyFile: f.keyFile}).siteKey()
	if err != nil {
		return nil, err
	}
	var opts []blob.Option
	if key != nil {
		opts = append(opts, blob.WithSiteKey(key))
	}
	blobDir, _ := archive.Paths(g.data)
	s, err := blob.Open(blobDir, opts...)
	if err != nil {
		return nil, fmt.Errorf("body store: %w", err)
	}
	return s, nil
}

// crawler dials nothing yet: it checks the flags and reads the password.
func (f *crawlFlags) crawler(store *blob.Store, service string) (*crawl.Crawler, error) {
	if f.addr == "" || f.passFile == "" {
		return nil, errors.New("--imap and --imap-password-file are required")
	}
	password, err := imapdial.ReadPassword("--imap-password-file", f.passFile)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := imapdial.CAConfig("--imap-ca-file", f.caFile, f.addr)
	if err != nil {
		return nil, err
	}
	return crawl.New(crawl.Options{Addr: f.addr, TLS: f.tls, TLSConfig: tlsConfig, User: f.user, Password: password,
		Mailboxes: f.mailboxes, Store: store, Chunk: f.chunk, Service: service, Logger: quietLogger()})
}

// crawlTarget is where a crawl reads the log's state and records its
// events: the log itself when no daemon ingests into it (this command
// then holds the ingest lock), or, when bonnied runs on the data
// directory, the log opened for reading and the daemon's control socket
// for recording.
type crawlTarget struct {
	log    crawl.Log
	record crawl.Recorder
	via    string
	close  func()
}

func openCrawlTarget(ctx context.Context, g *globals) (*crawlTarget, error) {
	direct := func(st bonnie.Store, closer func()) (*crawlTarget, error) {
		eng, err := bonnie.New(bonnie.Options{Store: st, Logger: quietLogger()})
		if err != nil {
			closer()
			return nil, err
		}
		return &crawlTarget{log: st, via: "the log", close: closer, record: func(ctx context.Context, raw []byte) error {
			_, _, err := eng.Record(ctx, raw, recordSource)
			return err
		}}, nil
	}
	if g.postgres != "" {
		lg, err := postgres.Open(ctx, g.postgres, postgres.OnlyExisting())
		if err != nil {
			return nil, fmt.Errorf("open log on PostgreSQL (--postgres): %w", err)
		}
		return direct(lg, func() { lg.Close() })
	}
	if err := ensureDir(g.data); err != nil {
		return nil, err
	}
	unlock, err := datadir.LockIngest(g.data, 0)
	if errors.Is(err, datadir.ErrBusy) {
		st, err := openLog(ctx, g)
		if err != nil {
			return nil, err
		}
		sock := control.Path(g.data)
		return &crawlTarget{log: st, via: "the running daemon (" + sock + ")", close: func() { st.Close() },
			record: func(ctx context.Context, raw []byte) error {
				ctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				_, _, err := control.Send(ctx, sock, raw)
				return err
			}}, nil
	}
	if err != nil {
		return nil, err
	}
	lg, err := sqlite.Open(ctx, datadir.LogPath(g.data))
	if err != nil {
		unlock()
		return nil, fmt.Errorf("open log: %w", err)
	}
	return direct(lg, func() { lg.Close(); unlock() })
}

func newBackfillCmd(g *globals) *cobra.Command {
	var f crawlFlags
	var noBodies bool
	cmd := &cobra.Command{
		Use:   "backfill --imap HOST:PORT --imap-password-file F [--mailbox NAME]...",
		Short: "Record the present state of a Cyrus server's folders (mail from before Bonnie listened)",
		Long: `backfill walks every folder of the server (or those --mailbox names) as an
admin and records what it finds as vnd.bonnie.Backfill events: each
folder's uniqueid, name, ACL and UIDVALIDITY, each message's UID, flags,
internal date, size, Message-ID and body (stored in DATA/blobs). It is
resumable: interrupted (Ctrl-C, kill -9) and run again, it continues after
the last chunk recorded and records nothing twice. With bonnied running on
the data directory, the events are handed to it over its control socket.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var store *blob.Store
			if !noBodies {
				s, err := f.bodies(g)
				if err != nil {
					return err
				}
				store = s
			}
			c, err := f.crawler(store, "")
			if err != nil {
				return err
			}
			defer c.Close()
			tgt, err := openCrawlTarget(ctx, g)
			if err != nil {
				return err
			}
			defer tgt.close()
			stderr := cmd.ErrOrStderr()
			show := progressPrinter(stderr)
			p, err := c.Backfill(ctx, tgt.log, tgt.record, show)
			show(p)
			finishProgress(stderr)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted after %d messages in %d events; run it again to resume: %w", p.Fetched, p.Events, ctx.Err())
				}
				return err
			}
			for name, why := range p.Skipped {
				fmt.Fprintf(cmd.OutOrStdout(), "skipped %s: %s\n", name, why)
			}
			el := time.Since(p.Started)
			fmt.Fprintf(cmd.OutOrStdout(), "backfilled %d folders: %d messages (%d bytes) read in %s (%.0f msg/s, %.1f MB/s), %d events recorded in %s\n",
				p.FoldersDone, p.Fetched, p.Bytes, el.Round(time.Millisecond), p.Rate(time.Now()),
				float64(p.Bytes)/1e6/max(el.Seconds(), 1e-9), p.Events, tgt.via)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&noBodies, "no-bodies", false, "record the messages without fetching their bodies")
	return cmd
}

// progressPrinter shows a crawl's progress on w when it is a terminal:
// folders and messages done, rate and time left.
func progressPrinter(w io.Writer) func(crawl.Progress) {
	bar := (*barState)(nil)
	return func(p crawl.Progress) {
		if bar == nil {
			b := newBar(w, max(p.Messages, 1), "backfill", false)
			if b == nil {
				bar = &barState{}
				return
			}
			bar = &barState{set: func(n int64, desc string) {
				b.Describe(desc)
				_ = b.Set64(n)
			}}
		}
		if bar.set == nil {
			return
		}
		now := time.Now()
		bar.set(p.MessagesDone, fmt.Sprintf("folders %d/%d, %.0f msg/s, %s left %s", p.FoldersDone, p.Folders,
			p.Rate(now), p.Remaining(now).Round(time.Second), p.Folder))
	}
}

type barState struct{ set func(n int64, desc string) }

// finishProgress ends the progress line on a terminal.
func finishProgress(w io.Writer) {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintln(w)
	}
}
