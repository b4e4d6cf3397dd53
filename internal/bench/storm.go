package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Dialects and credential types.
const (
	// DialectThingsBoard is ThingsBoard's device provisioning over MQTT:
	// user name "provision", request on /provision/request, answer on
	// /provision/response; then the device API under v1/devices/me/.
	DialectThingsBoard = "thingsboard"
	// CredentialsToken is a server-generated access token, the device's
	// MQTT user name afterwards.
	CredentialsToken = "token"
	// DialectAzureDPS is Azure IoT Hub DPS registration over MQTT over
	// TLS: user name "<idScope>/registrations/<id>/api-version=…", a SAS
	// token as password, register, wait the retry-after, poll (dps.go).
	DialectAzureDPS = "azure-dps"
	// CredentialsSymmetricKey is DPS symmetric-key attestation: each
	// device's key is derived from an enrollment group's key.
	CredentialsSymmetricKey = "symmetric-key"
	// CredentialsX509 is DPS X.509 attestation: each device presents a
	// leaf certificate (CN = its registration id) signed by an X.509
	// enrollment group's CA in the TLS handshake, and no password (x509.go).
	CredentialsX509 = "x509"
)

// Defaults of Config.
const (
	DefaultDevices     = 10_000
	DefaultConcurrency = 64
	DefaultTimeout     = 10 * time.Second
)

// ThingsBoard topics and payloads.
const (
	tbProvisionUser    = "provision"
	tbRequestTopic     = "/provision/request"
	tbResponseTopic    = "/provision/response"
	tbTelemetryTopic   = "v1/devices/me/telemetry"
	tbFirstTelemetry   = `{"temperature":21.5,"humidity":40.2,"firstBoot":true}`
	provisionKeepalive = 60
	// deviceKeepalive is what a device asks for. The bench sends no
	// PINGREQ, so with --keep-connected the server may end sessions held
	// longer than 1.5 times this; a storm is much shorter.
	deviceKeepalive = 300
)

// Phase names a step of a device's exchange.
type Phase string

// Phases of the exchange, in order, and the two spans the report adds.
const (
	PhaseProvisionConnect Phase = "provision-connect" // TCP + CONNECT as the provisioning identity, until CONNACK
	PhaseProvisionAnswer  Phase = "provision-answer"  // SUBSCRIBE + request, until the answer
	PhaseDeviceConnect    Phase = "device-connect"    // TCP + CONNECT with the new credentials, until CONNACK
	PhaseTelemetryAck     Phase = "telemetry-ack"     // first telemetry at QoS 1, until its PUBACK
	PhaseProvisioning     Phase = "provisioning"      // provision-connect + provision-answer
	PhaseTotal            Phase = "total"             // the whole exchange
)

// maxPhases bounds the measured steps of any dialect's exchange.
const maxPhases = 5

// flow is what a dialect's exchange measures and how a device runs it.
type flow struct {
	// phases are the measured steps, in order; index into record.lat.
	phases []Phase
	// span, when set, is a report row summing the first spanOf phases
	// (the provisioning part of the exchange); it is also the timeline's
	// provisioning p99. Without a span the timeline takes the whole
	// exchange, which is then all provisioning.
	span   Phase
	spanOf int
	run    exchange
}

// tbFlow is the ThingsBoard first boot with an access token.
var tbFlow = flow{
	phases: []Phase{PhaseProvisionConnect, PhaseProvisionAnswer, PhaseDeviceConnect, PhaseTelemetryAck},
	span:   PhaseProvisioning, spanOf: 2,
	run: thingsBoardToken,
}

