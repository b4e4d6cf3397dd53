package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// Known answer of internal/attest (computed with Python's hmac, and
// recomputed with node and python3 by attest's TestSASCrossCheck): the
// device key of registration id sensor-0042 in a group whose key is kaGroupKey.
const (
	kaGroupKey  = "Zm9vYmFyLWdyb3VwLWtleS0wMTIzNDU2Nzg5YWJjZGVm"
	kaDeviceKey = "UkXPdktywHY4Y5MnYhyw8m73FuWa9l0Mst8zzTeK9RY="
)

// Two keys of 32 bytes for tests that choose them.
var (
	testKey1 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	testKey2 = base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
)

// doWith is do with extra request headers (If-Match).
func (e *env) doWith(role, method, path string, body any, header http.Header) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = strings.NewReader(string(j))
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+e.keys[role])
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{res.StatusCode, res.Header, b}
}

// compact is raw JSON without spaces (answers are indented).
func compact(raw json.RawMessage) string { return string(compactJSON(raw)) }

func ifMatchHeader(v string) http.Header { return http.Header{"If-Match": {v}} }

// symmetricEnrollment is a create request with generated keys.
func symmetricEnrollment(id string, st registry.EnrollmentStatus) CreateEnrollmentRequest {
	return CreateEnrollmentRequest{
		RegistrationID:     id,
		Attestation:        registry.Attestation{Type: registry.AttestationSymmetricKey},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: st},
	}
}

func TestIDScope(t *testing.T) {
	e := newEnv(t)
	var a, b IDScope
	if r := e.do(registry.RoleViewer, "GET", "/api/idscope", nil); r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	} else {
		r.decode(t, &a)
	}
	e.must(http.StatusOK, "GET", "/api/idscope", nil, &b)
	if !registry.ValidIDScope(a.IDScope) || a != b {
		t.Fatalf("ID scopes %q then %q", a.IDScope, b.IDScope)
	}
	if want, _ := e.store.IDScope(context.Background(), registry.DefaultOrgID); want != a.IDScope {
		t.Errorf("answered %q, the store has %q", a.IDScope, want)
	}
}

