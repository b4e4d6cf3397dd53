package seal

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func newSealer(t testing.TB, b byte) *Sealer {
	t.Helper()
	s, err := New(bytes.Repeat([]byte{b}, KeyLen))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	s := newSealer(t, 1)
	for _, pt := range [][]byte{nil, []byte("secret-key-material"), bytes.Repeat([]byte("x"), 4096)} {
		v := s.Seal(pt, "enrollment/o/r/primary")
		// Long enough that the ciphertext cannot contain it by chance.
		if !IsSealed(v) || len(pt) > 0 && strings.Contains(v, string(pt)) {
			t.Fatalf("sealed value %q does not look sealed", v)
		}
		got, err := s.Open(v, "enrollment/o/r/primary")
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open = %q, %v; want %q", got, err, pt)
		}
	}
	if a, b := s.Seal([]byte("same"), "l"), s.Seal([]byte("same"), "l"); a == b {
		t.Fatal("two seals of one value are equal: the nonce is not fresh")
	}
}

func TestOpenRefusals(t *testing.T) {
	s, other := newSealer(t, 1), newSealer(t, 2)
	v := s.Seal([]byte("secret"), "label")
	flip := []byte(v)
	flip[len(flip)-3] ^= 1
	tests := []struct {
		name, value, label string
		opener             *Sealer
		want               error
	}{
		{"plain text", "c2VjcmV0", "label", s, ErrNotSealed},
		{"no key id", "zts1.abc", "label", s, ErrNotSealed},
		{"other key", v, "label", other, ErrWrongKey},
		{"other label", v, "label2", s, ErrCorrupt},
		{"flipped bit", string(flip), "label", s, ErrCorrupt},
		{"truncated", v[:len(prefix)+keyIDLen+5], "label", s, ErrCorrupt},
		{"bad base64", v + "!", "label", s, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.opener.Open(tc.value, tc.label); !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNewRefusesShortKey(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("New accepted a 16-byte key")
	}
}

func FuzzOpen(f *testing.F) {
	s := newSealer(f, 7)
	f.Add(s.Seal([]byte("key"), "l"), "l")
	f.Add("zts1.00000000.AAAA", "")
	f.Fuzz(func(t *testing.T, v, label string) {
		pt, err := s.Open(v, label)
		if err == nil && s.Seal(pt, label) == "" {
			t.Fatal("unreachable")
		}
	})
}
