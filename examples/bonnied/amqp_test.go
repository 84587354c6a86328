package main

// bonnied as the central ingest: --amqp consumes what relays publish and
// --postgres keeps the log on PostgreSQL. Needs the local RabbitMQ
// (BONNIE_TEST_AMQP) and PostgreSQL (BONNIE_TEST_POSTGRES): skipped
// without them, failed when CI=true.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/source/amqp"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
)

func amqpTestURL() string {
	if u := os.Getenv("BONNIE_TEST_AMQP"); u != "" {
		return u
	}
	return amqp.DefaultURL
}

func requireBroker(t *testing.T) {
	t.Helper()
	conn, err := amqp091.Dial(amqpTestURL())
	if err == nil {
		conn.Close()
		return
	}
	msg := fmt.Sprintf("RabbitMQ at %s is unreachable (set BONNIE_TEST_AMQP): %v", amqp.RedactURL(amqpTestURL()), err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// queueDepth returns the messages ready in the ingest queue of topic.
func queueDepth(t *testing.T, topic string) int {
	t.Helper()
	conn, err := amqp091.Dial(amqpTestURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(amqp.QueueName(topic, amqp.DefaultGroup), true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

func TestAMQPToPostgres(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("preparing the binaries: %v", buildErr)
	}
	requireBroker(t)
	_, dsn := pgtest.Schema(t)
	topic := "bonnie-test-bonnied-" + watermill.NewUUID()
	t.Cleanup(func() {
		if conn, err := amqp091.Dial(amqpTestURL()); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(amqp.QueueName(topic, amqp.DefaultGroup), false, false, false)
				_ = ch.ExchangeDelete(topic, false, false)
			}
			conn.Close()
		}
	})

	files, _ := filepath.Glob("../../testdata/cyrus-3.6.1/*.bin")
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no captures")
	}
	var raws [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, b)
	}

	// Published before bonnied runs: the publisher declares the ingest's
	// queue, so nothing is lost while the central ingest is down.
	pub, err := amqp.NewPublisher(amqp.Config{URL: amqpTestURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	publish := func(raws [][]byte, uuid func(int) string) {
		for i, raw := range raws {
			m := message.NewMessage(uuid(i), raw)
			m.Metadata.Set(bonnie.MetaSource, "imap1:cyrus-datagram:/run/bonnie/notify")
			if err := pub.Publish(topic, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(raws[:50], func(int) string { return watermill.NewUUID() })

	data := t.TempDir()
	var errs bytes.Buffer
	cmd := exec.Command(bonniedBin, "--data", data, "--amqp", amqpTestURL(), "--amqp-topic", topic,
		"--postgres", dsn, "--metrics", "")
	cmd.Stderr = &errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("bonnied's log:\n%s", errs.String())
		}
	}()
	// The rest while it runs, and the first ones again: a relay that
	// republishes after a crash (new message, same notification).
	publish(raws[50:], func(int) string { return watermill.NewUUID() })
	publish(raws[:5], func(int) string { return watermill.NewUUID() })

	// bonnie --postgres DSN events lists them: the notifications once
	// each, after bonnied's own start event.
	var lines []string
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command(bonnieBin, "--postgres", dsn, "events", "--json").Output()
		if err == nil {
			lines = strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) >= len(raws)+1 && queueDepth(t, topic) == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("bonnie events: %v, %d lines, want %d", err, len(lines), len(raws)+1)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("bonnied: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bonnied did not stop")
	}
	out, err := exec.Command(bonnieBin, "--postgres", dsn, "events", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(string(out)), "\n")
	// start + notifications + stop
	if len(lines) != len(raws)+2 {
		t.Fatalf("%d events, want %d (start, %d notifications, stop):\n%s", len(lines), len(raws)+2, len(raws), out)
	}
	if !strings.Contains(lines[0], "DaemonStart") || !strings.Contains(lines[len(lines)-1], "DaemonStop") {
		t.Fatalf("first and last events are not bonnied's start and stop:\n%s\n%s", lines[0], lines[len(lines)-1])
	}
	if n := queueDepth(t, topic); n != 0 {
		t.Fatalf("%d messages left in the queue", n)
	}
	if _, err := os.Stat(filepath.Join(data, "log.db")); !os.IsNotExist(err) {
		t.Fatalf("a SQLite log was made in --data: %v", err)
	}
}