func TestCreateEnrollment(t *testing.T) {
	e := newEnv(t)
	leaf := testutil.NewCert(t, "unit-7", nil, testutil.CertOptions{})

	t.Run("generated keys, defaults, lower-cased id", func(t *testing.T) {
		var got registry.Enrollment
		r := e.must(http.StatusCreated, "POST", "/api/enrollments", symmetricEnrollment("Sensor-0001", ""), &got)
		if got.RegistrationID != "sensor-0001" || got.Status != registry.EnrollmentEnabled ||
			got.ReprovisionPolicy != registry.EnrollmentReprovisionMigrate || got.Version != 1 || got.OrgID != registry.DefaultOrgID {
			t.Errorf("got %+v", got)
		}
		sk := got.Attestation.SymmetricKey
		if sk == nil {
			t.Fatal("no keys in the create answer")
		}
		for _, k := range []string{sk.PrimaryKey, sk.SecondaryKey} {
			if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) != 64 {
				t.Errorf("generated key %q: %d bytes, %v", k, len(b), err)
			}
		}
		if sk.PrimaryKey == sk.SecondaryKey {
			t.Error("both generated keys are equal")
		}
		if r.header.Get("ETag") != `"1"` || r.header.Get("Location") != "/api/enrollments/sensor-0001" {
			t.Errorf("headers %v", r.header)
		}
		stored, err := e.store.GetEnrollment(context.Background(), registry.DefaultOrgID, "sensor-0001")
		if err != nil || stored.Attestation.SymmetricKey.PrimaryKey != sk.PrimaryKey {
			t.Errorf("stored %+v, %v", stored, err)
		}
	})

	cases := []struct {
		name  string
		req   CreateEnrollmentRequest
		check func(t *testing.T, got registry.Enrollment)
	}{
		{"chosen keys, disabled by a factory", CreateEnrollmentRequest{
			RegistrationID: "unit-0002", DeviceID: "Unit-0002",
			Attestation: registry.Attestation{Type: registry.AttestationSymmetricKey,
				SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: testKey1, SecondaryKey: testKey2}},
			EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentDisabled, ReprovisionPolicy: registry.EnrollmentReprovisionNever,
				AllocationPolicy: registry.AllocationStatic, IoTHubs: []string{"hub-1"},
				InitialTwin:   registry.InitialTwin{Tags: json.RawMessage(`{"line": 3}`)},
				CustomPayload: json.RawMessage(`{"site":"lyon"}`)},
		}, func(t *testing.T, got registry.Enrollment) {
			if got.Attestation.SymmetricKey.PrimaryKey != testKey1 || got.Attestation.SymmetricKey.SecondaryKey != testKey2 ||
				got.Status != registry.EnrollmentDisabled || got.DeviceID != "Unit-0002" || got.IoTHubs[0] != "hub-1" ||
				compact(got.InitialTwin.Tags) != `{"line":3}` || compact(got.CustomPayload) != `{"site":"lyon"}` {
				t.Errorf("got %+v", got)
			}
		}},
		{"x509 leaf", CreateEnrollmentRequest{
			RegistrationID: "unit-0003",
			Attestation:    registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{CertificatePEM: leaf.PEM()}},
		}, func(t *testing.T, got registry.Enrollment) {
			if got.Attestation.X509 == nil || got.Attestation.X509.Thumbprint != leaf.Fingerprint() {
				t.Errorf("got %+v", got.Attestation)
			}
		}},
		{"tpm", CreateEnrollmentRequest{
			RegistrationID: "unit-0004",
			Attestation: registry.Attestation{Type: registry.AttestationTPM,
				TPM: &registry.TPMAttestation{EndorsementKey: testKey1, StorageRootKey: testKey2}},
		}, func(t *testing.T, got registry.Enrollment) {
			if got.Attestation.TPM == nil || got.Attestation.TPM.EndorsementKey != testKey1 {
				t.Errorf("got %+v", got.Attestation)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got registry.Enrollment
			r := e.do(registry.RoleOperator, "POST", "/api/enrollments", c.req)
			if r.status != http.StatusCreated {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			r.decode(t, &got)
			c.check(t, got)
		})
	}

	t.Run("refused", func(t *testing.T) {
		sym := func(mod func(*CreateEnrollmentRequest)) CreateEnrollmentRequest {
			req := symmetricEnrollment("refused-1", "")
			mod(&req)
			return req
		}
		refused := []struct {
			name string
			body any
			want int
		}{
			{"id taken in another case", symmetricEnrollment("SENSOR-0001", ""), http.StatusConflict},
			{"certificate taken", CreateEnrollmentRequest{RegistrationID: "refused-1",
				Attestation: registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{CertificatePEM: leaf.PEM()}}}, http.StatusConflict},
			{"empty id", sym(func(r *CreateEnrollmentRequest) { r.RegistrationID = "" }), http.StatusUnprocessableEntity},
			{"bad id", sym(func(r *CreateEnrollmentRequest) { r.RegistrationID = "unit 1" }), http.StatusUnprocessableEntity},
			{"Kelvin sign", sym(func(r *CreateEnrollmentRequest) { r.RegistrationID = "unit-\u212a" }), http.StatusUnprocessableEntity},
			{"long id", sym(func(r *CreateEnrollmentRequest) { r.RegistrationID = strings.Repeat("a", 129) }), http.StatusUnprocessableEntity},
			{"short key", sym(func(r *CreateEnrollmentRequest) {
				r.Attestation.SymmetricKey = &registry.SymmetricKeyAttestation{PrimaryKey: "c2hvcnQ="}
			}), http.StatusUnprocessableEntity},
			{"secondary key alone", sym(func(r *CreateEnrollmentRequest) {
				r.Attestation.SymmetricKey = &registry.SymmetricKeyAttestation{SecondaryKey: testKey1}
			}), http.StatusUnprocessableEntity},
			{"two attestations", sym(func(r *CreateEnrollmentRequest) {
				r.Attestation.TPM = &registry.TPMAttestation{EndorsementKey: testKey1}
			}), http.StatusUnprocessableEntity},
			{"no attestation type", CreateEnrollmentRequest{RegistrationID: "refused-1"}, http.StatusUnprocessableEntity},
			{"x509 without certificate", CreateEnrollmentRequest{RegistrationID: "refused-1", Attestation: registry.Attestation{Type: registry.AttestationX509}}, http.StatusUnprocessableEntity},
			{"unknown status", sym(func(r *CreateEnrollmentRequest) { r.Status = "asleep" }), http.StatusUnprocessableEntity},
			{"unknown allocation", sym(func(r *CreateEnrollmentRequest) { r.AllocationPolicy = "nearest" }), http.StatusUnprocessableEntity},
			{"static without hub", sym(func(r *CreateEnrollmentRequest) { r.AllocationPolicy = registry.AllocationStatic }), http.StatusUnprocessableEntity},
			{"unknown reprovisioning", sym(func(r *CreateEnrollmentRequest) { r.ReprovisionPolicy = "sometimes" }), http.StatusUnprocessableEntity},
			{"tags not an object", sym(func(r *CreateEnrollmentRequest) { r.InitialTwin.Tags = json.RawMessage(`[1]`) }), http.StatusUnprocessableEntity},
			{"unknown field", `{"registrationId":"refused-1","attestation":{"type":"symmetricKey"},"colour":"red"}`, http.StatusBadRequest},
			{"malformed", `{"registrationId":`, http.StatusBadRequest},
			{"payload not JSON", `{"registrationId":"refused-1","attestation":{"type":"symmetricKey"},"payload":nope}`, http.StatusBadRequest},
		}
		for _, c := range refused {
			t.Run(c.name, func(t *testing.T) {
				r := e.do(registry.RoleOperator, "POST", "/api/enrollments", c.body)
				if r.status != c.want {
					t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
				}
				if got := r.err(t); got.Message == "" || strings.HasPrefix(got.Message, "invalid:") {
					t.Errorf("message %q", got.Message)
				}
			})
		}
		if _, err := e.store.GetEnrollment(context.Background(), registry.DefaultOrgID, "refused-1"); err == nil {
			t.Error("a refused request wrote an enrollment")
		}
	})
}

