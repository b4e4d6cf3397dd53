package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// x509Device is a ThingsBoard device of h that works with a certificate
// of zerotouch's CA: it provisions once with a self-signed certificate
// (ThingsBoard's X.509 path), then the operator issues it a certificate of
// the built-in CA from a CSR made on the device (lifetime as the API
// takes it, "" for the CA's default), which replaces the configured files.
type x509Device struct {
	cfg      *Config
	id       string
	certFile string
	keyFile  string
	serial   string
	leaf     *x509.Certificate
}

func newX509Device(t *testing.T, h *hub, name, lifetime string) *x509Device {
	t.Helper()
	p := h.profile("x509-"+name, "never")
	dir := t.TempDir()
	resp, err := http.Get("http://" + h.http + "/ca/chain.pem")
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	own := testutil.NewCert(t, name, nil, testutil.CertOptions{})
	ownKey, _ := x509.MarshalPKCS8PrivateKey(own.Key)
	d := &x509Device{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	writeFiles(t, map[string][]byte{filepath.Join(dir, "ca.pem"): chain, d.certFile: []byte(own.PEM()),
		d.keyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ownKey})})
	c := h.testConfig(t, p, name)
	c.Server = h.mqtts
	c.TLS = &TLSConfig{CAFile: filepath.Join(dir, "ca.pem")}
	c.Credentials = CredentialsConfig{Type: CredentialsX509, CertFile: d.certFile, KeyFile: d.keyFile}
	c.Renewal = RenewalConfig{URL: "https://" + h.https, CheckInterval: 100 * time.Millisecond}
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	d.cfg = c
	if err := newAgent(t, c).Once(context.Background()); err != nil {
		t.Fatalf("provisioning with a self-signed certificate: %v", err)
	}
	d.id, _ = h.device(name)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	body := map[string]any{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}
	if lifetime != "" {
		body["lifetime"] = lifetime
	}
	var issued struct {
		Certificate struct {
			Serial string `json:"serial"`
		} `json:"certificate"`
		CertificatePEM string `json:"certificatePem"`
	}
	h.api("POST", "/api/devices/"+d.id+"/certificates", body, http.StatusCreated, &issued)
	writeFiles(t, map[string][]byte{d.certFile: []byte(issued.CertificatePEM),
		d.keyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})})
	d.serial = issued.Certificate.Serial
	d.leaf = certFromFile(t, d.certFile)
	return d
}

