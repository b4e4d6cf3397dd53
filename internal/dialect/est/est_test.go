package est

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// fakeRenewer renews as the server does, minus the registry: the current
// certificate must verify against the CA, the request is signed for its
// common name. err, when set, is returned instead.
type fakeRenewer struct {
	ca *pki.CA

	mu      sync.Mutex
	err     error
	calls   int
	current *x509.Certificate
	source  string
}

func (f *fakeRenewer) Renew(_ context.Context, current *x509.Certificate, csrDER []byte, source string) (*x509.Certificate, error) {
	f.mu.Lock()
	f.calls++
	f.current, f.source = current, source
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	opts := x509.VerifyOptions{Roots: f.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := current.Verify(opts); err != nil {
		return nil, fmt.Errorf("%w: not issued by this CA", ErrNotAuthorized)
	}
	iss, err := f.ca.SignCSR(csrDER, pki.Profile{CommonName: current.Subject.CommonName})
	if err != nil {
		return nil, err
	}
	return iss.Certificate, nil
}

func (f *fakeRenewer) CACertificates() []*x509.Certificate { return f.ca.Certificates() }

func (f *fakeRenewer) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.calls, f.current, f.source = err, 0, nil, ""
}

// syncBuffer is a log sink written by the server's goroutines.
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

