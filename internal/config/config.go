// Package config is zerotouch serve's configuration: defaults, an optional
// YAML file, ZEROTOUCH_* environment variables and command-line flags, in
// increasing order of precedence.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Off disables a listener.
const Off = "off"

// Config is the effective configuration of `zerotouch serve`.
type Config struct {
	// DataDir holds the database and, later, keys. Created if missing.
	DataDir string `yaml:"data"`
	// HTTP and MQTT are listen addresses ("host:port", ":port") or "off".
	HTTP string `yaml:"http"`
	MQTT string `yaml:"mqtt"`
	// HTTPS and MQTTS are the TLS listeners, "off" to disable.
	HTTPS string `yaml:"https"`
	MQTTS string `yaml:"mqtts"`
	// TLSHostsText lists, comma-separated, the host names and IP addresses
	// of the TLS listeners' certificate issued by the built-in CA (see
	// TLSHosts).
	TLSHostsText string `yaml:"tls-hosts"`
	// TLSCertFile and TLSKeyFile are an operator-supplied server
	// certificate (PEM, chain included) and key, used instead of one from
	// the built-in CA.
	TLSCertFile string `yaml:"tls-cert-file"`
	TLSKeyFile  string `yaml:"tls-key-file"`
	// CAKeyAlgorithm is the key type of a new built-in CA.
	CAKeyAlgorithm string `yaml:"ca-key-algorithm"`
	// CAPassphraseFile holds the passphrase sealing the CA keys (first
	// line); it can also come from ZEROTOUCH_CA_PASSPHRASE. Without one, the
	// keys are sealed under a key file in the data directory.
	CAPassphraseFile string `yaml:"ca-passphrase-file"`
	CAPassphrase     []byte `yaml:"-"`
	// CertLifetimeText is the default lifetime of device certificates.
	CertLifetimeText string        `yaml:"cert-lifetime"`
	CertLifetime     time.Duration `yaml:"-"`
	// CertRenewalGraceText is how long a renewed device certificate stays
	// valid when its renewal is not used.
	CertRenewalGraceText string        `yaml:"cert-renewal-grace"`
	CertRenewalGrace     time.Duration `yaml:"-"`
	// PublicURL is how devices and relying parties reach the HTTP(S)
	// listener (e.g. https://zt.example.com:8443); when set, certificates
	// carry <PublicURL>/ca/crl as their CRL distribution point.
	PublicURL string `yaml:"public-url"`
	// HubName is the host name (with ":port" unless 8883) devices that
	// register through DPS are assigned to, and use verbatim to reach the
	// hub and to sign their tokens. Empty: this host's name and the
	// MQTTS listener's port.
	HubName string `yaml:"hub-name"`
	// HubRegion is the built-in hub's region, for DPS geoLatency
	// allocation; empty: none.
	HubRegion string `yaml:"hub-region"`
	// RegionMapFile holds the rules ("10.1.0.0/16=eu-west", one a line)
	// that give a registering device its region from its source address;
	// parsed into Regions by Finish. Empty: no device has a region.
	RegionMapFile string             `yaml:"region-map"`
	Regions       allocate.RegionMap `yaml:"-"`
	// DPSWebhookURL is the custom allocation webhook (Azure DPS's custom
	// allocation policy); empty: enrollments cannot use that policy.
	DPSWebhookURL string `yaml:"dps-webhook-url"`
	// MQTTMaxClientsText caps MQTT sessions (devices and provisioning
	// together); "0" means no cap. Parsed into MQTTMaxClients by Finish.
	MQTTMaxClientsText string `yaml:"mqtt-max-clients"`
	MQTTMaxClients     int    `yaml:"-"`
	// Telemetry ingestion: the batch window (the most a crash can lose),
	// how long samples are kept ("0": forever), and per-device limits.
	// Parsed into the typed fields below by Finish.
	TelemetryFlushText     string `yaml:"telemetry-flush"`
	TelemetryRetentionText string `yaml:"telemetry-retention"`
	DeviceMaxPayloadText   string `yaml:"device-max-payload"`
	DeviceMaxKeysText      string `yaml:"device-max-keys"`
	DeviceRateText         string `yaml:"device-rate"`
	DeviceBurstText        string `yaml:"device-burst"`

	TelemetryFlush     time.Duration `yaml:"-"`
	TelemetryRetention time.Duration `yaml:"-"`
	DeviceMaxPayload   int           `yaml:"-"`
	DeviceMaxKeys      int           `yaml:"-"`
	DeviceRate         float64       `yaml:"-"`
	DeviceBurst        int           `yaml:"-"`

	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string `yaml:"log-level"`
	LogFormat string `yaml:"log-format"`
	// AdminKeyFile holds an initial admin API key (first line). The key can
	// also come from ZEROTOUCH_ADMIN_KEY; it is never read from the YAML
	// file itself, so that config files can be shared without secrets.
	AdminKeyFile string `yaml:"admin-key-file"`
	// AdminKey is the initial admin key, from the environment or AdminKeyFile.
	AdminKey string `yaml:"-"`
}

