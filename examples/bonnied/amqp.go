package main

// The central ingest's side of the relays (examples/bonnie-relay):
// --amqp consumes their notifications from RabbitMQ, --postgres keeps the
// log on PostgreSQL instead of DIR/log.db.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/source/amqp"
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
}

func (a *amqpConfig) register(fs *flag.FlagSet) {
	fs.Var(&a.urls, "amqp", "also consume relayed notifications from this RabbitMQ, amqp://USER:PASS@HOST:PORT/VHOST (repeatable: one source per broker)")
	fs.StringVar(&a.group, "amqp-group", amqp.DefaultGroup, "consumer group: the durable queue <topic>.<group> is consumed")
	fs.StringVar(&a.topic, "amqp-topic", amqp.DefaultTopic, "exchange (topic) the relays publish to")
	fs.IntVar(&a.prefetch, "amqp-prefetch", amqp.DefaultPrefetch, "with --amqp-window 1: messages RabbitMQ sends ahead of the acknowledgements")
	fs.IntVar(&a.window, "amqp-window", 256, "messages handed to the engine before the first is acknowledged, so that group commit gathers them; 1: one at a time (keeps the order even across redeliveries, about 5 times slower)")
	fs.StringVar(&a.queueType, "amqp-queue-type", "", `x-queue-type of the queue if this declares it: "" (classic) or "quorum"`)
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
func amqpSources(c *config) ([]bonnie.Source, error) {
	var out []bonnie.Source
	for _, u := range c.amqp.urls {
		cfg := amqp.Config{URL: u, Group: c.amqp.group, Prefetch: c.amqp.prefetch, Window: c.amqp.window, QueueType: c.amqp.queueType}
		src, err := amqp.NewSource("amqp:"+amqp.RedactURL(u), c.amqp.topic, cfg)
		if err != nil {
			for _, s := range out {
				s.Subscriber.Close()
			}
			return nil, err
		}
		out = append(out, src)
	}
	return out, nil
}
