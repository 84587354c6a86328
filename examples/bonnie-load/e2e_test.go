package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/source/cyrus"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// daemon is bonnied's engine run in-process, as bonnied wires it: the log,
// a datagram and a dlist source, dead letters for what sources give up or
// reject. It accepts notifications from this test's own uid.
type daemon struct {
	store          *sqlite.Log
	datagram, dlst string
	dead           chan string
	metrics        string // URL of the engine's Prometheus metrics
}

func startDaemon(t *testing.T) *daemon {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := sqlite.Open(ctx, filepath.Join(dir, "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{store: store, datagram: filepath.Join(dir, "dg.sock"), dlst: filepath.Join(dir, "dl.sock"), dead: make(chan string, 100)}
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	hook := func(ctx context.Context, raw []byte, reason string) { d.dead <- reason }
	base := cyrus.Options{Logger: lg, SocketUser: me.Username, AllowedUIDs: []int{os.Getuid()},
		MaxInFlight: 1024, OnGiveUp: hook, OnReject: hook}
	o := base
	o.Path, o.Source = d.datagram, "cyrus-datagram"
	dg, err := cyrus.NewDatagramSubscriber(o)
	if err != nil {
		t.Fatal(err)
	}
	o = base
	o.Path, o.Source = d.dlst, "cyrus-dlist"
	dl, err := cyrus.NewDListSubscriber(o)
	if err != nil {
		t.Fatal(err)
	}
	m := bonnie.NewMetrics()
	eng, err := bonnie.New(bonnie.Options{Store: store, Logger: lg, Metrics: m, Sources: []bonnie.Source{
		{Name: "cyrus-datagram", Subscriber: dg}, {Name: "cyrus-dlist", Subscriber: dl}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	d.metrics = srv.URL + "/metrics"
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
		store.Close()
	})
	return d
}

// waitHead waits until the log holds n records.
func (d *daemon) waitHead(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		head, err := d.store.Head(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if int(head) == n {
			return
		}
		if int(head) > n || time.Now().After(deadline) {
			t.Fatalf("log holds %d records, want %d", head, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check verifies the log: n records, all of them generated events of the
// expected framing, chain intact, no dead letter.
func (d *daemon) check(t *testing.T, n int, framing bonnie.Framing) {
	t.Helper()
	d.waitHead(t, n)
	ctx := context.Background()
	if err := d.store.Verify(ctx); err != nil {
		t.Fatal(err)
	}
	letters, err := d.store.DeadLetters(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-d.dead:
		t.Fatalf("a notification was given up or rejected: %s", r)
	default:
	}
	if len(letters) > 0 {
		t.Fatalf("%d dead letters, first: %s", len(letters), letters[0].Reason)
	}
	recs, err := d.store.Read(ctx, 0, n+1)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, r := range recs {
		if r.Event.Framing != framing {
			t.Fatalf("record %d: framing %s", r.Position, r.Event.Framing)
		}
		types[r.Event.Name]++
	}
	if types["MessageAppend"] == 0 || types["MailboxModseq"] == 0 || types["Login"] == 0 {
		t.Errorf("event types in the log: %v", types)
	}
}

func runJSON(t *testing.T, ctx context.Context, args ...string) (*summary, int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, append(args, "--json", "--progress", "0"), &out, &errb)
	var s summary
	if out.Len() > 0 {
		if err := json.Unmarshal(out.Bytes(), &s); err != nil {
			t.Fatalf("summary: %v\n%s", err, out.String())
		}
	}
	return &s, code, errb.String()
}

func TestEndToEndDList(t *testing.T) {
	d := startDaemon(t)
	const n = 300
	s, code, stderr := runJSON(t, context.Background(), "--dlist", d.dlst, "--count", "300", "--concurrency", "4")
	if code != 0 || s.OK != n || s.Failed != 0 || s.Mode != "dlist" {
		t.Fatalf("exit %d, summary %+v, stderr %s", code, s, stderr)
	}
	if s.Latency.N != n || s.Latency.P50 <= 0 || s.Latency.Max < s.Latency.P99 || s.SizeMax < 15000 {
		t.Errorf("latency %+v, sizes %d..%d", s.Latency, s.SizeMin, s.SizeMax)
	}
	// dlist replies OK only once the event is durable: the log already
	// holds every one.
	head, err := d.store.Head(context.Background())
	if err != nil || head != n {
		t.Fatalf("head %d after the last OK, want %d (%v)", head, n, err)
	}
	d.check(t, n, bonnie.FramingDList)
}

func TestEndToEndDatagramAtRate(t *testing.T) {
	d := startDaemon(t)
	const n = 200
	start := time.Now()
	s, code, stderr := runJSON(t, context.Background(), "--datagram", d.datagram, "--count", "200", "--rate", "1000")
	if code != 0 || s.OK != n || s.Mode != "datagram" || s.Blocked == nil {
		t.Fatalf("exit %d, summary %+v, stderr %s", code, s, stderr)
	}
	// 200 events at 1000/s take at least 199 ms.
	if el := time.Since(start); el < 199*time.Millisecond || s.ElapsedS < 0.19 {
		t.Errorf("200 events at 1000/s took %s (summary %.3fs)", el, s.ElapsedS)
	}
	if s.Schedule == nil || s.Schedule.P99Late < 0 {
		t.Errorf("no schedule report: %+v", s.Schedule)
	}
	d.check(t, n, bonnie.FramingDatagram)
}

func TestEndToEndDatagramFlat(t *testing.T) {
	d := startDaemon(t)
	const n = 2000
	s, code, stderr := runJSON(t, context.Background(), "--datagram", d.datagram, "--count", "2000", "--concurrency", "2")
	if code != 0 || s.OK != n {
		t.Fatalf("exit %d, summary %+v, stderr %s", code, s, stderr)
	}
	d.check(t, n, bonnie.FramingDatagram)
}

// TestMetricsWatch: with --metrics the summary reports what bonnied
// appended (a datagram send is over before its event is durable), and with
// --sample-every and --rss-pid the memory of the process at each step.
func TestMetricsWatch(t *testing.T) {
	d := startDaemon(t)
	s, code, stderr := runJSON(t, context.Background(), "--datagram", d.datagram, "--count", "3000",
		"--metrics", d.metrics, "--sample-every", "1000", "--rss-pid", strconv.Itoa(os.Getpid()))
	if code != 0 || s.Ingest == nil {
		t.Fatalf("exit %d, summary %+v, stderr %s", code, s, stderr)
	}
	in := s.Ingest
	if !in.Complete || in.Appended != 3000 || in.DeadLetters != 0 || in.Rate <= 0 {
		t.Errorf("ingest %+v", in)
	}
	if len(in.Samples) != 3 || in.Samples[2].Appended != 3000 || in.Samples[0].RSSKiB <= 0 {
		t.Errorf("samples %+v", in.Samples)
	}
	d.check(t, 3000, bonnie.FramingDatagram)
	if _, code, stderr := runJSON(t, context.Background(), "--dlist", d.dlst, "--count", "1", "--metrics", "http://127.0.0.1:1/metrics"); code != 1 || !strings.Contains(stderr, "--metrics") {
		t.Errorf("unreachable metrics: exit %d, stderr %q", code, stderr)
	}
}

// TestTwoRunsDoNotCollide: a second run against the same log stores all of
// its events too (run ids differ).
func TestTwoRunsDoNotCollide(t *testing.T) {
	d := startDaemon(t)
	for range 2 {
		if s, code, stderr := runJSON(t, context.Background(), "--dlist", d.dlst, "--count", "100", "--concurrency", "2"); code != 0 {
			t.Fatalf("exit %d, summary %+v, stderr %s", code, s, stderr)
		}
	}
	d.check(t, 200, bonnie.FramingDList)
}

func TestInterruptPrintsSummary(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"--dlist", d.dlst, "--duration", "1m", "--rate", "200", "--progress", "0"}, &out, &errb)
	if code != 130 || time.Since(start) > 10*time.Second {
		t.Fatalf("exit %d after %s; stderr %s", code, time.Since(start), errb.String())
	}
	if !strings.Contains(out.String(), "INTERRUPTED") || !strings.Contains(out.String(), "p99") {
		t.Errorf("summary:\n%s", out.String())
	}
}

func TestNobodyListening(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []string{"--dlist", "--datagram"} {
		s, code, stderr := runJSON(t, context.Background(), mode, filepath.Join(dir, "none.sock"), "--count", "10")
		if code != 1 || !strings.Contains(stderr, "no such socket") || s.Sent != 1 {
			t.Errorf("%s: exit %d, sent %d, stderr %q", mode, code, s.Sent, stderr)
		}
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--dlist", "a", "--datagram", "b"},
		{"--dlist", "a", "--rate", "-1"},
		{"--dlist", "a", "--concurrency", "0"},
		{"--dlist", "a", "extra"},
		{"--dlist", "a", "--sample-every", "10"},
		{"--dlist", "a", "--rss-pid", "1"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
	c, err := parse([]string{"--dlist", "x"}, io.Discard)
	if err != nil || c.duration != 10*time.Second {
		t.Errorf("default bound: %+v %v", c, err)
	}
}
