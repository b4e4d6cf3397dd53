package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

const missingID = "00000000-0000-0000-0000-00000000dead"

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name   string
		header string
		want   int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"empty bearer", "Bearer ", http.StatusUnauthorized},
		{"wrong scheme", "Basic " + e.keys[registry.RoleAdmin], http.StatusUnauthorized},
		{"unknown key", "Bearer not-a-key", http.StatusUnauthorized},
		{"key without scheme", e.keys[registry.RoleAdmin], http.StatusUnauthorized},
		{"valid key", "Bearer " + e.keys[registry.RoleViewer], http.StatusOK},
		{"scheme is case-insensitive", "bearer " + e.keys[registry.RoleViewer], http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL+"/api/profiles", nil)
			if c.header != "" {
				req.Header.Set("Authorization", c.header)
			}
			res, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != c.want {
				t.Fatalf("status %d, want %d", res.StatusCode, c.want)
			}
			if c.want == http.StatusUnauthorized && res.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	t.Run("error body", func(t *testing.T) {
		r := e.do("", "POST", "/api/profiles", `{"name":"x"}`)
		if got := r.err(t); got.Code != CodeUnauthorized {
			t.Errorf("code %q", got.Code)
		}
	})
	t.Run("openapi needs no key", func(t *testing.T) {
		r := e.do("", "GET", "/api/openapi.yaml", nil)
		if r.status != http.StatusOK || !strings.HasPrefix(string(r.body), "openapi: 3") {
			t.Fatalf("status %d: %.40s", r.status, r.body)
		}
	})
}

// TestRoles calls every route with every role: a role below the route's
// minimum is refused with 403 before anything else happens; a role at or
// above it is not.
func TestRoles(t *testing.T) {
	e := newEnv(t)
	for _, rt := range e.api.routes() {
		path := strings.ReplaceAll(rt.pattern, "{id}", missingID)
		for _, role := range []string{registry.RoleViewer, registry.RoleOEM, registry.RoleOperator, registry.RoleAdmin} {
			t.Run(rt.method+" "+rt.pattern+" as "+role, func(t *testing.T) {
				var body any
				if rt.method == "POST" || rt.method == "PATCH" {
					body = "{}"
				}
				r := e.do(role, rt.method, path, body)
				refused := r.status == http.StatusForbidden
				if want := parseRole(role) < rt.min; refused != want {
					t.Fatalf("status %d (%s), want refused=%v", r.status, r.body, want)
				}
				if refused && r.err(t).Code != CodeForbidden {
					t.Errorf("code %q", r.err(t).Code)
				}
			})
		}
	}
}

func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		method, path string
		want         int
		code         string
	}{
		{"GET", "/api/nope", http.StatusNotFound, CodeNotFound},
		{"GET", "/api/", http.StatusNotFound, CodeNotFound},
		{"GET", "/api/profiles/x/y/z", http.StatusNotFound, CodeNotFound},
		{"PUT", "/api/profiles", http.StatusMethodNotAllowed, CodeMethodNotAllowed},
		{"GET", "/api/credentials/x/revoke", http.StatusMethodNotAllowed, CodeMethodNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := e.do(registry.RoleAdmin, c.method, c.path, nil)
			if r.status != c.want || r.err(t).Code != c.code {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if c.want == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

// TestBadInput covers the decoding rules shared by every JSON body.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("n", registry.MaxNameLen+1)
	cases := []struct {
		name string
		body any
		want int
	}{
		{"malformed", `{"name":`, http.StatusBadRequest},
		{"syntax", `{"name" "x"}`, http.StatusBadRequest},
		{"empty", ``, http.StatusBadRequest},
		{"unknown field", `{"name":"a","strategy":"allow-create","colour":"red"}`, http.StatusBadRequest},
		{"wrong type", `{"name":42,"strategy":"allow-create"}`, http.StatusBadRequest},
		{"not an object", `[1,2]`, http.StatusBadRequest},
		{"trailing data", `{"name":"a","strategy":"allow-create"} {}`, http.StatusBadRequest},
		{"invalid UTF-8", []byte("{\"name\":\"a\xff\",\"strategy\":\"allow-create\"}"), http.StatusBadRequest},
		{"too large", `{"name":"` + strings.Repeat("a", maxJSONBody) + `"}`, http.StatusRequestEntityTooLarge},
		{"over-long name", CreateProfileRequest{Name: long, Strategy: registry.StrategyAllowCreate}, http.StatusUnprocessableEntity},
		{"empty name", CreateProfileRequest{Strategy: registry.StrategyAllowCreate}, http.StatusUnprocessableEntity},
		{"control character", CreateProfileRequest{Name: "a\nb", Strategy: registry.StrategyAllowCreate}, http.StatusUnprocessableEntity},
		{"unknown strategy", CreateProfileRequest{Name: "a", Strategy: "sometimes"}, http.StatusUnprocessableEntity},
		{"no strategy", CreateProfileRequest{Name: "a"}, http.StatusUnprocessableEntity},
		{"X.509 default type", CreateProfileRequest{Name: "a", Strategy: registry.StrategyAllowCreate, DefaultCredentialsType: registry.CredentialX509}, http.StatusUnprocessableEntity},
		{"unknown policy", CreateProfileRequest{Name: "a", Strategy: registry.StrategyAllowCreate, ReprovisionPolicy: "maybe"}, http.StatusUnprocessableEntity},
		{"over-long secret", CreateProfileRequest{Name: "a", Strategy: registry.StrategyAllowCreate, ProvisionDeviceSecret: long}, http.StatusUnprocessableEntity},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(registry.RoleOperator, "POST", "/api/profiles", c.body)
			if r.status != c.want {
				t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
			}
			code := map[int]string{400: CodeBadRequest, 413: CodeTooLarge, 422: CodeInvalid}[c.want]
			if got := r.err(t); got.Code != code || got.Message == "" {
				t.Errorf("error %+v, want code %s", got, code)
			}
		})
	}
	// Nothing of the above was written.
	var l List[registry.Profile]
	e.must(http.StatusOK, "GET", "/api/profiles", nil, &l)
	if len(l.Items) != 0 {
		t.Errorf("bad requests wrote %d profiles", len(l.Items))
	}
}

