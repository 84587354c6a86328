// Command bonnie-relay runs on a Cyrus IMAP machine and forwards its event
// notifications to a central Bonnie ingest through RabbitMQ:
//
//	bonnie-relay --cyrus-dlist PATH | --cyrus-socket PATH --spool DIR --amqp amqp://USER:PASS@HOST:PORT/ \
//	    [--cyrus-spool PARTITION] [--imap HOST:PORT --imap-user U --imap-password-file F]
//
// Every notification is first written to a durable local spool (SQLite,
// synchronous=FULL, DIR/spool.db): a dlist notification is answered "OK"
// to Cyrus only after that, a datagram is taken off the socket's queue
// right before. A publisher then sends the spool in order to RabbitMQ with
// publisher confirms and deletes rows only once the broker confirmed them,
// so a broker outage only makes the spool grow, and after a crash (even
// kill -9) whatever was not confirmed is published again (the central
// log's idempotent append absorbs the duplicates).
//
// The spool is bounded (--spool-max-count, --spool-max-bytes; the bytes
// count the notifications and the bodies fetched for them, kept in
// SPOOL/blobs until published). When it is full a notification is not
// acknowledged: a datagram waits in the
// socket's queue and Cyrus blocks (back-pressure); a dlist request is
// retried --full-retries times and then answered NO. Each refusal is
// counted and logged as an error.
//
// With --cyrus-spool (Cyrus's partition directories, fetch.Spool) and/or
// --imap (BODY.PEEK[] as an admin, fetch.IMAP; the spool first, IMAP for
// what it lacks) the relay also fetches the body of every message a
// MessageAppend or MessageNew adds, since Cyrus never sends it. Fetching
// starts as soon as the notification is spooled (Cyrus's answer never
// waits for it; a broker outage does not delay it), and the notification
// is published only after its bodies: they go first to the exchange
// "<topic>.bodies" as chunks of at most --body-chunk-size (4 MiB) with
// publisher confirms, then the notification, naming them in its metadata
// (uid, sha256, size, or the fetch's error). What was fetched is recorded in the spool row and kept
// in DIR/blobs until the notification is confirmed, so a crash between the
// two publishes sends the same bodies again, harmlessly (content
// addressed). A fetch failing (IMAP down, message gone) is recorded on the
// notification after --body-timeout at most, never holding it. See
// source/amqp's package doc ("Bodies") for why chunks.
//
// Under systemd socket activation the sockets are inherited and outlive
// the relay (see source/cyrus). SIGINT and SIGTERM stop it: the sockets
// are read no more, what was read is spooled and answered, and the spool
// is published for up to --drain-timeout.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/source/amqp"
	"github.com/bonnie-archive/bonnie/source/cyrus"
	"github.com/bonnie-archive/bonnie/store/blob"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bonnie-relay:", err)
		os.Exit(1)
	}
}

// MetaRelay names the relay's host on every message it publishes.
const MetaRelay = "bonnie.relay"

type config struct {
	socket, dlist string
	spool         string
	amqpURL       string
	metrics       string // --metrics: Prometheus address
	topic         string
	groups        list
	queueType     string
	host          string
	cyrusUser     string
	allowUsers    list
	maxCount      int64
	maxBytes      int64
	fullRetries   int
	batch         int
	drainTimeout  time.Duration
	logJSON       bool
	logLevel      slog.Level
	bodies        bodyConfig // bodies.go
}

