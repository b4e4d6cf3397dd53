package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenCreatesThenLoads(t *testing.T) {
	for _, tc := range []struct {
		alg      KeyAlgorithm
		checkKey func(pub any) bool
	}{
		{"", func(pub any) bool { k, ok := pub.(*ecdsa.PublicKey); return ok && k.Curve.Params().Name == "P-256" }},
		{ECDSAP384, func(pub any) bool { k, ok := pub.(*ecdsa.PublicKey); return ok && k.Curve.Params().Name == "P-384" }},
		{RSA2048, func(pub any) bool { k, ok := pub.(*rsa.PublicKey); return ok && k.N.BitLen() == 2048 }},
		{RSA3072, func(pub any) bool { k, ok := pub.(*rsa.PublicKey); return ok && k.N.BitLen() == 3072 }},
	} {
		t.Run(string(tc.alg), func(t *testing.T) {
			if testing.Short() && tc.alg == RSA3072 {
				t.Skip("RSA-3072 key generation is slow")
			}
			dir := filepath.Join(t.TempDir(), "data", "ca")
			log, logs := logBuffer()
			ca, err := Open(t.Context(), dir, Options{KeyAlgorithm: tc.alg, Name: "Acme", Logger: log})
			if err != nil {
				t.Fatalf("Open (create): %v", err)
			}
			root, issuing := ca.Root(), ca.Issuer()
			if root == nil || len(ca.Certificates()) != 2 {
				t.Fatalf("chain = %d certificates, root %v; want issuing + root", len(ca.Certificates()), root)
			}
			for _, c := range []*struct {
				cert    interface{ CheckSignatureFrom(*x509.Certificate) error }
				parent  *x509.Certificate
				subject string
			}{{root, root, "Acme Root CA"}, {issuing, root, "Acme Issuing CA"}} {
				if err := c.cert.CheckSignatureFrom(c.parent); err != nil {
					t.Fatalf("%s not signed by %s: %v", c.subject, c.parent.Subject, err)
				}
			}
			if root.Subject.CommonName != "Acme Root CA" || issuing.Subject.CommonName != "Acme Issuing CA" {
				t.Errorf("subjects %q, %q", root.Subject, issuing.Subject)
			}
			if !root.IsCA || root.MaxPathLen != 1 || root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("root: IsCA %v, MaxPathLen %d, KeyUsage %b", root.IsCA, root.MaxPathLen, root.KeyUsage)
			}
			if !issuing.IsCA || issuing.MaxPathLen != 0 || !issuing.MaxPathLenZero ||
				issuing.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("issuing: IsCA %v, MaxPathLen %d (zero %v), KeyUsage %b", issuing.IsCA, issuing.MaxPathLen, issuing.MaxPathLenZero, issuing.KeyUsage)
			}
			if len(issuing.SubjectKeyId) == 0 || !bytes.Equal(issuing.AuthorityKeyId, root.SubjectKeyId) {
				t.Errorf("issuing SKI %x, AKI %x, root SKI %x", issuing.SubjectKeyId, issuing.AuthorityKeyId, root.SubjectKeyId)
			}
			if !tc.checkKey(issuing.PublicKey) || !tc.checkKey(root.PublicKey) {
				t.Errorf("keys are %s and %s, want %s", describeKey(root.PublicKey), describeKey(issuing.PublicKey), tc.alg)
			}
			if issuing.NotAfter.After(root.NotAfter) {
				t.Errorf("issuing CA outlives the root")
			}

			// The files, and their permissions.
			for name, perm := range map[string]fs.FileMode{
				".": 0o700, rootCertFile: 0o644, issuingCertFile: 0o644,
				rootKeyFile: 0o600, issuingKeyFile: 0o600, defaultKEKFile: 0o600,
			} {
				st, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if st.Mode().Perm() != perm {
					t.Errorf("%s has mode %v, want %v", name, st.Mode().Perm(), perm)
				}
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 5 {
				t.Errorf("CA directory holds %d entries, want 5 (no marker, no temporary file)", len(entries))
			}
			for _, name := range []string{rootKeyFile, issuingKeyFile} {
				b, _ := os.ReadFile(filepath.Join(dir, name))
				if !bytes.Contains(b, []byte(sealedBlockType)) || bytes.Contains(b, []byte("BEGIN PRIVATE KEY")) {
					t.Errorf("%s is not sealed:\n%s", name, b)
				}
			}

			iss, err := ca.SignCSR(csrFor(t, testKey(t, "p256"), "dev"), Profile{CommonName: "dev"})
			if err != nil {
				t.Fatalf("SignCSR: %v", err)
			}
			verifyLeaf(t, ca, iss.Certificate, x509.ExtKeyUsageClientAuth)

			again, err := Open(t.Context(), dir, Options{Logger: log})
			if err != nil {
				t.Fatalf("Open (load): %v", err)
			}
			if !again.Issuer().Equal(issuing) || !again.Root().Equal(root) || again.IssuerID() != ca.IssuerID() {
				t.Fatal("the reopened CA is another CA")
			}
			if !bytes.Equal(again.Chain(), ca.Chain()) {
				t.Fatal("Chain differs after reopening")
			}
			verifyLeaf(t, again, iss.Certificate, x509.ExtKeyUsageClientAuth)
			if !strings.Contains(logs.String(), "CA created") || !strings.Contains(logs.String(), "CA loaded") {
				t.Errorf("logs:\n%s", logs)
			}
		})
	}
}

