package device

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// A device twin (Azure IoT Hub's device-side state) is kept as the
// device's attributes, so that a device looks the same whichever dialect
// it speaks: tags are server attributes (operators only), desired
// properties shared attributes (sent to the device), reported properties
// client attributes (the device's own).

// ResetTwin replaces the device's tags and desired properties with those
// of an initial twin (JSON objects; empty or null means none): every
// server and shared attribute is deleted, then each top-level member of
// tags and desired is written as one. Reported properties stay: they are
// the device's. It is durable when it returns, and idempotent, so a
// registration that failed after it may simply run it again. fresh says
// the device was just created: it has no attributes to delete.
func (s *Service) ResetTwin(ctx context.Context, deviceID string, tags, desired json.RawMessage, fresh bool) error {
	for _, part := range []struct {
		scope telemetry.Scope
		raw   json.RawMessage
	}{{telemetry.ScopeServer, tags}, {telemetry.ScopeShared, desired}} {
		values, err := twinAttributes(part.raw, s.limits.MaxKeys)
		if err != nil {
			return fmt.Errorf("%w: twin %s: %v", ErrInvalid, part.scope, err)
		}
		var old []telemetry.Attribute
		if !fresh {
			if old, err = s.store.Attributes(ctx, deviceID, part.scope, nil); err != nil {
				return err
			}
		}
		var stale []string
		for _, a := range old {
			if _, kept := values[a.Key]; !kept {
				stale = append(stale, a.Key)
			}
		}
		if len(stale) > 0 {
			if _, err := s.store.DeleteAttributes(ctx, deviceID, part.scope, stale); err != nil {
				return err
			}
		}
		if len(values) == 0 {
			continue
		}
		now := s.nowMS()
		attrs := make([]telemetry.Attribute, 0, len(values))
		for k, v := range values {
			attrs = append(attrs, telemetry.Attribute{Key: k, Value: v, UpdatedAt: now})
		}
		sortAttributes(attrs)
		if err := s.store.SetAttributes(ctx, deviceID, part.scope, attrs); err != nil {
			return err
		}
	}
	return nil
}

// twinAttributes splits a twin section (a JSON object) into attribute
// values by top-level member; null members are absent, as in a twin.
func twinAttributes(raw json.RawMessage, maxKeys int) (map[string]telemetry.Value, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	if len(members) > maxKeys {
		return nil, fmt.Errorf("%d members, at most %d", len(members), maxKeys)
	}
	values := make(map[string]telemetry.Value, len(members))
	for k, m := range members {
		if string(m) == "null" {
			continue
		}
		if k == "" {
			return nil, fmt.Errorf("a member has an empty name")
		}
		v, err := telemetry.ParseJSON(m)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", k, err)
		}
		values[k] = v
	}
	return values, nil
}
