package postgres

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// Stored is a record exactly as a log stores it (every string as the
// bytes the hash covers): what Import copies from another log, such as
// store/sqlite's file.
type Stored struct {
	Position bonnie.Position
	ID       string
	Key      string // Event.Key's form: lower-case hex
	Appended string // logchain.TimeLayout
	Event    []byte // the event's JSON as stored
	Changes  []StoredChange
	PrevHash []byte
	Hash     []byte
}

// StoredChange is one change exactly as stored; Time is in
// logchain.TimeLayout.
type StoredChange struct {
	Entity, ID, Field, From, To, Actor, Time string
}

// Import appends records copied from another log, keeping their
// positions, ids, keys, append times and hashes, in one transaction under
// the chain lock. The first must continue this log (its position is the
// head's plus one and its previous hash is the head's hash) and each must
// hash, by internal/logchain, to the hash it carries: otherwise nothing is
// stored and the error wraps ErrDiffers. The entity state is derived from
// the changes as Append does.
func (l *Log) Import(ctx context.Context, recs []Stored) error {
	if err := l.check(); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	rows := make([]row, len(recs))
	for i := range recs {
		s := &recs[i]
		skey, err := storedKey(s.Key)
		if err != nil {
			return fmt.Errorf("%w: record %d: %w", ErrDiffers, s.Position, err)
		}
		var head struct {
			Type bonnie.EventType `json:"type"`
		}
		if err := json.Unmarshal(s.Event, &head); err != nil {
			return fmt.Errorf("%w: record %d: event is not JSON: %w", ErrDiffers, s.Position, err)
		}
		r := &rows[i]
		r.rec = logchain.Record{Position: s.Position, ID: s.ID, Key: s.Key, Appended: s.Appended, Event: s.Event}
		if len(s.Changes) > 0 {
			r.rec.Changes = make([]logchain.Change, len(s.Changes))
			for k, c := range s.Changes {
				r.rec.Changes[k] = logchain.Change(c)
			}
		}
		r.skey, r.typ, r.prev, r.hash = skey, head.Type.String(), s.PrevHash, s.Hash
	}
	return withPgx(ctx, l.db.DB, func(c *pgx.Conn) error {
		head, prev, _, err := beginAppend(ctx, c, nil)
		if err != nil {
			return err
		}
		var buf []byte
		for i := range rows {
			r := &rows[i]
			if r.rec.Position != head+1 {
				return fmt.Errorf("%w: record %d does not follow the log's head %d", ErrDiffers, r.rec.Position, head)
			}
			if !bytes.Equal(r.prev, prev) {
				return fmt.Errorf("%w: record %d is chained to %x, the log's record %d has hash %x", ErrDiffers, r.rec.Position, r.prev, head, prev)
			}
			buf = logchain.AppendCanonical(buf[:0], &r.rec)
			if h := logchain.HashCanonical(prev, buf); !bytes.Equal(h, r.hash) {
				return fmt.Errorf("%w: record %d: its content hashes to %x, not to the hash it carries %x", ErrDiffers, r.rec.Position, h, r.hash)
			}
			head, prev = r.rec.Position, r.hash
		}
		return finishAppend(ctx, c, rows)
	})
}

// ImportDeadLetters copies dead letters keeping their ids, in one
// transaction. A dead letter already present with the same id and content
// only takes the imported one's Retried and Position (it may have been
// re-ingested since it was first copied); one with the same id and another
// content is an error wrapping ErrDiffers, and nothing is stored. New dead
// letters get ids after the highest.
func (l *Log) ImportDeadLetters(ctx context.Context, ds []bonnie.DeadLetter) (err error) {
	if err := l.check(); err != nil {
		return err
	}
	if len(ds) == 0 {
		return nil
	}
	tx, err := l.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("postgres: import dead letters: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	for _, d := range ds {
		var id int64
		args := append([]any{d.ID}, dlArgs(d)...)
		err = tx.QueryRowContext(ctx, `INSERT INTO dead_letters AS d (id, received, source, reason, raw, retried, position)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET retried = excluded.retried, position = excluded.position
WHERE d.received = excluded.received AND d.source = excluded.source AND d.reason = excluded.reason AND d.raw = excluded.raw
RETURNING id`, args...).Scan(&id)
		if err != nil {
			if isNoRows(err) {
				return fmt.Errorf("%w: dead letter %d is another one in the log", ErrDiffers, d.ID)
			}
			return fmt.Errorf("postgres: import dead letter %d: %w", d.ID, err)
		}
	}
	if _, err = tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('dead_letters', 'id'), MAX(id)) FROM dead_letters`); err != nil {
		return fmt.Errorf("postgres: import dead letters: %w", err)
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("postgres: import dead letters: %w", err)
	}
	return nil
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
