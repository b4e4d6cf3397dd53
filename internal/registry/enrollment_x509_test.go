package registry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

func TestX509CAVerificationState(t *testing.T) {
	ca := testutil.NewCert(t, "Maker CA", nil, testutil.CertOptions{CA: true}).PEM()
	other := testutil.NewCert(t, "Other CA", nil, testutil.CertOptions{CA: true}).PEM()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0.Add(time.Hour)
	verified := func(pem string) *registry.X509CAAttestation {
		x := &registry.X509CAAttestation{CACertificatePEM: pem}
		x.MarkVerified(t0)
		return x
	}
	for _, tc := range []struct {
		name       string
		next, prev *registry.X509CAAttestation
		want       registry.X509CAAttestation
	}{
		{"new CA, not vouched", &registry.X509CAAttestation{CACertificatePEM: ca, VerificationCode: "CHOSEN", VerifiedAt: &t0}, nil,
			registry.X509CAAttestation{CACertificatePEM: ca}},
		{"new CA, vouched", &registry.X509CAAttestation{CACertificatePEM: ca, Verified: true, VerifiedAt: &t0}, nil,
			registry.X509CAAttestation{CACertificatePEM: ca, Verified: true, VerifiedAt: &now}},
		{"same CA keeps its verification", &registry.X509CAAttestation{CACertificatePEM: ca + "\n"}, verified(ca),
			registry.X509CAAttestation{CACertificatePEM: ca, Verified: true, VerifiedAt: &t0}},
		{"same CA keeps its pending code", &registry.X509CAAttestation{CACertificatePEM: ca, VerificationCode: "OTHER"},
			&registry.X509CAAttestation{CACertificatePEM: ca, VerificationCode: "PENDING"},
			registry.X509CAAttestation{CACertificatePEM: ca, VerificationCode: "PENDING"}},
		{"another CA resets it", &registry.X509CAAttestation{CACertificatePEM: other}, verified(ca),
			registry.X509CAAttestation{CACertificatePEM: other}},
		{"another CA, vouched", &registry.X509CAAttestation{CACertificatePEM: other, Verified: true}, verified(ca),
			registry.X509CAAttestation{CACertificatePEM: other, Verified: true, VerifiedAt: &now}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.next.CarryVerification(tc.prev, now)
			got := *tc.next
			got.CACertificatePEM = tc.want.CACertificatePEM // compared by DER above
			if got.Verified != tc.want.Verified || got.VerificationCode != tc.want.VerificationCode ||
				(got.VerifiedAt == nil) != (tc.want.VerifiedAt == nil) || got.VerifiedAt != nil && !got.VerifiedAt.Equal(*tc.want.VerifiedAt) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if err := tc.next.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	for _, bad := range []registry.X509CAAttestation{
		{CACertificatePEM: ca, VerifiedAt: &t0},
		{CACertificatePEM: ca, VerificationCode: "has space"},
		{CACertificatePEM: testutil.NewCert(t, "leaf", nil, testutil.CertOptions{}).PEM(), Verified: true},
		{CACertificatePEM: "not PEM"},
	} {
		if err := bad.Validate(); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if a, b := registry.NewVerificationCode(), registry.NewVerificationCode(); a == b || len(a) != 40 {
		t.Errorf("codes %q and %q", a, b)
	}
}
