// Command bonnied is the all-in-one Bonnie daemon: it listens for Cyrus
// IMAP notifications, appends them to the log under --data (SQLite, no
// other server needed) and runs the sinks.
//
//	bonnied --data DIR --cyrus-socket PATH     # notifysocket: PATH (datagram)
//	bonnied --data DIR --cyrus-dlist PATH      # notifysocket: dlist:PATH (synchronous)
//	  [--sinks archive] [--imap HOST:PORT --imap-user ADMIN --imap-password-file F] [--spool PARTITION]
//	  [--reconcile-every 1h [--reconcile-mailbox PATTERN]...]   # compare the log with the server over --imap
//
// Both may be given. Under systemd socket activation (see the units in this
// folder) the sockets are inherited and outlive the daemon, so that Cyrus
// waits instead of losing events while it restarts. SIGINT and SIGTERM stop
// it cleanly: sources drain, every notification read is answered, sinks stop
// at a record boundary.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/coverage"
	"github.com/bonnie-archive/bonnie/identity"
	"github.com/bonnie-archive/bonnie/internal/control"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/source/cyrus"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bonnied:", err)
		os.Exit(1)
	}
}

type config struct {
	data        string
	socket      string
	dlist       string
	cyrusUser   string
	allowUsers  list
	metrics     string
	pprof       bool
	logJSON     bool
	logLevel    slog.Level
	sync        string
	maxInFlight int
	readAhead   int

	// identity resolution (see openResolver)
	identity       identity.Config
	identityConfig string
	resolveTimeout time.Duration
	resolveEvery   time.Duration

	sinks sinkConfig // the sinks and body fetching (sinks.go)
	amqp  amqpConfig // relayed notifications and PostgreSQL (amqp.go)

	reconcile reconcileConfig // the periodic reconcile (reconcile.go)
	http      httpConfig      // the discovery API (httpapi.go)
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
	fs := flag.NewFlagSet("bonnied", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.data, "data", "./bonnie-data", "data directory (log.db and, later, the sinks' stores)")
	fs.StringVar(&c.socket, "cyrus-socket", "", "listen for Cyrus notifications on this datagram socket (notifysocket: PATH)")
	fs.StringVar(&c.dlist, "cyrus-dlist", "", "listen on this stream socket, synchronous mode (notifysocket: dlist:PATH)")
	fs.StringVar(&c.cyrusUser, "cyrus-user", "cyrus", "the user Cyrus runs as: owner of the sockets, and the only sender accepted")
	fs.Var(&c.allowUsers, "allow-user", "also accept notifications sent by this user (repeatable; for load tests)")
	fs.StringVar(&c.metrics, "metrics", "127.0.0.1:9464", "serve Prometheus metrics on this address (empty: off)")
	fs.BoolVar(&c.pprof, "pprof", false, "also serve Go's profiler under /debug/pprof/ on the --metrics address (loopback by default: it shows the daemon's internals)")
	fs.BoolVar(&c.logJSON, "log-json", false, "log JSON lines instead of text")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	fs.StringVar(&c.sync, "sync", "full", "SQLite durability: full (an OK survives a machine crash) or normal (survives a process crash)")
	fs.IntVar(&c.maxInFlight, "max-in-flight", 512, "notifications handed to ingest and not yet durable, per socket (the engine commits up to 512 at once)")
	fs.IntVar(&c.readAhead, "read-ahead", 0, "datagrams read from the socket ahead of ingest (0: 4096, or 64 when the socket is inherited, so that a crash leaves the rest in the kernel queue it survives in)")
	c.identity.RegisterFlags(fs)
	fs.StringVar(&c.identityConfig, "identity-config", "", "read the identity resolver settings (the --ldap-* and --identity-file keys, and LDAP filters, attributes, timeouts under ldap:) from this YAML or JSON file; flags win")
	fs.DurationVar(&c.resolveTimeout, "resolve-timeout", 2*time.Second, "longest wait for the directory per batch of events; past it they are stored with identities unresolved")
	fs.DurationVar(&c.resolveEvery, "resolve-every", time.Minute, "how often to look for unresolved identities and resolve them after the fact (0: never)")
	c.sinks.register(fs)
	c.http.register(fs)
	c.amqp.register(fs)
	c.reconcile.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.socket == "" && c.dlist == "" && len(c.amqp.urls) == 0 {
		return nil, errors.New("give --cyrus-socket PATH, --cyrus-dlist PATH or --amqp URL (or several)")
	}
	if c.sync != "full" && c.sync != "normal" {
		return nil, fmt.Errorf("--sync must be full or normal, not %q", c.sync)
	}
	if c.pprof && c.metrics == "" {
		return nil, errors.New("--pprof serves the profiler on the --metrics address: give one")
	}
	if err := c.sinks.check(); err != nil {
		return nil, err
	}
	if err := c.reconcile.check(&c.sinks); err != nil {
		return nil, err
	}
	if err := c.http.check(); err != nil {
		return nil, err
	}
	return c, nil
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

	// The identity settings are checked first: a bad flag must leave
	// nothing behind, not even an empty log.
	resolver, closeResolver, err := openResolver(ctx, c, lg)
	if err != nil {
		return err
	}
	defer closeResolver()
	if err := os.MkdirAll(c.data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	unlock, err := datadir.LockIngest(c.data, 0)
	if err != nil {
		return err
	}
	defer unlock()
	store, err := openLog(ctx, c, lg)
	if err != nil {
		return err
	}
	defer store.Close()
	// Sinks that record events of their own (interception deliveries) do
	// it with the engine, which exists only once the sinks do.
	var recorder atomic.Pointer[bonnie.Engine]
	c.sinks.log = store
	c.sinks.relayedBodies = len(c.amqp.urls) > 0 && !c.amqp.noBodies
	c.sinks.record = func(ctx context.Context, raw []byte, source string) (bonnie.Position, bool, error) {
		e := recorder.Load()
		if e == nil {
			return 0, false, errors.New("the engine is not running yet")
		}
		return e.Record(ctx, raw, source)
	}
	sk, err := openSinks(ctx, &c.sinks, c.data, lg)
	if err != nil {
		return err
	}
	defer sk.close()
	rc, err := newReconciler(c, lg) // the periodic reconcile (reconcile.go)
	if err != nil {
		return err
	}

	metrics := bonnie.NewMetrics()
	// The hooks can fire as soon as a socket exists, before the engine
	// does: until then they write the dead letter straight to the store.
	// Their dead letters name the socket, like those of undecodable input.
	var engine atomic.Pointer[bonnie.Engine]
	hook := func(source, prefix string) cyrus.Hook {
		return func(ctx context.Context, raw []byte, reason string) {
			if e := engine.Load(); e != nil {
				// Errors are logged by DeadLetter; nothing more can be done.
				_ = e.DeadLetter(ctx, raw, source, prefix+reason)
				return
			}
			d := bonnie.DeadLetter{Received: time.Now().UTC(), Source: source, Reason: prefix + reason, Raw: raw}
			if _, err := store.PutDeadLetter(ctx, d); err != nil {
				lg.Error("dead letter could not be stored", "reason", d.Reason, "err", err)
			}
		}
	}
	activated := cyrus.Activation()
	defer activated.Close()
	base := cyrus.Options{
		Activated:    nil,
		Logger:       lg,
		SocketUser:   c.cyrusUser,
		AllowedUsers: append([]string{c.cyrusUser}, c.allowUsers...),
		MaxInFlight:  c.maxInFlight,
	}
	if activated.Len() > 0 {
		base.Activated = activated
	}
	// What is read from a datagram socket and not yet committed dies with
	// the process; what is still in the kernel queue of an inherited
	// socket does not. So with socket activation read ahead little.
	base.QueueSize = c.readAhead
	if base.QueueSize == 0 && base.Activated != nil {
		base.QueueSize = 64
	}
	// Everything that can fail is set up before the sockets exist: once
	// Cyrus can write to them, what is read must reach the log or the
	// dead letters.
	if c.metrics != "" {
		srv, err := serveMetrics(c.metrics, metrics, c.pprof, lg)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	var sources []bonnie.Source
	closeSources := func() {
		for _, s := range sources {
			s.Subscriber.Close() // gives up what it read: dead letters
		}
	}
	if c.socket != "" {
		o := base
		o.Path, o.Source = c.socket, "cyrus-datagram:"+c.socket
		o.OnGiveUp, o.OnReject = hook(o.Source, "given up: "), hook(o.Source, bonnie.ReasonRejected)
		sub, err := cyrus.NewDatagramSubscriber(o)
		if err != nil {
			return fmt.Errorf("datagram socket: %w", err)
		}
		sources = append(sources, bonnie.Source{Name: o.Source, Subscriber: sub})
	}
	if c.dlist != "" {
		o := base
		o.Path, o.Source = c.dlist, "cyrus-dlist:"+c.dlist
		o.OnGiveUp, o.OnReject = hook(o.Source, "given up: "), hook(o.Source, bonnie.ReasonRejected)
		sub, err := cyrus.NewDListSubscriber(o)
		if err != nil {
			closeSources()
			return fmt.Errorf("dlist socket: %w", err)
		}
		sources = append(sources, bonnie.Source{Name: o.Source, Subscriber: sub})
	}

	relayed, err := amqpSources(c)
	if err != nil {
		closeSources()
		return err
	}
	sources = append(sources, relayed...)

	eng, err := bonnie.New(bonnie.Options{
		Store: store, Sources: sources, Logger: lg, Metrics: metrics,
		Resolver: resolver, ResolveTimeout: c.resolveTimeout, ResolveEvery: c.resolveEvery,
		Sinks: sk.sinks, Bodies: c.amqp.bodyFetcher(sk.bodies), BodyTimeout: c.sinks.bodyTimeout, BodyConcurrency: c.sinks.bodyParallel,
		Lifecycle: "bonnied",
		Details: map[string]any{
			"vnd.bonnie.socketActivated": base.Activated != nil,
			// Nothing is lost while this daemon is down when its Cyrus
			// sockets are held by systemd (every configured one is, or
			// the start fails) or it has none: coverage then counts the
			// downtime as no gap.
			coverage.HeldWhileDown:      base.Activated != nil || (c.socket == "" && c.dlist == ""),
			"vnd.bonnie.datagramSocket": c.socket,
			"vnd.bonnie.dlistSocket":    c.dlist,
			"vnd.bonnie.amqpSources":    len(relayed),
			"vnd.bonnie.sinks":          sk.details["vnd.bonnie.sinks"],
			"vnd.bonnie.bodySources":    bodySources(sk.details["vnd.bonnie.bodySources"], c),
		},
	})
	if err != nil {
		closeSources()
		return err
	}
	engine.Store(eng)
	recorder.Store(eng)
	api, err := serveAPI(ctx, c, eng, store, lg) // --http (httpapi.go)
	if err != nil {
		closeSources()
		return err
	}
	defer api.Close()
	// The bonnie command hands its own events (holds, erasures,
	// interceptions...) to the running daemon through this socket.
	ctl, err := control.Listen(control.Path(c.data), func(ctx context.Context, raw []byte) (uint64, bool, error) {
		pos, dup, err := eng.Record(ctx, raw, "control")
		return uint64(pos), dup, err
	}, lg)
	if err != nil {
		closeSources()
		return err
	}
	defer ctl.Close()
	lg.Info("bonnied started", "data", c.data, "datagram", c.socket, "dlist", c.dlist,
		"socket_activation", base.Activated != nil, "sync", c.sync)
	defer rc.start(ctx, store, eng)()
	start := time.Now()
	err = eng.Run(ctx)
	lg.Info("bonnied stopped", "uptime", time.Since(start).Round(time.Millisecond), "err", err)
	return err
}

func serveMetrics(addr string, m *bonnie.Metrics, profile bool, lg *slog.Logger) (*http.Server, error) {
	srv, _, err := serveMetricsAddr(addr, m, profile, lg)
	return srv, err
}

// serveMetricsAddr is serveMetrics that also returns the address bound.
func serveMetricsAddr(addr string, m *bonnie.Metrics, profile bool, lg *slog.Logger) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}))
	if profile {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			lg.Error("metrics server", "err", err)
		}
	}()
	lg.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return srv, ln.Addr().String(), nil
}

// openResolver builds the identity resolver from the flags and the
// config file (nil: none configured, users are keyed by login). A
// directory that does not answer at start is only a warning: events are
// stored with identities unresolved and resolved later.
func openResolver(ctx context.Context, c *config, lg *slog.Logger) (bonnie.Resolver, func() error, error) {
	if c.identityConfig != "" {
		fc, err := identity.LoadConfig(c.identityConfig)
		if err != nil {
			return nil, nil, err
		}
		c.identity.Merge(fc)
	}
	r, closeR, err := c.identity.Open()
	if err != nil || r == nil {
		return r, closeR, err
	}
	switch r := r.(type) {
	case *identity.LDAP:
		o := c.identity.LDAPOptions()
		lg.Info("identities resolved against LDAP", "url", o.URL, "base", o.BaseDN,
			"id_attr", cmp.Or(o.IDAttr, identity.DefaultLDAPOptions().IDAttr))
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := r.Ping(pctx); err != nil {
			lg.Warn("the directory does not answer yet; identities stay unresolved until it does", "err", err)
		}
	default:
		lg.Info("identities resolved from a file", "file", c.identity.IdentityFile)
	}
	return r, closeR, nil
}

// bodySources names where bodies come from, for the DaemonStart record:
// the local fetchers and, with --amqp, the relays.
func bodySources(local any, c *config) string {
	s, _ := local.(string)
	if len(c.amqp.urls) > 0 && !c.amqp.noBodies {
		if s != "" {
			s += "; "
		}
		s += "relays (--amqp)"
	}
	return s
}
