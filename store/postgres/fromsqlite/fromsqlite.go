// Package fromsqlite copies a store/sqlite log file into a store/postgres
// log, byte for byte: every record with its position, id, key, append time,
// event JSON, changes and hashes, the dead letters with their ids, and the
// sinks' cursors. Then it verifies the copy's chain and checks that its
// head hash is the source's: since every hash covers the record and the
// hash before it, equal head hashes mean equal logs.
//
// Copying is resumable. Each batch of records is one transaction on the
// target (dead letters go 500 per transaction, before the records); a
// copy that was interrupted (or a source that has grown since)
// continues from the target's head, after checking that the target's last
// record is the source's record at that position. A target whose records
// differ from the source's is refused (ErrDiffers), and nothing is written
// to it.
//
// The source is read with plain SQL, read-only, so that the bytes copied
// are the bytes stored and hashed (decoding and re-encoding the events
// could change them). It may be in use by a running bonnied: the copy then
// takes what is committed, and a later Copy takes the rest. Stop the
// ingest before the last Copy if the target must end equal to the source.
package fromsqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"github.com/bonnie-archive/bonnie"
	"github.com/bonnie-archive/bonnie/internal/logchain"
	"github.com/bonnie-archive/bonnie/store/postgres"
	"github.com/bonnie-archive/bonnie/store/sqlite"
)

// ErrDiffers is returned when the target holds records that are not the
// source's (it wraps postgres.ErrDiffers).
var ErrDiffers = fmt.Errorf("fromsqlite: %w", postgres.ErrDiffers)

// The store/sqlite schema versions this package reads. Version 2 only
// added records.changes, a copy of the changes table that is not copied
// (PostgreSQL reads its own changes table).
const minSourceSchema, maxSourceSchema = 1, 2

// Options tune Copy. The zero value is usable.
type Options struct {
	// Batch is how many records each transaction copies (default 1000).
	Batch int
	// Progress, when set, is called after every batch with the records
	// copied so far in this run and the number to copy.
	Progress func(done, total int64)
}

// Result says what Copy did.
type Result struct {
	// Start is the target's head before the copy, End after it:
	// records Start+1..End were copied.
	Start, End bonnie.Position
	// DeadLetters and Cursors count those copied (all of the source's).
	DeadLetters, Cursors int
	// Head is the source's head, which the verified target now has.
	Head postgres.Anchor
	// Verified is how long verifying the target took.
	Verified time.Duration
}

// Copy copies the SQLite log at srcPath into dst (see the package
// documentation). On success the target has been verified from its first
// record, and its head hash equals the source's.
func Copy(ctx context.Context, srcPath string, dst *postgres.Log, opt Options) (Result, error) {
	if opt.Batch <= 0 {
		opt.Batch = 1000
	}
	src, err := openSource(ctx, srcPath)
	if err != nil {
		return Result{}, err
	}
	defer src.Close()

	var res Result
	if res.Head, err = headOf(ctx, src); err != nil {
		return res, err
	}
	start, err := dst.HeadHash(ctx)
	if err != nil {
		return res, err
	}
	res.Start, res.End = start.Position, start.Position
	if err := sameAt(ctx, src, start, res.Head); err != nil {
		return res, err
	}
	// Dead letters first: a target holding other letters under the same
	// ids is refused before any record is written.
	if res.DeadLetters, err = copyDeadLetters(ctx, src, dst); err != nil {
		return res, err
	}
	total := int64(res.Head.Position - start.Position)
	for res.End < res.Head.Position {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		upto := min(res.End+bonnie.Position(opt.Batch), res.Head.Position)
		recs, err := readRecords(ctx, src, res.End, upto)
		if err != nil {
			return res, err
		}
		if err := dst.Import(ctx, recs); err != nil {
			if errors.Is(err, postgres.ErrDiffers) {
				return res, fmt.Errorf("%w (another writer appended to the target meanwhile?): %w", ErrDiffers, err)
			}
			return res, fmt.Errorf("fromsqlite: copy records %d..%d: %w", res.End+1, upto, err)
		}
		res.End = upto
		if opt.Progress != nil {
			opt.Progress(int64(res.End-start.Position), total)
		}
	}
	if res.Cursors, err = copyCursors(ctx, src, dst); err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := dst.VerifyAnchored(ctx, res.Head); err != nil {
		return res, fmt.Errorf("fromsqlite: the copy does not verify: %w", err)
	}
	res.Verified = time.Since(t0)
	head, err := dst.HeadHash(ctx)
	if err != nil {
		return res, err
	}
	if head.Position != res.Head.Position || !bytes.Equal(head.Hash, res.Head.Hash) {
		return res, fmt.Errorf("%w: the copy's head is %d %x, the source's %d %x (another writer appended to the target meanwhile?)",
			ErrDiffers, head.Position, head.Hash, res.Head.Position, res.Head.Hash)
	}
	return res, nil
}

