package apiclient_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/api/apitest"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
)

func TestEnrollmentClient(t *testing.T) {
	srv := apitest.New(t)
	ctx := context.Background()
	op, err := apiclient.New(srv.URL, srv.Keys[registry.RoleOperator])
	if err != nil {
		t.Fatal(err)
	}
	oem, err := apiclient.New(srv.URL, srv.Keys[registry.RoleOEM])
	if err != nil {
		t.Fatal(err)
	}

	scope, err := oem.IDScope(ctx)
	if err != nil || !registry.ValidIDScope(scope) {
		t.Fatalf("ID scope %q, %v", scope, err)
	}

	e, err := op.CreateEnrollment(ctx, api.CreateEnrollmentRequest{RegistrationID: "Unit-1",
		Attestation:        registry.Attestation{Type: registry.AttestationSymmetricKey},
		EnrollmentPolicies: registry.EnrollmentPolicies{Status: registry.EnrollmentDisabled}})
	if err != nil || e.RegistrationID != "unit-1" || e.Attestation.SymmetricKey == nil || e.Status != registry.EnrollmentDisabled {
		t.Fatalf("create: %+v, %v", e, err)
	}
	// The oem activates it, and sees no keys.
	hubs := []string{"hub-a"}
	e, err = oem.SetEnrollmentEnabled(ctx, "UNIT-1", true, api.ActivateEnrollmentRequest{ActivationSettings: api.ActivationSettings{IoTHubs: &hubs}})
	if err != nil || e.Status != registry.EnrollmentEnabled || len(e.IoTHubs) != 1 || e.Attestation.SymmetricKey != nil {
		t.Fatalf("enable: %+v, %v", e, err)
	}
	// A change based on an old version is refused with a typed error.
	stale := int64(1)
	disabled := registry.EnrollmentDisabled
	_, err = oem.UpdateEnrollment(ctx, "unit-1", api.UpdateEnrollmentRequest{Status: &disabled, Version: &stale})
	var ae *apiclient.Error
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != api.CodeConflict {
		t.Fatalf("stale update: %v", err)
	}
	dev := "dev-1"
	if _, err := oem.UpdateEnrollment(ctx, "unit-1", api.UpdateEnrollmentRequest{DeviceID: &dev}); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("oem deviceId: %v", err)
	}
	if e, err = op.UpdateEnrollment(ctx, "unit-1", api.UpdateEnrollmentRequest{DeviceID: &dev}); err != nil || e.DeviceID != dev {
		t.Fatalf("operator deviceId: %+v, %v", e, err)
	}
	if l, err := oem.ListEnrollments(ctx, 10, ""); err != nil || len(l.Items) != 1 || l.Items[0].Attestation.SymmetricKey != nil {
		t.Fatalf("list: %+v, %v", l, err)
	}
	if e, err := op.GetEnrollment(ctx, "unit-1"); err != nil || e.Attestation.SymmetricKey == nil {
		t.Fatalf("get: %+v, %v", e, err)
	}
	if err := op.DeleteEnrollment(ctx, "unit-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := op.GetEnrollment(ctx, "unit-1"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("get deleted: %v", err)
	}

	g, err := op.CreateEnrollmentGroup(ctx, api.CreateEnrollmentGroupRequest{ID: "grp",
		Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey,
			SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: "Zm9vYmFyLWdyb3VwLWtleS0wMTIzNDU2Nzg5YWJjZGVm"}}})
	if err != nil || g.ID != "grp" {
		t.Fatalf("create group: %+v, %v", g, err)
	}
	if k, err := op.DeriveDeviceKey(ctx, "grp", "sensor-0042"); err != nil || k.DeviceKey != "UkXPdktywHY4Y5MnYhyw8m73FuWa9l0Mst8zzTeK9RY=" {
		t.Fatalf("derive: %+v, %v", k, err)
	}
	if g, err = oem.SetEnrollmentGroupEnabled(ctx, "grp", false, api.ActivateEnrollmentRequest{}); err != nil || g.Status != registry.EnrollmentDisabled {
		t.Fatalf("disable group: %+v, %v", g, err)
	}
	if g, err = oem.UpdateEnrollmentGroup(ctx, "grp", api.UpdateEnrollmentGroupRequest{ActivationSettings: api.ActivationSettings{IoTHubs: &hubs}}); err != nil || len(g.IoTHubs) != 1 {
		t.Fatalf("update group: %+v, %v", g, err)
	}
	if l, err := op.ListEnrollmentGroups(ctx, 0, ""); err != nil || len(l.Items) != 1 {
		t.Fatalf("list groups: %+v, %v", l, err)
	}
	if _, err := op.GetEnrollmentGroup(ctx, "GRP"); err != nil {
		t.Fatal(err)
	}
	if err := op.DeleteEnrollmentGroup(ctx, "grp"); err != nil {
		t.Fatal(err)
	}
}
