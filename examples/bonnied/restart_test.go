package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/sys/unix"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
)

// loadUsers are the users of the appending clients, one IMAP session (one
// imapd process) each.
var loadUsers = []string{"u0", "u1", "u2", "u3"}

func loadOptions() cyrustest.Options {
	users := map[string]string{}
	for _, u := range loadUsers {
		users[u] = u + "-pw"
	}
	return cyrustest.Options{Users: users}
}

// appended is one APPEND a client completed: its Message-ID, the client
// (session) and when the command was sent and answered.
type appended struct {
	msgID      string
	session    int
	start, end time.Time
}

// appenders are IMAP clients that APPEND messages with unique Message-IDs
// to their INBOX, one after the other, until stopped.
type appenders struct {
	t        *testing.T
	clients  []*imapclient.Client
	mu       sync.Mutex
	done     []appended
	inflight []time.Time // per session: start of the APPEND in progress (zero: none)
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

func startAppenders(t *testing.T, s *cyrustest.Server, prefix string) *appenders {
	t.Helper()
	a := &appenders{t: t, stopCh: make(chan struct{}), inflight: make([]time.Time, len(loadUsers))}
	// Cyrus 3.6.1 creates its staging directory (spool/stage./) at the
	// first APPEND, and two sessions doing that at once can fail with "NO
	// System I/O error" (syslog: "couldn't create stage directory ...
	// File exists"). One APPEND first, in a session that sends no
	// notifications.
	q := s.DialQuiet(t, loadUsers[0])
	if _, err := appendMessage(q, "INBOX", testMessage("<warm-up@bonnie.test>", "warm-up"), nil); err != nil {
		t.Fatalf("warm-up APPEND: %v", err)
	}
	if err := q.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	for _, u := range loadUsers {
		c, _ := dialIMAP(t, s, u)
		a.clients = append(a.clients, c)
	}
	for i, c := range a.clients {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for n := 0; n < 100000; n++ {
				select {
				case <-a.stopCh:
					return
				default:
				}
				id := fmt.Sprintf("<%s-%d-%d@bonnie.test>", prefix, i, n)
				start := time.Now()
				a.mu.Lock()
				a.inflight[i] = start
				a.mu.Unlock()
				_, err := appendMessage(c, "INBOX", testMessage(id, "load"), nil)
				end := time.Now()
				a.mu.Lock()
				a.inflight[i] = time.Time{}
				if err == nil {
					a.done = append(a.done, appended{msgID: id, session: i, start: start, end: end})
				}
				a.mu.Unlock()
				if err != nil {
					select {
					case <-a.stopCh: // the test is ending: connections closed
					default:
						t.Errorf("APPEND %s: %v", id, err)
					}
					return
				}
			}
		}()
	}
	t.Cleanup(a.stop)
	return a
}

// stop ends the clients after their current APPEND. An APPEND can wait
// forever (a dlist notification nobody answers, when the test failed
// half-way): after waitTimeout the connections are closed.
func (a *appenders) stop() {
	select {
	case <-a.stopCh:
	default:
		close(a.stopCh)
	}
	ended := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(waitTimeout):
		a.t.Errorf("clients still in an APPEND %v after being stopped; closing them", waitTimeout)
		for _, c := range a.clients {
			c.Close()
		}
		<-ended
	}
}

// logout ends the IMAP sessions.
func (a *appenders) logout() {
	a.stop()
	for _, c := range a.clients {
		if err := c.Logout().Wait(); err != nil {
			a.t.Errorf("LOGOUT: %v", err)
		}
	}
}

func (a *appenders) completed() []appended {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.done)
}

// count returns how many APPENDs that started after t0 have completed.
func (a *appenders) count(t0 time.Time) int {
	n := 0
	for _, ap := range a.completed() {
		if ap.start.After(t0) {
			n++
		}
	}
	return n
}

// noneInFlightSince reports whether no APPEND that started before t0 is
// still in progress.
func (a *appenders) noneInFlightSince(t0 time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !slices.ContainsFunc(a.inflight, func(s time.Time) bool { return !s.IsZero() && s.Before(t0) })
}