// TestEnrollmentKeysByRole: symmetric keys are shown to operator and
// admin keys only, on every route that answers an enrollment or a group.
func TestEnrollmentKeysByRole(t *testing.T) {
	e := newEnv(t)
	var en registry.Enrollment
	e.must(http.StatusCreated, "POST", "/api/enrollments", symmetricEnrollment("unit-1", registry.EnrollmentDisabled), &en)
	var g registry.EnrollmentGroup
	e.must(http.StatusCreated, "POST", "/api/enrollment-groups", CreateEnrollmentGroupRequest{ID: "line-1",
		Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey}}, &g)
	secrets := []string{en.Attestation.SymmetricKey.PrimaryKey, en.Attestation.SymmetricKey.SecondaryKey,
		g.Attestation.SymmetricKey.PrimaryKey, g.Attestation.SymmetricKey.SecondaryKey}

	routes := []struct{ method, path, body string }{
		{"GET", "/api/enrollments", ""},
		{"GET", "/api/enrollments/unit-1", ""},
		{"PATCH", "/api/enrollments/UNIT-1", `{"initialTwin":{"tags":{"k":1}}}`},
		{"POST", "/api/enrollments/unit-1/enable", ""},
		{"POST", "/api/enrollments/unit-1/disable", ""},
		{"GET", "/api/enrollment-groups", ""},
		{"GET", "/api/enrollment-groups/line-1", ""},
		{"PATCH", "/api/enrollment-groups/line-1", `{"iotHubs":["hub-a"]}`},
		{"POST", "/api/enrollment-groups/line-1/enable", ""},
	}
	for _, role := range []string{registry.RoleViewer, registry.RoleOEM, registry.RoleOperator, registry.RoleAdmin} {
		for _, rt := range routes {
			if rt.method != "GET" && role == registry.RoleViewer {
				continue
			}
			t.Run(role+" "+rt.method+" "+rt.path, func(t *testing.T) {
				var body any
				if rt.body != "" {
					body = rt.body
				}
				r := e.do(role, rt.method, rt.path, body)
				if r.status != http.StatusOK {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				shown := 0
				for _, s := range secrets {
					if strings.Contains(string(r.body), s) {
						shown++
					}
				}
				if see := canSeeKeys(&registry.APIKey{Role: role}); see != (shown > 0) {
					t.Errorf("keys shown: %d, want shown=%v:\n%s", shown, see, r.body)
				}
				if !strings.Contains(string(r.body), `"symmetricKey"`) && canSeeKeys(&registry.APIKey{Role: role}) {
					t.Errorf("no symmetricKey object for %s", role)
				}
			})
		}
	}
	// The keys are still stored: hiding them is only in the answers.
	stored, err := e.store.GetEnrollment(context.Background(), registry.DefaultOrgID, "unit-1")
	if err != nil || stored.Attestation.SymmetricKey == nil || stored.Attestation.SymmetricKey.PrimaryKey != secrets[0] {
		t.Fatalf("stored %+v, %v", stored, err)
	}
}

