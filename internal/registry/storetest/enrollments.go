package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// Rules of DPS enrollments stated by this file:
//   - Enrollments and groups start at Version 1; Update* applies only at
//     the stored version (else ConflictError "enrollment" /
//     "enrollmentGroup") and increments it; a missing record is ErrNotFound.
//   - Registration and group ids are stored in lower case and found without
//     regard to case; lists are ordered by them and paged like profiles.
//   - An X.509 enrollment comes back with its Thumbprint set (computed from
//     the certificate when only the PEM was given); one certificate is
//     enrolled at most once across organisations (ConflictError "enrollment").
//   - Empty IoTHubs, twin parts and payload come back nil; JSON comes back
//     byte for byte as written.
//   - IDScope is generated once per organisation in DPS's form and never
//     changes; OrgByIDScope finds it in any case.

const (
	keyA = "c3ltbWV0cmljLWtleS1hLTAxMjM0NTY3ODlhYmNkZWY=" // 33 bytes
	keyB = "c3ltbWV0cmljLWtleS1iLTAxMjM0NTY3ODlhYmNkZWY="
)

func policiesFixture() registry.EnrollmentPolicies {
	return registry.EnrollmentPolicies{
		Status:            registry.EnrollmentDisabled,
		AllocationPolicy:  registry.AllocationStatic,
		IoTHubs:           []string{"hub-1.example.com"},
		ReprovisionPolicy: registry.EnrollmentReprovisionMigrate,
		InitialTwin: registry.InitialTwin{
			Tags:              json.RawMessage(`{"location":{"site":"Lyon","line":3},"chassis":"CH-0001"}`),
			DesiredProperties: json.RawMessage(`{"interval":5,"big":12345678901234567890}`),
		},
		CustomPayload: json.RawMessage(`{"firmware":"1.2.3"}`),
	}
}

func symmetricEnrollment(regID string) registry.Enrollment {
	return registry.Enrollment{
		OrgID:          registry.DefaultOrgID,
		RegistrationID: regID,
		Attestation: registry.Attestation{Type: registry.AttestationSymmetricKey,
			SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: keyA, SecondaryKey: keyB}},
		EnrollmentPolicies: policiesFixture(),
	}
}

func symmetricGroup(id string) registry.EnrollmentGroup {
	return registry.EnrollmentGroup{
		OrgID: registry.DefaultOrgID,
		ID:    id,
		Attestation: registry.GroupAttestation{Type: registry.AttestationSymmetricKey,
			SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: keyA, SecondaryKey: keyB}},
		EnrollmentPolicies: policiesFixture(),
	}
}

func fingerprintOf(t *testing.T, certPEM string) string {
	t.Helper()
	b, _ := pem.Decode([]byte(certPEM))
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:])
}

func checkEnrollment(t *testing.T, got, want *registry.Enrollment) {
	t.Helper()
	g, w := *got, *want
	checkTime(t, "enrollment CreatedAt", g.CreatedAt, w.CreatedAt)
	checkTime(t, "enrollment UpdatedAt", g.UpdatedAt, w.UpdatedAt)
	g.CreatedAt, g.UpdatedAt, w.CreatedAt, w.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("enrollment = %s\nwant         %s", dump(g), dump(w))
	}
}

func checkGroup(t *testing.T, got, want *registry.EnrollmentGroup) {
	t.Helper()
	g, w := *got, *want
	checkTime(t, "group CreatedAt", g.CreatedAt, w.CreatedAt)
	checkTime(t, "group UpdatedAt", g.UpdatedAt, w.UpdatedAt)
	g.CreatedAt, g.UpdatedAt, w.CreatedAt, w.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("group = %s\nwant    %s", dump(g), dump(w))
	}
}

