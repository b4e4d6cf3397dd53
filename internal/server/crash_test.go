package server

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinary compiles cmd/zerotouch once per test run.
var buildOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "zerotouch-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "zerotouch")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/zerotouch/zerotouch/cmd/zerotouch").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a `zerotouch serve` child process.
type process struct {
	cmd    *exec.Cmd
	node   *node
	stderr *bytes.Buffer
}

func startProcess(t *testing.T, dataDir string) *process {
	t.Helper()
	return startProcessWith(t, dataDir, "off")
}

// startProcessWith starts the server with its MQTTS listener on
// mqttsAddr ("off" for none).
func startProcessWith(t *testing.T, dataDir, mqttsAddr string) *process {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, mqttAddr := freePort(t), freePort(t)
	cmd := exec.Command(bin, "serve", "--data", dataDir, "--http", httpAddr, "--mqtt", mqttAddr, "--https", "off", "--mqtts", mqttsAddr)
	cmd.Env = append(os.Environ(), "ZEROTOUCH_ADMIN_KEY="+testAdminKey)
	p := &process{cmd: cmd, stderr: &bytes.Buffer{}, node: &node{t: t, baseURL: "http://" + httpAddr, mqtt: mqttAddr}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(p.node.baseURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not become healthy: %v\n%s", err, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killDuringBurst SIGKILLs the server once answered() reaches want (or
// after 30 s), while requests are in flight, then ends the burst (stop,
// and waits for its workers) and fails unless at least least requests
// were answered.
func (p *process) killDuringBurst(t *testing.T, answered func() int, want, least int, stop func(), workers *sync.WaitGroup) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); answered() < want && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	stop()
	workers.Wait()
	n := answered()
	if n < least {
		t.Fatalf("only %d answers before the kill; the burst did not get going:\n%s", n, p.stderr)
	}
	t.Logf("%d requests answered before SIGKILL", n)
}

// checkAnsweredWhole checks, after a crash, that the device of every
// answered request (by name) is there, and that no device is half made:
// each is provisioned with exactly one active credential.
func (p *process) checkAnsweredWhole(t *testing.T, answered []string) {
	t.Helper()
	byName := map[string]deviceOut{}
	for _, d := range p.node.devices() {
		byName[d.Name] = d
	}
	for _, name := range answered {
		if _, ok := byName[name]; !ok {
			t.Errorf("device %s was answered but is gone after the crash", name)
		}
	}
	for name, d := range byName {
		cs := p.node.credentials(d.ID)
		if d.ProvisionedAt == nil || len(cs) != 1 || cs[0].Status != "active" {
			t.Errorf("half-made device %s: provisionedAt %v, credentials %+v", name, d.ProvisionedAt, cs)
		}
	}
}

// TestSIGKILLLosesNoAnsweredDevice kills the server with SIGKILL in the middle
// of a provisioning burst, restarts it on the same data, and checks that every
// device whose SUCCESS answer was received exists with working credentials,
// and that no device was left half-made.
func TestSIGKILLLosesNoAnsweredDevice(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the server binary")
	}
	data := t.TempDir()
	p := startProcess(t, data)
	prof := p.node.createProfile("crash", "allow-create", "ACCESS_TOKEN", "never")

	var (
		mu       sync.Mutex
		answered = map[string]string{} // device name → token
	)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("crash-%02d-%05d", w, i)
				resp, err := client.Post(p.node.baseURL+"/api/v1/provision", "application/json", strings.NewReader(req(prof.Key, prof.Secret, name)))
				if err != nil {
					return // the server is gone
				}
				var a tbAnswer
				err = jsonDecode(resp, &a)
				if err != nil {
					return // cut off mid-answer: not an answered request
				}
				if a.Status != "SUCCESS" {
					t.Errorf("%s: %+v", name, a)
					return
				}
				mu.Lock()
				answered[name] = a.token(t)
				mu.Unlock()
			}
		}()
	}
	p.killDuringBurst(t, func() int { mu.Lock(); defer mu.Unlock(); return len(answered) }, 400, 50, stop, &wg)

	q := startProcess(t, data)
	q.checkAnsweredWhole(t, slices.Collect(maps.Keys(answered)))
	// The tokens themselves still authenticate (a sample keeps the test short).
	checked := 0
	for name, tok := range answered {
		if checked == 25 {
			break
		}
		checked++
		c, err := q.node.connectDevice(name, tok, "")
		if err != nil {
			t.Errorf("device %s cannot connect after the crash: %v", name, err)
			continue
		}
		c.Disconnect(0)
	}
}

// TestSIGKILLKeepsCommittedTelemetry backs the telemetry durability claim:
// once the batch holding a device's values is committed (no record left
// pending), a SIGKILL loses none of them.
func TestSIGKILLKeepsCommittedTelemetry(t *testing.T) {
	data := t.TempDir()
	p := startProcess(t, data)
	n := p.node
	prof := n.createProfile("crash-telemetry", "allow-create", "ACCESS_TOKEN", "never")
	id, token := n.provisionedDevice(prof, "meter-crash")
	c := n.mqttDevice("meter-crash", token)
	const values = 50
	t0 := time.Now().Add(-time.Hour).UnixMilli() // within the retention
	for i := range values {
		publish(t, c, "v1/devices/me/telemetry", 1, fmt.Sprintf(`{"ts":%d,"values":{"v":%d}}`, t0+int64(i), i))
	}
	// Wait for the commit through /metrics only: an API read would commit
	// the queue itself and prove nothing about the batching.
	waitFor(t, "the batch committed", func() bool {
		_, m := get(t, n.baseURL+"/metrics")
		return strings.Contains(m, "\nzerotouch_telemetry_pending_records 0\n") &&
			strings.Contains(m, fmt.Sprintf("\nzerotouch_telemetry_values_total %d\n", values))
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()

	q := startProcess(t, data)
	s := q.node.series(id, fmt.Sprintf("keys=v&from=%d&to=%d&limit=1000", t0, t0+values))
	if len(s) != 1 || len(s[0].Values) != values {
		t.Fatalf("after SIGKILL: %+v, want %d values", s, values)
	}
}
