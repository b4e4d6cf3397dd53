package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Defaults of TelemetryConfig.
const (
	DefaultTelemetryDevices  = 1000
	DefaultTelemetryRate     = 1000
	DefaultTelemetryDuration = 10 * time.Second
	DefaultWindow            = 16
	DefaultSettle            = 3 * time.Second
)

// telemetryValues is how many values each message carries.
const telemetryValues = 5

// tsDigits is the width of a Unix time in milliseconds until 2286.
const tsDigits = 13

// telemetryPayloads are the bench's messages: 100 bytes of ThingsBoard
// telemetry with the device's own timestamp and 5 numeric values, the
// payload of the ingestion benchmark (internal/server/ingest_bench_test.go):
//
//	{"ts":1764000000000,"values":{"temp":21.5,"hum":40.2,"pressure":1013,"voltage":230,"current":1.255}}
//
// Sixteen variants vary the digits; the ts (at tsAt) is filled per message.
var telemetryPayloads, tsAt = func() ([][]byte, int) {
	var out [][]byte
	for i := range 16 {
		f := float64(i)
		s := fmt.Sprintf(`{"ts":%0*d,"values":{"temp":%4.1f,"hum":%4.1f,"pressure":%4d,"voltage":%3d,"current":%5.3f}}`,
			tsDigits, 0, 20+f*0.3, 40+f*0.7, 1010+i%7, 228+i%5, 1.10+f*0.05)
		if len(s) != 100 {
			panic(fmt.Sprintf("payload of %d bytes: %s", len(s), s))
		}
		out = append(out, []byte(s))
	}
	return out, len(`{"ts":`)
}()

// Phases of the telemetry bench, for its errors (provisioning errors keep
// the storm's phases).
const (
	PhaseConnect Phase = "connect" // TCP + CONNECT with the device's token, until CONNACK (azure-dps: TCP + TLS + CONNECT with the SAS token)
	PhasePublish Phase = "publish" // the load: publishing, PUBACKs
)

// TelemetryConfig describes a telemetry run. The zero value of an
// optional field picks its default.
type TelemetryConfig struct {
	// Target: the server and the devices; its Timeout also bounds each
	// write and the wait for the last PUBACKs.
	Target
	// Devices is how many devices provision, connect and publish
	// (DefaultTelemetryDevices).
	Devices int
	// Rate is the messages per second of all devices together, spread
	// evenly over them and in time; 0: none, the sessions stay idle and
	// only ping.
	Rate float64
	// Duration is how long the devices publish (DefaultTelemetryDuration).
	Duration time.Duration
	// QoS is 0 or 1; at 1 each device has at most Window messages
	// unacknowledged (DefaultWindow) and waits when it has that many.
	QoS    int
	Window int
	// Concurrency is how many devices provision, then connect, at once
	// (DefaultConcurrency).
	Concurrency int
	// Settle is how long to wait, once the server has nothing pending,
	// before reading its memory (DefaultSettle).
	Settle time.Duration
}

