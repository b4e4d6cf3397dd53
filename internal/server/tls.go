package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerotouch/zerotouch/internal/certauth"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/dialect/est"
	"github.com/zerotouch/zerotouch/internal/metrics"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// CADir is the built-in CA's directory inside the data directory.
const CADir = "ca"

// Lifetimes of what the node makes for itself.
const (
	// serverCertLifetime: the TLS listeners' certificate from the built-in
	// CA, renewed at two thirds of it (devices trust the CA, not this
	// certificate, so renewing it is invisible to them).
	serverCertLifetime = 30 * 24 * time.Hour
	// crlValidity: relying parties refetch the CRL by then; it is rebuilt
	// on every revocation and daily.
	crlValidity  = 7 * 24 * time.Hour
	crlRebuildAt = 24 * time.Hour
	// defaultRenewalGrace is --cert-renewal-grace's default.
	defaultRenewalGrace = 24 * time.Hour
)

// nodePKI is the built-in CA and what the TLS listeners need from it: the
// server certificate (renewed in the background) and the CRL (rebuilt on
// every revocation).
type nodePKI struct {
	log   *slog.Logger
	store registry.Store
	certs *provision.Certificates
	hosts []string
	// operator is true when the server certificate came from the operator
	// (--tls-cert-file): it is then never renewed here.
	operator   bool
	serverCert atomic.Pointer[tls.Certificate]
	checker    *certauth.Checker
	// renewalGrace: how long a renewed certificate stays valid when its
	// renewal is not used.
	renewalGrace time.Duration
	crl          atomic.Pointer[pki.CRL]

	rebuild   chan struct{} // a revocation happened (buffered, 1)
	stop      chan struct{}
	closeOnce sync.Once
	done      sync.WaitGroup
}

// openCA opens the built-in CA, creating it on first start.
func openCA(ctx context.Context, cfg config.Config, log *slog.Logger) (*pki.CA, error) {
	alg, err := pki.ParseKeyAlgorithm(cfg.CAKeyAlgorithm)
	if err != nil {
		return nil, err
	}
	crlURL := ""
	if cfg.PublicURL != "" {
		crlURL = strings.TrimSuffix(cfg.PublicURL, "/") + "/ca/crl"
	}
	ca, err := pki.Open(ctx, filepath.Join(cfg.DataDir, CADir), pki.Options{
		KeyAlgorithm: alg,
		Passphrase:   cfg.CAPassphrase,
		LeafLifetime: cfg.CertLifetime,
		CRLURL:       crlURL,
		Logger:       log,
	})
	if err != nil {
		return nil, fmt.Errorf("built-in CA: %w", err)
	}
	return ca, nil
}

// openPKI starts what this node does with the CA: certificate issuance,
// the server certificate, the CRL.
func openPKI(ctx context.Context, cfg config.Config, ca *pki.CA, store registry.Store, changes *registry.Changes, log *slog.Logger) (*nodePKI, error) {
	p := &nodePKI{
		log:          log,
		store:        store,
		certs:        provision.NewCertificates(store, ca, log),
		hosts:        tlsHosts(cfg.TLSHosts(), log),
		rebuild:      make(chan struct{}, 1),
		renewalGrace: cmp.Or(cfg.CertRenewalGrace, defaultRenewalGrace),
		stop:         make(chan struct{}),
	}
	if cfg.TLSCertFile != "" {
		c, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
		}
		p.operator = true
		p.serverCert.Store(&c)
	} else if err := p.renewServerCert(ctx); err != nil {
		return nil, err
	}
	if err := p.rebuildCRL(ctx); err != nil {
		// An imported CA may lack the right to sign CRLs: certificates are
		// still refused at once when revoked; only the CRL is missing.
		log.Warn("no CRL will be published: "+err.Error()+"; /ca/crl answers 503", "error", err)
	}
	changes.Subscribe(func(ch registry.Change) {
		// Deleting a device revokes its certificates too.
		if ch.Kind == registry.ChangeCertificatesRevoked || ch.Kind == registry.ChangeDeviceDeleted {
			select {
			case p.rebuild <- struct{}{}:
			default:
			}
		}
	})
	p.done.Add(1)
	go p.maintain()
	return p, nil
}