// waitBlocked waits until every imapd of pids sleeps in a kernel function
// starting with fn (its /proc/PID/wchan), on three polls in a row: Cyrus is
// blocked, waiting for bonnied, and sends nothing it could lose.
func waitBlocked(t *testing.T, pids []int, fn, what string) {
	t.Helper()
	var last []string
	stable := 0
	waitUntil(t, waitTimeout, "every session blocked in "+what, func() bool {
		last = last[:0]
		all := true
		for _, pid := range pids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
			if err != nil {
				t.Fatalf("imapd %d: %v", pid, err)
			}
			last = append(last, string(b))
			all = all && strings.HasPrefix(string(b), fn)
		}
		if !all {
			stable = 0
			return false
		}
		stable++
		return stable >= 3
	})
	t.Logf("after the kill, the imapd of every session waits in %q", last)
}

// appendPositions maps each Message-ID of a MessageAppend in the log to its
// positions.
func appendPositions(recs []bonnie.Record) map[string][]bonnie.Position {
	out := map[string][]bonnie.Position{}
	for _, r := range ofType(recs, bonnie.MessageAppend) {
		for _, id := range r.Event.MessageIDs {
			out[id] = append(out[id], r.Position)
		}
	}
	return out
}

// sessionPIDs returns the imapd pid of each load session, from its Login.
func sessionPIDs(t *testing.T, recs []bonnie.Record) []int {
	t.Helper()
	pids := make([]int, len(loadUsers))
	for _, r := range ofType(recs, bonnie.Login) {
		if i := slices.Index(loadUsers, r.Event.User); i >= 0 {
			pids[i] = r.Event.PID
		}
	}
	for i, p := range pids {
		if p == 0 {
			t.Fatalf("no Login of %s in the log", loadUsers[i])
		}
	}
	return pids
}

// unansweredRE matches Cyrus 3.6.1's syslog lines for a notification it
// could not deliver or that was not answered OK (imap/notify.c; the same
// lines cyrustest.UnansweredNotifications counts), with the process.
var unansweredRE = regexp.MustCompile(`/(\w+)\[(\d+)\]: NOTIFY\([^)]*\): (unable to sendto\(\) socket|short write to socket|` +
	`datagram too large|failed to connect to |error sending |response |unable to create notify socket|unable to getsockopt)`)

// unansweredByPID counts those lines per imapd pid.
func unansweredByPID(s *cyrustest.Server) map[int]int {
	out := map[int]int{}
	for _, l := range s.Log() {
		if m := unansweredRE.FindStringSubmatch(l); m != nil && !strings.Contains(l, "): response OK ") {
			pid, _ := strconv.Atoi(m[2])
			out[pid]++
		}
	}
	return out
}

// checkNoDuplicates asserts that no Message-ID has two MessageAppend
// records, and that every one in the log was appended by a client.
func checkNoDuplicates(t *testing.T, recs []bonnie.Record, done []appended) map[string][]bonnie.Position {
	t.Helper()
	pos := appendPositions(recs)
	known := map[string]bool{}
	for _, ap := range done {
		known[ap.msgID] = true
	}
	for id, ps := range pos {
		if len(ps) != 1 {
			t.Errorf("%s is in the log %d times (positions %v)", id, len(ps), ps)
		}
		if !known[id] {
			t.Errorf("%s is in the log but no client completed its APPEND", id)
		}
	}
	return pos
}

// checkMissingExplained checks that every missing APPEND is explained by a Cyrus
// syslog line reporting an unanswered notification from the same imapd
// process (syslog arrives asynchronously: it waits for the lines), and that
// the total matches UnansweredNotifications.
func checkMissingExplained(t *testing.T, s *cyrustest.Server, pids []int, missing []appended) {
	t.Helper()
	perSession := make([]int, len(loadUsers))
	for _, ap := range missing {
		perSession[ap.session]++
	}
	explained := func() bool {
		un := unansweredByPID(s)
		for i, n := range perSession {
			if n > un[pids[i]] {
				return false
			}
		}
		return len(missing) <= s.UnansweredNotifications()
	}
	deadline := time.Now().Add(10 * time.Second)
	for !explained() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !explained() {
		un := unansweredByPID(s)
		for i, n := range perSession {
			if n > un[pids[i]] {
				t.Errorf("session %d (imapd %d): %d APPENDs missing from the log, Cyrus reported %d unanswered notifications",
					i, pids[i], n, un[pids[i]])
			}
		}
		t.Errorf("%d APPENDs missing, %d unanswered notifications in Cyrus's syslog:\n%s",
			len(missing), s.UnansweredNotifications(), strings.Join(s.Log(), "\n"))
	}
}

