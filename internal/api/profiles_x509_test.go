package api

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// TestProfileX509Chain: a profile's X.509 chain provisioning is set at
// creation, shown, replaced, refused when invalid, and removed by a PATCH
// with null.
func TestProfileX509Chain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	caPEM := testutil.NewCert(t, "Maker CA", nil, testutil.CertOptions{CA: true}).PEM()
	chain := &registry.X509ChainProvisioning{CACertificates: caPEM, CNPattern: `(.+)\.maker\.example`, AllowCreate: true}

	var p ProfileWithSecret
	e.must(http.StatusCreated, "POST", "/api/profiles", CreateProfileRequest{
		Name: "chained", Strategy: registry.StrategyDisabled, X509CertificateChain: chain,
	}, &p)
	if !reflect.DeepEqual(p.X509Chain, chain) {
		t.Fatalf("created with %+v, want %+v", p.X509Chain, chain)
	}
	var got map[string]any
	e.must(http.StatusOK, "GET", "/api/profiles/"+p.ID, nil, &got)
	x, _ := got["x509CertificateChain"].(map[string]any)
	if x["caCertificatesPem"] != caPEM || x["certificateRegExPattern"] != chain.CNPattern || x["allowCreateNewDevicesByX509Certificate"] != true {
		t.Fatalf("GET shows x509CertificateChain %v", got["x509CertificateChain"])
	}

	for _, c := range []struct {
		name, body string
		want       int
	}{
		{"not PEM", `{"x509CertificateChain":{"caCertificatesPem":"nope"}}`, http.StatusUnprocessableEntity},
		{"no CA", `{"x509CertificateChain":{}}`, http.StatusUnprocessableEntity},
		{"bad pattern", `{"x509CertificateChain":{"caCertificatesPem":` + jsonString(caPEM) + `,"certificateRegExPattern":"("}}`, http.StatusUnprocessableEntity},
		{"unknown field", `{"x509CertificateChain":{"caCertificatesPem":` + jsonString(caPEM) + `,"pattern":"x"}}`, http.StatusBadRequest},
		{"not an object", `{"x509CertificateChain":"x"}`, http.StatusBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r := e.do(registry.RoleOperator, "PATCH", "/api/profiles/"+p.ID, c.body); r.status != c.want {
				t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
			}
			if r := e.do(registry.RoleOperator, "POST", "/api/profiles", `{"name":"bad","strategy":"disabled",`+strings.TrimPrefix(c.body, "{")); r.status != c.want {
				t.Fatalf("create: status %d, want %d: %s", r.status, c.want, r.body)
			}
		})
	}
	stored, err := e.store.GetProfile(ctx, registry.DefaultOrgID, p.ID)
	if err != nil || !reflect.DeepEqual(stored.X509Chain, chain) {
		t.Fatalf("after refused PATCHes: %+v, %v", stored.X509Chain, err)
	}

	// Absent: unchanged.
	var q registry.Profile
	e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"description":"x"}`, &q)
	if !reflect.DeepEqual(q.X509Chain, chain) {
		t.Fatalf("a PATCH without the field changed it: %+v", q.X509Chain)
	}
	// An object replaces it.
	q = registry.Profile{}
	e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"x509CertificateChain":{"caCertificatesPem":`+jsonString(caPEM)+`}}`, &q)
	if q.X509Chain == nil || q.X509Chain.CNPattern != "" || q.X509Chain.AllowCreate {
		t.Fatalf("replaced with %+v", q.X509Chain)
	}
	// null removes it.
	q = registry.Profile{}
	e.must(http.StatusOK, "PATCH", "/api/profiles/"+p.ID, `{"x509CertificateChain":null}`, &q)
	if q.X509Chain != nil {
		t.Fatalf("null left %+v", q.X509Chain)
	}
	if stored, _ := e.store.GetProfile(ctx, registry.DefaultOrgID, p.ID); stored.X509Chain != nil {
		t.Fatalf("stored %+v after null", stored.X509Chain)
	}

	// The request type round-trips, and a request without it is empty.
	for _, u := range []UpdateProfileRequest{{}, {X509CertificateChain: X509ChainUpdate{Set: true}}, {X509CertificateChain: X509ChainUpdate{Set: true, Chain: chain}}} {
		b, err := json.Marshal(u)
		if err != nil {
			t.Fatal(err)
		}
		var back UpdateProfileRequest
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, u) {
			t.Fatalf("%s read back as %+v, %v; want %+v", b, back, err, u)
		}
	}
	if b, _ := json.Marshal(UpdateProfileRequest{}); string(b) != "{}" {
		t.Fatalf("empty request marshals as %s", b)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
