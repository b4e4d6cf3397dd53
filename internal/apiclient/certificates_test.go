package apiclient_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/server"
)

const nodeAdminKey = "apiclient-test-admin-key-0123456789"

// startNode runs a whole zerotouch node (store, built-in CA, HTTP) on an
// ephemeral port, TLS and MQTT listeners off, and returns its base URL.
func startNode(t *testing.T) string {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.HTTP = "127.0.0.1:0"
	cfg.MQTT, cfg.HTTPS, cfg.MQTTS = config.Off, config.Off, config.Off
	cfg.AdminKey = nodeAdminKey
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Banner: io.Discard})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return "http://" + srv.HTTPAddr().String()
}

// newCSR makes a certificate request for cn with a new key of the given kind.
func newCSR(t *testing.T, cn string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// verify checks that certPEM chains to the CA chain chainPEM, for client
// authentication, and returns the certificate.
func verify(t *testing.T, certPEM, chainPEM string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		t.Fatalf("no PEM certificate in %q", certPEM)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	rest := []byte(chainPEM)
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("certificate does not verify with the CA chain: %v", err)
	}
	return cert
}

// TestCertificateMethods calls every CA and certificate method against a
// real node with its built-in CA.
func TestCertificateMethods(t *testing.T) {
	base := startNode(t)
	ctx := context.Background()
	admin, _ := apiclient.New(base, nodeAdminKey)
	vk, err := admin.CreateAPIKey(ctx, api.CreateAPIKeyRequest{Name: "viewer", Role: registry.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	viewer, _ := apiclient.New(base, vk.Key)
	anonymous, _ := apiclient.New(base, "")

	ca, err := viewer.GetCA(ctx)
	if err != nil || ca.Issuer.Subject == "" || ca.Root.Fingerprint == "" || ca.IssuerID == "" || ca.ChainPath != apiclient.ChainPath || ca.CRLPath != apiclient.CRLPath {
		t.Fatalf("GetCA: %+v, %v", ca, err)
	}
	chain, err := anonymous.CAChainPEM(ctx)
	if err != nil || string(chain) != ca.ChainPEM {
		t.Fatalf("CAChainPEM without a key: %v\n%s", err, chain)
	}

	if _, err := admin.CreateProfile(ctx, api.CreateProfileRequest{Name: "p", Strategy: registry.StrategyPreProvisioned}); err != nil {
		t.Fatal(err)
	}
	d, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{Name: "press-7", ProfileName: "p"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := admin.CreateDevice(ctx, api.CreateDeviceRequest{Name: "press-8", ProfileName: "p"})
	if err != nil {
		t.Fatal(err)
	}

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fromCSR, err := admin.IssueCertificate(ctx, d.ID, api.IssueCertificateRequest{CSR: newCSR(t, "press-7", key), Lifetime: "10d"})
	if err != nil {
		t.Fatalf("issue from CSR: %v", err)
	}
	cert := verify(t, fromCSR.CertificatePEM, fromCSR.ChainPEM)
	if cert.Subject.CommonName != "press-7" || fromCSR.PrivateKeyPEM != "" || fromCSR.Certificate.DeviceID != d.ID ||
		fromCSR.Credential.Type != registry.CredentialX509 || cert.NotAfter.Sub(cert.NotBefore) > 10*24*time.Hour+time.Hour {
		t.Errorf("issued from CSR: %+v (CN %q, %v – %v)", fromCSR, cert.Subject.CommonName, cert.NotBefore, cert.NotAfter)
	}

	generated, err := admin.IssueCertificate(ctx, other.ID, api.IssueCertificateRequest{GenerateKey: true, KeyAlgorithm: "rsa-2048"})
	if err != nil {
		t.Fatalf("issue with a generated key: %v", err)
	}
	gcert := verify(t, generated.CertificatePEM, generated.ChainPEM)
	kb, _ := pem.Decode([]byte(generated.PrivateKeyPEM))
	if kb == nil {
		t.Fatalf("no private key in %+v", generated)
	}
	gkey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if rk, ok := gkey.(*rsa.PrivateKey); !ok || !rk.PublicKey.Equal(gcert.PublicKey) {
		t.Errorf("the generated key (%T) does not match the certificate", gkey)
	}
	// The server's default lifetime, 90 days.
	if life := gcert.NotAfter.Sub(gcert.NotBefore); life < 89*24*time.Hour || life > 91*24*time.Hour {
		t.Errorf("default lifetime %v", life)
	}

	serials := func(l *api.List[registry.Certificate]) []string {
		var s []string
		for _, c := range l.Items {
			s = append(s, c.Serial)
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		device string // ListDeviceCertificates when set
		f      apiclient.CertificateFilter
		want   []string
	}{
		{"device filter", "", apiclient.CertificateFilter{DeviceID: d.ID}, []string{fromCSR.Certificate.Serial}},
		{"device route", other.ID, apiclient.CertificateFilter{}, []string{generated.Certificate.Serial}},
		// The server certificate expires in 30 days, the default in 90.
		{"expiring within 20 days", "", apiclient.CertificateFilter{ExpiresWithin: 20 * 24 * time.Hour}, []string{fromCSR.Certificate.Serial}},
		{"revoked", "", apiclient.CertificateFilter{Status: registry.CertificateRevoked}, nil},
		{"active, device route", d.ID, apiclient.CertificateFilter{Status: registry.CertificateActive}, []string{fromCSR.Certificate.Serial}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l *api.List[registry.Certificate]
			var err error
			if tc.device != "" {
				l, err = viewer.ListDeviceCertificates(ctx, tc.device, tc.f)
			} else {
				l, err = viewer.ListCertificates(ctx, tc.f)
			}
			if err != nil || !slices.Equal(serials(l), tc.want) {
				t.Fatalf("got %v, %v; want %v", serials(l), err, tc.want)
			}
		})
	}
	// The server's own TLS certificate is recorded too: three in all, one
	// per page.
	page, err := viewer.ListCertificates(ctx, apiclient.CertificateFilter{Limit: 2})
	if err != nil || len(page.Items) != 2 || page.Next == "" {
		t.Fatalf("first page: %+v, %v", page, err)
	}
	page, err = viewer.ListCertificates(ctx, apiclient.CertificateFilter{Limit: 2, After: page.Next})
	if err != nil || len(page.Items) != 1 || page.Next != "" {
		t.Fatalf("second page: %+v, %v", page, err)
	}

	got, err := viewer.GetCertificate(ctx, fromCSR.Certificate.Serial)
	if err != nil || got.Fingerprint != fromCSR.Certificate.Fingerprint || got.PEM != fromCSR.CertificatePEM {
		t.Fatalf("GetCertificate: %+v, %v", got, err)
	}

	revoked, err := admin.RevokeCertificate(ctx, fromCSR.Certificate.Serial, registry.RevocationKeyCompromise)
	if err != nil || revoked.Status != registry.CertificateRevoked || revoked.RevocationReason != registry.RevocationKeyCompromise || revoked.RevokedAt == nil {
		t.Fatalf("revoke: %+v, %v", revoked, err)
	}
	if again, err := admin.RevokeCertificate(ctx, fromCSR.Certificate.Serial, ""); err != nil || again.RevocationReason != registry.RevocationKeyCompromise {
		t.Fatalf("revoke again: %+v, %v", again, err)
	}
	if cs, err := admin.ListCredentials(ctx, d.ID); err != nil || len(cs) != 1 || cs[0].Status != registry.CredentialRevoked {
		t.Errorf("the certificate's credential: %+v, %v", cs, err)
	}

	// The CRL is rebuilt in the background after a revocation.
	var crl *x509.RevocationList
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		der, err := anonymous.CRL(ctx)
		if err != nil {
			t.Fatalf("CRL without a key: %v", err)
		}
		if crl, err = x509.ParseRevocationList(der); err != nil {
			t.Fatal(err)
		}
		if len(crl.RevokedCertificateEntries) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Text(16) != fromCSR.Certificate.Serial ||
		crl.RevokedCertificateEntries[0].ReasonCode != 1 {
		t.Fatalf("CRL entries: %+v", crl.RevokedCertificateEntries)
	}
	ca2, _ := pem.Decode([]byte(ca.ChainPEM))
	issuer, _ := x509.ParseCertificate(ca2.Bytes)
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("CRL signature: %v", err)
	}

	for _, tc := range []struct {
		name   string
		call   func() error
		status int
	}{
		{"bad CSR", func() error {
			_, err := admin.IssueCertificate(ctx, d.ID, api.IssueCertificateRequest{CSR: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"})
			return err
		}, http.StatusUnprocessableEntity},
		{"CSR for another name", func() error {
			_, err := admin.IssueCertificate(ctx, d.ID, api.IssueCertificateRequest{CSR: newCSR(t, "press-8", key)})
			return err
		}, http.StatusUnprocessableEntity},
		{"neither CSR nor generateKey", func() error {
			_, err := admin.IssueCertificate(ctx, d.ID, api.IssueCertificateRequest{})
			return err
		}, http.StatusUnprocessableEntity},
		{"unknown device", func() error {
			_, err := admin.IssueCertificate(ctx, "nope", api.IssueCertificateRequest{GenerateKey: true})
			return err
		}, http.StatusNotFound},
		{"viewer issues", func() error {
			_, err := viewer.IssueCertificate(ctx, d.ID, api.IssueCertificateRequest{GenerateKey: true})
			return err
		}, http.StatusForbidden},
		{"unknown reason", func() error {
			_, err := admin.RevokeCertificate(ctx, generated.Certificate.Serial, "because")
			return err
		}, http.StatusUnprocessableEntity},
		{"unknown serial", func() error { _, err := viewer.GetCertificate(ctx, "abc"); return err }, http.StatusNotFound},
		{"revoke unknown serial", func() error { _, err := admin.RevokeCertificate(ctx, "abc", ""); return err }, http.StatusNotFound},
		{"unknown device's list", func() error {
			_, err := viewer.ListDeviceCertificates(ctx, "nope", apiclient.CertificateFilter{})
			return err
		}, http.StatusNotFound},
		{"bad status", func() error {
			_, err := viewer.ListCertificates(ctx, apiclient.CertificateFilter{Status: "expired"})
			return err
		}, http.StatusBadRequest},
		{"no key for the API", func() error { _, err := anonymous.GetCA(ctx); return err }, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e *apiclient.Error
			if err := tc.call(); !errors.As(err, &e) || e.Status != tc.status || e.Message == "" {
				t.Fatalf("got %v, want HTTP %d", err, tc.status)
			}
		})
	}
}

// TestPublicDownloads: the public routes are fetched without the API key;
// a server without them (404) or with an empty or oversized answer is an
// error.
func TestPublicDownloads(t *testing.T) {
	var auth []string
	big := bytes.Repeat([]byte("x"), apiclient.MaxPublicDownload+1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		// The case is the first path segment: the client appends the
		// route to its base URL's path.
		switch strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)[0] {
		case "missing":
			http.NotFound(w, r)
		case "empty":
		case "big":
			w.Write(big)
		default:
			io.WriteString(w, "-----BEGIN CERTIFICATE-----\n")
		}
	}))
	t.Cleanup(hs.Close)
	ctx := context.Background()
	for _, tc := range []struct {
		name, path string
		status     int    // of an *Error, when not 0
		want       string // in the error, when not ""
	}{
		{"ok", "ok", 0, ""},
		{"missing", "missing", http.StatusNotFound, "404 page not found"},
		{"empty", "empty", 0, "empty answer"},
		{"too big", "big", 0, "exceeds 128 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := apiclient.New(hs.URL+"/"+tc.path, "secret-key")
			for name, call := range map[string]func(context.Context) ([]byte, error){"chain": c.CAChainPEM, "CRL": c.CRL} {
				b, err := call(ctx)
				var e *apiclient.Error
				switch {
				case tc.status != 0 && (!errors.As(err, &e) || e.Status != tc.status || !strings.Contains(e.Message, tc.want)):
					t.Errorf("%s: %v, want HTTP %d", name, err, tc.status)
				case tc.status == 0 && tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
					t.Errorf("%s: %v, want %q", name, err, tc.want)
				case tc.want == "" && (err != nil || len(b) == 0):
					t.Errorf("%s: %q, %v", name, b, err)
				}
			}
		})
	}
	for _, a := range auth {
		if a != "" {
			t.Fatalf("a public route was sent Authorization %q", a)
		}
	}
}
