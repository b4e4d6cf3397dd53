package server

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// Azure DPS end to end, with a client written from DPS's protocol
// documentation: registrations over MQTTS and HTTPS with symmetric keys
// (individual and group), the assigning/poll exchange, re-registration
// under each reprovisioning policy, the initial twin, and DPS's answers
// to every refusal.

const (
	dpsKey1 = "dGhpcyBpcyBhIDY0LWJ5dGUgZGV2aWNlIGtleSBmb3IgdGVzdHMgMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"
	dpsKey2 = "c2Vjb25kYXJ5IGtleSBmb3IgZHBzIHRlc3RzLCA2NCBieXRlcyBsb25nIDAxMjM0NTY3ODlhYmNkZWYwMTIz"
)

// dpsAnswer is any DPS answer, loosely typed.
type dpsAnswer struct {
	Status     int // the MQTT topic's or HTTP status
	RID        string
	RetryAfter string
	Body       map[string]any
	Raw        string
}

func (a dpsAnswer) str(path ...string) string {
	var v any = a.Body
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// parseDPSAnswer reads an answer's status, $rid and retry-after from its
// topic ("$dps/registrations/res/<status>/?$rid=…") and its JSON body;
// what does not parse is left zero.
func parseDPSAnswer(m mqtt.Message) dpsAnswer {
	a := dpsAnswer{Raw: string(m.Payload())}
	rest, _ := strings.CutPrefix(m.Topic(), "$dps/registrations/res/")
	status, query, _ := strings.Cut(rest, "/?")
	fmt.Sscan(status, &a.Status)
	if q, err := url.ParseQuery(query); err == nil {
		a.RID, a.RetryAfter = q.Get("$rid"), q.Get("retry-after")
	}
	json.Unmarshal(m.Payload(), &a.Body)
	return a
}

// dpsSession is one MQTTS registration session.
type dpsSession struct {
	t    *testing.T
	c    mqtt.Client
	msgs chan mqtt.Message
	rid  atomic.Int64
}

func (n *node) tlsConfig(t *testing.T) *tls.Config {
	pool, _ := n.caPool(t)
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

func dpsUsername(scope, regID string) string {
	return scope + "/registrations/" + regID + "/api-version=2019-03-31&ClientVersion=zerotouch-test"
}

func dpsToken(t testing.TB, scope, regID, key string, ttl time.Duration) string {
	t.Helper()
	tok, err := attest.Sign(attest.RegistrationResource(scope, regID), attest.RegistrationKeyName, key, time.Now().Add(ttl))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dialDPS opens a registration session on broker (a paho URL: ssl://,
// tcp://, wss://, ws://) and subscribes to its answers, which arrive on
// the channel. It fails no test: goroutines use it too.
func dialDPS(broker string, tlsCfg *tls.Config, clientID, username, password string) (mqtt.Client, chan mqtt.Message, error) {
	o := mqtt.NewClientOptions().AddBroker(broker).SetTLSConfig(tlsCfg).SetClientID(clientID).SetUsername(username).
		SetPassword(password).SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, nil, fmt.Errorf("connect %s as %s: %v", broker, username, tok.Error())
	}
	msgs := make(chan mqtt.Message, 10)
	tok := c.Subscribe("$dps/registrations/res/#", 1, func(_ mqtt.Client, m mqtt.Message) { msgs <- m })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("subscribe: %v", tok.Error())
	}
	if st := tok.(*mqtt.SubscribeToken).Result()["$dps/registrations/res/#"]; st != 1 {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("SUBACK granted %d, want 1", st)
	}
	return c, msgs, nil
}

// dpsConnect opens a registration session on addr (MQTTS unless tlsCfg is nil).
func (n *node) dpsConnect(t *testing.T, addr string, tlsCfg *tls.Config, username, password, clientID string) *dpsSession {
	t.Helper()
	scheme := "ssl://"
	if tlsCfg == nil {
		scheme = "tcp://"
	}
	return dpsSessionOn(t, scheme+addr, tlsCfg, username, password, clientID)
}

// dpsSessionOn is dialDPS for the test's goroutine, closed when it ends.
func dpsSessionOn(t *testing.T, broker string, tlsCfg *tls.Config, username, password, clientID string) *dpsSession {
	t.Helper()
	c, msgs, err := dialDPS(broker, tlsCfg, clientID, username, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return &dpsSession{t: t, c: c, msgs: msgs}
}

// request publishes body on topic (with a fresh $rid appended) and
// returns the answer with that $rid.
func (s *dpsSession) request(topicBase, extra, body string) dpsAnswer {
	s.t.Helper()
	rid := fmt.Sprint(s.rid.Add(1))
	topic := topicBase + "?$rid=" + rid + extra
	if tok := s.c.Publish(topic, 1, false, body); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		s.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
	select {
	case m := <-s.msgs:
		a := parseDPSAnswer(m)
		if a.RID != rid {
			s.t.Fatalf("answer topic %q does not echo $rid=%s", m.Topic(), rid)
		}
		if a.Body == nil {
			s.t.Fatalf("answer %q on %q is not a JSON object", m.Payload(), m.Topic())
		}
		return a
	case <-time.After(10 * time.Second):
		s.t.Fatalf("no answer to %s", topic)
	}
	return dpsAnswer{}
}

func (s *dpsSession) register(regID, payload string) dpsAnswer {
	body := `{"registrationId":"` + regID + `"`
	if payload != "" {
		body += `,"payload":` + payload
	}
	return s.request("$dps/registrations/PUT/iotdps-register/", "", body+"}")
}

func (s *dpsSession) poll(operationID string) dpsAnswer {
	return s.request("$dps/registrations/GET/iotdps-get-operationstatus/", "&operationId="+operationID, " ")
}

// registerMQTT runs a whole registration and returns the assigned answer.
func (n *node) registerMQTT(t *testing.T, scope, regID, key string) dpsAnswer {
	t.Helper()
	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.tlsConfig(t), dpsUsername(scope, regID), dpsToken(t, scope, regID, key, time.Hour), regID)
	a := s.register(regID, "")
	if a.Status != 202 || a.str("status") != "assigning" || a.str("operationId") == "" || a.RetryAfter == "" {
		t.Fatalf("register %s: %d %s, want 202 assigning with an operationId and retry-after", regID, a.Status, a.Raw)
	}
	done := s.poll(a.str("operationId"))
	if done.Status != 200 || done.str("status") != "assigned" {
		t.Fatalf("poll %s: %d %s, want 200 assigned", regID, done.Status, done.Raw)
	}
	return done
}

func (n *node) idScope(t *testing.T) string {
	t.Helper()
	scope, err := n.srv.Store().IDScope(t.Context(), registry.DefaultOrgID)
	if err != nil {
		t.Fatal(err)
	}
	return scope
}

func enrollment(regID string, status registry.EnrollmentStatus, policy registry.EnrollmentReprovisionPolicy) *registry.Enrollment {
	return &registry.Enrollment{OrgID: registry.DefaultOrgID, RegistrationID: regID,
		Attestation: registry.Attestation{Type: registry.AttestationSymmetricKey,
			SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: dpsKey1, SecondaryKey: dpsKey2}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: status, ReprovisionPolicy: policy,
			InitialTwin: registry.InitialTwin{Tags: json.RawMessage(`{"chassis":"CH-7","site":{"line":3}}`),
				DesiredProperties: json.RawMessage(`{"interval":5}`)},
			CustomPayload: json.RawMessage(`{"firmware":"2.1"}`)}}
}

// attributes returns a device's attributes of scope as key → JSON value.
func (n *node) attributes(t *testing.T, deviceID, scope string) map[string]string {
	t.Helper()
	var out struct {
		Attributes []struct {
			Key   string          `json:"key"`
			Value json.RawMessage `json:"value"`
		} `json:"attributes"`
	}
	if code := n.api("GET", "/api/devices/"+deviceID+"/attributes?scope="+scope, nil, &out); code != 200 {
		t.Fatalf("GET attributes: %d", code)
	}
	m := map[string]string{}
	for _, a := range out.Attributes {
		m[a.Key] = compact(a.Value)
	}
	return m
}

func TestDPSSymmetricKeyMQTT(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	if err := st.CreateEnrollment(ctx, enrollment("sensor-1", registry.EnrollmentEnabled, registry.EnrollmentReprovisionMigrate)); err != nil {
		t.Fatal(err)
	}

	a := n.registerMQTT(t, scope, "sensor-1", dpsKey2) // the secondary key works too
	hub := n.srv.builtinHubName()
	if a.str("registrationState", "assignedHub") != hub || a.str("registrationState", "deviceId") != "sensor-1" ||
		a.str("registrationState", "status") != "assigned" || a.str("registrationState", "substatus") != "initialAssignment" ||
		a.str("registrationState", "payload") != `{"firmware":"2.1"}` || a.str("registrationState", "etag") == "" {
		t.Fatalf("registration state = %s", a.Raw)
	}
	if !strings.Contains(hub, ":") {
		t.Fatalf("hub name %q lacks the MQTTS port, which is not 8883 here", hub)
	}
	dev, err := st.GetDeviceByName(ctx, registry.DefaultOrgID, "sensor-1")
	if err != nil {
		t.Fatal(err)
	}
	cred, _, err := st.FindActiveCredential(ctx, registry.CredentialSymmetricKey, "sensor-1")
	if err != nil || cred.DeviceID != dev.ID || cred.SymmetricKey.PrimaryKey != dpsKey1 {
		t.Fatalf("hub credential = %+v, %v", cred, err)
	}
	if got := n.attributes(t, dev.ID, "server"); got["chassis"] != `"CH-7"` || got["site"] != `{"line":3}` {
		t.Fatalf("tags as server attributes = %v", got)
	}
	if got := n.attributes(t, dev.ID, "shared"); got["interval"] != "5" {
		t.Fatalf("desired properties as shared attributes = %v", got)
	}

	// Re-registration under reprovision-and-migrate: same device, new
	// operation, the twin as the operator changed it, one active credential.
	if code := n.api("PUT", "/api/devices/"+dev.ID+"/attributes/shared", map[string]any{"interval": 60}, nil); code != 200 {
		t.Fatalf("set shared attribute: %d", code)
	}
	again := n.registerMQTT(t, scope, "sensor-1", dpsKey1)
	if again.str("operationId") == a.str("operationId") || again.str("registrationState", "deviceId") != "sensor-1" ||
		again.str("registrationState", "substatus") != "deviceDataMigrated" {
		t.Fatalf("re-registration = %s", again.Raw)
	}
	if got := n.attributes(t, dev.ID, "shared"); got["interval"] != "60" {
		t.Fatalf("migrate kept shared attributes %v, want interval 60", got)
	}
	if devs, _, _ := st.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{}); len(devs) != 1 {
		t.Fatalf("%d devices after two registrations, want 1", len(devs))
	}
	// The same key as before: the credential is kept, none piles up.
	if creds, _ := st.ListCredentials(ctx, registry.DefaultOrgID, dev.ID); len(creds) != 1 || creds[0].Status != registry.CredentialActive {
		t.Fatalf("credentials after re-registration with the same key = %+v, want the one active", creds)
	}

	// reprovision-and-reset restores the initial twin.
	e, _ := st.GetEnrollment(ctx, registry.DefaultOrgID, "sensor-1")
	e.ReprovisionPolicy = registry.EnrollmentReprovisionReset
	if err := st.UpdateEnrollment(ctx, e); err != nil {
		t.Fatal(err)
	}
	reset := n.registerMQTT(t, scope, "sensor-1", dpsKey1)
	if s := reset.str("registrationState", "substatus"); s != "reprovisionedToInitialAssignment" && s != "deviceDataReset" {
		t.Fatalf("substatus after a reset = %q", s)
	}
	if got := n.attributes(t, dev.ID, "shared"); got["interval"] != "5" {
		t.Fatalf("reset left shared attributes %v, want interval 5", got)
	}

	// An old operation id no longer answers; an unknown one neither.
	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.tlsConfig(t), dpsUsername(scope, "sensor-1"), dpsToken(t, scope, "sensor-1", dpsKey1, time.Hour), "sensor-1")
	if old := s.poll(a.str("operationId")); old.Status != 404 || old.str("errorCode") != "404002" {
		t.Fatalf("poll of a superseded operation = %d %s, want 404", old.Status, old.Raw)
	}
}

