// Package device is what a provisioned device does once it is connected,
// whatever its dialect: it sends telemetry and reports attributes, reads
// the attributes the operator shares with it, receives commands (RPC) and
// answers them. The Service applies the limits (payload size, keys per
// message, message rate), batches ingestion through a telemetry.Writer,
// keeps each device's connection state, and carries operator requests to
// the device through the Transports the dialects register.
//
// Wire formats are the dialects'; the Service sees samples, attributes and
// raw JSON only.
package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Errors a device-side call returns; dialects turn them into their
// protocol's refusal (an MQTT reason code, an HTTP status).
var (
	// ErrBadPayload: the message could not be decoded. Dialects wrap it.
	ErrBadPayload = errors.New("malformed payload")
	// ErrTooLarge: the payload is over Limits.MaxPayload.
	ErrTooLarge = errors.New("payload too large")
	// ErrTooManyKeys: the message has more keys than Limits.MaxKeys.
	ErrTooManyKeys = errors.New("too many keys in one message")
	// ErrRateLimited: the device sends faster than Limits.Rate allows.
	ErrRateLimited = errors.New("message rate too high")
	// ErrOverloaded: the server cannot store more now; retry later.
	ErrOverloaded = telemetry.ErrOverloaded
)

// Errors an operator-side call returns.
var (
	// ErrOffline: no live session of the device can take the request
	// (not connected, or not subscribed to it).
	ErrOffline = errors.New("device is offline or not subscribed to RPC requests")
	// ErrTimeout: the device did not answer an RPC request in time.
	ErrTimeout = errors.New("device did not answer in time")
	// ErrInvalid: a malformed operator request (the message says which).
	ErrInvalid = telemetry.ErrInvalid
)

// Limits bound what one device may send. Zero fields take the defaults.
type Limits struct {
	// MaxPayload caps one message's payload, in bytes.
	MaxPayload int
	// MaxKeys caps the keys (time-series values or attributes) of one
	// message.
	MaxKeys int
	// Rate is the sustained messages per second a device may send, on
	// all its sessions and transports together; Burst is how many it may
	// send at once above that.
	Rate  float64
	Burst int
}

// Default limits: generous for a device reporting every few seconds, tight
// enough that one misbehaving device cannot take a node's ingestion.
const (
	DefaultMaxPayload = 64 << 10
	DefaultMaxKeys    = 1000
	DefaultRate       = 10
	DefaultBurst      = 100
)

func (l Limits) withDefaults() Limits {
	if l.MaxPayload <= 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = DefaultMaxKeys
	}
	if l.Rate <= 0 {
		l.Rate = DefaultRate
	}
	if l.Burst <= 0 {
		l.Burst = DefaultBurst
	}
	return l
}

// RPC defaults.
const (
	DefaultRPCTimeout = 10 * time.Second // as ThingsBoard
	MaxRPCTimeout     = 10 * time.Minute
)

// RPCRequest is a command for a device.
type RPCRequest struct {
	// ID is the request's number, unique among the device's pending
	// requests; the device answers with it.
	ID     int
	Method string
	// Params is the JSON value of the parameters; nil for none.
	Params json.RawMessage
}

// Transport carries server-initiated messages to a device's live
// sessions. Each dialect that serves connected devices registers one.
type Transport interface {
	// PushAttributes sends changed and deleted shared attributes to the
	// device's sessions that listen for them, and returns how many did.
	PushAttributes(deviceID string, changed []telemetry.Attribute, deleted []string) int
	// SendRPC sends req to the device's sessions that listen for RPC
	// requests, and returns how many did.
	SendRPC(deviceID string, req RPCRequest) int
}

// Message is a cloud-to-device message (Azure IoT Hub's): a body and
// application properties, for the device's live sessions.
type Message struct {
	// ID is the message id ($.mid).
	ID string
	// DeviceName is the device's name, which IoT Hub topics carry.
	DeviceName string
	Payload    []byte
	Properties map[string]string
}

// MessageSender is implemented by the transports that carry
// cloud-to-device messages; ThingsBoard's has none.
type MessageSender interface {
	// SendMessage delivers m to the device's sessions that subscribed to
	// its messages, and returns how many took it.
	SendMessage(deviceID string, m Message) int
}