// Config describes a storm. The zero value of an optional field picks its
// default.
type Config struct {
	// Dialect and Credentials select the exchange: DialectThingsBoard
	// with CredentialsToken (the default), or DialectAzureDPS with
	// CredentialsSymmetricKey (the default for that dialect) or
	// CredentialsX509.
	Dialect, Credentials string
	Target
	// Devices is how many devices boot (DefaultDevices).
	Devices int
	// Rate, when > 0, starts devices at this many per second (open loop);
	// Ramp then raises the rate linearly from 0 over that duration.
	// Concurrency then caps the devices in flight (0: no cap).
	Rate float64
	Ramp time.Duration
	// Concurrency is, without Rate, how many devices are in flight at once
	// (DefaultConcurrency): each starts when another ends.
	Concurrency int
	// KeepConnected holds every device's session until the storm is over
	// (and the server's figures are read), instead of disconnecting it
	// after its first telemetry.
	KeepConnected bool
	// DPSPollNow makes DialectAzureDPS devices poll their registration at
	// once instead of waiting the retry-after the server gave with
	// "assigning".
	DPSPollNow bool
	// RegistrationOnly ends a DialectAzureDPS device's exchange at its
	// assignment, without connecting to its hub: what DPS registrations
	// alone cost.
	RegistrationOnly bool
}

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	if c.Dialect == "" {
		c.Dialect = DialectThingsBoard
	}
	supported := map[string][]string{DialectThingsBoard: {CredentialsToken}, DialectAzureDPS: {CredentialsSymmetricKey, CredentialsX509}}[c.Dialect]
	if supported == nil {
		return fmt.Errorf("dialect %q: want %q or %q", c.Dialect, DialectThingsBoard, DialectAzureDPS)
	}
	if c.Credentials == "" {
		c.Credentials = supported[0]
	}
	if !slices.Contains(supported, c.Credentials) {
		if len(supported) == 1 {
			return fmt.Errorf("credentials %q: the %s dialect supports only %q so far", c.Credentials, c.Dialect, supported[0])
		}
		quoted := make([]string, len(supported))
		for i, x := range supported {
			quoted[i] = strconv.Quote(x)
		}
		return fmt.Errorf("credentials %q: the %s dialect supports %s", c.Credentials, c.Dialect, strings.Join(quoted, " or "))
	}
	if c.Dialect == DialectAzureDPS {
		if c.KeepConnected && c.RegistrationOnly {
			return errors.New("keep-connected: with --registration-only the devices do not connect to their hub, so there is no session to keep")
		}
		if err := c.Target.validateDPS(c.Credentials); err != nil {
			return err
		}
	} else if err := c.Target.validate(); err != nil {
		return err
	}
	if c.Devices == 0 {
		c.Devices = DefaultDevices
	}
	if c.Devices < 0 {
		return fmt.Errorf("devices %d: want at least 1", c.Devices)
	}
	if c.Rate < 0 || math.IsInf(c.Rate, 0) || math.IsNaN(c.Rate) {
		return fmt.Errorf("rate %v: want a positive number of devices per second", c.Rate)
	}
	if c.Ramp < 0 || (c.Ramp > 0 && c.Rate == 0) {
		return errors.New("ramp: want a positive duration, with a rate")
	}
	if c.Concurrency < 0 {
		return fmt.Errorf("concurrency %d: want at least 1", c.Concurrency)
	}
	if c.Concurrency == 0 && c.Rate == 0 {
		c.Concurrency = DefaultConcurrency
	}
	return nil
}

// record is what happened to one device. Durations are from the storm's
// start (start, end) or of a phase (lat; 0 when not reached).
type record struct {
	start, end time.Duration
	lat        [maxPhases]time.Duration
	err        *Error
}

// storm is one run in progress.
type storm struct {
	cfg  Config
	flow flow
	addr string // the address devices dial (Config.dialAddr)
	// tlsCfg is the devices' TLS configuration (azure-dps).
	tlsCfg *tls.Config
	// certs are the devices' certificates (azure-dps with x509), made
	// before the storm.
	certs []tls.Certificate
	srcs  []net.IP
	start time.Time
	recs  []record

	started, done, failed, inFlight atomic.Int64
	// retryAfter is the longest retry-after (ms) a DPS server gave.
	retryAfter atomic.Int64

	keptMu sync.Mutex
	kept   []*mqttConn
}

// exchange runs device i's whole first boot, filling rec; with
// KeepConnected it returns the device's open session.
type exchange func(ctx context.Context, s *storm, i int, rec *record) (*mqttConn, error)

// flows maps "dialect/credentials" to its flow: adding a dialect is
// adding an entry here (and accepting it in Validate).
var flows = map[string]flow{
	DialectThingsBoard + "/" + CredentialsToken:     tbFlow,
	DialectAzureDPS + "/" + CredentialsSymmetricKey: dpsFlow,
	DialectAzureDPS + "/" + CredentialsX509:         dpsFlow,
}

// dialAddr is the listener the dialect's devices dial.
func (c *Config) dialAddr() string {
	if c.Dialect == DialectAzureDPS {
		return c.MQTTSAddr
	}
	return c.MQTTAddr
}

