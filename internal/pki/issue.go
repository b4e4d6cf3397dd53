package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Profile says what a certificate contains: who it names and for how long.
// The caller builds it from the device record (and its device profile);
// a request may ask for less, never for more.
type Profile struct {
	// CommonName is the subject's CN: the device's id or name. Required, at
	// most 64 bytes (the X.520 bound many TLS stacks enforce).
	CommonName string
	// DNSNames, IPAddresses and URIs are the subject alternative names the
	// certificate carries and a request may ask for.
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []*url.URL
	// Lifetime from now; Options.LeafLifetime when zero. The certificate
	// never outlives the issuing CA.
	Lifetime time.Duration
	// ExtKeyUsage is x509.ExtKeyUsageClientAuth (a device) when empty.
	ExtKeyUsage []x509.ExtKeyUsage
}

// maxCommonName is the ub-common-name of X.520.
const maxCommonName = 64

// normalized checks p and returns the copy the CA signs from: DNS names
// lowercased, the default usage filled in.
func (p Profile) normalized() (Profile, error) {
	if err := checkText("common name", p.CommonName, maxCommonName); err != nil {
		return p, err
	}
	if p.Lifetime < 0 {
		return p, fmt.Errorf("%w: negative lifetime %v", ErrBadProfile, p.Lifetime)
	}
	dns := make([]string, len(p.DNSNames))
	for i, n := range p.DNSNames {
		if err := checkDNSName(n); err != nil {
			return p, err
		}
		dns[i] = strings.ToLower(n)
	}
	p.DNSNames = dns
	for _, ip := range p.IPAddresses {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return p, fmt.Errorf("%w: IP address of %d bytes", ErrBadProfile, len(ip))
		}
	}
	for _, u := range p.URIs {
		if u == nil || u.Scheme == "" {
			return p, fmt.Errorf("%w: URI names must be absolute", ErrBadProfile)
		}
	}
	if len(p.ExtKeyUsage) == 0 {
		p.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return p, nil
}

// ValidDNSName reports whether name can be a certificate's DNS name (see
// checkDNSName).
func ValidDNSName(name string) bool { return checkDNSName(name) == nil }

// checkDNSName accepts host names (letters, digits, hyphens; labels of 1
// to 63 bytes; 253 in all), with an optional leading "*." wildcard label.
func checkDNSName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: DNS name %s %s", ErrBadProfile, quote(name), why)
	}
	if name == "" || len(name) > 253 {
		return bad("must have 1 to 253 bytes")
	}
	labels := strings.Split(strings.TrimPrefix(name, "*."), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return bad("has an empty or over-long label")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return bad("has a label starting or ending with '-'")
		}
		for i := 0; i < len(l); i++ {
			c := l[i] | 0x20
			if (c < 'a' || c > 'z') && (l[i] < '0' || l[i] > '9') && l[i] != '-' {
				return bad("may hold only letters, digits, '-' and '.'")
			}
		}
	}
	return nil
}

// Issued is a certificate the CA just signed, with what its record needs.
type Issued struct {
	Certificate *x509.Certificate
	// DER is Certificate.Raw.
	DER []byte
	// Serial is SerialHex of the serial number.
	Serial string
	// Fingerprint is the lowercase hex SHA-256 of DER.
	Fingerprint string
	// IssuerID is CA.IssuerID of the CA that signed it.
	IssuerID string
}

// PEM is the certificate in PEM.
func (i *Issued) PEM() []byte { return pemCert(i.Certificate) }

