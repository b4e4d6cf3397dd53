package azureiothub

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

func samplesJSON(t *testing.T, s []telemetry.Sample) string {
	t.Helper()
	m := map[string]telemetry.Value{}
	for _, x := range s {
		if x.TS != 7 {
			t.Fatalf("sample %q at %d, want the receive time 7", x.Key, x.TS)
		}
		m[x.Key] = x.Value
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{`{"power":12.5,"count":3,"on":true,"state":"run","nested":{"a":[1]},"gone":null}`,
			`{"count":3,"nested":{"a":[1]},"on":true,"power":12.5,"state":"run"}`, nil},
		{`21.5`, `{"value":21.5}`, nil},
		{`[1,2]`, `{"value":[1,2]}`, nil},
		{`plain text`, `{"message":"plain text"}`, nil},
		{"\xff\x00\x01", `{"message":"base64:/wAB"}`, nil},
		{``, `{}`, nil},
		{`{"":1}`, ``, device.ErrBadPayload},
		{`{"a":1,"b":2,"c":3}`, ``, device.ErrTooManyKeys},
	}
	for _, tc := range tests {
		max := 10
		if tc.err == device.ErrTooManyKeys {
			max = 2
		}
		got, err := DecodeMessage([]byte(tc.in), 7, max)
		if !errors.Is(err, tc.err) {
			t.Errorf("DecodeMessage(%q): err %v, want %v", tc.in, err, tc.err)
			continue
		}
		if err == nil && samplesJSON(t, got) != tc.want {
			t.Errorf("DecodeMessage(%q) = %s, want %s", tc.in, samplesJSON(t, got), tc.want)
		}
	}
}

func TestDecodeReported(t *testing.T) {
	got, err := DecodeReported([]byte(`{"firmware":"1.2.3","battery":87,"$version":4,"old":null}`), 7, 10)
	if err != nil || len(got) != 2 {
		t.Fatalf("DecodeReported = %+v, %v; want firmware and battery", got, err)
	}
	for _, in := range []string{`[1]`, `"x"`, `{"":1}`, `{`, `null`} {
		if _, err := DecodeReported([]byte(in), 7, 10); !errors.Is(err, device.ErrBadPayload) {
			t.Errorf("DecodeReported(%q): err %v, want ErrBadPayload", in, err)
		}
	}
}

func TestEncoders(t *testing.T) {
	desired := []telemetry.Attribute{{Key: "interval", Value: telemetry.Long(5), UpdatedAt: 100}, {Key: "mode", Value: telemetry.String("eco"), UpdatedAt: 300}}
	reported := []telemetry.Attribute{{Key: "firmware", Value: telemetry.String("1.2.3"), UpdatedAt: 200}}
	if got, want := string(EncodeTwin(desired, reported)), `{"desired":{"$version":300,"interval":5,"mode":"eco"},"reported":{"$version":200,"firmware":"1.2.3"}}`; got != want {
		t.Errorf("EncodeTwin = %s\nwant %s", got, want)
	}
	if got, want := string(EncodeTwin(nil, nil)), `{"desired":{"$version":1},"reported":{"$version":1}}`; got != want {
		t.Errorf("EncodeTwin(empty) = %s, want %s", got, want)
	}
	b, err := EncodeDesiredPatch(desired[:1], []string{"old"}, 400)
	if err != nil || string(b) != `{"$version":400,"interval":5,"old":null}` {
		t.Errorf("EncodeDesiredPatch = %s, %v", b, err)
	}
	for in, want := range map[string]string{`{"ok":true}`: `{"status":200,"payload":{"ok":true}}`, ``: `{"status":200,"payload":null}`, ` `: `{"status":200,"payload":null}`} {
		if got, err := EncodeMethodResult(200, []byte(in)); err != nil || string(got) != want {
			t.Errorf("EncodeMethodResult(200, %q) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := EncodeMethodResult(200, []byte("not json")); !errors.Is(err, device.ErrBadPayload) {
		t.Errorf("EncodeMethodResult(not JSON): err %v", err)
	}
}

func TestParseMethodResponse(t *testing.T) {
	for topic, want := range map[string][2]int{
		"$iothub/methods/res/200/?$rid=17": {200, 17},
		"$iothub/methods/res/500/?$rid=1":  {500, 1},
	} {
		st, id, err := parseMethodResponse(topic)
		if err != nil || st != want[0] || id != want[1] {
			t.Errorf("parseMethodResponse(%q) = %d, %d, %v", topic, st, id, err)
		}
	}
	for _, topic := range []string{"$iothub/methods/res/200", "$iothub/methods/res/abc/?$rid=1", "$iothub/methods/res/200/?$rid=x", "$iothub/methods/res/200/?rid=1", "$iothub/methods/res/-1/?$rid=1"} {
		if _, _, err := parseMethodResponse(topic); !errors.Is(err, device.ErrBadPayload) {
			t.Errorf("parseMethodResponse(%q): err %v, want ErrBadPayload", topic, err)
		}
	}
}

func FuzzDecoders(f *testing.F) {
	f.Add([]byte(`{"a":1}`), "$iothub/methods/res/200/?$rid=1")
	f.Add([]byte("\xff"), "$iothub/twin/GET/?$rid=1")
	f.Fuzz(func(t *testing.T, payload []byte, topic string) {
		if s, err := DecodeMessage(payload, 1, 1000); err == nil {
			for _, x := range s {
				if x.Value.Valid() != nil {
					t.Fatalf("DecodeMessage(%q) made an invalid value %+v", payload, x)
				}
			}
		}
		DecodeReported(payload, 1, 1000)
		if strings.HasPrefix(topic, methodsRes) {
			parseMethodResponse(topic)
		}
		requestID(topic, "")
	})
}

func TestMessageTopic(t *testing.T) {
	m := device.Message{ID: "m 1", DeviceName: "dev-1", Properties: map[string]string{"b": "x/y", "a&": "=1"}}
	want := "devices/dev-1/messages/devicebound/%24.mid=m%201&%24.to=%2Fdevices%2Fdev-1%2Fmessages%2Fdevicebound&a%26=%3D1&b=x%2Fy"
	if got := MessageTopic(m); got != want {
		t.Errorf("MessageTopic = %q\nwant %q", got, want)
	}
}