func TestDPSGroupEnrollment(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	g := &registry.EnrollmentGroup{OrgID: registry.DefaultOrgID, ID: "line-3",
		Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey,
			SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: dpsKey1}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionNever}}
	if err := n.srv.Store().CreateEnrollmentGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"unit-a", "unit-b"} {
		key, err := attest.DeriveDeviceKey(dpsKey1, id)
		if err != nil {
			t.Fatal(err)
		}
		a := n.registerMQTT(t, scope, id, key)
		if a.str("registrationState", "deviceId") != id {
			t.Fatalf("group registration of %s = %s", id, a.Raw)
		}
		r, err := n.srv.Store().GetRegistration(ctx, registry.DefaultOrgID, id)
		if err != nil || r.EnrollmentGroupID != "line-3" {
			t.Fatalf("registration record = %+v, %v", r, err)
		}
	}
	// The group key itself is not a device key.
	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.tlsConfig(t), dpsUsername(scope, "unit-c"), dpsToken(t, scope, "unit-c", dpsKey1, time.Hour), "unit-c")
	if a := s.register("unit-c", ""); a.Status != 401 || a.str("errorCode") != "401002" {
		t.Fatalf("registration signed with the group key = %d %s, want 401", a.Status, a.Raw)
	}
	// Blocking one device of the group: its registration answers disabled.
	d, _ := n.srv.Store().GetDeviceByName(ctx, registry.DefaultOrgID, "unit-a")
	if _, err := n.srv.Store().SetDeviceStatus(ctx, registry.DefaultOrgID, d.ID, registry.DeviceDisabled); err != nil {
		t.Fatal(err)
	}
	key, _ := attest.DeriveDeviceKey(dpsKey1, "unit-a")
	s = n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.tlsConfig(t), dpsUsername(scope, "unit-a"), dpsToken(t, scope, "unit-a", key, time.Hour), "unit-a")
	if a := s.register("unit-a", ""); a.Status != 200 || a.str("status") != "disabled" || a.str("registrationState", "status") != "disabled" {
		t.Fatalf("registration of a blocked device = %d %s, want status disabled", a.Status, a.Raw)
	}
}

