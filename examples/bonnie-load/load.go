package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bonnie-archive/bonnie/examples/bonnie-load/loadgen"
)

// lateLimit is how late an event may start against its schedule and still
// count as on time.
const lateLimit = 10 * time.Millisecond

// workerStats is what one worker saw. Each worker owns its own; they are
// merged when the run ends.
type workerStats struct {
	sent, ok, failed uint64
	bytes            uint64
	sizeMin, sizeMax int
	lat              hist // dlist: connect to reply; datagram: the sendto call
	blocked          hist // datagram: sendto calls that waited for a full queue
	late             hist // start of each event against its schedule (--rate > 0)
	busy             time.Duration
	errs             map[string]uint64
}

func (w *workerStats) fail(err error) {
	w.failed++
	key := err.Error()
	var no *errNotOK
	if errors.As(err, &no) {
		key = no.Error()
	}
	if len(key) > 160 {
		key = key[:160] + "..."
	}
	w.errs[key]++
}

func (w *workerStats) merge(o *workerStats) {
	w.sent += o.sent
	w.ok += o.ok
	w.failed += o.failed
	w.bytes += o.bytes
	if o.sent > 0 && (w.sizeMin == 0 || o.sizeMin < w.sizeMin) {
		w.sizeMin = o.sizeMin
	}
	w.sizeMax = max(w.sizeMax, o.sizeMax)
	w.lat.merge(&o.lat)
	w.blocked.merge(&o.blocked)
	w.late.merge(&o.late)
	w.busy += o.busy
	for k, v := range o.errs {
		w.errs[k] += v
	}
}

// aborter is a sender that can be made to give up a request in progress.
type aborter interface{ abort() }

