package registry

import "time"

// AuditEvent records one thing that happened: a provisioning attempt and its
// result, a management change, a refused connection.
type AuditEvent struct {
	// Seq is assigned by the store, increasing; it is the list cursor.
	Seq   int64     `json:"seq"`
	OrgID string    `json:"orgId"`
	Time  time.Time `json:"time"`
	// Actor says who acted: "device", "api-key:<id>", "system".
	Actor string `json:"actor"`
	// Action is a dotted verb, e.g. "provision", "profile.create", "device.disable".
	Action string `json:"action"`
	// Result is "success" or a short failure reason code, e.g. "bad-secret".
	Result    string `json:"result"`
	DeviceID  string `json:"deviceId,omitempty"`
	ProfileID string `json:"profileId,omitempty"`
	// Source is where the request came from (IP address, listener).
	Source string `json:"source,omitempty"`
	// Dialect that carried a device request ("thingsboard", ...).
	Dialect string `json:"dialect,omitempty"`
	// Detail is a human sentence; never a secret.
	Detail string `json:"detail,omitempty"`
}

// AuditFilter selects audit events, newest first.
type AuditFilter struct {
	DeviceID string
	Action   string
	Result   string
	Since    time.Time // zero: no lower bound
	// Before is the cursor: only events with Seq < Before (0: from the newest).
	Before int64
	Limit  int
}

// APIKey grants management rights. The key itself is shown once; only its
// hash is stored.
type APIKey struct {
	ID        string    `json:"id"`
	OrgID     string    `json:"orgId"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Hash      string    `json:"-"` // secret.LookupHash(key)
	CreatedAt time.Time `json:"createdAt"`
}

// Roles of API keys and users.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleOEM      = "oem"
	RoleViewer   = "viewer"
)
