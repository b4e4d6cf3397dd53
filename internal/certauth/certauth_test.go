package certauth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/certauth"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/testutil"
)

// anchorsFunc adapts a function to certauth.Anchors.
type anchorsFunc func(ctx context.Context) ([]*x509.Certificate, error)

func (f anchorsFunc) TrustedCAs(ctx context.Context) ([]*x509.Certificate, error) { return f(ctx) }

// world is a built-in CA, a store holding its certificate records, and a
// manufacturer CA that profiles trust.
type world struct {
	ca      *pki.CA
	store   registry.NotifyingStore
	changes *registry.Changes
	server  tls.Certificate
	roots   *x509.CertPool // what clients trust: the built-in CA

	mfrRoot, mfrInter *testutil.TestCert
}

func newWorld(t testing.TB) *world {
	t.Helper()
	ca, err := pki.Open(context.Background(), filepath.Join(t.TempDir(), "ca"), pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	server, _, err := ca.IssueServerCertificate([]string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	changes := &registry.Changes{}
	w := &world{
		ca:      ca,
		store:   registry.NotifyingStore{Store: testutil.NewStore(t, nil), Changes: changes},
		changes: changes,
		server:  *server,
		roots:   ca.Pool(),
	}
	w.mfrRoot = testutil.NewCert(t, "Maker Root CA", nil, testutil.CertOptions{CA: true})
	w.mfrInter = testutil.NewCert(t, "Maker Line CA", w.mfrRoot, testutil.CertOptions{CA: true})
	return w
}

// issue makes a certificate of the built-in CA; recorded, it is stored
// as active.
func (w *world) issue(t testing.TB, cn string, recorded bool) (tls.Certificate, *pki.Issued) {
	t.Helper()
	iss, keyPEM, err := w.ca.IssueWithNewKey(pki.Profile{CommonName: cn}, pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tls.X509KeyPair(iss.PEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if recorded {
		rec := []registry.Certificate{{
			Serial: iss.Serial, OrgID: registry.DefaultOrgID, Issuer: iss.IssuerID, Fingerprint: iss.Fingerprint,
			CommonName: cn, NotBefore: iss.Certificate.NotBefore, NotAfter: iss.Certificate.NotAfter, PEM: string(iss.PEM()),
		}}
		if err := w.store.RecordCertificates(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	return tc, iss
}

func (w *world) checker(t testing.TB, o certauth.Options) *certauth.Checker {
	t.Helper()
	o.Store, o.Changes = w.store, w.changes
	o.CACertificates = w.ca.Certificates
	if o.Anchors == nil {
		o.Anchors = anchorsFunc(func(context.Context) ([]*x509.Certificate, error) {
			return []*x509.Certificate{w.mfrInter.Cert}, nil
		})
	}
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := certauth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serve runs a TLS listener on 127.0.0.1 checked by c; each connection
// that completes its handshake is answered "ok".
func (w *world) serve(t *testing.T, c *certauth.Checker, maxVersion uint16) string {
	t.Helper()
	base := &tls.Config{Certificates: []tls.Certificate{w.server}, MinVersion: tls.VersionTLS12, MaxVersion: maxVersion}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.Config(base, "test"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				if err := conn.(*tls.Conn).Handshake(); err != nil {
					return
				}
				conn.Write([]byte("ok"))
			})
		}
	})
	return ln.Addr().String()
}

// dial connects with cert (none when nil) and returns nil if the server
// answered, else the error the client saw: in TLS 1.3 the client's
// handshake ends before the server has checked its certificate, so the
// refusal shows on the first read.
func (w *world) dial(addr string, cert *tls.Certificate) error {
	cfg := &tls.Config{RootCAs: w.roots, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "ok" {
		return errors.New("unexpected answer " + string(buf))
	}
	return nil
}

func refusedByServer(err error) bool {
	return err != nil && strings.Contains(err.Error(), "bad certificate")
}

func TestHandshakes(t *testing.T) {
	w := newWorld(t)
	ours, _ := w.issue(t, "dev-ours", true)
	unrecorded, _ := w.issue(t, "dev-unrecorded", false)
	revoked, revokedIss := w.issue(t, "dev-revoked", true)
	if _, err := w.store.RevokeCertificate(context.Background(), registry.DefaultOrgID, revokedIss.Serial, registry.RevocationKeyCompromise); err != nil {
		t.Fatal(err)
	}
	// A certificate naming the built-in issuing CA, signed by another key.
	forger := testutil.NewCert(t, "forger", nil, testutil.CertOptions{CA: true, Subject: &w.ca.Issuer().Subject})
	forged := testutil.NewCert(t, "dev-forged", forger, testutil.CertOptions{})
	selfSigned := testutil.NewCert(t, "dev-own", nil, testutil.CertOptions{})
	mfrLeaf := testutil.NewCert(t, "dev-maker", w.mfrInter, testutil.CertOptions{})
	mfrServerOnly := testutil.NewCert(t, "dev-maker-server", w.mfrInter, testutil.CertOptions{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	mfrImpostor := testutil.NewCert(t, "Maker Line CA", nil, testutil.CertOptions{CA: true, Subject: &w.mfrInter.Cert.Subject})
	mfrForged := testutil.NewCert(t, "dev-maker-forged", mfrImpostor, testutil.CertOptions{})
	// Trusting the root, a device sends its intermediate along.
	mfrRootOnly := anchorsFunc(func(context.Context) ([]*x509.Certificate, error) {
		return []*x509.Certificate{w.mfrRoot.Cert}, nil
	})
	now := time.Now()
	garbage := tls.Certificate{Certificate: [][]byte{[]byte("not a certificate")}, PrivateKey: selfSigned.Key}
	tlsOf := func(c *testutil.TestCert, chain ...*testutil.TestCert) *tls.Certificate {
		tc := c.TLS(chain...)
		return &tc
	}

	cases := []struct {
		name    string
		cert    *tls.Certificate
		opts    certauth.Options
		refused string // the audit reason; "" accepted
		tlsOnly bool   // refused by crypto/tls itself, before the Checker
	}{
		{name: "no certificate"},
		{name: "built-in CA, active", cert: &ours},
		{name: "built-in CA, revoked", cert: &revoked, refused: certauth.ReasonRevoked},
		{name: "built-in CA, no record", cert: &unrecorded, refused: certauth.ReasonUnknown},
		{name: "built-in CA, expired", cert: &ours, opts: certauth.Options{Now: func() time.Time { return now.Add(pki.DefaultLeafLifetime + time.Hour) }}, refused: certauth.ReasonExpired},
		{name: "built-in CA, not yet valid", cert: &ours, opts: certauth.Options{Now: func() time.Time { return now.Add(-time.Hour) }}, refused: certauth.ReasonNotYetValid},
		{name: "forged issuer name of the built-in CA", cert: tlsOf(forged), refused: certauth.ReasonInvalid},
		{name: "device's own self-signed", cert: tlsOf(selfSigned)},
		{name: "device's own, expired", cert: tlsOf(selfSigned), opts: certauth.Options{Now: func() time.Time { return now.Add(48 * time.Hour) }}, refused: certauth.ReasonExpired},
		{name: "manufacturer chain", cert: tlsOf(mfrLeaf)},
		{name: "manufacturer chain with intermediates", cert: tlsOf(mfrLeaf, w.mfrInter, w.mfrRoot)},
		{name: "manufacturer root trusted, intermediate sent", cert: tlsOf(mfrLeaf, w.mfrInter), opts: certauth.Options{Anchors: mfrRootOnly}},
		{name: "manufacturer root trusted, intermediate missing", cert: tlsOf(mfrLeaf), opts: certauth.Options{Anchors: mfrRootOnly}}, // names no trusted CA: left to CONNECT
		{name: "manufacturer, server usage only", cert: tlsOf(mfrServerOnly), refused: certauth.ReasonInvalid},
		{name: "manufacturer, forged signature", cert: tlsOf(mfrForged), refused: certauth.ReasonInvalid},
		{name: "manufacturer anchors unavailable", cert: tlsOf(mfrForged), opts: certauth.Options{Anchors: anchorsFunc(func(context.Context) ([]*x509.Certificate, error) {
			return nil, errors.New("store down")
		})}},
		{name: "garbage certificate", cert: &garbage, tlsOnly: true},
	}
	for _, maxVersion := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		for _, tc := range cases {
			t.Run(tls.VersionName(maxVersion)+"/"+tc.name, func(t *testing.T) {
				c := w.checker(t, tc.opts)
				addr := w.serve(t, c, maxVersion)
				err := w.dial(addr, tc.cert)
				switch {
				case tc.refused == "" && !tc.tlsOnly && err != nil:
					t.Fatalf("refused: %v", err)
				case tc.refused != "" && !refusedByServer(err):
					t.Fatalf("err = %v, want a bad certificate alert", err)
				case tc.tlsOnly && err == nil:
					t.Fatal("accepted")
				}
			})
		}
	}

	// Refusals are audited with their reason and source, once per
	// certificate and reason a minute however often they are retried.
	evs, err := w.store.ListAudit(context.Background(), registry.DefaultOrgID, registry.AuditFilter{Action: "tls.handshake"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, ev := range evs {
		got[ev.Result]++
		if ev.Source != "127.0.0.1" || !strings.Contains(ev.Detail, "listener test") || !strings.Contains(ev.Detail, "SHA-256 ") {
			t.Errorf("audit event %+v lacks source, listener or fingerprint", ev)
		}
	}
	// Each checker has a dedupe of its own: one event per case and version.
	want := map[string]int{
		certauth.ReasonRevoked: 2, certauth.ReasonUnknown: 2, certauth.ReasonExpired: 4,
		certauth.ReasonNotYetValid: 2, certauth.ReasonInvalid: 6,
	}
	for r, n := range want {
		if got[r] != n {
			t.Errorf("%d audit events %s, want %d (all: %v)", got[r], r, n, got)
		}
	}
}

// TestRevocationBitesAtOnce: a certificate checked (and cached) as active
// is refused at the next handshake once it is revoked, with no wait for
// the cache to expire.
func TestRevocationBitesAtOnce(t *testing.T) {
	w := newWorld(t)
	cert, iss := w.issue(t, "dev-1", true)
	c := w.checker(t, certauth.Options{CacheTTL: time.Hour})
	addr := w.serve(t, c, tls.VersionTLS13)
	for range 2 { // the second from the cache
		if err := w.dial(addr, &cert); err != nil {
			t.Fatalf("active certificate refused: %v", err)
		}
	}
	if _, err := w.store.RevokeCertificate(context.Background(), registry.DefaultOrgID, iss.Serial, ""); err != nil {
		t.Fatal(err)
	}
	if err := w.dial(addr, &cert); !refusedByServer(err) {
		t.Fatalf("revoked certificate: err = %v, want a bad certificate alert", err)
	}
	evs, err := w.store.ListAudit(context.Background(), registry.DefaultOrgID, registry.AuditFilter{Action: "tls.handshake"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Result != certauth.ReasonRevoked || !strings.Contains(evs[0].Detail, iss.Serial) {
		t.Fatalf("audit = %+v, want one %s naming serial %s", evs, certauth.ReasonRevoked, iss.Serial)
	}
}

func TestRefusalsSlowTheSourceDown(t *testing.T) {
	w := newWorld(t)
	lim := &provision.FailureLimiter{Burst: 2, Leak: time.Hour, Base: time.Millisecond, Max: time.Millisecond, MaxSources: 10}
	c := w.checker(t, certauth.Options{Limiter: lim})
	addr := w.serve(t, c, tls.VersionTLS13)
	stranger, _ := w.issue(t, "unrecorded", false)
	ours, _ := w.issue(t, "recorded", true)
	for range 3 {
		if err := w.dial(addr, &stranger); !refusedByServer(err) {
			t.Fatalf("err = %v", err)
		}
	}
	if lim.Delay("127.0.0.1", time.Now()) == 0 {
		t.Fatal("repeated refusals do not slow the source down")
	}
	// A good certificate from a slowed-down source still gets in, later.
	if err := w.dial(addr, &ours); err != nil {
		t.Fatalf("good certificate refused: %v", err)
	}
}

// TestConfigKeepsBase: the configuration from Config asks for client
// certificates and runs the base's own hooks first.
func TestConfigKeepsBase(t *testing.T) {
	w := newWorld(t)
	c := w.checker(t, certauth.Options{})
	var calls []string
	var mu sync.Mutex
	note := func(s string) { mu.Lock(); calls = append(calls, s); mu.Unlock() }
	base := &tls.Config{
		Certificates: []tls.Certificate{w.server},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			note("get")
			return nil, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			note("verify")
			if len(cs.PeerCertificates) > 0 && cs.PeerCertificates[0].Subject.CommonName == "vetoed" {
				return errors.New("vetoed by the base")
			}
			return nil
		},
	}
	cfg := c.Config(base, "test")
	if cfg.ClientAuth != tls.RequestClientCert || base.ClientAuth != tls.NoClientCert {
		t.Fatalf("ClientAuth = %v (base %v)", cfg.ClientAuth, base.ClientAuth)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if conn.(*tls.Conn).Handshake() == nil {
					conn.Write([]byte("ok"))
				}
			}()
		}
	}()
	vetoed := testutil.NewCert(t, "vetoed", nil, testutil.CertOptions{}).TLS()
	if err := w.dial(ln.Addr().String(), &vetoed); !refusedByServer(err) {
		t.Fatalf("err = %v, want the base's refusal", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(calls, ",") != "get,verify" {
		t.Fatalf("base hooks called: %v", calls)
	}
}

func TestNewNeedsStore(t *testing.T) {
	if _, err := certauth.New(certauth.Options{}); err == nil {
		t.Fatal("New without a store succeeded")
	}
	err := error(&certauth.RefusedError{Reason: certauth.ReasonRevoked, Msg: "revoked"})
	if !errors.Is(err, certauth.ErrRefused) {
		t.Fatal("RefusedError does not match ErrRefused")
	}
}

// FuzzCheck: whatever certificate a client manages to get through
// crypto/tls's parser, as leaf or as intermediate, Check answers nil or a
// *RefusedError and never panics.
func FuzzCheck(f *testing.F) {
	w := newWorld(f)
	ours, _ := w.issue(f, "dev-fuzz", true)
	f.Add(ours.Certificate[0], w.ca.Issuer().Raw)
	f.Add(w.mfrInter.Cert.Raw, w.mfrRoot.Cert.Raw)
	f.Add(testutil.NewCert(f, "self", nil, testutil.CertOptions{}).Cert.Raw, []byte{})
	c := w.checker(f, certauth.Options{})
	f.Fuzz(func(t *testing.T, leafDER, interDER []byte) {
		leaf, err := x509.ParseCertificate(leafDER)
		if err != nil {
			return
		}
		chain := []*x509.Certificate{leaf}
		if inter, err := x509.ParseCertificate(interDER); err == nil {
			chain = append(chain, inter)
		}
		err = c.Check(context.Background(), chain, "192.0.2.1", "fuzz")
		var re *certauth.RefusedError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("Check = %v, not a *RefusedError", err)
		}
	})
}

// TestHTTPS: the Checker on a net/http server (ServeTLS with the
// certificates and ALPN protocols in the base configuration): HTTP/1.1
// and HTTP/2 clients get in with a good certificate or none, a revoked
// certificate is refused at the handshake.
func TestHTTPS(t *testing.T) {
	w := newWorld(t)
	ours, _ := w.issue(t, "dev-https", true)
	revoked, iss := w.issue(t, "dev-https-revoked", true)
	if _, err := w.store.RevokeCertificate(context.Background(), registry.DefaultOrgID, iss.Serial, ""); err != nil {
		t.Fatal(err)
	}
	c := w.checker(t, certauth.Options{})
	base := &tls.Config{Certificates: []tls.Certificate{w.server}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	srv := &http.Server{
		TLSConfig: c.Config(base, "https"),
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			n := 0
			if r.TLS != nil {
				n = len(r.TLS.PeerCertificates)
			}
			fmt.Fprintf(rw, "%s %d", r.Proto, n)
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	url := "https://" + ln.Addr().String() + "/"

	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		h2   bool
		want string // "" refused
	}{
		{"HTTP/1.1, no certificate", nil, false, "HTTP/1.1 0"},
		{"HTTP/1.1, certificate", &ours, false, "HTTP/1.1 1"},
		{"HTTP/2, certificate", &ours, true, "HTTP/2.0 1"},
		{"HTTP/1.1, revoked", &revoked, false, ""},
		{"HTTP/2, revoked", &revoked, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: w.roots}
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{*tc.cert}
			}
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: tc.h2}
			if !tc.h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
			if tc.want == "" {
				if err == nil {
					resp.Body.Close()
					t.Fatal("revoked certificate got an answer")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if string(b) != tc.want {
				t.Fatalf("answer %q, want %q", b, tc.want)
			}
		})
	}
}

// TestAcceptedHook: Options.Accepted hears of each accepted certificate of
// the built-in CA, with its record; not of refused ones, nor of
// certificates it has no record of (a device-supplied one).
func TestAcceptedHook(t *testing.T) {
	w := newWorld(t)
	var mu sync.Mutex
	var heard []string
	c := w.checker(t, certauth.Options{Accepted: func(_ context.Context, rec *registry.Certificate) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, rec.Serial)
	}})
	addr := w.serve(t, c, tls.VersionTLS13)
	good, iss := w.issue(t, "dev-1", true)
	unrecorded, _ := w.issue(t, "dev-2", false)
	selfSigned := testutil.NewCert(t, "dev-3", nil, testutil.CertOptions{}).TLS()
	if err := w.dial(addr, &good); err != nil {
		t.Fatal(err)
	}
	if err := w.dial(addr, &unrecorded); !refusedByServer(err) {
		t.Fatalf("unrecorded certificate of the CA: %v", err)
	}
	if err := w.dial(addr, &selfSigned); err != nil {
		t.Fatalf("self-signed certificate (matched at CONNECT): %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != 1 || heard[0] != iss.Serial {
		t.Errorf("Accepted heard %v, want only %s", heard, iss.Serial)
	}
}
