package server

import (
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// MQTT connects per second, zerotouch (devices authenticated by their
// access token against the registry) side by side with Mosquitto (a plain
// broker, anonymous), each a separate process on loopback:
//
//	go test -run XXX -bench Connects -benchtime 1x ./internal/server/
//
// Each of -connects.devices devices opens a TCP connection, sends CONNECT,
// waits for the CONNACK, sends DISCONNECT and closes; -connects.concurrency
// of them at a time, over several source addresses.

var (
	connectDevices     = flag.Int("connects.devices", 10000, "BenchmarkConnects: devices, each connecting once")
	connectConcurrency = flag.Int("connects.concurrency", 128, "BenchmarkConnects: connects in flight")
)

func BenchmarkConnects(b *testing.B) {
	raiseFileLimit(b)
	n := *connectDevices
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("conn-%05d", i)
	}
	if benchServersWanted("zerotouch") {
		b.Run("server=zerotouch", func(b *testing.B) {
			s := startZerotouch(b, "")
			_, tokens := provisionDevices(b, s.node, "conn", n)
			s.restart(b) // measured with cold caches, as after a start
			connectStorm(b, s, names, tokens)
		})
	}
	if benchServersWanted("mosquitto") {
		b.Run("server=mosquitto", func(b *testing.B) {
			s := startMosquitto(b)
			connectStorm(b, s, names, make([]string, n))
		})
	}
}

// connectStorm connects every device once and reports connects/s, the
// CONNACK latency and the server's CPU.
func connectStorm(b *testing.B, s *benchServer, ids, users []string) {
	lat := make([]time.Duration, len(ids))
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	cpu0 := procCPU(s.pid())
	start := time.Now()
	var wg sync.WaitGroup
	for w := range *connectConcurrency {
		src := sourceAddrs[w%len(sourceAddrs)]
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) {
					return
				}
				t := time.Now()
				c, err := mqttDial(s.mqtt, src, ids[i], users[i])
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				lat[i] = time.Since(t)
				c.Write([]byte{0xe0, 0}) // DISCONNECT
				c.Close()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := procCPU(s.pid()) - cpu0
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d connects failed, e.g. %v", f, len(ids), *firstErr.Load())
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(float64(len(ids))/elapsed.Seconds(), "connects/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds()*100, "server-cpu-%")
}
