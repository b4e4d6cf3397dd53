package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// ThingsBoard device API topics.
const (
	telemetryTopic         = "v1/devices/me/telemetry"
	attributesTopic        = "v1/devices/me/attributes"
	attributeRequestTopic  = "v1/devices/me/attributes/request/1"
	attributeResponseTopic = "v1/devices/me/attributes/response/+"
	rpcRequestTopic        = "v1/devices/me/rpc/request/+"
	rpcRequestPrefix       = "v1/devices/me/rpc/request/"
	rpcResponsePrefix      = "v1/devices/me/rpc/response/"
)

// Options tune an Agent beyond its configuration; the zero value is fine.
type Options struct {
	Logger *slog.Logger
	// BackoffBase and BackoffMax bound the waits between reconnections
	// (DefaultBackoffBase, DefaultBackoffMax).
	BackoffBase, BackoffMax time.Duration
	// ConnectTimeout bounds a CONNECT, a SUBSCRIBE or a PUBLISH's
	// acknowledgement (10 s).
	ConnectTimeout time.Duration
	// ProvisionTimeout bounds the wait for a provisioning answer (10 s).
	ProvisionTimeout time.Duration
	// TokenLifetime is how long an Azure hub SAS token is valid
	// (DefaultTokenLifetime); the agent reconnects with a fresh one when
	// three quarters of it have passed.
	TokenLifetime time.Duration
	// Version is the agent's version, reported to an Azure hub as a
	// reported property (the module's build version when empty).
	Version string
}

// Agent is a device: it provisions once, then connects and works. It is
// used by one Run or Once at a time.
type Agent struct {
	cfg    *Config
	opts   Options
	log    *slog.Logger
	tls    *tls.Config // nil for plain MQTT
	source Source
	renew  renewal
}

// New prepares an agent: it reads the TLS files now, so that a wrong path
// is reported at start rather than at the first connection.
func New(cfg *Config, opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = DefaultBackoffBase
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = DefaultBackoffMax
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.ProvisionTimeout <= 0 {
		opts.ProvisionTimeout = 10 * time.Second
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = DefaultTokenLifetime
	}
	a := &Agent{cfg: cfg, opts: opts, log: opts.Logger.With("device", cfg.Device),
		source: newSource(cfg.Telemetry, cfg.Handlers.Timeout)}
	a.renew.backoff = backoff{base: opts.BackoffBase, max: max(opts.BackoffBase, cfg.Renewal.CheckInterval)}
	if cfg.Dialect == DialectAzureDPS {
		t, err := azureTLS(cfg)
		if err != nil {
			return nil, err
		}
		a.tls = t
		return a, nil
	}
	if cfg.TLS != nil {
		host, _, _ := net.SplitHostPort(cfg.Server)
		t := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if cfg.TLS.ServerName != "" {
			t.ServerName = cfg.TLS.ServerName
		}
		if cfg.TLS.CAFile != "" {
			pem, err := os.ReadFile(cfg.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tls.caFile: %w", err)
			}
			t.RootCAs = x509.NewCertPool()
			if !t.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls.caFile %s: no PEM certificate in it", cfg.TLS.CAFile)
			}
		}
		if cfg.Credentials.Type == CredentialsX509 {
			cert, err := tls.LoadX509KeyPair(cfg.Credentials.CertFile, cfg.Credentials.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("credentials certificate and key: %w", err)
			}
			t.Certificates = []tls.Certificate{cert}
		}
		a.tls = t
	}
	return a, nil
}

// Run works until ctx ends (then it returns nil) or the server refuses the
// device for good (an error wrapping ErrRefused). Network failures are
// retried with backoff, forever.
func (a *Agent) Run(ctx context.Context) error { return a.run(ctx, false) }

// Once provisions when there is no state yet, connects, sends one
// telemetry message and returns: for tests, scripts and a first check of a
// configuration. Unlike Run it gives up on the first network failure.
func (a *Agent) Once(ctx context.Context) error { return a.run(ctx, true) }