// openSource opens the SQLite file read-only (query_only: SQLite may still
// create the -shm file beside it, which WAL readers need) and checks its
// schema version.
func openSource(ctx context.Context, path string) (*sql.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("fromsqlite: source: %w", err)
	}
	q := url.Values{}
	q.Set("_query_only", "1")
	q.Set("_busy_timeout", "5000")
	if strings.ContainsRune(path, '?') || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("fromsqlite: source %q: need a plain file path", path)
	}
	db, err := sql.Open("sqlite3", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("fromsqlite: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	var v int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v); err != nil {
		db.Close()
		return nil, fmt.Errorf("fromsqlite: %s is not a Bonnie log: %w", path, err)
	}
	if v < minSourceSchema || v > maxSourceSchema {
		db.Close()
		return nil, fmt.Errorf("fromsqlite: %s has schema version %d; this code copies versions %d to %d (store/sqlite writes %d)",
			path, v, minSourceSchema, maxSourceSchema, sqlite.SchemaVersion())
	}
	return db, nil
}

func headOf(ctx context.Context, src *sql.DB) (postgres.Anchor, error) {
	var a postgres.Anchor
	var p int64
	err := src.QueryRowContext(ctx, `SELECT position, hash FROM records ORDER BY position DESC LIMIT 1`).Scan(&p, &a.Hash)
	if errors.Is(err, sql.ErrNoRows) {
		return postgres.Anchor{Hash: logchain.Genesis()}, nil
	}
	if err != nil {
		return a, fmt.Errorf("fromsqlite: source head: %w", err)
	}
	a.Position = bonnie.Position(p)
	return a, nil
}

// sameAt checks that the target, whose head is at, holds the source's
// records: the source has a record at that position with the same hash.
func sameAt(ctx context.Context, src *sql.DB, at, srcHead postgres.Anchor) error {
	if at.Position == 0 {
		return nil
	}
	if at.Position > srcHead.Position {
		return fmt.Errorf("%w: the target has %d records, the source only %d", ErrDiffers, at.Position, srcHead.Position)
	}
	var h []byte
	if err := src.QueryRowContext(ctx, `SELECT hash FROM records WHERE position = ?`, int64(at.Position)).Scan(&h); err != nil {
		return fmt.Errorf("fromsqlite: source record %d: %w", at.Position, err)
	}
	if !bytes.Equal(h, at.Hash) {
		return fmt.Errorf("%w: record %d has hash %x in the target and %x in the source", ErrDiffers, at.Position, at.Hash, h)
	}
	return nil
}

