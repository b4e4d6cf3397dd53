package server

import (
	"bufio"
	"cmp"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Telemetry ingestion and idle-connection memory, zerotouch side by side
// with Mosquitto as a plain broker, each a separate process on loopback:
//
//	go test -run XXX -bench 'Ingest|IdleMemory' -benchtime 1x ./internal/server/
//
// The load generator is a minimal MQTT 3.1.1 client written here (CONNECT,
// pipelined PUBLISH at QoS 0 or 1, PUBACK counting, one counting
// subscriber): a thousand paho clients would cost more CPU than the servers
// being measured. See docs/benchmarks.md for the figures and what they mean.

var (
	ingestDevices  = flag.Int("ingest.devices", 1000, "BenchmarkIngest: connected devices publishing")
	ingestDuration = flag.Duration("ingest.duration", 10*time.Second, "BenchmarkIngest: how long the devices publish, per case")
	ingestWindow   = flag.Int("ingest.window", 16, "BenchmarkIngest: messages in flight per connection (a multiple of -ingest.burst)")
	ingestBurst    = flag.Int("ingest.burst", 8, "BenchmarkIngest: most messages one connection writes in one write call")
	ingestRate     = flag.Float64("ingest.rate", 0, "BenchmarkIngest: messages/s offered by all devices together, evenly (0: as fast as the server takes them)")
	ingestQoS      = flag.String("ingest.qos", "0,1", "BenchmarkIngest: QoS levels to measure, in this order")
	ingestFlat     = flag.Bool("ingest.flat", false, "BenchmarkIngest: flat payloads of six values stamped by the server, instead of five values with the device's own timestamp")
	ingestServers  = flag.String("ingest.servers", "zerotouch,mosquitto", "BenchmarkIngest and BenchmarkIdleMemory: servers to measure")
	idleCounts     = flag.String("idle.counts", "1000,5000,10000", "BenchmarkIdleMemory: idle sessions to hold, cumulatively")
)

const (
	ingestTopic = "v1/devices/me/telemetry"
	// benchKeepalive (seconds) is far longer than any benchmark phase: the
	// load generator never sends PINGREQ on idle sessions.
	benchKeepalive = 600
	// tsDigits is the width of a Unix time in milliseconds until 2286.
	tsDigits = 13
)

// ingestPayload describes the messages devices publish: 100-byte
// ThingsBoard telemetry of `values` numeric values, digits varied so that
// values differ from one message to the next.
type ingestPayload struct {
	variants [][]byte
	values   int
	// tsAt is the offset of the payload's 13-digit "ts" (-1: none, the
	// server stamps the message on arrival).
	tsAt int
}

// ingestPayloads returns the payloads *ingestFlat selects.
//
// By default each message carries its own timestamp, one millisecond after
// the device's previous one:
//
//	{"ts":1764000000000,"values":{"temp":21.5,"hum":40.2,"pressure":1013,"voltage":230,"current":1.255}}
//
// so that every value is a sample of its own. Flat messages
//
//	{"temperature":21.5,"humidity":40.2,"pressure":1013.2,"voltage":230.1,"current":1.25,"power":287.56}
//
// get the server's clock, in milliseconds: the several messages a
// pipelining device has in flight arrive within the same millisecond and
// overwrite each other's samples (same series, same ts), which real devices
// sending every few seconds never do.
func ingestPayloads() ingestPayload {
	var p ingestPayload
	for i := range 16 {
		f := float64(i)
		var s string
		if *ingestFlat {
			s = fmt.Sprintf(`{"temperature":%4.1f,"humidity":%4.1f,"pressure":%6.1f,"voltage":%5.1f,"current":%4.2f,"power":%6.2f}`,
				20+f*0.3, 40+f*0.7, 1010+f*0.4, 229+f*0.1, 1.10+f*0.05, 280+f*1.37)
			p.values, p.tsAt = 6, -1
		} else {
			s = fmt.Sprintf(`{"ts":%0*d,"values":{"temp":%4.1f,"hum":%4.1f,"pressure":%4d,"voltage":%3d,"current":%5.3f}}`,
				tsDigits, 0, 20+f*0.3, 40+f*0.7, 1010+i%7, 228+i%5, 1.10+f*0.05)
			p.values, p.tsAt = 5, len(`{"ts":`)
		}
		if len(s) != 100 {
			panic(fmt.Sprintf("payload of %d bytes: %s", len(s), s))
		}
		p.variants = append(p.variants, []byte(s))
	}
	return p
}

// putDigits writes v in decimal into b, right-aligned, zero-padded.
func putDigits(b []byte, v int64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

// --- A minimal MQTT 3.1.1 client ---

func mqttAppendLen(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func mqttAppendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

func mqttConnectPacket(clientID, username string) []byte {
	body := mqttAppendString(nil, "MQTT")
	flags := byte(0x02) // clean session
	if username != "" {
		flags |= 0x80
	}
	body = append(body, 4, flags, byte(benchKeepalive>>8), byte(benchKeepalive&0xff))
	body = mqttAppendString(body, clientID)
	if username != "" {
		body = mqttAppendString(body, username)
	}
	return append(mqttAppendLen([]byte{0x10}, len(body)), body...)
}

// mqttAppendPublish appends a PUBLISH of payload on ingestTopic (id is
// used at QoS 1 only).
func mqttAppendPublish(b []byte, qos byte, id uint16, payload []byte) []byte {
	n := 2 + len(ingestTopic) + len(payload)
	if qos > 0 {
		n += 2
	}
	b = mqttAppendLen(append(b, 0x30|qos<<1), n)
	b = mqttAppendString(b, ingestTopic)
	if qos > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	return append(b, payload...)
}

// sourceAddrs spread connections over several loopback addresses: the hub
// admits at most 128 connections waiting for their CONNECT per source host.
var sourceAddrs = func() []net.IP {
	var ips []net.IP
	for i := 2; i < 10; i++ {
		ips = append(ips, net.IPv4(127, 0, 0, byte(i)))
	}
	return ips
}()

// mqttDial opens an MQTT 3.1.1 session (clean session, keep-alive
// benchKeepalive) from source address src and waits for its CONNACK.
func mqttDial(addr string, src net.IP, clientID, username string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(mqttConnectPacket(clientID, username)); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: CONNECT: %w", clientID, err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: CONNACK: %w", clientID, err)
	}
	if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("%s: CONNACK % x: refused", clientID, ack)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// mqttConnectAll opens one session per (ids[i], users[i]), 32 at a time
// over the source addresses.
func mqttConnectAll(addr string, ids, users []string) ([]net.Conn, error) {
	conns := make([]net.Conn, len(ids))
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := range 32 {
		src := sourceAddrs[w%len(sourceAddrs)]
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || firstErr.Load() != nil {
					return
				}
				c, err := mqttDial(addr, src, ids[i], users[i])
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		mqttCloseAll(conns, false)
		return nil, *p
	}
	return conns, nil
}

// mqttCloseAll ends the sessions, with a DISCONNECT first when polite.
func mqttCloseAll(conns []net.Conn, polite bool) {
	for _, c := range conns {
		if c == nil {
			continue
		}
		if polite {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write([]byte{0xe0, 0})
		}
		c.Close()
	}
}

// mqttSubscriber counts the PUBLISH packets a session receives.
type mqttSubscriber struct {
	conn     net.Conn
	received atomic.Int64
	last     atomic.Int64 // unix ns of the last one
	done     chan struct{}
}

func mqttSubscribe(addr, clientID, filter string) (*mqttSubscriber, error) {
	c, err := mqttDial(addr, nil, clientID, "")
	if err != nil {
		return nil, err
	}
	body := mqttAppendString([]byte{0, 1}, filter)
	body = append(body, 0) // QoS 0
	if _, err := c.Write(append(mqttAppendLen([]byte{0x82}, len(body)), body...)); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 256<<10)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ack [5]byte
	if _, err := io.ReadFull(br, ack[:]); err != nil || ack[0] != 0x90 || ack[4] != 0 {
		c.Close()
		return nil, fmt.Errorf("SUBACK % x: %v", ack, err)
	}
	c.SetReadDeadline(time.Time{})
	s := &mqttSubscriber{conn: c, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			h, err := br.ReadByte()
			if err != nil {
				return
			}
			n, mult := 0, 1
			for {
				c, err := br.ReadByte()
				if err != nil {
					return
				}
				n += int(c&0x7f) * mult
				mult *= 128
				if c&0x80 == 0 {
					break
				}
			}
			if _, err := br.Discard(n); err != nil {
				return
			}
			if h>>4 == 3 {
				s.received.Add(1)
				s.last.Store(time.Now().UnixNano())
			}
		}
	}()
	return s, nil
}

