// Package testutil holds helpers shared by the integration tests of several
// packages: real stores and the external tools tests play devices with.
package testutil

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/zerotouch/zerotouch/internal/seal"
	"github.com/zerotouch/zerotouch/internal/store/sqlite"
)

// RequireTool returns the path of an external command-line tool a test plays
// a device with (mosquitto_rr, mosquitto_pub, curl, openssl…). On a developer's machine
// without it the test is skipped with what to install; in CI (CI set) it
// fails instead, so a missing install step cannot hide behind green skips.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	pkg := "mosquitto-clients"
	switch name {
	case "curl", "openssl", "python3":
		pkg = name
	case "node":
		pkg = "nodejs"
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI: apt-get install %s", name, pkg)
	}
	t.Skipf("%s not installed: apt-get install %s to run this test", name, pkg)
	return ""
}

// NewStore opens an empty SQLite store in the test's temporary directory
// and closes it when the test ends — after everything the test built on it,
// since cleanups run last-registered first. log may be nil (discarded).
func NewStore(t testing.TB, log *slog.Logger) *sqlite.Store {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := make([]byte, seal.KeyLen)
	rand.Read(key)
	sealer, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "zerotouch.db"), sqlite.Options{Logger: log, Sealer: sealer})
	if err != nil {
		t.Fatalf("open test store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close test store: %v", err)
		}
	})
	return st
}
