package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// Find returns the ids of the entities of kind whose current field equals
// value, sorted, from the entity_state table: an index lookup, except for
// flags (fields "flag:...") and "state", which are not indexed (they would
// match most entities anyway) and are scanned for.
func (l *Log) Find(ctx context.Context, kind bonnie.EntityKind, field, value string) ([]string, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if value == "" {
		return nil, errors.New("sqlite: find: empty value (absent fields are not indexed)")
	}
	// The partial index serves the query only if the query repeats its
	// condition word for word.
	q := `SELECT id FROM entity_state WHERE entity = ? AND field = ? AND value = ?
	AND field NOT GLOB 'flag:*' AND field <> 'state' ORDER BY id`
	if strings.HasPrefix(field, "flag:") || field == "state" {
		q = `SELECT id FROM entity_state WHERE entity = ? AND field = ? AND value = ? ORDER BY id`
	}
	var ids []string
	if err := l.rdb.SelectContext(ctx, &ids, q, string(kind), field, value); err != nil {
		return nil, fmt.Errorf("sqlite: find: %w", err)
	}
	return ids, nil
}

// Cursor returns how far sink has read the log, 0 for a sink never seen.
func (l *Log) Cursor(ctx context.Context, sink string) (bonnie.Position, error) {
	if err := l.check(); err != nil {
		return 0, err
	}
	var p int64
	err := l.rdb.QueryRowContext(ctx, `SELECT position FROM cursors WHERE sink = ?`, sink).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sqlite: cursor %s: %w", sink, err)
	}
	return bonnie.Position(p), nil
}

// SetCursor records durably that sink has processed the log up to pos.
func (l *Log) SetCursor(ctx context.Context, sink string, pos bonnie.Position) error {
	if err := l.check(); err != nil {
		return err
	}
	if _, err := l.wdb.ExecContext(ctx, `INSERT INTO cursors(sink, position, updated) VALUES (?, ?, ?)
ON CONFLICT(sink) DO UPDATE SET position = excluded.position, updated = excluded.updated`,
		sink, int64(pos), logchain.FormatTime(time.Now())); err != nil {
		return fmt.Errorf("sqlite: set cursor %s: %w", sink, err)
	}
	if err := l.synced(); err != nil {
		return fmt.Errorf("sqlite: set cursor %s: %w", sink, err)
	}
	return nil
}