func TestChainAndPool(t *testing.T) {
	ca := newTestCA(t, Options{})
	certs, err := ParseCertificates(ca.Chain())
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(ca.Issuer()) || !certs[1].Equal(ca.Root()) {
		t.Fatal("Chain is not issuing CA then root")
	}
	iss, err := ca.SignCSR(csrFor(t, testKey(t, "p256"), "dev"), Profile{CommonName: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	// The pool verifies a leaf sent alone, as tls.Config.ClientCAs must.
	if _, err := iss.Certificate.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf does not verify against Pool: %v", err)
	}
	other := newTestCA(t, Options{})
	anyUsage := []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	if _, err := iss.Certificate.Verify(x509.VerifyOptions{Roots: other.Pool(), KeyUsages: anyUsage}); err == nil {
		t.Fatal("leaf verifies against another CA's pool")
	}
	ca.Pool().AddCert(other.Root()) // a caller's change to its pool…
	if _, err := iss.Certificate.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: anyUsage}); err != nil {
		t.Fatal(err)
	}
	leafOfOther, err := other.SignCSR(csrFor(t, testKey(t, "p256"), "x"), Profile{CommonName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leafOfOther.Certificate.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: anyUsage}); err == nil {
		t.Fatal("…changed the CA's own pool")
	}
}

func TestPassphrase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	pass := []byte("correct horse battery staple")
	ca, err := Open(t.Context(), dir, Options{Passphrase: pass})
	if err != nil {
		t.Fatalf("Open (create): %v", err)
	}
	if ok, _ := exists(filepath.Join(dir, defaultKEKFile)); ok {
		t.Fatal("a key file was written although a passphrase seals the keys")
	}
	b, _ := os.ReadFile(filepath.Join(dir, issuingKeyFile))
	block, _ := pem.Decode(b)
	if block.Headers[hdrKDF] != kdfPBKDF2 || block.Headers[hdrIterations] != fmt.Sprint(PassphraseIterations) || block.Headers[hdrSalt] == "" {
		t.Fatalf("sealed key headers %v, want the KDF and its parameters", block.Headers)
	}
	if _, err := Open(t.Context(), dir, Options{Passphrase: pass}); err != nil {
		t.Fatalf("Open (load) with the passphrase: %v", err)
	}
	for _, tc := range []struct {
		name string
		opts Options
		say  string
	}{
		{"wrong passphrase", Options{Passphrase: []byte("incorrect horse battery staple")}, "give the passphrase this CA was created with"},
		{"no passphrase", Options{}, "sealed with a passphrase: supply the CA passphrase"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(t.Context(), dir, tc.opts)
			wantErr(t, err, ErrWrongKEK)
			if !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("error %q does not say %q", err, tc.say)
			}
		})
	}
	_ = ca

	_, err = Open(t.Context(), filepath.Join(t.TempDir(), "ca"), Options{Passphrase: []byte("short")})
	if err == nil || !strings.Contains(err.Error(), "at least 12") {
		t.Fatalf("Open with a short passphrase: err = %v, want a refusal", err)
	}
	_, err = Open(t.Context(), filepath.Join(t.TempDir(), "ca"), Options{Passphrase: []byte("long enough passphrase\n")})
	if err == nil || !strings.Contains(err.Error(), "white space") {
		t.Fatalf("Open with a passphrase ending in a newline: err = %v, want a refusal", err)
	}
}

func TestReadPassphraseFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"secret passphrase\n", "secret passphrase"},
		{"secret passphrase\r\n", "secret passphrase"},
		{"secret passphrase", "secret passphrase"},
		{" spaced \n\n", " spaced \n"},
	} {
		p := filepath.Join(dir, "pass")
		os.WriteFile(p, []byte(tc.content), 0o600)
		got, err := ReadPassphraseFile(p)
		if err != nil || string(got) != tc.want {
			t.Errorf("ReadPassphraseFile(%q) = %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
	os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600)
	if _, err := ReadPassphraseFile(filepath.Join(dir, "empty")); err == nil {
		t.Error("an empty passphrase file was accepted")
	}
}

func TestKeyFile(t *testing.T) {
	t.Run("outside the CA directory", func(t *testing.T) {
		data := t.TempDir()
		kf := filepath.Join(data, "ca.kek")
		dir := filepath.Join(data, "ca")
		if _, err := Open(t.Context(), dir, Options{KeyFile: kf}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(kf)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("key file: %v, %v", st, err)
		}
		b, _ := os.ReadFile(kf)
		if len(bytes.TrimSpace(b)) != 64 {
			t.Fatalf("key file holds %q, want 64 hex digits", b)
		}
		if _, err := Open(t.Context(), dir, Options{KeyFile: kf}); err != nil {
			t.Fatal(err)
		}
		_, err = Open(t.Context(), dir, Options{}) // looks in <dir>/kek
		wantErr(t, err, ErrWrongKEK)
		if !strings.Contains(err.Error(), "is missing: restore it") {
			t.Fatalf("error %q does not say the key file is missing", err)
		}
	})
	t.Run("given before the first start", func(t *testing.T) {
		data := t.TempDir()
		kf := filepath.Join(data, "ca.kek")
		key := strings.Repeat("ab", 32) + "\n"
		os.WriteFile(kf, []byte(key), 0o600)
		if _, err := Open(t.Context(), filepath.Join(data, "ca"), Options{KeyFile: kf}); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(kf); string(b) != key {
			t.Fatal("an operator's key file was replaced")
		}
	})

	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := Open(t.Context(), dir, Options{}); err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(dir, defaultKEKFile)
	orig, _ := os.ReadFile(kf)
	for _, tc := range []struct {
		name    string
		content string
		opts    Options
		want    error
		say     string
	}{
		{"another key", strings.Repeat("cd", 32), Options{}, ErrWrongKEK, "not the key file this CA was created with"},
		{"not hex", "this is not a key", Options{}, ErrCorrupt, "does not hold 64 hex digits"},
		{"short", "abcd", Options{}, ErrCorrupt, "does not hold 64 hex digits"},
		{"a passphrase instead", string(orig), Options{Passphrase: []byte("some long passphrase")}, ErrWrongKEK, "remove the CA passphrase setting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(kf, []byte(tc.content), 0o600)
			defer os.WriteFile(kf, orig, 0o600)
			_, err := Open(t.Context(), dir, tc.opts)
			wantErr(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("error %q does not say %q", err, tc.say)
			}
		})
	}

	t.Run("readable by others", func(t *testing.T) {
		os.Chmod(kf, 0o644)
		defer os.Chmod(kf, 0o600)
		log, logs := logBuffer()
		if _, err := Open(t.Context(), dir, Options{Logger: log}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logs.String(), "chmod 600") {
			t.Fatalf("no warning about the key file's mode:\n%s", logs)
		}
	})
}

