//go:build tpmsim

package server

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/go-tpm/tpm2"

	"github.com/zerotouch/zerotouch/internal/attest/tpmsim"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Azure DPS TPM attestation end to end, against a software TPM (the
// Microsoft reference TPM that go-tpm-tools/simulator builds with cgo):
// the device's side runs the TPM commands the Azure IoT C SDK runs
// (hsm_client_tpm.c: EK and SRK as TSS_CreatePersistentKey makes them,
// insert_key_in_tpm, SignData) and speaks DPS over HTTPS as
// prov_transport_http_client.c does: register with the EK and SRK and no
// token, get 401 with the authentication key, import it, register again
// with a TPM-signed token, poll, import the hub key of the assigned
// answer, and connect to the hub with a TPM-signed token.
//
// Run with: go test -tags tpmsim -run DPSTPM ./internal/server/

// tpmDevice is a simulated TPM with the C SDK's EK and SRK, at its
// persistent handles, and the key it imported last.
type tpmDevice struct {
	*tpmsim.Device
	t     *testing.T
	idKey tpm2.AuthHandle // the imported HMAC key, once activated
}

// newTPMDevice starts a simulated TPM (seed makes it another TPM) with
// the C SDK's EK template (TCG RSA-2048, the standard PolicySecret(EH)
// policy) and SRK template (RSA-2048 storage key, AES-128-CFB).
func newTPMDevice(t *testing.T, seed int64) *tpmDevice {
	t.Helper()
	return &tpmDevice{Device: tpmsim.New(t, seed, tpm2.RSAEKTemplate, tpm2.RSASRKTemplate, true), t: t}
}

func (d *tpmDevice) ekB64() string  { return base64.StdEncoding.EncodeToString(d.EKPublic) }
func (d *tpmDevice) srkB64() string { return base64.StdEncoding.EncodeToString(d.SRKPublic) }

// importKey runs insert_key_in_tpm on a base64 authentication key
// (tpmsim.Device.Activate), then persists the key at DPS_ID_KEY_HANDLE in
// place of the previous one, as the SDK keeps its id key.
func (d *tpmDevice) importKey(authenticationKey string) error {
	d.t.Helper()
	blob, err := base64.StdEncoding.DecodeString(authenticationKey)
	if err != nil {
		return err
	}
	load, err := d.Activate(blob)
	if err != nil {
		return err
	}
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	if d.idKey.Handle != 0 {
		if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: &tpm2.NamedHandle{Handle: d.idKey.Handle, Name: d.idKey.Name},
			PersistentHandle: dpsIDKeyHandle}).Execute(d.TPM); err != nil {
			return fmt.Errorf("TPM2_EvictControl (remove the old id key): %w", err)
		}
	}
	if _, err := (tpm2.EvictControl{Auth: owner, ObjectHandle: &tpm2.NamedHandle{Handle: load.Handle, Name: load.Name},
		PersistentHandle: dpsIDKeyHandle}).Execute(d.TPM); err != nil {
		return fmt.Errorf("TPM2_EvictControl: %w", err)
	}
	if _, err := (tpm2.FlushContext{FlushHandle: load.Handle}).Execute(d.TPM); err != nil {
		return fmt.Errorf("TPM2_FlushContext: %w", err)
	}
	d.idKey = tpm2.AuthHandle{Handle: dpsIDKeyHandle, Name: load.Name, Auth: tpm2.PasswordAuth(nil)}
	return nil
}

// dpsIDKeyHandle is where the C SDK keeps the imported key
// (DPS_ID_KEY_HANDLE, HR_PERSISTENT | 0x100).
const dpsIDKeyHandle tpm2.TPMHandle = 0x81000100

// sasToken signs a token with the imported key, as the C SDK's
// prov_auth_construct_sas_token: the signed string is the URL-encoded
// resource, "\n", the expiry; sig is the URL-encoded base64 TPM2_HMAC.
func (d *tpmDevice) sasToken(resource, keyName string, expiry time.Time) string {
	d.t.Helper()
	sr := attest.URLEncode(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sum, err := d.HMAC(d.idKey, []byte(sr+"\n"+se))
	if err != nil {
		d.t.Fatal(err)
	}
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + attest.URLEncode(base64.StdEncoding.EncodeToString(sum)) + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + keyName
	}
	return tok
}

// dpsHTTPS is a DPS HTTPS client for one registration.
type dpsHTTPS struct {
	t      *testing.T
	client *http.Client
	base   string // https://host/<scope>/registrations/<id>
}

func (n *node) dpsHTTPS(t *testing.T, scope, regID string) *dpsHTTPS {
	return &dpsHTTPS{t: t, base: "https://" + n.srv.HTTPSAddr().String() + "/" + scope + "/registrations/" + regID,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: n.tlsConfig(t)}, Timeout: 10 * time.Second}}
}

