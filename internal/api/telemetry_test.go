package api

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// t0 is a fixed instant (2023-11-14T22:13:20Z) the tests' samples are
// placed around; queries name their range explicitly.
const t0 = int64(1_700_000_000_000)

const minute = int64(60_000)

// fakeTransport plays the devices' sessions at the device.Transport
// boundary: a device it holds online takes RPC requests and answers them
// with answer (from another goroutine, as a real session would), and takes
// attribute pushes.
type fakeTransport struct {
	svc *device.Service

	mu     sync.Mutex
	online map[string]bool
	// answer returns the device's answer to req, whether it answers at
	// all, and after how long.
	answer func(req device.RPCRequest) (result json.RawMessage, ok bool, delay time.Duration)
	rpcs   []device.RPCRequest
	pushes []string // "changed:k1,k2" or "deleted:k1"
}

func newFakeTransport(svc *device.Service) *fakeTransport {
	f := &fakeTransport{svc: svc, online: map[string]bool{}}
	svc.AddTransport(f)
	return f
}

func (f *fakeTransport) setOnline(deviceID string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.online[deviceID] = on
}

func (f *fakeTransport) setAnswer(fn func(req device.RPCRequest) (json.RawMessage, bool, time.Duration)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = fn
}

func (f *fakeTransport) PushAttributes(deviceID string, changed []telemetry.Attribute, deleted []string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.online[deviceID] {
		return 0
	}
	if len(changed) > 0 {
		keys := make([]string, len(changed))
		for i, a := range changed {
			keys[i] = a.Key
		}
		f.pushes = append(f.pushes, "changed:"+strings.Join(keys, ","))
	}
	if len(deleted) > 0 {
		f.pushes = append(f.pushes, "deleted:"+strings.Join(deleted, ","))
	}
	return 1
}

func (f *fakeTransport) SendRPC(deviceID string, req device.RPCRequest) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.online[deviceID] {
		return 0
	}
	f.rpcs = append(f.rpcs, req)
	if f.answer != nil {
		if res, ok, delay := f.answer(req); ok {
			go func() {
				time.Sleep(delay)
				f.svc.RPCResponse(deviceID, req.ID, res)
			}()
		}
	}
	return 1
}

func (f *fakeTransport) sent() ([]device.RPCRequest, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]device.RPCRequest(nil), f.rpcs...), append([]string(nil), f.pushes...)
}

// newDevice creates a profile and a device in the default organisation.
func (e *env) newDevice(name string) CreatedDevice {
	e.t.Helper()
	p := e.profile(name+"-profile", registry.StrategyPreProvisioned)
	return e.device(name, p.ID)
}

// ingest stores samples of a device through the device service.
func (e *env) ingest(deviceID string, samples ...telemetry.Sample) {
	e.t.Helper()
	if err := e.devices.Ingest(context.Background(), deviceID, samples); err != nil {
		e.t.Fatal(err)
	}
}

func sample(key string, ts int64, v telemetry.Value) telemetry.Sample {
	return telemetry.Sample{Key: key, TS: ts, Value: v}
}

// rangeQuery is the from/to part of a query around t0.
func rangeQuery(from, to int64) string {
	return "from=" + strconv.FormatInt(from, 10) + "&to=" + strconv.FormatInt(to, 10)
}

// deviceRoutes are the routes served by the device service.
func deviceRoutes(e *env) []route {
	var out []route
	for _, rt := range e.api.routes() {
		for _, part := range []string{"/state", "/telemetry", "/attributes", "/rpc"} {
			if strings.Contains(rt.pattern, part) {
				out = append(out, rt)
				break
			}
		}
	}
	return out
}

