// Package hub is zerotouch's embedded MQTT broker (MQTT 3.1, 3.1.1 and 5,
// built on mochi-mqtt): it authenticates devices against the registry,
// confines every session to its own topics, carries provisioning
// request/response exchanges to the session that asked, and cuts sessions
// off as soon as their credentials are revoked or their device is disabled
// or deleted.
//
// The hub is not a general-purpose broker: nothing a client publishes is
// ever forwarded to another client. Provisioning requests go to the
// route's handler and the answer goes back to the requesting session only;
// device publishes on the device API topics go to the handlers registered
// with HandleDeviceTopic. Retained messages and last wills are never
// delivered.
//
// Provisioning sessions need no credentials, so they are bounded instead:
// a keep-alive of at most 60 s, a lifetime
// (Options.ProvisioningSessionLifetime), and caps on how many there are in
// all and per source (Options.MaxProvisioningSessions,
// Options.MaxProvisioningSessionsPerHost). Options.MaxClients caps all
// sessions. CONNECTs refused for capacity are counted by
// RefusedConnections.
//
// Client ids are scoped by identity: a CONNECT reusing a client id takes
// over (and may resume) only a session of the same device. Two devices
// that share a client id stay connected side by side, as on ThingsBoard,
// and provisioning sessions never share or keep any state.
package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// Defaults for Options.
const (
	DefaultMaxPacketSize  = 256 << 10
	DefaultConnectTimeout = 10 * time.Second
	DefaultHandleTimeout  = 30 * time.Second
	DefaultSessionExpiry  = time.Hour
	// DefaultMaxQueuedWrites bounds the packets queued for one client
	// while its connection is slow. The hub sends a device little (answers,
	// pushes, commands), and mochi's default (8,192) costs 64 KiB of
	// channel per connection, most of an idle device's memory.
	DefaultMaxQueuedWrites = 64

	// DefaultProvisioningSessionLifetime is how long a provisioning
	// session may stay connected: connecting, subscribing, sending a
	// request and getting the answer take well under a second, and this
	// leaves room for a slow store (a request handled within
	// DefaultHandleTimeout still gets its answer) and for a few retries.
	DefaultProvisioningSessionLifetime = 2 * time.Minute
	// DefaultMaxProvisioningSessions caps concurrent provisioning
	// sessions: far more than provisioning ever needs at once (sessions
	// last about a second), far fewer than the file descriptors a server
	// has, so that a flood of them cannot lock devices out.
	DefaultMaxProvisioningSessions = 10_000
	// DefaultMaxProvisioningSessionsPerHost caps the concurrent
	// provisioning sessions of one source (an IPv4 address or an IPv6
	// /64). Devices behind one NAT, e.g. a factory line, share an address
	// and provision in bursts; as a session lasts about a second, 256 of
	// them at once is a burst of hundreds of devices per second, while one
	// host alone can take at most 1/40 of DefaultMaxProvisioningSessions.
	// Devices refused over it get a "try later" code (see
	// MaxProvisioningSessionsPerHost) and retry.
	DefaultMaxProvisioningSessionsPerHost = 256
	// DefaultMaxPendingConnections caps the connections that have not
	// sent their CONNECT yet (TCP accepted, TLS handshake and CONNECT
	// under way). A CONNECT comes within milliseconds of the TCP
	// handshake, so even thousands of devices arriving at once hold few
	// such slots; a flood of idle TCP connections holds at most this many
	// file descriptors, each for at most ConnectTimeout.
	DefaultMaxPendingConnections = 1024
	// DefaultMaxPendingConnectionsPerHost caps them per source (an IPv4
	// address or an IPv6 /64), so that one host cannot take every slot.
	DefaultMaxPendingConnectionsPerHost = 128
)

// provisioningKeepalive is the longest keep-alive, in seconds, a
// provisioning session gets; one asking for none or more is given it
// (MQTT 5 clients are told in the CONNACK's Server Keep Alive).
const provisioningKeepalive = 60

// DeviceTopicPrefix is the root of the ThingsBoard device API: a device
// session may publish and subscribe only below it, and what it publishes
// there concerns itself alone.
const DeviceTopicPrefix = "v1/devices/me/"

