package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/registry"
)

const testBuiltinHub = "node-1.example.com:8883"

// newHubEnv is an API whose node has a built-in hub.
func newHubEnv(t *testing.T) *env {
	e := newEnv(t)
	e.api.builtin = func() allocate.Hub {
		return allocate.Hub{Name: testBuiltinHub, Weight: 1, Region: "eu-west", Enabled: true}
	}
	return e
}

func TestHubsCreateListGet(t *testing.T) {
	e := newHubEnv(t)

	// Defaults: weight 1, enabled; the name is kept as written.
	var h registry.Hub
	r := e.must(http.StatusCreated, "POST", "/api/hubs", CreateHubRequest{Name: "Hub-EU.example.com"}, &h)
	if h.Name != "Hub-EU.example.com" || h.Weight != 1 || !h.Enabled || h.Region != "" || h.Version != 1 || h.OrgID != registry.DefaultOrgID {
		t.Errorf("created %+v", h)
	}
	if r.header.Get("ETag") != `"1"` || r.header.Get("Location") != "/api/hubs/Hub-EU.example.com" {
		t.Errorf("ETag %q, Location %q", r.header.Get("ETag"), r.header.Get("Location"))
	}
	e.must(http.StatusCreated, "POST", "/api/hubs", CreateHubRequest{Name: "hub-us.example.com:8884", Weight: ptr(0), Region: "us-east", Enabled: ptr(false)}, &h)
	if h.Weight != 0 || h.Enabled || h.Region != "us-east" {
		t.Errorf("created %+v", h)
	}

	// Viewers read; the built-in hub comes first, marked.
	var l List[HubInfo]
	r = e.do(registry.RoleViewer, "GET", "/api/hubs", nil)
	if r.status != http.StatusOK {
		t.Fatalf("list as viewer: %d %s", r.status, r.body)
	}
	r.decode(t, &l)
	var names []string
	for _, it := range l.Items {
		names = append(names, fmt.Sprintf("%s/%v", it.Name, it.Builtin))
	}
	if got, want := strings.Join(names, " "), testBuiltinHub+"/true Hub-EU.example.com/false hub-us.example.com:8884/false"; got != want {
		t.Fatalf("listed %s, want %s", got, want)
	}
	if b := l.Items[0]; b.Weight != 1 || b.Region != "eu-west" || !b.Enabled {
		t.Errorf("built-in hub listed as %+v", b)
	}

	// Paging: the built-in hub is on the first page only.
	var p1, p2 List[HubInfo]
	e.must(http.StatusOK, "GET", "/api/hubs?limit=1", nil, &p1)
	if len(p1.Items) != 2 || !p1.Items[0].Builtin || p1.Next == "" {
		t.Fatalf("first page %+v", p1)
	}
	e.must(http.StatusOK, "GET", "/api/hubs?limit=1&after="+p1.Next, nil, &p2)
	if len(p2.Items) != 1 || p2.Items[0].Builtin || p2.Items[0].Name != "hub-us.example.com:8884" {
		t.Fatalf("second page %+v", p2)
	}

	// Get in any case, with the ETag; the built-in hub too.
	var got HubInfo
	r = e.do(registry.RoleViewer, "GET", "/api/hubs/HUB-eu.EXAMPLE.com", nil)
	if r.status != http.StatusOK || r.header.Get("ETag") != `"1"` {
		t.Fatalf("get: %d %q %s", r.status, r.header.Get("ETag"), r.body)
	}
	r.decode(t, &got)
	if got.Name != "Hub-EU.example.com" || got.Builtin {
		t.Errorf("got %+v", got)
	}
	e.must(http.StatusOK, "GET", "/api/hubs/NODE-1.example.com:8883", nil, &got)
	if !got.Builtin || got.Name != testBuiltinHub {
		t.Errorf("built-in hub: %+v", got)
	}
	if r := e.do(registry.RoleViewer, "GET", "/api/hubs/nope.example.com", nil); r.status != http.StatusNotFound {
		t.Errorf("unknown hub: %d", r.status)
	}
	if r := e.do(registry.RoleViewer, "GET", "/api/hubs/not%20a%20host", nil); r.status != http.StatusNotFound {
		t.Errorf("impossible name: %d", r.status)
	}
}

func TestHubsWithoutBuiltin(t *testing.T) {
	e := newEnv(t)
	var l List[HubInfo]
	e.must(http.StatusOK, "GET", "/api/hubs", nil, &l)
	if len(l.Items) != 0 {
		t.Fatalf("listed %+v on a node without a built-in hub", l.Items)
	}
}

