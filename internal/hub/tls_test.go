package hub

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/big"
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// selfSigned makes a self-signed certificate (for 127.0.0.1 when server).
func selfSigned(t *testing.T, cn string, server bool) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.IsCA = true
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, cert
}

func TestTLSListener(t *testing.T) {
	e := newEnv(t)
	serverCert, serverX509 := selfSigned(t, "hub", true)
	addr, err := e.hub.ListenTLS("mqtts", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequestClientCert, // devices' certificates are matched by fingerprint
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.ListenTCP("mqtts", "127.0.0.1:0"); err == nil {
		t.Error("a second listener with the same name was accepted")
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverX509)

	deviceCert, deviceX509 := selfSigned(t, "device-1", false)
	sum := sha256.Sum256(deviceX509.Raw)
	fp := hex.EncodeToString(sum[:])
	dev, _ := e.device(registry.DeviceEnabled, registry.Credential{Type: registry.CredentialX509, LookupKey: fp, Fingerprint: fp})
	strangerCert, _ := selfSigned(t, "stranger", false)
	tok, tokDev, _ := e.tokenDevice()

	dial := func(cert *tls.Certificate, user string) (paho.Client, error) {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		o := paho.NewClientOptions().AddBroker("ssl://" + addr.String()).SetClientID("tls-client").
			SetTLSConfig(cfg).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
		if user != "" {
			o.SetUsername(user)
		}
		c := paho.NewClient(o)
		tk := c.Connect()
		if !tk.WaitTimeout(waitLimit) {
			t.Fatal("CONNECT timed out")
		}
		if tk.Error() == nil {
			t.Cleanup(func() { c.Disconnect(0) })
		}
		return c, tk.Error()
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		user string
		want *registry.Device
	}{
		{"registered certificate", &deviceCert, "", dev},
		{"registered certificate, user name ignored", &deviceCert, "anything", dev},
		{"unknown certificate", &strangerCert, "", nil},
		{"unknown certificate with a valid token", &strangerCert, tok, nil},
		{"token without certificate", nil, tok, tokDev},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dial(tc.cert, tc.user)
			if tc.want == nil {
				if err == nil {
					t.Fatal("connected")
				}
				return
			}
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			tk := c.Publish("v1/devices/me/telemetry", 1, false, "{}")
			tk.WaitTimeout(waitLimit)
			if err := tk.Error(); err != nil {
				t.Fatal(err)
			}
			p := e.nextDevicePub(t)
			if p.sess.DeviceID != tc.want.ID || p.sess.Listener != "mqtts" {
				t.Errorf("session %+v, want device %s on mqtts", p.sess, tc.want.ID)
			}
		})
	}
	t.Run("provisioning over TLS", func(t *testing.T) {
		c, err := dial(nil, provUser)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		c.Subscribe(provResp, 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }).WaitTimeout(waitLimit)
		c.Publish(provReq, 1, false, "tls-req").WaitTimeout(waitLimit)
		select {
		case p := <-got:
			if p != "answer:tls-req" {
				t.Errorf("got %q", p)
			}
		case <-time.After(waitLimit):
			t.Fatal("no answer")
		}
	})
}