// Defaults returns the out-of-the-box configuration.
func Defaults() Config {
	return Config{
		DataDir: "./zerotouch-data",
		HTTP:    ":8080",
		MQTT:    ":1883",
		HTTPS:   ":8443",
		MQTTS:   ":8883",
		// The host's own name is added at start (see server.tlsHosts).
		TLSHostsText:         "localhost,127.0.0.1,::1",
		CAKeyAlgorithm:       "ecdsa-p256",
		CertLifetimeText:     "90d",
		CertRenewalGraceText: "24h",
		// Well below the default limit of 20,000-odd open files of a
		// process here, leaving room for HTTP, the database and provisioning.
		MQTTMaxClientsText:     "10000",
		TelemetryFlushText:     "500ms",
		TelemetryRetentionText: "30d",
		DeviceMaxPayloadText:   "65536",
		DeviceMaxKeysText:      "1000",
		DeviceRateText:         "10",
		DeviceBurstText:        "100",
		LogLevel:               "info",
		LogFormat:              "text",
	}
}

// Setting describes one configuration key: its flag, environment variable
// and YAML name are derived from Name.
type Setting struct {
	Name  string // flag and YAML key, e.g. "http"
	Usage string
	field func(*Config) *string
}

// Env is the environment variable of a setting, e.g. ZEROTOUCH_HTTP.
func (s Setting) Env() string {
	return "ZEROTOUCH_" + strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
}

// Field returns the setting's value in c, for flag binding.
func (s Setting) Field(c *Config) *string { return s.field(c) }

