// Package azuredps speaks the device side of Azure IoT Hub's Device
// Provisioning Service (DPS): the registration exchange the Azure IoT
// device SDKs run over MQTT (topics under $dps/registrations/) and over
// HTTPS (PUT …/register, GET …/operations/{id}), with DPS's user names,
// request ids, api-version checks, answers and error bodies. It holds
// wire formats only; decisions are the provision package's.
//
// # The exchange
//
// A registration is answered 202 {"operationId","status":"assigning"}
// once it is decided and durable, with a retry-after; the device then
// polls the operation and gets 200 with status "assigned" and its
// registrationState (assigned hub, device id, payload). A disabled
// enrollment or device is answered, as DPS does, with status "disabled",
// and a failed allocation with status "failed"; other refusals are an
// HTTP-style status (on MQTT: in the response topic) with DPS's error body
// {"errorCode","trackingId","message","timestampUtc"}.
//
// Error codes: DPS's documented ones where they exist (400004 bad
// request, 401002 unauthorized, 404002 not found, 412002 stale, 429001
// throttled, 500000 internal); otherwise the status followed by 000.
package azuredps

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/dialect/azureiothub"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// MQTT names of the exchange.
const (
	// ResponseFilter is the one subscription a registration session takes.
	ResponseFilter = "$dps/registrations/res/#"
	// RequestPrefix starts every request topic.
	RequestPrefix  = "$dps/registrations/"
	registerTopic  = "$dps/registrations/PUT/iotdps-register/"
	operationTopic = "$dps/registrations/GET/iotdps-get-operationstatus/"
	responsePrefix = "$dps/registrations/res/"
)

// MaxRequestSize caps a registration request body: a registration id, a
// custom payload (DPS caps it with the twin at a few KiB) and, for TPM,
// two public keys.
const MaxRequestSize = 32 << 10

// SupportedAPIVersions are the DPS device API versions zerotouch answers;
// the Node.js SDK sends 2019-03-31, newer C and Python SDKs later ones.
// The exchange is the same in each.
var SupportedAPIVersions = []string{
	"2018-11-01", "2019-01-15", "2019-03-31", "2021-06-01", "2021-10-01", "2022-12-01", "2023-03-01",
}

// Errors of the parsers; the message says what is wrong.
var (
	ErrNotDPS     = errors.New("not a DPS registration")
	ErrAPIVersion = errors.New("unsupported api-version")
)

// Username is a registration session's parsed MQTT user name,
// "<idScope>/registrations/<registrationId>/api-version=<v>[&…]".
type Username struct {
	IDScope, RegistrationID, APIVersion string
}

// ParseUsername parses a DPS user name. Parameters other than api-version
// (ClientVersion, model-id…) are accepted and ignored; a missing or
// unsupported api-version is ErrAPIVersion, any other shape ErrNotDPS.
func ParseUsername(u string) (Username, error) {
	scope, rest, ok := strings.Cut(u, "/registrations/")
	if !ok || scope == "" || strings.Contains(scope, "/") {
		return Username{}, fmt.Errorf("%w: user name is not <idScope>/registrations/<id>/…", ErrNotDPS)
	}
	regID, params, ok := strings.Cut(rest, "/")
	if !ok || regID == "" {
		return Username{}, fmt.Errorf("%w: user name has no registration id", ErrNotDPS)
	}
	// Some SDKs put a '?' before the parameters.
	params = strings.TrimPrefix(params, "?")
	v, err := apiVersionOf(params)
	if err != nil {
		return Username{}, err
	}
	return Username{IDScope: scope, RegistrationID: regID, APIVersion: v}, nil
}

// IsUsername reports whether u has the shape of a DPS user name, whatever
// its api-version: such a CONNECT opens a registration session, and a bad
// api-version is answered on the session.
func IsUsername(u string) bool {
	_, err := ParseUsername(u)
	return err == nil || errors.Is(err, ErrAPIVersion)
}

func apiVersionOf(query string) (string, error) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("%w: parameters do not parse", ErrAPIVersion)
	}
	return CheckAPIVersion(q.Get("api-version"))
}