func (s *mqttSubscriber) close() {
	s.conn.Close()
	<-s.done
}

// publisher is one device's connection under load.
type publisher struct {
	conn        net.Conn
	sent, acked atomic.Int64
	lastAck     atomic.Int64 // unix ns
	// Why it stopped early, if it did: its reader, its writer.
	errMu             sync.Mutex
	readErr, writeErr error
}

func (p *publisher) fail(read bool, err error) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if read {
		p.readErr = err
	} else {
		p.writeErr = err
	}
}

func (p *publisher) failure() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return cmp.Or(p.writeErr, p.readErr)
}

// loadResult sums a load run.
type loadResult struct {
	start, stop time.Time // publishers started and told to stop
	sent, acked int64     // at QoS 0, acked counts messages a PINGRESP confirmed
	lastAck     time.Time
	failed      int   // connections that ended early
	firstErr    error // of one of them
}

// runLoad makes every connection publish for d, in writes of up to
// *ingestBurst messages, with at most *ingestWindow unconfirmed messages
// per connection: at QoS 1 a PUBACK confirms one; at QoS 0 every write ends
// with a PINGREQ, and its PINGRESP confirms the write's messages (both
// servers handle a connection's packets in order, and zerotouch takes a
// message in before it reads the next). Without it a QoS 0 sender would
// only be held back by the sockets' buffers, megabytes per connection.
// With *ingestRate set, the connections share that rate evenly instead of
// sending as fast as they can, and QoS 0 messages go without PINGREQ (open
// loop). seq[i] numbers connection i's messages (their timestamps, see
// ingestPayloads); it is advanced. runLoad returns once the writers
// stopped and the confirmations stopped coming.
func runLoad(conns []net.Conn, seq []int64, tsBase int64, qos byte, d time.Duration) loadResult {
	burst := max(*ingestBurst, 1)
	window := max(*ingestWindow, burst)
	if qos == 0 {
		window -= window % burst
	}
	perConn := *ingestRate / float64(len(conns)) // messages/s; 0: no pacing
	openLoop := perConn > 0 && qos == 0
	pl := ingestPayloads()
	pkt := len(mqttAppendPublish(nil, qos, 1, pl.variants[0]))
	tsAt := pkt - len(pl.variants[0]) + pl.tsAt
	var stop atomic.Bool
	stopCh := make(chan struct{})
	pubs := make([]*publisher, len(conns))
	var writers, readers sync.WaitGroup
	res := loadResult{start: time.Now()}
	for i, c := range conns {
		p := &publisher{conn: c}
		pubs[i] = p
		credits := make(chan struct{}, window)
		for range window {
			credits <- struct{}{}
		}
		readers.Go(func() {
			br := bufio.NewReaderSize(c, 4096)
			for {
				h, err := br.ReadByte()
				if err != nil {
					if !stop.Load() {
						p.fail(true, fmt.Errorf("connection closed by the server: %w", err))
					}
					return
				}
				n, err := br.ReadByte()
				if err == nil && n&0x80 != 0 {
					err = fmt.Errorf("unexpected packet %#x of %d+ bytes", h, n)
				}
				if err == nil {
					_, err = br.Discard(int(n))
				}
				k := 0
				switch {
				case err != nil:
				case h == 0x40 && qos == 1: // PUBACK
					k = 1
				case h == 0xd0 && qos == 0: // PINGRESP
					k = burst
				default:
					err = fmt.Errorf("unexpected packet %#x", h)
				}
				if err != nil {
					p.fail(true, err)
					c.Close()
					return
				}
				p.acked.Add(int64(k))
				p.lastAck.Store(time.Now().UnixNano())
				for range k {
					credits <- struct{}{}
				}
			}
		})
		writers.Go(func() {
			var buf []byte
			for j := range burst {
				buf = mqttAppendPublish(buf, qos, 0, pl.variants[(i+j)%len(pl.variants)])
			}
			if qos == 0 && !openLoop {
				buf = append(buf, 0xc0, 0) // PINGREQ
			}
			var id uint16
			// Paced connections start spread over one interval.
			offset := time.Duration(float64(i) / float64(len(conns)) * float64(burst) / max(perConn, 1) * float64(time.Second))
			for !stop.Load() {
				if perConn > 0 {
					due := res.start.Add(offset + time.Duration(float64(p.sent.Load())/perConn*float64(time.Second)))
					if wait := time.Until(due); wait > 0 {
						select {
						case <-time.After(wait):
						case <-stopCh:
							return
						}
					}
				}
				n := 0
				if openLoop {
					n = burst
				}
			take:
				for n < burst {
					if n > 0 && qos > 0 {
						select {
						case <-credits:
							n++
							continue
						default:
							break take
						}
					}
					select {
					case <-credits:
						n++
					case <-stopCh:
						return
					}
				}
				for j := range n {
					m := buf[j*pkt : (j+1)*pkt]
					if pl.tsAt >= 0 {
						putDigits(m[tsAt:tsAt+tsDigits], tsBase+seq[i])
						seq[i]++
					}
					if qos > 0 {
						if id++; id == 0 {
							id = 1
						}
						at := pkt - len(pl.variants[0]) - 2
						m[at], m[at+1] = byte(id>>8), byte(id)
					}
				}
				out := buf[:n*pkt]
				if qos == 0 && !openLoop {
					out = buf
				}
				if _, err := c.Write(out); err != nil {
					p.fail(false, err)
					return
				}
				p.sent.Add(int64(n))
			}
		})
	}
	time.Sleep(d)
	stop.Store(true)
	close(stopCh)
	res.stop = time.Now()
	writersDone := make(chan struct{})
	go func() { writers.Wait(); close(writersDone) }()
	select {
	case <-writersDone:
	case <-time.After(60 * time.Second):
		// A writer blocked on a server that stopped reading.
		for _, c := range conns {
			c.SetWriteDeadline(time.Now())
		}
		<-writersDone
	}
	// Wait for the last confirmations (or for them to stop coming).
	last, lastChange := int64(-1), time.Now()
	for time.Since(lastChange) < 3*time.Second {
		var sent, acked int64
		for _, p := range pubs {
			sent += p.sent.Load()
			acked += p.acked.Load()
		}
		if acked == sent || openLoop {
			break
		}
		if acked != last {
			last, lastChange = acked, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, p := range pubs {
		res.sent += p.sent.Load()
		res.acked += p.acked.Load()
		if t := time.Unix(0, p.lastAck.Load()); p.lastAck.Load() != 0 && t.After(res.lastAck) {
			res.lastAck = t
		}
		if err := p.failure(); err != nil {
			res.failed++
			if res.firstErr == nil {
				res.firstErr = err
			}
		}
	}
	// The readers end when the caller closes the connections.
	go readers.Wait()
	return res
}

// --- Processes ---

// benchServer is a server process under measurement.
type benchServer struct {
	name   string
	cmd    *exec.Cmd
	mqtt   string // host:port
	node   *node  // zerotouch's HTTP side; nil for Mosquitto
	stderr string // file
	data   string // zerotouch's data directory
	bin    string
	args   []string
	env    []string // added to this process's environment
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *benchServer) pid() int { return s.cmd.Process.Pid }

func (s *benchServer) logTail() string {
	b, _ := os.ReadFile(s.stderr)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// benchZerotouchFlags lift the per-device message rate (10/s, burst 100 by
// default) so that it does not cap the benchmark, and the session cap
// (10,000 by default) for the idle-memory benchmark.
var benchZerotouchFlags = []string{"--device-rate", "10000", "--device-burst", "10000", "--mqtt-max-clients", "0", "--log-level", "warn"}

// startZerotouch runs `zerotouch serve` on dataDir (a new temporary one
// when empty) with benchZerotouchFlags.
func startZerotouch(b *testing.B, dataDir string) *benchServer {
	b.Helper()
	bin, err := buildOnce()
	if err != nil {
		b.Fatal(err)
	}
	if dataDir == "" {
		dataDir = b.TempDir()
	}
	httpAddr, mqttAddr := freeAddr(b), freeAddr(b)
	args := append([]string{"serve", "--data", dataDir, "--http", httpAddr, "--mqtt", mqttAddr, "--https", "off", "--mqtts", "off"}, benchZerotouchFlags...)
	s := &benchServer{name: "zerotouch", mqtt: mqttAddr, data: dataDir, args: args,
		node: &node{t: b, baseURL: "http://" + httpAddr, mqtt: mqttAddr}}
	s.start(b, bin, []string{"ZEROTOUCH_ADMIN_KEY=" + testAdminKey}, s.zerotouchReady)
	return s
}

// startMosquitto runs Mosquitto as a plain broker on an ephemeral port
// (never 1883, the system broker's), anonymous, without persistence.
func startMosquitto(b *testing.B) *benchServer {
	b.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		b.Skip("mosquitto is not installed: the side-by-side figures need it (apt-get install mosquitto)")
	}
	addr := freeAddr(b)
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(b.TempDir(), "mosquitto.conf")
	text := "listener " + port + " 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	s := &benchServer{name: "mosquitto", mqtt: addr, args: []string{"-c", conf}}
	s.start(b, bin, nil, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return s
}

func (s *benchServer) start(b *testing.B, bin string, env []string, ready func() bool) {
	b.Helper()
	s.bin, s.env = bin, env
	s.stderr = filepath.Join(b.TempDir(), s.name+".log")
	f, err := os.Create(s.stderr)
	if err != nil {
		b.Fatal(err)
	}
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = f, f
	if err := s.cmd.Start(); err != nil {
		f.Close()
		b.Fatal(err)
	}
	f.Close()
	cmd := s.cmd
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for !ready() {
		if time.Now().After(deadline) {
			b.Fatalf("%s did not start:\n%s", s.name, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart stops the server (SIGTERM, a clean shutdown) and starts it again
// with the same arguments and data.
func (s *benchServer) restart(b *testing.B) {
	b.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.start(b, s.bin, s.env, s.zerotouchReady)
}

func (s *benchServer) zerotouchReady() bool {
	resp, err := http.Get(s.node.baseURL + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// rssKiB is the process's resident set (VmRSS).
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// procCPU is the CPU time (user + system) the process used so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is 3rd of the file, utime 14th, stime 15th.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

// selfCPU is the CPU time this process (the load generator) used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scrapeMetrics reads zerotouch's /metrics into name{labels} → value.
func scrapeMetrics(tb testing.TB, base string) map[string]float64 {
	tb.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		tb.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	m := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// raiseFileLimit lifts this process's soft limit of open files to the
// hard one (children inherit it).
func raiseFileLimit(b *testing.B) uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		b.Fatal(err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			b.Fatal(err)
		}
	}
	return l.Cur
}

// provisionDevices provisions count devices named prefix-00000… over
// HTTP, 32 at a time, and returns their names and access tokens.
func provisionDevices(b *testing.B, n *node, prefix string, count int) (names, tokens []string) {
	b.Helper()
	p := n.createProfile(prefix, "allow-create", "ACCESS_TOKEN", "never")
	names, tokens = make([]string, count), make([]string, count)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	var next atomic.Int64
	var failed atomic.Pointer[string]
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= count || failed.Load() != nil {
					return
				}
				names[i] = fmt.Sprintf("%s-%05d", prefix, i)
				resp, err := client.Post(n.baseURL+"/api/v1/provision", "application/json", strings.NewReader(req(p.Key, p.Secret, names[i])))
				if err != nil {
					msg := err.Error()
					failed.CompareAndSwap(nil, &msg)
					return
				}
				var a tbAnswer
				if err := jsonDecode(resp, &a); err != nil || a.Status != "SUCCESS" {
					msg := fmt.Sprintf("%s: %+v %v", names[i], a, err)
					failed.CompareAndSwap(nil, &msg)
					return
				}
				var tok string
				if err := jsonUnmarshalString(a.CredentialsValue, &tok); err != nil {
					msg := err.Error()
					failed.CompareAndSwap(nil, &msg)
					return
				}
				tokens[i] = tok
			}
		})
	}
	wg.Wait()
	if m := failed.Load(); m != nil {
		b.Fatalf("provisioning: %s", *m)
	}
	return names, tokens
}

func jsonUnmarshalString(raw []byte, s *string) error {
	v, err := strconv.Unquote(string(raw))
	if err != nil {
		return fmt.Errorf("credentialsValue %s is not a string", raw)
	}
	*s = v
	return nil
}

func benchServersWanted(name string) bool {
	for s := range strings.SplitSeq(*ingestServers, ",") {
		if strings.TrimSpace(s) == name {
			return true
		}
	}
	return false
}

// --- BenchmarkIngest ---

// BenchmarkIngest measures telemetry ingestion: *ingestDevices connected
// devices publish 100-byte messages of six numeric values on
// v1/devices/me/telemetry as fast as they can for *ingestDuration, at QoS 0
// and at QoS 1.
//
// zerotouch: messages and values stored, i.e. accepted and then committed
// to telemetry.db (the clock stops once zerotouch_telemetry_pending_records
// is back to 0). Mosquitto, a plain broker that stores nothing: at QoS 0 the
// messages one subscriber (on v1/devices/me/telemetry, QoS 0) received; at
// QoS 1 the messages acknowledged by PUBACK, with that subscriber attached.
func BenchmarkIngest(b *testing.B) {
	raiseFileLimit(b)
	// Device timestamps start a day ago, one millisecond apart per device
	// (see ingestPayloads).
	tsBase := time.Now().Add(-24 * time.Hour).UnixMilli()
	// Each case gets a server of its own: zerotouch's store slows down as
	// the database grows, which would make the second case pay for the
	// first.
	if benchServersWanted("zerotouch") {
		b.Run("server=zerotouch", func(b *testing.B) {
			for _, qos := range ingestQoSLevels(b) {
				b.Run(fmt.Sprintf("qos=%d", qos), func(b *testing.B) {
					s := startZerotouch(b, "")
					names, tokens := provisionDevices(b, s.node, "ingest", *ingestDevices)
					ingestZerotouch(b, s, names, tokens, make([]int64, len(names)), tsBase, qos)
				})
			}
		})
	}
	if benchServersWanted("mosquitto") {
		b.Run("server=mosquitto", func(b *testing.B) {
			names := make([]string, *ingestDevices)
			for i := range names {
				names[i] = fmt.Sprintf("ingest-%05d", i)
			}
			for _, qos := range ingestQoSLevels(b) {
				b.Run(fmt.Sprintf("qos=%d", qos), func(b *testing.B) {
					ingestMosquitto(b, startMosquitto(b), names, make([]int64, len(names)), tsBase, qos)
				})
			}
		})
	}
}

func ingestQoSLevels(b *testing.B) []byte {
	var out []byte
	for f := range strings.SplitSeq(*ingestQoS, ",") {
		switch strings.TrimSpace(f) {
		case "0":
			out = append(out, 0)
		case "1":
			out = append(out, 1)
		default:
			b.Fatalf("-ingest.qos %q: want 0, 1 or both, comma-separated", *ingestQoS)
		}
	}
	return out
}

// procIO is what the process read from and wrote to storage so far
// (/proc/PID/io read_bytes, write_bytes).
func procIO(pid int) (read, written int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1, -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "read_bytes":
			read = n
		case "write_bytes":
			written = n
		}
	}
	return read, written
}

// cpuShare is a CPU time over a wall time, in % of one core.
func cpuShare(cpu, wall time.Duration) float64 { return 100 * cpu.Seconds() / wall.Seconds() }

func ingestZerotouch(b *testing.B, s *benchServer, names, tokens []string, seq []int64, tsBase int64, qos byte) {
	conns, err := mqttConnectAll(s.mqtt, names, tokens)
	if err != nil {
		b.Fatalf("connect: %v\n%s", err, s.logTail())
	}
	defer mqttCloseAll(conns, true)
	const (
		accepted   = `zerotouch_device_messages_total{result="accepted"}`
		overloaded = `zerotouch_device_messages_total{result="overloaded"}`
		limited    = `zerotouch_device_messages_total{result="rate_limited"}`
		values     = "zerotouch_telemetry_values_total"
		committed  = "zerotouch_telemetry_committed_records_total"
		pending    = "zerotouch_telemetry_pending_records"
		failures   = "zerotouch_telemetry_commit_failures_total"
	)
	time.Sleep(time.Second) // the connections' own records committed
	rowsBefore := storedRows(b, s)
	m0 := scrapeMetrics(b, s.node.baseURL)
	srv0, gen0 := procCPU(s.pid()), selfCPU()
	_, w0 := procIO(s.pid())
	// A timeline, once a second: values taken in and still pending, and
	// messages refused for overload.
	var timeline strings.Builder
	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for i := 1; ; i++ {
			select {
			case <-t.C:
			case <-stopSampling:
				return
			}
			m := scrapeMetrics(b, s.node.baseURL)
			fmt.Fprintf(&timeline, " %ds:%.0fk/%.0fk/%.0f", i, (m[values]-m0[values])/1000, m[pending]/1000, m[overloaded]-m0[overloaded])
		}
	}()
	b.ResetTimer()
	res := runLoad(conns, seq, tsBase, qos, *ingestDuration)
	close(stopSampling)
	<-sampled
	// Stored: wait for every accepted value to be committed. The clock
	// stops at the first scrape that shows nothing pending and the final
	// count accepted.
	var (
		m1     map[string]float64
		end    time.Time
		lastV  = -1.0
		stable time.Time
	)
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		m := scrapeMetrics(b, s.node.baseURL)
		now := time.Now()
		if m[values] != lastV {
			lastV, stable, end = m[values], now, time.Time{}
		}
		if m[pending] == 0 && end.IsZero() {
			end = now
		}
		if !end.IsZero() && now.Sub(stable) > 500*time.Millisecond {
			m1 = m
			break
		}
	}
	b.StopTimer()
	if m1 == nil {
		b.Fatalf("telemetry still pending after 5 minutes\n%s", s.logTail())
	}
	srvCPU, genCPU := procCPU(s.pid())-srv0, selfCPU()-gen0
	_, w1 := procIO(s.pid())
	elapsed := end.Sub(res.start)
	d := func(k string) float64 { return m1[k] - m0[k] }
	msgs, vals := d(accepted), d(values)
	if f := d(failures); f > 0 {
		b.Errorf("%v telemetry commits failed", f)
	}
	if per := ingestPayloads().values; vals != msgs*float64(per) {
		b.Errorf("%v values for %v messages: want %d per message", vals, msgs, per)
	}
	rowsAfter := storedRows(b, s)
	b.ReportMetric(msgs/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(vals/elapsed.Seconds(), "values/s")
	b.ReportMetric(float64(res.sent)/res.stop.Sub(res.start).Seconds(), "sent-msgs/s")
	if res.acked > 0 {
		b.ReportMetric(float64(res.acked)/res.lastAck.Sub(res.start).Seconds(), "confirmed-msgs/s")
	}
	b.ReportMetric(cpuShare(srvCPU, elapsed), "server-cpu-%")
	b.ReportMetric(cpuShare(genCPU, elapsed), "loadgen-cpu-%")
	b.ReportMetric(0, "ns/op")
	b.Logf("zerotouch qos=%d: %d connections, load %v, stored after %v: sent %d, acked %d, accepted %v msgs (%v values, %v records committed, %d new rows), overloaded %v, rate-limited %v, %d connections ended early (%v); server CPU %v, load generator CPU %v; server wrote %.0f MiB to storage (%.0f bytes per value), %v commits",
		qos, len(conns), res.stop.Sub(res.start).Round(time.Millisecond), elapsed.Round(time.Millisecond), res.sent, res.acked, msgs, vals, d(committed), rowsAfter-rowsBefore,
		d(overloaded), d(limited), res.failed, res.firstErr, srvCPU, genCPU.Round(time.Millisecond), float64(w1-w0)/(1<<20), float64(w1-w0)/vals, d("zerotouch_telemetry_commits_total"))
	b.Logf("zerotouch qos=%d timeline (values taken in / pending / messages refused for overload):%s", qos, timeline.String())
}

// storedRows counts the samples in zerotouch's telemetry database (-1 if
// it cannot be read).
func storedRows(b *testing.B, s *benchServer) int64 {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.data, TelemetryFile)+"?mode=ro")
	if err != nil {
		return -1
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(`SELECT (SELECT count(*) FROM ts_samples) + (SELECT count(*) FROM ts_recent)`).Scan(&n); err != nil {
		b.Logf("counting stored rows: %v", err)
		return -1
	}
	return n
}