// SignCSR issues a certificate for the key in a device's request (PEM or
// DER), named by profile p. The request is checked as ParseCSR does, then
// its names against p: it may leave the common name and alternative names
// out, but any it gives must be p's (ErrNameNotAllowed). The certificate
// carries p's names; nothing else of the request is copied. Every refusal
// of the request wraps ErrBadCSR.
func (ca *CA) SignCSR(csr []byte, p Profile) (*Issued, error) {
	p, err := p.normalized()
	if err != nil {
		return nil, err
	}
	req, err := ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	if err := checkRequestedNames(req, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	return ca.issue(req.PublicKey, req.RawSubjectPublicKeyInfo, p)
}

// checkRequestedNames refuses names of the request that p does not give.
func checkRequestedNames(req *x509.CertificateRequest, p *Profile) error {
	if cn := req.Subject.CommonName; cn != "" && cn != p.CommonName {
		return fmt.Errorf("%w: the request asks for common name %s; this device's is %s", ErrNameNotAllowed, quote(cn), quote(p.CommonName))
	}
	for _, n := range req.DNSNames {
		if !slices.Contains(p.DNSNames, strings.ToLower(n)) {
			return fmt.Errorf("%w: the request asks for DNS name %s, which this device's profile does not give", ErrNameNotAllowed, quote(n))
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(p.IPAddresses, ip.Equal) {
			return fmt.Errorf("%w: the request asks for IP address %s, which this device's profile does not give", ErrNameNotAllowed, ip)
		}
	}
	for _, u := range req.URIs {
		if !slices.ContainsFunc(p.URIs, func(v *url.URL) bool { return v.String() == u.String() }) {
			return fmt.Errorf("%w: the request asks for URI %s, which this device's profile does not give", ErrNameNotAllowed, quote(u.String()))
		}
	}
	if len(req.EmailAddresses) > 0 {
		return fmt.Errorf("%w: the request asks for e-mail address %s; device certificates carry none", ErrNameNotAllowed, quote(req.EmailAddresses[0]))
	}
	return nil
}

// IssueWithNewKey generates a key pair of algorithm alg (ECDSAP256 when
// empty) and issues a certificate for it named by p. It returns the private
// key once, PKCS#8 in PEM; the CA keeps no copy. Prefer SignCSR: there the
// key never leaves the device.
func (ca *CA) IssueWithNewKey(p Profile, alg KeyAlgorithm) (*Issued, []byte, error) {
	p, err := p.normalized()
	if err != nil {
		return nil, nil, err
	}
	if alg == "" {
		alg = ECDSAP256
	}
	key, err := generateKey(alg)
	if err != nil {
		return nil, nil, err
	}
	iss, err := ca.issueFor(key.Public(), p)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode the new key: %w", err)
	}
	defer clear(der)
	return iss, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// IssueServerCertificate issues the certificate of the HTTPS and MQTTS
// listeners, for hosts (DNS names, "*.example.com" wildcards or IP
// addresses; the first is also the common name), with a new ECDSA P-256
// key. The tls.Certificate holds the chain up to, not including, the root,
// as a TLS server sends it. lifetime is Options.LeafLifetime when zero: the
// caller renews it before Leaf.NotAfter. The Issued is for its record.
func (ca *CA) IssueServerCertificate(hosts []string, lifetime time.Duration) (*tls.Certificate, *Issued, error) {
	if len(hosts) == 0 {
		return nil, nil, fmt.Errorf("%w: a server certificate needs at least one host name", ErrBadProfile)
	}
	p := Profile{CommonName: hosts[0], Lifetime: lifetime, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			p.IPAddresses = append(p.IPAddresses, ip)
		} else {
			p.DNSNames = append(p.DNSNames, h)
		}
	}
	p, err := p.normalized()
	if err != nil {
		return nil, nil, err
	}
	key, err := generateKey(ECDSAP256)
	if err != nil {
		return nil, nil, err
	}
	iss, err := ca.issueFor(key.Public(), p)
	if err != nil {
		return nil, nil, err
	}
	chain := [][]byte{iss.DER}
	for _, c := range ca.chain {
		if c != ca.root {
			chain = append(chain, c.Raw)
		}
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: iss.Certificate}, iss, nil
}

// issueFor issues for a key of ours.
func (ca *CA) issueFor(pub crypto.PublicKey, p Profile) (*Issued, error) {
	spki, err := spkiOf(pub)
	if err != nil {
		return nil, err
	}
	return ca.issue(pub, spki, p)
}

// issue signs a leaf for pub (whose DER SubjectPublicKeyInfo is spki)
// from the normalized profile p.
func (ca *CA) issue(pub crypto.PublicKey, spki []byte, p Profile) (*Issued, error) {
	now := time.Now()
	lifetime := p.Lifetime
	if lifetime == 0 {
		lifetime = ca.opts.LeafLifetime
	}
	notAfter := minTime(now.Add(lifetime), ca.issuer.NotAfter)
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%w on %s: import or create a new CA", ErrCAExpired, ca.issuer.NotAfter.Format(time.RFC3339))
	}
	ski, err := subjectKeyID(spki)
	if err != nil {
		return nil, err
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		// RSA key exchange (TLS 1.2 without ECDHE) encrypts to the key.
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: p.CommonName},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           p.ExtKeyUsage,
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
		DNSNames:              p.DNSNames,
		IPAddresses:           p.IPAddresses,
		URIs:                  p.URIs,
	}
	if ca.opts.CRLURL != "" {
		tmpl.CRLDistributionPoints = []string{ca.opts.CRLURL}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.issuer, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return &Issued{
		Certificate: cert,
		DER:         der,
		Serial:      SerialHex(cert.SerialNumber),
		Fingerprint: Fingerprint(der),
		IssuerID:    ca.issuerID,
	}, nil
}