// checkDaemonStarts checks the cleanStop detail of each DaemonStart ("-"
// for none: the first start, on an empty log) and returns the records.
func checkDaemonStarts(t *testing.T, recs []bonnie.Record, wantClean []string) []bonnie.Record {
	t.Helper()
	starts := ofType(recs, bonnie.DaemonStart)
	var got []string
	for _, r := range starts {
		v, ok := extraString(r.Event, "vnd.bonnie.cleanStop")
		if !ok {
			v = "-"
		}
		got = append(got, v)
	}
	if !slices.Equal(got, wantClean) {
		t.Errorf("cleanStop of the DaemonStart events: %q, want %q", got, wantClean)
	}
	return starts
}

// TestKillRestartDList: in dlist mode nothing acknowledged is lost. Clients
// append continuously; bonnied is killed with SIGKILL in the middle and
// restarted on the same path (the socket file is stale: bonnied replaces
// it). Every APPEND whose notification Cyrus got an OK for is in the log
// exactly once; every missing one is matched by a syslog line of its imapd
// reporting an unanswered notification (in flight at the kill, or sent
// while nobody listened).
func TestKillRestartDList(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	sock := cyrustest.SocketPath(t, "notify.sock")
	opts := loadOptions()
	opts.NotifyDList = sock
	s := startCyrus(t, opts)
	cfg := daemonConfig{data: t.TempDir(), dlist: sock}
	lv := newLogView(cfg.data)
	d := startDaemon(t, "bonnied#1", cfg, lv)

	a := startAppenders(t, s, "kill")
	t0 := time.Now()
	waitUntil(t, waitTimeout, "100 APPENDs", func() bool { return a.count(t0) >= 100 })
	if n := s.UnansweredNotifications(); n != 0 {
		t.Fatalf("%d unanswered notifications before the kill:\n%s", n, strings.Join(s.Log(), "\n"))
	}
	killSent, killDead := d.kill(t)
	// While nobody listens Cyrus fails to connect, logs it and carries on:
	// let the clients complete some APPENDs then.
	waitUntil(t, waitTimeout, "APPENDs while bonnied is down", func() bool { return a.count(killDead) >= 20 })
	restart := time.Now()
	d = startDaemon(t, "bonnied#2", cfg, lv)
	d.waitLine(t, regexp.MustCompile(`msg="removed stale socket file"`))
	checkSocketFile(t, sock)
	ready := time.Now()
	waitUntil(t, waitTimeout, "100 APPENDs after the restart", func() bool { return a.count(ready) >= 100 })
	a.logout()
	d.stop(t)

	recs := lv.records(t)
	done := a.completed()
	pos := checkNoDuplicates(t, recs, done)
	var missing []appended
	var down int
	for _, ap := range done {
		present := len(pos[ap.msgID]) > 0
		switch {
		case !present:
			missing = append(missing, ap)
		case ap.start.After(killDead) && ap.end.Before(restart):
			t.Errorf("%s was appended while nobody listened and yet is in the log", ap.msgID)
		}
		if !present && !ap.start.Before(killSent) {
			down++ // sent while nobody listened (or before the new socket was ready)
		}
		if !present && ap.end.Before(killSent) {
			t.Errorf("%s: APPEND answered before the kill (Cyrus had an OK), missing from the log", ap.msgID)
		}
		if !present && ap.start.After(ready) {
			t.Errorf("%s: APPEND after the restart, missing from the log", ap.msgID)
		}
	}
	checkMissingExplained(t, s, sessionPIDs(t, recs), missing)
	// Each imapd waits for one reply at a time: at the instant of the
	// kill at most one notification per session was in the daemon.
	if inFlight := len(missing) - down; inFlight > len(loadUsers) {
		t.Errorf("%d APPENDs in flight at the kill are missing; at most %d (one per session) can be", inFlight, len(loadUsers))
	}
	t.Logf("%d APPENDs, %d missing from the log: %d sent while bonnied was down, %d in flight at the kill; %d unanswered notifications in Cyrus's syslog",
		len(done), len(missing), down, len(missing)-down, s.UnansweredNotifications())
	checkDaemonStarts(t, recs, []string{"-", "false"})
	lv.verify(t, 0)
}