func dump(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

var enrollmentTests = []testCase{
	{"CreateAndGetEveryAttestation", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		leaf := caPEM(t, "device-x509", false)
		cases := []struct {
			name   string
			att    registry.Attestation
			stored *registry.X509Attestation // X509 as it comes back, when it differs
		}{
			{"symmetric key", registry.Attestation{Type: registry.AttestationSymmetricKey,
				SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: keyA, SecondaryKey: keyB}}, nil},
			{"symmetric primary only", registry.Attestation{Type: registry.AttestationSymmetricKey,
				SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: keyA}}, nil},
			{"x509 certificate", registry.Attestation{Type: registry.AttestationX509,
				X509: &registry.X509Attestation{CertificatePEM: leaf}},
				&registry.X509Attestation{CertificatePEM: leaf, Thumbprint: fingerprintOf(t, leaf)}},
			{"x509 thumbprint", registry.Attestation{Type: registry.AttestationX509,
				X509: &registry.X509Attestation{Thumbprint: strings.Repeat("ab", 32)}}, nil},
			{"tpm", registry.Attestation{Type: registry.AttestationTPM,
				TPM: &registry.TPMAttestation{EndorsementKey: "AToAAQALAAMAsgAg", StorageRootKey: "ARgAAQALAAMAcgAA"}}, nil},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := time.Now()
				e := symmetricEnrollment(fmt.Sprintf("dev-%d", i))
				e.Attestation = tc.att
				e.DeviceID = fmt.Sprintf("Device %d", i)
				want := e
				must(t, s.CreateEnrollment(ctx, &e), "CreateEnrollment")
				if e.Version != 1 {
					t.Errorf("Version = %d, want 1", e.Version)
				}
				checkRecent(t, "CreatedAt", e.CreatedAt, before)
				checkRecent(t, "UpdatedAt", e.UpdatedAt, before)
				want.Version, want.CreatedAt, want.UpdatedAt = 1, e.CreatedAt, e.UpdatedAt
				if tc.stored != nil {
					want.Attestation.X509 = tc.stored
				}
				checkEnrollment(t, &e, &want)
				got, err := s.GetEnrollment(ctx, registry.DefaultOrgID, e.RegistrationID)
				must(t, err, "GetEnrollment")
				checkEnrollment(t, got, &want)
				got, err = s.GetEnrollment(ctx, registry.DefaultOrgID, strings.ToUpper(e.RegistrationID))
				must(t, err, "GetEnrollment(upper case)")
				checkEnrollment(t, got, &want)
			})
		}
		_, err := s.GetEnrollment(ctx, registry.DefaultOrgID, "no-such-device")
		wantNotFound(t, err, "GetEnrollment(unknown)")
	}},

	{"CreateKeepsGivenTimesAndNormalisesEmpty", func(t *testing.T, s registry.Store) {
		e := symmetricEnrollment("given")
		e.CreatedAt = time.Date(2024, 2, 29, 23, 59, 58, 123456789, time.FixedZone("UTC+5", 5*3600))
		e.UpdatedAt = e.CreatedAt.Add(time.Hour)
		e.Version = 9
		e.AllocationPolicy, e.IoTHubs = registry.AllocationHashed, []string{}
		e.InitialTwin, e.CustomPayload = registry.InitialTwin{Tags: json.RawMessage{}}, json.RawMessage{}
		must(t, s.CreateEnrollment(t.Context(), &e), "CreateEnrollment")
		want := e
		want.Version, want.IoTHubs, want.InitialTwin, want.CustomPayload = 1, nil, registry.InitialTwin{}, nil
		got, err := s.GetEnrollment(t.Context(), registry.DefaultOrgID, "given")
		must(t, err, "GetEnrollment")
		checkEnrollment(t, got, &want)
		checkEnrollment(t, &e, &want)
	}},

	{"CreateInvalid", func(t *testing.T, s registry.Store) {
		ca := caPEM(t, "ca", true)
		leaf := caPEM(t, "leaf", false)
		cases := []struct {
			name   string
			mutate func(e *registry.Enrollment)
		}{
			{"empty registration id", func(e *registry.Enrollment) { e.RegistrationID = "" }},
			{"upper-case registration id", func(e *registry.Enrollment) { e.RegistrationID = "Dev-1" }},
			{"long registration id", func(e *registry.Enrollment) { e.RegistrationID = strings.Repeat("a", registry.MaxRegistrationIDLen+1) }},
			{"slash in registration id", func(e *registry.Enrollment) { e.RegistrationID = "a/b" }},
			{"registration id ends with a dot", func(e *registry.Enrollment) { e.RegistrationID = "dev." }},
			{"control character in device id", func(e *registry.Enrollment) { e.DeviceID = "a\x00b" }},
			{"unknown status", func(e *registry.Enrollment) { e.Status = "paused" }},
			{"unknown allocation", func(e *registry.Enrollment) { e.AllocationPolicy = "random" }},
			{"static without hub", func(e *registry.Enrollment) { e.IoTHubs = nil }},
			{"static with two hubs", func(e *registry.Enrollment) { e.IoTHubs = []string{"a", "b"} }},
			{"duplicate hub", func(e *registry.Enrollment) {
				e.AllocationPolicy, e.IoTHubs = registry.AllocationHashed, []string{"a", "a"}
			}},
			{"empty hub name", func(e *registry.Enrollment) { e.IoTHubs = []string{""} }},
			{"unknown reprovision policy", func(e *registry.Enrollment) { e.ReprovisionPolicy = "rotate" }},
			{"tags not an object", func(e *registry.Enrollment) { e.InitialTwin.Tags = json.RawMessage(`[1]`) }},
			{"desired not JSON", func(e *registry.Enrollment) { e.InitialTwin.DesiredProperties = json.RawMessage(`{"a":`) }},
			{"tags too large", func(e *registry.Enrollment) {
				e.InitialTwin.Tags = json.RawMessage(`{"a":"` + strings.Repeat("x", registry.MaxTwinJSON) + `"}`)
			}},
			{"payload not JSON", func(e *registry.Enrollment) { e.CustomPayload = json.RawMessage(`nope`) }},
			{"no attestation", func(e *registry.Enrollment) { e.Attestation = registry.Attestation{} }},
			{"unknown attestation type", func(e *registry.Enrollment) { e.Attestation.Type = "password" }},
			{"type without settings", func(e *registry.Enrollment) { e.Attestation.Type = registry.AttestationTPM }},
			{"two attestations", func(e *registry.Enrollment) {
				e.Attestation.TPM = &registry.TPMAttestation{EndorsementKey: "AAAA"}
			}},
			{"empty primary key", func(e *registry.Enrollment) { e.Attestation.SymmetricKey.PrimaryKey = "" }},
			{"primary key not base64", func(e *registry.Enrollment) { e.Attestation.SymmetricKey.PrimaryKey = "not base64!" }},
			{"primary key too short", func(e *registry.Enrollment) { e.Attestation.SymmetricKey.PrimaryKey = "c2hvcnQ=" }},
			{"secondary equals primary", func(e *registry.Enrollment) { e.Attestation.SymmetricKey.SecondaryKey = keyA }},
			{"x509 nothing", func(e *registry.Enrollment) {
				e.Attestation = registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{}}
			}},
			{"x509 not PEM", func(e *registry.Enrollment) {
				e.Attestation = registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{CertificatePEM: "garbage"}}
			}},
			{"x509 two certificates", func(e *registry.Enrollment) {
				e.Attestation = registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{CertificatePEM: leaf + ca}}
			}},
			{"x509 upper-case thumbprint", func(e *registry.Enrollment) {
				e.Attestation = registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{Thumbprint: strings.Repeat("AB", 32)}}
			}},
			{"x509 thumbprint of another certificate", func(e *registry.Enrollment) {
				e.Attestation = registry.Attestation{Type: registry.AttestationX509,
					X509: &registry.X509Attestation{CertificatePEM: leaf, Thumbprint: fingerprintOf(t, ca)}}
			}},
			{"tpm without endorsement key", func(e *registry.Enrollment) {
				e.Attestation = registry.Attestation{Type: registry.AttestationTPM, TPM: &registry.TPMAttestation{StorageRootKey: "AAAA"}}
			}},
			{"tpm key not base64", func(e *registry.Enrollment) {
				e.Attestation = registry.Attestation{Type: registry.AttestationTPM, TPM: &registry.TPMAttestation{EndorsementKey: "%%%"}}
			}},
			{"unknown organisation", func(e *registry.Enrollment) { e.OrgID = OtherOrgID }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := symmetricEnrollment("invalid")
				tc.mutate(&e)
				before := dump(e)
				wantInvalid(t, s.CreateEnrollment(t.Context(), &e), "CreateEnrollment")
				if dump(e) != before {
					t.Errorf("a failed CreateEnrollment changed the caller's record")
				}
			})
		}
		es, _, err := s.ListEnrollments(t.Context(), registry.DefaultOrgID, registry.ListOptions{})
		must(t, err, "ListEnrollments")
		if len(es) != 0 {
			t.Fatalf("invalid enrollments were written: %s", dump(es))
		}
	}},

	{"CreateConflicts", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		first := symmetricEnrollment("taken")
		must(t, s.CreateEnrollment(ctx, &first), "CreateEnrollment")
		dup := symmetricEnrollment("taken")
		wantConflict(t, s.CreateEnrollment(ctx, &dup), "enrollment", "CreateEnrollment(same registration id)")

		leaf := caPEM(t, "device", false)
		x := symmetricEnrollment("x509-a")
		x.Attestation = registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{CertificatePEM: leaf}}
		must(t, s.CreateEnrollment(ctx, &x), "CreateEnrollment(x509)")
		y := symmetricEnrollment("x509-b")
		y.Attestation = registry.Attestation{Type: registry.AttestationX509, X509: &registry.X509Attestation{Thumbprint: fingerprintOf(t, leaf)}}
		wantConflict(t, s.CreateEnrollment(ctx, &y), "enrollment", "CreateEnrollment(same certificate)")

		es, _, err := s.ListEnrollments(ctx, registry.DefaultOrgID, registry.ListOptions{})
		must(t, err, "ListEnrollments")
		if len(es) != 2 {
			t.Fatalf("after conflicts, %d enrollments, want 2", len(es))
		}
		checkEnrollment(t, &es[0], &first)
	}},

	{"Update", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		e := symmetricEnrollment("dev-1")
		must(t, s.CreateEnrollment(ctx, &e), "CreateEnrollment")
		stale := cloneEnrollmentForTest(e)
		created := e.CreatedAt
		time.Sleep(2 * timeTolerance)
		before := time.Now()

		// The machine maker's activation: enable, add metadata, pick the hub.
		e.Status = registry.EnrollmentEnabled
		e.DeviceID = "machine-42"
		e.InitialTwin.Tags = json.RawMessage(`{"chassis":"CH-0042"}`)
		e.IoTHubs = []string{"hub-2.example.com"}
		e.ReprovisionPolicy = registry.EnrollmentReprovisionReset
		e.Attestation.SymmetricKey = &registry.SymmetricKeyAttestation{PrimaryKey: keyB}
		e.CustomPayload = nil
		must(t, s.UpdateEnrollment(ctx, &e), "UpdateEnrollment")
		if e.Version != 2 {
			t.Errorf("Version after update = %d, want 2", e.Version)
		}
		checkTime(t, "CreatedAt after update", e.CreatedAt, created)
		checkRecent(t, "UpdatedAt after update", e.UpdatedAt, before)
		got, err := s.GetEnrollment(ctx, registry.DefaultOrgID, "dev-1")
		must(t, err, "GetEnrollment")
		checkEnrollment(t, got, &e)

		// A write based on version 1 must not overwrite the activation.
		stale.Status = registry.EnrollmentDisabled
		snapshot := dump(stale)
		wantConflict(t, s.UpdateEnrollment(ctx, &stale), "enrollment", "UpdateEnrollment(stale)")
		if dump(stale) != snapshot {
			t.Error("a failed UpdateEnrollment changed the caller's record")
		}
		got, err = s.GetEnrollment(ctx, registry.DefaultOrgID, "dev-1")
		must(t, err, "GetEnrollment")
		checkEnrollment(t, got, &e)

		invalid := cloneEnrollmentForTest(e)
		invalid.Status = "maybe"
		wantInvalid(t, s.UpdateEnrollment(ctx, &invalid), "UpdateEnrollment(invalid)")

		gone := symmetricEnrollment("never-created")
		gone.Version = 1
		wantNotFound(t, s.UpdateEnrollment(ctx, &gone), "UpdateEnrollment(unknown)")
	}},

	{"OtherOrganisation", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		e := symmetricEnrollment("mine")
		must(t, s.CreateEnrollment(ctx, &e), "CreateEnrollment")
		_, err := s.GetEnrollment(ctx, OtherOrgID, "mine")
		wantNotFound(t, err, "GetEnrollment(other org)")
		other := cloneEnrollmentForTest(e)
		other.OrgID = OtherOrgID
		wantNotFound(t, s.UpdateEnrollment(ctx, &other), "UpdateEnrollment(other org)")
		wantNotFound(t, s.DeleteEnrollment(ctx, OtherOrgID, "mine"), "DeleteEnrollment(other org)")
		es, next, err := s.ListEnrollments(ctx, OtherOrgID, registry.ListOptions{})
		if err != nil || len(es) != 0 || next != "" {
			t.Fatalf("ListEnrollments(other org) = %d, %q, %v; want none", len(es), next, err)
		}
		_, err = s.GetEnrollment(ctx, registry.DefaultOrgID, "mine")
		must(t, err, "GetEnrollment after other org's writes")
	}},

	{"ListPages", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		ids := []string{"b-2", "a-1", "c:3", "a-10", "a.9", "z", "0-first"}
		for _, id := range ids {
			e := symmetricEnrollment(id)
			must(t, s.CreateEnrollment(ctx, &e), "CreateEnrollment")
		}
		var got []string
		opts := registry.ListOptions{Limit: 3}
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatal("cursor never ends")
			}
			es, next, err := s.ListEnrollments(ctx, registry.DefaultOrgID, opts)
			must(t, err, "ListEnrollments")
			if len(es) > 3 {
				t.Fatalf("page of %d, limit 3", len(es))
			}
			for _, e := range es {
				got = append(got, e.RegistrationID)
			}
			if next == "" {
				break
			}
			opts.After = next
		}
		if want := sortedCopy(ids); !reflect.DeepEqual(got, want) {
			t.Fatalf("listed %v, want %v", got, want)
		}
		_, _, err := s.ListEnrollments(ctx, registry.DefaultOrgID, registry.ListOptions{After: "!!"})
		wantInvalid(t, err, "ListEnrollments(malformed cursor)")
	}},

	{"Delete", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		e := symmetricEnrollment("dev-1")
		must(t, s.CreateEnrollment(ctx, &e), "CreateEnrollment")
		must(t, s.DeleteEnrollment(ctx, registry.DefaultOrgID, "DEV-1"), "DeleteEnrollment(upper case)")
		_, err := s.GetEnrollment(ctx, registry.DefaultOrgID, "dev-1")
		wantNotFound(t, err, "GetEnrollment after delete")
		wantNotFound(t, s.DeleteEnrollment(ctx, registry.DefaultOrgID, "dev-1"), "DeleteEnrollment(again)")
		// The id is free again.
		again := symmetricEnrollment("dev-1")
		must(t, s.CreateEnrollment(ctx, &again), "CreateEnrollment after delete")
	}},

	{"CancelledWriteWritesNothing", func(t *testing.T, s registry.Store) {
		e := symmetricEnrollment("cancelled")
		if err := s.CreateEnrollment(cancelled(t.Context()), &e); err == nil {
			t.Fatal("CreateEnrollment with a cancelled context succeeded")
		}
		_, err := s.GetEnrollment(t.Context(), registry.DefaultOrgID, "cancelled")
		wantNotFound(t, err, "GetEnrollment")
	}},
}