func (a *Agent) run(ctx context.Context, once bool) error {
	st, err := a.credentials(ctx, once)
	if err != nil {
		return a.exit(ctx, err)
	}
	b := &backoff{base: a.opts.BackoffBase, max: a.opts.BackoffMax}
	// reprovisioned is set when the credentials in use come from a
	// provisioning done because the previous ones were refused: a refusal
	// of those is final, so a device never provisions in a loop.
	reprovisioned := false
	for {
		// Renewal is checked before connecting too, so that a device whose
		// hub is out of reach still renews in time (not by Once).
		if !once {
			a.renewIfDue(ctx, st)
		}
		a.checkPending(st)
		pending := st.PendingCertFile != ""
		c, lost, err := a.connectAs(ctx, st)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errStop):
			return err
		case pending && a.refusedCredentials(st, err):
			// A renewed certificate refused: the previous pair still works
			// (it is revoked only once the new one has been used).
			a.dropPending(st, err)
			continue
		case a.refusedCredentials(st, err) && reprovisioned:
			return fmt.Errorf("%w: the server refused the credentials it has just issued to device %q (%v); check the device's status with the operator",
				ErrRefused, a.cfg.Device, err)
		case a.refusedCredentials(st, err):
			a.log.Warn("the server refused the stored credentials; provisioning again", "err", err, "stateFile", a.cfg.StateFile)
			nst, perr := a.provision(ctx, once)
			if errors.Is(perr, ErrRefused) {
				return a.refusedAgain(err, perr)
			}
			if perr != nil {
				return a.exit(ctx, perr)
			}
			st, reprovisioned = nst, true
			continue
		case once:
			return err
		default:
			d := b.next()
			a.log.Warn("cannot connect; retrying", "server", a.target(st), "err", err, "in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return nil
			}
			continue
		}
		b.reset()
		if pending {
			a.promotePending(st)
		}
		a.log.Info("connected", "server", a.target(st), "credentials", st.CredentialsType)
		err = a.work(ctx, c, st, lost, once)
		c.Disconnect(250)
		if ctx.Err() != nil {
			return nil // stopped: whatever the session saw last is moot
		}
		if once {
			return err
		}
		reprovisioned = false
		if errors.Is(err, errRenewToken) {
			a.log.Info("reconnecting with a fresh SAS token", "server", a.target(st))
			continue
		}
		if errors.Is(err, errRenewCert) {
			a.log.Info("reconnecting with the renewed certificate", "server", a.target(st))
			continue
		}
		d := b.next()
		a.log.Warn("connection lost; reconnecting", "err", err, "in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return nil
		}
	}
}

// refusedAgain is the error of a device whose credentials were refused and
// whose new provisioning request was refused too: it says what the
// operator can do, from the server's reason when there is one.
func (a *Agent) refusedAgain(connErr, provErr error) error {
	if a.cfg.Dialect == DialectAzureDPS {
		return a.azureRefusedAgain(connErr, provErr)
	}
	var hint string
	var pe *ProvisionError
	errors.As(provErr, &pe)
	switch {
	case pe != nil && strings.Contains(pe.Reason, "already provisioned"):
		hint = "The device's profile has the reprovision policy \"never\". Ask the operator to delete the device " +
			"(zerotouch device delete ID) or set the profile's reprovisionPolicy to \"rotate\""
	case pe != nil && strings.Contains(pe.Reason, "disabled"):
		hint = "The device is disabled. Ask the operator to enable it (zerotouch device enable ID)"
	default:
		hint = "Check the provision key and secret in the configuration with the operator"
	}
	return fmt.Errorf("the server refused the stored credentials of device %q (%v) and refused to provision it again: %w.\n"+
		"%s; then start the agent again (the state file %s is kept)", a.cfg.Device, connErr, provErr, hint, a.cfg.StateFile)
}

// exit turns the end of ctx into a clean stop.
func (a *Agent) exit(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}

