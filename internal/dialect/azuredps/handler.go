package azuredps

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/zerotouch/zerotouch/internal/provision"
)

// DefaultRetryAfter is the retry-after, in seconds, of an "assigning"
// answer: the registration is already decided when it is sent, so the
// device's poll is answered at once. DPS itself says 3.
const DefaultRetryAfter = 1

// Options configure a Handler.
type Options struct {
	Logger *slog.Logger
	// RetryAfter is the poll delay given with "assigning", in seconds;
	// 0 means DefaultRetryAfter, negative means 0 (poll at once).
	RetryAfter int
	// Now and TrackingID make answers reproducible in tests; nil means
	// the clock and random UUIDs.
	Now        func() time.Time
	TrackingID func() string
}

// Handler answers registrations over MQTT (HandleMQTT) and HTTPS
// (ServeHTTP).
type Handler struct {
	svc        *provision.Service
	log        *slog.Logger
	retryAfter int
	now        func() time.Time
	trackingID func() string
}

// NewHandler returns a Handler running registrations through svc.
func NewHandler(svc *provision.Service, o Options) *Handler {
	h := &Handler{svc: svc, log: o.Logger, retryAfter: o.RetryAfter, now: o.Now, trackingID: o.TrackingID}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case h.retryAfter == 0:
		h.retryAfter = DefaultRetryAfter
	case h.retryAfter < 0:
		h.retryAfter = 0
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.trackingID == nil {
		h.trackingID = uuid.NewString
	}
	return h
}

// Session is what a registration session's CONNECT and TLS handshake
// carried.
type Session struct {
	RemoteAddr, Username, Password string
	Certificates                   []*x509.Certificate
	// TLS is set for a session over TLS: registrations carry bearer
	// tokens and are refused in the clear.
	TLS bool
}

// answer is one answer, whatever the transport.
type answer struct {
	status     int
	retryAfter int
	body       []byte
}

// HandleMQTT answers one request of a registration session: the answer's
// topic and body, or an empty topic when the request cannot be answered
// (a topic without a request id).
func (h *Handler) HandleMQTT(ctx context.Context, s Session, topic string, payload []byte) (string, []byte) {
	t, err := ParseRequestTopic(topic)
	if err != nil {
		h.log.Debug("DPS request dropped", "remote", s.RemoteAddr, "error", err)
		return "", nil
	}
	req := provision.RegistrationRequest{Transport: "mqtt", Source: provision.SourceHost(s.RemoteAddr),
		SASToken: s.Password, Certificates: s.Certificates}
	var a answer
	u, err := ParseUsername(s.Username)
	if !s.TLS {
		a = h.refused(req, h.svc.RefuseRegistration(ctx, req, provision.ReasonBadCredentials,
			"DPS registrations are served over TLS only (the MQTTS listener): a token sent in the clear is given away"))
	} else if err != nil {
		a = h.refused(req, h.svc.RefuseRegistration(ctx, req, provision.ReasonBadRequest, err.Error()))
	} else {
		req.IDScope, req.RegistrationID = u.IDScope, u.RegistrationID
		if t.Kind == KindRegister {
			a = h.register(ctx, req, payload)
		} else {
			a = h.operation(ctx, req, t.OperationID)
		}
	}
	return ResponseTopic(a.status, t.RID, a.retryAfter), a.body
}

// register runs a registration whose body is body.
func (h *Handler) register(ctx context.Context, req provision.RegistrationRequest, body []byte) answer {
	r, err := DecodeRegisterRequest(body)
	if err == nil && r.RegistrationID != "" && !strings.EqualFold(r.RegistrationID, req.RegistrationID) {
		err = errors.New("the body's registrationId differs from the one the request is for")
	}
	if err != nil {
		return h.refused(req, h.svc.RefuseRegistration(ctx, req, provision.ReasonBadRequest, err.Error()))
	}
	req.Payload = r.Payload
	if r.TPM != nil {
		// TPM attestation: without a token, the first step, answered 401
		// with the key to sign one with.
		req.TPM = &provision.TPMEvidence{EndorsementKey: r.TPM.EndorsementKey, StorageRootKey: r.TPM.StorageRootKey}
		if req.SASToken == "" {
			ch, err := h.svc.ChallengeTPM(ctx, req)
			if err != nil {
				return h.refused(req, err)
			}
			return answer{status: http.StatusUnauthorized, body: TPMChallenge{AuthenticationKey: ch.AuthenticationKey, KeyName: ch.KeyName}.Encode()}
		}
	}
	res, err := h.svc.Register(ctx, req)
	if err != nil {
		return h.refused(req, err)
	}
	return answer{status: http.StatusAccepted, retryAfter: h.retryAfter, body: Assigning(res.Registration.OperationID).Encode()}
}

