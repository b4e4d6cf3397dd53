// ThingsBoard's device API: the JSON a device sends and receives over MQTT
// (topics v1/devices/me/...) and over HTTP (/api/v1/{token}/...) once it is
// provisioned: telemetry, client attributes, attribute requests and their
// responses, shared-attribute pushes, and server-side RPC. Wire formats
// only: no I/O and no business rules.
//
// The behaviour follows ThingsBoard's own converter (JsonConverter in
// common/proto, formerly common/transport/transport-api, and the MQTT and
// HTTP transports that call it). Where ThingsBoard is lenient in a way that
// would store garbage or silently lose data, the decoders here refuse with
// an error a device developer can act on; every such place says so in a
// comment.

package thingsboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// MQTT topics of the device API (ThingsBoard's "v1" topics).
const (
	// TelemetryTopic is where a device publishes time-series data.
	TelemetryTopic = "v1/devices/me/telemetry"
	// AttributesTopic is where a device publishes its client attributes,
	// and where the server pushes shared-attribute updates to it.
	AttributesTopic = "v1/devices/me/attributes"
	// AttributeRequestPrefix + request id is where a device asks for
	// attribute values.
	AttributeRequestPrefix = "v1/devices/me/attributes/request/"
	// AttributeResponsePrefix + request id is where the server answers an
	// attribute request.
	AttributeResponsePrefix = "v1/devices/me/attributes/response/"
	// RPCRequestPrefix + request id is where the server sends a
	// server-side RPC command to the device.
	RPCRequestPrefix = "v1/devices/me/rpc/request/"
	// RPCResponsePrefix + request id is where the device answers a
	// server-side RPC command.
	RPCResponsePrefix = "v1/devices/me/rpc/response/"
)

// Defaults of DeviceLimits.
const (
	// DefaultMaxKeys is the number of keys one message may carry.
	// ThingsBoard has no per-message limit (only rate limits on data
	// points); this one bounds the work one message can cause.
	DefaultMaxKeys = 1000
	// DefaultMaxKeyLength is ThingsBoard's key length limit ("Validation
	// error: key length must be equal or less than 255", KvUtils.validate).
	DefaultMaxKeyLength = telemetry.MaxKeyLength
)

// maxValueDepth bounds how deeply a JSON value (an object or array stored
// as a KindJSON value) may nest.
const maxValueDepth = 100

// DeviceLimits bounds what one device message may carry. A zero field
// takes its default.
type DeviceLimits struct {
	// MaxKeys is the most keys one message may carry, counting every
	// key of every object in the message (a telemetry array counts the
	// keys of all its elements; the structural "ts" and "values" do not
	// count). 0 means DefaultMaxKeys.
	MaxKeys int
	// MaxKeyLength is the longest key, in characters (Unicode code
	// points; ThingsBoard counts UTF-16 units, which differs only for
	// characters outside the Basic Multilingual Plane). 0 means
	// DefaultMaxKeyLength.
	MaxKeyLength int
	// CastNumericStrings turns string values that spell a plain decimal
	// number into numbers, as ThingsBoard does by default
	// (transport.json.type_cast_enabled, JSON_TYPE_CAST_ENABLED=true):
	// "42" becomes the long 42, "21.5" the double 21.5. Like
	// ThingsBoard, only an optional '-', digits and at most one '.' are
	// recognised (no exponent, no '+'), an integer that does not fit in
	// 64 bits stays a string, and so does a fraction of more than 16
	// digits. The default (false) keeps strings as strings, the
	// telemetry.ParseJSON semantics.
	CastNumericStrings bool
}

func (l DeviceLimits) withDefaults() DeviceLimits {
	if l.MaxKeys <= 0 {
		l.MaxKeys = DefaultMaxKeys
	}
	if l.MaxKeyLength <= 0 {
		l.MaxKeyLength = DefaultMaxKeyLength
	}
	return l
}

// Errors of the decoders. Every error a decoder returns wraps ErrBadPayload
// (check with errors.Is); its message says what is wrong in words a device
// developer can act on.
var (
	// ErrBadPayload: the device sent something that is not a valid
	// message of the device API.
	ErrBadPayload = errors.New("invalid device API payload")
	// ErrTooManyKeys: the message carries more keys than
	// DeviceLimits.MaxKeys. It wraps ErrBadPayload, so a check for
	// ErrBadPayload catches it too; check for ErrTooManyKeys first to
	// count it separately.
	ErrTooManyKeys = fmt.Errorf("%w: too many keys", ErrBadPayload)
)

// decodeError is a decoder error: the message is for the device
// developer; kind is ErrBadPayload or ErrTooManyKeys.
type decodeError struct {
	msg  string
	kind error
}

func (e *decodeError) Error() string { return e.msg }
func (e *decodeError) Unwrap() error { return e.kind }

func badPayload(format string, args ...any) error {
	return &decodeError{msg: fmt.Sprintf(format, args...), kind: ErrBadPayload}
}

