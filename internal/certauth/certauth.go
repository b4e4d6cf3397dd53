// Package certauth checks the client certificates presented in TLS
// handshakes, on every listener that asks for them (MQTTS, HTTPS), before
// any byte of the application protocol is read:
//
//   - a certificate outside its validity period is refused;
//   - a certificate of the built-in CA (one that chains to it, or only
//     claims to) must verify against it and be recorded in the registry
//     as active: a revoked or unknown one is refused, at once after a
//     revocation (ChangeCertificatesRevoked);
//   - a certificate that chains to, or claims, a manufacturer CA trusted
//     by a profile (X.509 chain provisioning) must verify against it;
//   - any other certificate (a device's own, registered by its
//     fingerprint) is let through: the protocol authenticates it, or not.
//
// Listeners therefore ask for client certificates without requiring or
// verifying them (tls.RequestClientCert), and add the Checker with
// Checker.Config. Every refusal is logged and audited (action
// "tls.handshake", at most once a minute per source, reason and
// certificate) and counts as a failure of its source in the failure
// limiter shared with the hub and the provisioning pipeline.
package certauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Reasons a certificate is refused, recorded as the audit event's Result.
const (
	ReasonExpired     = "certificate-expired"
	ReasonNotYetValid = "certificate-not-yet-valid"
	// ReasonRevoked: a certificate of the built-in CA that was revoked.
	ReasonRevoked = "certificate-revoked"
	// ReasonUnknown: a certificate of the built-in CA with no record.
	ReasonUnknown = "certificate-unknown"
	// ReasonInvalid: the certificate names the built-in CA or a trusted
	// manufacturer CA but does not verify against it (signature, chain,
	// key usage).
	ReasonInvalid = "certificate-invalid"
	// ReasonUnavailable: the registry could not be asked; not audited
	// (the store is what fails), but the handshake is refused.
	ReasonUnavailable = "registry-unavailable"
)

// ErrRefused is wrapped by every refusal of a certificate.
var ErrRefused = errors.New("client certificate refused")

// RefusedError is a refused certificate: why (Reason, one of the Reason
// constants) and a sentence for the logs and the audit trail.
type RefusedError struct {
	Reason string
	Msg    string
}

func (e *RefusedError) Error() string { return ErrRefused.Error() + ": " + e.Msg }

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Anchors lists the manufacturer CA certificates that device profiles
// trust (provision.Service.TrustedCAs). It may answer from a cache a few
// seconds old: it only decides what reaches the application protocol,
// where provisioning checks the profiles again.
type Anchors interface {
	TrustedCAs(ctx context.Context) ([]*x509.Certificate, error)
}

// DefaultCacheTTL is how long an active certificate record is remembered.
// A revocation on this node is applied at once (the entry is dropped);
// one made on another node bites here within this time.
const DefaultCacheTTL = 10 * time.Second

// lookupTimeout bounds the registry lookups of one handshake.
const lookupTimeout = 5 * time.Second

// maxCacheEntries bounds the cache; past it, it is emptied.
const maxCacheEntries = 100_000

// Options configures a Checker. Store is required.
type Options struct {
	// CACertificates returns the built-in CA's certificates, issuing CA
	// first (pki.CA.Certificates); it is called at every handshake, so a
	// rotated CA takes effect at once. nil: no built-in CA.
	CACertificates func() []*x509.Certificate
	// Store finds certificate records and records audit events.
	Store registry.Store
	// Changes, when set, tells the Checker about revoked certificates, so
	// that the cache never lets one through.
	Changes *registry.Changes
	// Anchors, when set, gives the manufacturer CAs trusted by profiles.
	Anchors Anchors
	// Limiter counts refusals per source host, and delays the checks of a
	// source that keeps failing; share the hub's. nil: none.
	Limiter *provision.FailureLimiter
	// Logger; nil uses slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
	// CacheTTL of active certificate records: DefaultCacheTTL when 0,
	// no cache when negative.
	CacheTTL time.Duration
	// Accepted, when set, is told of every certificate of the built-in CA
	// that passed a handshake, with its record (the server revokes a
	// renewed certificate once its renewal is used).
	Accepted func(ctx context.Context, rec *registry.Certificate)
}

