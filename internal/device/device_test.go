package device_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/store/sqlite"
	"github.com/zerotouch/zerotouch/internal/telemetry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// transport records pushes and answers RPC requests as a device would
// (through Service.RPCResponse), unless it is offline or silent.
type transport struct {
	svc     *device.Service
	offline atomic.Bool
	silent  atomic.Bool

	mu     sync.Mutex
	pushes []string
}

func (tr *transport) PushAttributes(deviceID string, changed []telemetry.Attribute, deleted []string) int {
	if tr.offline.Load() {
		return 0
	}
	var keys []string
	for _, a := range changed {
		keys = append(keys, a.Key)
	}
	tr.mu.Lock()
	tr.pushes = append(tr.pushes, fmt.Sprintf("%s changed=%v deleted=%v", deviceID, keys, deleted))
	tr.mu.Unlock()
	return 1
}

func (tr *transport) SendRPC(deviceID string, req device.RPCRequest) int {
	if tr.offline.Load() {
		return 0
	}
	if !tr.silent.Load() {
		go tr.svc.RPCResponse(deviceID, req.ID, json.RawMessage(fmt.Sprintf(`{"method":%q,"params":%s}`, req.Method, req.Params)))
	}
	return 1
}

func newService(t *testing.T, tweak func(*device.Options)) (*device.Service, *transport, *clock, telemetry.Store) {
	t.Helper()
	st, err := sqlite.OpenTelemetry(context.Background(), filepath.Join(t.TempDir(), "telemetry.db"), sqlite.TelemetryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
	o := device.Options{Store: st, Now: clk.now, Limits: device.Limits{Rate: 1, Burst: 3, MaxPayload: 100, MaxKeys: 2}}
	if tweak != nil {
		tweak(&o)
	}
	svc, err := device.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(context.Background()) })
	tr := &transport{svc: svc}
	svc.AddTransport(tr)
	return svc, tr, clk, st
}

// TestAdmitRateAndSize: a device's burst is spent, then refilled at its
// rate; devices have budgets of their own; oversized payloads are refused.
func TestAdmitRateAndSize(t *testing.T) {
	svc, _, clk, _ := newService(t, nil)
	for i := range 3 {
		if err := svc.Admit("a", 10); err != nil {
			t.Fatalf("message %d within the burst: %v", i, err)
		}
	}
	if err := svc.Admit("a", 10); !errors.Is(err, device.ErrRateLimited) {
		t.Fatalf("4th message at once: %v, want ErrRateLimited", err)
	}
	if err := svc.Admit("b", 10); err != nil {
		t.Errorf("another device is limited too: %v", err)
	}
	clk.advance(time.Second)
	if err := svc.Admit("a", 10); err != nil {
		t.Errorf("after 1s at 1 msg/s: %v", err)
	}
	if err := svc.Admit("a", 10); !errors.Is(err, device.ErrRateLimited) {
		t.Errorf("second message in that second: %v", err)
	}
	if err := svc.Admit("c", 101); !errors.Is(err, device.ErrTooLarge) {
		t.Errorf("101 bytes with a 100-byte limit: %v", err)
	}
	if svc.Count(device.ResultRateLimited) != 2 || svc.Count(device.ResultTooLarge) != 1 {
		t.Errorf("counts: rate %d, size %d", svc.Count(device.ResultRateLimited), svc.Count(device.ResultTooLarge))
	}
}