// Limits of cloud-to-device messages (IoT Hub's own: 64 KiB, and the
// properties' share of it).
const (
	MaxMessageSize       = 64 << 10
	MaxMessageProperties = 64
)

// Options configures a Service. Store is required.
type Options struct {
	Store telemetry.Store
	// Registry authenticates devices on transports without a session
	// (AuthenticateToken); nil refuses every such request.
	Registry registry.Store
	// Limiter slows down sources of unknown tokens; share the hub's and the
	// pipeline's so that guesses cost on every listener. nil uses a
	// private one.
	Limiter *provision.FailureLimiter
	Logger  *slog.Logger
	Limits  Limits
	// Writer tunes ingestion batching (its Store and Logger are set by
	// New).
	Writer telemetry.WriterOptions
	// Retention is how long samples are kept; 0 keeps them forever.
	Retention time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Result labels for Counts.
const (
	ResultAccepted    = "accepted"
	ResultMalformed   = "malformed"
	ResultTooLarge    = "too_large"
	ResultTooManyKeys = "too_many_keys"
	ResultRateLimited = "rate_limited"
	ResultOverloaded  = "overloaded"
)

// Results lists the result labels, for metrics.
func Results() []string {
	return []string{ResultAccepted, ResultMalformed, ResultTooLarge, ResultTooManyKeys, ResultRateLimited, ResultOverloaded}
}

// Service serves connected devices. Its methods are safe for concurrent use.
type Service struct {
	store     telemetry.Store
	registry  registry.Store
	limiter   *provision.FailureLimiter
	writer    *telemetry.Writer
	log       *slog.Logger
	limits    Limits
	now       func() time.Time
	retention time.Duration

	transportsMu sync.RWMutex
	transports   []Transport

	devMu   sync.Mutex
	devices map[string]*liveDevice

	callsMu sync.Mutex
	calls   map[callKey]chan json.RawMessage
	nextID  atomic.Int32

	results   map[string]*atomic.Uint64 // read-only after New
	values    atomic.Uint64             // samples accepted
	connects  atomic.Uint64
	drops     atomic.Uint64
	retDelete atomic.Uint64

	stop      chan struct{} // closed by Close: housekeeping ends
	closing   chan struct{} // closed by StopCalls: RPC waits end
	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
	bg        sync.WaitGroup
}

// liveDevice is what the node knows of a device in memory: its sessions
// and its rate budget.
type liveDevice struct {
	sessions int
	tokens   float64
	refilled time.Time
}

type callKey struct {
	deviceID string
	id       int
}

// New starts a Service (and its Writer and retention loop).
func New(o Options) (*Service, error) {
	if o.Store == nil {
		return nil, errors.New("device: Options.Store is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Retention < 0 {
		return nil, fmt.Errorf("device: negative retention %s", o.Retention)
	}
	if o.Limiter == nil {
		o.Limiter = provision.NewFailureLimiter()
	}
	wo := o.Writer
	wo.Store = o.Store
	wo.Logger = o.Logger.With("component", "telemetry")
	s := &Service{
		store:     o.Store,
		registry:  o.Registry,
		limiter:   o.Limiter,
		writer:    telemetry.NewWriter(wo),
		log:       o.Logger.With("component", "device"),
		limits:    o.Limits.withDefaults(),
		now:       o.Now,
		retention: o.Retention,
		devices:   make(map[string]*liveDevice),
		calls:     make(map[callKey]chan json.RawMessage),
		results:   make(map[string]*atomic.Uint64),
		stop:      make(chan struct{}),
		closing:   make(chan struct{}),
	}
	for _, r := range Results() {
		s.results[r] = new(atomic.Uint64)
	}
	s.bg.Go(s.housekeeping)
	return s, nil
}

// ErrShuttingDown: the node is stopping; RPC calls waiting for an answer
// end with it.
var ErrShuttingDown = errors.New("server is shutting down")

// StopCalls ends every RPC call waiting for an answer (with
// ErrShuttingDown) and refuses new ones, so that a shutdown need not wait
// for devices to answer.
func (s *Service) StopCalls() {
	s.stopOnce.Do(func() { close(s.closing) })
}

// Close stops RPC calls and the retention loop, and commits the telemetry
// still queued (until ctx ends). It does not close the Store.
func (s *Service) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.StopCalls()
		close(s.stop)
		s.bg.Wait()
		s.closeErr = s.writer.Close(ctx)
	})
	return s.closeErr
}

