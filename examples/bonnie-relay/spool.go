package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/mattn/go-sqlite3"

	"github.com/bonnie-archive/bonnie"
)

// errSpoolFull is why a notification was not taken: the spool holds
// --spool-max-count notifications or --spool-max-bytes bytes already
// (notifications and the bodies fetched for them).
var errSpoolFull = errors.New("spool full")

// spool is the relay's durable outbox: a SQLite table in WAL mode with
// synchronous=FULL, so that a row whose insert returned survives a crash
// of the process or of the machine. Rows leave it, in seq order, only
// once the broker confirmed them.
type spool struct {
	db                 *sql.DB
	maxCount, maxBytes int64

	mu           sync.Mutex
	count, bytes int64
	// bodyBytes is the size of the bodies fetched for spooled rows (in
	// SPOOL/blobs until published), counted against maxBytes. A body
	// shared by several rows counts once per row: an over-estimate.
	bodyBytes  int64
	added      chan struct{} // signalled after an insert (for the publisher)
	addedFetch chan struct{} // signalled after an insert (for the body fetcher)
}

// row is one spooled notification.
type row struct {
	seq  int64
	uuid string
	raw  []byte
	meta message.Metadata
	// bodies is the JSON of the bodies fetched for it (bodies.go), nil
	// while not fetched.
	bodies []byte
}

