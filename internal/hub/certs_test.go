package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/certauth"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// tlsWorld is a hub with two TLS listeners, "mqtts" checked by a
// certauth.Checker and "mqtts-unchecked" without one, a built-in CA that
// issued their server certificate, and optionally X.509 chain
// provisioning through a real pipeline.
type tlsWorld struct {
	*env
	ca        *pki.CA
	svc       *provision.Service // nil without provisioning
	checked   string             // address of "mqtts"
	unchecked string             // address of "mqtts-unchecked"
}

func newTLSWorld(t *testing.T, provisioning bool) *tlsWorld {
	t.Helper()
	w := &tlsWorld{}
	w.env = newEnv(t, func(o *Options) {
		if provisioning {
			w.svc = provision.New(provision.Options{Store: o.Store, Logger: o.Logger, Limiter: o.Limiter})
			o.CertificateProvisioner = w.svc
		}
	})
	ca, err := pki.Open(context.Background(), filepath.Join(t.TempDir(), "ca"), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.ca = ca
	server, _, err := ca.IssueServerCertificate([]string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	o := certauth.Options{CACertificates: ca.Certificates, Store: w.store, Changes: w.changes, Logger: testLogger(t)}
	if w.svc != nil {
		o.Anchors = w.svc
	}
	checker, err := certauth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	base := &tls.Config{Certificates: []tls.Certificate{*server}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	addr, err := w.hub.ListenTLS("mqtts", "127.0.0.1:0", checker.Config(base, "mqtts"))
	if err != nil {
		t.Fatal(err)
	}
	w.checked = addr.String()
	if addr, err = w.hub.ListenTLS("mqtts-unchecked", "127.0.0.1:0", base); err != nil {
		t.Fatal(err)
	}
	w.unchecked = addr.String()
	return w
}

// clientTLS trusts the built-in CA and presents cert (none when nil).
func (w *tlsWorld) clientTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: w.ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// ourDevice issues a certificate from the built-in CA to a new device and
// records both as the server does: the certificate, and an
// X509_CERTIFICATE credential whose lookup key is its fingerprint.
func (w *tlsWorld) ourDevice(t *testing.T) (tls.Certificate, *pki.Issued, *registry.Device) {
	t.Helper()
	iss, keyPEM, err := w.ca.IssueWithNewKey(pki.Profile{CommonName: fmt.Sprintf("dev-%d", deviceSeq.Add(1))}, pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(iss.PEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := w.device(registry.DeviceEnabled, registry.Credential{
		Type: registry.CredentialX509, LookupKey: iss.Fingerprint, Fingerprint: iss.Fingerprint, CertificatePEM: string(iss.PEM()),
	})
	rec := []registry.Certificate{{
		Serial: iss.Serial, OrgID: registry.DefaultOrgID, DeviceID: dev.ID, Issuer: iss.IssuerID, Fingerprint: iss.Fingerprint,
		CommonName: iss.Certificate.Subject.CommonName, NotBefore: iss.Certificate.NotBefore, NotAfter: iss.Certificate.NotAfter,
	}}
	if err := w.store.RecordCertificates(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return cert, iss, dev
}

// handshakeRefused dials addr with cfg and reports whether the server
// refused the handshake (a bad_certificate alert). In TLS 1.3 the
// client's handshake ends before the server has checked its certificate,
// so the alert shows on the first read.
func handshakeRefused(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err == nil {
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(waitLimit))
		_, err = conn.Read(make([]byte, 1))
	}
	return err != nil && strings.Contains(err.Error(), "bad certificate")
}

// TestCertificateOfOurCA: a device holding a certificate of the built-in
// CA, recorded with its fingerprint credential, connects by it alone, on
// a checked listener and on an unchecked one, and its session knows the
// certificate.
func TestCertificateOfOurCA(t *testing.T) {
	w := newTLSWorld(t, false)
	cert, iss, dev := w.ourDevice(t)
	for _, addr := range []string{w.checked, w.unchecked} {
		for _, v := range []byte{4, 5} {
			t.Run(fmt.Sprintf("%s/v%d", addr, v), func(t *testing.T) {
				cl, ack := dialRaw(t, addr, v, rawConnect{ClientID: "ours", Clean: true, TLS: w.clientTLS(&cert)})
				if ack.ReasonCode != 0 {
					t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
				}
				s := whoIs(t, w.env, cl)
				if s.DeviceID != dev.ID || s.CredentialType != registry.CredentialX509 ||
					s.CertificateSerial != iss.Serial || s.CertificateFingerprint != iss.Fingerprint {
					t.Fatalf("session %+v, want device %s by certificate %s", s, dev.ID, iss.Serial)
				}
			})
		}
	}
	// paho, an independent client, over TLS.
	pc := w.mustPaho(pahoConf{clientID: "paho-ours", broker: "ssl://" + w.checked, tls: w.clientTLS(&cert)})
	pc.publish(t, "v1/devices/me/telemetry", 1, "{}")
	if p := w.nextDevicePub(t); p.sess.DeviceID != dev.ID || p.sess.Listener != "mqtts" {
		t.Fatalf("paho session %+v", p.sess)
	}
}

// TestCertificateRevocationDisconnects: revoking a certificate of the
// built-in CA (through the notifying store) closes within a second every
// live session that authenticated with it, on every TLS listener and in
// both protocol versions, leaves other sessions alone, and refuses new
// connections with it: at the handshake where the listener checks, at
// CONNECT where it does not.
func TestCertificateRevocationDisconnects(t *testing.T) {
	w := newTLSWorld(t, false)
	cert, iss, dev := w.ourDevice(t)
	other, _, _ := w.ourDevice(t)

	v5, ack := dialRaw(t, w.checked, 5, rawConnect{ClientID: "victim-v5", Clean: true, TLS: w.clientTLS(&cert)})
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
	}
	v4 := w.mustPaho(pahoConf{clientID: "victim-v4", broker: "ssl://" + w.unchecked, tls: w.clientTLS(&cert)})
	bystander, ack := dialRaw(t, w.checked, 5, rawConnect{ClientID: "bystander", Clean: true, TLS: w.clientTLS(&other)})
	if ack.ReasonCode != 0 {
		t.Fatalf("bystander CONNACK 0x%02x", ack.ReasonCode)
	}
	eventually(t, "three sessions", func() bool { return w.hub.ConnectedDevices() == 3 })

	start := time.Now()
	if _, err := w.store.RevokeCertificate(context.Background(), registry.DefaultOrgID, iss.Serial, registry.RevocationKeyCompromise); err != nil {
		t.Fatal(err)
	}
	d := v5.waitClosed()
	v4.waitLost(t)
	if took := time.Since(start); took > time.Second {
		t.Errorf("sessions closed %v after the revocation, want within a second", took)
	}
	if d == nil || d.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Errorf("MQTT 5 DISCONNECT %+v, want reason 0x87", d)
	}
	eventually(t, "only the bystander left", func() bool { return w.hub.ConnectedDevices() == 1 })
	if !bystander.alive(t) {
		t.Error("the bystander was disconnected")
	}

	if !handshakeRefused(t, w.checked, w.clientTLS(&cert)) {
		t.Error("the checked listener let the revoked certificate through its handshake")
	}
	// The credential is still active: the CONNECT-time check refuses it.
	if _, _, err := w.store.FindActiveCredential(context.Background(), registry.CredentialX509, iss.Fingerprint); err != nil {
		t.Fatalf("credential: %v", err)
	}
	if _, ack := dialRaw(t, w.unchecked, 5, rawConnect{ClientID: "again", Clean: true, TLS: w.clientTLS(&cert)}); ack.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Errorf("CONNECT with the revoked certificate: CONNACK 0x%02x, want 0x87", ack.ReasonCode)
	}
	eventually(t, "refusals audited", func() bool {
		evs, _ := w.store.ListAudit(context.Background(), registry.DefaultOrgID, registry.AuditFilter{DeviceID: dev.ID})
		var handshake, connect bool
		for _, ev := range evs {
			handshake = handshake || ev.Action == "tls.handshake" && ev.Result == certauth.ReasonRevoked
			connect = connect || ev.Action == "mqtt.connect" && ev.Result == resultCertificateRevoked
		}
		return handshake && connect
	})
}

// TestCertificateRevokedDuringLookup: a revocation by serial that lands
// between a CONNECT's lookup and its registration is not missed.
func TestCertificateRevokedDuringLookup(t *testing.T) {
	var s sessions
	s.init(sessionLimits{})
	c := &conn{dev: &DeviceSession{DeviceID: "dev-1", CredentialID: "cred-1", CertificateSerial: "abc"}}
	seq0 := s.snapshot()
	s.mu.Lock()
	s.revoke(registry.Change{Kind: registry.ChangeCertificatesRevoked, DeviceID: "dev-0", Serials: []string{"abd", "abc"}})
	s.mu.Unlock()
	if got := s.register(c, seq0); got != changed {
		t.Fatalf("register after the revocation of its serial = %v, want changed", got)
	}
	seq0 = s.snapshot()
	s.mu.Lock()
	s.revoke(registry.Change{Kind: registry.ChangeCertificatesRevoked, DeviceID: "dev-1", Serials: []string{"abd"}})
	s.mu.Unlock()
	if got := s.register(c, seq0); got != registered {
		t.Fatalf("register after another serial's revocation = %v, want registered", got)
	}
	s.mu.Lock()
	victims := s.revoke(registry.Change{Kind: registry.ChangeCertificatesRevoked, Serials: []string{"abc", "abc"}})
	s.mu.Unlock()
	if len(victims) != 1 || victims[0] != c {
		t.Fatalf("revoke = %v, want the session once", victims)
	}
	s.unregister(c.cl)
	if len(s.bySerial) != 0 {
		t.Fatalf("bySerial keeps %v after the session ended", s.bySerial)
	}
}

// maker is a manufacturer's CA hierarchy: a root and the intermediate
// that signs device certificates, which a profile trusts.
type maker struct {
	root, inter *testutil.TestCert
}

func newMaker(t *testing.T, name string) maker {
	root := testutil.NewCert(t, name+" Root CA", nil, testutil.CertOptions{CA: true})
	return maker{root: root, inter: testutil.NewCert(t, name+" Line CA", root, testutil.CertOptions{CA: true})}
}

// deviceCert is a device certificate of the maker, sent with its
// intermediate, as devices of the field do.
func (m maker) deviceCert(t *testing.T, cn string, o testutil.CertOptions) *tls.Certificate {
	c := testutil.NewCert(t, cn, m.inter, o).TLS(m.inter)
	return &c
}

// chainProfile creates a profile trusting m's intermediate, naming
// devices by `(.+)\.maker\.example`.
func (w *tlsWorld) chainProfile(t *testing.T, name string, m maker, allowCreate bool, policy registry.ReprovisionPolicy) *registry.Profile {
	t.Helper()
	p := &registry.Profile{
		OrgID: registry.DefaultOrgID, Name: name, Strategy: registry.StrategyDisabled,
		ProvisionKey: "key-" + name, ProvisionSecretHash: "sha256$x$y",
		DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: policy,
		X509Chain: &registry.X509ChainProvisioning{
			CACertificates: m.inter.PEM(), CNPattern: `(.+)\.maker\.example`, AllowCreate: allowCreate,
		},
	}
	if err := w.store.CreateProfile(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *tlsWorld) credentials(t *testing.T, deviceID string) (active, all int) {
	t.Helper()
	creds, err := w.store.ListCredentials(context.Background(), registry.DefaultOrgID, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range creds {
		if c.Status == registry.CredentialActive {
			active++
		}
	}
	return active, len(creds)
}

// connectAs connects with cert over the checked listener (MQTT 5) and
// returns the CONNACK's code and, when accepted, the session.
func (w *tlsWorld) connectAs(t *testing.T, cert *tls.Certificate) (byte, *rawClient) {
	t.Helper()
	// A client id of its own: no takeover of another session of the device.
	cl, ack := dialRaw(t, w.checked, 5, rawConnect{ClientID: fmt.Sprint("chain-", deviceSeq.Add(1)), Clean: true, TLS: w.clientTLS(cert)})
	if ack.ReasonCode != 0 {
		cl.waitClosed()
		return ack.ReasonCode, nil
	}
	return 0, cl
}

// TestX509ChainProvisioning: a device presenting a certificate chained to
// a CA its profile trusts is provisioned on its first CONNECT and
// connected as that device; its next connections reuse the device.
func TestX509ChainProvisioning(t *testing.T) {
	w := newTLSWorld(t, true)
	m := newMaker(t, "Acme")
	p := w.chainProfile(t, "acme-sensors", m, true, registry.ReprovisionNever)
	cert := m.deviceCert(t, "sensor-1.maker.example", testutil.CertOptions{})

	code, cl := w.connectAs(t, cert)
	if code != 0 {
		t.Fatalf("first CONNECT: 0x%02x", code)
	}
	s := whoIs(t, w.env, cl)
	dev, err := w.store.GetDeviceByName(context.Background(), registry.DefaultOrgID, "sensor-1")
	if err != nil {
		t.Fatalf("device not provisioned: %v", err)
	}
	if s.DeviceID != dev.ID || dev.ProfileID != p.ID || dev.ProvisionedAt == nil || s.CredentialType != registry.CredentialX509 {
		t.Fatalf("session %+v, device %+v", s, dev)
	}

	// The second connection reuses the device and its credential; so does
	// paho, an independent client.
	code, cl = w.connectAs(t, cert)
	if code != 0 {
		t.Fatalf("second CONNECT: 0x%02x", code)
	}
	if s := whoIs(t, w.env, cl); s.DeviceID != dev.ID {
		t.Fatalf("second session as %s, want %s", s.DeviceID, dev.ID)
	}
	pc := w.mustPaho(pahoConf{clientID: "paho-chain", broker: "ssl://" + w.checked, tls: w.clientTLS(cert)})
	pc.publish(t, "v1/devices/me/telemetry", 1, "{}")
	if p := w.nextDevicePub(t); p.sess.DeviceID != dev.ID {
		t.Fatalf("paho session as %s", p.sess.DeviceID)
	}
	if active, all := w.credentials(t, dev.ID); active != 1 || all != 1 {
		t.Fatalf("%d credentials (%d active), want 1", all, active)
	}
	evs, err := w.store.ListAudit(context.Background(), registry.DefaultOrgID, registry.AuditFilter{Action: "provision", Result: "success"})
	if err != nil || len(evs) != 1 || evs[0].ProfileID != p.ID || evs[0].Dialect != certificateDialect {
		t.Fatalf("provisioning audit = %+v, %v; want one success", evs, err)
	}
}

// TestX509ChainProvisioningRefusals: what chain provisioning refuses, at
// the handshake or at CONNECT, with an audit reason, and nothing written.
func TestX509ChainProvisioningRefusals(t *testing.T) {
	w := newTLSWorld(t, true)
	m := newMaker(t, "Acme")
	untrusted := newMaker(t, "Nobody")
	closed := newMaker(t, "Closed")
	w.chainProfile(t, "acme", m, true, registry.ReprovisionNever)
	w.chainProfile(t, "closed", closed, false, registry.ReprovisionNever)
	impostor := testutil.NewCert(t, "Acme Line CA", nil, testutil.CertOptions{CA: true, Subject: &m.inter.Cert.Subject})
	forged := testutil.NewCert(t, "forged.maker.example", impostor, testutil.CertOptions{}).TLS()

	for _, tc := range []struct {
		name      string
		cert      *tls.Certificate
		handshake bool   // refused at the handshake (certauth)
		code      byte   // else the CONNACK
		audit     string // action/result audited
		detail    string // in the audit event's detail
	}{
		{"untrusted CA", untrusted.deviceCert(t, "u-1.maker.example", testutil.CertOptions{}), false, 0x86, "mqtt.connect/" + resultUnknownCredentials, "chains to no CA"},
		{"CN does not match the pattern", m.deviceCert(t, "u-2.elsewhere.example", testutil.CertOptions{}), false, 0x87, "provision/" + string(provision.ReasonBadCertificate), `CN="u-2.elsewhere.example"`},
		{"CN yields an empty name", m.deviceCert(t, ".maker.example", testutil.CertOptions{}), false, 0x87, "provision/" + string(provision.ReasonBadCertificate), `CN=".maker.example"`},
		{"creation off, no such device", closed.deviceCert(t, "u-3.maker.example", testutil.CertOptions{}), false, 0x87, "provision/" + string(provision.ReasonNotPreProvisioned), `"u-3"`},
		{"forged chain", &forged, true, 0, "tls.handshake/" + certauth.ReasonInvalid, `CN="forged.maker.example"`},
		{"server usage only", m.deviceCert(t, "u-4.maker.example", testutil.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), true, 0, "tls.handshake/" + certauth.ReasonInvalid, `CN="u-4.maker.example"`},
		{"expired", m.deviceCert(t, "u-5.maker.example", testutil.CertOptions{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}), true, 0, "tls.handshake/" + certauth.ReasonExpired, `CN="u-5.maker.example"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.handshake {
				if !handshakeRefused(t, w.checked, w.clientTLS(tc.cert)) {
					t.Fatal("handshake not refused")
				}
			} else if code, _ := w.connectAs(t, tc.cert); code != tc.code {
				t.Fatalf("CONNACK 0x%02x, want 0x%02x", code, tc.code)
			}
			action, result, _ := strings.Cut(tc.audit, "/")
			eventually(t, "refusal audited as "+tc.audit, func() bool {
				evs, _ := w.store.ListAudit(context.Background(), registry.DefaultOrgID, registry.AuditFilter{Action: action, Result: result})
				for _, ev := range evs {
					if strings.Contains(ev.Detail, tc.detail) {
						return true
					}
				}
				return false
			})
		})
	}
	devs, _, err := w.store.ListDevices(context.Background(), registry.DefaultOrgID, registry.DeviceFilter{})
	if err != nil || len(devs) != 0 {
		t.Fatalf("refusals wrote devices: %+v, %v", devs, err)
	}
}

// TestX509ChainPreProvisionedAndReprovisioning: with creation off, a
// device created beforehand is provisioned by its certificate; a new
// certificate for a provisioned device follows the profile's policy:
// refused under "never", and under "rotate" it replaces the old one,
// whose live session ends.
func TestX509ChainPreProvisionedAndReprovisioning(t *testing.T) {
	w := newTLSWorld(t, true)
	m := newMaker(t, "Acme")
	p := w.chainProfile(t, "closed", m, false, registry.ReprovisionNever)
	nd := []registry.NewDevice{{Device: registry.Device{OrgID: registry.DefaultOrgID, ProfileID: p.ID, Name: "pre-1", Status: registry.DeviceEnabled}}}
	if err := w.store.CreateDevices(context.Background(), nd); err != nil {
		t.Fatal(err)
	}
	first := m.deviceCert(t, "pre-1.maker.example", testutil.CertOptions{})
	code, old := w.connectAs(t, first)
	if code != 0 {
		t.Fatalf("pre-provisioned device: CONNACK 0x%02x", code)
	}
	if s := whoIs(t, w.env, old); s.DeviceID != nd[0].Device.ID {
		t.Fatalf("connected as %s, want %s", s.DeviceID, nd[0].Device.ID)
	}

	// Issued later than the first: a replacement.
	second := m.deviceCert(t, "pre-1.maker.example", testutil.CertOptions{NotBefore: time.Now().Add(-time.Minute)})
	if code, _ := w.connectAs(t, second); code != packets.ErrNotAuthorized.Code {
		t.Fatalf("new certificate under policy never: CONNACK 0x%02x, want 0x87", code)
	}
	if !old.alive(t) {
		t.Fatal("a refused reprovisioning ended the device's session")
	}

	p.ReprovisionPolicy = registry.ReprovisionRotate
	if err := w.store.UpdateProfile(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	code, cl := w.connectAs(t, second)
	if code != 0 {
		t.Fatalf("new certificate under policy rotate: CONNACK 0x%02x", code)
	}
	if s := whoIs(t, w.env, cl); s.DeviceID != nd[0].Device.ID {
		t.Fatalf("rotated session as %s", s.DeviceID)
	}
	if d := old.waitClosed(); d == nil || d.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Errorf("old session: DISCONNECT %+v, want 0x87", d)
	}
	if active, all := w.credentials(t, nd[0].Device.ID); active != 1 || all != 2 {
		t.Fatalf("%d credentials, %d active; want 2 and 1", all, active)
	}
	if code, _ := w.connectAs(t, first); code == 0 {
		t.Fatal("the replaced certificate still connects")
	}
}

// TestX509ChainConcurrentFirstConnections: devices sharing a certificate
// (or one retrying quickly) that connect at once for the first time end
// up as one device with one credential, all connected.
func TestX509ChainConcurrentFirstConnections(t *testing.T) {
	w := newTLSWorld(t, true)
	m := newMaker(t, "Acme")
	w.chainProfile(t, "acme", m, true, registry.ReprovisionNever)
	cert := m.deviceCert(t, "burst.maker.example", testutil.CertOptions{})
	const n = 6
	codes := make([]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cl, ack := dialRaw(t, w.checked, 5, rawConnect{ClientID: fmt.Sprint("burst-", i), Clean: true, TLS: w.clientTLS(cert)})
			codes[i] = ack.ReasonCode
			if ack.ReasonCode == 0 {
				cl.c.Close()
			}
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != 0 {
			t.Errorf("connection %d: CONNACK 0x%02x", i, c)
		}
	}
	dev, err := w.store.GetDeviceByName(context.Background(), registry.DefaultOrgID, "burst")
	if err != nil {
		t.Fatal(err)
	}
	if active, all := w.credentials(t, dev.ID); active != 1 || all != 1 {
		t.Fatalf("%d credentials (%d active), want 1", all, active)
	}
}

// TestMosquittoCertificate: mosquitto_pub, a client nobody here wrote,
// connects with a certificate of the built-in CA, and with a
// manufacturer's chain that provisions its device.
func TestMosquittoCertificate(t *testing.T) {
	w := newTLSWorld(t, true)
	dir := t.TempDir()
	write := func(name, data string) string {
		path := filepath.Join(dir, name)
		if err := writeFile(path, data); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caFile := write("ca.pem", string(w.ca.Chain()))
	_, port, _ := strings.Cut(w.checked, ":")

	iss, keyPEM, err := w.ca.IssueWithNewKey(pki.Profile{CommonName: "mosq-ours"}, pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := w.device(registry.DeviceEnabled, registry.Credential{Type: registry.CredentialX509, LookupKey: iss.Fingerprint, Fingerprint: iss.Fingerprint})
	rec := []registry.Certificate{{
		Serial: iss.Serial, OrgID: registry.DefaultOrgID, DeviceID: dev.ID, Issuer: iss.IssuerID, Fingerprint: iss.Fingerprint,
		CommonName: "mosq-ours", NotBefore: iss.Certificate.NotBefore, NotAfter: iss.Certificate.NotAfter,
	}}
	if err := w.store.RecordCertificates(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	m := newMaker(t, "Acme")
	w.chainProfile(t, "acme", m, true, registry.ReprovisionNever)
	leaf := testutil.NewCert(t, "mosq-1.maker.example", m.inter, testutil.CertOptions{})
	leafKey, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, cert, key string
		device          func() string
	}{
		{"built-in CA", write("ours.pem", string(iss.PEM())), write("ours.key", string(keyPEM)), func() string { return dev.ID }},
		{"manufacturer chain", write("chain.pem", leaf.PEM()+m.inter.PEM()), write("leaf.key", pemBlock("PRIVATE KEY", leafKey)), func() string {
			d, err := w.store.GetDeviceByName(context.Background(), registry.DefaultOrgID, "mosq-1")
			if err != nil {
				t.Fatal(err)
			}
			return d.ID
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := testutil.RequireTool(t, "mosquitto_pub")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := execCombined(ctx, path, "-h", "127.0.0.1", "-p", port, "--cafile", caFile, "--cert", tc.cert, "--key", tc.key,
				"-V", "5", "-q", "1", "-t", "v1/devices/me/telemetry", "-m", `{"t":1}`)
			if err != nil {
				t.Fatalf("mosquitto_pub: %v\n%s", err, out)
			}
			if p := w.nextDevicePub(t); p.sess.DeviceID != tc.device() {
				t.Fatalf("published as %s", p.sess.DeviceID)
			}
		})
	}
}

func writeFile(path, data string) error { return os.WriteFile(path, []byte(data), 0o600) }

func pemBlock(typ string, der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func execCombined(ctx context.Context, path string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	return string(out), err
}
