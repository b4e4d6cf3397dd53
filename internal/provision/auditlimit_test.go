package provision

import (
	"testing"
	"time"
)

func TestAuditSuppressor(t *testing.T) {
	a := auditSuppressor{window: time.Minute, max: 4}
	t0 := time.Unix(1_700_000_000, 0)
	steps := []struct {
		source, reason string
		at             time.Duration
		write          bool
		folded         int
	}{
		{"s1", "bad-request", 0, true, 0},
		{"s1", "bad-request", time.Second, false, 0},
		{"s1", "bad-request", 2 * time.Second, false, 0},
		{"s1", "bad-key-or-secret", 3 * time.Second, true, 0}, // another reason
		{"s2", "bad-request", 4 * time.Second, true, 0},       // another source
		{"s1", "bad-request", time.Minute, true, 2},           // window over: says what it folded
		{"s1", "bad-request", time.Minute + time.Second, false, 0},
	}
	for i, st := range steps {
		write, folded := a.admit(st.source, st.reason, t0.Add(st.at))
		if write != st.write || folded != st.folded {
			t.Fatalf("step %d: admit = (%v, %d), want (%v, %d)", i, write, folded, st.write, st.folded)
		}
	}
	for i := range 100 {
		a.admit(string(rune('a'+i)), "r", t0.Add(2*time.Minute))
	}
	if len(a.entries) > a.max {
		t.Fatalf("%d entries kept, max %d", len(a.entries), a.max)
	}
}
