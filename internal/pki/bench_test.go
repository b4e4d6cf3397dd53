package pki

import (
	"fmt"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// Benchmarks of issuance from CSRs. Figures per second of wall time, for
// docs/benchmarks.md:
//
//	go test -run '^$' -bench 'SignCSR' -cpu 1,2 -benchtime 5s ./internal/pki/
//
// BenchmarkSignCSR is the CA alone (parse and check a P-256 request, sign
// with the P-256 issuing CA); BenchmarkSignCSRAndRecord adds the durable
// record of each certificate in the SQLite registry (synchronous=FULL, group
// commit), from many concurrent callers as a provisioning storm makes them.

func benchCSR(b *testing.B) ([]byte, Profile) {
	return csrFor(b, testKey(b, "p256"), "dev-000042"), Profile{CommonName: "dev-000042", DNSNames: []string{"dev-000042.plant.example"}}
}

func BenchmarkSignCSR(b *testing.B) {
	ca := newTestCA(b, Options{})
	csr, p := benchCSR(b)
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ca.SignCSR(csr, p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
}

func BenchmarkSignCSRAndRecord(b *testing.B) {
	ca := newTestCA(b, Options{})
	csr, p := benchCSR(b)
	st := testutil.NewStore(b, nil)
	ctx := b.Context()
	prof := &registry.Profile{OrgID: registry.DefaultOrgID, Name: "bench", Strategy: registry.StrategyAllowCreate,
		ProvisionKey: "bench-key", ProvisionSecretHash: "sha256$x$y",
		DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever}
	if err := st.CreateProfile(ctx, prof); err != nil {
		b.Fatal(err)
	}
	devs := make([]registry.NewDevice, 64)
	for i := range devs {
		devs[i].Device = registry.Device{OrgID: registry.DefaultOrgID, ProfileID: prof.ID, Name: fmt.Sprintf("dev-%06d", i), Status: registry.DeviceEnabled}
	}
	if err := st.CreateDevices(ctx, devs); err != nil {
		b.Fatal(err)
	}
	// Many callers per core: each waits for its commit's fsync, and the
	// store puts those that queue meanwhile in one transaction.
	b.SetParallelism(32)
	b.ReportAllocs()
	start := time.Now()
	next := make(chan int, 1)
	next <- 0
	b.RunParallel(func(pb *testing.PB) {
		i := <-next
		next <- i + 1
		dev := devs[i%len(devs)].Device.ID
		for pb.Next() {
			iss, err := ca.SignCSR(csr, p)
			if err != nil {
				b.Error(err)
				return
			}
			c := iss.Certificate
			err = st.RecordCertificates(ctx, []registry.Certificate{{
				Serial: iss.Serial, OrgID: registry.DefaultOrgID, DeviceID: dev, Issuer: iss.IssuerID,
				Fingerprint: iss.Fingerprint, CommonName: c.Subject.CommonName,
				NotBefore: c.NotBefore, NotAfter: c.NotAfter, PEM: string(iss.PEM()),
			}})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
}