// DecodeTelemetry parses a telemetry message, as published on
// TelemetryTopic or POSTed to /api/v1/{token}/telemetry. It accepts the
// shapes ThingsBoard documents:
//
//	{"temperature":42,"humidity":73.5,"active":false,"mode":"auto","config":{"a":1}}
//	{"ts":1451649600512,"values":{"temperature":42}}
//	[{"temperature":42},{"ts":1451649600512,"values":{"humidity":73}}]
//
// A flat object gets the timestamp now (Unix milliseconds). Samples come
// in payload order with DeviceID empty (the caller sets it). Values keep
// their JSON type as telemetry.ParseJSON does (or, with
// lim.CastNumericStrings, as ThingsBoard's type cast does).
//
// As in ThingsBoard: a null value is skipped (nothing is stored for that
// key); when a key appears twice in one object the last value wins, at the
// key's first position; an empty object or array yields no samples and no
// error; a fractional "ts" is truncated to whole milliseconds (ThingsBoard
// reads it with Gson's getAsLong, and devices computing time.time()*1000
// send fractions); a "ts" given as a string of digits is accepted.
//
// Refused (ThingsBoard would store garbage or drop data silently):
//   - an object with "ts" but no "values", or "values" but no "ts"
//     (ThingsBoard would store "ts" or "values" as a reading);
//   - an object with "ts" and "values" and any other key (ThingsBoard
//     would drop the other keys);
//   - a "ts" that is negative or not a number;
//   - an empty or blank key, a key with a control character, a key longer
//     than lim.MaxKeyLength, more keys than lim.MaxKeys (ErrTooManyKeys);
//   - anything that is not strict JSON (ThingsBoard's Gson parser is
//     lenient: comments, single quotes, unquoted keys, NaN), invalid
//     UTF-8, a top level that is not an object or an array of objects,
//     data after the JSON value, values nested deeper than 100 levels.
func DecodeTelemetry(payload []byte, now int64, lim DeviceLimits) ([]telemetry.Sample, error) {
	var p parser
	if err := p.init(payload, lim); err != nil {
		return nil, err
	}
	switch p.data[p.pos] {
	case '{':
		if err := p.telemetryObject(now); err != nil {
			return nil, err
		}
	case '[':
		if err := p.telemetryArray(now); err != nil {
			return nil, err
		}
	default:
		return nil, badPayload("telemetry must be a JSON object or an array of objects")
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	return p.out, nil
}

// DecodeAttributes parses a client-attributes message, as published on
// AttributesTopic or POSTed to /api/v1/{token}/attributes: one flat JSON
// object, {"firmwareVersion":"2.1.0","serialNumber":"SN-4A21F"}. UpdatedAt
// is left 0 (the caller sets it). "ts" and "values" are ordinary keys here,
// as in ThingsBoard. Values, nulls, duplicate keys and refusals are as in
// DecodeTelemetry.
func DecodeAttributes(payload []byte, lim DeviceLimits) ([]telemetry.Attribute, error) {
	var p parser
	if err := p.init(payload, lim); err != nil {
		return nil, err
	}
	if p.data[p.pos] != '{' {
		return nil, badPayload("attributes must be a JSON object of key-value pairs")
	}
	if err := p.flatObject(); err != nil {
		return nil, err
	}
	if err := p.end(); err != nil {
		return nil, err
	}
	if len(p.out) == 0 {
		return nil, nil
	}
	attrs := make([]telemetry.Attribute, len(p.out))
	for i, s := range p.out {
		attrs[i] = telemetry.Attribute{Key: s.Key, Value: s.Value}
	}
	return attrs, nil
}

// DecodeAttributeRequest parses the payload a device publishes on
// AttributeRequestPrefix+id:
//
//	{"clientKeys":"attribute1,attribute2","sharedKeys":"shared1,shared2"}
//
// Each list is comma-separated; keys are trimmed, empty ones dropped and
// duplicates removed (ParseAttributeKeys). A missing or null member is an
// empty list. Members other than clientKeys and sharedKeys are ignored, as
// ThingsBoard does. An empty payload is taken as {} (ThingsBoard refuses
// it; nothing is lost by accepting it). An array of strings is accepted
// too, each element itself comma-separated (ThingsBoard accepts only a
// one-element array, by accident of Gson's getAsString); any other type is
// refused.
//
// The lists mean what they mean to ThingsBoard's device actor
// (DeviceActorMessageProcessor.getAttributesKvEntries): when both are
// empty the device asks for all its client and all its shared attributes;
// otherwise for the listed keys of each scope, and for nothing of a scope
// whose list is empty.
func DecodeAttributeRequest(payload []byte) (clientKeys, sharedKeys []string, err error) {
	payload = bytes.TrimSpace(payload)
	if len(payload) == 0 {
		return nil, nil, nil
	}
	if !utf8.Valid(payload) {
		return nil, nil, badPayload("attribute request is not valid UTF-8")
	}
	if payload[0] != '{' {
		return nil, nil, badPayload(`attribute request must be a JSON object such as {"clientKeys":"a,b","sharedKeys":"c"}`)
	}
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&members); err != nil {
		return nil, nil, badPayload("attribute request is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.InputOffset() != int64(len(payload)) {
		return nil, nil, badPayload("attribute request has data after the JSON object")
	}
	if clientKeys, err = requestKeys(members, "clientKeys"); err != nil {
		return nil, nil, err
	}
	if sharedKeys, err = requestKeys(members, "sharedKeys"); err != nil {
		return nil, nil, err
	}
	return clientKeys, sharedKeys, nil
}

// requestKeys reads one key list of an attribute request.
func requestKeys(members map[string]json.RawMessage, name string) ([]string, error) {
	raw, ok := members[name]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return ParseAttributeKeys(s), nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, badPayload("%q must be a string of comma-separated keys, such as \"a,b\"", name)
	}
	return ParseAttributeKeys(strings.Join(list, ",")), nil
}

