package main

// Body fetching by the relay, every part real: a Cyrus (internal/cyrustest)
// notifying the relay's datagram socket, the relay reading bodies from
// Cyrus's spool or over IMAP, RabbitMQ, and a central ingest in process
// (bonnie.Engine on SQLite, with amqp.ExpectBodies, amqp.BodyReceiver and
// fetch.Relayed, as bonnied --amqp wires them).

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/internal/cyrustest"
	"github.com/bonnie-archive/bonnie/internal/testmail"
	"github.com/bonnie-archive/bonnie/source/amqp"
	"github.com/bonnie-archive/bonnie/store/blob"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

type bodyCentral struct {
	log   *sqlite.Log
	store *blob.Store
	recv  *amqp.BodyReceiver
}

// startBodyCentral runs the central ingest of topic with relayed bodies.
func startBodyCentral(t *testing.T, topic string) *bodyCentral {
	t.Helper()
	t.Cleanup(func() { // the bodies' exchange and queue too
		if conn, err := amqp091.Dial(testURL()); err == nil {
			if ch, err := conn.Channel(); err == nil {
				bt := amqp.BodiesTopic(topic)
				_, _ = ch.QueueDelete(amqp.QueueName(bt, amqp.DefaultGroup), false, false, false)
				_ = ch.ExchangeDelete(bt, false, false)
			}
			conn.Close()
		}
	})
	lg, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	store, err := blob.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rel := fetch.NewRelayed(store)
	src, err := amqp.NewSource("amqp", topic, amqp.Config{URL: testURL(), Window: 256})
	if err != nil {
		t.Fatal(err)
	}
	src.Subscriber = amqp.ExpectBodies(src.Subscriber, rel)
	bsub, err := amqp.NewSubscriber(amqp.Config{URL: testURL(), Window: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := bsub.SubscribeInitialize(amqp.BodiesTopic(topic)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := bsub.Subscribe(ctx, amqp.BodiesTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	c := &bodyCentral{log: lg, store: store,
		recv: &amqp.BodyReceiver{Store: store, Dir: t.TempDir(), Logger: quietLog(), OnStored: rel.Stored}}
	recvDone := make(chan struct{})
	go func() { defer close(recvDone); c.recv.Run(ch) }()
	eng, err := bonnie.New(bonnie.Options{Store: lg, Sources: []bonnie.Source{src}, Logger: quietLog(),
		Bodies: rel, BodyTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
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
		bsub.Close()
		<-recvDone
	})
	return c
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitStored waits until the central receiver counted n bodies stored.
func (c *bodyCentral) waitStored(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, stored, _ := c.recv.Counts(); stored >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("central stored %v bodies, want %d", fmt.Sprint(c.recv.Counts()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// appended waits for the MessageAppend of uid in folder (by mailbox name)
// in the central log and returns it; it fails on a second one.
func (c *bodyCentral) appended(t *testing.T, mailbox string, uid uint32, p *relayProc) bonnie.Record {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		recs, err := c.log.Read(t.Context(), 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		var found []bonnie.Record
		for _, r := range recs {
			if r.Event.Type == bonnie.MessageAppend && r.Event.Mailbox.Name == mailbox && len(r.Event.UIDs) == 1 && r.Event.UIDs[0] == uid {
				found = append(found, r)
			}
		}
		if len(found) > 1 {
			t.Fatalf("%d events for %s UID %d", len(found), mailbox, uid)
		}
		if len(found) == 1 {
			return found[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event for %s UID %d\n%s", mailbox, uid, p.errs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startBodyRelay runs the relay on a datagram socket Cyrus (user cyrus)
// writes to.
func startBodyRelay(t *testing.T, socket string, args ...string) *relayProc {
	t.Helper()
	p := &relayProc{errs: &syncBuf{}, done: make(chan error, 1)}
	p.cmd = exec.Command(relayBin, append([]string{"--cyrus-socket", socket, "--cyrus-user", "cyrus", "--log-level", "debug", "--metrics", ""}, args...)...)
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
	for !strings.Contains(p.errs.String(), "bonnie-relay started") {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("relay exited: %v\n%s", err, p.errs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay did not start\n%s", p.errs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

func appendTo(t *testing.T, c *imapclient.Client, mailbox string, b []byte) uint32 {
	t.Helper()
	cmd := c.Append(mailbox, int64(len(b)), &imap.AppendOptions{Time: time.Date(2026, 11, 28, 20, 0, 0, 0, time.UTC)})
	if _, err := cmd.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := cmd.Wait()
	if err != nil {
		t.Fatalf("APPEND: %v", err)
	}
	return uint32(data.UID)
}

// checkBody checks that rec names body and that the central store holds
// it byte for byte.
func (c *bodyCentral) checkBody(t *testing.T, rec bonnie.Record, body []byte) {
	t.Helper()
	if len(rec.Event.Bodies) != 1 || rec.Event.Bodies[0].Error != "" {
		t.Fatalf("event %d bodies: %+v", rec.Position, rec.Event.Bodies)
	}
	ref := rec.Event.Bodies[0]
	if ref.Digest != blob.Digest(body) || ref.Size != int64(len(body)) || ref.InternalDate.IsZero() {
		t.Fatalf("event %d names %+v, want sha256 %s size %d", rec.Position, ref, blob.Digest(body), len(body))
	}
	got, err := c.store.Get(ref.Digest)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("central store: %d bytes, %v", len(got), err)
	}
}

func TestRelayFetchesBodies(t *testing.T) {
	requireBroker(t)
	topic := topicFor(t)
	sock := cyrustest.SocketPath(t, "relay.sock")
	spoolDir := t.TempDir()
	os.Chmod(spoolDir, 0o700)
	central := startBodyCentral(t, topic)

	// The relay binds the socket first; Cyrus then writes to it.
	pwFile := filepath.Join(t.TempDir(), "imap.pw")
	relayArgs := func(broker string, extra ...string) []string {
		return append([]string{"--spool", spoolDir, "--amqp", broker, "--topic", topic, "--drain-timeout", "2s"}, extra...)
	}
	// First run: the broker is unreachable, so nothing is fetched yet.
	relay := startBodyRelay(t, sock, relayArgs(downURL)...)
	s := cyrustest.Start(t, cyrustest.Options{
		Users:        map[string]string{"alice": "alice-pw"},
		NotifySocket: sock,
		Config:       map[string]string{"munge8bit": "no"},
	})
	adminPW, _ := s.Password(cyrustest.AdminUser)
	if err := os.WriteFile(pwFile, []byte(adminPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	partition := filepath.Join(s.Dir(), "spool")
	alice := s.Dial(t, "alice")

	// Delivered and expunged at once, before the relay reads anything:
	// the spool file is still there (delayed expunge).
	gone := testmail.EightBit("expunged-at-once").Bytes
	goneUID := appendTo(t, alice, "INBOX", gone)
	if _, err := alice.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := alice.Store(imap.UIDSetNum(imap.UID(goneUID)), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := alice.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for spoolCount(t, spoolDir) < 3 { // Login, MessageAppend, MessageExpunge at least
		if time.Now().After(deadline) {
			t.Fatalf("spool holds %d\n%s", spoolCount(t, spoolDir), relay.errs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the rest of the burst
	relay.stop(t)

	// Second run: the broker is there; the spool first, IMAP for the rest.
	// The relay is killed (SIGKILL) right after the bodies of its first
	// batch are confirmed, before the notifications are published.
	t.Setenv("BONNIE_RELAY_TEST_CRASH_AFTER_BODIES", "1")
	withBodies := relayArgs(testURL(), "--cyrus-spool", partition, "--imap", s.IMAPAddr(), "--imap-password-file", pwFile, "--body-chunk-size", "1048576")
	relay = startBodyRelay(t, sock, withBodies...)
	select {
	case err := <-relay.done:
		relay.done <- err
		if !strings.Contains(err.Error(), "killed") {
			t.Fatalf("relay: %v, want killed\n%s", err, relay.errs)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the relay was not killed after publishing bodies\n%s", relay.errs)
	}
	if n := spoolCount(t, spoolDir); n < 3 {
		t.Fatalf("spool holds %d after the kill", n)
	}
	central.waitStored(t, 1) // published before the kill
	_, storedBefore, _ := central.recv.Counts()
	t.Setenv("BONNIE_RELAY_TEST_CRASH_AFTER_BODIES", "0")
	relay = startBodyRelay(t, sock, withBodies...)
	rec := central.appended(t, "user.alice", goneUID, relay)
	central.checkBody(t, rec, gone)
	waitSpool(t, spoolDir, 0, relay)
	central.waitStored(t, storedBefore+1) // and again after it, harmlessly

	// Live: a 10 MiB message (binary attachment, 8-bit bytes; several
	// chunks of 1 MiB) and a small one.
	big := testmail.Large("relay-big", 10<<20, 7).Bytes
	small := testmail.EightBit("relay-small").Bytes
	bigUID := appendTo(t, alice, "INBOX", big)
	smallUID := appendTo(t, alice, "INBOX", small)
	central.checkBody(t, central.appended(t, "user.alice", bigUID, relay), big)
	central.checkBody(t, central.appended(t, "user.alice", smallUID, relay), small)
	waitSpool(t, spoolDir, 0, relay)
	if ents, _ := filepath.Glob(filepath.Join(spoolDir, "blobs", "??", "*")); len(ents) != 0 {
		t.Fatalf("the relay's body store still holds %v after publishing", ents)
	}
	relay.stop(t)

	// The broker away: bodies are fetched all the same, as soon as spooled.
	relay = startBodyRelay(t, sock, relayArgs(downURL, "--cyrus-spool", partition)...)
	offline := testmail.EightBit("broker-down").Bytes
	offlineUID := appendTo(t, alice, "INBOX", offline)
	deadline = time.Now().Add(30 * time.Second)
	for fetchedRows(t, spoolDir) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no body fetched while the broker is away\n%s", relay.errs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	relay.stop(t)
	// A body fetched right before a crash, named by no row, is removed at
	// the next start.
	local, err := blob.Open(filepath.Join(spoolDir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := local.Put([]byte("fetched, then kill -9 before the row said so"))
	if err != nil {
		t.Fatal(err)
	}
	relay = startBodyRelay(t, sock, withBodies...)
	if ok, _ := local.Has(orphan.Digest); ok {
		t.Fatal("an orphan body stayed in the relay's store")
	}
	central.checkBody(t, central.appended(t, "user.alice", offlineUID, relay), offline)
	waitSpool(t, spoolDir, 0, relay)
	relay.stop(t)

	// IMAP down and no spool: the event is published with the failure.
	relay = startBodyRelay(t, sock, relayArgs(testURL(), "--imap", "127.0.0.1:1", "--imap-password-file", pwFile)...)
	failUID := appendTo(t, alice, "INBOX", testmail.EightBit("imap-down").Bytes)
	rec = central.appended(t, "user.alice", failUID, relay)
	if len(rec.Event.Bodies) != 1 || rec.Event.Bodies[0].Digest != "" || !strings.Contains(rec.Event.Bodies[0].Error, "127.0.0.1:1") {
		t.Fatalf("IMAP down: %+v", rec.Event.Bodies)
	}
	relay.stop(t)

	if dls, _ := central.log.DeadLetters(t.Context(), false); len(dls) != 0 {
		t.Fatalf("dead letters: %+v", dls)
	}
	js, _ := json.Marshal(rec.Event.Bodies)
	t.Logf("IMAP down recorded as %s", js)
}

// The body flags are checked before anything starts.
func TestBodyFlags(t *testing.T) {
	base := []string{"--cyrus-socket", "/x", "--spool", "/s", "--amqp", "amqp://u:p@h:1/"}
	for _, bad := range [][]string{
		{"--imap", "127.0.0.1:143"}, // no password file
		{"--cyrus-spool", "/p", "--body-parallel", "0"},
		{"--cyrus-spool", "/p", "--body-chunk-size", "100"},
		{"--cyrus-spool", "/p", "--body-chunk-size", "134217728"},
	} {
		if _, err := parse(append(base, bad...), io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	c, err := parse(append(base, "--cyrus-spool", "/p1", "--cyrus-spool", "/p2", "--imap", "h:143", "--imap-password-file", "/f"), io.Discard)
	if err != nil || len(c.bodies.Spool) != 2 || !c.bodies.Enabled() || c.bodies.chunk != amqp.DefaultChunkSize {
		t.Fatalf("%+v %v", c, err)
	}
	if c, _ := parse(base, io.Discard); c.bodies.Enabled() {
		t.Fatal("bodies fetched without a source")
	}
}

// fetchedRows counts the spooled rows with bodies recorded.
func fetchedRows(t *testing.T, dir string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "spool.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM spool WHERE bodies IS NOT NULL AND bodies != ''`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRelayFetchesBodiesOverTLS: the relay fetches bodies from a Cyrus
// that it reaches over implicit TLS (imaps) with a private CA given by
// --imap-ca-file; the central store gets the message byte for byte.
func TestRelayFetchesBodiesOverTLS(t *testing.T) {
	requireBroker(t)
	topic := topicFor(t)
	sock := cyrustest.SocketPath(t, "relay.sock")
	spoolDir := t.TempDir()
	os.Chmod(spoolDir, 0o700)
	central := startBodyCentral(t, topic)
	s := cyrustest.Start(t, cyrustest.Options{
		Users:        map[string]string{"alice": "alice-pw"},
		NotifySocket: sock,
		TLS:          true,
	})
	adminPW, _ := s.Password(cyrustest.AdminUser)
	pwFile := filepath.Join(t.TempDir(), "imap.pw")
	if err := os.WriteFile(pwFile, []byte(adminPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := startBodyRelay(t, sock, "--spool", spoolDir, "--amqp", testURL(), "--topic", topic, "--drain-timeout", "2s",
		"--imap", s.IMAPSAddr(), "--imap-tls", "tls", "--imap-ca-file", s.CAFile(), "--imap-password-file", pwFile)
	alice := s.Dial(t, "alice")
	body := []byte("From: alice@example.org\r\nSubject: over TLS\r\nMessage-ID: <relay-tls@bonnie.test>\r\n\r\nFetched over imaps.\r\n")
	uid := appendTo(t, alice, "INBOX", body)
	rec := central.appended(t, "user.alice", uid, relay)
	central.checkBody(t, rec, body)
}
