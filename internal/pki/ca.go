package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Default lifetimes.
const (
	DefaultRootLifetime    = 20 * 365 * 24 * time.Hour
	DefaultIssuingLifetime = 10 * 365 * 24 * time.Hour
	// DefaultLeafLifetime is short on purpose: devices renew, and a leaked
	// key stops working on its own.
	DefaultLeafLifetime = 90 * 24 * time.Hour
	// ClockSkew is how far NotBefore is set in the past, so that a device
	// whose clock runs a little behind accepts a certificate at once.
	ClockSkew = 5 * time.Minute
)

// Options configures Open and Import. The zero value creates an ECDSA
// P-256 CA sealed under a key file in the CA directory.
type Options struct {
	// KeyAlgorithm of a new CA's root and issuing keys; ECDSAP256 when
	// empty. Ignored when the CA exists.
	KeyAlgorithm KeyAlgorithm
	// Passphrase, when set, seals the CA keys under a key derived from it
	// instead of the key file; the operator gives it at every start (read
	// it with ReadPassphraseFile, or from the environment). A new CA needs
	// at least MinPassphraseLen characters.
	Passphrase []byte
	// KeyFile holds the key-encryption key when there is no passphrase;
	// <dir>/kek when empty. Created (0600) with the CA when missing.
	KeyFile string
	// Name starts the CAs' common names ("<Name> Root CA", "<Name> Issuing
	// CA") and is their organisation; "zerotouch" when empty.
	Name string
	// RootLifetime and IssuingLifetime of a new CA; the defaults when zero.
	// The issuing CA never outlives the root.
	RootLifetime, IssuingLifetime time.Duration
	// LeafLifetime is the lifetime of a certificate whose Profile gives
	// none; DefaultLeafLifetime when zero.
	LeafLifetime time.Duration
	// CRLURL, when set, is written into every certificate issued as its CRL
	// distribution point: an absolute http(s) URL.
	CRLURL string
	// Logger receives what the CA does (never a key); nil discards it.
	Logger *slog.Logger
}

