package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// The watcher follows bonnied's side of a run through its Prometheus
// endpoint (--metrics): how many events it appended, how many dead letters
// it made, and optionally (--rss-pid) its resident memory. With datagrams
// a send is over long before the event is durable, so the rate that
// matters, socket to durable log, is only known from bonnied's counters.

// counters is what the watcher reads from bonnied.
type counters struct {
	appended, duplicates, dead float64
}

func scrape(ctx context.Context, url string) (counters, error) {
	var c counters
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return c, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("%s: %s", url, resp.Status)
	}
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			// Labels may hold spaces: the value is after the last one.
			name = name[:i]
			rest = line[strings.LastIndexByte(line, ' ')+1:]
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			continue
		}
		switch name {
		case "bonnie_events_appended_total":
			c.appended += v
			found = true
		case "bonnie_events_duplicate_total":
			c.duplicates += v
		case "bonnie_dead_letters_total":
			c.dead += v
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if !found {
		return c, fmt.Errorf("%s has no bonnie_events_appended_total: is it bonnied's --metrics address?", url)
	}
	return c, nil
}

// rssKiB reads VmRSS from /proc/PID/status.
func rssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// ingest is the run as bonnied saw it.
type ingest struct {
	// Appended and DeadLetters are the growth of bonnied's counters
	// during the run (other traffic included).
	Appended    uint64 `json:"appended"`
	Duplicates  uint64 `json:"duplicates"`
	DeadLetters uint64 `json:"dead_letters"`
	// Complete is true when bonnied appended as many events as were sent
	// OK before the watcher gave up waiting.
	Complete bool `json:"complete"`
	// ElapsedS runs from the first send to the poll that saw the last
	// event appended (at most --metrics-every late); Rate is
	// Appended/ElapsedS: socket to durable log.
	ElapsedS float64  `json:"elapsed_s"`
	Rate     float64  `json:"rate"`
	Samples  []sample `json:"samples,omitempty"`
}

// sample is bonnied's state when its appended count crossed a multiple
// of --sample-every.
type sample struct {
	Appended uint64  `json:"appended"`
	AtS      float64 `json:"at_s"`
	RSSKiB   int64   `json:"rss_kib,omitempty"`
}

type watcher struct {
	url     string
	pid     int
	every   uint64
	poll    time.Duration
	start   time.Time
	base    counters
	last    counters
	lastAt  time.Time
	next    uint64
	samples []sample
	err     error
}

func newWatcher(ctx context.Context, c *config) (*watcher, error) {
	w := &watcher{url: c.metrics, pid: c.rssPID, every: uint64(c.sampleEvery), poll: c.metricsEvery}
	base, err := scrape(ctx, w.url)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	if w.pid > 0 {
		if _, err := rssKiB(w.pid); err != nil {
			return nil, fmt.Errorf("--rss-pid %d: %w", w.pid, err)
		}
	}
	w.base, w.last = base, base
	w.next = w.every
	return w, nil
}

func (w *watcher) appended() uint64 { return uint64(w.last.appended - w.base.appended) }

// observe scrapes once and records the samples crossed.
func (w *watcher) observe(ctx context.Context) {
	c, err := scrape(ctx, w.url)
	now := time.Now()
	if err != nil {
		w.err = err
		return
	}
	w.last, w.lastAt = c, now
	if w.every == 0 {
		return
	}
	n := w.appended()
	for w.next > 0 && n >= w.next {
		s := sample{Appended: w.next, AtS: now.Sub(w.start).Seconds()}
		if w.pid > 0 {
			s.RSSKiB, _ = rssKiB(w.pid)
		}
		w.samples = append(w.samples, s)
		w.next += w.every
	}
}

// run polls until stop is closed.
func (w *watcher) run(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			w.observe(ctx)
		}
	}
}

// finish waits until bonnied has appended (or dead-lettered) want events,
// as long as its count keeps moving, then summarises.
func (w *watcher) finish(ctx context.Context, want uint64, stall time.Duration, progress io.Writer) *ingest {
	moved := time.Now()
	prev := w.appended()
	for ctx.Err() == nil {
		w.observe(ctx)
		n := w.appended() + uint64(w.last.dead-w.base.dead) + uint64(w.last.duplicates-w.base.duplicates)
		if n >= want {
			break
		}
		if w.appended() != prev {
			prev, moved = w.appended(), time.Now()
		} else if time.Since(moved) > stall {
			if progress != nil {
				fmt.Fprintf(progress, "bonnie-load: bonnied appended %d of %d events and nothing more for %s: giving up waiting\n",
					w.appended(), want, stall)
			}
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(w.poll):
		}
	}
	if w.every > 0 {
		// The final state, even between multiples.
		s := sample{Appended: w.appended(), AtS: time.Since(w.start).Seconds()}
		if w.pid > 0 {
			s.RSSKiB, _ = rssKiB(w.pid)
		}
		if len(w.samples) == 0 || w.samples[len(w.samples)-1].Appended != s.Appended {
			w.samples = append(w.samples, s)
		}
	}
	in := &ingest{
		Appended:    w.appended(),
		Duplicates:  uint64(w.last.duplicates - w.base.duplicates),
		DeadLetters: uint64(w.last.dead - w.base.dead),
		ElapsedS:    w.lastAt.Sub(w.start).Seconds(),
		Samples:     w.samples,
	}
	in.Complete = in.Appended >= want
	if in.ElapsedS > 0 {
		in.Rate = float64(in.Appended) / in.ElapsedS
	}
	return in
}