// Run plays the storm described by cfg and reports it. It returns an
// error only when the storm could not be run at all (bad configuration,
// too few open files); failures of devices are in the report
// (Report.Failed), and an interrupted ctx ends the storm early with the
// remaining devices counted as KindCanceled.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fl := flows[cfg.Dialect+"/"+cfg.Credentials]
	if cfg.Dialect == DialectAzureDPS && cfg.RegistrationOnly {
		fl = dpsRegistrationFlow
	}
	return runStorm(ctx, cfg, fl)
}

// runStorm is Run with a validated cfg and the flow each device runs.
func runStorm(ctx context.Context, cfg Config, fl flow) (*Report, error) {
	ex := fl.run
	addr := cfg.dialAddr()
	srcs, err := sourceAddrs(addr, cfg.Sources)
	if err != nil {
		return nil, err
	}
	if cfg.KeepConnected || cfg.Concurrency > 1000 {
		// One file per kept device, one per device in flight, and room
		// for the runtime, the HTTP client and the terminal.
		need := uint64(cfg.Concurrency) + 256
		if cfg.KeepConnected {
			need += uint64(cfg.Devices)
		}
		if cfg.Rate > 0 && cfg.Concurrency == 0 {
			need += uint64(cfg.Rate * cfg.Timeout.Seconds())
		}
		if err := ensureFileLimit(need); err != nil {
			if fe := (*FileLimitError)(nil); errors.As(err, &fe) && !cfg.KeepConnected {
				fe.What, fe.Instead = fmt.Sprintf("%d devices in flight", cfg.Concurrency), "or lower --concurrency"
			}
			return nil, err
		}
	}
	var before *metricsSnapshot
	var beforeErr error
	var beforeAt time.Time
	if cfg.MetricsURL != "" {
		before, beforeErr = scrapeMetrics(ctx, cfg.MetricsURL)
		beforeAt = time.Now()
	}
	s := &storm{cfg: cfg, flow: fl, addr: addr, srcs: srcs, recs: make([]record, cfg.Devices)}
	if cfg.Dialect == DialectAzureDPS {
		s.tlsCfg = cfg.tlsConfig()
	}
	var credentials time.Duration
	if cfg.Credentials == CredentialsX509 {
		// Each device's key and certificate, before the storm's clock
		// (and the bench's CPU count) starts: a real device has them
		// from the factory.
		t := time.Now()
		if s.certs, err = cfg.CA.issueAll(ctx, cfg.Devices, func(i int) string { return strings.ToLower(s.deviceName(i)) }); err != nil {
			return nil, err
		}
		credentials = time.Since(t)
	}
	s.start = time.Now()
	cpu0 := selfCPU()
	stopProgress := s.progress()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Rate > 0 {
		s.runRate(runCtx, ex)
	} else {
		s.runClosed(runCtx, ex)
	}
	elapsed := time.Since(s.start)
	stopProgress()
	// Devices never started (an interrupted run) are failures too, so
	// that successes + errors = devices.
	for i := range s.recs {
		if r := &s.recs[i]; r.err == nil && r.end == 0 {
			r.err = &Error{Kind: KindCanceled, Err: context.Canceled}
		}
	}
	rep := s.report(elapsed)
	rep.CredentialsSeconds = math.Round(credentials.Seconds()*1000) / 1000
	rep.BenchCPUSeconds = round1((selfCPU() - cpu0).Seconds())
	rep.BenchCPUPercent = math.Round(100 * rep.BenchCPUSeconds / elapsed.Seconds())
	if cfg.MetricsURL != "" {
		rep.Server = serverFigures(context.WithoutCancel(ctx), cfg.MetricsURL, before, beforeErr, beforeAt)
	}
	s.keptMu.Lock()
	for _, c := range s.kept {
		c.close(true)
	}
	s.kept = nil
	s.keptMu.Unlock()
	return rep, nil
}

// runClosed keeps Concurrency devices in flight until every device ran.
func (s *storm) runClosed(ctx context.Context, ex exchange) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < s.cfg.Concurrency; w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(s.recs) {
					return
				}
				s.device(ctx, ex, i)
			}
		})
	}
	wg.Wait()
}