// ParseAttributeKeys splits a comma-separated key list, such as the
// clientKeys and sharedKeys query parameters of
// GET /api/v1/{token}/attributes: keys are trimmed of spaces, empty ones
// dropped and duplicates removed, in order of first appearance. It
// returns nil when no key is left.
func ParseAttributeKeys(s string) []string {
	var keys []string
	for part := range strings.SplitSeq(s, ",") {
		k := strings.TrimSpace(part)
		if k == "" {
			continue
		}
		dup := false
		for _, seen := range keys {
			if seen == k {
				dup = true
				break
			}
		}
		if !dup {
			keys = append(keys, k)
		}
	}
	return keys
}

// EncodeAttributeResponse encodes the answer to an attribute request, as
// ThingsBoard publishes it on AttributeResponsePrefix+id and returns it
// from GET /api/v1/{token}/attributes:
//
//	{"client":{"firmwareVersion":"2.1.0"},"shared":{"targetTemperature":24.0}}
//
// As in ThingsBoard (JsonConverter.toJson(GetAttributeResponseMsg)), a
// scope with no attribute is left out, so nothing found is {}. (The
// single-key shortcut {"id":…,"device":…,"value":…} exists only in
// ThingsBoard's gateway API, not here.) Attributes are written in the
// order given. Doubles are written with a fraction or an exponent (24.0,
// not 24), as Gson writes them, so the value keeps its type when read
// back. It fails only on a value that cannot be encoded (Value.Valid).
func EncodeAttributeResponse(client, shared []telemetry.Attribute) ([]byte, error) {
	b := make([]byte, 0, 32+24*(len(client)+len(shared)))
	b = append(b, '{')
	var err error
	if len(client) > 0 {
		b = append(b, `"client":`...)
		if b, err = appendAttributes(b, client, ""); err != nil {
			return nil, err
		}
	}
	if len(shared) > 0 {
		if len(client) > 0 {
			b = append(b, ',')
		}
		b = append(b, `"shared":`...)
		if b, err = appendAttributes(b, shared, ""); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// EncodeAttributeUpdate encodes the shared-attribute push ThingsBoard
// publishes on AttributesTopic: the changed attributes as one
// flat object, and the deleted keys, if any, as a "deleted" array in the
// same object:
//
//	{"targetTemperature":26,"deleted":["oldSetting"]}
//
// (JsonConverter.toJson(AttributeUpdateNotificationMsg).) ThingsBoard itself
// sends updates and deletions in separate pushes; the combined shape is
// what its converter writes when given both. When there are deletions, a
// changed attribute named "deleted" is left out, since the list takes that
// name (in ThingsBoard the list replaces it too). Nothing changed and
// nothing deleted gives {}, which a caller should not send. It fails only
// on a value that cannot be encoded (Value.Valid).
func EncodeAttributeUpdate(changed []telemetry.Attribute, deleted []string) ([]byte, error) {
	b := make([]byte, 0, 16+24*len(changed)+16*len(deleted))
	skip := ""
	if len(deleted) > 0 {
		skip = "deleted"
	}
	b, err := appendAttributes(b, changed, skip)
	if err != nil {
		return nil, err
	}
	if len(deleted) == 0 {
		return b, nil
	}
	b = b[:len(b)-1] // reopen the object
	if len(b) > 1 {
		b = append(b, ',')
	}
	b = append(b, `"deleted":[`...)
	for i, k := range deleted {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
	}
	return append(b, ']', '}'), nil
}

// appendAttributes writes attrs as one JSON object, leaving out the key
// skip (when not empty).
func appendAttributes(b []byte, attrs []telemetry.Attribute, skip string) ([]byte, error) {
	b = append(b, '{')
	first := true
	for _, a := range attrs {
		if skip != "" && a.Key == skip {
			continue
		}
		if err := a.Value.Valid(); err != nil {
			return nil, fmt.Errorf("thingsboard: cannot encode attribute %q: %w", a.Key, err)
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, a.Key)
		b = append(b, ':')
		b = appendValue(b, a.Value)
	}
	return append(b, '}'), nil
}

// EncodeRPCRequest encodes a server-side RPC command as ThingsBoard
// publishes it on RPCRequestPrefix+id:
//
//	{"method":"setGpio","params":{"pin":4}}
//
// params is any JSON value, written compacted. Absent params (nil, blank
// or null) are written as null, as ThingsBoard does
// (JsonConverter.toJson(ToDeviceRpcRequestMsg) parses the stored params,
// "null" when the REST call had none, to JsonNull, and
// JsonElement.toString keeps null members). It fails on an empty method
// and on params that are not valid JSON.
func EncodeRPCRequest(method string, params json.RawMessage) ([]byte, error) {
	return appendRPCRequest(make([]byte, 0, 32+len(method)+len(params)), method, params)
}

// appendRPCRequest writes the request object into b.
func appendRPCRequest(b []byte, method string, params json.RawMessage) ([]byte, error) {
	if method == "" {
		return nil, errors.New("thingsboard: an RPC request needs a method")
	}
	b = append(b, `{"method":`...)
	b = appendString(b, method)
	b = append(b, `,"params":`...)
	params = bytes.TrimSpace(params)
	if len(params) == 0 {
		return append(b, "null}"...), nil
	}
	if !utf8.Valid(params) {
		return nil, errors.New("thingsboard: RPC params are not valid UTF-8")
	}
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, params); err != nil {
		return nil, fmt.Errorf("thingsboard: RPC params are not valid JSON: %w", err)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// DecodeRPCResponse reads a device's answer to a server-side RPC command,
// published on RPCResponsePrefix+id.
// A JSON value of any type is returned compacted.
//
// ThingsBoard's transports pass the payload on as an opaque string, and
// its REST API then answers the caller 406 when it is not JSON, or 200
// with no body when it is empty. Here a payload that is valid UTF-8 but
// not JSON (a device answering ok) is returned as a JSON string of the
// trimmed text, so the answer is kept; one that starts like JSON ('{',
// '[' or '"') but is not valid JSON is refused as broken, and so is
// invalid UTF-8. An empty (or blank) payload returns nil and no error:
// the device answered with nothing.
func DecodeRPCResponse(payload []byte) (json.RawMessage, error) {
	if !utf8.Valid(payload) {
		return nil, badPayload("RPC response is not valid UTF-8")
	}
	payload = bytes.TrimSpace(payload)
	if len(payload) == 0 {
		return nil, nil
	}
	if json.Valid(payload) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, payload); err != nil { // cannot happen: valid
			return nil, badPayload("RPC response is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return buf.Bytes(), nil
	}
	switch payload[0] {
	case '{', '[', '"':
		var v json.RawMessage
		err := json.Unmarshal(payload, &v)
		msg := "invalid JSON"
		if err != nil {
			msg = strings.TrimPrefix(err.Error(), "json: ")
		}
		return nil, badPayload("RPC response looks like JSON but is not valid: %s", msg)
	}
	return appendString(make([]byte, 0, len(payload)+2), string(payload)), nil
}

// ParseRequestID returns the request id of a topic that starts with prefix
// (AttributeRequestPrefix, RPCResponsePrefix, ...). The id must be a
// non-negative decimal integer that fits in 32 bits, as ThingsBoard's
// Integer.parseInt requires (leading zeros are accepted, as there; signs
// are not: ThingsBoard never answers a negative id).
func ParseRequestID(topic, prefix string) (int, error) {
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok {
		return 0, badPayload("topic %.100q does not start with %q", topic, prefix)
	}
	if rest == "" {
		return 0, badPayload("topic %.100q has no request id after %q", topic, prefix)
	}
	n := 0
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c < '0' || c > '9' {
			return 0, badPayload("request id %.40q in topic %.100q must be a whole number (0 to %d)", rest, topic, math.MaxInt32)
		}
		n = n*10 + int(c-'0')
		if n > math.MaxInt32 {
			return 0, badPayload("request id %.40q in topic %.100q is larger than %d", rest, topic, math.MaxInt32)
		}
	}
	return n, nil
}

// ---- decoding ----

// parser is a single-pass, validating JSON reader specialised for the
// device API: it appends samples to out as it reads, without building a
// tree and without reading any byte twice (a nested JSON value is scanned
// once, then copied, compacted if it had whitespace).
type parser struct {
	data []byte
	pos  int
	lim  DeviceLimits
	keys int // keys read so far, for MaxKeys
	out  []telemetry.Sample

	// idx finds keys of the object being read once it has more than
	// linearMax members; idxScope is the out index where that object's
	// samples start, -1 when idx is not in use.
	idx      map[string]int
	idxScope int

	space bool // whitespace was skipped inside the nested value being scanned
}

// linearMax is the member count up to which duplicate keys are found by a
// linear scan rather than a map.
const linearMax = 16

// init checks the payload is UTF-8 and not blank, and positions at its
// first non-space byte. (A parser is a local value, not allocated.)
func (p *parser) init(payload []byte, lim DeviceLimits) error {
	if !utf8.Valid(payload) {
		return badPayload("payload is not valid UTF-8")
	}
	*p = parser{data: payload, lim: lim.withDefaults(), idxScope: -1}
	p.ws()
	if p.pos == len(p.data) {
		return badPayload("payload is empty")
	}
	// A key is followed by ':', so this bounds the samples; it is cheap
	// (vectorised) and saves growing out.
	if n := min(bytes.Count(payload, []byte{':'}), p.lim.MaxKeys); n > 0 {
		p.out = make([]telemetry.Sample, 0, n)
	}
	return nil
}

// end checks nothing but whitespace follows the value.
func (p *parser) end() error {
	p.ws()
	if p.pos != len(p.data) {
		return badPayload("invalid JSON: data after the JSON value at byte %d", p.pos)
	}
	return nil
}

func (p *parser) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// wsIn is ws inside a nested value: it notes whether anything was skipped.
func (p *parser) wsIn() {
	start := p.pos
	p.ws()
	if p.pos != start {
		p.space = true
	}
}

// syntaxErr describes what was expected at the current position.
func (p *parser) syntaxErr(expected string) error {
	if p.pos >= len(p.data) {
		return badPayload("invalid JSON: the payload ends where %s was expected", expected)
	}
	return badPayload("invalid JSON at byte %d: expected %s, found %s", p.pos, expected, describeByte(p.data[p.pos]))
}

func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// expect consumes the byte c (after whitespace) or fails.
func (p *parser) expect(c byte, what string) error {
	p.ws()
	if p.pos < len(p.data) && p.data[p.pos] == c {
		p.pos++
		p.ws()
		return nil
	}
	return p.syntaxErr(what)
}

// next reads the separator after an object member or array element: it
// reports whether another one follows (','), or consumes the closing byte.
func (p *parser) next(closing byte, what string) (bool, error) {
	p.ws()
	if p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ',':
			p.pos++
			p.ws()
			return true, nil
		case closing:
			p.pos++
			return false, nil
		}
	}
	return false, p.syntaxErr(what)
}

