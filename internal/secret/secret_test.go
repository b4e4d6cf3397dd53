package secret

import (
	"fmt"
	"strings"
	"sync"
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

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

func TestHashVerify(t *testing.T) {
	fast, slow, cheap := Hash("correct horse"), HashSlow("correct horse"), hashSlow("correct horse", minSlowIterations)
	if fast == Hash("correct horse") || slow == HashSlow("correct horse") {
		t.Fatal("Hash or HashSlow is not salted")
	}
	if !strings.HasPrefix(fast, "sha256$") || !strings.HasPrefix(slow, fmt.Sprintf("pbkdf2-sha256$%d$", SlowIterations)) {
		t.Fatalf("unexpected formats %q, %q", fast, slow)
	}
	slowParts := strings.Split(slow, "$")
	withIter := func(iter string) string {
		return strings.Join([]string{slowParts[0], iter, slowParts[2], slowParts[3]}, "$")
	}
	// setChar replaces the character i from the end of h (1: the last).
	setChar := func(h string, i int, c func(byte) byte) string {
		b := []byte(h)
		b[len(b)-i] = c(b[len(b)-i])
		return string(b)
	}
	flip := func(h string) string { // changes a significant character of the hash
		return setChar(h, 2, func(c byte) byte {
			if c == 'A' {
				return 'B'
			}
			return 'A'
		})
	}
	// The last of the 43 characters of a 32-byte hash carries 4 bits and 2
	// unused ones; setting these gives a non-canonical spelling of the
	// same bytes.
	padBits := func(h string) string {
		return setChar(h, 1, func(c byte) byte { return b64Alphabet[strings.IndexByte(b64Alphabet, c)|3] })
	}
	tests := []struct {
		name, secret, hash string
		want               bool
	}{
		{"fast", "correct horse", fast, true},
		{"fast wrong", "correct horsE", fast, false},
		{"fast empty secret", "", fast, false},
		{"fast prefix of secret", "correct hors", fast, false},
		{"fast tampered", "correct horse", flip(fast), false},
		{"fast bad base64", "correct horse", "sha256$%%%$abc", false},
		{"fast extra field", "correct horse", fast + "$x", false},
		{"fast non-canonical base64", "correct horse", padBits(fast), false},
		{"slow", "correct horse", slow, true},
		{"slow cheap", "correct horse", cheap, true},
		{"slow wrong", "correct horsE", slow, false},
		{"slow empty secret", "", slow, false},
		{"slow tampered hash", "correct horse", flip(slow), false},
		{"slow other iterations", "correct horse", withIter(fmt.Sprint(SlowIterations + 1)), false},
		{"slow iterations too low", "correct horse", withIter("1"), false},
		{"slow iterations zero", "correct horse", withIter("0"), false},
		{"slow iterations negative", "correct horse", withIter("-120000"), false},
		{"slow iterations too high", "correct horse", withIter("1000000000"), false},
		{"slow iterations not canonical", "correct horse", withIter("0" + slowParts[1]), false},
		{"slow iterations not a number", "correct horse", withIter("many"), false},
		{"slow short hash", "correct horse", strings.Join(append(slowParts[:3:3], slowParts[3][:20]), "$"), false},
		{"slow missing field", "correct horse", strings.Join(slowParts[:3], "$"), false},
		{"slow extra field", "correct horse", slow + "$x", false},
		{"slow non-canonical base64", "correct horse", padBits(slow), false},
		{"slow bad salt", "correct horse", strings.Join([]string{slowParts[0], slowParts[1], "%%%", slowParts[3]}, "$"), false},
		{"fast hash labelled slow", "correct horse", "pbkdf2-sha256$" + strings.TrimPrefix(fast, "sha256$"), false},
		{"slow hash labelled fast", "correct horse", "sha256$" + strings.Join(slowParts[2:], "$"), false},
		{"empty hash", "correct horse", "", false},
		{"unknown algorithm", "correct horse", "md5$abc$def", false},
		{"renamed algorithm", "correct horse", strings.Replace(fast, "sha256", "sha512", 1), false},
	}
	v := NewVerifier(0)
	for _, tt := range tests {
		if got := Verify(tt.secret, tt.hash); got != tt.want {
			t.Errorf("%s: Verify(%q, %q) = %v, want %v", tt.name, tt.secret, tt.hash, got, tt.want)
		}
		for range 2 { // the second time from the cache, if cached
			if got := v.Verify(tt.secret, tt.hash); got != tt.want {
				t.Errorf("%s: Verifier.Verify(%q, %q) = %v, want %v", tt.name, tt.secret, tt.hash, got, tt.want)
			}
		}
	}
	if LookupHash("a") == LookupHash("b") || LookupHash("a") != LookupHash("a") || len(LookupHash("a")) != 64 {
		t.Fatal("LookupHash is not a deterministic hex SHA-256")
	}
}

func TestVerifierCache(t *testing.T) {
	v := NewVerifier(3)
	h := hashSlow("pw", minSlowIterations)

	// Failures are not remembered.
	for range 3 {
		if v.Verify("wrong", h) {
			t.Fatal("wrong secret accepted")
		}
	}
	if n := v.len(); n != 0 {
		t.Fatalf("%d entries after failures only", n)
	}
	// Fast hashes bypass the cache.
	if !v.Verify("pw", Hash("pw")) || v.len() != 0 {
		t.Fatalf("fast hash: %d entries", v.len())
	}
	// A success is remembered, once, and only for that secret and hash.
	if !v.Verify("pw", h) || !v.Verify("pw", h) || v.len() != 1 {
		t.Fatalf("after success: %d entries, want 1", v.len())
	}
	if v.Verify("pw2", h) || v.Verify("wrong", h) || v.len() != 1 {
		t.Fatal("other secret accepted against a remembered hash")
	}
	if v.Verify("pw", hashSlow("other", minSlowIterations)) {
		t.Fatal("remembered secret accepted against another hash")
	}
	// The entry is a hit: tampering with it proves it. Replace the only
	// entry's key by the key of a wrong secret: that secret is now
	// accepted without a slow hash, which shows hits skip verification.
	k := v.cacheKey("forged", h)
	v.mu.Lock()
	v.ok = map[cacheKey]struct{}{k: {}}
	v.order, v.next = []cacheKey{k}, 0
	v.mu.Unlock()
	if !v.Verify("forged", h) {
		t.Fatal("a remembered verification was recomputed")
	}
	// Nothing in the cache holds the secret: a different Verifier (another
	// key) derives different entries.
	if NewVerifier(3).cacheKey("forged", h) == k {
		t.Fatal("cache key does not depend on the per-Verifier key")
	}

	// Bounded, oldest out first.
	v = NewVerifier(3)
	hs := make([]string, 5)
	for i := range hs {
		hs[i] = hashSlow(fmt.Sprint("pw", i), minSlowIterations)
		if !v.Verify(fmt.Sprint("pw", i), hs[i]) {
			t.Fatalf("pw%d rejected", i)
		}
		if n, want := v.len(), min(i+1, 3); n != want {
			t.Fatalf("after %d successes: %d entries, want %d", i+1, n, want)
		}
	}
	for i, want := range []bool{false, false, true, true, true} {
		v.mu.RLock()
		_, in := v.ok[v.cacheKey(fmt.Sprint("pw", i), hs[i])]
		v.mu.RUnlock()
		if in != want {
			t.Errorf("pw%d remembered = %v, want %v", i, in, want)
		}
	}
}

func TestVerifierConcurrent(t *testing.T) {
	v := NewVerifier(4)
	hs := make([]string, 8)
	for i := range hs {
		hs[i] = hashSlow(fmt.Sprint("pw", i), minSlowIterations)
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for j := range 40 {
				i := (g + j) % len(hs)
				if !v.Verify(fmt.Sprint("pw", i), hs[i]) {
					t.Errorf("pw%d rejected", i)
				}
				if v.Verify(fmt.Sprint("pw", i+1), hs[i]) {
					t.Errorf("pw%d accepted for pw%d", i+1, i)
				}
			}
		})
	}
	wg.Wait()
	if n := v.len(); n > 4 {
		t.Fatalf("%d entries, bound is 4", n)
	}
	if len(v.inflight) != 0 {
		t.Fatalf("%d verifications still in flight", len(v.inflight))
	}
}

func BenchmarkHashSlow(b *testing.B) {
	for b.Loop() {
		HashSlow("correct horse battery staple")
	}
}

func BenchmarkVerify(b *testing.B) {
	fast, slow := Hash("correct horse battery staple"), HashSlow("correct horse battery staple")
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			Verify("correct horse battery staple", fast)
		}
	})
	b.Run("slow", func(b *testing.B) {
		for b.Loop() {
			Verify("correct horse battery staple", slow)
		}
	})
	b.Run("verifier-hit", func(b *testing.B) {
		v := NewVerifier(0)
		v.Verify("correct horse battery staple", slow)
		for b.Loop() {
			if !v.Verify("correct horse battery staple", slow) {
				b.Fatal("rejected")
			}
		}
	})
	b.Run("verifier-hit-parallel", func(b *testing.B) {
		v := NewVerifier(0)
		v.Verify("correct horse battery staple", slow)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				v.Verify("correct horse battery staple", slow)
			}
		})
	})
	b.Run("verifier-wrong", func(b *testing.B) {
		v := NewVerifier(0)
		for b.Loop() {
			if v.Verify("wrong horse battery staple", slow) {
				b.Fatal("accepted")
			}
		}
	})
}