func TestProfiles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	var p ProfileWithSecret
	e.must(http.StatusCreated, "POST", "/api/profiles", CreateProfileRequest{Name: "sensors", Strategy: registry.StrategyAllowCreate}, &p)
	if p.DefaultCredentialType != registry.CredentialAccessToken || p.ReprovisionPolicy != registry.ReprovisionNever {
		t.Errorf("defaults: %+v", p.Profile)
	}
	if len(p.ProvisionKey) != secret.TokenLength || len(p.ProvisionDeviceSecret) != secret.TokenLength {
		t.Errorf("generated key %q secret %q", p.ProvisionKey, p.ProvisionDeviceSecret)
	}
	stored, err := e.store.GetProfile(ctx, registry.DefaultOrgID, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !secret.Verify(p.ProvisionDeviceSecret, stored.ProvisionSecretHash) || strings.Contains(stored.ProvisionSecretHash, p.ProvisionDeviceSecret) {
		t.Error("stored hash does not match the secret shown, or holds it in clear")
	}
	if !strings.HasPrefix(stored.ProvisionSecretHash, "sha256$") {
		t.Errorf("generated secret stored as %q, want the fast format", stored.ProvisionSecretHash)
	}

	t.Run("operator-chosen key and secret", func(t *testing.T) {
		var q ProfileWithSecret
		e.must(http.StatusCreated, "POST", "/api/profiles", CreateProfileRequest{
			Name: "tb", Strategy: registry.StrategyPreProvisioned, DefaultCredentialsType: registry.CredentialMQTTBasic,
			ReprovisionPolicy: registry.ReprovisionRotate, ProvisionDeviceKey: "u7piawkboq8v32dmcmpp", ProvisionDeviceSecret: "jpmwdn8ptlswmf4m29bw",
		}, &q)
		if q.ProvisionKey != "u7piawkboq8v32dmcmpp" || q.ProvisionDeviceSecret != "jpmwdn8ptlswmf4m29bw" {
			t.Errorf("got %+v", q)
		}
		stored, err := e.store.GetProfile(ctx, registry.DefaultOrgID, q.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(stored.ProvisionSecretHash, "pbkdf2-sha256$") || !secret.Verify("jpmwdn8ptlswmf4m29bw", stored.ProvisionSecretHash) {
			t.Errorf("chosen secret stored as %q, want the slow format", stored.ProvisionSecretHash)
		}
	})

	conflicts := []struct {
		name string
		req  CreateProfileRequest
	}{
		{"name taken", CreateProfileRequest{Name: "sensors", Strategy: registry.StrategyAllowCreate}},
		{"key taken", CreateProfileRequest{Name: "other", Strategy: registry.StrategyAllowCreate, ProvisionDeviceKey: p.ProvisionKey}},
	}
	for _, c := range conflicts {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(registry.RoleOperator, "POST", "/api/profiles", c.req)
			if r.status != http.StatusConflict || r.err(t).Code != CodeConflict {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		})
	}

	t.Run("get", func(t *testing.T) {
		var got map[string]any
		e.must(http.StatusOK, "GET", "/api/profiles/"+p.ID, nil, &got)
		if got["name"] != "sensors" {
			t.Errorf("got %v", got)
		}
		if _, ok := got["provisionDeviceSecret"]; ok {
			t.Error("GET shows the provision secret")
		}
		if r := e.do(registry.RoleViewer, "GET", "/api/profiles/"+missingID, nil); r.status != http.StatusNotFound {
			t.Errorf("missing profile: %d", r.status)
		}
	})

	t.Run("patch", func(t *testing.T) {
		var got registry.Profile
		e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"description":"hall 3","reprovisionPolicy":"rotate"}`, &got)
		if got.Description != "hall 3" || got.ReprovisionPolicy != registry.ReprovisionRotate || got.Name != "sensors" || got.Strategy != registry.StrategyAllowCreate {
			t.Errorf("got %+v", got)
		}
		for _, c := range []struct {
			body string
			want int
		}{
			{`{"strategy":"nope"}`, http.StatusUnprocessableEntity},
			{`{"name":""}`, http.StatusUnprocessableEntity},
			{`{"provisionDeviceSecret":""}`, http.StatusUnprocessableEntity},
			{`{"nmae":"x"}`, http.StatusBadRequest},
			{`{"name":"tb"}`, http.StatusConflict},
		} {
			if r := e.do(registry.RoleOperator, "PATCH", "/api/profiles/"+p.ID, c.body); r.status != c.want {
				t.Errorf("%s: status %d, want %d: %s", c.body, r.status, c.want, r.body)
			}
		}
		if r := e.do(registry.RoleOperator, "PATCH", "/api/profiles/"+missingID, `{}`); r.status != http.StatusNotFound {
			t.Errorf("missing profile: %d", r.status)
		}
		e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"provisionDeviceSecret":"chosen-secret"}`, nil)
		stored, _ := e.store.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		if !secret.Verify("chosen-secret", stored.ProvisionSecretHash) || !strings.HasPrefix(stored.ProvisionSecretHash, "pbkdf2-sha256$") {
			t.Errorf("PATCH did not set the secret, or not as a slow hash: %q", stored.ProvisionSecretHash)
		}
	})

	t.Run("rotate-secret", func(t *testing.T) {
		var q ProfileWithSecret
		e.must(http.StatusOK, "POST", "/api/profiles/"+p.ID+"/rotate-secret", nil, &q)
		stored, _ := e.store.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		if q.ProvisionDeviceSecret == "" || !secret.Verify(q.ProvisionDeviceSecret, stored.ProvisionSecretHash) || secret.Verify("chosen-secret", stored.ProvisionSecretHash) {
			t.Error("rotation did not replace the secret")
		}
		if !strings.HasPrefix(stored.ProvisionSecretHash, "sha256$") {
			t.Errorf("rotated (generated) secret stored as %q, want the fast format", stored.ProvisionSecretHash)
		}
	})

	t.Run("delete", func(t *testing.T) {
		d := e.device("in-use", p.ID)
		if r := e.do(registry.RoleOperator, "DELETE", "/api/profiles/"+p.ID, nil); r.status != http.StatusConflict {
			t.Fatalf("deleting a profile in use: %d %s", r.status, r.body)
		}
		e.must(http.StatusNoContent, "DELETE", "/api/devices/"+d.ID, nil, nil)
		e.must(http.StatusNoContent, "DELETE", "/api/profiles/"+p.ID, nil, nil)
		if r := e.do(registry.RoleOperator, "DELETE", "/api/profiles/"+p.ID, nil); r.status != http.StatusNotFound {
			t.Fatalf("deleting twice: %d", r.status)
		}
	})
}

