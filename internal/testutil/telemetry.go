package testutil

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/zerotouch/zerotouch/internal/store/sqlite"
)

// NewTelemetryStore opens an empty SQLite telemetry store in the test's
// temporary directory and closes it when the test ends, after everything
// the test built on it (cleanups run last-registered first). log may be nil
// (discarded).
func NewTelemetryStore(t testing.TB, log *slog.Logger) *sqlite.TelemetryStore {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := sqlite.OpenTelemetry(context.Background(), filepath.Join(t.TempDir(), "telemetry.db"), sqlite.TelemetryOptions{Logger: log})
	if err != nil {
		t.Fatalf("open test telemetry store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close test telemetry store: %v", err)
		}
	})
	return st
}