// credentials reads the state file, provisioning only when it is absent.
func (a *Agent) credentials(ctx context.Context, once bool) (*State, error) {
	st, err := LoadState(a.cfg.StateFile)
	if err == nil {
		if dialect := cmp.Or(st.Dialect, DialectThingsBoard); dialect != a.cfg.Dialect {
			return nil, fmt.Errorf("the state file %s was made for dialect %q, not %q: move it away to provision again", a.cfg.StateFile, dialect, a.cfg.Dialect)
		}
		if st.Server != a.server() || st.DeviceName != a.cfg.Device {
			a.log.Warn("the state file was made for another server or device name; using it anyway (move it away to provision again)",
				"stateServer", st.Server, "stateDevice", st.DeviceName)
		}
		return st, nil
	}
	if !errors.Is(err, ErrNoState) {
		return nil, err
	}
	a.log.Info("no state file: provisioning", "stateFile", a.cfg.StateFile, "server", a.server())
	st, err = a.provision(ctx, once)
	var pe *ProvisionError
	if errors.As(err, &pe) && strings.Contains(pe.Reason, "already provisioned") {
		return nil, fmt.Errorf("%w.\nIf this device was provisioned before and lost its state file, the operator must delete device %q "+
			"or set its profile's reprovisionPolicy to \"rotate\"; then start the agent again", err, a.cfg.Device)
	}
	return st, err
}

// provision provisions, retrying network failures with backoff (once:
// not at all), and stores the credentials before they are used.
func (a *Agent) provision(ctx context.Context, once bool) (*State, error) {
	b := &backoff{base: a.opts.BackoffBase, max: a.opts.BackoffMax}
	for {
		st, err := a.provisionOnce(ctx)
		if err == nil {
			// Stored before use: credentials the device cannot find again
			// after a crash would make it provision a second time.
			if err := SaveState(a.cfg.StateFile, st); err != nil {
				return nil, fmt.Errorf("the device was provisioned but its credentials could not be stored: %w", err)
			}
			a.log.Info("provisioned", "credentials", st.CredentialsType, "stateFile", a.cfg.StateFile)
			return st, nil
		}
		if errors.Is(err, ErrRefused) || errors.Is(err, errStop) || ctx.Err() != nil || once {
			return nil, err
		}
		d := b.next()
		a.log.Warn("provisioning failed; retrying", "err", err, "in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// refusedCredentials tells a CONNECT refused for its credentials from a
// network failure. A client certificate is refused in the TLS handshake,
// before any CONNACK: the server's alert ("remote error: tls: bad
// certificate", "certificate revoked"…) is the refusal then. crypto/tls
// does not export the received alert's type, hence the match on its text.
func (a *Agent) refusedCredentials(st *State, err error) bool {
	if errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) || errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		return true
	}
	msg := err.Error()
	return st.CredentialsType == CredentialsX509 && strings.Contains(msg, "remote error: tls:") && strings.Contains(msg, "certificate")
}

func (a *Agent) clientOptions(clientID string) *mqtt.ClientOptions {
	return a.clientOptionsFor(a.cfg.Server, a.tls != nil, clientID)
}

// clientOptionsFor are the MQTT options of a session with server
// (host:port), over TLS or not.
func (a *Agent) clientOptionsFor(server string, useTLS bool, clientID string) *mqtt.ClientOptions {
	scheme := "tcp://"
	if useTLS {
		scheme = "ssl://"
	}
	// Reconnection is the agent's own (backoff with jitter, reprovisioning
	// on refusal), so paho's is off.
	return mqtt.NewClientOptions().AddBroker(scheme + server).SetClientID(clientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(a.opts.ConnectTimeout).SetKeepAlive(30 * time.Second).
		SetDialer(&net.Dialer{Timeout: a.opts.ConnectTimeout})
}

// server is where the device provisions: the hub (thingsboard) or DPS.
func (a *Agent) server() string {
	if a.cfg.Dialect == DialectAzureDPS {
		return a.cfg.DPS.Host
	}
	return a.cfg.Server
}

// target is where the device works, for logs.
func (a *Agent) target(st *State) string {
	if a.cfg.Dialect == DialectAzureDPS {
		return st.AssignedHub
	}
	return a.cfg.Server
}

// connectAs opens the device session of the configured dialect.
func (a *Agent) connectAs(ctx context.Context, st *State) (mqtt.Client, <-chan error, error) {
	if a.cfg.Dialect == DialectAzureDPS {
		return a.azureConnect(ctx, st)
	}
	return a.connect(ctx, st)
}

// work is one connection's work in the configured dialect.
func (a *Agent) work(ctx context.Context, c mqtt.Client, st *State, lost <-chan error, once bool) error {
	if a.cfg.Dialect == DialectAzureDPS {
		return a.azureSession(ctx, c, st, lost, once)
	}
	return a.session(ctx, c, st, lost, once)
}

// connect opens the device session with the stored credentials. lost
// receives the reason when the connection drops.
func (a *Agent) connect(ctx context.Context, st *State) (mqtt.Client, <-chan error, error) {
	clientID := "zt-" + a.cfg.Device
	opts := a.clientOptions(clientID)
	switch st.CredentialsType {
	case CredentialsAccessToken:
		opts.SetUsername(st.Token)
	case CredentialsMQTTBasic:
		if st.ClientID != "" {
			opts.SetClientID(st.ClientID)
		}
		opts.SetUsername(st.Username).SetPassword(st.Password)
	case CredentialsX509:
		if a.tls == nil || len(a.tls.Certificates) == 0 {
			return nil, nil, fmt.Errorf("%w: the state holds X509_CERTIFICATE credentials but the configuration has no tls and certificate", ErrRefused)
		}
		// Read at each connection: the pair may have been renewed.
		cert, err := a.clientCertificate(st)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: the device certificate and key: %v", errStop, err)
		}
		t := a.tls.Clone()
		t.Certificates = []tls.Certificate{cert}
		opts.SetTLSConfig(t)
		return a.open(ctx, opts)
	}
	if a.tls != nil {
		opts.SetTLSConfig(a.tls)
	}
	return a.open(ctx, opts)
}

// open connects with opts. lost receives the reason when the connection
// drops.
func (a *Agent) open(ctx context.Context, opts *mqtt.ClientOptions) (mqtt.Client, <-chan error, error) {
	lost := make(chan error, 1)
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		select {
		case lost <- err:
		default:
		}
	})
	c := mqtt.NewClient(opts)
	if err := wait(ctx, c.Connect(), a.opts.ConnectTimeout); err != nil {
		c.Disconnect(0)
		return nil, nil, err
	}
	return c, lost, nil
}

