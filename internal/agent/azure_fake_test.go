package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// fakeDPS is a scripted DPS on a plain MQTT broker over TLS: each request
// the device publishes is answered with the next scripted answer, for
// the answers zerotouch does not give on demand (429, 5xx, failed).
type fakeDPS struct {
	addr   string
	caFile string

	mu       sync.Mutex
	script   []fakeAnswer
	requests []string // topics, in order
}

// fakeAnswer is a status, the retry-after to give ("" for none), a body,
// and whether to send first an answer to another request id.
type fakeAnswer struct {
	status     string
	retryAfter string
	body       string
	strayFirst bool
}

func startFakeDPS(t *testing.T, script ...fakeAnswer) *fakeDPS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDPS{script: script, caFile: filepath.Join(t.TempDir(), "ca.pem")}
	if err := os.WriteFile(f.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	f.addr = "localhost:" + strings.TrimPrefix(l.Addr().String(), "127.0.0.1:")
	srv := mochi.New(&mochi.Options{InlineClient: true})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("dps", l)); err != nil {
		t.Fatal(err)
	}
	answer := func(_ *mochi.Client, _ packets.Subscription, pk packets.Packet) {
		f.mu.Lock()
		f.requests = append(f.requests, pk.TopicName)
		if len(f.script) == 0 {
			f.mu.Unlock()
			return
		}
		a := f.script[0]
		f.script = f.script[1:]
		f.mu.Unlock()
		_, query, _ := strings.Cut(pk.TopicName, "?")
		rid := strings.TrimPrefix(strings.Split(query, "&")[0], "$rid=")
		if a.strayFirst {
			srv.Publish("$dps/registrations/res/200/?$rid=stray", []byte(`{"status":"failed"}`), false, 1)
		}
		topic := "$dps/registrations/res/" + a.status + "/?$rid=" + rid
		if a.retryAfter != "" {
			topic += "&retry-after=" + a.retryAfter
		}
		srv.Publish(topic, []byte(a.body), false, 1)
	}
	for i, filter := range []string{"$dps/registrations/PUT/#", "$dps/registrations/GET/#"} {
		if err := srv.Subscribe(filter, i+1, answer); err != nil {
			t.Fatal(err)
		}
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeDPS) agent(t *testing.T) *Agent {
	t.Helper()
	c := &Config{Dialect: DialectAzureDPS, CAFile: f.caFile, StateFile: filepath.Join(t.TempDir(), "state.json"),
		DPS: &DPSConfig{Host: f.addr, IDScope: "0ne0000FAKE", RegistrationID: "fake-1", SymmetricKey: azureKey1}}
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	return newAgent(t, c)
}

func (f *fakeDPS) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.requests))
	for i, r := range f.requests {
		out[i], _, _ = strings.Cut(strings.TrimPrefix(r, "$dps/registrations/"), "/?")
	}
	return out
}

// TestDPSExchange: busy answers are retried after their retry-after (the
// same request again), answers to other request ids are skipped, an
// operation is polled until assigned; failed and 4xx are final.
func TestDPSExchange(t *testing.T) {
	assigned := `{"operationId":"op-1","status":"assigned","registrationState":{"registrationId":"fake-1","assignedHub":"hub.example.com","deviceId":"fake-1","status":"assigned"}}`
	t.Run("busy then assigned", func(t *testing.T) {
		f := startFakeDPS(t,
			fakeAnswer{status: "429", retryAfter: "0", body: `{}`},
			fakeAnswer{status: "202", retryAfter: "0", body: `{"operationId":"op-1","status":"assigning"}`, strayFirst: true},
			fakeAnswer{status: "503", retryAfter: "0", body: `{}`},
			fakeAnswer{status: "202", retryAfter: "0", body: `{"operationId":"op-1","status":"assigning"}`},
			fakeAnswer{status: "200", body: assigned},
		)
		start := time.Now()
		st, err := f.agent(t).provisionOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.AssignedHub != "hub.example.com" || st.DeviceID != "fake-1" || st.OperationID != "op-1" || st.SymmetricKey != azureKey1 {
			t.Errorf("state %+v", st)
		}
		want := "PUT/iotdps-register PUT/iotdps-register GET/iotdps-get-operationstatus GET/iotdps-get-operationstatus GET/iotdps-get-operationstatus"
		if got := strings.Join(f.log(), " "); got != want {
			t.Errorf("requests %s\nwant %s", got, want)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v with retry-after 0 everywhere", d)
		}
	})
	t.Run("retry-after honoured", func(t *testing.T) {
		f := startFakeDPS(t,
			fakeAnswer{status: "202", retryAfter: "1", body: `{"operationId":"op-1","status":"assigning"}`},
			fakeAnswer{status: "200", body: assigned},
		)
		start := time.Now()
		if _, err := f.agent(t).provisionOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < time.Second {
			t.Errorf("polled after %v, before the retry-after of 1 s", d)
		}
	})
	for _, tc := range []struct {
		name   string
		answer fakeAnswer
		status string
	}{
		{"failed", fakeAnswer{status: "200", body: `{"operationId":"x","status":"failed","registrationState":{"status":"failed","errorMessage":"no hub"}}`}, "failed"},
		{"unauthorized", fakeAnswer{status: "401", body: `{"errorCode":401002,"message":"bad token"}`}, "401"},
		{"not found", fakeAnswer{status: "404", body: `{"errorCode":404002,"message":"no such registration"}`}, "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeDPS(t, tc.answer)
			_, err := f.agent(t).provisionOnce(context.Background())
			var pe *ProvisionError
			if !errors.As(err, &pe) || pe.Status != tc.status || !errors.Is(err, ErrRefused) {
				t.Fatalf("err %v, want a final ProvisionError %s", err, tc.status)
			}
		})
	}
}