// operation answers a poll.
func (h *Handler) operation(ctx context.Context, req provision.RegistrationRequest, operationID string) answer {
	r, err := h.svc.Registration(ctx, req.IDScope, req.RegistrationID, operationID)
	if err != nil {
		if provision.ReasonOf(err) == provision.ReasonNotEnrolled {
			return answer{status: http.StatusNotFound, body: Refusal{ErrorCode: 404002}.Body(req.RegistrationID,
				"no such registration operation", h.trackingID(), h.now())}
		}
		return h.refused(req, err)
	}
	op := Assigned(r)
	if key, ok := h.svc.TPMAuthenticationKey(ctx, req.IDScope, req.RegistrationID); ok {
		op.RegistrationState.TPM = &TPMRegistrationResult{AuthenticationKey: key} // a TPM device's hub key
	}
	return answer{status: http.StatusOK, body: op.Encode()}
}

// refused encodes a refusal.
func (h *Handler) refused(req provision.RegistrationRequest, err error) answer {
	msg := "the server could not complete the request"
	var pe *provision.Error
	if errors.As(err, &pe) {
		msg = pe.Msg
	}
	reason := provision.ReasonOf(err)
	if public, ok := publicMessages[reason]; ok {
		// The detail stays in the audit trail.
		msg = public
	}
	f := RefusalOf(reason)
	return answer{status: f.Status, retryAfter: f.RetryAfter, body: f.Body(strings.ToLower(req.RegistrationID), msg, h.trackingID(), h.now())}
}

// publicMessages replace the pipeline's messages where they would tell a
// device that proved nothing which ID scopes and registration ids exist,
// or tell it about the allocation webhook's internals.
var publicMessages = map[provision.Reason]string{
	provision.ReasonNotEnrolled:           "Unauthorized: no enrollment accepts this registration's evidence",
	provision.ReasonBadKeyOrSecret:        "Unauthorized: no enrollment accepts this registration's evidence",
	provision.ReasonAllocationFailed:      "the device could not be assigned to an IoT hub; its operator can see why in the audit log",
	provision.ReasonAllocationUnavailable: "hub allocation is unavailable at the moment; retry later",
}

// IsPath reports whether path is one of the HTTPS device API's:
// /{idScope}/registrations/{registrationId}/register or
// /{idScope}/registrations/{registrationId}/operations/{operationId}.
func IsPath(path string) bool {
	_, ok := parsePath(path)
	return ok
}

type httpPath struct {
	idScope, registrationID, operationID string
	register                             bool
}

func parsePath(path string) (httpPath, bool) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch {
	case len(parts) == 4 && parts[1] == "registrations" && parts[3] == "register":
		return httpPath{idScope: parts[0], registrationID: parts[2], register: true}, parts[0] != "" && parts[2] != ""
	case len(parts) == 5 && parts[1] == "registrations" && parts[3] == "operations":
		return httpPath{idScope: parts[0], registrationID: parts[2], operationID: parts[4]}, parts[0] != "" && parts[2] != "" && parts[4] != ""
	}
	return httpPath{}, false
}

// ServeHTTP serves the HTTPS device API: PUT …/register and
// GET …/operations/{id}, authenticated by "Authorization:
// SharedAccessSignature …" or the TLS client certificate.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := provision.RegistrationRequest{Transport: "https", Source: provision.SourceHost(r.RemoteAddr),
		SASToken: r.Header.Get("Authorization")}
	if r.TLS != nil {
		req.Certificates = r.TLS.PeerCertificates
	}
	p, ok := parsePath(r.URL.Path)
	var a answer
	switch {
	case !ok:
		a = answer{status: http.StatusNotFound, body: Refusal{ErrorCode: 404002}.Body("", "no such DPS resource", h.trackingID(), h.now())}
	case p.register && r.Method != http.MethodPut, !p.register && r.Method != http.MethodGet:
		want := http.MethodGet
		if p.register {
			want = http.MethodPut
		}
		w.Header().Set("Allow", want)
		a = answer{status: http.StatusMethodNotAllowed, body: Refusal{ErrorCode: 405000}.Body("", r.Method+" is not allowed here (use "+want+")", h.trackingID(), h.now())}
	default:
		req.IDScope, req.RegistrationID = p.idScope, p.registrationID
		if _, err := CheckAPIVersion(r.URL.Query().Get("api-version")); err != nil {
			a = h.refused(req, h.svc.RefuseRegistration(r.Context(), req, provision.ReasonBadRequest, err.Error()))
		} else if p.register {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestSize))
			if err != nil {
				a = h.refused(req, h.svc.RefuseRegistration(r.Context(), req, provision.ReasonBadRequest, "the request body could not be read: "+err.Error()))
			} else {
				a = h.register(r.Context(), req, body)
			}
		} else {
			a = h.operation(r.Context(), req, p.operationID)
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if a.retryAfter > 0 || a.status == http.StatusAccepted {
		w.Header().Set("Retry-After", strconv.Itoa(a.retryAfter))
	}
	w.WriteHeader(a.status)
	w.Write(a.body)
}
