package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie/fetch"
	"github.com/bonnie-archive/bonnie/sink/archive"
)

func TestSinkFlags(t *testing.T) {
	base := []string{"--cyrus-socket", "/tmp/x"}
	for _, tc := range []struct {
		args []string
		want []string
		err  string
	}{
		{nil, []string{"archive", "backup", "discovery"}, ""},
		{[]string{"--sinks", "archive"}, []string{"archive"}, ""},
		{[]string{"--sinks", "backup,archive"}, []string{"backup", "archive"}, ""},
		{[]string{"--sinks", "none"}, nil, ""},
		{[]string{"--sinks", "archive,nosuch"}, nil, "unknown sink"},
		{[]string{"--imap", "127.0.0.1:143"}, nil, "--imap-password-file"},
	} {
		c, err := parse(append(base, tc.args...), io.Discard)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		got, _ := c.sinks.names()
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%v: sinks %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestOpenSinksWithBodySources(t *testing.T) {
	data := t.TempDir()
	pw := filepath.Join(data, "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	c, err := parse([]string{"--cyrus-socket", "/tmp/x", "--spool", "/var/spool/cyrus/mail", "--imap", "127.0.0.1:143", "--imap-password-file", pw}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := openSinks(context.Background(), &c.sinks, data, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sk.close()
	if len(sk.sinks) != 3 || sk.sinks[0].Name() != archive.Name || sk.sinks[1].Name() != "backup" || sk.sinks[2].Name() != "discovery" {
		t.Fatalf("sinks %v", sk.sinks)
	}
	chain, ok := sk.bodies.(fetch.Chain)
	if !ok || len(chain) != 2 {
		t.Fatalf("bodies %T %v: want the spool then IMAP", sk.bodies, sk.bodies)
	}
	if _, ok := chain[0].(*fetch.Spool); !ok {
		t.Fatalf("first body source %T", chain[0])
	}
	if s := sk.details["vnd.bonnie.bodySources"].(string); !strings.Contains(s, "imap://cyrus@127.0.0.1:143") || strings.Contains(s, "secret") {
		t.Fatalf("details %q", s)
	}
	if _, err := os.Stat(filepath.Join(data, "blobs")); err != nil {
		t.Fatal("no body store")
	}
}
