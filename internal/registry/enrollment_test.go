package registry

import (
	"errors"
	"strings"
	"testing"
)

func TestIDScope(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s := NewIDScope()
		if !ValidIDScope(s) {
			t.Fatalf("NewIDScope() = %q, not valid", s)
		}
		seen[s] = true
	}
	if len(seen) < 99 {
		t.Fatalf("NewIDScope repeated itself: %d distinct of 100", len(seen))
	}
	for s, want := range map[string]bool{
		"0ne00000A0A": true, "0ne0123ABCD": true,
		"0ne00000a0a": false, "0NE00000A0A": false, "0ne00000A0": false, "0ne00000A0AB": false,
		"0ne00000G0A": false, "1ne00000A0A": false, "": false,
	} {
		if got := ValidIDScope(s); got != want {
			t.Errorf("ValidIDScope(%q) = %v, want %v", s, got, want)
		}
	}
	for in, want := range map[string]string{"0ne00000a0a": "0ne00000A0A", "0NE00000A0A": "0ne00000A0A", "0ne00000A0A": "0ne00000A0A"} {
		if got, ok := CanonicalIDScope(in); !ok || got != want {
			t.Errorf("CanonicalIDScope(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"0ne00000x0a", "0ne", "0ne00000A0A0"} {
		if _, ok := CanonicalIDScope(in); ok {
			t.Errorf("CanonicalIDScope(%q) accepted it", in)
		}
	}
}

func TestValidateRegistrationID(t *testing.T) {
	for _, ok := range []string{"a", "dev-1", "sensor.0042-", "a:b_c.d", strings.Repeat("a", MaxRegistrationIDLen)} {
		if err := ValidateRegistrationID("registration id", ok); err != nil {
			t.Errorf("ValidateRegistrationID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Dev", "a b", "a/b", "dev.", "dev_", "dev:", "é", strings.Repeat("a", MaxRegistrationIDLen+1)} {
		if err := ValidateRegistrationID("registration id", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateRegistrationID(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}
