package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestPrecedenceFileThenEnv(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "zt.yaml")
	os.WriteFile(file, []byte("http: 127.0.0.1:9000\nmqtt: off\ndata: /from/file\nmqtt-max-clients: 500\n"), 0o600)
	c := Defaults()
	if err := c.LoadFile(file); err != nil {
		t.Fatal(err)
	}
	c.LoadEnv(env(map[string]string{"ZEROTOUCH_DATA": "/from/env", "ZEROTOUCH_ADMIN_KEY": "0123456789abcdef"}))
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if c.HTTP != "127.0.0.1:9000" || c.MQTT != Off || c.DataDir != "/from/env" || c.AdminKey != "0123456789abcdef" || c.MQTTMaxClients != 500 {
		t.Fatalf("got %+v", c)
	}
	if r := c.Redacted(); strings.Contains(r, "0123456789abcdef") || !strings.Contains(r, "admin-key: <set, hidden>") {
		t.Fatalf("Redacted leaks or omits the key:\n%s", r)
	}
}

func TestInvalid(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"bad http", func(c *Config) { c.HTTP = "8080" }, "--http"},
		{"bad port", func(c *Config) { c.MQTT = ":nope" }, "bad port"},
		{"level", func(c *Config) { c.LogLevel = "loud" }, "--log-level"},
		{"max clients", func(c *Config) { c.MQTTMaxClientsText = "-1" }, "--mqtt-max-clients"},
		{"max clients text", func(c *Config) { c.MQTTMaxClientsText = "many" }, "--mqtt-max-clients"},
		{"format", func(c *Config) { c.LogFormat = "xml" }, "--log-format"},
		{"empty data", func(c *Config) { c.DataDir = "" }, "--data"},
		{"short key", func(c *Config) { c.AdminKey = "short" }, "16 characters"},
		{"missing key file", func(c *Config) { c.AdminKeyFile = filepath.Join(dir, "none") }, "--admin-key-file"},
		{"empty key file", func(c *Config) { c.AdminKeyFile = empty }, "is empty"},
		{"bad https", func(c *Config) { c.HTTPS = "8443" }, "--https"},
		{"bad mqtts", func(c *Config) { c.MQTTS = ":x" }, "--mqtts"},
		{"no tls hosts", func(c *Config) { c.TLSHostsText = " , " }, "--tls-hosts"},
		{"cert without key", func(c *Config) { c.TLSCertFile = empty }, "--tls-key-file"},
		{"ca key algorithm", func(c *Config) { c.CAKeyAlgorithm = "dsa" }, "--ca-key-algorithm"},
		{"cert lifetime", func(c *Config) { c.CertLifetimeText = "10m" }, "--cert-lifetime"},
		{"public url", func(c *Config) { c.PublicURL = "zt.example.com" }, "--public-url"},
		{"passphrase twice", func(c *Config) { c.CAPassphrase = []byte("long enough passphrase"); c.CAPassphraseFile = empty }, "twice"},
		{"missing passphrase file", func(c *Config) { c.CAPassphraseFile = filepath.Join(dir, "none") }, "--ca-passphrase-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			tt.mod(&c)
			err := c.Finish()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Finish() = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestFileErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("htpp: :1\n"), 0o600)
	garbage := filepath.Join(dir, "garbage.yaml")
	os.WriteFile(garbage, []byte("\x00\xff: [\n"), 0o600)
	for _, f := range []string{typo, garbage, filepath.Join(dir, "missing.yaml")} {
		c := Defaults()
		if err := c.LoadFile(f); err == nil {
			t.Errorf("LoadFile(%s) accepted it", filepath.Base(f))
		}
	}
}

func TestAdminKeyFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "key")
	os.WriteFile(f, []byte("  0123456789abcdefXYZ \nignored\n"), 0o600)
	c := Defaults()
	c.AdminKeyFile = f
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if c.AdminKey != "0123456789abcdefXYZ" {
		t.Fatalf("AdminKey = %q", c.AdminKey)
	}
}