// list is a repeatable, comma-separated flag.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }
func (l *list) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func parse(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	host, _ := os.Hostname()
	fs := flag.NewFlagSet("bonnie-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.socket, "cyrus-socket", "", "listen for Cyrus notifications on this datagram socket (notifysocket: PATH)")
	fs.StringVar(&c.dlist, "cyrus-dlist", "", "listen on this stream socket, synchronous mode (notifysocket: dlist:PATH)")
	fs.StringVar(&c.spool, "spool", "", "spool directory (spool.db): notifications not yet confirmed by the broker")
	fs.StringVar(&c.amqpURL, "amqp", "", "RabbitMQ URL, amqp://USER:PASS@HOST:PORT/VHOST")
	fs.StringVar(&c.topic, "topic", amqp.DefaultTopic, "exchange (topic) to publish to")
	fs.Var(&c.groups, "group", "consumer group whose durable queue is declared before publishing (repeatable; default "+amqp.DefaultGroup+")")
	fs.StringVar(&c.queueType, "queue-type", "", `x-queue-type of the queues declared: "" (classic) or "quorum"`)
	fs.StringVar(&c.host, "host", host, "this relay's name, sent with every notification")
	fs.StringVar(&c.cyrusUser, "cyrus-user", "cyrus", "the user Cyrus runs as: owner of the sockets, and the only sender accepted")
	fs.Var(&c.allowUsers, "allow-user", "also accept notifications sent by this user (repeatable; for tests)")
	fs.Int64Var(&c.maxCount, "spool-max-count", 1_000_000, "most notifications the spool holds")
	fs.Int64Var(&c.maxBytes, "spool-max-bytes", 1<<30, "most bytes the spool holds: notifications and the bodies fetched for them (past it new notifications are refused; the bodies of those spooled are still fetched)")
	fs.IntVar(&c.fullRetries, "full-retries", 5, "dlist: how often a notification is retried while the spool is full before Cyrus is answered NO (datagrams wait without limit)")
	fs.IntVar(&c.batch, "batch", 100, "notifications per publish")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM, how long to keep publishing the spool")
	fs.StringVar(&c.metrics, "metrics", "127.0.0.1:9465", "serve Prometheus metrics on this address (empty: off)")
	fs.BoolVar(&c.logJSON, "log-json", false, "log JSON lines instead of text")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	c.bodies.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case c.socket == "" && c.dlist == "":
		return nil, errors.New("give --cyrus-socket PATH or --cyrus-dlist PATH (or both)")
	case c.spool == "":
		return nil, errors.New("give --spool DIR")
	case c.amqpURL == "":
		return nil, errors.New("give --amqp URL")
	case c.maxCount <= 0 || c.maxBytes <= 0:
		return nil, errors.New("--spool-max-count and --spool-max-bytes must be positive")
	case c.fullRetries < 1:
		return nil, errors.New("--full-retries must be at least 1")
	case c.batch <= 0:
		return nil, errors.New("--batch must be positive")
	}
	if err := c.bodies.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// relay holds the counters; they are logged when it stops.
type relay struct {
	cfg     *config
	lg      *slog.Logger
	sp      *spool
	spooled atomic.Int64 // notifications written to the spool
	full    atomic.Int64 // refusals (Nacks) because the spool was full
	failed  atomic.Int64 // spool write errors (Nacked too)
	lost    atomic.Int64 // notifications given up or rejected by the sockets
	sent    atomic.Int64 // notifications confirmed by the broker

	pubErrors atomic.Int64 // failed Publish calls

	// Body fetching (bodies.go); fetcher is nil without it.
	fetcher       bonnie.BodyFetcher
	store         *blob.Store
	breaker       breaker
	fetched       chan struct{} // signalled by fetchAhead after it recorded bodies
	bodiesFetched atomic.Int64  // bodies stored in DIR/blobs
	bodiesFailed  atomic.Int64  // bodies that could not be fetched (recorded on the notification)
	bodiesSent    atomic.Int64  // bodies confirmed by the broker
	bodyBytes     atomic.Int64  // their bytes
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.logLevel})
	if c.logJSON {
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: c.logLevel})
	}
	lg := slog.New(h)
	if err := os.MkdirAll(c.spool, 0o700); err != nil {
		return fmt.Errorf("spool directory: %w", err)
	}
	sp, err := openSpool(ctx, filepath.Join(c.spool, "spool.db"), c.maxCount, c.maxBytes)
	if err != nil {
		return err
	}
	defer sp.Close()
	r := &relay{cfg: c, lg: lg, sp: sp, fetched: make(chan struct{}, 1)}
	closeBodies, err := r.openBodies(lg)
	if err != nil {
		return err
	}
	defer closeBodies()
	if c.metrics != "" {
		srv, err := serveMetrics(c.metrics, r.registry(), lg)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	if n, b, bb := sp.size(); n > 0 {
		lg.Info("spool holds notifications not yet confirmed; publishing them first", "count", n, "bytes", b, "body_bytes", bb)
	}

	// The sockets. Their hooks see what they give up (a dlist request
	// refused after --full-retries, what Close could not hand over) or
	// reject (a wrong sender): counted and logged, with the bytes.
	hook := func(what string) cyrus.Hook {
		return func(ctx context.Context, raw []byte, reason string) {
			r.lost.Add(1)
			lg.Error("notification not relayed: "+what, "reason", reason, "bytes", len(raw),
				"lost_total", r.lost.Load(), "raw_base64", base64.StdEncoding.EncodeToString(raw[:min(len(raw), 8192)]))
		}
	}
	activated := cyrus.Activation()
	defer activated.Close()
	base := cyrus.Options{
		Logger:       lg,
		SocketUser:   c.cyrusUser,
		AllowedUsers: append([]string{c.cyrusUser}, c.allowUsers...),
		MaxInFlight:  512,
		OnGiveUp:     hook("given up"),
		OnReject:     hook("rejected sender"),
	}
	if activated.Len() > 0 {
		base.Activated = activated
		// What is read and not yet spooled dies with the process; what is
		// still in the inherited socket's queue does not.
		base.QueueSize = 64
	}
	var subs []message.Subscriber
	closeSubs := func() {
		for _, s := range subs {
			s.Close()
		}
	}
	if c.socket != "" {
		o := base
		o.Path, o.Source = c.socket, c.host+":cyrus-datagram:"+c.socket
		o.MaxRedeliveries = -1 // spool full: hold the datagram (back-pressure)
		s, err := cyrus.NewDatagramSubscriber(o)
		if err != nil {
			return fmt.Errorf("datagram socket: %w", err)
		}
		subs = append(subs, s)
	}
	if c.dlist != "" {
		o := base
		o.Path, o.Source = c.dlist, c.host+":cyrus-dlist:"+c.dlist
		o.MaxRedeliveries = c.fullRetries // then NO: Cyrus logs the refusal
		s, err := cyrus.NewDListSubscriber(o)
		if err != nil {
			closeSubs()
			return fmt.Errorf("dlist socket: %w", err)
		}
		subs = append(subs, s)
	}

	// Intake: every subscription into one channel, spooled in batches (one
	// fsync per batch), then acknowledged.
	in := make(chan *message.Message)
	var feeders sync.WaitGroup
	for _, s := range subs {
		ch, err := s.Subscribe(context.Background(), "")
		if err != nil {
			closeSubs()
			return err
		}
		feeders.Add(1)
		go func() {
			defer feeders.Done()
			for m := range ch {
				in <- m
			}
		}()
	}
	go func() { feeders.Wait(); close(in) }()
	intakeDone := make(chan struct{})
	go func() { defer close(intakeDone); r.intake(in) }()

	pubCtx, stopPub := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	draining := make(chan struct{})
	go func() { defer close(pubDone); r.publish(pubCtx, draining) }()
	fetchCtx, stopFetch := context.WithCancel(context.Background())
	fetchDone := make(chan struct{})
	if r.fetcher != nil {
		go func() { defer close(fetchDone); r.fetchAhead(fetchCtx) }()
	} else {
		close(fetchDone)
	}

	lg.Info("bonnie-relay started", "spool", c.spool, "amqp", amqp.RedactURL(c.amqpURL), "topic", c.topic,
		"datagram", c.socket, "dlist", c.dlist, "socket_activation", base.Activated != nil, "host", c.host)
	start := time.Now()
	<-ctx.Done()
	lg.Info("stopping: no more reading from the sockets; draining the spool", "timeout", c.drainTimeout)
	closeSubs() // hands over what was read; its answers go out as it is spooled
	<-intakeDone
	close(draining)
	t := time.AfterFunc(c.drainTimeout, stopPub)
	<-pubDone
	t.Stop()
	stopPub()
	stopFetch()
	<-fetchDone
	n, b, _ := sp.size()
	lg.Info("bonnie-relay stopped", "uptime", time.Since(start).Round(time.Millisecond),
		"spooled", r.spooled.Load(), "published", r.sent.Load(), "left_in_spool", n, "left_bytes", b,
		"refused_spool_full", r.full.Load(), "spool_errors", r.failed.Load(), "lost", r.lost.Load(),
		"bodies_fetched", r.bodiesFetched.Load(), "bodies_failed", r.bodiesFailed.Load(), "bodies_published", r.bodiesSent.Load())
	return nil
}

