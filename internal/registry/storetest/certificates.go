package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// Issuers of the certificate fixtures: lowercase hex SHA-256 values, as
// pki.CA.IssuerID writes them.
var (
	issuerA = strings.Repeat("a1", 32)
	issuerB = strings.Repeat("b2", 32)
)

// certBase is the NotBefore of the certificate fixtures, in the future so
// that nothing in the suite depends on the clock.
var certBase = time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC)

// certFixture is an active certificate of device (empty: no device), with
// serial number n, valid for days days.
func certFixture(deviceID string, n, days int) registry.Certificate {
	serial := fmt.Sprintf("4abc%028x", n)
	fp := sha256.Sum256([]byte(serial))
	return registry.Certificate{
		Serial:      serial,
		OrgID:       registry.DefaultOrgID,
		DeviceID:    deviceID,
		Issuer:      issuerA,
		Fingerprint: hex.EncodeToString(fp[:]),
		CommonName:  "device-" + serial[len(serial)-4:],
		NotBefore:   certBase,
		NotAfter:    certBase.Add(time.Duration(days) * 24 * time.Hour),
		PEM:         "-----BEGIN CERTIFICATE-----\nMIIB" + serial + "\n-----END CERTIFICATE-----\n",
	}
}

func checkCertificate(t *testing.T, got, want *registry.Certificate) {
	t.Helper()
	checkTime(t, "certificate NotBefore", got.NotBefore, want.NotBefore)
	checkTime(t, "certificate NotAfter", got.NotAfter, want.NotAfter)
	checkTime(t, "certificate IssuedAt", got.IssuedAt, want.IssuedAt)
	checkTimePtr(t, "certificate RevokedAt", got.RevokedAt, want.RevokedAt)
	g, w := *got, *want
	g.NotBefore, g.NotAfter, g.IssuedAt, g.RevokedAt = time.Time{}, time.Time{}, time.Time{}, nil
	w.NotBefore, w.NotAfter, w.IssuedAt, w.RevokedAt = time.Time{}, time.Time{}, time.Time{}, nil
	if g != w {
		t.Errorf("certificate = %+v\nwant          %+v", g, w)
	}
}

func serials(cs []registry.Certificate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Serial
	}
	return out
}

// listAllCertificates follows the cursor to the end, checking every page.
func listAllCertificates(t *testing.T, s registry.Store, orgID string, f registry.CertificateFilter) []registry.Certificate {
	t.Helper()
	var all []registry.Certificate
	for page := 0; ; page++ {
		if page > 1000 {
			t.Fatalf("ListCertificates(%+v): cursor never ends", f)
		}
		cs, next, err := s.ListCertificates(t.Context(), orgID, f)
		must(t, err, fmt.Sprintf("ListCertificates(%+v)", f))
		if len(cs) > f.EffectiveLimit() {
			t.Fatalf("ListCertificates returned %d certificates, more than the limit %d", len(cs), f.EffectiveLimit())
		}
		if next != "" && len(cs) != f.EffectiveLimit() {
			t.Fatalf("short page of %d (limit %d) with a next cursor", len(cs), f.EffectiveLimit())
		}
		all = append(all, cs...)
		if next == "" {
			return all
		}
		f.After = next
	}
}

func certificateCount(t *testing.T, s registry.Store) int {
	t.Helper()
	return len(listAllCertificates(t, s, registry.DefaultOrgID, registry.CertificateFilter{ListOptions: registry.ListOptions{Limit: registry.MaxPageSize}}))
}

