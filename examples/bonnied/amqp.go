package main

// The central ingest's side of the relays (examples/bonnie-relay):
// --amqp consumes their notifications from RabbitMQ, and the message
// bodies the relays fetched (the exchange "<topic>.bodies", stored into
// DATA/blobs by amqp.BodyReceiver, named on the event by fetch.Relayed);
// --postgres keeps the log on PostgreSQL instead of DIR/log.db.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/sink/archive"
	"github.com/bonnie-archive/bonnie/source/amqp"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// amqpConfig holds the --amqp* and --postgres flags.
type amqpConfig struct {
	urls      list
	group     string
	topic     string
	prefetch  int
	window    int
	queueType string
	postgres  string
	noBodies  bool

	// relayed waits for the bodies the relays publish; set by amqpSources
	// when it consumes them.
	relayed *fetch.Relayed
}

func (a *amqpConfig) register(fs *flag.FlagSet) {
	fs.Var(&a.urls, "amqp", "also consume relayed notifications from this RabbitMQ, amqp://USER:PASS@HOST:PORT/VHOST (repeatable: one source per broker)")
	fs.StringVar(&a.group, "amqp-group", amqp.DefaultGroup, "consumer group: the durable queue <topic>.<group> is consumed")
	fs.StringVar(&a.topic, "amqp-topic", amqp.DefaultTopic, "exchange (topic) the relays publish to")
	fs.IntVar(&a.prefetch, "amqp-prefetch", amqp.DefaultPrefetch, "with --amqp-window 1: messages RabbitMQ sends ahead of the acknowledgements")
	fs.IntVar(&a.window, "amqp-window", 256, "messages handed to the engine before the first is acknowledged, so that group commit gathers them; 1: one at a time (keeps the order even across redeliveries, about 5 times slower)")
	fs.StringVar(&a.queueType, "amqp-queue-type", "", `x-queue-type of the queue if this declares it: "" (classic) or "quorum"`)
	fs.BoolVar(&a.noBodies, "amqp-no-bodies", false, "do not consume the message bodies the relays publish (<topic>.bodies)")
	fs.StringVar(&a.postgres, "postgres", "", "keep the log on PostgreSQL at this DSN (search_path picks the schema) instead of DIR/log.db; the ingest lock stays in --data")
}

// logStore is what bonnied needs of a log: the engine's store, closable.
type logStore interface {
	bonnie.Store
	Close() error
}

// openLog opens the log: PostgreSQL when --postgres is given, else
// SQLite under --data.
func openLog(ctx context.Context, c *config, lg *slog.Logger) (logStore, error) {
	if c.amqp.postgres != "" {
		ps := postgres.SyncFull
		if c.sync == "normal" {
			ps = postgres.SyncNormal
		}
		l, err := postgres.Open(ctx, c.amqp.postgres, postgres.WithSync(ps))
		if err != nil {
			return nil, fmt.Errorf("open log: %w", err)
		}
		lg.Info("log on PostgreSQL")
		return l, nil
	}
	syncMode := sqlite.SyncFull
	if c.sync == "normal" {
		syncMode = sqlite.SyncNormal
	}
	l, err := sqlite.Open(ctx, datadir.LogPath(c.data), sqlite.WithSync(syncMode))
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return l, nil
}

