package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
)

// Verify walks the whole log in position order and recomputes every hash
// from the stored rows: the records and, separately, the changes table (so
// a changed, added or removed change row is caught too). It also checks that
// positions are 1..N without gaps, that no change belongs to a missing
// record, that the type column agrees with the stored event, and that the
// derived entity_state table matches the changes, and that each record's
// copy of its changes (the one readers use) matches the changes table. It returns nil or a
// *bonnie.ChainError naming the first bad position.
//
// Verify alone cannot see a removed or recomputed tail; see VerifyAnchored.
func (l *Log) Verify(ctx context.Context) error { return l.VerifyAnchored(ctx) }

// VerifyAnchored is Verify that also checks anchors kept outside the
// database: the log must reach every anchor's position and have the anchor's
// hash there. A mismatch is reported at the anchor's position: the chain
// cannot tell where before it the rewrite began; more anchors narrow it.
func (l *Log) VerifyAnchored(ctx context.Context, anchors ...Anchor) error {
	if err := l.check(); err != nil {
		return err
	}
	tx, err := l.rdb.BeginTxx(ctx, nil) // one snapshot for both cursors
	if err != nil {
		return fmt.Errorf("sqlite: verify: %w", err)
	}
	defer tx.Rollback()
	recs, err := tx.QueryContext(ctx, `SELECT position, id, key, appended, type, event, prev_hash, hash, changes
FROM records ORDER BY position`)
	if err != nil {
		return fmt.Errorf("sqlite: verify: %w", err)
	}
	defer recs.Close()
	chs, err := tx.QueryxContext(ctx, `SELECT `+changeCols+` FROM changes ORDER BY position, seq`)
	if err != nil {
		return fmt.Errorf("sqlite: verify: %w", err)
	}
	defer chs.Close()

	var (
		next    changeRow
		hasNext bool
	)
	advance := func() error {
		hasNext = chs.Next()
		if hasNext {
			return chs.StructScan(&next)
		}
		return chs.Err()
	}
	if err := advance(); err != nil {
		return fmt.Errorf("sqlite: verify: %w", err)
	}

	v := logchain.NewVerifier(anchors...)
	var (
		r          logchain.Record
		typ        string
		prev, hash []byte
		pos        int64
		key        any
		copied     []byte
		want       []byte
	)
	for recs.Next() {
		if err := recs.Scan(&pos, &r.ID, &key, &r.Appended, &typ, &r.Event, &prev, &hash, &copied); err != nil {
			return fmt.Errorf("sqlite: verify: %w", err)
		}
		if r.Key, err = loadKey(key); err != nil {
			return err
		}
		r.Position = bonnie.Position(pos)
		r.Changes = r.Changes[:0]
		var orphan int64
		for hasNext && next.Position <= pos {
			if next.Position < pos {
				if orphan == 0 {
					orphan = next.Position
				}
			} else {
				if next.Seq != int64(len(r.Changes)) && orphan == 0 {
					orphan = -1
				}
				r.Changes = append(r.Changes, next.stored())
			}
			if err := advance(); err != nil {
				return fmt.Errorf("sqlite: verify: %w", err)
			}
		}
		if ce := v.Next(&r, prev, hash); ce != nil {
			return ce
		}
		if orphan > 0 {
			return &bonnie.ChainError{Position: bonnie.Position(orphan), Reason: "changes stored for a position that has no record"}
		}
		if orphan < 0 {
			return &bonnie.ChainError{Position: r.Position, Reason: "change sequence numbers are not 0, 1, ..."}
		}
		// Readers take the changes from the record's copy: it must say
		// exactly what the hashed changes table says.
		if copied != nil {
			want = appendChanges(want[:0], r.Changes)
			if !bytes.Equal(copied, want) {
				return &bonnie.ChainError{Position: r.Position, Reason: "the record's copy of its changes differs from the changes table"}
			}
		}
		var head struct {
			Type bonnie.EventType `json:"type"`
		}
		if err := json.Unmarshal(r.Event, &head); err != nil || head.Type.String() != typ {
			return &bonnie.ChainError{Position: r.Position, Reason: fmt.Sprintf("type column %q does not match the stored event", typ)}
		}
	}
	if err := recs.Err(); err != nil {
		return fmt.Errorf("sqlite: verify: %w", err)
	}
	if ce := v.Finish(); ce != nil {
		return ce
	}
	if hasNext {
		last, _ := v.Head()
		return &bonnie.ChainError{Position: bonnie.Position(next.Position), Reason: fmt.Sprintf(
			"changes stored for position %d but the log ends at %d: records were removed from the tail", next.Position, last)}
	}
	return l.verifyState(ctx, tx)
}

// verifyState checks the derived entity_state table against the changes:
// every field must hold the last change in (position, seq) order.
func (l *Log) verifyState(ctx context.Context, tx interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) error {
	var want, have sql.NullInt64
	var entity, id, field string
	err := tx.QueryRowContext(ctx, `
WITH ranked AS (
	SELECT entity, id, field, to_value, position, seq,
		row_number() OVER (PARTITION BY entity, id, field ORDER BY position DESC, seq DESC) AS rn
	FROM changes
), want AS (SELECT entity, id, field, to_value AS value, position, seq FROM ranked WHERE rn = 1)
SELECT w.position, s.position, COALESCE(w.entity, s.entity), COALESCE(w.id, s.id), COALESCE(w.field, s.field)
FROM want AS w FULL OUTER JOIN entity_state AS s
	ON s.entity = w.entity AND s.id = w.id AND s.field = w.field
WHERE w.value IS NOT s.value OR w.position IS NOT s.position OR w.seq IS NOT s.seq
ORDER BY COALESCE(w.position, s.position)
LIMIT 1`).Scan(&want, &have, &entity, &id, &field)
	if err == sql.ErrNoRows {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: verify state: %w", err)
	}
	p := want.Int64
	if !want.Valid {
		p = have.Int64
	}
	return &bonnie.ChainError{Position: bonnie.Position(p), Reason: fmt.Sprintf(
		"entity_state for %s %s field %q disagrees with the changes", entity, id, field)}
}
