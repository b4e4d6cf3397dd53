// Package azureiothub speaks the device side of Azure IoT Hub's MQTT
// protocol, the subset the Azure IoT device SDKs use once a device is
// assigned to a hub: device-to-cloud messages on
// devices/{id}/messages/events/, the device twin ($iothub/twin/GET,
// reported-property PATCH, desired-property updates pushed to the device),
// and direct methods ($iothub/methods/POST/… and their answers on
// $iothub/methods/res/…). The hub authenticates the session (SAS token or
// X.509) and confines it to these topics; this package holds the wire
// formats and maps them onto the protocol-neutral device service:
//
//   - a message becomes telemetry: each member of a JSON object one value,
//     any other JSON value one value named "value", text one string named
//     "message", other bytes "message" as "base64:…";
//   - the twin's desired properties are the device's shared attributes, its
//     reported properties its client attributes (tags, operator-only, are
//     its server attributes and never sent to the device); a twin's
//     $version is the time, in Unix milliseconds, of the section's last
//     change, which increases with every change as a version must;
//   - a direct method is an RPC whose answer is {"status","payload"};
//   - a cloud-to-device message (device.Message) is published on
//     devices/{id}/messages/devicebound/<properties>, to live sessions
//     only: nothing is queued for an offline device.
package azureiothub

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Dialect names the protocol in logs.
const Dialect = "azure-iothub"

// Topic prefixes a device publishes to; the hub routes them here.
const (
	DevicesPrefix = "devices/"
	IoTHubPrefix  = "$iothub/"

	twinGet          = "$iothub/twin/GET/"
	twinPatchRep     = "$iothub/twin/PATCH/properties/reported/"
	twinRes          = "$iothub/twin/res/"
	twinPatchDesired = "$iothub/twin/PATCH/properties/desired/"
	methodsRes       = "$iothub/methods/res/"
	methodsPost      = "$iothub/methods/POST/"
)

// Deliverer publishes a message to a device's live MQTT sessions that
// subscribed to topic, and returns how many took it (the hub does).
type Deliverer interface {
	DeliverToDevice(deviceID, topic string, payload []byte) int
}

// Handler serves the protocol to provisioned devices, and is the
// device.Transport that pushes desired properties and method calls to
// IoT Hub sessions.
type Handler struct {
	svc  *device.Service
	mqtt Deliverer
	log  *slog.Logger
}

// New returns a Handler over svc and registers it as a transport of svc.
func New(svc *device.Service, mqtt Deliverer, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{svc: svc, mqtt: mqtt, log: log.With("dialect", Dialect)}
	svc.AddTransport(h)
	return h
}

// Session is the publishing session: the device's zerotouch id and its
// id on the hub (the one in its topics).
type Session struct {
	DeviceID, HubDeviceID string
	// Reply publishes to the publishing session alone.
	Reply func(topic string, payload []byte) error
}

// HandleMQTT handles one message a device published. A returned error
// refuses the message; it wraps one of device's errors.
func (h *Handler) HandleMQTT(ctx context.Context, s Session, topic string, payload []byte) error {
	if err := h.svc.Admit(s.DeviceID, len(payload)); err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(topic, DevicesPrefix+s.HubDeviceID+"/messages/events"):
		samples, err := DecodeMessage(payload, h.svc.Now().UnixMilli(), h.svc.Limits().MaxKeys)
		if err != nil {
			return h.svc.Refused(err)
		}
		return h.svc.Ingest(ctx, s.DeviceID, samples)
	case strings.HasPrefix(topic, twinGet):
		rid, err := requestID(topic, twinGet)
		if err != nil {
			return h.svc.Refused(err)
		}
		client, shared, err := h.svc.RequestAttributes(ctx, s.DeviceID, nil, nil, true, true)
		if err != nil {
			h.twinError(s, rid, err)
			return nil
		}
		h.reply(s, twinRes+"200/?$rid="+rid, EncodeTwin(shared, client))
		return nil
	case strings.HasPrefix(topic, twinPatchRep):
		rid, err := requestID(topic, twinPatchRep)
		if err != nil {
			return h.svc.Refused(err)
		}
		attrs, err := DecodeReported(payload, h.svc.Now().UnixMilli(), h.svc.Limits().MaxKeys)
		if err == nil && len(attrs) > 0 {
			err = h.svc.ReportAttributes(ctx, s.DeviceID, attrs)
		}
		if err != nil {
			h.twinError(s, rid, h.svc.Refused(err))
			return nil
		}
		h.reply(s, twinRes+"204/?$rid="+rid+"&$version="+strconv.FormatInt(h.svc.Now().UnixMilli(), 10), nil)
		return nil
	case strings.HasPrefix(topic, methodsRes):
		status, id, err := parseMethodResponse(topic)
		if err != nil {
			return h.svc.Refused(err)
		}
		result, err := EncodeMethodResult(status, payload)
		if err != nil {
			return h.svc.Refused(err)
		}
		if !h.svc.RPCResponse(s.DeviceID, id, result) {
			h.log.Debug("direct method answer dropped: no call waits for it", "device", s.DeviceID, "request", id)
		}
		return nil
	}
	h.log.Debug("device message dropped: topic not served", "device", s.DeviceID, "topic", topic)
	return nil
}