// Settings lists every setting in the order --help shows them.
func Settings() []Setting {
	return []Setting{
		{"data", "data directory (database, keys)", func(c *Config) *string { return &c.DataDir }},
		{"http", "HTTP listen address (console, management API, device HTTP API, /metrics), or \"off\"", func(c *Config) *string { return &c.HTTP }},
		{"mqtt", "MQTT listen address (device provisioning and hub), or \"off\"", func(c *Config) *string { return &c.MQTT }},
		{"https", "HTTPS listen address (the HTTP listener's routes over TLS, client certificates optional), or \"off\"", func(c *Config) *string { return &c.HTTPS }},
		{"mqtts", "MQTT over TLS listen address (X.509 devices, client certificates optional), or \"off\"", func(c *Config) *string { return &c.MQTTS }},
		{"tls-hosts", "comma-separated host names and IP addresses the TLS listeners' certificate names (this host's name is added)", func(c *Config) *string { return &c.TLSHostsText }},
		{"tls-cert-file", "PEM server certificate (with its chain) for the TLS listeners, instead of one issued by the built-in CA", func(c *Config) *string { return &c.TLSCertFile }},
		{"tls-key-file", "PEM private key of --tls-cert-file", func(c *Config) *string { return &c.TLSKeyFile }},
		{"ca-key-algorithm", "key type of the built-in CA when it is created: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072", func(c *Config) *string { return &c.CAKeyAlgorithm }},
		{"ca-passphrase-file", "file holding the passphrase that seals the CA keys (or ZEROTOUCH_CA_PASSPHRASE); without it a key file in the data directory seals them", func(c *Config) *string { return &c.CAPassphraseFile }},
		{"cert-lifetime", "default lifetime of device certificates (e.g. 90d, 720h)", func(c *Config) *string { return &c.CertLifetimeText }},
		{"cert-renewal-grace", "how long a renewed device certificate stays valid if the device never uses its renewal (it is revoked as soon as it does)", func(c *Config) *string { return &c.CertRenewalGraceText }},
		{"public-url", "URL devices use to reach this server's HTTP(S) listener; certificates then name <public-url>/ca/crl as their CRL", func(c *Config) *string { return &c.PublicURL }},
		{"hub-name", "host name[:port] devices registered through DPS are told to connect to (default: this host's name and the MQTTS port)", func(c *Config) *string { return &c.HubName }},
		{"hub-region", "region of the built-in hub for DPS geoLatency allocation (letters, digits, - _ .; default: none)", func(c *Config) *string { return &c.HubRegion }},
		{"region-map", "file of rules giving a registering device its region for DPS geoLatency allocation from its source address, one \"prefix=region\" a line (e.g. 10.1.0.0/16=eu-west; first match wins; # comments)", func(c *Config) *string { return &c.RegionMapFile }},
		{"dps-webhook-url", "custom allocation webhook of DPS enrollments with the custom policy (an Azure Function URL works, ?code= included)", func(c *Config) *string { return &c.DPSWebhookURL }},
		{"mqtt-max-clients", "maximum MQTT sessions, devices and provisioning together (0: no limit; provisioning may use at most half)", func(c *Config) *string { return &c.MQTTMaxClientsText }},
		{"telemetry-flush", "telemetry batch window: values are committed together this often, and a crash loses at most this much (e.g. 500ms, 2s)", func(c *Config) *string { return &c.TelemetryFlushText }},
		{"telemetry-retention", "how long telemetry values are kept (e.g. 30d, 72h; 0: forever); latest values and attributes are kept", func(c *Config) *string { return &c.TelemetryRetentionText }},
		{"device-max-payload", "largest message a device may send, in bytes", func(c *Config) *string { return &c.DeviceMaxPayloadText }},
		{"device-max-keys", "most values or attributes in one device message", func(c *Config) *string { return &c.DeviceMaxKeysText }},
		{"device-rate", "messages per second a device may send, sustained", func(c *Config) *string { return &c.DeviceRateText }},
		{"device-burst", "messages a device may send at once above its rate", func(c *Config) *string { return &c.DeviceBurstText }},
		{"log-level", "log level: debug, info, warn, error", func(c *Config) *string { return &c.LogLevel }},
		{"log-format", "log format: text or json", func(c *Config) *string { return &c.LogFormat }},
		{"admin-key-file", "file holding the initial admin API key (instead of a generated one)", func(c *Config) *string { return &c.AdminKeyFile }},
	}
}

// LoadFile applies a YAML file on top of c. Unknown keys are an error, so
// that a typo does not silently leave a default in place.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// LoadEnv applies ZEROTOUCH_* variables on top of c; lookup is os.LookupEnv
// in production.
func (c *Config) LoadEnv(lookup func(string) (string, bool)) {
	for _, s := range Settings() {
		if v, ok := lookup(s.Env()); ok && v != "" {
			*s.field(c) = v
		}
	}
	if v, ok := lookup("ZEROTOUCH_ADMIN_KEY"); ok && v != "" {
		c.AdminKey = v
	}
	if v, ok := lookup("ZEROTOUCH_CA_PASSPHRASE"); ok && v != "" {
		c.CAPassphrase = []byte(v)
	}
}

