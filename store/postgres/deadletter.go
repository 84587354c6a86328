package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// PutDeadLetter keeps input that could not be appended, with its raw bytes
// and the reason, and returns its id. A zero Received is set to now. It is
// committed at once, outside the append batches, because it is most needed
// when appending fails. Source and Reason are descriptions, stored as text:
// invalid UTF-8 and NUL bytes in them are replaced (the raw bytes are kept
// exactly).
func (l *Log) PutDeadLetter(ctx context.Context, d bonnie.DeadLetter) (int64, error) {
	if err := l.check(); err != nil {
		return 0, err
	}
	if d.Received.IsZero() {
		d.Received = time.Now()
	}
	var id int64
	err := l.db.QueryRowContext(ctx, `INSERT INTO dead_letters(received, source, reason, raw, retried, position)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, dlArgs(d)...).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("postgres: put dead letter: %w", err)
	}
	return id, nil
}

// dlArgs returns a dead letter's columns after id, as stored.
func dlArgs(d bonnie.DeadLetter) []any {
	retried := ""
	if !d.Retried.IsZero() {
		retried = logchain.FormatTime(d.Retried)
	}
	raw := d.Raw
	if raw == nil {
		raw = []byte{}
	}
	return []any{logchain.FormatTime(d.Received), textOnly(d.Source), textOnly(d.Reason), raw, retried, int64(d.Position)}
}

// textOnly makes s storable as PostgreSQL text.
func textOnly(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// DeadLetters lists dead letters oldest first; pendingOnly hides those
// already re-ingested (with a position).
func (l *Log) DeadLetters(ctx context.Context, pendingOnly bool) ([]bonnie.DeadLetter, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	q := `SELECT id, received, source, reason, raw, retried, position FROM dead_letters`
	if pendingOnly {
		q += ` WHERE position = 0`
	}
	rows, err := l.db.QueryContext(ctx, q+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("postgres: dead letters: %w", err)
	}
	defer rows.Close()
	var out []bonnie.DeadLetter
	for rows.Next() {
		var (
			d                 bonnie.DeadLetter
			received, retried string
			pos               int64
		)
		if err := rows.Scan(&d.ID, &received, &d.Source, &d.Reason, &d.Raw, &retried, &pos); err != nil {
			return nil, fmt.Errorf("postgres: dead letters: %w", err)
		}
		d.Position = bonnie.Position(pos)
		if d.Received, err = logchain.ParseTime(received); err != nil {
			return nil, fmt.Errorf("postgres: dead letter %d: %w", d.ID, err)
		}
		if retried != "" {
			if d.Retried, err = logchain.ParseTime(retried); err != nil {
				return nil, fmt.Errorf("postgres: dead letter %d: %w", d.ID, err)
			}
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: dead letters: %w", err)
	}
	return out, nil
}

// ResolveDeadLetter records that dead letter id was re-ingested and landed
// at pos. It wraps ErrNotFound for an unknown id.
func (l *Log) ResolveDeadLetter(ctx context.Context, id int64, pos bonnie.Position) error {
	if err := l.check(); err != nil {
		return err
	}
	res, err := l.db.ExecContext(ctx, `UPDATE dead_letters SET retried = $1, position = $2 WHERE id = $3`,
		logchain.FormatTime(time.Now()), int64(pos), id)
	if err != nil {
		return fmt.Errorf("postgres: resolve dead letter: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("postgres: resolve dead letter: %w", err)
	} else if n == 0 {
		return fmt.Errorf("postgres: dead letter %d: %w", id, ErrNotFound)
	}
	return nil
}