func TestTelemetryDisabled(t *testing.T) {
	e := newEnvWithoutDevices(t)
	d := e.newDevice("d1")
	routes := deviceRoutes(e)
	if len(routes) != 7 {
		t.Fatalf("%d device routes", len(routes))
	}
	for _, rt := range routes {
		t.Run(rt.method+" "+rt.pattern, func(t *testing.T) {
			path := strings.NewReplacer("{id}", d.ID, "{scope}", "shared").Replace(rt.pattern)
			r := e.do(registry.RoleAdmin, rt.method, path, `{"method":"x","a":1}`)
			if got := r.err(t); r.status != http.StatusServiceUnavailable || got.Code != CodeUnavailable || !strings.Contains(got.Message, "telemetry is not enabled") {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		})
	}
}

func TestDeviceState(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	path := "/api/devices/" + d.ID + "/state"

	r := e.must(http.StatusOK, "GET", path, nil, nil)
	var raw map[string]any
	r.decode(t, &raw)
	for _, k := range []string{"lastConnect", "lastDisconnect", "lastActivity"} {
		if v, ok := raw[k]; !ok || v != nil {
			t.Errorf("%s = %v (present %v), want null", k, v, ok)
		}
	}
	if raw["connected"] != false || raw["sessions"] != float64(0) {
		t.Errorf("never connected: %s", r.body)
	}

	before := time.Now().Add(-time.Second)
	e.devices.Connected(d.ID)
	e.devices.Connected(d.ID)
	var st DeviceState
	if r := e.do(registry.RoleViewer, "GET", path, nil); r.status != http.StatusOK {
		t.Fatalf("viewer: %d %s", r.status, r.body)
	} else {
		r.decode(t, &st)
	}
	if !st.Connected || st.Sessions != 2 || st.LastConnect == nil || st.LastConnect.Before(before) || st.LastDisconnect != nil {
		t.Errorf("connected twice: %+v", st)
	}

	e.devices.Disconnected(d.ID)
	e.devices.Disconnected(d.ID)
	e.must(http.StatusOK, "GET", path, nil, &st)
	if st.Connected || st.Sessions != 0 || st.LastDisconnect == nil || st.LastConnect == nil {
		t.Errorf("disconnected: %+v", st)
	}

	if r := e.do(registry.RoleViewer, "GET", "/api/devices/"+missingID+"/state", nil); r.status != http.StatusNotFound || r.err(t).Code != CodeNotFound {
		t.Errorf("unknown device: %d %s", r.status, r.body)
	}
}

func TestLatestTelemetry(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	obj, _ := telemetry.JSON([]byte(`{"a": [1, 2]}`))
	e.ingest(d.ID,
		sample("temperature", t0, telemetry.Long(40)),
		sample("temperature", t0+minute, telemetry.Long(42)),
		sample("ratio", t0, telemetry.Double(2)),
		sample("on", t0, telemetry.Bool(true)),
		sample("fw", t0, telemetry.String("1.2")),
		sample("cfg", t0, obj),
	)
	path := "/api/devices/" + d.ID + "/telemetry/latest"

	r := e.do(registry.RoleViewer, "GET", path, nil)
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var got LatestValues
	r.decode(t, &got)
	want := []LatestValue{
		{Key: "cfg", TS: t0, Type: "json", Value: obj},
		{Key: "fw", TS: t0, Type: "string", Value: telemetry.String("1.2")},
		{Key: "on", TS: t0, Type: "boolean", Value: telemetry.Bool(true)},
		{Key: "ratio", TS: t0, Type: "double", Value: telemetry.Double(2)},
		{Key: "temperature", TS: t0 + minute, Type: "long", Value: telemetry.Long(42)},
	}
	if len(got.Values) != len(want) {
		t.Fatalf("got %s", r.body)
	}
	for i, w := range want {
		g := got.Values[i]
		if g.Key != w.Key || g.TS != w.TS || g.Type != w.Type || g.Value != w.Value || !g.Time.Equal(time.UnixMilli(w.TS)) {
			t.Errorf("value %d: got %+v, want %+v", i, g, w)
		}
	}
	// The wire form: the JSON value itself, the time in RFC 3339.
	for _, s := range []string{`"value": 42`, `"value": "1.2"`, `"type": "json"`, `"time": "2023-11-14T22:14:20Z"`} {
		if !strings.Contains(string(r.body), s) {
			t.Errorf("answer lacks %s:\n%s", s, r.body)
		}
	}

	e.must(http.StatusOK, "GET", path+"?keys=temperature,missing,,fw", nil, &got)
	if len(got.Values) != 2 || got.Values[0].Key != "fw" || got.Values[1].Key != "temperature" {
		t.Errorf("keys: %+v", got.Values)
	}
	other := e.newDevice("d2")
	r = e.must(http.StatusOK, "GET", "/api/devices/"+other.ID+"/telemetry/latest", nil, nil)
	if !strings.Contains(string(r.body), `"values": []`) {
		t.Errorf("no telemetry: %s", r.body)
	}
}

func TestQueryTelemetry(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	for i := range int64(5) {
		e.ingest(d.ID, sample("temp", t0+i*minute, telemetry.Long(10+i)))
	}
	e.ingest(d.ID, sample("hum", t0, telemetry.Double(0.5)))
	// Recent values, for the default range and since.
	now := time.Now().UnixMilli()
	e.ingest(d.ID, sample("recent", now-30*minute, telemetry.Long(1)), sample("recent", now-26*60*minute, telemetry.Long(2)))
	base := "/api/devices/" + d.ID + "/telemetry?"

	type series map[string][]int64 // key → the values' ts, in order
	cases := []struct {
		name  string
		query string
		want  series
	}{
		{"newest first by default", "keys=temp&" + rangeQuery(t0, t0+time.Hour.Milliseconds()),
			series{"temp": {t0 + 4*minute, t0 + 3*minute, t0 + 2*minute, t0 + minute, t0}}},
		{"ascending with limit", "keys=temp&order=asc&limit=2&" + rangeQuery(t0, t0+time.Hour.Milliseconds()),
			series{"temp": {t0, t0 + minute}}},
		{"descending with limit", "keys=temp&order=desc&limit=2&" + rangeQuery(t0, t0+time.Hour.Milliseconds()),
			series{"temp": {t0 + 4*minute, t0 + 3*minute}}},
		{"to is exclusive", "keys=temp&order=asc&" + rangeQuery(t0+minute, t0+3*minute),
			series{"temp": {t0 + minute, t0 + 2*minute}}},
		{"RFC 3339 times", "keys=temp&order=asc&from=" + url.QueryEscape(time.UnixMilli(t0+3*minute).UTC().Format(time.RFC3339)) +
			"&to=" + url.QueryEscape(time.UnixMilli(t0+time.Hour.Milliseconds()).Format(time.RFC3339Nano)),
			series{"temp": {t0 + 3*minute, t0 + 4*minute}}},
		{"several keys, one without values", "keys=hum,temp,nothing&limit=1&" + rangeQuery(t0, t0+time.Hour.Milliseconds()),
			series{"hum": {t0}, "temp": {t0 + 4*minute}, "nothing": {}}},
		{"no keys: every key with a latest value", "limit=1&" + rangeQuery(t0, t0+time.Hour.Milliseconds()),
			series{"hum": {t0}, "recent": {}, "temp": {t0 + 4*minute}}},
		{"default range: the last 24 hours", "keys=recent,temp", series{"recent": {now - 30*minute}, "temp": {}}},
		{"since", "keys=recent&since=48h", series{"recent": {now - 30*minute, now - 26*60*minute}}},
		{"since, shorter", "keys=recent&since=10m", series{"recent": {}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got TelemetrySeries
			r := e.do(registry.RoleViewer, "GET", base+c.query, nil)
			if r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.body)
			}
			r.decode(t, &got)
			if len(got.Series) != len(c.want) {
				t.Fatalf("%d series, want %d: %s", len(got.Series), len(c.want), r.body)
			}
			for _, s := range got.Series {
				want, ok := c.want[s.Key]
				if !ok || len(s.Values) != len(want) || s.Aggregation != "" || s.Interval != "" {
					t.Fatalf("series %s: %+v, want ts %v", s.Key, s.Values, want)
				}
				for i, v := range s.Values {
					if v.TS != want[i] || v.Count != 0 {
						t.Errorf("series %s value %d: %+v, want ts %d", s.Key, i, v, want[i])
					}
				}
			}
		})
	}
	t.Run("series in the order of keys", func(t *testing.T) {
		var got TelemetrySeries
		e.must(http.StatusOK, "GET", base+"keys=temp,hum&"+rangeQuery(t0, t0+minute), nil, &got)
		if len(got.Series) != 2 || got.Series[0].Key != "temp" || got.Series[1].Key != "hum" {
			t.Errorf("%+v", got.Series)
		}
	})
	t.Run("values keep their type", func(t *testing.T) {
		var got TelemetrySeries
		e.must(http.StatusOK, "GET", base+"keys=hum,temp&limit=1&"+rangeQuery(t0, t0+time.Hour.Milliseconds()), nil, &got)
		if v := got.Series[0].Values[0]; v.Type != "double" || v.Value != telemetry.Double(0.5) {
			t.Errorf("hum: %+v", v)
		}
		if v := got.Series[1].Values[0]; v.Type != "long" || v.Value != telemetry.Long(14) || !v.Time.Equal(time.UnixMilli(t0+4*minute)) {
			t.Errorf("temp: %+v", v)
		}
	})
}

