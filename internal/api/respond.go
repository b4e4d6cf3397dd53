package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/telemetry"
)

// Error is the body of every error response.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes. One code per HTTP status, so a client may switch on either,
// except that 409 also has device-offline:
//
//	400 bad-request         the request is not well-formed: bad JSON, unknown
//	                        field, wrong JSON type, invalid UTF-8, bad query
//	                        parameter, malformed CSV header or syntax, an
//	                        invalid telemetry query, attribute or RPC request
//	                        (telemetry.ErrInvalid)
//	401 unauthorized        no API key, or an unknown one
//	403 forbidden           the key's role may not do this
//	404 not-found           no such route, or no such record in the key's organisation
//	405 method-not-allowed  the route exists for other methods (see Allow)
//	409 conflict            registry.ErrConflict: name or key taken, profile
//	                        still in use, credentials in use, a concurrent
//	                        change (stale version), the last admin key
//	409 device-offline      no live session of the device takes RPC requests
//	413 too-large           the body exceeds the route's limit
//	422 invalid             well-formed but breaks a domain rule
//	                        (registry.ErrInvalid, provision.ErrBadCredentials):
//	                        empty or over-long name, unknown strategy, bad
//	                        credentials, unknown referenced profile, invalid import rows
//	500 internal            anything else; details are logged, never returned
//	503 unavailable         this node does not serve telemetry (no device
//	                        hub), or its telemetry store is closing
//	504 rpc-timeout         the device did not answer an RPC request in time
const (
	CodeBadRequest       = "bad-request"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not-found"
	CodeMethodNotAllowed = "method-not-allowed"
	CodeConflict         = "conflict"
	CodeTooLarge         = "too-large"
	CodeInvalid          = "invalid"
	CodeInternal         = "internal"
	CodeDeviceOffline    = "device-offline"
	CodeUnavailable      = "unavailable"
	CodeRPCTimeout       = "rpc-timeout"
)

// httpError is an error that already knows its response.
type httpError struct {
	status int
	code   string
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, CodeBadRequest, fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{registry.ErrInvalid}, args...)...)
}

func tooLarge(limit int64) error {
	return &httpError{http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("request body exceeds %d bytes", limit)}
}

// notFound turns the store's ErrNotFound into a message naming what was
// looked for; other errors pass through.
func notFound(kind, id string, err error) error {
	if errors.Is(err, registry.ErrNotFound) {
		return &httpError{http.StatusNotFound, CodeNotFound, fmt.Sprintf("%s %q not found", kind, id)}
	}
	return err
}

// classify maps an error to its status and body; see the Code constants.
func classify(err error) (int, Error) {
	var he *httpError
	var mbe *http.MaxBytesError
	var ce *registry.ConflictError
	switch {
	case errors.As(err, &he):
		return he.status, Error{he.code, he.msg}
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, Error{CodeTooLarge, fmt.Sprintf("request body exceeds %d bytes", mbe.Limit)}
	case errors.As(err, &ce):
		return http.StatusConflict, Error{CodeConflict, ce.Error()}
	case errors.Is(err, registry.ErrConflict):
		return http.StatusConflict, Error{CodeConflict, err.Error()}
	case errors.Is(err, registry.ErrNotFound):
		return http.StatusNotFound, Error{CodeNotFound, err.Error()}
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, provision.ErrBadCredentials),
		errors.Is(err, pki.ErrBadCSR), errors.Is(err, pki.ErrBadProfile), errors.Is(err, pki.ErrBadKey):
		return http.StatusUnprocessableEntity, Error{CodeInvalid, domainMessage(err)}
	case errors.Is(err, telemetry.ErrInvalid):
		// A query or write the telemetry store or the device service
		// refused: the caller's input, like a bad query parameter.
		return http.StatusBadRequest, Error{CodeBadRequest, domainMessage(err)}
	case errors.Is(err, pki.ErrCAExpired):
		return http.StatusServiceUnavailable, Error{CodeUnavailable, err.Error()}
	case errors.Is(err, telemetry.ErrClosed), errors.Is(err, device.ErrShuttingDown):
		return http.StatusServiceUnavailable, Error{CodeUnavailable, "the server is shutting down; retry shortly"}
	}
	return http.StatusInternalServerError, Error{CodeInternal, "internal error; see the server log"}
}

// writeError is the one place error responses are written.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, body := classify(err)
	// Only faults: 503 and 504 say something about this node's setup or
	// a device, and are told to the caller.
	if status == http.StatusInternalServerError {
		s.log.ErrorContext(r.Context(), "management API request failed",
			"method", r.Method, "path", r.URL.Path, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="zerotouch"`)
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // an API answer, not HTML: keep "<" readable
	_ = enc.Encode(v)        // the status is sent; a failed write means the client left
}

// Body size limits. An import is one all-or-nothing transaction on the
// store's single writer, which provisioning waits behind while it runs:
// 16 MiB (about 400,000 short rows) keeps that wait in seconds. Larger
// fleets import in several files.
const (
	maxJSONBody   = 1 << 20
	maxImportBody = 16 << 20
	// importReadTimeout is how long an import upload may take.
	importReadTimeout = 10 * time.Minute
)

// limitBody caps r's body at limit bytes, refusing at once a request that
// announces a larger one.
func limitBody(w http.ResponseWriter, r *http.Request, limit int64) (io.Reader, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	return http.MaxBytesReader(w, r.Body, limit), nil
}

// decodeJSON reads one JSON value of at most maxJSONBody bytes into v,
// refusing invalid UTF-8 (which encoding/json would silently replace),
// unknown fields and trailing data.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeBody(w, r, v, false)
}

// decodeOptionalJSON is decodeJSON for a body that may be left out (v is
// then left as it is).
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeBody(w, r, v, true)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body, err := limitBody(w, r, maxJSONBody)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(mbe.Limit)
		}
		return badRequest("reading the request body: %v", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		if optional {
			return nil
		}
		return badRequest("the request body is empty; a JSON object is expected")
	}
	if !utf8.Valid(b) {
		return badRequest("the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("invalid JSON: %s", jsonMessage(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("invalid JSON: data after the JSON value")
	}
	return nil
}

// jsonMessage words a decoding error without Go type names.
func jsonMessage(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "the body"
		}
		return fmt.Sprintf("%s: expected %s, got %s", field, jsonKind(te.Type.Kind().String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func jsonKind(k string) string {
	switch k {
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "number"
	case "bool":
		return "boolean"
	}
	return k
}

// domainMessage drops the sentinel prefix ("invalid: ", "bad credentials: ")
// that the error code already says.
func domainMessage(err error) string {
	msg := err.Error()
	for _, sentinel := range []error{registry.ErrInvalid, provision.ErrBadCredentials, telemetry.ErrInvalid} {
		if errors.Is(err, sentinel) {
			msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
		}
	}
	return msg
}
