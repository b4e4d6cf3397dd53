package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/testutil"
)

// The built-in CA end to end: the TLS listeners, certificates issued
// through the management API (from a CSR, and with a server-generated
// key), devices connecting to MQTTS with them — paho and mosquitto_pub —
// revocation that ends the session and the next handshake, and the CRL.

type certOut struct {
	Serial           string `json:"serial"`
	DeviceID         string `json:"deviceId"`
	Fingerprint      string `json:"fingerprint"`
	CommonName       string `json:"commonName"`
	Status           string `json:"status"`
	RevocationReason string `json:"revocationReason"`
}

type issuedOut struct {
	Certificate    certOut `json:"certificate"`
	Credential     credOut `json:"credential"`
	CertificatePEM string  `json:"certificatePem"`
	ChainPEM       string  `json:"chainPem"`
	PrivateKeyPEM  string  `json:"privateKeyPem"`
}

// caPool is the node's CA chain, fetched from its public route.
func (n *node) caPool(t testing.TB) (*x509.CertPool, []byte) {
	t.Helper()
	code, body := get(t, n.baseURL+"/ca/chain.pem")
	if code != http.StatusOK {
		t.Fatalf("GET /ca/chain.pem: %d", code)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(body)) {
		t.Fatal("/ca/chain.pem holds no certificate")
	}
	return pool, []byte(body)
}