// do sends a request as prov_transport_http_client.c does and returns the
// status and the JSON answer.
func (c *dpsHTTPS) do(method, path, auth, body string) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+path, strings.NewReader(body))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// register is the SDK's TPM_SECURITY_INFO body.
func (c *dpsHTTPS) register(regID string, d *tpmDevice, auth string) (int, map[string]any) {
	c.t.Helper()
	body := fmt.Sprintf(`{"registrationId":%q,"tpm":{"endorsementKey":%q, "storageRootKey":%q}}`, regID, d.ekB64(), d.srkB64())
	return c.do("PUT", "/register?api-version=2021-06-01", auth, body)
}

func tpmEnrollment(regID, ek string, status registry.EnrollmentStatus) *registry.Enrollment {
	e := enrollment(regID, status, registry.EnrollmentReprovisionReset)
	e.Attestation = registry.Attestation{Type: registry.AttestationTPM, TPM: &registry.TPMAttestation{EndorsementKey: ek}}
	return e
}

func str(m map[string]any, path ...string) string {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[p]
	}
	s, _ := v.(string)
	if f, ok := v.(float64); ok {
		s = strconv.FormatFloat(f, 'f', -1, 64)
	}
	return s
}

func TestDPSTPMHTTPS(t *testing.T) {
	// Another TPM first: the simulator runs one TPM at a time.
	other := newTPMDevice(t, 12)
	otherEK, otherSRK := other.ekB64(), other.srkB64()
	other.TPM.Close()

	d := newTPMDevice(t, 11)
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	st := n.srv.Store()
	const regID = "tpm-unit-1"
	if err := st.CreateEnrollment(ctx, tpmEnrollment(regID, d.ekB64(), registry.EnrollmentEnabled)); err != nil {
		t.Fatal(err)
	}
	c := n.dpsHTTPS(t, scope, regID)

	start := time.Now()
	// 1. No token: 401 with the activation blob and the key name.
	code, m := c.register(regID, d, "")
	if code != 401 || str(m, "authenticationKey") == "" || str(m, "keyName") != "registration" || str(m, "status") != "" {
		t.Fatalf("first registration = %d %v, want 401 with authenticationKey and keyName", code, m)
	}
	if err := d.importKey(str(m, "authenticationKey")); err != nil {
		t.Fatalf("the device cannot import the authentication key: %v", err)
	}
	// 2. The TPM-signed token: 202 assigning, then the poll: 200 assigned.
	tok := d.sasToken(scope+"/registrations/"+regID, str(m, "keyName"), time.Now().Add(time.Hour))
	code, m = c.register(regID, d, tok)
	if code != 202 || str(m, "status") != "assigning" || str(m, "operationId") == "" {
		t.Fatalf("registration with the TPM-signed token = %d %v, want 202 assigning", code, m)
	}
	code, m = c.do("GET", "/operations/"+str(m, "operationId")+"?api-version=2021-06-01", tok, "")
	hub, deviceID := str(m, "registrationState", "assignedHub"), str(m, "registrationState", "deviceId")
	if code != 200 || str(m, "status") != "assigned" || deviceID != regID || hub != n.srv.builtinHubName() ||
		str(m, "registrationState", "tpm", "authenticationKey") == "" {
		t.Fatalf("poll = %d %v, want 200 assigned with registrationState.tpm.authenticationKey", code, m)
	}
	t.Logf("TPM registration (challenge, activation in the simulator, register, poll) took %v", time.Since(start))

	// The assigned answer's key is the device's hub key: the SDK imports
	// it and signs its hub tokens with the TPM.
	if err := d.importKey(str(m, "registrationState", "tpm", "authenticationKey")); err != nil {
		t.Fatalf("the device cannot import its hub key: %v", err)
	}
	cred, _, err := st.FindActiveCredential(ctx, registry.CredentialSymmetricKey, deviceID)
	if err != nil || cred.SymmetricKey == nil {
		t.Fatalf("hub credential: %+v, %v", cred, err)
	}
	hubTok := d.sasToken(attest.DeviceResource(hub, deviceID), "", time.Now().Add(time.Hour))
	if _, err := (attest.SASVerifier{}).VerifyDevice(hubTok, attest.DeviceResource(hub, deviceID), cred.SymmetricKey.PrimaryKey); err != nil {
		t.Fatalf("the TPM-signed hub token does not verify with the device's credential: %v", err)
	}
	o := mqtt.NewClientOptions().AddBroker("ssl://" + n.srv.MQTTSAddr().String()).SetTLSConfig(n.tlsConfig(t)).
		SetClientID(deviceID).SetUsername(hub + "/" + deviceID + "/?api-version=2021-04-12").SetPassword(hubTok).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
	hc := mqtt.NewClient(o)
	if tk := hc.Connect(); !tk.WaitTimeout(5*time.Second) || tk.Error() != nil {
		t.Fatalf("hub CONNECT with the TPM-signed token: %v", tk.Error())
	}
	hc.Disconnect(0)
	r, err := st.GetRegistration(ctx, registry.DefaultOrgID, regID)
	if err != nil || r.HubDeviceID != regID {
		t.Fatalf("registration record %+v, %v", r, err)
	}

	// A token verifies once: the key it was signed with is consumed.
	if code, m := c.register(regID, d, tok); code != 401 || str(m, "errorCode") != "401002" {
		t.Fatalf("replayed token = %d %v, want 401", code, m)
	}

	// Re-registration: a new challenge, a new key; the old one no longer works.
	code, m = c.register(regID, d, "")
	if code != 401 || str(m, "authenticationKey") == "" {
		t.Fatalf("second challenge = %d %v", code, m)
	}
	if err := d.importKey(str(m, "authenticationKey")); err != nil {
		t.Fatal(err)
	}
	code, m = c.register(regID, d, d.sasToken(scope+"/registrations/"+regID, "registration", time.Now().Add(time.Hour)))
	if code != 202 {
		t.Fatalf("re-registration = %d %v, want 202", code, m)
	}
	if _, err := (attest.SASVerifier{}).VerifyDevice(hubTok, attest.DeviceResource(hub, deviceID), activeKey(t, n, deviceID)); err == nil {
		t.Fatal("the old hub key still verifies after re-registration")
	}
	if devs, _, _ := st.ListDevices(ctx, registry.DefaultOrgID, registry.DeviceFilter{}); len(devs) != 1 {
		t.Fatalf("%d devices after two registrations, want 1", len(devs))
	}

	// Refusals.
	bad := func(name string, code int, m map[string]any, status int, errorCode string) {
		t.Helper()
		if code != status || str(m, "errorCode") != errorCode || str(m, "authenticationKey") != "" {
			t.Errorf("%s: %d %v, want %d with errorCode %s and no key", name, code, m, status, errorCode)
		}
	}
	otherTPM := &tpmDevice{Device: &tpmsim.Device{EKPublic: mustB64(t, otherEK), SRKPublic: mustB64(t, otherSRK)}}
	code, m = c.register(regID, otherTPM, "")
	bad("another TPM's EK", code, m, 401, "401002")
	code, m = n.dpsHTTPS(t, scope, "tpm-ghost").register("tpm-ghost", d, "")
	bad("no enrollment", code, m, 401, "401002")
	code, m = c.do("PUT", "/register?api-version=2021-06-01", "", `{"registrationId":"`+regID+`","tpm":{"endorsementKey":"AAEC","storageRootKey":"`+d.srkB64()+`"}}`)
	bad("malformed EK", code, m, 400, "400004")
	code, m = c.do("PUT", "/register?api-version=2021-06-01", "", `{"registrationId":"`+regID+`","tpm":{"endorsementKey":"`+d.ekB64()+`"}}`)
	bad("no SRK", code, m, 400, "400004")
	// A device that could not import the key signs with something else.
	code, m = c.register(regID, d, "")
	if code != 401 {
		t.Fatalf("challenge = %d %v", code, m)
	}
	forged, _ := attest.Sign(attest.RegistrationResource(scope, regID), "registration", dpsKey1, time.Now().Add(time.Hour))
	code, m = c.register(regID, d, forged)
	bad("token not signed with the key", code, m, 401, "401002")
}

