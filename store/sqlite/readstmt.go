package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"

	"github.com/bonnie-archive/bonnie"
)

// readStmts keeps the page query of each event mask prepared. A sink
// reads a page at every commit when it is live, and preparing the query
// (its type list included) cost as much as running it.
type readStmts struct {
	mu    sync.Mutex
	db    *sql.DB
	head  *sql.Stmt
	pages map[bonnie.EventMask]*sql.Stmt
}

// maxReadStmts bounds the cache: a caller inventing masks gets its
// queries prepared each time instead of growing it.
const maxReadStmts = 64

// headQuery is the highest position committed; it also starts a read
// transaction's snapshot.
const headQuery = `SELECT COALESCE(MAX(position), 0) FROM records`

// pageQuery reads up to ?3 records after ?1 and up to ?2. For a mask other
// than every event, the event and changes columns are NULL for the types
// not in it: SQLite evaluates CASE lazily, so it never reads their text
// from the pages. The types are the log's own names, written in as
// literals so that the statement keeps three parameters.
func pageQuery(mask bonnie.EventMask) string {
	eventCol, changesCol := "event", "changes"
	if mask != bonnie.AllEvents {
		var names []string
		for _, t := range mask.Types() {
			names = append(names, "'"+strings.ReplaceAll(t.String(), "'", "''")+"'")
		}
		in := "(NULL)"
		if len(names) > 0 {
			in = "(" + strings.Join(names, ",") + ")"
		}
		eventCol = "CASE WHEN type IN " + in + " THEN event END"
		changesCol = "CASE WHEN type IN " + in + " THEN changes END"
	}
	return `SELECT position, id, key, appended, type, ` + eventCol + `, prev_hash, hash, ` + changesCol + `
FROM records WHERE position > ? AND position <= ? ORDER BY position LIMIT ?`
}

// page returns the page query of mask and a function to call when done
// with it.
func (s *readStmts) page(ctx context.Context, mask bonnie.EventMask) (*sql.Stmt, func(), error) {
	s.mu.Lock()
	st, cached := s.pages[mask]
	if !cached {
		var err error
		if st, err = s.db.PrepareContext(ctx, pageQuery(mask)); err != nil {
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("sqlite: read: %w", err)
		}
		if len(s.pages) < maxReadStmts {
			if s.pages == nil {
				s.pages = make(map[bonnie.EventMask]*sql.Stmt)
			}
			s.pages[mask] = st
			cached = true
		}
	}
	s.mu.Unlock()
	if !cached {
		return st, func() { st.Close() }, nil
	}
	return st, func() {}, nil
}

// headStmt returns the prepared head query.
func (s *readStmts) headStmt(ctx context.Context) (*sql.Stmt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.head == nil {
		st, err := s.db.PrepareContext(ctx, headQuery)
		if err != nil {
			return nil, fmt.Errorf("sqlite: head: %w", err)
		}
		s.head = st
	}
	return s.head, nil
}

func (s *readStmts) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.head != nil {
		s.head.Close()
	}
	for _, st := range s.pages {
		st.Close()
	}
	s.head, s.pages = nil, nil
}