// Validate checks c and fills in defaults.
func (c *TelemetryConfig) Validate() error {
	if err := c.Target.validate(); err != nil {
		return err
	}
	if c.Devices == 0 {
		c.Devices = DefaultTelemetryDevices
	}
	if c.Devices < 0 {
		return fmt.Errorf("devices %d: want at least 1", c.Devices)
	}
	if c.Rate < 0 || math.IsInf(c.Rate, 0) || math.IsNaN(c.Rate) {
		return fmt.Errorf("rate %v: want messages per second (0: idle sessions)", c.Rate)
	}
	if c.Duration == 0 {
		c.Duration = DefaultTelemetryDuration
	}
	if c.Duration < 0 {
		return errors.New("duration: want a positive duration")
	}
	if c.QoS != 0 && c.QoS != 1 {
		return fmt.Errorf("qos %d: want 0 or 1", c.QoS)
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Window < 0 || c.Window > 65535 {
		return fmt.Errorf("window %d: want 1 to 65535", c.Window)
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("concurrency %d: want at least 1", c.Concurrency)
	}
	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.NamePrefix == "" {
		c.NamePrefix = "bench-" + strconv.FormatInt(time.Now().Unix(), 36) + "-"
	}
	return nil
}

// TelemetryReport is the outcome of a telemetry run. Sent and acknowledged
// are counted by the bench; stored, refused and memory come from the
// server's /metrics.
type TelemetryReport struct {
	Target           string  `json:"target"`
	Devices          int     `json:"devices"`
	Rate             float64 `json:"rate"` // messages/s asked for, all devices together
	QoS              int     `json:"qos"`
	Window           int     `json:"window,omitempty"`
	Sources          int     `json:"sources"`
	ValuesPerMessage int     `json:"valuesPerMessage"`

	// Provisioned and Connected count the devices that got a token and
	// then held a session; ProvisionSeconds and ConnectSeconds are how
	// long each step took for all of them.
	Provisioned      int     `json:"provisioned"`
	ProvisionSeconds float64 `json:"provisionSeconds"`
	Connected        int     `json:"connected"`
	ConnectSeconds   float64 `json:"connectSeconds"`

	// LoadSeconds is how long the devices published; Sent the messages
	// they wrote (SentValues = Sent × ValuesPerMessage) and
	// SentPerSecond their rate. Acked counts PUBACKs (QoS 1 only).
	LoadSeconds   float64 `json:"loadSeconds"`
	Sent          int64   `json:"sent"`
	SentValues    int64   `json:"sentValues"`
	SentPerSecond float64 `json:"sentPerSecond"`
	Acked         int64   `json:"acked"`
	AckedValues   int64   `json:"ackedValues"`
	// DevicesEnded counts the sessions that ended during the load.
	DevicesEnded int `json:"devicesEnded"`

	// Server is what the server says; nil without MetricsURL.
	Server *TelemetryServer `json:"server,omitempty"`

	BenchCPUSeconds float64 `json:"benchCpuSeconds"`
	BenchCPUPercent float64 `json:"benchCpuPercent"` // over provisioning, connecting and the load

	// Errors counts failed devices by kind (a device counts once, with its
	// first error); ErrorExamples holds the first error of each kind.
	Errors        map[Kind]int    `json:"errors"`
	ErrorExamples map[Kind]string `json:"errorExamples,omitempty"`
}

// TelemetryServer holds the server's figures of a telemetry run.
type TelemetryServer struct {
	// Error says why figures are missing.
	Error string `json:"error,omitempty"`

	// StoredMessages and StoredValues are the messages and values the
	// server accepted over the load (zerotouch_device_messages_total
	// accepted, zerotouch_telemetry_values_total), all committed once
	// zerotouch_telemetry_pending_records was back to 0; StoredSeconds
	// runs from the first publish to then.
	StoredMessages        float64 `json:"storedMessages"`
	StoredValues          float64 `json:"storedValues"`
	StoredSeconds         float64 `json:"storedSeconds"`
	StoredValuesPerSecond float64 `json:"storedValuesPerSecond"`
	// Messages counts device messages by result (accepted, overloaded,
	// rate_limited…); RefusedConnections CONNECTs refused for capacity;
	// IngestWaits messages that waited for the store (back-pressure);
	// CommitFailures failed telemetry commits; MaxPending the largest
	// pending gauge seen once a second.
	Messages           map[string]float64 `json:"messages,omitempty"`
	RefusedConnections map[string]float64 `json:"refusedConnections,omitempty"`
	IngestWaits        float64            `json:"ingestWaits"`
	CommitFailures     float64            `json:"commitFailures"`
	MaxPending         float64            `json:"maxPending"`
	// CPUSeconds and CPUPercent are the server's over StoredSeconds.
	CPUSeconds float64 `json:"cpuSeconds"`
	CPUPercent float64 `json:"cpuPercent"`

	// RSS before the devices connected, with them connected and idle
	// (both once nothing was pending and Settle passed), and after the
	// load; KiBPerConnection is (connected − before) / Connected, and
	// the Go heap and stacks the same way.
	RSSBeforeMiB          float64 `json:"rssBeforeMiB"`
	RSSConnectedMiB       float64 `json:"rssConnectedMiB"`
	RSSAfterLoadMiB       float64 `json:"rssAfterLoadMiB"`
	HeapAfterLoadMiB      float64 `json:"goHeapInuseAfterLoadMiB"`
	KiBPerConnection      float64 `json:"kibPerConnection"`
	HeapKiBPerConnection  float64 `json:"goHeapKiBPerConnection"`
	StackKiBPerConnection float64 `json:"goStackKiBPerConnection"`
	ConnectedDevices      float64 `json:"connectedDevices"` // the server's count with the devices connected
}

// OK reports whether every device provisioned, connected and published
// without error and, at QoS 1, every message was acknowledged.
func (r *TelemetryReport) OK() bool {
	return len(r.Errors) == 0 && r.Connected == r.Devices && (r.QoS == 0 || r.Acked == r.Sent)
}

// simDevice is one connected device under load.
type simDevice struct {
	i           int
	c           *mqttConn
	sent, acked atomic.Int64
	credits     chan struct{} // QoS 1: free places in the window
	dead        chan struct{} // closed when the session failed
	err         atomic.Pointer[Error]
	readerDone  chan struct{}
}

// fail records the session's first error and wakes its writer.
func (d *simDevice) fail(e *Error) {
	if d.err.CompareAndSwap(nil, e) {
		close(d.dead)
	}
}

// telemetryRun is a run in progress.
type telemetryRun struct {
	cfg    TelemetryConfig
	srcs   []net.IP
	names  []string
	tokens []string
	devs   []*simDevice
	// stopping is set when the load ends: read errors after it are the
	// bench closing its sessions, not failures.
	stopping atomic.Bool

	errMu   sync.Mutex
	errors  map[Kind]int
	samples map[Kind]string
}

func (t *telemetryRun) countErr(e *Error) {
	t.errMu.Lock()
	defer t.errMu.Unlock()
	t.errors[e.Kind]++
	if _, ok := t.samples[e.Kind]; !ok {
		t.samples[e.Kind] = e.Error()
	}
}

// RunTelemetry provisions cfg.Devices devices, connects them all, and has
// them publish telemetry at cfg.Rate for cfg.Duration; it reports what
// was sent, acknowledged and stored, and the server's memory per
// connection. It returns an error only when the run could not be made at
// all (bad configuration, too few open files); failures of devices are in
// the report.
func RunTelemetry(ctx context.Context, cfg TelemetryConfig) (*TelemetryReport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srcs, err := sourceAddrs(cfg.MQTTAddr, cfg.Sources)
	if err != nil {
		return nil, err
	}
	// One file per device, one per device being provisioned, and room
	// for the runtime, the HTTP client and the terminal.
	if err := ensureFileLimit(uint64(cfg.Devices) + uint64(cfg.Concurrency) + 256); err != nil {
		var fl *FileLimitError
		if errors.As(err, &fl) {
			fl.Instead = "or run fewer devices (-n), or split them over several bench processes"
		}
		return nil, err
	}
	t := &telemetryRun{cfg: cfg, srcs: srcs, tokens: make([]string, cfg.Devices), errors: map[Kind]int{}, samples: map[Kind]string{}}
	rep := &TelemetryReport{
		Target: cfg.MQTTAddr, Devices: cfg.Devices, Rate: cfg.Rate, QoS: cfg.QoS, Sources: len(srcs),
		ValuesPerMessage: telemetryValues,
	}
	if cfg.QoS == 1 {
		rep.Window = cfg.Window
	}
	cpu0, wall0 := selfCPU(), time.Now()
	defer func() {
		rep.BenchCPUSeconds = round1((selfCPU() - cpu0).Seconds())
		rep.BenchCPUPercent = math.Round(100 * rep.BenchCPUSeconds / time.Since(wall0).Seconds())
		rep.Errors = t.errors
		if len(t.samples) > 0 {
			rep.ErrorExamples = t.samples
		}
	}()

	// 1. Provision, through the storm's exchange.
	t.say("provisioning %d devices (ThingsBoard MQTT, access tokens)", cfg.Devices)
	target := cfg.Target
	target.MetricsURL = "" // this bench reads /metrics itself, around the load
	prov, err := runStorm(ctx, Config{
		Target: target, Dialect: DialectThingsBoard, Credentials: CredentialsToken,
		Devices: cfg.Devices, Concurrency: cfg.Concurrency,
	}, flow{phases: tbFlow.phases[:2], span: PhaseProvisioning, spanOf: 2, run: func(ctx context.Context, s *storm, i int, rec *record) (*mqttConn, error) {
		tok, err := s.tbProvision(ctx, i, rec)
		t.tokens[i] = tok
		return nil, err
	}})
	if err != nil {
		return nil, err
	}
	rep.Provisioned, rep.ProvisionSeconds = prov.Succeeded, prov.DurationSeconds
	for k, n := range prov.Errors {
		t.errors[k] += n
		if _, ok := t.samples[k]; !ok {
			t.samples[k] = prov.ErrorExamples[k]
		}
	}
	if ctx.Err() != nil {
		return rep, nil
	}

	// 2. The server's memory before the devices connect.
	var srv *TelemetryServer
	var m0 metricsSnapshot
	if cfg.MetricsURL != "" {
		srv = &TelemetryServer{}
		rep.Server = srv
		t.say("waiting for the server to settle (%v)", cfg.Settle)
		if m0, err = t.settle(ctx, -1); err != nil {
			srv.Error = "reading /metrics before connecting: " + err.Error()
		}
	}

	// 3. Connect every provisioned device.
	t.say("connecting %d devices", rep.Provisioned)
	start := time.Now()
	t.connectAll(ctx)
	rep.ConnectSeconds = round3(time.Since(start).Seconds())
	rep.Connected = len(t.devs)
	defer t.closeAll()
	if ctx.Err() != nil || rep.Connected == 0 {
		return rep, nil
	}
	var m1 metricsSnapshot
	if m0 != nil {
		connected0, _ := m0.sum("zerotouch_connected_devices")
		if m1, err = t.settle(ctx, connected0+float64(rep.Connected)); err != nil {
			srv.Error = "reading /metrics with the devices connected: " + err.Error()
		}
	}
	if m1 != nil {
		rss0, _ := m0.sum("process_resident_memory_bytes")
		rss1, _ := m1.sum("process_resident_memory_bytes")
		srv.RSSBeforeMiB, srv.RSSConnectedMiB = round1(rss0/(1<<20)), round1(rss1/(1<<20))
		srv.ConnectedDevices, _ = m1.sum("zerotouch_connected_devices")
		if n := float64(rep.Connected); n > 0 {
			per := func(name string) float64 {
				a, _ := m1.sum(name)
				b, _ := m0.sum(name)
				return round1((a - b) / 1024 / n)
			}
			srv.KiBPerConnection = per("process_resident_memory_bytes")
			srv.HeapKiBPerConnection = per("go_memstats_heap_inuse_bytes")
			srv.StackKiBPerConnection = per("go_memstats_stack_inuse_bytes")
		}
	}

	// 4. The load.
	t.say("publishing %g messages/s (%d values each) at QoS %d for %v", cfg.Rate, telemetryValues, cfg.QoS, cfg.Duration)
	loadStart, loadStop := t.load(ctx, srv)
	rep.LoadSeconds = round3(loadStop.Sub(loadStart).Seconds())
	for _, d := range t.devs {
		rep.Sent += d.sent.Load()
		rep.Acked += d.acked.Load()
		if e := d.err.Load(); e != nil {
			rep.DevicesEnded++
			t.countErr(e)
		}
	}
	rep.SentValues, rep.AckedValues = rep.Sent*telemetryValues, rep.Acked*telemetryValues
	if rep.LoadSeconds > 0 {
		rep.SentPerSecond = math.Round(float64(rep.Sent) / rep.LoadSeconds)
	}

	// 5. What the server stored.
	if m1 != nil {
		t.stored(context.WithoutCancel(ctx), srv, m1, loadStart)
	}
	return rep, nil
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// say writes a line of what the bench does on the progress writer.
func (t *telemetryRun) say(format string, args ...any) {
	if t.cfg.Progress != nil {
		fmt.Fprintf(t.cfg.Progress, format+"\n", args...)
	}
}

// settle waits until the server counts want connected devices (want < 0:
// any) and has no telemetry pending, then for cfg.Settle, and returns its
// /metrics.
func (t *telemetryRun) settle(ctx context.Context, want float64) (metricsSnapshot, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		m, err := scrapeMetrics(ctx, t.cfg.MetricsURL)
		if err != nil {
			return nil, err
		}
		c, _ := m.sum("zerotouch_connected_devices")
		p, _ := m.sum("zerotouch_telemetry_pending_records")
		if (want < 0 || c == want) && p == 0 {
			break
		}
		if time.Now().After(deadline) {
			break // read anyway: the figures say what they say
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(t.cfg.Settle):
	}
	m, err := scrapeMetrics(ctx, t.cfg.MetricsURL)
	if err != nil {
		return nil, err
	}
	return *m, nil
}

// connectAll opens the session of every provisioned device, Concurrency
// at a time, and keeps those that connected in t.devs.
func (t *telemetryRun) connectAll(ctx context.Context) {
	var idx []int
	for i, tok := range t.tokens {
		if tok != "" {
			idx = append(idx, i)
		}
	}
	var next, done, failed atomic.Int64
	var mu sync.Mutex
	start := time.Now()
	stop := startProgress(t.cfg.Progress, t.cfg.ProgressTTY, func(bool) string {
		var b strings.Builder
		if t.cfg.ProgressTTY {
			b.WriteString(progressBar(done.Load(), int64(len(idx))))
		}
		fmt.Fprintf(&b, "%d/%d connected, %d errors, %.1fs", done.Load()-failed.Load(), len(idx), failed.Load(), time.Since(start).Seconds())
		return b.String()
	})
	defer stop()
	var wg sync.WaitGroup
	for range t.cfg.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= len(idx) {
					return
				}
				d, err := t.connect(ctx, idx[k])
				if err != nil {
					t.countErr(err)
					failed.Add(1)
				} else {
					mu.Lock()
					t.devs = append(t.devs, d)
					mu.Unlock()
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
}

// connect opens device i's session with its token.
func (t *telemetryRun) connect(ctx context.Context, i int) (*simDevice, *Error) {
	var src net.IP
	if len(t.srcs) > 0 {
		src = t.srcs[i%len(t.srcs)]
	}
	c, err := dialMQTT(t.cfg.MQTTAddr, src, t.cfg.Timeout)
	if err != nil {
		return nil, classify(err, PhaseConnect, true)
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c.setDeadline(time.Now().Add(t.cfg.Timeout))
	name := t.cfg.NamePrefix + fmt.Sprintf("%06d", i)
	if err := c.connect(name, t.tokens[i], deviceKeepalive); err != nil {
		c.close(false)
		e := classify(err, PhaseConnect, false)
		if ctx.Err() != nil {
			e = &Error{Kind: KindCanceled, Phase: PhaseConnect, Err: err}
		}
		return nil, e
	}
	c.setDeadline(time.Time{})
	d := &simDevice{i: i, c: c, dead: make(chan struct{}), readerDone: make(chan struct{})}
	if t.cfg.QoS == 1 {
		d.credits = make(chan struct{}, t.cfg.Window)
		for range t.cfg.Window {
			d.credits <- struct{}{}
		}
	}
	return d, nil
}

// closeAll ends every session politely and waits for the readers.
func (t *telemetryRun) closeAll() {
	t.stopping.Store(true)
	for _, d := range t.devs {
		d.c.close(true)
	}
	for _, d := range t.devs {
		if d.readerDone != nil {
			<-d.readerDone
		}
	}
}

// load runs the devices' readers and writers for cfg.Duration (or until
// ctx ends), then waits for the last PUBACKs. It returns when the writers
// started and were told to stop. With srv set, a sampler reads /metrics
// once a second for the progress line and the largest pending gauge.
func (t *telemetryRun) load(ctx context.Context, srv *TelemetryServer) (start, stopped time.Time) {
	cfg := t.cfg
	stopCh := make(chan struct{})
	n := len(t.devs)
	// The writers start together, a moment from now.
	start = time.Now().Add(20 * time.Millisecond)
	tsBase := start.Add(-24 * time.Hour).UnixMilli()
	var writers sync.WaitGroup
	for k, d := range t.devs {
		go t.read(d)
		writers.Go(func() { t.write(d, k, n, start, tsBase, stopCh) })
	}

	// Progress: local counters, and the server's values/s and pending
	// queue from a scrape once a second.
	var srvLine atomic.Pointer[string]
	sampled := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampled)
		if srv == nil {
			return
		}
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var lastV float64 = -1
		for {
			select {
			case <-tick.C:
			case <-stopSampling:
				return
			}
			m, err := scrapeMetrics(ctx, cfg.MetricsURL)
			if err != nil {
				continue
			}
			v, _ := m.sum("zerotouch_telemetry_values_total")
			p, _ := m.sum("zerotouch_telemetry_pending_records")
			srv.MaxPending = max(srv.MaxPending, p)
			if lastV >= 0 {
				s := fmt.Sprintf(", server %.0f values/s, %.0f pending", v-lastV, p)
				srvLine.Store(&s)
			}
			lastV = v
		}
	}()
	var lastSent int64
	lastAt := start
	stopProgress := startProgress(cfg.Progress, cfg.ProgressTTY, func(final bool) string {
		now := time.Now()
		var sent, acked int64
		ended := 0
		for _, d := range t.devs {
			sent += d.sent.Load()
			acked += d.acked.Load()
			if d.err.Load() != nil {
				ended++
			}
		}
		rate := float64(sent-lastSent) / now.Sub(lastAt).Seconds()
		if final {
			rate = float64(sent) / max(now.Sub(start).Seconds(), 1e-3)
		}
		lastSent, lastAt = sent, now
		var b strings.Builder
		if cfg.ProgressTTY {
			b.WriteString(progressBar(int64(now.Sub(start)), int64(cfg.Duration)))
		}
		fmt.Fprintf(&b, "%.1f/%.0fs, sent %d (%.0f msgs/s), acked %d, %d sessions ended", max(now.Sub(start).Seconds(), 0), cfg.Duration.Seconds(), sent, rate, acked, ended)
		if p := srvLine.Load(); p != nil {
			b.WriteString(*p)
		}
		return b.String()
	})

	select {
	case <-time.After(time.Until(start.Add(cfg.Duration))):
	case <-ctx.Done():
	}
	close(stopCh)
	stopped = time.Now()
	writers.Wait()
	// The last PUBACKs, until every message is acknowledged or none came
	// for Timeout (the server delays a PUBACK for up to 5 s while its store
	// catches up).
	if cfg.QoS == 1 {
		var last int64 = -1
		lastChange := time.Now()
		for time.Since(lastChange) < cfg.Timeout {
			var sent, acked int64
			for _, d := range t.devs {
				sent += d.sent.Load()
				acked += d.acked.Load()
			}
			if acked == sent {
				break
			}
			if acked != last {
				last, lastChange = acked, time.Now()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stopSampling)
	<-sampled
	stopProgress()
	return start, stopped
}

// read reads device d's session: PUBACKs return window places; anything
// else the server sends is ignored (a QoS 1 PUBLISH is acknowledged).
func (t *telemetryRun) read(d *simDevice) {
	defer close(d.readerDone)
	for {
		pk, err := d.c.read()
		if err != nil {
			if !t.stopping.Load() {
				d.fail(classify(err, PhasePublish, false))
			}
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Puback:
			if d.credits != nil {
				d.acked.Add(1)
				select {
				case d.credits <- struct{}{}:
				default:
				}
			}
		case packets.Publish:
			// Nothing is subscribed, but a server may still send; the
			// writer owns the connection's writes, so no PUBACK here:
			// a QoS 1 PUBLISH would be unusual enough to report.
			if pk.FixedHeader.Qos > 0 {
				d.fail(&Error{Kind: KindProtocol, Phase: PhasePublish, Err: fmt.Errorf("unexpected QoS %d PUBLISH on %s", pk.FixedHeader.Qos, pk.TopicName)})
				d.c.nc.Close()
				return
			}
		}
	}
}

// write publishes device k of n's messages: its j-th is due at start +
// (k + j·n)/rate, so that the devices together send evenly at rate. A
// device behind its schedule sends at once (open loop); at QoS 1 it
// waits for a place in its window. When it would send nothing for half
// its keep-alive it sends a PINGREQ.
func (t *telemetryRun) write(d *simDevice, k, n int, start time.Time, tsBase int64, stopCh <-chan struct{}) {
	cfg := t.cfg
	qos := byte(cfg.QoS)
	// The packet: fixed header, topic, packet identifier at QoS 1, payload.
	rem := 2 + len(tbTelemetryTopic) + len(telemetryPayloads[0])
	if qos > 0 {
		rem += 2
	}
	pkt := append([]byte{packets.Publish<<4 | qos<<1}, encodeLen(rem)...)
	pkt = append(pkt, byte(len(tbTelemetryTopic)>>8), byte(len(tbTelemetryTopic)))
	pkt = append(pkt, tbTelemetryTopic...)
	idAt := len(pkt)
	if qos > 0 {
		pkt = append(pkt, 0, 0)
	}
	payloadAt := len(pkt)
	pkt = append(pkt, telemetryPayloads[0]...)
	ping := []byte{packets.Pingreq << 4, 0}
	pingEvery := deviceKeepalive * time.Second / 2

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	wait := func(until time.Time) bool {
		dt := time.Until(until)
		if dt <= time.Millisecond {
			return true // a millisecond early is on time
		}
		timer.Reset(dt)
		select {
		case <-timer.C:
			return true
		case <-stopCh:
		case <-d.dead:
		}
		return false
	}
	send := func(b []byte) bool {
		d.c.nc.SetWriteDeadline(time.Now().Add(cfg.Timeout))
		if _, err := d.c.nc.Write(b); err != nil {
			if !t.stopping.Load() {
				d.fail(classify(err, PhasePublish, false))
			}
			return false
		}
		return true
	}
	var id uint16
	lastWrite := time.Now()
	for j := int64(0); ; j++ {
		var due time.Time
		if cfg.Rate > 0 {
			due = start.Add(time.Duration((float64(k) + float64(j)*float64(n)) / cfg.Rate * float64(time.Second)))
		}
		// Keep the session alive while nothing is due.
		for cfg.Rate == 0 || due.Sub(lastWrite) > pingEvery {
			if !wait(lastWrite.Add(pingEvery)) {
				return
			}
			if !send(ping) {
				return
			}
			lastWrite = time.Now()
		}
		if !wait(due) {
			return
		}
		if d.credits != nil {
			select {
			case <-d.credits:
			case <-stopCh:
				return
			case <-d.dead:
				return
			}
		}
		select {
		case <-stopCh:
			return
		default:
		}
		copy(pkt[payloadAt:], telemetryPayloads[(k+int(j))%len(telemetryPayloads)])
		putDigits(pkt[payloadAt+tsAt:payloadAt+tsAt+tsDigits], tsBase+j)
		if qos > 0 {
			if id++; id == 0 {
				id = 1
			}
			pkt[idAt], pkt[idAt+1] = byte(id>>8), byte(id)
		}
		if !send(pkt) {
			return
		}
		d.sent.Add(1)
		lastWrite = time.Now()
	}
}

// encodeLen is MQTT's variable-length encoding of n.
func encodeLen(n int) []byte {
	var b []byte
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

// putDigits writes v in decimal into b, right-aligned, zero-padded.
func putDigits(b []byte, v int64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

// stored waits until the server committed what it accepted (the pending
// gauge at 0 and the values counter still for half a second, at most two
// minutes) and fills srv from /metrics compared with m1, read when the
// devices were connected and idle.
func (t *telemetryRun) stored(ctx context.Context, srv *TelemetryServer, m1 metricsSnapshot, loadStart time.Time) {
	var m metricsSnapshot
	var end, stable time.Time
	lastV := -1.0
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		p, err := scrapeMetrics(ctx, t.cfg.MetricsURL)
		if err != nil {
			srv.Error = "reading /metrics after the load: " + err.Error()
			return
		}
		now := time.Now()
		v, _ := p.sum("zerotouch_telemetry_values_total")
		pending, _ := p.sum("zerotouch_telemetry_pending_records")
		if v != lastV {
			lastV, stable, end = v, now, time.Time{}
		}
		if pending == 0 && end.IsZero() {
			end = now
		}
		if !end.IsZero() && now.Sub(stable) > 500*time.Millisecond {
			m = *p
			break
		}
		if now.After(deadline) {
			m, end = *p, now
			srv.Error = fmt.Sprintf("telemetry still pending (%.0f records) two minutes after the load", pending)
			break
		}
	}
	diff := func(name string, labels ...string) float64 {
		a, _ := m.sum(name, labels...)
		b, _ := m1.sum(name, labels...)
		return a - b
	}
	diffBy := func(name, label string) map[string]float64 {
		out := map[string]float64{}
		old := m1.byLabel(name, label)
		for k, v := range m.byLabel(name, label) {
			if d := v - old[k]; d != 0 {
				out[k] = d
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	srv.StoredMessages = diff("zerotouch_device_messages_total", `result="accepted"`)
	srv.StoredValues = diff("zerotouch_telemetry_values_total")
	srv.StoredSeconds = round3(end.Sub(loadStart).Seconds())
	if srv.StoredSeconds > 0 {
		srv.StoredValuesPerSecond = math.Round(srv.StoredValues / srv.StoredSeconds)
		srv.CPUSeconds = round1(diff("process_cpu_seconds_total"))
		srv.CPUPercent = math.Round(100 * srv.CPUSeconds / srv.StoredSeconds)
	}
	srv.Messages = diffBy("zerotouch_device_messages_total", "result")
	srv.RefusedConnections = diffBy("zerotouch_mqtt_refused_connections_total", "reason")
	srv.IngestWaits = diff("zerotouch_telemetry_ingest_waits_total")
	srv.CommitFailures = diff("zerotouch_telemetry_commit_failures_total")
	rss, _ := m.sum("process_resident_memory_bytes")
	srv.RSSAfterLoadMiB = round1(rss / (1 << 20))
	heap, _ := m.sum("go_memstats_heap_inuse_bytes")
	srv.HeapAfterLoadMiB = round1(heap / (1 << 20))
}
