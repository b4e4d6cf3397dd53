package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/zerotouch/zerotouch/internal/attest"
)

// DefaultAzurePort is the MQTTS port of DPS and of IoT hubs.
const DefaultAzurePort = "8883"

// DPSConfig is how an Azure device registers with the Device Provisioning
// Service: where, in which ID scope, under which registration id, and
// with which one credential.
type DPSConfig struct {
	// Host is the DPS endpoint, host[:port] (8883 when no port is given),
	// e.g. global.azure-devices-provisioning.net or zt.example.com:8883.
	Host string `yaml:"host"`
	// IDScope is the ID scope of the DPS instance (0ne…).
	IDScope string `yaml:"idScope"`
	// RegistrationID is the device's registration id; with a certificate
	// it defaults to the certificate's common name (DPS requires them to
	// be equal).
	RegistrationID string `yaml:"registrationId"`
	// SymmetricKey is an individual enrollment's key (base64).
	SymmetricKey string `yaml:"symmetricKey"`
	// GroupKey is a symmetric-key enrollment group's key (base64): the
	// device's key is derived from it and the registration id, and only
	// the derived key is stored in the state file.
	GroupKey string `yaml:"groupKey"`
	// Certificate and Key are the device's X.509 certificate (PEM, with
	// its intermediates after it) and private key (PEM), presented to DPS
	// and to the hub.
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
	// Payload is an optional custom payload sent with the registration
	// (a custom allocation webhook reads it).
	Payload map[string]any `yaml:"payload"`
}

// normalizeAzure applies the defaults of dialect azure-dps and checks the
// configuration, reading the files it names so that a wrong path is
// reported at start.
func (c *Config) normalizeAzure() error {
	c.commonDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	notHere := func(field string, set bool, instead string) {
		if set {
			bad("%s: not used by dialect %s (%s)", field, DialectAzureDPS, instead)
		}
	}
	notHere("server", c.Server != "", "DPS is dps.host; the hub is the one DPS assigns")
	notHere("tls", c.TLS != nil, "Azure always uses TLS; the trusted CAs are caFile")
	notHere("provision", c.Provision != ProvisionConfig{}, "the credential is in dps")
	notHere("credentials", c.Credentials != CredentialsConfig{}, "the credential is in dps")
	notHere("device", c.Device != "", "the device is named by dps.registrationId")
	if c.StateFile == "" {
		bad("stateFile: required (where the assignment and the device key are kept, e.g. /var/lib/zerotouch-agent/state.json)")
	}
	if c.CAFile != "" {
		if _, err := readCAFile(c.CAFile); err != nil {
			bad("caFile: %v", err)
		}
	}
	d := c.DPS
	if d == nil {
		bad("dps: required for dialect %s (host, idScope, registrationId and one of symmetricKey, groupKey or certificate and key)", DialectAzureDPS)
		return errors.Join(append(errs, c.validateCommon()...)...)
	}
	if d.Host == "" {
		bad("dps.host: required, e.g. global.azure-devices-provisioning.net or zt.example.com[:8883]")
	} else if _, err := hostPort(d.Host); err != nil {
		bad("dps.host: %v", err)
	}
	if d.IDScope == "" {
		bad("dps.idScope: required (the DPS instance's ID scope, e.g. 0ne00000A0A; `zerotouch idscope` prints zerotouch's)")
	} else if strings.ContainsAny(d.IDScope, "/?&#+ ") || len(d.IDScope) > 64 {
		bad("dps.idScope %q: not an ID scope (e.g. 0ne00000A0A)", d.IDScope)
	}
	creds := 0
	for _, set := range []bool{d.SymmetricKey != "", d.GroupKey != "", d.Certificate != "" || d.Key != ""} {
		if set {
			creds++
		}
	}
	switch {
	case creds != 1:
		bad("dps: give exactly one credential: symmetricKey (individual enrollment), groupKey (enrollment group) or certificate and key (X.509)")
	case d.SymmetricKey != "":
		if _, err := attest.DecodeKey(d.SymmetricKey); err != nil {
			bad("dps.symmetricKey: not a base64 key")
		}
	case d.GroupKey != "":
		if _, err := attest.DecodeKey(d.GroupKey); err != nil {
			bad("dps.groupKey: not a base64 key")
		}
	default:
		if d.Certificate == "" || d.Key == "" {
			bad("dps: an X.509 device needs both certificate and key")
			break
		}
		cert, err := tls.LoadX509KeyPair(d.Certificate, d.Key)
		if err != nil {
			bad("dps.certificate and dps.key: %v", err)
			break
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			bad("dps.certificate: %v", err)
			break
		}
		cn := leaf.Subject.CommonName
		switch {
		case d.RegistrationID == "":
			d.RegistrationID = cn
		case d.RegistrationID != cn:
			bad("dps.registrationId %q: DPS requires the certificate's common name, %q", d.RegistrationID, cn)
		}
	}
	if d.RegistrationID == "" {
		bad("dps.registrationId: required")
	} else if err := validRegistrationID(d.RegistrationID); err != nil {
		bad("dps.registrationId %q: %v", d.RegistrationID, err)
	}
	if d.Payload != nil {
		if _, err := json.Marshal(d.Payload); err != nil {
			bad("dps.payload: cannot be sent as JSON: %v", err)
		}
	}
	c.Device = d.RegistrationID
	errs = append(errs, c.validateCommon()...)
	return errors.Join(errs...)
}

// validRegistrationID checks a registration id as DPS (and zerotouch)
// accept it: 1 to 128 characters among letters, digits and - . _ :,
// ending with a letter, a digit or '-'. zerotouch keeps ids in lower
// case, and a group's device key is derived from the id as written, so
// upper-case letters are refused here rather than at the server.
func validRegistrationID(id string) error {
	if len(id) > 128 {
		return errors.New("longer than 128 characters")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == ':':
		case 'A' <= c && c <= 'Z':
			return errors.New("has upper-case letters: registration ids are case-insensitive, write it in lower case")
		default:
			return errors.New("may hold only lower-case letters, digits and - . _ :")
		}
	}
	switch id[len(id)-1] {
	case '.', '_', ':':
		return errors.New("must end with a letter, a digit or '-'")
	}
	return nil
}

// hostPort returns host:port for an Azure endpoint given as host[:port],
// DefaultAzurePort when it has none.
func hostPort(s string) (string, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		if host == "" || port == "" {
			return "", fmt.Errorf("want host[:port], not %q", s)
		}
		return s, nil
	}
	if s == "" || strings.ContainsAny(s, "/?#@ ") {
		return "", fmt.Errorf("want host[:port], not %q", s)
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), DefaultAzurePort), nil
}

// readCAFile reads a PEM bundle of CA certificates.
func readCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}