// TestActivationRestart: with socket activation the socket outlives the
// daemon. The test is the holder (as systemd would be): it creates the
// socket, owned by cyrus, and passes it as fd 3 to each bonnied. Clients
// append all along while bonnied is killed twice and restarted.
func TestActivationRestart(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	for _, mode := range []string{"dlist", "datagram"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			runActivationRestart(t, mode)
		})
	}
}

type downtime struct {
	sent, dead, ready time.Time // kill sent, process reaped, next daemon ready
}

func runActivationRestart(t *testing.T, mode string) {
	dl := mode == "dlist"
	sock := cyrustest.SocketPath(t, "notify.sock")
	opts := loadOptions()
	cfg := daemonConfig{data: t.TempDir()}
	if dl {
		opts.NotifyDList, cfg.dlist = sock, sock
	} else {
		opts.NotifySocket, cfg.datagram = sock, sock
	}
	s := startCyrus(t, opts)
	// After Start: a socket that exists at Start is made 0666.
	cfg.activated = holdSocket(t, sock, dl)
	var st0 unix.Stat_t
	if err := unix.Lstat(sock, &st0); err != nil {
		t.Fatal(err)
	}
	lv := newLogView(cfg.data)
	d := startDaemon(t, "bonnied#1", cfg, lv)
	d.waitLine(t, regexp.MustCompile(`msg="bonnied started".* socket_activation=true`))

	a := startAppenders(t, s, "act-"+mode)
	pids := sessionPIDs(t, lv.waitFor(t, "the Logins", func(recs []bonnie.Record) bool {
		return len(ofType(recs, bonnie.Login)) == len(loadUsers)
	}))
	var downs []downtime
	ready := time.Now()
	for k := range 2 {
		waitUntil(t, waitTimeout, "50 APPENDs", func() bool { return a.count(ready) >= 50 })
		var dt downtime
		// How far the log is behind the clients just before the kill
		// (for the report: in datagram mode that backlog, read from
		// the socket and not yet committed, is what a kill loses).
		completed := a.completed()
		inLog := appendPositions(lv.records(t))
		behind := 0
		for _, ap := range completed {
			if len(inLog[ap.msgID]) == 0 {
				behind++
			}
		}
		dt.sent, dt.dead = d.kill(t)
		if dl {
			// Cyrus connects to the held socket: the connections wait in
			// its backlog and every session blocks in an APPEND, waiting
			// for the reply (the sessions whose notification the killed
			// daemon had read get an EOF, log it, complete their APPEND
			// and block in the next one).
			waitBlocked(t, pids, "unix_stream_read", "the reply to a dlist notification")
		} else {
			// Datagrams wait in the kernel queue (11 of them), then
			// Cyrus's sendto blocks: every session ends up waiting there.
			waitBlocked(t, pids, "unix_wait_for_peer", "sendto on a full notify socket")
		}
		d = startDaemon(t, fmt.Sprintf("bonnied#%d", k+2), cfg, lv)
		dt.ready = time.Now()
		ready = dt.ready
		downs = append(downs, dt)
		// Nothing Cyrus sent while nobody listened is lost: the APPENDs
		// that started during the downtime, and those blocked at the
		// restart (their MessageAppend could only be sent, or answered,
		// once the new daemon read the socket), are all in the log.
		waitUntil(t, waitTimeout, "the APPENDs blocked at the restart", func() bool { return a.noneInFlightSince(dt.ready) })
		var whileDown []string
		for _, ap := range a.completed() {
			if ap.start.Before(dt.ready) && (ap.start.After(dt.dead) || ap.end.After(dt.ready)) {
				whileDown = append(whileDown, ap.msgID)
			}
		}
		if len(whileDown) < len(loadUsers) {
			t.Fatalf("only %d APPENDs blocked by or made during the downtime; every session was blocked", len(whileDown))
		}
		lv.waitFor(t, fmt.Sprintf("the %d APPENDs blocked by or made during the downtime", len(whileDown)), func(recs []bonnie.Record) bool {
			pos := appendPositions(recs)
			for _, id := range whileDown {
				if len(pos[id]) == 0 {
					return false
				}
			}
			return true
		})
		t.Logf("kill %d: the log was %d completed APPENDs behind just before; %d APPENDs blocked by or made during the downtime, all in the log",
			k+1, behind, len(whileDown))
	}
	waitUntil(t, waitTimeout, "50 APPENDs after the last restart", func() bool { return a.count(ready) >= 50 })
	a.logout()
	if !dl {
		// Datagrams are not acknowledged: wait until the last ones are in.
		last := a.completed()
		lv.waitFor(t, "every APPEND since the last restart", func(recs []bonnie.Record) bool {
			pos := appendPositions(recs)
			for _, ap := range last {
				if ap.start.After(ready) && len(pos[ap.msgID]) == 0 {
					return false
				}
			}
			return true
		})
	}
	d.stop(t)

	// The holder's socket is still there, the same one: bonnied never
	// removes an inherited socket.
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil || st.Ino != st0.Ino {
		t.Errorf("the held socket %s was removed or replaced (%v)", sock, err)
	}

	recs := lv.records(t)
	done := a.completed()
	pos := checkNoDuplicates(t, recs, done)
	lost := make([]int, len(downs))
	var missing []appended
	for _, ap := range done {
		if len(pos[ap.msgID]) > 0 {
			continue
		}
		missing = append(missing, ap)
		// A notification is lost only if the killed daemon had read it:
		// it was sent before the kill, and (dlist) not answered before it.
		k := slices.IndexFunc(downs, func(dt downtime) bool { return ap.start.Before(dt.dead) })
		switch {
		case k < 0:
			t.Errorf("%s (APPEND %s..%s) is missing and was not in flight at any kill",
				ap.msgID, ap.start.Format(time.StampMicro), ap.end.Format(time.StampMicro))
		case dl && ap.end.Before(downs[k].sent):
			t.Errorf("%s: APPEND answered before kill %d (Cyrus had an OK), missing from the log", ap.msgID, k+1)
		default:
			lost[k]++
		}
	}
	for k, n := range lost {
		if dl && n > len(loadUsers) {
			t.Errorf("kill %d lost %d APPENDs; with one notification in flight per session at most %d can be", k+1, n, len(loadUsers))
		}
	}
	un := s.UnansweredNotifications()
	if dl {
		checkMissingExplained(t, s, sessionPIDs(t, recs), missing)
		// Each imapd waits for one reply at a time: a kill can leave at
		// most one notification per session unanswered.
		if max := len(downs) * len(loadUsers); un > max {
			t.Errorf("%d unanswered notifications for %d kills of %d sessions; at most %d can be in flight",
				un, len(downs), len(loadUsers), max)
		}
	} else if un != 0 {
		// The held socket always exists: Cyrus never fails to send.
		t.Errorf("%d notifications Cyrus could not send:\n%s", un, strings.Join(s.Log(), "\n"))
	}
	t.Logf("%s with socket activation: %d APPENDs, lost per kill %v (events read by the killed daemon and not yet durable); %d unanswered notifications in Cyrus's syslog",
		mode, len(done), lost, un)
	if !dl {
		// Each APPEND sends two datagrams, MailboxModseq then
		// MessageAppend: count the lost MailboxModseq too.
		modseqs := 0
		for _, r := range ofType(recs, bonnie.MailboxModseq) {
			if slices.Contains(loadUsers, strings.TrimPrefix(r.Event.Mailbox.Name, "user.")) {
				modseqs++
			}
		}
		t.Logf("datagrams lost to %d kills: %d of %d (MessageAppend %d, MailboxModseq %d)",
			len(downs), 2*len(done)-len(pos)-modseqs, 2*len(done), len(missing), len(done)-modseqs)
	}

	starts := checkDaemonStarts(t, recs, []string{"-", "false", "false"})
	for _, r := range starts {
		if v, _ := extraString(r.Event, "vnd.bonnie.socketActivated"); v != "true" {
			t.Errorf("DaemonStart at %d: socketActivated %q", r.Position, v)
		}
	}
	lv.verify(t, 0)
}