// runLoad sends events until --count or --duration is reached, ctx ends
// (Ctrl-C: what is in flight gets grace to finish) or a setup error
// stops it. It returns the summary of what was done in every case, and
// the setup error if there was one.
func runLoad(ctx context.Context, c *config, gen *loadgen.Generator, progress io.Writer) (*summary, error) {
	var rec *recorder
	if c.record != "" {
		var err error
		if rec, err = newRecorder(c.record); err != nil {
			return nil, err
		}
	}

	stopCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)

	var watch *watcher
	if c.metrics != "" {
		var err error
		if watch, err = newWatcher(ctx, c); err != nil {
			if rec != nil {
				rec.close()
			}
			return nil, err
		}
	}
	start := time.Now()
	var deadline time.Time
	if c.duration > 0 {
		deadline = start.Add(c.duration)
	}
	var (
		next          atomic.Int64
		sent, failed  atomic.Int64
		wg            sync.WaitGroup
		mu            sync.Mutex
		total         = &workerStats{errs: map[string]uint64{}}
		senders       []aborter
		lastDone      atomic.Int64 // unix ns of the last completed event
		setupFailures atomic.Int64
	)

	for range c.concurrency {
		st := &workerStats{errs: map[string]uint64{}}
		var send func([]byte) error
		switch {
		case c.dlist != "":
			cl := newDListClient(c.dlist, c.timeout)
			senders = append(senders, cl)
			send = func(b []byte) error {
				t0 := time.Now()
				err := cl.request(b)
				d := time.Since(t0)
				st.busy += d
				if err == nil {
					st.lat.add(d)
				}
				return err
			}
		default:
			s, err := newDgramSender(c.datagram, c.timeout)
			if err != nil {
				for _, a := range senders {
					a.(*dgramSender).close()
				}
				if rec != nil {
					rec.close()
				}
				return nil, err
			}
			senders = append(senders, s)
			send = func(b []byte) error {
				blocked, d, err := s.send(b)
				st.busy += d
				if blocked > 0 {
					st.blocked.add(blocked)
				}
				if err == nil {
					st.lat.add(d)
				}
				return err
			}
		}
		wg.Go(func() {
			defer func() {
				mu.Lock()
				total.merge(st)
				mu.Unlock()
			}()
			buf := make([]byte, 0, 32<<10)
			timer := time.NewTimer(time.Hour)
			timer.Stop()
			for stopCtx.Err() == nil {
				i := next.Add(1) - 1
				if c.count > 0 && i >= c.count {
					return
				}
				now := time.Now()
				if c.rate > 0 {
					due := start.Add(time.Duration(float64(i) * float64(time.Second) / c.rate))
					if !deadline.IsZero() && !due.Before(deadline) {
						return
					}
					if d := due.Sub(now); d > 0 {
						timer.Reset(d)
						select {
						case <-timer.C:
						case <-stopCtx.Done():
							timer.Stop()
							return
						}
						now = time.Now()
					}
					st.late.add(now.Sub(due))
				} else if !deadline.IsZero() && !now.Before(deadline) {
					return
				}
				buf = gen.Event(buf[:0], i)
				st.sent++
				st.bytes += uint64(len(buf))
				if st.sizeMin == 0 || len(buf) < st.sizeMin {
					st.sizeMin = len(buf)
				}
				st.sizeMax = max(st.sizeMax, len(buf))
				t0 := time.Now()
				err := send(buf)
				done := time.Now()
				lastDone.Store(done.UnixNano())
				if rec != nil {
					rec.add(i, t0, done.Sub(t0), err)
				}
				sent.Add(1)
				if err == nil {
					st.ok++
					continue
				}
				failed.Add(1)
				st.fail(err)
				var fatal *errFatal
				if errors.As(err, &fatal) {
					setupFailures.Add(1)
					stop(err)
					return
				}
			}
		})
	}

	stopWatch, watchDone := make(chan struct{}), make(chan struct{})
	if watch != nil {
		watch.start = start
		go func() {
			defer close(watchDone)
			watch.run(ctx, stopWatch)
		}()
	} else {
		close(watchDone)
	}

	// Ctrl-C: stop taking new events at once, give what is in flight
	// grace to be answered, then abort it.
	allDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(allDone)
	}()
	go func() {
		select {
		case <-allDone:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(c.grace)
		defer t.Stop()
		select {
		case <-allDone:
		case <-t.C:
			for _, a := range senders {
				a.abort()
			}
		}
	}()

	if c.progress > 0 && progress != nil {
		go func() {
			tk := time.NewTicker(c.progress)
			defer tk.Stop()
			var prev int64
			prevT := start
			for {
				select {
				case <-allDone:
					return
				case now := <-tk.C:
					n := sent.Load()
					fmt.Fprintf(progress, "bonnie-load: %6.1fs  sent %d (%.0f/s now, %.0f/s overall)  failed %d\n",
						now.Sub(start).Seconds(), n, float64(n-prev)/now.Sub(prevT).Seconds(),
						float64(n)/now.Sub(start).Seconds(), failed.Load())
					prev, prevT = n, now
				}
			}
		}()
	}
	<-allDone
	for _, a := range senders {
		if s, ok := a.(*dgramSender); ok {
			s.close()
		}
	}

	close(stopWatch)
	<-watchDone // the watcher is the finish's alone from here
	var recErr error
	if rec != nil {
		recErr = rec.close()
	}
	end := time.Unix(0, lastDone.Load())
	if lastDone.Load() == 0 {
		end = time.Now()
	}
	s := newSummary(c, gen, start, end, total)
	s.Interrupted = ctx.Err() != nil
	if watch != nil {
		s.Ingest = watch.finish(ctx, total.ok, max(30*time.Second, c.timeout), progress)
	}
	if err := context.Cause(stopCtx); err != nil && setupFailures.Load() > 0 {
		return s, err
	}
	if recErr != nil {
		return s, fmt.Errorf("--record: %w", recErr)
	}
	return s, nil
}

// summary is the result of a run, printed as text or JSON. Durations are
// in milliseconds.
type summary struct {
	Mode        string    `json:"mode"`
	Socket      string    `json:"socket"`
	Concurrency int       `json:"concurrency"`
	TargetRate  float64   `json:"target_rate"` // events/s; 0: as fast as possible
	Started     time.Time `json:"started"`
	ElapsedS    float64   `json:"elapsed_s"`
	Interrupted bool      `json:"interrupted,omitempty"`
	RunID       string    `json:"run_id"`

	Sent   uint64            `json:"sent"`
	OK     uint64            `json:"ok"`
	Failed uint64            `json:"failed"`
	Errors map[string]uint64 `json:"errors,omitempty"`
	// Rate is OK events per second of the run.
	Rate float64 `json:"rate"`

	Bytes    uint64  `json:"bytes"`
	SizeMin  int     `json:"size_min"`
	SizeMean float64 `json:"size_mean"`
	SizeMax  int     `json:"size_max"`

	// Latency is, for dlist, from connect to the reply (what Cyrus adds
	// to the IMAP command); for datagrams, the sendto call.
	Latency latency `json:"latency"`
	// Blocked: datagram sends that found the listener's queue full and
	// waited, as Cyrus's sendto would.
	Blocked *blocked `json:"sendto_blocked,omitempty"`
	// Schedule: with --rate, how late events started against their
	// schedule; RateKept is false when more than 1% started more than
	// 10 ms late, and LimitedBy says whether the workers were waiting for
	// the listener ("listener") or not ("generator": this process or this
	// machine could not go faster).
	Schedule *schedule `json:"schedule,omitempty"`
	// Busy is the fraction of the workers' time spent in sends/requests.
	Busy float64 `json:"busy"`
	// Ingest is bonnied's side, from its metrics (--metrics).
	Ingest *ingest `json:"ingest,omitempty"`
}