// Options configures a Hub. Store is required; the zero value of every
// other field picks a default.
type Options struct {
	// Store answers credential lookups at CONNECT and records audit events
	// for refused connections and topics.
	Store registry.Store
	// Changes, when set, tells the hub about revoked credentials and
	// disabled or deleted devices; their live sessions are disconnected.
	Changes *registry.Changes
	// Logger receives the hub's logs; nil uses slog.Default(). Tokens and
	// passwords are never logged.
	Logger *slog.Logger
	// Limiter slows down sources whose CONNECTs keep failing
	// authentication; nil uses provision.NewFailureLimiter().
	Limiter *provision.FailureLimiter
	// Verifier checks MQTT_BASIC passwords; share the provisioning
	// pipeline's so that both remember the same verified secrets. nil uses
	// a private one.
	Verifier *secret.Verifier
	// Presence, when set, is told when device sessions begin and end.
	Presence Presence
	// SAS verifies the shared access signatures of IoT Hub devices (its
	// clock and skew); the zero value uses the system clock.
	SAS attest.SASVerifier
	// CertificateProvisioner, when set, is given the TLS client
	// certificates that match no credential: it may provision their
	// device (X.509 chain provisioning), which is then connected. nil:
	// such certificates are refused.
	CertificateProvisioner CertificateProvisioner

	// MaxPacketSize caps an incoming packet, in bytes (DefaultMaxPacketSize
	// when 0).
	MaxPacketSize uint32
	// MaxClients caps concurrent sessions, devices and provisioning
	// sessions together; 0 means no limit. A CONNECT over it is refused
	// with MQTT 5 reason 0x89 (server busy), MQTT 3 return code 3 (server
	// unavailable), and counted as RefusedMaxClients. A device taking over
	// its own live session (same client id) is let in: it replaces that
	// session. Connections that have not sent their CONNECT yet are not
	// counted here but by MaxPendingConnections.
	MaxClients int
	// MaxProvisioningSessions caps concurrent provisioning sessions. When
	// 0 it is DefaultMaxProvisioningSessions, but at most half of
	// MaxClients when that is set, so that a flood of provisioning
	// sessions leaves room for devices; negative means no cap. A CONNECT
	// over it is refused with MQTT 5 reason 0x89 (server busy), MQTT 3
	// return code 3, and counted as RefusedProvisioningSessions.
	MaxProvisioningSessions int
	// MaxProvisioningSessionsPerHost caps the concurrent provisioning
	// sessions of one source: an IPv4 address, or an IPv6 /64 (one host
	// usually holds a whole /64). When 0 it is
	// DefaultMaxProvisioningSessionsPerHost (at most the provisioning
	// cap); negative means no cap. Raise it for sites that provision more
	// devices at once behind one NAT. A CONNECT over it is refused with
	// MQTT 5 reason 0x97 (quota exceeded), MQTT 3 return code 3, and
	// counted as RefusedProvisioningSessionsPerHost.
	MaxProvisioningSessionsPerHost int
	// ProvisioningSessionLifetime is how long a provisioning session may
	// stay connected (DefaultProvisioningSessionLifetime when 0 or
	// negative). Then the hub disconnects it (MQTT 5: DISCONNECT with
	// reason 0xA0, maximum connect time), once the answer to a request
	// being handled, if any, is sent.
	ProvisioningSessionLifetime time.Duration
	// ConnectTimeout is how long a new connection may take to send its
	// CONNECT (DefaultConnectTimeout when 0).
	ConnectTimeout time.Duration
	// MaxPendingConnections caps the connections accepted that have not
	// sent their CONNECT yet (DefaultMaxPendingConnections when 0;
	// negative: no cap). A connection over it is closed at once, before
	// any MQTT is read, and counted as RefusedPendingConnections.
	MaxPendingConnections int
	// MaxPendingConnectionsPerHost caps them per source host
	// (DefaultMaxPendingConnectionsPerHost when 0; negative: no cap),
	// counted as RefusedPendingConnectionsPerHost.
	MaxPendingConnectionsPerHost int
	// MaxQueuedWrites bounds the packets mochi queues for one slow client
	// (DefaultMaxQueuedWrites when 0). The hub's own deliveries (answers,
	// pushes, commands) are written at once instead, and a client that
	// does not take one within a few seconds is disconnected.
	MaxQueuedWrites int
	// HandleTimeout bounds one provisioning or device-topic handler call
	// (DefaultHandleTimeout when 0).
	HandleTimeout time.Duration
	// SessionExpiry caps how long the state of a disconnected device
	// session that asked to be kept (clean session off) is kept
	// (DefaultSessionExpiry when 0). Provisioning sessions are never kept.
	SessionExpiry time.Duration
}

