package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// Azure DPS with a client nobody here wrote: the official Azure IoT
// Node.js device SDK (versions pinned in testdata/azuresdk/package-lock.json),
// driven by testdata/azuresdk/register-and-run.js. The harness needs node
// and its npm dependencies:
//
//	cd internal/server/testdata/azuresdk && npm ci --ignore-scripts --no-audit --no-fund
//
// Without them the tests skip, except under CI, where they fail.

const azureSDKDir = "testdata/azuresdk"

// requireAzureSDK returns the node binary and the harness directory (absolute),
// or skips (fails under CI) when either is missing.
func requireAzureSDK(t *testing.T) (nodeBin, dir string) {
	t.Helper()
	nodeBin = testutil.RequireTool(t, "node")
	dir, err := filepath.Abs(azureSDKDir)
	if err != nil {
		t.Fatal(err)
	}
	// The packages the harness requires directly stand for the whole install.
	for _, pkg := range []string{"azure-iot-provisioning-device", "azure-iot-provisioning-device-mqtt",
		"azure-iot-provisioning-device-http", "azure-iot-security-symmetric-key", "azure-iot-device-mqtt"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			msg := "the Azure IoT Node.js SDK is not installed (" + pkg + " missing): cd internal/server/testdata/azuresdk && npm ci --ignore-scripts --no-audit --no-fund"
			if os.Getenv("CI") != "" {
				t.Fatal(msg + " (required in CI)")
			}
			t.Skip(msg)
		}
	}
	return nodeBin, dir
}

// azureRun is one run of register-and-run.js.
type azureRun struct {
	exitCode       int
	stdout, stderr string
	steps          map[string]map[string]any // step name → its (last) JSON line
}

// registration is the registrationState the SDK handed the app.
func (r azureRun) registration() map[string]any {
	reg, _ := r.steps["register"]["result"].(map[string]any)
	return reg
}

// runAzureSDK runs the harness with env (ZT_* variables) added to a
// minimal environment, and kills it if it outlives the test's budget.
// onStep, when set, is called with each step line as it is printed (from
// another goroutine: it must not call t.Fatal), so that a test can act
// when the device is ready (send a desired patch, call a method).
func runAzureSDK(t *testing.T, nodeBin, dir string, env map[string]string, onStep func(step string, line map[string]any)) azureRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "register-and-run.js")
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "ZT_TIMEOUT_MS=45000"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node register-and-run.js: %v", err)
	}
	r := azureRun{steps: map[string]map[string]any{}}
	var stdout strings.Builder
	var badLine string
	sc := bufio.NewScanner(pipe)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		stdout.WriteString(sc.Text() + "\n")
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			badLine = sc.Text()
			continue
		}
		step, _ := line["step"].(string)
		r.steps[step] = line
		if onStep != nil {
			onStep(step, line)
		}
	}
	err = cmd.Wait()
	r.stdout, r.stderr = stdout.String(), stderr.String()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		r.exitCode = exitErr.ExitCode()
	default:
		t.Fatalf("run node register-and-run.js: %v\nstderr:\n%s", err, r.stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("node register-and-run.js killed after %s\nstdout:\n%s\nstderr:\n%s", time.Since(start).Round(time.Millisecond), r.stdout, r.stderr)
	}
	if badLine != "" {
		t.Fatalf("harness stdout line %q is not JSON", badLine)
	}
	t.Logf("node register-and-run.js (%s): exit %d in %s", env["ZT_TRANSPORT"], r.exitCode, time.Since(start).Round(time.Millisecond))
	return r
}

