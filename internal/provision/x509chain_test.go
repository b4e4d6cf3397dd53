package provision_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// presented returns the chain a TLS server sees when a client presents
// cert: the handshake runs over net.Pipe, the server asking for client
// certificates without verifying them, as zerotouch's listeners do.
func presented(t *testing.T, cert tls.Certificate) []*x509.Certificate {
	t.Helper()
	server := testutil.NewCert(t, "server", nil, testutil.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}).TLS()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	srv := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequestClientCert})
	cli := tls.Client(cc, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
	var wg sync.WaitGroup
	var cerr error
	wg.Go(func() { cerr = cli.Handshake() })
	if err := srv.Handshake(); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	wg.Wait()
	if cerr != nil {
		t.Fatalf("client handshake: %v", cerr)
	}
	return srv.ConnectionState().PeerCertificates
}

type chainEnv struct {
	svc      *provision.Service
	store    registry.Store
	open     *registry.Profile // creates devices, policy rotate
	closed   *registry.Profile // pre-provisioned only, policy never
	acme     *testutil.TestCert
	closedCA *testutil.TestCert
	clock    *time.Time
}

func newChainEnv(t *testing.T) *chainEnv {
	t.Helper()
	st := testutil.NewStore(t, nil)
	now := time.Now()
	e := &chainEnv{store: st, clock: &now}
	root := testutil.NewCert(t, "Acme Root", nil, testutil.CertOptions{CA: true})
	e.acme = testutil.NewCert(t, "Acme Line", root, testutil.CertOptions{CA: true})
	e.closedCA = testutil.NewCert(t, "Closed CA", nil, testutil.CertOptions{CA: true})
	mk := func(name string, ca *testutil.TestCert, create bool, policy registry.ReprovisionPolicy) *registry.Profile {
		p := &registry.Profile{OrgID: registry.DefaultOrgID, Name: name, Strategy: registry.StrategyDisabled,
			ProvisionKey: "key-" + name, ProvisionSecretHash: "sha256$a$b", DefaultCredentialType: registry.CredentialAccessToken,
			ReprovisionPolicy: policy,
			X509Chain:         &registry.X509ChainProvisioning{CACertificates: ca.PEM(), CNPattern: `(.+)\.example`, AllowCreate: create}}
		if err := st.CreateProfile(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	e.open = mk("open", e.acme, true, registry.ReprovisionRotate)
	e.closed = mk("closed", e.closedCA, false, registry.ReprovisionNever)
	e.svc = provision.New(provision.Options{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return *e.clock }})
	return e
}

func (e *chainEnv) provision(t *testing.T, cert tls.Certificate) (*provision.Result, error) {
	t.Helper()
	return e.svc.ProvisionByCertificate(context.Background(), provision.ChainRequest{Dialect: "test", Source: "192.0.2.7", Chain: presented(t, cert)})
}

func TestProvisionByCertificate(t *testing.T) {
	e := newChainEnv(t)
	ctx := context.Background()
	pre := []registry.NewDevice{
		{Device: registry.Device{OrgID: registry.DefaultOrgID, ProfileID: e.closed.ID, Name: "pre", Status: registry.DeviceEnabled}},
		{Device: registry.Device{OrgID: registry.DefaultOrgID, ProfileID: e.closed.ID, Name: "off", Status: registry.DeviceDisabled}},
		{Device: registry.Device{OrgID: registry.DefaultOrgID, ProfileID: e.closed.ID, Name: "theirs", Status: registry.DeviceEnabled}},
	}
	if err := e.store.CreateDevices(ctx, pre); err != nil {
		t.Fatal(err)
	}
	leaf := func(cn string, ca *testutil.TestCert, o testutil.CertOptions) tls.Certificate {
		return testutil.NewCert(t, cn, ca, o).TLS(ca)
	}
	first := leaf("dev-1.example", e.acme, testutil.CertOptions{NotBefore: time.Now().Add(-2 * time.Hour)})
	untrusted := testutil.NewCert(t, "Stranger CA", nil, testutil.CertOptions{CA: true})
	impostor := testutil.NewCert(t, "Acme Line", nil, testutil.CertOptions{CA: true, Subject: &e.acme.Cert.Subject})

	type want struct {
		reason        provision.Reason // "" success
		device        string
		reprovisioned bool
		activeCreds   int // of device, after
	}
	steps := []struct {
		name string
		cert tls.Certificate
		at   time.Duration // clock offset
		want want
	}{
		{"creates the device", first, 0, want{device: "dev-1", activeCreds: 1}},
		{"same certificate again: same device, nothing new", first, 0, want{device: "dev-1", activeCreds: 1}},
		{"a newer certificate rotates (policy rotate)", leaf("dev-1.example", e.acme, testutil.CertOptions{}), 0, want{device: "dev-1", reprovisioned: true, activeCreds: 1}},
		{"the superseded one cannot take it back", first, 0, want{reason: provision.ReasonAlreadyProvisioned}},
		{"pre-provisioned device (creation off)", leaf("pre.example", e.closedCA, testutil.CertOptions{}), 0, want{device: "pre", activeCreds: 1}},
		{"provisioned again, policy never", leaf("pre.example", e.closedCA, testutil.CertOptions{}), 0, want{reason: provision.ReasonAlreadyProvisioned}},
		{"creation off, no such device", leaf("nobody.example", e.closedCA, testutil.CertOptions{}), 0, want{reason: provision.ReasonNotPreProvisioned}},
		{"disabled device", leaf("off.example", e.closedCA, testutil.CertOptions{}), 0, want{reason: provision.ReasonDeviceDisabled}},
		{"name of another profile's device", leaf("theirs.example", e.acme, testutil.CertOptions{}), 0, want{reason: provision.ReasonAlreadyProvisioned}},
		{"CN outside the pattern", leaf("dev-2.example.org", e.acme, testutil.CertOptions{}), 0, want{reason: provision.ReasonBadCertificate}},
		{"CN with a control character", leaf("dev\x01.example", e.acme, testutil.CertOptions{}), 0, want{reason: provision.ReasonBadCertificate}},
		{"expired at the service's clock", leaf("dev-3.example", e.acme, testutil.CertOptions{}), 48 * time.Hour, want{reason: provision.ReasonBadCertificate}},
		{"forged signature", leaf("dev-4.example", impostor, testutil.CertOptions{}), 0, want{reason: provision.ReasonBadCertificate}},
		{"server usage only", leaf("dev-5.example", e.acme, testutil.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), 0, want{reason: provision.ReasonBadCertificate}},
		{"untrusted CA", leaf("dev-6.example", untrusted, testutil.CertOptions{}), 0, want{reason: provision.ReasonUntrustedCertificate}},
		{"self-signed", testutil.NewCert(t, "dev-7.example", nil, testutil.CertOptions{}).TLS(), 0, want{reason: provision.ReasonUntrustedCertificate}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			*e.clock = time.Now().Add(st.at)
			before, _ := e.store.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{Action: "provision"})
			res, err := e.provision(t, st.cert)
			after, _ := e.store.ListAudit(ctx, registry.DefaultOrgID, registry.AuditFilter{Action: "provision"})
			if st.want.reason != "" {
				if got := provision.ReasonOf(err); got != st.want.reason {
					t.Fatalf("err = %v (reason %s), want reason %s", err, got, st.want.reason)
				}
				// Every refusal but an untrusted chain is audited, with its reason.
				audited := len(after) == len(before)+1 && after[0].Result == string(st.want.reason)
				if audited != (st.want.reason != provision.ReasonUntrustedCertificate) {
					t.Fatalf("audit after refusal: %+v", after[:min(1, len(after))])
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Device.Name != st.want.device || res.Reprovisioned != st.want.reprovisioned || res.Credentials.Type != registry.CredentialX509 {
				t.Fatalf("result %+v", res)
			}
			creds, err := e.store.ListCredentials(ctx, registry.DefaultOrgID, res.Device.ID)
			if err != nil {
				t.Fatal(err)
			}
			active := 0
			for _, c := range creds {
				if c.Status == registry.CredentialActive {
					active++
					if c.Type != registry.CredentialX509 || c.LookupKey != testutil.FingerprintOf(st.cert.Leaf) {
						t.Errorf("active credential %+v is not this certificate's", c)
					}
				}
			}
			if active != st.want.activeCreds {
				t.Fatalf("%d active credentials, want %d", active, st.want.activeCreds)
			}
		})
	}
}

// TestProvisionByCertificateAmbiguous: a CA trusted by two profiles
// provisions into neither.
func TestProvisionByCertificateAmbiguous(t *testing.T) {
	e := newChainEnv(t)
	twin := &registry.Profile{OrgID: registry.DefaultOrgID, Name: "twin", Strategy: registry.StrategyDisabled,
		ProvisionKey: "key-twin", ProvisionSecretHash: "sha256$a$b", DefaultCredentialType: registry.CredentialAccessToken,
		ReprovisionPolicy: registry.ReprovisionNever, X509Chain: &registry.X509ChainProvisioning{CACertificates: e.acme.PEM(), AllowCreate: true}}
	if err := e.store.CreateProfile(context.Background(), twin); err != nil {
		t.Fatal(err)
	}
	_, err := e.provision(t, testutil.NewCert(t, "dev.example", e.acme, testutil.CertOptions{}).TLS())
	var pe *provision.Error
	if !errors.As(err, &pe) || pe.Reason != provision.ReasonBadCertificate || !strings.Contains(pe.Msg, "several profiles") {
		t.Fatalf("err = %v", err)
	}
}

// TestProvisionByCertificateConcurrent: first connections racing with
// one certificate make one device and one credential, and all succeed.
func TestProvisionByCertificateConcurrent(t *testing.T) {
	e := newChainEnv(t)
	chain := presented(t, testutil.NewCert(t, "race.example", e.acme, testutil.CertOptions{}).TLS())
	const n = 8
	errs := make([]error, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := e.svc.ProvisionByCertificate(context.Background(), provision.ChainRequest{Source: "192.0.2.8", Chain: chain})
			errs[i] = err
			if err == nil {
				ids[i] = res.Device.ID
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("request %d: %v, device %q (first %q)", i, errs[i], ids[i], ids[0])
		}
	}
	creds, err := e.store.ListCredentials(context.Background(), registry.DefaultOrgID, ids[0])
	if err != nil || len(creds) != 1 {
		t.Fatalf("%d credentials, %v; want 1", len(creds), err)
	}
}

// TestTrustedCAs: the CAs of every profile with X.509 chain provisioning,
// served from a cache that does not outlive a few seconds.
func TestTrustedCAs(t *testing.T) {
	e := newChainEnv(t)
	ctx := context.Background()
	cas, err := e.svc.TrustedCAs(ctx)
	if err != nil || len(cas) != 2 {
		t.Fatalf("TrustedCAs = %d, %v; want 2", len(cas), err)
	}
	e.closed.X509Chain = nil
	if err := e.store.UpdateProfile(ctx, e.closed); err != nil {
		t.Fatal(err)
	}
	if cas, _ := e.svc.TrustedCAs(ctx); len(cas) != 2 {
		t.Fatalf("within the cache's life: %d CAs, want the cached 2", len(cas))
	}
	*e.clock = e.clock.Add(time.Minute)
	if cas, _ := e.svc.TrustedCAs(ctx); len(cas) != 1 || !cas[0].Equal(e.acme.Cert) {
		t.Fatalf("after the cache's life: %d CAs, want Acme's alone", len(cas))
	}
}

// TestRevokedChainCertificateStaysRevoked: under "rotate", a certificate
// whose credential the operator revoked cannot provision its device again
// by connecting; a newer certificate of the same maker can.
func TestRevokedChainCertificateStaysRevoked(t *testing.T) {
	e := newChainEnv(t)
	ctx := context.Background()
	cert := testutil.NewCert(t, "unit-7.example", e.acme, testutil.CertOptions{NotBefore: time.Now().Add(-time.Hour)}).TLS(e.acme)
	res, err := e.provision(t, cert)
	if err != nil {
		t.Fatal(err)
	}
	cred, _, err := e.store.FindActiveCredential(ctx, registry.CredentialX509, res.Credentials.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.RevokeCredential(ctx, cred.OrgID, cred.ID); err != nil {
		t.Fatal(err)
	}
	var pe *provision.Error
	if _, err := e.provision(t, cert); !errors.As(err, &pe) || pe.Reason != provision.ReasonAlreadyProvisioned || !strings.Contains(pe.Msg, "was revoked") {
		t.Fatalf("the revoked certificate connecting again: %v, want refused as revoked", err)
	}
	newer := testutil.NewCert(t, "unit-7.example", e.acme, testutil.CertOptions{NotBefore: time.Now().Add(-time.Minute)}).TLS(e.acme)
	if _, err := e.provision(t, newer); err != nil {
		t.Fatalf("a newer certificate after the revocation: %v", err)
	}
}
