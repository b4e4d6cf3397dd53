package thingsboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// fuzzLimits are small, so that the fuzzer reaches them.
var fuzzLimits = DeviceLimits{MaxKeys: 16, MaxKeyLength: 24}

// addGoldenSeeds adds the golden request files whose name starts with prefix.
func addGoldenSeeds(f *testing.F, prefix string) {
	files, _ := filepath.Glob(filepath.Join(deviceAPIGolden, prefix+"*.request.json"))
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
}

// checkRefusal: a refusal wraps ErrBadPayload and says something.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrBadPayload) {
		t.Fatalf("error %v does not wrap ErrBadPayload", err)
	}
	if err.Error() == "" {
		t.Fatal("empty error message")
	}
}

// checkKey: a decoded key obeys the rules the decoder enforces.
func checkKey(t *testing.T, key string, lim DeviceLimits) {
	t.Helper()
	switch {
	case key == "", strings.TrimSpace(key) == "":
		t.Fatalf("blank key %q", key)
	case !utf8.ValidString(key):
		t.Fatalf("key %q is not UTF-8", key)
	case utf8.RuneCountInString(key) > lim.MaxKeyLength:
		t.Fatalf("key %q is longer than %d", key, lim.MaxKeyLength)
	case strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		t.Fatalf("key %q has a control character", key)
	}
}

// checkValue: a decoded value is storable and reads back the same once
// encoded.
func checkValue(t *testing.T, v telemetry.Value) {
	t.Helper()
	if err := v.Valid(); err != nil {
		t.Fatalf("invalid value %+v: %v", v, err)
	}
	b, err := EncodeAttributeUpdate([]telemetry.Attribute{{Key: "k", Value: v}}, nil)
	if err != nil {
		t.Fatalf("value %+v cannot be encoded: %v", v, err)
	}
	back, err := DecodeAttributes(b, DeviceLimits{})
	if err != nil || len(back) != 1 || !sameValue(back[0].Value, v) {
		t.Fatalf("value %+v encoded as %s reads back as %+v, %v", v, b, back, err)
	}
}

// checkAgainstEncodingJSON compares the decoded members of a flat object
// with what encoding/json and telemetry.ParseJSON make of it: the same
// keys (last duplicate wins, nulls left out), the same values.
func checkAgainstEncodingJSON(t *testing.T, payload []byte, keys []string, values []telemetry.Value) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatalf("accepted, but encoding/json refuses it: %v", err)
	}
	got := make(map[string]telemetry.Value, len(keys))
	for i, k := range keys {
		if _, dup := got[k]; dup {
			t.Fatalf("key %q decoded twice from one object", k)
		}
		got[k] = values[i]
	}
	n := 0
	for k, raw := range m {
		if string(raw) == "null" {
			if _, ok := got[k]; ok {
				t.Fatalf("null %q was decoded", k)
			}
			continue
		}
		n++
		want, err := telemetry.ParseJSON(raw)
		if err != nil {
			t.Fatalf("accepted %q=%s, which ParseJSON refuses: %v", k, raw, err)
		}
		if v, ok := got[k]; !ok || !sameValue(v, want) {
			t.Fatalf("%q decoded as %+v, ParseJSON makes %+v of %s", k, v, want, raw)
		}
	}
	if n != len(keys) {
		t.Fatalf("decoded %d keys, encoding/json finds %d", len(keys), n)
	}
}