// session is one connection's work: subscriptions, the first request for
// shared attributes, telemetry at the interval, handlers. It returns when
// the connection is lost, a publish is not acknowledged, or ctx ends.
func (a *Agent) session(ctx context.Context, c mqtt.Client, st *State, lost <-chan error, once bool) error {
	if once {
		return a.sendTelemetry(ctx, c)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel() // first: the workers watch ctx
		wg.Wait()
	}()

	// paho calls handlers one at a time on its own goroutine; a handler
	// command may run for seconds, so the work is queued to workers.
	attrs := make(chan []byte, 16)
	rpcs := make(chan mqtt.Message, 16)
	wg.Add(1)
	go func() {
		defer wg.Done()
		// One worker: attribute updates are applied in the order sent.
		for {
			select {
			case <-ctx.Done():
				return
			case b := <-attrs:
				a.applyAttributes(ctx, b)
			}
		}
	}()
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-rpcs:
					a.answerRPC(ctx, c, m)
				}
			}
		}()
	}

	subs := map[string]byte{attributesTopic: 1, rpcRequestTopic: 1, attributeResponseTopic: 1}
	tok := c.SubscribeMultiple(subs, func(_ mqtt.Client, m mqtt.Message) {
		switch {
		case m.Topic() == attributesTopic:
			a.queue(attrs, m.Payload(), "attribute update")
		case strings.HasPrefix(m.Topic(), rpcRequestPrefix):
			select {
			case rpcs <- m:
			default:
				id := strings.TrimPrefix(m.Topic(), rpcRequestPrefix)
				a.log.Warn("too many commands at once; refusing one", "rpc", id)
				c.Publish(rpcResponsePrefix+id, 1, false, errorJSON(errors.New("device busy: too many commands at once")))
			}
		default: // attributes/response/+: the answer to the request at connect
			var resp struct {
				Shared map[string]json.RawMessage `json:"shared"`
			}
			if err := json.Unmarshal(m.Payload(), &resp); err != nil {
				a.log.Warn("attribute response is not JSON", "err", err)
				return
			}
			if len(resp.Shared) > 0 {
				b, _ := json.Marshal(resp.Shared)
				a.queue(attrs, b, "shared attributes")
			}
		}
	})
	if err := wait(ctx, tok, a.opts.ConnectTimeout); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	// Updates sent while the device was away are not replayed, so it asks
	// for the current values at every connection.
	if err := wait(ctx, c.Publish(attributeRequestTopic, 1, false, "{}"), a.opts.ConnectTimeout); err != nil {
		return fmt.Errorf("request shared attributes: %w", err)
	}

	return a.runSession(ctx, st, lost, nil, func() error { return a.sendTelemetry(ctx, c) })
}