// cloneEnrollmentForTest copies e deeply enough that changing the copy's
// attestation does not change e.
func cloneEnrollmentForTest(e registry.Enrollment) registry.Enrollment {
	var c registry.Enrollment
	b, _ := json.Marshal(e)
	_ = json.Unmarshal(b, &c)
	c.CreatedAt, c.UpdatedAt = e.CreatedAt, e.UpdatedAt
	return c
}

var enrollmentGroupTests = []testCase{
	{"CreateGetUpdateDelete", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		ca := caPEM(t, "group-ca", true)
		cases := []struct {
			name string
			att  registry.GroupAttestation
		}{
			{"symmetric key", registry.GroupAttestation{Type: registry.AttestationSymmetricKey,
				SymmetricKey: &registry.SymmetricKeyAttestation{PrimaryKey: keyA, SecondaryKey: keyB}}},
			{"x509 CA", registry.GroupAttestation{Type: registry.AttestationX509,
				X509CA: &registry.X509CAAttestation{CACertificatePEM: ca}}},
		}
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				before := time.Now()
				g := symmetricGroup(fmt.Sprintf("group-%d", i))
				g.Attestation = tc.att
				want := g
				must(t, s.CreateEnrollmentGroup(ctx, &g), "CreateEnrollmentGroup")
				checkRecent(t, "CreatedAt", g.CreatedAt, before)
				want.Version, want.CreatedAt, want.UpdatedAt = 1, g.CreatedAt, g.UpdatedAt
				checkGroup(t, &g, &want)
				got, err := s.GetEnrollmentGroup(ctx, registry.DefaultOrgID, strings.ToUpper(g.ID))
				must(t, err, "GetEnrollmentGroup")
				checkGroup(t, got, &want)

				g.Status = registry.EnrollmentEnabled
				g.InitialTwin.DesiredProperties = json.RawMessage(`{"interval":10}`)
				must(t, s.UpdateEnrollmentGroup(ctx, &g), "UpdateEnrollmentGroup")
				if g.Version != 2 {
					t.Errorf("Version after update = %d, want 2", g.Version)
				}
				got, err = s.GetEnrollmentGroup(ctx, registry.DefaultOrgID, g.ID)
				must(t, err, "GetEnrollmentGroup")
				checkGroup(t, got, &g)
				stale := *got
				stale.Version = 1
				wantConflict(t, s.UpdateEnrollmentGroup(ctx, &stale), "enrollmentGroup", "UpdateEnrollmentGroup(stale)")

				must(t, s.DeleteEnrollmentGroup(ctx, registry.DefaultOrgID, g.ID), "DeleteEnrollmentGroup")
				_, err = s.GetEnrollmentGroup(ctx, registry.DefaultOrgID, g.ID)
				wantNotFound(t, err, "GetEnrollmentGroup after delete")
				wantNotFound(t, s.UpdateEnrollmentGroup(ctx, &g), "UpdateEnrollmentGroup after delete")
			})
		}
	}},

	{"X509CAVerification", func(t *testing.T, s registry.Store) {
		// The CA's verification state (proof of possession) round-trips:
		// a pending code, then verified with its time.
		ctx := t.Context()
		g := symmetricGroup("ca-group")
		g.Attestation = registry.GroupAttestation{Type: registry.AttestationX509,
			X509CA: &registry.X509CAAttestation{CACertificatePEM: caPEM(t, "verified-ca", true)}}
		must(t, s.CreateEnrollmentGroup(ctx, &g), "CreateEnrollmentGroup")
		got, err := s.GetEnrollmentGroup(ctx, registry.DefaultOrgID, g.ID)
		must(t, err, "GetEnrollmentGroup")
		if x := got.Attestation.X509CA; x.Verified || x.VerifiedAt != nil || x.VerificationCode != "" {
			t.Fatalf("new CA = %+v, want unverified without a code", x)
		}
		got.Attestation.X509CA.VerificationCode = "0A1B2C3D4E5F"
		must(t, s.UpdateEnrollmentGroup(ctx, got), "UpdateEnrollmentGroup(code)")
		again, err := s.GetEnrollmentGroup(ctx, registry.DefaultOrgID, g.ID)
		must(t, err, "GetEnrollmentGroup")
		checkGroup(t, again, got)
		at := time.Now().Add(-time.Minute)
		again.Attestation.X509CA.MarkVerified(at)
		want := *again.Attestation.X509CA
		must(t, s.UpdateEnrollmentGroup(ctx, again), "UpdateEnrollmentGroup(verified)")
		final, err := s.GetEnrollmentGroup(ctx, registry.DefaultOrgID, g.ID)
		must(t, err, "GetEnrollmentGroup")
		x := final.Attestation.X509CA
		if !x.Verified || x.VerificationCode != "" {
			t.Fatalf("verified CA = %+v, want verified without a code", x)
		}
		checkTimePtr(t, "VerifiedAt", x.VerifiedAt, want.VerifiedAt)
		checkGroup(t, final, again)

		bad := *final
		ca := *x
		ca.Verified = false // VerifiedAt without Verified
		bad.Attestation.X509CA = &ca
		if err := s.UpdateEnrollmentGroup(ctx, &bad); !errors.Is(err, registry.ErrInvalid) {
			t.Fatalf("UpdateEnrollmentGroup(verifiedAt without verified) = %v, want ErrInvalid", err)
		}
	}},

	{"CreateInvalid", func(t *testing.T, s registry.Store) {
		leaf := caPEM(t, "not-a-ca", false)
		cases := []struct {
			name   string
			mutate func(g *registry.EnrollmentGroup)
		}{
			{"empty id", func(g *registry.EnrollmentGroup) { g.ID = "" }},
			{"upper-case id", func(g *registry.EnrollmentGroup) { g.ID = "Group" }},
			{"tpm group", func(g *registry.EnrollmentGroup) {
				g.Attestation = registry.GroupAttestation{Type: registry.AttestationTPM}
			}},
			{"both attestations", func(g *registry.EnrollmentGroup) {
				g.Attestation.X509CA = &registry.X509CAAttestation{CACertificatePEM: leaf}
			}},
			{"type without settings", func(g *registry.EnrollmentGroup) { g.Attestation.Type = registry.AttestationX509 }},
			{"leaf as CA", func(g *registry.EnrollmentGroup) {
				g.Attestation = registry.GroupAttestation{Type: registry.AttestationX509,
					X509CA: &registry.X509CAAttestation{CACertificatePEM: leaf}}
			}},
			{"bad key", func(g *registry.EnrollmentGroup) { g.Attestation.SymmetricKey.PrimaryKey = "???" }},
			{"unknown reprovision policy", func(g *registry.EnrollmentGroup) { g.ReprovisionPolicy = "" }},
			{"payload not JSON", func(g *registry.EnrollmentGroup) { g.CustomPayload = json.RawMessage(`{`) }},
			{"unknown organisation", func(g *registry.EnrollmentGroup) { g.OrgID = OtherOrgID }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				g := symmetricGroup("invalid")
				tc.mutate(&g)
				wantInvalid(t, s.CreateEnrollmentGroup(t.Context(), &g), "CreateEnrollmentGroup")
			})
		}
		gs, _, err := s.ListEnrollmentGroups(t.Context(), registry.DefaultOrgID, registry.ListOptions{})
		must(t, err, "ListEnrollmentGroups")
		if len(gs) != 0 {
			t.Fatalf("invalid groups were written: %s", dump(gs))
		}
	}},

	{"ConflictsOtherOrgAndPages", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		ids := []string{"line-b", "line-a", "line-c", "factory"}
		for _, id := range ids {
			g := symmetricGroup(id)
			must(t, s.CreateEnrollmentGroup(ctx, &g), "CreateEnrollmentGroup")
		}
		dup := symmetricGroup("line-a")
		wantConflict(t, s.CreateEnrollmentGroup(ctx, &dup), "enrollmentGroup", "CreateEnrollmentGroup(same id)")

		_, err := s.GetEnrollmentGroup(ctx, OtherOrgID, "line-a")
		wantNotFound(t, err, "GetEnrollmentGroup(other org)")
		wantNotFound(t, s.DeleteEnrollmentGroup(ctx, OtherOrgID, "line-a"), "DeleteEnrollmentGroup(other org)")
		gs, _, err := s.ListEnrollmentGroups(ctx, OtherOrgID, registry.ListOptions{})
		if err != nil || len(gs) != 0 {
			t.Fatalf("ListEnrollmentGroups(other org) = %d, %v; want none", len(gs), err)
		}

		var got []string
		opts := registry.ListOptions{Limit: 2}
		for page := 0; ; page++ {
			if page > 10 {
				t.Fatal("cursor never ends")
			}
			gs, next, err := s.ListEnrollmentGroups(ctx, registry.DefaultOrgID, opts)
			must(t, err, "ListEnrollmentGroups")
			for _, g := range gs {
				got = append(got, g.ID)
			}
			if next == "" {
				break
			}
			opts.After = next
		}
		if want := sortedCopy(ids); !reflect.DeepEqual(got, want) {
			t.Fatalf("listed %v, want %v", got, want)
		}
		// Groups and individual enrollments are separate name spaces.
		e := symmetricEnrollment("line-a")
		must(t, s.CreateEnrollment(ctx, &e), "CreateEnrollment(same id as a group)")
	}},
}