// TestIngest: samples are stored under the device; a message over the key
// limit is refused whole.
func TestIngest(t *testing.T) {
	svc, _, _, _ := newService(t, nil)
	ok := []telemetry.Sample{{Key: "t", TS: 1, Value: telemetry.Long(20)}, {Key: "h", TS: 1, Value: telemetry.Double(0.5)}}
	if err := svc.Ingest(context.Background(), "dev", ok); err != nil {
		t.Fatal(err)
	}
	three := append(ok, telemetry.Sample{Key: "x", TS: 1, Value: telemetry.Bool(true)})
	if err := svc.Ingest(context.Background(), "dev", three); !errors.Is(err, device.ErrTooManyKeys) {
		t.Fatalf("3 keys with a limit of 2: %v", err)
	}
	got, err := svc.Latest(t.Context(), "dev", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].DeviceID != "dev" || got[0].Key != "h" || got[1].Key != "t" {
		t.Errorf("latest: %+v", got)
	}
	if svc.ValuesAccepted() != 2 || svc.Count(device.ResultAccepted) != 1 || svc.Count(device.ResultTooManyKeys) != 1 {
		t.Errorf("values %d, accepted %d, too many keys %d", svc.ValuesAccepted(), svc.Count(device.ResultAccepted), svc.Count(device.ResultTooManyKeys))
	}
}

