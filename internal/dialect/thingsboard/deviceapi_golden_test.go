package thingsboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// deviceAPIGolden is where the device API's golden files live: for each
// decoder, <decoder>-<case>.request.json is a payload exactly as a device
// sends it, and <decoder>-<case>.answer.json what the decoder makes of it;
// for each encoder, encode-<case>.answer.json is its output for an input
// defined in TestDeviceAPIEncodeGolden. Run with -update to rewrite the
// answers, and review the diff.
const deviceAPIGolden = "testdata/deviceapi"

// goldenValue shows a decoded value with its kind.
type goldenValue struct {
	Key   string          `json:"key"`
	TS    *int64          `json:"ts,omitempty"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

func goldenOf(t *testing.T, key string, ts *int64, v telemetry.Value) goldenValue {
	t.Helper()
	raw, err := v.MarshalJSON()
	if err != nil {
		t.Fatalf("decoded value %+v cannot be marshalled: %v", v, err)
	}
	return goldenValue{Key: key, TS: ts, Type: v.Kind.String(), Value: raw}
}

// goldenError shows a refusal.
type goldenError struct {
	Error       string `json:"error"`
	TooManyKeys bool   `json:"tooManyKeys,omitempty"`
}

func goldenRefusal(t *testing.T, err error) goldenError {
	t.Helper()
	if !errors.Is(err, ErrBadPayload) {
		t.Fatalf("error %v does not wrap ErrBadPayload", err)
	}
	return goldenError{Error: err.Error(), TooManyKeys: errors.Is(err, ErrTooManyKeys)}
}

// decodeGolden runs the decoder the file name starts with.
func decodeGolden(t *testing.T, name string, payload []byte) any {
	t.Helper()
	switch {
	case strings.HasPrefix(name, "telemetry-"):
		samples, err := DecodeTelemetry(payload, testNow, DeviceLimits{})
		if err != nil {
			return goldenRefusal(t, err)
		}
		out := struct {
			Samples []goldenValue `json:"samples"`
		}{Samples: []goldenValue{}}
		for _, s := range samples {
			out.Samples = append(out.Samples, goldenOf(t, s.Key, &s.TS, s.Value))
		}
		return out
	case strings.HasPrefix(name, "attributes-"):
		attrs, err := DecodeAttributes(payload, DeviceLimits{})
		if err != nil {
			return goldenRefusal(t, err)
		}
		out := struct {
			Attributes []goldenValue `json:"attributes"`
		}{Attributes: []goldenValue{}}
		for _, a := range attrs {
			out.Attributes = append(out.Attributes, goldenOf(t, a.Key, nil, a.Value))
		}
		return out
	case strings.HasPrefix(name, "attrreq-"):
		client, shared, err := DecodeAttributeRequest(payload)
		if err != nil {
			return goldenRefusal(t, err)
		}
		return struct {
			ClientKeys []string `json:"clientKeys"`
			SharedKeys []string `json:"sharedKeys"`
		}{client, shared}
	case strings.HasPrefix(name, "rpcresp-"):
		result, err := DecodeRPCResponse(payload)
		if err != nil {
			return goldenRefusal(t, err)
		}
		return struct {
			Result json.RawMessage `json:"result"`
			Empty  bool            `json:"empty,omitempty"`
		}{result, result == nil}
	}
	t.Fatalf("%s: no decoder for this name", name)
	return nil
}

// TestDeviceAPIDecodeGolden decodes every request file and compares the
// result with its answer file.
func TestDeviceAPIDecodeGolden(t *testing.T) {
	requests, _ := filepath.Glob(filepath.Join(deviceAPIGolden, "*.request.json"))
	if len(requests) < 40 {
		t.Fatalf("only %d golden requests found", len(requests))
	}
	for _, reqFile := range requests {
		name := strings.TrimSuffix(filepath.Base(reqFile), ".request.json")
		t.Run(name, func(t *testing.T) {
			payload, err := os.ReadFile(reqFile)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.MarshalIndent(decodeGolden(t, name, payload), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if _, refused := decodeGolden(t, name, payload).(goldenError); refused != strings.Contains(name, "-fail-") {
				t.Errorf("refused = %v, but the name says otherwise: %s", refused, got)
			}
			compareGolden(t, strings.TrimSuffix(reqFile, ".request.json")+".answer.json", got)
		})
	}
}

// TestDeviceAPIEncodeGolden writes every encoder's output for fixed inputs.
func TestDeviceAPIEncodeGolden(t *testing.T) {
	every := []telemetry.Attribute{
		{Key: "boolean", Value: telemetry.Bool(true)},
		{Key: "long", Value: telemetry.Long(-73)},
		{Key: "double", Value: telemetry.Double(42)},
		{Key: "fraction", Value: telemetry.Double(0.995)},
		{Key: "large", Value: telemetry.Double(1e21)},
		{Key: "small", Value: telemetry.Double(-2.5e-7)},
		{Key: "maxLong", Value: telemetry.Long(math.MaxInt64)},
		{Key: "string", Value: telemetry.String("SMART WIFI \"WATER\" SENSOR\n<é>")},
		{Key: "json", Value: jsonValue(t, `{"material":"plastic","start_temp":-10,"end_temp":40}`)},
		{Key: "array", Value: jsonValue(t, `[1,2,3]`)},
	}
	client := []telemetry.Attribute{{Key: "model", Value: telemetry.String("SMART WIFI WATER SENSOR")}, {Key: "serial_number", Value: telemetry.String("10001KA5785O")}}
	shared := []telemetry.Attribute{{Key: "pulse", Value: telemetry.Double(0.995)}}
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := map[string][]byte{
		"encode-attribute-response-both":        must(EncodeAttributeResponse(client, shared)),
		"encode-attribute-response-client-only": must(EncodeAttributeResponse(client, nil)),
		"encode-attribute-response-shared-only": must(EncodeAttributeResponse(nil, shared)),
		"encode-attribute-response-none":        must(EncodeAttributeResponse(nil, nil)),
		"encode-attribute-response-every-kind":  must(EncodeAttributeResponse(nil, every)),
		"encode-attribute-update-changed":       must(EncodeAttributeUpdate([]telemetry.Attribute{{Key: "targetTemperature", Value: telemetry.Long(26)}}, nil)),
		"encode-attribute-update-deleted":       must(EncodeAttributeUpdate(nil, []string{"oldSetting", "legacy"})),
		"encode-attribute-update-both":          must(EncodeAttributeUpdate(shared, []string{"oldSetting"})),
		"encode-attribute-update-every-kind":    must(EncodeAttributeUpdate(every, nil)),
		"encode-rpc-request":                    must(EncodeRPCRequest("setGpio", json.RawMessage(`{ "pin": 4, "value": 1 }`))),
		"encode-rpc-request-no-params":          must(EncodeRPCRequest("reboot", nil)),
		"encode-rpc-request-scalar-params":      must(EncodeRPCRequest("setBrightness", json.RawMessage(`80`))),
	}
	for name, got := range cases {
		t.Run(name, func(t *testing.T) {
			if !json.Valid(got) {
				t.Fatalf("output is not JSON: %s", got)
			}
			compareGolden(t, filepath.Join(deviceAPIGolden, name+".answer.json"), got)
		})
	}
}

// compareGolden compares got with the file, or rewrites the file with -update.
func compareGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, bytes.TrimSuffix(want, []byte("\n"))) {
		t.Errorf("output differs from %s\n got: %s\nwant: %s", file, got, want)
	}
}
