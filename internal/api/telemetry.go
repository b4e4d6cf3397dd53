package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// DeviceState is the answer to GET /api/devices/{id}/state. Times are nil
// (null) when the event never happened.
type DeviceState struct {
	// Connected says whether the device has a live session on this node.
	Connected bool `json:"connected"`
	// Sessions is the number of its live sessions on this node.
	Sessions       int        `json:"sessions"`
	LastConnect    *time.Time `json:"lastConnect"`
	LastDisconnect *time.Time `json:"lastDisconnect"`
	// LastActivity is the last time the device sent anything.
	LastActivity *time.Time `json:"lastActivity"`
}

// LatestValues is the answer to GET /api/devices/{id}/telemetry/latest.
type LatestValues struct {
	Values []LatestValue `json:"values"`
}

// LatestValue is the latest value of one key.
type LatestValue struct {
	Key string `json:"key"`
	// TS is the value's time in Unix milliseconds; Time is the same instant.
	TS   int64     `json:"ts"`
	Time time.Time `json:"time"`
	// Type is the value's kind: boolean, long, double, string or json. It
	// tells a long from a double that happens to be whole (both are JSON
	// numbers); decoding follows it.
	Type  string          `json:"type"`
	Value telemetry.Value `json:"value"`
}

// UnmarshalJSON decodes the value with the kind Type names.
func (v *LatestValue) UnmarshalJSON(b []byte) error {
	type plain LatestValue
	if err := json.Unmarshal(b, (*plain)(v)); err != nil {
		return err
	}
	v.Value = retype(v.Type, v.Value)
	return nil
}

// TelemetrySeries is the answer to GET /api/devices/{id}/telemetry.
type TelemetrySeries struct {
	// Series has one entry per key asked for, in the order asked.
	Series []Series `json:"series"`
}

// Series is the values of one key: raw values, or with Aggregation set,
// one aggregate per interval that has values.
type Series struct {
	Key string `json:"key"`
	// Aggregation and Interval are set on an aggregate query.
	Aggregation telemetry.Aggregation `json:"aggregation,omitempty"`
	Interval    string                `json:"interval,omitempty"`
	Values      []TimeValue           `json:"values"`
}

// TimeValue is one value of a series: a raw value, or an interval's
// aggregate (then TS is the interval's start and Count the values it
// aggregated).
type TimeValue struct {
	TS    int64           `json:"ts"`
	Time  time.Time       `json:"time"`
	Type  string          `json:"type"`
	Value telemetry.Value `json:"value"`
	Count int64           `json:"count,omitempty"`
}

// UnmarshalJSON decodes the value with the kind Type names.
func (v *TimeValue) UnmarshalJSON(b []byte) error {
	type plain TimeValue
	if err := json.Unmarshal(b, (*plain)(v)); err != nil {
		return err
	}
	v.Value = retype(v.Type, v.Value)
	return nil
}

// retype gives a decoded value the kind its type names: JSON alone cannot
// tell the double 42.0 (encoded as 42) from the long 42.
func retype(typ string, v telemetry.Value) telemetry.Value {
	if typ == telemetry.KindDouble.String() && v.Kind == telemetry.KindLong {
		return telemetry.Double(float64(v.Long))
	}
	return v
}

// msTime turns Unix milliseconds into a UTC time.
func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// msTimePtr is msTime with 0 (never) as nil.
func msTimePtr(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := msTime(ms)
	return &t
}

// errTelemetryDisabled answers the device routes on a node without the
// device hub.
var errTelemetryDisabled = &httpError{http.StatusServiceUnavailable, CodeUnavailable,
	"telemetry is not enabled on this node: it does not run the device hub (MQTT listener), so it has no device state, telemetry, attributes or RPC"}

// liveDevice loads the device of the request in the key's organisation
// (404 otherwise: another organisation's device does not exist here) once
// the node is known to serve connected devices.
func (s *server) liveDevice(r *http.Request, key *registry.APIKey) (*registry.Device, error) {
	if s.devices == nil {
		return nil, errTelemetryDisabled
	}
	return s.device(r, key)
}