func TestEnrollmentActivation(t *testing.T) {
	e := newEnv(t)
	// The factory enrolls the unit disabled.
	var en registry.Enrollment
	e.must(http.StatusCreated, "POST", "/api/enrollments", symmetricEnrollment("press-0042", registry.EnrollmentDisabled), &en)

	// The machine maker activates it: twin, hub and status in one write.
	var got registry.Enrollment
	r := e.do(registry.RoleOEM, "POST", "/api/enrollments/PRESS-0042/enable",
		`{"initialTwin":{"tags":{"chassis":"C-17","location":"hall 3"},"desiredProperties":{"interval":30}},"iotHubs":["hub-eu"],"allocationPolicy":"static","payload":{"line":"A"}}`)
	if r.status != http.StatusOK {
		t.Fatalf("enable: %d %s", r.status, r.body)
	}
	r.decode(t, &got)
	if got.Status != registry.EnrollmentEnabled || got.Version != 2 || compact(got.InitialTwin.Tags) != `{"chassis":"C-17","location":"hall 3"}` ||
		compact(got.InitialTwin.DesiredProperties) != `{"interval":30}` || got.AllocationPolicy != registry.AllocationStatic ||
		len(got.IoTHubs) != 1 || compact(got.CustomPayload) != `{"line":"A"}` || r.header.Get("ETag") != `"2"` {
		t.Fatalf("enable: %+v (ETag %s)", got, r.header.Get("ETag"))
	}

	// Enabling again with nothing else is a no-op: no write, no new version.
	e.must(http.StatusOK, "POST", "/api/enrollments/press-0042/enable", nil, &got)
	if got.Version != 2 {
		t.Errorf("idempotent enable wrote version %d", got.Version)
	}
	e.must(http.StatusOK, "POST", "/api/enrollments/press-0042/enable", `{}`, &got)
	if got.Version != 2 {
		t.Errorf("idempotent enable with {} wrote version %d", got.Version)
	}

	// Activation settings through PATCH: null removes, [] empties.
	r = e.do(registry.RoleOEM, "PATCH", "/api/enrollments/press-0042",
		`{"initialTwin":{"tags":null},"payload":null,"iotHubs":[],"allocationPolicy":"hashed","status":"disabled"}`)
	if r.status != http.StatusOK {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	got = registry.Enrollment{} // absent fields must not keep what the last answer had
	r.decode(t, &got)
	if got.InitialTwin.Tags != nil || got.CustomPayload != nil || got.IoTHubs != nil || got.AllocationPolicy != registry.AllocationHashed ||
		got.Status != registry.EnrollmentDisabled || compact(got.InitialTwin.DesiredProperties) != `{"interval":30}` {
		t.Fatalf("patch: %+v", got)
	}

	t.Run("oem may change only activation fields", func(t *testing.T) {
		for _, body := range []string{
			`{"deviceId":"other"}`,
			`{"reprovisionPolicy":"never"}`,
			`{"attestation":{"type":"symmetricKey"}}`,
			`{"status":"enabled","deviceId":"other"}`,
		} {
			r := e.do(registry.RoleOEM, "PATCH", "/api/enrollments/press-0042", body)
			if r.status != http.StatusForbidden || !strings.Contains(r.err(t).Message, "needs operator") {
				t.Errorf("%s: status %d: %s", body, r.status, r.body)
			}
		}
		if r := e.do(registry.RoleViewer, "PATCH", "/api/enrollments/press-0042", `{"status":"enabled"}`); r.status != http.StatusForbidden {
			t.Errorf("viewer PATCH: %d", r.status)
		}
		if stored, _ := e.store.GetEnrollment(context.Background(), registry.DefaultOrgID, "press-0042"); stored.Version != got.Version {
			t.Errorf("refused PATCHes wrote version %d", stored.Version)
		}
	})

	t.Run("operator changes everything mutable", func(t *testing.T) {
		r := e.do(registry.RoleOperator, "PATCH", "/api/enrollments/press-0042",
			`{"deviceId":"press-42","reprovisionPolicy":"never","attestation":{"type":"symmetricKey"}}`)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var up registry.Enrollment
		r.decode(t, &up)
		if up.DeviceID != "press-42" || up.ReprovisionPolicy != registry.EnrollmentReprovisionNever ||
			up.Attestation.SymmetricKey == nil || up.Attestation.SymmetricKey.PrimaryKey == en.Attestation.SymmetricKey.PrimaryKey {
			t.Errorf("got %+v", up)
		}
		for _, c := range []struct {
			body string
			want int
		}{
			{`{"status":"asleep"}`, http.StatusUnprocessableEntity},
			{`{"allocationPolicy":"static"}`, http.StatusUnprocessableEntity},
			{`{"initialTwin":{"desiredProperties":"x"}}`, http.StatusUnprocessableEntity},
			{`{"attestation":{"type":"x509"}}`, http.StatusUnprocessableEntity},
			{`{"registrationId":"other"}`, http.StatusBadRequest},
			{`{"version":"1"}`, http.StatusBadRequest},
		} {
			if r := e.do(registry.RoleOperator, "PATCH", "/api/enrollments/press-0042", c.body); r.status != c.want {
				t.Errorf("%s: status %d, want %d: %s", c.body, r.status, c.want, r.body)
			}
		}
	})

	t.Run("missing", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{
			{"GET", "/api/enrollments/nope"},
			{"GET", "/api/enrollments/not%20valid"},
			{"PATCH", "/api/enrollments/nope"},
			{"POST", "/api/enrollments/nope/enable"},
			{"POST", "/api/enrollments/nope/disable"},
			{"DELETE", "/api/enrollments/nope"},
			{"GET", "/api/enrollment-groups/nope"},
			{"POST", "/api/enrollment-groups/nope/derive-key"},
		} {
			var body any
			if c.method == "PATCH" {
				body = `{}`
			}
			if c.path == "/api/enrollment-groups/nope/derive-key" {
				body = `{"registrationId":"x"}`
			}
			r := e.do(registry.RoleOperator, c.method, c.path, body)
			if r.status != http.StatusNotFound || r.err(t).Code != CodeNotFound {
				t.Errorf("%s %s: %d %s", c.method, c.path, r.status, r.body)
			}
		}
	})

	t.Run("delete", func(t *testing.T) {
		if r := e.do(registry.RoleOEM, "DELETE", "/api/enrollments/press-0042", nil); r.status != http.StatusForbidden {
			t.Errorf("oem delete: %d", r.status)
		}
		e.must(http.StatusNoContent, "DELETE", "/api/enrollments/Press-0042", nil, nil)
		if r := e.do(registry.RoleOperator, "GET", "/api/enrollments/press-0042", nil); r.status != http.StatusNotFound {
			t.Errorf("deleted: %d", r.status)
		}
	})
}

