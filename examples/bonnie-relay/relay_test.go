package main

// Tests of the relay binary against the real RabbitMQ (BONNIE_TEST_AMQP,
// default amqp://guest:guest@127.0.0.1:5672/): real capture datagrams and
// dlist requests from testdata/cyrus-3.6.1*, a central ingest in process
// (bonnie.Engine on store/sqlite with source/amqp's source). Without the
// broker the tests skip, or fail when CI=true. Each test uses a topic of
// its own and deletes its exchange and queue afterwards.

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/source/amqp"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

var relayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bonnie-relay-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	relayBin = filepath.Join(dir, "bonnie-relay")
	args := []string{"build", "-o", relayBin}
	if raceEnabled { // the relay's races fail the tests too
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// downURL is a broker that is not there.
const downURL = "amqp://guest:guest@127.0.0.1:1/"

func testURL() string {
	if u := os.Getenv("BONNIE_TEST_AMQP"); u != "" {
		return u
	}
	return amqp.DefaultURL
}

// requireBroker skips t when RabbitMQ cannot be reached, or fails it when
// CI is "true".
func requireBroker(t *testing.T) {
	t.Helper()
	conn, err := amqp091.Dial(testURL())
	if err == nil {
		conn.Close()
		return
	}
	msg := fmt.Sprintf("RabbitMQ at %s is unreachable (set BONNIE_TEST_AMQP): %v", amqp.RedactURL(testURL()), err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// topicFor returns a fresh topic, its exchange and ingest queue deleted
// when t ends.
func topicFor(t *testing.T) string {
	topic := "bonnie-test-relay-" + watermill.NewUUID()
	t.Cleanup(func() {
		conn, err := amqp091.Dial(testURL())
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(amqp.QueueName(topic, amqp.DefaultGroup), false, false, false)
			_ = ch.ExchangeDelete(topic, false, false)
			ch.Close()
		}
	})
	return topic
}

func captures(t *testing.T, dir string) [][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("../../testdata", dir, "*.bin"))
	if err != nil || len(files) == 0 {
		t.Fatalf("captures: %v", err)
	}
	sort.Strings(files)
	out := make([][]byte, len(files))
	for i, f := range files {
		if out[i], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// central is the central ingest: an engine on SQLite consuming topic.
type central struct {
	log *sqlite.Log
}

func startCentral(t *testing.T, topic string) *central {
	t.Helper()
	lg, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	// A window, as bonnied consumes by default. (watermill-amqp's own
	// subscription, Window 1, has a data race of its own in its reconnect
	// (ConnectionWrapper.IsConnected against handleConnectionClose,
	// v3.0.2), which the race detector reports when the broker restarts.)
	src, err := amqp.NewSource("amqp", topic, amqp.Config{URL: testURL(), Window: 256})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := bonnie.New(bonnie.Options{Store: lg, Sources: []bonnie.Source{src},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("engine: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("engine did not stop")
		}
	})
	return &central{log: lg}
}

// waitOnce waits until the log holds the notifications, then checks that
// it holds each exactly once, in order, with the relay's metadata kept.
func (c *central) waitOnce(t *testing.T, raws [][]byte) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		h, err := c.log.Head(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if int(h) >= len(raws) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log head %d, want %d", h, len(raws))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would land by now
	recs, err := c.log.Read(t.Context(), 0, 10*len(raws))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(raws) {
		t.Fatalf("%d records for %d notifications", len(recs), len(raws))
	}
	for i, rec := range recs {
		if !bytes.Equal(rec.Event.Raw, raws[i]) {
			t.Fatalf("record %d is not notification %d", rec.Position, i)
		}
	}
	if dls, _ := c.log.DeadLetters(t.Context(), false); len(dls) != 0 {
		t.Fatalf("dead letters: %+v", dls)
	}
}

// syncBuf is the relay's stderr.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type relayProc struct {
	cmd  *exec.Cmd
	errs *syncBuf
	done chan error
}

// startRelay runs the relay binary with args (plus a root-owned socket
// accepting root's notifications) and waits for its socket.
func startRelay(t *testing.T, socket string, args ...string) *relayProc {
	t.Helper()
	p := &relayProc{errs: &syncBuf{}, done: make(chan error, 1)}
	p.cmd = exec.Command(relayBin, append([]string{"--cyrus-user", "root", "--log-level", "debug", "--metrics", "127.0.0.1:0"}, args...)...)
	p.cmd.Stderr = p.errs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("relay's log:\n%s", p.errs)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if fi, err := os.Stat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return p
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("relay exited: %v\n%s", err, p.errs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket %s\n%s", socket, p.errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *relayProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("relay: %v\n%s", err, p.errs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not stop on SIGTERM")
	}
}

func sendDatagrams(t *testing.T, path string, raws [][]byte) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, raw := range raws {
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
	}
}

