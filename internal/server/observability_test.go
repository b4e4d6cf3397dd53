package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthAndMetrics(t *testing.T) {
	n := startNode(t, "")
	if code, body := get(t, n.baseURL+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	p := n.createProfile("m", "allow-create", "ACCESS_TOKEN", "never")
	a := n.provisionMQTT(req(p.Key, p.Secret, "metered"))
	n.provisionMQTT(req(p.Key, "wrong", "metered-2"))
	if _, err := n.connectDevice("metered", a.token(t), ""); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, n.baseURL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`zerotouch_provision_attempts_total{dialect="thingsboard",result="success"} 1`,
		`zerotouch_provision_attempts_total{dialect="thingsboard",result="bad-key-or-secret"} 1`,
		`zerotouch_provision_duration_seconds_count{dialect="thingsboard"} 2`,
		"zerotouch_connected_devices 1",
		`zerotouch_mqtt_refused_connections_total{reason="max-clients"} 0`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
