// Package pgtest gives tests a PostgreSQL schema of their own: created
// with a unique name, selected by the returned DSN's search_path, and
// dropped when the test ends.
//
// The server is $BONNIE_TEST_POSTGRES, or DefaultDSN. When it cannot be
// reached the test is skipped with the reason, unless the environment
// variable CI is "true": then it fails, so that a CI machine without its
// database never passes by skipping.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// DefaultDSN is the server tests use when BONNIE_TEST_POSTGRES is not set.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DSN returns the test server's DSN.
func DSN() string {
	if d := os.Getenv("BONNIE_TEST_POSTGRES"); d != "" {
		return d
	}
	return DefaultDSN
}

var (
	reachOnce sync.Once
	reachErr  error
)

// Require skips or fails t (see the package documentation) when the test
// server cannot be reached.
func Require(t testing.TB) {
	t.Helper()
	reachOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		db, err := sql.Open("pgx", DSN())
		if err != nil {
			reachErr = err
			return
		}
		defer db.Close()
		if reachErr = db.PingContext(ctx); reachErr == nil {
			sweep(ctx, db)
		}
	})
	if reachErr == nil {
		return
	}
	msg := fmt.Sprintf("PostgreSQL at %s is unreachable (set BONNIE_TEST_POSTGRES): %v", redact(DSN()), reachErr)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxx")
			return u.String()
		}
	}
	return dsn
}

// Schema creates a new schema, registers its removal with t.Cleanup, and
// returns its name and a DSN whose search_path selects it. Close every
// connection to it before the test ends (cleanups run last in, first out,
// so a Log closed by a cleanup registered later is closed in time).
func Schema(t testing.TB) (name, dsn string) {
	t.Helper()
	Require(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name = fmt.Sprintf("%s%d_%s", prefix, time.Now().Unix(), hex.EncodeToString(b[:]))
	db, err := sql.Open("pgx", DSN())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE SCHEMA ` + pgx.Identifier{name}.Sanitize()); err != nil {
		db.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		defer db.Close()
		if _, err := db.Exec(`DROP SCHEMA ` + pgx.Identifier{name}.Sanitize() + ` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name, WithSearchPath(DSN(), name)
}

// prefix starts the name of every schema Schema makes; the creation time
// follows, so that sweep can tell a leftover.
const prefix = "bonnie_test_"

// sweep drops the schemas of test runs that were killed before their
// cleanup (older than two hours).
func sweep(ctx context.Context, db *sql.DB) {
	rows, err := db.QueryContext(ctx, `SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)`, prefix)
	if err != nil {
		return
	}
	var old []string
	for rows.Next() {
		var n string
		if rows.Scan(&n) != nil {
			break
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(n, prefix), "_")
		if sec, err := strconv.ParseInt(ts, 10, 64); err == nil && time.Since(time.Unix(sec, 0)) > 2*time.Hour {
			old = append(old, n)
		}
	}
	rows.Close()
	for _, n := range old {
		_, _ = db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{n}.Sanitize()+` CASCADE`)
	}
}

// WithSearchPath returns dsn with its search_path set to schema.
func WithSearchPath(dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			q := u.Query()
			q.Set("search_path", schema)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return dsn + " search_path=" + schema
}
