package allocate

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// The custom allocation webhook speaks the JSON of DPS's custom
// allocation policies (https://learn.microsoft.com/azure/iot-dps/concepts-custom-allocation):
// a POST of an AllocationRequest
//
//	{"individualEnrollment"|"enrollmentGroup": {...DPS enrollment record...},
//	 "deviceRuntimeContext": {"registrationId": "...", "currentIotHubHostName": "...",
//	   "currentDeviceId": "...", "symmetricKey"|"x509"|"tpm": {...}, "payload": ...},
//	 "linkedHubs": ["hub.example.net", ...]}
//
// answered by an AllocationResponse
//
//	{"iotHubHostName": "...", "initialTwin": {"tags": {...}, "properties": {"desired": {...}}},
//	 "payload": ...}
//
// so that an Azure Function written for DPS works unchanged.

// Webhook says where and how the custom allocation webhook is called.
// Zero fields of a request's Webhook take the values of the Allocator's
// default webhook (except APIKey and Header when the URLs differ), then
// the package defaults.
type Webhook struct {
	// URL is the absolute http or https URL the AllocationRequest is
	// POSTed to. An Azure Function's URL may carry its key as ?code=.
	URL string
	// APIKey, when set, is sent in the APIKeyHeader header.
	APIKey string
	// APIKeyHeader names the key's header; empty means
	// DefaultAPIKeyHeader (x-functions-key, as Azure Functions expect).
	// "Authorization" sends the key as is, so "Bearer …" works.
	APIKeyHeader string
	// Header holds further headers to send.
	Header http.Header
	// Timeout caps each attempt; 0 means DefaultWebhookTimeout.
	Timeout time.Duration
	// Retries is the number of attempts after the first, made only after
	// a network error, a timeout, a 5xx or a 429; 0 means
	// DefaultWebhookRetries, negative means none.
	Retries int
	// APIVersion is the DPS API version the enrollment record is said to
	// follow (customAllocationDefinition.apiVersion); empty means
	// "2021-10-01".
	APIVersion string
}

// WebhookRequest is what the custom policy's webhook is told of the
// registration beyond the Request's own fields.
type WebhookRequest struct {
	// Endpoint overrides the Allocator's default webhook (field by field);
	// nil means the default.
	Endpoint *Webhook
	// IndividualEnrollment or EnrollmentGroup is the enrollment that
	// admitted the device (at most one). Secrets (symmetric keys) are
	// never sent.
	IndividualEnrollment *registry.Enrollment
	EnrollmentGroup      *registry.EnrollmentGroup
	// Attestation is how the device proved itself in this registration.
	Attestation DeviceAttestation
	// Payload is the custom payload the device sent with its
	// registration, JSON; empty when none.
	Payload json.RawMessage
}

// DeviceAttestation describes the device's evidence for the webhook
// (deviceRuntimeContext's symmetricKey, x509 or tpm member).
type DeviceAttestation struct {
	// Type selects the member sent; empty sends none.
	Type registry.AttestationType
	// X509 describes the device's leaf certificate, for AttestationX509.
	X509 *X509CertificateInfo
	// TPM holds the device's public TPM keys, for AttestationTPM.
	TPM *registry.TPMAttestation
}

// X509CertificateInfo is DPS's description of a certificate
// (X509CertificateInfo in its REST API).
type X509CertificateInfo struct {
	SubjectName      string    `json:"subjectName"`
	SHA1Thumbprint   string    `json:"sha1Thumbprint"`
	SHA256Thumbprint string    `json:"sha256Thumbprint"`
	IssuerName       string    `json:"issuerName"`
	NotBefore        time.Time `json:"notBeforeUtc"`
	NotAfter         time.Time `json:"notAfterUtc"`
	SerialNumber     string    `json:"serialNumber"`
	Version          int       `json:"version"`
}