type latency struct {
	N    uint64  `json:"n"`
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
}

type blocked struct {
	Count   uint64  `json:"count"`
	TotalMS float64 `json:"total_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

type schedule struct {
	RateKept  bool    `json:"rate_kept"`
	LimitedBy string  `json:"limited_by,omitempty"`
	Late      uint64  `json:"late"` // started more than 10 ms late
	P99Late   float64 `json:"p99_late_ms"`
	MaxLate   float64 `json:"max_late_ms"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func newSummary(c *config, gen *loadgen.Generator, start, end time.Time, t *workerStats) *summary {
	el := end.Sub(start)
	if el <= 0 {
		el = time.Nanosecond
	}
	s := &summary{
		Mode: "datagram", Socket: c.datagram, Concurrency: c.concurrency, TargetRate: c.rate,
		Started: start.UTC(), ElapsedS: el.Seconds(), RunID: fmt.Sprintf("%016x", gen.RunID()),
		Sent: t.sent, OK: t.ok, Failed: t.failed, Rate: float64(t.ok) / el.Seconds(),
		Bytes: t.bytes, SizeMin: t.sizeMin, SizeMax: t.sizeMax,
		Latency: latency{N: t.lat.n, Mean: ms(t.lat.mean()), P50: ms(t.lat.quantile(.50)), P90: ms(t.lat.quantile(.90)),
			P99: ms(t.lat.quantile(.99)), P999: ms(t.lat.quantile(.999)), Max: ms(t.lat.max)},
		Busy: t.busy.Seconds() / (el.Seconds() * float64(c.concurrency)),
	}
	if c.dlist != "" {
		s.Mode, s.Socket = "dlist", c.dlist
	} else {
		s.Blocked = &blocked{Count: t.blocked.n, TotalMS: ms(t.blocked.sum), P99: ms(t.blocked.quantile(.99)), Max: ms(t.blocked.max)}
	}
	if t.sent > 0 {
		s.SizeMean = float64(t.bytes) / float64(t.sent)
	}
	if len(t.errs) > 0 {
		s.Errors = t.errs
	}
	if c.rate > 0 && t.late.n > 0 {
		var late uint64
		limit := bucketOf(uint64(lateLimit))
		for i := limit + 1; i < len(t.late.counts); i++ {
			late += t.late.counts[i]
		}
		sc := &schedule{Late: late, P99Late: ms(t.late.quantile(.99)), MaxLate: ms(t.late.max)}
		sc.RateKept = late*100 <= t.late.n
		if !sc.RateKept {
			sc.LimitedBy = "generator"
			if s.Busy > 0.8 {
				sc.LimitedBy = "listener"
			}
		}
		s.Schedule = sc
	}
	return s
}

// fmtMS prints milliseconds readably.
func fmtMS(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.2fms", v)
	}
}

func fmtBytes(n float64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", n/(1<<20))
	case n >= 10<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", n)
	}
}