// CheckAPIVersion returns v if it is supported, else ErrAPIVersion.
func CheckAPIVersion(v string) (string, error) {
	switch {
	case v == "":
		return "", fmt.Errorf("%w: api-version is missing", ErrAPIVersion)
	case !slices.Contains(SupportedAPIVersions, v):
		return "", fmt.Errorf("%w: api-version %q is not supported (supported: %s)", ErrAPIVersion, clip(v), strings.Join(SupportedAPIVersions, ", "))
	}
	return v, nil
}

// RequestKind tells registrations from operation polls.
type RequestKind int

// Request kinds.
const (
	KindRegister RequestKind = iota + 1
	KindOperationStatus
)

// RequestTopic is a parsed request topic.
type RequestTopic struct {
	Kind RequestKind
	// RID is the request id ($rid), echoed in the answer's topic.
	RID string
	// OperationID is the polled operation (KindOperationStatus).
	OperationID string
}

// ParseRequestTopic parses "$dps/registrations/PUT/iotdps-register/?$rid=…"
// and "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=…&operationId=…".
// A topic without a usable $rid cannot be answered: ErrNotDPS.
func ParseRequestTopic(topic string) (RequestTopic, error) {
	var t RequestTopic
	var query string
	switch {
	case strings.HasPrefix(topic, registerTopic+"?"):
		t.Kind, query = KindRegister, topic[len(registerTopic)+1:]
	case strings.HasPrefix(topic, operationTopic+"?"):
		t.Kind, query = KindOperationStatus, topic[len(operationTopic)+1:]
	default:
		return t, fmt.Errorf("%w: unknown request topic %q", ErrNotDPS, clip(topic))
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return t, fmt.Errorf("%w: topic parameters do not parse", ErrNotDPS)
	}
	t.RID = q.Get("$rid")
	if !azureiothub.ValidRequestID(t.RID) {
		return t, fmt.Errorf("%w: request id ($rid) missing or unusable", ErrNotDPS)
	}
	t.OperationID = q.Get("operationId")
	return t, nil
}

// ResponseTopic is the topic of the answer to request rid:
// "$dps/registrations/res/<status>/?$rid=<rid>[&retry-after=<s>]".
func ResponseTopic(status int, rid string, retryAfter int) string {
	t := responsePrefix + strconv.Itoa(status) + "/?$rid=" + rid
	if retryAfter > 0 || status == 202 {
		t += "&retry-after=" + strconv.Itoa(max(retryAfter, 0))
	}
	return t
}

