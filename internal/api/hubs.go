package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// IoT hubs linked to the organisation's DPS (/api/hubs): the candidates of
// DPS allocation besides this node's own built-in hub, as Azure DPS links
// IoT hubs to a provisioning service.
//
// Hub names are host names with an optional port, kept as written and
// unique without regard to case; paths name them in any case. The
// built-in hub (Options.BuiltinHub) is listed first, marked "builtin", and
// can be read but neither registered again, changed nor deleted: it is set
// by the node's configuration (--hub-name, --hub-region).
//
// Versions, ETag and If-Match work as for enrollments.

// HubInfo is a hub as GET /api/hubs lists it.
type HubInfo struct {
	registry.Hub
	// Builtin marks this node's own hub (its MQTT broker): always a
	// candidate, set by configuration; it has no version nor times.
	Builtin bool `json:"builtin,omitempty"`
}

// CreateHubRequest is the body of POST /api/hubs. Weight defaults to
// registry.DefaultHubWeight, Enabled to true.
type CreateHubRequest struct {
	Name    string `json:"name"`
	Weight  *int   `json:"weight,omitempty"`
	Region  string `json:"region,omitempty"`
	Enabled *bool  `json:"enabled,omitempty"`
}

// UpdateHubRequest is the body of PATCH /api/hubs/{name}: absent fields
// are left unchanged; region "" removes the region.
type UpdateHubRequest struct {
	Weight  *int    `json:"weight,omitempty"`
	Region  *string `json:"region,omitempty"`
	Enabled *bool   `json:"enabled,omitempty"`
	// Version, when given, is the version the change is based on: if the
	// hub has been written since, the answer is 409.
	Version *int64 `json:"version,omitempty"`
}

// hubKind serves hubs with the enrollments' generic handlers (load,
// ETag, If-Match, optimistic update, audit).
func (s *server) hubKind() *enrollmentKind[registry.Hub] {
	return &enrollmentKind[registry.Hub]{
		what: "hub", action: "hub", param: "name", path: "/api/hubs",
		create: s.store.CreateHub, get: s.store.GetHub, list: s.store.ListHubs,
		update: s.store.UpdateHub, delete: s.store.DeleteHub,
		id:       func(h *registry.Hub) string { return h.Name },
		ver:      func(h *registry.Hub) int64 { return h.Version },
		hideKeys: func(*registry.Hub) {},
	}
}

// builtinHub returns this node's own hub as the organisation sees it, and
// false when the API was given none.
func (s *server) builtinHub(orgID string) (HubInfo, bool) {
	if s.builtin == nil {
		return HubInfo{}, false
	}
	b := s.builtin()
	if b.Name == "" {
		return HubInfo{}, false
	}
	return HubInfo{Hub: registry.Hub{OrgID: orgID, Name: b.Name, Weight: b.Weight, Region: b.Region, Enabled: b.Enabled}, Builtin: true}, true
}

// isBuiltinHub tells whether name (any case) is the built-in hub's.
func (s *server) isBuiltinHub(orgID, name string) (HubInfo, bool) {
	b, ok := s.builtinHub(orgID)
	return b, ok && strings.EqualFold(b.Name, name)
}

func builtinReadOnly(name string) error {
	return conflict("hub %q is this node's built-in hub: it is set by the server's configuration (--hub-name, --hub-region), not through the API", name)
}

func (s *server) listHubs(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	opts, err := listOptions(r.URL.Query())
	if err != nil {
		return err
	}
	hubs, next, err := s.store.ListHubs(r.Context(), key.OrgID, opts)
	if err != nil {
		return err
	}
	items := make([]HubInfo, 0, len(hubs)+1)
	if b, ok := s.builtinHub(key.OrgID); ok && opts.After == "" {
		items = append(items, b)
	}
	for _, h := range hubs {
		items = append(items, HubInfo{Hub: h})
	}
	writeJSON(w, http.StatusOK, newList(items, next))
	return nil
}

func (s *server) createHub(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req CreateHubRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	h := &registry.Hub{OrgID: key.OrgID, Name: req.Name, Weight: registry.DefaultHubWeight, Region: req.Region, Enabled: true}
	if req.Weight != nil {
		h.Weight = *req.Weight
	}
	if req.Enabled != nil {
		h.Enabled = *req.Enabled
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if _, ok := s.isBuiltinHub(key.OrgID, h.Name); ok {
		return registry.Conflict("hub", fmt.Sprintf("%q is this node's built-in hub, always a candidate: it cannot be registered", h.Name))
	}
	return createEnrollmentOf(s, s.hubKind(), w, r, key, h,
		fmt.Sprintf("registered hub %s (weight %d, region %q, %s)", h.Name, h.Weight, h.Region, enabledWord(h.Enabled)))
}

func enabledWord(enabled bool) string {
	if enabled {
		return "enabled"
	}
	return "disabled"
}

func (s *server) getHub(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	if b, ok := s.isBuiltinHub(key.OrgID, r.PathValue("name")); ok {
		writeJSON(w, http.StatusOK, b)
		return nil
	}
	return getEnrollmentOf(s.hubKind(), w, r, key)
}

// shadowedBuiltin refuses a write to the built-in hub, unless a registered
// hub of the same name exists (registered before the node's hub name
// changed): that one may still be changed or deleted.
func (s *server) shadowedBuiltin(r *http.Request, key *registry.APIKey) error {
	name := r.PathValue("name")
	if _, ok := s.isBuiltinHub(key.OrgID, name); !ok {
		return nil
	}
	if _, err := s.store.GetHub(r.Context(), key.OrgID, name); err == nil {
		return nil
	}
	return builtinReadOnly(name)
}

func (s *server) updateHub(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req UpdateHubRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := s.shadowedBuiltin(r, key); err != nil {
		return err
	}
	return modify(s, s.hubKind(), w, r, key, req.Version, "update", "updated", func(h *registry.Hub) ([]string, error) {
		var changed []string
		if req.Weight != nil && *req.Weight != h.Weight {
			h.Weight = *req.Weight
			changed = append(changed, "weight")
		}
		if req.Region != nil && *req.Region != h.Region {
			h.Region = *req.Region
			changed = append(changed, "region")
		}
		if req.Enabled != nil && *req.Enabled != h.Enabled {
			h.Enabled = *req.Enabled
			changed = append(changed, "enabled")
		}
		return changed, h.Validate()
	})
}

func (s *server) deleteHub(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	if err := s.shadowedBuiltin(r, key); err != nil {
		return err
	}
	return deleteEnrollmentOf(s, s.hubKind(), w, r, key)
}
