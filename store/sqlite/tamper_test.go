package sqlite_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
	"github.com/bonnie-archive/bonnie/store/sqlite"
	"github.com/bonnie-archive/bonnie/store/storetest"
)

// The tamper tests build a log of tamperN records, close it, change the
// file with plain SQL as an attacker with write access would, reopen it
// and check what Verify reports.
const tamperN = 10

type fixture struct {
	path    string
	anchors map[bonnie.Position]sqlite.Anchor // the hash of every record, as if published
}

func buildLog(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{path: filepath.Join(t.TempDir(), "log.db"), anchors: map[bonnie.Position]sqlite.Anchor{}}
	l, err := sqlite.Open(t.Context(), f.path)
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

// attack runs SQL on the closed log file, foreign keys off, as an attacker
// would with the sqlite3 shell.
func (f *fixture) attack(t *testing.T, fn func(db *sql.DB)) {
	t.Helper()
	db, err := sql.Open("sqlite3", f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fn(db)
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// stored reads record pos as stored, with its changes, the way an outside
// verifier (or an attacker recomputing hashes) would.
func stored(t *testing.T, db *sql.DB, pos bonnie.Position) (r logchain.Record, prev, hash []byte) {
	t.Helper()
	r.Position = pos
	if err := db.QueryRow(`SELECT id, CASE typeof(key) WHEN 'blob' THEN lower(hex(key)) ELSE key END, appended, event, prev_hash, hash FROM records WHERE position = ?`, int64(pos)).
		Scan(&r.ID, &r.Key, &r.Appended, &r.Event, &prev, &hash); err != nil {
		t.Fatalf("read record %d: %v", pos, err)
	}
	rows, err := db.Query(`SELECT entity, id, field, from_value, to_value, actor, time FROM changes WHERE position = ? ORDER BY seq`, int64(pos))
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

// rehash recomputes and stores the hashes of records from..to, as an
// attacker who knows the algorithm would after changing them.
func rehash(t *testing.T, db *sql.DB, from, to bonnie.Position) {
	t.Helper()
	_, prev, _ := stored(t, db, from)
	for p := from; p <= to; p++ {
		r, _, _ := stored(t, db, p)
		h := logchain.Hash(prev, &r)
		exec(t, db, `UPDATE records SET prev_hash = ?, hash = ? WHERE position = ?`, prev, h, int64(p))
		prev = h
	}
}

// shift renumbers records and changes at or after from by delta.
func shift(t *testing.T, db *sql.DB, from bonnie.Position, delta int) {
	t.Helper()
	for _, tbl := range []string{"records", "changes"} {
		exec(t, db, `UPDATE `+tbl+` SET position = -(position + ?) WHERE position >= ?`, delta, int64(from))
		exec(t, db, `UPDATE `+tbl+` SET position = -position WHERE position < 0`)
	}
}

func (f *fixture) verify(t *testing.T, anchors ...sqlite.Anchor) error {
	t.Helper()
	l, err := sqlite.Open(t.Context(), f.path)
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
		name string
		// attack changes the file; anchors are the hashes the owner kept
		// outside; want is the first bad position (0: undetectable).
		attack  func(t *testing.T, db *sql.DB)
		anchors []bonnie.Position
		want    bonnie.Position
		reason  string // a part of the reason that shows the right check fired
	}{
		{name: "EventValue", want: 4, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE records SET event = replace(event, '"user":"', '"user":"x') WHERE position = 4`)
		}},
		{name: "EventRawByte", want: 9, attack: func(t *testing.T, db *sql.DB) {
			// Raw is base64 in the JSON: flip one character of it.
			exec(t, db, `UPDATE records SET event = replace(event, '"raw":"bG9n', '"raw":"bG9o') WHERE position = 9`)
		}},
		{name: "ChangeValue", want: 6, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE changes SET to_value = 'deleted' WHERE position = 6 AND seq = 0`)
		}},
		{name: "ChangeActor", want: 2, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE changes SET actor = 'mallory' WHERE position = 2 AND seq = 1`)
		}},
		{name: "DeleteRecord", want: 5, reason: "missing", attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM records WHERE position = 5`)
		}},
		{name: "DeleteRecordAndRenumber", want: 5, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM changes WHERE position = 5`)
			exec(t, db, `DELETE FROM records WHERE position = 5`)
			shift(t, db, 6, -1)
		}},
		{name: "DeleteChange", want: 7, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM changes WHERE position = 7 AND seq = 1`)
		}},
		{name: "AddChange", want: 3, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `INSERT INTO changes SELECT position, 9, entity, id, 'flag:\Deleted', '', 'set', actor, time FROM changes WHERE position = 3 AND seq = 0`)
		}},
		{name: "SwapRecords", want: 3, attack: func(t *testing.T, db *sql.DB) {
			for _, tbl := range []string{"records", "changes"} {
				exec(t, db, `UPDATE `+tbl+` SET position = -1 WHERE position = 3`)
				exec(t, db, `UPDATE `+tbl+` SET position = 3 WHERE position = 4`)
				exec(t, db, `UPDATE `+tbl+` SET position = 4 WHERE position = -1`)
			}
		}},
		{name: "SwapEvents", want: 3, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE records SET event = CASE position WHEN 3 THEN (SELECT event FROM records WHERE position = 4)
				ELSE (SELECT event FROM records WHERE position = 3) END WHERE position IN (3, 4)`)
		}},
		{name: "SwapChanges", want: 8, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE changes SET seq = -1 WHERE position = 8 AND seq = 0`)
			exec(t, db, `UPDATE changes SET seq = 0 WHERE position = 8 AND seq = 1`)
			exec(t, db, `UPDATE changes SET seq = 1 WHERE position = 8 AND seq = -1`)
		}},
		{name: "HashColumn", want: 6, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE records SET hash = zeroblob(32) WHERE position = 6`)
		}},
		{name: "PrevHashColumn", want: 6, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE records SET prev_hash = zeroblob(32) WHERE position = 6`)
		}},
		{name: "TypeColumn", want: 2, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE records SET type = 'Logout' WHERE position = 2`)
		}},
		{name: "EntityState", want: 5, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `UPDATE entity_state SET value = 'expunged' WHERE id = 'F/1/5' AND field = 'state'`)
		}},
		{name: "ReplaceAndRehashOne", want: 6, reason: "not the record that record 7 was chained to", attack: func(t *testing.T, db *sql.DB) {
			// The attacker recomputes record 6's own hash; record 7 still
			// names the old one.
			exec(t, db, `UPDATE records SET event = replace(event, '"user":"', '"user":"x') WHERE position = 6`)
			rehash(t, db, 6, 6)
		}},
		{name: "ForgedInsertMiddle", want: 5, reason: "inserted", attack: func(t *testing.T, db *sql.DB) {
			// Make room at 5 and insert a record whose own hash is right
			// (chained to record 4).
			shift(t, db, 5, 1)
			r, _, _ := stored(t, db, 4)
			_, _, prev := stored(t, db, 4)
			r.Position, r.ID, r.Key = 5, "01900000-0000-7000-8000-000000000000", strings.Repeat("ab", 32)
			r.Event = bytes.Replace(r.Event, []byte(`"user":"`), []byte(`"user":"forged-`), 1)
			exec(t, db, `INSERT INTO records(position, id, key, appended, type, event, prev_hash, hash) VALUES (?, ?, ?, ?, (SELECT type FROM records WHERE position = 4), ?, ?, ?)`,
				5, r.ID, r.Key, r.Appended, string(r.Event), prev, logchain.Hash(prev, &r))
			for i, c := range r.Changes {
				exec(t, db, `INSERT INTO changes VALUES (5, ?, ?, ?, ?, ?, ?, ?, ?)`, i, c.Entity, c.ID+"x", c.Field, c.From, c.To, c.Actor, c.Time)
				r.Changes[i].ID += "x"
			}
			exec(t, db, `UPDATE records SET hash = ? WHERE position = 5`, logchain.Hash(prev, &r))
		}},
		{name: "ChangesCopyEdited", want: 5, reason: "copy of its changes", attack: func(t *testing.T, db *sql.DB) {
			// Readers take a record's changes from its copy in the row:
			// editing only the copy would show sinks a change the hashed
			// table does not have.
			exec(t, db, `UPDATE records SET changes = CAST(replace(CAST(changes AS TEXT), 'alice', 'mallo') AS BLOB) WHERE position = 5`)
		}},
		{name: "TruncateTail", want: 0, attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM changes WHERE position > 7`)
			exec(t, db, `DELETE FROM records WHERE position > 7`)
			exec(t, db, `DELETE FROM entity_state WHERE position > 7`)
		}},
		{name: "TruncateTailAnchored", anchors: []bonnie.Position{tamperN}, want: 8, reason: "anchor", attack: func(t *testing.T, db *sql.DB) {
			exec(t, db, `DELETE FROM changes WHERE position > 7`)
			exec(t, db, `DELETE FROM records WHERE position > 7`)
			exec(t, db, `DELETE FROM entity_state WHERE position > 7`)
		}},
		{name: "TruncateRecordsOnly", want: 8, attack: func(t *testing.T, db *sql.DB) {
			// Changes left behind betray the removed records.
			exec(t, db, `DELETE FROM records WHERE position > 7`)
		}},
		{name: "RewriteTail", want: 0, attack: rewriteTail},
		{name: "RewriteTailAnchored", anchors: []bonnie.Position{tamperN}, want: tamperN, attack: rewriteTail},
		{name: "RewriteTailAnchors", anchors: []bonnie.Position{3, 5, 8, tamperN}, want: 8, attack: rewriteTail},
		{name: "ForgedAppend", anchors: []bonnie.Position{tamperN}, want: 0, attack: func(t *testing.T, db *sql.DB) {
			// A record appended after the last anchor, rightly chained,
			// is indistinguishable from a real one.
			r, _, prev := stored(t, db, tamperN)
			r.Position, r.Key = tamperN+1, strings.Repeat("cd", 32)
			exec(t, db, `INSERT INTO records(position, id, key, appended, type, event, prev_hash, hash) VALUES (?, ?, ?, ?, (SELECT type FROM records WHERE position = ?), ?, ?, ?)`,
				int64(r.Position), r.ID+"f", r.Key, r.Appended, tamperN, string(r.Event), prev, []byte{})
			r.ID += "f"
			r.Changes = nil
			exec(t, db, `UPDATE records SET hash = ? WHERE position = ?`, logchain.Hash(prev, &r), int64(r.Position))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := buildLog(t)
			if err := f.verify(t); err != nil {
				t.Fatalf("Verify before the attack: %v", err)
			}
			f.attack(t, func(db *sql.DB) { tc.attack(t, db) })
			var anchors []sqlite.Anchor
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

// rewriteTail changes record 6 and recomputes the hashes of 6..N: a valid
// chain that only an anchor kept outside can expose.
func rewriteTail(t *testing.T, db *sql.DB) {
	exec(t, db, `UPDATE records SET event = replace(event, '"user":"', '"user":"x') WHERE position = 6`)
	rehash(t, db, 6, tamperN)
}