// AddTransport registers a dialect's Transport.
func (s *Service) AddTransport(t Transport) {
	s.transportsMu.Lock()
	defer s.transportsMu.Unlock()
	s.transports = append(s.transports, t)
}

// Limits returns the limits in force.
func (s *Service) Limits() Limits { return s.limits }

// Writer is the ingestion batcher (for metrics).
func (s *Service) Writer() *telemetry.Writer { return s.writer }

// Now is the service's clock: the receive time of telemetry without a
// timestamp of its own.
func (s *Service) Now() time.Time { return s.now() }

// nowMS is the clock in Unix milliseconds.
func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

// ---- device side ----

// ErrUnauthenticated: the token designates no enabled device.
var ErrUnauthenticated = errors.New("unknown or revoked access token, or disabled device")

// ThrottledError: the source sent too many unknown tokens lately; it may
// try again after RetryAfter.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many failed authentications from this address: retry in %s", e.RetryAfter.Round(time.Second))
}

// AuthenticateToken finds the enabled device holding an active access
// token, for transports where each request carries the token (ThingsBoard's
// HTTP device API). source is the client's host: once it has sent too many
// unknown tokens, its requests are refused (ThrottledError) for a while.
func (s *Service) AuthenticateToken(ctx context.Context, source, token string) (*registry.Device, error) {
	// Refused at once rather than delayed: waiting would cost a guesser
	// nothing but one more parallel request.
	if d := s.limiter.Delay(source, time.Now()); d > 0 {
		return nil, &ThrottledError{RetryAfter: d}
	}
	if s.registry == nil || token == "" || len(token) > maxTokenLength {
		s.limiter.Fail(source, time.Now())
		return nil, ErrUnauthenticated
	}
	cred, dev, err := s.registry.FindActiveCredential(ctx, registry.CredentialAccessToken, secret.LookupHash(token))
	switch {
	case errors.Is(err, registry.ErrNotFound):
		s.limiter.Fail(source, time.Now())
		return nil, ErrUnauthenticated
	case err != nil:
		return nil, fmt.Errorf("looking up access token: %w", err)
	case cred == nil || dev == nil || dev.Status != registry.DeviceEnabled:
		return nil, ErrUnauthenticated
	}
	return dev, nil
}

// maxTokenLength bounds a token worth looking up, as the hub bounds
// CONNECT user names.
const maxTokenLength = 1024

// Admit is called for every message a device sends, before it is decoded:
// it checks the payload size and takes one message from the device's rate
// budget, and records the device's activity. It returns ErrTooLarge or
// ErrRateLimited (counted) when the message must be refused.
func (s *Service) Admit(deviceID string, size int) error {
	if size > s.limits.MaxPayload {
		s.count(ResultTooLarge)
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, size, s.limits.MaxPayload)
	}
	now := s.now()
	s.devMu.Lock()
	d := s.deviceLocked(deviceID, now)
	d.tokens = min(float64(s.limits.Burst), d.tokens+now.Sub(d.refilled).Seconds()*s.limits.Rate)
	d.refilled = now
	ok := d.tokens >= 1
	if ok {
		d.tokens--
	}
	s.devMu.Unlock()
	if !ok {
		s.count(ResultRateLimited)
		return fmt.Errorf("%w: at most %g messages/s (burst %d)", ErrRateLimited, s.limits.Rate, s.limits.Burst)
	}
	s.writer.Touch(telemetry.ConnState{DeviceID: deviceID, LastActivity: now.UnixMilli()})
	return nil
}

