package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/bodysource"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/sink/backup"
	"github.com/bonnie-archive/bonnie/sink/discovery"
	"github.com/bonnie-archive/bonnie/sink/intercept"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// knownSinks are the sinks bonnied runs by default. Opt-in sinks run only
// when --sinks names them: live interception is enabled deliberately.
var (
	knownSinks = []string{archive.Name, backup.Name, discovery.Name}
	optInSinks = []string{intercept.Name}
)

// sinkConfig holds the flags of the sinks and of body fetching.
type sinkConfig struct {
	sinks list
	// bodies is where bodies are fetched from (--spool, --imap...); the
	// periodic reconcile connects with the same --imap flags.
	bodies       bodysource.Flags
	bodyTimeout  time.Duration
	bodyParallel int
	keyFile      string // site key: encrypt bodies at rest (store/blob.WithSiteKey)

	// interceptPassword is the file holding the password of the AMQP
	// destinations of interceptions (never in the log).
	interceptPassword string
	flags             *flag.FlagSet // all of bonnied's flags

	// relayedBodies is set when relays send bodies over --amqp.
	relayedBodies bool

	// log and record are the engine's log and its Record, for the sinks
	// that append their own events (interception deliveries); set by run.
	log    bonnie.Log
	record intercept.Recorder
}

func (s *sinkConfig) register(fs *flag.FlagSet) {
	fs.Var(&s.sinks, "sinks", "sinks to run, comma-separated (default: "+strings.Join(knownSinks, ",")+"; also: "+strings.Join(optInSinks, ",")+"; 'none' for none)")
	s.bodies.Register(fs, "spool")
	fs.DurationVar(&s.bodyTimeout, "body-timeout", bonnie.DefaultBodyTimeout, "longest wait for one event's bodies; past it the event is stored with the failure")
	fs.IntVar(&s.bodyParallel, "body-parallel", bonnie.DefaultBodyConcurrency, "body fetches at a time")
	s.flags = fs
	fs.StringVar(&s.interceptPassword, "intercept-amqp-password-file", "", "file holding the password of the interceptions' AMQP destinations (first line; the log never holds it)")
	fs.StringVar(&s.keyFile, "key-file", "", "site key file (bonnie archive keygen): encrypt every new body at rest under a data key of its own")
}

// names returns the selected sinks.
func (s *sinkConfig) names() ([]string, error) {
	if len(s.sinks) == 0 {
		return knownSinks, nil
	}
	var out []string
	for _, n := range s.sinks {
		switch {
		case n == "none":
		case slices.Contains(knownSinks, n), slices.Contains(optInSinks, n):
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		default:
			return nil, fmt.Errorf("--sinks: unknown sink %q (available: %s)", n, strings.Join(append(slices.Clone(knownSinks), optInSinks...), ","))
		}
	}
	return out, nil
}

func (s *sinkConfig) check() error {
	if _, err := s.names(); err != nil {
		return err
	}
	if err := s.bodies.Check(); err != nil {
		return err
	}
	if s.keyFile != "" {
		if _, err := blob.LoadKeyFile(s.keyFile); err != nil {
			return fmt.Errorf("--key-file: %w", err)
		}
	}
	return nil
}

// bodySinks is what the sinks need from the engine's options.
type bodySinks struct {
	sinks   []bonnie.Sink
	bodies  bonnie.BodyFetcher
	details map[string]any
	close   func()
}

// openSinks opens the body store (DATA/blobs), the body fetchers and the
// selected sinks.
func openSinks(ctx context.Context, s *sinkConfig, data string, lg *slog.Logger) (*bodySinks, error) {
	out := &bodySinks{details: map[string]any{}, close: func() {}}
	names, err := s.names()
	if err != nil {
		return nil, err
	}
	out.details["vnd.bonnie.sinks"] = strings.Join(names, ",")
	blobDir, projection := archive.Paths(data)
	store, key, err := openBodyStore(data, s.keyFile)
	if err != nil {
		return nil, err
	}
	if key != nil {
		out.details["vnd.bonnie.siteKey"] = key.ID()
	}
	var closers []func()
	out.close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	chain, sources, closeFetchers, err := s.bodies.Open(store, lg)
	if err != nil {
		return nil, err
	}
	closers = append(closers, closeFetchers)
	switch len(chain) {
	case 0:
		if slices.Contains(names, archive.Name) && !s.relayedBodies {
			lg.Warn("no body source (--imap, --spool or relays over --amqp): message bodies are not fetched, the archive indexes none")
		}
	case 1:
		out.bodies = chain[0]
	default:
		out.bodies = chain
	}
	out.details["vnd.bonnie.bodySources"] = strings.Join(sources, "; ")
	for _, n := range names {
		switch n {
		case archive.Name:
			a, err := archive.Open(ctx, projection, store)
			if err != nil {
				out.close()
				return nil, err
			}
			closers = append(closers, func() { a.Close() })
			out.sinks = append(out.sinks, a)
		case backup.Name: // checks that every message put in a folder has its body for a restore
			out.sinks = append(out.sinks, backup.NewSink(store, lg))
		case discovery.Name: // DATA/discovery.db; bonnie history/access/object/search read it
			d, err := discovery.Open(ctx, discovery.Path(data), store)
			if err != nil {
				out.close()
				return nil, err
			}
			closers = append(closers, func() { d.Close() })
			out.sinks = append(out.sinks, d)
		case intercept.Name:
			it, closeIt, err := openIntercept(ctx, s, data, store, lg)
			if err != nil {
				out.close()
				return nil, err
			}
			closers = append(closers, closeIt)
			out.sinks = append(out.sinks, it)
		}
	}
	lg.Info("sinks", "sinks", strings.Join(names, ","), "bodies", strings.Join(sources, "; "), "store", blobDir)
	return out, nil
}

// openIntercept opens the interception sink on the engine's log: it reads
// the interceptions from it and records its deliveries with the engine
// (s.log and s.record, set by run before the sinks are opened).
func openIntercept(ctx context.Context, s *sinkConfig, data string, blobs *blob.Store, lg *slog.Logger) (bonnie.Sink, func(), error) {
	if s.log == nil || s.record == nil {
		return nil, nil, fmt.Errorf("intercept: the sink needs the engine's log and recorder")
	}
	log := s.log
	sink, err := intercept.New(intercept.Options{
		Log: log, Blobs: blobs, Logger: lg.With("sink", intercept.Name),
		Record: s.record,
		AMQPPassword: func(u *url.URL) (string, error) {
			if s.interceptPassword == "" {
				return "", fmt.Errorf("%s has no password: give bonnied --intercept-amqp-password-file", u.Redacted())
			}
			b, err := os.ReadFile(s.interceptPassword)
			pw, _, _ := strings.Cut(string(b), "\n")
			return strings.TrimRight(pw, "\r"), err
		},
	})
	if err != nil {
		return nil, nil, err
	}
	return sink, func() { sink.Close() }, nil
}
