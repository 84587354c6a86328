package main

// The multi-host chain under faults, every part real: Cyrus -> bonnie-relay
// (dlist, its socket held as systemd would) -> RabbitMQ -> bonnied --amqp
// --postgres. Clients append all along while the relay and the central
// ingest are killed with SIGKILL, Cyrus is restarted and (with
// BONNIE_TEST_RABBITMQ_RESTART=1: it disturbs every other user of the
// shared broker, so .ci/run runs it alone, after the main tests) RabbitMQ
// is stopped and started. Afterwards every APPEND has exactly one event
// in the central log, except notifications in flight at the instant of a
// kill, each of which Cyrus logged as unanswered, and the chain verifies.

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/source/amqp"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
)

var (
	relayOnce sync.Once
	relayBin  string
	relayErr  error
)

// buildRelay builds bonnie-relay next to bonnied (with the race detector
// when this test has it).
func buildRelay(t *testing.T) string {
	t.Helper()
	relayOnce.Do(func() {
		relayBin = filepath.Join(filepath.Dir(bonniedBin), "bonnie-relay")
		args := []string{"build", "-o", relayBin}
		if raceEnabled {
			args = append(args, "-race")
		}
		if out, err := exec.Command("go", append(args, "../bonnie-relay")...).CombinedOutput(); err != nil {
			relayErr = fmt.Errorf("go build bonnie-relay: %v\n%s", err, out)
		}
	})
	if relayErr != nil {
		t.Fatal(relayErr)
	}
	return relayBin
}

// startRelayProc runs bonnie-relay on the held socket (LISTEN_FDS, as
// systemd passes it) and waits until it serves.
func startRelayProc(t *testing.T, name string, held *os.File, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, buildRelay(t)}, args...)...)
	cmd.ExtraFiles = []*os.File{held}
	cmd.Env = append(cleanEnv(), "LISTEN_FDS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d := &daemon{t: t, name: name, cmd: cmd, out: newLines(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if d.running() {
			_ = cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("output of %s (pid %d):\n%s", name, cmd.Process.Pid, d.out)
		}
	})
	d.waitLine(t, regexp.MustCompile(`msg="bonnie-relay started"`))
	return d
}

func rabbitmqctl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("rabbitmqctl", args...).CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
	}
}