// runSession is a connected session's life, whatever the dialect: publish
// telemetry every interval until ctx ends (nil), the connection is lost
// (its error), tokenExpiry fires (errRenewToken: reconnect with a fresh
// token; nil for no token), or a renewed certificate is ready to be used
// (errRenewCert).
func (a *Agent) runSession(ctx context.Context, st *State, lost <-chan error, tokenExpiry <-chan time.Time, publish func() error) error {
	renewCert := a.renewAfter(st)
	tick := time.NewTicker(a.cfg.Telemetry.Interval)
	defer tick.Stop()
	for {
		if err := publish(); err != nil {
			return err
		}
	wait:
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			return err
		case <-tokenExpiry:
			return errRenewToken
		case <-renewCert:
			if a.renewIfDue(ctx, st) {
				return errRenewCert
			}
			renewCert = a.renewAfter(st)
			goto wait
		case <-tick.C:
		}
	}
}

func (a *Agent) queue(ch chan<- []byte, b []byte, what string) {
	select {
	case ch <- b:
	default:
		a.log.Warn("the attribute handler is behind; dropping an update", "what", what)
	}
}

// sendTelemetry reads the source and publishes at QoS 1. A source that
// fails is logged and skipped (the connection is fine); a publish that is
// not acknowledged ends the session.
func (a *Agent) sendTelemetry(ctx context.Context, c mqtt.Client) error {
	return a.publishTelemetry(ctx, c, telemetryTopic)
}

// publishTelemetry reads the source and publishes on topic at QoS 1.
func (a *Agent) publishTelemetry(ctx context.Context, c mqtt.Client, topic string) error {
	msg, err := a.source.Read(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		a.log.Warn("no telemetry this time", "err", err)
		return nil
	}
	if err := wait(ctx, c.Publish(topic, 1, false, []byte(msg)), a.opts.ConnectTimeout); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("publish telemetry: %w", err)
	}
	a.log.Debug("telemetry sent", "bytes", len(msg))
	return nil
}

// applyAttributes gives shared attributes to the attribute command.
func (a *Agent) applyAttributes(ctx context.Context, b []byte) {
	if a.cfg.Handlers.Attributes == "" {
		a.log.Info("shared attributes received (no handler configured)", "attributes", string(b))
		return
	}
	// Only the exit status counts: there is nobody to give output to.
	if _, err := runCommand(ctx, a.cfg.Handlers.Attributes, b, a.cfg.Handlers.Timeout); err != nil {
		a.log.Warn("attribute handler failed", "err", err)
		return
	}
	a.log.Info("shared attributes applied", "bytes", len(b))
}

// answerRPC runs the RPC command on {"method","params"} and publishes its
// output, or {"error": …}, as the answer.
func (a *Agent) answerRPC(ctx context.Context, c mqtt.Client, m mqtt.Message) {
	id := strings.TrimPrefix(m.Topic(), rpcRequestPrefix)
	var req struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params,omitempty"`
	}
	var answer []byte
	switch err := json.Unmarshal(m.Payload(), &req); {
	case err != nil:
		answer = errorJSON(fmt.Errorf("request is not JSON: %v", err))
	case a.cfg.Handlers.RPC == "":
		answer = errorJSON(errors.New("no RPC handler configured on the device"))
	default:
		in, _ := json.Marshal(req)
		out, err := runJSON(ctx, a.cfg.Handlers.RPC, in, a.cfg.Handlers.Timeout)
		if err != nil {
			a.log.Warn("RPC handler failed", "rpc", id, "method", req.Method, "err", err)
			answer = errorJSON(err)
		} else {
			answer = out
		}
	}
	if err := wait(ctx, c.Publish(rpcResponsePrefix+id, 1, false, answer), a.opts.ConnectTimeout); err != nil {
		a.log.Warn("RPC answer not sent", "rpc", id, "err", err)
		return
	}
	a.log.Info("RPC answered", "rpc", id, "method", req.Method)
}
