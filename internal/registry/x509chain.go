package registry

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"regexp"
	"unicode/utf8"
)

// X509ChainProvisioning lets a profile trust manufacturer CAs: a device
// presenting, on a TLS listener, a client certificate that chains to one
// of them is provisioned into the profile on its first connection, named
// after its certificate's common name (ThingsBoard 3.5's "X.509
// certificates chain" provision strategy). From then on the device is
// authenticated by its certificate's fingerprint, like any X.509 device.
//
// It works next to, and independently of, the profile's provision key and
// secret: Profile.Strategy governs requests that bring them, this governs
// first connections with a certificate. Removing it from the profile
// stops new certificate provisioning; devices already provisioned keep
// their credentials.
type X509ChainProvisioning struct {
	// CACertificates holds the trusted CA certificates, PEM, one or more:
	// a root or an intermediate (ThingsBoard's "intermediate certificate"),
	// each a trust anchor of its own. A device may send the certificates
	// between its own and the anchor with its certificate.
	CACertificates string `json:"caCertificatesPem"`
	// CNPattern is a regular expression (RE2 syntax) that the whole common
	// name must match; its first group, or the whole name when it has no
	// group, is the device's name. Empty: the common name is the name.
	// E.g. `(.+)\.sensors\.example\.com` names "dev-1" the certificate of
	// CN "dev-1.sensors.example.com".
	CNPattern string `json:"certificateRegExPattern,omitempty"`
	// AllowCreate creates devices that do not exist yet; otherwise only
	// devices of the profile created beforehand (pre-provisioned) with
	// the name the certificate yields are provisioned, as ThingsBoard's
	// "create new devices" switch does. A device that exists and was
	// provisioned before follows the profile's ReprovisionPolicy: under
	// "rotate", a certificate issued after the device's current one
	// replaces it (certificate renewal by the manufacturer), an older one
	// is refused.
	AllowCreate bool `json:"allowCreateNewDevicesByX509Certificate"`
}

// Limits of X509ChainProvisioning.
const (
	// MaxX509ChainPEM caps CACertificates.
	MaxX509ChainPEM = 64 << 10
	// MaxX509ChainCAs caps the number of CA certificates a profile trusts.
	MaxX509ChainCAs = 16
	// MaxCNPatternLen caps CNPattern.
	MaxCNPatternLen = 512
)

// Validate checks the CA certificates and the pattern.
func (x *X509ChainProvisioning) Validate() error {
	if _, err := x.ParseCACertificates(); err != nil {
		return err
	}
	_, err := x.CompileCNPattern()
	return err
}

// ParseCACertificates parses CACertificates: one or more PEM blocks of
// type CERTIFICATE, each a CA certificate (basic constraints CA:TRUE),
// and nothing else but white space. Errors wrap ErrInvalid and say which
// certificate is wrong.
func (x *X509ChainProvisioning) ParseCACertificates() ([]*x509.Certificate, error) {
	data := []byte(x.CACertificates)
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return nil, fmt.Errorf("%w: X.509 chain provisioning needs at least one CA certificate (PEM)", ErrInvalid)
	case len(data) > MaxX509ChainPEM:
		return nil, fmt.Errorf("%w: X.509 chain CA certificates exceed %d bytes", ErrInvalid, MaxX509ChainPEM)
	}
	var out []*x509.Certificate
	for rest := data; len(bytes.TrimSpace(rest)) > 0; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		n := len(out) + 1
		switch {
		case block == nil:
			return nil, fmt.Errorf("%w: X.509 chain CA certificate %d is not PEM", ErrInvalid, n)
		case block.Type != "CERTIFICATE":
			return nil, fmt.Errorf("%w: X.509 chain CA certificate %d is a PEM block of type %q, want CERTIFICATE", ErrInvalid, n, truncateType(block.Type))
		case n > MaxX509ChainCAs:
			return nil, fmt.Errorf("%w: more than %d X.509 chain CA certificates", ErrInvalid, MaxX509ChainCAs)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: X.509 chain CA certificate %d does not parse: %v", ErrInvalid, n, err)
		}
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("%w: X.509 chain certificate %d (%s) is not a CA certificate", ErrInvalid, n, c.Subject)
		}
		out = append(out, c)
	}
	return out, nil
}

func truncateType(s string) string {
	if len(s) > 40 || !utf8.ValidString(s) {
		return "…"
	}
	return s
}

// CompileCNPattern compiles CNPattern anchored at both ends (the whole
// common name must match); nil for an empty pattern. Errors wrap ErrInvalid.
func (x *X509ChainProvisioning) CompileCNPattern() (*regexp.Regexp, error) {
	if x.CNPattern == "" {
		return nil, nil
	}
	if len(x.CNPattern) > MaxCNPatternLen {
		return nil, fmt.Errorf("%w: certificate name pattern is longer than %d bytes", ErrInvalid, MaxCNPatternLen)
	}
	re, err := regexp.Compile(`^(?:` + x.CNPattern + `)$`)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate name pattern: %v", ErrInvalid, err)
	}
	return re, nil
}

// DeviceNameFromCN returns the device name that pattern re (from
// CompileCNPattern) takes from common name cn: the first group of the
// match, the whole name when the pattern has no group, cn itself when re
// is nil. ok is false when cn does not match, or the name is empty; the
// caller still checks the name with ValidateName.
func DeviceNameFromCN(re *regexp.Regexp, cn string) (name string, ok bool) {
	if re == nil {
		return cn, cn != ""
	}
	m := re.FindStringSubmatch(cn)
	switch {
	case m == nil:
		return "", false
	case len(m) > 1:
		return m[1], m[1] != ""
	}
	return m[0], m[0] != ""
}
