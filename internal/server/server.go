// Package server assembles a running zerotouch node from its configuration:
// the store, the provisioning pipeline, the embedded MQTT hub, the HTTP
// listener with the management API and the device APIs, and metrics.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/config"
	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/dialect/azuredps"
	"github.com/zerotouch/zerotouch/internal/dialect/azureiothub"
	"github.com/zerotouch/zerotouch/internal/dialect/thingsboard"
	"github.com/zerotouch/zerotouch/internal/hub"
	"github.com/zerotouch/zerotouch/internal/metrics"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/seal"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/store/sqlite"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// DatabaseFile is the SQLite file's name inside the data directory.
const DatabaseFile = "zerotouch.db"

// TelemetryFile is the SQLite file of telemetry and attributes, apart from
// the registry so that ingestion and provisioning do not wait for each
// other's commits.
const TelemetryFile = "telemetry.db"

// Server is a running node.
type Server struct {
	log      *slog.Logger
	store    registry.Store
	tstore   telemetry.Store
	devices  *device.Service
	hub      *hub.Hub
	http     *http.Server
	pki      *nodePKI
	hubName  string // --hub-name, or defaultHubName once the MQTTS listener is bound
	httpAddr net.Addr
	mqttAddr net.Addr
	// httpsAddr and mqttsAddr are the TLS listeners' addresses.
	httpsAddr, mqttsAddr net.Addr
	httpDone             chan error // one result per HTTP(S) listener served
	hubRegion            string     // --hub-region: the built-in hub's region
}

// Options are what a node needs besides its configuration.
type Options struct {
	Logger *slog.Logger
	// Banner receives the generated admin key, the only time it is shown.
	Banner io.Writer
	// Limiter slows down sources of failed requests and CONNECTs; nil uses
	// provision.NewFailureLimiter(). Tests that send many refusals from
	// 127.0.0.1 give a lenient one.
	Limiter *provision.FailureLimiter
}