func TestQueryTelemetryValidation(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	base := "/api/devices/" + d.ID + "/telemetry?keys=temp&"
	manyKeys := make([]string, maxQueryKeys+1)
	for i := range manyKeys {
		manyKeys[i] = "k" + strconv.Itoa(i)
	}
	cases := []struct {
		name, query, want string // want: in the message
	}{
		{"bad from", "from=yesterday", "from="},
		{"bad to", "to=2025-13-01T00:00:00Z", "to="},
		{"empty range", rangeQuery(t0, t0), "time range is empty"},
		{"reversed range", rangeQuery(t0+1, t0), "time range is empty"},
		{"from and since", "from=1&since=1h", "not both"},
		{"bad since", "since=yesterday", "since="},
		{"negative since", "since=-1h", "since="},
		{"negative limit", "limit=-1", "limit="},
		{"limit too large", "limit=10001", "at most 10000"},
		{"bad order", "order=newest", "order="},
		{"agg without interval", "agg=avg", "needs an interval"},
		{"interval without agg", "interval=5m", "without agg"},
		{"unknown agg", "agg=median&interval=5m", "unknown aggregation"},
		{"bad interval", "agg=avg&interval=often", "interval="},
		{"interval below 1ms", "agg=avg&interval=10us", "interval="},
		{"too many intervals", "agg=avg&interval=1s&since=24h", "at most 10000"},
		{"limit with agg", "agg=avg&interval=1h&limit=5", "limit and order"},
		{"order with agg", "agg=avg&interval=1h&order=asc", "limit and order"},
		{"too many keys", "keys=" + strings.Join(manyKeys, ","), "at most 100"},
		{"key too long", "keys=" + strings.Repeat("k", telemetry.MaxKeyLength+1), "longer than 255"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(registry.RoleViewer, "GET", base+c.query, nil)
			got := r.err(t)
			if r.status != http.StatusBadRequest || got.Code != CodeBadRequest || !strings.Contains(got.Message, c.want) {
				t.Fatalf("status %d: %s, want 400 mentioning %q", r.status, r.body, c.want)
			}
		})
	}
	if r := e.do(registry.RoleViewer, "GET", "/api/devices/"+missingID+"/telemetry?keys=temp", nil); r.status != http.StatusNotFound {
		t.Errorf("unknown device: %d %s", r.status, r.body)
	}
}

