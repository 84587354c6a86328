package postgres

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
// value, in byte order, from the entity_state table: an index lookup,
// except for flags (fields "flag:...") and "state", which are not indexed
// (they would match most entities anyway) and are scanned for.
func (l *Log) Find(ctx context.Context, kind bonnie.EntityKind, field, value string) ([]string, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if value == "" {
		return nil, errors.New("postgres: find: empty value (absent fields are not indexed)")
	}
	// The partial index serves the query only if the query repeats its
	// expression and condition.
	q := `SELECT id FROM entity_state WHERE entity = $1 AND field = $2
	AND substring(value FROM 1 FOR 256) = substring($3::bytea FROM 1 FOR 256) AND value = $3
	AND substring(field FROM 1 FOR 5) <> 'flag:'::bytea AND field <> 'state'::bytea ORDER BY id`
	if strings.HasPrefix(field, "flag:") || field == "state" {
		q = `SELECT id FROM entity_state WHERE entity = $1 AND field = $2 AND value = $3 ORDER BY id`
	}
	var raw [][]byte
	if err := l.db.SelectContext(ctx, &raw, q, []byte(kind), []byte(field), []byte(value)); err != nil {
		return nil, fmt.Errorf("postgres: find: %w", err)
	}
	ids := make([]string, len(raw))
	for i, b := range raw {
		ids[i] = string(b)
	}
	return ids, nil
}

// Cursor returns how far sink has read the log, 0 for a sink never seen.
func (l *Log) Cursor(ctx context.Context, sink string) (bonnie.Position, error) {
	if err := l.check(); err != nil {
		return 0, err
	}
	var p int64
	err := l.db.QueryRowContext(ctx, `SELECT position FROM cursors WHERE sink = $1`, sink).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: cursor %s: %w", sink, err)
	}
	return bonnie.Position(p), nil
}

// SetCursor records durably that sink has processed the log up to pos.
func (l *Log) SetCursor(ctx context.Context, sink string, pos bonnie.Position) error {
	if err := l.check(); err != nil {
		return err
	}
	if _, err := l.db.ExecContext(ctx, `INSERT INTO cursors(sink, position, updated) VALUES ($1, $2, $3)
ON CONFLICT (sink) DO UPDATE SET position = excluded.position, updated = excluded.updated`,
		sink, int64(pos), logchain.FormatTime(time.Now())); err != nil {
		return fmt.Errorf("postgres: set cursor %s: %w", sink, err)
	}
	return nil
}

// Cursors returns every sink's position, for copying them elsewhere.
func (l *Log) Cursors(ctx context.Context) (map[string]bonnie.Position, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	rows, err := l.db.QueryContext(ctx, `SELECT sink, position FROM cursors`)
	if err != nil {
		return nil, fmt.Errorf("postgres: cursors: %w", err)
	}
	defer rows.Close()
	out := map[string]bonnie.Position{}
	for rows.Next() {
		var s string
		var p int64
		if err := rows.Scan(&s, &p); err != nil {
			return nil, fmt.Errorf("postgres: cursors: %w", err)
		}
		out[s] = bonnie.Position(p)
	}
	return out, rows.Err()
}
