// Package api serves zerotouch's management REST API under /api/: device
// profiles, devices, credentials, bulk import, audit events, API keys, and
// what connected devices report and receive: connection state, telemetry,
// attributes and RPC.
// The device-facing API under /api/v1/ belongs to the dialects, not here.
//
// Every route except GET /api/openapi.yaml needs "Authorization: Bearer
// <api key>". Roles are ordered viewer < oem < operator < admin and each
// route names the least role it needs (see routes):
//
//	viewer    reads everything except API keys
//	oem       viewer, plus enabling and disabling devices and setting their
//	          shared and server attributes (activation)
//	operator  oem, plus every other write on profiles, devices and
//	          credentials, and RPC to devices
//	admin     operator, plus listing, creating and deleting API keys
//
// Records are always read and written in the organisation of the API key.
// Every successful write, and every RPC request sent towards a device
// (answered or not), is recorded as an audit event whose actor is
// "api-key:<id>". The wire contract is documented in openapi.yaml, served at
// GET /api/openapi.yaml; a test keeps it equal to the route table.
package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/device"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// Options configure the handler returned by New.
type Options struct {
	// Store holds every record; required.
	Store registry.Store
	// Logger receives server-side failures; nil discards them.
	Logger *slog.Logger
	// Devices serves the routes about connected devices (state,
	// telemetry, attributes, RPC); nil answers them 503, for a node that
	// does not run the device hub.
	Devices *device.Service
	// Certificates issues and revokes device certificates from the
	// built-in CA; nil answers those routes 503.
	Certificates *provision.Certificates
	// BuiltinHub returns this node's own hub (name, weight, region), which
	// GET /api/hubs lists first and which cannot be registered, changed
	// or deleted; nil lists none.
	BuiltinHub func() allocate.Hub
}

// New returns the management API handler. Mount it at "/api/" without
// stripping the prefix: it matches full paths, and answers a JSON 404 for
// any /api/ path it does not serve.
func New(o Options) http.Handler {
	s := &server{
		store:       o.Store,
		devices:     o.Devices,
		certs:       o.Certificates,
		builtin:     o.BuiltinHub,
		log:         cmp.Or(o.Logger, slog.New(slog.DiscardHandler)),
		mux:         http.NewServeMux(),
		importLimit: maxImportBody,
	}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.method+" "+rt.pattern, s.handle(rt))
	}
	return s
}

type server struct {
	store   registry.Store
	devices *device.Service         // nil: telemetry is not enabled on this node
	certs   *provision.Certificates // nil: no built-in CA on this node
	builtin func() allocate.Hub     // nil: no built-in hub to list
	log     *slog.Logger
	mux     *http.ServeMux
	// importLimit caps a CSV import body (a field so tests can lower it).
	importLimit int64
}

// role is the rank of an API key role; a route needs at least its role.
type role int

const (
	rolePublic role = iota // no API key needed
	roleViewer
	roleOEM
	roleOperator
	roleAdmin
)

// parseRole ranks a stored role name; an unknown name ranks below viewer.
func parseRole(name string) role {
	switch name {
	case registry.RoleViewer:
		return roleViewer
	case registry.RoleOEM:
		return roleOEM
	case registry.RoleOperator:
		return roleOperator
	case registry.RoleAdmin:
		return roleAdmin
	}
	return rolePublic
}

func (r role) String() string {
	switch r {
	case roleViewer:
		return registry.RoleViewer
	case roleOEM:
		return registry.RoleOEM
	case roleOperator:
		return registry.RoleOperator
	case roleAdmin:
		return registry.RoleAdmin
	}
	return "public"
}

// handlerFunc serves one route; key is the caller's API key (nil on public
// routes). A returned error is written by writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error

type route struct {
	method  string
	pattern string
	min     role
	handle  handlerFunc
}

