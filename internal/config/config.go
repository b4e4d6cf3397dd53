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
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
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
	// MQTTMaxClientsText caps MQTT sessions (devices and provisioning
	// together); "0" means no cap. Parsed into MQTTMaxClients by Finish.
	MQTTMaxClientsText string `yaml:"mqtt-max-clients"`
	MQTTMaxClients     int    `yaml:"-"`
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
		// Well below the default limit of 20,000-odd open files of a
		// process here, leaving room for HTTP, the database and provisioning.
		MQTTMaxClientsText: "10000",
		LogLevel:           "info",
		LogFormat:          "text",
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
		{"mqtt-max-clients", "maximum MQTT sessions, devices and provisioning together (0: no limit; provisioning may use at most half)", func(c *Config) *string { return &c.MQTTMaxClientsText }},
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
}

// Finish reads the admin key file (when the key did not come from the
// environment) and validates everything. Errors say what to fix.
func (c *Config) Finish() error {
	var errs []error
	for _, l := range []struct{ name, addr string }{{"http", c.HTTP}, {"mqtt", c.MQTT}} {
		if err := checkAddr(l.addr); err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: %w", l.name, l.addr, err))
		}
	}
	if n, err := strconv.Atoi(c.MQTTMaxClientsText); err != nil || n < 0 {
		errs = append(errs, fmt.Errorf("--mqtt-max-clients %q: want a number ≥ 0", c.MQTTMaxClientsText))
	} else {
		c.MQTTMaxClients = n
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
	b, _ := yaml.Marshal(out)
	s := string(b)
	if c.AdminKey != "" {
		s += "admin-key: <set, hidden>\n"
	}
	return s
}
