package sqlite

import (
	"context"
	"database/sql"
	"sync"
)

// maxCachedStatements bounds the prepared statements a pool keeps: the
// store's queries are a fixed set of texts (lists with optional filters
// make a few variants each); past the bound a query is prepared anew each
// time, as without the cache.
const maxCachedStatements = 512

// readPool is the read-only connection pool with its queries prepared
// once: SQLite otherwise parses and plans every query text on every call
// (a tenth of the CPU of a DPS registration storm went there).
type readPool struct {
	*sql.DB
	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
}

func newReadPool(db *sql.DB) *readPool {
	return &readPool{DB: db, stmts: make(map[string]*sql.Stmt)}
}

// stmt returns query prepared, or nil when it cannot be cached.
func (p *readPool) stmt(ctx context.Context, query string) *sql.Stmt {
	p.mu.RLock()
	st, full := p.stmts[query], len(p.stmts) >= maxCachedStatements
	p.mu.RUnlock()
	if st != nil || full {
		return st
	}
	// Prepared outside the lock: preparing waits for a connection, and
	// the other queries must not wait behind it.
	st, err := p.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil // the plain call reports the error
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.stmts[query]; cur != nil || len(p.stmts) >= maxCachedStatements {
		st.Close() // another caller won the race, or the cache filled meanwhile
		return cur
	}
	p.stmts[query] = st
	return st
}

// QueryContext runs query through its prepared statement.
func (p *readPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return p.DB.QueryContext(ctx, query, args...)
}

// QueryRowContext runs query through its prepared statement.
func (p *readPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := p.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return p.DB.QueryRowContext(ctx, query, args...)
}

// Close closes the statements, then the pool.
func (p *readPool) Close() error {
	p.mu.Lock()
	for q, st := range p.stmts {
		st.Close()
		delete(p.stmts, q)
	}
	p.mu.Unlock()
	return p.DB.Close()
}