// Session describes one MQTT connection.
type Session struct {
	// ClientID is the MQTT client identifier (assigned by the broker when
	// the client sent none).
	ClientID string
	// Username is the CONNECT user name for provisioning and MQTT_BASIC
	// sessions; it is left empty when the user name is an access token.
	Username string
	// RemoteAddr is the client's address, host:port.
	RemoteAddr string
	// Listener is the name given to ListenTCP or ListenTLS.
	Listener string
	// ProtocolVersion is 3, 4 (MQTT 3.1.1) or 5.
	ProtocolVersion byte
	// TLS is set for connections over TLS.
	TLS bool
	// Password is the CONNECT's password, kept only for the provisioning
	// routes that ask for it (ProvisioningRoute.WithPassword).
	Password string
	// PeerCertificates is the TLS client certificate chain, leaf first,
	// for provisioning sessions over TLS that presented one.
	PeerCertificates []*x509.Certificate
}

// DeviceSession is a Session authenticated as a device.
type DeviceSession struct {
	Session
	// Scheme is the device topic scheme the session speaks:
	// SchemeThingsBoard or SchemeIoTHub.
	Scheme         string
	OrgID          string
	DeviceID       string
	DeviceName     string
	CredentialID   string
	CredentialType registry.CredentialType
	// CertificateSerial and CertificateFingerprint identify the TLS client
	// certificate the session authenticated with (lowercase hex serial
	// number and SHA-256); empty for other credentials. Revoking a
	// certificate of the built-in CA with this serial ends the session.
	CertificateSerial, CertificateFingerprint string

	conn *conn
}

// Reply publishes a message on topic (below DeviceTopicPrefix) to this
// session alone, if it subscribed to it: the answer to a request the
// session made.
func (s DeviceSession) Reply(topic string, payload []byte) error {
	if s.conn == nil {
		return errSessionEnded
	}
	return s.conn.h.deliver(s.conn, topic, payload, packets.Properties{})
}

// ProvisioningRoute lets unauthenticated devices provision themselves over
// MQTT: a CONNECT whose user name is Username (any password or none) opens
// a provisioning session, which may only subscribe to ResponseTopic and
// publish to RequestTopic. Each request is passed to Handle on the
// session's own read path (one at a time per session), and the answer is
// published on ResponseTopic to that session only.
//
// Protocols whose user names and topics carry parameters (Azure DPS:
// "<idScope>/registrations/<id>/api-version=…", requests on
// "$dps/registrations/PUT/iotdps-register/?$rid=1", answers on
// "$dps/registrations/res/202/?$rid=1&retry-after=3") use the variable
// forms instead: MatchUsername, RequestTopicPrefix, a ResponseTopic that
// is the subscription filter the session may take, and HandleRequest,
// which names each answer's topic.
type ProvisioningRoute struct {
	Username      string // e.g. "provision"
	RequestTopic  string // e.g. "/provision/request"
	ResponseTopic string // e.g. "/provision/response"
	// Handle returns the answer's payload; nil sends no answer. payload
	// must not be kept after Handle returns.
	Handle func(ctx context.Context, s Session, payload []byte) (response []byte)

	// MatchUsername, set instead of Username, opens a session of this
	// route for every user name it accepts. Routes with an exact
	// Username are tried first.
	MatchUsername func(username string) bool
	// RequestTopicPrefix, set instead of RequestTopic, takes requests on
	// every topic that starts with it.
	RequestTopicPrefix string
	// HandleRequest, set instead of Handle, is given the request's topic
	// and returns the answer's topic (which the session's ResponseTopic
	// subscription must match) with its payload; an empty topic sends no
	// answer.
	HandleRequest func(ctx context.Context, s Session, topic string, payload []byte) (responseTopic string, response []byte)
	// WithPassword keeps the CONNECT's password in Session.Password, for
	// protocols where it is the device's evidence (a DPS SAS token).
	WithPassword bool
}