// readRecords reads records after..upto as stored, with their changes,
// from one snapshot.
func readRecords(ctx context.Context, src *sql.DB, after, upto bonnie.Position) (out []postgres.Stored, err error) {
	tx, err := src.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("fromsqlite: read: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT position, id, key, appended, event, prev_hash, hash
FROM records WHERE position > ? AND position <= ? ORDER BY position`, int64(after), int64(upto))
	if err != nil {
		return nil, fmt.Errorf("fromsqlite: read records: %w", err)
	}
	defer rows.Close()
	idx := map[int64]int{}
	for rows.Next() {
		var (
			s   postgres.Stored
			pos int64
			key any
		)
		if err := rows.Scan(&pos, &s.ID, &key, &s.Appended, &s.Event, &s.PrevHash, &s.Hash); err != nil {
			return nil, fmt.Errorf("fromsqlite: read records: %w", err)
		}
		switch k := key.(type) {
		case []byte:
			s.Key = hex.EncodeToString(k)
		case string:
			s.Key = k
		default:
			return nil, fmt.Errorf("fromsqlite: record %d: key of type %T", pos, key)
		}
		s.Position = bonnie.Position(pos)
		idx[pos] = len(out)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fromsqlite: read records: %w", err)
	}
	if want := int(upto - after); len(out) != want {
		return nil, fmt.Errorf("fromsqlite: the source has %d records at positions %d..%d, not %d: verify it (bonnie verify)", len(out), after+1, upto, want)
	}
	chs, err := tx.QueryContext(ctx, `SELECT position, seq, entity, id, field, from_value, to_value, actor, time
FROM changes WHERE position > ? AND position <= ? ORDER BY position, seq`, int64(after), int64(upto))
	if err != nil {
		return nil, fmt.Errorf("fromsqlite: read changes: %w", err)
	}
	defer chs.Close()
	for chs.Next() {
		var (
			pos, seq int64
			c        postgres.StoredChange
		)
		if err := chs.Scan(&pos, &seq, &c.Entity, &c.ID, &c.Field, &c.From, &c.To, &c.Actor, &c.Time); err != nil {
			return nil, fmt.Errorf("fromsqlite: read changes: %w", err)
		}
		i, ok := idx[pos]
		if !ok || seq != int64(len(out[i].Changes)) {
			return nil, fmt.Errorf("fromsqlite: the source's change %d/%d is out of place: verify it (bonnie verify)", pos, seq)
		}
		out[i].Changes = append(out[i].Changes, c)
	}
	if err := chs.Err(); err != nil {
		return nil, fmt.Errorf("fromsqlite: read changes: %w", err)
	}
	return out, nil
}

// copyDeadLetters copies every dead letter, keeping ids, 500 per
// transaction; letters already copied take the source's resolution.
func copyDeadLetters(ctx context.Context, src *sql.DB, dst *postgres.Log) (int, error) {
	n := 0
	var last int64
	for {
		rows, err := src.QueryContext(ctx, `SELECT id, received, source, reason, raw, retried, position
FROM dead_letters WHERE id > ? ORDER BY id LIMIT 500`, last)
		if err != nil {
			return n, fmt.Errorf("fromsqlite: read dead letters: %w", err)
		}
		var ds []bonnie.DeadLetter
		for rows.Next() {
			var (
				d                 bonnie.DeadLetter
				received, retried string
				pos               int64
			)
			if err := rows.Scan(&d.ID, &received, &d.Source, &d.Reason, &d.Raw, &retried, &pos); err != nil {
				rows.Close()
				return n, fmt.Errorf("fromsqlite: read dead letters: %w", err)
			}
			d.Position = bonnie.Position(pos)
			if d.Received, err = logchain.ParseTime(received); err == nil && retried != "" {
				d.Retried, err = logchain.ParseTime(retried)
			}
			if err != nil {
				rows.Close()
				return n, fmt.Errorf("fromsqlite: dead letter %d: %w", d.ID, err)
			}
			ds = append(ds, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return n, fmt.Errorf("fromsqlite: read dead letters: %w", err)
		}
		if len(ds) == 0 {
			return n, nil
		}
		if err := dst.ImportDeadLetters(ctx, ds); err != nil {
			if errors.Is(err, postgres.ErrDiffers) {
				return n, fmt.Errorf("%w: %w", ErrDiffers, err)
			}
			return n, fmt.Errorf("fromsqlite: copy dead letters: %w", err)
		}
		n += len(ds)
		last = ds[len(ds)-1].ID
	}
}

// copyCursors sets each of the source's sink cursors on the target.
func copyCursors(ctx context.Context, src *sql.DB, dst *postgres.Log) (int, error) {
	rows, err := src.QueryContext(ctx, `SELECT sink, position FROM cursors ORDER BY sink`)
	if err != nil {
		return 0, fmt.Errorf("fromsqlite: read cursors: %w", err)
	}
	cur := map[string]bonnie.Position{}
	var order []string
	for rows.Next() {
		var s string
		var p int64
		if err := rows.Scan(&s, &p); err != nil {
			rows.Close()
			return 0, fmt.Errorf("fromsqlite: read cursors: %w", err)
		}
		cur[s] = bonnie.Position(p)
		order = append(order, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("fromsqlite: read cursors: %w", err)
	}
	for _, s := range order {
		if err := dst.SetCursor(ctx, s, cur[s]); err != nil {
			return 0, err
		}
	}
	return len(order), nil
}