func ingestMosquitto(b *testing.B, s *benchServer, names []string, seq []int64, tsBase int64, qos byte) {
	sub, err := mqttSubscribe(s.mqtt, "ingest-subscriber", ingestTopic)
	if err != nil {
		b.Fatalf("subscribe: %v\n%s", err, s.logTail())
	}
	defer sub.close()
	conns, err := mqttConnectAll(s.mqtt, names, make([]string, len(names)))
	if err != nil {
		b.Fatalf("connect: %v\n%s", err, s.logTail())
	}
	defer mqttCloseAll(conns, true)
	srv0, gen0 := procCPU(s.pid()), selfCPU()
	b.ResetTimer()
	res := runLoad(conns, seq, tsBase, qos, *ingestDuration)
	// Let the subscriber drain.
	for last, lastChange := int64(-1), time.Now(); time.Since(lastChange) < time.Second; time.Sleep(20 * time.Millisecond) {
		if n := sub.received.Load(); n != last {
			last, lastChange = n, time.Now()
		}
	}
	b.StopTimer()
	srvCPU, genCPU := procCPU(s.pid())-srv0, selfCPU()-gen0
	received := sub.received.Load()
	recvEnd := time.Unix(0, sub.last.Load())
	var msgs float64
	var elapsed time.Duration
	if qos == 0 {
		elapsed = recvEnd.Sub(res.start)
		msgs = float64(received)
	} else {
		elapsed = res.lastAck.Sub(res.start)
		msgs = float64(res.acked)
	}
	b.ReportMetric(msgs/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(msgs*float64(ingestPayloads().values)/elapsed.Seconds(), "values/s")
	b.ReportMetric(float64(res.sent)/res.stop.Sub(res.start).Seconds(), "sent-msgs/s")
	b.ReportMetric(float64(received)/recvEnd.Sub(res.start).Seconds(), "subscriber-msgs/s")
	if res.acked > 0 {
		b.ReportMetric(float64(res.acked)/res.lastAck.Sub(res.start).Seconds(), "confirmed-msgs/s")
	}
	b.ReportMetric(cpuShare(srvCPU, elapsed), "server-cpu-%")
	b.ReportMetric(cpuShare(genCPU, elapsed), "loadgen-cpu-%")
	b.ReportMetric(0, "ns/op")
	b.Logf("mosquitto qos=%d: %d connections, load %v, measured over %v: sent %d, acked %d, subscriber received %d, %d connections ended early (%v); server CPU %v, load generator (with the subscriber) CPU %v",
		qos, len(conns), res.stop.Sub(res.start).Round(time.Millisecond), elapsed.Round(time.Millisecond), res.sent, res.acked, received, res.failed, res.firstErr, srvCPU, genCPU.Round(time.Millisecond))
}

// --- BenchmarkIdleMemory ---

// BenchmarkIdleMemory measures the server memory an idle device session
// costs: it opens *idleCounts sessions cumulatively (e.g. 1,000, then 4,000
// more, then 5,000 more), each time waits for the server to settle and
// reads its resident set (VmRSS); then it closes them all, opens them again
// and reads it once more. KiB/conn is (RSS − RSS before any session) / N.
// zerotouch's sessions are provisioned devices with their own tokens (the
// server is restarted after provisioning, so that the baseline holds no
// provisioning garbage); Mosquitto's are anonymous, with the same client
// ids.
func BenchmarkIdleMemory(b *testing.B) {
	limit := raiseFileLimit(b)
	var counts []int
	for f := range strings.SplitSeq(*idleCounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("-idle.counts %q: want numbers", *idleCounts)
		}
		if len(counts) > 0 && n <= counts[len(counts)-1] {
			b.Fatalf("-idle.counts %q: want increasing numbers", *idleCounts)
		}
		counts = append(counts, n)
	}
	maxN := counts[len(counts)-1]
	if uint64(maxN)+500 > limit {
		b.Fatalf("%d sessions need more open files than the limit of %d", maxN, limit)
	}
	names := make([]string, maxN)
	for i := range names {
		names[i] = fmt.Sprintf("idle-%05d", i)
	}
	if benchServersWanted("zerotouch") {
		b.Run("server=zerotouch", func(b *testing.B) {
			s := startZerotouch(b, "")
			_, tokens := provisionDevices(b, s.node, "idle", maxN)
			s.restart(b)
			idleMemory(b, s, counts, names, tokens)
		})
	}
	if benchServersWanted("mosquitto") {
		b.Run("server=mosquitto", func(b *testing.B) {
			s := startMosquitto(b)
			idleMemory(b, s, counts, names, make([]string, maxN))
		})
	}
}