// env is an EST server over real TLS, as the HTTPS listener runs it
// (client certificates requested, not verified), and a device of its CA.
type env struct {
	ca        *pki.CA
	renewer   *fakeRenewer
	srv       *httptest.Server
	logs      *syncBuffer
	device    *pki.Issued
	deviceKey []byte // PEM
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ca, err := pki.Open(context.Background(), t.TempDir(), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	serverCert, _, err := ca.IssueServerCertificate([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	device, key, err := ca.IssueWithNewKey(pki.Profile{CommonName: "dev-1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{ca: ca, renewer: &fakeRenewer{ca: ca}, logs: &syncBuffer{}, device: device, deviceKey: key}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mux := http.NewServeMux()
	mux.Handle(PathPrefix, NewHandler(e.renewer, log))
	e.srv = httptest.NewUnstartedServer(mux)
	e.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{*serverCert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

// deviceTLS is the device's current certificate for a TLS client.
func (e *env) deviceTLS(t *testing.T) *tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(e.device.PEM(), e.deviceKey)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// client connects presenting cert (none when nil), trusting the CA.
func (e *env) client(t *testing.T, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: e.ca.Pool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type response struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, c *http.Client, method, url, contentType string, body []byte, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func newKey(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// csrDER is a request for key, named cn (none when empty).
func csrDER(t testing.TB, key crypto.Signer, cn string) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// wrap inserts sep every n characters, as base64 tools write.
func wrap(s string, n int, sep string) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + sep)
		s = s[n:]
	}
	b.WriteString(s + sep)
	return b.String()
}

// parseCertsOnly reads a base64 certs-only PKCS#7 answer.
func parseCertsOnly(t *testing.T, body string) []*x509.Certificate {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(body) // ignores the CRLFs
	if err != nil {
		t.Fatalf("answer is not base64: %v\n%s", err, body)
	}
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     struct {
			Version          int
			DigestAlgorithms asn1.RawValue
			EncapContentInfo asn1.RawValue
			Certificates     asn1.RawValue `asn1:"tag:0"`
			SignerInfos      asn1.RawValue
		} `asn1:"explicit,tag:0"`
	}
	if rest, err := asn1.Unmarshal(der, &ci); err != nil || len(rest) != 0 {
		t.Fatalf("answer is not a SignedData: %v", err)
	}
	if !ci.ContentType.Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}) {
		t.Fatalf("content type %v", ci.ContentType)
	}
	certs, err := x509.ParseCertificates(ci.Content.Certificates.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func checkCertsHeaders(t *testing.T, r response) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/pkcs7-mime; smime-type=certs-only" {
		t.Errorf("Content-Type %q", ct)
	}
	if cte := r.header.Get("Content-Transfer-Encoding"); cte != "base64" {
		t.Errorf("Content-Transfer-Encoding %q", cte)
	}
}

func TestCACerts(t *testing.T) {
	e := newEnv(t)
	// No client certificate needed.
	r := do(t, e.client(t, nil), http.MethodGet, e.srv.URL+"/.well-known/est/cacerts", "", nil)
	checkCertsHeaders(t, r)
	got, want := parseCertsOnly(t, r.body), e.ca.Certificates()
	if len(got) != 2 || len(got) != len(want) {
		t.Fatalf("%d certificates, want the issuing CA and the root", len(got))
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Errorf("certificate %d: %s, want %s", i, got[i].Subject, want[i].Subject)
		}
	}
	for _, line := range strings.Split(strings.TrimSuffix(r.body, "\n"), "\n") {
		if len(line) > 64 {
			t.Fatalf("base64 line of %d characters", len(line))
		}
	}
}

func TestSimpleReenroll(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, e.deviceTLS(t))
	url := e.srv.URL + "/.well-known/est/simplereenroll"
	for _, tc := range []struct {
		name        string
		contentType string
		body        func(der []byte) []byte
		header      []string
	}{
		{"base64 one line", "application/pkcs10", func(d []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(d)) }, nil},
		{"base64 wrapped at 76 with LF", "application/pkcs10", func(d []byte) []byte { return []byte(wrap(base64.StdEncoding.EncodeToString(d), 76, "\n")) }, nil},
		{"base64 wrapped at 64 with CRLF", "application/pkcs10", func(d []byte) []byte { return []byte(wrap(base64.StdEncoding.EncodeToString(d), 64, "\r\n")) }, nil},
		{"base64 without padding", "application/pkcs10", func(d []byte) []byte { return []byte(base64.RawStdEncoding.EncodeToString(d)) }, nil},
		{"with the RFC 7030 header", "application/pkcs10", func(d []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(d)) }, []string{"Content-Transfer-Encoding", "base64"}},
		{"raw DER", "application/pkcs10", func(d []byte) []byte { return d }, []string{"Content-Transfer-Encoding", "binary"}},
		{"media type parameters", "Application/PKCS10; name=req.p10", func(d []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(d)) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.renewer.set(nil)
			key := newKey(t)
			r := do(t, c, http.MethodPost, url, tc.contentType, tc.body(csrDER(t, key, "dev-1")), tc.header...)
			checkCertsHeaders(t, r)
			certs := parseCertsOnly(t, r.body)
			if len(certs) != 1 {
				t.Fatalf("%d certificates, want the new one alone", len(certs))
			}
			renewed := certs[0]
			if renewed.Subject.CommonName != "dev-1" || renewed.SerialNumber.Cmp(e.device.Certificate.SerialNumber) == 0 {
				t.Errorf("renewed certificate %s serial %x", renewed.Subject, renewed.SerialNumber)
			}
			if !key.Public().(*ecdsa.PublicKey).Equal(renewed.PublicKey) {
				t.Error("the renewed certificate is not for the request's key")
			}
			if _, err := renewed.Verify(x509.VerifyOptions{Roots: e.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("renewed certificate does not verify: %v", err)
			}
			e.renewer.mu.Lock()
			defer e.renewer.mu.Unlock()
			if e.renewer.current == nil || !e.renewer.current.Equal(e.device.Certificate) || e.renewer.source != "127.0.0.1" {
				t.Errorf("Renewer got current %v from %q, want the device's certificate from 127.0.0.1", e.renewer.current, e.renewer.source)
			}
		})
	}
}

