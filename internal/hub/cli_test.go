package hub

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// mosquitto runs one of the mosquitto command-line clients against the
// hub, skipping the test when it is not installed.
func (e *env) mosquitto(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	path := testutil.RequireTool(t, tool)
	_, port, err := net.SplitHostPort(e.addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, append([]string{"-h", "127.0.0.1", "-p", port}, args...)...).CombinedOutput()
	return string(out), err
}

func TestMosquittoRRProvisioning(t *testing.T) {
	e := newEnv(t)
	req := `{"deviceName":"rr-device","provisionDeviceKey":"k","provisionDeviceSecret":"s"}`
	rr := []string{"-t", provReq, "-e", provResp, "-u", provUser, "-m", req, "-W", "10"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"MQTT 5", []string{"-V", "5"}, "answer:" + req},
		{"MQTT 5, QoS 1", []string{"-V", "5", "-q", "1"}, "answer:" + req},
		{"MQTT 3.1.1", []string{"-V", "311"}, "answer:" + req},
		{"MQTT 5 correlation data", []string{"-V", "5", "-q", "1", "-D", "publish", "correlation-data", "corr-7", "-F", "%D|%p"}, "corr-7|answer:" + req},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := e.mosquitto(t, "mosquitto_rr", append(tc.args, rr...)...)
			if err != nil {
				t.Fatalf("mosquitto_rr: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(out); got != tc.want {
				t.Errorf("mosquitto_rr printed %q, want %q", got, tc.want)
			}
			if call := e.nextProv(t); call.payload != req {
				t.Errorf("handler got %q", call.payload)
			}
		})
	}
}

// TestMosquittoRRConcurrent: provisioning clients that all listen on the
// same response topic each print their own answer only.
func TestMosquittoRRConcurrent(t *testing.T) {
	e := newEnv(t)
	testutil.RequireTool(t, "mosquitto_rr")
	const n = 8
	outs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = e.mosquitto(t, "mosquitto_rr", "-V", "5", "-q", "1", "-t", provReq, "-e", provResp, "-u", provUser,
				"-m", "req-"+string(rune('a'+i)), "-W", "10")
		}()
	}
	wg.Wait()
	for i := range n {
		want := "answer:req-" + string(rune('a'+i))
		if errs[i] != nil || strings.TrimSpace(outs[i]) != want {
			t.Errorf("client %d: err %v, printed %q, want %q", i, errs[i], outs[i], want)
		}
	}
}

func TestMosquittoDevice(t *testing.T) {
	e := newEnv(t)
	tok, dev, _ := e.tokenDevice()
	disabled := "disabled-token-0123456789"
	e.device(registry.DeviceDisabled, tokenCred(disabled))
	tel := []string{"-t", "v1/devices/me/telemetry", "-q", "1", "-m", `{"temperature":25}`}

	t.Run("telemetry with a token", func(t *testing.T) {
		out, err := e.mosquitto(t, "mosquitto_pub", append([]string{"-u", tok}, tel...)...)
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		if p := e.nextDevicePub(t); p.sess.DeviceID != dev.ID || p.payload != `{"temperature":25}` {
			t.Errorf("handler got %q from %s", p.payload, p.sess.DeviceID)
		}
	})
	for _, tc := range []struct {
		name, user, version, want string
	}{
		{"unknown token", "no-such-token", "311", "not authorised"},
		{"unknown token, MQTT 5", "no-such-token", "5", "Bad User Name or Password"},
		{"disabled device", disabled, "311", "not authorised"},
		{"disabled device, MQTT 5", disabled, "5", "Not authorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := e.mosquitto(t, "mosquitto_pub", append([]string{"-V", tc.version, "-u", tc.user}, tel...)...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("mosquitto_pub: err %v, output %q, want a refusal saying %q", err, out, tc.want)
			}
		})
	}
	t.Run("publish elsewhere, MQTT 5", func(t *testing.T) {
		out, _ := e.mosquitto(t, "mosquitto_pub", "-V", "5", "-u", tok, "-t", "other/topic", "-q", "1", "-m", "x")
		if !strings.Contains(out, "Not authorized") {
			t.Errorf("output %q, want a refused publish", out)
		}
	})
	t.Run("publish elsewhere, MQTT 3.1.1", func(t *testing.T) {
		if out, err := e.mosquitto(t, "mosquitto_pub", "-u", tok, "-t", "other/topic", "-q", "1", "-m", "x"); err == nil {
			t.Errorf("mosquitto_pub succeeded: %q", out)
		}
	})
	for _, filter := range []string{"#", "$SYS/#", "v1/devices/+/telemetry"} {
		t.Run("subscribe "+filter, func(t *testing.T) {
			out, _ := e.mosquitto(t, "mosquitto_sub", "-u", tok, "-t", filter, "-W", "10")
			if !strings.Contains(out, "All subscription requests were denied") {
				t.Errorf("mosquitto_sub printed %q, want a denied subscription", out)
			}
		})
	}
	t.Run("provisioning user publishes an answer", func(t *testing.T) {
		if out, err := e.mosquitto(t, "mosquitto_pub", "-u", provUser, "-t", provResp, "-q", "1", "-m", "forged"); err == nil {
			t.Errorf("mosquitto_pub succeeded: %q", out)
		}
	})
}