// CertificateInfo describes cert as DPS does: thumbprints and serial in
// upper-case hex.
func CertificateInfo(cert *x509.Certificate) *X509CertificateInfo {
	s1 := sha1.Sum(cert.Raw)
	s256 := sha256.Sum256(cert.Raw)
	return &X509CertificateInfo{
		SubjectName:      cert.Subject.String(),
		SHA1Thumbprint:   strings.ToUpper(hex.EncodeToString(s1[:])),
		SHA256Thumbprint: strings.ToUpper(hex.EncodeToString(s256[:])),
		IssuerName:       cert.Issuer.String(),
		NotBefore:        cert.NotBefore.UTC(),
		NotAfter:         cert.NotAfter.UTC(),
		SerialNumber:     strings.ToUpper(cert.SerialNumber.Text(16)),
		Version:          cert.Version,
	}
}

// allocateCustom calls the webhook and checks its answer.
func (a *Allocator) allocateCustom(ctx context.Context, hubs []Hub, req Request, res Result) (Result, error) {
	wr := req.Webhook
	if wr == nil {
		wr = &WebhookRequest{}
	}
	wh := a.webhook(wr.Endpoint)
	if err := wh.validate(); err != nil {
		return res, err
	}
	if wr.IndividualEnrollment != nil && wr.EnrollmentGroup != nil {
		return res, fmt.Errorf("%w: a registration comes through an individual enrollment or a group, not both", registry.ErrInvalid)
	}
	if len(wr.Payload) > 0 && (len(wr.Payload) > registry.MaxTwinJSON || !json.Valid(wr.Payload)) {
		return res, fmt.Errorf("%w: the device's payload is not JSON of at most %d bytes", registry.ErrInvalid, registry.MaxTwinJSON)
	}
	cands, err := candidates(hubs, req.IoTHubs)
	if err != nil {
		return res, err
	}
	body, err := json.Marshal(buildRequest(req, wr, wh, cands))
	if err != nil {
		return res, fmt.Errorf("%w: encoding the allocation request: %v", registry.ErrInvalid, err)
	}
	raw, attempts, err := a.call(ctx, wh, body)
	res.Attempts = attempts
	if err != nil {
		return res, err
	}
	ans, err := parseAnswer(raw)
	if err != nil {
		return res, err
	}
	h, ok := findHub(cands, ans.Hub)
	if !ok {
		return res, fmt.Errorf("%w: hub %q is not one of the linked hubs", ErrWebhookBadAnswer, ans.Hub)
	}
	res.Hub, res.InitialTwin, res.Payload = h.Name, ans.InitialTwin, ans.Payload
	return res, nil
}

// webhook merges a request's endpoint over the default and the defaults.
// An endpoint at another URL does not inherit the default's key nor
// headers: credentials meant for the instance's webhook must not go to a
// URL that whoever edits an enrollment chose.
func (a *Allocator) webhook(w *Webhook) Webhook {
	out := a.opts.Webhook
	if w != nil {
		if w.URL != "" && w.URL != out.URL {
			out.URL, out.APIKey, out.Header = w.URL, "", nil
		}
		if w.APIKey != "" {
			out.APIKey = w.APIKey
		}
		if w.APIKeyHeader != "" {
			out.APIKeyHeader = w.APIKeyHeader
		}
		if len(w.Header) > 0 {
			h := out.Header.Clone()
			if h == nil {
				h = http.Header{}
			}
			for k, v := range w.Header {
				h[k] = v
			}
			out.Header = h
		}
		if w.Timeout != 0 {
			out.Timeout = w.Timeout
		}
		if w.Retries != 0 {
			out.Retries = w.Retries
		}
		if w.APIVersion != "" {
			out.APIVersion = w.APIVersion
		}
	}
	if out.APIKeyHeader == "" {
		out.APIKeyHeader = DefaultAPIKeyHeader
	}
	if out.Timeout <= 0 {
		out.Timeout = DefaultWebhookTimeout
	}
	switch {
	case out.Retries == 0:
		out.Retries = DefaultWebhookRetries
	case out.Retries < 0:
		out.Retries = 0
	}
	if out.APIVersion == "" {
		out.APIVersion = "2021-10-01"
	}
	return out
}

