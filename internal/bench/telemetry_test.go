package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/apiclient"
)

func TestTelemetryAddsUp(t *testing.T) {
	srv, base := startServer(t)
	client, err := apiclient.New(base, testAdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fx, err := CreateFixture(ctx, client, "bench-telemetry")
	if err != nil {
		t.Fatal(err)
	}
	for _, qos := range []int{1, 0} {
		t.Run(fmt.Sprintf("qos=%d", qos), func(t *testing.T) {
			const n = 200
			var progress bytes.Buffer
			rep, err := RunTelemetry(ctx, TelemetryConfig{
				Target: Target{MQTTAddr: srv.MQTTAddr().String(), MetricsURL: base, ProfileKey: fx.Key, ProfileSecret: fx.Secret, Sources: 4, NamePrefix: fmt.Sprintf("tel%d-", qos), Progress: &progress},
				// 5 messages/s per device: under the server's default
				// per-device limit of 10/s.
				Devices:     n,
				Rate:        1000,
				Duration:    2 * time.Second,
				QoS:         qos,
				Concurrency: 16,
				Settle:      100 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			t.Logf("report:\n%s", text.String())
			if !rep.OK() || rep.Provisioned != n || rep.Connected != n || len(rep.Errors) != 0 || rep.DevicesEnded != 0 {
				t.Fatalf("provisioned %d, connected %d, ended %d, errors %v %v", rep.Provisioned, rep.Connected, rep.DevicesEnded, rep.Errors, rep.ErrorExamples)
			}
			// 1,000/s for 2 s, give or take the last round's timing.
			if rep.Sent < 1900 || rep.Sent > 2100 || rep.SentValues != rep.Sent*5 {
				t.Errorf("sent %d messages (%d values), want about 2,000", rep.Sent, rep.SentValues)
			}
			if qos == 1 && (rep.Acked != rep.Sent || rep.AckedValues != rep.Acked*5) {
				t.Errorf("acked %d (%d values) of %d sent", rep.Acked, rep.AckedValues, rep.Sent)
			}
			if qos == 0 && rep.Acked != 0 {
				t.Errorf("acked %d at QoS 0", rep.Acked)
			}
			s := rep.Server
			if s == nil || s.Error != "" {
				t.Fatalf("server figures: %+v", s)
			}
			if s.StoredValues != float64(rep.SentValues) || s.StoredMessages != float64(rep.Sent) {
				t.Errorf("stored %v messages, %v values; sent %d, %d", s.StoredMessages, s.StoredValues, rep.Sent, rep.SentValues)
			}
			if qos == 1 && s.StoredValues != float64(rep.Acked*5) {
				t.Errorf("stored %v values, want acked × 5 = %d", s.StoredValues, rep.Acked*5)
			}
			if s.Messages["accepted"] != float64(rep.Sent) || len(s.Messages) != 1 || s.CommitFailures != 0 {
				t.Errorf("messages by result %v, commit failures %v", s.Messages, s.CommitFailures)
			}
			if s.ConnectedDevices != n || s.RSSBeforeMiB <= 0 || s.RSSConnectedMiB <= 0 || s.StoredValuesPerSecond <= 0 {
				t.Errorf("server figures: %+v", s)
			}
			for _, want := range []string{"provisioning 200 devices", "200/200 devices", "200/200 connected", "publishing 1000 messages/s"} {
				if !strings.Contains(progress.String(), want) {
					t.Errorf("progress lacks %q:\n%s", want, progress.String())
				}
			}
			for _, want := range []string{"200 provisioned", "200 connected", "KiB per connection", "errors:    none"} {
				if !strings.Contains(text.String(), want) {
					t.Errorf("text report lacks %q", want)
				}
			}
			var js bytes.Buffer
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var back TelemetryReport
			if err := json.Unmarshal(js.Bytes(), &back); err != nil {
				t.Fatalf("JSON report does not parse: %v\n%s", err, js.String())
			}
			if back.Sent != rep.Sent || back.Server == nil || back.Server.StoredValues != s.StoredValues || back.QoS != qos {
				t.Errorf("JSON report: %s", js.String())
			}
		})
	}
}

func TestTelemetryAgainstClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const n = 30
	rep, err := RunTelemetry(context.Background(), TelemetryConfig{Target: Target{MQTTAddr: addr, ProfileKey: "k", ProfileSecret: "s", Timeout: 2 * time.Second}, Devices: n, Rate: 100, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Provisioned != 0 || rep.Connected != 0 || rep.Errors[KindConnect] != n || rep.Sent != 0 {
		t.Fatalf("report: %+v", rep)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "connect") || !strings.Contains(text.String(), "0 provisioned") {
		t.Errorf("report:\n%s", text.String())
	}
}

func TestTelemetryValidate(t *testing.T) {
	for _, c := range []TelemetryConfig{
		{Target: Target{MQTTAddr: "127.0.0.1:1"}},
		{Target: Target{MQTTAddr: "nowhere", ProfileKey: "k", ProfileSecret: "s"}},
		{Target: Target{MQTTAddr: "127.0.0.1:1", ProfileKey: "k", ProfileSecret: "s"}, QoS: 2},
		{Target: Target{MQTTAddr: "127.0.0.1:1", ProfileKey: "k", ProfileSecret: "s"}, Rate: -1},
		{Target: Target{MQTTAddr: "127.0.0.1:1", ProfileKey: "k", ProfileSecret: "s"}, Window: 70000},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
	c := TelemetryConfig{Target: Target{MQTTAddr: "127.0.0.1:1", ProfileKey: "k", ProfileSecret: "s"}}
	if err := c.Validate(); err != nil || c.Devices != DefaultTelemetryDevices || c.Duration != DefaultTelemetryDuration || c.Window != DefaultWindow {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestTelemetryPayloads(t *testing.T) {
	for _, p := range telemetryPayloads {
		b := bytes.Clone(p)
		putDigits(b[tsAt:tsAt+tsDigits], 1764000000123)
		var m struct {
			TS     int64              `json:"ts"`
			Values map[string]float64 `json:"values"`
		}
		if len(b) != 100 || json.Unmarshal(b, &m) != nil || m.TS != 1764000000123 || len(m.Values) != telemetryValues {
			t.Errorf("payload %s: %+v", b, m)
		}
	}
}
