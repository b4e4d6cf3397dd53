package provision

import (
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/secret"
)

func TestServiceVerifier(t *testing.T) {
	v := secret.NewVerifier(0)
	s := New(Options{Verifier: v})
	if s.secrets != v {
		t.Fatal("the Verifier given in Options is not used")
	}
	if New(Options{}).secrets == nil {
		t.Fatal("no Verifier by default")
	}
	// Unknown keys are checked against a slow hash, as chosen secrets are,
	// so that their refusals take as long.
	if !strings.HasPrefix(s.dummyHash, "pbkdf2-sha256$") {
		t.Fatalf("dummy hash %q is not slow", s.dummyHash)
	}
}