// twinError answers a twin request that failed: the SDKs have no timeout
// on twin requests, so a request left unanswered would hang the device.
// The body's errorCode is what they turn into an error.
func (h *Handler) twinError(s Session, rid string, err error) {
	status, code := 500, 500000
	switch {
	case errors.Is(err, device.ErrBadPayload), errors.Is(err, device.ErrTooManyKeys), errors.Is(err, device.ErrInvalid):
		status, code = 400, 400004
	case errors.Is(err, device.ErrRateLimited), errors.Is(err, device.ErrOverloaded):
		status, code = 429, 429001
	}
	if status == 500 {
		h.log.Error("twin request failed", "device", s.DeviceID, "error", err)
	}
	body, _ := json.Marshal(map[string]any{"errorCode": code, "message": err.Error()})
	h.reply(s, twinRes+strconv.Itoa(status)+"/?$rid="+rid, body)
}

func (h *Handler) reply(s Session, topic string, body []byte) {
	if err := s.Reply(topic, body); err != nil {
		h.log.Debug("twin answer not delivered", "device", s.DeviceID, "error", err)
	}
}

// PushAttributes implements device.Transport: changed and deleted shared
// attributes go, as a desired-properties patch (deleted ones as null), to
// the sessions subscribed to desired-property updates.
func (h *Handler) PushAttributes(deviceID string, changed []telemetry.Attribute, deleted []string) int {
	version := h.svc.Now().UnixMilli()
	for _, a := range changed {
		version = max(version, a.UpdatedAt)
	}
	body, err := EncodeDesiredPatch(changed, deleted, version)
	if err != nil { // values are validated before they are stored
		h.log.Error("desired properties could not be encoded", "device", deviceID, "error", err)
		return 0
	}
	return h.mqtt.DeliverToDevice(deviceID, twinPatchDesired+"?$version="+strconv.FormatInt(version, 10), body)
}

// SendRPC implements device.Transport: the call goes to the sessions
// subscribed to direct methods. A method name that cannot be a topic level
// reaches no one.
func (h *Handler) SendRPC(deviceID string, req device.RPCRequest) int {
	if req.Method == "" || strings.ContainsAny(req.Method, "/+#?") {
		return 0
	}
	body := []byte(req.Params)
	if len(body) == 0 {
		// The SDKs JSON-parse every request body and refuse an empty one.
		body = []byte("null")
	}
	return h.mqtt.DeliverToDevice(deviceID, methodsPost+url.PathEscape(req.Method)+"/?$rid="+strconv.Itoa(req.ID), body)
}

// SendMessage implements device.MessageSender: the message goes to the
// sessions subscribed to devices/{id}/messages/devicebound/#, its system
// properties ($.mid, $.to) and application properties encoded in the
// topic as IoT Hub does (encodeURIComponent'd, joined with & and =).
func (h *Handler) SendMessage(deviceID string, m device.Message) int {
	return h.mqtt.DeliverToDevice(deviceID, MessageTopic(m), m.Payload)
}

// MessageTopic is the topic a cloud-to-device message is published on.
func MessageTopic(m device.Message) string {
	to := DevicesPrefix + m.DeviceName + "/messages/devicebound"
	var b strings.Builder
	b.WriteString(to + "/%24.mid=" + attest.URLEncode(m.ID) + "&%24.to=" + attest.URLEncode("/"+to))
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString("&" + attest.URLEncode(k) + "=" + attest.URLEncode(m.Properties[k]))
	}
	return b.String()
}

// requestID is the $rid of a request topic "<prefix>?$rid=<rid>[&…]".
func requestID(topic, prefix string) (string, error) {
	q, err := url.ParseQuery(strings.TrimPrefix(topic[len(prefix):], "?"))
	if err != nil {
		return "", fmt.Errorf("%w: topic parameters do not parse", device.ErrBadPayload)
	}
	rid := q.Get("$rid")
	if !ValidRequestID(rid) {
		return "", fmt.Errorf("%w: request id ($rid) missing or unusable", device.ErrBadPayload)
	}
	return rid, nil
}