// Start opens the store, makes sure an admin API key exists (printing a
// generated one to opts.Banner, once), and starts every listener that is not
// "off". It returns once all listeners accept connections.
func Start(ctx context.Context, cfg config.Config, opts Options) (_ *Server, err error) {
	log := opts.Logger
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	// The CA first: its key-encryption key also seals the registry's
	// symmetric keys.
	ca, err := openCA(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	sealer, err := seal.New(ca.SealingKey("registry"))
	if err != nil {
		return nil, err
	}
	dbPath := filepath.Join(cfg.DataDir, DatabaseFile)
	raw, err := sqlite.Open(ctx, dbPath, sqlite.Options{Logger: log, Sealer: sealer})
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", dbPath, err)
	}
	s := &Server{log: log}
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	changes := &registry.Changes{}
	s.store = registry.NotifyingStore{Store: raw, Changes: changes}
	tsPath := filepath.Join(cfg.DataDir, TelemetryFile)
	if s.tstore, err = sqlite.OpenTelemetry(ctx, tsPath, sqlite.TelemetryOptions{Logger: log}); err != nil {
		return s, fmt.Errorf("open database %s: %w", tsPath, err)
	}

	if s.pki, err = openPKI(ctx, cfg, ca, s.store, changes, log); err != nil {
		return s, err
	}

	m := metrics.New()
	s.pki.registerMetrics(m, s.store)
	// One limiter for every failure a source can cause (wrong provision
	// secret, refused CONNECT), so guesses on one listener cost on the other.
	limiter := opts.Limiter
	if limiter == nil {
		limiter = provision.NewFailureLimiter()
	}
	// One Verifier for the pipeline and the hub: a secret verified by one
	// is remembered by both.
	secrets := secret.NewVerifier(0)
	s.devices, err = device.New(device.Options{
		Store:    s.tstore,
		Registry: s.store,
		Limiter:  limiter,
		Logger:   log,
		Limits: device.Limits{
			MaxPayload: cfg.DeviceMaxPayload,
			MaxKeys:    cfg.DeviceMaxKeys,
			Rate:       cfg.DeviceRate,
			Burst:      cfg.DeviceBurst,
		},
		Writer:    telemetry.WriterOptions{Interval: cfg.TelemetryFlush},
		Retention: cfg.TelemetryRetention,
	})
	if err != nil {
		return s, err
	}
	changes.Subscribe(func(ch registry.Change) {
		if ch.Kind != registry.ChangeDeviceDeleted {
			return
		}
		// Not on the deleting request's path: a subscriber must not block.
		go func() {
			if err := s.devices.Forget(context.Background(), ch.DeviceID); err != nil {
				log.Error("deleting a deleted device's telemetry failed", "device", ch.DeviceID, "error", err)
			}
		}()
	})
	registerDeviceMetrics(m, s.devices)

	svc := provision.New(provision.Options{Store: s.store, Logger: log, Metrics: m, Limiter: limiter, Verifier: secrets,
		DPS: provision.DPSOptions{
			Allocator: allocate.New(allocate.Options{Webhook: allocate.Webhook{URL: cfg.DPSWebhookURL}}),
			Hubs:      s.hubs,
			Regions:   cfg.Regions,
			Twins:     s.devices,
		}})
	tb := thingsboard.NewHandler(svc)
	s.hubName, s.hubRegion = cfg.HubName, cfg.HubRegion

	// Client certificates are checked at the TLS handshake of both TLS
	// listeners: a revoked or unknown certificate of the built-in CA never
	// gets a session.
	if err := s.pki.checkHandshakes(s.store, changes, svc, limiter); err != nil {
		return s, err
	}
	s.hub, err = hub.New(hub.Options{Store: s.store, Changes: changes, Logger: log, Limiter: limiter, Verifier: secrets,
		MaxClients: cfg.MQTTMaxClients, Presence: s.devices, CertificateProvisioner: svc})
	if err != nil {
		return s, err
	}
	tbDevices := thingsboard.NewDeviceAPI(s.devices, s.hub, log)
	s.hub.HandleDeviceTopic(hub.DeviceTopicPrefix, func(ctx context.Context, sess hub.DeviceSession, topic string, payload []byte) error {
		return tbDevices.HandleMQTT(ctx, sess.DeviceID, topic, payload, sess.Reply)
	})
	// Devices registered through DPS speak IoT Hub's protocol; the hub
	// confines each session to its scheme's topics.
	iotHub := azureiothub.New(s.devices, s.hub, log)
	handleIoTHub := func(ctx context.Context, sess hub.DeviceSession, topic string, payload []byte) error {
		return iotHub.HandleMQTT(ctx, azureiothub.Session{DeviceID: sess.DeviceID, HubDeviceID: sess.DeviceName, Reply: sess.Reply}, topic, payload)
	}
	s.hub.HandleDeviceTopic(azureiothub.DevicesPrefix, handleIoTHub)
	s.hub.HandleDeviceTopic(azureiothub.IoTHubPrefix, handleIoTHub)
	dps := azuredps.NewHandler(svc, azuredps.Options{Logger: log})
	s.hub.HandleProvisioning(hub.ProvisioningRoute{
		MatchUsername:      azuredps.IsUsername,
		RequestTopicPrefix: azuredps.RequestPrefix,
		ResponseTopic:      azuredps.ResponseFilter,
		WithPassword:       true,
		HandleRequest: func(ctx context.Context, sess hub.Session, topic string, payload []byte) (string, []byte) {
			return dps.HandleMQTT(ctx, azuredps.Session{RemoteAddr: sess.RemoteAddr, Username: sess.Username,
				Password: sess.Password, Certificates: sess.PeerCertificates, TLS: sess.TLS}, topic, payload)
		},
	})
	s.hub.HandleProvisioning(hub.ProvisioningRoute{
		Username:      thingsboard.ProvisionUsername,
		RequestTopic:  thingsboard.RequestTopic,
		ResponseTopic: thingsboard.ResponseTopic,
		Handle: func(ctx context.Context, sess hub.Session, payload []byte) []byte {
			return tb.HandleMQTT(ctx, sess.RemoteAddr, payload)
		},
	})
	m.GaugeFunc("zerotouch_connected_devices", "Devices connected to this node's MQTT hub.", func() float64 { return float64(s.hub.ConnectedDevices()) })
	var reasons []string
	for _, r := range hub.RefusalReasons() {
		reasons = append(reasons, string(r))
	}
	m.CounterFunc("zerotouch_mqtt_refused_connections_total", "MQTT CONNECTs refused for capacity, by reason.", "reason",
		reasons, func(reason string) float64 { return float64(s.hub.RefusedConnections(hub.RefusalReason(reason))) })
	if cfg.MQTT != config.Off {
		if s.mqttAddr, err = s.hub.ListenTCP("mqtt", cfg.MQTT); err != nil {
			return s, listenError("MQTT", "--mqtt", cfg.MQTT, err)
		}
	}
	if cfg.MQTTS != config.Off {
		if s.mqttsAddr, err = s.hub.ListenTLS("mqtts", cfg.MQTTS, s.pki.tlsConfig("mqtts")); err != nil {
			return s, listenError("MQTTS", "--mqtts", cfg.MQTTS, err)
		}
	}
	if s.hubName == "" {
		s.hubName = defaultHubName(s.mqttsAddr)
	}

	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/provision", tb)
	for _, pattern := range thingsboard.HTTPRoutes {
		mux.Handle(pattern, tbDevices)
	}
	mux.Handle("/api/", api.New(api.Options{Store: s.store, Logger: log, Devices: s.devices, Certificates: s.pki.certs,
		BuiltinHub: s.builtinHub}))
	s.pki.routes(mux)
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	var httpLns []net.Listener
	closeLns := func() {
		for _, ln := range httpLns {
			ln.Close()
		}
	}
	if cfg.HTTP != config.Off {
		ln, err := net.Listen("tcp", cfg.HTTP)
		if err != nil {
			return s, listenError("HTTP", "--http", cfg.HTTP, err)
		}
		s.httpAddr = ln.Addr()
		httpLns = append(httpLns, ln)
	}
	if cfg.HTTPS != config.Off {
		ln, err := net.Listen("tcp", cfg.HTTPS)
		if err != nil {
			closeLns()
			return s, listenError("HTTPS", "--https", cfg.HTTPS, err)
		}
		s.httpsAddr = ln.Addr()
		httpLns = append(httpLns, tls.NewListener(ln, s.pki.tlsConfig("https")))
	}
	// Only now that every address is bound: a start that fails on a busy
	// port must not consume the one-time display of a generated key.
	if err := bootstrapAdminKey(ctx, s.store, cfg.AdminKey, opts.Banner); err != nil {
		closeLns()
		return s, err
	}
	if err := s.hub.Start(); err != nil {
		closeLns()
		return s, err
	}
	if len(httpLns) > 0 {
		s.http = &http.Server{
			Handler:           withDevicePaths(mux, dps, s.hub),
			ReadHeaderTimeout: 10 * time.Second,
			// Bodies are small (a provisioning request, a JSON record); a
			// client that trickles one must not hold the connection. The
			// CSV import extends its own deadline.
			ReadTimeout:    30 * time.Second,
			IdleTimeout:    2 * time.Minute,
			MaxHeaderBytes: 64 << 10,
			ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		s.httpDone = make(chan error, len(httpLns))
		for _, ln := range httpLns {
			go func() { s.httpDone <- s.http.Serve(ln) }()
		}
	}
	log.Info("zerotouch is running", "data", cfg.DataDir, "http", addrString(s.httpAddr), "https", addrString(s.httpsAddr),
		"mqtt", addrString(s.mqttAddr), "mqtts", addrString(s.mqttsAddr))
	return s, nil
}

// registerDeviceMetrics exposes ingestion and connection figures.
// WebSocket paths of MQTT: the Azure IoT SDKs' (for DPS and IoT Hub, over
// TLS) and the usual one of MQTT clients.
const (
	iotHubWebSocketPath = "/$iothub/websocket"
	mqttWebSocketPath   = "/mqtt"
)

// withDevicePaths serves, in front of mux (whose patterns cannot express
// "/{idScope}/registrations/…" beside "/api/"), the DPS HTTPS device API
// and MQTT over WebSocket. Both over TLS only where tokens travel: DPS,
// and the Azure SDKs' WebSocket path; /mqtt on either listener.
func withDevicePaths(mux *http.ServeMux, dps *azuredps.Handler, h *hub.Hub) http.Handler {
	ws, wss := h.WebSocketHandler("ws"), h.WebSocketHandler("wss")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.TLS != nil && azuredps.IsPath(r.URL.Path):
			dps.ServeHTTP(w, r)
		case r.TLS != nil && (r.URL.Path == iotHubWebSocketPath || r.URL.Path == mqttWebSocketPath):
			wss.ServeHTTP(w, r)
		case r.URL.Path == mqttWebSocketPath:
			ws.ServeHTTP(w, r)
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// hubsTimeout bounds the read of the registered hubs on a registration.
const hubsTimeout = 5 * time.Second

// hubs are the hubs DPS registrations are allocated to: this node's own
// (always a candidate), then the hubs registered for the default
// organisation, enabled or not (allocation skips disabled ones). A
// registered hub named like the built-in hub is left out: the built-in
// one wins. When the registered hubs cannot be read, the built-in hub
// alone is offered, and the failure logged.
func (s *Server) hubs() []allocate.Hub {
	builtin := s.builtinHub()
	out := []allocate.Hub{builtin}
	ctx, cancel := context.WithTimeout(context.Background(), hubsTimeout)
	defer cancel()
	opts := registry.ListOptions{Limit: registry.MaxPageSize}
	for {
		page, next, err := s.store.ListHubs(ctx, registry.DefaultOrgID, opts)
		if err != nil {
			s.log.Error("reading the registered hubs failed; allocating to the built-in hub only", "error", err)
			return out[:1]
		}
		for _, h := range page {
			if !strings.EqualFold(h.Name, builtin.Name) {
				out = append(out, allocate.Hub{Name: h.Name, Weight: h.Weight, Region: h.Region, Enabled: h.Enabled})
			}
		}
		if next == "" {
			return out
		}
		opts.After = next
	}
}

// builtinHub is this node's own hub: weight 1, enabled, in --hub-region.
func (s *Server) builtinHub() allocate.Hub {
	return allocate.Hub{Name: s.hubName, Weight: 1, Region: s.hubRegion, Enabled: true}
}

// builtinHubName is the name devices are given for this node's hub.
func (s *Server) builtinHubName() string { return s.hubName }

// defaultHubName is the built-in hub's name without --hub-name: this
// host's name, with the MQTTS port unless it is 8883.
func defaultHubName(mqtts net.Addr) string {
	host, err := os.Hostname()
	if err != nil || !pki.ValidDNSName(host) {
		host = "localhost"
	}
	if a, ok := mqtts.(*net.TCPAddr); ok && a.Port != 8883 {
		return net.JoinHostPort(host, strconv.Itoa(a.Port))
	}
	return host
}

func registerDeviceMetrics(m *metrics.Metrics, d *device.Service) {
	m.CounterFunc("zerotouch_device_messages_total", "Messages devices sent (telemetry, attributes, requests), by result.", "result",
		device.Results(), func(r string) float64 { return float64(d.Count(r)) })
	m.CounterFunc("zerotouch_telemetry_values_total", "Time-series values accepted for storage.", "", nil,
		func(string) float64 { return float64(d.ValuesAccepted()) })
	w := d.Writer()
	m.CounterFunc("zerotouch_telemetry_commits_total", "Telemetry batches committed to the store.", "", nil,
		func(string) float64 { return float64(w.Commits()) })
	m.CounterFunc("zerotouch_telemetry_committed_records_total", "Records (values, attributes, connection times) committed.", "", nil,
		func(string) float64 { return float64(w.Committed()) })
	m.CounterFunc("zerotouch_telemetry_commit_failures_total", "Telemetry commits that failed (and were retried or dropped).", "", nil,
		func(string) float64 { return float64(w.Failures()) })
	m.CounterFunc("zerotouch_telemetry_ingest_waits_total", "Device messages that waited for the store to catch up (back-pressure).", "", nil,
		func(string) float64 { return float64(w.Waits()) })
	m.GaugeFunc("zerotouch_telemetry_pending_records", "Records accepted but not yet committed.", func() float64 { return float64(w.Pending()) })
	m.CounterFunc("zerotouch_telemetry_retention_deleted_total", "Time-series values deleted by retention.", "", nil,
		func(string) float64 { return float64(d.RetentionDeleted()) })
	m.CounterFunc("zerotouch_device_connection_events_total", "Device sessions begun (connect) and ended (disconnect).", "event",
		[]string{"connect", "disconnect"}, func(ev string) float64 {
			c, dc := d.ConnectionEvents()
			if ev == "connect" {
				return float64(c)
			}
			return float64(dc)
		})
}

// listenError explains a listener that could not bind, with what to do.
func listenError(what, flag, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s listener on %s: the address is already in use (another server running?): choose another with %s ADDR, or %s off: %w", what, addr, flag, flag, err)
	}
	return fmt.Errorf("%s listener on %s: %w", what, addr, err)
}

func addrString(a net.Addr) string {
	if a == nil {
		return config.Off
	}
	return a.String()
}

// HTTPAddr is the bound HTTP address, nil when off.
func (s *Server) HTTPAddr() net.Addr { return s.httpAddr }

// MQTTAddr is the bound MQTT address, nil when off.
func (s *Server) MQTTAddr() net.Addr { return s.mqttAddr }

// HTTPSAddr is the bound HTTPS address, nil when the listener is off.
func (s *Server) HTTPSAddr() net.Addr { return s.httpsAddr }

// MQTTSAddr is the bound MQTT-over-TLS address, nil when the listener is off.
func (s *Server) MQTTSAddr() net.Addr { return s.mqttsAddr }

// CA is the node's built-in CA.
func (s *Server) CA() *pki.CA { return s.pki.certs.CA() }

// Store is the node's store (for tests and embedding).
func (s *Server) Store() registry.Store { return s.store }

// Wait blocks until the HTTP listener fails or ctx ends.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.httpDone:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// Close stops the listeners, lets requests in flight finish (until ctx
// ends), then closes the store.
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	if s.devices != nil {
		// RPC calls waiting for devices would hold the HTTP shutdown up.
		s.devices.StopCalls()
	}
	if s.http != nil {
		errs = append(errs, s.http.Shutdown(ctx))
	}
	if s.hub != nil {
		errs = append(errs, s.hub.Close())
	}
	if s.devices != nil { // after the hub: no more device messages
		// Its own budget: what devices sent and were told is stored must
		// be committed even when ctx ran out waiting for HTTP requests.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		errs = append(errs, s.devices.Close(wctx))
		cancel()
	}
	if s.pki != nil {
		s.pki.close()
	}
	if s.tstore != nil {
		errs = append(errs, s.tstore.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	return errors.Join(errs...)
}