// TestAggregateTelemetry runs every aggregation through the API over two
// intervals: the first mixes longs and a double, the second a long and a
// string (which only count counts).
func TestAggregateTelemetry(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	e.ingest(d.ID,
		sample("temp", t0, telemetry.Long(10)),
		sample("temp", t0+minute, telemetry.Long(20)),
		sample("temp", t0+2*minute, telemetry.Double(30.5)),
		sample("temp", t0+6*minute, telemetry.Long(1)),
		sample("temp", t0+7*minute, telemetry.String("x")),
		sample("temp", t0+10*minute, telemetry.Long(1000)), // outside [from, to)
	)
	type bucket struct {
		typ   string
		value float64
		count int64
	}
	cases := []struct {
		agg  string
		want []bucket // the intervals starting at t0 and t0+5m
	}{
		{"min", []bucket{{"double", 10, 3}, {"long", 1, 1}}},
		{"max", []bucket{{"double", 30.5, 3}, {"long", 1, 1}}},
		{"avg", []bucket{{"double", 60.5 / 3, 3}, {"double", 1, 1}}},
		{"sum", []bucket{{"double", 60.5, 3}, {"long", 1, 1}}},
		{"count", []bucket{{"long", 3, 3}, {"long", 2, 2}}},
	}
	for _, c := range cases {
		t.Run(c.agg, func(t *testing.T) {
			var got TelemetrySeries
			r := e.do(registry.RoleViewer, "GET", "/api/devices/"+d.ID+"/telemetry?keys=temp,none&agg="+c.agg+"&interval=5m&"+rangeQuery(t0, t0+10*minute), nil)
			if r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.body)
			}
			r.decode(t, &got)
			if len(got.Series) != 2 || got.Series[1].Key != "none" || len(got.Series[1].Values) != 0 {
				t.Fatalf("series: %s", r.body)
			}
			s := got.Series[0]
			if s.Key != "temp" || string(s.Aggregation) != c.agg || s.Interval != "5m0s" || len(s.Values) != len(c.want) {
				t.Fatalf("series: %s", r.body)
			}
			for i, w := range c.want {
				v := s.Values[i]
				f, ok := v.Value.Float()
				if v.TS != t0+int64(i)*5*minute || v.Type != w.typ || v.Value.Kind.String() != w.typ || !ok || math.Abs(f-w.value) > 1e-9 || v.Count != w.count {
					t.Errorf("interval %d: %+v, want %+v", i, v, w)
				}
			}
			if !strings.Contains(string(r.body), `"count": `) {
				t.Errorf("no count in %s", r.body)
			}
		})
	}
}