func TestEnrollmentVersions(t *testing.T) {
	e := newEnv(t)
	var en registry.Enrollment
	e.must(http.StatusCreated, "POST", "/api/enrollments", symmetricEnrollment("unit-v", ""), &en)

	cases := []struct {
		name   string
		header string
		body   string
		want   int
	}{
		{"If-Match current", `"1"`, `{"payload":1}`, http.StatusOK}, // → 2
		{"If-Match stale", `"1"`, `{"payload":2}`, http.StatusPreconditionFailed},
		{"If-Match weak and list", `"7", W/"2"`, `{"payload":3}`, http.StatusOK}, // → 3
		{"If-Match bare number", `3`, `{"payload":4}`, http.StatusOK},            // → 4
		{"If-Match any", `*`, `{"payload":5}`, http.StatusOK},                    // → 5
		{"version current", "", `{"payload":6,"version":5}`, http.StatusOK},      // → 6
		{"version stale", "", `{"payload":7,"version":5}`, http.StatusConflict},
		{"version ahead", "", `{"payload":7,"version":9}`, http.StatusConflict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h http.Header
			if c.header != "" {
				h = ifMatchHeader(c.header)
			}
			r := e.doWith(registry.RoleOEM, "PATCH", "/api/enrollments/unit-v", c.body, h)
			if r.status != c.want {
				t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
			}
			switch c.want {
			case http.StatusPreconditionFailed:
				if got := r.err(t); got.Code != CodePreconditionFailed || !strings.Contains(got.Message, "version") {
					t.Errorf("error %+v", got)
				}
			case http.StatusConflict:
				if got := r.err(t); got.Code != CodeConflict || !strings.Contains(got.Message, "is at version 6") {
					t.Errorf("error %+v", got)
				}
			}
		})
	}
	stored, _ := e.store.GetEnrollment(context.Background(), registry.DefaultOrgID, "unit-v")
	if stored.Version != 6 || string(stored.CustomPayload) != "6" {
		t.Fatalf("stored version %d payload %s, want 6 and 6", stored.Version, stored.CustomPayload)
	}
	if r := e.doWith(registry.RoleOEM, "POST", "/api/enrollments/unit-v/disable", nil, ifMatchHeader(`"5"`)); r.status != http.StatusPreconditionFailed {
		t.Errorf("stale disable: %d", r.status)
	}
	if r := e.doWith(registry.RoleOEM, "POST", "/api/enrollments/unit-v/disable", `{"version":5}`, nil); r.status != http.StatusConflict {
		t.Errorf("stale disable (version field): %d", r.status)
	}
	if r := e.doWith(registry.RoleOperator, "DELETE", "/api/enrollments/unit-v", nil, ifMatchHeader(`"5"`)); r.status != http.StatusPreconditionFailed {
		t.Errorf("stale delete: %d", r.status)
	}
	if r := e.doWith(registry.RoleOperator, "DELETE", "/api/enrollments/unit-v", nil, ifMatchHeader(`"6"`)); r.status != http.StatusNoContent {
		t.Errorf("delete at the current version: %d %s", r.status, r.body)
	}
}

// raceStore runs a hook before the first UpdateEnrollment or
// UpdateEnrollmentGroup: a write of someone else between a handler's read
// and its write.
type raceStore struct {
	registry.Store
	once   sync.Once
	before func(ctx context.Context)
}

func (s *raceStore) hook(ctx context.Context) { s.once.Do(func() { s.before(ctx) }) }

func (s *raceStore) UpdateEnrollment(ctx context.Context, en *registry.Enrollment) error {
	s.hook(ctx)
	return s.Store.UpdateEnrollment(ctx, en)
}

func (s *raceStore) UpdateEnrollmentGroup(ctx context.Context, g *registry.EnrollmentGroup) error {
	s.hook(ctx)
	return s.Store.UpdateEnrollmentGroup(ctx, g)
}

