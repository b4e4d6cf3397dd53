package thingsboard

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

const testNow = int64(1700000000000)

func jsonValue(t *testing.T, s string) telemetry.Value {
	t.Helper()
	v, err := telemetry.JSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDecodeTelemetry(t *testing.T) {
	sample := func(key string, ts int64, v telemetry.Value) telemetry.Sample {
		return telemetry.Sample{Key: key, TS: ts, Value: v}
	}
	tests := []struct {
		name    string
		payload string
		want    []telemetry.Sample
	}{
		{"flat, every type", `{"temperature":42,"humidity":73.5,"active":false,"mode":"auto","config":{"a":1}}`, []telemetry.Sample{
			sample("temperature", testNow, telemetry.Long(42)),
			sample("humidity", testNow, telemetry.Double(73.5)),
			sample("active", testNow, telemetry.Bool(false)),
			sample("mode", testNow, telemetry.String("auto")),
			sample("config", testNow, jsonValue(t, `{"a":1}`)),
		}},
		{"ts and values", `{"ts":1451649600512,"values":{"temperature":42,"humidity":73}}`, []telemetry.Sample{
			sample("temperature", 1451649600512, telemetry.Long(42)),
			sample("humidity", 1451649600512, telemetry.Long(73)),
		}},
		{"values before ts", `{"values":{"t":1},"ts":5}`, []telemetry.Sample{sample("t", 5, telemetry.Long(1))}},
		{"array of both forms", `[{"a":1},{"ts":7,"values":{"b":true}},{"ts":8,"values":{"b":false}}]`, []telemetry.Sample{
			sample("a", testNow, telemetry.Long(1)),
			sample("b", 7, telemetry.Bool(true)),
			sample("b", 8, telemetry.Bool(false)),
		}},
		{"whitespace everywhere", " \n[ { \"ts\" : 1 , \"values\" : { \"a\" : [ 1 , { \"b\" : \" x y \" } ] } } ]\r\n", []telemetry.Sample{
			sample("a", 1, jsonValue(t, `[1,{"b":" x y "}]`)),
		}},
		{"empty object", `{}`, nil},
		{"empty array", `[]`, nil},
		{"empty values", `{"ts":1,"values":{}}`, nil},
		{"null skipped", `{"a":null,"b":1}`, []telemetry.Sample{sample("b", testNow, telemetry.Long(1))}},
		{"only nulls", `{"a":null}`, nil},
		{"duplicate key: last wins at first position", `{"a":1,"b":2,"a":3}`, []telemetry.Sample{
			sample("a", testNow, telemetry.Long(3)),
			sample("b", testNow, telemetry.Long(2)),
		}},
		{"duplicate key then null removes it", `{"a":1,"a":null,"b":2}`, []telemetry.Sample{sample("b", testNow, telemetry.Long(2))}},
		{"null then value", `{"a":null,"a":5}`, []telemetry.Sample{sample("a", testNow, telemetry.Long(5))}},
		{"ts fraction truncated", `{"ts":1451649600512.987,"values":{"a":1}}`, []telemetry.Sample{sample("a", 1451649600512, telemetry.Long(1))}},
		{"ts exponent", `{"ts":1.451649600512E12,"values":{"a":1}}`, []telemetry.Sample{sample("a", 1451649600512, telemetry.Long(1))}},
		{"ts string", `{"ts":"1451649600512","values":{"a":1}}`, []telemetry.Sample{sample("a", 1451649600512, telemetry.Long(1))}},
		{"ts zero", `{"ts":0,"values":{"a":1}}`, []telemetry.Sample{sample("a", 0, telemetry.Long(1))}},
		{"ts negative zero", `{"ts":-0.0,"values":{"a":1}}`, []telemetry.Sample{sample("a", 0, telemetry.Long(1))}},
		{"ts max", `{"ts":9223372036854775807,"values":{"a":1}}`, []telemetry.Sample{sample("a", math.MaxInt64, telemetry.Long(1))}},
		{"ts and values keys inside values", `{"ts":1,"values":{"ts":2,"values":3}}`, []telemetry.Sample{
			sample("ts", 1, telemetry.Long(2)),
			sample("values", 1, telemetry.Long(3)),
		}},
		{"numbers", `{"i":-7,"z":0,"big":9223372036854775807,"min":-9223372036854775808,"over":9223372036854775808,"exp":1e3,"frac":1.0,"neg":-0.5,"tiny":1e-400}`, []telemetry.Sample{
			sample("i", testNow, telemetry.Long(-7)),
			sample("z", testNow, telemetry.Long(0)),
			sample("big", testNow, telemetry.Long(math.MaxInt64)),
			sample("min", testNow, telemetry.Long(math.MinInt64)),
			sample("over", testNow, telemetry.Double(9223372036854775808)),
			sample("exp", testNow, telemetry.Double(1000)),
			sample("frac", testNow, telemetry.Double(1)),
			sample("neg", testNow, telemetry.Double(-0.5)),
			sample("tiny", testNow, telemetry.Double(0)),
		}},
		{"numeric strings stay strings", `{"s":"42","f":"21.5"}`, []telemetry.Sample{
			sample("s", testNow, telemetry.String("42")),
			sample("f", testNow, telemetry.String("21.5")),
		}},
		{"string escapes", `{"s":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00\ud800x"}`, []telemetry.Sample{
			sample("s", testNow, telemetry.String("a\"b\\c/d\b\f\n\r\t\u00e9\U0001F600\uFFFDx")),
		}},
		{"escaped key", `{"t\u00e9mp":1}`, []telemetry.Sample{sample("t\u00e9mp", testNow, telemetry.Long(1))}},
		{"unicode key", `{"température":1}`, []telemetry.Sample{sample("température", testNow, telemetry.Long(1))}},
		{"json array value", `{"a":[]}`, []telemetry.Sample{sample("a", testNow, jsonValue(t, `[]`))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTelemetry([]byte(tt.payload), testNow, DeviceLimits{})
			if err != nil {
				t.Fatalf("DecodeTelemetry: %v", err)
			}
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeTelemetryRefusals(t *testing.T) {
	long := strings.Repeat("k", DefaultMaxKeyLength+1)
	manyKeys := func(n int) string {
		var b strings.Builder
		b.WriteString("[")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`{"k":1}`)
		}
		b.WriteString("]")
		return b.String()
	}
	tests := []struct {
		name    string
		payload string
		lim     DeviceLimits
		wantErr string
		tooMany bool
	}{
		{"empty", ``, DeviceLimits{}, "payload is empty", false},
		{"blank", " \n\t", DeviceLimits{}, "payload is empty", false},
		{"invalid utf8", "{\"a\":\"\xff\"}", DeviceLimits{}, "not valid UTF-8", false},
		{"not json", `hello`, DeviceLimits{}, "must be a JSON object or an array", false},
		{"scalar", `42`, DeviceLimits{}, "must be a JSON object or an array", false},
		{"string", `"x"`, DeviceLimits{}, "must be a JSON object or an array", false},
		{"null", `null`, DeviceLimits{}, "must be a JSON object or an array", false},
		{"nested array", `[[{"a":1}]]`, DeviceLimits{}, "array element 0 must be an object", false},
		{"array of scalars", `[{"a":1},2]`, DeviceLimits{}, "array element 1 must be an object", false},
		{"trailing data", `{"a":1}{"b":2}`, DeviceLimits{}, "data after the JSON value", false},
		{"trailing comma object", `{"a":1,}`, DeviceLimits{}, "expected a string key", false},
		{"trailing comma array", `[{"a":1},]`, DeviceLimits{}, "invalid JSON", false},
		{"truncated", `{"a":1`, DeviceLimits{}, "payload ends", false},
		{"truncated string", `{"a":"x`, DeviceLimits{}, "payload ends", false},
		{"single quotes", `{'a':1}`, DeviceLimits{}, "expected a string key", false},
		{"unquoted key", `{a:1}`, DeviceLimits{}, "expected a string key", false},
		{"comment", `{"a":1 /* c */}`, DeviceLimits{}, "invalid JSON", false},
		{"NaN", `{"a":NaN}`, DeviceLimits{}, "expected a value", false},
		{"leading zero", `{"a":01}`, DeviceLimits{}, "invalid JSON", false},
		{"bare minus", `{"a":-}`, DeviceLimits{}, "expected a digit", false},
		{"dot without digit", `{"a":1.}`, DeviceLimits{}, "digit after the decimal point", false},
		{"bad exponent", `{"a":1e}`, DeviceLimits{}, "digit in the exponent", false},
		{"control char in string", "{\"a\":\"x\ny\"}", DeviceLimits{}, "control character must be escaped", false},
		{"bad escape", `{"a":"\x"}`, DeviceLimits{}, "escape sequence", false},
		{"short unicode escape", `{"a":"\u12"}`, DeviceLimits{}, `\u followed by four`, false},
		{"bad literal", `{"a":tru}`, DeviceLimits{}, "true?", false},
		{"number out of range", `{"a":1e400}`, DeviceLimits{}, "out of range", false},
		{"missing colon", `{"a" 1}`, DeviceLimits{}, "expected ':'", false},
		{"deep nesting", `{"a":` + strings.Repeat("[", 101) + strings.Repeat("]", 101) + `}`, DeviceLimits{}, "nests deeper than 100", false},
		{"empty key", `{"":1}`, DeviceLimits{}, "key must not be empty", false},
		{"blank key", `{"  ":1}`, DeviceLimits{}, "is blank", false},
		{"control key", `{"a\u0000b":1}`, DeviceLimits{}, "control character", false},
		{"key too long", `{"` + long + `":1}`, DeviceLimits{}, "longer than 255 characters", false},
		{"key too long, custom limit", `{"abcd":1}`, DeviceLimits{MaxKeyLength: 3}, "longer than 3 characters", false},
		{"key too long in values", `{"ts":1,"values":{"` + long + `":1}}`, DeviceLimits{}, "longer than 255", false},
		{"too many keys", `{"a":1,"b":2,"c":3}`, DeviceLimits{MaxKeys: 2}, "more than 2 keys", true},
		{"too many keys across array", manyKeys(DefaultMaxKeys + 1), DeviceLimits{}, "more than 1000 keys", true},
		{"too many keys counts nulls", `{"a":null,"b":null,"c":null}`, DeviceLimits{MaxKeys: 2}, "more than 2 keys", true},
		{"ts without values", `{"ts":1451649600512,"temperature":42}`, DeviceLimits{}, `has "ts" but no "values"`, false},
		{"values without ts", `{"values":{"temperature":42}}`, DeviceLimits{}, `has "values" (at byte 1) but no "ts"`, false},
		{"values not object", `{"ts":1,"values":[1]}`, DeviceLimits{}, `"values" must be an object`, false},
		{"values null", `{"ts":1,"values":null}`, DeviceLimits{}, `"values" must be an object`, false},
		{"values twice", `{"ts":1,"values":{},"values":{}}`, DeviceLimits{}, `"values" twice`, false},
		{"other key with ts and values", `{"ts":1,"values":{"a":1},"deviceName":"x"}`, DeviceLimits{}, `must have no other keys, found "deviceName"`, false},
		{"ts negative", `{"ts":-1,"values":{"a":1}}`, DeviceLimits{}, "negative number -1", false},
		{"ts negative fraction", `{"ts":-0.5,"values":{"a":1}}`, DeviceLimits{}, "negative", false},
		{"ts too large", `{"ts":9223372036854775808,"values":{"a":1}}`, DeviceLimits{}, "out of range", false},
		{"ts huge exponent", `{"ts":1e1000000,"values":{"a":1}}`, DeviceLimits{}, "out of range", false},
		{"ts bool", `{"ts":true,"values":{"a":1}}`, DeviceLimits{}, `"ts" must be the time in milliseconds`, false},
		{"ts null", `{"ts":null,"values":{"a":1}}`, DeviceLimits{}, `"ts" must be the time in milliseconds`, false},
		{"ts string not digits", `{"ts":"2016-01-01","values":{"a":1}}`, DeviceLimits{}, `found the string "2016-01-01"`, false},
		{"ts string negative", `{"ts":"-5","values":{"a":1}}`, DeviceLimits{}, `found the string "-5"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTelemetry([]byte(tt.payload), testNow, tt.lim)
			if err == nil {
				t.Fatalf("DecodeTelemetry accepted it: %+v", got)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want one containing %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrBadPayload) {
				t.Errorf("error %v does not wrap ErrBadPayload", err)
			}
			if errors.Is(err, ErrTooManyKeys) != tt.tooMany {
				t.Errorf("errors.Is(err, ErrTooManyKeys) = %v, want %v", !tt.tooMany, tt.tooMany)
			}
		})
	}
}

// TestDecodeTelemetryManyDuplicates exercises the map that finds duplicate
// keys in objects of more than linearMax members.
func TestDecodeTelemetryManyDuplicates(t *testing.T) {
	var b strings.Builder
	b.WriteString(`[{`)
	for i := range 40 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k` + string(rune('A'+i%20)) + `":` + string(rune('0'+i%10)))
	}
	b.WriteString(`,"kA":null},{"kB":1}]`)
	got, err := DecodeTelemetry([]byte(b.String()), testNow, DeviceLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 { // kA..kT, minus kA (null), plus kB of the second object
		t.Fatalf("got %d samples: %+v", len(got), got)
	}
	if got[0].Key != "kB" || got[0].Value != telemetry.Long(1) { // i=21 overwrote i=1
		t.Errorf("first sample %+v, want kB=1", got[0])
	}
	if last := got[len(got)-1]; last.Key != "kB" || last.Value != telemetry.Long(1) {
		t.Errorf("last sample %+v, want kB=1 of the second object", last)
	}
}

func TestDecodeTelemetryCast(t *testing.T) {
	payload := `{"l":"42","n":"-7","z":"007","d":"21.5","dot":".5","big":"99999999999999999999",` +
		`"scale":"0.12345678901234567","exp":"1e3","plus":"+1","hex":"0x1","end":"5.","two":"1.2.3","word":"auto","empty":"","minus":"-"}`
	got, err := DecodeTelemetry([]byte(payload), testNow, DeviceLimits{CastNumericStrings: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]telemetry.Value{
		"l": telemetry.Long(42), "n": telemetry.Long(-7), "z": telemetry.Long(7),
		"d": telemetry.Double(21.5), "dot": telemetry.Double(0.5),
		"big": telemetry.String("99999999999999999999"), "scale": telemetry.String("0.12345678901234567"),
		"exp": telemetry.String("1e3"), "plus": telemetry.String("+1"), "hex": telemetry.String("0x1"),
		"end": telemetry.String("5."), "two": telemetry.String("1.2.3"), "word": telemetry.String("auto"),
		"empty": telemetry.String(""), "minus": telemetry.String("-"),
	}
	if len(got) != len(want) {
		t.Fatalf("got %d samples, want %d", len(got), len(want))
	}
	for _, s := range got {
		if s.Value != want[s.Key] {
			t.Errorf("%s = %+v, want %+v", s.Key, s.Value, want[s.Key])
		}
	}
}

// TestValuesMatchParseJSON: every value decodes as telemetry.ParseJSON
// decodes it on its own.
func TestValuesMatchParseJSON(t *testing.T) {
	for _, raw := range []string{
		`0`, `-0`, `1`, `-1`, `123456789012345678`, `9223372036854775807`, `-9223372036854775808`,
		`9223372036854775808`, `-9223372036854775809`, `12345678901234567890123`, `1.5`, `-1.5e-3`, `1E+2`,
		`1e308`, `4.9e-324`, `1e-400`, `0.1`, `true`, `false`, `""`, `"x"`, `"\u0041\n"`, `"\ud800"`,
		`"\udc00\ud800"`, `"\ud83d\ude00"`, `"\ud83d\u0041"`, `"é"`, `[]`, `{}`, `[1, 2]`, `{ "a" : { "b" : [ true ] } }`,
		`["\" ]"]`,
	} {
		want, err := telemetry.ParseJSON([]byte(raw))
		if err != nil {
			t.Fatalf("ParseJSON(%s): %v", raw, err)
		}
		got, err := DecodeAttributes([]byte(`{"k":`+raw+`}`), DeviceLimits{})
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		if len(got) != 1 || got[0].Value != want {
			t.Errorf("%s: got %+v, want %+v", raw, got, want)
		}
	}
}

func TestDecodeAttributes(t *testing.T) {
	got, err := DecodeAttributes([]byte(`{"firmwareVersion":"2.1.0","ts":1,"values":{"x":1},"enabled":true,"gone":null}`), DeviceLimits{})
	if err != nil {
		t.Fatal(err)
	}
	want := []telemetry.Attribute{
		{Key: "firmwareVersion", Value: telemetry.String("2.1.0")},
		{Key: "ts", Value: telemetry.Long(1)},
		{Key: "values", Value: jsonValue(t, `{"x":1}`)},
		{Key: "enabled", Value: telemetry.Bool(true)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if got, err := DecodeAttributes([]byte(`{}`), DeviceLimits{}); err != nil || len(got) != 0 {
		t.Errorf("{} = %v, %v; want nothing", got, err)
	}
	for payload, wantErr := range map[string]string{
		`[{"a":1}]`:           "must be a JSON object",
		`"a"`:                 "must be a JSON object",
		``:                    "payload is empty",
		`{"a":1} x`:           "data after",
		`{"":1}`:              "must not be empty",
		`{"a":1,"b":2,"c":3}`: "more than 2 keys",
	} {
		_, err := DecodeAttributes([]byte(payload), DeviceLimits{MaxKeys: 2})
		if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.Is(err, ErrBadPayload) {
			t.Errorf("DecodeAttributes(%s) error %v, want one containing %q", payload, err, wantErr)
		}
	}
}

func TestDecodeAttributeRequest(t *testing.T) {
	tests := []struct {
		payload        string
		client, shared []string
	}{
		{`{"clientKeys":"attribute1,attribute2","sharedKeys":"shared1,shared2"}`, []string{"attribute1", "attribute2"}, []string{"shared1", "shared2"}},
		{`{"clientKeys":" a , ,b,a "}`, []string{"a", "b"}, nil},
		{`{"sharedKeys":"s"}`, nil, []string{"s"}},
		{`{"sharedKeys":""}`, nil, nil},
		{`{"clientKeys":"","sharedKeys":"s"}`, nil, []string{"s"}},
		{`{"clientKeys":["a","b,c"]}`, []string{"a", "b", "c"}, nil},
		{`{"clientKeys":null,"sharedKeys":"s"}`, nil, []string{"s"}},
		{`{"clientKeys":"a","clientKeys":"b"}`, []string{"b"}, nil},
		{`{}`, nil, nil},
		{``, nil, nil},
		{" \n", nil, nil},
		{`{"other":1}`, nil, nil},
	}
	for _, tt := range tests {
		client, shared, err := DecodeAttributeRequest([]byte(tt.payload))
		if err != nil {
			t.Errorf("DecodeAttributeRequest(%s): %v", tt.payload, err)
			continue
		}
		if !reflect.DeepEqual(client, tt.client) || !reflect.DeepEqual(shared, tt.shared) {
			t.Errorf("DecodeAttributeRequest(%s) = %q, %q; want %q, %q", tt.payload, client, shared, tt.client, tt.shared)
		}
	}
	for payload, wantErr := range map[string]string{
		`[1]`:                       "must be a JSON object",
		`"a,b"`:                     "must be a JSON object",
		`{"clientKeys":1}`:          `"clientKeys" must be a string`,
		`{"sharedKeys":{"a":1}}`:    `"sharedKeys" must be a string`,
		`{"clientKeys":[1]}`:        `"clientKeys" must be a string`,
		`{"clientKeys":"a"`:         "not valid JSON",
		`{"clientKeys":"a"} {}`:     "data after",
		"{\"clientKeys\":\"\xff\"}": "not valid UTF-8",
	} {
		_, _, err := DecodeAttributeRequest([]byte(payload))
		if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.Is(err, ErrBadPayload) {
			t.Errorf("DecodeAttributeRequest(%s) error %v, want one containing %q", payload, err, wantErr)
		}
	}
}

func TestParseAttributeKeys(t *testing.T) {
	for in, want := range map[string][]string{
		"":              nil,
		",,  ,":         nil,
		"a":             {"a"},
		" a , b ,a,c ,": {"a", "b", "c"},
	} {
		if got := ParseAttributeKeys(in); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseAttributeKeys(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDecodeRPCResponse(t *testing.T) {
	for payload, want := range map[string]string{
		`{"ok": true, "v": [1, 2]}`: `{"ok":true,"v":[1,2]}`,
		` 42 `:                      `42`,
		`"done"`:                    `"done"`,
		`null`:                      `null`,
		`ok`:                        `"ok"`,
		"  switched on\n":           `"switched on"`,
		`12abc`:                     `"12abc"`,
		`tru`:                       `"tru"`,
		`<b>`:                       `"<b>"`,
	} {
		got, err := DecodeRPCResponse([]byte(payload))
		if err != nil {
			t.Errorf("DecodeRPCResponse(%q): %v", payload, err)
			continue
		}
		if string(got) != want {
			t.Errorf("DecodeRPCResponse(%q) = %s, want %s", payload, got, want)
		}
	}
	for _, payload := range []string{"", "  \n"} {
		if got, err := DecodeRPCResponse([]byte(payload)); got != nil || err != nil {
			t.Errorf("DecodeRPCResponse(%q) = %s, %v; want nil, nil", payload, got, err)
		}
	}
	for payload, wantErr := range map[string]string{
		`{"ok":`:   "looks like JSON but is not valid",
		`[1,]`:     "looks like JSON but is not valid",
		`"open`:    "looks like JSON but is not valid",
		"ok\xff":   "not valid UTF-8",
		`{"a":1}x`: "looks like JSON but is not valid",
	} {
		_, err := DecodeRPCResponse([]byte(payload))
		if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.Is(err, ErrBadPayload) {
			t.Errorf("DecodeRPCResponse(%q) error %v, want one containing %q", payload, err, wantErr)
		}
	}
}

func TestParseRequestID(t *testing.T) {
	for topic, want := range map[string]int{
		AttributeRequestPrefix + "1":          1,
		AttributeRequestPrefix + "0":          0,
		AttributeRequestPrefix + "007":        7,
		AttributeRequestPrefix + "2147483647": math.MaxInt32,
	} {
		got, err := ParseRequestID(topic, AttributeRequestPrefix)
		if err != nil || got != want {
			t.Errorf("ParseRequestID(%q) = %d, %v; want %d", topic, got, err, want)
		}
	}
	for topic, wantErr := range map[string]string{
		AttributeRequestPrefix:                             "no request id",
		AttributeRequestPrefix + "-1":                      "must be a whole number",
		AttributeRequestPrefix + "+1":                      "must be a whole number",
		AttributeRequestPrefix + "1.5":                     "must be a whole number",
		AttributeRequestPrefix + "1/2":                     "must be a whole number",
		AttributeRequestPrefix + "abc":                     "must be a whole number",
		AttributeRequestPrefix + "2147483648":              "larger than 2147483647",
		AttributeRequestPrefix + "99999999999999999999999": "larger than",
		RPCResponsePrefix + "1":                            "does not start with",
	} {
		_, err := ParseRequestID(topic, AttributeRequestPrefix)
		if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.Is(err, ErrBadPayload) {
			t.Errorf("ParseRequestID(%q) error %v, want one containing %q", topic, err, wantErr)
		}
	}
}

func TestEncodeAttributeResponse(t *testing.T) {
	client := []telemetry.Attribute{{Key: "fw", Value: telemetry.String("2.1.0")}}
	shared := []telemetry.Attribute{{Key: "target", Value: telemetry.Double(24)}, {Key: "on", Value: telemetry.Bool(true)}}
	for _, tt := range []struct {
		client, shared []telemetry.Attribute
		want           string
	}{
		{client, shared, `{"client":{"fw":"2.1.0"},"shared":{"target":24.0,"on":true}}`},
		{nil, shared, `{"shared":{"target":24.0,"on":true}}`},
		{client, nil, `{"client":{"fw":"2.1.0"}}`},
		{nil, nil, `{}`},
	} {
		got, err := EncodeAttributeResponse(tt.client, tt.shared)
		if err != nil || string(got) != tt.want {
			t.Errorf("EncodeAttributeResponse = %s, %v; want %s", got, err, tt.want)
		}
	}
	for _, bad := range []telemetry.Value{telemetry.Double(math.NaN()), telemetry.Double(math.Inf(1)), {}, telemetry.String("\xff"), {Kind: telemetry.KindJSON, Text: "{"}} {
		if got, err := EncodeAttributeResponse(nil, []telemetry.Attribute{{Key: "k", Value: bad}}); err == nil {
			t.Errorf("EncodeAttributeResponse(%+v) = %s, want an error", bad, got)
		}
	}
}

func TestEncodeAttributeUpdate(t *testing.T) {
	changed := []telemetry.Attribute{{Key: "t", Value: telemetry.Long(26)}, {Key: "deleted", Value: telemetry.Bool(true)}}
	for _, tt := range []struct {
		changed []telemetry.Attribute
		deleted []string
		want    string
	}{
		{changed[:1], nil, `{"t":26}`},
		{nil, []string{"a", "b"}, `{"deleted":["a","b"]}`},
		{changed[:1], []string{"a"}, `{"t":26,"deleted":["a"]}`},
		{changed, nil, `{"t":26,"deleted":true}`},
		{changed, []string{"x"}, `{"t":26,"deleted":["x"]}`},
		{nil, nil, `{}`},
	} {
		got, err := EncodeAttributeUpdate(tt.changed, tt.deleted)
		if err != nil || string(got) != tt.want {
			t.Errorf("EncodeAttributeUpdate = %s, %v; want %s", got, err, tt.want)
		}
	}
	if got, err := EncodeAttributeUpdate([]telemetry.Attribute{{Key: "k", Value: telemetry.Double(math.NaN())}}, nil); err == nil {
		t.Errorf("EncodeAttributeUpdate(NaN) = %s, want an error", got)
	}
}

func TestEncodeRPCRequest(t *testing.T) {
	for _, tt := range []struct {
		method string
		params string
		want   string
	}{
		{"setGpio", `{"pin": 4, "value": 1}`, `{"method":"setGpio","params":{"pin":4,"value":1}}`},
		{"reboot", ``, `{"method":"reboot","params":null}`},
		{"reboot", ` null `, `{"method":"reboot","params":null}`},
		{"set", ` "on" `, `{"method":"set","params":"on"}`},
		{"set", `[1, 2]`, `{"method":"set","params":[1,2]}`},
		{"set", `{"html":"<b>&</b>"}`, `{"method":"set","params":{"html":"<b>&</b>"}}`},
		{`we"ird`, `1`, `{"method":"we\"ird","params":1}`},
	} {
		got, err := EncodeRPCRequest(tt.method, json.RawMessage(tt.params))
		if err != nil || string(got) != tt.want {
			t.Errorf("EncodeRPCRequest(%q, %s) = %s, %v; want %s", tt.method, tt.params, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ method, params string }{{"", "1"}, {"m", "{broken"}, {"m", "1 2"}, {"m", "\"\xff\""}} {
		if got, err := EncodeRPCRequest(tt.method, json.RawMessage(tt.params)); err == nil {
			t.Errorf("EncodeRPCRequest(%q, %q) = %s, want an error", tt.method, tt.params, got)
		}
	}
}

// TestEncodeValues: every kind is written so that it reads back as the
// same value.
func TestEncodeValues(t *testing.T) {
	values := []telemetry.Value{
		telemetry.Bool(true), telemetry.Bool(false), telemetry.Long(0), telemetry.Long(math.MinInt64), telemetry.Long(math.MaxInt64),
		telemetry.Double(0), telemetry.Double(math.Copysign(0, -1)), telemetry.Double(42), telemetry.Double(-1.5), telemetry.Double(1e21),
		telemetry.Double(1e-7), telemetry.Double(123456789), telemetry.Double(math.MaxFloat64), telemetry.Double(math.SmallestNonzeroFloat64),
		telemetry.String(""), telemetry.String("a\"b\\c\n\r\t\b\f\x00\x1f\x7f <>&'é😀\u2028\u2029"),
		jsonValue(t, `{"a":[1,"x"]}`), jsonValue(t, `[]`),
	}
	for _, v := range values {
		b, err := EncodeAttributeUpdate([]telemetry.Attribute{{Key: "k", Value: v}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeAttributes(b, DeviceLimits{})
		if err != nil {
			t.Errorf("%+v encoded as %s: %v", v, b, err)
			continue
		}
		if len(got) != 1 || !sameValue(got[0].Value, v) {
			t.Errorf("%+v encoded as %s reads back as %+v", v, b, got)
		}
	}
	for _, tt := range []struct {
		attrs []telemetry.Attribute
		want  string
	}{
		{[]telemetry.Attribute{{Key: "s", Value: telemetry.String("\u2028<")}, {Key: "d", Value: telemetry.Double(1e-7)}}, `{"s":"\u2028<","d":1e-7}`},
		{[]telemetry.Attribute{{Key: "bad\xff", Value: telemetry.Long(1)}}, `{"bad\ufffd":1}`},
	} {
		if got, err := EncodeAttributeUpdate(tt.attrs, nil); err != nil || string(got) != tt.want {
			t.Errorf("got %s, %v; want %s", got, err, tt.want)
		}
	}
}

// sameValue compares values, telling -0.0 from 0.0.
func sameValue(a, b telemetry.Value) bool {
	if a.Kind == telemetry.KindDouble && b.Kind == telemetry.KindDouble {
		return math.Float64bits(a.Double) == math.Float64bits(b.Double)
	}
	return a == b
}

// benchPayload is a typical ~100-byte flat telemetry message.
var benchPayload = []byte(`{"temperature":21.5,"humidity":73,"active":true,"mode":"auto","rssi":-67,"config":{"a":1,"b":[2]}}`)

func BenchmarkDecodeTelemetry(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		samples, err := DecodeTelemetry(benchPayload, testNow, DeviceLimits{})
		if err != nil || len(samples) != 6 {
			b.Fatal(samples, err)
		}
	}
}

func BenchmarkDecodeTelemetryTimestamped(b *testing.B) {
	payload := []byte(`[{"ts":1451649600512,"values":{"temperature":21.5,"humidity":73}},{"ts":1451649601512,"values":{"temperature":21.6,"humidity":72}}]`)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := DecodeTelemetry(payload, testNow, DeviceLimits{}); err != nil {
			b.Fatal(err)
		}
	}
}
