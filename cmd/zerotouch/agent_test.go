package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/server"
)

func TestDeviceRunUsage(t *testing.T) {
	dir := t.TempDir()
	azure := filepath.Join(dir, "azure.yaml")
	os.WriteFile(azure, []byte("server: h:8883\ndialect: azure-dps\nprovision: {key: k, secret: s}\nstateFile: s.json\n"), 0o600)
	renewal := filepath.Join(dir, "renewal.yaml")
	os.WriteFile(renewal, []byte("server: h:8883\nprovision: {key: k, secret: s}\ndevice: d\nstateFile: s.json\nrenewal: {renewAt: 2}\n"), 0o600)
	aws := filepath.Join(dir, "aws.yaml")
	os.WriteFile(aws, []byte("server: h:8883\ndialect: aws-fleet\nprovision: {key: k, secret: s}\nstateFile: s.json\n"), 0o600)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"help", []string{"device", "run", "--help"}, 0, "reprovisionPolicy", ""},
		{"no config", []string{"device", "run"}, exitUsage, "", "--config is required"},
		{"missing file", []string{"device", "run", "--config", filepath.Join(dir, "nope.yaml")}, exitUsage, "", "no such file"},
		{"help azure", []string{"device", "run", "--help"}, 0, "idScope", ""},
		{"help renewal", []string{"device", "run", "--help"}, 0, "/.well-known/est/simplereenroll", ""},
		{"bad renewAt", []string{"device", "run", "--config", renewal}, exitUsage, "", "renewal.renewAt"},
		{"azure without dps", []string{"device", "run", "--config", azure}, exitUsage, "", "dps: required"},
		{"azure with thingsboard fields", []string{"device", "run", "--config", azure}, exitUsage, "", "server: not used by dialect azure-dps"},
		{"other dialect", []string{"device", "run", "--config", aws}, exitUsage, "", `dialect "aws-fleet" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := execute(tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestDeviceRunOnce runs the agent from its command line against a real
// node: it provisions, sends one message, and prints nothing on stdout.
func TestDeviceRunOnce(t *testing.T) {
	const adminKey = "cmd-agent-test-admin-key-0123456789"
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTP, cfg.MQTT, cfg.HTTPS, cfg.MQTTS = "127.0.0.1:0", "127.0.0.1:0", "off", "off"
	cfg.AdminKey = adminKey
	srv, err := server.Start(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Banner: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	body, _ := json.Marshal(map[string]any{"name": "agents", "strategy": "allow-create", "defaultCredentialsType": "ACCESS_TOKEN", "reprovisionPolicy": "never"})
	req, _ := http.NewRequest("POST", "http://"+srv.HTTPAddr().String()+"/api/profiles", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Key    string `json:"provisionDeviceKey"`
		Secret string `json:"provisionDeviceSecret"`
	}
	if err := jsonDecodeBody(resp, &p); err != nil || p.Key == "" {
		t.Fatalf("profile: %v %+v", err, p)
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.yaml")
	state := filepath.Join(dir, "state.json")
	yaml := fmt.Sprintf("server: %s\nprovision: {key: %q, secret: %q}\ndevice: cli-1\nstateFile: %s\n"+
		"telemetry: {source: command, command: \"echo '{\\\"ok\\\":1}'\"}\n", srv.MQTTAddr(), p.Key, p.Secret, state)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		r := execute("device", "run", "--config", conf, "--once")
		if r.code != 0 || r.stdout != "" {
			t.Fatalf("run %d: exit %d, stdout %q\nstderr: %s", run, r.code, r.stdout, r.stderr)
		}
		provisioned := strings.Contains(r.stderr, "msg=provisioned")
		if provisioned != (run == 1) {
			t.Errorf("run %d: provisioned=%v\n%s", run, provisioned, r.stderr)
		}
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v", err)
	}
}

func jsonDecodeBody(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestDeviceRunAzureOnce runs the agent as an Azure device from its
// command line: it registers through DPS, sends one message, and the
// second run uses the state file.
func TestDeviceRunAzureOnce(t *testing.T) {
	const adminKey = "cmd-agent-test-admin-key-0123456789"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTP, cfg.MQTT, cfg.HTTPS, cfg.MQTTS = "127.0.0.1:0", "off", "off", fmt.Sprintf("127.0.0.1:%d", port)
	cfg.HubName = fmt.Sprintf("localhost:%d", port)
	cfg.AdminKey = adminKey
	srv, err := server.Start(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Banner: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	call := func(method, path string, body any, out any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, "http://"+srv.HTTPAddr().String()+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: HTTP %d", method, path, resp.StatusCode)
		}
		if out == nil {
			resp.Body.Close()
			return
		}
		if err := jsonDecodeBody(resp, out); err != nil {
			t.Fatal(err)
		}
	}
	var enr struct {
		Attestation struct {
			SymmetricKey struct {
				PrimaryKey string `json:"primaryKey"`
			} `json:"symmetricKey"`
		} `json:"attestation"`
	}
	call("POST", "/api/enrollments", map[string]any{"registrationId": "cli-az-1", "attestation": map[string]any{"type": "symmetricKey"}}, &enr)
	var scope struct {
		IDScope string `json:"idScope"`
	}
	call("GET", "/api/idscope", nil, &scope)
	resp, err := http.Get("http://" + srv.HTTPAddr().String() + "/ca/chain.pem")
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	dir := t.TempDir()
	caFile, conf, state := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "agent.yaml"), filepath.Join(dir, "state.json")
	os.WriteFile(caFile, chain, 0o600)
	yaml := fmt.Sprintf("dialect: azure-dps\ndps: {host: %q, idScope: %q, registrationId: cli-az-1, symmetricKey: %q}\n"+
		"caFile: %s\nstateFile: %s\ntelemetry: {source: command, command: \"echo '{\\\"ok\\\":1}'\"}\n",
		cfg.HubName, scope.IDScope, enr.Attestation.SymmetricKey.PrimaryKey, caFile, state)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		r := execute("device", "run", "--config", conf, "--once")
		if r.code != 0 || r.stdout != "" {
			t.Fatalf("run %d: exit %d, stdout %q\nstderr: %s", run, r.code, r.stdout, r.stderr)
		}
		provisioned := strings.Contains(r.stderr, "msg=provisioned")
		if provisioned != (run == 1) {
			t.Errorf("run %d: provisioned=%v\n%s", run, provisioned, r.stderr)
		}
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v", err)
	}
}