func TestPagination(t *testing.T) {
	e := newEnv(t)
	p := e.profile("p", registry.StrategyPreProvisioned)
	for i := range 7 {
		e.profile(fmt.Sprintf("q%d", i), registry.StrategyAllowCreate)
		e.device(fmt.Sprintf("dev-%d", i), p.ID)
	}
	for _, c := range []struct{ path, want string }{
		{"/api/profiles", "p q0 q1 q2 q3 q4 q5 q6"},
		{"/api/devices", "dev-0 dev-1 dev-2 dev-3 dev-4 dev-5 dev-6"},
	} {
		t.Run(c.path, func(t *testing.T) {
			var names []string
			after, pages := "", 0
			for {
				var l List[map[string]any]
				e.must(http.StatusOK, "GET", c.path+"?limit=3&after="+url.QueryEscape(after), nil, &l)
				if len(l.Items) > 3 {
					t.Fatalf("page of %d", len(l.Items))
				}
				for _, it := range l.Items {
					names = append(names, it["name"].(string))
				}
				pages++
				if after = l.Next; after == "" {
					break
				}
			}
			if got := strings.Join(names, " "); got != c.want || pages != 3 {
				t.Errorf("%d pages: %s", pages, got)
			}
		})
	}
	for _, q := range []string{"limit=-1", "limit=x", "provisioned=maybe", "status=asleep"} {
		if r := e.do(registry.RoleViewer, "GET", "/api/devices?"+q, nil); r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d", q, r.status)
		}
	}
}