func (w Webhook) validate() error {
	if w.URL == "" {
		return fmt.Errorf("%w: the custom allocation policy needs a webhook URL", registry.ErrInvalid)
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: the custom allocation webhook URL must be an absolute http or https URL", registry.ErrInvalid)
	}
	return nil
}

// redactURL drops the query and credentials: an Azure Function's key is
// usually its ?code=, and URLs end up in logs and audit events.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "****" // as DPS shows it in the request it sends
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// call posts body until an attempt gets a 2xx, an attempt fails in a way
// retrying cannot fix, the retries run out, or ctx ends.
func (a *Allocator) call(ctx context.Context, wh Webhook, body []byte) ([]byte, []Attempt, error) {
	var attempts []Attempt
	backoff := a.opts.WebhookBackoff
	for i := 0; ; i++ {
		raw, at, retriable, err := a.attempt(ctx, wh, body)
		attempts = append(attempts, at)
		if err == nil {
			return raw, attempts, nil
		}
		if ctx.Err() != nil {
			return nil, attempts, fmt.Errorf("%w: %w (after %d attempt(s))", ErrWebhookUnavailable, context.Cause(ctx), len(attempts))
		}
		if !retriable {
			return nil, attempts, err
		}
		if i >= wh.Retries {
			return nil, attempts, fmt.Errorf("%w (after %d attempt(s))", err, len(attempts))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, attempts, fmt.Errorf("%w: %w (after %d attempt(s))", ErrWebhookUnavailable, context.Cause(ctx), len(attempts))
		case <-t.C:
		}
		backoff *= 2
	}
}

// attempt makes one call. It returns the 2xx body, or the error and
// whether another attempt may succeed.
func (a *Allocator) attempt(ctx context.Context, wh Webhook, body []byte) (raw []byte, at Attempt, retriable bool, err error) {
	at.Start = time.Now()
	defer func() {
		at.Duration = time.Since(at.Start)
		if err != nil {
			at.Error = err.Error()
		}
	}()
	actx, cancel := context.WithTimeout(ctx, wh.Timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(actx, http.MethodPost, wh.URL, bytes.NewReader(body))
	if err != nil {
		return nil, at, false, fmt.Errorf("%w: %v", registry.ErrInvalid, redactErr(err, wh.URL))
	}
	for k, v := range wh.Header {
		hreq.Header[k] = append([]string(nil), v...)
	}
	hreq.Header.Set("Content-Type", "application/json; charset=utf-8")
	hreq.Header.Set("Accept", "application/json")
	if wh.APIKey != "" {
		hreq.Header.Set(wh.APIKeyHeader, wh.APIKey)
	}
	resp, err := a.client.Do(hreq)
	if err != nil {
		if actx.Err() != nil && ctx.Err() == nil {
			return nil, at, true, fmt.Errorf("%w: no answer within %v", ErrWebhookUnavailable, wh.Timeout)
		}
		return nil, at, true, fmt.Errorf("%w: %v", ErrWebhookUnavailable, redactErr(err, wh.URL))
	}
	defer resp.Body.Close()
	at.Status = resp.StatusCode
	limit := a.opts.MaxResponseBytes
	raw, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return nil, at, true, fmt.Errorf("%w: HTTP status %d%s", ErrWebhookUnavailable, resp.StatusCode, excerpt(raw))
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, at, false, fmt.Errorf("%w: HTTP status %d%s", ErrWebhookBadAnswer, resp.StatusCode, excerpt(raw))
	case err != nil:
		if actx.Err() != nil && ctx.Err() == nil {
			return nil, at, true, fmt.Errorf("%w: the answer did not arrive within %v", ErrWebhookUnavailable, wh.Timeout)
		}
		return nil, at, true, fmt.Errorf("%w: reading the answer: %v", ErrWebhookUnavailable, redactErr(err, wh.URL))
	case int64(len(raw)) > limit:
		return nil, at, false, fmt.Errorf("%w: the answer exceeds %d bytes", ErrWebhookBadAnswer, limit)
	}
	return raw, at, false, nil
}