func writeFiles(t *testing.T, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func certFromFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// certStatus is the server's record of a certificate: status and
// revocation reason.
func (h *hub) certStatus(serial string) (status, reason string) {
	h.t.Helper()
	var c struct {
		Status           string `json:"status"`
		RevocationReason string `json:"revocationReason"`
	}
	h.api("GET", "/api/certificates/"+serial, nil, http.StatusOK, &c)
	return c.Status, c.RevocationReason
}

func startHTTPSHub(t *testing.T) *hub {
	t.Helper()
	h := &hub{t: t, dataDir: t.TempDir(), http: "127.0.0.1:0", mqtt: "127.0.0.1:0", mqtts: "127.0.0.1:0", https: "127.0.0.1:0"}
	h.start()
	t.Cleanup(h.stop)
	return h
}

// checkPair checks that the state's current pair is private, usable, and
// a certificate of the device other than serial.
func checkPair(t *testing.T, st *State, name, notSerial string) *x509.Certificate {
	t.Helper()
	for _, f := range []string{st.CertFile, st.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if _, err := tls.LoadX509KeyPair(st.CertFile, st.KeyFile); err != nil {
		t.Errorf("renewed pair: %v", err)
	}
	c := certFromFile(t, st.CertFile)
	if c.Subject.CommonName != name || pki.SerialHex(c.SerialNumber) == notSerial {
		t.Errorf("renewed certificate %s serial %s, want a new one for %s", c.Subject, pki.SerialHex(c.SerialNumber), name)
	}
	return c
}

// TestCertificateRenewal: a device whose certificate is short-lived renews
// it over EST while connected, reconnects with the new one (so the server
// revokes the old one, superseded), keeps the new pair (0600) in its state
// and goes on working.
func TestCertificateRenewal(t *testing.T) {
	h := startHTTPSHub(t)
	d := newX509Device(t, h, "renew-1", "1m")
	// Due four seconds from now: the device first works with the old one.
	lifetime := d.leaf.NotAfter.Sub(d.leaf.NotBefore)
	d.cfg.Renewal.RenewAt = float64(time.Since(d.leaf.NotBefore)+4*time.Second) / float64(lifetime)
	writeTelemetry(t, d.cfg, `{"phase":1}`)
	r := runAgent(t, newAgent(t, d.cfg))
	eventually(t, "telemetry with the first certificate", func() bool { return h.latest(d.id, "phase") == "1" })
	if st := mustState(t, d.cfg.StateFile); st.CertFile != "" || st.PendingCertFile != "" {
		t.Fatalf("renewed too early: %+v", st)
	}
	eventually(t, "the renewed certificate in use", func() bool {
		st := mustState(t, d.cfg.StateFile)
		return st.CertFile != "" && st.PendingCertFile == ""
	})
	st := mustState(t, d.cfg.StateFile)
	if filepath.Dir(st.CertFile) != filepath.Dir(d.cfg.StateFile) {
		t.Errorf("renewed pair in %s, want beside the state file", st.CertFile)
	}
	renewed := checkPair(t, st, "renew-1", d.serial)
	if renewed.NotAfter.Sub(renewed.NotBefore) < 24*time.Hour {
		t.Errorf("renewed certificate lifetime %v, want the CA's default", renewed.NotAfter.Sub(renewed.NotBefore))
	}
	// Used by the device, so the old one is revoked (superseded).
	eventually(t, "the old certificate superseded", func() bool {
		s, reason := h.certStatus(d.serial)
		return s == "revoked" && reason == "superseded"
	})
	if s, _ := h.certStatus(pki.SerialHex(renewed.SerialNumber)); s != "active" {
		t.Errorf("renewed certificate %s", s)
	}
	writeTelemetry(t, d.cfg, `{"phase":2}`)
	eventually(t, "telemetry with the renewed certificate", func() bool { return h.latest(d.id, "phase") == "2" })
	r.stop(t)
	// The configured files are the operator's: never touched.
	if c := certFromFile(t, d.certFile); pki.SerialHex(c.SerialNumber) != d.serial {
		t.Error("the configured certificate file was changed")
	}

	// A restart uses the renewed pair from the state file, and it is not
	// renewed again (far from its expiry).
	writeTelemetry(t, d.cfg, `{"phase":3}`)
	r = runAgent(t, newAgent(t, d.cfg))
	eventually(t, "telemetry after a restart", func() bool { return h.latest(d.id, "phase") == "3" })
	time.Sleep(300 * time.Millisecond)
	r.stop(t)
	if st2 := mustState(t, d.cfg.StateFile); st2.CertFile != st.CertFile || st2.PendingCertFile != "" {
		t.Errorf("state after a restart %+v, want the same pair %s", st2, st.CertFile)
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCertificateRenewalRefused: a renewal the server refuses (here the
// certificate was revoked) is reported and retried later; the pair on
// disk and the state are left as they were. A server out of reach is a
// failure, retried too.
func TestCertificateRenewalRefused(t *testing.T) {
	h := startHTTPSHub(t)
	d := newX509Device(t, h, "refused-1", "")
	d.cfg.Renewal.RenewAt = 1e-6 // due at once: the CA backdates by minutes
	var logs syncBuffer
	a, err := New(d.cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), BackoffBase: 50 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(d.cfg.StateFile)
	certBefore, _ := os.ReadFile(d.certFile)
	keyBefore, _ := os.ReadFile(d.keyFile)
	check := func(what string) {
		t.Helper()
		after, _ := os.ReadFile(d.cfg.StateFile)
		certAfter, _ := os.ReadFile(d.certFile)
		keyAfter, _ := os.ReadFile(d.keyFile)
		if !bytes.Equal(before, after) || !bytes.Equal(certBefore, certAfter) || !bytes.Equal(keyBefore, keyAfter) {
			t.Errorf("%s: the state or the pair changed", what)
		}
		if m, _ := filepath.Glob(filepath.Join(filepath.Dir(d.cfg.StateFile), renewedPrefix+"*")); len(m) != 0 {
			t.Errorf("%s: files left: %v", what, m)
		}
	}

	h.api("POST", "/api/certificates/"+d.serial+"/revoke", map[string]string{"reason": "keyCompromise"}, http.StatusOK, nil)
	st := mustState(t, d.cfg.StateFile)
	if a.renewIfDue(context.Background(), st) {
		t.Fatal("a revoked certificate was renewed")
	}
	if !strings.Contains(logs.String(), "certificate renewal refused by the server") {
		t.Errorf("refusal not logged clearly:\n%s", logs.String())
	}
	if !a.renew.next.After(time.Now()) {
		t.Error("no retry scheduled after a refusal")
	}
	check("refused")
	cur, _ := tls.LoadX509KeyPair(d.certFile, d.keyFile)
	if _, err := a.renewCertificate(context.Background(), st, cur, d.leaf); !errors.Is(err, errRenewalRefused) {
		t.Errorf("renewal of a revoked certificate: %v, want errRenewalRefused", err)
	}
	check("refused again")

	// The EST server out of reach: a failure, retried with backoff.
	d2 := newX509Device(t, h, "refused-2", "")
	d2.cfg.Renewal.RenewAt = 1e-6
	d2.cfg.Renewal.URL = "https://" + h.mqtt // not an HTTPS server
	logs2 := &syncBuffer{}
	a2, err := New(d2.cfg, Options{Logger: slog.New(slog.NewTextHandler(logs2, nil)), BackoffBase: 50 * time.Millisecond, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st2 := mustState(t, d2.cfg.StateFile)
	if a2.renewIfDue(context.Background(), st2) || st2.PendingCertFile != "" {
		t.Fatal("renewed against a server that is not there")
	}
	if !strings.Contains(logs2.String(), "certificate renewal failed; retrying") {
		t.Errorf("failure not logged clearly:\n%s", logs2.String())
	}
	if s, _ := h.certStatus(d2.serial); s != "active" {
		t.Errorf("certificate %s after a failed renewal", s)
	}
}

// TestCertificateRenewalRestart: a renewed pair written but not used yet
// (the agent stopped in between) is tried first at the next start and
// then kept; a renewed pair the server refuses is dropped, and the device
// goes on with the previous one.
func TestCertificateRenewalRestart(t *testing.T) {
	h := startHTTPSHub(t)
	renewOnly := func(d *x509Device) *State {
		t.Helper()
		a := newAgent(t, d.cfg)
		st := mustState(t, d.cfg.StateFile)
		certFile, keyFile := a.certFiles(st)
		cur, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(cur.Certificate[0])
		if _, err := a.renewCertificate(context.Background(), st, cur, leaf); err != nil {
			t.Fatalf("renewal: %v", err)
		}
		st = mustState(t, d.cfg.StateFile)
		if st.PendingCertFile == "" || st.CertFile != "" {
			t.Fatalf("state after a renewal not used yet: %+v", st)
		}
		for _, f := range []string{st.PendingCertFile, st.PendingKeyFile} {
			if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v %v, want 0600", f, fi, err)
			}
		}
		// Not used yet: the old certificate is still active.
		if s, _ := h.certStatus(d.serial); s != "active" {
			t.Errorf("old certificate %s before the renewed one is used", s)
		}
		return st
	}

	t.Run("renewed pair used at restart", func(t *testing.T) {
		d := newX509Device(t, h, "restart-1", "")
		pending := renewOnly(d)
		writeTelemetry(t, d.cfg, `{"phase":7}`)
		r := runAgent(t, newAgent(t, d.cfg))
		eventually(t, "telemetry", func() bool { return h.latest(d.id, "phase") == "7" })
		eventually(t, "the renewed pair kept", func() bool {
			st := mustState(t, d.cfg.StateFile)
			return st.CertFile == pending.PendingCertFile && st.PendingCertFile == ""
		})
		r.stop(t)
		checkPair(t, mustState(t, d.cfg.StateFile), "restart-1", d.serial)
		if s, reason := h.certStatus(d.serial); s != "revoked" || reason != "superseded" {
			t.Errorf("old certificate %s (%s), want revoked (superseded)", s, reason)
		}
	})

	t.Run("renewed pair refused", func(t *testing.T) {
		d := newX509Device(t, h, "restart-2", "")
		pending := renewOnly(d)
		newSerial := pki.SerialHex(certFromFile(t, pending.PendingCertFile).SerialNumber)
		h.api("POST", "/api/certificates/"+newSerial+"/revoke", map[string]string{"reason": "keyCompromise"}, http.StatusOK, nil)
		writeTelemetry(t, d.cfg, `{"phase":8}`)
		r := runAgent(t, newAgent(t, d.cfg))
		eventually(t, "telemetry with the previous pair", func() bool { return h.latest(d.id, "phase") == "8" })
		r.stop(t)
		st := mustState(t, d.cfg.StateFile)
		if st.PendingCertFile != "" || st.CertFile != "" {
			t.Errorf("state %+v, want the refused pair dropped and the configured one in use", st)
		}
		for _, f := range []string{pending.PendingCertFile, pending.PendingKeyFile} {
			if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("refused pair file %s left: %v", f, err)
			}
		}
		if s, _ := h.certStatus(d.serial); s != "active" {
			t.Errorf("previous certificate %s, want active", s)
		}
	})
}

// TestParseCertsOnlyPKCS7 reads what the server's encoder writes.
func TestParseCertsOnlyPKCS7(t *testing.T) {
	a := testutil.NewCert(t, "a", nil, testutil.CertOptions{CA: true})
	b := testutil.NewCert(t, "b", a, testutil.CertOptions{})
	der, err := pki.CertsOnlyPKCS7([]*x509.Certificate{b.Cert, a.Cert})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCertsOnlyPKCS7(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(b.Cert) || !certs[1].Equal(a.Cert) {
		t.Errorf("parsed %d certificates, want b then a", len(certs))
	}
	for _, bad := range [][]byte{nil, {0x30, 0x00}, der[:len(der)-1], append(append([]byte{}, der...), 0)} {
		if _, err := parseCertsOnlyPKCS7(bad); err == nil {
			t.Errorf("%x: parsed", bad)
		}
	}
}

func FuzzParseCertsOnlyPKCS7(f *testing.F) {
	c := testutil.NewCert(f, "a", nil, testutil.CertOptions{})
	der, _ := pki.CertsOnlyPKCS7([]*x509.Certificate{c.Cert})
	f.Add(der)
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := parseCertsOnlyPKCS7(b)
		if err == nil && len(certs) == 0 {
			t.Error("no error and no certificate")
		}
	})
}

func TestRenewalConfig(t *testing.T) {
	base := "server: hub:8883\ntls: {}\nprovision: {key: k, secret: s}\ndevice: d\nstateFile: /tmp/s.json\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"defaults", base, ""},
		{"fraction", base + "renewal: {renewAt: 0.5, checkInterval: 10m, url: \"https://zt.example.com:9443\"}\n", ""},
		{"renewAt too big", base + "renewal: {renewAt: 1.5}\n", "renewal.renewAt"},
		{"negative", base + "renewal: {renewAt: -0.1}\n", "renewal.renewAt"},
		{"plain http", base + "renewal: {url: \"http://zt.example.com:8080\"}\n", "renewal.url"},
		{"interval", base + "renewal: {checkInterval: -1s}\n", "checkInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Renewal.RenewAt <= 0 || c.Renewal.CheckInterval <= 0 {
					t.Errorf("renewal defaults not applied: %+v", c.Renewal)
				}
				if tc.name == "defaults" && (c.Renewal.RenewAt != DefaultRenewAt || c.Renewal.CheckInterval != DefaultRenewalCheck) {
					t.Errorf("defaults %+v", c.Renewal)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want it to mention %s", err, tc.want)
			}
		})
	}
	a := &Agent{cfg: &Config{Server: "hub.example.com:8883"}}
	if got := a.estURL(); got != "https://hub.example.com:8443" {
		t.Errorf("default EST URL %s", got)
	}
}

// TestAzureCertificateRenewal: an Azure device whose certificate was
// issued by zerotouch's CA renews it over EST like a ThingsBoard one and
// reconnects to its hub with the new one; the configured files stay.
func TestAzureCertificateRenewal(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	h := &hub{t: t, dataDir: t.TempDir(), http: "127.0.0.1:0", mqtt: "127.0.0.1:0", https: "127.0.0.1:0",
		mqtts: fmt.Sprintf("127.0.0.1:%d", port), hubName: fmt.Sprintf("localhost:%d", port)}
	h.start()
	t.Cleanup(h.stop)

	// Registered first with a self-signed certificate (an individual
	// enrollment); the operator then issues one of the built-in CA.
	own := testutil.NewCert(t, "az-renew-1", nil, testutil.CertOptions{})
	h.api("POST", "/api/enrollments", map[string]any{"registrationId": "az-renew-1",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{"certificatePem": own.PEM()}}}, http.StatusCreated, nil)
	dir := t.TempDir()
	ownKey, _ := x509.MarshalPKCS8PrivateKey(own.Key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFiles(t, map[string][]byte{certFile: []byte(own.PEM()), keyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ownKey})})
	c := h.azureConfig(t, "", DPSConfig{Certificate: certFile, Key: keyFile})
	c.Renewal = RenewalConfig{URL: "https://" + h.https, CheckInterval: 100 * time.Millisecond, RenewAt: DefaultRenewAt}
	if err := newAgent(t, c).Once(context.Background()); err != nil {
		t.Fatalf("registration: %v", err)
	}
	id, _ := h.device("az-renew-1")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "az-renew-1"}}, key)
	var issued struct {
		Certificate struct {
			Serial string `json:"serial"`
		} `json:"certificate"`
		CertificatePEM string `json:"certificatePem"`
	}
	h.api("POST", "/api/devices/"+id+"/certificates", map[string]any{"lifetime": "1m",
		"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, http.StatusCreated, &issued)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	writeFiles(t, map[string][]byte{certFile: []byte(issued.CertificatePEM), keyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})})
	leaf := certFromFile(t, certFile)
	c.Renewal.RenewAt = float64(time.Since(leaf.NotBefore)+2*time.Second) / float64(leaf.NotAfter.Sub(leaf.NotBefore))

	writeTelemetry(t, c, `{"phase":1}`)
	r := runAgent(t, newAgent(t, c))
	eventually(t, "telemetry with the first certificate", func() bool { return h.latest(id, "phase") == "1" })
	eventually(t, "the renewed certificate in use", func() bool {
		st := mustState(t, c.StateFile)
		return st.CertFile != certFile && st.PendingCertFile == ""
	})
	eventually(t, "the old certificate superseded", func() bool {
		s, reason := h.certStatus(issued.Certificate.Serial)
		return s == "revoked" && reason == "superseded"
	})
	writeTelemetry(t, c, `{"phase":2}`)
	eventually(t, "telemetry with the renewed certificate", func() bool { return h.latest(id, "phase") == "2" })
	r.stop(t)
	checkPair(t, mustState(t, c.StateFile), "az-renew-1", issued.Certificate.Serial)
	if _, err := os.Stat(certFile); err != nil {
		t.Errorf("the configured certificate: %v", err)
	}
}

// The renewed certificate is found by its key, wherever the server put it
// in the PKCS#7 set.
func TestHolderOf(t *testing.T) {
	ca := testutil.NewCert(t, "CA", nil, testutil.CertOptions{CA: true})
	leaf := testutil.NewCert(t, "dev", ca, testutil.CertOptions{})
	for _, certs := range [][]*x509.Certificate{{leaf.Cert, ca.Cert}, {ca.Cert, leaf.Cert}} {
		if got := holderOf(certs, leaf.Key.Public()); got != leaf.Cert {
			t.Fatalf("holderOf picked %s, want the leaf", got.Subject)
		}
	}
	other := testutil.NewCert(t, "other", ca, testutil.CertOptions{})
	if got := holderOf([]*x509.Certificate{ca.Cert, leaf.Cert}, other.Key.Public()); got != ca.Cert {
		t.Fatalf("with no holder, holderOf = %s, want the first", got.Subject)
	}
}