// isRequest reports whether a session of r may publish topic.
func (r *ProvisioningRoute) isRequest(topic string) bool {
	if r.RequestTopicPrefix != "" {
		return strings.HasPrefix(topic, r.RequestTopicPrefix)
	}
	return topic == r.RequestTopic
}

// DeviceTopicHandler receives what a device publishes on a topic below
// DeviceTopicPrefix. It runs on the device session's read path, before the
// message is acknowledged, so one device's messages arrive in order and
// must be handled quickly; payload must not be kept after it returns. An
// error refuses the message: errors wrapping device.ErrBadPayload,
// ErrTooManyKeys, ErrTooLarge, ErrRateLimited or ErrOverloaded get the
// refusal the hub documents for each (see refusePublish).
type DeviceTopicHandler func(ctx context.Context, s DeviceSession, topic string, payload []byte) error

// Presence is told when device sessions begin and end. Calls for one
// session come in order (Connected, then Disconnected once); a device may
// have several sessions at once.
type Presence interface {
	Connected(deviceID string)
	Disconnected(deviceID string)
}

type deviceTopicRoute struct {
	prefix string
	fn     DeviceTopicHandler
}

// Hub is the embedded broker. Configure it (HandleProvisioning,
// HandleDeviceTopic, listeners) before Start.
type Hub struct {
	log     *slog.Logger
	store   registry.Store
	limiter *provision.FailureLimiter
	opts    Options
	srv     *mqtt.Server

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	routesMu     sync.RWMutex
	routes       map[string]*ProvisioningRoute // by user name
	matchRoutes  []*ProvisioningRoute          // by MatchUsername, in order
	deviceTopics []deviceTopicRoute            // longest prefix first

	sessions sessions
	audits   provision.AuditOnce
	refused  map[RefusalReason]*atomic.Uint64 // read-only after New
	// refusalLogs keeps capacity refusals, which come in floods, to one
	// log line a minute per reason and source.
	refusalLogs provision.AuditOnce

	// handling is read-held by every handler call; Close write-locks it to
	// let the calls in progress finish (their answers are still sent) and
	// to turn later ones away (draining).
	handling sync.RWMutex
	draining bool

	// bg counts goroutines that must end before Close returns (audit
	// writes, disconnects); Add only while holding sessions.mu with
	// sessions.closed false.
	bg sync.WaitGroup

	lifeMu    sync.Mutex
	started   bool
	closed    bool
	listeners []*listener
	stop      chan struct{} // closed by Close: stops the janitor

	acceptWG sync.WaitGroup // accept loops
	conns    connSet        // accepted connections, until mochi is done with them
}

// listener is one network listener. The hub runs its own accept loops and
// hands each connection to mochi's EstablishConnection: mochi's listeners
// count their connections in a WaitGroup from inside each connection's
// goroutine, which races with Server.Close.
type listener struct {
	name string
	ln   net.Listener
}

// connSet tracks accepted connections so that Close can end them all and
// wait for mochi to be done with each.
type connSet struct {
	mu     sync.Mutex
	closed bool
	set    map[net.Conn]*connEntry
	wg     sync.WaitGroup // one per connection being served

	// Connections whose CONNECT has not arrived yet, in all and per source
	// host, and their caps (0: none).
	pending           int
	pendingByHost     map[string]int
	maxPending        int
	maxPendingPerHost int
}

type connEntry struct {
	host    string // sourceKey of the remote address
	pending bool   // no CONNECT yet
}