// Checker checks client certificates at TLS handshakes. It is safe for
// concurrent use by any number of listeners.
type Checker struct {
	caCerts func() []*x509.Certificate
	store   registry.Store
	anchors Anchors
	limiter *provision.FailureLimiter
	log     *slog.Logger
	now     func() time.Time
	ttl     time.Duration
	// accepted: Options.Accepted.
	accepted func(context.Context, *registry.Certificate)

	mu       sync.Mutex
	gen      uint64 // incremented by every revocation
	cache    map[string]cacheEntry
	bySerial map[string]string // serial → fingerprint of cached entries

	poolMu    sync.Mutex
	poolCerts []*x509.Certificate // what caPool was built from
	caPool    *x509.CertPool

	audits provision.AuditOnce
}

type cacheEntry struct {
	rec *registry.Certificate
	at  time.Time
}

// New returns a Checker, subscribed to o.Changes.
func New(o Options) (*Checker, error) {
	if o.Store == nil {
		return nil, errors.New("certauth: Options.Store is required")
	}
	c := &Checker{
		caCerts: o.CACertificates, store: o.Store, anchors: o.Anchors, limiter: o.Limiter,
		log: o.Logger, now: o.Now, ttl: o.CacheTTL, accepted: o.Accepted,
		cache: make(map[string]cacheEntry), bySerial: make(map[string]string),
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("component", "certauth")
	if c.now == nil {
		c.now = time.Now
	}
	if c.ttl == 0 {
		c.ttl = DefaultCacheTTL
	}
	if o.Changes != nil {
		o.Changes.Subscribe(c.onChange)
	}
	return c, nil
}

// Config returns a copy of base whose handshakes c checks, audited as
// happening on listener. It asks for client certificates
// (tls.RequestClientCert) when base does not, and keeps base's own
// GetConfigForClient and VerifyConnection, which run first.
//
// Each handshake is served by a clone of the returned configuration (made
// in its GetConfigForClient) whose VerifyConnection knows the client's
// address, for the audit trail and the failure limiter. So whatever a
// server sets on its own copy of the configuration is not seen: put the
// certificates in base (net/http: ServeTLS(ln, "", "")), and the ALPN
// protocols too where a server adds them to its copy.
func (c *Checker) Config(base *tls.Config, listener string) *tls.Config {
	cfg := base.Clone()
	if cfg.ClientAuth == tls.NoClientCert {
		cfg.ClientAuth = tls.RequestClientCert
	}
	prevGet := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		per := cfg
		if prevGet != nil {
			got, err := prevGet(hello)
			if err != nil {
				return nil, err
			}
			if got != nil {
				per = got
			}
		}
		per = per.Clone()
		per.GetConfigForClient = nil
		source := ""
		if hello.Conn != nil {
			source = provision.SourceHost(hello.Conn.RemoteAddr().String())
		}
		ctx := hello.Context()
		prevVerify := per.VerifyConnection
		per.VerifyConnection = func(cs tls.ConnectionState) error {
			if prevVerify != nil {
				if err := prevVerify(cs); err != nil {
					return err
				}
			}
			return c.Check(ctx, cs.PeerCertificates, source, listener)
		}
		return per, nil
	}
	return cfg
}

// VerifyConnection checks cs, for a tls.Config.VerifyConnection where
// Config cannot be used; refusals are then audited without a source.
func (c *Checker) VerifyConnection(cs tls.ConnectionState) error {
	return c.Check(context.Background(), cs.PeerCertificates, "", "")
}

