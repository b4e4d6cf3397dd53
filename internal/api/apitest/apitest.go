// Package apitest starts the management API over a real socket on a real
// SQLite store and a real telemetry store, for tests of its clients.
package apitest

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/store/sqlite"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// Server is a running management API.
type Server struct {
	// URL is the base URL, e.g. http://127.0.0.1:12345.
	URL   string
	Store *sqlite.Store
	// Devices serves the device routes (state, telemetry, attributes,
	// RPC). Tests play devices on it: Ingest, Connected, AddTransport...
	Devices *device.Service
	// Keys holds one API key in clear per role (registry.RoleAdmin, ...).
	Keys map[string]string
}

// New starts a server that stops when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	ctx := context.Background()
	st := testutil.NewStore(t, nil)
	devices, err := device.New(device.Options{Store: testutil.NewTelemetryStore(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := devices.Close(context.Background()); err != nil {
			t.Errorf("closing the device service: %v", err)
		}
	})
	s := &Server{Store: st, Devices: devices, Keys: map[string]string{}}
	for _, role := range []string{registry.RoleAdmin, registry.RoleOperator, registry.RoleOEM, registry.RoleViewer} {
		k := secret.Generate(secret.TokenLength)
		if err := st.CreateAPIKey(ctx, &registry.APIKey{OrgID: registry.DefaultOrgID, Name: role, Role: role, Hash: secret.LookupHash(k)}); err != nil {
			t.Fatal(err)
		}
		s.Keys[role] = k
	}
	srv := httptest.NewServer(api.New(api.Options{Store: st, Devices: devices}))
	s.URL = srv.URL
	t.Cleanup(srv.Close) // before the store's Close: cleanups run in reverse
	return s
}
