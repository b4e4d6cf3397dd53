package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/bench"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/server"
)

const benchTestKey = "zt_cli_bench_admin_key_0123456789abcdef"

// startBenchServer starts a full node (MQTT included) on ephemeral ports.
func startBenchServer(t *testing.T) (httpURL, mqttAddr string) {
	t.Helper()
	httpURL, mqttAddr, _ = startBenchServerWith(t, false)
	return httpURL, mqttAddr
}

// startBenchServerWith is startBenchServer, with the MQTTS listener (its
// address the third result) when mqtts.
func startBenchServerWith(t *testing.T, mqtts bool) (httpURL, mqttAddr, mqttsAddr string) {
	t.Helper()
	t.Setenv("ZEROTOUCH_API_KEY", "")
	t.Setenv("ZEROTOUCH_SERVER", "")
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTP, cfg.MQTT = "127.0.0.1:0", "127.0.0.1:0"
	cfg.HTTPS, cfg.MQTTS = config.Off, config.Off
	if mqtts {
		cfg.MQTTS = "127.0.0.1:0"
	}
	cfg.AdminKey = benchTestKey
	lenient := &provision.FailureLimiter{Burst: 1 << 20, Leak: time.Second, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 16}
	srv, err := server.Start(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Banner: io.Discard, Limiter: lenient})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	if mqtts {
		mqttsAddr = srv.MQTTSAddr().String()
	}
	return "http://" + srv.HTTPAddr().String(), srv.MQTTAddr().String(), mqttsAddr
}