// TestEnrollmentLostUpdate: a write that gets in between the read and the
// write of a request is never overwritten, whether or not the request
// named a version.
func TestEnrollmentLostUpdate(t *testing.T) {
	for _, c := range []struct {
		name   string
		header http.Header
		want   int
	}{
		{"no precondition", nil, http.StatusConflict},
		{"If-Match", ifMatchHeader(`"1"`), http.StatusPreconditionFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.must(http.StatusCreated, "POST", "/api/enrollments", symmetricEnrollment("unit-r", registry.EnrollmentDisabled), nil)
			e.must(http.StatusCreated, "POST", "/api/enrollment-groups", CreateEnrollmentGroupRequest{ID: "grp-r",
				Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey}}, nil)
			rs := &raceStore{Store: e.store}
			rs.before = func(ctx context.Context) {
				en, err := e.store.GetEnrollment(ctx, registry.DefaultOrgID, "unit-r")
				if err != nil {
					t.Error(err)
					return
				}
				en.InitialTwin.Tags = json.RawMessage(`{"by":"someone else"}`)
				if err := e.store.UpdateEnrollment(ctx, en); err != nil {
					t.Error(err)
				}
			}
			e.api.store = rs
			r := e.doWith(registry.RoleOEM, "POST", "/api/enrollments/unit-r/enable", `{"payload":{"mine":true}}`, c.header)
			if r.status != c.want {
				t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
			}
			stored, _ := e.store.GetEnrollment(context.Background(), registry.DefaultOrgID, "unit-r")
			if stored.Status != registry.EnrollmentDisabled || string(stored.InitialTwin.Tags) != `{"by":"someone else"}` || stored.CustomPayload != nil {
				t.Errorf("stored %+v", stored)
			}

			// Groups take the same path.
			rs2 := &raceStore{Store: e.store, before: func(ctx context.Context) {
				g, _ := e.store.GetEnrollmentGroup(ctx, registry.DefaultOrgID, "grp-r")
				g.IoTHubs = []string{"hub-x"}
				if err := e.store.UpdateEnrollmentGroup(ctx, g); err != nil {
					t.Error(err)
				}
			}}
			e.api.store = rs2
			if r := e.doWith(registry.RoleOEM, "PATCH", "/api/enrollment-groups/grp-r", `{"status":"disabled"}`, c.header); r.status != c.want {
				t.Fatalf("group: status %d, want %d: %s", r.status, c.want, r.body)
			}
		})
	}
}