func TestDPSRefusals(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	if err := st.CreateEnrollment(ctx, enrollment("on", registry.EnrollmentEnabled, registry.EnrollmentReprovisionMigrate)); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateEnrollment(ctx, enrollment("off", registry.EnrollmentDisabled, registry.EnrollmentReprovisionMigrate)); err != nil {
		t.Fatal(err)
	}
	mqtts, tlsCfg := n.srv.MQTTSAddr().String(), n.tlsConfig(t)
	user := dpsUsername
	tests := []struct {
		name, addr, username, password, regID, body string
		plain                                       bool
		status                                      int
		outcome, errorCode                          string
	}{
		{name: "unknown registration", username: user(scope, "ghost"), password: dpsToken(t, scope, "ghost", dpsKey1, time.Hour), regID: "ghost", status: 401, errorCode: "401002"},
		{name: "wrong key", username: user(scope, "on"), password: dpsToken(t, scope, "on", "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=", time.Hour), regID: "on", status: 401, errorCode: "401002"},
		{name: "expired token", username: user(scope, "on"), password: dpsToken(t, scope, "on", dpsKey1, -time.Hour), regID: "on", status: 401, errorCode: "401002"},
		{name: "token for another id", username: user(scope, "on"), password: dpsToken(t, scope, "off", dpsKey1, time.Hour), regID: "on", status: 401, errorCode: "401002"},
		{name: "not a token", username: user(scope, "on"), password: "secret", regID: "on", status: 401, errorCode: "401002"},
		{name: "unknown scope", username: user("0ne00000000", "on"), password: dpsToken(t, "0ne00000000", "on", dpsKey1, time.Hour), regID: "on", status: 401, errorCode: "401002"},
		{name: "disabled enrollment", username: user(scope, "off"), password: dpsToken(t, scope, "off", dpsKey1, time.Hour), regID: "off", status: 200, outcome: "disabled", errorCode: "401002"},
		{name: "malformed body", username: user(scope, "on"), password: dpsToken(t, scope, "on", dpsKey1, time.Hour), regID: "on", body: `{"registrationId":`, status: 400, errorCode: "400004"},
		{name: "body for another id", username: user(scope, "on"), password: dpsToken(t, scope, "on", dpsKey1, time.Hour), regID: "on", body: `{"registrationId":"off"}`, status: 400, errorCode: "400004"},
		{name: "bad api-version", username: scope + "/registrations/on/api-version=1999-01-01", password: dpsToken(t, scope, "on", dpsKey1, time.Hour), regID: "on", status: 400, errorCode: "400004"},
		{name: "plain MQTT", addr: n.mqtt, plain: true, username: user(scope, "on"), password: dpsToken(t, scope, "on", dpsKey1, time.Hour), regID: "on", status: 401, errorCode: "401002"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, cfg := mqtts, tlsCfg
			if tc.plain {
				addr, cfg = tc.addr, nil
			}
			s := n.dpsConnect(t, addr, cfg, tc.username, tc.password, tc.regID)
			body := tc.body
			if body == "" {
				body = `{"registrationId":"` + tc.regID + `"}`
			}
			a := s.request("$dps/registrations/PUT/iotdps-register/", "", body)
			if a.Status != tc.status {
				t.Fatalf("answer %d %s, want %d", a.Status, a.Raw, tc.status)
			}
			if tc.outcome != "" {
				if a.str("status") != tc.outcome || a.str("registrationState", "errorCode") != tc.errorCode || a.str("registrationState", "errorMessage") == "" {
					t.Fatalf("answer %s, want status %s with errorCode %s and a message", a.Raw, tc.outcome, tc.errorCode)
				}
			} else if a.str("errorCode") != tc.errorCode || a.str("message") == "" || a.str("trackingId") == "" || a.str("timestampUtc") == "" {
				t.Fatalf("answer %s, want DPS's error body with errorCode %s", a.Raw, tc.errorCode)
			}
		})
	}
	if devs, _, _ := st.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{}); len(devs) != 0 {
		t.Fatalf("refused registrations created %d devices", len(devs))
	}
	evs, err := st.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range evs {
		if e.Action == "register" && e.Result != "success" && e.Dialect == "azure-dps" {
			refused++
		}
	}
	if refused != len(tests) {
		t.Fatalf("%d refused registrations audited, want %d", refused, len(tests))
	}
}