func TestAttributes(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	tr := newFakeTransport(e.devices)
	tr.setOnline(d.ID, true)
	attrs := "/api/devices/" + d.ID + "/attributes"
	if err := e.devices.ReportAttributes(context.Background(), d.ID, []telemetry.Attribute{{Key: "model", Value: telemetry.String("x1")}}); err != nil {
		t.Fatal(err)
	}

	var set AttributesSet
	r := e.do(registry.RoleOEM, "PUT", attrs+"/shared", `{"fw": "1.2", "interval": 30, "ratio": 1.0, "led": true, "cfg": {"a": 1}}`)
	if r.status != http.StatusOK {
		t.Fatalf("oem sets shared: %d %s", r.status, r.body)
	}
	r.decode(t, &set)
	if set.Pushed != 1 {
		t.Errorf("pushed %d", set.Pushed)
	}
	e.must(http.StatusOK, "PUT", attrs+"/server", `{"site": "hall 3"}`, &set)
	if set.Pushed != 0 {
		t.Errorf("server attributes pushed to %d sessions", set.Pushed)
	}
	if _, pushes := tr.sent(); strings.Join(pushes, " ") != "changed:cfg,fw,interval,led,ratio" {
		t.Errorf("pushes %v", pushes)
	}

	var got Attributes
	r = e.do(registry.RoleViewer, "GET", attrs, nil)
	r.decode(t, &got)
	var listed []string
	for _, a := range got.Attributes {
		listed = append(listed, string(a.Scope)+"/"+a.Key+"/"+a.Type)
		if a.UpdatedAt.IsZero() || time.Since(a.UpdatedAt) > time.Minute {
			t.Errorf("%s updatedAt %v", a.Key, a.UpdatedAt)
		}
	}
	if want := "client/model/string shared/cfg/json shared/fw/string shared/interval/long shared/led/boolean shared/ratio/double server/site/string"; strings.Join(listed, " ") != want {
		t.Errorf("attributes\n got %s\nwant %s", strings.Join(listed, " "), want)
	}
	if a := got.Attributes[5]; a.Value != telemetry.Double(1) {
		t.Errorf("1.0 decoded as %+v", a.Value)
	}

	e.must(http.StatusOK, "GET", attrs+"?scope=shared&keys=fw,led,nope", nil, &got)
	if len(got.Attributes) != 2 || got.Attributes[0].Value != telemetry.String("1.2") || got.Attributes[1].Value != telemetry.Bool(true) {
		t.Errorf("shared fw,led: %+v", got.Attributes)
	}
	e.must(http.StatusOK, "GET", attrs+"?scope=client", nil, &got)
	if len(got.Attributes) != 1 || got.Attributes[0].Key != "model" {
		t.Errorf("client: %+v", got.Attributes)
	}

	var del AttributesDeleted
	r = e.do(registry.RoleOEM, "DELETE", attrs+"/shared?keys=fw,nope,led", nil)
	if r.status != http.StatusOK {
		t.Fatalf("oem deletes: %d %s", r.status, r.body)
	}
	r.decode(t, &del)
	if strings.Join(del.Deleted, ",") != "fw,led" {
		t.Errorf("deleted %v", del.Deleted)
	}
	r = e.must(http.StatusOK, "DELETE", attrs+"/server?keys=nope", nil, &del)
	if !strings.Contains(string(r.body), `"deleted": []`) {
		t.Errorf("nothing deleted: %s", r.body)
	}
	if _, pushes := tr.sent(); pushes[len(pushes)-1] != "deleted:fw,led" {
		t.Errorf("pushes %v", pushes)
	}

	// The trail names the keys, never the values.
	var evs List[registry.AuditEvent]
	e.must(http.StatusOK, "GET", "/api/audit?deviceId="+d.ID, nil, &evs)
	var actions []string
	for _, ev := range evs.Items {
		actions = append(actions, ev.Action)
		if strings.Contains(ev.Detail, "hall 3") || strings.Contains(ev.Detail, "1.2") {
			t.Errorf("value in the trail: %+v", ev)
		}
	}
	if want := "device.attributes.delete device.attributes.delete device.attributes.set device.attributes.set device.create"; strings.Join(actions, " ") != want {
		t.Errorf("audit %v", actions)
	}
	if ev := evs.Items[3]; ev.Actor != "api-key:"+e.ids[registry.RoleOEM] || !strings.Contains(ev.Detail, "shared attributes of device d1: cfg, fw, interval, led, ratio") {
		t.Errorf("set event %+v", ev)
	}

	t.Run("refused", func(t *testing.T) {
		cases := []struct {
			name, method, path string
			body               any
			status             int
			want               string
		}{
			{"viewer sets", "PUT", attrs + "/shared", `{"a":1}`, http.StatusForbidden, "may not"},
			{"viewer deletes", "DELETE", attrs + "/shared?keys=a", nil, http.StatusForbidden, "may not"},
			{"client scope", "PUT", attrs + "/client", `{"a":1}`, http.StatusBadRequest, "reported by the device"},
			{"client scope delete", "DELETE", attrs + "/client?keys=model", nil, http.StatusBadRequest, "reported by the device"},
			{"unknown scope", "PUT", attrs + "/public", `{"a":1}`, http.StatusBadRequest, "unknown attribute scope"},
			{"unknown scope in get", "GET", attrs + "?scope=public", nil, http.StatusBadRequest, "unknown attribute scope"},
			{"empty object", "PUT", attrs + "/shared", `{}`, http.StatusBadRequest, "no attributes"},
			{"null body", "PUT", attrs + "/shared", `null`, http.StatusBadRequest, "no attributes"},
			{"no body", "PUT", attrs + "/shared", nil, http.StatusBadRequest, "empty"},
			{"not an object", "PUT", attrs + "/shared", `[1]`, http.StatusBadRequest, "expected object"},
			{"null value", "PUT", attrs + "/shared", `{"a":null}`, http.StatusBadRequest, "null"},
			{"empty key", "PUT", attrs + "/shared", `{"":1}`, http.StatusBadRequest, "1 to 255 bytes"},
			{"long key", "PUT", attrs + "/shared", `{"` + strings.Repeat("k", 256) + `":1}`, http.StatusBadRequest, "1 to 255 bytes"},
			{"too large", "PUT", attrs + "/shared", `{"a":"` + strings.Repeat("x", maxJSONBody) + `"}`, http.StatusRequestEntityTooLarge, "exceeds"},
			{"delete without keys", "DELETE", attrs + "/shared", nil, http.StatusBadRequest, "keys is required"},
			{"unknown device", "PUT", "/api/devices/" + missingID + "/attributes/shared", `{"a":1}`, http.StatusNotFound, "not found"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				role := registry.RoleOEM
				if strings.HasPrefix(c.name, "viewer") {
					role = registry.RoleViewer
				}
				r := e.do(role, c.method, c.path, c.body)
				if got := r.err(t); r.status != c.status || !strings.Contains(got.Message, c.want) {
					t.Fatalf("status %d: %s, want %d mentioning %q", r.status, r.body, c.status, c.want)
				}
			})
		}
		// Nothing of the above was written.
		e.must(http.StatusOK, "GET", attrs+"?scope=shared", nil, &got)
		if len(got.Attributes) != 3 {
			t.Errorf("after refusals: %+v", got.Attributes)
		}
	})
}

