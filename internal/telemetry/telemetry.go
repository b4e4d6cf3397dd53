// Package telemetry holds what provisioned devices report and what an
// operator sets on them: time series (one typed value per device, key and
// millisecond), their latest values, attributes in three scopes, and each
// device's connection times. It defines the Store interface every backend
// implements (the conformance suite is telemetrytest), and the Writer that
// batches ingestion so that a burst of telemetry costs one durable commit
// per batch window, not one per message.
//
// No wire format lives here: dialects turn their payloads into Samples and
// Attributes, and back.
package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kind is the type of a Value. The five kinds are ThingsBoard's data types.
type Kind uint8

// The kinds of values.
const (
	KindBool Kind = iota + 1
	KindLong
	KindDouble
	KindString
	KindJSON
)

// String names the kind as the management API does.
func (k Kind) String() string {
	switch k {
	case KindBool:
		return "boolean"
	case KindLong:
		return "long"
	case KindDouble:
		return "double"
	case KindString:
		return "string"
	case KindJSON:
		return "json"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is one typed value: a boolean, a 64-bit integer, a float, a string,
// or a JSON object or array. The zero Value is invalid (Kind 0).
type Value struct {
	Kind   Kind
	Bool   bool
	Long   int64
	Double float64
	// Text is the string of KindString, or the compact JSON text of an
	// object or array for KindJSON.
	Text string
}

// Bool returns a boolean Value.
func Bool(b bool) Value { return Value{Kind: KindBool, Bool: b} }

// Long returns an integer Value.
func Long(n int64) Value { return Value{Kind: KindLong, Long: n} }

// Double returns a floating-point Value. NaN and infinities cannot be
// stored (JSON has no such numbers); Valid reports them.
func Double(f float64) Value { return Value{Kind: KindDouble, Double: f} }

// String returns a string Value.
func String(s string) Value { return Value{Kind: KindString, Text: s} }

// JSON returns a Value holding a JSON object or array, compacted. It fails
// on anything else, including a JSON scalar (use the other constructors).
func JSON(raw []byte) (Value, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || (raw[0] != '{' && raw[0] != '[') {
		return Value{}, errors.New("a JSON value must be an object or an array")
	}
	// encoding/json lets invalid UTF-8 inside strings through.
	if !utf8.Valid(raw) {
		return Value{}, errors.New("a JSON value must be valid UTF-8")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return Value{}, fmt.Errorf("invalid JSON: %w", err)
	}
	return Value{Kind: KindJSON, Text: buf.String()}, nil
}

// ParseJSON turns one JSON value into a Value, keeping its type as
// ThingsBoard does: true/false are booleans; a number written without
// fraction or exponent that fits in 64 bits is a long, any other number a
// double; a string is a string; an object or array is JSON. null is refused
// (it is no value), and so is a number out of float64's range.
func ParseJSON(raw []byte) (Value, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return Value{}, errors.New("empty value")
	}
	switch c := raw[0]; {
	case c == 't' || c == 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return Value{}, fmt.Errorf("invalid JSON value: %w", err)
		}
		return Bool(b), nil
	case c == 'n':
		return Value{}, errors.New("null is not a value")
	case c == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Value{}, fmt.Errorf("invalid JSON string: %w", err)
		}
		return String(s), nil
	case c == '{' || c == '[':
		return JSON(raw)
	case c == '-' || (c >= '0' && c <= '9'):
		if !json.Valid(raw) {
			return Value{}, fmt.Errorf("invalid JSON number %.40q", raw)
		}
		if !bytes.ContainsAny(raw, ".eE") {
			if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
				return Long(n), nil
			}
		}
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil {
			return Value{}, fmt.Errorf("number %.40s is out of range", raw)
		}
		return Double(f), nil
	}
	return Value{}, fmt.Errorf("invalid JSON value starting with %q", raw[0])
}

// Valid reports whether v can be stored: a known kind, a finite double,
// valid UTF-8 text, and valid JSON for KindJSON.
func (v Value) Valid() error {
	switch v.Kind {
	case KindBool, KindLong:
		return nil
	case KindDouble:
		if math.IsNaN(v.Double) || math.IsInf(v.Double, 0) {
			return errors.New("a number must be finite")
		}
		return nil
	case KindString:
		if !utf8.ValidString(v.Text) {
			return errors.New("a string must be valid UTF-8")
		}
		return nil
	case KindJSON:
		if !utf8.ValidString(v.Text) || !json.Valid([]byte(v.Text)) || (v.Text[0] != '{' && v.Text[0] != '[') {
			return errors.New("a JSON value must be a valid object or array")
		}
		return nil
	}
	return fmt.Errorf("unknown value kind %d", v.Kind)
}

