package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// Azure DPS with X.509 attestation, end to end over real sockets: the
// device's TLS client certificate is its evidence (MQTTS: no password;
// HTTPS: no Authorization header), its common name its registration id;
// it then connects to its hub with the same certificate.

// x509TLS is the node's client TLS configuration with the device's
// certificate (and the intermediates it sends).
func (n *node) x509TLS(t *testing.T, leaf *testutil.TestCert, chain ...*testutil.TestCert) *tls.Config {
	cfg := n.tlsConfig(t)
	cfg.Certificates = []tls.Certificate{leaf.TLS(chain...)}
	return cfg
}

// registerX509MQTT runs a whole registration over MQTTS with a client
// certificate and returns the assigned answer.
func (n *node) registerX509MQTT(t *testing.T, scope, regID string, leaf *testutil.TestCert, chain ...*testutil.TestCert) dpsAnswer {
	t.Helper()
	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.x509TLS(t, leaf, chain...), dpsUsername(scope, regID), "", regID)
	a := s.register(regID, "")
	if a.Status != 202 || a.str("status") != "assigning" || a.str("operationId") == "" {
		t.Fatalf("register %s: %d %s, want 202 assigning", regID, a.Status, a.Raw)
	}
	done := s.poll(a.str("operationId"))
	if done.Status != 200 || done.str("status") != "assigned" {
		t.Fatalf("poll %s: %d %s, want 200 assigned", regID, done.Status, done.Raw)
	}
	return done
}

// hubConnect opens an MQTT session on the hub's MQTTS listener with the
// device's certificate and client id, as an Azure IoT device does after
// its registration; it returns the CONNECT's error.
func (n *node) hubConnect(t *testing.T, clientID string, leaf *testutil.TestCert, chain ...*testutil.TestCert) error {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("ssl://" + n.srv.MQTTSAddr().String()).SetClientID(clientID).
		SetTLSConfig(n.x509TLS(t, leaf, chain...)).SetProtocolVersion(4).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(false).SetConnectRetry(false)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return tok.Error()
	}
	c.Disconnect(100)
	return nil
}

func x509Enrollment(regID string, leaf *testutil.TestCert) *registry.Enrollment {
	return &registry.Enrollment{OrgID: registry.DefaultOrgID, RegistrationID: regID,
		Attestation: registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{CertificatePEM: leaf.PEM()}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionMigrate,
			InitialTwin: registry.InitialTwin{DesiredProperties: json.RawMessage(`{"interval":7}`)}}}
}

func TestDPSX509Individual(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	leaf := testutil.NewCert(t, "press-0042", nil, testutil.CertOptions{}) // self-signed: the enrollment names it
	if err := st.CreateEnrollment(ctx, x509Enrollment("press-0042", leaf)); err != nil {
		t.Fatal(err)
	}

	a := n.registerX509MQTT(t, scope, "press-0042", leaf)
	if a.str("registrationState", "deviceId") != "press-0042" || a.str("registrationState", "assignedHub") != n.srv.builtinHubName() ||
		a.str("registrationState", "substatus") != "initialAssignment" {
		t.Fatalf("registration state = %s", a.Raw)
	}
	cred, dev, err := st.FindActiveCredential(ctx, registry.CredentialX509, leaf.Fingerprint())
	if err != nil || dev.Name != "press-0042" || cred.Fingerprint != leaf.Fingerprint() || !strings.Contains(cred.CertificatePEM, "BEGIN CERTIFICATE") {
		t.Fatalf("hub credential = %+v of %+v, %v", cred, dev, err)
	}
	if got := n.attributes(t, dev.ID, "shared"); got["interval"] != "7" {
		t.Fatalf("initial twin = %v", got)
	}
	// The device connects to its hub with the same certificate.
	if err := n.hubConnect(t, "press-0042", leaf); err != nil {
		t.Fatalf("hub CONNECT with the registered certificate: %v", err)
	}

	// A new certificate, enrolled by the operator: the re-registration
	// rotates the hub credential; the old certificate no longer connects.
	renewed := testutil.NewCert(t, "press-0042", nil, testutil.CertOptions{})
	e, _ := st.GetEnrollment(ctx, registry.DefaultOrgID, "press-0042")
	e.Attestation.X509 = &registry.X509Attestation{CertificatePEM: renewed.PEM()}
	if err := st.UpdateEnrollment(ctx, e); err != nil {
		t.Fatal(err)
	}
	// The old certificate is no longer the enrolled one.
	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.x509TLS(t, leaf), dpsUsername(scope, "press-0042"), "", "press-0042")
	if r := s.register("press-0042", ""); r.Status != 401 || r.str("errorCode") != "401002" || !strings.Contains(r.str("message"), "not the enrolled certificate") {
		t.Fatalf("registration with the replaced certificate = %d %s, want 401", r.Status, r.Raw)
	}
	again := n.registerX509MQTT(t, scope, "press-0042", renewed)
	if again.str("registrationState", "deviceId") != "press-0042" || again.str("registrationState", "substatus") != "deviceDataMigrated" {
		t.Fatalf("re-registration = %s", again.Raw)
	}
	creds, _ := st.ListCredentials(ctx, registry.DefaultOrgID, dev.ID)
	active := 0
	for _, c := range creds {
		if c.Status == registry.CredentialActive {
			active++
			if c.Fingerprint != renewed.Fingerprint() {
				t.Errorf("active credential %s, want the renewed certificate's", c.Fingerprint)
			}
		}
	}
	if active != 1 {
		t.Fatalf("%d active credentials after rotation, want 1", active)
	}
	if err := n.hubConnect(t, "press-0042", renewed); err != nil {
		t.Fatalf("hub CONNECT with the renewed certificate: %v", err)
	}
	if err := n.hubConnect(t, "press-0042", leaf); err == nil {
		t.Fatal("the replaced certificate still connects to the hub")
	}
	if devs, _, _ := st.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{}); len(devs) != 1 {
		t.Fatalf("%d devices, want 1", len(devs))
	}
}

