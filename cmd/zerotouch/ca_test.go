package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/api/apitest"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/server"
	"github.com/zerotouch/zerotouch/internal/store/sqlite"
)

const nodeAdminKey = "cli-test-admin-key-0123456789"

// newNodeCLI runs a whole zerotouch node in-process (store, built-in CA,
// management API and the public CA routes on one HTTP listener; MQTT and
// the TLS listeners off) on dataDir (a new one when empty), with one API
// key per role, and returns a CLI that talks to it.
func newNodeCLI(t *testing.T, dataDir string) *cli {
	t.Helper()
	t.Setenv("ZEROTOUCH_API_KEY", "")
	t.Setenv("ZEROTOUCH_SERVER", "")
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := config.Defaults()
	cfg.DataDir = dataDir
	cfg.HTTP = "127.0.0.1:0"
	cfg.MQTT, cfg.HTTPS, cfg.MQTTS = config.Off, config.Off, config.Off
	cfg.AdminKey = nodeAdminKey
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Banner: io.Discard})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	url := "http://" + srv.HTTPAddr().String()
	keys := map[string]string{registry.RoleAdmin: nodeAdminKey}
	admin, _ := apiclient.New(url, nodeAdminKey)
	for _, role := range []string{registry.RoleOperator, registry.RoleOEM, registry.RoleViewer} {
		k, err := admin.CreateAPIKey(context.Background(), api.CreateAPIKeyRequest{Name: role, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		keys[role] = k.Key
	}
	return &cli{t: t, srv: &apitest.Server{URL: url, Keys: keys}}
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// firstCert parses the first certificate of a PEM text.
func firstCert(t *testing.T, pemText []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(pemText)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("no PEM certificate in %q", pemText)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testCA makes a self-signed CA certificate (PEM) with the key usage
// given, and its key (PKCS#8 PEM).
func testCA(t *testing.T, cn string, usage x509.KeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: usage,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

func TestCAShowExportCRL(t *testing.T) {
	c := newNodeCLI(t, "")
	dir := t.TempDir()

	var ca api.CAInfo
	c.json(&ca, "ca", "show")
	if ca.Issuer.Subject != "CN=zerotouch Issuing CA,O=zerotouch" || ca.Root.Subject != "CN=zerotouch Root CA,O=zerotouch" || ca.ChainPEM == "" {
		t.Fatalf("ca show -o json: %+v", ca)
	}
	r := c.ok("ca", "show")
	for _, want := range []string{"Issuing CA:", ca.Issuer.Fingerprint, "Root CA:", ca.Root.Fingerprint, c.srv.URL + "/ca/chain.pem", c.srv.URL + "/ca/crl"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ca show lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := c.run(registry.RoleViewer, "ca", "show"); r.code != 0 {
		t.Errorf("viewer: %+v", r)
	}

	// The chain and the CRL are public: no API key needed.
	public := func(args ...string) result {
		t.Helper()
		r := execute(append([]string{"--server", c.srv.URL}, args...)...)
		if r.code != 0 {
			t.Fatalf("zerotouch %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r
	}
	if r := public("ca", "export"); r.stdout != ca.ChainPEM {
		t.Errorf("ca export:\n%s", r.stdout)
	}
	chainFile := filepath.Join(dir, "ca.pem")
	r = public("ca", "export", "--out", chainFile)
	if r.stdout != "" || string(readFile(t, chainFile)) != ca.ChainPEM || !strings.Contains(r.stderr, "zerotouch Issuing CA") {
		t.Errorf("ca export --out: %+v", r)
	}
	var exp chainExport
	if err := json.Unmarshal([]byte(public("ca", "export", "-o", "json").stdout), &exp); err != nil || exp.ChainPEM != ca.ChainPEM {
		t.Errorf("ca export -o json: %+v, %v", exp, err)
	}

	issuer := firstCert(t, []byte(ca.ChainPEM))
	r = public("ca", "crl")
	b, _ := pem.Decode([]byte(r.stdout))
	if b == nil || b.Type != "X509 CRL" {
		t.Fatalf("ca crl: %q", r.stdout)
	}
	crlFile := filepath.Join(dir, "crl.der")
	public("ca", "crl", "--der", "--out", crlFile)
	crl, err := x509.ParseRevocationList(readFile(t, crlFile))
	if err != nil || crl.CheckSignatureFrom(issuer) != nil || len(crl.RevokedCertificateEntries) != 0 {
		t.Fatalf("ca crl --der: %v", err)
	}
	if r := public("ca", "crl", "--text"); !strings.Contains(r.stdout, "Entries:      0") || !strings.Contains(r.stdout, "CN=zerotouch Issuing CA") {
		t.Errorf("ca crl --text:\n%s", r.stdout)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ca", "crl", "--der", "--text"}, "exclude each other"},
		{[]string{"ca", "crl", "--der", "-o", "json"}, "exclude each other"},
		{[]string{"ca", "show", "extra"}, "accepts 0 arg"},
		{[]string{"ca", "frobnicate"}, "unknown command"},
	} {
		if r := c.run(registry.RoleAdmin, tc.args...); r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d: %s", tc.args, r.code, r.stderr)
		}
	}
	// A node without a built-in CA (the bare API) says so.
	bare := newCLI(t)
	if r := bare.run(registry.RoleAdmin, "ca", "show"); r.code != exitFailure || !strings.Contains(r.stderr, "no built-in CA") {
		t.Errorf("no CA: %+v", r)
	}
	if r := bare.run(registry.RoleAdmin, "ca", "export"); r.code != exitFailure || !strings.Contains(r.stderr, "404") {
		t.Errorf("no CA routes: %+v", r)
	}
}

func TestCAImport(t *testing.T) {
	for _, v := range []string{"ZEROTOUCH_DATA", "ZEROTOUCH_CONFIG", "ZEROTOUCH_CA_PASSPHRASE", "ZEROTOUCH_CA_PASSPHRASE_FILE"} {
		t.Setenv(v, "")
	}
	files := t.TempDir()
	certPEM, keyPEM := testCA(t, "Acme Device CA", x509.KeyUsageCertSign|x509.KeyUsageCRLSign)
	certFile := writeFile(t, files, "ca.crt", certPEM)
	keyFile := writeFile(t, files, "ca.key", keyPEM)
	keyBody := strings.Split(string(keyPEM), "\n")[1] // base64 of the key, for leaks

	data := filepath.Join(t.TempDir(), "data")
	r := execute("ca", "import", "--cert", certFile, "--key", keyFile, "--data", data)
	if r.code != 0 || !strings.Contains(r.stdout, "CN=Acme Device CA") || !strings.Contains(r.stderr, "start zerotouch serve") {
		t.Fatalf("import: %+v", r)
	}
	if strings.Contains(r.stdout+r.stderr, keyBody) {
		t.Fatal("import printed the key")
	}
	ca, err := pki.Open(context.Background(), filepath.Join(data, server.CADir), pki.Options{})
	if err != nil || pki.Fingerprint(ca.Issuer().Raw) != pki.Fingerprint(firstCert(t, certPEM).Raw) {
		t.Fatalf("pki.Open after import: %v, %v", ca, err)
	}

	// Refused into a directory that holds a CA; the CA stays.
	r = execute("ca", "import", "--cert", certFile, "--key", keyFile, "--data", data)
	if r.code != exitFailure || !strings.Contains(r.stderr, "already holds a CA") || !strings.Contains(r.stderr, "nothing was imported") {
		t.Fatalf("import over a CA: %+v", r)
	}

	// The server starts on it and issues from it.
	c := newNodeCLI(t, data)
	var info api.CAInfo
	c.json(&info, "ca", "show")
	if info.Issuer.Subject != "CN=Acme Device CA" {
		t.Errorf("the server's CA: %+v", info)
	}

	t.Run("passphrase", func(t *testing.T) {
		pass := writeFile(t, files, "pass", []byte("correct horse battery staple\n"))
		ca2 := filepath.Join(t.TempDir(), "data")
		r := execute("ca", "import", "--cert", certFile, "--key", keyFile, "--data", ca2, "--ca-passphrase-file", pass, "-o", "json")
		var res importedCA
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || res.SealedWith != "passphrase" || !strings.Contains(r.stderr, "same passphrase") {
			t.Fatalf("import with a passphrase: %+v", r)
		}
		dir := filepath.Join(ca2, server.CADir)
		if _, err := pki.Open(context.Background(), dir, pki.Options{}); !errors.Is(err, pki.ErrWrongKEK) {
			t.Errorf("opened without the passphrase: %v", err)
		}
		if _, err := pki.Open(context.Background(), dir, pki.Options{Passphrase: []byte("correct horse battery staple")}); err != nil {
			t.Errorf("open with the passphrase: %v", err)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		noCRL, noCRLKey := testCA(t, "No CRL CA", x509.KeyUsageCertSign)
		otherCert, _ := testCA(t, "Other CA", x509.KeyUsageCertSign|x509.KeyUsageCRLSign)
		short := writeFile(t, files, "short", []byte("short\n"))
		fresh := func() string { return filepath.Join(t.TempDir(), "data") }
		for _, tc := range []struct {
			name string
			args []string
			env  map[string]string
			code int
			want string
		}{
			{"no --key", []string{"--cert", certFile}, nil, exitUsage, "--cert and --key are required"},
			{"no CRL signing", []string{"--cert", writeFile(t, files, "nocrl.crt", noCRL), "--key", writeFile(t, files, "nocrl.key", noCRLKey)}, nil, exitFailure, "may not sign CRLs"},
			{"key of another CA", []string{"--cert", writeFile(t, files, "other.crt", otherCert), "--key", keyFile}, nil, exitFailure, "does not belong"},
			{"key file is a certificate", []string{"--cert", certFile, "--key", certFile}, nil, exitFailure, "no private key"},
			{"missing file", []string{"--cert", filepath.Join(files, "none"), "--key", keyFile}, nil, exitFailure, "no such file"},
			{"short passphrase", []string{"--cert", certFile, "--key", keyFile, "--ca-passphrase-file", short}, nil, exitFailure, "at least 12"},
			{"two passphrases", []string{"--cert", certFile, "--key", keyFile, "--ca-passphrase-file", short}, map[string]string{"ZEROTOUCH_CA_PASSPHRASE": "correct horse battery staple"}, exitUsage, "give one"},
			{"bad output", []string{"--cert", certFile, "--key", keyFile, "-o", "yaml"}, nil, exitUsage, "unknown output format"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for k, v := range tc.env {
					t.Setenv(k, v)
				}
				d := fresh()
				r := execute(append([]string{"ca", "import", "--data", d}, tc.args...)...)
				if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
					t.Fatalf("exit %d, want %d; stderr %q lacks %q", r.code, tc.code, r.stderr, tc.want)
				}
				if _, err := os.Stat(filepath.Join(d, server.CADir)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused import left %s: %v", d, err)
				}
			})
		}
	})

	t.Run("data directory from the config file", func(t *testing.T) {
		d := filepath.Join(t.TempDir(), "data")
		cfg := writeFile(t, files, "zerotouch.yaml", []byte("data: "+d+"\n"))
		if r := execute("ca", "import", "--cert", certFile, "--key", keyFile, "--config", cfg); r.code != 0 {
			t.Fatalf("import: %+v", r)
		}
		if _, err := pki.Open(context.Background(), filepath.Join(d, server.CADir), pki.Options{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestCAImportWhileServing: a data directory whose database another
// process holds open (a running server) is refused.
func TestCAImportWhileServing(t *testing.T) {
	if !canProbeLocks {
		t.Skip("lockHolder cannot see other processes' locks on this platform")
	}
	t.Setenv("ZEROTOUCH_CA_PASSPHRASE", "")
	data := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldDatabase$")
	cmd.Env = append(os.Environ(), "ZEROTOUCH_TEST_HOLD_DB="+filepath.Join(data, server.DatabaseFile))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the helper exits
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	})
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	certPEM, keyPEM := testCA(t, "Acme Device CA", x509.KeyUsageCertSign|x509.KeyUsageCRLSign)
	files := t.TempDir()
	r := execute("ca", "import", "--data", data, "--cert", writeFile(t, files, "ca.crt", certPEM), "--key", writeFile(t, files, "ca.key", keyPEM))
	if r.code != exitFailure || !strings.Contains(r.stderr, "seems to be running") {
		t.Fatalf("import while serving: %+v", r)
	}
}

// TestHelperHoldDatabase is not a test: TestCAImportWhileServing runs it
// in a child process to hold a store open, as a running server does.
func TestHelperHoldDatabase(t *testing.T) {
	path := os.Getenv("ZEROTOUCH_TEST_HOLD_DB")
	if path == "" {
		return
	}
	st, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	_, _ = io.Copy(io.Discard, os.Stdin)
	st.Close()
}