// arrival is when device i is due, from the start, at rate r/s after a
// linear ramp from 0 to r over ramp: the ramp brings r·ramp/2 devices.
func arrival(i int, r float64, ramp time.Duration) time.Duration {
	x := float64(i)
	rs := ramp.Seconds()
	if rs > 0 && x < r*rs/2 {
		return time.Duration(math.Sqrt(2*x*rs/r) * float64(time.Second))
	}
	return time.Duration((rs + (x-r*rs/2)/r) * float64(time.Second))
}

// runRate starts devices at their arrival times (open loop: a slow server
// does not slow arrivals down, as with real devices), at most Concurrency
// at once when set.
func (s *storm) runRate(ctx context.Context, ex exchange) {
	var wg sync.WaitGroup
	var slots chan struct{}
	if s.cfg.Concurrency > 0 {
		slots = make(chan struct{}, s.cfg.Concurrency)
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for i := range s.recs {
		if d := arrival(i, s.cfg.Rate, s.cfg.Ramp) - time.Since(s.start); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		if slots != nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			s.device(ctx, ex, i)
			if slots != nil {
				<-slots
			}
		})
	}
	wg.Wait()
}

// device runs device i and records the outcome.
func (s *storm) device(ctx context.Context, ex exchange, i int) {
	rec := &s.recs[i]
	rec.start = time.Since(s.start)
	s.started.Add(1)
	s.inFlight.Add(1)
	c, err := ex(ctx, s, i, rec)
	rec.end = time.Since(s.start)
	if err != nil {
		e := classify(err, "", false)
		if ctx.Err() != nil && e.Kind != KindCanceled {
			// The deadline fired because the run was interrupted.
			e = &Error{Kind: KindCanceled, Phase: e.Phase, Err: err}
		}
		rec.err = e
		s.failed.Add(1)
	} else if c != nil {
		s.keptMu.Lock()
		s.kept = append(s.kept, c)
		s.keptMu.Unlock()
	}
	s.inFlight.Add(-1)
	s.done.Add(1)
}

// deviceName is device i's name.
func (s *storm) deviceName(i int) string {
	return s.cfg.NamePrefix + fmt.Sprintf("%06d", i)
}

// source is device i's source address (nil: the system's choice).
func (s *storm) source(i int) net.IP {
	if len(s.srcs) == 0 {
		return nil
	}
	return s.srcs[i%len(s.srcs)]
}

// settle ends a device's exchange on its session: kept open until the
// storm ends (KeepConnected), else closed.
func (s *storm) settle(c *mqttConn) (*mqttConn, error) {
	if s.cfg.KeepConnected {
		c.setDeadline(time.Time{})
		return c, nil
	}
	c.close(true)
	return nil, nil
}

// firstTelemetry publishes a device's first message at QoS 1 and waits
// for its PUBACK.
func (c *mqttConn) firstTelemetry(topic string, payload []byte) error {
	pub, id := c.publish(topic, 1, payload)
	if err := c.send(pub); err != nil {
		return classify(err, PhaseTelemetryAck, false)
	}
	for {
		pk, err := c.read()
		if err != nil {
			return classify(err, PhaseTelemetryAck, false)
		}
		if pk.FixedHeader.Type == packets.Puback && pk.PacketID == id {
			return nil
		}
		if pk.FixedHeader.Type == packets.Publish {
			c.ack(pk) // e.g. a shared attribute; not what we wait for
		}
	}
}

// open dials the server for a device and arranges for ctx's end to abort
// whatever the session is waiting for.
func (s *storm) open(ctx context.Context, i int, phase Phase) (*mqttConn, func() bool, error) {
	c, err := dialMQTT(s.addr, s.source(i), s.cfg.Timeout)
	if err != nil {
		return nil, nil, classify(err, phase, true)
	}
	// No goroutine per session: the callback runs only if ctx ends.
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	return c, stop, nil
}

// tbAnswer is ThingsBoard's provisioning answer.
type tbAnswer struct {
	Status           string          `json:"status"`
	CredentialsType  string          `json:"credentialsType"`
	CredentialsValue json.RawMessage `json:"credentialsValue"`
	ErrorMsg         string          `json:"errorMsg"`
}