// TestDPSX509Group: a group of a CA that is not verified admits nobody;
// the operator proves possession of the CA's key through the API; then a
// device whose chain goes through an intermediate registers (over MQTTS
// and over HTTPS) and connects to its hub.
func TestDPSX509Group(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	root := testutil.NewCert(t, "Maker Root CA", nil, testutil.CertOptions{CA: true})
	line := testutil.NewCert(t, "Maker Line 3 CA", root, testutil.CertOptions{CA: true})
	unit := testutil.NewCert(t, "unit-0001", line, testutil.CertOptions{})

	body := map[string]any{"enrollmentGroupId": "maker", "attestation": map[string]any{"type": "x509",
		"x509": map[string]any{"caCertificatePem": root.PEM()}}, "reprovisionPolicy": "never"}
	if code := n.api("POST", "/api/enrollment-groups", body, nil); code != http.StatusCreated {
		t.Fatalf("create group: %d", code)
	}
	s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), n.x509TLS(t, unit, line), dpsUsername(scope, "unit-0001"), "", "unit-0001")
	if a := s.register("unit-0001", ""); a.Status != 401 || a.str("errorCode") != "401002" ||
		!strings.Contains(a.str("message"), "the group's CA certificate is not verified") || a.str("trackingId") == "" {
		t.Fatalf("registration under an unverified CA = %d %s, want 401", a.Status, a.Raw)
	}
	if devs, _, _ := st.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{}); len(devs) != 0 {
		t.Fatalf("an unverified CA created %d devices", len(devs))
	}

	// Proof of possession through the management API.
	var vc struct {
		Code string `json:"verificationCode"`
	}
	if code := n.api("POST", "/api/enrollment-groups/maker/verification-code", nil, &vc); code != http.StatusOK || vc.Code == "" {
		t.Fatalf("verification-code: %d %+v", code, vc)
	}
	proof := testutil.NewCert(t, vc.Code, root, testutil.CertOptions{})
	var g registry.EnrollmentGroup
	if code := n.api("POST", "/api/enrollment-groups/maker/verify", map[string]any{"certificatePem": proof.PEM()}, &g); code != http.StatusOK || !g.Attestation.X509CA.Verified {
		t.Fatalf("verify: %d %+v", code, g.Attestation.X509CA)
	}

	a := n.registerX509MQTT(t, scope, "unit-0001", unit, line)
	if a.str("registrationState", "deviceId") != "unit-0001" {
		t.Fatalf("group registration = %s", a.Raw)
	}
	r, err := st.GetRegistration(ctx, registry.DefaultOrgID, "unit-0001")
	if err != nil || r.EnrollmentGroupID != "maker" {
		t.Fatalf("registration record = %+v, %v", r, err)
	}
	if err := n.hubConnect(t, "unit-0001", unit, line); err != nil {
		t.Fatalf("hub CONNECT with the group device's certificate: %v", err)
	}

	// HTTPS: the certificate of the TLS handshake, no Authorization header.
	unit2 := testutil.NewCert(t, "unit-0002", line, testutil.CertOptions{})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: n.x509TLS(t, unit2, line)}, Timeout: 10 * time.Second}
	base := "https://" + n.srv.HTTPSAddr().String() + "/" + scope + "/registrations/unit-0002"
	do := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, m
	}
	code, m := do("PUT", "/register?api-version=2019-03-31", `{"registrationId":"unit-0002"}`)
	if code != 202 || m["status"] != "assigning" {
		t.Fatalf("PUT register = %d %v, want 202", code, m)
	}
	op, _ := m["operationId"].(string)
	code, m = do("GET", "/operations/"+op+"?api-version=2019-03-31", "")
	state, _ := m["registrationState"].(map[string]any)
	if code != 200 || m["status"] != "assigned" || state["deviceId"] != "unit-0002" {
		t.Fatalf("GET operation = %d %v, want assigned", code, m)
	}
	if err := n.hubConnect(t, "unit-0002", unit2, line); err != nil {
		t.Fatalf("hub CONNECT of the HTTPS-registered device: %v", err)
	}

	// Replacing the group's CA resets its verification.
	other := testutil.NewCert(t, "Maker Root CA 2", nil, testutil.CertOptions{CA: true})
	patch := map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{"caCertificatePem": other.PEM()}}}
	g = registry.EnrollmentGroup{}
	if code := n.api("PATCH", "/api/enrollment-groups/maker", patch, &g); code != http.StatusOK || g.Attestation.X509CA.Verified {
		t.Fatalf("replace CA: %d %+v, want unverified", code, g.Attestation.X509CA)
	}
}

