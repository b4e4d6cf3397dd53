package registry

import (
	"encoding/json"
	"fmt"
	"time"
)

// Registration is what a DPS device registration made of a registration
// id: the device it became, the hub it was assigned to, and the operation
// that did it (DPS's "device registration state"). Only successful
// assignments are recorded; refusals leave an audit event and nothing else.
// A registration is written with its device, in ProvisionCommit, and goes
// when the device is deleted (a later registration then creates it anew).
type Registration struct {
	OrgID string `json:"orgId"`
	// RegistrationID is lower case (see ValidateRegistrationID).
	RegistrationID string `json:"registrationId"`
	// EnrollmentGroupID is the group that admitted the device; empty for
	// an individual enrollment.
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	// DeviceID is the zerotouch device.
	DeviceID string `json:"deviceId"`
	// HubDeviceID is the device's id on its hub, as the device uses it in
	// its CONNECT (Azure's deviceId).
	HubDeviceID string `json:"hubDeviceId"`
	// AssignedHub is the hub's host name, used verbatim by the device.
	AssignedHub string `json:"assignedHub"`
	// Substatus is DPS's: initialAssignment, deviceDataMigrated,
	// deviceDataReset or reprovisionedToInitialAssignment.
	Substatus string `json:"substatus"`
	// OperationID names the registration operation that wrote this state;
	// the device polls with it.
	OperationID string `json:"operationId"`
	// Payload is what was returned to the device with its assignment (the
	// enrollment's or the allocation webhook's custom payload).
	Payload json.RawMessage `json:"payload,omitempty"`
	// Version increases with every write; it is the registration's etag.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// DPS registration substatuses.
const (
	SubstatusInitialAssignment   = "initialAssignment"
	SubstatusDeviceDataMigrated  = "deviceDataMigrated"
	SubstatusDeviceDataReset     = "deviceDataReset"
	SubstatusReprovisionedToInit = "reprovisionedToInitialAssignment"
)

// Validate checks the registration's own fields.
func (r *Registration) Validate() error {
	if err := ValidateRegistrationID("registration id", r.RegistrationID); err != nil {
		return err
	}
	if r.EnrollmentGroupID != "" {
		if err := ValidateRegistrationID("enrollment group id", r.EnrollmentGroupID); err != nil {
			return err
		}
	}
	for _, f := range []struct{ what, v string }{
		{"hub device id", r.HubDeviceID}, {"assigned hub", r.AssignedHub}, {"operation id", r.OperationID},
	} {
		if f.v == "" {
			return fmt.Errorf("%w: registration has no %s", ErrInvalid, f.what)
		}
		if err := validateText(f.what, f.v, MaxNameLen); err != nil {
			return err
		}
	}
	switch r.Substatus {
	case SubstatusInitialAssignment, SubstatusDeviceDataMigrated, SubstatusDeviceDataReset, SubstatusReprovisionedToInit:
	default:
		return fmt.Errorf("%w: unknown registration substatus %q", ErrInvalid, r.Substatus)
	}
	if len(r.Payload) > MaxTwinJSON {
		return fmt.Errorf("%w: registration payload exceeds %d bytes", ErrInvalid, MaxTwinJSON)
	}
	if len(r.Payload) > 0 && !json.Valid(r.Payload) {
		return fmt.Errorf("%w: registration payload is not JSON", ErrInvalid)
	}
	return nil
}
