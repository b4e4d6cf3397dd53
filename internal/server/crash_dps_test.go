package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/attest"
)

// TestSIGKILLLosesNoAnsweredRegistration kills the server with SIGKILL in
// the middle of a burst of DPS registrations over MQTTS, restarts it on
// the same data, and checks that every registration answered "assigning"
// is there: its operation polls to "assigned", its device exists with one
// active credential, and the device connects to the hub with its key.
func TestSIGKILLLosesNoAnsweredRegistration(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the server binary")
	}
	data := t.TempDir()
	p := startProcessWith(t, data, freePort(t))
	var group struct {
		Attestation struct {
			SymmetricKey struct {
				PrimaryKey string `json:"primaryKey"`
			} `json:"symmetricKey"`
		} `json:"attestation"`
	}
	if code := p.node.api("POST", "/api/enrollment-groups", map[string]any{"enrollmentGroupId": "crash-line",
		"attestation": map[string]any{"type": "symmetricKey"}}, &group); code != 201 || group.Attestation.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("create group: HTTP %d", code)
	}
	groupKey := group.Attestation.SymmetricKey.PrimaryKey
	var scopeOut struct {
		IDScope string `json:"idScope"`
	}
	p.node.api("GET", "/api/idscope", nil, &scopeOut)
	scope := scopeOut.IDScope
	_, chain := get(t, p.node.baseURL+"/ca/chain.pem")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(chain))
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	mqtts := p.cmd.Args[len(p.cmd.Args)-1]

	var (
		mu       sync.Mutex
		answered = map[string]string{} // registration id → operation id
	)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("crash-%d-%05d", w, i)
				key, _ := attest.DeriveDeviceKey(groupKey, id)
				op, err := registerOnce(mqtts, tlsCfg, scope, id, key)
				if err != nil {
					return // the server is gone
				}
				mu.Lock()
				answered[id] = op
				mu.Unlock()
			}
		}()
	}
	p.killDuringBurst(t, func() int { mu.Lock(); defer mu.Unlock(); return len(answered) }, 150, 30, stop, &wg)

	// Device names are the registration ids.
	q := startProcessWith(t, data, mqtts)
	q.checkAnsweredWhole(t, slices.Collect(maps.Keys(answered)))
	// A sample of answered operations still polls to "assigned", and the
	// device connects to its hub.
	checked := 0
	for id, op := range answered {
		if checked == 10 {
			break
		}
		checked++
		key, _ := attest.DeriveDeviceKey(groupKey, id)
		if err := pollAndConnect(mqtts, tlsCfg, scope, id, key, op); err != nil {
			t.Errorf("%s after the crash: %v", id, err)
		}
	}
}

// dpsClient connects a DPS registration session signed with key.
func dpsClient(addr string, cfg *tls.Config, scope, id, key string) (mqtt.Client, chan mqtt.Message, error) {
	tok, err := attest.Sign(attest.RegistrationResource(scope, id), attest.RegistrationKeyName, key, time.Now().Add(time.Hour))
	if err != nil {
		return nil, nil, err
	}
	return dialDPS("ssl://"+addr, cfg, id, dpsUsername(scope, id), tok)
}

// registerOnce registers and returns the operation id of a 202 answer.
func registerOnce(addr string, cfg *tls.Config, scope, id, key string) (string, error) {
	c, msgs, err := dpsClient(addr, cfg, scope, id, key)
	if err != nil {
		return "", err
	}
	defer c.Disconnect(0)
	c.Publish("$dps/registrations/PUT/iotdps-register/?$rid=1", 1, false, `{"registrationId":"`+id+`"}`)
	select {
	case m := <-msgs:
		a := parseDPSAnswer(m)
		if a.Status != 202 {
			return "", fmt.Errorf("register: %d %s", a.Status, a.Raw)
		}
		return a.str("operationId"), nil
	case <-time.After(5 * time.Second):
		return "", fmt.Errorf("no answer")
	}
}

// pollAndConnect polls operation op to "assigned", then connects to the
// assigned hub with the device key.
func pollAndConnect(addr string, cfg *tls.Config, scope, id, key, op string) error {
	c, msgs, err := dpsClient(addr, cfg, scope, id, key)
	if err != nil {
		return err
	}
	defer c.Disconnect(0)
	c.Publish("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId="+op, 1, false, " ")
	var a dpsAnswer
	select {
	case m := <-msgs:
		a = parseDPSAnswer(m)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("no answer to the poll")
	}
	if a.Status != http.StatusOK || a.str("status") != "assigned" {
		return fmt.Errorf("poll: %d %s", a.Status, a.Raw)
	}
	hub := a.str("registrationState", "assignedHub")
	tok, err := attest.Sign(attest.URLEncode(attest.DeviceResource(hub, id)), "", key, time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	o := mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetTLSConfig(cfg).SetClientID(id).
		SetUsername(hub + "/" + id + "/?api-version=2021-04-12").SetPassword(tok).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	hc := mqtt.NewClient(o)
	if tk := hc.Connect(); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		return fmt.Errorf("hub connect: %v", tk.Error())
	}
	hc.Disconnect(0)
	return nil
}