func TestRPC(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	offline := e.newDevice("d2")
	tr := newFakeTransport(e.devices)
	tr.setOnline(d.ID, true)
	tr.setAnswer(func(req device.RPCRequest) (json.RawMessage, bool, time.Duration) {
		switch req.Method {
		case "echo":
			return json.RawMessage(`{"method":"echo","params":` + string(req.Params) + `}`), true, 10 * time.Millisecond
		case "nothing":
			return nil, true, 0
		}
		return nil, false, 0 // "silent" never answers
	})
	rpc := "/api/devices/" + d.ID + "/rpc"

	t.Run("answered", func(t *testing.T) {
		var res RPCResult
		r := e.do(registry.RoleOperator, "POST", rpc, `{"method":"echo","params":{"pin":4,"value":1},"timeout":"5s"}`)
		if r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		r.decode(t, &res)
		var got struct {
			Method string
			Params struct{ Pin, Value int }
		}
		if err := json.Unmarshal(res.Result, &got); err != nil || got.Method != "echo" || got.Params.Pin != 4 || got.Params.Value != 1 {
			t.Errorf("result %s (%v)", res.Result, err)
		}
		rpcs, _ := tr.sent()
		if last := rpcs[len(rpcs)-1]; last.Method != "echo" || string(last.Params) != `{"pin":4,"value":1}` || last.ID <= 0 {
			t.Errorf("sent %+v", last)
		}
	})
	t.Run("answered with nothing", func(t *testing.T) {
		r := e.must(http.StatusOK, "POST", rpc, `{"method":"nothing","params":null}`, nil)
		if !strings.Contains(string(r.body), `"result": null`) {
			t.Errorf("%s", r.body)
		}
		rpcs, _ := tr.sent()
		if p := rpcs[len(rpcs)-1].Params; p != nil {
			t.Errorf("null params sent as %q", p)
		}
	})
	t.Run("one-way", func(t *testing.T) {
		start := time.Now()
		r := e.do(registry.RoleOperator, "POST", rpc, `{"method":"silent","oneway":true}`)
		if r.status != http.StatusAccepted || !strings.Contains(string(r.body), `"delivered": true`) || time.Since(start) > 5*time.Second {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("offline", func(t *testing.T) {
		n, _ := tr.sent()
		r := e.do(registry.RoleOperator, "POST", "/api/devices/"+offline.ID+"/rpc", `{"method":"echo"}`)
		got := r.err(t)
		if r.status != http.StatusConflict || got.Code != CodeDeviceOffline || !strings.Contains(got.Message, "device state "+offline.ID) || !strings.Contains(got.Message, "nothing was sent") {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if m, _ := tr.sent(); len(m) != len(n) {
			t.Error("a request reached an offline device")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		r := e.do(registry.RoleOperator, "POST", rpc, `{"method":"silent","timeout":"150ms"}`)
		got := r.err(t)
		if r.status != http.StatusGatewayTimeout || got.Code != CodeRPCTimeout || !strings.Contains(got.Message, "150ms") {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if el := time.Since(start); el < 150*time.Millisecond || el > 5*time.Second {
			t.Errorf("answered after %s", el)
		}
	})
	t.Run("refused", func(t *testing.T) {
		cases := []struct {
			name   string
			role   string
			path   string
			body   any
			status int
			want   string
		}{
			{"viewer", registry.RoleViewer, rpc, `{"method":"echo"}`, http.StatusForbidden, "may not"},
			{"oem", registry.RoleOEM, rpc, `{"method":"echo"}`, http.StatusForbidden, "may not"},
			{"no method", registry.RoleOperator, rpc, `{"params":1}`, http.StatusBadRequest, "method is required"},
			{"long method", registry.RoleOperator, rpc, `{"method":"` + strings.Repeat("m", 256) + `"}`, http.StatusBadRequest, "longer than"},
			{"bad timeout", registry.RoleOperator, rpc, `{"method":"echo","timeout":"soon"}`, http.StatusBadRequest, "timeout"},
			{"numeric timeout", registry.RoleOperator, rpc, `{"method":"echo","timeout":10}`, http.StatusBadRequest, "timeout"},
			{"zero timeout", registry.RoleOperator, rpc, `{"method":"echo","timeout":"0s"}`, http.StatusBadRequest, "timeout"},
			{"timeout too long", registry.RoleOperator, rpc, `{"method":"echo","timeout":"11m"}`, http.StatusBadRequest, "10m0s"},
			{"unknown field", registry.RoleOperator, rpc, `{"method":"echo","colour":1}`, http.StatusBadRequest, "colour"},
			{"bad params", registry.RoleOperator, rpc, `{"method":"echo","params":{]}`, http.StatusBadRequest, "invalid JSON"},
			{"empty body", registry.RoleOperator, rpc, nil, http.StatusBadRequest, "empty"},
			{"unknown device", registry.RoleOperator, "/api/devices/" + missingID + "/rpc", `{"method":"echo"}`, http.StatusNotFound, "not found"},
		}
		before, _ := tr.sent()
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := e.do(c.role, "POST", c.path, c.body)
				if got := r.err(t); r.status != c.status || !strings.Contains(got.Message, c.want) {
					t.Fatalf("status %d: %s, want %d mentioning %q", r.status, r.body, c.status, c.want)
				}
			})
		}
		if after, _ := tr.sent(); len(after) != len(before) {
			t.Errorf("refused requests sent %d RPCs", len(after)-len(before))
		}
	})
	t.Run("audit", func(t *testing.T) {
		var evs List[registry.AuditEvent]
		e.must(http.StatusOK, "GET", "/api/audit?action=device.rpc", nil, &evs)
		var got []string
		for _, ev := range evs.Items {
			got = append([]string{ev.Result + ": " + ev.Detail}, got...)
		}
		want := []string{
			`success: RPC "echo" to device d1: answered`,
			`success: RPC "nothing" to device d1: answered`,
			`success: one-way RPC "silent" to device d1: delivered`,
			`device-offline: RPC "echo" to device d2: not sent, the device is offline`,
			`rpc-timeout: RPC "silent" to device d1: no answer within 150ms`,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("audit\n got %q\nwant %q", got, want)
		}
	})
}

// TestRPCAbandoned checks that a caller who hangs up ends the wait: the
// call is forgotten (a late answer finds no one) and recorded as abandoned.
func TestRPCAbandoned(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	tr := newFakeTransport(e.devices)
	tr.setOnline(d.ID, true)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/api/devices/"+d.ID+"/rpc", strings.NewReader(`{"method":"slow","timeout":"1m"}`))
	req.Header.Set("Authorization", "Bearer "+e.keys[registry.RoleOperator])
	done := make(chan error, 1)
	go func() {
		res, err := e.srv.Client().Do(req)
		if err == nil {
			res.Body.Close()
		}
		done <- err
	}()
	// Wait until the request reached the device, then hang up.
	var sent []device.RPCRequest
	for deadline := time.Now().Add(5 * time.Second); len(sent) == 0; sent, _ = tr.sent() {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the device")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the canceled request got an answer")
	}
	var evs List[registry.AuditEvent]
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		e.must(http.StatusOK, "GET", "/api/audit?action=device.rpc", nil, &evs)
		if len(evs.Items) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no audit event for the abandoned call")
		}
	}
	if ev := evs.Items[0]; ev.Result != "abandoned" {
		t.Errorf("event %+v", ev)
	}
	if e.devices.RPCResponse(d.ID, sent[0].ID, json.RawMessage(`1`)) {
		t.Error("the abandoned call still waited for its answer")
	}
}