// settle waits for the server to be done with a change of sessions: for
// zerotouch, until it counts want connected devices and has nothing left
// to commit; then a few seconds more for every server.
func settle(b *testing.B, s *benchServer, want int) {
	if s.node != nil {
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			m := scrapeMetrics(b, s.node.baseURL)
			if int(m["zerotouch_connected_devices"]) == want && m["zerotouch_telemetry_pending_records"] == 0 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("zerotouch counts %v connected devices, want %d", m["zerotouch_connected_devices"], want)
			}
		}
	}
	time.Sleep(3 * time.Second)
}

// goMemory is zerotouch's Go heap and stacks in use (KiB), and its
// goroutines.
type goMemory struct{ heap, stacks, goroutines float64 }

func goInUse(b *testing.B, s *benchServer) goMemory {
	if s.node == nil {
		return goMemory{}
	}
	m := scrapeMetrics(b, s.node.baseURL)
	return goMemory{m["go_memstats_heap_inuse_bytes"] / 1024, m["go_memstats_stack_inuse_bytes"] / 1024, m["go_goroutines"]}
}

// perSession describes what n sessions added to base.
func (g goMemory) perSession(base goMemory, n int) string {
	if g == (goMemory{}) {
		return ""
	}
	f := float64(n)
	return fmt.Sprintf("; Go heap %.1f + stacks %.1f KiB per session, %.2f goroutines per session",
		(g.heap-base.heap)/f, (g.stacks-base.stacks)/f, (g.goroutines-base.goroutines)/f)
}

