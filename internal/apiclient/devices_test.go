package apiclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/api/apitest"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// TestDeviceMethods calls every method of the device routes against a
// real server whose device is played at the transport boundary.
func TestDeviceMethods(t *testing.T) {
	srv := apitest.New(t)
	ctx := context.Background()
	c, _ := apiclient.New(srv.URL, srv.Keys[registry.RoleAdmin])
	if _, err := c.CreateProfile(ctx, api.CreateProfileRequest{Name: "p", Strategy: registry.StrategyPreProvisioned}); err != nil {
		t.Fatal(err)
	}
	d, err := c.CreateDevice(ctx, api.CreateDeviceRequest{Name: "d1", ProfileName: "p"})
	if err != nil {
		t.Fatal(err)
	}
	off, err := c.CreateDevice(ctx, api.CreateDeviceRequest{Name: "d2", ProfileName: "p"})
	if err != nil {
		t.Fatal(err)
	}
	devs := srv.NewTransport()
	devs.Connect(d.ID)
	devs.Answer("getTemp", json.RawMessage(`{"temp":21.5}`))
	now := time.Now().Truncate(time.Millisecond)
	if err := srv.Devices.Ingest(context.Background(), d.ID, []telemetry.Sample{
		{Key: "temp", TS: now.Add(-2 * time.Minute).UnixMilli(), Value: telemetry.Double(20)},
		{Key: "temp", TS: now.Add(-time.Minute).UnixMilli(), Value: telemetry.Long(22)},
	}); err != nil {
		t.Fatal(err)
	}

	st, err := c.DeviceState(ctx, d.ID)
	if err != nil || !st.Connected || st.Sessions != 1 || st.LastConnect == nil || st.LastDisconnect != nil {
		t.Fatalf("state: %+v, %v", st, err)
	}

	latest, err := c.LatestTelemetry(ctx, d.ID, []string{"temp", "none"})
	if err != nil || len(latest) != 1 || latest[0].Value != telemetry.Long(22) || !latest[0].Time.Equal(now.Add(-time.Minute)) {
		t.Fatalf("latest: %+v, %v", latest, err)
	}

	series, err := c.QueryTelemetry(ctx, d.ID, apiclient.TelemetryQuery{Keys: []string{"temp"}, Since: time.Hour, Order: "asc", Limit: 5})
	// 20.0 crosses the wire as 20 and comes back a double: the type says so.
	if err != nil || len(series) != 1 || len(series[0].Values) != 2 || series[0].Values[0].Value != telemetry.Double(20) {
		t.Fatalf("query: %+v, %v", series, err)
	}
	series, err = c.QueryTelemetry(ctx, d.ID, apiclient.TelemetryQuery{From: now.Add(-10 * time.Minute), To: now, Aggregation: "max", Interval: 10 * time.Minute})
	if err != nil || len(series) != 1 || series[0].Key != "temp" || len(series[0].Values) != 1 {
		t.Fatalf("aggregate: %+v, %v", series, err)
	}
	if v := series[0].Values[0]; v.Count != 2 || v.Value != telemetry.Double(22) || v.TS != now.Add(-10*time.Minute).UnixMilli() {
		t.Errorf("aggregate value %+v", v)
	}

	pushed, err := c.SetAttributes(ctx, d.ID, telemetry.ScopeShared, map[string]json.RawMessage{"fw": json.RawMessage(`"1.2"`), "ratio": json.RawMessage(`1.0`)})
	if err != nil || pushed != 1 {
		t.Fatalf("set: %d, %v", pushed, err)
	}
	attrs, err := c.Attributes(ctx, d.ID, "", nil)
	if err != nil || len(attrs) != 2 || attrs[1].Key != "ratio" || attrs[1].Value != telemetry.Double(1) {
		t.Fatalf("attributes: %+v, %v", attrs, err)
	}
	attrs, err = c.Attributes(ctx, d.ID, telemetry.ScopeServer, []string{"fw"})
	if err != nil || len(attrs) != 0 {
		t.Fatalf("server attributes: %+v, %v", attrs, err)
	}
	deleted, err := c.DeleteAttributes(ctx, d.ID, telemetry.ScopeShared, []string{"fw", "nope"})
	if err != nil || len(deleted) != 1 || deleted[0] != "fw" {
		t.Fatalf("delete: %v, %v", deleted, err)
	}

	res, err := c.RPC(ctx, d.ID, "getTemp", json.RawMessage(`{"unit":"C"}`), apiclient.RPCOptions{Timeout: 5 * time.Second})
	if err != nil || string(res) != `{"temp":21.5}` {
		t.Fatalf("rpc: %s, %v", res, err)
	}
	if calls := devs.Calls(); len(calls) != 1 || string(calls[0].Params) != `{"unit":"C"}` {
		t.Errorf("calls %+v", calls)
	}
	if res, err := c.RPC(ctx, d.ID, "reboot", nil, apiclient.RPCOptions{OneWay: true}); err != nil || res != nil {
		t.Fatalf("one-way: %s, %v", res, err)
	}

	for _, tc := range []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"offline", func() error { _, err := c.RPC(ctx, off.ID, "getTemp", nil, apiclient.RPCOptions{}); return err }, http.StatusConflict, api.CodeDeviceOffline},
		{"timeout", func() error {
			_, err := c.RPC(ctx, d.ID, "silent", nil, apiclient.RPCOptions{Timeout: 50 * time.Millisecond})
			return err
		}, http.StatusGatewayTimeout, api.CodeRPCTimeout},
		{"bad query", func() error {
			_, err := c.QueryTelemetry(ctx, d.ID, apiclient.TelemetryQuery{Aggregation: "avg"})
			return err
		}, http.StatusBadRequest, api.CodeBadRequest},
		{"client scope", func() error {
			_, err := c.SetAttributes(ctx, d.ID, telemetry.ScopeClient, map[string]json.RawMessage{"a": json.RawMessage(`1`)})
			return err
		}, http.StatusBadRequest, api.CodeBadRequest},
		{"unknown device", func() error { _, err := c.DeviceState(ctx, "nope"); return err }, http.StatusNotFound, api.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e *apiclient.Error
			if err := tc.call(); !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code || e.Message == "" {
				t.Fatalf("got %v", err)
			}
		})
	}
}