// Finish reads the admin key file (when the key did not come from the
// environment) and validates everything. Errors say what to fix.
func (c *Config) Finish() (err error) {
	var errs []error
	for _, l := range []struct{ name, addr string }{{"http", c.HTTP}, {"mqtt", c.MQTT}, {"https", c.HTTPS}, {"mqtts", c.MQTTS}} {
		if err := checkAddr(l.addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", l.name, l.addr, err))
		}
	}
	if n, err := strconv.Atoi(c.MQTTMaxClientsText); err != nil || n < 0 {
		errs = append(errs, fmt.Errorf("--mqtt-max-clients %q: want a number ≥ 0", c.MQTTMaxClientsText))
	} else {
		c.MQTTMaxClients = n
	}
	if d, err := ParseDuration(c.TelemetryFlushText); err != nil || d < time.Millisecond || d > time.Minute {
		errs = append(errs, fmt.Errorf("--telemetry-flush %q: want a duration between 1ms and 1m, e.g. 500ms", c.TelemetryFlushText))
	} else {
		c.TelemetryFlush = d
	}
	if d, err := ParseDuration(c.TelemetryRetentionText); err != nil || d < 0 || (d > 0 && d < time.Minute) {
		errs = append(errs, fmt.Errorf("--telemetry-retention %q: want 0 (forever) or a duration of at least 1m, e.g. 30d or 72h", c.TelemetryRetentionText))
	} else {
		c.TelemetryRetention = d
	}
	positive := func(flag, text string, max int, dst *int) {
		if n, err := strconv.Atoi(text); err != nil || n <= 0 || n > max {
			errs = append(errs, fmt.Errorf("--%s %q: want a whole number from 1 to %d", flag, text, max))
		} else {
			*dst = n
		}
	}
	positive("device-max-payload", c.DeviceMaxPayloadText, 16<<20, &c.DeviceMaxPayload)
	positive("device-max-keys", c.DeviceMaxKeysText, 100_000, &c.DeviceMaxKeys)
	positive("device-burst", c.DeviceBurstText, 1_000_000, &c.DeviceBurst)
	if r, err := strconv.ParseFloat(c.DeviceRateText, 64); err != nil || !(r > 0) || r > 1e6 {
		errs = append(errs, fmt.Errorf("--device-rate %q: want messages per second, a number above 0 (e.g. 0.5, 10)", c.DeviceRateText))
	} else {
		c.DeviceRate = r
	}
	if len(c.TLSHosts()) == 0 && c.TLSCertFile == "" && (c.HTTPS != Off || c.MQTTS != Off) {
		errs = append(errs, errors.New("--tls-hosts is empty: name at least one host for the TLS listeners' certificate"))
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together: give both or neither"))
	}
	if d, err := ParseDuration(c.CertLifetimeText); err != nil || d < time.Hour || d > 20*365*24*time.Hour {
		errs = append(errs, fmt.Errorf("--cert-lifetime %q: want a duration from 1h to 20 years, e.g. 90d", c.CertLifetimeText))
	} else {
		c.CertLifetime = d
	}
	if d, err := ParseDuration(c.CertRenewalGraceText); err != nil || d < time.Minute || d > 365*24*time.Hour {
		errs = append(errs, fmt.Errorf("--cert-renewal-grace %q: want a duration from 1m to 365d, e.g. 24h", c.CertRenewalGraceText))
	} else {
		c.CertRenewalGrace = d
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--public-url %q: want an absolute http(s) URL, e.g. https://zt.example.com:8443", c.PublicURL))
		}
	}
	if c.HubName != "" {
		host, port, err := net.SplitHostPort(c.HubName)
		if err != nil {
			host, port = c.HubName, ""
		}
		if _, perr := strconv.ParseUint(port, 10, 16); host == "" || strings.ContainsAny(host, "/ ") || (port != "" && perr != nil) {
			errs = append(errs, fmt.Errorf("--hub-name %q: want a host name, optionally with :port, e.g. hub.example.com or hub.example.com:8883", c.HubName))
		}
	}
	if err := registry.ValidateHubRegion(c.HubRegion); err != nil {
		errs = append(errs, fmt.Errorf("--hub-region %q: want letters, digits, '-', '_' and '.', at most %d, e.g. eu-west", c.HubRegion, registry.MaxHubRegionLen))
	}
	if c.RegionMapFile != "" {
		if c.Regions, err = readRegionMap(c.RegionMapFile); err != nil {
			errs = append(errs, fmt.Errorf("--region-map %s: %w", c.RegionMapFile, err))
		}
	}
	if c.DPSWebhookURL != "" {
		if u, err := url.Parse(c.DPSWebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--dps-webhook-url: want an absolute http(s) URL"))
		}
	}
	if _, err := pki.ParseKeyAlgorithm(c.CAKeyAlgorithm); err != nil {
		errs = append(errs, fmt.Errorf("--ca-key-algorithm: %w", err))
	}
	if len(c.CAPassphrase) > 0 && c.CAPassphraseFile != "" {
		errs = append(errs, errors.New("the CA passphrase is given twice: set ZEROTOUCH_CA_PASSPHRASE or --ca-passphrase-file, not both"))
	} else if c.CAPassphraseFile != "" {
		if c.CAPassphrase, err = pki.ReadPassphraseFile(c.CAPassphraseFile); err != nil {
			errs = append(errs, fmt.Errorf("--ca-passphrase-file: %w", err))
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data must not be empty"))
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if c.AdminKey == "" && c.AdminKeyFile != "" {
		b, err := os.ReadFile(c.AdminKeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("--admin-key-file: %w", err))
		} else {
			c.AdminKey = strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
			if c.AdminKey == "" {
				errs = append(errs, fmt.Errorf("--admin-key-file %s is empty", c.AdminKeyFile))
			}
		}
	}
	if c.AdminKey != "" && len(c.AdminKey) < 16 {
		errs = append(errs, errors.New("the initial admin key must be at least 16 characters long"))
	}
	return errors.Join(errs...)
}

