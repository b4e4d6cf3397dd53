package secret

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"sync"
)

// DefaultVerifierCacheSize is how many successful slow verifications a
// Verifier made by NewVerifier(0) remembers: about 8 MB at most.
const DefaultVerifierCacheSize = 100_000

// A Verifier checks secrets against hashes like Verify, but remembers the
// successful verifications of slow hashes (HashSlow), so that the devices
// of a profile presenting its provision secret, or a device reconnecting
// with its password, cost a slow hash once rather than every time.
//
// It remembers neither the secrets nor anything from which they could be
// found without its random, per-process key: an entry is an HMAC-SHA256,
// under that key, of the stored hash and the secret. Failures are never
// remembered, so each wrong guess costs a full slow hash; fast hashes (Hash)
// are checked directly. Concurrent verifications of the same secret against
// the same hash share one computation. When full, the oldest entry is
// forgotten. A changed stored hash (a rotated secret) no longer matches
// entries made for the old one.
//
// A Verifier is safe for concurrent use.
type Verifier struct {
	key     []byte
	hmacs   sync.Pool // of hash.Hash: HMAC-SHA256 under key
	maxSize int

	mu       sync.RWMutex
	ok       map[cacheKey]struct{}
	order    []cacheKey // ring of the entries of ok, oldest at next once full
	next     int
	inflight map[cacheKey]*verification
}

type cacheKey [sha256.Size]byte

type verification struct {
	done chan struct{}
	ok   bool
}

// NewVerifier returns a Verifier remembering up to size successful slow
// verifications (DefaultVerifierCacheSize when size ≤ 0).
func NewVerifier(size int) *Verifier {
	if size <= 0 {
		size = DefaultVerifierCacheSize
	}
	v := &Verifier{
		key:      make([]byte, 32),
		maxSize:  size,
		ok:       make(map[cacheKey]struct{}),
		inflight: make(map[cacheKey]*verification),
	}
	rand.Read(v.key) // never fails
	v.hmacs.New = func() any { return hmac.New(sha256.New, v.key) }
	return v
}

// Verify reports whether s matches a hash made by Hash or HashSlow, as the
// package-level Verify does; see Verifier for what it remembers.
func (v *Verifier) Verify(s, hashed string) bool {
	switch kind(hashed) {
	case kindFast:
		return verifyFast(s, hashed)
	case kindSlow:
	default:
		return false
	}
	k := v.cacheKey(s, hashed)
	v.mu.RLock()
	_, hit := v.ok[k]
	v.mu.RUnlock()
	if hit {
		return true
	}

	v.mu.Lock()
	if _, hit := v.ok[k]; hit {
		v.mu.Unlock()
		return true
	}
	if c := v.inflight[k]; c != nil {
		// The same secret against the same hash is being verified:
		// its answer is ours.
		v.mu.Unlock()
		<-c.done
		return c.ok
	}
	c := &verification{done: make(chan struct{})}
	v.inflight[k] = c
	v.mu.Unlock()

	defer func() {
		v.mu.Lock()
		delete(v.inflight, k)
		if c.ok {
			v.remember(k)
		}
		v.mu.Unlock()
		close(c.done)
	}()
	c.ok = verifySlow(s, hashed)
	return c.ok
}

// remember adds k, forgetting the oldest entry when full. v.mu is held.
func (v *Verifier) remember(k cacheKey) {
	if _, dup := v.ok[k]; dup {
		return
	}
	if len(v.order) < v.maxSize {
		v.order = append(v.order, k)
	} else {
		delete(v.ok, v.order[v.next])
		v.order[v.next] = k
		v.next = (v.next + 1) % v.maxSize
	}
	v.ok[k] = struct{}{}
}

// cacheKey is HMAC-SHA256(key, len(hashed) ‖ hashed ‖ s).
func (v *Verifier) cacheKey(s, hashed string) cacheKey {
	h := v.hmacs.Get().(hash.Hash)
	h.Reset()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(hashed)))])
	h.Write([]byte(hashed))
	h.Write([]byte(s))
	var k cacheKey
	h.Sum(k[:0])
	v.hmacs.Put(h)
	return k
}

// len reports how many verifications v remembers (for tests).
func (v *Verifier) len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.ok)
}