// deviceKeyAndCSR makes a device key pair and a CSR for cn.
func deviceKeyAndCSR(t testing.TB, cn string) (keyPEM, csrPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// connectTLS opens a device session on MQTTS with a client certificate and
// no user name; lost receives the error that ends it.
func (n *node) connectTLS(t *testing.T, pool *x509.CertPool, certPEM, keyPEM string) (mqtt.Client, chan error, error) {
	t.Helper()
	cert, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	lost := make(chan error, 1)
	opts := mqtt.NewClientOptions().AddBroker("ssl://" + n.srv.MQTTSAddr().String()).SetClientID(fmt.Sprint("x509-", time.Now().UnixNano())).
		SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, lost, nil
}

func TestX509DevicesOnTheBuiltInCA(t *testing.T) {
	n := startNode(t, "")
	pool, chainPEM := n.caPool(t)
	p := n.createProfile("x509", "allow-create", "ACCESS_TOKEN", "never")
	devID, _ := n.provisionedDevice(p, "press-7")

	// HTTPS serves the same routes, under a certificate of the CA.
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := httpsClient.Get("https://" + n.srv.HTTPSAddr().String() + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS with the CA chain: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTPS /healthz: %d", resp.StatusCode)
	}

	// A CSR made on the device: the key never leaves it.
	keyPEM, csrPEM := deviceKeyAndCSR(t, "press-7")
	var issued issuedOut
	if code := n.api("POST", "/api/devices/"+devID+"/certificates", map[string]any{"csr": csrPEM, "lifetime": "30d"}, &issued); code != http.StatusCreated {
		t.Fatalf("issue from CSR: %d", code)
	}
	if issued.Certificate.CommonName != "press-7" || issued.Credential.Type != "X509_CERTIFICATE" || issued.PrivateKeyPEM != "" {
		t.Fatalf("issued %+v", issued)
	}
	leaf := parseCertPEM(t, issued.CertificatePEM)
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 29*24*time.Hour || got > 31*24*time.Hour {
		t.Errorf("lifetime %v, asked 30d", got)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not verify against /ca/chain.pem: %v", err)
	}

	c, lost, err := n.connectTLS(t, pool, issued.CertificatePEM, keyPEM)
	if err != nil {
		t.Fatalf("MQTTS connect with the issued certificate: %v", err)
	}
	publish(t, c, "v1/devices/me/telemetry", 1, `{"pressure":7.5}`)
	if got := n.latest(devID); compact(got["pressure"].Value) != "7.5" {
		t.Errorf("telemetry over MQTTS not stored: %v", got)
	}

	// mosquitto_pub, a client nobody here wrote, with the same files.
	if pub := testutil.RequireTool(t, "mosquitto_pub"); pub != "" {
		dir := t.TempDir()
		files := map[string]string{"ca.pem": string(chainPEM), "cert.pem": issued.CertificatePEM, "key.pem": keyPEM}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		host, port := splitHostPort(t, n.srv.MQTTSAddr().String())
		out, err := exec.Command(pub, "-h", host, "-p", port, "-i", "press-7-mosquitto", "-q", "1",
			"--cafile", filepath.Join(dir, "ca.pem"), "--cert", filepath.Join(dir, "cert.pem"), "--key", filepath.Join(dir, "key.pem"),
			"-t", "v1/devices/me/telemetry", "-m", `{"pressure":8.25}`).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub --cert: %v\n%s", err, out)
		}
		if got := n.latest(devID); compact(got["pressure"].Value) != "8.25" {
			t.Errorf("telemetry from mosquitto_pub not stored: %v", got)
		}
	}

	// A key generated by the server, returned once.
	var gen issuedOut
	if code := n.api("POST", "/api/devices/"+devID+"/certificates", map[string]any{"generateKey": true, "keyAlgorithm": "ecdsa-p384"}, &gen); code != http.StatusCreated {
		t.Fatalf("issue with a generated key: %d", code)
	}
	if !strings.Contains(gen.PrivateKeyPEM, "PRIVATE KEY") {
		t.Fatal("no private key in the answer of generateKey")
	}
	if _, _, err := n.connectTLS(t, pool, gen.CertificatePEM, gen.PrivateKeyPEM); err != nil {
		t.Fatalf("MQTTS with the server-generated key: %v", err)
	}

	// openssl's spelling of a serial (AA:BB:…) finds the record too.
	colons := issued.Certificate.Serial
	if len(colons)%2 == 1 {
		colons = "0" + colons
	}
	var pairs []string
	for i := 0; i < len(colons); i += 2 {
		pairs = append(pairs, strings.ToUpper(colons[i:i+2]))
	}
	var byOpenSSL certOut
	if code := n.api("GET", "/api/certificates/"+strings.Join(pairs, ":"), nil, &byOpenSSL); code != http.StatusOK || byOpenSSL.Serial != issued.Certificate.Serial {
		t.Errorf("GET by %s: %d %+v", strings.Join(pairs, ":"), code, byOpenSSL)
	}

	// Revocation bites at once: the live session ends, the next connect
	// fails, and the CRL lists the serial.
	var revoked certOut
	if code := n.api("POST", "/api/certificates/"+issued.Certificate.Serial+"/revoke", map[string]string{"reason": "keyCompromise"}, &revoked); code != http.StatusOK {
		t.Fatalf("revoke: %d", code)
	}
	if revoked.Status != "revoked" || revoked.RevocationReason != "keyCompromise" {
		t.Errorf("revoked record %+v", revoked)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Error("the live session with the revoked certificate is still open")
	}
	if _, _, err := n.connectTLS(t, pool, issued.CertificatePEM, keyPEM); err == nil {
		t.Error("a new connection with the revoked certificate was accepted")
	}
	// The CRL is rebuilt in the background, at once.
	crl := n.crl(t)
	for deadline := time.Now().Add(5 * time.Second); !crlLists(crl, issued.Certificate.Serial) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		crl = n.crl(t)
	}
	if !crlLists(crl, issued.Certificate.Serial) {
		t.Errorf("CRL %v does not list the revoked serial %s", crl.RevokedCertificateEntries, issued.Certificate.Serial)
	}
	if crlLists(crl, gen.Certificate.Serial) {
		t.Error("CRL lists a certificate that was not revoked")
	}
	if _, _, err := n.connectTLS(t, pool, gen.CertificatePEM, gen.PrivateKeyPEM); err != nil {
		t.Errorf("the device's other certificate stopped working: %v", err)
	}

	// Listing: the device's certificates, and those to renew.
	var list struct{ Items []certOut }
	n.api("GET", "/api/devices/"+devID+"/certificates", nil, &list)
	if len(list.Items) != 2 {
		t.Errorf("device lists %d certificates, want 2", len(list.Items))
	}
	// To renew within 31 days: only the listeners' own certificate (30
	// days); the 30-day device certificate is revoked, the other has 90.
	var expiring struct{ Items []certOut }
	n.api("GET", "/api/certificates?status=active&expiresWithin=31d", nil, &expiring)
	if len(expiring.Items) != 1 || expiring.Items[0].DeviceID != "" {
		t.Errorf("expiring within 31d: %+v, want only the server certificate", expiring.Items)
	}

	// A short-lived one: the metrics count it as expiring (not the
	// listeners' own certificate, which renews itself).
	_, shortCSR := deviceKeyAndCSR(t, "press-7")
	if code := n.api("POST", "/api/devices/"+devID+"/certificates", map[string]any{"csr": shortCSR, "lifetime": "5d"}, nil); code != http.StatusCreated {
		t.Fatalf("issue a 5-day certificate: %d", code)
	}
	_, metrics := get(t, n.baseURL+"/metrics")
	for _, want := range []string{
		`zerotouch_certificates_total{event="issued"} 3`,
		`zerotouch_certificates_total{event="renewed"} 0`,
		`zerotouch_certificates_expiring{within="30d"} 1`,
		`zerotouch_certificates_expiring{within="7d"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestCertificateRequestsRefused: bad CSRs get a 422 with the reason, and
// nothing is recorded.
func TestCertificateRequestsRefused(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("x509", "allow-create", "ACCESS_TOKEN", "never")
	devID, _ := n.provisionedDevice(p, "lathe-1")
	_, other := deviceKeyAndCSR(t, "somebody-else")
	weak, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weakDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "lathe-1"}}, weak)
	weakPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: weakDER}))
	for _, tc := range []struct {
		name string
		body map[string]any
		code int
		want string
	}{
		{"garbage", map[string]any{"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, 422, "request"},
		{"another name", map[string]any{"csr": other}, 422, "somebody-else"},
		{"weak curve", map[string]any{"csr": weakPEM}, 422, "P-224"},
		{"neither", map[string]any{}, 422, "either"},
		{"bad lifetime", map[string]any{"generateKey": true, "lifetime": "soon"}, 422, "lifetime"},
		{"bad key algorithm", map[string]any{"generateKey": true, "keyAlgorithm": "dsa-1024"}, 422, "dsa-1024"},
		{"unknown field", map[string]any{"csr": other, "isCA": true}, 400, "isCA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e struct{ Code, Message string }
			if code := n.api("POST", "/api/devices/"+devID+"/certificates", tc.body, &e); code != tc.code || !strings.Contains(e.Message, tc.want) {
				t.Errorf("HTTP %d %q, want %d mentioning %q", code, e.Message, tc.code, tc.want)
			}
		})
	}
	var list struct{ Items []certOut }
	n.api("GET", "/api/devices/"+devID+"/certificates", nil, &list)
	if len(list.Items) != 0 {
		t.Errorf("refused requests left %d certificates", len(list.Items))
	}
}

func parseCertPEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("not PEM: %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// crl fetches /ca/crl and checks its signature by the issuing CA.
func (n *node) crl(t *testing.T) *x509.RevocationList {
	t.Helper()
	resp, err := http.Get(n.baseURL + "/ca/crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("GET /ca/crl: %v", err)
	}
	if err := crl.CheckSignatureFrom(n.srv.CA().Issuer()); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	return crl
}

func crlLists(crl *x509.RevocationList, serialHex string) bool {
	want, _ := new(big.Int).SetString(serialHex, 16)
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(want) == 0 {
			return true
		}
	}
	return false
}

func splitHostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// TestX509ChainProvisioning: a profile trusting a manufacturer's CA
// (ThingsBoard's "X.509 certificate chain" strategy) provisions a device
// on its first MQTTS connection, named from its certificate's CN, and
// refuses a certificate of another maker.
func TestX509ChainProvisioning(t *testing.T) {
	n := startNode(t, "")
	pool, _ := n.caPool(t)
	makerRoot := testutil.NewCert(t, "Maker Root CA", nil, testutil.CertOptions{CA: true})
	makerLine := testutil.NewCert(t, "Maker Line 3 CA", makerRoot, testutil.CertOptions{CA: true})
	body := map[string]any{"name": "maker-units", "strategy": "disabled", "x509CertificateChain": map[string]any{
		"caCertificatesPem":                      makerRoot.PEM(),
		"certificateRegExPattern":                `unit-(\d+)\.maker\.example`,
		"allowCreateNewDevicesByX509Certificate": true,
	}}
	if code := n.api("POST", "/api/profiles", body, nil); code != http.StatusCreated {
		t.Fatalf("create profile: %d", code)
	}
	connect := func(leaf *testutil.TestCert, chain ...*testutil.TestCert) error {
		cert := leaf.TLS(chain...)
		opts := mqtt.NewClientOptions().AddBroker("ssl://" + n.srv.MQTTSAddr().String()).SetClientID(leaf.Cert.Subject.CommonName).
			SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}).
			SetConnectTimeout(5 * time.Second).SetAutoReconnect(false).SetConnectRetry(false)
		c := mqtt.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return fmt.Errorf("connect timed out")
		}
		if tok.Error() != nil {
			return tok.Error()
		}
		publish(t, c, "v1/devices/me/telemetry", 1, `{"up":1}`)
		c.Disconnect(100)
		return nil
	}

	unit := testutil.NewCert(t, "unit-0042.maker.example", makerLine, testutil.CertOptions{})
	for range 2 { // the second connection finds the device
		if err := connect(unit, makerLine); err != nil {
			t.Fatalf("first connect of a maker's unit: %v", err)
		}
	}
	d := n.device("0042")
	if d == nil {
		t.Fatalf("no device 0042 after the unit connected; devices: %+v", n.devices())
	}
	if got := n.latest(d.ID); compact(got["up"].Value) != "1" {
		t.Errorf("the provisioned unit's telemetry: %v", got)
	}
	if creds := n.credentials(d.ID); len(creds) != 1 || creds[0].Type != "X509_CERTIFICATE" {
		t.Errorf("credentials %+v, want one X509_CERTIFICATE", creds)
	}

	otherMaker := testutil.NewCert(t, "Other Maker CA", nil, testutil.CertOptions{CA: true})
	stranger := testutil.NewCert(t, "unit-0043.maker.example", otherMaker, testutil.CertOptions{})
	if err := connect(stranger, otherMaker); err == nil {
		t.Error("a unit of an untrusted maker connected")
	}
	if n.device("0043") != nil {
		t.Error("a unit of an untrusted maker was provisioned")
	}
}

// certsFromPKCS7 reads the certificates of a certs-only PKCS#7 (EST's
// answers).
func certsFromPKCS7(t *testing.T, der []byte) []*x509.Certificate {
	t.Helper()
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	if _, err := asn1.Unmarshal(der, &ci); err != nil {
		t.Fatalf("PKCS#7: %v", err)
	}
	var sd struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		ContentInfo      asn1.RawValue
		Certificates     asn1.RawValue `asn1:"optional,tag:0"`
		SignerInfos      asn1.RawValue
	}
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		t.Fatalf("PKCS#7 SignedData: %v", err)
	}
	certs, err := x509.ParseCertificates(sd.Certificates.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

// TestCertificateRenewal: a device renews its certificate over HTTPS with
// EST, authenticated by the certificate itself; the old one keeps working
// until the new one is used, then is revoked (superseded).
func TestCertificateRenewal(t *testing.T) {
	n := startNode(t, "")
	pool, _ := n.caPool(t)
	p := n.createProfile("renewing", "allow-create", "ACCESS_TOKEN", "never")
	devID, _ := n.provisionedDevice(p, "press-9")
	keyPEM, csrPEM := deviceKeyAndCSR(t, "press-9")
	var issued issuedOut
	if code := n.api("POST", "/api/devices/"+devID+"/certificates", map[string]any{"csr": csrPEM}, &issued); code != http.StatusCreated {
		t.Fatalf("issue: %d", code)
	}
	current, err := tls.X509KeyPair([]byte(issued.CertificatePEM), []byte(keyPEM))
	if err != nil {
		t.Fatal(err)
	}
	estURL := "https://" + n.srv.HTTPSAddr().String() + "/.well-known/est/simplereenroll"
	renew := func(cert *tls.Certificate, csrPEM string) (*http.Response, []byte, error) {
		b, _ := pem.Decode([]byte(csrPEM))
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{*cert}}}}
		req, _ := http.NewRequest("POST", estURL, strings.NewReader(base64.StdEncoding.EncodeToString(b.Bytes)))
		req.Header.Set("Content-Type", "application/pkcs10")
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body, nil
	}

	newKeyPEM, newCSR := deviceKeyAndCSR(t, "press-9")
	resp, body, err := renew(&current, newCSR)
	if err != nil {
		t.Fatalf("EST request: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("simplereenroll: %d %s", resp.StatusCode, body)
	}
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	certs := certsFromPKCS7(t, der)
	if len(certs) == 0 || certs[0].Subject.CommonName != "press-9" {
		t.Fatalf("renewed certificates %v", certs)
	}
	newPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw}))

	// Until the new certificate is used, the old one still connects.
	if _, _, err := n.connectTLS(t, pool, issued.CertificatePEM, keyPEM); err != nil {
		t.Fatalf("old certificate right after the renewal: %v", err)
	}
	if _, _, err := n.connectTLS(t, pool, newPEM, newKeyPEM); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}
	var old certOut
	n.api("GET", "/api/certificates/"+issued.Certificate.Serial, nil, &old)
	if old.Status != "revoked" || old.RevocationReason != "superseded" {
		t.Errorf("old certificate once the new one was used: %+v, want revoked (superseded)", old)
	}
	if _, _, err := n.connectTLS(t, pool, issued.CertificatePEM, keyPEM); err == nil {
		t.Error("the superseded certificate still connects")
	}
	// Nor may it renew again: refused at the handshake.
	if resp, body, err := renew(&current, newCSR); err == nil {
		t.Errorf("renewal with the superseded certificate: %d %s, want the handshake refused", resp.StatusCode, body)
	}
}

// TestThingsBoardX509Provisioning: ThingsBoard's X.509 path end to end —
// a device provisions with its own certificate (credentialsType
// X509_CERTIFICATE, the PEM in "hash"), then connects to MQTTS with it,
// here with mosquitto_pub.
func TestThingsBoardX509Provisioning(t *testing.T) {
	pub := testutil.RequireTool(t, "mosquitto_pub")
	n := startNode(t, "")
	pool, chainPEM := n.caPool(t)
	p := n.createProfile("tb-x509", "allow-create", "ACCESS_TOKEN", "never")
	own := testutil.NewCert(t, "meter-5", nil, testutil.CertOptions{})
	a := n.provisionMQTT(req(p.Key, p.Secret, "meter-5", "credentialsType", "X509_CERTIFICATE", "hash", own.PEM()))
	if a.Status != "SUCCESS" || a.CredentialsType != "X509_CERTIFICATE" {
		t.Fatalf("provisioning with an X.509 certificate: %+v", a)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(own.Key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, content := range map[string][]byte{
		"ca.pem": chainPEM, "cert.pem": []byte(own.PEM()),
		"key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	host, port := splitHostPort(t, n.srv.MQTTSAddr().String())
	out, err := exec.Command(pub, "-h", host, "-p", port, "-i", "meter-5", "-q", "1", "-V", "mqttv5",
		"--cafile", filepath.Join(dir, "ca.pem"), "--cert", filepath.Join(dir, "cert.pem"), "--key", filepath.Join(dir, "key.pem"),
		"-t", "v1/devices/me/telemetry", "-m", `{"kwh":12.5}`).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub with the provisioned certificate: %v\n%s", err, out)
	}
	if got := n.latest(n.device("meter-5").ID); compact(got["kwh"].Value) != "12.5" {
		t.Errorf("telemetry: %v", got)
	}
	// Another self-signed certificate, never provisioned, gets no session.
	stranger := testutil.NewCert(t, "meter-5", nil, testutil.CertOptions{})
	strangerKey, _ := x509.MarshalPKCS8PrivateKey(stranger.Key)
	if _, _, err := n.connectTLS(t, pool, stranger.PEM(), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: strangerKey}))); err == nil {
		t.Error("an unknown self-signed certificate connected")
	}
}

// TestDeletedDeviceOnTheCRL: deleting a device revokes its certificates,
// and the CRL lists them at once.
func TestDeletedDeviceOnTheCRL(t *testing.T) {
	n := startNode(t, "")
	p := n.createProfile("doomed", "allow-create", "ACCESS_TOKEN", "never")
	devID, _ := n.provisionedDevice(p, "doomed-1")
	var gen issuedOut
	if code := n.api("POST", "/api/devices/"+devID+"/certificates", map[string]any{"generateKey": true}, &gen); code != http.StatusCreated {
		t.Fatalf("issue: %d", code)
	}
	if code := n.api("DELETE", "/api/devices/"+devID, nil, nil); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("delete device: %d", code)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if crlLists(n.crl(t), gen.Certificate.Serial) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted device's certificate is not on the CRL")
		}
	}
}

// TestTLSVersionsAndSuites: TLS 1.0 and 1.1 are refused, and TLS 1.2 only
// with forward-secret AEAD suites.
func TestTLSVersionsAndSuites(t *testing.T) {
	n := startNode(t, "")
	pool, _ := n.caPool(t)
	for _, tc := range []struct {
		name   string
		cfg    *tls.Config
		accept bool
	}{
		{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, true},
		{"TLS 1.2 ECDHE-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true},
		{"TLS 1.2 CBC", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, false},
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, addr := range []string{n.srv.HTTPSAddr().String(), n.srv.MQTTSAddr().String()} {
				cfg := tc.cfg.Clone()
				cfg.RootCAs = pool
				c, err := tls.Dial("tcp", addr, cfg)
				if err == nil {
					c.Close()
				}
				if (err == nil) != tc.accept {
					t.Errorf("%s: handshake error %v, want accepted=%v", addr, err, tc.accept)
				}
			}
		})
	}
}
