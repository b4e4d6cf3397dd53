package api

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Attributes is the answer to GET /api/devices/{id}/attributes.
type Attributes struct {
	// Attributes are ordered by scope (client, shared, server), then key.
	Attributes []AttributeValue `json:"attributes"`
}

// AttributeValue is one attribute of a device.
type AttributeValue struct {
	Scope telemetry.Scope `json:"scope"`
	Key   string          `json:"key"`
	// Type is the value's kind: boolean, long, double, string or json.
	Type      string          `json:"type"`
	Value     telemetry.Value `json:"value"`
	UpdatedAt time.Time       `json:"updatedAt"`
}

// UnmarshalJSON decodes the value with the kind Type names.
func (v *AttributeValue) UnmarshalJSON(b []byte) error {
	type plain AttributeValue
	if err := json.Unmarshal(b, (*plain)(v)); err != nil {
		return err
	}
	v.Value = retype(v.Type, v.Value)
	return nil
}

// AttributesSet is the answer to PUT /api/devices/{id}/attributes/{scope}.
type AttributesSet struct {
	// Pushed is the number of the device's live sessions the shared
	// attributes were sent to (always 0 for server attributes).
	Pushed int `json:"pushed"`
}

// AttributesDeleted is the answer to DELETE /api/devices/{id}/attributes/{scope}.
type AttributesDeleted struct {
	// Deleted are the keys that existed, sorted.
	Deleted []string `json:"deleted"`
}

var allScopes = []telemetry.Scope{telemetry.ScopeClient, telemetry.ScopeShared, telemetry.ScopeServer}

func (s *server) getAttributes(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.liveDevice(r, key)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	scopes := allScopes
	if v := q.Get("scope"); v != "" {
		sc, err := telemetry.ParseScope(v)
		if err != nil {
			return badRequest("query parameter scope: %v", err)
		}
		scopes = []telemetry.Scope{sc}
	}
	keys, err := queryKeys(q)
	if err != nil {
		return err
	}
	out := Attributes{Attributes: []AttributeValue{}}
	for _, sc := range scopes {
		attrs, err := s.devices.Attributes(r.Context(), d.ID, sc, keys)
		if err != nil {
			return err
		}
		for _, a := range attrs {
			out.Attributes = append(out.Attributes, AttributeValue{
				Scope: sc, Key: a.Key, Type: a.Value.Kind.String(), Value: a.Value, UpdatedAt: msTime(a.UpdatedAt),
			})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// writableScope reads the {scope} of a write: shared or server.
func writableScope(r *http.Request) (telemetry.Scope, error) {
	sc, err := telemetry.ParseScope(r.PathValue("scope"))
	if err != nil {
		return "", badRequest("%v", err)
	}
	if sc == telemetry.ScopeClient {
		return "", badRequest("client attributes are reported by the device and cannot be written here; use shared (sent to the device) or server (kept on the server)")
	}
	return sc, nil
}

func (s *server) setAttributes(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.liveDevice(r, key)
	if err != nil {
		return err
	}
	sc, err := writableScope(r)
	if err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := decodeJSON(w, r, &raw); err != nil {
		return err
	}
	if len(raw) == 0 {
		return badRequest(`no attributes given: send a JSON object such as {"fw": "1.2", "interval": 30}`)
	}
	values := make(map[string]telemetry.Value, len(raw))
	for k, v := range raw {
		// The API bounds keys in bytes, within the common rule.
		if len(k) > telemetry.MaxKeyLength || telemetry.CheckKey(k, 0) != nil {
			return badRequest("attribute keys must be 1 to %d bytes long, not blank, without control characters; %.40q is not", telemetry.MaxKeyLength, k)
		}
		val, err := telemetry.ParseJSON(v)
		if err != nil {
			return badRequest("attribute %q: %v", k, err)
		}
		values[k] = val
	}
	pushed, err := s.devices.SetAttributes(r.Context(), d.ID, sc, values)
	if err != nil {
		return err
	}
	// Keys only: values may be long, and the trail says who changed what.
	s.audit(r, key, registry.AuditEvent{Action: "device.attributes.set", DeviceID: d.ID, ProfileID: d.ProfileID,
		Detail: "set " + string(sc) + " attributes of device " + d.Name + ": " + joinKeys(slices.Sorted(maps.Keys(values)))})
	writeJSON(w, http.StatusOK, AttributesSet{Pushed: pushed})
	return nil
}

func (s *server) deleteAttributes(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.liveDevice(r, key)
	if err != nil {
		return err
	}
	sc, err := writableScope(r)
	if err != nil {
		return err
	}
	keys, err := queryKeys(r.URL.Query())
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return badRequest("query parameter keys is required: the attribute keys to delete, such as keys=fw,mode")
	}
	deleted, err := s.devices.DeleteAttributes(r.Context(), d.ID, sc, keys)
	if err != nil {
		return err
	}
	if deleted == nil {
		deleted = []string{}
	}
	detail := "deleted " + string(sc) + " attributes of device " + d.Name + ": " + joinKeys(deleted)
	if len(deleted) == 0 {
		detail = "deleted no " + string(sc) + " attributes of device " + d.Name + " (none of " + joinKeys(keys) + " existed)"
	}
	s.audit(r, key, registry.AuditEvent{Action: "device.attributes.delete", DeviceID: d.ID, ProfileID: d.ProfileID, Detail: detail})
	writeJSON(w, http.StatusOK, AttributesDeleted{Deleted: deleted})
	return nil
}