func TestAzureSDKRegistration(t *testing.T) {
	nodeBin, dir := requireAzureSDK(t)
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	hub := n.srv.builtinHubName()

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	_, caPEM := n.caPool(t)
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	port := func(a net.Addr) string { return fmt.Sprint(a.(*net.TCPAddr).Port) }
	mqttsPort, httpsPort := port(n.srv.MQTTSAddr()), port(n.srv.HTTPSAddr())

	for _, id := range []string{"sdk-mqtt", "sdk-http"} {
		if err := st.CreateEnrollment(ctx, enrollment(id, registry.EnrollmentEnabled, registry.EnrollmentReprovisionMigrate)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateEnrollment(ctx, enrollment("sdk-off", registry.EnrollmentDisabled, registry.EnrollmentReprovisionMigrate)); err != nil {
		t.Fatal(err)
	}
	g := &registry.EnrollmentGroup{OrgID: registry.DefaultOrgID, ID: "sdk-line",
		Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey,
			SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: dpsKey1}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionNever}}
	if err := st.CreateEnrollmentGroup(ctx, g); err != nil {
		t.Fatal(err)
	}

	// X.509 devices: a self-signed leaf per transport, enrolled by
	// certificate, its key and certificate in files for the SDK.
	certFiles := map[string][2]string{}
	for _, id := range []string{"sdk-x509-mqtt", "sdk-x509-http"} {
		leaf := testutil.NewCert(t, id, nil, testutil.CertOptions{})
		if err := st.CreateEnrollment(ctx, x509Enrollment(id, leaf)); err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile := filepath.Join(t.TempDir(), id+".pem"), filepath.Join(t.TempDir(), id+".key")
		if err := os.WriteFile(certFile, []byte(leaf.PEM()), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		certFiles[id] = [2]string{certFile, keyFile}
	}

	baseEnv := func(transport, regID string) map[string]string {
		p := mqttsPort
		if transport == "http" {
			p = httpsPort
		}
		return map[string]string{
			"NODE_EXTRA_CA_CERTS": caFile,
			"ZT_DPS_HOST":         "127.0.0.1", // the server certificate names 127.0.0.1 and localhost
			"ZT_DPS_PORT":         p,
			"ZT_TRANSPORT":        transport,
			"ZT_ID_SCOPE":         scope,
			"ZT_REGISTRATION_ID":  regID,
			// The hub is dialled at the MQTTS address (the SDK's
			// GatewayHostName): assignedHub, this host's name, may not
			// resolve in a CI container; the SDK's user name and SAS
			// resource keep assignedHub, as they would against Azure.
			"ZT_HUB_ADDR": n.srv.MQTTSAddr().String(),
		}
	}

	// Each run takes a second or more (the SDK waits the server's
	// retry-after between register and poll): run them side by side.
	tests := []struct {
		name, transport, regID string
		key, groupKey, payload string
		wantPayload            string // registrationState.payload, compact JSON
		wantKey                string // the hub credential's primary key
		group                  string // the enrollment group, if any
		wantDesired            string // the twin's desired "interval", compact JSON
		cloud                  bool   // also push a desired patch and call a direct method
	}{
		{name: "individual mqtt", transport: "mqtt", regID: "sdk-mqtt", key: dpsKey1, payload: `{"model":"x","rev":2}`,
			wantPayload: `{"firmware":"2.1"}`, wantKey: dpsKey1, wantDesired: "5", cloud: true},
		{name: "individual http", transport: "http", regID: "sdk-http", key: dpsKey2, // the secondary key works too
			wantPayload: `{"firmware":"2.1"}`, wantKey: dpsKey1, wantDesired: "5"},
		{name: "group mqtt", transport: "mqtt", regID: "sdk-unit-1", groupKey: dpsKey1, group: "sdk-line"},
		{name: "group http", transport: "http", regID: "sdk-unit-2", groupKey: dpsKey1, group: "sdk-line"},
		{name: "x509 mqtt", transport: "mqtt", regID: "sdk-x509-mqtt", wantDesired: "7"},
		{name: "x509 http", transport: "http", regID: "sdk-x509-http", wantDesired: "7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := baseEnv(tc.transport, tc.regID)
			if tc.key != "" {
				env["ZT_SYMMETRIC_KEY"] = tc.key
			}
			if tc.groupKey != "" {
				env["ZT_GROUP_KEY"] = tc.groupKey // the harness derives the device key, as apps do
			}
			if tc.payload != "" {
				env["ZT_PAYLOAD"] = tc.payload
			}
			if f, ok := certFiles[tc.regID]; ok {
				env["ZT_CERT_FILE"], env["ZT_KEY_FILE"] = f[0], f[1]
			}
			// From the cloud side, once the device is ready: a desired
			// property, then a direct method through the management API.
			cloudErrs := make(chan error, 2)
			var methodResult string
			onStep := func(step string, _ map[string]any) {
				dev, err := st.GetDeviceByName(ctx, registry.DefaultOrgID, tc.regID)
				switch {
				case step != "desired_ready" && step != "method_ready" && step != "c2d_ready":
					return
				case err != nil:
					cloudErrs <- err
				case step == "desired_ready":
					if code, body := n.apiQuiet("PUT", "/api/devices/"+dev.ID+"/attributes/shared", `{"interval":42}`); code != 200 {
						cloudErrs <- fmt.Errorf("set desired: %d %s", code, body)
					}
				case step == "c2d_ready":
					if code, body := n.apiQuiet("POST", "/api/devices/"+dev.ID+"/messages",
						`{"payload":"hello device","messageId":"m-1","properties":{"priority":"high"}}`); code != 202 {
						cloudErrs <- fmt.Errorf("send message: %d %s", code, body)
					}
				default:
					code, body := n.apiQuiet("POST", "/api/devices/"+dev.ID+"/rpc", `{"method":"reboot","params":{"delay":1}}`)
					if code != 200 {
						cloudErrs <- fmt.Errorf("direct method: %d %s", code, body)
					}
					methodResult = body
				}
			}
			if tc.cloud {
				env["ZT_WAIT_DESIRED"], env["ZT_WAIT_METHOD"], env["ZT_WAIT_C2D"] = "1", "1", "1"
			}
			r := runAzureSDK(t, nodeBin, dir, env, onStep)
			close(cloudErrs)
			for err := range cloudErrs {
				t.Error(err)
			}
			if r.exitCode != 0 || r.steps["done"] == nil {
				t.Fatalf("harness exit %d\nstdout:\n%s\nstderr:\n%s", r.exitCode, r.stdout, r.stderr)
			}
			reg := r.registration()
			if reg["assignedHub"] != hub || reg["deviceId"] != tc.regID {
				t.Fatalf("registrationState = %v, want assignedHub %q and deviceId %q", reg, hub, tc.regID)
			}
			if got := compactAny(reg["payload"]); got != compactAny(nilIfEmpty(tc.wantPayload)) {
				t.Fatalf("registrationState.payload = %s, want %s", got, compactAny(nilIfEmpty(tc.wantPayload)))
			}

			// The server side: one device with the Azure hub credential.
			dev, err := st.GetDeviceByName(ctx, registry.DefaultOrgID, tc.regID)
			if err != nil {
				t.Fatalf("device %s: %v", tc.regID, err)
			}
			wantKey := tc.wantKey
			if tc.groupKey != "" {
				if wantKey, err = attest.DeriveDeviceKey(tc.groupKey, tc.regID); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := certFiles[tc.regID]; ok {
				creds, err := st.ListCredentials(ctx, registry.DefaultOrgID, dev.ID)
				if err != nil || len(creds) != 1 || creds[0].Type != registry.CredentialX509 || creds[0].Status != registry.CredentialActive {
					t.Fatalf("hub credentials = %+v, %v; want one active X509_CERTIFICATE", creds, err)
				}
			} else if cred, _, err := st.FindActiveCredential(ctx, registry.CredentialSymmetricKey, tc.regID); err != nil || cred.DeviceID != dev.ID ||
				cred.Type != registry.CredentialSymmetricKey || cred.SymmetricKey == nil || cred.SymmetricKey.PrimaryKey != wantKey {
				t.Fatalf("hub credential = %+v, %v; want SYMMETRIC_KEY with the device key", cred, err)
			}
			if tc.group != "" {
				if rec, err := st.GetRegistration(ctx, registry.DefaultOrgID, tc.regID); err != nil || rec.EnrollmentGroupID != tc.group {
					t.Fatalf("registration record = %+v, %v; want enrollment group %s", rec, err, tc.group)
				}
			}

			// On the hub: connected with the SAS token, three messages
			// stored, the twin read, the reported patch stored.
			if r.steps["hub_connected"] == nil || r.steps["reported"] == nil {
				t.Fatalf("hub steps missing:\n%s", r.stdout)
			}
			if seq, _ := r.steps["telemetry"]["seq"].(float64); seq != 3 {
				t.Fatalf("last telemetry step %v, want 3 messages acknowledged", r.steps["telemetry"])
			}
			latest := n.latest(dev.ID)
			if compact(latest["seq"].Value) != "3" || compact(latest["temperature"].Value) != "23" {
				t.Fatalf("stored telemetry = %+v, want seq 3 and temperature 23", latest)
			}
			desired, _ := r.steps["twin"]["desired"].(map[string]any)
			if tc.wantDesired != "" && compactAny(desired["interval"]) != tc.wantDesired {
				t.Fatalf("twin desired = %v, want interval %s", desired, tc.wantDesired)
			}
			if desired["$version"] == nil {
				t.Fatalf("twin desired = %v, has no $version", desired)
			}
			if got := n.attributes(t, dev.ID, "client"); got["firmware"] != `"1.2.3"` {
				t.Fatalf("reported properties as client attributes = %v", got)
			}
			if tc.cloud {
				patch, _ := r.steps["desired"]["patch"].(map[string]any)
				if compactAny(patch["interval"]) != "42" {
					t.Fatalf("desired patch seen by the device = %v, want interval 42", r.steps["desired"])
				}
				c2d := r.steps["c2d"]
				if props, _ := c2d["properties"].(map[string]any); c2d["data"] != "hello device" || c2d["messageId"] != "m-1" || props["priority"] != "high" {
					t.Fatalf("cloud-to-device message seen by the device = %v", c2d)
				}
				if r.steps["method"]["name"] != "reboot" || compactAny(r.steps["method"]["payload"]) != `{"delay":1}` {
					t.Fatalf("method seen by the device = %v", r.steps["method"])
				}
				var res struct {
					Result json.RawMessage `json:"result"`
				}
				if json.Unmarshal([]byte(methodResult), &res) != nil || compact(res.Result) != `{"status":200,"payload":{"ok":true}}` {
					t.Fatalf("direct method answer through the API = %s", methodResult)
				}
			}
		})
	}

	// A refusal: the enrollment is disabled. Zerotouch answers as DPS does
	// (status "disabled", no operation); the SDK fails the registration.
	for _, transport := range []string{"mqtt", "http"} {
		t.Run("disabled enrollment "+transport, func(t *testing.T) {
			t.Parallel()
			env := baseEnv(transport, "sdk-off")
			env["ZT_SYMMETRIC_KEY"] = dpsKey1
			r := runAzureSDK(t, nodeBin, dir, env, nil)
			if r.exitCode != 1 || r.steps["register"] != nil || r.steps["done"] != nil {
				t.Fatalf("harness exit %d (want 1, the registration refused)\nstdout:\n%s\nstderr:\n%s", r.exitCode, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, `step "register" failed`) {
				t.Fatalf("stderr does not say the registration failed:\n%s", r.stderr)
			}
			// The SDK's error carries DPS's answer: status disabled.
			var detail struct {
				Step   string `json:"step"`
				Error  string `json:"error"`
				Result struct {
					Status string `json:"status"`
				} `json:"result"`
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &detail); err != nil || detail.Step != "register" ||
				detail.Result.Status != "disabled" {
				t.Fatalf("harness error line = %q (%v), want step register with DPS's answer status disabled", lines[len(lines)-1], err)
			}
			if _, err := st.GetDeviceByName(ctx, registry.DefaultOrgID, "sdk-off"); err == nil {
				t.Fatal("a refused registration created a device")
			}
		})
	}
}

// apiQuiet calls the management API and returns the status and body,
// without failing the test: for goroutines other than the test's.
func (n *node) apiQuiet(method, path, body string) (int, string) {
	return n.apiAs(testAdminKey, method, path, body)
}

// apiAs calls the management API with key.
func (n *node) apiAs(key, method, path, body string) (int, string) {
	req, _ := http.NewRequest(method, n.baseURL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// compactAny is v as compact JSON ("null" for nil).
func compactAny(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}