// New returns a Hub that is not yet listening.
func New(opts Options) (*Hub, error) {
	if opts.Store == nil {
		return nil, errors.New("hub: Options.Store is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Limiter == nil {
		opts.Limiter = provision.NewFailureLimiter()
	}
	if opts.Verifier == nil {
		opts.Verifier = secret.NewVerifier(0)
	}
	if opts.MaxPacketSize == 0 {
		opts.MaxPacketSize = DefaultMaxPacketSize
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.HandleTimeout <= 0 {
		opts.HandleTimeout = DefaultHandleTimeout
	}
	if opts.MaxQueuedWrites <= 0 {
		opts.MaxQueuedWrites = DefaultMaxQueuedWrites
	}
	if opts.SessionExpiry <= 0 {
		opts.SessionExpiry = DefaultSessionExpiry
	}
	if opts.MaxClients < 0 {
		return nil, fmt.Errorf("hub: MaxClients %d is negative", opts.MaxClients)
	}
	if opts.ProvisioningSessionLifetime <= 0 {
		opts.ProvisioningSessionLifetime = DefaultProvisioningSessionLifetime
	}
	if opts.MaxPendingConnections == 0 {
		opts.MaxPendingConnections = DefaultMaxPendingConnections
	}
	if opts.MaxPendingConnectionsPerHost == 0 {
		opts.MaxPendingConnectionsPerHost = DefaultMaxPendingConnectionsPerHost
	}
	if opts.MaxProvisioningSessions == 0 {
		opts.MaxProvisioningSessions = DefaultMaxProvisioningSessions
		if opts.MaxClients > 0 {
			opts.MaxProvisioningSessions = min(opts.MaxProvisioningSessions, max(opts.MaxClients/2, 1))
		}
	}
	if opts.MaxProvisioningSessionsPerHost == 0 {
		opts.MaxProvisioningSessionsPerHost = DefaultMaxProvisioningSessionsPerHost
		if opts.MaxProvisioningSessions > 0 {
			opts.MaxProvisioningSessionsPerHost = min(opts.MaxProvisioningSessionsPerHost, opts.MaxProvisioningSessions)
		}
	}
	log := opts.Logger.With("component", "hub")

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = opts.MaxPacketSize
	caps.MaximumClientWritesPending = int32(min(opts.MaxQueuedWrites, math.MaxInt32))
	// MaxClients is enforced by the hub (sessions.register), not by mochi:
	// mochi's own check runs before the hooks (so its refusals could not
	// be counted), is racy under concurrent CONNECTs (it counts sessions
	// only once they are established) and would refuse a device taking
	// over its own session.
	caps.MaximumSessionExpiryInterval = uint32(min(opts.SessionExpiry/time.Second, math.MaxUint32-1))
	// The hub never advertises topic aliases, so compliant clients do not
	// use them; refusing them bounds what a client can make the broker keep.
	caps.TopicAliasMaximum = 0
	caps.SharedSubAvailable = 0

	h := &Hub{
		log:     log,
		store:   opts.Store,
		limiter: opts.Limiter,
		opts:    opts,
		routes:  make(map[string]*ProvisioningRoute),
		stop:    make(chan struct{}),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.sessions.init(sessionLimits{
		total:       max(opts.MaxClients, 0),
		prov:        max(opts.MaxProvisioningSessions, 0),
		provPerHost: max(opts.MaxProvisioningSessionsPerHost, 0),
	})
	h.refused = make(map[RefusalReason]*atomic.Uint64)
	for _, r := range RefusalReasons() {
		h.refused[r] = new(atomic.Uint64)
	}
	h.conns.set = make(map[net.Conn]*connEntry)
	h.conns.pendingByHost = make(map[string]int)
	h.conns.maxPending = max(opts.MaxPendingConnections, 0)
	h.conns.maxPendingPerHost = max(opts.MaxPendingConnectionsPerHost, 0)
	h.srv = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(newMochiLogHandler(opts.Logger.Handler())).With("component", "mqtt"),
		// $SYS topics are refused to every client by the ACL; publishing
		// them every second would only cost a stop-the-world MemStats read.
		SysTopicResendInterval: int64((365 * 24 * time.Hour) / time.Second),
	})
	if err := h.srv.AddHook(&hook{h: h}, nil); err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	if opts.Changes != nil {
		opts.Changes.Subscribe(h.onChange)
	}
	return h, nil
}

// HandleProvisioning adds a provisioning route. It panics on a route that
// is incomplete, uses wildcards, or reuses a user name, as http.ServeMux
// does on a bad pattern: these are programming errors.
func (h *Hub) HandleProvisioning(r ProvisioningRoute) {
	name := r.Username
	if name == "" {
		name = r.RequestTopicPrefix
	}
	responseOK := validTopicName(r.ResponseTopic) || (r.HandleRequest != nil && validTopicFilter(r.ResponseTopic))
	switch {
	case (r.Username == "") == (r.MatchUsername == nil):
		panic("hub: provisioning route needs a user name or a user name matcher, not both")
	case (r.Handle == nil) == (r.HandleRequest == nil):
		panic("hub: provisioning route " + name + " needs one handler")
	case r.RequestTopicPrefix != "" && (r.RequestTopic != "" || strings.ContainsAny(r.RequestTopicPrefix, "+#")):
		panic("hub: provisioning route " + name + " has a request topic and a request prefix, or a prefix with wildcards")
	case r.RequestTopicPrefix == "" && !validTopicName(r.RequestTopic), !responseOK:
		panic("hub: provisioning route " + name + " needs request and response topics without wildcards (a response filter with HandleRequest)")
	}
	h.routesMu.Lock()
	defer h.routesMu.Unlock()
	if r.MatchUsername != nil {
		h.matchRoutes = append(h.matchRoutes, &r)
		return
	}
	if _, dup := h.routes[r.Username]; dup {
		panic("hub: provisioning route for user name " + r.Username + " registered twice")
	}
	h.routes[r.Username] = &r
}

// HandleDeviceTopic registers fn for what devices publish on topics that
// start with prefix, which must lie below DeviceTopicPrefix (ThingsBoard)
// or below devices/ or $iothub/ (IoT Hub) — a full topic name is a prefix
// too. Each session's ACL decides which of them it may use. The longest matching prefix wins; a publish that
// matches no handler is acknowledged and dropped. Register handlers before
// Start.
func (h *Hub) HandleDeviceTopic(prefix string, fn DeviceTopicHandler) {
	scheme := strings.HasPrefix(prefix, DeviceTopicPrefix) || strings.HasPrefix(prefix, iotHubDevicesPrefix) || strings.HasPrefix(prefix, "$iothub/")
	if !scheme || strings.ContainsAny(prefix, "+#") || fn == nil {
		panic("hub: device topic handler needs a prefix below " + DeviceTopicPrefix + ", devices/ or $iothub/ without wildcards, and a function")
	}
	h.routesMu.Lock()
	defer h.routesMu.Unlock()
	for _, r := range h.deviceTopics {
		if r.prefix == prefix {
			panic("hub: device topic handler for " + prefix + " registered twice")
		}
	}
	h.deviceTopics = append(h.deviceTopics, deviceTopicRoute{prefix: prefix, fn: fn})
	sort.SliceStable(h.deviceTopics, func(i, j int) bool { return len(h.deviceTopics[i].prefix) > len(h.deviceTopics[j].prefix) })
}

func (h *Hub) route(username string) *ProvisioningRoute {
	h.routesMu.RLock()
	defer h.routesMu.RUnlock()
	if r := h.routes[username]; r != nil {
		return r
	}
	for _, r := range h.matchRoutes {
		if r.MatchUsername(username) {
			return r
		}
	}
	return nil
}

func (h *Hub) deviceTopicHandler(topic string) DeviceTopicHandler {
	h.routesMu.RLock()
	defer h.routesMu.RUnlock()
	for _, r := range h.deviceTopics {
		if strings.HasPrefix(topic, r.prefix) {
			return r.fn
		}
	}
	return nil
}

// ListenTCP adds a plain MQTT listener named name on addr (":0" picks a
// free port) and returns the bound address. A listener added after Start
// serves at once.
func (h *Hub) ListenTCP(name, addr string) (net.Addr, error) {
	return h.listen(name, addr, nil)
}

// ListenTLS adds an MQTT-over-TLS listener. When cfg asks for client
// certificates (e.g. tls.RequestClientCert), a client that presents one
// and no provisioning user name is authenticated by the SHA-256
// fingerprint of its leaf certificate (X509_CERTIFICATE credentials), or
// provisioned by it (Options.CertificateProvisioner). Give cfg a
// certauth.Checker (Checker.Config) so that expired, revoked and forged
// certificates are refused at the handshake.
func (h *Hub) ListenTLS(name, addr string, cfg *tls.Config) (net.Addr, error) {
	if cfg == nil {
		return nil, errors.New("hub: ListenTLS needs a TLS configuration")
	}
	return h.listen(name, addr, cfg)
}

func (h *Hub) listen(name, addr string, cfg *tls.Config) (net.Addr, error) {
	if name == "" {
		return nil, errors.New("hub: listener needs a name")
	}
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	if h.closed {
		return nil, errors.New("hub: closed")
	}
	for _, l := range h.listeners {
		if l.name == name {
			return nil, fmt.Errorf("hub: a listener is already named %s", name)
		}
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	var ln net.Listener = &deadlineListener{Listener: tcp, timeout: h.opts.ConnectTimeout}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	l := &listener{name: name, ln: ln}
	h.listeners = append(h.listeners, l)
	if h.started {
		h.acceptWG.Add(1)
		go h.accept(l)
	}
	h.log.Info("MQTT listener ready", "listener", name, "addr", tcp.Addr().String(), "tls", cfg != nil)
	return tcp.Addr(), nil
}

// accept serves one listener until it is closed.
func (h *Hub) accept(l *listener) {
	defer h.acceptWG.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			h.log.Warn("MQTT accept failed", "listener", l.name, "error", err, "retryIn", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-h.stop:
				return
			}
		}
		backoff = 0
		if !h.serve(l.name, c) {
			return
		}
	}
}