func TestHubsRoles(t *testing.T) {
	e := newHubEnv(t)
	for _, role := range []string{registry.RoleViewer, registry.RoleOEM} {
		if r := e.do(role, "POST", "/api/hubs", CreateHubRequest{Name: "x.example.com"}); r.status != http.StatusForbidden {
			t.Errorf("create as %s: %d", role, r.status)
		}
	}
	e.must(http.StatusCreated, "POST", "/api/hubs", CreateHubRequest{Name: "x.example.com"}, nil)
	for _, role := range []string{registry.RoleViewer, registry.RoleOEM} {
		if r := e.do(role, "PATCH", "/api/hubs/x.example.com", `{"weight":2}`); r.status != http.StatusForbidden {
			t.Errorf("update as %s: %d", role, r.status)
		}
		if r := e.do(role, "DELETE", "/api/hubs/x.example.com", nil); r.status != http.StatusForbidden {
			t.Errorf("delete as %s: %d", role, r.status)
		}
	}
	if r := e.do(registry.RoleOperator, "PATCH", "/api/hubs/x.example.com", `{"weight":2}`); r.status != http.StatusOK {
		t.Errorf("update as operator: %d %s", r.status, r.body)
	}
	if r := e.do(registry.RoleOperator, "DELETE", "/api/hubs/x.example.com", nil); r.status != http.StatusNoContent {
		t.Errorf("delete as operator: %d %s", r.status, r.body)
	}
}

func TestHubsValidationAndConflicts(t *testing.T) {
	e := newHubEnv(t)
	e.must(http.StatusCreated, "POST", "/api/hubs", CreateHubRequest{Name: "taken.example.com"}, nil)
	cases := []struct {
		name string
		body any
		want int
	}{
		{"empty name", CreateHubRequest{}, http.StatusUnprocessableEntity},
		{"URL", CreateHubRequest{Name: "mqtts://hub.example.com"}, http.StatusUnprocessableEntity},
		{"bad port", CreateHubRequest{Name: "hub.example.com:99999"}, http.StatusUnprocessableEntity},
		{"negative weight", CreateHubRequest{Name: "hub.example.com", Weight: ptr(-1)}, http.StatusUnprocessableEntity},
		{"huge weight", CreateHubRequest{Name: "hub.example.com", Weight: ptr(registry.MaxHubWeight + 1)}, http.StatusUnprocessableEntity},
		{"bad region", CreateHubRequest{Name: "hub.example.com", Region: "eu west"}, http.StatusUnprocessableEntity},
		{"unknown field", `{"name":"hub.example.com","latency":3}`, http.StatusBadRequest},
		{"not JSON", `{`, http.StatusBadRequest},
		{"taken", CreateHubRequest{Name: "taken.example.com"}, http.StatusConflict},
		{"taken in another case", CreateHubRequest{Name: "TAKEN.example.com"}, http.StatusConflict},
		{"the built-in hub", CreateHubRequest{Name: "Node-1.Example.com:8883"}, http.StatusConflict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(registry.RoleOperator, "POST", "/api/hubs", c.body)
			if r.status != c.want {
				t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
			}
		})
	}
	var l List[HubInfo]
	e.must(http.StatusOK, "GET", "/api/hubs", nil, &l)
	if len(l.Items) != 2 {
		t.Fatalf("refused creations wrote hubs: %+v", l.Items)
	}

	// The built-in hub cannot be changed nor deleted.
	if r := e.do(registry.RoleAdmin, "PATCH", "/api/hubs/"+testBuiltinHub, `{"weight":5}`); r.status != http.StatusConflict {
		t.Errorf("PATCH built-in: %d %s", r.status, r.body)
	}
	if r := e.do(registry.RoleAdmin, "DELETE", "/api/hubs/"+testBuiltinHub, nil); r.status != http.StatusConflict {
		t.Errorf("DELETE built-in: %d %s", r.status, r.body)
	}
	// Invalid changes are refused and change nothing.
	for _, body := range []string{`{"weight":-3}`, `{"region":"a/b"}`, `{"name":"other.example.com"}`} {
		if r := e.do(registry.RoleAdmin, "PATCH", "/api/hubs/taken.example.com", body); r.status != http.StatusUnprocessableEntity && r.status != http.StatusBadRequest {
			t.Errorf("PATCH %s: %d %s", body, r.status, r.body)
		}
	}
	var h registry.Hub
	e.must(http.StatusOK, "GET", "/api/hubs/taken.example.com", nil, &h)
	if h.Version != 1 || h.Weight != 1 {
		t.Errorf("after refused changes: %+v", h)
	}
}