// routes is the one route table: the mux, the role checks and the OpenAPI
// test all read it.
func (s *server) routes() []route {
	return []route{
		{http.MethodGet, "/api/openapi.yaml", rolePublic, s.openAPI},

		{http.MethodGet, "/api/profiles", roleViewer, s.listProfiles},
		{http.MethodPost, "/api/profiles", roleOperator, s.createProfile},
		{http.MethodGet, "/api/profiles/{id}", roleViewer, s.getProfile},
		{http.MethodPatch, "/api/profiles/{id}", roleOperator, s.updateProfile},
		{http.MethodDelete, "/api/profiles/{id}", roleOperator, s.deleteProfile},
		{http.MethodPost, "/api/profiles/{id}/rotate-secret", roleOperator, s.rotateProfileSecret},

		{http.MethodGet, "/api/devices", roleViewer, s.listDevices},
		{http.MethodPost, "/api/devices", roleOperator, s.createDevice},
		{http.MethodPost, "/api/devices/import", roleOperator, s.importDevices},
		{http.MethodGet, "/api/devices/{id}", roleViewer, s.getDevice},
		{http.MethodDelete, "/api/devices/{id}", roleOperator, s.deleteDevice},
		{http.MethodPost, "/api/devices/{id}/enable", roleOEM, s.enableDevice},
		{http.MethodPost, "/api/devices/{id}/disable", roleOEM, s.disableDevice},
		{http.MethodGet, "/api/devices/{id}/credentials", roleViewer, s.listCredentials},
		{http.MethodGet, "/api/devices/{id}/state", roleViewer, s.deviceState},
		{http.MethodGet, "/api/devices/{id}/telemetry", roleViewer, s.queryTelemetry},
		{http.MethodGet, "/api/devices/{id}/telemetry/latest", roleViewer, s.latestTelemetry},
		{http.MethodGet, "/api/devices/{id}/attributes", roleViewer, s.getAttributes},
		{http.MethodPut, "/api/devices/{id}/attributes/{scope}", roleOEM, s.setAttributes},
		{http.MethodDelete, "/api/devices/{id}/attributes/{scope}", roleOEM, s.deleteAttributes},
		{http.MethodPost, "/api/devices/{id}/rpc", roleOperator, s.callDevice},
		{http.MethodPost, "/api/devices/{id}/messages", roleOperator, s.sendMessage},
		{http.MethodGet, "/api/devices/{id}/certificates", roleViewer, s.listCertificates},
		{http.MethodPost, "/api/devices/{id}/certificates", roleOperator, s.issueCertificate},
		{http.MethodPost, "/api/credentials/{id}/revoke", roleOperator, s.revokeCredential},

		{http.MethodGet, "/api/ca", roleViewer, s.getCA},
		{http.MethodGet, "/api/certificates", roleViewer, s.listCertificates},
		{http.MethodGet, "/api/certificates/{serial}", roleViewer, s.getCertificate},
		{http.MethodPost, "/api/certificates/{serial}/revoke", roleOperator, s.revokeCertificate},

		{http.MethodGet, "/api/idscope", roleViewer, s.getIDScope},
		{http.MethodGet, "/api/enrollments", roleViewer, s.listEnrollments},
		{http.MethodPost, "/api/enrollments", roleOperator, s.createEnrollment},
		{http.MethodGet, "/api/enrollments/{registrationId}", roleViewer, s.getEnrollment},
		{http.MethodPatch, "/api/enrollments/{registrationId}", roleOEM, s.updateEnrollment},
		{http.MethodDelete, "/api/enrollments/{registrationId}", roleOperator, s.deleteEnrollment},
		{http.MethodPost, "/api/enrollments/{registrationId}/enable", roleOEM, s.enableEnrollment},
		{http.MethodPost, "/api/enrollments/{registrationId}/disable", roleOEM, s.disableEnrollment},
		{http.MethodGet, "/api/enrollment-groups", roleViewer, s.listEnrollmentGroups},
		{http.MethodPost, "/api/enrollment-groups", roleOperator, s.createEnrollmentGroup},
		{http.MethodGet, "/api/enrollment-groups/{id}", roleViewer, s.getEnrollmentGroup},
		{http.MethodPatch, "/api/enrollment-groups/{id}", roleOEM, s.updateEnrollmentGroup},
		{http.MethodDelete, "/api/enrollment-groups/{id}", roleOperator, s.deleteEnrollmentGroup},
		{http.MethodPost, "/api/enrollment-groups/{id}/enable", roleOEM, s.enableEnrollmentGroup},
		{http.MethodPost, "/api/enrollment-groups/{id}/disable", roleOEM, s.disableEnrollmentGroup},
		{http.MethodPost, "/api/enrollment-groups/{id}/derive-key", roleOperator, s.deriveDeviceKey},
		{http.MethodPost, "/api/enrollment-groups/{id}/verification-code", roleOperator, s.generateVerificationCode},
		{http.MethodPost, "/api/enrollment-groups/{id}/verify", roleOperator, s.verifyGroupCA},

		{http.MethodGet, "/api/hubs", roleViewer, s.listHubs},
		{http.MethodPost, "/api/hubs", roleOperator, s.createHub},
		{http.MethodGet, "/api/hubs/{name}", roleViewer, s.getHub},
		{http.MethodPatch, "/api/hubs/{name}", roleOperator, s.updateHub},
		{http.MethodDelete, "/api/hubs/{name}", roleOperator, s.deleteHub},

		{http.MethodGet, "/api/audit", roleViewer, s.listAudit},

		{http.MethodGet, "/api/apikeys", roleAdmin, s.listAPIKeys},
		{http.MethodPost, "/api/apikeys", roleAdmin, s.createAPIKey},
		{http.MethodDelete, "/api/apikeys/{id}", roleAdmin, s.deleteAPIKey},
	}
}