// serve hands an accepted connection to mochi, under the pending caps. It
// returns false once the hub is closing.
func (h *Hub) serve(listener string, c net.Conn) bool {
	switch reason, open := h.conns.add(c); {
	case !open:
		c.Close()
		return false
	case reason != "":
		c.Close()
		h.countRefusal(reason, c.RemoteAddr().String())
		return true
	}
	// The CONNECT exchange runs on a goroutine of its own; the session
	// is then read on another, shallow one, so that an idle session
	// keeps a small stack (see third_party/mochi-mqtt-server).
	go h.srv.ServeConnection(listener, c, func(err error) {
		defer h.conns.done(c)
		if err != nil {
			h.log.Debug("connection ended", "listener", listener, "remote", c.RemoteAddr().String(), "error", err)
		}
	})
	return true
}

// add tracks c as pending (no CONNECT yet). open is false when the hub is
// closing; a non-empty reason means a pending cap is reached and c is not
// tracked.
func (s *connSet) add(c net.Conn) (reason RefusalReason, open bool) {
	host := sourceKey(c.RemoteAddr().String())
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return "", false
	case s.maxPending > 0 && s.pending >= s.maxPending:
		return RefusedPendingConnections, true
	case s.maxPendingPerHost > 0 && s.pendingByHost[host] >= s.maxPendingPerHost:
		return RefusedPendingConnectionsPerHost, true
	}
	s.set[c] = &connEntry{host: host, pending: true}
	s.pending++
	s.pendingByHost[host]++
	s.wg.Add(1)
	return "", true
}