// intake spools what the sockets deliver, in batches, and acknowledges
// each notification once its batch is committed; those that did not fit
// are Nacked (the socket retries them later).
func (r *relay) intake(in <-chan *message.Message) {
	batch := make([]*message.Message, 0, 512)
	for m := range in {
		batch = append(batch[:0], m)
	more:
		for len(batch) < cap(batch) {
			select {
			case m, ok := <-in:
				if !ok {
					break more
				}
				batch = append(batch, m)
			default:
				break more
			}
		}
		for _, m := range batch {
			m.Metadata.Set(MetaRelay, r.cfg.host)
		}
		n, err := r.sp.put(context.Background(), batch)
		for _, m := range batch[:n] {
			m.Ack()
		}
		r.spooled.Add(int64(n))
		if n == len(batch) {
			continue
		}
		for _, m := range batch[n:] {
			m.Nack()
		}
		count, bytes, bodyBytes := r.sp.size()
		if errors.Is(err, errSpoolFull) {
			r.full.Add(int64(len(batch) - n))
			r.lg.Error("spool full: notifications refused, the socket retries them", "refused", len(batch)-n,
				"refused_total", r.full.Load(), "spool_count", count, "spool_bytes", bytes, "spool_body_bytes", bodyBytes,
				"max_count", r.cfg.maxCount, "max_bytes", r.cfg.maxBytes)
		} else {
			r.failed.Add(int64(len(batch) - n))
			r.lg.Error("spool write failed: notifications refused, the socket retries them", "refused", len(batch)-n,
				"errors_total", r.failed.Load(), "err", err)
		}
	}
}

