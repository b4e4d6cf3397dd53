package allocate

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"strings"
)

// rendezvous picks among hubs (non-empty, all of positive weight) by
// weighted rendezvous hashing (highest random weight): each hub scores
// -weight/ln(u), u uniform in (0,1) drawn from a hash of the hub and the
// registration id, and the highest score wins. A hub wins with
// probability weight/sum(weights); adding a hub moves only the devices it
// now wins, removing one moves only its own devices, and the choice needs
// no state beyond the hub list.
func rendezvous(hubs []Hub, registrationID string) Hub {
	best, bestScore := 0, math.Inf(-1)
	for i, h := range hubs {
		s := score(h, registrationID)
		// Equal scores are next to impossible, but ties must still not
		// depend on the order of the hub list.
		if s > bestScore || (s == bestScore && strings.ToLower(h.Name) < strings.ToLower(hubs[best].Name)) {
			best, bestScore = i, s
		}
	}
	return hubs[best]
}

// score is the hub's rendezvous score for the registration id. The hub's
// name is hashed in lower case because names are matched without regard
// to case: re-casing a hub must not move its devices. SHA-256 rather than
// a fast non-cryptographic hash: ids that differ in one character (serial
// numbers) must still give independent draws, and devices choose their
// ids, so a weak hash could let them crowd a hub.
func score(h Hub, registrationID string) float64 {
	d := sha256.New()
	d.Write([]byte(strings.ToLower(h.Name)))
	d.Write([]byte{0}) // keeps ("ab","c") and ("a","bc") apart
	d.Write([]byte(registrationID))
	var sum [sha256.Size]byte
	d.Sum(sum[:0])
	// 53 random bits, offset by half a step so u is never 0 nor 1.
	u := (float64(binary.BigEndian.Uint64(sum[:8])>>11) + 0.5) / (1 << 53)
	return -float64(h.Weight) / math.Log(u)
}