// telemetryArray reads [obj, obj, ...] at '['.
func (p *parser) telemetryArray(now int64) error {
	p.pos++
	p.ws()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return nil
	}
	for i := 0; ; i++ {
		if p.pos >= len(p.data) {
			return p.syntaxErr("a telemetry object")
		}
		if p.data[p.pos] == ']' {
			return p.syntaxErr("a telemetry object after ','")
		}
		if p.data[p.pos] != '{' {
			return badPayload("telemetry array element %d must be an object, such as {\"temperature\":42} or {\"ts\":1451649600512,\"values\":{...}}", i)
		}
		if err := p.telemetryObject(now); err != nil {
			return err
		}
		more, err := p.next(']', "',' or ']' after a telemetry object")
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// telemetryObject reads one telemetry object at '{': flat, or with "ts"
// and "values". ThingsBoard's rule (JsonConverter.parseObject) is: an
// object that has both "ts" and "values" is timestamped, any other is flat.
// Since members may come in any order, flat members are read as samples
// as they come and the decision is made at the closing brace.
func (p *parser) telemetryObject(now int64) error {
	p.pos++
	start := len(p.out)
	var (
		ts                    int64
		sawTS, sawValues      bool
		valuesIsObject        bool
		other                 string
		haveOther             bool
		valuesStart, valuesAt int
	)
	p.ws()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return nil
	}
	for {
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return p.syntaxErr("a string key")
		}
		keyAt := p.pos
		key, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(':', "':' after a key"); err != nil {
			return err
		}
		switch key {
		case "ts":
			if ts, err = p.timestamp(); err != nil {
				return err
			}
			sawTS = true
		case "values":
			if sawValues {
				return badPayload("telemetry object has \"values\" twice")
			}
			sawValues, valuesAt = true, keyAt
			if p.pos < len(p.data) && p.data[p.pos] == '{' {
				valuesIsObject = true
				valuesStart = len(p.out)
				if err := p.flatObject(); err != nil {
					return err
				}
			} else if err := p.skipValue(0); err != nil {
				return err
			}
		default:
			if !haveOther {
				other, haveOther = key, true
			}
			if err := p.member(start, key); err != nil {
				return err
			}
		}
		more, err := p.next('}', "',' or '}' after a value")
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	p.endScope(start)
	if !sawTS && !sawValues {
		for i := start; i < len(p.out); i++ {
			p.out[i].TS = now
		}
		return nil
	}
	// Refusals where ThingsBoard would store garbage or drop data.
	switch {
	case !sawValues:
		return badPayload(`telemetry object has "ts" but no "values": put the readings in a "values" object, {"ts":1451649600512,"values":{"temperature":42}}`)
	case !sawTS:
		return badPayload(`telemetry object has "values" (at byte %d) but no "ts": add the time in milliseconds, {"ts":1451649600512,"values":{...}}, or send the readings as a flat object`, valuesAt)
	case !valuesIsObject:
		return badPayload(`telemetry "values" must be an object of key-value pairs`)
	case haveOther:
		return badPayload(`telemetry object with "ts" and "values" must have no other keys, found %.40q: move it into "values"`, other)
	}
	for i := valuesStart; i < len(p.out); i++ {
		p.out[i].TS = ts
	}
	return nil
}

