package server

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// BenchmarkProvisionMQTT measures end-to-end ThingsBoard provisioning over
// MQTT against a full server on loopback: each device opens its own
// connection as "provision", subscribes, publishes its request and waits for
// the durable answer (SQLite, synchronous=FULL). -bench-concurrency sets how
// many devices are in flight at once. Reports devices/s and latency
// percentiles of the whole exchange (connect to answer).
func BenchmarkProvisionMQTT(b *testing.B) {
	for _, conc := range []int{16, 64, 128} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			n := startNode(b, "")
			p := n.createProfile(fmt.Sprintf("bench-%d", conc), "allow-create", "ACCESS_TOKEN", "never")
			var next atomic.Int64
			lat := make([]time.Duration, b.N)
			var failed atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						t0 := time.Now()
						if err := provisionOnce(n.mqtt, fmt.Sprintf("bench-%d-%d-%d", conc, b.N, i), p); err != nil {
							failed.Add(1)
							b.Log(err)
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d of %d provisionings failed", f, b.N)
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "devices/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func provisionOnce(addr, name string, p profileOut) error {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetUsername("provision").SetClientID(name).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	got := make(chan []byte, 1)
	if tok := c.Subscribe("/provision/response", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m.Payload() }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscribe: %v", tok.Error())
	}
	c.Publish("/provision/request", 1, false, req(p.Key, p.Secret, name))
	select {
	case b := <-got:
		var a tbAnswer
		if err := json.Unmarshal(b, &a); err != nil || a.Status != "SUCCESS" {
			return fmt.Errorf("answer %s", b)
		}
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: no answer", name)
	}
}
