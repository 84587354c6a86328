package sqlite

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
// zero or less returns nothing. The records and their changes come from
// one snapshot. With SyncFull only durable records are returned: a sink
// never acts on a record that a power failure could take back.
func (l *Log) Read(ctx context.Context, from bonnie.Position, limit int) ([]bonnie.Record, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	tx, err := l.rdb.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read: %w", err)
	}
	defer tx.Rollback()
	var head int64 // also starts the snapshot, before bound looks at the writer
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM records`).Scan(&head); err != nil {
		return nil, fmt.Errorf("sqlite: read: %w", err)
	}
	upto := l.bound(bonnie.Position(head))
	rows, err := tx.QueryContext(ctx, `SELECT position, id, key, appended, event, prev_hash, hash
FROM records WHERE position > ? AND position <= ? ORDER BY position LIMIT ?`, int64(from), int64(upto), limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read: %w", err)
	}
	defer rows.Close()
	var recs []bonnie.Record
	for rows.Next() {
		var (
			r        bonnie.Record
			appended string
			js       []byte
			key      any
		)
		if err := rows.Scan(&r.Position, &r.ID, &key, &appended, &js, &r.PrevHash, &r.Hash); err != nil {
			return nil, fmt.Errorf("sqlite: read: %w", err)
		}
		if r.Key, err = loadKey(key); err != nil {
			return nil, err
		}
		if r.Appended, err = logchain.ParseTime(appended); err != nil {
			return nil, fmt.Errorf("sqlite: read record %d: %w", r.Position, err)
		}
		r.Event = new(bonnie.Event)
		if err := json.Unmarshal(js, r.Event); err != nil {
			return nil, fmt.Errorf("sqlite: read record %d: decode event: %w", r.Position, err)
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read: %w", err)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	var chs []changeRow
	if err := tx.SelectContext(ctx, &chs, `SELECT `+changeCols+` FROM changes
WHERE position > ? AND position <= ? ORDER BY position, seq`, int64(from), int64(recs[len(recs)-1].Position)); err != nil {
		return nil, fmt.Errorf("sqlite: read changes: %w", err)
	}
	i := 0
	for _, c := range chs {
		for i < len(recs) && recs[i].Position < bonnie.Position(c.Position) {
			i++
		}
		if i == len(recs) || recs[i].Position != bonnie.Position(c.Position) {
			return nil, fmt.Errorf("sqlite: read: change for position %d without a record", c.Position)
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

// changeRow is a changes row as stored.
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
		return bonnie.Change{}, fmt.Errorf("sqlite: change %d/%d: %w", c.Position, c.Seq, err)
	}
	return bonnie.Change{
		Entity: bonnie.EntityKind(c.Entity), ID: c.ID, Field: c.Field, From: c.From, To: c.To,
		Actor: c.Actor, Time: t, Cause: bonnie.Position(c.Position),
	}, nil
}

func (c *changeRow) stored() logchain.Change {
	return logchain.Change{Entity: c.Entity, ID: c.ID, Field: c.Field, From: c.From, To: c.To, Actor: c.Actor, Time: c.Time}
}

// Head returns the position of the last record Read can return (0 when
// empty): the last committed one, and with SyncFull the last durable one.
func (l *Log) Head(ctx context.Context) (bonnie.Position, error) {
	if err := l.check(); err != nil {
		return 0, err
	}
	var p int64
	if err := l.rdb.QueryRowContext(ctx, `SELECT COALESCE(MAX(position), 0) FROM records`).Scan(&p); err != nil {
		return 0, fmt.Errorf("sqlite: head: %w", err)
	}
	return l.bound(bonnie.Position(p)), nil
}

// History returns every change of one entity in log order, each with Cause
// set to the position of the record that made it.
func (l *Log) History(ctx context.Context, kind bonnie.EntityKind, id string) ([]bonnie.Change, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var rows []changeRow
	if err := l.rdb.SelectContext(ctx, &rows, `SELECT `+changeCols+` FROM changes
WHERE entity = ? AND id = ? ORDER BY position, seq`, string(kind), id); err != nil {
		return nil, fmt.Errorf("sqlite: history: %w", err)
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

// StateAt folds an entity's changes into field -> value (see bonnie.Log).
// Changes are folded in log order (position, then the order the setters
// recorded them), which is the order they were applied in, so that every
// change's From is the value the fold had just before it; at only selects
// the changes whose event time is not after it. (Cyrus's arrival order is
// not timestamp order, and ordering by time would fold a chain of from/to
// values out of its own sequence.) A zero at reads the current state, kept
// in the entity_state table by every append.
func (l *Log) StateAt(ctx context.Context, kind bonnie.EntityKind, id string, at time.Time) (map[string]string, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var (
		rows *sql.Rows
		err  error
	)
	if at.IsZero() {
		rows, err = l.rdb.QueryContext(ctx, `SELECT field, value FROM entity_state
WHERE entity = ? AND id = ? AND value <> ''`, string(kind), id)
	} else {
		rows, err = l.rdb.QueryContext(ctx, `SELECT field, to_value FROM changes
WHERE entity = ? AND id = ? AND time <= ? ORDER BY position, seq`, string(kind), id, logchain.FormatTime(at))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: state: %w", err)
	}
	defer rows.Close()
	state := make(map[string]string)
	for rows.Next() {
		var f, v string
		if err := rows.Scan(&f, &v); err != nil {
			return nil, fmt.Errorf("sqlite: state: %w", err)
		}
		if v == "" {
			delete(state, f)
		} else {
			state[f] = v
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: state: %w", err)
	}
	return state, nil
}

// Anchor is a (position, hash) pair to keep outside the database (print
// it, mail it, have it timestamped). It is what lets VerifyAnchored detect
// a removed or rewritten tail, which the chain alone cannot (see
// internal/logchain).
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
	err := l.rdb.QueryRowContext(ctx, `SELECT position, hash FROM records ORDER BY position DESC LIMIT 1`).Scan(&p, &a.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return Anchor{Hash: logchain.Genesis()}, nil
	}
	if err != nil {
		return Anchor{}, fmt.Errorf("sqlite: head hash: %w", err)
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
	err := l.rdb.QueryRowContext(ctx, `SELECT hash FROM records WHERE position = ?`, int64(pos)).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: record %d: %w", pos, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: record hash: %w", err)
	}
	return h, nil
}
