package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// logFile is where bonnied keeps the log inside its data directory.
const logFile = datadir.LogFile

// openLog opens the log the commands read: the PostgreSQL log named by
// --postgres when it is given, else the SQLite log of the data directory.
// It never creates one, so a typo in --data or --postgres is an error, not
// an empty log.
func openLog(ctx context.Context, g *globals) (bonnie.Store, error) {
	if g.postgres != "" {
		lg, err := postgres.Open(ctx, g.postgres, postgres.OnlyExisting())
		if err != nil {
			return nil, fmt.Errorf("open log on PostgreSQL (--postgres): %w", err)
		}
		return lg, nil
	}
	dir := g.data
	path := filepath.Join(dir, logFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no log at %s (is --data right? bonnied --data %s creates it)", path, dir)
	}
	lg, err := sqlite.Open(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return lg, nil
}

// ensureDir creates a data directory for a command that writes.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	return nil
}

// quietLogger keeps the engine's own logging off a command's output.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
