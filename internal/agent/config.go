package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Dialects the agent speaks.
const (
	// DialectThingsBoard provisions with a profile's key and secret and
	// works as a ThingsBoard device (v1/devices/me/...).
	DialectThingsBoard = "thingsboard"
	// DialectAzureDPS registers through Azure IoT Hub Device Provisioning
	// Service and works as an Azure IoT Hub device (devices/{id}/...,
	// $iothub/...).
	DialectAzureDPS = "azure-dps"
)

// Credential types, as ThingsBoard names them (SYMMETRIC_KEY: an Azure
// device key).
const (
	CredentialsAccessToken  = "ACCESS_TOKEN"
	CredentialsMQTTBasic    = "MQTT_BASIC"
	CredentialsX509         = "X509_CERTIFICATE"
	CredentialsSymmetricKey = "SYMMETRIC_KEY"
)

// Telemetry sources.
const (
	SourceSystem  = "system"
	SourceCommand = "command"
	SourceFile    = "file"
)

// Defaults.
const (
	DefaultInterval       = 30 * time.Second
	DefaultCommandTimeout = 10 * time.Second
)

// Config is the agent's configuration, read from a YAML file (LoadConfig).
type Config struct {
	// Server is the hub's MQTT address, host:port (thingsboard).
	Server string `yaml:"server"`
	// TLS, when set, connects over TLS (MQTTS) (thingsboard).
	TLS *TLSConfig `yaml:"tls"`
	// Dialect selects the device protocol: "thingsboard" (default) or
	// "azure-dps".
	Dialect string `yaml:"dialect"`
	// Provision holds the profile's provision key and secret (thingsboard).
	Provision ProvisionConfig `yaml:"provision"`
	// DPS is how the device registers with Azure DPS (azure-dps).
	DPS *DPSConfig `yaml:"dps"`
	// CAFile is a PEM bundle of the CAs trusted for the server
	// certificates of DPS and of the assigned hub (azure-dps); the
	// system's roots when empty.
	CAFile string `yaml:"caFile"`
	// Device is the device's name; the host name when empty (thingsboard;
	// an Azure device is named by dps.registrationId).
	Device string `yaml:"device"`
	// Credentials are what the device asks for when it provisions.
	Credentials CredentialsConfig `yaml:"credentials"`
	// StateFile keeps the credentials the agent got (created 0600).
	StateFile string `yaml:"stateFile"`
	// Telemetry says what is sent, and how often.
	Telemetry TelemetryConfig `yaml:"telemetry"`
	// Handlers are the commands run for attribute updates and RPC.
	Handlers HandlersConfig `yaml:"handlers"`
	// Renewal is how a client certificate of zerotouch's CA is renewed
	// before it expires (X.509 devices only).
	Renewal RenewalConfig `yaml:"renewal"`
}

// TLSConfig is the client side of MQTTS.
type TLSConfig struct {
	// CAFile is a PEM bundle of the CAs that sign the server's certificate;
	// the system's roots when empty.
	CAFile string `yaml:"caFile"`
	// ServerName overrides the name checked in the server's certificate
	// (the host of Server by default).
	ServerName string `yaml:"serverName"`
}

// ProvisionConfig is a device profile's provisioning key and secret.
type ProvisionConfig struct {
	Key    string `yaml:"key"`
	Secret string `yaml:"secret"`
}

