package apiclient

import (
	"context"
	"net/http"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Azure DPS enrollments.

// IDScope returns the organisation's DPS ID scope.
func (c *Client) IDScope(ctx context.Context) (string, error) {
	var out api.IDScope
	err := c.do(ctx, request{method: http.MethodGet, path: "/api/idscope"}, &out)
	return out.IDScope, err
}

// CreateEnrollment creates an individual enrollment; the answer carries
// its symmetric keys, generated when the request had none.
func (c *Client) CreateEnrollment(ctx context.Context, in api.CreateEnrollmentRequest) (*registry.Enrollment, error) {
	var out registry.Enrollment
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/api/enrollments", in: in}, &out)
}

// ListEnrollments returns one page of individual enrollments.
func (c *Client) ListEnrollments(ctx context.Context, limit int, after string) (*api.List[registry.Enrollment], error) {
	var out api.List[registry.Enrollment]
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/api/enrollments", query: listQuery(limit, after)}, &out)
}

// GetEnrollment returns the individual enrollment with the registration id
// (any case).
func (c *Client) GetEnrollment(ctx context.Context, registrationID string) (*registry.Enrollment, error) {
	var out registry.Enrollment
	return &out, c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/enrollments/%s", registrationID)}, &out)
}

// UpdateEnrollment changes the fields set in in.
func (c *Client) UpdateEnrollment(ctx context.Context, registrationID string, in api.UpdateEnrollmentRequest) (*registry.Enrollment, error) {
	var out registry.Enrollment
	return &out, c.do(ctx, request{method: http.MethodPatch, path: pathOf("/api/enrollments/%s", registrationID), in: in}, &out)
}

// SetEnrollmentEnabled enables or disables an individual enrollment,
// setting the activation settings of in in the same write.
func (c *Client) SetEnrollmentEnabled(ctx context.Context, registrationID string, enabled bool, in api.ActivateEnrollmentRequest) (*registry.Enrollment, error) {
	var out registry.Enrollment
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/enrollments/%s/"+enableVerb(enabled), registrationID), in: in}, &out)
}

// DeleteEnrollment deletes an individual enrollment.
func (c *Client) DeleteEnrollment(ctx context.Context, registrationID string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("/api/enrollments/%s", registrationID)}, nil)
}

// CreateEnrollmentGroup creates an enrollment group; the answer carries
// its symmetric keys, generated when the request had none.
func (c *Client) CreateEnrollmentGroup(ctx context.Context, in api.CreateEnrollmentGroupRequest) (*registry.EnrollmentGroup, error) {
	var out registry.EnrollmentGroup
	return &out, c.do(ctx, request{method: http.MethodPost, path: "/api/enrollment-groups", in: in}, &out)
}

// ListEnrollmentGroups returns one page of enrollment groups.
func (c *Client) ListEnrollmentGroups(ctx context.Context, limit int, after string) (*api.List[registry.EnrollmentGroup], error) {
	var out api.List[registry.EnrollmentGroup]
	return &out, c.do(ctx, request{method: http.MethodGet, path: "/api/enrollment-groups", query: listQuery(limit, after)}, &out)
}

// GetEnrollmentGroup returns the enrollment group with the id (any case).
func (c *Client) GetEnrollmentGroup(ctx context.Context, id string) (*registry.EnrollmentGroup, error) {
	var out registry.EnrollmentGroup
	return &out, c.do(ctx, request{method: http.MethodGet, path: pathOf("/api/enrollment-groups/%s", id)}, &out)
}

// UpdateEnrollmentGroup changes the fields set in in.
func (c *Client) UpdateEnrollmentGroup(ctx context.Context, id string, in api.UpdateEnrollmentGroupRequest) (*registry.EnrollmentGroup, error) {
	var out registry.EnrollmentGroup
	return &out, c.do(ctx, request{method: http.MethodPatch, path: pathOf("/api/enrollment-groups/%s", id), in: in}, &out)
}

// SetEnrollmentGroupEnabled enables or disables an enrollment group,
// setting the activation settings of in in the same write.
func (c *Client) SetEnrollmentGroupEnabled(ctx context.Context, id string, enabled bool, in api.ActivateEnrollmentRequest) (*registry.EnrollmentGroup, error) {
	var out registry.EnrollmentGroup
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/enrollment-groups/%s/"+enableVerb(enabled), id), in: in}, &out)
}

// DeleteEnrollmentGroup deletes an enrollment group.
func (c *Client) DeleteEnrollmentGroup(ctx context.Context, id string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("/api/enrollment-groups/%s", id)}, nil)
}

// DeriveDeviceKey returns the key of the device with the registration id in
// the symmetric-key enrollment group.
func (c *Client) DeriveDeviceKey(ctx context.Context, groupID, registrationID string) (*api.DerivedDeviceKey, error) {
	var out api.DerivedDeviceKey
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/enrollment-groups/%s/derive-key", groupID),
		in: api.DeriveDeviceKeyRequest{RegistrationID: registrationID}}, &out)
}

// EnrollmentGroupVerificationCode asks for a new proof-of-possession code
// for the X.509 enrollment group's CA certificate.
func (c *Client) EnrollmentGroupVerificationCode(ctx context.Context, groupID string) (*api.VerificationCode, error) {
	var out api.VerificationCode
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/enrollment-groups/%s/verification-code", groupID)}, &out)
}

// VerifyEnrollmentGroupCA uploads the verification certificate (PEM) that
// proves possession of the group's CA key; the answer is the group.
func (c *Client) VerifyEnrollmentGroupCA(ctx context.Context, groupID, certificatePEM string) (*registry.EnrollmentGroup, error) {
	var out registry.EnrollmentGroup
	return &out, c.do(ctx, request{method: http.MethodPost, path: pathOf("/api/enrollment-groups/%s/verify", groupID),
		in: api.VerifyCARequest{CertificatePEM: certificatePEM}}, &out)
}

func enableVerb(enabled bool) string {
	if enabled {
		return "enable"
	}
	return "disable"
}