var idScopeTests = []testCase{
	{"GeneratedOnceAndFound", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		scope, err := s.IDScope(ctx, registry.DefaultOrgID)
		must(t, err, "IDScope")
		if !registry.ValidIDScope(scope) {
			t.Fatalf("IDScope = %q, not in DPS's form 0ne + 8 upper-case hex digits", scope)
		}
		again, err := s.IDScope(ctx, registry.DefaultOrgID)
		must(t, err, "IDScope again")
		if again != scope {
			t.Fatalf("IDScope changed from %q to %q", scope, again)
		}
		for _, q := range []string{scope, strings.ToLower(scope), strings.ToUpper(scope)} {
			org, err := s.OrgByIDScope(ctx, q)
			must(t, err, "OrgByIDScope("+q+")")
			if org != registry.DefaultOrgID {
				t.Fatalf("OrgByIDScope(%q) = %q, want %q", q, org, registry.DefaultOrgID)
			}
		}
		_, err = s.IDScope(ctx, OtherOrgID)
		wantNotFound(t, err, "IDScope(unknown org)")
		other := "0ne00000000"
		if other == scope {
			other = "0ne00000001"
		}
		for _, q := range []string{other, "", "garbage", scope + "0"} {
			_, err = s.OrgByIDScope(ctx, q)
			wantNotFound(t, err, "OrgByIDScope("+q+")")
		}
	}},
}
