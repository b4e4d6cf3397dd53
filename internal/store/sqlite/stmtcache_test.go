package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// The read pool prepares each query text once, and no more than its bound:
// past it, queries run unprepared and still answer.
func TestReadPoolPreparesOnceWithinBound(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t)
	p := s.rdb
	for range 3 {
		var n int
		if err := p.QueryRowContext(ctx, "SELECT COUNT(*) FROM devices").Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	if len(p.stmts) != 1 {
		t.Fatalf("%d statements cached after one query text run 3 times, want 1", len(p.stmts))
	}
	for i := range maxCachedStatements + 10 {
		var n int
		if err := p.QueryRowContext(ctx, fmt.Sprintf("SELECT %d", i)).Scan(&n); err != nil || n != i {
			t.Fatalf("query %d: %d, %v", i, n, err)
		}
	}
	if len(p.stmts) != maxCachedStatements {
		t.Fatalf("%d statements cached, want the bound %d", len(p.stmts), maxCachedStatements)
	}
	// A query that does not prepare reports its error as an unprepared one would.
	if err := p.QueryRowContext(ctx, "SELECT nope FROM nowhere").Scan(new(int)); err == nil {
		t.Fatal("a bad query succeeded")
	}
}

// A query waiting to be prepared (no connection free) does not hold up
// queries already prepared: each still ends by its own deadline.
func TestReadPoolMissDoesNotBlockHits(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "z.db"), Options{ReadConns: 1, Sealer: testSealer(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := s.rdb
	var n int
	if err := p.QueryRowContext(ctx, "SELECT COUNT(*) FROM devices").Scan(&n); err != nil {
		t.Fatal(err)
	}
	rows, err := p.QueryContext(ctx, "SELECT 1 UNION ALL SELECT 2") // holds the only connection
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	missed := make(chan struct{})
	go func() {
		defer close(missed)
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		p.QueryRowContext(c, "SELECT 42").Scan(new(int)) // waits for a connection to prepare
	}()
	time.Sleep(100 * time.Millisecond)
	c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	p.QueryRowContext(c, "SELECT COUNT(*) FROM devices").Scan(&n)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("a prepared query with a 100 ms deadline returned after %v: it waited behind a preparation", took)
	}
	rows.Close()
	<-missed
}
