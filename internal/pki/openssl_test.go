package pki

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerotouch/zerotouch/internal/testutil"
)

// OpenSSL plays both a device (it makes the requests) and a relying party
// (it verifies chains and reads the CRL): an implementation nobody here
// wrote.

type openssl struct {
	t   *testing.T
	bin string
	dir string
}

func newOpenSSL(t *testing.T) *openssl {
	return &openssl{t: t, bin: testutil.RequireTool(t, "openssl"), dir: t.TempDir()}
}

func (o *openssl) path(name string) string { return filepath.Join(o.dir, name) }

func (o *openssl) write(name string, data []byte) string {
	o.t.Helper()
	if err := os.WriteFile(o.path(name), data, 0o600); err != nil {
		o.t.Fatal(err)
	}
	return o.path(name)
}

func (o *openssl) read(name string) []byte {
	o.t.Helper()
	b, err := os.ReadFile(o.path(name))
	if err != nil {
		o.t.Fatal(err)
	}
	return b
}

// run runs openssl in o.dir and returns its combined output.
func (o *openssl) run(args ...string) (string, error) {
	cmd := exec.Command(o.bin, args...)
	cmd.Dir = o.dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (o *openssl) must(args ...string) string {
	o.t.Helper()
	out, err := o.run(args...)
	if err != nil {
		o.t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// req makes a key and a request with openssl req -newkey.
func (o *openssl) req(name, newkey, subj string, extra ...string) []byte {
	o.t.Helper()
	args := []string{"req", "-new", "-newkey", newkey, "-nodes", "-subj", subj, "-keyout", name + ".key", "-out", name + ".csr"}
	if strings.HasPrefix(newkey, "ec") {
		args = append(args, "-pkeyopt", "ec_paramgen_curve:"+strings.TrimPrefix(newkey, "ec:"))
		args[3] = "ec"
	}
	o.must(append(args, extra...)...)
	return o.read(name + ".csr")
}

func TestOpenSSL(t *testing.T) {
	o := newOpenSSL(t)
	ca := newTestCA(t, Options{CRLURL: "http://zt.example.com/crl.pem"})
	o.write("root.crt", pemCert(ca.Root()))
	o.write("issuing.crt", pemCert(ca.Issuer()))
	o.write("chain.pem", ca.Chain())
	profile := Profile{CommonName: "dev-1", DNSNames: []string{"dev-1.plant.example"}}

	issued := map[string]*Issued{}
	for _, tc := range []struct {
		name, newkey string
		extra        []string
	}{
		{"ec", "ec:P-256", nil},
		{"p384", "ec:P-384", nil},
		{"rsa", "rsa:2048", nil},
		{"ed25519", "ed25519", nil},
		{"san", "ec:P-256", []string{"-addext", "subjectAltName=DNS:dev-1.plant.example"}},
	} {
		t.Run("sign "+tc.name, func(t *testing.T) {
			iss, err := ca.SignCSR(o.req(tc.name, tc.newkey, "/CN=dev-1", tc.extra...), profile)
			if err != nil {
				t.Fatalf("SignCSR(openssl's request): %v", err)
			}
			o.write(tc.name+".crt", iss.PEM())
			out := o.must("verify", "-CAfile", "root.crt", "-untrusted", "issuing.crt", "-purpose", "sslclient", tc.name+".crt")
			if !strings.Contains(out, ": OK") {
				t.Fatalf("openssl verify: %s", out)
			}
			// The certificate belongs to openssl's key.
			if out := o.must("x509", "-in", tc.name+".crt", "-noout", "-pubkey"); out != o.must("pkey", "-in", tc.name+".key", "-pubout") {
				t.Fatal("the certificate's key is not the request's")
			}
			fp, err := ParseFingerprint(o.must("x509", "-in", tc.name+".crt", "-noout", "-fingerprint", "-sha256"))
			if err != nil || fp != iss.Fingerprint {
				t.Fatalf("openssl's fingerprint %s (%v), ours %s", fp, err, iss.Fingerprint)
			}
			serial, err := ParseSerial(strings.TrimPrefix(strings.TrimSpace(o.must("x509", "-in", tc.name+".crt", "-noout", "-serial")), "serial="))
			if err != nil || SerialHex(serial) != iss.Serial {
				t.Fatalf("openssl's serial %v (%v), ours %s", serial, err, iss.Serial)
			}
			text := o.must("x509", "-in", tc.name+".crt", "-noout", "-text")
			for _, want := range []string{"Subject: CN = dev-1", "TLS Web Client Authentication", "CA:FALSE",
				"DNS:dev-1.plant.example", "URI:http://zt.example.com/crl.pem", "X509v3 Subject Key Identifier", "X509v3 Authority Key Identifier"} {
				if !strings.Contains(text, want) {
					t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
				}
			}
			issued[tc.name] = iss
		})
	}

	for _, tc := range []struct {
		name, newkey, subj string
		extra              []string
		want               error
	}{
		{"weak RSA", "rsa:1024", "/CN=dev-1", nil, ErrKeyNotAllowed},
		{"P-521", "ec:P-521", "/CN=dev-1", nil, ErrKeyNotAllowed},
		{"CA request", "ec:P-256", "/CN=dev-1", []string{"-addext", "basicConstraints=critical,CA:TRUE"}, ErrCANotAllowed},
		{"another CN", "ec:P-256", "/CN=dev-2", nil, ErrNameNotAllowed},
		{"a foreign SAN", "ec:P-256", "/CN=dev-1", []string{"-addext", "subjectAltName=DNS:bank.example.com"}, ErrNameNotAllowed},
	} {
		t.Run("refuse "+tc.name, func(t *testing.T) {
			_, err := ca.SignCSR(o.req("bad", tc.newkey, tc.subj, tc.extra...), profile)
			wantErr(t, err, ErrBadCSR, tc.want)
		})
	}

	t.Run("server certificate", func(t *testing.T) {
		cert, _, err := ca.IssueServerCertificate([]string{"zt.example.com", "127.0.0.1"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		o.write("server.crt", pemCert(cert.Leaf))
		out := o.must("verify", "-CAfile", "root.crt", "-untrusted", "issuing.crt", "-purpose", "sslserver", "-verify_hostname", "zt.example.com", "server.crt")
		if !strings.Contains(out, ": OK") {
			t.Fatalf("openssl verify: %s", out)
		}
		if out, err := o.run("verify", "-CAfile", "root.crt", "-untrusted", "issuing.crt", "-purpose", "sslclient", "server.crt"); err == nil {
			t.Fatalf("a server certificate verifies for client authentication:\n%s", out)
		}
	})

	t.Run("CRL", func(t *testing.T) {
		revoked, kept := issued["ec"], issued["rsa"]
		if revoked == nil || kept == nil {
			t.Skip("the signing subtests failed")
		}
		crl, err := ca.CRL([]Revoked{{Serial: revoked.Certificate.SerialNumber, RevokedAt: revoked.Certificate.NotBefore, Reason: 1}}, 0)
		if err != nil {
			t.Fatal(err)
		}
		o.write("crl.pem", crl.PEM())
		text := o.must("crl", "-in", "crl.pem", "-noout", "-text")
		for _, want := range []string{"Serial Number: " + strings.ToUpper(revoked.Serial), "Key Compromise", "X509v3 CRL Number",
			"CN = zerotouch Issuing CA", "Next Update"} {
			if !strings.Contains(text, want) {
				t.Errorf("openssl crl -text lacks %q:\n%s", want, text)
			}
		}
		if out := o.must("crl", "-in", "crl.pem", "-CAfile", "chain.pem", "-noout"); !strings.Contains(out, "verify OK") {
			t.Fatalf("openssl crl does not verify its signature: %s", out)
		}
		out, err := o.run("verify", "-crl_check", "-CAfile", "root.crt", "-untrusted", "issuing.crt", "-CRLfile", "crl.pem", "ec.crt")
		if err == nil || !strings.Contains(out, "certificate revoked") {
			t.Fatalf("openssl verify of the revoked certificate: %v\n%s", err, out)
		}
		out = o.must("verify", "-crl_check", "-CAfile", "root.crt", "-untrusted", "issuing.crt", "-CRLfile", "crl.pem", "rsa.crt")
		if !strings.Contains(out, ": OK") {
			t.Fatalf("openssl verify of a certificate not revoked: %s", out)
		}
	})

	t.Run("import openssl's CAs", func(t *testing.T) {
		caExt := []string{"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"}
		// PKCS#8 RSA, as openssl 3 writes it.
		o.must(append([]string{"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "oem-rsa.key", "-out", "oem-rsa.crt",
			"-subj", "/CN=OEM RSA CA", "-days", "30"}, caExt...)...)
		// SEC1 EC with its parameters block, as openssl ecparam writes it.
		o.must("ecparam", "-genkey", "-name", "prime256v1", "-out", "oem-ec.key")
		o.must(append([]string{"req", "-x509", "-key", "oem-ec.key", "-out", "oem-ec.crt", "-subj", "/CN=OEM EC CA", "-days", "30"}, caExt...)...)
		for _, name := range []string{"oem-rsa", "oem-ec"} {
			imported, err := Import(t.Context(), filepath.Join(t.TempDir(), "ca"), o.read(name+".crt"), o.read(name+".key"), Options{})
			if err != nil {
				t.Fatalf("Import(%s): %v", name, err)
			}
			iss, err := imported.SignCSR(o.req("dev-"+name, "ec:P-256", "/CN=dev-1"), profile)
			if err != nil {
				t.Fatal(err)
			}
			o.write(name+"-leaf.crt", iss.PEM())
			if out := o.must("verify", "-CAfile", name+".crt", "-purpose", "sslclient", name+"-leaf.crt"); !strings.Contains(out, ": OK") {
				t.Fatalf("openssl verify: %s", out)
			}
		}
		// A key encrypted by openssl is refused with what to do.
		o.must("pkcs8", "-topk8", "-in", "oem-ec.key", "-out", "oem-ec-enc.key", "-passout", "pass:secret")
		_, err := Import(t.Context(), filepath.Join(t.TempDir(), "ca"), o.read("oem-ec.crt"), o.read("oem-ec-enc.key"), Options{})
		if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "decrypt it first") {
			t.Fatalf("Import(encrypted key) = %v", err)
		}
	})
}
