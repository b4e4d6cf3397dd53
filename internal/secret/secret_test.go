package secret

import (
	"strings"
	"testing"
)

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	counts := map[rune]int{}
	for range 2000 {
		s := Generate(TokenLength)
		if len(s) != TokenLength {
			t.Fatalf("len(%q) = %d", s, len(s))
		}
		if seen[s] {
			t.Fatalf("duplicate %q", s)
		}
		seen[s] = true
		for _, r := range s {
			if !strings.ContainsRune(alphabet, r) {
				t.Fatalf("%q has %q outside the alphabet", s, r)
			}
			counts[r]++
		}
	}
	// 48,000 characters over 62 symbols: about 774 each. A biased modulo
	// would show as symbols far off that.
	for _, r := range alphabet {
		if c := counts[r]; c < 600 || c > 960 {
			t.Errorf("symbol %q drawn %d times, expected about 774", r, c)
		}
	}
}

func TestHashVerify(t *testing.T) {
	h := Hash("correct horse")
	if h == Hash("correct horse") {
		t.Fatal("Hash is not salted")
	}
	tests := []struct {
		secret, hash string
		want         bool
	}{
		{"correct horse", h, true},
		{"correct horsE", h, false},
		{"", h, false},
		{"correct horse", "", false},
		{"correct horse", "sha256$%%%$abc", false},
		{"correct horse", "md5$abc$def", false},
		{"correct horse", strings.Replace(h, "sha256", "sha512", 1), false},
	}
	for _, tt := range tests {
		if got := Verify(tt.secret, tt.hash); got != tt.want {
			t.Errorf("Verify(%q, %q) = %v, want %v", tt.secret, tt.hash, got, tt.want)
		}
	}
	if LookupHash("a") == LookupHash("b") || LookupHash("a") != LookupHash("a") || len(LookupHash("a")) != 64 {
		t.Fatal("LookupHash is not a deterministic hex SHA-256")
	}
}