// deviceLocked returns the device's live record, creating it with a full
// rate budget. Called with devMu held.
func (s *Service) deviceLocked(deviceID string, now time.Time) *liveDevice {
	d := s.devices[deviceID]
	if d == nil {
		d = &liveDevice{tokens: float64(s.limits.Burst), refilled: now}
		s.devices[deviceID] = d
	}
	return d
}

// Refused counts a message a dialect could not decode (err wraps
// ErrBadPayload or ErrTooManyKeys) and returns err.
func (s *Service) Refused(err error) error {
	if errors.Is(err, ErrTooManyKeys) {
		s.count(ResultTooManyKeys)
	} else {
		s.count(ResultMalformed)
	}
	return err
}

// Ingest queues a device's samples (DeviceID is set here) for storage,
// waiting (until ctx ends, at most a few seconds) while the store is
// behind. It returns ErrTooManyKeys or ErrOverloaded when they must be
// refused; then nothing of the message is stored.
func (s *Service) Ingest(ctx context.Context, deviceID string, samples []telemetry.Sample) error {
	if len(samples) > s.limits.MaxKeys {
		s.count(ResultTooManyKeys)
		return fmt.Errorf("%w: %d values, at most %d", ErrTooManyKeys, len(samples), s.limits.MaxKeys)
	}
	for i := range samples {
		samples[i].DeviceID = deviceID
	}
	if err := s.writer.AddSamples(ctx, samples); err != nil {
		s.count(ResultOverloaded)
		return err
	}
	s.count(ResultAccepted)
	s.values.Add(uint64(len(samples)))
	return nil
}

// ReportAttributes queues client attributes the device reports, stamped
// with the current time, like Ingest.
func (s *Service) ReportAttributes(ctx context.Context, deviceID string, attrs []telemetry.Attribute) error {
	if len(attrs) > s.limits.MaxKeys {
		s.count(ResultTooManyKeys)
		return fmt.Errorf("%w: %d attributes, at most %d", ErrTooManyKeys, len(attrs), s.limits.MaxKeys)
	}
	now := s.nowMS()
	writes := make([]telemetry.AttributeWrite, len(attrs))
	for i, a := range attrs {
		a.UpdatedAt = now
		writes[i] = telemetry.AttributeWrite{DeviceID: deviceID, Scope: telemetry.ScopeClient, Attribute: a}
	}
	if err := s.writer.AddAttributes(ctx, writes); err != nil {
		s.count(ResultOverloaded)
		return err
	}
	s.count(ResultAccepted)
	return nil
}

// RequestAttributes answers a device asking for its client and shared
// attributes (all of a scope when its keys are empty and want is true for
// it; see the dialect for when a scope is asked at all). Client attributes
// the device reported a moment ago are included: when some are queued, they
// are committed first.
func (s *Service) RequestAttributes(ctx context.Context, deviceID string, clientKeys, sharedKeys []string, wantClient, wantShared bool) (client, shared []telemetry.Attribute, err error) {
	if wantClient && s.writer.PendingAttributes(deviceID) {
		if err := s.writer.Flush(ctx); err != nil {
			return nil, nil, err
		}
	}
	if wantClient {
		if client, err = s.store.Attributes(ctx, deviceID, telemetry.ScopeClient, clientKeys); err != nil {
			return nil, nil, err
		}
	}
	if wantShared {
		if shared, err = s.store.Attributes(ctx, deviceID, telemetry.ScopeShared, sharedKeys); err != nil {
			return nil, nil, err
		}
	}
	return client, shared, nil
}

// RPCResponse delivers a device's answer to request id. It reports whether
// a caller was waiting for it (a late or unknown answer is dropped).
func (s *Service) RPCResponse(deviceID string, id int, result json.RawMessage) bool {
	s.callsMu.Lock()
	ch, ok := s.calls[callKey{deviceID, id}]
	if ok {
		delete(s.calls, callKey{deviceID, id})
	}
	s.callsMu.Unlock()
	if ok {
		ch <- result // buffered
	}
	return ok
}

// Connected records a new session of the device.
func (s *Service) Connected(deviceID string) {
	now := s.now()
	s.devMu.Lock()
	s.deviceLocked(deviceID, now).sessions++
	s.devMu.Unlock()
	s.connects.Add(1)
	s.writer.Touch(telemetry.ConnState{DeviceID: deviceID, LastConnect: now.UnixMilli()})
}

