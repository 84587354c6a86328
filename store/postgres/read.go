package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// Read returns up to limit records after from, in position order, with
// their events decoded from the stored JSON and their changes. A limit of
// zero or less returns nothing.
//
// Two statements, no transaction: positions are assigned under the chain
// lock in commit order, so a reader that sees record p sees every record
// before it, and a record's changes commit with it.
func (l *Log) Read(ctx context.Context, from bonnie.Position, limit int) ([]bonnie.Record, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	rows, err := l.db.QueryContext(ctx, `SELECT position, id, key, appended, event, prev_hash, hash
FROM records WHERE position > $1 ORDER BY position LIMIT $2`, int64(from), limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: read: %w", err)
	}
	defer rows.Close()
	var recs []bonnie.Record
	for rows.Next() {
		var (
			r        bonnie.Record
			appended string
			js, key  []byte
			pos      int64
		)
		if err := rows.Scan(&pos, &r.ID, &key, &appended, &js, &r.PrevHash, &r.Hash); err != nil {
			return nil, fmt.Errorf("postgres: read: %w", err)
		}
		r.Position, r.Key = bonnie.Position(pos), loadKey(key)
		if r.Appended, err = logchain.ParseTime(appended); err != nil {
			return nil, fmt.Errorf("postgres: read record %d: %w", r.Position, err)
		}
		r.Event = new(bonnie.Event)
		if err := json.Unmarshal(js, r.Event); err != nil {
			return nil, fmt.Errorf("postgres: read record %d: decode event: %w", r.Position, err)
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: read: %w", err)
	}
	rows.Close()
	if len(recs) == 0 {
		return nil, nil
	}
	var chs []changeRow
	if err := l.db.SelectContext(ctx, &chs, `SELECT `+changeCols+` FROM changes
WHERE position > $1 AND position <= $2 ORDER BY position, seq`, int64(from), int64(recs[len(recs)-1].Position)); err != nil {
		return nil, fmt.Errorf("postgres: read changes: %w", err)
	}
	i := 0
	for _, c := range chs {
		for i < len(recs) && recs[i].Position < bonnie.Position(c.Position) {
			i++
		}
		if i == len(recs) || recs[i].Position != bonnie.Position(c.Position) {
			return nil, fmt.Errorf("postgres: read: change for position %d without a record", c.Position)
		}
		ch, err := c.change()
		if err != nil {
			return nil, err
		}
		recs[i].Changes = append(recs[i].Changes, ch)
	}
	return recs, nil
}

const changeCols = `position, seq, entity, id, field, from_value, to_value, actor, time`

// changeRow is a changes row as stored (bytea columns scan into strings
// byte for byte).
type changeRow struct {
	Position int64  `db:"position"`
	Seq      int64  `db:"seq"`
	Entity   string `db:"entity"`
	ID       string `db:"id"`
	Field    string `db:"field"`
	From     string `db:"from_value"`
	To       string `db:"to_value"`
	Actor    string `db:"actor"`
	Time     string `db:"time"`
}

func (c *changeRow) change() (bonnie.Change, error) {
	t, err := logchain.ParseTime(c.Time)
	if err != nil {
		return bonnie.Change{}, fmt.Errorf("postgres: change %d/%d: %w", c.Position, c.Seq, err)
	}
	return bonnie.Change{
		Entity: bonnie.EntityKind(c.Entity), ID: c.ID, Field: c.Field, From: c.From, To: c.To,
		Actor: c.Actor, Time: t, Cause: bonnie.Position(c.Position),
	}, nil
}

func (c *changeRow) stored() logchain.Change {
	return logchain.Change{Entity: c.Entity, ID: c.ID, Field: c.Field, From: c.From, To: c.To, Actor: c.Actor, Time: c.Time}
}

// Head returns the position of the last committed record (0 when empty).
func (l *Log) Head(ctx context.Context) (bonnie.Position, error) {
	if err := l.check(); err != nil {
		return 0, err
	}
	var p int64
	if err := l.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM records`).Scan(&p); err != nil {
		return 0, fmt.Errorf("postgres: head: %w", err)
	}
	return bonnie.Position(p), nil
}

// History returns every change of one entity in log order, each with Cause
// set to the position of the record that made it.
func (l *Log) History(ctx context.Context, kind bonnie.EntityKind, id string) ([]bonnie.Change, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var rows []changeRow
	if err := l.db.SelectContext(ctx, &rows, `SELECT `+changeCols+` FROM changes
WHERE entity = $1 AND id = $2 ORDER BY position, seq`, []byte(kind), []byte(id)); err != nil {
		return nil, fmt.Errorf("postgres: history: %w", err)
	}
	out := make([]bonnie.Change, 0, len(rows))
	for i := range rows {
		c, err := rows[i].change()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// StateAt folds an entity's changes into field -> value (see bonnie.Log),
// in log order; at only selects the changes whose event time is not after
// it. A zero at reads the current state, kept in entity_state by every
// append.
func (l *Log) StateAt(ctx context.Context, kind bonnie.EntityKind, id string, at time.Time) (map[string]string, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var (
		rows *sql.Rows
		err  error
	)
	if at.IsZero() {
		rows, err = l.db.QueryContext(ctx, `SELECT field, value FROM entity_state
WHERE entity = $1 AND id = $2 AND value <> ''::bytea`, []byte(kind), []byte(id))
	} else {
		rows, err = l.db.QueryContext(ctx, `SELECT field, to_value FROM changes
WHERE entity = $1 AND id = $2 AND time <= $3 ORDER BY position, seq`, []byte(kind), []byte(id), logchain.FormatTime(at))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: state: %w", err)
	}
	defer rows.Close()
	state := make(map[string]string)
	for rows.Next() {
		var f, v []byte
		if err := rows.Scan(&f, &v); err != nil {
			return nil, fmt.Errorf("postgres: state: %w", err)
		}
		if len(v) == 0 {
			delete(state, string(f))
		} else {
			state[string(f)] = string(v)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: state: %w", err)
	}
	return state, nil
}

// Anchor is a (position, hash) pair to keep outside the database; it is
// what lets VerifyAnchored detect a removed or rewritten tail (see
// internal/logchain). It is the same type as store/sqlite's Anchor.
type Anchor = logchain.Anchor

// HeadHash returns the last record's position and hash, the anchor to keep
// outside the database. An empty log returns position 0 and the genesis
// hash (32 zero bytes).
func (l *Log) HeadHash(ctx context.Context) (Anchor, error) {
	if err := l.check(); err != nil {
		return Anchor{}, err
	}
	var a Anchor
	var p int64
	err := l.db.QueryRowContext(ctx, `SELECT position, hash FROM records ORDER BY position DESC LIMIT 1`).Scan(&p, &a.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return Anchor{Hash: logchain.Genesis()}, nil
	}
	if err != nil {
		return Anchor{}, fmt.Errorf("postgres: head hash: %w", err)
	}
	a.Position = bonnie.Position(p)
	return a, nil
}

// RecordHash returns the hash stored for the record at pos, for checking
// against a copy kept elsewhere. It wraps ErrNotFound if there is none.
func (l *Log) RecordHash(ctx context.Context, pos bonnie.Position) ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var h []byte
	err := l.db.QueryRowContext(ctx, `SELECT hash FROM records WHERE position = $1`, int64(pos)).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("postgres: record %d: %w", pos, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: record hash: %w", err)
	}
	return h, nil
}