// ValidRequestID reports whether rid can be a request id ($rid): 1 to 128
// characters among those no encoding changes (letters, digits, - . _ ~),
// so that echoing it in an answer's topic is always a valid topic name.
func ValidRequestID(rid string) bool {
	if rid == "" || len(rid) > 128 {
		return false
	}
	for i := 0; i < len(rid); i++ {
		c := rid[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// parseMethodResponse parses "$iothub/methods/res/<status>/?$rid=<id>";
// the id is the number of the RPC request.
func parseMethodResponse(topic string) (status, id int, err error) {
	st, rest, ok := strings.Cut(topic[len(methodsRes):], "/")
	if !ok {
		return 0, 0, fmt.Errorf("%w: method answer topic has no status", device.ErrBadPayload)
	}
	if status, err = strconv.Atoi(st); err != nil || status < 0 || status > 999 {
		return 0, 0, fmt.Errorf("%w: method answer status %q is not a number", device.ErrBadPayload, st)
	}
	rid, err := requestID(rest, "")
	if err != nil {
		return 0, 0, err
	}
	if id, err = strconv.Atoi(rid); err != nil {
		return 0, 0, fmt.Errorf("%w: method answer for unknown request %q", device.ErrBadPayload, rid)
	}
	return status, id, nil
}

// DecodeMessage turns a device-to-cloud message into telemetry at now:
// the members of a JSON object, another JSON value as "value", text as
// "message", anything else as "message" in base64.
func DecodeMessage(payload []byte, now int64, maxKeys int) ([]telemetry.Sample, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err == nil && obj != nil {
		if len(obj) > maxKeys {
			return nil, fmt.Errorf("%w: %d values, at most %d", device.ErrTooManyKeys, len(obj), maxKeys)
		}
		out := make([]telemetry.Sample, 0, len(obj))
		for k, raw := range obj {
			if string(raw) == "null" {
				continue
			}
			if k == "" {
				return nil, fmt.Errorf("%w: a member has an empty name", device.ErrBadPayload)
			}
			v, err := telemetry.ParseJSON(raw)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %v", device.ErrBadPayload, k, err)
			}
			out = append(out, telemetry.Sample{Key: k, TS: now, Value: v})
		}
		return out, nil
	}
	if v, err := telemetry.ParseJSON(payload); err == nil {
		return []telemetry.Sample{{Key: "value", TS: now, Value: v}}, nil
	}
	if len(payload) == 0 {
		return nil, nil
	}
	if utf8.Valid(payload) {
		return []telemetry.Sample{{Key: "message", TS: now, Value: telemetry.String(string(payload))}}, nil
	}
	return []telemetry.Sample{{Key: "message", TS: now, Value: telemetry.String("base64:" + base64.StdEncoding.EncodeToString(payload))}}, nil
}

// DecodeReported turns a reported-properties patch (a JSON object) into
// client attributes. Members set to null are left out: deleting a
// reported property is not supported yet.
func DecodeReported(payload []byte, now int64, maxKeys int) ([]telemetry.Attribute, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: a reported-properties patch must be a JSON object", device.ErrBadPayload)
	}
	if len(obj) > maxKeys {
		return nil, fmt.Errorf("%w: %d properties, at most %d", device.ErrTooManyKeys, len(obj), maxKeys)
	}
	out := make([]telemetry.Attribute, 0, len(obj))
	for k, raw := range obj {
		if string(raw) == "null" || strings.HasPrefix(k, "$") {
			continue // "$version" and other metadata are the hub's
		}
		if k == "" {
			return nil, fmt.Errorf("%w: a property has an empty name", device.ErrBadPayload)
		}
		v, err := telemetry.ParseJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", device.ErrBadPayload, k, err)
		}
		out = append(out, telemetry.Attribute{Key: k, Value: v, UpdatedAt: now})
	}
	return out, nil
}

// section encodes attributes as a twin section with its $version.
func section(attrs []telemetry.Attribute) map[string]any {
	m := make(map[string]any, len(attrs)+1)
	var version int64 = 1
	for _, a := range attrs {
		m[a.Key] = a.Value
		version = max(version, a.UpdatedAt)
	}
	m["$version"] = version
	return m
}

// EncodeTwin is the answer to a twin GET: {"desired":{…},"reported":{…}}.
func EncodeTwin(desired, reported []telemetry.Attribute) []byte {
	b, err := json.Marshal(map[string]any{"desired": section(desired), "reported": section(reported)})
	if err != nil { // stored values always marshal
		panic("azureiothub: encode twin: " + err.Error())
	}
	return b
}

// EncodeDesiredPatch is a desired-properties update: the changed values,
// the deleted ones as null, and $version.
func EncodeDesiredPatch(changed []telemetry.Attribute, deleted []string, version int64) ([]byte, error) {
	m := make(map[string]any, len(changed)+len(deleted)+1)
	for _, k := range deleted {
		m[k] = nil
	}
	for _, a := range changed {
		m[a.Key] = a.Value
	}
	m["$version"] = version
	return json.Marshal(m)
}

// EncodeMethodResult is what a direct method's caller gets:
// {"status":<status>,"payload":<the device's JSON answer, null if none>}.
func EncodeMethodResult(status int, payload []byte) (json.RawMessage, error) {
	body := json.RawMessage(payload)
	if len(strings.TrimSpace(string(payload))) == 0 {
		body = json.RawMessage("null")
	} else if !json.Valid(payload) {
		return nil, errors.Join(device.ErrBadPayload, errors.New("a direct method's answer must be JSON"))
	}
	return json.Marshal(struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}{status, body})
}