// publish sends the spool to the broker in order and deletes what it
// confirmed, retrying with backoff while the broker is unreachable. Once
// draining is closed it returns when the spool is empty; it returns when
// ctx ends in any case.
func (r *relay) publish(ctx context.Context, draining <-chan struct{}) {
	cfg := amqp.Config{URL: r.cfg.amqpURL, QueueType: r.cfg.queueType, ChannelPoolSize: 1}
	if len(r.cfg.groups) > 0 {
		cfg.Groups = r.cfg.groups
	}
	var pub *amqp.Publisher
	defer func() {
		if pub != nil {
			pub.Close()
		}
	}()
	const minWait, maxWait = 100 * time.Millisecond, 5 * time.Second
	wait := time.Duration(0)
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	failed := func(what string, err error) bool {
		wait = min(max(2*wait, minWait), maxWait)
		n, _, _ := r.sp.size()
		r.lg.Warn(what+"; the spool keeps the notifications", "err", err, "spooled", n, "retry_in", wait)
		return sleep(wait)
	}
	for ctx.Err() == nil {
		if pub == nil {
			p, err := amqp.NewPublisher(cfg)
			if err != nil {
				if !failed("broker unreachable", err) {
					return
				}
				continue
			}
			pub = p
		}
		rows, err := r.sp.next(ctx, r.cfg.batch)
		if err != nil {
			if !failed("spool read failed", err) {
				return
			}
			continue
		}
		if len(rows) == 0 {
			select {
			case <-draining:
				return
			default:
			}
			select {
			case <-r.sp.added:
			case <-draining:
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
			continue
		}
		if r.fetcher != nil {
			if rows, err = r.withBodies(pub, rows); err != nil {
				r.pubErrors.Add(1)
				if !failed("publishing bodies failed", err) {
					return
				}
				continue
			}
			if len(rows) == 0 { // the oldest row's bodies are being fetched
				select {
				case <-r.fetched:
				case <-time.After(time.Second):
				case <-ctx.Done():
					return
				}
				continue
			}
		}
		msgs := make([]*message.Message, len(rows))
		for i, row := range rows {
			msgs[i] = message.NewMessage(row.uuid, row.raw)
			msgs[i].Metadata = row.meta
		}
		if err := pub.Publish(r.cfg.topic, msgs...); err != nil {
			r.pubErrors.Add(1)
			if !failed("publish failed", err) {
				return
			}
			continue
		}
		if err := r.sp.remove(context.Background(), rows); err != nil {
			// Published but still spooled: it goes again (a duplicate).
			if !failed("spool delete failed", err) {
				return
			}
			continue
		}
		r.sent.Add(int64(len(rows)))
		r.forgetBodies(rows)
		if wait > 0 {
			r.lg.Info("publishing again", "published", len(rows))
		}
		wait = 0
	}
}