// Float returns the value as a number for aggregation: longs and doubles
// are numbers; nothing else is.
func (v Value) Float() (float64, bool) {
	switch v.Kind {
	case KindLong:
		return float64(v.Long), true
	case KindDouble:
		return v.Double, true
	}
	return 0, false
}

// MarshalJSON writes the value as the JSON value it stands for.
func (v Value) MarshalJSON() ([]byte, error) {
	switch v.Kind {
	case KindBool:
		return strconv.AppendBool(nil, v.Bool), nil
	case KindLong:
		return strconv.AppendInt(nil, v.Long, 10), nil
	case KindDouble:
		if math.IsNaN(v.Double) || math.IsInf(v.Double, 0) {
			return nil, errors.New("telemetry: a non-finite number has no JSON form")
		}
		return json.Marshal(v.Double)
	case KindString:
		return json.Marshal(v.Text)
	case KindJSON:
		return []byte(v.Text), nil
	}
	return nil, fmt.Errorf("telemetry: cannot encode a value of kind %d", v.Kind)
}

// UnmarshalJSON reads any JSON value but null, as ParseJSON does.
func (v *Value) UnmarshalJSON(b []byte) error {
	val, err := ParseJSON(b)
	if err != nil {
		return err
	}
	*v = val
	return nil
}

// Sample is one value of one time-series key of one device.
type Sample struct {
	DeviceID string
	Key      string
	TS       int64 // Unix milliseconds
	Value    Value
}

// Scope says who writes an attribute and who sees it.
type Scope string

// The attribute scopes, as ThingsBoard has them.
const (
	// ScopeClient attributes are reported by the device.
	ScopeClient Scope = "client"
	// ScopeShared attributes are set by the operator and pushed to the device.
	ScopeShared Scope = "shared"
	// ScopeServer attributes are set by the operator; the device never sees them.
	ScopeServer Scope = "server"
)

// ParseScope checks a scope name.
func ParseScope(s string) (Scope, error) {
	switch sc := Scope(s); sc {
	case ScopeClient, ScopeShared, ScopeServer:
		return sc, nil
	}
	return "", fmt.Errorf("unknown attribute scope %q (client, shared or server)", s)
}

// Attribute is one attribute of a device.
type Attribute struct {
	Key       string
	Value     Value
	UpdatedAt int64 // Unix milliseconds of the last write
}

// AttributeWrite is an attribute write queued in a Batch.
type AttributeWrite struct {
	DeviceID  string
	Scope     Scope
	Attribute Attribute
}

// ConnState is what is known of a device's connections. Times are Unix
// milliseconds, 0 for never. Whether it is connected right now is live
// state, kept by the node it is connected to, not stored.
type ConnState struct {
	DeviceID       string
	LastConnect    int64
	LastDisconnect int64
	// LastActivity is the last time the device sent anything (telemetry,
	// attributes, an RPC answer), on any transport.
	LastActivity int64
}

// Batch is what one ingestion commit writes.
type Batch struct {
	Samples    []Sample
	Attributes []AttributeWrite
	States     []ConnState
}

// Len is the number of records in the batch.
func (b *Batch) Len() int { return len(b.Samples) + len(b.Attributes) + len(b.States) }

// Order is the time order of query results.
type Order int

// Result orders.
const (
	Descending Order = iota // newest first (the default, as ThingsBoard)
	Ascending
)

// DefaultLimit and MaxLimit bound the values a query returns per key.
const (
	DefaultLimit = 100
	MaxLimit     = 10_000
)

// Query selects raw values of a device's keys in [From, To).
type Query struct {
	DeviceID string
	Keys     []string // at least one
	From, To int64    // Unix milliseconds; From inclusive, To exclusive
	Limit    int      // per key; 0 is DefaultLimit, at most MaxLimit
	Order    Order
}

// Aggregation is an aggregate function.
type Aggregation string

// The aggregate functions. Min, Max, Avg and Sum use numeric values (longs
// and doubles) only; Count counts every value.
const (
	Min   Aggregation = "min"
	Max   Aggregation = "max"
	Avg   Aggregation = "avg"
	Sum   Aggregation = "sum"
	Count Aggregation = "count"
)

// ParseAggregation checks an aggregation name.
func ParseAggregation(s string) (Aggregation, error) {
	switch a := Aggregation(s); a {
	case Min, Max, Avg, Sum, Count:
		return a, nil
	}
	return "", fmt.Errorf("unknown aggregation %q (min, max, avg, sum or count)", s)
}

// MaxBuckets bounds the intervals one aggregate query may span per key.
const MaxBuckets = 10_000

