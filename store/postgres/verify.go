package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/jmoiron/sqlx"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// verifyPage is how many records Verify reads per query.
const verifyPage = 2000

// Verify walks the whole log in position order and recomputes every hash
// from the stored rows: the records and, separately, the changes table (so
// a changed, added or removed change row is caught too). It also checks that
// positions are 1..N without gaps, that no change belongs to a missing
// record, that the type column agrees with the stored event, and that the
// derived entity_state table matches the changes. Everything is read from
// one snapshot (a REPEATABLE READ transaction), so appends may go on
// meanwhile. It returns nil or a *bonnie.ChainError naming the first bad
// position.
//
// Verify alone cannot see a removed or recomputed tail; see VerifyAnchored.
func (l *Log) Verify(ctx context.Context) error { return l.VerifyAnchored(ctx) }

// VerifyAnchored is Verify that also checks anchors kept outside the
// database: the log must reach every anchor's position and have the anchor's
// hash there.
func (l *Log) VerifyAnchored(ctx context.Context, anchors ...Anchor) error {
	if err := l.check(); err != nil {
		return err
	}
	tx, err := l.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("postgres: verify: %w", err)
	}
	defer tx.Rollback()

	v := logchain.NewVerifier(anchors...)
	var (
		lo      int64 = math.MinInt64 // changes up to lo have been matched
		last    int64                 // the last record's position
		r       logchain.Record
		pending []changeRow // changes read but not yet matched to a record
	)
	for {
		recs, err := tx.QueryContext(ctx, `SELECT position, id, key, appended, type, event, prev_hash, hash
FROM records WHERE position > $1 ORDER BY position LIMIT $2`, last, verifyPage)
		if err != nil {
			return fmt.Errorf("postgres: verify: %w", err)
		}
		type recRow struct {
			rec        logchain.Record
			typ        string
			prev, hash []byte
		}
		var page []recRow
		for recs.Next() {
			var (
				rr  recRow
				pos int64
				key []byte
			)
			if err := recs.Scan(&pos, &rr.rec.ID, &key, &rr.rec.Appended, &rr.typ, &rr.rec.Event, &rr.prev, &rr.hash); err != nil {
				recs.Close()
				return fmt.Errorf("postgres: verify: %w", err)
			}
			rr.rec.Position, rr.rec.Key = bonnie.Position(pos), loadKey(key)
			page = append(page, rr)
		}
		recs.Close()
		if err := recs.Err(); err != nil {
			return fmt.Errorf("postgres: verify: %w", err)
		}
		if len(page) == 0 {
			break
		}
		hi := int64(page[len(page)-1].rec.Position)
		pending = pending[:0]
		if err := tx.SelectContext(ctx, &pending, `SELECT `+changeCols+` FROM changes
WHERE position > $1 AND position <= $2 ORDER BY position, seq`, lo, hi); err != nil {
			return fmt.Errorf("postgres: verify: %w", err)
		}
		k := 0
		for i := range page {
			rr := &page[i]
			r.Position, r.ID, r.Key, r.Appended, r.Event = rr.rec.Position, rr.rec.ID, rr.rec.Key, rr.rec.Appended, rr.rec.Event
			pos := int64(r.Position)
			r.Changes = r.Changes[:0]
			var (
				orphan        int64
				orphaned, bad bool
			)
			for ; k < len(pending) && pending[k].Position <= pos; k++ {
				c := &pending[k]
				if c.Position < pos {
					if !orphaned {
						orphan, orphaned = c.Position, true
					}
					continue
				}
				if c.Seq != int64(len(r.Changes)) {
					bad = true
				}
				r.Changes = append(r.Changes, c.stored())
			}
			if ce := v.Next(&r, rr.prev, rr.hash); ce != nil {
				return ce
			}
			if orphaned {
				return &bonnie.ChainError{Position: bonnie.Position(max(orphan, 1)), Reason: fmt.Sprintf(
					"changes stored for position %d, which has no record", orphan)}
			}
			if bad {
				return &bonnie.ChainError{Position: r.Position, Reason: "change sequence numbers are not 0, 1, ..."}
			}
			var head struct {
				Type bonnie.EventType `json:"type"`
			}
			if err := json.Unmarshal(r.Event, &head); err != nil || head.Type.String() != rr.typ {
				return &bonnie.ChainError{Position: r.Position, Reason: fmt.Sprintf("type column %q does not match the stored event", rr.typ)}
			}
		}
		lo, last = hi, hi
		if len(page) < verifyPage {
			break
		}
	}
	if ce := v.Finish(); ce != nil {
		return ce
	}
	var orphan int64
	err = tx.QueryRowContext(ctx, `SELECT position FROM changes WHERE position > $1 OR position < 1 ORDER BY position LIMIT 1`, last).Scan(&orphan)
	switch {
	case err == nil && orphan < 1:
		return &bonnie.ChainError{Position: 1, Reason: fmt.Sprintf("changes stored for position %d, before the first record", orphan)}
	case err == nil:
		return &bonnie.ChainError{Position: bonnie.Position(orphan), Reason: fmt.Sprintf(
			"changes stored for position %d but the log ends at %d: records were removed from the tail", orphan, last)}
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("postgres: verify: %w", err)
	}
	return verifyState(ctx, tx)
}

// verifyState checks the derived entity_state table against the changes:
// every field must hold the last change in (position, seq) order.
func verifyState(ctx context.Context, tx *sqlx.Tx) error {
	var want, have sql.NullInt64
	var entity, id, field []byte
	err := tx.QueryRowContext(ctx, `
WITH want AS (
	SELECT DISTINCT ON (entity, id, field) entity, id, field, to_value AS value, time, position, seq
	FROM changes ORDER BY entity, id, field, position DESC, seq DESC
)
SELECT w.position, s.position, COALESCE(w.entity, s.entity), COALESCE(w.id, s.id), COALESCE(w.field, s.field)
FROM want AS w FULL OUTER JOIN entity_state AS s
	ON s.entity = w.entity AND s.id = w.id AND s.field = w.field
WHERE w.value IS DISTINCT FROM s.value OR w.time IS DISTINCT FROM s.time
	OR w.position IS DISTINCT FROM s.position OR w.seq IS DISTINCT FROM s.seq
ORDER BY COALESCE(w.position, s.position)
LIMIT 1`).Scan(&want, &have, &entity, &id, &field)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("postgres: verify state: %w", err)
	}
	p := want.Int64
	if !want.Valid {
		p = have.Int64
	}
	return &bonnie.ChainError{Position: bonnie.Position(p), Reason: fmt.Sprintf(
		"entity_state for %s %s field %q disagrees with the changes", entity, id, field)}
}