// Check checks a presented chain (leaf first, as in
// tls.ConnectionState.PeerCertificates) from source (an IP address, for
// the audit trail and the limiter) on listener. No certificate is no
// refusal. A refusal is a *RefusedError, already logged and audited.
func (c *Checker) Check(ctx context.Context, chain []*x509.Certificate, source, listener string) error {
	if len(chain) == 0 || chain[0] == nil {
		return nil
	}
	if c.limiter != nil && source != "" {
		if d := c.limiter.Delay(source, c.now()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return &RefusedError{Reason: ReasonUnavailable, Msg: "handshake abandoned while the source was being slowed down"}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	rec, r := c.check(ctx, chain)
	if r == nil {
		if rec != nil && c.accepted != nil {
			c.accepted(ctx, rec)
		}
		return nil
	}
	c.refused(ctx, chain[0], rec, r, source, listener)
	return r
}

// check decides; rec is the certificate's record when one was found.
func (c *Checker) check(ctx context.Context, chain []*x509.Certificate) (*registry.Certificate, *RefusedError) {
	leaf := chain[0]
	now := c.now()
	switch {
	case now.Before(leaf.NotBefore):
		return nil, refusal(ReasonNotYetValid, "not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return nil, refusal(ReasonExpired, "expired on %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		if ic != nil {
			inter.AddCert(ic)
		}
	}
	opts := x509.VerifyOptions{Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}

	if cas, pool := c.builtin(); len(cas) > 0 {
		opts.Roots = pool
		_, verr := leaf.Verify(opts)
		if verr == nil || claims(chain, cas) {
			if verr != nil {
				return nil, refusal(ReasonInvalid, "names the built-in CA but does not verify against it: %v", verr)
			}
			return c.checkRecord(ctx, fingerprint(leaf))
		}
	}
	if c.anchors != nil {
		anchors, err := c.anchors.TrustedCAs(ctx)
		if err != nil {
			// Let it through: provisioning checks the chain again against
			// the profiles at CONNECT, and refuses what it cannot check.
			c.log.Warn("trusted CAs of profiles unavailable; certificate left to the protocol to check", "error", err)
			return nil, nil
		}
		if len(anchors) > 0 && claims(chain, anchors) {
			pool := x509.NewCertPool()
			for _, a := range anchors {
				pool.AddCert(a)
			}
			opts.Roots = pool
			if _, err := leaf.Verify(opts); err != nil {
				return nil, refusal(ReasonInvalid, "names a manufacturer CA that a profile trusts but does not verify against it: %v", err)
			}
		}
	}
	return nil, nil
}

// checkRecord requires an active record of a certificate of the built-in CA.
func (c *Checker) checkRecord(ctx context.Context, fp string) (*registry.Certificate, *RefusedError) {
	now := c.now()
	c.mu.Lock()
	if e, ok := c.cache[fp]; ok && now.Sub(e.at) < c.ttl && !now.Before(e.at) {
		c.mu.Unlock()
		return e.rec, nil
	}
	gen := c.gen
	c.mu.Unlock()

	rec, err := c.store.GetCertificateByFingerprint(ctx, fp)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, refusal(ReasonUnknown, "issued by the built-in CA but not in its records")
	case err != nil:
		c.log.Error("certificate lookup failed", "fingerprint", fp, "error", err)
		return nil, refusal(ReasonUnavailable, "the certificate's record could not be read")
	case rec.Status == registry.CertificateRevoked:
		when := ""
		if rec.RevokedAt != nil {
			when = " on " + rec.RevokedAt.UTC().Format(time.RFC3339)
		}
		return rec, refusal(ReasonRevoked, "revoked%s (%s)", when, rec.RevocationReason)
	case rec.Status != registry.CertificateActive:
		return rec, refusal(ReasonUnknown, "record has status %q", rec.Status)
	}
	if c.ttl > 0 {
		c.mu.Lock()
		// Not cached if a revocation came in during the lookup: the record
		// read may predate it.
		if c.gen == gen {
			if len(c.cache) >= maxCacheEntries {
				clear(c.cache)
				clear(c.bySerial)
			}
			c.cache[fp] = cacheEntry{rec: rec, at: now}
			c.bySerial[rec.Serial] = fp
		}
		c.mu.Unlock()
	}
	return rec, nil
}

// onChange drops revoked certificates from the cache.
func (c *Checker) onChange(ch registry.Change) {
	if ch.Kind != registry.ChangeCertificatesRevoked {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, s := range ch.Serials {
		if fp, ok := c.bySerial[s]; ok {
			delete(c.cache, fp)
			delete(c.bySerial, s)
		}
	}
}

// builtin returns the built-in CA's certificates and a pool of them,
// rebuilt only when the CA hands out other certificates.
func (c *Checker) builtin() ([]*x509.Certificate, *x509.CertPool) {
	if c.caCerts == nil {
		return nil, nil
	}
	cas := c.caCerts()
	c.poolMu.Lock()
	defer c.poolMu.Unlock()
	if !samePointers(cas, c.poolCerts) {
		pool := x509.NewCertPool()
		for _, ca := range cas {
			if ca != nil {
				pool.AddCert(ca)
			}
		}
		c.poolCerts, c.caPool = cas, pool
	}
	return cas, c.caPool
}

func samePointers(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// claims reports whether a certificate of chain is one of anchors or
// names one as its issuer: whether the chain means to chain to them, so
// that a failure to verify is the certificate's fault.
func claims(chain, anchors []*x509.Certificate) bool {
	for _, c := range chain {
		for _, a := range anchors {
			if c != nil && a != nil && (bytes.Equal(c.RawIssuer, a.RawSubject) || bytes.Equal(c.Raw, a.Raw)) {
				return true
			}
		}
	}
	return false
}

// refused logs and audits a refusal, and counts it against its source.
func (c *Checker) refused(ctx context.Context, leaf *x509.Certificate, rec *registry.Certificate, r *RefusedError, source, listener string) {
	fp := fingerprint(leaf)
	c.log.Info("TLS client certificate refused", "listener", listener, "remote", source, "reason", r.Reason, "fingerprint", fp, "detail", r.Msg)
	if r.Reason == ReasonUnavailable {
		return
	}
	if c.limiter != nil && source != "" {
		c.limiter.Fail(source, c.now())
	}
	if !c.audits.First(source+"|"+r.Reason+"|"+fp, c.now()) {
		return
	}
	ev := registry.AuditEvent{
		OrgID: registry.DefaultOrgID, Time: c.now().UTC(), Actor: "device", Action: "tls.handshake",
		Result: r.Reason, Source: source,
		Detail: fmt.Sprintf("client certificate %s refused: %s", describe(leaf, fp), r.Msg),
	}
	if listener != "" {
		ev.Detail = "listener " + listener + ": " + ev.Detail
	}
	if rec != nil {
		ev.OrgID, ev.DeviceID = rec.OrgID, rec.DeviceID
	}
	if err := c.store.AppendAudit(ctx, ev); err != nil {
		c.log.Warn("audit event not recorded", "action", ev.Action, "result", ev.Result, "error", err)
	}
}

func refusal(reason, format string, args ...any) *RefusedError {
	return &RefusedError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// describe names a certificate for the audit trail: subject common name
// (quoted and bounded: it is the client's choice), serial, fingerprint.
func describe(c *x509.Certificate, fp string) string {
	cn := c.Subject.CommonName
	if len(cn) > 128 {
		cn = cn[:128]
	}
	serial := "?"
	if c.SerialNumber != nil {
		serial = c.SerialNumber.Text(16)
		if len(serial) > 64 {
			serial = serial[:64] + "…"
		}
	}
	return "CN=" + strconv.Quote(cn) + " serial " + serial + " SHA-256 " + fp
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