var certificateTests = []testCase{
	{"Renewals", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		old1, old2, old3 := certFixture(d.ID, 1, 90), certFixture(d.ID, 2, 90), certFixture(d.ID, 3, 90)
		t0 := time.Now().UTC().Truncate(time.Millisecond)
		new1 := certFixture(d.ID, 11, 90) // renews old1, an hour ago
		new1.Renews, new1.IssuedAt = old1.Serial, t0.Add(-time.Hour)
		new2 := certFixture(d.ID, 12, 90) // renews old2, just now
		new2.Renews, new2.IssuedAt = old2.Serial, t0
		new3 := certFixture(d.ID, 13, 90) // renews old3, which is revoked below
		new3.Renews, new3.IssuedAt = old3.Serial, t0.Add(-2*time.Hour)
		certs := []registry.Certificate{old1, old2, old3, new1, new2, new3}
		must(t, s.RecordCertificates(ctx, certs), "RecordCertificates")
		got, err := s.GetCertificate(ctx, registry.DefaultOrgID, new1.Serial)
		must(t, err, "GetCertificate")
		if got.Renews != old1.Serial {
			t.Fatalf("Renews = %q, want %q", got.Renews, old1.Serial)
		}
		_, err = s.RevokeCertificate(ctx, registry.DefaultOrgID, old3.Serial, registry.RevocationSuperseded)
		must(t, err, "RevokeCertificate")

		for _, tc := range []struct {
			name   string
			before time.Time
			limit  int
			want   []string
		}{
			{"grace over for the first", t0.Add(-30 * time.Minute), 10, []string{old1.Serial}},
			{"grace over for both", t0.Add(time.Millisecond), 10, []string{old1.Serial, old2.Serial}},
			{"limit", t0.Add(time.Millisecond), 1, []string{old1.Serial}},
			{"none yet", t0.Add(-3 * time.Hour), 10, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				due, err := s.ListRenewedCertificates(ctx, tc.before, tc.limit)
				must(t, err, "ListRenewedCertificates")
				if got := serials(due); !slices.Equal(got, tc.want) {
					t.Errorf("due = %v, want %v", got, tc.want)
				}
			})
		}

		// Expiring: the six are valid for 90 days from certBase; old3 is
		// revoked.
		for _, tc := range []struct {
			from, before time.Time
			want         int
		}{
			{certBase, certBase.Add(100 * 24 * time.Hour), 5},
			{certBase, certBase.Add(90 * 24 * time.Hour), 0},
			{certBase.Add(90 * 24 * time.Hour), certBase.Add(90*24*time.Hour + time.Millisecond), 5},
		} {
			n, err := s.CountExpiringCertificates(ctx, tc.from, tc.before)
			must(t, err, "CountExpiringCertificates")
			if n != tc.want {
				t.Errorf("CountExpiringCertificates(%v, %v) = %d, want %d", tc.from, tc.before, n, tc.want)
			}
		}

		bad := certFixture(d.ID, 20, 90)
		bad.Renews = bad.Serial
		wantInvalid(t, s.RecordCertificates(ctx, []registry.Certificate{bad}), "a certificate renewing itself")
		bad.Renews = "XYZ"
		wantInvalid(t, s.RecordCertificates(ctx, []registry.Certificate{bad}), "a renewed serial that is not hex")
	}},

	{"RecordAndGet", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		certs := []registry.Certificate{certFixture(d.ID, 1, 90), certFixture("", 2, 30)}
		before := time.Now()
		must(t, s.RecordCertificates(ctx, certs), "RecordCertificates")
		for i := range certs {
			c := &certs[i]
			checkRecent(t, "IssuedAt", c.IssuedAt, before)
			if c.Status != registry.CertificateActive || c.RevokedAt != nil || c.RevocationReason != "" {
				t.Fatalf("written back %+v, want an active certificate", c)
			}
			got, err := s.GetCertificate(ctx, registry.DefaultOrgID, c.Serial)
			must(t, err, "GetCertificate")
			checkCertificate(t, got, c)
			got, err = s.GetCertificateByFingerprint(ctx, c.Fingerprint)
			must(t, err, "GetCertificateByFingerprint")
			checkCertificate(t, got, c)

			_, err = s.GetCertificate(ctx, OtherOrgID, c.Serial)
			wantNotFound(t, err, "GetCertificate(other organisation)")
			_, err = s.GetCertificateByFingerprint(ctx, strings.ToUpper(c.Fingerprint))
			wantNotFound(t, err, "GetCertificateByFingerprint(uppercase)")
		}
		_, err := s.GetCertificate(ctx, registry.DefaultOrgID, "4abc")
		wantNotFound(t, err, "GetCertificate(unknown)")
		_, err = s.GetCertificateByFingerprint(ctx, strings.Repeat("0", 64))
		wantNotFound(t, err, "GetCertificateByFingerprint(unknown)")
		must(t, s.RecordCertificates(ctx, nil), "RecordCertificates(none)")
	}},

	{"RecordKeepsGivenFields", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		issued := time.Date(2030, 1, 2, 3, 4, 5, 678912345, time.FixedZone("UTC+1", 3600))
		revokedAt := issued.Add(time.Hour)
		given := certFixture(d.ID, 1, 90)
		given.IssuedAt = issued
		given.Issuer = issuerB
		revoked := certFixture(d.ID, 2, 90)
		revoked.Status, revoked.RevokedAt, revoked.RevocationReason = registry.CertificateRevoked, &revokedAt, registry.RevocationKeyCompromise
		bare := certFixture(d.ID, 3, 90)
		bare.Status = registry.CertificateRevoked // no time, no reason: the store fills them in
		bare.PEM = ""
		certs := []registry.Certificate{given, revoked, bare}
		before := time.Now()
		must(t, s.RecordCertificates(ctx, certs), "RecordCertificates")
		checkTime(t, "given IssuedAt", certs[0].IssuedAt, issued)
		if certs[2].RevokedAt == nil || certs[2].RevocationReason != registry.RevocationUnspecified {
			t.Fatalf("revoked record without time or reason written back as %+v, want RevokedAt set and reason unspecified", certs[2])
		}
		checkRecent(t, "defaulted RevokedAt", *certs[2].RevokedAt, before)
		for i := range certs {
			got, err := s.GetCertificate(ctx, registry.DefaultOrgID, certs[i].Serial)
			must(t, err, "GetCertificate")
			checkCertificate(t, got, &certs[i])
			if got.IssuedAt.Location() != time.UTC || got.NotAfter.Location() != time.UTC {
				t.Errorf("times not in UTC: %+v", got)
			}
		}
	}},

	{"RecordInvalidWritesNothing", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		at := time.Now()
		for _, tc := range []struct {
			name   string
			mutate func(c *registry.Certificate)
		}{
			{"no serial", func(c *registry.Certificate) { c.Serial = "" }},
			{"uppercase serial", func(c *registry.Certificate) { c.Serial = strings.ToUpper(c.Serial) }},
			{"serial with a leading zero", func(c *registry.Certificate) { c.Serial = "0" + c.Serial }},
			{"serial over 20 bytes", func(c *registry.Certificate) { c.Serial = "4" + strings.Repeat("0", 40) }},
			{"serial not hex", func(c *registry.Certificate) { c.Serial = "4xyz" }},
			{"short fingerprint", func(c *registry.Certificate) { c.Fingerprint = c.Fingerprint[:40] }},
			{"uppercase fingerprint", func(c *registry.Certificate) { c.Fingerprint = strings.ToUpper(c.Fingerprint) }},
			{"fingerprint with colons", func(c *registry.Certificate) { c.Fingerprint = c.Fingerprint[:62] + ":f" }},
			{"no issuer", func(c *registry.Certificate) { c.Issuer = "" }},
			{"no organisation", func(c *registry.Certificate) { c.OrgID = "" }},
			{"unknown organisation", func(c *registry.Certificate) { c.OrgID, c.DeviceID = OtherOrgID, "" }},
			{"unknown device", func(c *registry.Certificate) { c.DeviceID = "no-such-device" }},
			{"device of another organisation", func(c *registry.Certificate) { c.OrgID = OtherOrgID; c.DeviceID = d.ID }},
			{"no validity", func(c *registry.Certificate) { c.NotBefore, c.NotAfter = time.Time{}, time.Time{} }},
			{"expires before it starts", func(c *registry.Certificate) { c.NotAfter = c.NotBefore.Add(-time.Second) }},
			{"unknown status", func(c *registry.Certificate) { c.Status = "suspended" }},
			{"active with a revocation time", func(c *registry.Certificate) { c.RevokedAt = &at }},
			{"active with a reason", func(c *registry.Certificate) { c.RevocationReason = registry.RevocationSuperseded }},
			{"unknown reason", func(c *registry.Certificate) {
				c.Status, c.RevocationReason = registry.CertificateRevoked, "certificateHold"
			}},
			{"control character in the common name", func(c *registry.Certificate) { c.CommonName = "dev\n1" }},
			{"oversized PEM", func(c *registry.Certificate) { c.PEM = strings.Repeat("A", registry.MaxCertificatePEM+1) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				good, bad := certFixture(d.ID, 1, 90), certFixture(d.ID, 2, 90)
				tc.mutate(&bad)
				certs := []registry.Certificate{good, bad}
				orig := slices.Clone(certs)
				wantInvalid(t, s.RecordCertificates(t.Context(), certs), "RecordCertificates")
				if n := certificateCount(t, s); n != 0 {
					t.Fatalf("%d certificates after a refused batch, want 0 (all or nothing)", n)
				}
				for i := range certs {
					if certs[i] != orig[i] {
						t.Fatalf("a refused write changed the caller's record %d: %+v", i, certs[i])
					}
				}
			})
		}
	}},

	{"RecordConflicts", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		held := certFixture(d.ID, 1, 90)
		must(t, s.RecordCertificates(ctx, []registry.Certificate{held}), "RecordCertificates")
		_, err := s.RevokeCertificate(ctx, registry.DefaultOrgID, held.Serial, registry.RevocationKeyCompromise)
		must(t, err, "RevokeCertificate")
		for _, tc := range []struct {
			name  string
			batch func() []registry.Certificate
		}{
			// A revoked certificate keeps its serial and fingerprint.
			{"serial of a revoked certificate", func() []registry.Certificate {
				c := certFixture(d.ID, 2, 90)
				c.Serial = held.Serial
				return []registry.Certificate{certFixture(d.ID, 3, 90), c}
			}},
			{"fingerprint recorded", func() []registry.Certificate {
				c := certFixture(d.ID, 2, 90)
				c.Fingerprint = held.Fingerprint
				return []registry.Certificate{certFixture(d.ID, 3, 90), c}
			}},
			{"serial twice in the batch", func() []registry.Certificate {
				a, b := certFixture(d.ID, 2, 90), certFixture(d.ID, 3, 90)
				b.Serial = a.Serial
				return []registry.Certificate{a, b}
			}},
			// Serials are unique across organisations and devices, and
			// certificates of no device take part.
			{"serial of a certificate of no device", func() []registry.Certificate {
				c := certFixture("", 2, 90)
				c.Serial = held.Serial
				return []registry.Certificate{c}
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				wantConflict(t, s.RecordCertificates(ctx, tc.batch()), "certificate", "RecordCertificates")
				if n := certificateCount(t, s); n != 1 {
					t.Fatalf("%d certificates after a refused batch, want 1", n)
				}
			})
		}
	}},

	{"ListOrderFiltersAndPages", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d1, d2 := mkDevice(t, s, p.ID, "d1"), mkDevice(t, s, p.ID, "d2")
		// Serial n expires after days[n] days; equal expiries are ordered by serial.
		days := []int{50, 10, 30, 30, 90, 10, 70, 30}
		var certs []registry.Certificate
		for n, dd := range days {
			dev := d1.ID
			if n%2 == 1 {
				dev = d2.ID
			}
			certs = append(certs, certFixture(dev, len(days)-n, dd)) // serials in reverse of n
		}
		must(t, s.RecordCertificates(ctx, certs), "RecordCertificates")
		revoked := certs[3].Serial
		_, err := s.RevokeCertificate(ctx, registry.DefaultOrgID, revoked, registry.RevocationSuperseded)
		must(t, err, "RevokeCertificate")

		// want returns the serials of certs that keep, ordered as stores must.
		want := func(keep func(c registry.Certificate) bool) []string {
			var sel []registry.Certificate
			for _, c := range certs {
				if keep(c) {
					sel = append(sel, c)
				}
			}
			slices.SortFunc(sel, func(a, b registry.Certificate) int {
				if c := a.NotAfter.Compare(b.NotAfter); c != 0 {
					return c
				}
				return strings.Compare(a.Serial, b.Serial)
			})
			return serials(sel)
		}
		day := func(n int) time.Time { return certBase.Add(time.Duration(n) * 24 * time.Hour) }
		for _, tc := range []struct {
			name string
			f    registry.CertificateFilter
			keep func(c registry.Certificate) bool
		}{
			{"all", registry.CertificateFilter{}, func(registry.Certificate) bool { return true }},
			{"device", registry.CertificateFilter{DeviceID: d2.ID}, func(c registry.Certificate) bool { return c.DeviceID == d2.ID }},
			{"active", registry.CertificateFilter{Status: registry.CertificateActive}, func(c registry.Certificate) bool { return c.Serial != revoked }},
			{"revoked", registry.CertificateFilter{Status: registry.CertificateRevoked}, func(c registry.Certificate) bool { return c.Serial == revoked }},
			{"expires before day 30 (exclusive)", registry.CertificateFilter{ExpiresBefore: day(30)},
				func(c registry.Certificate) bool { return c.NotAfter.Before(day(30)) }},
			{"expires from day 30 (inclusive)", registry.CertificateFilter{ExpiresFrom: day(30)},
				func(c registry.Certificate) bool { return !c.NotAfter.Before(day(30)) }},
			{"active, expiring in [30, 70) on device 1",
				registry.CertificateFilter{DeviceID: d1.ID, Status: registry.CertificateActive, ExpiresFrom: day(30), ExpiresBefore: day(70)},
				func(c registry.Certificate) bool {
					return c.DeviceID == d1.ID && c.Serial != revoked && !c.NotAfter.Before(day(30)) && c.NotAfter.Before(day(70))
				}},
		} {
			for _, limit := range []int{1, 2, 3, 0} {
				t.Run(fmt.Sprintf("%s/limit=%d", tc.name, limit), func(t *testing.T) {
					f := tc.f
					f.Limit = limit
					got := serials(listAllCertificates(t, s, registry.DefaultOrgID, f))
					if w := want(tc.keep); !slices.Equal(got, w) {
						t.Fatalf("listed %v, want %v", got, w)
					}
				})
			}
		}
		all, _, err := s.ListCertificates(ctx, registry.DefaultOrgID, registry.CertificateFilter{})
		must(t, err, "ListCertificates")
		for i := range all {
			want := certs[slices.IndexFunc(certs, func(c registry.Certificate) bool { return c.Serial == all[i].Serial })]
			if want.Serial == revoked {
				continue
			}
			checkCertificate(t, &all[i], &want)
		}
		cs, next, err := s.ListCertificates(ctx, OtherOrgID, registry.CertificateFilter{})
		if err != nil || len(cs) != 0 || next != "" {
			t.Fatalf("ListCertificates(other organisation) = %d, %q, %v; want nothing", len(cs), next, err)
		}
		_, _, err = s.ListCertificates(ctx, registry.DefaultOrgID, registry.CertificateFilter{ListOptions: registry.ListOptions{After: "%%% not a cursor %%%"}})
		wantInvalid(t, err, "ListCertificates(malformed cursor)")
		_, _, err = s.ListCertificates(ctx, registry.DefaultOrgID, registry.CertificateFilter{Status: "expired"})
		wantInvalid(t, err, "ListCertificates(unknown status)")
	}},

	{"RevokeIsIdempotent", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		certs := []registry.Certificate{certFixture(d.ID, 1, 90), certFixture(d.ID, 2, 90), certFixture(d.ID, 3, 90)}
		must(t, s.RecordCertificates(ctx, certs), "RecordCertificates")

		before := time.Now()
		r, err := s.RevokeCertificate(ctx, registry.DefaultOrgID, certs[0].Serial, registry.RevocationKeyCompromise)
		must(t, err, "RevokeCertificate")
		if r.Status != registry.CertificateRevoked || r.RevokedAt == nil || r.RevocationReason != registry.RevocationKeyCompromise {
			t.Fatalf("revoked certificate = %+v", r)
		}
		checkRecent(t, "RevokedAt", *r.RevokedAt, before)
		want := certs[0]
		want.Status, want.RevokedAt, want.RevocationReason = registry.CertificateRevoked, r.RevokedAt, registry.RevocationKeyCompromise
		checkCertificate(t, r, &want)

		time.Sleep(2 * timeTolerance)
		again, err := s.RevokeCertificate(ctx, registry.DefaultOrgID, certs[0].Serial, registry.RevocationSuperseded)
		must(t, err, "RevokeCertificate(again)")
		checkCertificate(t, again, &want) // first time and reason kept
		got, err := s.GetCertificateByFingerprint(ctx, certs[0].Fingerprint)
		must(t, err, "GetCertificateByFingerprint(revoked)")
		checkCertificate(t, got, &want)

		// No reason means unspecified.
		r, err = s.RevokeCertificate(ctx, registry.DefaultOrgID, certs[1].Serial, "")
		must(t, err, "RevokeCertificate(no reason)")
		if r.RevocationReason != registry.RevocationUnspecified {
			t.Fatalf("reason = %q, want unspecified", r.RevocationReason)
		}

		_, err = s.RevokeCertificate(ctx, registry.DefaultOrgID, certs[2].Serial, "certificateHold")
		wantInvalid(t, err, "RevokeCertificate(unknown reason)")
		_, err = s.RevokeCertificate(ctx, OtherOrgID, certs[2].Serial, registry.RevocationKeyCompromise)
		wantNotFound(t, err, "RevokeCertificate(other organisation)")
		_, err = s.RevokeCertificate(ctx, registry.DefaultOrgID, "4abc", registry.RevocationKeyCompromise)
		wantNotFound(t, err, "RevokeCertificate(unknown)")
		got, err = s.GetCertificate(ctx, registry.DefaultOrgID, certs[2].Serial)
		must(t, err, "GetCertificate")
		checkCertificate(t, got, &certs[2]) // refused revocations changed nothing
	}},

	{"ListRevoked", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		var certs []registry.Certificate
		for n := range 8 {
			c := certFixture(d.ID, 8-n, 10+10*n) // serial 8 expires first
			if n%2 == 1 {
				c.Issuer = issuerB
			}
			certs = append(certs, c)
		}
		must(t, s.RecordCertificates(ctx, certs), "RecordCertificates")
		for _, n := range []int{0, 2, 3, 6, 7} {
			_, err := s.RevokeCertificate(ctx, registry.DefaultOrgID, certs[n].Serial, registry.RevocationKeyCompromise)
			must(t, err, "RevokeCertificate")
		}
		validAt := certBase.Add(25 * 24 * time.Hour) // certificates 0 and 1 have expired by then
		for _, tc := range []struct {
			issuer string
			want   []string
		}{
			{issuerA, []string{certs[6].Serial, certs[2].Serial}}, // by serial: 6 has serial 2, 2 has serial 6
			{issuerB, []string{certs[7].Serial, certs[3].Serial}},
			{strings.Repeat("c3", 32), nil},
		} {
			got, err := s.ListRevokedCertificates(ctx, tc.issuer, validAt)
			must(t, err, "ListRevokedCertificates")
			if !slices.Equal(serials(got), tc.want) {
				t.Fatalf("ListRevokedCertificates(%s…) = %v, want %v", tc.issuer[:4], serials(got), tc.want)
			}
			for _, c := range got {
				if c.Status != registry.CertificateRevoked || c.RevokedAt == nil || c.RevocationReason != registry.RevocationKeyCompromise || c.PEM != "" {
					t.Fatalf("revoked entry %+v: want status, time and reason, and no PEM", c)
				}
			}
		}
	}},

	{"DeleteDeviceRevokesItsCertificates", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		gone, kept := mkDevice(t, s, p.ID, "gone"), mkDevice(t, s, p.ID, "kept")
		certs := []registry.Certificate{certFixture(gone.ID, 1, 90), certFixture(gone.ID, 2, 90), certFixture(kept.ID, 3, 90)}
		must(t, s.RecordCertificates(ctx, certs), "RecordCertificates")
		earlier, err := s.RevokeCertificate(ctx, registry.DefaultOrgID, certs[1].Serial, registry.RevocationKeyCompromise)
		must(t, err, "RevokeCertificate")

		before := time.Now()
		must(t, s.DeleteDevice(ctx, registry.DefaultOrgID, gone.ID), "DeleteDevice")
		got, err := s.GetCertificateByFingerprint(ctx, certs[0].Fingerprint)
		must(t, err, "GetCertificateByFingerprint(certificate of a deleted device)")
		if got.Status != registry.CertificateRevoked || got.RevocationReason != registry.RevocationCessationOfOperation || got.RevokedAt == nil {
			t.Fatalf("certificate of a deleted device = %+v, want revoked, cessationOfOperation", got)
		}
		checkRecent(t, "RevokedAt", *got.RevokedAt, before)
		got, err = s.GetCertificate(ctx, registry.DefaultOrgID, certs[1].Serial)
		must(t, err, "GetCertificate")
		checkCertificate(t, got, earlier) // revoked before: time and reason kept
		got, err = s.GetCertificate(ctx, registry.DefaultOrgID, certs[2].Serial)
		must(t, err, "GetCertificate")
		checkCertificate(t, got, &certs[2]) // another device's: untouched
		revoked, err := s.ListRevokedCertificates(ctx, issuerA, certBase)
		must(t, err, "ListRevokedCertificates")
		if want := []string{certs[1].Serial, certs[0].Serial}; !slices.Equal(serials(revoked), sortedCopy(want)) {
			t.Fatalf("CRL entries %v, want %v", serials(revoked), sortedCopy(want))
		}
		// The record outlives the device, but no new one may name it.
		err = s.RecordCertificates(ctx, []registry.Certificate{certFixture(gone.ID, 4, 90)})
		wantInvalid(t, err, "RecordCertificates(deleted device)")
	}},

	{"ProvisionCommitRecordsAndRotates", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "p")
		c := createCommit(p.ID, "dev", "tok")
		first := certFixture("", 1, 90) // device and organisation filled in by the store
		first.OrgID = ""
		c.Certificates = []registry.Certificate{first}
		before := time.Now()
		must(t, s.CommitProvision(ctx, c), "CommitProvision(create)")
		d := c.Device
		if len(c.Certificates) != 1 || c.Certificates[0].DeviceID != d.ID || c.Certificates[0].OrgID != registry.DefaultOrgID {
			t.Fatalf("written back certificates %+v, want one of device %s", c.Certificates, d.ID)
		}
		checkRecent(t, "IssuedAt", c.Certificates[0].IssuedAt, before)
		got, err := s.GetCertificate(ctx, registry.DefaultOrgID, first.Serial)
		must(t, err, "GetCertificate")
		checkCertificate(t, got, &c.Certificates[0])

		// Rotation revokes the device's active certificates, not the new one.
		dd := *d
		rot := &registry.ProvisionCommit{Device: &dd, ExpectVersion: d.Version, RevokeActive: true,
			Certificates: []registry.Certificate{certFixture("", 2, 90)}, Audit: auditFixture("provision")}
		must(t, s.CommitProvision(ctx, rot), "CommitProvision(rotate)")
		if len(rot.RevokedCertificates) != 1 {
			t.Fatalf("RevokedCertificates = %v, want the first certificate", serials(rot.RevokedCertificates))
		}
		r := rot.RevokedCertificates[0]
		if r.Serial != first.Serial || r.Status != registry.CertificateRevoked || r.RevocationReason != registry.RevocationSuperseded || r.RevokedAt == nil {
			t.Fatalf("rotated-out certificate = %+v, want revoked as superseded", r)
		}
		checkTime(t, "RevokedAt", *r.RevokedAt, rot.At)
		active, _, err := s.ListCertificates(ctx, registry.DefaultOrgID, registry.CertificateFilter{DeviceID: d.ID, Status: registry.CertificateActive})
		must(t, err, "ListCertificates")
		if !slices.Equal(serials(active), []string{rot.Certificates[0].Serial}) {
			t.Fatalf("active certificates %v, want only the new one", serials(active))
		}

		// A refused commit records no certificate: here the serial is taken.
		taken := certFixture("", 3, 90)
		taken.Serial = first.Serial
		bad := createCommit(p.ID, "other", "tok-other")
		bad.Certificates = []registry.Certificate{taken}
		wantConflict(t, s.CommitProvision(ctx, bad), "certificate", "CommitProvision(serial taken)")
		if _, err := s.GetDeviceByName(ctx, registry.DefaultOrgID, "other"); err == nil {
			t.Fatal("a commit refused for its certificate created the device")
		}
		_, err = s.GetCertificateByFingerprint(ctx, taken.Fingerprint)
		wantNotFound(t, err, "GetCertificateByFingerprint(certificate of a refused commit)")
		bad = createCommit(p.ID, "other", "tok-other")
		invalid := certFixture("", 4, 90)
		invalid.Fingerprint = "nope"
		bad.Certificates = []registry.Certificate{invalid}
		wantInvalid(t, s.CommitProvision(ctx, bad), "CommitProvision(invalid certificate)")
		if n := certificateCount(t, s); n != 2 {
			t.Fatalf("%d certificates, want 2", n)
		}
	}},

	{"ConcurrentRecords", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		errs := make([]error, distinctWriters)
		parallel(distinctWriters, func(i int) {
			errs[i] = s.RecordCertificates(t.Context(), []registry.Certificate{certFixture(d.ID, i+1, 90)})
		})
		for i, err := range errs {
			must(t, err, fmt.Sprintf("RecordCertificates(%d)", i))
		}
		if n := certificateCount(t, s); n != distinctWriters {
			t.Fatalf("%d certificates, want %d", n, distinctWriters)
		}
		// Writers of one serial: exactly one wins, whatever batch they share.
		errs = make([]error, sameNameWriters)
		parallel(sameNameWriters, func(i int) {
			c := certFixture(d.ID, distinctWriters+1+i, 90)
			c.Serial = "5ca1ab1e"
			errs[i] = s.RecordCertificates(t.Context(), []registry.Certificate{c})
		})
		winners := 0
		for _, err := range errs {
			if err == nil {
				winners++
				continue
			}
			wantConflict(t, err, "certificate", "concurrent RecordCertificates")
		}
		if winners != 1 {
			t.Fatalf("%d of %d writers of one serial succeeded, want 1", winners, sameNameWriters)
		}
	}},

	{"CancelledWriteWritesNothing", func(t *testing.T, s registry.Store) {
		p := mkProfile(t, s, "p")
		d := mkDevice(t, s, p.ID, "dev")
		c := certFixture(d.ID, 1, 90)
		if err := s.RecordCertificates(cancelled(t.Context()), []registry.Certificate{c}); err == nil {
			t.Fatal("RecordCertificates with a cancelled context succeeded")
		}
		must(t, s.RecordCertificates(t.Context(), []registry.Certificate{certFixture(d.ID, 2, 90)}), "RecordCertificates")
		if _, err := s.RevokeCertificate(cancelled(t.Context()), registry.DefaultOrgID, certFixture(d.ID, 2, 90).Serial, ""); err == nil {
			t.Fatal("RevokeCertificate with a cancelled context succeeded")
		}
		got := listAllCertificates(t, s, registry.DefaultOrgID, registry.CertificateFilter{})
		if len(got) != 1 || got[0].Status != registry.CertificateActive {
			t.Fatalf("after cancelled writes: %+v, want one active certificate", got)
		}
	}},
}