func TestEnrollmentGroups(t *testing.T) {
	e := newEnv(t)
	ca := testutil.NewCert(t, "Maker CA", nil, testutil.CertOptions{CA: true})
	leaf := testutil.NewCert(t, "unit", ca, testutil.CertOptions{})

	var g registry.EnrollmentGroup
	r := e.must(http.StatusCreated, "POST", "/api/enrollment-groups", CreateEnrollmentGroupRequest{ID: "Line-A",
		Attestation:        registry.GroupAttestation{Type: registry.AttestationSymmetricKey, SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: kaGroupKey}},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentDisabled}}, &g)
	if g.ID != "line-a" || g.Status != registry.EnrollmentDisabled || g.Attestation.SymmetricKey.SecondaryKey != "" || r.header.Get("ETag") != `"1"` {
		t.Fatalf("got %+v", g)
	}
	var x registry.EnrollmentGroup
	e.must(http.StatusCreated, "POST", "/api/enrollment-groups", CreateEnrollmentGroupRequest{ID: "line-b",
		Attestation: registry.GroupAttestation{Type: registry.AttestationX509, X509CA: &registry.X509CAAttestation{CACertificatePEM: ca.PEM()}}}, &x)
	if x.Attestation.X509CA == nil || x.Status != registry.EnrollmentEnabled {
		t.Fatalf("got %+v", x)
	}
	var gen registry.EnrollmentGroup
	e.must(http.StatusCreated, "POST", "/api/enrollment-groups", `{"enrollmentGroupId":"line-c","attestation":{"type":"symmetricKey","symmetricKey":{}}}`, &gen)
	if gen.Attestation.SymmetricKey == nil || gen.Attestation.SymmetricKey.PrimaryKey == "" || gen.Attestation.SymmetricKey.SecondaryKey == "" {
		t.Fatalf("no generated keys: %+v", gen.Attestation)
	}

	for _, c := range []struct {
		name string
		body any
		want int
	}{
		{"id taken", CreateEnrollmentGroupRequest{ID: "LINE-A", Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey}}, http.StatusConflict},
		{"leaf as CA", CreateEnrollmentGroupRequest{ID: "line-d", Attestation: registry.GroupAttestation{Type: registry.AttestationX509, X509CA: &registry.X509CAAttestation{CACertificatePEM: leaf.PEM()}}}, http.StatusUnprocessableEntity},
		{"tpm group", `{"enrollmentGroupId":"line-d","attestation":{"type":"tpm"}}`, http.StatusUnprocessableEntity},
		{"bad id", CreateEnrollmentGroupRequest{ID: "line d", Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey}}, http.StatusUnprocessableEntity},
		{"unknown field", `{"enrollmentGroupId":"line-d","attestation":{"type":"symmetricKey"},"registrationId":"x"}`, http.StatusBadRequest},
	} {
		if r := e.do(registry.RoleOperator, "POST", "/api/enrollment-groups", c.body); r.status != c.want {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.want, r.body)
		}
	}

	t.Run("derive-key", func(t *testing.T) {
		var k DerivedDeviceKey
		r := e.do(registry.RoleOperator, "POST", "/api/enrollment-groups/LINE-A/derive-key", `{"registrationId":"SENSOR-0042"}`)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		r.decode(t, &k)
		if k.RegistrationID != "sensor-0042" || k.DeviceKey != kaDeviceKey || k.SecondaryDeviceKey != "" {
			t.Fatalf("got %+v, want device key %s", k, kaDeviceKey)
		}
		// A group with two keys derives two.
		e.must(http.StatusOK, "POST", "/api/enrollment-groups/line-c/derive-key", DeriveDeviceKeyRequest{RegistrationID: "sensor-0042"}, &k)
		if k.DeviceKey == "" || k.SecondaryDeviceKey == "" || k.DeviceKey == k.SecondaryDeviceKey {
			t.Errorf("two keys: %+v", k)
		}
		for _, c := range []struct {
			role, path, body string
			want             int
		}{
			{registry.RoleOperator, "/api/enrollment-groups/line-b/derive-key", `{"registrationId":"sensor-0042"}`, http.StatusUnprocessableEntity},
			{registry.RoleOperator, "/api/enrollment-groups/line-a/derive-key", `{"registrationId":"bad id"}`, http.StatusUnprocessableEntity},
			{registry.RoleOperator, "/api/enrollment-groups/line-a/derive-key", `{"registrationId":""}`, http.StatusUnprocessableEntity},
			{registry.RoleOperator, "/api/enrollment-groups/line-a/derive-key", `{}`, http.StatusUnprocessableEntity},
			{registry.RoleOperator, "/api/enrollment-groups/line-a/derive-key", ``, http.StatusBadRequest},
			{registry.RoleOEM, "/api/enrollment-groups/line-a/derive-key", `{"registrationId":"sensor-0042"}`, http.StatusForbidden},
		} {
			var body any = c.body
			if c.body == "" {
				body = nil
			}
			if r := e.do(c.role, "POST", c.path, body); r.status != c.want {
				t.Errorf("%s %s %s: status %d, want %d: %s", c.role, c.path, c.body, r.status, c.want, r.body)
			}
		}
	})

	t.Run("update, enable, disable, delete", func(t *testing.T) {
		var up registry.EnrollmentGroup
		e.must(http.StatusOK, "POST", "/api/enrollment-groups/line-a/enable", `{"initialTwin":{"desiredProperties":{"fw":"2.1"}}}`, &up)
		if up.Status != registry.EnrollmentEnabled || compact(up.InitialTwin.DesiredProperties) != `{"fw":"2.1"}` || up.Version != 2 {
			t.Fatalf("enable: %+v", up)
		}
		if r := e.do(registry.RoleOEM, "PATCH", "/api/enrollment-groups/line-a", `{"reprovisionPolicy":"never"}`); r.status != http.StatusForbidden {
			t.Errorf("oem reprovisionPolicy: %d", r.status)
		}
		up = registry.EnrollmentGroup{}
		e.must(http.StatusOK, "PATCH", "/api/enrollment-groups/line-a",
			UpdateEnrollmentGroupRequest{Attestation: &registry.GroupAttestation{Type: registry.AttestationX509, X509CA: &registry.X509CAAttestation{CACertificatePEM: ca.PEM()}}}, &up)
		if up.Attestation.X509CA == nil || up.Attestation.SymmetricKey != nil {
			t.Errorf("attestation: %+v", up.Attestation)
		}
		e.must(http.StatusOK, "POST", "/api/enrollment-groups/line-a/disable", nil, &up)
		if up.Status != registry.EnrollmentDisabled {
			t.Errorf("disable: %+v", up)
		}
		e.must(http.StatusNoContent, "DELETE", "/api/enrollment-groups/LINE-A", nil, nil)
		if r := e.do(registry.RoleViewer, "GET", "/api/enrollment-groups/line-a", nil); r.status != http.StatusNotFound {
			t.Errorf("deleted: %d", r.status)
		}
	})
}