func TestRelayChainFaults(t *testing.T) {
	requireEnv(t)
	requireBroker(t)
	restartBroker := os.Getenv("BONNIE_TEST_RABBITMQ_RESTART") == "1"
	_, dsn := pgtest.Schema(t)
	topic := "bonnie-test-chain-" + watermill.NewUUID()
	t.Cleanup(func() {
		if conn, err := amqp091.Dial(amqpTestURL()); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(amqp.QueueName(topic, amqp.DefaultGroup), false, false, false)
				_ = ch.ExchangeDelete(topic, false, false)
			}
			conn.Close()
		}
	})

	sock := cyrustest.SocketPath(t, "relay.sock")
	opts := loadOptions()
	opts.NotifyDList = sock
	s := startCyrus(t, opts)
	held := holdSocket(t, sock, true)
	spool := t.TempDir()
	relayArgs := []string{"--metrics", "", "--cyrus-dlist", sock, "--spool", spool, "--amqp", amqpTestURL(), "--topic", topic,
		"--host", "imap1", "--drain-timeout", "30s"}
	relay := startRelayProc(t, "relay#1", held, relayArgs...)

	lv := &logView{dsn: dsn}
	central := daemonConfig{data: t.TempDir(), extra: []string{"--amqp", amqpTestURL(), "--amqp-topic", topic, "--postgres", dsn}}
	cd := startDaemon(t, "central#1", central, lv)

	var all []*appenders
	a := startAppenders(t, s, "chain0")
	all = append(all, a)
	pids := map[int][]int{} // per appenders generation, the imapd pid of each session
	logins := func(gen int) {
		recs := lv.waitFor(t, "the Logins of the clients", func(recs []bonnie.Record) bool {
			return len(ofType(recs, bonnie.Login)) >= (gen+1)*len(loadUsers)
		})
		var ps []int
		for _, r := range ofType(recs, bonnie.Login) {
			if slices.Contains(loadUsers, r.Event.User) {
				ps = append(ps, r.Event.PID)
			}
		}
		pids[gen] = ps[gen*len(loadUsers):]
	}
	logins(0)
	allPIDs := func() []int {
		var out []int
		for g := range len(all) {
			out = append(out, pids[g]...)
		}
		return out
	}

	type fault struct {
		what       string
		sent, dead time.Time // the kill, for those that kill a process
	}
	var faults []fault
	mark := time.Now()
	steady := func(what string) {
		t.Helper()
		waitUntil(t, 2*waitTimeout, "30 APPENDs "+what, func() bool { return a.count(mark) >= 30 })
		mark = time.Now()
	}

	// 1. kill -9 the relay: Cyrus's connections wait in the held socket's
	// backlog; the next relay answers them.
	steady("before killing the relay")
	sent, dead := relay.kill(t)
	faults = append(faults, fault{"relay killed", sent, dead})
	waitBlocked(t, pids[0], "unix_stream_read", "the reply to a dlist notification")
	relay = startRelayProc(t, "relay#2", held, relayArgs...)
	steady("after the relay's restart")

	// 2. kill -9 the central ingest: the relay goes on publishing into the
	// durable queue; the next central ingest consumes it.
	sent, dead = cd.kill(t)
	faults = append(faults, fault{"central ingest killed", sent, dead})
	steady("while the central ingest is down")
	cd = startDaemon(t, "central#2", central, lv)
	steady("after the central ingest's restart")

	// 3. RabbitMQ stopped and started: the relay keeps what Cyrus sends in
	// its spool and publishes it once the broker is back.
	if restartBroker {
		t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "start_app").Run() })
		rabbitmqctl(t, "stop_app")
		steady("while RabbitMQ is stopped")
		if n := spoolCountAt(t, spool); n == 0 {
			t.Errorf("the relay's spool is empty while the broker is down")
		}
		rabbitmqctl(t, "start_app")
		rabbitmqctl(t, "await_startup")
		faults = append(faults, fault{what: "RabbitMQ restarted"})
		steady("after RabbitMQ's restart")
	} else {
		t.Log("RabbitMQ restart not exercised: set BONNIE_TEST_RABBITMQ_RESTART=1 (it disturbs every user of the shared broker)")
	}

	// 4. Cyrus restarted: its sessions are cut, so the clients log in
	// again afterwards; the relay keeps its socket.
	a.logout()
	s.Restart(t)
	faults = append(faults, fault{what: "Cyrus restarted"})
	mark = time.Now()
	a = startAppenders(t, s, "chain1")
	all = append(all, a)
	logins(1)
	steady("after Cyrus's restart")
	a.logout()

	// Drain: SIGTERM the relay (it publishes what its spool holds), then
	// wait until the central log has every APPEND the clients completed
	// after the last kill.
	stopTolerant(t, relay)
	var done []appended
	for g, ap := range all {
		for _, x := range ap.completed() {
			x.session += g * len(loadUsers)
			done = append(done, x)
		}
	}
	lastKill := faults[1].dead
	lv.waitFor(t, "every APPEND made after the last kill", func(recs []bonnie.Record) bool {
		pos := appendPositions(recs)
		for _, ap := range done {
			if ap.start.After(lastKill) && len(pos[ap.msgID]) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would land by now
	stopTolerant(t, cd)

	recs := lv.records(t)
	pos := checkNoDuplicates(t, recs, done)
	var missing []appended
	for _, ap := range done {
		if len(pos[ap.msgID]) > 0 {
			continue
		}
		missing = append(missing, ap)
		// Only the relay's kill can lose a notification: what it answered
		// OK is in its spool; the central ingest's kill loses nothing
		// (unacknowledged messages are redelivered).
		if !ap.start.Before(faults[0].dead) || ap.end.Before(faults[0].sent) {
			t.Errorf("%s (APPEND %s..%s) is missing and was not in flight when the relay was killed",
				ap.msgID, ap.start.Format(time.StampMicro), ap.end.Format(time.StampMicro))
		}
	}
	if len(missing) > len(loadUsers) {
		t.Errorf("%d APPENDs lost; one notification in flight per session allows %d", len(missing), len(loadUsers))
	}
	// Each missing APPEND is matched by a syslog line of its imapd
	// reporting an unanswered notification (syslog arrives late: wait).
	sessionPIDs := allPIDs()
	perPID := map[int]int{}
	for _, ap := range missing {
		perPID[sessionPIDs[ap.session]]++
	}
	explained := func() bool {
		un := unansweredByPID(s)
		for pid, n := range perPID {
			if n > un[pid] {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(10 * time.Second); !explained() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !explained() {
		t.Errorf("missing APPENDs per imapd %v, unanswered notifications per imapd in Cyrus's syslog %v", perPID, unansweredByPID(s))
	}
	lv.verify(t, 0)
	if n := queueDepth(t, topic); n != 0 {
		t.Errorf("%d messages left in the ingest queue", n)
	}
	if n := spoolCountAt(t, spool); n != 0 {
		t.Errorf("%d notifications left in the relay's spool after its clean stop", n)
	}
	var names []string
	for _, f := range faults {
		names = append(names, f.what)
	}
	t.Logf("faults %v: %d APPENDs, %d in the central log, %d lost (in flight at the relay's kill, each unanswered in Cyrus's log: %d such lines)",
		names, len(done), len(done)-len(missing), len(missing), s.UnansweredNotifications())
}

// spoolCountAt reads how many notifications the relay's spool holds.
func spoolCountAt(t *testing.T, dir string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "spool.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM spool`).Scan(&n); err != nil {
		t.Fatalf("read the relay's spool: %v", err)
	}
	return n
}

// crashOutput is what must never appear in a process's output, even
// while the broker is away (when errors are expected): panics and races.
var crashOutput = regexp.MustCompile(`^panic:|WARNING: DATA RACE|fatal error:`)

// stopTolerant is daemon.stop for a process that rightly logged errors
// (the broker was away): SIGTERM, a clean exit, no panic or race.
func stopTolerant(t *testing.T, d *daemon) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", d.name, err)
	}
	select {
	case <-d.done:
	case <-time.After(2 * waitTimeout):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Fatalf("%s did not stop after SIGTERM:\n%s", d.name, d.out)
	}
	if d.err != nil {
		t.Errorf("%s exited with %v after SIGTERM:\n%s", d.name, d.err, d.out)
	}
	if bad := d.out.matching(crashOutput); len(bad) > 0 {
		t.Errorf("%s crashed or raced:\n%s", d.name, d.out)
	}
}