// Disconnected records the end of a session of the device.
func (s *Service) Disconnected(deviceID string) {
	now := s.now()
	s.devMu.Lock()
	if d := s.devices[deviceID]; d != nil && d.sessions > 0 {
		d.sessions--
	}
	s.devMu.Unlock()
	s.drops.Add(1)
	s.writer.Touch(telemetry.ConnState{DeviceID: deviceID, LastDisconnect: now.UnixMilli()})
}

// Forget drops everything about a deleted device: its live record and
// everything stored about it.
func (s *Service) Forget(ctx context.Context, deviceID string) error {
	s.devMu.Lock()
	delete(s.devices, deviceID)
	s.devMu.Unlock()
	// Queued and late writes for it (the end of its session) would bring
	// some of it back: the writer drops them, and the batch being written
	// is committed before the delete.
	s.writer.Forget(deviceID)
	if err := s.writer.Flush(ctx); err != nil {
		return err
	}
	return s.store.DeleteDevice(ctx, deviceID)
}

func (s *Service) count(result string) { s.results[result].Add(1) }

// Count is the number of device messages with the given result.
func (s *Service) Count(result string) uint64 {
	if c := s.results[result]; c != nil {
		return c.Load()
	}
	return 0
}

// ValuesAccepted is the number of time-series values accepted for storage.
func (s *Service) ValuesAccepted() uint64 { return s.values.Load() }

// ConnectionEvents is the number of sessions begun and ended.
func (s *Service) ConnectionEvents() (connects, disconnects uint64) {
	return s.connects.Load(), s.drops.Load()
}

// RetentionDeleted is the number of samples retention has deleted.
func (s *Service) RetentionDeleted() uint64 { return s.retDelete.Load() }

// ---- operator side ----

// State is a device's connection state.
type State struct {
	Connected bool
	Sessions  int // live sessions on this node
	// Unix milliseconds, 0 for never.
	LastConnect, LastDisconnect, LastActivity int64
}

// States returns the connection state of the given devices.
func (s *Service) States(ctx context.Context, deviceIDs []string) (map[string]State, error) {
	// Times waiting in the writer are not in the store yet.
	if err := s.writer.Flush(ctx); err != nil {
		return nil, err
	}
	stored, err := s.store.ConnStates(ctx, deviceIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]State, len(deviceIDs))
	s.devMu.Lock()
	defer s.devMu.Unlock()
	for _, id := range deviceIDs {
		st := stored[id]
		n := 0
		if d := s.devices[id]; d != nil {
			n = d.sessions
		}
		out[id] = State{Connected: n > 0, Sessions: n, LastConnect: st.LastConnect, LastDisconnect: st.LastDisconnect, LastActivity: st.LastActivity}
	}
	return out, nil
}

// Latest returns the latest values of a device (all keys when keys is
// empty).
func (s *Service) Latest(ctx context.Context, deviceID string, keys []string) ([]telemetry.Sample, error) {
	if err := s.writer.Flush(ctx); err != nil {
		return nil, err
	}
	return s.store.Latest(ctx, deviceID, keys)
}

// Query returns raw values.
func (s *Service) Query(ctx context.Context, q telemetry.Query) ([]telemetry.Sample, error) {
	if err := s.writer.Flush(ctx); err != nil {
		return nil, err
	}
	return s.store.Query(ctx, q)
}

// Aggregate returns aggregated values.
func (s *Service) Aggregate(ctx context.Context, q telemetry.AggregateQuery) ([]telemetry.Bucket, error) {
	if err := s.writer.Flush(ctx); err != nil {
		return nil, err
	}
	return s.store.Aggregate(ctx, q)
}

// Attributes returns a device's attributes of one scope.
func (s *Service) Attributes(ctx context.Context, deviceID string, scope telemetry.Scope, keys []string) ([]telemetry.Attribute, error) {
	if scope == telemetry.ScopeClient && s.writer.PendingAttributes(deviceID) {
		if err := s.writer.Flush(ctx); err != nil {
			return nil, err
		}
	}
	return s.store.Attributes(ctx, deviceID, scope, keys)
}