// amqpSources connects one subscriber per --amqp URL and declares the
// group's queue. The engine acknowledges a message to RabbitMQ only once
// its event (or dead letter) is durable in the log; a redelivered
// duplicate is absorbed by the log's idempotent append.
//
// Unless --amqp-no-bodies, it also consumes each broker's bodies queue
// ("<topic>.bodies.<group>") into DATA/blobs, and hands the body refs
// each relayed notification carries to c.amqp.relayed, which
// bodyFetcher puts first in the engine's body fetchers. The bodies
// consumer stops when the source's subscriber is closed.
func amqpSources(c *config) ([]bonnie.Source, error) {
	var out []bonnie.Source
	closeAll := func() {
		for _, s := range out {
			s.Subscriber.Close()
		}
	}
	var store *blob.Store
	if len(c.amqp.urls) > 0 && !c.amqp.noBodies {
		var err error
		if store, _, err = openBodyStore(c.data, c.sinks.keyFile); err != nil {
			return nil, err
		}
		c.amqp.relayed = fetch.NewRelayed(store)
	}
	for _, u := range c.amqp.urls {
		cfg := amqp.Config{URL: u, Group: c.amqp.group, Prefetch: c.amqp.prefetch, Window: c.amqp.window, QueueType: c.amqp.queueType}
		src, err := amqp.NewSource("amqp:"+amqp.RedactURL(u), c.amqp.topic, cfg)
		if err != nil {
			closeAll()
			return nil, err
		}
		if store != nil {
			bcfg := amqp.Config{URL: u, Group: c.amqp.group, Window: 8, QueueType: c.amqp.queueType}
			stop, err := consumeBodies(c, bcfg, store)
			if err != nil {
				src.Subscriber.Close()
				closeAll()
				return nil, err
			}
			src.Subscriber = &withBodies{Subscriber: amqp.ExpectBodies(src.Subscriber, c.amqp.relayed), stop: stop}
		}
		out = append(out, src)
	}
	return out, nil
}

// bodyFetcher returns the engine's body fetcher: the relayed bodies first
// (when consumed), then local (the --spool and --imap fetchers, for the
// notifications of the local sockets and what a relay could not fetch).
func (a *amqpConfig) bodyFetcher(local bonnie.BodyFetcher) bonnie.BodyFetcher {
	switch {
	case a.relayed == nil:
		return local
	case local == nil:
		return a.relayed
	default:
		return fetch.Chain{a.relayed, local}
	}
}

// openBodyStore opens DATA/blobs, the one body store of the daemon (the
// sinks, the relayed bodies, the reconcile and the API use it): with
// --key-file, new bodies are encrypted under the site key, returned too
// (nil without one).
func openBodyStore(data, keyFile string) (*blob.Store, *blob.SiteKey, error) {
	var opts []blob.Option
	var key *blob.SiteKey
	if keyFile != "" {
		var err error
		if key, err = blob.LoadKeyFile(keyFile); err != nil {
			return nil, nil, fmt.Errorf("--key-file: %w", err)
		}
		opts = append(opts, blob.WithSiteKey(key))
	}
	blobDir, _ := archive.Paths(data)
	store, err := blob.Open(blobDir, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("body store: %w", err)
	}
	return store, key, nil
}

// consumeBodies consumes one broker's bodies queue into store until stop.
func consumeBodies(c *config, cfg amqp.Config, store *blob.Store) (stop func(), err error) {
	topic := amqp.BodiesTopic(c.amqp.topic)
	sub, err := amqp.NewSubscriber(cfg)
	if err != nil {
		return nil, err
	}
	if err := sub.SubscribeInitialize(topic); err != nil {
		sub.Close()
		return nil, err
	}
	ch, err := sub.Subscribe(context.Background(), topic)
	if err != nil {
		sub.Close()
		return nil, err
	}
	recv := &amqp.BodyReceiver{
		Store: store, Dir: filepath.Join(c.data, "relay-bodies"),
		Logger: slog.Default().With("bodies", amqp.RedactURL(cfg.URL)), OnStored: c.amqp.relayed.Stored,
	}
	if n, err := recv.RemoveStale(7 * 24 * time.Hour); err != nil || n > 0 {
		recv.Logger.Warn("removed relayed bodies left half received for a week", "count", n, "dir", recv.Dir, "err", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); recv.Run(ch) }()
	return func() { sub.Close(); <-done }, nil
}

// withBodies is a relayed source whose Close also stops its bodies
// consumer.
type withBodies struct {
	message.Subscriber
	stop func()
	once sync.Once
}

func (w *withBodies) Close() error {
	err := w.Subscriber.Close()
	w.once.Do(w.stop)
	return err
}