// TestDPSX509Refusals: each X.509 refusal answers 401 with DPS's error
// body and a message that says why, is audited, and creates no device.
func TestDPSX509Refusals(t *testing.T) {
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	enrolled := testutil.NewCert(t, "press-0001", nil, testutil.CertOptions{})
	if err := st.CreateEnrollment(ctx, x509Enrollment("press-0001", enrolled)); err != nil {
		t.Fatal(err)
	}
	keyed := enrollment("keyed", registry.EnrollmentEnabled, registry.EnrollmentReprovisionMigrate)
	if err := st.CreateEnrollment(ctx, keyed); err != nil {
		t.Fatal(err)
	}
	root := testutil.NewCert(t, "Maker Root CA", nil, testutil.CertOptions{CA: true})
	verified := &registry.X509CAAttestation{CACertificatePEM: root.PEM()}
	verified.MarkVerified(time.Now())
	if err := st.CreateEnrollmentGroup(ctx, &registry.EnrollmentGroup{OrgID: registry.DefaultOrgID, ID: "maker",
		Attestation:        registry.GroupAttestation{Type: registry.AttestationX509, X509CA: verified},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentEnabled, ReprovisionPolicy: registry.EnrollmentReprovisionMigrate}}); err != nil {
		t.Fatal(err)
	}
	foreign := testutil.NewCert(t, "Other Maker CA", nil, testutil.CertOptions{CA: true})
	// Names root as its issuer, signed by another key.
	forgedCA := testutil.NewCert(t, "", nil, testutil.CertOptions{CA: true, Subject: &root.Cert.Subject})

	tests := []struct {
		name, regID string
		tls         *tls.Config
		msg         string
	}{
		{"thumbprint mismatch", "press-0001", n.x509TLS(t, testutil.NewCert(t, "press-0001", nil, testutil.CertOptions{})), "not the enrolled certificate"},
		{"common name mismatch", "press-0002", n.x509TLS(t, enrolled), `subject common name "press-0001" is not the registration id "press-0002"`},
		{"server authentication only", "unit-0001", n.x509TLS(t, testutil.NewCert(t, "unit-0001", root, testutil.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})), "client authentication"},
		{"foreign CA", "unit-0002", n.x509TLS(t, testutil.NewCert(t, "unit-0002", foreign, testutil.CertOptions{}), foreign), "chains to no enrollment group's CA"},
		{"not chained to the group's CA", "unit-0003", n.x509TLS(t, testutil.NewCert(t, "unit-0003", forgedCA, testutil.CertOptions{})), "does not chain to the group's CA"},
		{"enrollment with symmetric keys", "keyed", n.x509TLS(t, testutil.NewCert(t, "keyed", root, testutil.CertOptions{})), "does not attest with X.509"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := n.dpsConnect(t, n.srv.MQTTSAddr().String(), tc.tls, dpsUsername(scope, tc.regID), "", tc.regID)
			a := s.register(tc.regID, "")
			if a.Status != 401 || a.str("errorCode") != "401002" || a.str("trackingId") == "" || a.str("timestampUtc") == "" {
				t.Fatalf("answer %d %s, want 401 with DPS's error body", a.Status, a.Raw)
			}
			// What fails before the evidence matches an enrollment is
			// answered without details (they would tell which ids are
			// enrolled); the audit trail has them.
			generic := strings.HasPrefix(tc.name, "foreign") || strings.HasPrefix(tc.name, "enrollment with")
			if got := a.str("message"); generic && !strings.HasPrefix(got, "Unauthorized") || !generic && !strings.Contains(got, tc.msg) {
				t.Fatalf("message %q, want it to say %q", got, tc.msg)
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
	var details strings.Builder
	for _, e := range evs {
		details.WriteString(e.Detail + "\n")
		if e.Action == "register" && e.Result != "success" && e.Dialect == "azure-dps" {
			refused++
		}
	}
	if refused != len(tests) {
		t.Fatalf("%d refused registrations audited, want %d", refused, len(tests))
	}
	for _, tc := range tests {
		if !strings.Contains(details.String(), tc.msg) {
			t.Errorf("no audit event says %q", tc.msg)
		}
	}
}