// connected marks c as past its CONNECT: from then on the session caps
// (MaxClients…) account for it.
func (s *connSet) connected(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.set[c]; e != nil {
		s.settle(e)
	}
}

// settle takes a pending entry off the pending counts. Called with mu held.
func (s *connSet) settle(e *connEntry) {
	if !e.pending {
		return
	}
	e.pending = false
	s.pending--
	if s.pendingByHost[e.host]--; s.pendingByHost[e.host] <= 0 {
		delete(s.pendingByHost, e.host)
	}
}

func (s *connSet) done(c net.Conn) {
	s.mu.Lock()
	if e := s.set[c]; e != nil {
		s.settle(e)
		delete(s.set, c)
	}
	s.mu.Unlock()
	s.wg.Done()
}

// closeAll refuses new connections, closes the tracked ones, and waits
// until mochi is done with each.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	for c := range s.set {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Start starts serving the listeners added so far.
func (h *Hub) Start() error {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	switch {
	case h.closed:
		return errors.New("hub: closed")
	case h.started:
		return errors.New("hub: already started")
	}
	if err := h.srv.Serve(); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	h.started = true
	for _, l := range h.listeners {
		h.acceptWG.Add(1)
		go h.accept(l)
	}
	go h.janitor()
	return nil
}

// Close stops the listeners, lets the handler calls in progress finish and
// send their answers (later requests are dropped unanswered), disconnects
// every client (MQTT 5 clients are told the server is shutting down), and
// waits for pending audit writes. It does not close the store.
func (h *Hub) Close() error {
	h.lifeMu.Lock()
	if h.closed {
		h.lifeMu.Unlock()
		return nil
	}
	h.closed = true
	var errs []error
	for _, l := range h.listeners {
		if err := l.ln.Close(); err != nil {
			errs = append(errs, fmt.Errorf("hub: close listener %s: %w", l.name, err))
		}
	}
	h.lifeMu.Unlock()
	close(h.stop)
	h.acceptWG.Wait()

	// Requests being handled get their answers: a device whose
	// provisioning was committed must hear about it.
	h.handling.Lock()
	h.draining = true
	h.handling.Unlock()

	h.sessions.mu.Lock()
	live := make([]*conn, 0, len(h.sessions.live))
	for _, c := range h.sessions.live {
		live = append(live, c)
	}
	h.sessions.mu.Unlock()
	var kicks sync.WaitGroup
	for _, c := range live {
		if c.sess.ProtocolVersion >= 5 {
			kicks.Go(func() {
				if nc := c.cl.Net.Conn; nc != nil {
					nc.SetWriteDeadline(time.Now().Add(kickWriteTimeout))
				}
				h.srv.DisconnectClient(c.cl, packets.ErrServerShuttingDown)
			})
		}
	}
	kicks.Wait()
	h.cancel()
	h.conns.closeAll() // returns once mochi is done with every connection

	if err := h.srv.Close(); err != nil {
		errs = append(errs, fmt.Errorf("hub: %w", err))
	}
	h.sessions.mu.Lock()
	h.sessions.closed = true
	h.sessions.mu.Unlock()
	h.bg.Wait()
	return errors.Join(errs...)
}

