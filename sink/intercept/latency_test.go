package intercept_test

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bonnie-archive/bonnie/sink/intercept"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestLatency measures the time from a notification reaching the engine
// (Engine.Ingest called) to its record arriving at the consumer of the
// interception's RabbitMQ queue: resolve, commit, the sink woken, the
// publish confirmed. Events come at a steady rate from 4 goroutines, as
// from Cyrus's processes; one in BONNIE_LATENCY_TARGET_EVERY (default 10)
// concerns the target. BONNIE_LATENCY_EVENTS (default 400) and
// BONNIE_LATENCY_RATE (events/s, default 200) set the load; the figures
// are logged (go test -v).
func TestLatency(t *testing.T) {
	needBroker(t)
	n := envInt("BONNIE_LATENCY_EVENTS", 400)
	rate := envInt("BONNIE_LATENCY_RATE", 200)
	every := envInt("BONNIE_LATENCY_TARGET_EVERY", 10)
	f := newFixture(t)
	queue := uniqueQueue(t)
	c := consume(t, queue)
	f.record(intercept.Start("i-lat", janeTarget(), "W-lat", at(0, 0), at(23, 59),
		"amqp://guest@127.0.0.1:5672/?queue="+queue, "Judge", "test", time.Now()))

	var mu sync.Mutex
	sent := map[string]time.Time{} // session id -> when ingest was called
	const senders = 4
	var wg sync.WaitGroup
	per := n / senders
	targets := 0
	start := time.Now()
	for g := range senders {
		for i := range per {
			if (g*per+i)%every == 0 {
				targets++
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second * senders / time.Duration(rate))
			defer tick.Stop()
			for i := range per {
				<-tick.C
				user, k := "bob", g*per+i
				if k%every == 0 {
					user = "janeg"
				}
				sid := "lat-" + strconv.Itoa(k)
				raw, _ := json.Marshal(map[string]any{"event": "Login", "user": user, "vnd.cmu.sessionId": sid,
					"timestamp": at(12, 0).Add(time.Duration(k) * time.Millisecond).Format("2006-01-02T15:04:05.000Z"),
					"service":   "imap", "clientIP": "192.0.2.1"})
				mu.Lock()
				sent[sid] = time.Now()
				mu.Unlock()
				if _, _, err := f.eng.Ingest(t.Context(), raw, "test"); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	waitFor(t, 60*time.Second, "every delivery", func() bool { got, _ := c.snapshot(); return len(got) >= targets })
	_, msgs := c.snapshot()
	c.mu.Lock()
	var lat []time.Duration
	for _, m := range msgs {
		var h intercept.Handover
		if err := json.Unmarshal(m.Body, &h); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, c.times[m.MessageId].Sub(sent[h.Record.Event.SessionID]))
	}
	c.mu.Unlock()
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("%d events at %.0f/s, %d for the target: Ingest -> RabbitMQ consumer p50 %v, p90 %v, p99 %v, max %v",
		senders*per, float64(senders*per)/elapsed.Seconds(), len(lat), q(0.50), q(0.90), q(0.99), lat[len(lat)-1])
	if q(0.99) > time.Second {
		t.Errorf("p99 %v over the 1 s target", q(0.99))
	}
}
