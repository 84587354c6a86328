package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A daemon that cannot start must not leave a socket behind that Cyrus
// would write into with nobody reading.
func TestFailedStartLeavesNoSocket(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	sock := filepath.Join(dir, "n.sock")
	err = run(context.Background(), []string{
		"--data", filepath.Join(dir, "data"), "--cyrus-socket", sock,
		"--allow-user", "root", "--metrics", busy.Addr().String(),
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "metrics") {
		t.Fatalf("start with a busy metrics port: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}