// TestDamagedDirectory damages one file at a time: Open must refuse with
// ErrCorrupt (or ErrWrongKEK where the KEK is what no longer matches),
// never panic, and leave the files as they were.
func TestDamagedDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := Open(t.Context(), dir, Options{}); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	orig := map[string][]byte{}
	for _, n := range []string{rootCertFile, rootKeyFile, issuingCertFile, issuingKeyFile, defaultKEKFile} {
		orig[n] = read(n)
	}
	// sealedWith rewrites issuing.key with a header changed.
	sealedWith := func(header, value string) []byte {
		block, _ := pem.Decode(orig[issuingKeyFile])
		h := map[string]string{}
		for k, v := range block.Headers {
			h[k] = v
		}
		if value == "" {
			delete(h, header)
		} else {
			h[header] = value
		}
		return pem.EncodeToMemory(&pem.Block{Type: block.Type, Headers: h, Bytes: block.Bytes})
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	block, _ := pem.Decode(orig[issuingKeyFile])
	flippedCiphertext := pem.EncodeToMemory(&pem.Block{Type: block.Type, Headers: block.Headers, Bytes: flip(block.Bytes, 10)})

	for _, tc := range []struct {
		name string
		file string
		data []byte // nil: remove the file
		want error
	}{
		{"issuing key truncated", issuingKeyFile, orig[issuingKeyFile][:100], ErrCorrupt},
		{"issuing key empty", issuingKeyFile, []byte{}, ErrCorrupt},
		{"issuing key missing", issuingKeyFile, nil, ErrCorrupt},
		{"issuing key ciphertext changed", issuingKeyFile, flippedCiphertext, ErrCorrupt},
		{"issuing key header added", issuingKeyFile, sealedWith("Comment", "hello"), ErrCorrupt},
		{"issuing key nonce removed", issuingKeyFile, sealedWith(hdrNonce, ""), ErrCorrupt},
		{"issuing key of a newer format", issuingKeyFile, sealedWith(hdrVersion, "2"), ErrCorrupt},
		{"issuing key with an unknown cipher", issuingKeyFile, sealedWith(hdrCipher, "rot13"), ErrCorrupt},
		{"issuing key with an unknown KEK kind", issuingKeyFile, sealedWith(hdrKEK, "tpm"), ErrCorrupt},
		{"issuing key check value changed", issuingKeyFile, sealedWith(hdrCheck, "AAAAAAAAAAA"), ErrWrongKEK},
		{"root key in place of the issuing key", issuingKeyFile, orig[rootKeyFile], ErrCorrupt},
		{"issuing key is plain PEM", issuingKeyFile, pemKeyPKCS8(t, testKey(t, "p256")), ErrCorrupt},
		{"issuing key with trailing data", issuingKeyFile, append(bytes.Clone(orig[issuingKeyFile]), "junk"...), ErrCorrupt},
		{"issuing certificate garbage", issuingCertFile, []byte("garbage"), ErrCorrupt},
		{"issuing certificate is the root", issuingCertFile, orig[rootCertFile], ErrCorrupt},
		{"issuing certificate empty", issuingCertFile, []byte{}, ErrCorrupt},
		{"issuing certificate oversized", issuingCertFile, bytes.Repeat([]byte("A"), maxFileSize+1), ErrCorrupt},
		{"root certificate missing", rootCertFile, nil, ErrCorrupt},
		{"root certificate of another CA", rootCertFile, pemCert(newTestCA(t, Options{}).Root()), ErrCorrupt},
		{"root certificate garbage", rootCertFile, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), ErrCorrupt},
		{"CRL number garbage", crlNumberFile, []byte("twelve"), ErrCorrupt},
		{"CRL number negative", crlNumberFile, []byte("-5"), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.file)
			if tc.data == nil {
				os.Remove(p)
			} else if err := os.WriteFile(p, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if o, ok := orig[tc.file]; ok {
					os.WriteFile(p, o, 0o600)
				} else {
					os.Remove(p)
				}
			}()
			_, err := Open(t.Context(), dir, Options{})
			wantErr(t, err, tc.want)
			t.Logf("%v", err)
			for n, o := range orig {
				if n != tc.file && !bytes.Equal(read(n), o) {
					t.Fatalf("Open changed %s", n)
				}
			}
		})
	}
	if _, err := Open(t.Context(), dir, Options{}); err != nil {
		t.Fatalf("the restored directory does not open: %v", err)
	}
}