// flatObject reads an object of key-value pairs at '{' into samples.
func (p *parser) flatObject() error {
	p.pos++
	scope := len(p.out)
	p.ws()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return nil
	}
	for {
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return p.syntaxErr("a string key")
		}
		key, err := p.str()
		if err != nil {
			return err
		}
		if err := p.expect(':', "':' after a key"); err != nil {
			return err
		}
		if err := p.member(scope, key); err != nil {
			return err
		}
		more, err := p.next('}', "',' or '}' after a value")
		if err != nil {
			return err
		}
		if !more {
			break
		}
	}
	p.endScope(scope)
	return nil
}

// member checks key, reads its value and records it in the object whose
// samples start at out[scope].
func (p *parser) member(scope int, key string) error {
	if err := p.checkKey(key); err != nil {
		return err
	}
	p.keys++
	if p.keys > p.lim.MaxKeys {
		return &decodeError{msg: fmt.Sprintf("message has more than %d keys", p.lim.MaxKeys), kind: ErrTooManyKeys}
	}
	v, err := p.value()
	if err != nil {
		return err
	}
	// A null (v.Kind == 0) is kept as a placeholder until endScope, so
	// that {"a":1,"a":null} removes a, as Gson's last-wins map does.
	if i := p.find(scope, key); i >= 0 {
		p.out[i].Value = v
		return nil
	}
	p.out = append(p.out, telemetry.Sample{Key: key, Value: v})
	if p.idxScope == scope {
		p.idx[key] = len(p.out) - 1
	}
	return nil
}