func TestBenchProvision(t *testing.T) {
	base, mqtt := startBenchServer(t)
	chart := filepath.Join(t.TempDir(), "storm.svg")
	r := execute("bench", "provision", "--http", base, "--mqtt", mqtt, "--api-key", benchTestKey,
		"-n", "50", "-c", "8", "--sources", "2", "-o", "json", "--chart", chart)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if rep.Succeeded != 50 || rep.Failed != 0 {
		t.Errorf("report: %+v", rep)
	}
	for _, want := range []string{"created temporary profile", "50/50 devices", "deleted 50 devices"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	f, err := os.Open(chart)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var svg struct {
		XMLName xml.Name
	}
	if err := xml.NewDecoder(f).Decode(&svg); err != nil || svg.XMLName.Local != "svg" {
		t.Errorf("chart: %v %v", svg.XMLName, err)
	}
}

func TestBenchProvisionDPS(t *testing.T) {
	base, _, mqtts := startBenchServerWith(t, true)
	r := execute("bench", "provision", "--dialect", "azure-dps", "--http", base, "--mqtts", mqtts, "--api-key", benchTestKey,
		"-n", "50", "-c", "25", "--sources", "2", "--dps-poll-now", "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if rep.Succeeded != 50 || rep.Failed != 0 || rep.Dialect != "azure-dps" || rep.Credentials != "symmetric-key" || rep.DPSPoll != "at once" || rep.Target != mqtts {
		t.Errorf("report: %+v", rep)
	}
	for _, want := range []string{"created temporary enrollment group bench-", "50/50 devices", "deleted 50 devices and enrollment group"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}

	// An existing group (--id-scope, --group-key), no API key: the CA
	// chain still comes from the server, and the retry-after is waited.
	c, err := apiclient.New(base, benchTestKey)
	if err != nil {
		t.Fatal(err)
	}
	fx, err := bench.CreateDPSFixture(t.Context(), c, "cli-group", "cli-")
	if err != nil {
		t.Fatal(err)
	}
	r = execute("bench", "provision", "--dialect", "azure-dps", "--http", base, "--mqtts", mqtts, "--id-scope", fx.IDScope, "--group-key", fx.GroupKey,
		"--prefix", "cli-", "-n", "20", "-c", "20")
	if r.code != 0 || !strings.Contains(r.stdout, "20 succeeded, 0 failed") || !strings.Contains(r.stdout, "after the retry-after the server gave") {
		t.Fatalf("existing group: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if n, err := fx.Cleanup(t.Context(), nil); err != nil || n != 20 {
		t.Errorf("cleanup of the existing group: %d devices, %v", n, err)
	}
}

func TestBenchProvisionFailures(t *testing.T) {
	t.Setenv("ZEROTOUCH_API_KEY", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	caCert, caKey := writeTestCA(t, dir, "ca")
	_, otherKey := writeTestCA(t, dir, "other")
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout (the report) or stderr
	}{
		{[]string{"--dialect", "aws-fleet", "--profile-key", "k", "--profile-secret", "s"}, exitUsage, `want "thingsboard" or "azure-dps"`},
		{[]string{"--dialect", "azure-dps", "--credentials", "token", "--id-scope", "x", "--group-key", "k"}, exitUsage, `supports "symmetric-key" or "x509"`},
		{[]string{"--dialect", "azure-dps", "--credentials", "x509", "--id-scope", "x", "--ca-cert", "c.pem"}, exitUsage, "all of --id-scope, --ca-cert and --ca-key"},
		{[]string{"--dialect", "azure-dps", "--credentials", "x509", "--ca-cert", "c.pem", "--ca-key", "k.pem"}, exitUsage, "all of --id-scope, --ca-cert and --ca-key"},
		{[]string{"--dialect", "azure-dps", "--credentials", "x509", "--id-scope", "x", "--ca-cert", missing, "--ca-key", missing}, exitUsage, "--ca-cert: open"},
		{[]string{"--dialect", "azure-dps", "--credentials", "x509", "--id-scope", "x", "--ca-cert", caCert, "--ca-key", otherKey}, exitUsage, "private key does not match public key"},
		{[]string{"--dialect", "azure-dps", "--credentials", "x509", "--id-scope", "x", "--group-key", "k"}, exitUsage, "--group-key is for symmetric-key credentials"},
		{[]string{"--dialect", "azure-dps", "--ca-cert", caCert, "--ca-key", caKey, "--id-scope", "x", "--group-key", "k"}, exitUsage, "--ca-cert and --ca-key are for --dialect azure-dps --credentials x509"},
		{[]string{"--dialect", "azure-dps", "--credentials", "x509"}, exitUsage, "no enrollment group: give --id-scope, --ca-cert and --ca-key, or an operator API key"},
		{[]string{"--dialect", "azure-dps", "--credentials", "x509", "--keep-connected", "--registration-only"}, exitUsage, "do not connect to their hub"},
		{[]string{"--dialect", "azure-dps", "--id-scope", "x"}, exitUsage, "both --id-scope and --group-key"},
		{[]string{"--dialect", "azure-dps"}, exitUsage, "no enrollment group"},
		{[]string{"--dialect", "azure-dps", "--keep-connected", "--registration-only", "--id-scope", "x", "--group-key", "k"}, exitUsage, "do not connect to their hub"},
		{[]string{"--credentials", "x509", "--profile-key", "k", "--profile-secret", "s"}, exitUsage, `supports only "token"`},
		{[]string{"--profile-key", "k"}, exitUsage, "both --profile-key and --profile-secret"},
		{nil, exitUsage, "no profile"},
		{[]string{"--http", "ftp://x"}, exitUsage, "want http://host:port"},
		{[]string{"--mqtt", closed, "--http", "http://" + closed, "--profile-key", "k", "--profile-secret", "s", "-n", "20"}, exitFailure, "0 succeeded, 20 failed"},
	} {
		r := execute(append([]string{"bench", "provision"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.out) {
			t.Errorf("%v: exit %d, want %d with %q\nstdout: %s\nstderr: %s", tc.args, r.code, tc.code, tc.out, r.stdout, r.stderr)
		}
	}
}

// writeTestCA writes a new CA's certificate and key as PEM files
// name.pem and name.key in dir.
func writeTestCA(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	ca, err := bench.NewDeviceCA(name)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, []byte(ca.PEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestBenchProvisionDPSX509: X.509 attestation, with a temporary group of
// an in-memory CA, then with an existing group whose CA is given as files.
func TestBenchProvisionDPSX509(t *testing.T) {
	base, _, mqtts := startBenchServerWith(t, true)
	r := execute("bench", "provision", "--dialect", "azure-dps", "--credentials", "x509", "--http", base, "--mqtts", mqtts, "--api-key", benchTestKey,
		"-n", "30", "-c", "10", "--sources", "2", "--dps-poll-now", "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if rep.Succeeded != 30 || rep.Failed != 0 || rep.Credentials != "x509" || rep.CredentialsSeconds <= 0 || len(rep.Latency) != 7 {
		t.Errorf("report: %+v", rep)
	}
	for _, want := range []string{"created temporary enrollment group bench-", "30/30 devices", "deleted 30 devices and enrollment group"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}

	// An existing verified group of a CA given as files, no API key.
	c, err := apiclient.New(base, benchTestKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey := writeTestCA(t, t.TempDir(), "cli-ca")
	certPEM, _ := os.ReadFile(caCert)
	if _, err := c.CreateEnrollmentGroup(t.Context(), api.CreateEnrollmentGroupRequest{ID: "cli-x509", Attestation: registry.GroupAttestation{Type: registry.AttestationX509,
		X509CA: &registry.X509CAAttestation{CACertificatePEM: string(certPEM), Verified: true}}}); err != nil {
		t.Fatal(err)
	}
	scope, err := c.IDScope(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r = execute("bench", "provision", "--dialect", "azure-dps", "--credentials", "x509", "--http", base, "--mqtts", mqtts,
		"--id-scope", scope, "--ca-cert", caCert, "--ca-key", caKey, "--prefix", "cli-x-", "-n", "10", "-c", "10", "--dps-poll-now", "--registration-only")
	if r.code != 0 || !strings.Contains(r.stdout, "10 succeeded, 0 failed") || !strings.Contains(r.stdout, "x509 credentials") {
		t.Fatalf("existing group: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

func TestBenchTelemetry(t *testing.T) {
	base, mqtt := startBenchServer(t)
	r := execute("bench", "telemetry", "--http", base, "--mqtt", mqtt, "--api-key", benchTestKey,
		"-n", "50", "--rate", "200", "--duration", "1s", "--qos", "1", "--sources", "2", "--settle", "100ms", "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var rep bench.TelemetryReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if rep.Connected != 50 || rep.Sent == 0 || rep.Acked != rep.Sent || rep.Server == nil || rep.Server.StoredValues != float64(rep.Acked*5) {
		t.Errorf("report: %s", r.stdout)
	}
	for _, want := range []string{"created temporary profile", "50/50 connected", "deleted 50 devices"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestBenchTelemetryFailures(t *testing.T) {
	t.Setenv("ZEROTOUCH_API_KEY", "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--qos", "2", "--profile-key", "k", "--profile-secret", "s"}, exitUsage, "want 0 or 1"},
		{[]string{"--profile-key", "k"}, exitUsage, "both --profile-key and --profile-secret"},
		{nil, exitUsage, "no profile"},
		{[]string{"--mqtt", closed, "--http", "http://" + closed, "--profile-key", "k", "--profile-secret", "s", "-n", "10"}, exitFailure, "0 provisioned"},
	} {
		r := execute(append([]string{"bench", "telemetry"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.out) {
			t.Errorf("%v: exit %d, want %d with %q\nstdout: %s\nstderr: %s", tc.args, r.code, tc.code, tc.out, r.stdout, r.stderr)
		}
	}
}
