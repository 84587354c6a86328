package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/store/postgres/pgtest"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// migrateSource makes a data directory whose log holds the real captures
// (ingested by the engine, so with their changes), a dead letter and a
// cursor.
func migrateSource(t *testing.T, files []string) string {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	lg, err := sqlite.Open(ctx, filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	eng, err := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := eng.Ingest(ctx, raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := eng.Ingest(ctx, []byte("not a notification"), "test"); err == nil {
		t.Fatal("garbage was ingested")
	}
	if err := lg.SetCursor(ctx, "archive", 3); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMigrate(t *testing.T) {
	files := captureFiles(t)
	dir := migrateSource(t, files[:len(files)/2])
	_, dsn := pgtest.Schema(t)

	code, out, errs := bonnieCmd(t, nil, "--data", dir, "migrate", "--to-postgres", dsn, "--batch", "10")
	if code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, errs)
	}
	t.Logf("migrate:\n%s%s", out, errs)
	if !strings.Contains(out, "copied records 1..") || !strings.Contains(out, "equals the source's") ||
		!strings.Contains(out, "copied 1 dead letters, 1 cursors") || !strings.Contains(errs, "copied ") {
		t.Fatalf("migrate said:\n%s%s", out, errs)
	}

	// The commands read the copy with --postgres and see what they see
	// in the SQLite log.
	for _, args := range [][]string{{"events"}, {"events", "--json"}, {"deadletters", "--all"}, {"verify"}} {
		c1, fromSQLite, _ := bonnieCmd(t, nil, append([]string{"--data", dir}, args...)...)
		c2, fromPG, e2 := bonnieCmd(t, nil, append([]string{"--postgres", dsn}, args...)...)
		if c1 != 0 || c2 != 0 || fromSQLite != fromPG {
			t.Fatalf("bonnie %v: exit %d and %d (%s); SQLite:\n%s\nPostgreSQL:\n%s", args, c1, c2, e2, fromSQLite, fromPG)
		}
	}

	// The source grows (bonnied went on); migrating again copies the rest.
	lg, err := sqlite.Open(context.Background(), filepath.Join(dir, logFile))
	if err != nil {
		t.Fatal(err)
	}
	eng, _ := bonnie.New(bonnie.Options{Store: lg, Logger: quietLogger()})
	for _, f := range files[len(files)/2:] {
		raw, _ := os.ReadFile(f)
		if _, _, err := eng.Ingest(context.Background(), raw, "test"); err != nil {
			t.Fatal(err)
		}
	}
	lg.Close()
	code, out, errs = bonnieCmd(t, nil, "--data", dir, "migrate", "--to-postgres", dsn)
	if code != 0 || strings.Contains(out, "copied records 1..") || !strings.Contains(out, "equals the source's") {
		t.Fatalf("migrate again: exit %d:\n%s%s", code, out, errs)
	}
	c1, fromSQLite, _ := bonnieCmd(t, nil, "--data", dir, "events")
	c2, fromPG, _ := bonnieCmd(t, nil, "--postgres", dsn, "events")
	if c1 != 0 || c2 != 0 || fromSQLite != fromPG || strings.Count(fromPG, "\n") < len(files) {
		t.Fatalf("after the second migrate: SQLite:\n%s\nPostgreSQL:\n%s", fromSQLite, fromPG)
	}
}

// A PostgreSQL log holding other records is refused.
func TestMigrateRefusesAnotherLog(t *testing.T) {
	files := captureFiles(t)
	_, dsn := pgtest.Schema(t)
	a := migrateSource(t, files[:5])
	if code, _, errs := bonnieCmd(t, nil, "--data", a, "migrate", "--to-postgres", dsn); code != 0 {
		t.Fatalf("migrate: %s", errs)
	}
	b := migrateSource(t, files[5:9]) // another site's log
	code, _, errs := bonnieCmd(t, nil, "--data", b, "migrate", "--to-postgres", dsn)
	if code != 1 || !strings.Contains(errs, "refused") {
		t.Fatalf("migrate of another log: exit %d: %s", code, errs)
	}
	if code, out, _ := bonnieCmd(t, nil, "--postgres", dsn, "verify"); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("the refused target: %s", out)
	}
}

func TestPostgresFlagNeverCreates(t *testing.T) {
	_, dsn := pgtest.Schema(t)
	code, _, errs := bonnieCmd(t, nil, "--postgres", dsn, "events")
	if code != 1 || !strings.Contains(errs, "no Bonnie log") {
		t.Fatalf("events on an empty schema: exit %d: %s", code, errs)
	}
	code, _, errs = bonnieCmd(t, nil, "--data", t.TempDir(), "migrate", "--to-postgres", dsn)
	if code != 1 || !strings.Contains(errs, "no log at") {
		t.Fatalf("migrate without a source: exit %d: %s", code, errs)
	}
}