func (s *server) deviceState(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.liveDevice(r, key)
	if err != nil {
		return err
	}
	states, err := s.devices.States(r.Context(), []string{d.ID})
	if err != nil {
		return err
	}
	st := states[d.ID]
	writeJSON(w, http.StatusOK, DeviceState{
		Connected:      st.Connected,
		Sessions:       st.Sessions,
		LastConnect:    msTimePtr(st.LastConnect),
		LastDisconnect: msTimePtr(st.LastDisconnect),
		LastActivity:   msTimePtr(st.LastActivity),
	})
	return nil
}

func (s *server) latestTelemetry(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.liveDevice(r, key)
	if err != nil {
		return err
	}
	keys, err := queryKeys(r.URL.Query())
	if err != nil {
		return err
	}
	samples, err := s.devices.Latest(r.Context(), d.ID, keys)
	if err != nil {
		return err
	}
	out := LatestValues{Values: make([]LatestValue, len(samples))}
	for i, sm := range samples {
		out.Values[i] = LatestValue{Key: sm.Key, TS: sm.TS, Time: msTime(sm.TS), Type: sm.Value.Kind.String(), Value: sm.Value}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// defaultRange is the time range of a telemetry query that gives no start.
const defaultRange = 24 * time.Hour

// maxQueryKeys bounds the keys of one telemetry query, so that an answer
// holds at most maxQueryKeys × telemetry.MaxLimit (or MaxBuckets) values.
const maxQueryKeys = 100

func (s *server) queryTelemetry(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.liveDevice(r, key)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	tq, err := parseTelemetryQuery(q, time.Now())
	if err != nil {
		return err
	}
	ctx := r.Context()
	if len(tq.keys) == 0 {
		// No keys: every key the device has reported (it has a latest
		// value), so that a first look needs no knowledge of its keys.
		latest, err := s.devices.Latest(ctx, d.ID, nil)
		if err != nil {
			return err
		}
		for _, sm := range latest {
			tq.keys = append(tq.keys, sm.Key)
		}
		if len(tq.keys) > maxQueryKeys {
			return badRequest("the device has %d telemetry keys; name at most %d of them with keys=a,b", len(tq.keys), maxQueryKeys)
		}
	}
	out := TelemetrySeries{Series: make([]Series, len(tq.keys))}
	index := make(map[string]int, len(tq.keys))
	for i, k := range tq.keys {
		out.Series[i] = Series{Key: k, Values: []TimeValue{}}
		index[k] = i
	}
	if len(tq.keys) == 0 {
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	if tq.agg == "" {
		samples, err := s.devices.Query(ctx, telemetry.Query{
			DeviceID: d.ID, Keys: tq.keys, From: tq.from, To: tq.to, Limit: tq.limit, Order: tq.order,
		})
		if err != nil {
			return err
		}
		for _, sm := range samples {
			if i, ok := index[sm.Key]; ok {
				out.Series[i].Values = append(out.Series[i].Values,
					TimeValue{TS: sm.TS, Time: msTime(sm.TS), Type: sm.Value.Kind.String(), Value: sm.Value})
			}
		}
	} else {
		buckets, err := s.devices.Aggregate(ctx, telemetry.AggregateQuery{
			DeviceID: d.ID, Keys: tq.keys, From: tq.from, To: tq.to, Interval: tq.interval.Milliseconds(), Func: tq.agg,
		})
		if err != nil {
			return err
		}
		for i := range out.Series {
			out.Series[i].Aggregation, out.Series[i].Interval = tq.agg, tq.interval.String()
		}
		for _, b := range buckets {
			if i, ok := index[b.Key]; ok {
				out.Series[i].Values = append(out.Series[i].Values,
					TimeValue{TS: b.Start, Time: msTime(b.Start), Type: b.Value.Kind.String(), Value: b.Value, Count: b.Count})
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// telemetryQuery is a parsed GET /api/devices/{id}/telemetry.
type telemetryQuery struct {
	keys     []string
	from, to int64 // Unix milliseconds, [from, to)
	limit    int
	order    telemetry.Order
	agg      telemetry.Aggregation // "" for raw values
	interval time.Duration
}

// parseTelemetryQuery reads and checks the query parameters of a
// telemetry query, now being the default end of the range.
func parseTelemetryQuery(q url.Values, now time.Time) (telemetryQuery, error) {
	var tq telemetryQuery
	var err error
	if tq.keys, err = queryKeys(q); err != nil {
		return tq, err
	}
	if len(tq.keys) > maxQueryKeys {
		return tq, badRequest("query parameter keys: %d keys, at most %d per query", len(tq.keys), maxQueryKeys)
	}
	to := now
	if v := q.Get("to"); v != "" {
		if to, err = queryTime("to", v); err != nil {
			return tq, err
		}
	}
	from := to.Add(-defaultRange)
	switch since, f := q.Get("since"), q.Get("from"); {
	case since != "" && f != "":
		return tq, badRequest("give from or since, not both")
	case since != "":
		d, err := time.ParseDuration(since)
		if err != nil || d <= 0 {
			return tq, badRequest("query parameter since=%q: want a positive duration such as 30m, 1h or 168h", since)
		}
		from = now.Add(-d)
	case f != "":
		if from, err = queryTime("from", f); err != nil {
			return tq, err
		}
	}
	tq.from, tq.to = from.UnixMilli(), to.UnixMilli()
	if tq.from >= tq.to {
		return tq, badRequest("the time range is empty: from (%s) must be before to (%s)", msTime(tq.from).Format(time.RFC3339Nano), msTime(tq.to).Format(time.RFC3339Nano))
	}

	limit, err := queryInt(q, "limit")
	if err != nil {
		return tq, err
	}
	if limit > telemetry.MaxLimit {
		return tq, badRequest("query parameter limit=%d: at most %d values per key; narrow the time range or aggregate (agg, interval)", limit, telemetry.MaxLimit)
	}
	tq.limit = int(limit)
	switch v := q.Get("order"); v {
	case "", "desc":
		tq.order = telemetry.Descending
	case "asc":
		tq.order = telemetry.Ascending
	default:
		return tq, badRequest("query parameter order=%q: want asc or desc", v)
	}

	agg, interval := q.Get("agg"), q.Get("interval")
	switch {
	case agg == "" && interval != "":
		return tq, badRequest("interval is given without agg: add agg=min, max, avg, sum or count")
	case agg == "":
		return tq, nil
	case interval == "":
		return tq, badRequest("agg=%s needs an interval, such as interval=5m", agg)
	case q.Has("limit") || q.Has("order"):
		return tq, badRequest("limit and order apply to raw values; an aggregate query returns every interval, oldest first")
	}
	if tq.agg, err = telemetry.ParseAggregation(agg); err != nil {
		return tq, badRequest("query parameter agg: %v", err)
	}
	if tq.interval, err = time.ParseDuration(interval); err != nil || tq.interval < time.Millisecond || tq.interval%time.Millisecond != 0 {
		return tq, badRequest("query parameter interval=%q: want a whole number of milliseconds, at least 1ms, such as 1m or 1h", interval)
	}
	ms := tq.interval.Milliseconds()
	if n := (tq.to - tq.from + ms - 1) / ms; n > telemetry.MaxBuckets {
		return tq, badRequest("the range of %s at interval=%s makes %d intervals, at most %d: give a larger interval or a shorter range",
			time.Duration(tq.to-tq.from)*time.Millisecond, tq.interval, n, telemetry.MaxBuckets)
	}
	return tq, nil
}

// queryKeys reads the optional comma-separated "keys" parameter (it may
// also be repeated); empty items are dropped, duplicates kept once.
func queryKeys(q url.Values) ([]string, error) {
	var keys []string
	seen := map[string]bool{}
	for _, v := range q["keys"] {
		for k := range strings.SplitSeq(v, ",") {
			k = strings.TrimSpace(k)
			if k == "" || seen[k] {
				continue
			}
			if len(k) > telemetry.MaxKeyLength {
				return nil, badRequest("query parameter keys: key %.40q... is longer than %d bytes", k, telemetry.MaxKeyLength)
			}
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// queryTime reads a time parameter: Unix milliseconds, or RFC 3339.
func queryTime(name, v string) (time.Time, error) {
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest("query parameter %s=%q: want Unix milliseconds such as 1700000000000 or an RFC 3339 time such as 2025-01-02T15:04:05Z", name, v)
	}
	return t, nil
}

// joinKeys lists keys for an audit detail, keeping it short.
func joinKeys(keys []string) string {
	const show = 20
	if len(keys) <= show {
		return strings.Join(keys, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(keys[:show], ", "), len(keys)-show)
}