func TestOpenDirectoryStates(t *testing.T) {
	t.Run("foreign files", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
		_, err := Open(t.Context(), dir, Options{})
		wantErr(t, err, ErrCorrupt)
		if !strings.Contains(err.Error(), "notes.txt") {
			t.Fatalf("error %q does not name what is in the way", err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "notes.txt")); string(b) != "mine" {
			t.Fatal("Open touched a foreign file")
		}
	})
	t.Run("root key without the rest", func(t *testing.T) {
		// No marker: not ours to clear, even if it looks like our file.
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, rootKeyFile), []byte("precious"), 0o600)
		_, err := Open(t.Context(), dir, Options{})
		wantErr(t, err, ErrCorrupt)
	})
	t.Run("existing empty directory", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Open(t.Context(), dir, Options{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("interrupted creation", func(t *testing.T) {
		dir := t.TempDir()
		kf := filepath.Join(dir, defaultKEKFile)
		os.WriteFile(filepath.Join(dir, creatingMarker), nil, 0o600)
		os.WriteFile(filepath.Join(dir, rootKeyFile), []byte("half"), 0o600)
		os.WriteFile(filepath.Join(dir, tmpPrefix+"issuing.key-123"), []byte("half"), 0o600)
		os.WriteFile(kf, []byte(strings.Repeat("12", 32)), 0o600)
		ca, err := Open(t.Context(), dir, Options{})
		if err != nil {
			t.Fatalf("Open after an interrupted creation: %v", err)
		}
		if b, _ := os.ReadFile(kf); string(b) != strings.Repeat("12", 32) {
			t.Fatal("the key file was replaced: it may predate the creation")
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 5 {
			t.Fatalf("%d entries after the creation, want 5", len(entries))
		}
		if _, err := Open(t.Context(), dir, Options{}); err != nil || ca == nil {
			t.Fatal(err)
		}
	})
	t.Run("marker left after issuing.crt", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ca")
		ca := func() *CA { c, _ := Open(t.Context(), dir, Options{}); return c }()
		os.WriteFile(filepath.Join(dir, creatingMarker), nil, 0o600)
		again, err := Open(t.Context(), dir, Options{})
		if err != nil || !again.Issuer().Equal(ca.Issuer()) {
			t.Fatalf("Open = %v; want the same CA", err)
		}
		if ok, _ := exists(filepath.Join(dir, creatingMarker)); ok {
			t.Fatal("the marker stays")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		dir := filepath.Join(t.TempDir(), "ca")
		if _, err := Open(ctx, dir, Options{}); err == nil {
			t.Fatal("Open with a cancelled context created a CA")
		}
		if ok, _ := exists(dir); ok {
			t.Fatal("a cancelled Open left a directory")
		}
	})
}

func TestOptionsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"unknown algorithm", Options{KeyAlgorithm: "dsa-1024"}},
		{"relative CRL URL", Options{CRLURL: "/crl.pem"}},
		{"CRL URL of another scheme", Options{CRLURL: "ldap://example.com/crl"}},
		{"negative lifetime", Options{LeafLifetime: -time.Hour}},
		{"control character in the name", Options{Name: "a\nb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			if _, err := Open(t.Context(), dir, tc.opts); err == nil {
				t.Fatal("accepted")
			}
			if ok, _ := exists(dir); ok {
				t.Fatal("a refused Open left a directory")
			}
		})
	}
	if a, err := ParseKeyAlgorithm("ECDSA-P384"); err != nil || a != ECDSAP384 {
		t.Fatalf("ParseKeyAlgorithm = %v, %v", a, err)
	}
}

