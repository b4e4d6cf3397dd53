package storetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// caPEM makes a self-signed CA certificate (isCA false: a leaf) in PEM.
func caPEM(t *testing.T, cn string, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// chainFixture is an X.509 chain configuration trusting two CAs.
func chainFixture(t *testing.T) *registry.X509ChainProvisioning {
	return &registry.X509ChainProvisioning{
		CACertificates: caPEM(t, "Maker Root", true) + caPEM(t, "Maker Line 2", true),
		CNPattern:      `(.+)\.maker\.example`,
		AllowCreate:    true,
	}
}

var x509ChainProfileTests = []testCase{
	{"RoundTrip", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := profileFixture("chained")
		p.X509Chain = chainFixture(t)
		given := *p.X509Chain
		must(t, s.CreateProfile(ctx, &p), "CreateProfile")
		if *p.X509Chain != given {
			t.Fatalf("CreateProfile wrote back X509Chain %+v, want %+v", p.X509Chain, given)
		}
		got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		must(t, err, "GetProfile")
		checkProfile(t, got, &p)
		got, err = s.GetProfileByProvisionKey(ctx, p.ProvisionKey)
		must(t, err, "GetProfileByProvisionKey")
		checkProfile(t, got, &p)
		ps, _, err := s.ListProfiles(ctx, registry.DefaultOrgID, registry.ListOptions{})
		must(t, err, "ListProfiles")
		if len(ps) != 1 {
			t.Fatalf("%d profiles, want 1", len(ps))
		}
		checkProfile(t, &ps[0], &p)

		plain := mkProfile(t, s, "plain")
		got, err = s.GetProfile(ctx, registry.DefaultOrgID, plain.ID)
		must(t, err, "GetProfile(plain)")
		if got.X509Chain != nil {
			t.Fatalf("a profile created without X509Chain reads back with %+v", got.X509Chain)
		}
	}},

	{"UpdateSetsChangesAndClears", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		p := mkProfile(t, s, "evolving")
		steps := []struct {
			name  string
			chain *registry.X509ChainProvisioning
		}{
			{"set", chainFixture(t)},
			{"pre-provisioned only, no pattern", &registry.X509ChainProvisioning{CACertificates: caPEM(t, "Other", true)}},
			{"cleared", nil},
		}
		for _, st := range steps {
			p.X509Chain = st.chain
			must(t, s.UpdateProfile(ctx, p), "UpdateProfile("+st.name+")")
			got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
			must(t, err, "GetProfile("+st.name+")")
			checkProfile(t, got, p)
		}
	}},

	{"Invalid", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		leaf := caPEM(t, "not a CA", false)
		good := caPEM(t, "CA", true)
		cases := []struct {
			name  string
			chain registry.X509ChainProvisioning
		}{
			{"no certificate", registry.X509ChainProvisioning{}},
			{"white space only", registry.X509ChainProvisioning{CACertificates: " \n\t"}},
			{"not PEM", registry.X509ChainProvisioning{CACertificates: "hello"}},
			{"trailing garbage", registry.X509ChainProvisioning{CACertificates: good + "garbage"}},
			{"wrong block type", registry.X509ChainProvisioning{CACertificates: strings.ReplaceAll(good, "CERTIFICATE", "PRIVATE KEY")}},
			{"garbage DER", registry.X509ChainProvisioning{CACertificates: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}))}},
			{"not a CA", registry.X509ChainProvisioning{CACertificates: leaf}},
			{"CA then a leaf", registry.X509ChainProvisioning{CACertificates: good + leaf}},
			{"too many", registry.X509ChainProvisioning{CACertificates: strings.Repeat(good, registry.MaxX509ChainCAs+1)}},
			{"too large", registry.X509ChainProvisioning{CACertificates: good + strings.Repeat(" ", registry.MaxX509ChainPEM)}},
			{"bad pattern", registry.X509ChainProvisioning{CACertificates: good, CNPattern: "(unclosed"}},
			{"long pattern", registry.X509ChainProvisioning{CACertificates: good, CNPattern: strings.Repeat("a", registry.MaxCNPatternLen+1)}},
		}
		p := mkProfile(t, s, "stays-plain")
		want := *p
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				np := profileFixture("invalid-chain")
				np.X509Chain = &tc.chain
				wantInvalid(t, s.CreateProfile(ctx, &np), "CreateProfile")
				up := *p
				up.X509Chain = &tc.chain
				wantInvalid(t, s.UpdateProfile(ctx, &up), "UpdateProfile")
			})
		}
		got, err := s.GetProfile(ctx, registry.DefaultOrgID, p.ID)
		must(t, err, "GetProfile")
		checkProfile(t, got, &want)
		_, err = s.GetProfileByProvisionKey(ctx, "key-invalid-chain")
		wantNotFound(t, err, "GetProfileByProvisionKey(refused profile)")
	}},

	{"ListX509ChainProfiles", func(t *testing.T, s registry.Store) {
		ctx := t.Context()
		ps, err := s.ListX509ChainProfiles(ctx)
		if err != nil || len(ps) != 0 {
			t.Fatalf("ListX509ChainProfiles on a fresh store = %d, %v; want none", len(ps), err)
		}
		mkProfile(t, s, "no-chain")
		var want []*registry.Profile
		for _, name := range []string{"zeta", "alpha", "mu"} {
			p := profileFixture(name)
			p.X509Chain = chainFixture(t)
			must(t, s.CreateProfile(ctx, &p), "CreateProfile")
			want = append(want, &p)
		}
		got, err := s.ListX509ChainProfiles(ctx)
		must(t, err, "ListX509ChainProfiles")
		order := []int{1, 2, 0} // alpha, mu, zeta
		if len(got) != len(order) {
			t.Fatalf("ListX509ChainProfiles = %d profiles, want %d", len(got), len(order))
		}
		for i, j := range order {
			checkProfile(t, &got[i], want[j])
		}

		// Clearing the chain takes a profile off the list.
		mu := want[2]
		mu.X509Chain = nil
		must(t, s.UpdateProfile(ctx, mu), "UpdateProfile")
		got, err = s.ListX509ChainProfiles(ctx)
		must(t, err, "ListX509ChainProfiles")
		if len(got) != 2 || got[0].Name != "alpha" || got[1].Name != "zeta" {
			t.Fatalf("after clearing mu: %d profiles %v, want alpha and zeta", len(got), got)
		}
	}},
}