func TestDPSHTTPS(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	if err := n.srv.Store().CreateEnrollment(ctx, enrollment("web-1", registry.EnrollmentEnabled, registry.EnrollmentReprovisionMigrate)); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: n.tlsConfig(t)}, Timeout: 10 * time.Second}
	base := "https://" + n.srv.HTTPSAddr().String() + "/" + scope + "/registrations/web-1"
	do := func(method, path, auth, body string) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s %s: Content-Type %q, want JSON (the SDKs parse only that)", method, path, ct)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, resp.Header, m
	}
	tok := dpsToken(t, scope, "web-1", dpsKey1, time.Hour)
	code, h, m := do("PUT", "/register?api-version=2019-03-31", tok, `{"registrationId":"web-1"}`)
	if code != 202 || m["status"] != "assigning" || h.Get("Retry-After") == "" {
		t.Fatalf("PUT register = %d %v (Retry-After %q), want 202 assigning", code, m, h.Get("Retry-After"))
	}
	op, _ := m["operationId"].(string)
	code, _, m = do("GET", "/operations/"+op+"?api-version=2019-03-31", tok, "{}")
	state, _ := m["registrationState"].(map[string]any)
	if code != 200 || m["status"] != "assigned" || state["deviceId"] != "web-1" || state["assignedHub"] != n.srv.builtinHubName() {
		t.Fatalf("GET operation = %d %v, want 200 assigned", code, m)
	}
	for _, tc := range []struct {
		name, method, path, auth string
		status                   int
		code                     float64
	}{
		{"no api-version", "PUT", "/register", tok, 400, 400004},
		{"unsupported api-version", "PUT", "/register?api-version=2017-01-01", tok, 400, 400004},
		{"no token", "PUT", "/register?api-version=2019-03-31", "", 401, 401002},
		{"wrong method", "POST", "/register?api-version=2019-03-31", tok, 405, 405000},
		{"unknown operation", "GET", "/operations/nope?api-version=2019-03-31", tok, 404, 404002},
	} {
		code, _, m := do(tc.method, tc.path, tc.auth, `{"registrationId":"web-1"}`)
		if code != tc.status || m["errorCode"] != tc.code {
			t.Errorf("%s: %d %v, want %d with errorCode %v", tc.name, code, m, tc.status, tc.code)
		}
	}
	// The plain HTTP listener does not serve DPS: tokens stay off the wire.
	resp, err := http.Post(n.baseURL+"/"+scope+"/registrations/web-1/register?api-version=2019-03-31", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("DPS over plain HTTP: %d, want 404", resp.StatusCode)
	}
}