// RegisterRequest is the JSON body of a registration.
type RegisterRequest struct {
	RegistrationID string          `json:"registrationId"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	TPM            *TPMAttestation `json:"tpm,omitempty"`
}

// TPMAttestation is a TPM device's keys in its registration (DPS
// TpmAttestation): base64 TPM2B_PUBLIC of its endorsement key and storage
// root key.
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

// TPMChallenge is the 401 answer to a TPM registration without a token:
// the activation blob of the key to sign the token with, and the key
// name (skn) to sign it for. The C SDK requires both.
type TPMChallenge struct {
	AuthenticationKey string `json:"authenticationKey"`
	KeyName           string `json:"keyName"`
}

// Encode marshals the challenge.
func (c TPMChallenge) Encode() []byte { return encode(c) }

// TPMRegistrationResult is registrationState.tpm of a TPM device's
// assigned registration: the activation blob of its hub key, which the
// SDKs import and sign their hub tokens with.
type TPMRegistrationResult struct {
	AuthenticationKey string `json:"authenticationKey"`
}

// DecodeRegisterRequest decodes a registration body. An empty body (or
// the single space some SDKs send) is a request naming no id; unknown
// fields are ignored, as DPS does.
func DecodeRegisterRequest(body []byte) (RegisterRequest, error) {
	var r RegisterRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return r, nil
	}
	if len(body) > MaxRequestSize {
		return r, fmt.Errorf("the request body is larger than %d bytes", MaxRequestSize)
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("the request body is not a registration (JSON with registrationId): %v", err)
	}
	if string(r.Payload) == "null" {
		r.Payload = nil
	}
	return r, nil
}

// RegistrationState is DPS's DeviceRegistrationResult.
type RegistrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUTC     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
	// TPM is set for a TPM device (see TPMRegistrationResult).
	TPM *TPMRegistrationResult `json:"tpm,omitempty"`
}

// Operation is DPS's RegistrationOperationStatus: the body of every
// non-error answer.
type Operation struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *RegistrationState `json:"registrationState,omitempty"`
}

// ErrorBody is DPS's error answer.
type ErrorBody struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUTC string `json:"timestampUtc"`
}

// Registration operation statuses.
const (
	StatusAssigning = "assigning"
	StatusAssigned  = "assigned"
	StatusFailed    = "failed"
	StatusDisabled  = "disabled"
)

// dpsTime is DPS's timestamp format (.NET's round-trip format in UTC).
func dpsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.0000000Z") }

// Assigning is the answer to an accepted registration.
func Assigning(operationID string) Operation {
	return Operation{OperationID: operationID, Status: StatusAssigning}
}

// Assigned is the answer to a poll of a finished registration.
func Assigned(r *registry.Registration) Operation {
	return Operation{OperationID: r.OperationID, Status: StatusAssigned, RegistrationState: &RegistrationState{
		RegistrationID:         r.RegistrationID,
		CreatedDateTimeUTC:     dpsTime(r.CreatedAt),
		AssignedHub:            r.AssignedHub,
		DeviceID:               r.HubDeviceID,
		Status:                 StatusAssigned,
		Substatus:              r.Substatus,
		LastUpdatedDateTimeUTC: dpsTime(r.UpdatedAt),
		ETag:                   ETag(r),
		Payload:                r.Payload,
	}}
}

// ETag is a registration state's etag, as DPS spells one: base64 of a
// quoted opaque value that changes with every write.
func ETag(r *registry.Registration) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.Quote(r.RegistrationID + ":" + strconv.FormatInt(r.Version, 10))))
}

// Refusal is how a refusal is answered: an HTTP-style status with an
// error body, or (Outcome set) a 200 operation whose status is
// Outcome, as DPS answers a disabled enrollment or a failed allocation.
type Refusal struct {
	Status    int
	ErrorCode int
	// Outcome is StatusDisabled or StatusFailed, or empty for an error body.
	Outcome string
	// RetryAfter, in seconds, for statuses the device should retry.
	RetryAfter int
}

// RefusalOf maps a pipeline refusal to DPS's answer.
func RefusalOf(r provision.Reason) Refusal {
	switch r {
	case provision.ReasonBadRequest:
		return Refusal{Status: 400, ErrorCode: 400004}
	case provision.ReasonBadKeyOrSecret, provision.ReasonNotEnrolled, provision.ReasonBadCredentials, provision.ReasonTokenExpired, provision.ReasonBadCertificate:
		return Refusal{Status: 401, ErrorCode: 401002}
	case provision.ReasonEnrollmentDisabled, provision.ReasonDeviceDisabled:
		return Refusal{Status: 200, ErrorCode: 401002, Outcome: StatusDisabled}
	case provision.ReasonAllocationFailed:
		return Refusal{Status: 200, ErrorCode: 400000, Outcome: StatusFailed}
	case provision.ReasonAlreadyProvisioned, provision.ReasonCredentialsTaken:
		return Refusal{Status: 409, ErrorCode: 409000}
	case provision.ReasonBusy:
		return Refusal{Status: 429, ErrorCode: 429001, RetryAfter: 1}
	case provision.ReasonAllocationUnavailable:
		return Refusal{Status: 503, ErrorCode: 503000, RetryAfter: 5}
	}
	return Refusal{Status: 500, ErrorCode: 500000}
}

// Body encodes the refusal's answer body.
func (f Refusal) Body(regID, msg, trackingID string, now time.Time) []byte {
	if f.Outcome != "" {
		return encode(Operation{OperationID: trackingID, Status: f.Outcome, RegistrationState: &RegistrationState{
			RegistrationID: regID, Status: f.Outcome, ErrorCode: f.ErrorCode, ErrorMessage: msg,
			LastUpdatedDateTimeUTC: dpsTime(now),
		}})
	}
	return encode(ErrorBody{ErrorCode: f.ErrorCode, TrackingID: trackingID, Message: msg, TimestampUTC: dpsTime(now)})
}

// encode marshals v; the types here always marshal.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("azuredps: encode: " + err.Error())
	}
	return b
}

// Encode marshals an operation.
func (o Operation) Encode() []byte { return encode(o) }

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