func TestImport(t *testing.T) {
	rootKey := testKey(t, "p384")
	root := testCACert(t, rootKey, "Manufacturer Root", nil, nil, nil)
	ecKey := testKey(t, "p256")
	ecCA := testCACert(t, ecKey, "Manufacturer Devices EC", root, rootKey, nil)
	rsaKey := testKey(t, "rsa2048")
	rsaCA := testCACert(t, rsaKey, "Manufacturer Devices RSA", root, rootKey, nil)
	sec1, _ := x509.MarshalECPrivateKey(ecKey.(*ecdsa.PrivateKey))
	pkcs1 := x509.MarshalPKCS1PrivateKey(rsaKey.(*rsa.PrivateKey))
	ecParams := "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"

	for _, tc := range []struct {
		name     string
		certPEM  []byte
		keyPEM   []byte
		wantRoot bool
		chainLen int
	}{
		{"PKCS#8, with its root", append(pemCert(ecCA), pemCert(root)...), pemKeyPKCS8(t, ecKey), true, 2},
		{"SEC1 after EC PARAMETERS, without root", pemCert(ecCA),
			append([]byte(ecParams), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), false, 1},
		{"PKCS#1 RSA, key after its certificate in one file", append(pemCert(rsaCA), pemCert(root)...),
			append(pemCert(rsaCA), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: pkcs1})...), true, 2},
		{"a self-signed CA alone", pemCert(root), pemKeyPKCS8(t, rootKey), true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			log, logs := logBuffer()
			ca, err := Import(t.Context(), dir, tc.certPEM, tc.keyPEM, Options{Logger: log})
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if (ca.Root() != nil) != tc.wantRoot || len(ca.Certificates()) != tc.chainLen {
				t.Fatalf("root %v, chain of %d; want root %v, chain of %d", ca.Root() != nil, len(ca.Certificates()), tc.wantRoot, tc.chainLen)
			}
			if ok, _ := exists(filepath.Join(dir, rootKeyFile)); ok {
				t.Fatal("an imported CA has a root key file")
			}
			b, _ := os.ReadFile(filepath.Join(dir, issuingKeyFile))
			if !bytes.Contains(b, []byte(sealedBlockType)) {
				t.Fatal("the imported key is not sealed")
			}
			for _, ca := range []*CA{ca, mustOpen(t, dir)} {
				iss, err := ca.SignCSR(csrFor(t, testKey(t, "p256"), "dev"), Profile{CommonName: "dev"})
				if err != nil {
					t.Fatalf("SignCSR: %v", err)
				}
				verifyLeaf(t, ca, iss.Certificate, x509.ExtKeyUsageClientAuth)
				if !bytes.Equal(iss.Certificate.AuthorityKeyId, ca.Issuer().SubjectKeyId) {
					t.Fatal("AuthorityKeyId is not the imported CA's key id")
				}
				if _, err := ca.CRL(nil, 0); err != nil {
					t.Fatalf("CRL: %v", err)
				}
			}
			if bytes.Contains(logs.Bytes(), []byte("PRIVATE")) {
				t.Fatalf("logs mention a private key:\n%s", logs)
			}
			_, err = Import(t.Context(), dir, tc.certPEM, tc.keyPEM, Options{})
			wantErr(t, err, ErrExists)
		})
	}

	notCA := testCACert(t, ecKey, "leaf", root, rootKey, func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature })
	noCertSign := testCACert(t, ecKey, "no certSign", root, rootKey, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCRLSign })
	expired := testCACert(t, ecKey, "expired", root, rootKey, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	})
	weak := testKey(t, "rsa1024")
	weakCA := testCACert(t, weak, "weak", root, rootKey, nil)
	legacyEncrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00"}, Bytes: pkcs1})
	for _, tc := range []struct {
		name            string
		certPEM, keyPEM []byte
		want            error
	}{
		{"key of another CA", pemCert(ecCA), pemKeyPKCS8(t, rsaKey), ErrBadKey},
		{"not a CA", pemCert(notCA), pemKeyPKCS8(t, ecKey), ErrBadCertificate},
		{"no certSign usage", pemCert(noCertSign), pemKeyPKCS8(t, ecKey), ErrBadCertificate},
		{"expired", pemCert(expired), pemKeyPKCS8(t, ecKey), ErrBadCertificate},
		{"weak key", pemCert(weakCA), pemKeyPKCS8(t, weak), ErrKeyNotAllowed},
		{"chain in the wrong order", append(pemCert(root), pemCert(ecCA)...), pemKeyPKCS8(t, rootKey), ErrBadCertificate},
		{"encrypted PKCS#8 key", pemCert(ecCA), pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), ErrBadKey},
		{"legacy encrypted PEM key", pemCert(rsaCA), legacyEncrypted, ErrBadKey},
		{"garbage certificate", []byte("garbage"), pemKeyPKCS8(t, ecKey), ErrBadCertificate},
		{"garbage key", pemCert(ecCA), []byte("garbage"), ErrBadKey},
		{"no key", pemCert(ecCA), pemCert(ecCA), ErrBadKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			_, err := Import(t.Context(), dir, tc.certPEM, tc.keyPEM, Options{})
			wantErr(t, err, tc.want)
			t.Logf("%v", err)
			if ok, _ := exists(dir); ok {
				t.Fatal("a refused import wrote the directory")
			}
		})
	}
	t.Run("into a created CA", func(t *testing.T) {
		ca := newTestCA(t, Options{})
		_, err := Import(t.Context(), ca.Dir(), pemCert(ecCA), pemKeyPKCS8(t, ecKey), Options{})
		wantErr(t, err, ErrExists)
	})
}