func TestDevices(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p := e.profile("sensors", registry.StrategyPreProvisioned)
	basic := e.profile("basic", registry.StrategyPreProvisioned)
	e.must(http.StatusOK, "PATCH", "/api/profiles/"+basic.ID, UpdateProfileRequest{DefaultCredentialsType: ptr(registry.CredentialMQTTBasic)}, nil)

	t.Run("create", func(t *testing.T) {
		var d CreatedDevice
		e.must(http.StatusCreated, "POST", "/api/devices", CreateDeviceRequest{
			Name: "dev-a", ProfileName: "sensors", Attributes: map[string]any{"mac": "00:1b:63:84:45:e6", "floor": 3.0},
		}, &d)
		if d.ProfileID != p.ID || d.Status != registry.DeviceEnabled || d.ProvisionedAt != nil || d.Credentials != nil || d.Attributes["mac"] != "00:1b:63:84:45:e6" || d.Version == 0 {
			t.Errorf("got %+v", d)
		}
	})

	t.Run("create with credentials", func(t *testing.T) {
		cases := []struct {
			name    string
			profile string
			cred    CredentialsInput
			check   func(t *testing.T, ic *IssuedCredential)
		}{
			{"generated token", p.ID, CredentialsInput{}, func(t *testing.T, ic *IssuedCredential) {
				if ic.Type != registry.CredentialAccessToken || len(ic.Token) < 20 {
					t.Errorf("got %+v", ic)
				}
				if _, d, err := e.store.FindActiveCredential(ctx, ic.Type, secret.LookupHash(ic.Token)); err != nil || d.Name != "dev-generated token" {
					t.Errorf("token not stored: %v", err)
				}
			}},
			{"profile default type", basic.ID, CredentialsInput{}, func(t *testing.T, ic *IssuedCredential) {
				if ic.Type != registry.CredentialMQTTBasic || ic.Password == "" || ic.Username == "" {
					t.Errorf("got %+v", ic)
				}
			}},
			{"own token", p.ID, CredentialsInput{CredentialsType: registry.CredentialAccessToken, Token: "my-own-token-1"}, func(t *testing.T, ic *IssuedCredential) {
				if ic.Token != "my-own-token-1" {
					t.Errorf("got %+v", ic)
				}
			}},
			{"own basic", p.ID, CredentialsInput{CredentialsType: registry.CredentialMQTTBasic, ClientID: "c1", Username: "u1", Password: "p1"}, func(t *testing.T, ic *IssuedCredential) {
				if ic.ClientID != "c1" || ic.Username != "u1" || ic.Password != "p1" {
					t.Errorf("got %+v", ic)
				}
			}},
			{"fingerprint", p.ID, CredentialsInput{CredentialsType: registry.CredentialX509, Hash: strings.Repeat("ab", 32)}, func(t *testing.T, ic *IssuedCredential) {
				if ic.Fingerprint != strings.Repeat("ab", 32) {
					t.Errorf("got %+v", ic)
				}
			}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var d CreatedDevice
				e.must(http.StatusCreated, "POST", "/api/devices", CreateDeviceRequest{Name: "dev-" + c.name, ProfileID: c.profile, Credentials: &c.cred}, &d)
				if d.Credentials == nil || d.Credentials.DeviceID != d.ID || d.Credentials.Status != registry.CredentialActive {
					t.Fatalf("credentials %+v", d.Credentials)
				}
				c.check(t, d.Credentials)
			})
		}
	})

	t.Run("refused", func(t *testing.T) {
		cases := []struct {
			name string
			body any
			want int
		}{
			{"name taken", CreateDeviceRequest{Name: "dev-a", ProfileID: p.ID}, http.StatusConflict},
			{"token taken", CreateDeviceRequest{Name: "dev-x", ProfileID: p.ID, Credentials: &CredentialsInput{Token: "my-own-token-1"}}, http.StatusConflict},
			{"unknown profile id", CreateDeviceRequest{Name: "dev-x", ProfileID: missingID}, http.StatusUnprocessableEntity},
			{"unknown profile name", CreateDeviceRequest{Name: "dev-x", ProfileName: "nope"}, http.StatusUnprocessableEntity},
			{"no profile", CreateDeviceRequest{Name: "dev-x"}, http.StatusUnprocessableEntity},
			{"both profile refs", CreateDeviceRequest{Name: "dev-x", ProfileID: p.ID, ProfileName: "sensors"}, http.StatusBadRequest},
			{"over-long name", CreateDeviceRequest{Name: strings.Repeat("d", 256), ProfileID: p.ID}, http.StatusUnprocessableEntity},
			{"bad status", CreateDeviceRequest{Name: "dev-x", ProfileID: p.ID, Status: "sleepy"}, http.StatusUnprocessableEntity},
			{"short token", CreateDeviceRequest{Name: "dev-x", ProfileID: p.ID, Credentials: &CredentialsInput{Token: "short"}}, http.StatusUnprocessableEntity},
			{"bad certificate", CreateDeviceRequest{Name: "dev-x", ProfileID: p.ID, Credentials: &CredentialsInput{CredentialsType: registry.CredentialX509, Hash: "nope"}}, http.StatusUnprocessableEntity},
			{"unknown credentials type", CreateDeviceRequest{Name: "dev-x", ProfileID: p.ID, Credentials: &CredentialsInput{CredentialsType: "PIGEON"}}, http.StatusUnprocessableEntity},
			{"attributes too large", CreateDeviceRequest{Name: "dev-x", ProfileID: p.ID, Attributes: map[string]any{"a": strings.Repeat("x", registry.MaxAttributesJSON)}}, http.StatusUnprocessableEntity},
			{"unknown credentials field", `{"name":"dev-x","profileId":"` + p.ID + `","credentials":{"secret":"x"}}`, http.StatusBadRequest},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if r := e.do(registry.RoleOperator, "POST", "/api/devices", c.body); r.status != c.want {
					t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
				}
			})
		}
		if _, err := e.store.GetDeviceByName(ctx, registry.DefaultOrgID, "dev-x"); err == nil {
			t.Error("a refused request wrote a device")
		}
	})

	var a registry.Device
	var l List[registry.Device]
	e.must(http.StatusOK, "GET", "/api/devices?namePrefix=dev-a", nil, &l)
	if len(l.Items) != 1 {
		t.Fatalf("namePrefix: %+v", l)
	}
	a = l.Items[0]

	t.Run("enable and disable", func(t *testing.T) {
		var d registry.Device
		r := e.do(registry.RoleOEM, "POST", "/api/devices/"+a.ID+"/disable", nil)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		r.decode(t, &d)
		if d.Status != registry.DeviceDisabled {
			t.Errorf("got %+v", d)
		}
		e.must(http.StatusOK, "GET", "/api/devices?status=disabled", nil, &l)
		if len(l.Items) != 1 || l.Items[0].ID != a.ID {
			t.Errorf("status filter: %+v", l.Items)
		}
		e.must(http.StatusOK, "POST", "/api/devices/"+a.ID+"/enable", nil, &d)
		if d.Status != registry.DeviceEnabled {
			t.Errorf("got %+v", d)
		}
		if r := e.do(registry.RoleOEM, "POST", "/api/devices/"+missingID+"/enable", nil); r.status != http.StatusNotFound {
			t.Errorf("missing device: %d", r.status)
		}
	})

	t.Run("filters", func(t *testing.T) {
		for _, c := range []struct {
			query string
			want  int
		}{
			{"", 6},
			{"profileId=" + basic.ID, 1},
			{"profileName=basic", 1},
			{"provisioned=false", 6},
			{"provisioned=true", 0},
			{"namePrefix=dev-own", 2},
			{"status=enabled&namePrefix=dev-a", 1},
		} {
			e.must(http.StatusOK, "GET", "/api/devices?"+c.query, nil, &l)
			if len(l.Items) != c.want {
				t.Errorf("%s: %d devices, want %d", c.query, len(l.Items), c.want)
			}
		}
		if r := e.do(registry.RoleViewer, "GET", "/api/devices?profileName=nope", nil); r.status != http.StatusUnprocessableEntity {
			t.Errorf("unknown profile name: %d", r.status)
		}
	})

	t.Run("credentials and revoke", func(t *testing.T) {
		var own registry.Device
		e.must(http.StatusOK, "GET", "/api/devices?namePrefix=dev-own+token", nil, &l)
		own = l.Items[0]
		var cl List[registry.Credential]
		e.must(http.StatusOK, "GET", "/api/devices/"+own.ID+"/credentials", nil, &cl)
		if len(cl.Items) != 1 || cl.Items[0].Status != registry.CredentialActive {
			t.Fatalf("credentials %+v", cl)
		}
		if strings.Contains(string(e.must(http.StatusOK, "GET", "/api/devices/"+own.ID+"/credentials", nil, nil).body), "my-own-token-1") {
			t.Error("credentials list shows the token")
		}
		e.must(http.StatusOK, "GET", "/api/devices/"+a.ID+"/credentials", nil, &cl)
		if len(cl.Items) != 0 || cl.Items == nil {
			t.Errorf("device without credentials: %+v", cl)
		}
		if r := e.do(registry.RoleViewer, "GET", "/api/devices/"+missingID+"/credentials", nil); r.status != http.StatusNotFound {
			t.Errorf("missing device: %d", r.status)
		}
		e.must(http.StatusOK, "GET", "/api/devices/"+own.ID+"/credentials", nil, &cl)
		var c registry.Credential
		e.must(http.StatusOK, "POST", "/api/credentials/"+cl.Items[0].ID+"/revoke", nil, &c)
		if c.Status != registry.CredentialRevoked || c.RevokedAt == nil {
			t.Errorf("got %+v", c)
		}
		e.must(http.StatusOK, "POST", "/api/credentials/"+cl.Items[0].ID+"/revoke", nil, nil) // idempotent
		if r := e.do(registry.RoleOperator, "POST", "/api/credentials/"+missingID+"/revoke", nil); r.status != http.StatusNotFound {
			t.Errorf("missing credential: %d", r.status)
		}
	})

	t.Run("get and delete", func(t *testing.T) {
		var d registry.Device
		e.must(http.StatusOK, "GET", "/api/devices/"+a.ID, nil, &d)
		if d.Name != "dev-a" {
			t.Errorf("got %+v", d)
		}
		e.must(http.StatusNoContent, "DELETE", "/api/devices/"+a.ID, nil, nil)
		for _, m := range []string{"GET", "DELETE"} {
			if r := e.do(registry.RoleOperator, m, "/api/devices/"+a.ID, nil); r.status != http.StatusNotFound || r.err(t).Code != CodeNotFound {
				t.Errorf("%s deleted device: %d", m, r.status)
			}
		}
	})
}