// redactErr rewrites the URL a *url.Error carries (net/http strips only
// the password, not the query holding the key).
func redactErr(err error, raw string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: redactURL(raw), Err: ue.Err}
	}
	return err
}

// excerpt quotes the start of an error body, for the audit trail.
func excerpt(b []byte) string {
	const max = 200
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	if len(s) > max {
		s = s[:max] + "…"
	}
	return ": " + strconv.Quote(s)
}

// Wire types of the AllocationRequest.

type allocationRequest struct {
	IndividualEnrollment *enrollmentRecord `json:"individualEnrollment,omitempty"`
	EnrollmentGroup      *enrollmentRecord `json:"enrollmentGroup,omitempty"`
	DeviceRuntimeContext runtimeContext    `json:"deviceRuntimeContext"`
	LinkedHubs           []string          `json:"linkedHubs"`
}

type runtimeContext struct {
	RegistrationID        string           `json:"registrationId"`
	CurrentIoTHubHostName string           `json:"currentIotHubHostName,omitempty"`
	CurrentDeviceID       string           `json:"currentDeviceId,omitempty"`
	SymmetricKey          *struct{}        `json:"symmetricKey,omitempty"`
	X509                  *x509Attestation `json:"x509,omitempty"`
	TPM                   *tpmAttestation  `json:"tpm,omitempty"`
	Payload               json.RawMessage  `json:"payload,omitempty"`
}

// x509Attestation is DPS's X509Attestation shape with the certificate's
// info only.
type x509Attestation struct {
	ClientCertificates struct {
		Primary struct {
			Info *X509CertificateInfo `json:"info"`
		} `json:"primary"`
	} `json:"clientCertificates"`
}

type tpmAttestation struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

type enrollmentRecord struct {
	RegistrationID             string                     `json:"registrationId,omitempty"`
	EnrollmentGroupID          string                     `json:"enrollmentGroupId,omitempty"`
	DeviceID                   string                     `json:"deviceId,omitempty"`
	Attestation                recordAttestation          `json:"attestation"`
	Capabilities               capabilities               `json:"capabilities"`
	ETag                       string                     `json:"etag,omitempty"`
	ProvisioningStatus         string                     `json:"provisioningStatus"`
	ReprovisionPolicy          reprovisionPolicy          `json:"reprovisionPolicy"`
	InitialTwin                *twinState                 `json:"initialTwin,omitempty"`
	CreatedDateTimeUTC         string                     `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC     string                     `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string                     `json:"allocationPolicy"`
	IoTHubs                    []string                   `json:"iotHubs,omitempty"`
	CustomAllocationDefinition customAllocationDefinition `json:"customAllocationDefinition"`
}

type recordAttestation struct {
	Type string          `json:"type"`
	TPM  *tpmAttestation `json:"tpm,omitempty"`
}

type capabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

type reprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

type twinState struct {
	Tags       json.RawMessage `json:"tags,omitempty"`
	Properties *twinProperties `json:"properties,omitempty"`
}

type twinProperties struct {
	Desired json.RawMessage `json:"desired,omitempty"`
}

type customAllocationDefinition struct {
	WebhookURL string `json:"webhookUrl"`
	APIVersion string `json:"apiVersion"`
}