// TestRPCOutlivesReadTimeout checks that a server read timeout shorter than
// the RPC's own does not cut the wait (zerotouch serve sets one).
func TestRPCOutlivesReadTimeout(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	tr := newFakeTransport(e.devices)
	tr.setOnline(d.ID, true)
	tr.setAnswer(func(device.RPCRequest) (json.RawMessage, bool, time.Duration) {
		return json.RawMessage(`"late"`), true, 600 * time.Millisecond
	})
	srv := httptest.NewUnstartedServer(e.api)
	srv.Config.ReadTimeout = 200 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)

	req, _ := http.NewRequest("POST", srv.URL+"/api/devices/"+d.ID+"/rpc", strings.NewReader(`{"method":"m","timeout":"5s"}`))
	req.Header.Set("Authorization", "Bearer "+e.keys[registry.RoleOperator])
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out RPCResult
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusOK || string(out.Result) != `"late"` {
		t.Fatalf("status %d, result %s, %v", res.StatusCode, out.Result, err)
	}
}

// otherOrgStore is the registry seen with an API key of another
// organisation: keys are looked up as stored, then moved to that org.
type otherOrgStore struct {
	registry.Store
}

func (s otherOrgStore) GetAPIKeyByHash(ctx context.Context, hash string) (*registry.APIKey, error) {
	k, err := s.Store.GetAPIKeyByHash(ctx, hash)
	if err == nil {
		k.OrgID = "00000000-0000-0000-0000-0000000000ff"
	}
	return k, err
}