// FuzzDecodeTelemetry: any payload is refused with ErrBadPayload or
// decodes into valid JSON's samples: non-empty keys within the limits,
// storable values, at most MaxKeys of them; a flat object decodes as
// encoding/json + telemetry.ParseJSON read it.
func FuzzDecodeTelemetry(f *testing.F) {
	addGoldenSeeds(f, "telemetry-")
	f.Add([]byte(`{"a":1,"a":null,"b":[1,{"c":"\ud800"}],"ts":1,"values":{"x":1}}`))
	f.Add([]byte(`[{"ts":"12","values":{"k":-0.0e-5}},{"ts":1.5e3,"values":{}}]`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		samples, err := DecodeTelemetry(payload, testNow, fuzzLimits)
		if err != nil {
			checkRefusal(t, err)
			// Every key counted is followed by a ':'.
			if errors.Is(err, ErrTooManyKeys) && bytes.Count(payload, []byte{':'}) <= fuzzLimits.MaxKeys {
				t.Fatalf("too many keys with only %d colons", bytes.Count(payload, []byte{':'}))
			}
			return
		}
		if !json.Valid(payload) {
			t.Fatalf("accepted invalid JSON %q", payload)
		}
		if len(samples) > fuzzLimits.MaxKeys {
			t.Fatalf("%d samples, more than MaxKeys", len(samples))
		}
		keys := make([]string, len(samples))
		values := make([]telemetry.Value, len(samples))
		for i, s := range samples {
			if s.DeviceID != "" {
				t.Fatalf("DeviceID set: %+v", s)
			}
			if s.TS < 0 {
				t.Fatalf("negative ts: %+v", s)
			}
			checkKey(t, s.Key, fuzzLimits)
			checkValue(t, s.Value)
			keys[i], values[i] = s.Key, s.Value
		}
		trimmed := bytes.TrimSpace(payload)
		if trimmed[0] == '{' && !bytes.Contains(payload, []byte(`"ts"`)) && !bytes.Contains(payload, []byte(`"values"`)) && !bytes.Contains(payload, []byte(`\`)) {
			for _, s := range samples {
				if s.TS != testNow {
					t.Fatalf("flat sample with ts %d", s.TS)
				}
			}
			checkAgainstEncodingJSON(t, payload, keys, values)
		}
	})
}

// FuzzDecodeAttributes: as FuzzDecodeTelemetry, for attributes.
func FuzzDecodeAttributes(f *testing.F) {
	addGoldenSeeds(f, "attributes-")
	addGoldenSeeds(f, "telemetry-")
	f.Add([]byte(`{"a":"x\u0000y","b":{"c":[]},"a":true,"d":1e308,"e":-9223372036854775808}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		attrs, err := DecodeAttributes(payload, fuzzLimits)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if !json.Valid(payload) {
			t.Fatalf("accepted invalid JSON %q", payload)
		}
		if len(attrs) > fuzzLimits.MaxKeys {
			t.Fatalf("%d attributes, more than MaxKeys", len(attrs))
		}
		keys := make([]string, len(attrs))
		values := make([]telemetry.Value, len(attrs))
		for i, a := range attrs {
			if a.UpdatedAt != 0 {
				t.Fatalf("UpdatedAt set: %+v", a)
			}
			checkKey(t, a.Key, fuzzLimits)
			checkValue(t, a.Value)
			keys[i], values[i] = a.Key, a.Value
		}
		checkAgainstEncodingJSON(t, payload, keys, values)
	})
}

// FuzzDecodeAttributeRequest: any payload is refused with ErrBadPayload or
// gives lists of distinct, trimmed, non-empty keys without commas.
func FuzzDecodeAttributeRequest(f *testing.F) {
	addGoldenSeeds(f, "attrreq-")
	f.Add([]byte(`{"clientKeys":["a, b",""],"sharedKeys":null,"x":[]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		client, shared, err := DecodeAttributeRequest(payload)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if len(bytes.TrimSpace(payload)) > 0 && !json.Valid(payload) {
			t.Fatalf("accepted invalid JSON %q", payload)
		}
		for _, list := range [][]string{client, shared} {
			seen := map[string]bool{}
			for _, k := range list {
				if k == "" || k != strings.TrimSpace(k) || strings.Contains(k, ",") || seen[k] || !utf8.ValidString(k) {
					t.Fatalf("bad key %q in %q", k, list)
				}
				seen[k] = true
			}
		}
	})
}

// FuzzDecodeRPCResponse: any payload is refused with ErrBadPayload, or
// gives nil (empty payload) or valid JSON: the compacted payload when it
// is JSON.
func FuzzDecodeRPCResponse(f *testing.F) {
	addGoldenSeeds(f, "rpcresp-")
	f.Add([]byte(" [1, {\"a\": \"\u2028\"}] "))
	f.Fuzz(func(t *testing.T, payload []byte) {
		result, err := DecodeRPCResponse(payload)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		trimmed := bytes.TrimSpace(payload)
		if result == nil {
			if len(trimmed) != 0 {
				t.Fatalf("nil result for %q", payload)
			}
			return
		}
		if !json.Valid(result) {
			t.Fatalf("result %q is not JSON", result)
		}
		if json.Valid(trimmed) {
			var want bytes.Buffer
			json.Compact(&want, trimmed)
			if !bytes.Equal(result, want.Bytes()) {
				t.Fatalf("result %s, want %s", result, want.Bytes())
			}
			return
		}
		var s string
		if err := json.Unmarshal(result, &s); err != nil || s != string(trimmed) {
			t.Fatalf("non-JSON %q returned as %s", payload, result)
		}
	})
}
