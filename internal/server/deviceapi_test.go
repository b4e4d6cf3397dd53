package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/testutil"
)

// The device API as ThingsBoard devices use it, end to end: provisioned
// devices publish with paho, mosquitto_pub and curl; the operator reads and
// writes through the management API.

// provisionedDevice provisions a device by HTTP and returns its id and token.
func (n *node) provisionedDevice(p profileOut, name string) (id, token string) {
	n.t.Helper()
	code, a := n.provisionHTTP(req(p.Key, p.Secret, name))
	if code != http.StatusOK || a.Status != "SUCCESS" {
		n.t.Fatalf("provision %s: HTTP %d %+v", name, code, a)
	}
	d := n.device(name)
	if d == nil {
		n.t.Fatalf("device %s not listed after provisioning", name)
	}
	return d.ID, a.token(n.t)
}

// sampleOut is one value in the management API's telemetry answers.
type sampleOut struct {
	Key   string          `json:"key"`
	TS    int64           `json:"ts"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
	Count int64           `json:"count"`
}

type seriesOut struct {
	Key    string      `json:"key"`
	Values []sampleOut `json:"values"`
}

// compact strips the management API's indentation from a JSON value.
func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func (n *node) latest(deviceID string) map[string]sampleOut {
	n.t.Helper()
	var out struct {
		Values []sampleOut `json:"values"`
	}
	if code := n.api("GET", "/api/devices/"+deviceID+"/telemetry/latest", nil, &out); code != http.StatusOK {
		n.t.Fatalf("latest telemetry: HTTP %d", code)
	}
	m := make(map[string]sampleOut)
	for _, s := range out.Values {
		m[s.Key] = s
	}
	return m
}

func (n *node) series(deviceID, query string) []seriesOut {
	n.t.Helper()
	var out struct {
		Series []seriesOut `json:"series"`
	}
	if code := n.api("GET", "/api/devices/"+deviceID+"/telemetry?"+query, nil, &out); code != http.StatusOK {
		n.t.Fatalf("telemetry query %s: HTTP %d", query, code)
	}
	return out.Series
}

// mqttDevice connects a paho MQTT 3.1.1 device session with its token.
func (n *node) mqttDevice(clientID, token string) mqtt.Client {
	n.t.Helper()
	c, err := n.connectDevice(clientID, token, "")
	if err != nil {
		n.t.Fatalf("connect %s: %v", clientID, err)
	}
	return c
}

func publish(t *testing.T, c mqtt.Client, topic string, qos byte, payload string) {
	t.Helper()
	if tok := c.Publish(topic, qos, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func subscribe(t *testing.T, c mqtt.Client, filter string) chan mqtt.Message {
	t.Helper()
	ch := make(chan mqtt.Message, 16)
	if tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { ch <- m }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return ch
}

func next(t *testing.T, ch chan mqtt.Message) mqtt.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// TestTelemetryShapes sends telemetry in every shape ThingsBoard documents,
// over MQTT (paho, mosquitto_pub v3.1.1 and v5) and HTTP (curl), and reads
// it back, types kept, through the management API.
func TestTelemetryShapes(t *testing.T) {
	pub := testutil.RequireTool(t, "mosquitto_pub")
	curl := testutil.RequireTool(t, "curl")
	n := startNode(t, "")
	p := n.createProfile("telemetry", "allow-create", "ACCESS_TOKEN", "never")
	host, port, _ := strings.Cut(n.mqtt, ":")
	id, token := n.provisionedDevice(p, "meter-1")

	c := n.mqttDevice("meter-1", token)
	publish(t, c, "v1/devices/me/telemetry", 1, `{"temperature":42,"humidity":73.5,"active":false,"mode":"auto","config":{"a":1}}`)
	publish(t, c, "v1/devices/me/telemetry", 1, `{"ts":1451649600512,"values":{"pressure":1013}}`)
	publish(t, c, "v1/devices/me/telemetry", 0, `[{"ts":1451649600513,"values":{"pressure":1014}},{"ts":1451649600514,"values":{"pressure":1015.5}}]`)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		out, err := exec.Command(pub, "-h", host, "-p", port, "-V", v, "-q", "1", "-u", token,
			"-t", "v1/devices/me/telemetry", "-m", fmt.Sprintf(`{"voltage_%s":230}`, strings.TrimPrefix(v, "mqtt"))).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub %s: %v\n%s", v, err, out)
		}
	}
	// As in ThingsBoard's HTTP API docs.
	out, err := exec.Command(curl, "-sS", "-f", "-X", "POST", "--data", `{"current":1.5}`, n.baseURL+"/api/v1/"+token+"/telemetry",
		"--header", "Content-Type:application/json").CombinedOutput()
	if err != nil {
		t.Fatalf("curl telemetry: %v\n%s", err, out)
	}

	latest := n.latest(id)
	want := map[string]struct{ typ, value string }{
		"temperature":  {"long", "42"},
		"humidity":     {"double", "73.5"},
		"active":       {"boolean", "false"},
		"mode":         {"string", `"auto"`},
		"config":       {"json", `{"a":1}`},
		"pressure":     {"double", "1015.5"},
		"voltage_v311": {"long", "230"},
		"voltage_v5":   {"long", "230"},
		"current":      {"double", "1.5"},
	}
	for key, w := range want {
		got, ok := latest[key]
		if !ok {
			t.Errorf("latest %s missing; have %v", key, latest)
			continue
		}
		if got.Type != w.typ || compact(got.Value) != w.value {
			t.Errorf("latest %s = %s %s, want %s %s", key, got.Type, got.Value, w.typ, w.value)
		}
	}
	if latest["pressure"].TS != 1451649600514 {
		t.Errorf("pressure ts %d: the device's timestamp was not kept", latest["pressure"].TS)
	}
	if ts := latest["temperature"].TS; time.Since(time.UnixMilli(ts)) > time.Minute {
		t.Errorf("temperature ts %d: want the receive time", ts)
	}
	s := n.series(id, "keys=pressure&from=1451649600000&to=1451649601000&order=asc")
	if len(s) != 1 || len(s[0].Values) != 3 || string(s[0].Values[0].Value) != "1013" || string(s[0].Values[2].Value) != "1015.5" {
		t.Errorf("pressure series: %+v", s)
	}
	agg := n.series(id, "keys=pressure&from=1451649600000&to=1451649601000&agg=max&interval=1s")
	if len(agg) != 1 || len(agg[0].Values) != 1 || string(agg[0].Values[0].Value) != "1015.5" || agg[0].Values[0].Count != 3 {
		t.Errorf("pressure max: %+v", agg)
	}
}

// TestAttributesBothWays: the device reports client attributes and asks
// for its attributes; the operator sets shared attributes, which reach the
// connected device at once, and server attributes, which it never sees.
func TestAttributesBothWays(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	n := startNode(t, "")
	p := n.createProfile("attrs", "allow-create", "ACCESS_TOKEN", "never")
	id, token := n.provisionedDevice(p, "valve-1")
	_, otherToken := n.provisionedDevice(p, "valve-2")

	c := n.mqttDevice("valve-1", token)
	other := n.mqttDevice("valve-2", otherToken)
	pushes := subscribe(t, c, "v1/devices/me/attributes")
	otherPushes := subscribe(t, other, "v1/devices/me/attributes")
	responses := subscribe(t, c, "v1/devices/me/attributes/response/+")

	publish(t, c, "v1/devices/me/attributes", 1, `{"firmwareVersion":"2.1.0","serial":1234}`)

	var set struct {
		Pushed int `json:"pushed"`
	}
	if code := n.api("PUT", "/api/devices/"+id+"/attributes/shared", map[string]any{"targetTemperature": 24, "mode": "eco"}, &set); code != http.StatusOK || set.Pushed != 1 {
		t.Fatalf("set shared attributes: HTTP %d, pushed %d", code, set.Pushed)
	}
	m := next(t, pushes)
	var push map[string]any
	if err := json.Unmarshal(m.Payload(), &push); err != nil || push["targetTemperature"] != float64(24) || push["mode"] != "eco" {
		t.Errorf("shared attribute push %s: %v", m.Payload(), err)
	}
	if code := n.api("PUT", "/api/devices/"+id+"/attributes/server", map[string]any{"site": "hall-3"}, &set); code != http.StatusOK {
		t.Fatalf("set server attributes: HTTP %d", code)
	}

	publish(t, c, "v1/devices/me/attributes/request/7", 1, `{"clientKeys":"firmwareVersion,serial","sharedKeys":"targetTemperature,site"}`)
	m = next(t, responses)
	if m.Topic() != "v1/devices/me/attributes/response/7" {
		t.Errorf("response topic %s", m.Topic())
	}
	if got, want := string(m.Payload()), `{"client":{"firmwareVersion":"2.1.0","serial":1234},"shared":{"targetTemperature":24}}`; got != want {
		t.Errorf("attribute response\n got %s\nwant %s", got, want)
	}

	// HTTP, as in ThingsBoard's docs.
	out, err := exec.Command(curl, "-sS", "-f", n.baseURL+"/api/v1/"+token+"/attributes?clientKeys=serial&sharedKeys=mode").CombinedOutput()
	if err != nil || string(out) != `{"client":{"serial":1234},"shared":{"mode":"eco"}}` {
		t.Errorf("curl attributes: %v %s", err, out)
	}
	out, err = exec.Command(curl, "-sS", "-f", "-X", "POST", "--data", `{"location":"roof"}`, n.baseURL+"/api/v1/"+token+"/attributes").CombinedOutput()
	if err != nil {
		t.Fatalf("curl post attributes: %v %s", err, out)
	}

	var attrs struct {
		Attributes []struct {
			Scope string          `json:"scope"`
			Key   string          `json:"key"`
			Value json.RawMessage `json:"value"`
		} `json:"attributes"`
	}
	if code := n.api("GET", "/api/devices/"+id+"/attributes", nil, &attrs); code != http.StatusOK {
		t.Fatalf("list attributes: HTTP %d", code)
	}
	var got []string
	for _, a := range attrs.Attributes {
		got = append(got, a.Scope+"/"+a.Key+"="+compact(a.Value))
	}
	if want := `[client/firmwareVersion="2.1.0" client/location="roof" client/serial=1234 shared/mode="eco" shared/targetTemperature=24 server/site="hall-3"]`; fmt.Sprint(got) != want {
		t.Errorf("attributes\n got %v\nwant %s", got, want)
	}

	var del struct {
		Deleted []string `json:"deleted"`
	}
	if code := n.api("DELETE", "/api/devices/"+id+"/attributes/shared?keys=mode", nil, &del); code != http.StatusOK || fmt.Sprint(del.Deleted) != "[mode]" {
		t.Fatalf("delete shared attribute: HTTP %d %v", code, del.Deleted)
	}
	if m := next(t, pushes); string(m.Payload()) != `{"deleted":["mode"]}` {
		t.Errorf("deletion push %s", m.Payload())
	}
	select {
	case m := <-otherPushes:
		t.Errorf("another device got a push: %s", m.Payload())
	case <-time.After(200 * time.Millisecond):
	}
}

// TestRPC: a command reaches the connected device and its answer comes
// back; a device that does not answer times out; an offline one is
// reported at once.
func TestRPC(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("rpc", "allow-create", "ACCESS_TOKEN", "never")
	id, token := n.provisionedDevice(p, "pump-1")
	silentID, silentToken := n.provisionedDevice(p, "pump-2")
	offlineID, _ := n.provisionedDevice(p, "pump-3")

	c := n.mqttDevice("pump-1", token)
	if tok := c.Subscribe("v1/devices/me/rpc/request/+", 1, func(c mqtt.Client, m mqtt.Message) {
		var req struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		json.Unmarshal(m.Payload(), &req)
		reqID := strings.TrimPrefix(m.Topic(), "v1/devices/me/rpc/request/")
		c.Publish("v1/devices/me/rpc/response/"+reqID, 1, false, fmt.Sprintf(`{"method":%q,"echo":%s}`, req.Method, req.Params))
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	silent := n.mqttDevice("pump-2", silentToken)
	subscribe(t, silent, "v1/devices/me/rpc/request/+")

	var res struct {
		Result json.RawMessage `json:"result"`
	}
	code := n.api("POST", "/api/devices/"+id+"/rpc", map[string]any{"method": "setGpio", "params": map[string]any{"pin": 4, "value": 1}}, &res)
	if code != http.StatusOK || compact(res.Result) != `{"method":"setGpio","echo":{"pin":4,"value":1}}` {
		t.Errorf("rpc: HTTP %d %s", code, res.Result)
	}
	var apiErr struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	start := time.Now()
	code = n.api("POST", "/api/devices/"+silentID+"/rpc", map[string]any{"method": "reboot", "timeout": "300ms"}, &apiErr)
	if code != http.StatusGatewayTimeout || time.Since(start) > 5*time.Second {
		t.Errorf("rpc to a silent device: HTTP %d %+v after %v", code, apiErr, time.Since(start))
	}
	code = n.api("POST", "/api/devices/"+offlineID+"/rpc", map[string]any{"method": "reboot"}, &apiErr)
	if code != http.StatusConflict || apiErr.Message == "" {
		t.Errorf("rpc to an offline device: HTTP %d %+v", code, apiErr)
	}
}

// TestDeviceAPIRefusals: limits and malformed payloads are refused on both
// transports and counted, without closing other devices' sessions or
// storing anything of the refused message.
func TestDeviceAPIRefusals(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("limits", "allow-create", "ACCESS_TOKEN", "never")
	id, token := n.provisionedDevice(p, "sensor-1")
	_, otherToken := n.provisionedDevice(p, "sensor-2")
	other := n.mqttDevice("sensor-2", otherToken)

	post := func(path, body string) int {
		resp, err := http.Post(n.baseURL+"/api/v1/"+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		name, path, body string
		want             int
	}{
		{"unknown token", "nope/telemetry", `{"a":1}`, http.StatusUnauthorized},
		{"not JSON", token + "/telemetry", `temperature=42`, http.StatusBadRequest},
		{"half a batch", token + "/telemetry", `[{"half":1},{"ts":"x","values":{}}]`, http.StatusBadRequest},
		{"too large", token + "/telemetry", `{"big":"` + strings.Repeat("x", 70_000) + `"}`, http.StatusRequestEntityTooLarge},
		{"attributes not an object", token + "/attributes", `[1,2]`, http.StatusBadRequest},
		{"fine", token + "/telemetry", `{"ok":1}`, http.StatusOK},
	}
	for _, tc := range cases {
		if got := post(tc.path, tc.body); got != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, got, tc.want)
		}
	}
	latest := n.latest(id)
	if _, ok := latest["half"]; ok {
		t.Error("a refused batch was half stored")
	}
	if _, ok := latest["ok"]; !ok {
		t.Error("the accepted message was not stored")
	}
	// The rate limit (burst 100): the HTTP device API answers 429.
	limited := false
	for range 200 {
		if post(token+"/telemetry", `{"n":1}`) == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Error("no 429 after 200 messages at once")
	}
	if !other.IsConnectionOpen() {
		t.Error("another device's session was closed")
	}
	_, metrics := get(t, n.baseURL+"/metrics")
	for _, want := range []string{`zerotouch_device_messages_total{result="malformed"} 3`, `zerotouch_device_messages_total{result="too_large"} 1`, `zerotouch_device_messages_total{result="rate_limited"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestTelemetrySurvivesRestart: what was acknowledged and committed is
// there after a restart, with the connection times.
func TestTelemetrySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	p := n.createProfile("restart", "allow-create", "ACCESS_TOKEN", "never")
	id, token := n.provisionedDevice(p, "logger-1")
	c := n.mqttDevice("logger-1", token)
	publish(t, c, "v1/devices/me/telemetry", 1, `{"ts":1700000000000,"values":{"t":1}}`)
	c.Disconnect(100)
	if len(n.latest(id)) != 1 { // a read commits what is queued
		t.Fatal("telemetry not stored")
	}
	var state struct {
		Connected      bool    `json:"connected"`
		LastConnect    *string `json:"lastConnect"`
		LastDisconnect *string `json:"lastDisconnect"`
	}
	waitFor(t, "disconnect recorded", func() bool {
		n.api("GET", "/api/devices/"+id+"/state", nil, &state)
		return !state.Connected && state.LastDisconnect != nil
	})
	n.srv.Close(t.Context())

	n2 := startNode(t, dir)
	if got := n2.latest(id); string(got["t"].Value) != "1" {
		t.Errorf("after restart: %v", got)
	}
	n2.api("GET", "/api/devices/"+id+"/state", nil, &state)
	if state.Connected || state.LastConnect == nil || state.LastDisconnect == nil {
		t.Errorf("state after restart: %+v", state)
	}
}
