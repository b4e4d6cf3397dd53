package provision

import (
	"errors"
	"fmt"
)

// Reason classifies a refused provisioning request. Dialects map reasons to
// their own answers (ThingsBoard: NOT_FOUND or FAILURE); audit events and
// metrics record them as they are.
type Reason string

// Reasons a request is refused.
const (
	// The provision key is unknown, empty, or its secret is wrong. One
	// reason for all three, so a caller cannot tell which keys exist.
	ReasonBadKeyOrSecret Reason = "bad-key-or-secret"
	// The profile's strategy is "disabled".
	ReasonProvisioningDisabled Reason = "provisioning-disabled"
	// The request itself is unusable: bad JSON, bad name, unknown field.
	ReasonBadRequest Reason = "bad-request"
	// The credentials the device brought are unusable.
	ReasonBadCredentials Reason = "bad-credentials"
	// The credentials the device brought belong to another device.
	ReasonCredentialsTaken Reason = "credentials-taken"
	// The device is already provisioned and the policy is "never", or its
	// name is taken by a device of another profile.
	ReasonAlreadyProvisioned Reason = "already-provisioned"
	// Pre-provisioned strategy, but no such device in this profile.
	ReasonNotPreProvisioned Reason = "not-pre-provisioned"
	// The device exists but is disabled.
	ReasonDeviceDisabled Reason = "device-disabled"
	// Concurrent requests for the same device kept changing it (on other
	// nodes); the device should retry.
	ReasonBusy Reason = "busy"
	// The request could not be served: the store is unavailable.
	ReasonInternal Reason = "internal"
)

// Error is a refusal with its reason and a message safe to show the device
// or an operator (never a secret).
type Error struct {
	Reason Reason
	Msg    string
	Err    error // the cause, for logs; may be nil
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Reason, e.Msg, e.Err)
	}
	return string(e.Reason) + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

func refuse(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the reason of a provisioning error (ReasonInternal for
// errors that are not *Error).
func ReasonOf(err error) Reason {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return ReasonInternal
}