// ConnectedDevices is the number of live device sessions.
func (h *Hub) ConnectedDevices() int {
	h.sessions.mu.Lock()
	defer h.sessions.mu.Unlock()
	return h.sessions.devices
}

// ConnectedSessions is the number of live sessions, devices and
// provisioning sessions together.
func (h *Hub) ConnectedSessions() int {
	h.sessions.mu.Lock()
	defer h.sessions.mu.Unlock()
	return len(h.sessions.live)
}

// janitor forgets sessions whose connection ended without mochi calling
// OnDisconnect (a CONNACK that could not be written), every few seconds.
func (h *Hub) janitor() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			for _, c := range h.sessions.sweep() {
				h.presence(c, false)
			}
		}
	}
}

// presence tells Options.Presence that device session c began or ended.
func (h *Hub) presence(c *conn, connected bool) {
	p := h.opts.Presence
	switch {
	case p == nil:
	case connected:
		p.Connected(c.dev.DeviceID)
	default:
		p.Disconnected(c.dev.DeviceID)
	}
}

// deadlineListener gives each new connection a deadline for its CONNECT
// (and TLS handshake); mochi replaces it with the keep-alive deadline once
// the CONNECT is accepted.
type deadlineListener struct {
	net.Listener
	timeout time.Duration
}

func (l *deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(l.timeout))
	return c, nil
}

// validTopicName reports whether s can be published to: non-empty, no
// wildcards, not $SYS.
func validTopicName(s string) bool {
	return s != "" && !strings.ContainsAny(s, "+#\x00") && !strings.HasPrefix(s, "$SYS")
}

// validTopicFilter reports whether s can be subscribed to: non-empty, not
// $SYS, "+" only as a whole level, "#" only as the whole last level.
func validTopicFilter(s string) bool {
	if s == "" || strings.Contains(s, "\x00") || strings.HasPrefix(s, "$SYS") {
		return false
	}
	levels := strings.Split(s, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && l != "+" && !(l == "#" && i == len(levels)-1) {
			return false
		}
	}
	return true
}
