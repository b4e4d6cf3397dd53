package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Renewal defaults.
const (
	// DefaultRenewAt renews a certificate when two thirds of its lifetime
	// have passed, i.e. when a third remains.
	DefaultRenewAt = 0.66
	// DefaultRenewalCheck is how often the agent looks at its
	// certificate's expiry.
	DefaultRenewalCheck = time.Hour
	// DefaultESTPort is zerotouch's HTTPS port, where EST is served.
	DefaultESTPort = "8443"
)

// renewedPrefix names the certificate and key files the agent writes next
// to its state file when it renews; only files so named are ever deleted.
const renewedPrefix = "device-"

// errRenewCert ends a session whose certificate has just been renewed:
// the agent reconnects at once with the new one.
var errRenewCert = errors.New("the client certificate was renewed")

// RenewalConfig says how the agent renews a client certificate issued by
// zerotouch's built-in CA (credentials X509_CERTIFICATE, or an azure-dps
// certificate): over EST (RFC 7030, simplereenroll), authenticated by the
// current certificate. A certificate that does not chain to the trusted
// CAs (tls.caFile or caFile) is never renewed by the agent.
type RenewalConfig struct {
	// URL is the EST server, https://host[:port]; by default
	// https://<host of server, or of dps.host>:8443.
	URL string `yaml:"url"`
	// RenewAt is the fraction of the certificate's lifetime after which
	// it is renewed, in (0, 1): DefaultRenewAt (0.66, when a third of the
	// lifetime remains) when zero.
	RenewAt float64 `yaml:"renewAt"`
	// CheckInterval is how often the expiry is checked (at start, then
	// this often; DefaultRenewalCheck when zero). Failed renewals are
	// retried with backoff, at most this far apart.
	CheckInterval time.Duration `yaml:"checkInterval"`
	// Disabled switches renewal off.
	Disabled bool `yaml:"disabled"`
}

func (r *RenewalConfig) defaults() {
	if r.RenewAt == 0 {
		r.RenewAt = DefaultRenewAt
	}
	if r.CheckInterval == 0 {
		r.CheckInterval = DefaultRenewalCheck
	}
}

func (r *RenewalConfig) validate() []error {
	var errs []error
	if !(r.RenewAt > 0 && r.RenewAt < 1) {
		errs = append(errs, fmt.Errorf("renewal.renewAt %v: want a fraction of the lifetime between 0 and 1, e.g. 0.66", r.RenewAt))
	}
	if r.CheckInterval < 0 {
		errs = append(errs, errors.New("renewal.checkInterval must be positive"))
	}
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Errorf("renewal.url %q: want https://host[:port] (the server's HTTPS listener)", r.URL))
		}
	}
	return errs
}

// renewal is the agent's renewal schedule; only the goroutine of Run
// touches it.
type renewal struct {
	next    time.Time // the next check; zero: at once
	backoff backoff
	notOurs bool // the certificate does not chain to the trusted CAs (logged once)
}

// renewalOn reports whether the agent renews the credentials of st.
func (a *Agent) renewalOn(st *State) bool {
	return !a.cfg.Renewal.Disabled && st.CredentialsType == CredentialsX509 && a.tls != nil
}

// certFiles is the certificate and key the device authenticates with (the
// last one it used successfully): the state's, after a renewal or for
// Azure, otherwise the configuration's.
func (a *Agent) certFiles(st *State) (certFile, keyFile string) {
	switch {
	case st.CertFile != "":
		return st.CertFile, st.KeyFile
	case a.cfg.Dialect == DialectAzureDPS && a.cfg.DPS != nil:
		return a.cfg.DPS.Certificate, a.cfg.DPS.Key
	}
	return a.cfg.Credentials.CertFile, a.cfg.Credentials.KeyFile
}

// clientCertificate is the pair to present at the next connection: a
// renewed one not used yet when there is one, else the current one.
func (a *Agent) clientCertificate(st *State) (tls.Certificate, error) {
	cf, kf := a.certFiles(st)
	if st.PendingCertFile != "" {
		cf, kf = st.PendingCertFile, st.PendingKeyFile
	}
	return tls.LoadX509KeyPair(cf, kf)
}

// checkPending drops a renewed pair that cannot be read (a file gone or
// damaged), so that the device falls back to its previous pair.
func (a *Agent) checkPending(st *State) {
	if st.PendingCertFile == "" {
		return
	}
	if _, err := tls.LoadX509KeyPair(st.PendingCertFile, st.PendingKeyFile); err != nil {
		a.dropPending(st, fmt.Errorf("the renewed certificate cannot be read: %w", err))
	}
}