// SetAttributes writes shared or server attributes (durably) and pushes
// changed shared attributes to the device's live sessions. It returns how
// many sessions got the push. Client attributes belong to the device and
// cannot be set here (ErrInvalid).
func (s *Service) SetAttributes(ctx context.Context, deviceID string, scope telemetry.Scope, values map[string]telemetry.Value) (pushed int, err error) {
	if scope != telemetry.ScopeShared && scope != telemetry.ScopeServer {
		return 0, fmt.Errorf("%w: only shared and server attributes can be set; client attributes are the device's", ErrInvalid)
	}
	if len(values) == 0 {
		return 0, fmt.Errorf("%w: no attributes given", ErrInvalid)
	}
	if len(values) > s.limits.MaxKeys {
		return 0, fmt.Errorf("%w: %d attributes, at most %d per request", ErrInvalid, len(values), s.limits.MaxKeys)
	}
	now := s.nowMS()
	attrs := make([]telemetry.Attribute, 0, len(values))
	for k, v := range values {
		attrs = append(attrs, telemetry.Attribute{Key: k, Value: v, UpdatedAt: now})
	}
	sortAttributes(attrs)
	if err := s.store.SetAttributes(ctx, deviceID, scope, attrs); err != nil {
		return 0, err
	}
	if scope == telemetry.ScopeShared {
		pushed = s.eachTransport(func(t Transport) int { return t.PushAttributes(deviceID, attrs, nil) })
	}
	return pushed, nil
}

// DeleteAttributes deletes shared or server attributes and tells the
// device's live sessions which shared ones are gone. It returns the keys
// that existed.
func (s *Service) DeleteAttributes(ctx context.Context, deviceID string, scope telemetry.Scope, keys []string) ([]string, error) {
	if scope == telemetry.ScopeClient {
		return nil, fmt.Errorf("%w: client attributes are the device's and cannot be deleted here", ErrInvalid)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no attribute keys given", ErrInvalid)
	}
	deleted, err := s.store.DeleteAttributes(ctx, deviceID, scope, keys)
	if err != nil {
		return nil, err
	}
	if scope == telemetry.ScopeShared && len(deleted) > 0 {
		s.eachTransport(func(t Transport) int { return t.PushAttributes(deviceID, nil, deleted) })
	}
	return deleted, nil
}

// SendMessage delivers a cloud-to-device message to the device's live
// sessions that listen for such messages. Nothing is queued: it returns
// ErrOffline when no session took it.
func (s *Service) SendMessage(deviceID string, m Message) error {
	size := len(m.Payload)
	for k, v := range m.Properties {
		if k == "" || strings.HasPrefix(k, "$") {
			return fmt.Errorf("%w: message property names must be non-empty and not start with '$' (system properties are the hub's)", ErrInvalid)
		}
		size += len(k) + len(v)
	}
	switch {
	case m.ID == "":
		return fmt.Errorf("%w: a message needs an id", ErrInvalid)
	case len(m.Properties) > MaxMessageProperties:
		return fmt.Errorf("%w: %d message properties, at most %d", ErrInvalid, len(m.Properties), MaxMessageProperties)
	case size > MaxMessageSize:
		return fmt.Errorf("%w: the message and its properties are %d bytes, at most %d", ErrInvalid, size, MaxMessageSize)
	}
	n := s.eachTransport(func(t Transport) int {
		if ms, ok := t.(MessageSender); ok {
			return ms.SendMessage(deviceID, m)
		}
		return 0
	})
	if n == 0 {
		return ErrOffline
	}
	return nil
}

// CallOptions tune Call.
type CallOptions struct {
	// Timeout is how long to wait for the answer (DefaultRPCTimeout when
	// 0, at most MaxRPCTimeout).
	Timeout time.Duration
	// OneWay sends the request without waiting for an answer: Call
	// returns once a session took it.
	OneWay bool
}

