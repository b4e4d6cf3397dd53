package bench

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/server"
)

const testAdminKey = "zt_bench_test_admin_key_0123456789abcdef"

// startServer starts a full zerotouch node on ephemeral loopback ports
// (MQTTS off) and returns it with its HTTP base URL.
func startServer(t testing.TB) (*server.Server, string) {
	return startServerWith(t, false)
}

// startServerWith is startServer, with the MQTTS listener when mqtts.
func startServerWith(t testing.TB, mqtts bool) (*server.Server, string) {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTP = "127.0.0.1:0"
	cfg.MQTT = "127.0.0.1:0"
	cfg.HTTPS = config.Off
	cfg.MQTTS = config.Off
	if mqtts {
		cfg.MQTTS = "127.0.0.1:0"
	}
	cfg.AdminKey = testAdminKey
	// Refusals are not what is tested here: a limiter that lets them by.
	lenient := &provision.FailureLimiter{Burst: 1 << 20, Leak: time.Second, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 16}
	srv, err := server.Start(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Banner: io.Discard, Limiter: lenient})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return srv, "http://" + srv.HTTPAddr().String()
}

func TestStormAddsUp(t *testing.T) {
	srv, base := startServer(t)
	client, err := apiclient.New(base, testAdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fx, err := CreateFixture(ctx, client, "bench-test")
	if err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	const n = 500
	rep, err := Run(ctx, Config{
		Target:      Target{MQTTAddr: srv.MQTTAddr().String(), MetricsURL: base, ProfileKey: fx.Key, ProfileSecret: fx.Secret, Sources: 4, Progress: &progress},
		Devices:     n,
		Concurrency: 32,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Succeeded != n || rep.Failed != 0 || rep.Succeeded+rep.Failed != rep.Devices {
		t.Fatalf("succeeded %d, failed %d of %d: %v %v", rep.Succeeded, rep.Failed, rep.Devices, rep.Errors, rep.ErrorExamples)
	}
	for _, l := range rep.Latency {
		if l.Count != n || l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
			t.Errorf("latency of %s: %+v", l.Phase, l)
		}
	}
	var perSecond int
	for _, s := range rep.Timeline {
		perSecond += s.Completed + s.Failed
	}
	if perSecond != n {
		t.Errorf("timeline counts %d devices, want %d", perSecond, n)
	}
	if rep.Server == nil || rep.Server.Error != "" || rep.Server.ProvisionResults["success"] != n {
		t.Errorf("server figures: %+v", rep.Server)
	}
	if rep.Server != nil && rep.Server.DeviceMessages["accepted"] != n {
		t.Errorf("server accepted %v device messages, want %d", rep.Server.DeviceMessages, n)
	}
	if rep.Sources != 4 {
		t.Errorf("sources %d, want 4", rep.Sources)
	}
	if !strings.Contains(progress.String(), "500/500 devices") {
		t.Errorf("progress %q lacks the final line", progress.String())
	}

	// The server holds the devices, each with its token.
	page, err := client.ListDevices(ctx, apiclient.DeviceFilter{ProfileID: fx.ProfileID, Limit: registry.MaxPageSize})
	if err != nil || len(page.Items) != n {
		t.Fatalf("server lists %d devices of the profile (%v), want %d", len(page.Items), err, n)
	}

	// -o json: the same report, and it parses.
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON report does not parse: %v\n%s", err, js.String())
	}
	if back.Succeeded != n || back.Devices != n || len(back.Latency) != 6 {
		t.Errorf("JSON report: %+v", back)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"500 succeeded, 0 failed", "provision-answer", "errors:    none", "provisioning results:   success 500"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	checkSVG(t, rep)

	// Cleanup deletes the devices, then the profile.
	t.Logf("storm of %d devices: %.2f s", n, rep.DurationSeconds)
	cleanupStart := time.Now()
	deleted, err := fx.Cleanup(ctx, nil)
	t.Logf("cleanup: %v", time.Since(cleanupStart))
	if err != nil || deleted != n {
		t.Fatalf("cleanup deleted %d devices: %v", deleted, err)
	}
	if _, err := client.GetProfile(ctx, fx.ProfileID); err == nil {
		t.Error("the bench profile survived its cleanup")
	}
}

// checkSVG checks that the chart is well-formed XML with an svg root.
func checkSVG(t *testing.T, rep *Report) {
	t.Helper()
	var svg bytes.Buffer
	if err := rep.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(&svg)
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("SVG root element %q", root)
	}
}

func TestStormAgainstClosedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	const n = 50
	rep, err := Run(context.Background(), Config{Target: Target{MQTTAddr: addr, ProfileKey: "k", ProfileSecret: "s", Timeout: 2 * time.Second}, Devices: n, Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Succeeded != 0 || rep.Failed != n || rep.Errors[KindConnect] != n {
		t.Fatalf("succeeded %d, failed %d, errors %v, want %d connect errors", rep.Succeeded, rep.Failed, rep.Errors, n)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "connect") || !strings.Contains(text.String(), "0 succeeded, 50 failed") {
		t.Errorf("report:\n%s", text.String())
	}
	checkSVG(t, rep)
}

func TestStormWrongSecret(t *testing.T) {
	srv, base := startServer(t)
	client, _ := apiclient.New(base, testAdminKey)
	fx, err := CreateFixture(context.Background(), client, "bench-wrong")
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	rep, err := Run(context.Background(), Config{Target: Target{MQTTAddr: srv.MQTTAddr().String(), ProfileKey: fx.Key, ProfileSecret: "wrong"}, Devices: n, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != n || rep.Errors[KindProvision] != n {
		t.Fatalf("errors %v (%v), want %d of kind %s", rep.Errors, rep.ErrorExamples, n, KindProvision)
	}
}

func TestStormInterrupted(t *testing.T) {
	srv, base := startServer(t)
	client, _ := apiclient.New(base, testAdminKey)
	fx, err := CreateFixture(context.Background(), client, "bench-cancel")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	const n = 100_000
	// At 200 devices/s, the run is far from done when it is interrupted.
	time.AfterFunc(300*time.Millisecond, cancel)
	rep, err := Run(ctx, Config{Target: Target{MQTTAddr: srv.MQTTAddr().String(), ProfileKey: fx.Key, ProfileSecret: fx.Secret}, Devices: n, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Succeeded+rep.Failed != n || rep.Errors[KindCanceled] == 0 || rep.Succeeded == 0 {
		t.Fatalf("succeeded %d, failed %d, errors %v", rep.Succeeded, rep.Failed, rep.Errors)
	}
}

func TestValidateRefusesOtherDialects(t *testing.T) {
	dps := Target{MQTTSAddr: "127.0.0.1:1", IDScope: "0ne00000001", GroupKey: "a2V5"}
	for _, c := range []Config{
		{Target: Target{MQTTAddr: "127.0.0.1:1", ProfileKey: "k", ProfileSecret: "s"}, Dialect: "aws-fleet"},
		{Target: Target{MQTTAddr: "127.0.0.1:1", ProfileKey: "k", ProfileSecret: "s"}, Dialect: DialectAzureDPS},
		{Target: Target{MQTTSAddr: "127.0.0.1:1"}, Dialect: DialectAzureDPS},
		{Target: Target{MQTTSAddr: "nowhere", IDScope: "0ne00000001", GroupKey: "a2V5"}, Dialect: DialectAzureDPS},
		{Target: dps, Dialect: DialectAzureDPS, Credentials: CredentialsToken},
		{Target: dps, Dialect: DialectAzureDPS, KeepConnected: true, RegistrationOnly: true},
		{Target: dps, Dialect: DialectAzureDPS, Credentials: CredentialsX509}, // a group key, no CA
		{Target: Target{MQTTSAddr: "127.0.0.1:1", CA: &DeviceCA{}}, Dialect: DialectAzureDPS, Credentials: CredentialsX509},
		{Target: Target{MQTTAddr: "127.0.0.1:1", ProfileKey: "k", ProfileSecret: "s"}, Credentials: "x509"},
		{Target: Target{MQTTAddr: "nowhere", ProfileKey: "k", ProfileSecret: "s"}},
		{Target: Target{MQTTAddr: "127.0.0.1:1"}},
		{Target: Target{MQTTAddr: "127.0.0.1:1", ProfileKey: "k", ProfileSecret: "s"}, Ramp: time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}

func TestValidateDPSDefaults(t *testing.T) {
	c := Config{Target: Target{MQTTSAddr: "127.0.0.1:8883", IDScope: "0ne00000001", GroupKey: "a2V5"}, Dialect: DialectAzureDPS}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Credentials != CredentialsSymmetricKey || c.ServerName != "127.0.0.1" || c.dialAddr() != "127.0.0.1:8883" {
		t.Errorf("defaults: credentials %q, server name %q, dials %q", c.Credentials, c.ServerName, c.dialAddr())
	}
}

func TestArrival(t *testing.T) {
	// 100/s after a 2 s ramp: the ramp brings 100 devices, the 100th is
	// due at 2 s, then one every 10 ms.
	if got := arrival(100, 100, 2*time.Second); got != 2*time.Second {
		t.Errorf("arrival(100) = %v", got)
	}
	if got := arrival(150, 100, 2*time.Second); got != 2500*time.Millisecond {
		t.Errorf("arrival(150) = %v", got)
	}
	if got := arrival(25, 100, 2*time.Second); got != time.Second {
		t.Errorf("arrival(25) = %v, want 1s (a quarter of the ramp's devices by half its time)", got)
	}
	if got := arrival(10, 100, 0); got != 100*time.Millisecond {
		t.Errorf("arrival without ramp = %v", got)
	}
}

func TestSourceAddrs(t *testing.T) {
	ips, err := sourceAddrs("127.0.0.1:1883", 3)
	if err != nil || len(ips) != 3 || ips[2].String() != "127.0.0.4" {
		t.Errorf("loopback: %v %v", ips, err)
	}
	if ips, _ := sourceAddrs("192.0.2.1:1883", 3); ips != nil {
		t.Errorf("remote target got source addresses %v", ips)
	}
	if _, err := sourceAddrs("127.0.0.1:1883", 300); err == nil {
		t.Error("300 sources accepted")
	}
}

func TestStormServerDies(t *testing.T) {
	srv, base := startServer(t)
	client, _ := apiclient.New(base, testAdminKey)
	fx, err := CreateFixture(context.Background(), client, "bench-dies")
	if err != nil {
		t.Fatal(err)
	}
	// The server stops a moment into the storm: devices then fail (the
	// ones in flight closed or timed out, the later ones unable to
	// connect), and the report still adds up.
	time.AfterFunc(300*time.Millisecond, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	const n = 5000
	rep, err := Run(context.Background(), Config{
		Target:      Target{MQTTAddr: srv.MQTTAddr().String(), MetricsURL: base, ProfileKey: fx.Key, ProfileSecret: fx.Secret, Timeout: 3 * time.Second},
		Devices:     n,
		Concurrency: 16,
	})
	if err != nil {
		t.Fatal(err)
	}
	var sum int
	for _, c := range rep.Errors {
		sum += c
	}
	if rep.Succeeded == 0 || rep.Failed == 0 || rep.Succeeded+rep.Failed != n || sum != rep.Failed || rep.Errors[KindConnect] == 0 {
		t.Fatalf("succeeded %d, failed %d, errors %v", rep.Succeeded, rep.Failed, rep.Errors)
	}
	if rep.Server == nil || rep.Server.Error == "" {
		t.Errorf("server figures of a dead server: %+v", rep.Server)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Logf("report:\n%s", text.String())
}

// TestDPSStormAddsUp: Azure DPS registrations over MQTTS against a real
// node, with a temporary enrollment group; once waiting the server's
// retry-after, once polling at once. Every device is assigned, the report
// adds up, and the cleanup leaves neither devices nor the group.
func TestDPSStormAddsUp(t *testing.T) {
	srv, base := startServerWith(t, true)
	client, err := apiclient.New(base, testAdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prefix := "dps-test-"
	fx, err := CreateDPSFixture(ctx, client, prefix+"group", prefix)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	// The whole first boot waiting the retry-after; the registration alone
	// polling at once.
	for _, mode := range []struct{ pollNow, regOnly bool }{{false, false}, {true, true}} {
		pollNow := mode.pollNow
		target := Target{MQTTSAddr: srv.MQTTSAddr().String(), MetricsURL: base, Sources: 4, NamePrefix: fmt.Sprintf("%sNow-%t-", prefix, pollNow)}
		if err := fx.Apply(&target); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rep, err := Run(ctx, Config{Dialect: DialectAzureDPS, Target: target, Devices: n, Concurrency: 100, DPSPollNow: pollNow, RegistrationOnly: mode.regOnly})
		if err != nil {
			t.Fatal(err)
		}
		var text bytes.Buffer
		rep.WriteText(&text)
		t.Logf("poll now %t: %.2f s (%v)\n%s", pollNow, rep.DurationSeconds, time.Since(start), text.String())
		sum := 0
		for _, c := range rep.Errors {
			sum += c
		}
		if rep.Succeeded != n || rep.Failed != 0 || rep.Succeeded+rep.Failed != rep.Devices || sum != rep.Failed {
			t.Fatalf("succeeded %d, failed %d of %d: %v %v", rep.Succeeded, rep.Failed, rep.Devices, rep.Errors, rep.ErrorExamples)
		}
		if rep.Dialect != DialectAzureDPS || rep.Credentials != CredentialsSymmetricKey || rep.Target != srv.MQTTSAddr().String() || rep.DPSRetryAfterSeconds != 1 {
			t.Errorf("report header: %+v", rep)
		}
		var phases []Phase
		for _, l := range rep.Latency {
			phases = append(phases, l.Phase)
			if l.Count != n || l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
				t.Errorf("latency of %s: %+v", l.Phase, l)
			}
		}
		want := "[connect register assigned device-connect telemetry-ack provisioning total]"
		if mode.regOnly {
			want = "[connect register assigned total]"
		}
		if fmt.Sprint(phases) != want {
			t.Errorf("phases %v, want %s", phases, want)
		}
		if accepted := rep.Server.DeviceMessages["accepted"]; !mode.regOnly && accepted != n || mode.regOnly && accepted != 0 {
			t.Errorf("the server accepted %v device messages, registration only %t", accepted, mode.regOnly)
		}
		total := rep.Latency[len(rep.Latency)-1]
		if pollNow && rep.DPSPoll != "at once" || !pollNow && (rep.DPSPoll != "retry-after" || total.P50 < 1000) {
			t.Errorf("polling %q with a p50 of %.0f ms, poll now %t", rep.DPSPoll, total.P50, pollNow)
		}
		var perSecond int
		for _, s := range rep.Timeline {
			perSecond += s.Completed + s.Failed
		}
		if perSecond != n {
			t.Errorf("timeline counts %d devices, want %d", perSecond, n)
		}
		if rep.Server == nil || rep.Server.Error != "" || rep.Server.ProvisionResults["success"] != n {
			t.Errorf("server figures: %+v", rep.Server)
		}
		if !strings.Contains(text.String(), "200 succeeded, 0 failed") || !strings.Contains(text.String(), "polling:") {
			t.Errorf("text report:\n%s", text.String())
		}
		checkSVG(t, rep)
	}
	// The devices are the server's, named by their registration ids.
	page, err := client.ListDevices(ctx, apiclient.DeviceFilter{ProfileName: "azure-dps", NamePrefix: prefix, Limit: registry.MaxPageSize})
	if err != nil || len(page.Items) != 2*n {
		t.Fatalf("server lists %d DPS devices (%v), want %d", len(page.Items), err, 2*n)
	}
	deleted, err := fx.Cleanup(ctx, nil)
	if err != nil || deleted != 2*n {
		t.Fatalf("cleanup deleted %d devices: %v", deleted, err)
	}
	if _, err := client.GetEnrollmentGroup(ctx, fx.GroupID); err == nil {
		t.Error("the bench enrollment group survived its cleanup")
	}
}

// TestDPSStormFailures: a wrong group key is refused by the server
// (provision-failed, with DPS's 401), a server certificate the bench does
// not trust fails the handshake (connect).
func TestDPSStormFailures(t *testing.T) {
	srv, base := startServerWith(t, true)
	client, _ := apiclient.New(base, testAdminKey)
	ctx := context.Background()
	fx, err := CreateDPSFixture(ctx, client, "dps-fail-group", "dps-fail-")
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Cleanup(ctx, nil)
	const n = 20
	target := Target{MQTTSAddr: srv.MQTTSAddr().String(), NamePrefix: "dps-fail-", Timeout: 3 * time.Second}
	if err := fx.Apply(&target); err != nil {
		t.Fatal(err)
	}
	wrong := target
	wrong.GroupKey = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk="
	rep, err := Run(ctx, Config{Dialect: DialectAzureDPS, Target: wrong, Devices: n, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != n || rep.Errors[KindProvision] != n || !strings.Contains(rep.ErrorExamples[KindProvision], "401") {
		t.Fatalf("wrong key: errors %v (%v), want %d of kind %s", rep.Errors, rep.ErrorExamples, n, KindProvision)
	}
	untrusted := target
	untrusted.RootCAs = x509.NewCertPool()
	rep, err = Run(ctx, Config{Dialect: DialectAzureDPS, Target: untrusted, Devices: n, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != n || rep.Errors[KindConnect] != n || rep.Succeeded+rep.Failed != n {
		t.Fatalf("untrusted server: errors %v (%v), want %d of kind %s", rep.Errors, rep.ErrorExamples, n, KindConnect)
	}
}

var (
	dpsBenchDevices     = flag.Int("dps.devices", 10_000, "BenchmarkDPSStorm: devices per storm")
	dpsBenchConcurrency = flag.Int("dps.concurrency", 256, "BenchmarkDPSStorm: devices in flight")
	dpsBenchPollNow     = flag.Bool("dps.pollnow", true, "BenchmarkDPSStorm: poll at once instead of waiting the retry-after")
)

// BenchmarkDPSStorm runs an azure-dps storm against a node in the same
// process, so that one CPU profile holds both sides (the server's share:
// -focus on internal/hub, internal/provision, internal/store, mochi and
// crypto/tls.(*serverHandshakeState…)):
//
//	go test -run XXX -bench DPSStorm -benchtime 1x -cpuprofile /tmp/dps.prof ./internal/bench/
func BenchmarkDPSStorm(b *testing.B) {
	srv, base := startServerWith(b, true)
	client, err := apiclient.New(base, testAdminKey)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		prefix := fmt.Sprintf("dps-bench-%d-", i)
		fx, err := CreateDPSFixture(ctx, client, prefix+"group", prefix)
		if err != nil {
			b.Fatal(err)
		}
		target := Target{MQTTSAddr: srv.MQTTSAddr().String(), MetricsURL: base, NamePrefix: prefix}
		if err := fx.Apply(&target); err != nil {
			b.Fatal(err)
		}
		rep, err := Run(ctx, Config{Dialect: DialectAzureDPS, Target: target, Devices: *dpsBenchDevices, Concurrency: *dpsBenchConcurrency, DPSPollNow: *dpsBenchPollNow})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Failed > 0 {
			b.Errorf("%d devices failed: %v %v", rep.Failed, rep.Errors, rep.ErrorExamples)
		}
		b.ReportMetric(rep.DevicesPerSecond, "devices/s")
		b.ReportMetric(rep.Latency[len(rep.Latency)-1].P99, "p99-ms")
	}
}

// TestDPSX509StormAddsUp: Azure DPS registrations with X.509 attestation
// against a real node, with a temporary X.509 enrollment group of a CA the
// bench made: each device presents its own certificate, no password, and
// connects to its hub with it; once the whole first boot, once the
// registration alone. The report adds up and the cleanup leaves neither
// devices nor the group.
func TestDPSX509StormAddsUp(t *testing.T) {
	srv, base := startServerWith(t, true)
	client, err := apiclient.New(base, testAdminKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prefix := "dps-x509-"
	fx, err := CreateDPSX509Fixture(ctx, client, prefix+"group", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if fx.CA == nil || fx.GroupKey != "" {
		t.Fatalf("fixture: %+v", fx)
	}
	const n = 100
	for _, regOnly := range []bool{false, true} {
		target := Target{MQTTSAddr: srv.MQTTSAddr().String(), MetricsURL: base, Sources: 4, NamePrefix: fmt.Sprintf("%sreg-%t-", prefix, regOnly)}
		if err := fx.Apply(&target); err != nil {
			t.Fatal(err)
		}
		rep, err := Run(ctx, Config{Dialect: DialectAzureDPS, Credentials: CredentialsX509, Target: target, Devices: n, Concurrency: 50, DPSPollNow: true, RegistrationOnly: regOnly})
		if err != nil {
			t.Fatal(err)
		}
		var text bytes.Buffer
		rep.WriteText(&text)
		t.Logf("registration only %t:\n%s", regOnly, text.String())
		sum := 0
		for _, c := range rep.Errors {
			sum += c
		}
		if rep.Succeeded != n || rep.Failed != 0 || rep.Succeeded+rep.Failed != rep.Devices || sum != rep.Failed {
			t.Fatalf("succeeded %d, failed %d of %d: %v %v", rep.Succeeded, rep.Failed, rep.Devices, rep.Errors, rep.ErrorExamples)
		}
		if rep.Credentials != CredentialsX509 || rep.CredentialsSeconds <= 0 {
			t.Errorf("report header: %+v", rep)
		}
		var phases []Phase
		for _, l := range rep.Latency {
			phases = append(phases, l.Phase)
			if l.Count != n || l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
				t.Errorf("latency of %s: %+v", l.Phase, l)
			}
		}
		want := "[connect register assigned device-connect telemetry-ack provisioning total]"
		if regOnly {
			want = "[connect register assigned total]"
		}
		if fmt.Sprint(phases) != want {
			t.Errorf("phases %v, want %s", phases, want)
		}
		var perSecond int
		for _, s := range rep.Timeline {
			perSecond += s.Completed + s.Failed
		}
		if perSecond != n {
			t.Errorf("timeline counts %d devices, want %d", perSecond, n)
		}
		if rep.Server == nil || rep.Server.Error != "" || rep.Server.ProvisionResults["success"] != n {
			t.Errorf("server figures: %+v", rep.Server)
		}
		if accepted := rep.Server.DeviceMessages["accepted"]; !regOnly && accepted != n || regOnly && accepted != 0 {
			t.Errorf("the server accepted %v device messages, registration only %t", accepted, regOnly)
		}
		if !strings.Contains(text.String(), "100 succeeded, 0 failed") || !strings.Contains(text.String(), "x509 credentials") ||
			!strings.Contains(text.String(), "certificates made before the storm") {
			t.Errorf("text report:\n%s", text.String())
		}
	}
	// Each device holds an X.509 credential on the server.
	page, err := client.ListDevices(ctx, apiclient.DeviceFilter{ProfileName: "azure-dps", NamePrefix: prefix, Limit: registry.MaxPageSize})
	if err != nil || len(page.Items) != 2*n {
		t.Fatalf("server lists %d DPS devices (%v), want %d", len(page.Items), err, 2*n)
	}
	creds, err := srv.Store().ListCredentials(ctx, registry.DefaultOrgID, page.Items[0].ID)
	if err != nil || len(creds) != 1 || creds[0].Type != registry.CredentialX509 {
		t.Errorf("credentials of %s: %+v, %v", page.Items[0].Name, creds, err)
	}
	deleted, err := fx.Cleanup(ctx, nil)
	if err != nil || deleted != 2*n {
		t.Fatalf("cleanup deleted %d devices: %v", deleted, err)
	}
	if _, err := client.GetEnrollmentGroup(ctx, fx.GroupID); err == nil {
		t.Error("the bench enrollment group survived its cleanup")
	}

	// A CA the group does not know: every registration is refused.
	stranger, err := NewDeviceCA("stranger CA")
	if err != nil {
		t.Fatal(err)
	}
	target := Target{MQTTSAddr: srv.MQTTSAddr().String(), IDScope: fx.IDScope, CA: stranger, NamePrefix: prefix + "stranger-", Timeout: 3 * time.Second}
	if err := target.TrustCAChain(fx.CAChain); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, Config{Dialect: DialectAzureDPS, Credentials: CredentialsX509, Target: target, Devices: 10, Concurrency: 4, DPSPollNow: true, RegistrationOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 10 || rep.Errors[KindProvision] != 10 {
		t.Fatalf("unknown CA: errors %v (%v), want 10 of kind %s", rep.Errors, rep.ErrorExamples, KindProvision)
	}
}

func TestLoadDeviceCA(t *testing.T) {
	root, err := NewDeviceCA("root")
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(root.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	ca, err := LoadDeviceCA([]byte(root.PEM()), keyPEM)
	if err != nil || !ca.Cert.Equal(root.Cert) || len(ca.chain) != 0 {
		t.Fatalf("load: %v, chain %d", err, len(ca.chain))
	}
	leaf, err := ca.issue("dev-1")
	if err != nil || len(leaf.Certificate) != 1 {
		t.Fatalf("issue: %v", err)
	}
	c, _ := x509.ParseCertificate(leaf.Certificate[0])
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || c.Subject.CommonName != "dev-1" {
		t.Errorf("leaf %s: %v", c.Subject.CommonName, err)
	}
	other, _ := NewDeviceCA("other")
	if _, err := LoadDeviceCA([]byte(other.PEM()), keyPEM); err == nil {
		t.Error("a key of another certificate accepted")
	}
}

// An "assigned" answer that names its hub and device is no error: a nil
// error, not a nil *Error in one (which classify would dereference).
func TestDPSAssignedIsNoError(t *testing.T) {
	var a dpsAnswer
	if err := json.Unmarshal([]byte(`{"operationId":"4.a.b","status":"assigned","registrationState":{"assignedHub":"hub","deviceId":"d","status":"assigned"}}`), &a.op); err != nil {
		t.Fatal(err)
	}
	var err error = a.assigned(PhaseRegister)
	if err != nil {
		t.Fatalf("assigned = %#v, want nil", err)
	}
	a.op.RegistrationState.DeviceID = ""
	if err := a.assigned(PhaseRegister); err == nil {
		t.Fatal("an assignment without a device id was accepted")
	}
}
