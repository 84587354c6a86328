package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/sink/intercept"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// --sinks intercept opens the interception sink on the engine's log; it
// is never on by default, and it needs the engine's log and recorder.
func TestInterceptSinkFlags(t *testing.T) {
	ctx := context.Background()
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	data := t.TempDir()
	c, err := parse([]string{"--cyrus-socket", "/tmp/x", "--data", data}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := c.sinks.names(); strings.Contains(strings.Join(names, ","), intercept.Name) {
		t.Errorf("the default sinks %v include interception", names)
	}
	c, err = parse([]string{"--cyrus-socket", "/tmp/x", "--data", data, "--sinks", "archive,intercept"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openSinks(ctx, &c.sinks, data, lg); err == nil || !strings.Contains(err.Error(), "recorder") {
		t.Errorf("without the engine's log: %v", err)
	}
	st, err := sqlite.Open(ctx, datadir.LogPath(data))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng, err := bonnie.New(bonnie.Options{Store: st, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	c.sinks.log, c.sinks.record = st, eng.Record
	sk, err := openSinks(ctx, &c.sinks, data, lg)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.close()
	if len(sk.sinks) != 2 || sk.sinks[1].Name() != intercept.Name {
		t.Fatalf("sinks %v", sk.sinks)
	}
}
