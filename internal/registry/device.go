package registry

import (
	"encoding/json"
	"fmt"
	"time"
)

// DeviceStatus says whether a device may connect and provision.
type DeviceStatus string

// Device statuses.
const (
	DeviceEnabled  DeviceStatus = "enabled"
	DeviceDisabled DeviceStatus = "disabled"
)

// Valid reports whether s is a known status.
func (s DeviceStatus) Valid() bool { return s == DeviceEnabled || s == DeviceDisabled }

// Device is one unit of the fleet.
type Device struct {
	ID        string       `json:"id"`
	OrgID     string       `json:"orgId"`
	ProfileID string       `json:"profileId"`
	Name      string       `json:"name"` // unique within the organisation
	Status    DeviceStatus `json:"status"`
	// ProvisionedAt is nil for a pre-provisioned device that has not yet
	// called home.
	ProvisionedAt *time.Time `json:"provisionedAt,omitempty"`
	// Attributes become the device's initial attributes/twin.
	Attributes map[string]any `json:"attributes,omitempty"`
	// Version increases with every write; stores use it for optimistic
	// concurrency (see ProvisionCommit.ExpectVersion).
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// MaxAttributesJSON caps the encoded size of a device's attributes.
const MaxAttributesJSON = 64 << 10

// Validate checks the device's own fields.
func (d *Device) Validate() error {
	if err := ValidateName("device", d.Name); err != nil {
		return err
	}
	if d.ProfileID == "" {
		return fmt.Errorf("%w: device has no profile", ErrInvalid)
	}
	if !d.Status.Valid() {
		return fmt.Errorf("%w: unknown device status %q (want enabled or disabled)", ErrInvalid, d.Status)
	}
	if d.Attributes != nil {
		b, err := json.Marshal(d.Attributes)
		if err != nil {
			return fmt.Errorf("%w: attributes: %v", ErrInvalid, err)
		}
		if len(b) > MaxAttributesJSON {
			return fmt.Errorf("%w: attributes exceed %d bytes", ErrInvalid, MaxAttributesJSON)
		}
	}
	return nil
}

// DeviceFilter selects devices in ListDevices. Zero fields match everything.
type DeviceFilter struct {
	ProfileID string
	Status    DeviceStatus
	// Provisioned, when set, keeps only provisioned (true) or only
	// pre-provisioned, not yet provisioned (false) devices.
	Provisioned *bool
	// NamePrefix keeps devices whose name starts with it.
	NamePrefix string
	ListOptions
}

// NewDevice is one device to create with its optional credentials, as in a
// bulk import of pre-provisioned devices.
type NewDevice struct {
	Device      Device
	Credentials []Credential
}