// find returns the index in out of key in the object starting at scope,
// or -1.
func (p *parser) find(scope int, key string) int {
	n := len(p.out) - scope
	if n <= linearMax {
		for i := scope; i < len(p.out); i++ {
			if p.out[i].Key == key {
				return i
			}
		}
		return -1
	}
	if p.idxScope != scope {
		if p.idx == nil {
			p.idx = make(map[string]int, 2*n)
		} else {
			clear(p.idx)
		}
		for i := scope; i < len(p.out); i++ {
			p.idx[p.out[i].Key] = i
		}
		p.idxScope = scope
	}
	if i, ok := p.idx[key]; ok {
		return i
	}
	return -1
}

// endScope closes the object starting at scope: null placeholders are
// removed (ThingsBoard skips null values) and the key index is dropped.
func (p *parser) endScope(scope int) {
	p.idxScope = -1
	j := scope
	for i := scope; i < len(p.out); i++ {
		if p.out[i].Value.Kind != 0 {
			p.out[j] = p.out[i]
			j++
		}
	}
	clear(p.out[j:])
	p.out = p.out[:j]
}

// checkKey refuses keys ThingsBoard refuses (blank, too long: KvUtils) and
// keys with control characters, which no dashboard can show and some
// stores cannot keep (PostgreSQL text has no NUL).
func (p *parser) checkKey(key string) error {
	if err := telemetry.CheckKey(key, p.lim.MaxKeyLength); err != nil {
		return badPayload("%v", err)
	}
	return nil
}

// value reads one value. A JSON null gives the zero Value.
func (p *parser) value() (telemetry.Value, error) {
	if p.pos >= len(p.data) {
		return telemetry.Value{}, p.syntaxErr("a value")
	}
	switch c := p.data[p.pos]; {
	case c == '"':
		s, err := p.str()
		if err != nil {
			return telemetry.Value{}, err
		}
		if p.lim.CastNumericStrings {
			if v, ok := castNumeric(s); ok {
				return v, nil
			}
		}
		return telemetry.String(s), nil
	case c == 't':
		return telemetry.Bool(true), p.literal("true")
	case c == 'f':
		return telemetry.Bool(false), p.literal("false")
	case c == 'n':
		return telemetry.Value{}, p.literal("null")
	case c == '{' || c == '[':
		start := p.pos
		p.space = false
		if err := p.skipValue(0); err != nil {
			return telemetry.Value{}, err
		}
		raw := p.data[start:p.pos]
		if !p.space {
			return telemetry.Value{Kind: telemetry.KindJSON, Text: string(raw)}, nil
		}
		return telemetry.Value{Kind: telemetry.KindJSON, Text: compact(raw)}, nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		isInt, err := p.number()
		if err != nil {
			return telemetry.Value{}, err
		}
		return numberValue(p.data[start:p.pos], isInt)
	}
	return telemetry.Value{}, p.syntaxErr("a value")
}

// numberValue types a JSON number as telemetry.ParseJSON does: without
// fraction or exponent and within 64 bits, a long; otherwise a double.
func numberValue(b []byte, isInt bool) (telemetry.Value, error) {
	if isInt {
		if n, ok := parseInt(b); ok {
			return telemetry.Long(n), nil
		}
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return telemetry.Value{}, badPayload("number %.40s is out of range", b)
	}
	return telemetry.Double(f), nil
}

// parseInt parses a JSON integer (optional '-', digits); ok is false when
// it does not fit in int64.
func parseInt(b []byte) (int64, bool) {
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		n = n*10 + uint64(c-'0')
	}
	if len(b) == 19 { // may have wrapped or exceed the range
		v, err := strconv.ParseInt(string(b), 10, 64)
		if err == nil {
			n = uint64(v)
		} else if neg && string(b) == "9223372036854775808" {
			return math.MinInt64, true
		} else {
			return 0, false
		}
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

// castNumeric is ThingsBoard's type cast of string values
// (NumberUtils.isParsable, then BigDecimal): see
// DeviceLimits.CastNumericStrings.
func castNumeric(s string) (telemetry.Value, bool) {
	i := 0
	if len(s) > 0 && s[0] == '-' {
		i = 1
	}
	if i == len(s) || s[len(s)-1] == '.' {
		return telemetry.Value{}, false
	}
	dot := -1
	for j := i; j < len(s); j++ {
		switch c := s[j]; {
		case c == '.' && dot < 0:
			dot = j
		case c < '0' || c > '9':
			return telemetry.Value{}, false
		}
	}
	if dot < 0 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil { // beyond 64 bits: ThingsBoard keeps the string
			return telemetry.Value{}, false
		}
		return telemetry.Long(n), true
	}
	if len(s)-dot-1 > 16 { // BigDecimal scale > 16: ThingsBoard keeps the string
		return telemetry.Value{}, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return telemetry.Value{}, false
	}
	return telemetry.Double(f), true
}

