package postgres_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// The tamper tests build a log of tamperN records, close it, change the
// tables with plain SQL as an attacker who owns them would (triggers off:
// session_replication_role = replica), reopen it and check what Verify
// reports. They mirror store/sqlite's.
const tamperN = 10

type fixture struct {
	dsn     string
	anchors map[bonnie.Position]postgres.Anchor
}

func buildLog(t *testing.T) *fixture {
	t.Helper()
	_, dsn := pgtest.Schema(t)
	f := &fixture{dsn: dsn, anchors: map[bonnie.Position]postgres.Anchor{}}
	l, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	evs := storetest.Captures()
	for i := range tamperN {
		ev := evs[i%len(evs)]
		rec := bonnie.NewChanges(ev.User, ev.Time)
		m := bonnie.NewMessage(rec, fmt.Sprintf("F/1/%d", i+1), nil)
		m.Create()
		m.SetFlags([]string{`\Seen`, "$Label1"})
		if _, _, err := l.Append(t.Context(), ev, rec.List()); err != nil {
			t.Fatal(err)
		}
		a, err := l.HeadHash(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		f.anchors[a.Position] = a
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// attack runs fn on one connection to the log's schema with triggers off.
func (f *fixture) attack(t *testing.T, fn func(db *sql.DB)) {
	t.Helper()
	db, err := sql.Open("pgx", f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	sqlExec(t, db, `SET session_replication_role = replica`)
	fn(db)
}

func sqlExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// stored reads record pos as stored, with its changes, as an outside
// verifier (or an attacker recomputing hashes) would.
func stored(t *testing.T, db *sql.DB, pos bonnie.Position) (r logchain.Record, prev, hash []byte) {
	t.Helper()
	r.Position = pos
	if err := db.QueryRow(`SELECT id, encode(key, 'hex'), appended, event, prev_hash, hash FROM records WHERE position = $1`, int64(pos)).
		Scan(&r.ID, &r.Key, &r.Appended, &r.Event, &prev, &hash); err != nil {
		t.Fatalf("read record %d: %v", pos, err)
	}
	rows, err := db.Query(`SELECT entity, id, field, from_value, to_value, actor, time FROM changes WHERE position = $1 ORDER BY seq`, int64(pos))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var c logchain.Change
		if err := rows.Scan(&c.Entity, &c.ID, &c.Field, &c.From, &c.To, &c.Actor, &c.Time); err != nil {
			t.Fatal(err)
		}
		r.Changes = append(r.Changes, c)
	}
	return r, prev, hash
}

// rehash recomputes and stores the hashes of records from..to.
func rehash(t *testing.T, db *sql.DB, from, to bonnie.Position) {
	t.Helper()
	_, prev, _ := stored(t, db, from)
	for p := from; p <= to; p++ {
		r, _, _ := stored(t, db, p)
		h := logchain.Hash(prev, &r)
		sqlExec(t, db, `UPDATE records SET prev_hash = $1, hash = $2 WHERE position = $3`, prev, h, int64(p))
		prev = h
	}
}

// shift renumbers records and changes at or after from by delta.
func shift(t *testing.T, db *sql.DB, from bonnie.Position, delta int) {
	t.Helper()
	for _, tbl := range []string{"records", "changes"} {
		sqlExec(t, db, `UPDATE `+tbl+` SET position = -(position + $1) WHERE position >= $2`, delta, int64(from))
		sqlExec(t, db, `UPDATE `+tbl+` SET position = -position WHERE position < 0`)
	}
}

func (f *fixture) verify(t *testing.T, anchors ...postgres.Anchor) error {
	t.Helper()
	l, err := postgres.Open(t.Context(), f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.VerifyAnchored(t.Context(), anchors...)
}

func wantBroken(t *testing.T, err error, pos bonnie.Position) {
	t.Helper()
	var ce *bonnie.ChainError
	if !errors.As(err, &ce) || !errors.Is(err, bonnie.ErrChainBroken) {
		t.Fatalf("Verify = %v, want a ChainError at %d", err, pos)
	}
	if ce.Position != pos {
		t.Fatalf("Verify named position %d (%s), want %d", ce.Position, ce.Reason, pos)
	}
	t.Logf("detected: %v", err)
}

func TestTamper(t *testing.T) {
	for _, tc := range []struct {
		name    string
		attack  func(t *testing.T, db *sql.DB)
		anchors []bonnie.Position
		want    bonnie.Position // first bad position; 0: undetectable
		reason  string
	}{
		{name: "EventValue", want: 4, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE records SET event = replace(event, '"user":"', '"user":"x') WHERE position = 4`)
		}},
		{name: "EventRawByte", want: 9, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE records SET event = replace(event, '"raw":"bG9n', '"raw":"bG9o') WHERE position = 9`)
		}},
		{name: "ChangeValue", want: 6, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE changes SET to_value = 'deleted' WHERE position = 6 AND seq = 0`)
		}},
		{name: "ChangeActor", want: 2, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE changes SET actor = 'mallory' WHERE position = 2 AND seq = 1`)
		}},
		{name: "DeleteRecord", want: 5, reason: "missing", attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `DELETE FROM records WHERE position = 5`)
		}},
		{name: "DeleteRecordAndRenumber", want: 5, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `DELETE FROM changes WHERE position = 5`)
			sqlExec(t, db, `DELETE FROM records WHERE position = 5`)
			shift(t, db, 6, -1)
		}},
		{name: "DeleteChange", want: 7, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `DELETE FROM changes WHERE position = 7 AND seq = 1`)
		}},
		{name: "AddChange", want: 3, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `INSERT INTO changes SELECT position, 9, entity, id, convert_to('flag:\Deleted', 'UTF8'), '', 'set', actor, time FROM changes WHERE position = 3 AND seq = 0`)
		}},
		{name: "SwapRecords", want: 3, attack: func(t *testing.T, db *sql.DB) {
			for _, tbl := range []string{"records", "changes"} {
				sqlExec(t, db, `UPDATE `+tbl+` SET position = -1 WHERE position = 3`)
				sqlExec(t, db, `UPDATE `+tbl+` SET position = 3 WHERE position = 4`)
				sqlExec(t, db, `UPDATE `+tbl+` SET position = 4 WHERE position = -1`)
			}
		}},
		{name: "SwapEvents", want: 3, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE records SET event = CASE position WHEN 3 THEN (SELECT event FROM records WHERE position = 4)
				ELSE (SELECT event FROM records WHERE position = 3) END WHERE position IN (3, 4)`)
		}},
		{name: "SwapChanges", want: 8, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE changes SET seq = -1 WHERE position = 8 AND seq = 0`)
			sqlExec(t, db, `UPDATE changes SET seq = 0 WHERE position = 8 AND seq = 1`)
			sqlExec(t, db, `UPDATE changes SET seq = 1 WHERE position = 8 AND seq = -1`)
		}},
		{name: "HashColumn", want: 6, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE records SET hash = decode(repeat('00', 32), 'hex') WHERE position = 6`)
		}},
		{name: "PrevHashColumn", want: 6, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE records SET prev_hash = decode(repeat('00', 32), 'hex') WHERE position = 6`)
		}},
		{name: "TypeColumn", want: 2, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE records SET type = 'Logout' WHERE position = 2`)
		}},
		{name: "EntityState", want: 5, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE entity_state SET value = 'expunged' WHERE id = 'F/1/5' AND field = 'state'`)
		}},
		{name: "EntityStateRemoved", want: 4, attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `DELETE FROM entity_state WHERE id = 'F/1/4' AND field = 'flag:$Label1'`)
		}},
		{name: "ReplaceAndRehashOne", want: 6, reason: "not the record that record 7 was chained to", attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `UPDATE records SET event = replace(event, '"user":"', '"user":"x') WHERE position = 6`)
			rehash(t, db, 6, 6)
		}},
		{name: "ForgedInsertMiddle", want: 5, reason: "inserted", attack: func(t *testing.T, db *sql.DB) {
			shift(t, db, 5, 1)
			r, _, _ := stored(t, db, 4)
			_, _, prev := stored(t, db, 4)
			r.Position, r.ID, r.Key = 5, "01900000-0000-7000-8000-000000000000", strings.Repeat("ab", 32)
			r.Event = bytes.Replace(r.Event, []byte(`"user":"`), []byte(`"user":"forged-`), 1)
			for i := range r.Changes {
				r.Changes[i].ID += "x"
				c := r.Changes[i]
				sqlExec(t, db, `INSERT INTO changes VALUES (5, $1, $2, $3, $4, $5, $6, $7, $8)`, i,
					[]byte(c.Entity), []byte(c.ID), []byte(c.Field), []byte(c.From), []byte(c.To), []byte(c.Actor), c.Time)
			}
			sqlExec(t, db, `INSERT INTO records VALUES ($1, $2, decode($3, 'hex'), $4, (SELECT type FROM records WHERE position = 4), $5, $6, $7)`,
				5, r.ID, r.Key, r.Appended, string(r.Event), prev, logchain.Hash(prev, &r))
		}},
		{name: "TruncateTail", want: 0, attack: truncateTail},
		{name: "TruncateTailAnchored", anchors: []bonnie.Position{tamperN}, want: 8, reason: "anchor", attack: truncateTail},
		{name: "TruncateRecordsOnly", want: 8, reason: "removed from the tail", attack: func(t *testing.T, db *sql.DB) {
			sqlExec(t, db, `DELETE FROM records WHERE position > 7`)
		}},
		{name: "RewriteTail", want: 0, attack: rewriteTail},
		{name: "RewriteTailAnchored", anchors: []bonnie.Position{tamperN}, want: tamperN, attack: rewriteTail},
		{name: "RewriteTailAnchors", anchors: []bonnie.Position{3, 5, 8, tamperN}, want: 8, attack: rewriteTail},
		{name: "ForgedAppend", anchors: []bonnie.Position{tamperN}, want: 0, attack: func(t *testing.T, db *sql.DB) {
			r, _, prev := stored(t, db, tamperN)
			r.Position, r.Key, r.ID, r.Changes = tamperN+1, strings.Repeat("cd", 32), r.ID+"f", nil
			sqlExec(t, db, `INSERT INTO records VALUES ($1, $2, decode($3, 'hex'), $4, (SELECT type FROM records WHERE position = $5), $6, $7, $8)`,
				int64(r.Position), r.ID, r.Key, r.Appended, tamperN, string(r.Event), prev, logchain.Hash(prev, &r))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := buildLog(t)
			if err := f.verify(t); err != nil {
				t.Fatalf("Verify before the attack: %v", err)
			}
			f.attack(t, func(db *sql.DB) { tc.attack(t, db) })
			var anchors []postgres.Anchor
			for _, p := range tc.anchors {
				anchors = append(anchors, f.anchors[p])
			}
			err := f.verify(t, anchors...)
			if tc.want == 0 {
				if err != nil {
					t.Fatalf("Verify = %v; this attack was expected to be undetectable here", err)
				}
				return
			}
			wantBroken(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("Verify = %v, want a reason mentioning %q", err, tc.reason)
			}
		})
	}
}

func truncateTail(t *testing.T, db *sql.DB) {
	sqlExec(t, db, `DELETE FROM changes WHERE position > 7`)
	sqlExec(t, db, `DELETE FROM records WHERE position > 7`)
	sqlExec(t, db, `DELETE FROM entity_state WHERE position > 7`)
}

// rewriteTail changes record 6 and recomputes the hashes of 6..N: a valid
// chain that only an anchor kept outside can expose.
func rewriteTail(t *testing.T, db *sql.DB) {
	sqlExec(t, db, `UPDATE records SET event = replace(event, '"user":"', '"user":"x') WHERE position = 6`)
	rehash(t, db, 6, tamperN)
}

// The append-only trigger refuses changes made without turning it off.
func TestAppendOnlyTrigger(t *testing.T) {
	f := buildLog(t)
	db, err := sql.Open("pgx", f.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`UPDATE records SET type = 'Logout' WHERE position = 2`,
		`DELETE FROM records WHERE position = 10`,
		`DELETE FROM changes`,
		`TRUNCATE changes`,
	} {
		if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want the append-only refusal", q, err)
		}
	}
	if err := f.verify(t); err != nil {
		t.Fatal(err)
	}
}
