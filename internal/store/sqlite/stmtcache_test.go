package sqlite

import (
	"context"
	"fmt"
	"testing"
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
