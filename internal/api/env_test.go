package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/store/sqlite"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// env is a management API over a real socket, on a real SQLite store and a
// real telemetry store, with one API key per role.
type env struct {
	t     *testing.T
	store *sqlite.Store
	// devices serves the device routes; nil with newEnvWithoutDevices.
	devices *device.Service
	srv     *httptest.Server
	api     *server
	keys    map[string]string // role → key in clear
	ids     map[string]string // role → key id
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOpts(t, true)
}

// newEnvWithoutDevices is an API on a node without the device hub.
func newEnvWithoutDevices(t *testing.T) *env {
	t.Helper()
	return newEnvOpts(t, false)
}

func newEnvOpts(t *testing.T, withDevices bool) *env {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st := testutil.NewStore(t, log)
	e := &env{t: t, store: st, keys: map[string]string{}, ids: map[string]string{}}
	if withDevices {
		svc, err := device.New(device.Options{Store: testutil.NewTelemetryStore(t, log), Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := svc.Close(context.Background()); err != nil {
				t.Errorf("closing the device service: %v", err)
			}
		})
		e.devices = svc
	}
	for _, role := range []string{registry.RoleAdmin, registry.RoleOperator, registry.RoleOEM, registry.RoleViewer} {
		k := secret.Generate(secret.TokenLength)
		rec := &registry.APIKey{OrgID: registry.DefaultOrgID, Name: role + "-key", Role: role, Hash: secret.LookupHash(k)}
		if err := st.CreateAPIKey(ctx, rec); err != nil {
			t.Fatal(err)
		}
		e.keys[role], e.ids[role] = k, rec.ID
	}
	e.api = New(Options{Store: st, Logger: log, Devices: e.devices}).(*server)
	e.srv = httptest.NewServer(e.api)
	t.Cleanup(e.srv.Close) // before the store's Close: cleanups run in reverse
	return e
}

// testWriter sends logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// resp is an answer of the API.
type resp struct {
	status int
	header http.Header
	body   []byte
}

// err decodes an error answer.
func (r resp) err(t *testing.T) Error {
	t.Helper()
	var e Error
	if err := json.Unmarshal(r.body, &e); err != nil || e.Code == "" {
		t.Fatalf("not an error body (status %d): %s", r.status, r.body)
	}
	return e
}

// decode decodes a JSON answer into v.
func (r resp) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// do sends a request as role ("" for no key); body is a string, []byte or
// a value to encode as JSON.
func (e *env) do(role, method, path string, body any) resp {
	e.t.Helper()
	r, err := e.send(role, method, path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// doNoFatal is do for other goroutines than the test's: a failure to send
// is reported with Error and answered with status 0.
func (e *env) doNoFatal(role, method, path string, body any) resp {
	r, err := e.send(role, method, path, body)
	if err != nil {
		e.t.Error(err)
	}
	return r
}

func (e *env) send(role, method, path string, body any) (resp, error) {
	var rd io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case csvBody:
		rd, ct = strings.NewReader(string(b)), "text/csv"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return resp{}, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		return resp{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", ct)
	}
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+e.keys[role])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return resp{}, err
	}
	return resp{res.StatusCode, res.Header, b}, nil
}

// csvBody is a request body sent as text/csv.
type csvBody string

// must sends a request as admin and fails the test unless the status is want.
func (e *env) must(want int, method, path string, body any, out any) resp {
	e.t.Helper()
	r := e.do(registry.RoleAdmin, method, path, body)
	if r.status != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	if out != nil {
		r.decode(e.t, out)
	}
	return r
}

// profile creates a profile with the given strategy and returns it.
func (e *env) profile(name string, strategy registry.Strategy) ProfileWithSecret {
	e.t.Helper()
	var p ProfileWithSecret
	e.must(http.StatusCreated, "POST", "/api/profiles", CreateProfileRequest{Name: name, Strategy: strategy}, &p)
	return p
}

// device creates a device in profile p and returns it.
func (e *env) device(name, profileID string) CreatedDevice {
	e.t.Helper()
	var d CreatedDevice
	e.must(http.StatusCreated, "POST", "/api/devices", CreateDeviceRequest{Name: name, ProfileID: profileID}, &d)
	return d
}