// CredentialsConfig is the credential the device asks for. Empty fields
// let the server generate them: an access token, or MQTT_BASIC client id,
// user name and password when all three are empty.
type CredentialsConfig struct {
	// Type is ACCESS_TOKEN (default), MQTT_BASIC or X509_CERTIFICATE.
	Type     string `yaml:"type"`
	Token    string `yaml:"token"`
	ClientID string `yaml:"clientId"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// CertFile and KeyFile are the device's certificate and key (PEM) for
	// X509_CERTIFICATE; the certificate is sent as the request's hash and
	// both are used as the TLS client certificate.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// TelemetryConfig says where telemetry comes from.
type TelemetryConfig struct {
	// Interval between two messages (DefaultInterval when zero).
	Interval time.Duration `yaml:"interval"`
	// Source is system (default), command or file.
	Source string `yaml:"source"`
	// Command is run with /bin/sh -c; its standard output is a JSON object.
	Command string `yaml:"command"`
	// File holds a JSON object, read at each interval.
	File string `yaml:"file"`
}

// HandlersConfig are the commands (run with /bin/sh -c) that act on what
// the server sends.
type HandlersConfig struct {
	// Attributes receives shared attributes as a JSON object on stdin.
	Attributes string `yaml:"attributes"`
	// RPC receives {"method","params"} on stdin; its stdout (JSON) is the
	// answer.
	RPC string `yaml:"rpc"`
	// Message receives each cloud-to-device message (azure-dps) as
	// {"properties":{…},"payload":…} on stdin; without it messages are
	// only logged.
	Message string `yaml:"message"`
	// Timeout bounds each run (DefaultCommandTimeout when zero).
	Timeout time.Duration `yaml:"timeout"`
}

// LoadConfig reads a YAML configuration file strictly (unknown fields are
// errors, so a typo does not silently fall back to a default), applies the
// defaults and validates it.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.Normalize(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return &c, nil
}

// Normalize applies the defaults and checks the configuration.
func (c *Config) Normalize() error {
	if c.Dialect == "" {
		c.Dialect = DialectThingsBoard
	}
	if c.Dialect == DialectAzureDPS {
		return c.normalizeAzure()
	}
	if c.Device == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("device: not given and the host name is unknown: %w", err)
		}
		c.Device = h
	}
	if c.Credentials.Type == "" {
		c.Credentials.Type = CredentialsAccessToken
	}
	c.commonDefaults()
	return c.validate()
}

// commonDefaults applies the defaults every dialect shares.
func (c *Config) commonDefaults() {
	if c.Telemetry.Interval == 0 {
		c.Telemetry.Interval = DefaultInterval
	}
	if c.Telemetry.Source == "" {
		c.Telemetry.Source = SourceSystem
	}
	if c.Handlers.Timeout == 0 {
		c.Handlers.Timeout = DefaultCommandTimeout
	}
	c.Renewal.defaults()
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Dialect != DialectThingsBoard {
		bad("dialect %q is not supported: want %q or %q (AWS fleet provisioning will follow)", c.Dialect, DialectThingsBoard, DialectAzureDPS)
	}
	if c.DPS != nil || c.CAFile != "" {
		bad("dps and caFile are for dialect %q; a ThingsBoard device uses provision and tls.caFile", DialectAzureDPS)
	}
	if c.Handlers.Message != "" {
		bad("handlers.message: cloud-to-device messages are an Azure IoT Hub feature (dialect %q)", DialectAzureDPS)
	}
	if _, port, err := net.SplitHostPort(c.Server); err != nil || port == "" {
		bad("server: want host:port, e.g. hub.example.com:1883, not %q", c.Server)
	}
	if c.Provision.Key == "" || c.Provision.Secret == "" {
		bad("provision: key and secret are required (the device profile's provision key and secret)")
	}
	if c.StateFile == "" {
		bad("stateFile: required (where the credentials are kept, e.g. /var/lib/zerotouch-agent/state.json)")
	}
	cr := c.Credentials
	switch cr.Type {
	case CredentialsAccessToken:
	case CredentialsMQTTBasic:
		if cr.Username == "" && cr.Password != "" {
			bad("credentials: MQTT_BASIC password given without a username")
		}
	case CredentialsX509:
		if cr.CertFile == "" || cr.KeyFile == "" {
			bad("credentials: X509_CERTIFICATE needs certFile and keyFile")
		}
		if c.TLS == nil {
			bad("credentials: X509_CERTIFICATE needs tls (the certificate is presented on MQTTS)")
		}
	default:
		bad("credentials.type %q: want ACCESS_TOKEN, MQTT_BASIC or X509_CERTIFICATE", cr.Type)
	}
	errs = append(errs, c.validateCommon()...)
	return errors.Join(errs...)
}

// validateCommon checks the settings every dialect shares.
func (c *Config) validateCommon() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Telemetry.Interval < 0 {
		bad("telemetry.interval must be positive")
	}
	switch c.Telemetry.Source {
	case SourceSystem:
	case SourceCommand:
		if strings.TrimSpace(c.Telemetry.Command) == "" {
			bad("telemetry: source command needs command")
		}
	case SourceFile:
		if c.Telemetry.File == "" {
			bad("telemetry: source file needs file")
		}
	default:
		bad("telemetry.source %q: want system, command or file", c.Telemetry.Source)
	}
	if c.Handlers.Timeout < 0 {
		bad("handlers.timeout must be positive")
	}
	errs = append(errs, c.Renewal.validate()...)
	return errs
}
