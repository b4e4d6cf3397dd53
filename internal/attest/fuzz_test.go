package attest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzParseSASToken: any input parses or fails with ErrMalformed, never
// panics, and a parsed token respects the bounds the parser promises.
// Verify must agree: whatever it refuses, it refuses with a typed error.
func FuzzParseSASToken(f *testing.F) {
	for _, s := range []string{
		kaNodeToken, kaPyToken, "", "SharedAccessSignature ", "SharedAccessSignature sr=%",
		"SharedAccessSignature sr=a&sig=&se=&skn=", "SharedAccessSignature sr=a&sig=" + strings.Repeat("%41", 44) + "&se=99999999999",
	} {
		f.Add(s)
	}
	v := SASVerifier{Now: func() time.Time { return time.Unix(kaExpiry, 0) }}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseSASToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseSASToken error %v is not ErrMalformed", err)
			}
			if tok != nil {
				t.Fatal("ParseSASToken returned a token with an error")
			}
		} else {
			if len(tok.Signature) != sigLen || tok.Resource == "" || len(tok.RawExpiry) > MaxExpiryDigits {
				t.Fatalf("ParseSASToken accepted %q as %+v", s, tok)
			}
		}
		_, err = v.Verify(s, kaResource, kaDeviceKey)
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrWrongResource) &&
			!errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrExpired) {
			t.Fatalf("Verify error %v is untyped", err)
		}
	})
}