// timestamp reads the value of "ts": whole milliseconds since the epoch,
// as a JSON number (a fraction is truncated, as ThingsBoard's getAsLong
// does) or a string of digits (which getAsLong also accepts).
func (p *parser) timestamp() (int64, error) {
	const want = `telemetry "ts" must be the time in milliseconds since 1970-01-01 UTC, such as 1451649600512`
	if p.pos >= len(p.data) {
		return 0, p.syntaxErr("a value")
	}
	c := p.data[p.pos]
	switch {
	case c == '"':
		s, err := p.str()
		if err != nil {
			return 0, err
		}
		if s == "" || len(s) > 19 || strings.Trim(s, "0123456789") != "" {
			return 0, badPayload("%s (found the string %.40q)", want, s)
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, badPayload("%s (%.40q is out of range)", want, s)
		}
		return n, nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := p.pos
		if _, err := p.number(); err != nil {
			return 0, err
		}
		b := p.data[start:p.pos]
		n, neg, ok := truncateNumber(b)
		switch {
		case neg:
			return 0, badPayload("%s (found the negative number %.40s)", want, b)
		case !ok:
			return 0, badPayload("%s (%.40s is out of range)", want, b)
		}
		return n, nil
	}
	start := p.pos
	if err := p.skipValue(0); err != nil {
		return 0, err
	}
	return 0, badPayload("%s (found %.40s)", want, p.data[start:p.pos])
}

// truncateNumber returns the integer part of a valid JSON number, exactly
// (no float rounding): neg reports a number below zero, ok false one
// beyond int64.
func truncateNumber(b []byte) (n int64, neg, ok bool) {
	sign := false
	if b[0] == '-' {
		sign = true
		b = b[1:]
	}
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	intDigits := b[:i]
	var frac []byte
	if i < len(b) && b[i] == '.' {
		j := i + 1
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		frac = b[i+1 : j]
		i = j
	}
	nonzero := bytes.ContainsFunc(intDigits, func(r rune) bool { return r != '0' }) ||
		bytes.ContainsFunc(frac, func(r rune) bool { return r != '0' })
	if sign && nonzero {
		return 0, true, false
	}
	if !nonzero {
		return 0, false, true
	}
	exp := 0
	if i < len(b) { // 'e' or 'E'
		i++
		expNeg := false
		if b[i] == '+' || b[i] == '-' {
			expNeg = b[i] == '-'
			i++
		}
		for ; i < len(b); i++ {
			if exp < 100000 {
				exp = exp*10 + int(b[i]-'0')
			}
		}
		if expNeg {
			exp = -exp
		}
	}
	if exp > 1000 { // a nonzero mantissa times 10^1000
		return 0, false, false
	}
	// Digit k of the integer part is digit k of intDigits||frac, or 0.
	var u uint64
	for k := 0; k < len(intDigits)+exp; k++ {
		var d uint64
		if k < len(intDigits) {
			d = uint64(intDigits[k] - '0')
		} else if f := k - len(intDigits); f < len(frac) {
			d = uint64(frac[f] - '0')
		}
		if u > (math.MaxInt64-d)/10 {
			return 0, false, false
		}
		u = u*10 + d
	}
	return int64(u), false, true
}

// str reads a JSON string at '"' and returns it unescaped.
func (p *parser) str() (string, error) {
	p.pos++
	start := p.pos
	for i := start; i < len(p.data); i++ {
		switch c := p.data[i]; {
		case c == '"':
			p.pos = i + 1
			return string(p.data[start:i]), nil
		case c == '\\':
			return p.strEscaped(start, i)
		case c < 0x20:
			p.pos = i
			return "", p.syntaxErr("'\"' (a control character must be escaped in a string)")
		}
	}
	p.pos = len(p.data)
	return "", p.syntaxErr(`'"' to end the string`)
}

// strEscaped continues str from the first backslash at i. Escapes are
// decoded as encoding/json does, so that values equal telemetry.ParseJSON's:
// an invalid surrogate becomes U+FFFD.
func (p *parser) strEscaped(start, i int) (string, error) {
	buf := make([]byte, 0, i-start+16)
	buf = append(buf, p.data[start:i]...)
	for i < len(p.data) {
		c := p.data[i]
		switch {
		case c == '"':
			p.pos = i + 1
			return string(buf), nil
		case c < 0x20:
			p.pos = i
			return "", p.syntaxErr("'\"' (a control character must be escaped in a string)")
		case c != '\\':
			buf = append(buf, c)
			i++
			continue
		}
		if i+1 >= len(p.data) {
			p.pos = len(p.data)
			return "", p.syntaxErr("an escape sequence")
		}
		switch e := p.data[i+1]; e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := hex4(p.data, i+2)
			if !ok {
				p.pos = i
				return "", p.syntaxErr(`\u followed by four hexadecimal digits`)
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(p.data, i+2); ok && i+1 < len(p.data) && p.data[i] == '\\' && p.data[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						buf = utf8.AppendRune(buf, dec)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			buf = utf8.AppendRune(buf, r)
			continue
		default:
			p.pos = i + 1
			return "", p.syntaxErr(`an escape sequence (\" \\ \/ \b \f \n \r \t or \uXXXX)`)
		}
		i += 2
	}
	p.pos = len(p.data)
	return "", p.syntaxErr(`'"' to end the string`)
}

// hex4 reads four hexadecimal digits at data[i:].
func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// skipString validates a string at '"' without decoding it.
func (p *parser) skipString() error {
	i := p.pos + 1
	for i < len(p.data) {
		switch c := p.data[i]; {
		case c == '"':
			p.pos = i + 1
			return nil
		case c < 0x20:
			p.pos = i
			return p.syntaxErr("'\"' (a control character must be escaped in a string)")
		case c == '\\':
			if i+1 >= len(p.data) {
				p.pos = len(p.data)
				return p.syntaxErr("an escape sequence")
			}
			switch p.data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if _, ok := hex4(p.data, i+2); !ok {
					p.pos = i
					return p.syntaxErr(`\u followed by four hexadecimal digits`)
				}
				i += 6
			default:
				p.pos = i + 1
				return p.syntaxErr(`an escape sequence (\" \\ \/ \b \f \n \r \t or \uXXXX)`)
			}
		default:
			i++
		}
	}
	p.pos = len(p.data)
	return p.syntaxErr(`'"' to end the string`)
}

