package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/sink/intercept"
	"github.com/bonnie-archive/bonnie/store/blob"
)

// TestInterceptE2E runs bonnied --sinks intercept beside a real Cyrus,
// starts an interception of alice with the bonnie command (handed to the
// daemon over its control socket) to a RabbitMQ queue, and has alice
// append messages and bob deliver her some and append his own. The queue
// gets exactly alice's events, each once, with the bodies as Cyrus stored
// them; bob's own are not sent; the deliveries are listed. It measures the
// latency from the IMAP APPEND (Cyrus) to the consumer of the queue.
func TestInterceptE2E(t *testing.T) {
	requireEnv(t)
	requireBroker(t)
	sock := cyrustest.SocketPath(t, "notify.sock")
	s := startCyrus(t, cyrustest.Options{
		Users:        map[string]string{"alice": "alice-pw", "bob": "bob-pw"},
		NotifySocket: sock,
	})
	data := t.TempDir()
	secrets := t.TempDir()
	adminPW := filepath.Join(secrets, "admin.pw")
	amqpPW := filepath.Join(secrets, "amqp.pw")
	os.WriteFile(adminPW, []byte(cyrustest.AdminPassword+"\n"), 0o600)
	os.WriteFile(amqpPW, []byte("guest\n"), 0o600)
	lv := newLogView(data)
	// Bodies are fetched through the IMAP service without notifications,
	// so that fetching makes no events of its own.
	startDaemon(t, "bonnied", daemonConfig{data: data, datagram: sock, extra: []string{
		"--imap", s.QuietIMAPAddr(), "--imap-user", cyrustest.AdminUser, "--imap-password-file", adminPW,
		"--sinks", "intercept", "--intercept-amqp-password-file", amqpPW,
	}}, lv)

	queue := fmt.Sprintf("bonnie.intercept.e2e-%d", time.Now().UnixNano())
	conn, err := amqp091.Dial(amqpTestURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]int{}
	var records []intercept.Handover
	arrived := map[bonnie.Position]time.Time{}
	bodies := map[string][]byte{}
	go func() {
		for d := range deliveries {
			now := time.Now()
			mu.Lock()
			got[d.MessageId]++
			if d.Headers["x-bonnie-kind"] == "body" {
				bodies[d.Headers["x-bonnie-sha256"].(string)] = d.Body
			} else {
				var h intercept.Handover
				if json.Unmarshal(d.Body, &h) == nil {
					records = append(records, h)
					arrived[h.Record.Position] = now
				}
			}
			mu.Unlock()
		}
	}()

	now := time.Now().UTC()
	cmd := exec.Command(bonnieBin, "--data", data, "intercept", "start", "--target", "alice", "--warrant", "W-E2E",
		"--from", now.Add(-time.Minute).Format(time.RFC3339), "--to", now.Add(time.Hour).Format(time.RFC3339),
		"--dest", "amqp://guest@127.0.0.1:5672/?queue="+queue, "--authorised-by", "Judge Dredd", "--id", "i-e2e")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "interception i-e2e started") {
		t.Fatalf("bonnie intercept start: %v\n%s", err, out)
	}

	alice, _ := dialIMAP(t, s, "alice")
	bob, _ := dialIMAP(t, s, "bob")
	const n = 60
	sent := map[uint32]time.Time{} // alice's INBOX UID -> when APPEND was sent
	for i := range n {
		t0 := time.Now()
		uid, err := appendMessage(alice, "INBOX", testMessage(fmt.Sprintf("<i-e2e-%d@bonnie.test>", i), "to be intercepted"), nil)
		if err != nil {
			t.Fatal(err)
		}
		sent[uint32(uid)] = t0
		if i%6 == 0 {
			if _, err := appendMessage(bob, "INBOX", testMessage(fmt.Sprintf("<bob-%d@bonnie.test>", i), "not intercepted"), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.LMTPDeliver(t, "bob@example.org", []string{"alice"}, []byte(testMessage("<lmtp-1@bonnie.test>", "from bob")))

	// Every record of alice's (her session, appends, the delivery) and
	// nothing else: wait for the log to settle and the queue to follow.
	var want []bonnie.Position
	var janeBodies int
	compute := func() {
		want, janeBodies = want[:0], 0
		started := false
		for _, r := range lv.records(t) {
			ev := r.Event
			if ev.Type == bonnie.Interception {
				started = true
				continue
			}
			if !started || bonnie.OwnEvents.Has(ev.Type) {
				continue
			}
			if strings.EqualFold(ev.User, "alice") || strings.EqualFold(ev.Mailbox.Owner, "alice") {
				want = append(want, r.Position)
				for _, b := range ev.Bodies {
					if b.Digest != "" {
						janeBodies++
					}
				}
			}
		}
	}
	waitUntil(t, waitTimeout, "the interception's deliveries", func() bool {
		compute()
		mu.Lock()
		defer mu.Unlock()
		return len(want) >= n+1 && len(records) == len(want) && len(bodies) == janeBodies
	})
	time.Sleep(500 * time.Millisecond)
	compute()
	mu.Lock()
	defer mu.Unlock()
	for id, k := range got {
		if k != 1 {
			t.Errorf("message %s arrived %d times", id, k)
		}
	}
	var positions []bonnie.Position
	var lat, ingest, sink []time.Duration
	for _, h := range records {
		positions = append(positions, h.Record.Position)
		ev := h.Record.Event
		if ev.Type == bonnie.MessageAppend && ev.Mailbox.Owner == "alice" && len(ev.UIDs) == 1 {
			if t0, ok := sent[ev.UIDs[0]]; ok {
				lat = append(lat, arrived[h.Record.Position].Sub(t0))
				ingest = append(ingest, h.Record.Appended.Sub(t0))
				sink = append(sink, arrived[h.Record.Position].Sub(h.Record.Appended))
			}
		}
		for _, b := range ev.Bodies {
			if body, ok := bodies[b.Digest]; !ok || blob.Digest(body) != b.Digest {
				t.Errorf("body %s of position %d not handed over intact", b.Digest, h.Record.Position)
			}
		}
	}
	if !slices.Equal(positions, want) {
		t.Errorf("the queue got positions %v,\nwant alice's %v", positions, want)
	}
	for _, r := range lv.records(t) {
		if !slices.Contains(want, r.Position) && slices.Contains(positions, r.Position) {
			t.Errorf("handed over %d %s by %s in %s", r.Position, r.Event.Type, r.Event.User, r.Event.Mailbox.Name)
		}
	}
	if len(lat) != n {
		t.Fatalf("%d appends measured, want %d", len(lat), n)
	}
	pct := func(d []time.Duration, q float64) time.Duration {
		slices.Sort(d)
		return d[min(len(d)-1, int(q*float64(len(d))))]
	}
	t.Logf("Cyrus APPEND -> RabbitMQ consumer, %d appends (body fetched over IMAP, delivery recorded): p50 %v, p90 %v, p99 %v, max %v; "+
		"of which APPEND -> appended to the log p50 %v p99 %v, log -> consumer p50 %v p99 %v",
		len(lat), pct(lat, 0.5), pct(lat, 0.9), pct(lat, 0.99), lat[len(lat)-1],
		pct(ingest, 0.5), pct(ingest, 0.99), pct(sink, 0.5), pct(sink, 0.99))
	if p99 := pct(lat, 0.99); p99 > time.Second && !raceEnabled {
		t.Errorf("p99 %v over the 1 s target", p99)
	}

	out, err := exec.Command(bonnieBin, "--data", data, "intercept", "deliveries", "i-e2e", "--json").Output()
	var ds []intercept.Delivery
	if err != nil || json.Unmarshal(out, &ds) != nil {
		t.Fatalf("bonnie intercept deliveries: %v\n%s", err, out)
	}
	var listed []bonnie.Position
	for _, d := range ds {
		for _, it := range d.Items {
			listed = append(listed, it.Position)
		}
	}
	if !slices.Equal(listed, want) {
		t.Errorf("deliveries listed %v, want %v", listed, want)
	}
}