// tlsHosts adds this host's name to the configured names, when it can be
// a certificate's DNS name (a name with "_" cannot).
func tlsHosts(configured []string, log *slog.Logger) []string {
	hosts := slices.Clone(configured)
	h, err := os.Hostname()
	switch {
	case err != nil || h == "" || slices.Contains(hosts, h):
	case !pki.ValidDNSName(h):
		log.Warn("this host's name is not a valid DNS name and is left out of the TLS certificate; name the host with --tls-hosts", "hostname", h)
	default:
		hosts = append(hosts, h)
	}
	return hosts
}

// renewServerCert issues a server certificate for the configured hosts and
// records it, like every certificate the CA issues.
func (p *nodePKI) renewServerCert(ctx context.Context) error {
	c, iss, err := p.certs.CA().IssueServerCertificate(p.hosts, serverCertLifetime)
	if err != nil {
		return fmt.Errorf("server certificate for %s: %w", strings.Join(p.hosts, ", "), err)
	}
	rec := registry.Certificate{
		Serial: iss.Serial, OrgID: registry.DefaultOrgID, Issuer: iss.IssuerID, Fingerprint: iss.Fingerprint,
		CommonName: iss.Certificate.Subject.CommonName, NotBefore: iss.Certificate.NotBefore.UTC(), NotAfter: iss.Certificate.NotAfter.UTC(),
		Status: registry.CertificateActive, PEM: string(iss.PEM()),
	}
	if err := p.store.RecordCertificates(ctx, []registry.Certificate{rec}); err != nil {
		return fmt.Errorf("record the server certificate: %w", err)
	}
	p.serverCert.Store(c)
	p.log.Info("TLS server certificate issued by the built-in CA", "hosts", strings.Join(p.hosts, ","), "serial", iss.Serial, "notAfter", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// rebuildCRL signs a new CRL from the store's revoked certificates.
func (p *nodePKI) rebuildCRL(ctx context.Context) error {
	crl, err := p.certs.CRL(ctx, crlValidity)
	if err != nil {
		return fmt.Errorf("build the CRL: %w", err)
	}
	p.crl.Store(crl)
	return nil
}

// maintain rebuilds the CRL on revocations and daily, and renews the
// server certificate at two thirds of its life, until close.
func (p *nodePKI) maintain() {
	defer p.done.Done()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		revoked := false
		select {
		case <-p.stop:
			return
		case <-p.rebuild:
			revoked = true
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if crl := p.crl.Load(); crl == nil || revoked || time.Since(crl.ThisUpdate) > crlRebuildAt {
			if err := p.rebuildCRL(ctx); err != nil && crl != nil {
				p.log.Error("CRL not rebuilt; the previous one is served", "error", err)
			}
		}
		if n, err := p.certs.RevokeRenewed(ctx, p.renewalGrace); err != nil {
			p.log.Error("renewed certificates not revoked; retrying in a minute", "error", err)
		} else if n > 0 {
			p.log.Info("renewed certificates revoked at the end of their grace period", "count", n)
		}
		if c := p.serverCert.Load(); !p.operator && time.Until(c.Leaf.NotAfter) < serverCertLifetime/3 {
			if err := p.renewServerCert(ctx); err != nil {
				p.log.Error("server certificate not renewed; retrying in a minute", "error", err, "notAfter", c.Leaf.NotAfter)
			}
		}
		cancel()
	}
}

func (p *nodePKI) close() {
	p.closeOnce.Do(func() { close(p.stop) })
	p.done.Wait()
}

// checkHandshakes sets up the client-certificate check of the TLS
// listeners (see certauth): certificates of the built-in CA must be
// recorded and active, manufacturer chains trusted by a profile must
// verify. A certificate that renews another, once used, revokes it.
func (p *nodePKI) checkHandshakes(store registry.Store, changes *registry.Changes, anchors certauth.Anchors, limiter *provision.FailureLimiter) error {
	chk, err := certauth.New(certauth.Options{
		CACertificates: p.certs.CA().Certificates,
		Store:          store,
		Changes:        changes,
		Anchors:        anchors,
		Limiter:        limiter,
		Logger:         p.log,
		Accepted: func(ctx context.Context, rec *registry.Certificate) {
			if err := p.certs.CertificateUsed(ctx, rec); err != nil {
				p.log.Error("the certificate renewed by a used one was not revoked; the grace period will", "serial", rec.Serial, "renews", rec.Renews, "error", err)
			}
		},
	})
	p.checker = chk
	return err
}

// tlsConfig is a TLS listener's configuration: TLS 1.2 and up with Go's
// modern cipher suites, the current server certificate, and a client
// certificate requested, not required (token devices connect without one;
// a device-supplied certificate is matched by fingerprint at CONNECT),
// checked at the handshake.
func (p *nodePKI) tlsConfig(listener string) *tls.Config {
	return p.checker.Config(&tls.Config{
		MinVersion: tls.VersionTLS12,
		// TLS 1.2: forward-secret AEAD suites only (TLS 1.3's are all so).
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.serverCert.Load(), nil
		},
		ClientAuth: tls.RequestClientCert,
	}, listener)
}

const noCRL = "this CA publishes no CRL: its certificate may not sign CRLs (see the server log)\n"

// routes adds the public CA routes: the chain (PEM) and the CRL (DER,
// or PEM with the .pem suffix). They need no API key: relying parties and
// devices fetch them.
func (p *nodePKI) routes(mux *http.ServeMux) {
	// Device certificate renewal (EST, RFC 7030), authenticated by the
	// client certificate: over HTTPS.
	mux.Handle(est.PathPrefix, est.NewHandler(estRenewer{p.certs}, p.log))
	mux.HandleFunc("GET /ca/chain.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pem-certificate-chain")
		w.Write(p.certs.CA().Chain())
	})
	mux.HandleFunc("GET /ca/crl", func(w http.ResponseWriter, r *http.Request) {
		crl := p.crl.Load()
		if crl == nil {
			http.Error(w, noCRL, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Header().Set("Last-Modified", crl.ThisUpdate.UTC().Format(http.TimeFormat))
		w.Header().Set("Expires", crl.NextUpdate.UTC().Format(http.TimeFormat))
		w.Write(crl.DER)
	})
	mux.HandleFunc("GET /ca/crl.pem", func(w http.ResponseWriter, r *http.Request) {
		crl := p.crl.Load()
		if crl == nil {
			http.Error(w, noCRL, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Header().Set("Last-Modified", crl.ThisUpdate.UTC().Format(http.TimeFormat))
		w.Write(crl.PEM())
	})
}

// registerMetrics exposes the certificates issued, renewed and revoked,
// and those about to expire (read from the store at scrape time).
func (p *nodePKI) registerMetrics(m *metrics.Metrics, store registry.Store) {
	m.CounterFunc("zerotouch_certificates_total", "Device certificates issued through the API, and renewed by devices, since start.", "event",
		[]string{"issued", "renewed"}, func(ev string) float64 {
			issued, renewed := p.certs.Counts()
			if ev == "renewed" {
				return float64(renewed)
			}
			return float64(issued)
		})
	windows := map[string]time.Duration{"7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour}
	m.LabelledGaugeFunc("zerotouch_certificates_expiring", "Active device certificates expiring within the window (the listeners' own renew themselves).", "within",
		[]string{"7d", "30d"}, func(w string) float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			now := time.Now()
			n, err := store.CountExpiringCertificates(ctx, now, now.Add(windows[w]))
			if err != nil {
				p.log.Error("counting expiring certificates failed", "error", err)
				return math.NaN()
			}
			return float64(n)
		})
}

// estRenewer renews device certificates for the EST dialect.
type estRenewer struct{ certs *provision.Certificates }

// Renew implements est.Renewer: refusals carry only what the device may
// read (why its certificate may not renew, what is wrong with its CSR).
func (r estRenewer) Renew(ctx context.Context, current *x509.Certificate, csrDER []byte, source string) (*x509.Certificate, error) {
	out, err := r.certs.Renew(ctx, current, csrDER, source)
	switch {
	case errors.Is(err, provision.ErrRenewalRefused):
		return nil, fmt.Errorf("%w: %v", est.ErrNotAuthorized, err)
	case errors.Is(err, pki.ErrBadCSR):
		return nil, err
	case errors.Is(err, registry.ErrInvalid):
		return nil, fmt.Errorf("%w: %v", est.ErrBadRequest, err)
	case err != nil:
		return nil, err
	}
	return pki.ParseCertificate([]byte(out.CertificatePEM))
}

// CACertificates implements est.Renewer.
func (r estRenewer) CACertificates() []*x509.Certificate { return r.certs.CA().Certificates() }
