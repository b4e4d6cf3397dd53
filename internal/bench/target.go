package bench

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Target is what every bench needs: the server, the profile its devices
// provision with, how they reach it, their names and where progress goes.
type Target struct {
	// MQTTAddr is the server's MQTT listener, host:port. Required, except
	// for the azure-dps dialect.
	MQTTAddr string
	// MQTTSAddr is the server's MQTTS listener, host:port: required for
	// the azure-dps dialect, whose devices connect over TLS.
	MQTTSAddr string
	// RootCAs verifies the MQTTS listener's certificate (zerotouch's CA
	// chain is at GET /ca/chain.pem); nil: the system's roots.
	// ServerName is the name checked in it (default: the host of
	// MQTTSAddr, which may be an IP address).
	RootCAs    *x509.CertPool
	ServerName string
	// IDScope and GroupKey, for the azure-dps dialect: the DPS ID scope
	// and the primary key of a symmetric-key enrollment group; each
	// device derives its own key from it (attest.DeriveDeviceKey) and
	// signs its SAS token with that.
	IDScope, GroupKey string
	// CA, for the azure-dps dialect with x509 credentials (instead of
	// GroupKey): the CA of a verified X.509 enrollment group, which signs
	// each device's certificate.
	CA *DeviceCA
	// MetricsURL is the server's HTTP base URL (http://host:port); when
	// set, its /metrics gives the server's side of the report.
	MetricsURL string
	// ProfileKey and ProfileSecret are the provisioning profile's key and
	// secret (an allow-create profile issuing access tokens). Required,
	// except for the azure-dps dialect.
	ProfileKey, ProfileSecret string
	// Sources is how many loopback source addresses to spread over when
	// MQTTAddr is loopback (DefaultSources; 1 means none).
	Sources int
	// Timeout bounds each step of an exchange (DefaultTimeout).
	Timeout time.Duration
	// NamePrefix starts every device name; the device's number follows
	// (default: "bench-" and the start time, so runs do not collide).
	NamePrefix string
	// Progress, when set, receives live progress; ProgressTTY redraws one
	// line with \r instead of printing a line every few seconds.
	Progress    io.Writer
	ProgressTTY bool
}

// validate checks t and fills in its defaults.
func (t *Target) validate() error {
	if t.MQTTAddr == "" {
		return errors.New("no MQTT address")
	}
	if _, _, err := net.SplitHostPort(t.MQTTAddr); err != nil {
		return fmt.Errorf("MQTT address %q: want host:port", t.MQTTAddr)
	}
	if t.ProfileKey == "" || t.ProfileSecret == "" {
		return errors.New("no provisioning profile key and secret")
	}
	return t.defaults()
}

// validateDPS checks t for the azure-dps dialect with credentials and
// fills in its defaults.
func (t *Target) validateDPS(credentials string) error {
	if t.MQTTSAddr == "" {
		return errors.New("no MQTTS address")
	}
	host, _, err := net.SplitHostPort(t.MQTTSAddr)
	if err != nil {
		return fmt.Errorf("MQTTS address %q: want host:port", t.MQTTSAddr)
	}
	if credentials == CredentialsX509 {
		if t.IDScope == "" || t.CA == nil {
			return errors.New("no DPS ID scope and enrollment group CA")
		}
	} else if t.IDScope == "" || t.GroupKey == "" {
		return errors.New("no DPS ID scope and enrollment group key")
	}
	if t.ServerName == "" {
		t.ServerName = host
	}
	return t.defaults()
}

// tlsConfig is what every azure-dps device dials with: no session cache,
// so that each device does a full handshake as on its first boot, and
// the key exchanges of small TLS stacks (mbedTLS, OpenSSL 1.1 on a
// gateway): X25519 or P-256, no post-quantum hybrid.
func (t *Target) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: t.RootCAs, ServerName: t.ServerName, MinVersion: tls.VersionTLS12,
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
}

// defaults fills in the defaults every dialect shares.
func (t *Target) defaults() error {
	if t.Sources == 0 {
		t.Sources = DefaultSources
	}
	if t.Sources < 0 {
		return fmt.Errorf("sources %d: want at least 1", t.Sources)
	}
	if t.Timeout == 0 {
		t.Timeout = DefaultTimeout
	}
	if t.NamePrefix == "" {
		t.NamePrefix = "bench-" + strconv.FormatInt(time.Now().Unix(), 36) + "-"
	}
	return nil
}