func TestImport(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	p := e.profile("units", registry.StrategyPreProvisioned)
	e.device("existing", p.ID)
	path := "/api/devices/import?profileId=" + p.ID

	file := csvBody("Name,mac,location,TOKEN\n" + // line 1
		"unit-1,00:00:00:00:00:01,hall 3,\n" + // 2
		"unit-2,00:00:00:00:00:02,,token-unit-2\n" + // 3
		"unit-3,00:00:00:00:00:03\n" + // 4: too few fields
		",00:00:00:00:00:04,,\n" + // 5: no name
		"unit-1,00:00:00:00:00:05,,\n" + // 6: name repeated
		"existing,00:00:00:00:00:06,,\n" + // 7: name taken
		"unit-8,00:00:00:00:00:08,,short\n" + // 8: bad token
		"unit-9,00:00:00:00:00:09,,token-unit-2\n" + // 9: token repeated
		"\"unit-10\nsecond line\",x,,\n" + // 10-11: control character in the name
		"unit-12,\xff,,\n") // 12: invalid UTF-8
	wantLines := []int{4, 5, 6, 7, 8, 9, 10, 12}
	lines := func(rs []RowError) []int {
		var out []int
		for _, r := range rs {
			out = append(out, r.Line)
		}
		return out
	}

	t.Run("all or nothing", func(t *testing.T) {
		r := e.do(registry.RoleOperator, "POST", path, file)
		if r.status != http.StatusUnprocessableEntity {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var res ImportResult
		r.decode(t, &res)
		if res.Code != CodeInvalid || res.Created != 0 || fmt.Sprint(lines(res.Errors)) != fmt.Sprint(wantLines) {
			t.Fatalf("got %+v", res)
		}
		if _, err := e.store.GetDeviceByName(ctx, registry.DefaultOrgID, "unit-1"); err == nil {
			t.Error("a refused import wrote a device")
		}
	})

	t.Run("skip invalid", func(t *testing.T) {
		var res ImportResult
		e.must(http.StatusOK, "POST", path+"&skipInvalid=true", file, &res)
		if res.Created != 2 || fmt.Sprint(lines(res.Skipped)) != fmt.Sprint(wantLines) || len(res.Errors) != 0 {
			t.Fatalf("got %+v", res)
		}
		d, err := e.store.GetDeviceByName(ctx, registry.DefaultOrgID, "unit-1")
		if err != nil || d.Attributes["mac"] != "00:00:00:00:00:01" || d.Attributes["location"] != "hall 3" || d.ProvisionedAt != nil || d.ProfileID != p.ID {
			t.Fatalf("unit-1: %+v, %v", d, err)
		}
		if _, ok := d.Attributes["token"]; ok {
			t.Error("the token became an attribute")
		}
		d2, _ := e.store.GetDeviceByName(ctx, registry.DefaultOrgID, "unit-2")
		if _, ok := d2.Attributes["location"]; ok {
			t.Error("an empty cell set an attribute")
		}
		if _, cd, err := e.store.FindActiveCredential(ctx, registry.CredentialAccessToken, secret.LookupHash("token-unit-2")); err != nil || cd.ID != d2.ID {
			t.Errorf("unit-2's token: %v", err)
		}
		// Importing the same file again: every row is now taken or invalid.
		e.must(http.StatusOK, "POST", path+"&skipInvalid=true", file, &res)
		if res.Created != 0 || len(res.Skipped) != 10 {
			t.Errorf("second import: %+v", res)
		}
	})

	t.Run("credentials columns", func(t *testing.T) {
		cases := []struct {
			name string
			row  string
			ok   bool
		}{
			{"basic implied", "c1,,c1,u1,p1,", true},
			{"basic typed", "c2,MQTT_BASIC,c2,u2,p2,", true},
			{"fingerprint", "c3,," + ",,," + strings.Repeat("cd", 32), true},
			{"no credentials", "c4,,,,,", true},
			{"type without values", "c5,ACCESS_TOKEN,,,,", false},
			{"unknown type", "c6,PIGEON,,,,", false},
			{"mixed types", "c7,,c7,,," + strings.Repeat("ef", 32), false},
			{"type disagrees", "c8,X509_CERTIFICATE,c8,u8,p8,", false},
			{"password without user", "c9,,c9,,p9,", false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				var res ImportResult
				r := e.do(registry.RoleOperator, "POST", path, csvBody("name,credentialsType,clientId,username,password,certificate\n"+c.row+"\n"))
				r.decode(t, &res)
				if got := r.status == http.StatusOK && res.Created == 1; got != c.ok {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
			})
		}
	})

	t.Run("whole file refused", func(t *testing.T) {
		cases := []struct {
			name  string
			query string
			body  any
			want  int
		}{
			{"empty", "", csvBody(""), http.StatusBadRequest},
			{"no name column", "", csvBody("mac\n00:01\n"), http.StatusBadRequest},
			{"duplicate column", "", csvBody("name,mac,MAC\n"), http.StatusBadRequest},
			{"duplicate known column", "", csvBody("name,Name\n"), http.StatusBadRequest},
			{"empty column name", "", csvBody("name,,x\n"), http.StatusBadRequest},
			{"syntax error", "", csvBody("name,mac\n\"unit\"x,1\n"), http.StatusBadRequest},
			{"bad skipInvalid", "&skipInvalid=perhaps", csvBody("name\n"), http.StatusBadRequest},
			{"both profile refs", "&profileName=units", csvBody("name\n"), http.StatusBadRequest},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if r := e.do(registry.RoleOperator, "POST", path+c.query, c.body); r.status != c.want {
					t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
				}
			})
		}
		for _, q := range []string{"", "?profileName=nope", "?profileId=" + missingID} {
			if r := e.do(registry.RoleOperator, "POST", "/api/devices/import"+q, csvBody("name\nx\n")); r.status != http.StatusUnprocessableEntity {
				t.Errorf("%q: status %d", q, r.status)
			}
		}
	})

	t.Run("by profile name, BOM, CRLF", func(t *testing.T) {
		var res ImportResult
		e.must(http.StatusOK, "POST", "/api/devices/import?profileName=units", csvBody("\ufeffname,mac\r\nbom-1,a\r\nbom-2,b\r\n"), &res)
		if res.Created != 2 {
			t.Fatalf("got %+v", res)
		}
	})

	t.Run("too large", func(t *testing.T) {
		e.api.importLimit = 1 << 10
		defer func() { e.api.importLimit = maxImportBody }()
		big := "name\n" + strings.Repeat("big-unit-0000\n", 200)
		if r := e.do(registry.RoleOperator, "POST", path, csvBody(big)); r.status != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		// Without a Content-Length the limit is found while reading.
		req, _ := http.NewRequest("POST", e.srv.URL+path, struct{ *strings.Reader }{strings.NewReader(big)})
		req.Header.Set("Authorization", "Bearer "+e.keys[registry.RoleOperator])
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked: status %d", res.StatusCode)
		}
	})
}