func buildRequest(req Request, wr *WebhookRequest, wh Webhook, cands []Hub) allocationRequest {
	out := allocationRequest{
		DeviceRuntimeContext: runtimeContext{
			RegistrationID:        req.RegistrationID,
			CurrentIoTHubHostName: req.CurrentHub,
			CurrentDeviceID:       req.CurrentDeviceID,
		},
		LinkedHubs: make([]string, len(cands)),
	}
	for i, h := range cands {
		out.LinkedHubs[i] = h.Name
	}
	if len(wr.Payload) > 0 {
		out.DeviceRuntimeContext.Payload = wr.Payload
	}
	rc := &out.DeviceRuntimeContext
	switch da := wr.Attestation; da.Type {
	case registry.AttestationSymmetricKey:
		rc.SymmetricKey = &struct{}{} // DPS sends it empty: keys are secrets
	case registry.AttestationX509:
		rc.X509 = &x509Attestation{}
		rc.X509.ClientCertificates.Primary.Info = da.X509
	case registry.AttestationTPM:
		if da.TPM != nil {
			rc.TPM = &tpmAttestation{EndorsementKey: da.TPM.EndorsementKey, StorageRootKey: da.TPM.StorageRootKey}
		} else {
			rc.TPM = &tpmAttestation{}
		}
	}
	def := customAllocationDefinition{WebhookURL: redactURL(wh.URL), APIVersion: wh.APIVersion}
	switch {
	case wr.IndividualEnrollment != nil:
		e := wr.IndividualEnrollment
		r := record(&e.EnrollmentPolicies, e.Version, e.CreatedAt, e.UpdatedAt, def)
		r.RegistrationID, r.DeviceID = e.RegistrationID, e.DeviceID
		r.Attestation.Type = string(e.Attestation.Type)
		if t := e.Attestation.TPM; t != nil {
			r.Attestation.TPM = &tpmAttestation{EndorsementKey: t.EndorsementKey, StorageRootKey: t.StorageRootKey}
		}
		out.IndividualEnrollment = r
	case wr.EnrollmentGroup != nil:
		g := wr.EnrollmentGroup
		r := record(&g.EnrollmentPolicies, g.Version, g.CreatedAt, g.UpdatedAt, def)
		r.EnrollmentGroupID = g.ID
		r.Attestation.Type = string(g.Attestation.Type)
		out.EnrollmentGroup = r
	}
	return out
}

// record renders the policies shared by enrollments and groups in DPS's
// enrollment record form.
func record(p *registry.EnrollmentPolicies, version int64, created, updated time.Time, def customAllocationDefinition) *enrollmentRecord {
	r := &enrollmentRecord{
		ProvisioningStatus: string(p.Status),
		AllocationPolicy:   string(registry.AllocationCustom),
		IoTHubs:            p.IoTHubs,
		// DPS's etags are quoted opaque strings; the version is ours.
		ETag:                       strconv.Quote(strconv.FormatInt(version, 10)),
		CustomAllocationDefinition: def,
	}
	switch p.ReprovisionPolicy {
	case registry.EnrollmentReprovisionReset:
		r.ReprovisionPolicy = reprovisionPolicy{UpdateHubAssignment: true}
	case registry.EnrollmentReprovisionMigrate:
		r.ReprovisionPolicy = reprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
	}
	if !created.IsZero() {
		r.CreatedDateTimeUTC = created.UTC().Format(time.RFC3339Nano)
	}
	if !updated.IsZero() {
		r.LastUpdatedDateTimeUTC = updated.UTC().Format(time.RFC3339Nano)
	}
	t := p.InitialTwin
	if len(t.Tags) > 0 || len(t.DesiredProperties) > 0 {
		r.InitialTwin = &twinState{Tags: t.Tags}
		if len(t.DesiredProperties) > 0 {
			r.InitialTwin.Properties = &twinProperties{Desired: t.DesiredProperties}
		}
	}
	return r
}

// answer is a parsed AllocationResponse.
type answer struct {
	Hub         string
	InitialTwin *registry.InitialTwin
	Payload     json.RawMessage
}