// tbProvision is the provisioning half of the ThingsBoard first boot:
// connect as "provision", subscribe to the answer, publish the request and
// wait for the answer; it returns the access token device i got.
func (s *storm) tbProvision(ctx context.Context, i int, rec *record) (string, error) {
	name := s.deviceName(i)
	t0 := time.Now()
	c, stop, err := s.open(ctx, i, PhaseProvisionConnect)
	if err != nil {
		return "", err
	}
	defer stop()
	defer c.close(true)
	c.setDeadline(time.Now().Add(s.cfg.Timeout))
	if err := c.connect(name, tbProvisionUser, provisionKeepalive); err != nil {
		return "", classify(err, PhaseProvisionConnect, false)
	}
	t1 := time.Now()
	rec.lat[0] = t1.Sub(t0)
	c.setDeadline(time.Now().Add(s.cfg.Timeout))
	if err := c.subscribe(tbResponseTopic, 1); err != nil {
		return "", classify(err, PhaseProvisionAnswer, false)
	}
	req, _ := json.Marshal(map[string]string{"deviceName": name, "provisionDeviceKey": s.cfg.ProfileKey, "provisionDeviceSecret": s.cfg.ProfileSecret})
	pub, id := c.publish(tbRequestTopic, 1, req)
	if err := c.send(pub); err != nil {
		return "", classify(err, PhaseProvisionAnswer, false)
	}
	// The PUBACK of the request and the answer may come in either
	// order; the answer is what the device waits for.
	for {
		pk, err := c.read()
		if err != nil {
			return "", classify(err, PhaseProvisionAnswer, false)
		}
		if pk.FixedHeader.Type != packets.Publish || pk.TopicName != tbResponseTopic {
			if pk.FixedHeader.Type == packets.Puback && pk.PacketID == id && pk.ReasonCode >= 0x80 {
				return "", &Error{Kind: KindRefused, Phase: PhaseProvisionAnswer, Err: fmt.Errorf("request refused (PUBACK %#x)", pk.ReasonCode)}
			}
			continue
		}
		rec.lat[1] = time.Since(t1)
		c.ack(pk) // courtesy: the session ends anyway
		return tokenOf(pk.Payload)
	}
}

// thingsBoardToken is the ThingsBoard first boot with a server-generated
// access token: provision as "provision", then connect with the token and
// publish the first telemetry at QoS 1.
func thingsBoardToken(ctx context.Context, s *storm, i int, rec *record) (*mqttConn, error) {
	name := s.deviceName(i)
	token, err := s.tbProvision(ctx, i, rec)
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	c, stop, err := s.open(ctx, i, PhaseDeviceConnect)
	if err != nil {
		return nil, err
	}
	defer stop()
	ok := false
	defer func() {
		if !ok {
			c.close(false)
		}
	}()
	c.setDeadline(time.Now().Add(s.cfg.Timeout))
	if err := c.connect(name, token, deviceKeepalive); err != nil {
		return nil, classify(err, PhaseDeviceConnect, false)
	}
	t3 := time.Now()
	rec.lat[2] = t3.Sub(t2)
	c.setDeadline(time.Now().Add(s.cfg.Timeout))
	if err := c.firstTelemetry(tbTelemetryTopic, []byte(tbFirstTelemetry)); err != nil {
		return nil, err
	}
	rec.lat[3] = time.Since(t3)
	ok = true
	return s.settle(c)
}

// tokenOf reads the access token out of a provisioning answer.
func tokenOf(payload []byte) (string, error) {
	var a tbAnswer
	if err := json.Unmarshal(payload, &a); err != nil {
		return "", &Error{Kind: KindProtocol, Phase: PhaseProvisionAnswer, Err: fmt.Errorf("answer %.200q: %w", payload, err)}
	}
	if a.Status != "SUCCESS" {
		return "", &Error{Kind: KindProvision, Phase: PhaseProvisionAnswer, Err: fmt.Errorf("status %s: %s", a.Status, a.ErrorMsg)}
	}
	if a.CredentialsType != "ACCESS_TOKEN" {
		return "", &Error{Kind: KindProtocol, Phase: PhaseProvisionAnswer, Err: fmt.Errorf("credentials of type %q: the profile must issue ACCESS_TOKEN", a.CredentialsType)}
	}
	var tok string
	if err := json.Unmarshal(a.CredentialsValue, &tok); err != nil || tok == "" {
		return "", &Error{Kind: KindProtocol, Phase: PhaseProvisionAnswer, Err: fmt.Errorf("credentialsValue %.100s is not a token", a.CredentialsValue)}
	}
	return tok, nil
}