// promotePending makes the renewed pair, just used successfully, the
// current one: the state file names it, and the previous pair's files are
// deleted when the agent wrote them (never the configuration's).
func (a *Agent) promotePending(st *State) {
	oldCert, oldKey := a.certFiles(st)
	nst := *st
	nst.CertFile, nst.KeyFile = st.PendingCertFile, st.PendingKeyFile
	nst.PendingCertFile, nst.PendingKeyFile = "", ""
	if err := SaveState(a.cfg.StateFile, &nst); err != nil {
		// The next start tries the renewed pair first again: no harm.
		a.log.Error("the renewed certificate works but the state file could not be updated", "err", err, "stateFile", a.cfg.StateFile)
		return
	}
	*st = nst
	a.removeOwn(oldCert, oldKey)
	a.renew.next = time.Time{}
	a.log.Info("connected with the renewed certificate; it replaces the previous one", "certFile", st.CertFile)
}

// dropPending forgets a renewed pair the server refused (or that cannot be
// read), and deletes its files: the device goes on with its previous pair.
func (a *Agent) dropPending(st *State, why error) {
	a.log.Warn("the renewed certificate cannot be used; falling back to the previous one, which works until it expires",
		"err", why, "renewedCertFile", st.PendingCertFile)
	cf, kf := st.PendingCertFile, st.PendingKeyFile
	nst := *st
	nst.PendingCertFile, nst.PendingKeyFile = "", ""
	if err := SaveState(a.cfg.StateFile, &nst); err != nil {
		a.log.Error("the state file could not be updated", "err", err, "stateFile", a.cfg.StateFile)
	}
	*st = nst
	a.removeOwn(cf, kf)
	a.renew.next = time.Now().Add(a.renew.backoff.next())
}

// removeOwn deletes certificate and key files the agent wrote itself (in
// the state file's directory, named renewedPrefix…), and no others.
func (a *Agent) removeOwn(files ...string) {
	dir, err := filepath.Abs(filepath.Dir(a.cfg.StateFile))
	if err != nil {
		return
	}
	for _, f := range files {
		abs, err := filepath.Abs(f)
		if err != nil || filepath.Dir(abs) != dir || !strings.HasPrefix(filepath.Base(abs), renewedPrefix) {
			continue
		}
		if err := os.Remove(abs); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("an old certificate file could not be deleted", "file", abs, "err", err)
		}
	}
}

// renewAfter is a channel that fires at the next renewal check, nil when
// the agent does not renew st's credentials.
func (a *Agent) renewAfter(st *State) <-chan time.Time {
	if !a.renewalOn(st) {
		return nil
	}
	return time.After(max(0, time.Until(a.renew.next)))
}

// renewIfDue checks the current certificate when a check is due and, when
// less than the configured part of its lifetime remains, renews it. It
// reports whether a renewed pair now waits to be used (the caller then
// reconnects). Failures are logged and retried with backoff; the current
// certificate is left as it is.
func (a *Agent) renewIfDue(ctx context.Context, st *State) bool {
	if !a.renewalOn(st) || st.PendingCertFile != "" || time.Now().Before(a.renew.next) {
		return false
	}
	cfg := a.cfg.Renewal
	now := time.Now()
	a.renew.next = now.Add(cfg.CheckInterval)
	certFile, keyFile := a.certFiles(st)
	cur, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		a.log.Warn("certificate renewal: the current certificate and key cannot be read", "err", err, "certFile", certFile)
		return false
	}
	leaf, err := x509.ParseCertificate(cur.Certificate[0])
	if err != nil {
		a.log.Warn("certificate renewal: the current certificate cannot be parsed", "err", err, "certFile", certFile)
		return false
	}
	if now.After(leaf.NotAfter) {
		a.log.Error("the client certificate has expired and can no longer be renewed: the operator must issue a new one",
			"certFile", certFile, "notAfter", leaf.NotAfter)
		return false
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.tls.RootCAs, Intermediates: intermediates(cur),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		if !a.renew.notOurs {
			a.renew.notOurs = true
			a.log.Info("the client certificate does not chain to the trusted CAs: the agent does not renew it", "certFile", certFile, "reason", err)
		}
		return false
	}
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	due := leaf.NotBefore.Add(time.Duration(float64(lifetime) * cfg.RenewAt))
	if now.Before(due) {
		if due.Before(a.renew.next) {
			a.renew.next = due
		}
		a.log.Debug("certificate not due for renewal", "renewFrom", due, "notAfter", leaf.NotAfter)
		return false
	}
	a.log.Info("renewing the client certificate", "serial", leaf.SerialNumber.Text(16), "notAfter", leaf.NotAfter, "est", a.estURL())
	certPath, err := a.renewCertificate(ctx, st, cur, leaf)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		d := a.renew.backoff.next()
		a.renew.next = time.Now().Add(d)
		msg := "certificate renewal failed; retrying (the current certificate keeps working until it expires)"
		if errors.Is(err, errRenewalRefused) {
			msg = "certificate renewal refused by the server; retrying later (the current certificate keeps working until it expires)"
		}
		a.log.Warn(msg, "err", err, "in", d.Round(time.Millisecond), "notAfter", leaf.NotAfter, "est", a.estURL())
		return false
	}
	a.renew.backoff.reset()
	a.renew.next = time.Time{}
	a.log.Info("certificate renewed; connecting with it", "certFile", certPath)
	return true
}

