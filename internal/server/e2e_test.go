package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/provision"
)

const testAdminKey = "test-admin-key-0123456789"

// node is a zerotouch server started for one test, on ephemeral ports.
type node struct {
	t       testing.TB
	srv     *Server
	baseURL string
	mqtt    string // host:port
}

func startNode(t testing.TB, dataDir string) *node {
	t.Helper()
	return startNodeWith(t, dataDir, nil)
}

// startNodeWith starts a node whose configuration tweak adjusts first.
func startNodeWith(t testing.TB, dataDir string, tweak func(*config.Config)) *node {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := config.Defaults()
	cfg.DataDir = dataDir
	cfg.HTTP = "127.0.0.1:0"
	cfg.MQTT = "127.0.0.1:0"
	cfg.HTTPS = "127.0.0.1:0"
	cfg.MQTTS = "127.0.0.1:0"
	cfg.AdminKey = testAdminKey
	if tweak != nil {
		tweak(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// The tests send dozens of refusals from 127.0.0.1: a limiter that lets
	// them through (its own behaviour is tested in internal/provision).
	lenient := &provision.FailureLimiter{Burst: 1 << 20, Leak: time.Second, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 16}
	srv, err := Start(context.Background(), cfg, Options{Logger: log, Banner: io.Discard, Limiter: lenient})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	n := &node{t: t, srv: srv, baseURL: "http://" + srv.HTTPAddr().String(), mqtt: srv.MQTTAddr().String()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return n
}

// api calls the management API with the admin key and decodes the JSON answer into out.
func (n *node) api(method, path string, body any, out any) int {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, n.baseURL+path, rd)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			n.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

type profileOut struct {
	ID     string `json:"id"`
	Key    string `json:"provisionDeviceKey"`
	Secret string `json:"provisionDeviceSecret"`
}

func (n *node) createProfile(name, strategy, credType, policy string) profileOut {
	n.t.Helper()
	var p profileOut
	body := map[string]any{"name": name, "strategy": strategy, "defaultCredentialsType": credType, "reprovisionPolicy": policy}
	if code := n.api("POST", "/api/profiles", body, &p); code != http.StatusCreated {
		n.t.Fatalf("create profile: HTTP %d", code)
	}
	if p.Key == "" || p.Secret == "" {
		n.t.Fatalf("profile answer lacks key or secret: %+v", p)
	}
	return p
}

// tbAnswer is ThingsBoard's provisioning answer, loosely typed.
type tbAnswer struct {
	Status           string          `json:"status"`
	CredentialsType  string          `json:"credentialsType"`
	CredentialsValue json.RawMessage `json:"credentialsValue"`
	ErrorMsg         string          `json:"errorMsg"`
	Reason           string          `json:"reason"`
}

func (a tbAnswer) token(t testing.TB) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(a.CredentialsValue, &s); err != nil {
		t.Fatalf("credentialsValue %s is not a string", a.CredentialsValue)
	}
	return s
}

// provisionHTTP posts a request as curl would, exactly as in ThingsBoard's docs.
func (n *node) provisionHTTP(payload string) (int, tbAnswer) {
	n.t.Helper()
	resp, err := http.Post(n.baseURL+"/api/v1/provision", "application/json", strings.NewReader(payload))
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var a tbAnswer
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &a); err != nil {
		n.t.Fatalf("provision answer %q: %v", b, err)
	}
	return resp.StatusCode, a
}

// provisionMQTT runs ThingsBoard's MQTT provisioning exchange with the paho
// client: connect as "provision", subscribe to the response topic, publish
// the request, wait for the answer on the same connection.
func (n *node) provisionMQTT(payload string) tbAnswer {
	n.t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + n.mqtt).SetUsername("provision").
		SetClientID(fmt.Sprintf("prov-%d", time.Now().UnixNano())).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		n.t.Fatalf("provision connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	got := make(chan []byte, 1)
	if tok := c.Subscribe("/provision/response", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Payload() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		n.t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish("/provision/request", 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		n.t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case b := <-got:
		var a tbAnswer
		if err := json.Unmarshal(b, &a); err != nil {
			n.t.Fatalf("answer %q: %v", b, err)
		}
		return a
	case <-time.After(10 * time.Second):
		n.t.Fatal("no provisioning answer within 10s")
	}
	return tbAnswer{}
}

// connectDevice opens a device session; it returns the CONNECT error, if any.
func (n *node) connectDevice(clientID, username, password string) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + n.mqtt).SetClientID(clientID).SetUsername(username).
		SetPassword(password).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false).SetConnectRetry(false)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	n.t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func req(key, secret, name string, extra ...string) string {
	m := map[string]string{"provisionDeviceKey": key, "provisionDeviceSecret": secret}
	if name != "" {
		m["deviceName"] = name
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func jsonDecode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}