func TestSimpleReenrollRefused(t *testing.T) {
	e := newEnv(t)
	url := e.srv.URL + "/.well-known/est/simplereenroll"
	device := e.client(t, e.deviceTLS(t))
	foreign := testutil.NewCert(t, "dev-1", nil, testutil.CertOptions{}).TLS()
	b64 := func(der []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(der)) }
	good := b64(csrDER(t, newKey(t), "dev-1"))
	tampered := csrDER(t, newKey(t), "dev-1")
	tampered[len(tampered)-5] ^= 0xff // in the signature
	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER(t, newKey(t), "dev-1")})

	for _, tc := range []struct {
		name        string
		client      *http.Client
		method      string
		contentType string
		body        []byte
		renewerErr  error
		status      int
		msg         string // in the answer
		hidden      string // never in the answer
		renewed     bool   // the Renewer was called
	}{
		{name: "no client certificate", client: e.client(t, nil), contentType: ContentTypePKCS10, body: good,
			status: 401, msg: "a client certificate is required"},
		{name: "form content type", client: device, contentType: "application/x-www-form-urlencoded", body: good,
			status: 415, msg: "Content-Type must be application/pkcs10"},
		{name: "no content type", client: device, body: good, status: 415, msg: "Content-Type"},
		{name: "bad base64", client: device, contentType: ContentTypePKCS10, body: []byte("MIIB$$not base64!!"),
			status: 400, msg: "not base64"},
		{name: "empty body", client: device, contentType: ContentTypePKCS10, status: 400, msg: "empty request"},
		{name: "PEM", client: device, contentType: ContentTypePKCS10, body: pemCSR, status: 400, msg: "PEM"},
		{name: "base64 of text", client: device, contentType: ContentTypePKCS10, body: b64([]byte("hello, world")),
			status: 400, msg: "does not hold a DER PKCS#10"},
		{name: "trailing data", client: device, contentType: ContentTypePKCS10, body: b64(append(csrDER(t, newKey(t), ""), 0x30, 0x00)),
			status: 400, msg: "data after"},
		{name: "too large", client: device, contentType: ContentTypePKCS10, body: bytes.Repeat([]byte("QUFB"), MaxRequestSize/4+1),
			status: 413, msg: "larger than"},
		{name: "bad signature", client: device, contentType: ContentTypePKCS10, body: b64(tampered),
			status: 400, msg: "certificate request refused", renewed: true},
		{name: "another device's name", client: device, contentType: ContentTypePKCS10, body: b64(csrDER(t, newKey(t), "dev-2")),
			status: 400, msg: "certificate request refused: name not allowed", renewed: true},
		{name: "certificate not ours", client: e.client(t, &foreign), contentType: ContentTypePKCS10, body: good,
			status: 403, msg: "the client certificate may not be renewed: not issued by this CA", renewed: true},
		{name: "revoked", client: device, contentType: ContentTypePKCS10, body: good, renewed: true,
			renewerErr: fmt.Errorf("%w: certificate revoked", ErrNotAuthorized), status: 403, msg: "the client certificate may not be renewed: certificate revoked"},
		{name: "refused request", client: device, contentType: ContentTypePKCS10, body: good, renewed: true,
			renewerErr: fmt.Errorf("%w: renew at most once an hour", ErrBadRequest), status: 400, msg: "renewal request refused: renew at most once an hour"},
		{name: "renewal off", client: device, contentType: ContentTypePKCS10, body: good, renewed: true,
			renewerErr: fmt.Errorf("%w: switched off by the operator", ErrUnavailable), status: 503, msg: "certificate renewal is not available"},
		{name: "internal error", client: device, contentType: ContentTypePKCS10, body: good, renewed: true,
			renewerErr: errors.New("record certificate: database is locked (/var/lib/zerotouch/zt.db)"), status: 500, msg: "internal error", hidden: "database"},
		{name: "reason with a line break", client: device, contentType: ContentTypePKCS10, body: good, renewed: true,
			renewerErr: fmt.Errorf("%w: revoked\nX-Injected: 1", ErrNotAuthorized), status: 403, msg: "revoked X-Injected: 1"},
		{name: "GET", client: device, method: http.MethodGet, status: 405, msg: "simplereenroll takes POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.renewer.set(tc.renewerErr)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			r := do(t, tc.client, method, url, tc.contentType, tc.body)
			if r.status != tc.status {
				t.Errorf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", r.header.Get("Content-Type"))
			}
			if !strings.Contains(r.body, tc.msg) || strings.Count(r.body, "\n") != 1 {
				t.Errorf("answer %q, want one line with %q", r.body, tc.msg)
			}
			if tc.hidden != "" && strings.Contains(r.body, tc.hidden) {
				t.Errorf("answer %q shows %q", r.body, tc.hidden)
			}
			e.renewer.mu.Lock()
			calls := e.renewer.calls
			e.renewer.mu.Unlock()
			if (calls > 0) != tc.renewed {
				t.Errorf("Renewer called %d times", calls)
			}
			if tc.status == 405 && r.header.Get("Allow") != "POST" {
				t.Errorf("Allow %q", r.header.Get("Allow"))
			}
		})
	}

	logs := e.logs.String()
	for _, want := range []string{
		`level=INFO msg="EST request refused" op=simplereenroll method=POST source=127.0.0.1 status=403`,
		`subject=dev-1 serial=`,
		`level=ERROR msg="EST renewal failed"`,
		"database is locked", // the cause is logged, not sent
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestRoutes(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, e.deviceTLS(t))
	for _, tc := range []struct {
		method, path string
		status       int
		msg          string
	}{
		{"GET", "/.well-known/est/csrattrs", 204, ""},
		{"POST", "/.well-known/est/csrattrs", 405, "csrattrs takes GET or HEAD"},
		{"HEAD", "/.well-known/est/cacerts", 200, ""},
		{"POST", "/.well-known/est/cacerts", 405, "cacerts takes GET or HEAD"},
		{"POST", "/.well-known/est/simpleenroll", 404, "simpleenroll is not served"},
		{"POST", "/.well-known/est/serverkeygen", 404, "serverkeygen is not served"},
		{"POST", "/.well-known/est/fullcmc", 404, "fullcmc is not served"},
		{"GET", "/.well-known/est/other/cacerts", 404, "CA labels are not supported"},
		{"POST", "/.well-known/est/other/simplereenroll", 404, "CA labels are not supported"},
		{"GET", "/.well-known/est/", 404, "unknown EST operation"},
		{"GET", "/.well-known/est/nonsense", 404, "unknown EST operation"},
	} {
		r := do(t, c, tc.method, e.srv.URL+tc.path, "", nil)
		if r.status != tc.status || !strings.Contains(r.body, tc.msg) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, r.status, r.body, tc.status, tc.msg)
		}
	}
}