// TestAttributes: client attributes the device reports are visible to its
// next request; shared attributes are pushed, server ones are not, and
// the device may not set either.
func TestAttributes(t *testing.T) {
	svc, tr, _, _ := newService(t, nil)
	ctx := t.Context()
	if err := svc.ReportAttributes(context.Background(), "dev", []telemetry.Attribute{{Key: "fw", Value: telemetry.String("1.0")}}); err != nil {
		t.Fatal(err)
	}
	n, err := svc.SetAttributes(ctx, "dev", telemetry.ScopeShared, map[string]telemetry.Value{"target": telemetry.Long(24), "mode": telemetry.String("eco")})
	if err != nil || n != 1 {
		t.Fatalf("set shared: %d %v", n, err)
	}
	if n, err := svc.SetAttributes(ctx, "dev", telemetry.ScopeServer, map[string]telemetry.Value{"site": telemetry.String("A")}); err != nil || n != 0 {
		t.Fatalf("set server: pushed %d, %v", n, err)
	}
	if _, err := svc.SetAttributes(ctx, "dev", telemetry.ScopeClient, map[string]telemetry.Value{"fw": telemetry.String("x")}); !errors.Is(err, device.ErrInvalid) {
		t.Errorf("operator setting a client attribute: %v", err)
	}
	client, shared, err := svc.RequestAttributes(ctx, "dev", nil, []string{"target"}, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(client) != 1 || client[0].Value.Text != "1.0" || len(shared) != 1 || shared[0].Key != "target" {
		t.Errorf("request: client %+v shared %+v", client, shared)
	}
	deleted, err := svc.DeleteAttributes(ctx, "dev", telemetry.ScopeShared, []string{"mode", "nope"})
	if err != nil || fmt.Sprint(deleted) != "[mode]" {
		t.Errorf("delete: %v %v", deleted, err)
	}
	want := []string{"dev changed=[mode target] deleted=[]", "dev changed=[] deleted=[mode]"}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if fmt.Sprint(tr.pushes) != fmt.Sprint(want) {
		t.Errorf("pushes %q, want %q", tr.pushes, want)
	}
}

// TestCall: the answer comes back; silence is a timeout; no session is
// ErrOffline; a one-way call does not wait; a cancelled caller stops
// waiting.
func TestCall(t *testing.T) {
	svc, tr, _, _ := newService(t, nil)
	ctx := t.Context()
	res, err := svc.Call(ctx, "dev", "setGpio", json.RawMessage(`{"pin":4}`), device.CallOptions{})
	if err != nil || string(res) != `{"method":"setGpio","params":{"pin":4}}` {
		t.Errorf("call: %s %v", res, err)
	}
	if _, err := svc.Call(ctx, "dev", "", nil, device.CallOptions{}); !errors.Is(err, device.ErrInvalid) {
		t.Errorf("no method: %v", err)
	}
	if _, err := svc.Call(ctx, "dev", "m", json.RawMessage(`{`), device.CallOptions{}); !errors.Is(err, device.ErrInvalid) {
		t.Errorf("bad params: %v", err)
	}
	tr.silent.Store(true)
	if _, err := svc.Call(ctx, "dev", "reboot", nil, device.CallOptions{Timeout: 50 * time.Millisecond}); !errors.Is(err, device.ErrTimeout) {
		t.Errorf("silent device: %v", err)
	}
	if res, err := svc.Call(ctx, "dev", "reboot", nil, device.CallOptions{OneWay: true}); err != nil || res != nil {
		t.Errorf("one-way: %s %v", res, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := svc.Call(cctx, "dev", "reboot", nil, device.CallOptions{Timeout: time.Minute}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("caller gone: %v", err)
	}
	if svc.RPCResponse("dev", 1<<30, json.RawMessage(`1`)) {
		t.Error("an answer nobody waits for was taken")
	}
	tr.offline.Store(true)
	if _, err := svc.Call(ctx, "dev", "reboot", nil, device.CallOptions{}); !errors.Is(err, device.ErrOffline) {
		t.Errorf("offline: %v", err)
	}
}

// TestStates: sessions are counted per device; the times are stored.
func TestStates(t *testing.T) {
	svc, _, clk, _ := newService(t, nil)
	svc.Connected("a")
	svc.Connected("a")
	clk.advance(time.Second)
	svc.Disconnected("a")
	svc.Admit("a", 1)
	got, err := svc.States(t.Context(), []string{"a", "never"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := int64(1_700_000_000_000)
	want := device.State{Connected: true, Sessions: 1, LastConnect: t0, LastDisconnect: t0 + 1000, LastActivity: t0 + 1000}
	if got["a"] != want || got["never"] != (device.State{}) {
		t.Errorf("states %+v, want a=%+v", got, want)
	}
}

// TestRetention: samples older than the retention are deleted in the
// background, and latest values stay.
func TestRetention(t *testing.T) {
	now := time.Now()
	_, _, _, st := newService(t, nil)
	old, recent := now.Add(-2*time.Hour).UnixMilli(), now.Add(-time.Minute).UnixMilli()
	if err := st.Write(t.Context(), &telemetry.Batch{Samples: []telemetry.Sample{
		{DeviceID: "d", Key: "k", TS: old, Value: telemetry.Long(1)},
		{DeviceID: "d", Key: "old-only", TS: old, Value: telemetry.Long(2)},
		{DeviceID: "d", Key: "k", TS: recent, Value: telemetry.Long(3)},
	}}); err != nil {
		t.Fatal(err)
	}
	// Retention runs at start, then once a minute.
	svc2, err := device.New(device.Options{Store: st, Retention: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer svc2.Close(t.Context())
	deadline := time.Now().Add(5 * time.Second)
	for svc2.RetentionDeleted() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("retention deleted %d samples, want 2", svc2.RetentionDeleted())
		}
		time.Sleep(5 * time.Millisecond)
	}
	got, _ := st.Query(t.Context(), telemetry.Query{DeviceID: "d", Keys: []string{"k", "old-only"}, From: 0, To: now.UnixMilli() + 1})
	if len(got) != 1 || got[0].TS != recent {
		t.Errorf("left: %+v", got)
	}
	if latest, _ := st.Latest(t.Context(), "d", nil); len(latest) != 2 {
		t.Errorf("latest values after retention: %+v", latest)
	}
}

// TestForgetDropsLateWrites: nothing of a deleted device comes back, not
// even what arrives after the deletion (the end of its session, a message
// in flight).
func TestForgetDropsLateWrites(t *testing.T) {
	svc, _, _, st := newService(t, nil)
	ctx := t.Context()
	svc.Connected("gone")
	svc.Ingest(context.Background(), "gone", []telemetry.Sample{{Key: "t", TS: 1, Value: telemetry.Long(1)}})
	svc.ReportAttributes(context.Background(), "gone", []telemetry.Attribute{{Key: "fw", Value: telemetry.String("1")}})
	svc.Ingest(context.Background(), "kept", []telemetry.Sample{{Key: "t", TS: 1, Value: telemetry.Long(2)}})
	if err := svc.Forget(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	svc.Disconnected("gone")
	svc.Ingest(context.Background(), "gone", []telemetry.Sample{{Key: "late", TS: 2, Value: telemetry.Long(3)}})
	if _, err := svc.Latest(ctx, "kept", nil); err != nil { // commits what is queued
		t.Fatal(err)
	}
	latest, _ := st.Latest(ctx, "gone", nil)
	attrs, _ := st.Attributes(ctx, "gone", telemetry.ScopeClient, nil)
	states, _ := st.ConnStates(ctx, []string{"gone"})
	if len(latest) != 0 || len(attrs) != 0 || len(states) != 0 {
		t.Errorf("left of the deleted device: latest %v, attributes %v, states %v", latest, attrs, states)
	}
	if kept, _ := st.Latest(ctx, "kept", nil); len(kept) != 1 {
		t.Errorf("another device's data went too: %v", kept)
	}
}

// TestStopCalls: a shutdown ends the calls waiting for an answer.
func TestStopCalls(t *testing.T) {
	svc, tr, _, _ := newService(t, nil)
	tr.silent.Store(true)
	errc := make(chan error, 1)
	go func() {
		_, err := svc.Call(context.Background(), "dev", "reboot", nil, device.CallOptions{Timeout: time.Minute})
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the call start waiting
	svc.StopCalls()
	select {
	case err := <-errc:
		if !errors.Is(err, device.ErrShuttingDown) {
			t.Errorf("call ended with %v, want ErrShuttingDown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call still waits after StopCalls")
	}
	if _, err := svc.Call(context.Background(), "dev", "reboot", nil, device.CallOptions{}); !errors.Is(err, device.ErrShuttingDown) {
		t.Errorf("new call after StopCalls: %v", err)
	}
}

// TestAuthenticateToken: an active token of an enabled device
// authenticates; unknown ones fail, and a source that keeps sending them
// is refused for a while instead of being let to guess in parallel.
func TestAuthenticateToken(t *testing.T) {
	reg := testutil.NewStore(t, nil)
	ctx := t.Context()
	p := &registry.Profile{OrgID: registry.DefaultOrgID, Name: "p", Strategy: registry.StrategyAllowCreate, ProvisionKey: "k",
		ProvisionSecretHash: secret.Hash("s"), DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever}
	if err := reg.CreateProfile(ctx, p); err != nil {
		t.Fatal(err)
	}
	token := secret.Generate(secret.TokenLength)
	nd := []registry.NewDevice{{
		Device:      registry.Device{OrgID: registry.DefaultOrgID, ProfileID: p.ID, Name: "d", Status: registry.DeviceEnabled},
		Credentials: []registry.Credential{{Type: registry.CredentialAccessToken, LookupKey: secret.LookupHash(token), Status: registry.CredentialActive}},
	}}
	if err := reg.CreateDevices(ctx, nd); err != nil {
		t.Fatal(err)
	}
	d := &nd[0].Device
	limiter := &provision.FailureLimiter{Burst: 2, Leak: time.Hour, Base: time.Second, Max: time.Second, MaxSources: 10}
	svc, _, _, _ := newService(t, func(o *device.Options) { o.Registry = reg; o.Limiter = limiter })

	if got, err := svc.AuthenticateToken(ctx, "10.0.0.1", token); err != nil || got.ID != d.ID {
		t.Fatalf("valid token: %v %v", got, err)
	}
	for i := range 3 {
		if _, err := svc.AuthenticateToken(ctx, "10.0.0.1", fmt.Sprint("guess-", i)); !errors.Is(err, device.ErrUnauthenticated) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	var throttled *device.ThrottledError
	if _, err := svc.AuthenticateToken(ctx, "10.0.0.1", "guess-4"); !errors.As(err, &throttled) || throttled.RetryAfter <= 0 {
		t.Errorf("after 3 failures with a burst of 2: %v, want ThrottledError", err)
	}
	if _, err := svc.AuthenticateToken(ctx, "10.0.0.2", token); err != nil {
		t.Errorf("another source is throttled too: %v", err)
	}
}