// maxRegionMapFile caps a region map file: allocate.MaxRegionRules lines
// of allocate.MaxRegionLineLen, with room for comments.
const maxRegionMapFile = 8 << 20

// readRegionMap reads and parses a region map file; errors name the line.
func readRegionMap(path string) (allocate.RegionMap, error) {
	f, err := os.Open(path)
	if err != nil {
		return allocate.RegionMap{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRegionMapFile+1))
	if err != nil {
		return allocate.RegionMap{}, err
	}
	if len(b) > maxRegionMapFile {
		return allocate.RegionMap{}, fmt.Errorf("larger than %d bytes", maxRegionMapFile)
	}
	return allocate.ParseRegionMap(string(b))
}

// TLSHosts is TLSHostsText as a list.
func (c Config) TLSHosts() []string {
	var hosts []string
	for h := range strings.SplitSeq(c.TLSHostsText, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// ParseDuration parses a Go duration ("500ms", "72h") or a number of days
// ("30d"); "0" is zero.
func ParseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || n < 0 || n > 100*365 {
			return 0, fmt.Errorf("bad number of days %q", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	return time.ParseDuration(s)
}

func checkAddr(addr string) error {
	if addr == Off {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, :port or off")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Redacted returns the configuration as YAML with secrets hidden, for
// --check-config and the start-up log.
func (c Config) Redacted() string {
	out := c
	if u, err := url.Parse(c.DPSWebhookURL); err == nil && u.RawQuery != "" {
		// An Azure Function's key rides in ?code=.
		u.RawQuery = "<hidden>"
		out.DPSWebhookURL = u.String()
	}
	b, _ := yaml.Marshal(out)
	s := string(b)
	if c.AdminKey != "" {
		s += "admin-key: <set, hidden>\n"
	}
	if len(c.CAPassphrase) > 0 {
		s += "ca-passphrase: <set, hidden>\n"
	}
	return s
}
