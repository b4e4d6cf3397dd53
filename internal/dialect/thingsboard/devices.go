package thingsboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Deliverer publishes a message to a device's live MQTT sessions that
// subscribed to topic, and returns how many took it (the hub does).
type Deliverer interface {
	DeliverToDevice(deviceID, topic string, payload []byte) int
}

// DeviceAPI serves ThingsBoard's device API to provisioned devices: the
// MQTT topics below v1/devices/me/ (through the hub, which authenticates
// the session) and the HTTP API under /api/v1/{token}/. It is also the
// device.Transport that pushes shared attributes and RPC requests to
// ThingsBoard devices.
type DeviceAPI struct {
	svc    *device.Service
	mqtt   Deliverer
	limits DeviceLimits
	log    *slog.Logger
}

// NewDeviceAPI returns the device API over svc; mqtt delivers pushes to
// MQTT sessions (nil when the MQTT listener is off). It registers itself as
// a transport of svc.
func NewDeviceAPI(svc *device.Service, mqtt Deliverer, log *slog.Logger) *DeviceAPI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &DeviceAPI{
		svc:    svc,
		mqtt:   mqtt,
		limits: DeviceLimits{MaxKeys: svc.Limits().MaxKeys},
		log:    log.With("dialect", Dialect),
	}
	if mqtt != nil {
		svc.AddTransport(a)
	}
	return a
}

// HandleMQTT handles one message a device published below
// v1/devices/me/. reply publishes to the publishing session alone (the
// answer to an attribute request). A returned error refuses the message;
// it wraps one of device's errors.
func (a *DeviceAPI) HandleMQTT(ctx context.Context, deviceID, topic string, payload []byte, reply func(topic string, payload []byte) error) error {
	if err := a.svc.Admit(deviceID, len(payload)); err != nil {
		return err
	}
	switch {
	case topic == TelemetryTopic:
		return a.telemetry(ctx, deviceID, payload)
	case topic == AttributesTopic:
		return a.attributes(ctx, deviceID, payload)
	case strings.HasPrefix(topic, AttributeRequestPrefix):
		id, err := ParseRequestID(topic, AttributeRequestPrefix)
		if err != nil {
			return a.svc.Refused(fmt.Errorf("%w: %v", device.ErrBadPayload, err))
		}
		body, err := a.attributeRequest(ctx, deviceID, payload)
		if err != nil {
			return err
		}
		if err := reply(AttributeResponsePrefix+strconv.Itoa(id), body); err != nil {
			a.log.Debug("attribute response not delivered", "device", deviceID, "error", err)
		}
		return nil
	case strings.HasPrefix(topic, RPCResponsePrefix):
		id, err := ParseRequestID(topic, RPCResponsePrefix)
		if err != nil {
			return a.svc.Refused(fmt.Errorf("%w: %v", device.ErrBadPayload, err))
		}
		result, err := DecodeRPCResponse(payload)
		if err != nil {
			return a.svc.Refused(deviceError(err))
		}
		if !a.svc.RPCResponse(deviceID, id, result) {
			a.log.Debug("RPC answer dropped: no request waits for it", "device", deviceID, "request", id)
		}
		return nil
	case strings.HasPrefix(topic, RPCRequestPrefix):
		// Client-side RPC needs a rule or a webhook to answer it; none is
		// configurable yet, so the request is acknowledged and dropped.
		a.log.Debug("client-side RPC request dropped: no handler", "device", deviceID, "topic", topic)
		return nil
	}
	a.log.Debug("device message dropped: topic not served", "device", deviceID, "topic", topic)
	return nil
}

func (a *DeviceAPI) telemetry(ctx context.Context, deviceID string, payload []byte) error {
	samples, err := DecodeTelemetry(payload, a.svc.Now().UnixMilli(), a.limits)
	if err != nil {
		return a.svc.Refused(deviceError(err))
	}
	return a.svc.Ingest(ctx, deviceID, samples)
}

func (a *DeviceAPI) attributes(ctx context.Context, deviceID string, payload []byte) error {
	attrs, err := DecodeAttributes(payload, a.limits)
	if err != nil {
		return a.svc.Refused(deviceError(err))
	}
	return a.svc.ReportAttributes(ctx, deviceID, attrs)
}

// attributeRequest answers a device asking for attribute values.
func (a *DeviceAPI) attributeRequest(ctx context.Context, deviceID string, payload []byte) ([]byte, error) {
	clientKeys, sharedKeys, err := DecodeAttributeRequest(payload)
	if err != nil {
		return nil, a.svc.Refused(deviceError(err))
	}
	return a.answerAttributes(ctx, deviceID, clientKeys, sharedKeys)
}