// AggregateQuery groups a device's values in [From, To) into intervals
// [From + i·Interval, From + (i+1)·Interval).
type AggregateQuery struct {
	DeviceID string
	Keys     []string // at least one
	From, To int64    // Unix milliseconds
	Interval int64    // milliseconds, > 0; (To-From)/Interval at most MaxBuckets
	Func     Aggregation
}

// Bucket is one interval's aggregate of one key. Intervals without a value
// to aggregate are left out.
type Bucket struct {
	Key   string
	Start int64 // the interval's start, Unix milliseconds
	// Value: for Count a long; for Avg a double; for Min, Max and Sum a
	// long when every value in the interval is a long, else a double.
	Value Value
	Count int64 // values aggregated (numeric ones for Min/Max/Avg/Sum)
}

// Errors of a Store.
var (
	// ErrInvalid: a malformed query or record (the message says which).
	ErrInvalid = errors.New("invalid")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("telemetry store is closed")
)

// Store keeps time series, latest values, attributes and connection times.
// Every method is safe for concurrent use; a write returns only once it is
// durable.
//
// Rules every implementation follows (telemetrytest checks them):
//   - Write applies a whole Batch in one transaction, or nothing of it.
//     A sample for a (device, key, TS) already stored replaces it. The
//     latest value of a key is the sample with the highest TS ever written
//     (a sample with an equal TS replaces it; an older one does not).
//     Attribute writes replace the attribute and are applied in batch
//     order. ConnState times only ever move forward: each stored time is
//     the maximum of the stored and the written one.
//   - Records are validated (non-empty device id and key, Value.Valid, a
//     known scope); an invalid one fails the whole call with ErrInvalid.
//   - Lists of keys and attributes are sorted by key, byte-wise.
//   - Retention (DeleteBefore) removes samples only, never latest values,
//     attributes or connection times.
type Store interface {
	// Write stores a batch durably, in one transaction.
	Write(ctx context.Context, b *Batch) error

	// Latest returns the latest value of each of the device's keys, or of
	// the given keys (those without a value are left out), sorted by key.
	Latest(ctx context.Context, deviceID string, keys []string) ([]Sample, error)
	// Query returns raw values, grouped by key in the order of q.Keys,
	// each key's values in q.Order, at most q.Limit per key.
	Query(ctx context.Context, q Query) ([]Sample, error)
	// Aggregate returns the non-empty buckets, by key in the order of
	// q.Keys, then by Start ascending.
	Aggregate(ctx context.Context, q AggregateQuery) ([]Bucket, error)

	// SetAttributes writes attributes of one scope durably.
	SetAttributes(ctx context.Context, deviceID string, scope Scope, attrs []Attribute) error
	// Attributes returns the device's attributes of scope, all of them or
	// those of keys that exist, sorted by key.
	Attributes(ctx context.Context, deviceID string, scope Scope, keys []string) ([]Attribute, error)
	// DeleteAttributes deletes attributes of scope and returns the keys
	// that existed, sorted.
	DeleteAttributes(ctx context.Context, deviceID string, scope Scope, keys []string) ([]string, error)

	// ConnStates returns the stored connection times of the given devices;
	// a device never seen is absent from the map.
	ConnStates(ctx context.Context, deviceIDs []string) (map[string]ConnState, error)

	// DeleteBefore deletes up to max samples (of any device) with TS <
	// cutoff and returns how many it deleted; retention calls it until it
	// returns fewer than max, so that no single transaction grows large.
	DeleteBefore(ctx context.Context, cutoff int64, max int) (int64, error)
	// DeleteDevice deletes everything stored about a device.
	DeleteDevice(ctx context.Context, deviceID string) error

	// Ping checks the store can be used.
	Ping(ctx context.Context) error
	// Close closes the store; later calls fail with ErrClosed.
	Close() error
}

// MaxKeyLength is the longest key, in characters (ThingsBoard's limit).
const MaxKeyLength = 255

// CheckKey applies the rule every telemetry and attribute key follows,
// whoever writes it: not blank, no control character, at most maxLen
// characters (MaxKeyLength when maxLen is 0).
func CheckKey(key string, maxLen int) error {
	if maxLen <= 0 {
		maxLen = MaxKeyLength
	}
	switch {
	case key == "":
		return errors.New("a key must not be empty")
	case strings.ContainsFunc(key, unicode.IsControl):
		return fmt.Errorf("key %.40q contains a control character", key)
	case strings.TrimSpace(key) == "":
		return fmt.Errorf("key %q is blank", key)
	case len(key) > maxLen && utf8.RuneCountInString(key) > maxLen:
		return fmt.Errorf("key %.40q… is longer than %d characters", key, maxLen)
	}
	return nil
}
