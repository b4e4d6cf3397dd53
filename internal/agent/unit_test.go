package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	good := `
server: hub.example.com:1883
provision: {key: k, secret: s}
device: press-7
stateFile: /var/lib/zerotouch-agent/state.json
telemetry: {interval: 15s, source: command, command: "echo '{\"t\":1}'"}
handlers: {rpc: "cat", timeout: 3s}
`
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"good", good, ""},
		{"defaults", "server: h:1883\nprovision: {key: k, secret: s}\nstateFile: s.json\n", ""},
		{"other dialect", good + "dialect: aws-fleet\n", `dialect "aws-fleet" is not supported`},
		{"azure fields", good + "caFile: ca.pem\n", "caFile are for dialect \"azure-dps\""},
		{"unknown field", good + "intervall: 5s\n", "field intervall not found"},
		{"no port", strings.Replace(good, "hub.example.com:1883", "hub.example.com", 1), "want host:port"},
		{"no secret", strings.Replace(good, "secret: s", "secret: ''", 1), "key and secret are required"},
		{"no state file", strings.Replace(good, "stateFile: /var/lib/zerotouch-agent/state.json", "", 1), "stateFile: required"},
		{"bad type", good + "credentials: {type: PSK}\n", `credentials.type "PSK"`},
		{"x509 without files", good + "credentials: {type: X509_CERTIFICATE}\n", "needs certFile and keyFile"},
		{"bad source", strings.Replace(good, "source: command", "source: magic", 1), `telemetry.source "magic"`},
		{"file without path", strings.Replace(good, "source: command", "source: file", 1), "needs file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Dialect != DialectThingsBoard || c.Credentials.Type != CredentialsAccessToken || c.Device == "" {
				t.Errorf("defaults not applied: %+v", c)
			}
			if tc.name == "good" && (c.Telemetry.Interval != 15*time.Second || c.Handlers.Timeout != 3*time.Second) {
				t.Errorf("durations: %v %v", c.Telemetry.Interval, c.Handlers.Timeout)
			}
			if tc.name == "defaults" && (c.Telemetry.Interval != DefaultInterval || c.Telemetry.Source != SourceSystem || c.Handlers.Timeout != DefaultCommandTimeout) {
				t.Errorf("defaults: %+v", c)
			}
		})
	}
}

// TestWriteFileAtomic plays a crash between the write and the rename: the
// old state is intact, and what the crash left behind is never read as the
// state.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "state.json")
	old := &State{Dialect: DialectThingsBoard, CredentialsType: CredentialsAccessToken, Token: "old"}
	if err := SaveState(path, old); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v; want 0600", err, fi.Mode())
	}
	crash := errors.New("power cut")
	var leftover string
	err = writeFileAtomic(path, []byte(`{"credentialsType":"ACCESS_TOKEN","token":"new"}`), 0o600, func(tmp string) error {
		leftover = tmp
		if fi, err := os.Stat(tmp); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("temporary file %v mode %v, want 0600 from the start", err, fi.Mode())
		}
		return crash
	})
	if !errors.Is(err, crash) {
		t.Fatalf("err %v", err)
	}
	if st := mustState(t, path); st.Token != "old" {
		t.Errorf("state after the crash: %+v, want the old one", st)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	// A real crash leaves the temporary file behind; it is not the state.
	if err := os.WriteFile(filepath.Join(dir, "sub", ".state.json.tmp-123"), []byte(`{"tok`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SaveState(path, &State{CredentialsType: CredentialsAccessToken, Token: "new"}); err != nil {
		t.Fatal(err)
	}
	if st := mustState(t, path); st.Token != "new" {
		t.Errorf("state %+v, want the new one", st)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after replace", fi.Mode())
	}
}

func TestLoadState(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadState(filepath.Join(dir, "none.json")); !errors.Is(err, ErrNoState) {
		t.Errorf("missing file: %v, want ErrNoState", err)
	}
	for name, content := range map[string]string{"partial": `{"credentialsType":"ACC`, "empty": `{}`} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := LoadState(p); err == nil || errors.Is(err, ErrNoState) || !strings.Contains(err.Error(), "move it away") {
			t.Errorf("%s: %v, want an error that is not ErrNoState", name, err)
		}
	}
}

func TestSystemSource(t *testing.T) {
	root := t.TempDir()
	write := func(rel, s string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/stat", "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
	write("proc/meminfo", "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n")
	write("proc/loadavg", "0.50 0.25 0.10 1/100 12345\n")
	write("proc/uptime", "3600.7 7000.0\n")
	write("sys/class/thermal/thermal_zone0/temp", "45500\n")
	write("sys/class/thermal/thermal_zone1/temp", "51230\n")
	s := &SystemSource{Root: root}
	ctx := context.Background()
	if _, err := s.Read(ctx); err != nil { // the first reading sets the baseline
		t.Fatal(err)
	}
	// 1000 jiffies later, 250 of them idle: 75 % busy.
	write("proc/stat", "cpu  500 0 450 900 150 0 0 0 0 0\n")
	b, err := s.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"cpu": 75, "memory": 75, "load1": 0.5, "load5": 0.25, "load15": 0.1, "uptime": 3601, "temperature": 51.23}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %s)", k, got[k], v, b)
		}
	}
	if _, err := (&SystemSource{Root: t.TempDir()}).Read(ctx); err == nil {
		t.Error("no /proc at all: want an error")
	}
	if _, err := os.Stat("/proc/stat"); err == nil {
		if _, err := (&SystemSource{Root: "/"}).Read(ctx); err != nil {
			t.Errorf("this host: %v", err)
		}
	}
}

func TestRunJSON(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, cmd, stdin, want, wantErr string
		timeout                         time.Duration
	}{
		{"echo stdin", "cat", `{"a":1}`, `{"a":1}`, "", time.Second},
		{"exit status", "echo nope >&2; exit 2", "", "", "nope", time.Second},
		{"not json", "echo hello", "", "", "not JSON", time.Second},
		{"nothing", "true", "", "", "printed nothing", time.Second},
		{"timeout", "sleep 10", "", "", "timed out after 200ms", 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			out, err := runJSON(ctx, tc.cmd, []byte(tc.stdin), tc.timeout)
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(out) != tc.want {
				t.Fatalf("%s, %v; want %s", out, err, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := &backoff{base: 100 * time.Millisecond, max: time.Second}
	for i := range 50 {
		d := b.next()
		ceil := min(time.Second, 100*time.Millisecond<<min(i, 20))
		if d < 25*time.Millisecond || d > ceil {
			t.Fatalf("wait %d: %v outside [25ms, %v]", i, d, ceil)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %v", d)
	}
}
