package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// PutDeadLetter keeps input that could not be appended, with its raw bytes
// and the reason, and returns its id. A zero Received is set to now. It is
// written and synced at once, outside the append batches, because it is
// most needed when appending fails.
func (l *Log) PutDeadLetter(ctx context.Context, d bonnie.DeadLetter) (int64, error) {
	if err := l.check(); err != nil {
		return 0, err
	}
	if d.Received.IsZero() {
		d.Received = time.Now()
	}
	retried := ""
	if !d.Retried.IsZero() {
		retried = logchain.FormatTime(d.Retried)
	}
	raw := d.Raw
	if raw == nil {
		raw = []byte{}
	}
	res, err := l.wdb.ExecContext(ctx, `INSERT INTO dead_letters(received, source, reason, raw, retried, position)
VALUES (?, ?, ?, ?, ?, ?)`, logchain.FormatTime(d.Received), d.Source, d.Reason, raw, retried, int64(d.Position))
	if err != nil {
		return 0, fmt.Errorf("sqlite: put dead letter: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("sqlite: put dead letter: %w", err)
	}
	if err := l.synced(); err != nil {
		return 0, fmt.Errorf("sqlite: put dead letter: %w", err)
	}
	return id, nil
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
	rows, err := l.rdb.QueryContext(ctx, q+` ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: dead letters: %w", err)
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
			return nil, fmt.Errorf("sqlite: dead letters: %w", err)
		}
		d.Position = bonnie.Position(pos)
		if d.Received, err = logchain.ParseTime(received); err != nil {
			return nil, fmt.Errorf("sqlite: dead letter %d: %w", d.ID, err)
		}
		if retried != "" {
			if d.Retried, err = logchain.ParseTime(retried); err != nil {
				return nil, fmt.Errorf("sqlite: dead letter %d: %w", d.ID, err)
			}
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: dead letters: %w", err)
	}
	return out, nil
}

// ResolveDeadLetter records that dead letter id was re-ingested and landed
// at pos. It wraps ErrNotFound for an unknown id.
func (l *Log) ResolveDeadLetter(ctx context.Context, id int64, pos bonnie.Position) error {
	if err := l.check(); err != nil {
		return err
	}
	res, err := l.wdb.ExecContext(ctx, `UPDATE dead_letters SET retried = ?, position = ? WHERE id = ?`,
		logchain.FormatTime(time.Now()), int64(pos), id)
	if err != nil {
		return fmt.Errorf("sqlite: resolve dead letter: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlite: resolve dead letter: %w", err)
	} else if n == 0 {
		return fmt.Errorf("sqlite: dead letter %d: %w", id, ErrNotFound)
	}
	if err := l.synced(); err != nil {
		return fmt.Errorf("sqlite: resolve dead letter: %w", err)
	}
	return nil
}
