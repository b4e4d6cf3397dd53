package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/registry"
)

var certConcurrency = flag.Int("cert.concurrency", 32, "BenchmarkIssueCertificateAPI and BenchmarkMQTTSConnect: requests in flight")

// benchDevices creates n devices of a new profile straight in the store.
func benchDevices(b *testing.B, n *node, count int) []registry.Device {
	b.Helper()
	p := n.createProfile(fmt.Sprint("bench-", time.Now().UnixNano()), "pre-provisioned", "ACCESS_TOKEN", "never")
	nd := make([]registry.NewDevice, count)
	for i := range nd {
		nd[i].Device = registry.Device{OrgID: registry.DefaultOrgID, ProfileID: p.ID, Name: fmt.Sprintf("bench-%s-%06d", p.ID[:8], i), Status: registry.DeviceEnabled}
	}
	for i := 0; i < count; i += 1000 {
		if err := n.srv.Store().CreateDevices(context.Background(), nd[i:min(i+1000, count)]); err != nil {
			b.Fatal(err)
		}
	}
	out := make([]registry.Device, count)
	for i := range nd {
		out[i] = nd[i].Device
	}
	return out
}

// latencies reports percentiles of lat in milliseconds.
func reportLatencies(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// runConcurrently calls fn(i) for i in [0, b.N) from conc goroutines and
// returns the elapsed time and each call's latency.
func runConcurrently(b *testing.B, conc int, fn func(i int) error) (time.Duration, []time.Duration) {
	var next, failed atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := fn(i); err != nil {
					if failed.Add(1) <= 3 {
						b.Log(err)
					}
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d calls failed", f, b.N)
	}
	return elapsed, lat
}

// BenchmarkIssueCertificateAPI measures device certificates issued from
// CSRs through the management API (POST /api/devices/{id}/certificates):
// CSR checks, signing (ECDSA P-256 CA), and the durable commit of the
// record with its credential, answered over HTTP. The CSRs are made
// beforehand, as devices make them. Run with -cpu 1,2 for one and two
// cores (the load generator shares them).
func BenchmarkIssueCertificateAPI(b *testing.B) {
	n := startNode(b, "")
	devs := benchDevices(b, n, b.N)
	csrs := make([][]byte, b.N)
	for i := range csrs {
		_, csr := deviceKeyAndCSR(b, devs[i].Name)
		body, _ := json.Marshal(map[string]string{"csr": csr})
		csrs[i] = body
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	elapsed, lat := runConcurrently(b, *certConcurrency, func(i int) error {
		req, _ := http.NewRequest("POST", n.baseURL+"/api/devices/"+devs[i].ID+"/certificates", bytes.NewReader(csrs[i]))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out issuedOut
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("HTTP %d %v", resp.StatusCode, err)
		}
		return nil
	})
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "certs/s")
	reportLatencies(b, lat)
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMQTTSConnect measures MQTT-over-TLS sessions opened with client
// certificates of the built-in CA: TCP, the TLS 1.3 handshake (ECDSA P-256
// both ways), CONNECT authenticated by the certificate's fingerprint,
// CONNACK, then DISCONNECT. -cert.concurrency clients (32) connect in a
// loop, each as one of 1,000 devices.
func BenchmarkMQTTSConnect(b *testing.B) {
	n := startNode(b, "")
	pool, _ := n.caPool(b)
	devs := benchDevices(b, n, 1000)
	certs := make([]tls.Certificate, len(devs))
	for i, d := range devs {
		key, csr := deviceKeyAndCSR(b, d.Name)
		var out issuedOut
		if code := n.api("POST", "/api/devices/"+d.ID+"/certificates", map[string]string{"csr": csr}, &out); code != http.StatusCreated {
			b.Fatalf("issue: %d", code)
		}
		c, err := tls.X509KeyPair([]byte(out.CertificatePEM), []byte(key))
		if err != nil {
			b.Fatal(err)
		}
		certs[i] = c
	}
	addr := n.srv.MQTTSAddr().String()
	elapsed, lat := runConcurrently(b, *certConcurrency, func(i int) error {
		return mqttsConnectOnce(addr, pool, certs[i%len(certs)], fmt.Sprint("mqtts-bench-", i))
	})
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "connects/s")
	reportLatencies(b, lat)
	b.ReportMetric(0, "ns/op")
}

// mqttsConnectOnce opens one MQTT 3.1.1 session over TLS with a client
// certificate, waits for a successful CONNACK and disconnects.
func mqttsConnectOnce(addr string, pool *x509.CertPool, cert tls.Certificate, clientID string) error {
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Clean: true, Keepalive: 30}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		return err
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		return err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fmt.Errorf("CONNACK: %w", err)
	}
	if ack[0] != packets.Connack<<4 || ack[3] != 0 {
		return fmt.Errorf("CONNACK % x: refused", ack)
	}
	_, err = c.Write([]byte{packets.Disconnect << 4, 0})
	return err
}
