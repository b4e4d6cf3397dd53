package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/server"
)

const testAdminKey = "agent-test-admin-key-0123456789"

// hub is a real zerotouch node started in-process on ephemeral ports.
type hub struct {
	t       *testing.T
	dataDir string
	srv     *server.Server
	http    string // host:port, kept across restarts
	mqtt    string
	mqtts   string
	// https, when set before start, is the HTTPS listener's address (EST);
	// HTTPS is off otherwise.
	https string
	// hubName, when set, is the hub DPS assigns devices to.
	hubName string
}

func startHub(t *testing.T) *hub {
	t.Helper()
	h := &hub{t: t, dataDir: t.TempDir(), http: "127.0.0.1:0", mqtt: "127.0.0.1:0", mqtts: "127.0.0.1:0"}
	h.start()
	t.Cleanup(h.stop)
	return h
}

// start starts the node on h's data directory and addresses: the same
// ports again after a stop, so a device finds it where it was.
func (h *hub) start() {
	h.t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = h.dataDir
	cfg.HTTP, cfg.MQTT = h.http, h.mqtt
	cfg.HTTPS, cfg.MQTTS = "off", h.mqtts
	if h.https != "" {
		cfg.HTTPS = h.https
	}
	cfg.AdminKey = testAdminKey
	cfg.HubName = h.hubName
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	// The tests' refused CONNECTs must not slow 127.0.0.1 down.
	lenient := &provision.FailureLimiter{Burst: 1 << 20, Leak: time.Second, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 16}
	var err error
	for try := 0; ; try++ {
		h.srv, err = server.Start(context.Background(), cfg, server.Options{Logger: log, Banner: io.Discard, Limiter: lenient})
		if err == nil || try == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond) // the old listener may linger a moment
	}
	if err != nil {
		h.t.Fatalf("start server: %v", err)
	}
	h.http, h.mqtt, h.mqtts = h.srv.HTTPAddr().String(), h.srv.MQTTAddr().String(), h.srv.MQTTSAddr().String()
	if h.https != "" {
		h.https = h.srv.HTTPSAddr().String()
	}
}

func (h *hub) stop() {
	if h.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Close(ctx); err != nil {
		h.t.Errorf("close server: %v", err)
	}
	h.srv = nil
}

// api calls the management API; it fails the test on an unexpected status.
func (h *hub) api(method, path string, body any, want int, out any) {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+h.http+path, rd)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		h.t.Fatalf("%s %s: HTTP %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: %s: %v", method, path, b, err)
		}
	}
}

type profile struct {
	ID     string `json:"id"`
	Key    string `json:"provisionDeviceKey"`
	Secret string `json:"provisionDeviceSecret"`
}

func (h *hub) profile(name, policy string) profile {
	h.t.Helper()
	var p profile
	h.api("POST", "/api/profiles", map[string]any{"name": name, "strategy": "allow-create",
		"defaultCredentialsType": "ACCESS_TOKEN", "reprovisionPolicy": policy}, http.StatusCreated, &p)
	return p
}

type credential struct {
	ID     string `json:"id"`
	Type   string `json:"credentialsType"`
	Status string `json:"status"`
}

// device returns the id of the device named name, and how many devices
// carry that name (0 or 1).
func (h *hub) device(name string) (id string, n int) {
	h.t.Helper()
	var l struct {
		Items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"items"`
	}
	h.api("GET", "/api/devices?namePrefix="+name, nil, http.StatusOK, &l)
	for _, d := range l.Items {
		if d.Name == name {
			id = d.ID
			n++
		}
	}
	return id, n
}

func (h *hub) credentials(deviceID string) []credential {
	h.t.Helper()
	var l struct{ Items []credential }
	h.api("GET", "/api/devices/"+deviceID+"/credentials", nil, http.StatusOK, &l)
	return l.Items
}

// latest is the latest value of one telemetry key, "" when none.
func (h *hub) latest(deviceID, key string) string {
	h.t.Helper()
	var l struct {
		Values []struct {
			Key   string          `json:"key"`
			Value json.RawMessage `json:"value"`
		} `json:"values"`
	}
	h.api("GET", "/api/devices/"+deviceID+"/telemetry/latest?keys="+key, nil, http.StatusOK, &l)
	for _, v := range l.Values {
		if v.Key == key {
			return string(v.Value)
		}
	}
	return ""
}

// testConfig is a configuration for p's provisioning on h, with telemetry
// from a file the test writes.
func (h *hub) testConfig(t *testing.T, p profile, name string) *Config {
	t.Helper()
	dir := t.TempDir()
	c := &Config{
		Server:    h.mqtt,
		Provision: ProvisionConfig{Key: p.Key, Secret: p.Secret},
		Device:    name,
		StateFile: filepath.Join(dir, "state", "state.json"),
		Telemetry: TelemetryConfig{Interval: 100 * time.Millisecond, Source: SourceFile, File: filepath.Join(dir, "telemetry.json")},
	}
	writeTelemetry(t, c, `{"phase":1}`)
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeTelemetry(t *testing.T, c *Config, s string) {
	t.Helper()
	if err := WriteFileAtomic(c.Telemetry.File, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newAgent(t *testing.T, c *Config) *Agent {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a, err := New(c, Options{Logger: log, BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		ConnectTimeout: 5 * time.Second, ProvisionTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// running is an agent's Run in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func runAgent(t *testing.T, a *Agent) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the agent as SIGTERM would and checks it ends cleanly.
func (r *running) stop(t *testing.T) {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("agent stopped with %v, want a clean stop", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop within 10s")
		}
	})
}

// exited waits for the agent to end by itself and returns its error.
func (r *running) exited(t *testing.T) error {
	t.Helper()
	var err error
	r.once.Do(func() {
		select {
		case err = <-r.done:
		case <-time.After(20 * time.Second):
			t.Fatal("agent did not exit within 20s")
		}
		r.cancel()
	})
	return err
}

// eventually polls cond until it holds or 15 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustState(t *testing.T, path string) *State {
	t.Helper()
	st, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