func TestNoRenewer(t *testing.T) {
	h := NewHandler(nil, nil)
	for _, op := range []string{"cacerts", "simplereenroll"} {
		method := http.MethodGet
		if op == "simplereenroll" {
			method = http.MethodPost
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, PathPrefix+op, nil))
		if w.Code != http.StatusServiceUnavailable {
			t.Errorf("%s: %d %s", op, w.Code, w.Body)
		}
	}
	// Not behind TLS at all: refused as unauthenticated.
	w := httptest.NewRecorder()
	NewHandler(&fakeRenewer{}, nil).ServeHTTP(w, httptest.NewRequest(http.MethodPost, PathPrefix+"simplereenroll", strings.NewReader("x")))
	if w.Code != http.StatusUnauthorized {
		t.Errorf("plain HTTP: %d %s", w.Code, w.Body)
	}
}

func TestDecodeRequest(t *testing.T) {
	der := csrDER(t, newKey(t), "dev-1")
	b64 := base64.StdEncoding.EncodeToString(der)
	for _, tc := range []struct {
		name string
		body string
		ok   bool
	}{
		{"base64", b64, true},
		{"blanks and line breaks", " \t" + wrap(b64, 10, "\r\n") + "\n\n", true},
		{"no padding", strings.TrimRight(b64, "="), true},
		{"DER", string(der), true},
		{"URL alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(b64) + "-_", false},
		{"padding inside", b64[:8] + "=" + b64[8:], false},
		{"base64 of half a request", base64.StdEncoding.EncodeToString(der[:len(der)/2]), false},
		{"truncated DER", string(der[:len(der)-1]), false},
		{"only blanks", " \r\n\t", false},
	} {
		got, err := DecodeRequest([]byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%s: error %v", tc.name, err)
		}
		if err == nil && !bytes.Equal(got, der) {
			t.Errorf("%s: decoded to something else", tc.name)
		}
	}
}

// TestOpenSSLAndCurl renews as a device would with nothing but openssl,
// base64 and curl: the command the README gives.
func TestOpenSSLAndCurl(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	curl := testutil.RequireTool(t, "curl")
	e := newEnv(t)
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("device.crt", e.device.PEM())
	write("device.key", e.deviceKey)
	write("ca.pem", e.ca.Chain())
	run := func(t *testing.T, script string) string {
		t.Helper()
		cmd := exec.Command("bash", "-o", "pipefail", "-ec", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "OPENSSL="+openssl, "CURL="+curl, "EST="+e.srv.URL+"/.well-known/est")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s\n%s", err, script, out)
		}
		return string(out)
	}
	readCerts := func(t *testing.T, name string) []*x509.Certificate {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		certs, err := pki.ParseCertificates(data)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, data)
		}
		return certs
	}

	t.Run("cacerts", func(t *testing.T) {
		run(t, `"$CURL" -sS --fail-with-body --cacert ca.pem "$EST/cacerts" | base64 -d |
			"$OPENSSL" pkcs7 -inform DER -print_certs -out cacerts.pem`)
		if got := readCerts(t, "cacerts.pem"); len(got) != 2 || !got[0].Equal(e.ca.Issuer()) || !got[1].Equal(e.ca.Root()) {
			t.Errorf("cacerts: %d certificates", len(got))
		}
	})

	for _, tc := range []struct{ name, req string }{
		// The brief's form: same key, the device's name.
		{"same key", `"$OPENSSL" req -new -key device.key -subj /CN=dev-1 -outform DER`},
		// The README's: a new key, no name (the certificate carries the device's).
		{"new key", `"$OPENSSL" req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout new.key -subj / -outform DER`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run(t, tc.req+` | base64 |
				"$CURL" -sS --fail-with-body --cert device.crt --key device.key --cacert ca.pem \
					-H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simplereenroll" |
				base64 -d | "$OPENSSL" pkcs7 -inform DER -print_certs -out new.crt`)
			got := readCerts(t, "new.crt")
			if len(got) != 1 || got[0].Subject.CommonName != "dev-1" || got[0].SerialNumber.Cmp(e.device.Certificate.SerialNumber) == 0 {
				t.Fatalf("renewed: %d certificates, first %s", len(got), got[0].Subject)
			}
			// openssl agrees the new certificate chains to the CA.
			run(t, `"$OPENSSL" verify -CAfile ca.pem -purpose sslclient new.crt`)
			if tc.name == "new key" {
				run(t, `cmp <("$OPENSSL" x509 -in new.crt -noout -pubkey) <("$OPENSSL" pkey -in new.key -pubout)`)
			}
		})
	}

	t.Run("refusal", func(t *testing.T) {
		e.renewer.set(fmt.Errorf("%w: certificate revoked", ErrNotAuthorized))
		defer e.renewer.set(nil)
		out := run(t, `"$OPENSSL" req -new -key device.key -subj / -outform DER | base64 |
			"$CURL" -sS -w '%{http_code}' --cert device.crt --key device.key --cacert ca.pem \
				-H 'Content-Type: application/pkcs10' --data-binary @- "$EST/simplereenroll"`)
		if want := "the client certificate may not be renewed: certificate revoked\n403"; out != want {
			t.Errorf("curl printed %q, want %q", out, want)
		}
	})
}