// parseAnswer reads an AllocationResponse. Field names match without
// regard to case (encoding/json's rule), which also accepts the
// "iotHubHostname" spelling of DPS's documentation table. A null or absent
// initialTwin or payload means none; present, tags and desired properties
// must be objects and each part fits registry.MaxTwinJSON.
func parseAnswer(raw []byte) (answer, error) {
	var wire struct {
		IoTHubHostName *string         `json:"iotHubHostName"`
		InitialTwin    json.RawMessage `json:"initialTwin"`
		Payload        json.RawMessage `json:"payload"`
	}
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return answer{}, fmt.Errorf("%w: the answer is not a JSON object", ErrWebhookBadAnswer)
	}
	if err := json.Unmarshal(t, &wire); err != nil {
		return answer{}, fmt.Errorf("%w: the answer is not the expected JSON: %v", ErrWebhookBadAnswer, err)
	}
	if wire.IoTHubHostName == nil || strings.TrimSpace(*wire.IoTHubHostName) == "" {
		return answer{}, fmt.Errorf("%w: the answer names no iotHubHostName", ErrWebhookBadAnswer)
	}
	ans := answer{Hub: strings.TrimSpace(*wire.IoTHubHostName)}
	if !isNull(wire.InitialTwin) {
		twin, err := parseTwin(wire.InitialTwin)
		if err != nil {
			return answer{}, err
		}
		ans.InitialTwin = twin
	}
	if !isNull(wire.Payload) {
		if len(wire.Payload) > registry.MaxTwinJSON {
			return answer{}, fmt.Errorf("%w: the payload exceeds %d bytes", ErrWebhookBadAnswer, registry.MaxTwinJSON)
		}
		ans.Payload = append(json.RawMessage(nil), wire.Payload...)
	}
	return ans, nil
}

func parseTwin(raw json.RawMessage) (*registry.InitialTwin, error) {
	var wire struct {
		Tags       json.RawMessage `json:"tags"`
		Properties json.RawMessage `json:"properties"`
	}
	if raw[0] != '{' {
		return nil, fmt.Errorf("%w: initialTwin is not a JSON object", ErrWebhookBadAnswer)
	}
	if err := json.Unmarshal(raw, &wire); err != nil {
		return nil, fmt.Errorf("%w: initialTwin: %v", ErrWebhookBadAnswer, err)
	}
	twin := &registry.InitialTwin{}
	var err error
	if twin.Tags, err = twinObject("initialTwin.tags", wire.Tags); err != nil {
		return nil, err
	}
	if !isNull(wire.Properties) {
		var props struct {
			Desired json.RawMessage `json:"desired"`
		}
		if wire.Properties[0] != '{' {
			return nil, fmt.Errorf("%w: initialTwin.properties is not a JSON object", ErrWebhookBadAnswer)
		}
		if err := json.Unmarshal(wire.Properties, &props); err != nil {
			return nil, fmt.Errorf("%w: initialTwin.properties: %v", ErrWebhookBadAnswer, err)
		}
		if twin.DesiredProperties, err = twinObject("initialTwin.properties.desired", props.Desired); err != nil {
			return nil, err
		}
	}
	return twin, nil
}

// twinObject checks a part of the twin: absent or null gives nil, else a
// JSON object within registry.MaxTwinJSON, copied.
func twinObject(what string, raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] != '{' {
		return nil, fmt.Errorf("%w: %s is not a JSON object", ErrWebhookBadAnswer, what)
	}
	if len(raw) > registry.MaxTwinJSON {
		return nil, fmt.Errorf("%w: %s exceeds %d bytes", ErrWebhookBadAnswer, what, registry.MaxTwinJSON)
	}
	return append(json.RawMessage(nil), raw...), nil
}

// isNull: a RawMessage field is empty when absent and "null" when null;
// json.Unmarshal has already trimmed it.
func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }
