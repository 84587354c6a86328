// Command bonnie-load sends realistic Cyrus IMAP event notifications to a
// running bonnied at a chosen rate, the way Cyrus sends them, and reports
// what it saw.
//
//	bonnie-load --datagram PATH [--rate N] [--count N | --duration D] [--concurrency C] [--json]
//	bonnie-load --dlist PATH    [--rate N] [--count N | --duration D] [--concurrency C] [--json]
//
// The events are the real notifications of a Cyrus 3.6.1 IMAP/LMTP
// scenario (92 of them, 448 bytes to 15 KB) replayed in rounds, each one
// made unique (timestamp, session id, UIDs, modseq: see package loadgen),
// so that the log stores every one of them.
//
// --datagram PATH sends one datagram per event from an unbound socket with
// a blocking sendto(), as Cyrus does with `notifysocket: PATH`. The run is
// open-loop: event i is due at i/rate seconds. A send that finds the
// listener's kernel queue full (about 10 datagrams) waits as Cyrus would;
// the summary reports how often and how long ("blocked").
//
// --dlist PATH makes, per event, one connection, one NOTIFY request and
// waits for the one-line reply, as Cyrus does with `notifysocket:
// dlist:PATH`. --concurrency connections work at once (like as many imapd
// processes); the summary reports the reply latency (connect to reply:
// what each IMAP command waits) and every reply that is not OK.
//
// With --rate the summary says whether the schedule was kept and, when not,
// whether the listener was the limit (the workers were waiting for it) or
// this process was. The run stops by itself after --count events or
// --duration (whichever comes first; 10s when neither is given). Ctrl-C
// stops it early and prints the summary so far; a second Ctrl-C exits at
// once.
//
// bonnied accepts notifications only from Cyrus's user: run bonnie-load
// as that user, or start bonnied with --allow-user for the user you run it
// as (e.g. --allow-user root).
//
// --metrics URL (bonnied's --metrics address) measures bonnied's side: after
// the last send, bonnie-load waits until bonnied's appended counter has grown
// by the number of events sent and reports the rate from socket to durable
// log, and the dead letters made meanwhile. --sample-every N records when
// each N more events were appended and, with --rss-pid, bonnied's resident
// memory at that moment.
//
// Exit status: 0 when every event was sent (datagram) or answered OK
// (dlist), and with --metrics appended with no dead letter; 1 on setup
// errors or any failed or missing event; 2 on bad flags; 130 when
// interrupted.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bonnie-archive/bonnie/examples/bonnie-load/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// A second signal, once the first has cancelled ctx, exits at once.
		<-ctx.Done()
		stop()
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		<-ch
		fmt.Fprintln(os.Stderr, "bonnie-load: interrupted again: exiting without a summary")
		os.Exit(130)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	datagram    string
	dlist       string
	rate        float64
	duration    time.Duration
	count       int64
	concurrency int
	json        bool
	timeout     time.Duration
	templates   string
	progress    time.Duration
	record      string
	metrics     string
	sampleEvery int64
	rssPID      int
	grace       time.Duration
	// metricsEvery is how often --metrics is polled.
	metricsEvery time.Duration
}

func parse(args []string, stderr io.Writer) (*config, error) {
	c := &config{grace: 2 * time.Second, metricsEvery: 50 * time.Millisecond}
	fs := flag.NewFlagSet("bonnie-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: bonnie-load --datagram PATH | --dlist PATH [options]

Sends realistic Cyrus IMAP notifications to bonnied at a chosen rate, the
way Cyrus does, and prints a summary (rate achieved, reply latency for
dlist, sendto blocking for datagrams, errors).

Examples:
  bonnie-load --dlist /run/bonnie/dlist.sock --rate 500 --duration 60s --concurrency 8
  bonnie-load --datagram /run/bonnie/notify.sock --count 100000 --metrics http://127.0.0.1:9464/metrics

Options:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.datagram, "datagram", "", "send datagrams to this socket (bonnied --cyrus-socket PATH; Cyrus notifysocket: PATH)")
	fs.StringVar(&c.dlist, "dlist", "", "send dlist requests to this stream socket (bonnied --cyrus-dlist PATH; Cyrus notifysocket: dlist:PATH)")
	fs.Float64Var(&c.rate, "rate", 0, "events per second, all workers together (0: as fast as possible)")
	fs.DurationVar(&c.duration, "duration", 0, "stop after this long (default 10s when --count is not given)")
	fs.Int64Var(&c.count, "count", 0, "stop after this many events")
	fs.IntVar(&c.concurrency, "concurrency", 1, "parallel senders: for dlist, connections at once (like several imapd processes)")
	fs.BoolVar(&c.json, "json", false, "print the summary as JSON on stdout")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "give up on one send or reply after this long (Cyrus itself waits forever)")
	fs.StringVar(&c.templates, "templates", "", "directory of captured Cyrus datagrams (*.bin) to use instead of the built-in Cyrus 3.6.1 ones")
	fs.DurationVar(&c.progress, "progress", 10*time.Second, "print progress on stderr this often (0: never)")
	fs.StringVar(&c.record, "record", "", "write one CSV line per event to this file (start time, latency, error), to plot latency over time")
	fs.StringVar(&c.metrics, "metrics", "", "bonnied's metrics URL (http://127.0.0.1:9464/metrics): after sending, wait until bonnied has appended every event and report the rate from socket to durable log, and dead letters")
	fs.Int64Var(&c.sampleEvery, "sample-every", 0, "with --metrics: record a sample each time bonnied has appended this many more events")
	fs.IntVar(&c.rssPID, "rss-pid", 0, "with --sample-every: also sample the resident memory (VmRSS) of this process (bonnied's pid)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case (c.datagram == "") == (c.dlist == ""):
		return nil, errors.New("give exactly one of --datagram PATH or --dlist PATH")
	case c.rate < 0:
		return nil, fmt.Errorf("--rate must be 0 (as fast as possible) or more, not %g", c.rate)
	case c.count < 0:
		return nil, fmt.Errorf("--count must not be negative, not %d", c.count)
	case c.duration < 0:
		return nil, fmt.Errorf("--duration must not be negative, not %s", c.duration)
	case c.concurrency < 1:
		return nil, fmt.Errorf("--concurrency must be at least 1, not %d", c.concurrency)
	case c.timeout < 0:
		return nil, fmt.Errorf("--timeout must not be negative, not %s", c.timeout)
	case c.sampleEvery < 0 || (c.sampleEvery > 0 && c.metrics == ""):
		return nil, errors.New("--sample-every needs --metrics and a positive count")
	case c.rssPID != 0 && c.sampleEvery == 0:
		return nil, errors.New("--rss-pid needs --sample-every (and --metrics)")
	}
	if c.count == 0 && c.duration == 0 {
		c.duration = 10 * time.Second
	}
	return c, nil
}

// run is main without the process: tests call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bonnie-load:", err)
		return 2
	}
	opts := loadgen.Options{Framing: loadgen.Datagram}
	if c.dlist != "" {
		opts.Framing = loadgen.DList
	}
	if c.templates != "" {
		if opts.Templates, opts.Names, err = loadgen.ReadDir(c.templates); err != nil {
			fmt.Fprintln(stderr, "bonnie-load: --templates:", err)
			return 2
		}
	}
	gen, err := loadgen.New(opts)
	if err != nil {
		fmt.Fprintln(stderr, "bonnie-load: templates:", err)
		return 2
	}
	if n := len(gen.Skipped()); n > 0 && c.templates != "" {
		fmt.Fprintf(stderr, "bonnie-load: %d captures are not class EVENT datagrams and are not used: %v\n", n, gen.Skipped())
	}
	sum, err := runLoad(ctx, c, gen, stderr)
	if sum != nil {
		if c.json {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(sum); err != nil {
				fmt.Fprintln(stderr, "bonnie-load:", err)
				return 1
			}
		} else {
			sum.writeText(stdout)
		}
	}
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "bonnie-load:", err)
		return 1
	case sum.Interrupted:
		return 130
	case sum.Failed > 0:
		return 1
	case sum.Ingest != nil && (!sum.Ingest.Complete || sum.Ingest.DeadLetters > 0):
		return 1
	}
	return 0
}