func idleMemory(b *testing.B, s *benchServer, counts []int, names, users []string) {
	settle(b, s, 0)
	rss0, go0 := rssKiB(s.pid()), goInUse(b, s)
	b.Logf("%s before any session: RSS %d KiB, Go %+v", s.name, rss0, go0)
	b.ResetTimer()
	var conns []net.Conn
	defer func() { mqttCloseAll(conns, false) }()
	prev, prevRSS := 0, rss0
	for _, n := range counts {
		more, err := mqttConnectAll(s.mqtt, names[prev:n], users[prev:n])
		if err != nil {
			b.Fatalf("connect sessions %d to %d: %v\n%s", prev, n, err, s.logTail())
		}
		conns = append(conns, more...)
		settle(b, s, n)
		rss, g := rssKiB(s.pid()), goInUse(b, s)
		per := float64(rss-rss0) / float64(n)
		b.ReportMetric(per, fmt.Sprintf("KiB/conn@%d", n))
		b.Logf("%s with %d idle sessions: RSS %d KiB, %.1f KiB per session (%.1f KiB each of the last %d)%s",
			s.name, n, rss, per, float64(rss-prevRSS)/float64(n-prev), n-prev, g.perSession(go0, n))
		prev, prevRSS = n, rss
	}
	mqttCloseAll(conns, true)
	conns = nil
	settle(b, s, 0)
	rssOff := rssKiB(s.pid())
	b.Logf("%s after all %d sessions ended: RSS %d KiB (%+d KiB from the start)", s.name, prev, rssOff, rssOff-rss0)
	var err error
	if conns, err = mqttConnectAll(s.mqtt, names[:prev], users[:prev]); err != nil {
		b.Fatalf("reconnect: %v\n%s", err, s.logTail())
	}
	settle(b, s, prev)
	rss, g := rssKiB(s.pid()), goInUse(b, s)
	per := float64(rss-rss0) / float64(prev)
	b.ReportMetric(per, fmt.Sprintf("KiB/conn@%d-reconnected", prev))
	b.ReportMetric(0, "ns/op")
	b.Logf("%s with %d sessions again after a disconnect/reconnect cycle: RSS %d KiB, %.1f KiB per session%s",
		s.name, prev, rss, per, g.perSession(go0, prev))
}
