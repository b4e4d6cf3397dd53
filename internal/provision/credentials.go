package provision

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// ErrBadCredentials: credentials a device (or an operator, for a
// pre-provisioned device) supplied are unusable. The message says why.
var ErrBadCredentials = errors.New("bad credentials")

// CredentialsRequest is a credential as a device or operator asks for it,
// protocol-neutral. An empty Type means "let the server generate the
// profile's default type".
type CredentialsRequest struct {
	Type registry.CredentialType
	// Token for ACCESS_TOKEN; empty asks the server to generate one.
	Token string
	// ClientID, Username, Password for MQTT_BASIC; all empty asks the server
	// to generate them.
	ClientID, Username, Password string
	// Certificate for X509_CERTIFICATE: a PEM certificate, or the hex SHA-256
	// fingerprint of one.
	Certificate string
}

// IssuedCredentials is what goes back to the device: the secrets in clear,
// exactly once. Fields not relevant to Type are empty.
type IssuedCredentials struct {
	Type                         registry.CredentialType
	Token                        string
	ClientID, Username, Password string
	// Certificate is the PEM (or fingerprint) the device supplied.
	Certificate string
}

// ReservedUserName is the MQTT user name ThingsBoard devices provision with.
// No credential may claim it as its token or user name: the hub treats every
// CONNECT with it as a provisioning session.
const ReservedUserName = "provision"

// Limits on device-supplied credential fields.
const (
	maxTokenLen   = 255
	minTokenLen   = 8
	maxBasicLen   = 255
	maxCertPEMLen = 16 << 10
)

// BuildCredential validates r (or generates what it leaves to the server,
// using defaultType) and returns the record to store with what to answer.
// The credential's ID and CreatedAt are set; DeviceID and OrgID are left to
// the caller or the store.
func BuildCredential(r CredentialsRequest, defaultType registry.CredentialType, now time.Time) (registry.Credential, IssuedCredentials, error) {
	t := r.Type
	if t == "" {
		t = defaultType
	}
	c := registry.Credential{ID: uuid.NewString(), Type: t, Status: registry.CredentialActive, CreatedAt: now}
	out := IssuedCredentials{Type: t}
	switch t {
	case registry.CredentialAccessToken:
		tok := r.Token
		if tok == "" {
			tok = secret.Generate(secret.TokenLength)
		} else if err := checkField("token", tok, minTokenLen, maxTokenLen); err != nil {
			return c, out, err
		} else if tok == ReservedUserName {
			return c, out, fmt.Errorf("%w: token %q is reserved for provisioning", ErrBadCredentials, tok)
		}
		c.LookupKey = secret.LookupHash(tok)
		out.Token = tok
	case registry.CredentialMQTTBasic:
		cid, user, pass := r.ClientID, r.Username, r.Password
		generated := cid == "" && user == "" && pass == ""
		if generated {
			cid, user, pass = "zt-"+secret.Generate(16), secret.Generate(16), secret.Generate(secret.TokenLength)
		}
		for _, f := range []struct{ name, v string }{{"clientId", cid}, {"username", user}, {"password", pass}} {
			if f.v != "" {
				if err := checkField(f.name, f.v, 1, maxBasicLen); err != nil {
					return c, out, err
				}
			}
		}
		if cid == "" && user == "" {
			return c, out, fmt.Errorf("%w: MQTT_BASIC needs a clientId or a username", ErrBadCredentials)
		}
		if user == ReservedUserName {
			return c, out, fmt.Errorf("%w: username %q is reserved for provisioning", ErrBadCredentials, user)
		}
		if user == "" && pass != "" {
			return c, out, fmt.Errorf("%w: MQTT_BASIC password given without a username", ErrBadCredentials)
		}
		c.ClientID, c.Username = cid, user
		c.LookupKey = registry.MQTTBasicLookupKey(cid, user)
		switch {
		case pass == "":
		case generated:
			c.SecretHash = secret.Hash(pass)
		default:
			// Chosen by the device or an operator: it may be guessable.
			c.SecretHash = secret.HashSlow(pass)
		}
		out.ClientID, out.Username, out.Password = cid, user, pass
	case registry.CredentialX509:
		fp, pemText, err := certificateFingerprint(r.Certificate, now)
		if err != nil {
			return c, out, err
		}
		c.LookupKey, c.Fingerprint, c.CertificatePEM = fp, fp, pemText
		out.Certificate = r.Certificate
	default:
		return c, out, fmt.Errorf("%w: unknown credentials type %q (want ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE)", ErrBadCredentials, t)
	}
	return c, out, nil
}

func checkField(name, v string, min, max int) error {
	switch {
	case len(v) < min:
		return fmt.Errorf("%w: %s is shorter than %d characters", ErrBadCredentials, name, min)
	case len(v) > max:
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrBadCredentials, name, max)
	case !utf8.ValidString(v):
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrBadCredentials, name)
	case strings.ContainsAny(v, "\x00\r\n"):
		return fmt.Errorf("%w: %s contains a control character", ErrBadCredentials, name)
	}
	return nil
}

// certificateFingerprint accepts a PEM certificate (checked to parse and to
// be within its validity period) or a 64-hex-digit SHA-256 fingerprint, and
// returns the lowercase hex fingerprint and the PEM (empty for a fingerprint).
func certificateFingerprint(v string, now time.Time) (fp, pemText string, err error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", "", fmt.Errorf("%w: X509_CERTIFICATE needs the certificate PEM in \"hash\"", ErrBadCredentials)
	}
	if len(v) == 64 {
		if _, err := hex.DecodeString(v); err == nil {
			return strings.ToLower(v), "", nil
		}
	}
	if len(v) > maxCertPEMLen {
		return "", "", fmt.Errorf("%w: certificate is larger than %d bytes", ErrBadCredentials, maxCertPEMLen)
	}
	block, _ := pem.Decode([]byte(v))
	if block == nil || block.Type != "CERTIFICATE" {
		return "", "", fmt.Errorf("%w: not a PEM certificate nor a SHA-256 fingerprint", ErrBadCredentials)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", "", fmt.Errorf("%w: certificate does not parse: %v", ErrBadCredentials, err)
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return "", "", fmt.Errorf("%w: certificate is not valid now (valid %s to %s)", ErrBadCredentials,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:]), string(pem.EncodeToMemory(block)), nil
}