// renewCertificate renews cur over EST: a new key of the same algorithm,
// a request with the same subject, the answer checked, the new pair
// written (0600) beside the state file and named in it as pending. It
// returns the new certificate's file.
func (a *Agent) renewCertificate(ctx context.Context, st *State, cur tls.Certificate, leaf *x509.Certificate) (string, error) {
	key, err := newKeyLike(leaf.PublicKey)
	if err != nil {
		return "", err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{RawSubject: leaf.RawSubject}, key)
	if err != nil {
		return "", fmt.Errorf("certificate request: %w", err)
	}
	base, err := a.estTLS()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*a.opts.ConnectTimeout)
	defer cancel()
	certs, err := estReenroll(ctx, a.estURL(), base, cur, csr)
	if err != nil {
		return "", err
	}
	renewed := holderOf(certs, key.Public())
	if err := checkRenewed(renewed, leaf, key.Public(), a.tls.RootCAs, intermediates(cur), time.Now()); err != nil {
		return "", err
	}
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		// Its files would be the current certificate's.
		return "", errors.New("the server renewed the certificate under the same serial number")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: renewed.Raw})
	for _, ic := range cur.Certificate[1:] { // the intermediates the device presented so far
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ic})...)
	}
	dir := filepath.Dir(a.cfg.StateFile)
	if dir, err = filepath.Abs(dir); err != nil {
		return "", err
	}
	name := renewedPrefix + renewed.SerialNumber.Text(16)
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	// Key, then certificate, then the state naming them: a crash before the
	// state is saved leaves unused files and the previous pair in use.
	if err := WriteFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", fmt.Errorf("the renewed certificate could not be stored: %w", err)
	}
	if err := WriteFileAtomic(certPath, certPEM, 0o600); err != nil {
		os.Remove(keyPath)
		return "", fmt.Errorf("the renewed certificate could not be stored: %w", err)
	}
	nst := *st
	nst.PendingCertFile, nst.PendingKeyFile = certPath, keyPath
	if err := SaveState(a.cfg.StateFile, &nst); err != nil {
		os.Remove(keyPath)
		os.Remove(certPath)
		return "", fmt.Errorf("the renewed certificate could not be stored: %w", err)
	}
	*st = nst
	return certPath, nil
}

// checkRenewed checks the certificate the server returned: it chains to
// the trusted CAs for client authentication, names the same subject as
// the one it renews, holds the new public key, and is valid at now.
// holderOf picks, from an EST answer, the certificate of pub: a certs-only
// PKCS#7 is a set, the new certificate may stand anywhere in it. The
// first certificate when none holds it (checkRenewed then says so).
func holderOf(certs []*x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); ok {
		for _, c := range certs {
			if k.Equal(c.PublicKey) {
				return c
			}
		}
	}
	return certs[0]
}

func checkRenewed(renewed, old *x509.Certificate, pub crypto.PublicKey, roots *x509.CertPool, inter *x509.CertPool, now time.Time) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("the renewed certificate is not usable: "+format, a...)
	}
	if _, err := renewed.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return bad("%v", err)
	}
	if renewed.Subject.String() != old.Subject.String() {
		return bad("subject %q, want %q", renewed.Subject, old.Subject)
	}
	k, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(renewed.PublicKey) {
		return bad("it does not hold the new key")
	}
	if now.Before(renewed.NotBefore) || now.After(renewed.NotAfter) {
		return bad("valid from %s to %s, not now", renewed.NotBefore, renewed.NotAfter)
	}
	return nil
}

// newKeyLike makes a key pair of pub's algorithm and size.
func newKeyLike(pub crypto.PublicKey) (crypto.Signer, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.GenerateKey(k.Curve, rand.Reader)
	case *rsa.PublicKey:
		return rsa.GenerateKey(rand.Reader, k.N.BitLen())
	case ed25519.PublicKey:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("certificate renewal: unsupported key type %T", pub)
}

// intermediates are the certificates after the leaf in a pair.
func intermediates(c tls.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			pool.AddCert(ic)
		}
	}
	return pool
}

// estURL is the EST server: renewal.url, or the HTTPS port of the host the
// device provisions with.
func (a *Agent) estURL() string {
	if a.cfg.Renewal.URL != "" {
		return a.cfg.Renewal.URL
	}
	return "https://" + net.JoinHostPort(a.provisionHost(), DefaultESTPort)
}

// provisionHost is the host of the server (thingsboard) or of DPS.
func (a *Agent) provisionHost() string {
	addr := a.cfg.Server
	if a.cfg.Dialect == DialectAzureDPS && a.cfg.DPS != nil {
		addr, _ = hostPort(a.cfg.DPS.Host)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// estTLS is the TLS configuration of the EST connection (the client
// certificate is added per request): the trusted CAs, and the server name
// tls.serverName when the URL is the default one.
func (a *Agent) estTLS() (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: a.tls.RootCAs}
	if a.cfg.Renewal.URL == "" && a.cfg.TLS != nil && a.cfg.TLS.ServerName != "" {
		t.ServerName = a.cfg.TLS.ServerName
	}
	return t, nil
}