// sendDList sends one dlist request and returns Cyrus's view of the
// answer: its first line.
func sendDList(t *testing.T, path string, raw []byte) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("dlist answer: %v", err)
	}
	return strings.TrimSpace(line)
}

// spoolCount reads how many rows the relay's spool holds.
func spoolCount(t *testing.T, dir string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "spool.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM spool`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitSpool(t *testing.T, dir string, n int, p *relayProc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for spoolCount(t, dir) != n {
		if time.Now().After(deadline) {
			t.Fatalf("spool holds %d, want %d\n%s", spoolCount(t, dir), n, p.errs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// All captures sent to the datagram socket land once, in order, in the
// central log; SIGTERM leaves an empty spool.
func TestRelayDatagramToCentral(t *testing.T) {
	requireBroker(t)
	topic := topicFor(t)
	c := startCentral(t, topic)
	dir := t.TempDir()
	sock, spool := filepath.Join(dir, "notify"), filepath.Join(dir, "spool")
	p := startRelay(t, sock, "--cyrus-socket", sock, "--spool", spool, "--amqp", testURL(), "--topic", topic, "--host", "imap1")
	raws := captures(t, "cyrus-3.6.1")
	sendDatagrams(t, sock, raws)
	c.waitOnce(t, raws)
	// What an operator's Prometheus sees.
	m := scrape(t, p)
	for name, want := range map[string]float64{
		"bonnie_relay_spooled_total":       float64(len(raws)),
		"bonnie_relay_published_total":     float64(len(raws)),
		"bonnie_relay_spool_notifications": 0,
		"bonnie_relay_lost_total":          0,
		"bonnie_relay_spool_full_total":    0,
	} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("metric %s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	p.stop(t)
	if n := spoolCount(t, spool); n != 0 {
		t.Fatalf("spool holds %d after the drain", n)
	}
	if !strings.Contains(p.errs.String(), "left_in_spool=0") {
		t.Fatalf("no clean stop line:\n%s", p.errs)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// scrape reads the relay's /metrics (its address from the log line) into
// name -> value, for the metrics without labels.
func scrape(t *testing.T, p *relayProc) map[string]float64 {
	t.Helper()
	m := regexp.MustCompile(`msg=metrics url=(\S+)`).FindStringSubmatch(p.errs.String())
	if m == nil {
		t.Fatalf("no metrics line:\n%s", p.errs)
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		var name string
		var v float64
		if _, err := fmt.Sscan(line, &name, &v); err == nil {
			out[name] = v
		}
	}
	return out
}

// With the broker unreachable everything is spooled; the relay is killed
// with SIGKILL and restarted with the broker: everything lands once.
func TestRelayKill9RepublishesSpool(t *testing.T) {
	requireBroker(t)
	topic := topicFor(t)
	c := startCentral(t, topic)
	dir := t.TempDir()
	sock, spool := filepath.Join(dir, "notify"), filepath.Join(dir, "spool")
	p := startRelay(t, sock, "--cyrus-socket", sock, "--spool", spool, "--amqp", downURL, "--topic", topic)
	raws := captures(t, "cyrus-3.6.1")
	sendDatagrams(t, sock, raws)
	waitSpool(t, spool, len(raws), p)
	if !strings.Contains(p.errs.String(), "broker unreachable") {
		t.Fatalf("no log line about the broker:\n%s", p.errs)
	}
	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil

	p2 := startRelay(t, sock, "--cyrus-socket", sock, "--spool", spool, "--amqp", testURL(), "--topic", topic)
	c.waitOnce(t, raws)
	waitSpool(t, spool, 0, p2)
	p2.stop(t)
}

// A full spool refuses a dlist request with NO (after --full-retries),
// counts it and logs it; what fitted was answered OK and is kept.
func TestRelaySpoolFullDList(t *testing.T) {
	dir := t.TempDir()
	sock, spool := filepath.Join(dir, "notify-dlist"), filepath.Join(dir, "spool")
	p := startRelay(t, sock, "--cyrus-dlist", sock, "--spool", spool, "--amqp", downURL,
		"--spool-max-count", "2", "--full-retries", "1", "--drain-timeout", "1s")
	raws := captures(t, "cyrus-3.6.1-dlist")[:3]
	for i, raw := range raws[:2] {
		if got := sendDList(t, sock, raw); !strings.HasPrefix(got, "OK") {
			t.Fatalf("request %d: %q, want OK", i, got)
		}
	}
	if n := spoolCount(t, spool); n != 2 {
		t.Fatalf("spool holds %d after two OKs", n)
	}
	if got := sendDList(t, sock, raws[2]); !strings.HasPrefix(got, "NO") {
		t.Fatalf("request on a full spool: %q, want NO", got)
	}
	p.stop(t)
	log := p.errs.String()
	for _, want := range []string{"spool full: notifications refused", "notification not relayed: given up", "refused_spool_full=2", "lost=1", "left_in_spool=2"} {
		if !strings.Contains(log, want) {
			t.Errorf("relay's log lacks %q", want)
		}
	}
	if n := spoolCount(t, spool); n != 2 {
		t.Fatalf("spool holds %d after stop", n)
	}
}

// A full spool holds datagrams back (the socket stops being read: Cyrus
// blocks) instead of dropping them; the refusal is logged and counted.
func TestRelaySpoolFullDatagramBackPressure(t *testing.T) {
	dir := t.TempDir()
	sock, spool := filepath.Join(dir, "notify"), filepath.Join(dir, "spool")
	p := startRelay(t, sock, "--cyrus-socket", sock, "--spool", spool, "--amqp", downURL, "--spool-max-count", "2")
	raws := captures(t, "cyrus-3.6.1")[:5]
	sendDatagrams(t, sock, raws)
	waitSpool(t, spool, 2, p)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.errs.String(), "spool full: notifications refused") {
		if time.Now().After(deadline) {
			t.Fatalf("no spool-full log line:\n%s", p.errs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if n := spoolCount(t, spool); n != 2 {
		t.Fatalf("spool holds %d, bound is 2", n)
	}
	if strings.Contains(p.errs.String(), "not relayed") {
		t.Fatalf("a datagram was given up:\n%s", p.errs)
	}
}

// A RabbitMQ restart (stop_app/start_app) while the relay publishes
// loses nothing: what comes in meanwhile is spooled, queues and messages
// are durable, and everything lands once. It disturbs the whole broker,
// so it runs only when BONNIE_TEST_RABBITMQ_RESTART=1 (never by default,
// not even under CI, where other packages share the broker in parallel).
func TestRelayRabbitMQRestart(t *testing.T) {
	if os.Getenv("BONNIE_TEST_RABBITMQ_RESTART") != "1" {
		t.Skip("restarts the shared RabbitMQ: set BONNIE_TEST_RABBITMQ_RESTART=1 to run")
	}
	requireBroker(t)
	ctl := func(args ...string) {
		if out, err := exec.Command("rabbitmqctl", args...).CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "start_app").Run() })
	topic := topicFor(t)
	c := startCentral(t, topic)
	dir := t.TempDir()
	sock, spool := filepath.Join(dir, "notify"), filepath.Join(dir, "spool")
	p := startRelay(t, sock, "--cyrus-socket", sock, "--spool", spool, "--amqp", testURL(), "--topic", topic)
	raws := captures(t, "cyrus-3.6.1")
	half := len(raws) / 2
	sendDatagrams(t, sock, raws[:half])
	waitSpool(t, spool, 0, p) // confirmed (maybe not consumed yet)
	ctl("stop_app")
	sendDatagrams(t, sock, raws[half:])
	deadline := time.Now().Add(30 * time.Second)
	for spoolCount(t, spool) < len(raws)-half { // kept while the broker is down
		if time.Now().After(deadline) {
			t.Fatalf("spool holds %d during the outage, want >= %d", spoolCount(t, spool), len(raws)-half)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctl("start_app")
	ctl("await_startup")
	c.waitOnce(t, raws)
	waitSpool(t, spool, 0, p)
	p.stop(t)
}