// Call sends an RPC request to the device and waits for its answer. It
// returns ErrOffline when no session takes the request, ErrTimeout when
// the answer does not come in time, and ctx.Err() when ctx ends first.
func (s *Service) Call(ctx context.Context, deviceID, method string, params json.RawMessage, o CallOptions) (json.RawMessage, error) {
	if method == "" {
		return nil, fmt.Errorf("%w: an RPC request needs a method", ErrInvalid)
	}
	if len(params) > 0 && !json.Valid(params) {
		return nil, fmt.Errorf("%w: RPC params must be a JSON value", ErrInvalid)
	}
	switch {
	case o.Timeout == 0:
		o.Timeout = DefaultRPCTimeout
	case o.Timeout < 0 || o.Timeout > MaxRPCTimeout:
		return nil, fmt.Errorf("%w: RPC timeout must be between 0 and %s", ErrInvalid, MaxRPCTimeout)
	}
	select {
	case <-s.closing:
		return nil, ErrShuttingDown
	default:
	}
	// The timeout runs from here: sending to a slow session counts.
	t := time.NewTimer(o.Timeout)
	defer t.Stop()
	req := RPCRequest{ID: s.newCallID(), Method: method, Params: params}
	key := callKey{deviceID, req.ID}
	ch := make(chan json.RawMessage, 1)
	if !o.OneWay {
		// Before sending: the answer may come back at once.
		s.callsMu.Lock()
		s.calls[key] = ch
		s.callsMu.Unlock()
	}
	forget := func() {
		s.callsMu.Lock()
		delete(s.calls, key)
		s.callsMu.Unlock()
	}
	if s.eachTransport(func(t Transport) int { return t.SendRPC(deviceID, req) }) == 0 {
		forget()
		return nil, ErrOffline
	}
	if o.OneWay {
		return nil, nil
	}
	select {
	case res := <-ch:
		return res, nil
	case <-t.C:
		forget()
		return nil, fmt.Errorf("%w (%s, request %d, method %s)", ErrTimeout, o.Timeout, req.ID, strconv.Quote(method))
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	case <-s.closing:
		forget()
		return nil, ErrShuttingDown
	}
}

// newCallID numbers requests: positive, below 2^31 (ThingsBoard devices
// parse the id as an int), wrapping around.
func (s *Service) newCallID() int {
	for {
		id := s.nextID.Add(1)
		if id > 0 {
			return int(id)
		}
		s.nextID.CompareAndSwap(id, 0)
	}
}

// eachTransport runs fn on every transport and sums what they return.
func (s *Service) eachTransport(fn func(Transport) int) int {
	s.transportsMu.RLock()
	defer s.transportsMu.RUnlock()
	n := 0
	for _, t := range s.transports {
		n += fn(t)
	}
	return n
}

// housekeeping enforces retention and forgets idle devices, at start and
// once a minute.
func (s *Service) housekeeping() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if s.retention > 0 {
			s.enforceRetention()
		}
		s.sweep()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// sweep forgets the live records of devices without a session whose rate
// budget is full again: a new record would be the same.
func (s *Service) sweep() {
	now := s.now()
	full := float64(s.limits.Burst)
	s.devMu.Lock()
	defer s.devMu.Unlock()
	for id, d := range s.devices {
		if d.sessions == 0 && d.tokens+now.Sub(d.refilled).Seconds()*s.limits.Rate >= full {
			delete(s.devices, id)
		}
	}
}

// retentionChunk bounds one retention transaction.
const retentionChunk = 10_000

// enforceRetention deletes the samples older than the retention.
func (s *Service) enforceRetention() {
	cutoff := s.now().Add(-s.retention).UnixMilli()
	for {
		select {
		case <-s.stop:
			return
		default:
		}
		n, err := s.store.DeleteBefore(context.Background(), cutoff, retentionChunk)
		s.retDelete.Add(uint64(max(n, 0)))
		if err != nil {
			s.log.Error("telemetry retention failed", "error", err)
			return
		}
		if n < retentionChunk {
			return
		}
	}
}

// sortAttributes orders attributes by key, as stores list them.
func sortAttributes(a []telemetry.Attribute) {
	slices.SortFunc(a, func(x, y telemetry.Attribute) int { return strings.Compare(x.Key, y.Key) })
}
