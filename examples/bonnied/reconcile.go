package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"sync"
	"time"

	"github.com/bonnie-archive/bonnie"
	crawl "github.com/bonnie-archive/bonnie/source/imap"
)

// reconcileConfig holds the flags of the periodic reconcile.
type reconcileConfig struct {
	every     time.Duration
	mailboxes list
}

func (r *reconcileConfig) register(fs *flag.FlagSet) {
	fs.DurationVar(&r.every, "reconcile-every", 0, "compare the log with the server over --imap (as an admin) at start and then at this interval, recording what was missed as vnd.bonnie.Reconcile events (0: never)")
	fs.Var(&r.mailboxes, "reconcile-mailbox", "reconcile only these folders or LIST patterns (admin namespace; repeatable; default: every folder)")
}

func (r *reconcileConfig) check(s *sinkConfig) error {
	if r.every > 0 && (s.bodies.IMAP == "" || s.bodies.PasswordFile == "") {
		return errors.New("--reconcile-every needs --imap and --imap-password-file")
	}
	if r.every < 0 {
		return errors.New("--reconcile-every must not be negative")
	}
	return nil
}

// reconciler is bonnied's periodic reconcile.
type reconciler struct {
	cr    *crawl.Crawler
	every time.Duration
	lg    *slog.Logger
}

// newReconciler prepares the periodic reconcile (nil when
// --reconcile-every is 0): everything that can fail is done here, before
// the daemon's sockets exist.
func newReconciler(c *config, lg *slog.Logger) (*reconciler, error) {
	if c.reconcile.every <= 0 {
		return nil, nil
	}
	password, err := c.sinks.bodies.Password(nil)
	if err != nil {
		return nil, err
	}
	// New bodies are encrypted as the archive's are.
	bodies, _, err := openBodyStore(c.data, c.sinks.keyFile)
	if err != nil {
		return nil, err
	}
	lg = lg.With("task", "reconcile")
	tlsConfig, err := c.sinks.bodies.TLSConfig()
	if err != nil {
		return nil, err
	}
	cr, err := crawl.New(crawl.Options{Addr: c.sinks.bodies.IMAP, TLS: c.sinks.bodies.TLS, TLSConfig: tlsConfig, User: c.sinks.bodies.User,
		Password: password, Mailboxes: c.reconcile.mailboxes, Store: bodies,
		Service: "bonnied-reconcile", Logger: lg})
	if err != nil {
		return nil, err
	}
	return &reconciler{cr: cr, every: c.reconcile.every, lg: lg}, nil
}

// start runs the periodic reconcile in the background, once the engine
// has recorded its DaemonStart (whose downSince bounds what the first
// reconcile finds), and then every --reconcile-every. It records through
// eng.Record, beside live ingest. The returned func waits for it to stop
// after ctx ends. A nil reconciler does nothing.
func (rc *reconciler) start(ctx context.Context, store bonnie.Store, eng *bonnie.Engine) (wait func()) {
	if rc == nil {
		return func() {}
	}
	head, _ := store.Head(ctx)
	lg := rc.lg
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer rc.cr.Close()
		// The engine's first record is its DaemonStart.
		for {
			if h, err := store.Head(ctx); err == nil && h > head {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		rec := func(ctx context.Context, raw []byte) error {
			_, _, err := eng.Record(ctx, raw, "bonnied-reconcile")
			return err
		}
		t := time.NewTicker(rc.every)
		defer t.Stop()
		for {
			r, err := rc.cr.Reconcile(ctx, store, rec)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				lg.Error("reconcile failed; next try at the next interval", "err", err)
				rc.cr.Close() // dial afresh next time
			case r.Changed():
				lg.Warn("reconcile recorded what the log missed", "folders", r.Folders, "created", r.Created, "renamed", r.Renamed,
					"deleted", r.Deleted, "recreated", r.Recreated, "acls", r.ACLs, "appended", r.Appended, "flags", r.Flags,
					"expunged", r.Expunged, "skipped", len(r.Skipped), "took", r.Duration.Round(time.Millisecond))
			default:
				lg.Info("reconcile: the log agrees with the server", "folders", r.Folders, "unchanged", r.Unchanged,
					"skipped", len(r.Skipped), "took", r.Duration.Round(time.Millisecond))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return wg.Wait
}