func TestEnrollmentPaging(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.must(http.StatusCreated, "POST", "/api/enrollments", symmetricEnrollment(fmt.Sprintf("Unit-%d", i), ""), nil)
		e.must(http.StatusCreated, "POST", "/api/enrollment-groups", CreateEnrollmentGroupRequest{ID: fmt.Sprintf("grp-%d", i),
			Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey}}, nil)
	}
	for _, c := range []struct{ path, field, want string }{
		{"/api/enrollments", "registrationId", "unit-0 unit-1 unit-2 unit-3 unit-4"},
		{"/api/enrollment-groups", "enrollmentGroupId", "grp-0 grp-1 grp-2 grp-3 grp-4"},
	} {
		var ids []string
		after, pages := "", 0
		for {
			var l List[map[string]any]
			e.must(http.StatusOK, "GET", c.path+"?limit=2&after="+url.QueryEscape(after), nil, &l)
			for _, it := range l.Items {
				ids = append(ids, it[c.field].(string))
			}
			pages++
			if after = l.Next; after == "" {
				break
			}
		}
		if got := strings.Join(ids, " "); got != c.want || pages != 3 {
			t.Errorf("%s: %d pages: %s", c.path, pages, got)
		}
		for _, q := range []string{"limit=-1", "limit=x"} {
			if r := e.do(registry.RoleViewer, "GET", c.path+"?"+q, nil); r.status != http.StatusBadRequest {
				t.Errorf("%s?%s: %d", c.path, q, r.status)
			}
		}
	}
	var l List[registry.Enrollment]
	e.must(http.StatusOK, "GET", "/api/enrollments", nil, &l)
	if len(l.Items) != 5 {
		t.Errorf("%d enrollments", len(l.Items))
	}
}

// TestEnrollmentAudit makes every kind of enrollment write and checks each
// left an event naming the key, and that no key is in any event.
func TestEnrollmentAudit(t *testing.T) {
	e := newEnv(t)
	var en registry.Enrollment
	e.must(http.StatusCreated, "POST", "/api/enrollments", symmetricEnrollment("unit-a", registry.EnrollmentDisabled), &en)
	e.must(http.StatusOK, "PATCH", "/api/enrollments/unit-a", `{"attestation":{"type":"symmetricKey"}}`, nil)
	e.must(http.StatusOK, "POST", "/api/enrollments/unit-a/enable", `{"initialTwin":{"tags":{"k":"v"}}}`, nil)
	e.must(http.StatusOK, "POST", "/api/enrollments/unit-a/enable", nil, nil) // no-op: no event
	e.must(http.StatusOK, "POST", "/api/enrollments/unit-a/disable", nil, nil)
	e.must(http.StatusNoContent, "DELETE", "/api/enrollments/unit-a", nil, nil)
	var g registry.EnrollmentGroup
	e.must(http.StatusCreated, "POST", "/api/enrollment-groups", CreateEnrollmentGroupRequest{ID: "grp-a",
		Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey}}, &g)
	e.must(http.StatusOK, "PATCH", "/api/enrollment-groups/grp-a", `{"iotHubs":["h1"]}`, nil)
	e.must(http.StatusOK, "POST", "/api/enrollment-groups/grp-a/disable", nil, nil)
	e.must(http.StatusOK, "POST", "/api/enrollment-groups/grp-a/enable", nil, nil)
	var dk DerivedDeviceKey
	e.must(http.StatusOK, "POST", "/api/enrollment-groups/grp-a/derive-key", `{"registrationId":"unit-b"}`, &dk)
	e.must(http.StatusNoContent, "DELETE", "/api/enrollment-groups/grp-a", nil, nil)
	// Refused writes leave no event.
	e.do(registry.RoleOperator, "POST", "/api/enrollments", `{"registrationId":"x"}`)
	e.do(registry.RoleOEM, "PATCH", "/api/enrollments/unit-a", `{"deviceId":"x"}`)

	r := e.must(http.StatusOK, "GET", "/api/audit", nil, nil)
	for _, s := range []string{en.Attestation.SymmetricKey.PrimaryKey, en.Attestation.SymmetricKey.SecondaryKey,
		g.Attestation.SymmetricKey.PrimaryKey, dk.DeviceKey, dk.SecondaryDeviceKey} {
		if strings.Contains(string(r.body), s) {
			t.Errorf("an audit event holds a key: %s", r.body)
		}
	}
	var l List[registry.AuditEvent]
	r.decode(t, &l)
	var got []string
	for _, ev := range l.Items {
		if ev.Actor != "api-key:"+e.ids[registry.RoleAdmin] || ev.Result != "success" || ev.Detail == "" {
			t.Errorf("event %+v", ev)
		}
		got = append([]string{ev.Action}, got...)
	}
	want := "enrollment.create enrollment.update enrollment.enable enrollment.disable enrollment.delete " +
		"enrollment-group.create enrollment-group.update enrollment-group.disable enrollment-group.enable enrollment-group.derive-key enrollment-group.delete"
	if strings.Join(got, " ") != want {
		t.Errorf("actions\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestIfMatch(t *testing.T) {
	for _, c := range []struct {
		h    string
		v    int64
		want bool
	}{
		{`"3"`, 3, true}, {`3`, 3, true}, {`W/"3"`, 3, true}, {`*`, 9, true}, {`"1", "3"`, 3, true},
		{`"3"`, 4, false}, {`"33"`, 3, false}, {`""`, 3, false}, {`"3`, 3, true}, {`x`, 3, false},
	} {
		if got := ifMatch(c.h, c.v); got != c.want {
			t.Errorf("ifMatch(%q, %d) = %v", c.h, c.v, got)
		}
	}
}
