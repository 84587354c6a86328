package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/control"
	"github.com/bonnie-archive/bonnie/internal/datadir"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// recordSource names the commands' own events in the log.
const recordSource = "bonnie-cli"

// recordEvent appends one of Bonnie's own events (a hold, an erasure, an
// interception...; see bonnie.OwnEvents), given as a JSON notification,
// and returns its position once durable. On PostgreSQL the command
// appends itself (the log takes concurrent writers). On the SQLite log of
// a data directory it appends itself when no daemon ingests there, and
// otherwise hands the event to the running bonnied over its control
// socket, so holds and interceptions take effect without a restart.
func recordEvent(ctx context.Context, g *globals, raw []byte) (bonnie.Position, error) {
	if g.postgres != "" {
		lg, err := postgres.Open(ctx, g.postgres, postgres.OnlyExisting())
		if err != nil {
			return 0, fmt.Errorf("open log on PostgreSQL (--postgres): %w", err)
		}
		defer lg.Close()
		return recordWith(ctx, lg, raw)
	}
	if err := ensureDir(g.data); err != nil {
		return 0, err
	}
	unlock, err := datadir.LockIngest(g.data, 0)
	if errors.Is(err, datadir.ErrBusy) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		pos, _, err := control.Send(ctx, control.Path(g.data), raw)
		if err != nil {
			return 0, fmt.Errorf("a daemon ingests into %s; handing the event to it: %w", g.data, err)
		}
		return bonnie.Position(pos), nil
	}
	if err != nil {
		return 0, err
	}
	defer unlock()
	lg, err := sqlite.Open(ctx, datadir.LogPath(g.data))
	if err != nil {
		return 0, fmt.Errorf("open log: %w", err)
	}
	defer lg.Close()
	return recordWith(ctx, lg, raw)
}

func recordWith(ctx context.Context, st bonnie.Store, raw []byte) (bonnie.Position, error) {
	eng, err := bonnie.New(bonnie.Options{Store: st, Logger: quietLogger()})
	if err != nil {
		return 0, err
	}
	pos, _, err := eng.Record(ctx, raw, recordSource)
	return pos, err
}