// TestDPSFactoryScenario is the factory seed, end to end: the component
// maker enrolls a unit disabled with its leaf certificate; its first boot
// is refused; the machine maker (an oem key) enables it with tags and
// desired properties; the next boot registers, and the device, on its
// hub with the same certificate, reads its twin and sends a message every
// few seconds.
func TestDPSFactoryScenario(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	leaf := testutil.NewCert(t, "press-0042", nil, testutil.CertOptions{})
	if code := n.api("POST", "/api/enrollments", map[string]any{"registrationId": "press-0042", "status": "disabled",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{"certificatePem": leaf.PEM()}}}, nil); code != 201 {
		t.Fatalf("factory enrollment: HTTP %d", code)
	}

	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.x509TLS(t, leaf), dpsUsername(scope, "press-0042"), "", "press-0042")
	if a := s.register("press-0042", ""); a.Status != 200 || a.str("status") != "disabled" {
		t.Fatalf("first boot while disabled = %d %s, want status disabled", a.Status, a.Raw)
	}
	if _, err := n.srv.Store().GetDeviceByName(ctx, registry.DefaultOrgID, "press-0042"); err == nil {
		t.Fatal("the refused boot created a device")
	}

	var oem struct {
		Key string `json:"key"`
	}
	if code := n.api("POST", "/api/apikeys", map[string]any{"name": "machine maker", "role": "oem"}, &oem); code != 201 || oem.Key == "" {
		t.Fatalf("oem key: HTTP %d", code)
	}
	code, body := n.apiAs(oem.Key, "POST", "/api/enrollments/press-0042/enable",
		`{"initialTwin":{"tags":{"customer":"ACME","chassis":"P-42"},"desiredProperties":{"telemetryInterval":5}}}`)
	if code != 200 {
		t.Fatalf("activation by the machine maker: %d %s", code, body)
	}

	a := n.registerX509MQTT(t, scope, "press-0042", leaf)
	hubName, deviceID := a.str("registrationState", "assignedHub"), a.str("registrationState", "deviceId")
	dev, err := n.srv.Store().GetDeviceByName(ctx, registry.DefaultOrgID, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.attributes(t, dev.ID, "server"); got["customer"] != `"ACME"` || got["chassis"] != `"P-42"` {
		t.Fatalf("tags = %v", got)
	}

	// On its hub, with the same certificate and the hub's user name.
	o := mqtt.NewClientOptions().AddBroker("ssl://" + n.srv.MQTTSAddr().String()).SetTLSConfig(n.x509TLS(t, leaf)).
		SetClientID(deviceID).SetUsername(hubName + "/" + deviceID + "/?api-version=2021-04-12").
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	c := mqtt.NewClient(o)
	if tk := c.Connect(); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatalf("hub CONNECT: %v", tk.Error())
	}
	defer c.Disconnect(0)
	twins := make(chan mqtt.Message, 1)
	if tk := c.Subscribe("$iothub/twin/res/#", 0, func(_ mqtt.Client, m mqtt.Message) { twins <- m }); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatal(tk.Error())
	}
	c.Publish("$iothub/twin/GET/?$rid=1", 0, false, " ")
	select {
	case m := <-twins:
		var twin struct {
			Desired map[string]json.RawMessage `json:"desired"`
		}
		if json.Unmarshal(m.Payload(), &twin) != nil || string(twin.Desired["telemetryInterval"]) != "5" {
			t.Fatalf("the device's twin = %s", m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no twin answer")
	}
	for i := 1; i <= 3; i++ {
		if tk := c.Publish("devices/"+deviceID+"/messages/events/", 1, false, fmt.Sprintf(`{"strokes":%d}`, i)); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
			t.Fatalf("message %d: %v", i, tk.Error())
		}
	}
	if got := compact(n.latest(dev.ID)["strokes"].Value); got != "3" {
		t.Fatalf("latest strokes = %s, want 3", got)
	}
}