func mustOpen(t *testing.T, dir string) *CA {
	t.Helper()
	ca, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return ca
}

// TestKeysNeverShown prints a CA every way a careless caller might and
// checks that the key's secret never appears.
func TestKeysNeverShown(t *testing.T) {
	for _, alg := range []KeyAlgorithm{ECDSAP256, RSA2048} {
		log, logs := logBuffer()
		dir := filepath.Join(t.TempDir(), "ca")
		ca, err := Open(t.Context(), dir, Options{KeyAlgorithm: alg, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		var secret *big.Int
		switch k := ca.key.(type) {
		case *ecdsa.PrivateKey:
			b, _ := k.Bytes()
			secret = new(big.Int).SetBytes(b)
		case *rsa.PrivateKey:
			secret = k.Primes[0]
		}
		log.Info("the CA", "ca", ca)
		shown := fmt.Sprintf("%v %+v %#v %s", ca, ca, ca, ca) + logs.String() + string(ca.Chain())
		for _, form := range []string{secret.String(), secret.Text(16), fmt.Sprintf("%x", secret.Bytes())} {
			if strings.Contains(shown, form) {
				t.Fatalf("%s: the private key shows:\n%s", alg, shown)
			}
		}
		if !strings.Contains(shown, "zerotouch Issuing CA") {
			t.Fatalf("the CA does not show its name:\n%s", shown)
		}
	}
}

func TestSealingKeyStableAcrossStarts(t *testing.T) {
	for _, pass := range [][]byte{nil, []byte("correct horse battery")} {
		dir := t.TempDir()
		opts := Options{Passphrase: pass}
		ca, err := Open(context.Background(), dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		a := ca.SealingKey("registry")
		if len(a) != 32 || bytes.Equal(a, ca.SealingKey("other")) {
			t.Fatalf("SealingKey = %x: want 32 bytes, distinct per purpose", a)
		}
		again, err := Open(context.Background(), dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		if b := again.SealingKey("registry"); !bytes.Equal(a, b) {
			t.Fatalf("passphrase %v: the sealing key changed across starts", pass != nil)
		}
		if other, err := Open(context.Background(), t.TempDir(), opts); err != nil || bytes.Equal(other.SealingKey("registry"), a) {
			t.Fatalf("another CA has the same sealing key (err %v)", err)
		}
	}
}