// ServeHTTP answers unmatched paths and methods with JSON errors, and hands
// the rest to the mux.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	// The mux's own 404 or 405 handler: run it only to learn which.
	rec := &headerRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if allow := rec.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
		s.writeError(w, r, &httpError{http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow)})
		return
	}
	s.writeError(w, r, &httpError{http.StatusNotFound, CodeNotFound, fmt.Sprintf("no such API route: %s %s", r.Method, r.URL.Path)})
}

type headerRecorder struct{ header http.Header }

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(int)             {}

// handle wraps a route with authentication, the role check and error writing.
func (s *server) handle(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var key *registry.APIKey
		if rt.min > rolePublic {
			var err error
			if key, err = s.authenticate(r.Context(), r); err != nil {
				s.writeError(w, r, err)
				return
			}
			if parseRole(key.Role) < rt.min {
				s.writeError(w, r, &httpError{http.StatusForbidden, CodeForbidden,
					fmt.Sprintf("an API key with role %q may not %s %s (needs %s)", key.Role, rt.method, rt.pattern, rt.min)})
				return
			}
		}
		if err := rt.handle(w, r, key); err != nil {
			s.writeError(w, r, err)
		}
	})
}

func (s *server) authenticate(ctx context.Context, r *http.Request) (*registry.APIKey, error) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, &httpError{http.StatusUnauthorized, CodeUnauthorized, "missing API key: send \"Authorization: Bearer <api key>\""}
	}
	key, err := s.store.GetAPIKeyByHash(ctx, secret.LookupHash(token))
	if errors.Is(err, registry.ErrNotFound) {
		return nil, &httpError{http.StatusUnauthorized, CodeUnauthorized, "unknown API key"}
	}
	if err != nil {
		return nil, fmt.Errorf("looking up API key: %w", err)
	}
	return key, nil
}

// audit records a successful management write by key, or, with ev.Result
// set, a failed action on a device (an RPC it did not take or answer). The
// write is already done, so a failure to record it is logged, not returned.
func (s *server) audit(r *http.Request, key *registry.APIKey, ev registry.AuditEvent) {
	ev.OrgID = key.OrgID
	ev.Time = time.Now().UTC()
	ev.Actor = "api-key:" + key.ID
	ev.Result = cmp.Or(ev.Result, "success")
	ev.Source = clientIP(r)
	// Not r.Context(): a client that hangs up must not erase the trail.
	ctx := context.WithoutCancel(r.Context())
	if err := s.store.AppendAudit(ctx, ev); err != nil {
		s.log.ErrorContext(ctx, "recording audit event failed", "action", ev.Action, "actor", ev.Actor, "err", err)
	}
}

func clientIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