// answerAttributes reads the attributes asked for, with ThingsBoard's
// meaning of the two lists: both empty asks for every client and shared
// attribute; otherwise each list names the keys of its scope, and an empty
// one asks for nothing of that scope.
func (a *DeviceAPI) answerAttributes(ctx context.Context, deviceID string, clientKeys, sharedKeys []string) ([]byte, error) {
	all := len(clientKeys) == 0 && len(sharedKeys) == 0
	client, shared, err := a.svc.RequestAttributes(ctx, deviceID, clientKeys, sharedKeys, all || len(clientKeys) > 0, all || len(sharedKeys) > 0)
	if err != nil {
		return nil, err
	}
	return EncodeAttributeResponse(client, shared)
}

// deviceError turns a decoding error into the device error the hub and
// the HTTP API know how to refuse.
func deviceError(err error) error {
	if errors.Is(err, ErrTooManyKeys) {
		return fmt.Errorf("%w: %v", device.ErrTooManyKeys, err)
	}
	return fmt.Errorf("%w: %v", device.ErrBadPayload, err)
}

// PushAttributes implements device.Transport: shared attribute changes go
// to the sessions subscribed to v1/devices/me/attributes.
func (a *DeviceAPI) PushAttributes(deviceID string, changed []telemetry.Attribute, deleted []string) int {
	body, err := EncodeAttributeUpdate(changed, deleted)
	if err != nil { // values are validated before they are stored
		a.log.Error("shared attributes could not be encoded", "device", deviceID, "error", err)
		return 0
	}
	return a.mqtt.DeliverToDevice(deviceID, AttributesTopic, body)
}

// SendRPC implements device.Transport: the request goes to the sessions
// subscribed to v1/devices/me/rpc/request/+.
func (a *DeviceAPI) SendRPC(deviceID string, req device.RPCRequest) int {
	body, err := EncodeRPCRequest(req.Method, req.Params)
	if err != nil { // Call checks params are JSON
		a.log.Error("RPC request could not be encoded", "device", deviceID, "error", err)
		return 0
	}
	return a.mqtt.DeliverToDevice(deviceID, RPCRequestPrefix+strconv.Itoa(req.ID), body)
}

// ---- HTTP ----

// HTTPRoutes are the HTTP device API's patterns, for a ServeMux.
var HTTPRoutes = []string{
	"POST /api/v1/{token}/telemetry",
	"POST /api/v1/{token}/attributes",
	"GET /api/v1/{token}/attributes",
}

// ServeHTTP serves ThingsBoard's HTTP device API: POST telemetry, POST
// attributes, GET attributes?clientKeys=…&sharedKeys=…. As ThingsBoard:
// 200 with an empty body on success, 401 for an unknown token, 400 for a
// malformed payload; beyond that 413 (payload over the limit), 429 (rate)
// and 503 (server overloaded), with a plain-text reason.
func (a *DeviceAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dev, err := a.svc.AuthenticateToken(r.Context(), provision.SourceHost(r.RemoteAddr), r.PathValue("token"))
	if err != nil {
		a.httpError(w, err)
		return
	}
	what := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	if r.Method == http.MethodGet {
		if err := a.svc.Admit(dev.ID, 0); err != nil {
			a.httpError(w, err)
			return
		}
		q := r.URL.Query()
		body, err := a.answerAttributes(r.Context(), dev.ID, ParseAttributeKeys(q.Get("clientKeys")), ParseAttributeKeys(q.Get("sharedKeys")))
		if err != nil {
			a.httpError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
		return
	}
	limit := int64(a.svc.Limits().MaxPayload)
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		err = a.svc.Admit(dev.ID, int(limit)+1)
	case err != nil:
		err = fmt.Errorf("%w: request body could not be read: %v", device.ErrBadPayload, err)
	default:
		err = a.svc.Admit(dev.ID, len(payload))
	}
	if err == nil {
		if what == "telemetry" {
			err = a.telemetry(r.Context(), dev.ID, payload)
		} else {
			err = a.attributes(r.Context(), dev.ID, payload)
		}
	}
	if err != nil {
		a.httpError(w, err)
	}
}

func (a *DeviceAPI) httpError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	var throttled *device.ThrottledError
	switch {
	case errors.Is(err, device.ErrUnauthenticated):
		status = http.StatusUnauthorized
	case errors.Is(err, device.ErrBadPayload), errors.Is(err, device.ErrTooManyKeys):
		status = http.StatusBadRequest
	case errors.Is(err, device.ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.As(err, &throttled):
		status = http.StatusTooManyRequests
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(throttled.RetryAfter.Seconds()+0.999))))
	case errors.Is(err, device.ErrRateLimited):
		status = http.StatusTooManyRequests
		w.Header().Set("Retry-After", "1")
	case errors.Is(err, device.ErrOverloaded):
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "5")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status = http.StatusServiceUnavailable
	default:
		a.log.Error("device API request failed", "error", err)
		err = errors.New("internal error")
	}
	http.Error(w, err.Error(), status)
}

var _ device.Transport = (*DeviceAPI)(nil)