// number validates a JSON number at the current position and moves past
// it; isInt reports one without fraction or exponent.
func (p *parser) number() (isInt bool, err error) {
	d := p.data
	i := p.pos
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		p.pos = i
		return false, p.syntaxErr("a digit")
	}
	isInt = true
	if i < len(d) && d[i] == '.' {
		isInt = false
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			return false, p.syntaxErr("a digit after the decimal point")
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		isInt = false
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			p.pos = i
			return false, p.syntaxErr("a digit in the exponent")
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	p.pos = i
	return isInt, nil
}

// literal consumes true, false or null.
func (p *parser) literal(word string) error {
	if !bytes.HasPrefix(p.data[p.pos:], []byte(word)) {
		return p.syntaxErr("a value (" + word + "?)")
	}
	p.pos += len(word)
	return nil
}

// skipValue validates any JSON value and moves past it.
func (p *parser) skipValue(depth int) error {
	if p.pos >= len(p.data) {
		return p.syntaxErr("a value")
	}
	switch c := p.data[p.pos]; {
	case c == '"':
		return p.skipString()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := p.number()
		return err
	case c == '{':
		if depth >= maxValueDepth {
			return badPayload("a JSON value nests deeper than %d levels", maxValueDepth)
		}
		p.pos++
		p.wsIn()
		if p.pos < len(p.data) && p.data[p.pos] == '}' {
			p.pos++
			return nil
		}
		for {
			if p.pos >= len(p.data) || p.data[p.pos] != '"' {
				return p.syntaxErr("a string key")
			}
			if err := p.skipString(); err != nil {
				return err
			}
			p.wsIn()
			if p.pos >= len(p.data) || p.data[p.pos] != ':' {
				return p.syntaxErr("':' after a key")
			}
			p.pos++
			p.wsIn()
			if err := p.skipValue(depth + 1); err != nil {
				return err
			}
			p.wsIn()
			if p.pos < len(p.data) {
				switch p.data[p.pos] {
				case ',':
					p.pos++
					p.wsIn()
					continue
				case '}':
					p.pos++
					return nil
				}
			}
			return p.syntaxErr("',' or '}' after a value")
		}
	case c == '[':
		if depth >= maxValueDepth {
			return badPayload("a JSON value nests deeper than %d levels", maxValueDepth)
		}
		p.pos++
		p.wsIn()
		if p.pos < len(p.data) && p.data[p.pos] == ']' {
			p.pos++
			return nil
		}
		for {
			if err := p.skipValue(depth + 1); err != nil {
				return err
			}
			p.wsIn()
			if p.pos < len(p.data) {
				switch p.data[p.pos] {
				case ',':
					p.pos++
					p.wsIn()
					continue
				case ']':
					p.pos++
					return nil
				}
			}
			return p.syntaxErr("',' or ']' after a value")
		}
	}
	return p.syntaxErr("a value")
}

// compact removes the whitespace outside strings from valid JSON.
func compact(raw []byte) string {
	out := make([]byte, 0, len(raw))
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if inString {
			out = append(out, c)
			switch c {
			case '\\':
				i++
				out = append(out, raw[i])
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
		case '"':
			inString = true
			out = append(out, c)
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// ---- encoding ----

// appendValue writes a valid v as the JSON value it stands for. Doubles
// always carry a fraction or an exponent, so they read back as doubles.
func appendValue(b []byte, v telemetry.Value) []byte {
	switch v.Kind {
	case telemetry.KindBool:
		return strconv.AppendBool(b, v.Bool)
	case telemetry.KindLong:
		return strconv.AppendInt(b, v.Long, 10)
	case telemetry.KindDouble:
		return appendDouble(b, v.Double)
	case telemetry.KindString:
		return appendString(b, v.Text)
	}
	return append(b, v.Text...) // KindJSON: valid JSON
}

// appendDouble formats f as encoding/json does, then adds ".0" to an
// integral number so that it stays a double (Gson writes 42.0 too).
func appendDouble(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n-start >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
		return b
	}
	if bytes.IndexByte(b[start:], '.') < 0 {
		b = append(b, '.', '0')
	}
	return b
}

// appendString writes s as a JSON string, escaping as Gson's
// JsonElement.toString does (quote, backslash, control characters, U+2028
// and U+2029; no HTML escaping). Invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c >= 0x20:
				b = append(b, c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