func (o Options) withDefaults(dir string) (Options, error) {
	if o.KeyAlgorithm == "" {
		o.KeyAlgorithm = ECDSAP256
	}
	if _, err := ParseKeyAlgorithm(string(o.KeyAlgorithm)); err != nil {
		return o, err
	}
	if o.KeyFile == "" {
		o.KeyFile = filepath.Join(dir, defaultKEKFile)
	}
	if o.Name == "" {
		o.Name = "zerotouch"
	}
	if err := checkText("CA name", o.Name, 48); err != nil {
		return o, err
	}
	if o.RootLifetime == 0 {
		o.RootLifetime = DefaultRootLifetime
	}
	if o.IssuingLifetime == 0 {
		o.IssuingLifetime = DefaultIssuingLifetime
	}
	if o.LeafLifetime == 0 {
		o.LeafLifetime = DefaultLeafLifetime
	}
	if o.RootLifetime < 0 || o.IssuingLifetime < 0 || o.LeafLifetime < 0 {
		return o, errors.New("CA lifetimes must be positive")
	}
	if o.CRLURL != "" {
		u, err := url.Parse(o.CRLURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return o, fmt.Errorf("CRL URL %q is not an absolute http(s) URL", o.CRLURL)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// CA is an open certificate authority: the issuing CA's certificate and
// key, and the chain above it. It is safe for concurrent use. Its methods
// never return or log the private key; printing a CA shows its subject.
type CA struct {
	dir  string
	opts Options
	log  *slog.Logger

	key      crypto.Signer     // the issuing CA's
	kekKey   []byte            // the key-encryption key its key was sealed with
	issuer   *x509.Certificate // the issuing CA
	chain    []*x509.Certificate
	root     *x509.Certificate // top of the chain when self-signed, else nil
	chainPEM []byte
	issuerID string
	pool     *x509.CertPool

	mu        sync.Mutex // guards crlNumber and its file
	crlNumber *big.Int
}

// Open opens the CA in dir, creating it on first start: dir missing or
// empty gets a new root and issuing CA (Options.KeyAlgorithm), keys sealed
// under the passphrase or the key file. An existing CA is loaded; its keys
// must unseal with what opts gives (ErrWrongKEK otherwise) and its files
// must be whole and consistent (ErrCorrupt otherwise).
func Open(ctx context.Context, dir string, opts Options) (*CA, error) {
	opts, err := opts.withDefaults(dir)
	if err != nil {
		return nil, fmt.Errorf("open CA: %w", err)
	}
	state, names, err := inspectDir(dir, opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("open CA in %s: %w", dir, err)
	}
	switch state {
	case dirHasCA:
		return load(dir, opts)
	case dirUnknownData:
		return nil, fmt.Errorf("%w: %s holds %s but no %s: it is not a CA directory, or its issuing certificate is lost; restore it, or move the directory away to create a new CA",
			ErrCorrupt, dir, strings.Join(names, ", "), issuingCertFile)
	}
	return create(ctx, dir, opts)
}

// create makes a new CA in dir (missing or empty).
func create(ctx context.Context, dir string, opts Options) (*CA, error) {
	k := &kek{keyFile: opts.KeyFile, passphrase: opts.Passphrase, log: opts.Logger}
	if len(opts.Passphrase) > 0 {
		if err := checkPassphrase(opts.Passphrase); err != nil {
			return nil, fmt.Errorf("create CA: %w", err)
		}
	}
	now := time.Now()
	rootKey, err := generateKey(opts.KeyAlgorithm)
	if err != nil {
		return nil, fmt.Errorf("create CA: root key: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	issuingKey, err := generateKey(opts.KeyAlgorithm)
	if err != nil {
		return nil, fmt.Errorf("create CA: issuing key: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	org := []string{opts.Name}
	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: opts.Name + " Root CA", Organization: org},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(opts.RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1, // the issuing CA, nothing below it
	}
	root, err := selfSign(rootTmpl, rootKey)
	if err != nil {
		return nil, fmt.Errorf("create CA: root certificate: %w", err)
	}
	issuingTmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: opts.Name + " Issuing CA", Organization: org},
		NotBefore: now.Add(-ClockSkew),
		NotAfter:  minTime(now.Add(opts.IssuingLifetime), root.NotAfter),
		// digitalSignature too, for OCSP responses it may sign one day.
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // issues leaves only
	}
	issuing, err := signCA(issuingTmpl, issuingKey.Public(), root, rootKey)
	if err != nil {
		return nil, fmt.Errorf("create CA: issuing certificate: %w", err)
	}

	files := []caFile{
		{rootCertFile, pemCert(root), 0o644},
		{issuingCertFile, pemCert(issuing), 0o644}, // last: it marks the CA complete
	}
	sealed := map[string]crypto.Signer{rootKeyFile: rootKey, issuingKeyFile: issuingKey}
	if err := writeCA(dir, k, sealed, files); err != nil {
		return nil, fmt.Errorf("create CA in %s: %w", dir, err)
	}
	ca, err := newCA(dir, opts, k, issuingKey, []*x509.Certificate{issuing, root})
	if err != nil {
		return nil, err
	}
	ca.log.Info("CA created", "dir", dir, "key", describeKey(issuing.PublicKey), "kek", k.kind(),
		"root", Fingerprint(root.Raw), "issuing", Fingerprint(issuing.Raw), "issuingExpires", issuing.NotAfter)
	return ca, nil
}

type caFile struct {
	name string
	data []byte
	perm os.FileMode
}

// writeCA writes a new CA into dir: the creation marker first, then the
// sealed keys, then files in order, the last of which (issuing.crt) makes
// the CA exist; then the marker goes.
func writeCA(dir string, k *kek, sealed map[string]crypto.Signer, files []caFile) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	marker := filepath.Join(dir, creatingMarker)
	if err := writeFileAtomic(marker, nil, 0o600); err != nil {
		return err
	}
	if k.kind() == kekKindFile {
		if err := k.createFileKey(); err != nil {
			return err
		}
	}
	for _, name := range []string{rootKeyFile, issuingKeyFile} {
		key, ok := sealed[name]
		if !ok {
			continue
		}
		purpose := strings.TrimSuffix(name, ".key")
		b, err := k.seal(purpose, key)
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	if err := os.Remove(marker); err != nil {
		return err
	}
	return syncDir(dir)
}

// load opens the existing CA in dir.
func load(dir string, opts Options) (*CA, error) {
	damaged := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s; restore the CA directory from a backup", ErrCorrupt, dir, fmt.Sprintf(format, args...))
	}
	// An interrupted creation that got as far as issuing.crt is complete.
	if err := os.Remove(filepath.Join(dir, creatingMarker)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open CA: %w", err)
	}
	b, err := readFile(filepath.Join(dir, issuingCertFile))
	if err != nil {
		return nil, fmt.Errorf("open CA: %w", err)
	}
	chain, err := ParseCertificates(b)
	if err != nil {
		return nil, damaged("%s: %v", issuingCertFile, err)
	}
	b, err = readFile(filepath.Join(dir, rootCertFile))
	switch {
	case err == nil:
		roots, err := ParseCertificates(b)
		if err != nil || len(roots) != 1 {
			return nil, damaged("%s does not hold one certificate", rootCertFile)
		}
		chain = append(chain, roots[0])
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("open CA: %w", err)
	default:
		if ok, _ := exists(filepath.Join(dir, rootKeyFile)); ok {
			return nil, damaged("%s is missing", rootCertFile)
		}
	}
	if err := checkChain(chain); err != nil {
		return nil, damaged("%v", err)
	}
	b, err = readFile(filepath.Join(dir, issuingKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, damaged("%s is missing", issuingKeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("open CA: %w", err)
	}
	k := &kek{keyFile: opts.KeyFile, passphrase: opts.Passphrase, log: opts.Logger}
	key, err := k.unseal(filepath.Join(dir, issuingKeyFile), "issuing", b)
	if err != nil {
		return nil, fmt.Errorf("open CA: %w", err)
	}
	if !sameKey(key.Public(), chain[0].PublicKey) {
		return nil, damaged("%s is not the key of %s", issuingKeyFile, issuingCertFile)
	}
	ca, err := newCA(dir, opts, k, key, chain)
	if err != nil {
		return nil, err
	}
	b, err = readFile(filepath.Join(dir, crlNumberFile))
	switch {
	case err == nil:
		n, ok := new(big.Int).SetString(strings.TrimSpace(string(b)), 10)
		if !ok || n.Sign() < 0 {
			return nil, damaged("%s does not hold a CRL number", crlNumberFile)
		}
		ca.crlNumber = n
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("open CA: %w", err)
	}
	if left := time.Until(ca.issuer.NotAfter); left < 30*24*time.Hour {
		ca.log.Warn("the issuing CA expires soon: certificates are cut short to its expiry", "expires", ca.issuer.NotAfter)
	}
	ca.log.Info("CA loaded", "dir", dir, "key", describeKey(ca.issuer.PublicKey), "issuing", Fingerprint(ca.issuer.Raw),
		"issuingExpires", ca.issuer.NotAfter)
	return ca, nil
}

// checkChain checks that chain[0] is a CA that may sign certificates and
// CRLs' worth of certificates, and that each certificate is signed by the
// next.
func checkChain(chain []*x509.Certificate) error {
	for i, c := range chain {
		if !c.BasicConstraintsValid || !c.IsCA {
			return fmt.Errorf("certificate %d of the chain (%s) is not a CA", i+1, c.Subject)
		}
		if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return fmt.Errorf("certificate %d of the chain (%s) may not sign certificates (no certSign key usage)", i+1, c.Subject)
		}
		if i+1 < len(chain) {
			if err := c.CheckSignatureFrom(chain[i+1]); err != nil {
				return fmt.Errorf("certificate %d of the chain (%s) is not signed by the next (%s): %v", i+1, c.Subject, chain[i+1].Subject, err)
			}
		}
	}
	if chain[0].KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s has no certSign key usage", chain[0].Subject)
	}
	return nil
}

// newCA assembles a CA from its issuing key and chain (issuing CA first).
func newCA(dir string, opts Options, k *kek, key crypto.Signer, chain []*x509.Certificate) (*CA, error) {
	k.mu.Lock()
	kekKey := bytes.Clone(k.used)
	k.mu.Unlock()
	ca := &CA{dir: dir, opts: opts, log: opts.Logger, key: key, kekKey: kekKey, issuer: chain[0], chain: chain, crlNumber: new(big.Int)}
	if top := chain[len(chain)-1]; bytes.Equal(top.RawIssuer, top.RawSubject) && top.CheckSignatureFrom(top) == nil {
		ca.root = top
	}
	ca.pool = x509.NewCertPool()
	var b bytes.Buffer
	for _, c := range chain {
		ca.pool.AddCert(c)
		b.Write(pemCert(c))
	}
	ca.chainPEM = b.Bytes()
	id, err := issuerID(ca.issuer)
	if err != nil {
		return nil, err
	}
	ca.issuerID = id
	return ca, nil
}

// issuerID is the lowercase hex SHA-256 of the CA's SubjectPublicKeyInfo:
// stable across a renewal of its certificate with the same key, as the
// serials and the CRL it signs are.
func issuerID(c *x509.Certificate) (string, error) {
	if len(c.RawSubjectPublicKeyInfo) == 0 {
		return "", fmt.Errorf("%w: issuing CA certificate without a public key", ErrCorrupt)
	}
	return Fingerprint(c.RawSubjectPublicKeyInfo), nil
}

// Import makes dir the CA directory of an existing CA given by the
// operator: certPEM holds its certificate first, optionally followed by the
// chain above it (up to a root); keyPEM its private key (PKCS#8, PKCS#1 or
// SEC1, unencrypted). The certificate must be a CA allowed to sign
// certificates, valid now, and match the key. The key is sealed like a
// created CA's. dir must not hold a CA already (ErrExists).
func Import(ctx context.Context, dir string, certPEM, keyPEM []byte, opts Options) (*CA, error) {
	opts, err := opts.withDefaults(dir)
	if err != nil {
		return nil, fmt.Errorf("import CA: %w", err)
	}
	chain, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("import CA: %w", err)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("import CA: %w", err)
	}
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("import CA: %w: %s", ErrBadCertificate, fmt.Sprintf(format, args...))
	}
	if err := checkChain(chain); err != nil {
		return nil, refuse("%v", err)
	}
	ca := chain[0]
	if now := time.Now(); now.Before(ca.NotBefore) || now.After(ca.NotAfter) {
		return nil, refuse("%s is valid from %s to %s, not now", ca.Subject, ca.NotBefore.Format(time.RFC3339), ca.NotAfter.Format(time.RFC3339))
	}
	if err := checkCAKey(ca.PublicKey); err != nil {
		return nil, fmt.Errorf("import CA: %w: %w", ErrBadCertificate, err)
	}
	if !sameKey(key.Public(), ca.PublicKey) {
		return nil, fmt.Errorf("import CA: %w: the private key does not belong to %s", ErrBadKey, ca.Subject)
	}
	if ca.KeyUsage&x509.KeyUsageCRLSign == 0 {
		opts.Logger.Warn("the imported CA may not sign CRLs (no cRLSign key usage): revocation will have no CRL", "ca", ca.Subject.String())
	}
	if len(opts.Passphrase) > 0 {
		if err := checkPassphrase(opts.Passphrase); err != nil {
			return nil, fmt.Errorf("import CA: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	state, names, err := inspectDir(dir, opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("import CA into %s: %w", dir, err)
	}
	switch state {
	case dirHasCA:
		return nil, fmt.Errorf("import CA: %w in %s: move it away first (certificates it issued stop being verifiable with it)", ErrExists, dir)
	case dirUnknownData:
		return nil, fmt.Errorf("import CA: %s holds %s: import into an empty directory", dir, strings.Join(names, ", "))
	}

	// A self-signed top goes to root.crt, the rest to issuing.crt: the
	// layout of a created CA.
	var issuing bytes.Buffer
	files := []caFile{}
	below := chain
	if top := chain[len(chain)-1]; len(chain) > 1 && bytes.Equal(top.RawIssuer, top.RawSubject) {
		files = append(files, caFile{rootCertFile, pemCert(top), 0o644})
		below = chain[:len(chain)-1]
	}
	for _, c := range below {
		issuing.Write(pemCert(c))
	}
	files = append(files, caFile{issuingCertFile, issuing.Bytes(), 0o644})
	k := &kek{keyFile: opts.KeyFile, passphrase: opts.Passphrase, log: opts.Logger}
	if err := writeCA(dir, k, map[string]crypto.Signer{issuingKeyFile: key}, files); err != nil {
		return nil, fmt.Errorf("import CA into %s: %w", dir, err)
	}
	out, err := newCA(dir, opts, k, key, chain)
	if err != nil {
		return nil, err
	}
	out.log.Info("CA imported", "dir", dir, "key", describeKey(ca.PublicKey), "kek", k.kind(), "issuing", Fingerprint(ca.Raw),
		"subject", ca.Subject.String(), "issuingExpires", ca.NotAfter)
	return out, nil
}

// selfSign makes a self-signed CA certificate.
func selfSign(tmpl *x509.Certificate, key crypto.Signer) (*x509.Certificate, error) {
	return signCA(tmpl, key.Public(), tmpl, key)
}

// signCA signs a CA certificate; parent == tmpl for a self-signed one.
func signCA(tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, error) {
	spki, err := spkiOf(pub)
	if err != nil {
		return nil, err
	}
	if tmpl.SubjectKeyId, err = subjectKeyID(spki); err != nil {
		return nil, err
	}
	tmpl.SerialNumber = newSerial()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// SealingKey derives a 32-byte data key for purpose (e.g. "registry")
// from the key-encryption key of the CA's keys, with HKDF-SHA256: secrets
// sealed under it (see internal/seal) are protected by what protects the
// CA — the key file, or the operator's passphrase — and by nothing else.
// The key is the same at every start of this CA; a CA created or imported
// anew has another one, so the registry's sealed keys must move with the
// CA directory (keep them in the same backup).
func (ca *CA) SealingKey(purpose string) []byte {
	key, err := hkdf.Key(sha256.New, ca.kekKey, nil, "zerotouch sealing key: "+purpose, 32)
	if err != nil {
		panic("pki: HKDF of 32 bytes failed: " + err.Error()) // cannot happen: far below HKDF's limit
	}
	return key
}

// Issuer is the issuing CA's certificate: the issuer of every certificate
// and CRL this CA signs.
func (ca *CA) Issuer() *x509.Certificate { return ca.issuer }

// Root is the self-signed certificate at the top of the chain; nil for an
// imported CA whose chain was given without its root.
func (ca *CA) Root() *x509.Certificate { return ca.root }

// Certificates is the chain from the issuing CA up to the root (when
// known), issuing CA first.
func (ca *CA) Certificates() []*x509.Certificate {
	return append([]*x509.Certificate(nil), ca.chain...)
}

// Chain is Certificates in PEM: what devices and relying parties install
// to verify certificates of this CA.
func (ca *CA) Chain() []byte { return bytes.Clone(ca.chainPEM) }

// Pool holds every certificate of the chain as a trust anchor, for
// tls.Config.ClientCAs: a device that sends only its own certificate still
// verifies, as the issuing CA is in the pool. Each call returns a new pool.
func (ca *CA) Pool() *x509.CertPool { return ca.pool.Clone() }

// IssuerID identifies the issuing CA in certificate records
// (registry.Certificate.Issuer): the lowercase hex SHA-256 of its
// SubjectPublicKeyInfo.
func (ca *CA) IssuerID() string { return ca.issuerID }

// Dir is the CA directory.
func (ca *CA) Dir() string { return ca.dir }

// String names the CA by its issuing certificate's subject; it is what %v
// prints, so that a CA in a log line or error shows no key material.
func (ca *CA) String() string {
	return "CA(" + ca.issuer.Subject.String() + ", " + describeKey(ca.issuer.PublicKey) + ")"
}

// GoString keeps %#v from dumping the private key.
func (ca *CA) GoString() string { return ca.String() }

// LogValue keeps slog from dumping the private key.
func (ca *CA) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("subject", ca.issuer.Subject.String()),
		slog.String("key", describeKey(ca.issuer.PublicKey)),
		slog.String("fingerprint", Fingerprint(ca.issuer.Raw)),
		slog.Time("notAfter", ca.issuer.NotAfter),
	)
}