func (s *summary) writeText(w io.Writer) {
	var b strings.Builder
	target := "as fast as possible"
	if s.TargetRate > 0 {
		target = fmt.Sprintf("target %g events/s", s.TargetRate)
	}
	conns := "sender"
	if s.Mode == "dlist" {
		conns = "connection"
	}
	plural := "s"
	if s.Concurrency == 1 {
		plural = ""
	}
	fmt.Fprintf(&b, "bonnie-load: %s %s, %d %s%s, %s\n", s.Mode, s.Socket, s.Concurrency, conns, plural, target)
	if s.Interrupted {
		fmt.Fprintf(&b, "  INTERRUPTED: summary of what was done before the stop\n")
	}
	if s.Mode == "dlist" {
		fmt.Fprintf(&b, "  sent       %d events in %.2fs: %d answered OK (durable), %d failed; %.0f events/s\n",
			s.Sent, s.ElapsedS, s.OK, s.Failed, s.Rate)
	} else {
		fmt.Fprintf(&b, "  sent       %d events in %.2fs: %d sent, %d failed; %.0f events/s sent (count what the log holds to know what was ingested)\n",
			s.Sent, s.ElapsedS, s.OK, s.Failed, s.Rate)
	}
	if s.Sent > 0 {
		fmt.Fprintf(&b, "  sizes      min %s, mean %s, max %s; %s in all\n",
			fmtBytes(float64(s.SizeMin)), fmtBytes(s.SizeMean), fmtBytes(float64(s.SizeMax)), fmtBytes(float64(s.Bytes)))
	}
	what := "reply"
	if s.Mode == "datagram" {
		what = "sendto"
	}
	if s.Latency.N > 0 {
		fmt.Fprintf(&b, "  %-10s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, %d ok)\n", what,
			fmtMS(s.Latency.P50), fmtMS(s.Latency.P90), fmtMS(s.Latency.P99), fmtMS(s.Latency.P999),
			fmtMS(s.Latency.Max), fmtMS(s.Latency.Mean), s.Latency.N)
	}
	if s.Blocked != nil {
		if s.Blocked.Count == 0 {
			fmt.Fprintf(&b, "  blocked    never: the listener's queue was never full\n")
		} else {
			fmt.Fprintf(&b, "  blocked    %d sends (%.1f%%) waited for a full queue, as Cyrus would: %s in all, p99 %s, max %s\n",
				s.Blocked.Count, 100*float64(s.Blocked.Count)/float64(max(s.Sent, 1)),
				fmtMS(s.Blocked.TotalMS), fmtMS(s.Blocked.P99), fmtMS(s.Blocked.Max))
		}
	}
	if sc := s.Schedule; sc != nil {
		if sc.RateKept {
			fmt.Fprintf(&b, "  schedule   rate kept: %d events started >10ms late, p99 lateness %s, max %s\n",
				sc.Late, fmtMS(sc.P99Late), fmtMS(sc.MaxLate))
		} else {
			why := "this process could not send faster (CPU): the listener was not the limit"
			if sc.LimitedBy == "listener" {
				why = fmt.Sprintf("the %ss were busy %.0f%% of the time waiting for the listener", conns, 100*s.Busy)
				if s.Mode == "dlist" {
					why += " (more --concurrency would queue more requests at once)"
				}
			}
			fmt.Fprintf(&b, "  schedule   RATE NOT KEPT: %d events (%.1f%%) started >10ms late, p99 %s, max %s: %s\n",
				sc.Late, 100*float64(sc.Late)/float64(max(s.Sent, 1)), fmtMS(sc.P99Late), fmtMS(sc.MaxLate), why)
		}
	}
	if in := s.Ingest; in != nil {
		state := "all of them"
		if !in.Complete {
			state = fmt.Sprintf("INCOMPLETE: %d of the %d sent", in.Appended, s.OK)
		}
		fmt.Fprintf(&b, "  ingested   %d events appended by bonnied (%s), %d dead letters, %d duplicates, in %.2fs: %.0f events/s socket to durable log\n",
			in.Appended, state, in.DeadLetters, in.Duplicates, in.ElapsedS, in.Rate)
		for _, sm := range in.Samples {
			fmt.Fprintf(&b, "  sample     %9d appended at %7.1fs", sm.Appended, sm.AtS)
			if sm.RSSKiB > 0 {
				fmt.Fprintf(&b, "  RSS %6.1f MiB", float64(sm.RSSKiB)/1024)
			}
			b.WriteByte('\n')
		}
	}
	if len(s.Errors) > 0 {
		fmt.Fprintf(&b, "  errors:\n")
		for _, k := range slices.Sorted(maps.Keys(s.Errors)) {
			fmt.Fprintf(&b, "    %7d  %s\n", s.Errors[k], k)
		}
	}
	io.WriteString(w, b.String())
}

// recorder writes one CSV line per event (--record): when it was sent,
// how long the send or request took, and its error, to plot latency over
// time.
type recorder struct {
	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	err error
}

func newRecorder(path string) (*recorder, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--record: %w", err)
	}
	r := &recorder{f: f, w: bufio.NewWriterSize(f, 1<<16)}
	r.w.WriteString("index,start_unix_ns,latency_us,error\n")
	return r, nil
}

func (r *recorder) add(i int64, start time.Time, d time.Duration, err error) {
	msg := ""
	if err != nil {
		msg = strconv.Quote(err.Error())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		_, r.err = fmt.Fprintf(r.w, "%d,%d,%.1f,%s\n", i, start.UnixNano(), float64(d.Nanoseconds())/1000, msg)
	}
}

func (r *recorder) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.err, r.w.Flush(), r.f.Close())
}
