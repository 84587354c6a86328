package projection

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/bonnie-archive/bonnie"
)

// TestOpenKeepsOrRebuilds: a projection keeps its rows and position across
// reopening with the same version, and is emptied, at position 0, by
// another version or a forced reset; the position never moves back.
func TestOpenKeepsOrRebuilds(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "p", "x.db")
	s := Schema{Name: "x", Version: 1, DDL: `CREATE TABLE t (a INTEGER)`, Tables: []string{"t"}}
	open := func(s Schema) (count int, pos bonnie.Position) {
		db, err := Open(ctx, path, s)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&count); err != nil {
			t.Fatal(err)
		}
		if pos, err = Position(ctx, db); err != nil {
			t.Fatal(err)
		}
		return count, pos
	}
	db, err := Open(ctx, path, s)
	if err != nil {
		t.Fatal(err)
	}
	tx, _ := db.BeginTx(ctx, nil)
	tx.ExecContext(ctx, `INSERT INTO t VALUES (1)`)
	if err := Advance(ctx, tx, 7); err != nil {
		t.Fatal(err)
	}
	if err := Advance(ctx, tx, 5); err != nil { // never back
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if n, p := open(s); n != 1 || p != 7 {
		t.Fatalf("same version: %d rows at %d, want 1 at 7", n, p)
	}
	s.Version = 2
	if n, p := open(s); n != 0 || p != 0 {
		t.Fatalf("new version: %d rows at %d, want 0 at 0", n, p)
	}
	db, _ = Open(ctx, path, s)
	db.ExecContext(ctx, `INSERT INTO t VALUES (1)`)
	if err := Reset(ctx, db, s, true); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if n, p := open(s); n != 0 || p != 0 {
		t.Fatalf("forced reset: %d rows at %d, want 0 at 0", n, p)
	}
}