func TestAPIKeys(t *testing.T) {
	e := newEnv(t)
	var k CreatedAPIKey
	e.must(http.StatusCreated, "POST", "/api/apikeys", CreateAPIKeyRequest{Name: "ci", Role: registry.RoleOperator}, &k)
	if k.Key == "" || k.Role != registry.RoleOperator || k.OrgID != registry.DefaultOrgID {
		t.Fatalf("got %+v", k)
	}
	e.keys["ci"] = k.Key
	if r := e.do("ci", "POST", "/api/profiles", CreateProfileRequest{Name: "by-ci", Strategy: registry.StrategyDisabled}); r.status != http.StatusCreated {
		t.Fatalf("new key: %d %s", r.status, r.body)
	}
	if r := e.do("ci", "GET", "/api/apikeys", nil); r.status != http.StatusForbidden {
		t.Fatalf("operator listing keys: %d", r.status)
	}

	r := e.must(http.StatusOK, "GET", "/api/apikeys", nil, nil)
	if strings.Contains(string(r.body), k.Key) || strings.Contains(string(r.body), "hash") {
		t.Error("the list shows keys or hashes")
	}
	var l List[registry.APIKey]
	r.decode(t, &l)
	if len(l.Items) != 5 {
		t.Errorf("%d keys", len(l.Items))
	}

	for _, c := range []struct {
		body any
		want int
	}{
		{CreateAPIKeyRequest{Name: "x", Role: "root"}, http.StatusUnprocessableEntity},
		{CreateAPIKeyRequest{Role: registry.RoleViewer}, http.StatusUnprocessableEntity},
		{`{"name":"x","role":"viewer","expires":"never"}`, http.StatusBadRequest},
	} {
		if r := e.do(registry.RoleAdmin, "POST", "/api/apikeys", c.body); r.status != c.want {
			t.Errorf("%v: %d, want %d", c.body, r.status, c.want)
		}
	}

	e.must(http.StatusNoContent, "DELETE", "/api/apikeys/"+k.ID, nil, nil)
	if r := e.do("ci", "GET", "/api/profiles", nil); r.status != http.StatusUnauthorized {
		t.Errorf("deleted key still works: %d", r.status)
	}
	if r := e.do(registry.RoleAdmin, "DELETE", "/api/apikeys/"+k.ID, nil); r.status != http.StatusNotFound {
		t.Errorf("deleting twice: %d", r.status)
	}
	if r := e.do(registry.RoleAdmin, "DELETE", "/api/apikeys/"+e.ids[registry.RoleAdmin], nil); r.status != http.StatusConflict {
		t.Errorf("deleting the last admin key: %d %s", r.status, r.body)
	}
}