// TestDeviceRoutesOrgIsolation calls every device route with an admin key
// of another organisation: each answers 404, as for a device that does not
// exist, and nothing reaches the device.
func TestDeviceRoutesOrgIsolation(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("d1")
	tr := newFakeTransport(e.devices)
	tr.setOnline(d.ID, true)
	e.ingest(d.ID, sample("temp", t0, telemetry.Long(1)))
	foreign := httptest.NewServer(New(Options{Store: otherOrgStore{e.store}, Devices: e.devices}))
	t.Cleanup(foreign.Close)

	for _, rt := range deviceRoutes(e) {
		t.Run(rt.method+" "+rt.pattern, func(t *testing.T) {
			path := strings.NewReplacer("{id}", d.ID, "{scope}", "shared").Replace(rt.pattern) + "?keys=temp"
			body := `{"method":"m","temp":2}`
			if rt.method == "GET" || rt.method == "DELETE" {
				body = ""
			}
			req, _ := http.NewRequest(rt.method, foreign.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+e.keys[registry.RoleAdmin])
			res, err := foreign.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var got Error
			_ = json.NewDecoder(res.Body).Decode(&got)
			if res.StatusCode != http.StatusNotFound || got.Code != CodeNotFound {
				t.Fatalf("status %d: %+v", res.StatusCode, got)
			}
		})
	}
	if rpcs, pushes := tr.sent(); len(rpcs)+len(pushes) != 0 {
		t.Errorf("another organisation reached the device: %v %v", rpcs, pushes)
	}
	// Its own organisation still sees everything.
	var l LatestValues
	e.must(http.StatusOK, "GET", "/api/devices/"+d.ID+"/telemetry/latest", nil, &l)
	if len(l.Values) != 1 {
		t.Errorf("own org: %+v", l)
	}
}

// TestGoldenDevices pins the answers of the device routes (see TestGolden).
func TestGoldenDevices(t *testing.T) {
	e := newEnv(t)
	d := e.newDevice("sensor-001")
	off := e.newDevice("sensor-002")
	tr := newFakeTransport(e.devices)
	tr.setOnline(d.ID, true)
	tr.setAnswer(func(req device.RPCRequest) (json.RawMessage, bool, time.Duration) {
		return json.RawMessage(`{"gpio":4,"state":"on"}`), req.Method == "setGpio", 0
	})
	e.devices.Connected(d.ID)
	e.ingest(d.ID,
		sample("temperature", t0, telemetry.Long(21)),
		sample("temperature", t0+minute, telemetry.Double(21.5)),
		sample("temperature", t0+6*minute, telemetry.Long(23)),
		sample("door", t0, telemetry.Bool(false)),
	)
	e.must(http.StatusOK, "PUT", "/api/devices/"+d.ID+"/attributes/shared", `{"fw":"1.2.0","interval":30}`, nil)
	base := "/api/devices/" + d.ID
	cases := []struct {
		name string
		r    resp
	}{
		{"device-state", e.must(http.StatusOK, "GET", base+"/state", nil, nil)},
		{"device-state-never", e.must(http.StatusOK, "GET", "/api/devices/"+off.ID+"/state", nil, nil)},
		{"telemetry-latest", e.must(http.StatusOK, "GET", base+"/telemetry/latest", nil, nil)},
		{"telemetry-query", e.must(http.StatusOK, "GET", base+"/telemetry?keys=temperature,door&order=asc&"+rangeQuery(t0, t0+time.Hour.Milliseconds()), nil, nil)},
		{"telemetry-aggregate", e.must(http.StatusOK, "GET", base+"/telemetry?keys=temperature&agg=avg&interval=5m&"+rangeQuery(t0, t0+10*minute), nil, nil)},
		{"attributes-get", e.must(http.StatusOK, "GET", base+"/attributes", nil, nil)},
		{"attributes-set", e.must(http.StatusOK, "PUT", base+"/attributes/server", `{"site":"hall 3"}`, nil)},
		{"attributes-delete", e.must(http.StatusOK, "DELETE", base+"/attributes/server?keys=site,nope", nil, nil)},
		{"rpc-result", e.must(http.StatusOK, "POST", base+"/rpc", `{"method":"setGpio","params":{"gpio":4}}`, nil)},
		{"rpc-oneway", e.must(http.StatusAccepted, "POST", base+"/rpc", `{"method":"reboot","oneway":true}`, nil)},
		{"error-device-offline", e.do(registry.RoleOperator, "POST", "/api/devices/"+off.ID+"/rpc", `{"method":"setGpio"}`)},
		{"error-rpc-timeout", e.do(registry.RoleOperator, "POST", base+"/rpc", `{"method":"silent","timeout":"50ms"}`)},
		{"error-telemetry-query", e.do(registry.RoleViewer, "GET", base+"/telemetry?agg=avg", nil)},
		{"error-telemetry-disabled", newEnvWithoutDevices(t).do(registry.RoleViewer, "GET", base+"/state", nil)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkGolden(t, c.name, c.r) })
	}
}