// The enrollment's status is told only once the TPM proved itself; an
// EK enrolled in another encoding (bare TPMT_PUBLIC) is the same EK.
func TestDPSTPMDisabledEnrollment(t *testing.T) {
	d := newTPMDevice(t, 13)
	n := startNode(t, "")
	ctx := t.Context()
	scope := n.idScope(t)
	const regID = "tpm-unit-2"
	bare := base64.StdEncoding.EncodeToString(d.EKPublic[2:])
	if err := n.srv.Store().CreateEnrollment(ctx, tpmEnrollment(regID, bare, registry.EnrollmentDisabled)); err != nil {
		t.Fatal(err)
	}
	c := n.dpsHTTPS(t, scope, regID)
	code, m := c.register(regID, d, "")
	if code != 401 || str(m, "authenticationKey") == "" {
		t.Fatalf("challenge = %d %v", code, m)
	}
	if err := d.importKey(str(m, "authenticationKey")); err != nil {
		t.Fatal(err)
	}
	code, m = c.register(regID, d, d.sasToken(scope+"/registrations/"+regID, "registration", time.Now().Add(time.Hour)))
	if code != 200 || str(m, "status") != "disabled" {
		t.Fatalf("registration of a disabled enrollment = %d %v, want status disabled", code, m)
	}
}

func activeKey(t *testing.T, n *node, deviceID string) string {
	t.Helper()
	cred, _, err := n.srv.Store().FindActiveCredential(t.Context(), registry.CredentialSymmetricKey, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	return cred.SymmetricKey.PrimaryKey
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