func TestHubsUpdateAndDelete(t *testing.T) {
	e := newHubEnv(t)
	var h registry.Hub
	e.must(http.StatusCreated, "POST", "/api/hubs", CreateHubRequest{Name: "hub.example.com", Region: "eu-west"}, &h)

	h = registry.Hub{} // fresh: an absent region must not keep the last one
	r := e.must(http.StatusOK, "PATCH", "/api/hubs/HUB.example.com", UpdateHubRequest{Weight: ptr(5), Region: ptr(""), Enabled: ptr(false)}, &h)
	if h.Weight != 5 || h.Region != "" || h.Enabled || h.Version != 2 || r.header.Get("ETag") != `"2"` {
		t.Fatalf("updated %+v, ETag %q", h, r.header.Get("ETag"))
	}
	// A change that changes nothing writes nothing.
	e.must(http.StatusOK, "PATCH", "/api/hubs/hub.example.com", UpdateHubRequest{Weight: ptr(5)}, &h)
	if h.Version != 2 {
		t.Errorf("no-op change wrote version %d", h.Version)
	}
	// Stale versions: If-Match 412, body version 409.
	if r := e.doWith(registry.RoleAdmin, "PATCH", "/api/hubs/hub.example.com", UpdateHubRequest{Weight: ptr(7)}, ifMatchHeader(`"1"`)); r.status != http.StatusPreconditionFailed {
		t.Errorf("stale If-Match: %d %s", r.status, r.body)
	}
	if r := e.do(registry.RoleAdmin, "PATCH", "/api/hubs/hub.example.com", UpdateHubRequest{Weight: ptr(7), Version: ptr(int64(1))}); r.status != http.StatusConflict {
		t.Errorf("stale version: %d %s", r.status, r.body)
	}
	e.must(http.StatusOK, "GET", "/api/hubs/hub.example.com", nil, &h)
	if h.Weight != 5 {
		t.Errorf("a stale change was written: %+v", h)
	}
	if r := e.doWith(registry.RoleAdmin, "PATCH", "/api/hubs/hub.example.com", UpdateHubRequest{Enabled: ptr(true)}, ifMatchHeader(`"2"`)); r.status != http.StatusOK {
		t.Errorf("current If-Match: %d %s", r.status, r.body)
	}
	if r := e.do(registry.RoleAdmin, "PATCH", "/api/hubs/gone.example.com", UpdateHubRequest{Enabled: ptr(true)}); r.status != http.StatusNotFound {
		t.Errorf("PATCH unknown: %d", r.status)
	}

	if r := e.doWith(registry.RoleAdmin, "DELETE", "/api/hubs/hub.example.com", nil, ifMatchHeader(`"1"`)); r.status != http.StatusPreconditionFailed {
		t.Errorf("DELETE stale If-Match: %d %s", r.status, r.body)
	}
	e.must(http.StatusNoContent, "DELETE", "/api/hubs/Hub.Example.com", nil, nil)
	if r := e.do(registry.RoleAdmin, "DELETE", "/api/hubs/hub.example.com", nil); r.status != http.StatusNotFound {
		t.Errorf("DELETE again: %d", r.status)
	}

	// Every write is audited.
	var l List[registry.AuditEvent]
	e.must(http.StatusOK, "GET", "/api/audit?action=hub.create", nil, &l)
	n := len(l.Items)
	e.must(http.StatusOK, "GET", "/api/audit?action=hub.update", nil, &l)
	n2 := len(l.Items)
	e.must(http.StatusOK, "GET", "/api/audit?action=hub.delete", nil, &l)
	if n != 1 || n2 != 2 || len(l.Items) != 1 {
		t.Errorf("audit: %d creates, %d updates, %d deletes; want 1, 2, 1", n, n2, len(l.Items))
	}
	if !strings.Contains(l.Items[0].Detail, "hub.example.com") {
		t.Errorf("delete event %+v", l.Items[0])
	}
}

// A hub registered before the node's hub name became its name stays
// visible in the list and can still be deleted.
func TestHubsShadowedByBuiltin(t *testing.T) {
	e := newEnv(t)
	e.must(http.StatusCreated, "POST", "/api/hubs", CreateHubRequest{Name: testBuiltinHub}, nil)
	e.api.builtin = func() allocate.Hub { return allocate.Hub{Name: testBuiltinHub, Weight: 1, Enabled: true} }
	var l List[HubInfo]
	e.must(http.StatusOK, "GET", "/api/hubs", nil, &l)
	if len(l.Items) != 2 || !l.Items[0].Builtin || l.Items[1].Builtin {
		t.Fatalf("listed %+v", l.Items)
	}
	e.must(http.StatusNoContent, "DELETE", "/api/hubs/"+testBuiltinHub, nil, nil)
	if r := e.do(registry.RoleAdmin, "DELETE", "/api/hubs/"+testBuiltinHub, nil); r.status != http.StatusConflict {
		t.Errorf("DELETE built-in: %d", r.status)
	}
}