// TestDPSCustomAllocation: an enrollment with the custom policy is
// allocated by the webhook (DPS's AllocationRequest/Response), which also
// gives the initial twin and the payload; a webhook that is down gives the
// device a retriable answer and writes nothing.
func TestDPSCustomAllocation(t *testing.T) {
	var n *node
	var down atomic.Bool
	var asked atomic.Value
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		asked.Store(string(body))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"iotHubHostName":%q,"initialTwin":{"tags":{"tenant":"acme"},"properties":{"desired":{"mode":"eco"}}},"payload":{"line":"L4"}}`,
			n.srv.builtinHubName())
	}))
	defer hook.Close()
	n = startNodeWith(t, "", func(c *config.Config) { c.DPSWebhookURL = hook.URL + "/allocate?code=secret" })
	ctx := t.Context()
	scope := n.idScope(t)
	e := enrollment("custom-1", registry.EnrollmentEnabled, registry.EnrollmentReprovisionMigrate)
	e.AllocationPolicy = registry.AllocationCustom
	if err := n.srv.Store().CreateEnrollment(ctx, e); err != nil {
		t.Fatal(err)
	}

	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.tlsConfig(t), dpsUsername(scope, "custom-1"), dpsToken(t, scope, "custom-1", dpsKey1, time.Hour), "custom-1")
	down.Store(true)
	a := s.register("custom-1", `{"model":"press"}`)
	if a.Status != 503 || a.RetryAfter == "" || a.str("errorCode") != "503000" {
		t.Fatalf("registration while the webhook is down = %d %s (retry-after %q), want 503 with a retry-after", a.Status, a.Raw, a.RetryAfter)
	}
	if _, err := n.srv.Store().GetDeviceByName(ctx, registry.DefaultOrgID, "custom-1"); err == nil {
		t.Fatal("a registration that failed allocation created a device")
	}

	down.Store(false)
	a = s.register("custom-1", `{"model":"press"}`)
	if a.Status != 202 {
		t.Fatalf("register = %d %s", a.Status, a.Raw)
	}
	done := s.poll(a.str("operationId"))
	if done.str("registrationState", "payload") != `{"line":"L4"}` || done.str("registrationState", "assignedHub") != n.srv.builtinHubName() {
		t.Fatalf("assigned = %s, want the webhook's hub and payload", done.Raw)
	}
	var req struct {
		IndividualEnrollment map[string]any `json:"individualEnrollment"`
		DeviceRuntimeContext struct {
			RegistrationID string          `json:"registrationId"`
			Payload        json.RawMessage `json:"payload"`
		} `json:"deviceRuntimeContext"`
		LinkedHubs []string `json:"linkedHubs"`
	}
	raw, _ := asked.Load().(string)
	if err := json.Unmarshal([]byte(raw), &req); err != nil || req.DeviceRuntimeContext.RegistrationID != "custom-1" ||
		compact(req.DeviceRuntimeContext.Payload) != `{"model":"press"}` || len(req.LinkedHubs) != 1 || req.IndividualEnrollment == nil {
		t.Fatalf("the webhook was asked %s", raw)
	}
	if strings.Contains(raw, dpsKey1) {
		t.Fatal("the webhook was sent the enrollment's key")
	}
	dev, err := n.srv.Store().GetDeviceByName(ctx, registry.DefaultOrgID, "custom-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := n.attributes(t, dev.ID, "server"); got["tenant"] != `"acme"` || got["chassis"] != "" {
		t.Fatalf("tags = %v, want the webhook's twin instead of the enrollment's", got)
	}
	if got := n.attributes(t, dev.ID, "shared"); got["mode"] != `"eco"` || got["interval"] != "" {
		t.Fatalf("desired = %v, want the webhook's twin", got)
	}
	// Both registrations are audited with the webhook's calls.
	evs, err := n.srv.Store().ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, e := range evs {
		if e.Action == "register" && strings.Contains(e.Detail, "custom allocation webhook: ") {
			notes = append(notes, e.Result)
		}
	}
	if len(notes) != 2 {
		t.Fatalf("audit events mentioning the webhook: %v, want the refusal and the success", notes)
	}
}

// TestDPSRegistrationConflicts: a re-registration whose new device id is
// another device's is refused (409) before anything is written — the
// device's twin stays as it was; and the azure-dps profile, deleted by an
// operator once its devices are gone, comes back with the next device.
func TestDPSRegistrationConflicts(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	for _, id := range []string{"unit-a", "unit-b"} {
		if err := st.CreateEnrollment(ctx, enrollment(id, registry.EnrollmentEnabled, registry.EnrollmentReprovisionReset)); err != nil {
			t.Fatal(err)
		}
		n.registerMQTT(t, scope, id, dpsKey1)
	}
	a, _ := st.GetDeviceByName(ctx, registry.DefaultOrgID, "unit-a")
	if code := n.api("PUT", "/api/devices/"+a.ID+"/attributes/shared", map[string]any{"setpoint": 21}, nil); code != 200 {
		t.Fatalf("set desired: %d", code)
	}
	e, _ := st.GetEnrollment(ctx, registry.DefaultOrgID, "unit-a")
	e.DeviceID = "unit-b"
	if err := st.UpdateEnrollment(ctx, e); err != nil {
		t.Fatal(err)
	}
	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.tlsConfig(t), dpsUsername(scope, "unit-a"), dpsToken(t, scope, "unit-a", dpsKey1, time.Hour), "unit-a")
	if r := s.register("unit-a", ""); r.Status != 409 || r.str("errorCode") != "409000" {
		t.Fatalf("re-registration onto a taken device id = %d %s, want 409", r.Status, r.Raw)
	}
	if got := n.attributes(t, a.ID, "shared"); got["setpoint"] != "21" {
		t.Fatalf("a refused re-registration reset the twin: %v", got)
	}

	// The operator clears everything, profile included.
	for _, id := range []string{"unit-a", "unit-b"} {
		d, _ := st.GetDeviceByName(ctx, registry.DefaultOrgID, id)
		if err := st.DeleteDevice(ctx, registry.DefaultOrgID, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	p, err := st.GetDevice(ctx, registry.DefaultOrgID, a.ID)
	if err == nil {
		t.Fatalf("device %v still there", p)
	}
	if err := st.DeleteProfile(ctx, registry.DefaultOrgID, a.ProfileID); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateEnrollment(ctx, enrollment("unit-c", registry.EnrollmentEnabled, registry.EnrollmentReprovisionReset)); err != nil {
		t.Fatal(err)
	}
	n.registerMQTT(t, scope, "unit-c", dpsKey1)
}