func openSpool(ctx context.Context, path string, maxCount, maxBytes int64) (*spool, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	// One connection: the writer and the publisher take turns, and
	// nothing else opens the file in this process.
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS spool (
	seq      INTEGER PRIMARY KEY,
	uuid     TEXT NOT NULL,
	raw      BLOB NOT NULL,
	meta     TEXT NOT NULL,
	received TEXT NOT NULL
)`); err != nil {
		db.Close()
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	// Added with body fetching: NULL until the row's bodies are fetched.
	if _, err := db.ExecContext(ctx, `ALTER TABLE spool ADD COLUMN bodies TEXT`); err != nil && !strings.Contains(err.Error(), "duplicate column") {
		db.Close()
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	// bodies is NULL until the body fetcher looked at the row, then the
	// JSON of its bodies, or "" when it has none. The rows holding bodies
	// are few (fetched, not yet published): references looks only at them;
	// unfetched only at the rows not looked at.
	for _, ix := range []string{
		`CREATE INDEX IF NOT EXISTS spool_fetched ON spool (seq) WHERE bodies IS NOT NULL AND bodies != ''`,
		`CREATE INDEX IF NOT EXISTS spool_unfetched ON spool (seq) WHERE bodies IS NULL`,
	} {
		if _, err := db.ExecContext(ctx, ix); err != nil {
			db.Close()
			return nil, fmt.Errorf("spool %s: %w", path, err)
		}
	}
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&mode); err != nil || mode != "2" {
		db.Close()
		return nil, fmt.Errorf("spool %s: synchronous is %q, want 2 (FULL): %v", path, mode, err)
	}
	s := &spool{db: db, maxCount: maxCount, maxBytes: maxBytes, added: make(chan struct{}, 1), addedFetch: make(chan struct{}, 1)}
	if err := db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(length(raw)), 0) FROM spool`).Scan(&s.count, &s.bytes); err != nil {
		db.Close()
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	if err := db.QueryRowContext(ctx, bodyBytesQuery+` WHERE bodies IS NOT NULL AND bodies != ''`).Scan(&s.bodyBytes); err != nil {
		db.Close()
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	return s, nil
}

func (s *spool) Close() error { return s.db.Close() }

// bodyBytesQuery sums the sizes of the bodies the selected rows name
// (their bodies column is the JSON of []bonnie.BodyRef).
const bodyBytesQuery = `SELECT coalesce(sum(json_extract(j.value, '$.size')), 0)
FROM spool, json_each(spool.bodies) AS j`

// refsBytes sums the sizes of the bodies a row's bodies JSON names.
func refsBytes(js []byte) int64 {
	var refs []bonnie.BodyRef
	if len(js) == 0 || json.Unmarshal(js, &refs) != nil {
		return 0
	}
	var n int64
	for _, r := range refs {
		if r.Digest != "" {
			n += r.Size
		}
	}
	return n
}

// size returns how many notifications and bytes are spooled, and the
// bytes of the bodies fetched for them.
func (s *spool) size() (count, bytes, bodyBytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, s.bytes, s.bodyBytes
}

// put stores the messages that fit, in order, in one transaction, and
// returns how many it stored (a prefix of msgs): those are durable when it
// returns; the rest did not fit (errSpoolFull) or err says why none was
// stored.
func (s *spool) put(ctx context.Context, msgs []*message.Message) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, bytes := 0, int64(0)
	for _, m := range msgs {
		if s.count+int64(n)+1 > s.maxCount || s.bytes+s.bodyBytes+bytes+int64(len(m.Payload)) > s.maxBytes {
			break
		}
		n++
		bytes += int64(len(m.Payload))
	}
	if n == 0 {
		return 0, errSpoolFull
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO spool (uuid, raw, meta, received) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	defer st.Close()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, m := range msgs[:n] {
		meta, err := json.Marshal(m.Metadata)
		if err != nil {
			return 0, fmt.Errorf("spool: metadata: %w", err)
		}
		if _, err := st.ExecContext(ctx, m.UUID, m.Payload, string(meta), now); err != nil {
			return 0, fmt.Errorf("spool: insert: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("spool: commit: %w", err)
	}
	s.count += int64(n)
	s.bytes += bytes
	select {
	case s.added <- struct{}{}:
	default:
	}
	select {
	case s.addedFetch <- struct{}{}:
	default:
	}
	if n < len(msgs) {
		return n, errSpoolFull
	}
	return n, nil
}

// next returns up to max of the oldest rows.
func (s *spool) next(ctx context.Context, max int) ([]row, error) {
	rs, err := s.db.QueryContext(ctx, `SELECT seq, uuid, raw, meta, bodies FROM spool ORDER BY seq LIMIT ?`, max)
	if err != nil {
		return nil, fmt.Errorf("spool: read: %w", err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		var meta string
		var bodies sql.NullString
		if err := rs.Scan(&r.seq, &r.uuid, &r.raw, &meta, &bodies); err != nil {
			return nil, fmt.Errorf("spool: read: %w", err)
		}
		if err := json.Unmarshal([]byte(meta), &r.meta); err != nil {
			return nil, fmt.Errorf("spool: row %d metadata: %w", r.seq, err)
		}
		if bodies.Valid {
			r.bodies = []byte(bodies.String)
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// setBodies records, in one transaction, the bodies fetched for rows
// (JSON; "" for a row without any), so that a restart publishes what was
// fetched instead of fetching again.
func (s *spool) setBodies(ctx context.Context, bodies map[int64][]byte) error {
	// mu before the connection, as put and remove take them: the spool
	// has one connection.
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("spool: record bodies: %w", err)
	}
	defer tx.Rollback()
	var added int64
	for seq, b := range bodies {
		res, err := tx.ExecContext(ctx, `UPDATE spool SET bodies = ? WHERE seq = ? AND bodies IS NULL`, string(b), seq)
		if err != nil {
			return fmt.Errorf("spool: record bodies: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			added += refsBytes(b)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("spool: record bodies: %w", err)
	}
	s.bodyBytes += added
	return nil
}

// unfetched returns up to max of the oldest rows the body fetcher has not
// looked at (seq and raw only).
func (s *spool) unfetched(ctx context.Context, max int) ([]row, error) {
	rs, err := s.db.QueryContext(ctx, `SELECT seq, raw FROM spool WHERE bodies IS NULL ORDER BY seq LIMIT ?`, max)
	if err != nil {
		return nil, fmt.Errorf("spool: read: %w", err)
	}
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		if err := rs.Scan(&r.seq, &r.raw); err != nil {
			return nil, fmt.Errorf("spool: read: %w", err)
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// references reports whether a spooled row still names the body digest.
func (s *spool) references(ctx context.Context, digest string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM spool WHERE bodies IS NOT NULL AND bodies != '' AND instr(bodies, ?) > 0`, digest).Scan(&n)
	return n > 0, err
}

// remove deletes rows (confirmed by the broker).
func (s *spool) remove(ctx context.Context, rows []row) error {
	if len(rows) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var bytes int64
	for _, r := range rows {
		bytes += int64(len(r.raw))
	}
	// Rows are read in seq order and only the publisher deletes.
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("spool: delete: %w", err)
	}
	defer tx.Rollback()
	var bodyBytes int64
	if err := tx.QueryRowContext(ctx, bodyBytesQuery+` WHERE seq BETWEEN ? AND ? AND bodies IS NOT NULL AND bodies != ''`,
		rows[0].seq, rows[len(rows)-1].seq).Scan(&bodyBytes); err != nil {
		return fmt.Errorf("spool: delete: %w", err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM spool WHERE seq BETWEEN ? AND ?`, rows[0].seq, rows[len(rows)-1].seq)
	if err != nil {
		return fmt.Errorf("spool: delete: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n != int64(len(rows)) {
		return fmt.Errorf("spool: deleted %d rows, want %d", n, len(rows))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("spool: delete: %w", err)
	}
	s.count -= int64(len(rows))
	s.bytes -= bytes
	s.bodyBytes -= bodyBytes
	return nil
}