// TestDownWithoutActivation: without socket activation, in datagram mode,
// what Cyrus sends while nobody listens is lost by Cyrus's design (it logs
// "unable to sendto"); bonnied records at its next start that it was down,
// since when, and whether it had stopped cleanly.
func TestDownWithoutActivation(t *testing.T) {
	requireEnv(t)
	t.Parallel()
	sock := cyrustest.SocketPath(t, "notify.sock")
	s := startCyrus(t, cyrustest.Options{Users: map[string]string{"alice": "alice-pw"}, NotifySocket: sock})
	cfg := daemonConfig{data: t.TempDir(), datagram: sock}
	lv := newLogView(cfg.data)
	d := startDaemon(t, "bonnied#1", cfg, lv)

	c, _ := dialIMAP(t, s, "alice")
	created := func(name string) func([]bonnie.Record) bool {
		return func(recs []bonnie.Record) bool {
			return slices.ContainsFunc(ofType(recs, bonnie.MailboxCreate), func(r bonnie.Record) bool {
				return r.Event.Mailbox.Name == name
			})
		}
	}
	if err := c.Create("INBOX.Before", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	lv.waitFor(t, "CREATE INBOX.Before", created("user.alice.Before"))

	// 1. A clean stop: the socket file goes with the daemon.
	d.stop(t)
	if err := unix.Access(sock, unix.F_OK); err == nil {
		t.Errorf("socket %s still exists after a clean stop", sock)
	}
	recs := lv.records(t)
	stopRec := recs[len(recs)-1]
	if stopRec.Event.Type != bonnie.DaemonStop {
		t.Fatalf("last record after SIGTERM is %s", stopRec.Event.Type)
	}
	if err := c.Create("INBOX.WhileStopped", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	s.WaitLog(t, regexp.MustCompile(`NOTIFY\(EVENT\): unable to sendto\(\) socket: No such file or directory`), waitTimeout)
	d = startDaemon(t, "bonnied#2", cfg, lv)
	recs = lv.records(t)
	start2 := ofType(recs, bonnie.DaemonStart)[1]
	checkDown(t, start2, "true", stopRec)

	// 2. A crash: the socket file stays, stale.
	recs = lv.records(t)
	lastBeforeKill := recs[len(recs)-1]
	killSent, _ := d.kill(t)
	if err := c.Create("INBOX.WhileKilled", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	s.WaitLog(t, regexp.MustCompile(`NOTIFY\(EVENT\): unable to sendto\(\) socket: Connection refused`), waitTimeout)
	d = startDaemon(t, "bonnied#3", cfg, lv)
	d.waitLine(t, regexp.MustCompile(`msg="removed stale socket file"`))
	recs = lv.records(t)
	start3 := ofType(recs, bonnie.DaemonStart)[2]
	checkDown(t, start3, "false", lastBeforeKill)
	since, _ := extraString(start3.Event, "vnd.bonnie.downSince")
	if ts, err := time.Parse(time.RFC3339Nano, since); err != nil || ts.After(killSent) {
		t.Errorf("downSince %q is not a time before the kill (%s): %v", since, killSent.UTC().Format(time.RFC3339Nano), err)
	}

	if err := c.Create("INBOX.After", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	lv.waitFor(t, "CREATE INBOX.After", created("user.alice.After"))
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	lv.waitFor(t, "Logout", func(recs []bonnie.Record) bool { return len(ofType(recs, bonnie.Logout)) == 1 })
	d.stop(t)

	recs = lv.records(t)
	for _, name := range []string{"user.alice.WhileStopped", "user.alice.WhileKilled"} {
		if created(name)(recs) {
			t.Errorf("%s was created while nobody listened and yet is in the log", name)
		}
	}
	// Each lost notification has its syslog line: one CREATE each here.
	if n := s.UnansweredNotifications(); n != 2 {
		t.Errorf("%d unsent notifications in Cyrus's syslog, want 2 (one CREATE per down period):\n%s", n, strings.Join(s.Log(), "\n"))
	}
	checkDaemonStarts(t, recs, []string{"-", "true", "false"})
	lv.verify(t, 0)
}

// checkDown checks a DaemonStart's account of the previous run: clean or
// not, down since the last record appended before, which is at
// lastPosition.
func checkDown(t *testing.T, start bonnie.Record, clean string, last bonnie.Record) {
	t.Helper()
	got := map[string]string{}
	for _, k := range []string{"vnd.bonnie.cleanStop", "vnd.bonnie.downSince", "vnd.bonnie.lastPosition"} {
		got[k], _ = extraString(start.Event, k)
	}
	want := map[string]string{
		"vnd.bonnie.cleanStop":    clean,
		"vnd.bonnie.downSince":    last.Appended.UTC().Format(time.RFC3339Nano),
		"vnd.bonnie.lastPosition": strconv.FormatUint(uint64(last.Position), 10),
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("DaemonStart at %d: %s = %q, want %q", start.Position, k, got[k], w)
		}
	}
}