// TestAuditEveryWrite makes every kind of management write and checks each
// left an audit event naming the key that made it.
func TestAuditEveryWrite(t *testing.T) {
	e := newEnv(t)
	var p ProfileWithSecret
	e.must(http.StatusCreated, "POST", "/api/profiles", CreateProfileRequest{Name: "a", Strategy: registry.StrategyPreProvisioned}, &p)
	e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"description":"d"}`, nil)
	e.must(http.StatusOK, "POST", "/api/profiles/"+p.ID+"/rotate-secret", nil, nil)
	var d CreatedDevice
	e.must(http.StatusCreated, "POST", "/api/devices", CreateDeviceRequest{Name: "d1", ProfileID: p.ID, Credentials: &CredentialsInput{}}, &d)
	e.must(http.StatusOK, "POST", "/api/devices/import?profileId="+p.ID, csvBody("name\nd2\n"), nil)
	e.must(http.StatusOK, "POST", "/api/devices/"+d.ID+"/disable", nil, nil)
	e.must(http.StatusOK, "POST", "/api/devices/"+d.ID+"/enable", nil, nil)
	e.must(http.StatusOK, "POST", "/api/credentials/"+d.Credentials.ID+"/revoke", nil, nil)
	e.must(http.StatusNoContent, "DELETE", "/api/devices/"+d.ID, nil, nil)
	var d2 List[registry.Device]
	e.must(http.StatusOK, "GET", "/api/devices?namePrefix=d2", nil, &d2)
	e.must(http.StatusNoContent, "DELETE", "/api/devices/"+d2.Items[0].ID, nil, nil)
	e.must(http.StatusNoContent, "DELETE", "/api/profiles/"+p.ID, nil, nil)
	var k CreatedAPIKey
	e.must(http.StatusCreated, "POST", "/api/apikeys", CreateAPIKeyRequest{Name: "k", Role: registry.RoleViewer}, &k)
	e.must(http.StatusNoContent, "DELETE", "/api/apikeys/"+k.ID, nil, nil)
	// A refused write leaves no event.
	e.do(registry.RoleAdmin, "POST", "/api/profiles", `{"name":""}`)

	var l List[registry.AuditEvent]
	e.must(http.StatusOK, "GET", "/api/audit", nil, &l)
	var got []string
	for _, ev := range l.Items {
		if ev.Actor != "api-key:"+e.ids[registry.RoleAdmin] || ev.Result != "success" || ev.Source == "" || ev.OrgID != registry.DefaultOrgID {
			t.Errorf("event %+v", ev)
		}
		got = append([]string{ev.Action}, got...)
	}
	want := "profile.create profile.update profile.rotate-secret device.create device.import device.disable device.enable credential.revoke device.delete device.delete profile.delete apikey.create apikey.delete"
	if strings.Join(got, " ") != want {
		t.Errorf("actions\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	t.Run("filters and paging", func(t *testing.T) {
		cases := []struct {
			query string
			want  int
		}{
			{"action=device.delete", 2},
			{"deviceId=" + d.ID, 5},
			{"result=success&action=profile.create", 1},
			{"result=bad-secret", 0},
			{"since=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)), 0},
			{"since=" + url.QueryEscape(time.Now().Add(-time.Hour).Format(time.RFC3339)), 13},
		}
		for _, c := range cases {
			e.must(http.StatusOK, "GET", "/api/audit?"+c.query, nil, &l)
			if len(l.Items) != c.want {
				t.Errorf("%s: %d events, want %d", c.query, len(l.Items), c.want)
			}
		}
		var all []string
		before := ""
		for {
			var l List[registry.AuditEvent] // fresh: an absent "next" must not keep the last one
			e.must(http.StatusOK, "GET", "/api/audit?limit=5&before="+before, nil, &l)
			for _, ev := range l.Items {
				all = append([]string{ev.Action}, all...)
			}
			if before = l.Next; before == "" {
				break
			}
		}
		if strings.Join(all, " ") != want {
			t.Errorf("paged: %s", strings.Join(all, " "))
		}
		for _, q := range []string{"since=yesterday", "before=-1", "limit=many"} {
			if r := e.do(registry.RoleViewer, "GET", "/api/audit?"+q, nil); r.status != http.StatusBadRequest {
				t.Errorf("%s: %d", q, r.status)
			}
		}
	})
}

func ptr[T any](v T) *T { return &v }
