package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Azure DPS enrollments: individual enrollments (/api/enrollments), enrollment
// groups (/api/enrollment-groups), the organisation's ID scope, and the device
// keys of symmetric-key groups.
//
// Registration ids and group ids are case-insensitive: any case is accepted
// in paths and bodies, and they are stored and answered in lower case.
//
// Symmetric keys are secrets: answers show them to operator and admin keys
// only; for viewer and oem keys attestation.symmetricKey is left out. They
// never appear in audit events or logs.
//
// Every record carries a version, also sent as the ETag header ("3"). A
// change may name the version it is based on, in an If-Match header (a
// mismatch is 412) or in a "version" field (a mismatch is 409); either way
// a change is written only at the version read at the start of the request,
// so a write that gets in between is never overwritten.

// CodePreconditionFailed is the error code of 412: If-Match names a version
// the record is no longer at.
const CodePreconditionFailed = "precondition-failed"

// DefaultEnrollmentReprovisionPolicy is the reprovisioning policy of an
// enrollment created without one, DPS's default.
const DefaultEnrollmentReprovisionPolicy = registry.EnrollmentReprovisionMigrate

// symmetricKeyBytes is the length of generated symmetric keys, as DPS's.
const symmetricKeyBytes = 64

// IDScope is the answer of GET /api/idscope.
type IDScope struct {
	IDScope string `json:"idScope"`
}

// CreateEnrollmentRequest is the body of POST /api/enrollments. Status
// defaults to enabled (a factory station sends disabled), ReprovisionPolicy
// to reprovision-and-migrate. A symmetricKey attestation without keys (or
// with no symmetricKey object at all) gets two generated keys, returned in
// the answer.
type CreateEnrollmentRequest struct {
	RegistrationID string               `json:"registrationId"`
	DeviceID       string               `json:"deviceId,omitempty"`
	Attestation    registry.Attestation `json:"attestation"`
	registry.EnrollmentPolicies
}

// CreateEnrollmentGroupRequest is the body of POST /api/enrollment-groups,
// with the defaults of CreateEnrollmentRequest.
type CreateEnrollmentGroupRequest struct {
	ID          string                    `json:"enrollmentGroupId"`
	Attestation registry.GroupAttestation `json:"attestation"`
	registry.EnrollmentPolicies
}

// ActivationSettings are the settings a machine maker (oem key) may change
// when it activates units: absent fields are left unchanged.
type ActivationSettings struct {
	// InitialTwin replaces the initial twin's tags and/or desired
	// properties: an object replaces, null removes, absent keeps.
	InitialTwin *InitialTwinUpdate `json:"initialTwin,omitempty"`
	// Payload replaces the custom payload; null removes it.
	Payload json.RawMessage `json:"payload,omitempty"`
	// IoTHubs replaces the hub list; [] empties it (all hubs).
	IoTHubs *[]string `json:"iotHubs,omitempty"`
	// AllocationPolicy sets the policy; "" is the instance's default.
	AllocationPolicy *registry.AllocationPolicy `json:"allocationPolicy,omitempty"`
}

// InitialTwinUpdate changes the parts of an initial twin it names.
type InitialTwinUpdate struct {
	Tags              json.RawMessage `json:"tags,omitempty"`
	DesiredProperties json.RawMessage `json:"desiredProperties,omitempty"`
}

// UpdateEnrollmentRequest is the body of PATCH /api/enrollments/{id}:
// absent fields are left unchanged. An oem key may send only status and
// the ActivationSettings; the other fields need an operator key.
type UpdateEnrollmentRequest struct {
	DeviceID *string `json:"deviceId,omitempty"`
	// Attestation replaces the attestation; a symmetricKey one without
	// keys gets new generated keys.
	Attestation       *registry.Attestation                 `json:"attestation,omitempty"`
	ReprovisionPolicy *registry.EnrollmentReprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	Status            *registry.EnrollmentStatus            `json:"status,omitempty"`
	ActivationSettings
	// Version, when given, is the version the change is based on: if the
	// enrollment has been written since, the answer is 409.
	Version *int64 `json:"version,omitempty"`
}

// UpdateEnrollmentGroupRequest is UpdateEnrollmentRequest for groups.
type UpdateEnrollmentGroupRequest struct {
	Attestation       *registry.GroupAttestation            `json:"attestation,omitempty"`
	ReprovisionPolicy *registry.EnrollmentReprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	Status            *registry.EnrollmentStatus            `json:"status,omitempty"`
	ActivationSettings
	Version *int64 `json:"version,omitempty"`
}

// ActivateEnrollmentRequest is the optional body of the enable and disable
// routes: activation settings applied in the same write as the status.
type ActivateEnrollmentRequest struct {
	ActivationSettings
	Version *int64 `json:"version,omitempty"`
}

// DeriveDeviceKeyRequest is the body of POST
// /api/enrollment-groups/{id}/derive-key.
type DeriveDeviceKeyRequest struct {
	RegistrationID string `json:"registrationId"`
}

// DerivedDeviceKey is a device's key in a symmetric-key enrollment group:
// base64(HMAC-SHA256(group key, registration id)), from the group's primary
// key, and from its secondary key when it has one.
type DerivedDeviceKey struct {
	// RegistrationID is the id the keys are derived from, in lower case:
	// the device must register with this id.
	RegistrationID     string `json:"registrationId"`
	DeviceKey          string `json:"deviceKey"`
	SecondaryDeviceKey string `json:"secondaryDeviceKey,omitempty"`
}

// activationFields names the fields an oem key may change, for messages.
const activationFields = "status, initialTwin, payload, iotHubs and allocationPolicy"

// enrollmentKind gives the generic handlers below what differs between
// individual enrollments and enrollment groups (and hubs, see hubKind).
type enrollmentKind[T any] struct {
	what   string // "enrollment", "enrollment group"
	action string // audit action prefix: "enrollment", "enrollment-group"
	param  string // path parameter of the id
	path   string // the collection's path; a record's is path/id
	create func(ctx context.Context, v *T) error
	get    func(ctx context.Context, orgID, id string) (*T, error)
	list   func(ctx context.Context, orgID string, opts registry.ListOptions) ([]T, string, error)
	update func(ctx context.Context, v *T) error
	delete func(ctx context.Context, orgID, id string) error
	id     func(*T) string
	policy func(*T) *registry.EnrollmentPolicies
	ver    func(*T) int64
	// hideKeys removes the symmetric keys from v.
	hideKeys func(*T)
}

func (s *server) enrollments() *enrollmentKind[registry.Enrollment] {
	return &enrollmentKind[registry.Enrollment]{
		what: "enrollment", action: "enrollment", param: "registrationId", path: "/api/enrollments",
		create: s.store.CreateEnrollment, get: s.store.GetEnrollment, list: s.store.ListEnrollments,
		update: s.store.UpdateEnrollment, delete: s.store.DeleteEnrollment,
		id:     func(e *registry.Enrollment) string { return e.RegistrationID },
		policy: func(e *registry.Enrollment) *registry.EnrollmentPolicies { return &e.EnrollmentPolicies },
		ver:    func(e *registry.Enrollment) int64 { return e.Version },
		hideKeys: func(e *registry.Enrollment) {
			e.Attestation.SymmetricKey = nil
		},
	}
}

func (s *server) enrollmentGroups() *enrollmentKind[registry.EnrollmentGroup] {
	return &enrollmentKind[registry.EnrollmentGroup]{
		what: "enrollment group", action: "enrollment-group", param: "id", path: "/api/enrollment-groups",
		create: s.store.CreateEnrollmentGroup, get: s.store.GetEnrollmentGroup, list: s.store.ListEnrollmentGroups,
		update: s.store.UpdateEnrollmentGroup, delete: s.store.DeleteEnrollmentGroup,
		id:     func(g *registry.EnrollmentGroup) string { return g.ID },
		policy: func(g *registry.EnrollmentGroup) *registry.EnrollmentPolicies { return &g.EnrollmentPolicies },
		ver:    func(g *registry.EnrollmentGroup) int64 { return g.Version },
		hideKeys: func(g *registry.EnrollmentGroup) {
			g.Attestation.SymmetricKey = nil
		},
	}
}

// canSeeKeys tells whether answers to key show symmetric keys.
func canSeeKeys(key *registry.APIKey) bool { return parseRole(key.Role) >= roleOperator }

// asciiLower lower-cases ASCII letters only: strings.ToLower would also
// map look-alikes such as the Kelvin sign to 'k', turning an invalid id
// into a valid one.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, s)
}

// load reads the record the request's path names. An id that cannot exist
// is a 404 without asking the store.
func (k *enrollmentKind[T]) load(r *http.Request, key *registry.APIKey) (*T, error) {
	raw := r.PathValue(k.param)
	id := asciiLower(raw)
	if registry.ValidateRegistrationID(k.what+" id", id) != nil {
		return nil, notFound(k.what, raw, registry.ErrNotFound)
	}
	v, err := k.get(r.Context(), key.OrgID, id)
	return v, notFound(k.what, id, err)
}

// answer writes v with its ETag, without symmetric keys unless key may
// see them.
func (k *enrollmentKind[T]) answer(w http.ResponseWriter, key *registry.APIKey, status int, v *T) {
	out := *v
	if !canSeeKeys(key) {
		k.hideKeys(&out)
	}
	w.Header().Set("ETag", etag(k.ver(&out)))
	writeJSON(w, status, &out)
}

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// ifMatch tells whether an If-Match header value names version: a list of
// entity tags ("3", W/"3" or a bare 3), or "*".
func ifMatch(h string, version int64) bool {
	want := strconv.FormatInt(version, 10)
	for t := range strings.SplitSeq(h, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || strings.TrimSuffix(strings.TrimPrefix(t, `"`), `"`) == want {
			return true
		}
	}
	return false
}

// precondition refuses a change based on another version than cur: the
// If-Match header's (412) or the body's version field (409).
func (k *enrollmentKind[T]) precondition(r *http.Request, cur *T, version *int64) error {
	v := k.ver(cur)
	if h := r.Header.Get("If-Match"); h != "" && !ifMatch(h, v) {
		return &httpError{http.StatusPreconditionFailed, CodePreconditionFailed,
			fmt.Sprintf("%s %q is at version %d, If-Match names %s: read it again and reapply the change", k.what, k.id(cur), v, h)}
	}
	if version != nil && *version != v {
		return conflict("%s %q is at version %d, the change is based on version %d: read it again and reapply the change",
			k.what, k.id(cur), v, *version)
	}
	return nil
}

// modify reads the record of the request's path, checks the preconditions,
// lets change edit it (returning the names of the fields it changed) and
// writes it back, only if it is still at the version read. A change that
// changes nothing writes nothing and records no event.
func modify[T any](s *server, k *enrollmentKind[T], w http.ResponseWriter, r *http.Request, key *registry.APIKey,
	version *int64, action, verb string, change func(v *T) ([]string, error)) error {
	return modifyAnswer(s, k, w, r, key, version, action, verb, change, func(v *T) { k.answer(w, key, http.StatusOK, v) })
}

// modifyAnswer is modify with its own answer, written with the record as
// it is after the change.
func modifyAnswer[T any](s *server, k *enrollmentKind[T], w http.ResponseWriter, r *http.Request, key *registry.APIKey,
	version *int64, action, verb string, change func(v *T) ([]string, error), answer func(v *T)) error {
	cur, err := k.load(r, key)
	if err != nil {
		return err
	}
	if err := k.precondition(r, cur, version); err != nil {
		return err
	}
	base := k.ver(cur)
	changed, err := change(cur)
	if err != nil {
		return err
	}
	if len(changed) == 0 {
		answer(cur)
		return nil
	}
	id := k.id(cur)
	if err := k.update(r.Context(), cur); err != nil {
		var ce *registry.ConflictError
		if errors.As(err, &ce) && k.changedSince(r, key, id, base) {
			if r.Header.Get("If-Match") != "" {
				return &httpError{http.StatusPreconditionFailed, CodePreconditionFailed,
					fmt.Sprintf("%s %q changed while it was being updated: read it again and reapply the change", k.what, id)}
			}
			return conflict("%s %q changed while it was being updated: read it again and reapply the change", k.what, id)
		}
		return notFound(k.what, id, err)
	}
	s.audit(r, key, registry.AuditEvent{Action: k.action + "." + action,
		Detail: verb + " " + k.what + " " + id + " (changed: " + strings.Join(changed, ", ") + ")"})
	answer(cur)
	return nil
}

// changedSince tells whether the record is no longer at version base: a
// conflict of the update was the version check, not a uniqueness rule.
func (k *enrollmentKind[T]) changedSince(r *http.Request, key *registry.APIKey, id string, base int64) bool {
	cur, err := k.get(r.Context(), key.OrgID, id)
	return err == nil && k.ver(cur) != base
}

// createEnrollmentOf ends the create route of every kind: it writes v, a
// new record the caller has decoded, defaulted and validated, records the
// event <action>.create with detail and answers v, 201 with its Location.
func createEnrollmentOf[T any](s *server, k *enrollmentKind[T], w http.ResponseWriter, r *http.Request, key *registry.APIKey,
	v *T, detail string) error {
	if err := k.create(r.Context(), v); err != nil {
		return err
	}
	s.audit(r, key, registry.AuditEvent{Action: k.action + ".create", Detail: detail})
	w.Header().Set("Location", k.path+"/"+k.id(v))
	k.answer(w, key, http.StatusCreated, v)
	return nil
}

func listEnrollmentsOf[T any](k *enrollmentKind[T], w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	opts, err := listOptions(r.URL.Query())
	if err != nil {
		return err
	}
	items, next, err := k.list(r.Context(), key.OrgID, opts)
	if err != nil {
		return err
	}
	if !canSeeKeys(key) {
		for i := range items {
			k.hideKeys(&items[i])
		}
	}
	writeJSON(w, http.StatusOK, newList(items, next))
	return nil
}

func getEnrollmentOf[T any](k *enrollmentKind[T], w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	v, err := k.load(r, key)
	if err != nil {
		return err
	}
	k.answer(w, key, http.StatusOK, v)
	return nil
}

func deleteEnrollmentOf[T any](s *server, k *enrollmentKind[T], w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	v, err := k.load(r, key)
	if err != nil {
		return err
	}
	if err := k.precondition(r, v, nil); err != nil { // If-Match, when sent
		return err
	}
	id := k.id(v)
	if err := k.delete(r.Context(), key.OrgID, id); err != nil {
		return notFound(k.what, id, err)
	}
	s.audit(r, key, registry.AuditEvent{Action: k.action + ".delete", Detail: "deleted " + k.what + " " + id})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// setEnrollmentStatus serves the enable and disable routes: the status and
// the optional body's activation settings, in one write.
func setEnrollmentStatus[T any](s *server, k *enrollmentKind[T], w http.ResponseWriter, r *http.Request, key *registry.APIKey, st registry.EnrollmentStatus) error {
	var req ActivateEnrollmentRequest
	if err := decodeOptionalJSON(w, r, &req); err != nil {
		return err
	}
	action, verb := "enable", "enabled"
	if st == registry.EnrollmentDisabled {
		action, verb = "disable", "disabled"
	}
	return modify(s, k, w, r, key, req.Version, action, verb, func(v *T) ([]string, error) {
		p := k.policy(v)
		changed := req.ActivationSettings.apply(p)
		if p.Status != st {
			p.Status = st
			changed = append([]string{"status"}, changed...)
		}
		return changed, nil
	})
}

// apply sets the settings given in a on p and returns the names of the
// fields it changed.
func (a *ActivationSettings) apply(p *registry.EnrollmentPolicies) []string {
	var changed []string
	setRaw := func(name string, dst *json.RawMessage, v json.RawMessage) {
		if len(v) == 0 {
			return
		}
		v = compactJSON(v)
		if string(v) == "null" {
			v = nil
		}
		if !bytes.Equal(compactJSON(*dst), v) {
			*dst = v
			changed = append(changed, name)
		}
	}
	if t := a.InitialTwin; t != nil {
		setRaw("initialTwin.tags", &p.InitialTwin.Tags, t.Tags)
		setRaw("initialTwin.desiredProperties", &p.InitialTwin.DesiredProperties, t.DesiredProperties)
	}
	setRaw("payload", &p.CustomPayload, a.Payload)
	if a.IoTHubs != nil && !slices.Equal(*a.IoTHubs, p.IoTHubs) {
		p.IoTHubs = slices.Clone(*a.IoTHubs)
		if len(p.IoTHubs) == 0 {
			p.IoTHubs = nil
		}
		changed = append(changed, "iotHubs")
	}
	if a.AllocationPolicy != nil && *a.AllocationPolicy != p.AllocationPolicy {
		p.AllocationPolicy = *a.AllocationPolicy
		changed = append(changed, "allocationPolicy")
	}
	return changed
}

// compactJSON returns v without insignificant spaces, or v as it is when
// it is not valid JSON (validation says so later).
func compactJSON(v json.RawMessage) json.RawMessage {
	if len(v) == 0 {
		return v
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return v
	}
	return b.Bytes()
}

// newSymmetricKey returns a generated key: 64 random bytes in base64, as DPS
// generates them.
func newSymmetricKey() string {
	b := make([]byte, symmetricKeyBytes)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.StdEncoding.EncodeToString(b)
}

// fillSymmetricKeys generates both keys of a symmetricKey attestation given
// without keys (or without its symmetricKey object).
func fillSymmetricKeys(t registry.AttestationType, k **registry.SymmetricKeyAttestation, others bool) {
	if t != registry.AttestationSymmetricKey || others {
		return
	}
	if *k == nil {
		*k = &registry.SymmetricKeyAttestation{}
	}
	if (*k).PrimaryKey == "" && (*k).SecondaryKey == "" {
		(*k).PrimaryKey, (*k).SecondaryKey = newSymmetricKey(), newSymmetricKey()
	}
}

func fillEnrollmentKeys(a *registry.Attestation) {
	fillSymmetricKeys(a.Type, &a.SymmetricKey, a.X509 != nil || a.TPM != nil)
}

func fillGroupKeys(a *registry.GroupAttestation) {
	fillSymmetricKeys(a.Type, &a.SymmetricKey, a.X509CA != nil)
}

// defaultPolicies fills the defaults of a create request.
func defaultPolicies(p *registry.EnrollmentPolicies) {
	p.Status = cmp.Or(p.Status, registry.EnrollmentEnabled)
	p.ReprovisionPolicy = cmp.Or(p.ReprovisionPolicy, DefaultEnrollmentReprovisionPolicy)
	p.InitialTwin.Tags = compactJSON(p.InitialTwin.Tags)
	p.InitialTwin.DesiredProperties = compactJSON(p.InitialTwin.DesiredProperties)
	p.CustomPayload = compactJSON(p.CustomPayload)
	if string(p.CustomPayload) == "null" {
		p.CustomPayload = nil
	}
}

// ID scope.

func (s *server) getIDScope(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	scope, err := s.store.IDScope(r.Context(), key.OrgID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, IDScope{IDScope: scope})
	return nil
}

// Individual enrollments.

func (s *server) createEnrollment(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req CreateEnrollmentRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	e := &registry.Enrollment{
		OrgID:              key.OrgID,
		RegistrationID:     asciiLower(req.RegistrationID),
		DeviceID:           req.DeviceID,
		Attestation:        req.Attestation,
		EnrollmentPolicies: req.EnrollmentPolicies,
	}
	defaultPolicies(&e.EnrollmentPolicies)
	fillEnrollmentKeys(&e.Attestation)
	if err := e.Validate(); err != nil {
		return err
	}
	return createEnrollmentOf(s, s.enrollments(), w, r, key, e,
		fmt.Sprintf("created enrollment %s (%s, %s)", e.RegistrationID, e.Attestation.Type, e.Status))
}

func (s *server) listEnrollments(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return listEnrollmentsOf(s.enrollments(), w, r, key)
}

func (s *server) getEnrollment(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return getEnrollmentOf(s.enrollments(), w, r, key)
}

func (s *server) deleteEnrollment(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return deleteEnrollmentOf(s, s.enrollments(), w, r, key)
}

func (s *server) enableEnrollment(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return setEnrollmentStatus(s, s.enrollments(), w, r, key, registry.EnrollmentEnabled)
}

func (s *server) disableEnrollment(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return setEnrollmentStatus(s, s.enrollments(), w, r, key, registry.EnrollmentDisabled)
}

// operatorOnly refuses, for a key below operator, a change of fields that
// are not activation settings.
func operatorOnly(key *registry.APIKey, what string, fields ...string) error {
	if parseRole(key.Role) >= roleOperator || len(fields) == 0 {
		return nil
	}
	return &httpError{http.StatusForbidden, CodeForbidden, fmt.Sprintf(
		"an API key with role %q may change only the %s's %s (activation); %s needs operator",
		key.Role, what, activationFields, strings.Join(fields, ", "))}
}

func (s *server) updateEnrollment(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req UpdateEnrollmentRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	var restricted []string
	if req.DeviceID != nil {
		restricted = append(restricted, "deviceId")
	}
	if req.Attestation != nil {
		restricted = append(restricted, "attestation")
	}
	if req.ReprovisionPolicy != nil {
		restricted = append(restricted, "reprovisionPolicy")
	}
	if err := operatorOnly(key, "enrollment", restricted...); err != nil {
		return err
	}
	if req.Attestation != nil {
		fillEnrollmentKeys(req.Attestation)
	}
	return modify(s, s.enrollments(), w, r, key, req.Version, "update", "updated", func(e *registry.Enrollment) ([]string, error) {
		var changed []string
		if req.DeviceID != nil && *req.DeviceID != e.DeviceID {
			e.DeviceID = *req.DeviceID
			changed = append(changed, "deviceId")
		}
		if req.Attestation != nil && !reflect.DeepEqual(*req.Attestation, e.Attestation) {
			e.Attestation = *req.Attestation
			changed = append(changed, "attestation")
		}
		return append(changed, policyChanges(&e.EnrollmentPolicies, req.ReprovisionPolicy, req.Status, &req.ActivationSettings)...), nil
	})
}

// policyChanges applies the policy fields of a PATCH.
func policyChanges(p *registry.EnrollmentPolicies, rp *registry.EnrollmentReprovisionPolicy, st *registry.EnrollmentStatus, a *ActivationSettings) []string {
	var changed []string
	if rp != nil && *rp != p.ReprovisionPolicy {
		p.ReprovisionPolicy = *rp
		changed = append(changed, "reprovisionPolicy")
	}
	if st != nil && *st != p.Status {
		p.Status = *st
		changed = append(changed, "status")
	}
	return append(changed, a.apply(p)...)
}

// Enrollment groups.

func (s *server) createEnrollmentGroup(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req CreateEnrollmentGroupRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	g := &registry.EnrollmentGroup{
		OrgID:              key.OrgID,
		ID:                 asciiLower(req.ID),
		Attestation:        req.Attestation,
		EnrollmentPolicies: req.EnrollmentPolicies,
	}
	defaultPolicies(&g.EnrollmentPolicies)
	fillGroupKeys(&g.Attestation)
	if x := g.Attestation.X509CA; x != nil {
		// Verification is the server's: only "verified" (an operator
		// vouching for the CA) is taken from the request.
		x.CarryVerification(nil, time.Now())
	}
	if err := g.Validate(); err != nil {
		return err
	}
	return createEnrollmentOf(s, s.enrollmentGroups(), w, r, key, g,
		fmt.Sprintf("created enrollment group %s (%s, %s)", g.ID, g.Attestation.Type, g.Status))
}

func (s *server) listEnrollmentGroups(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return listEnrollmentsOf(s.enrollmentGroups(), w, r, key)
}

func (s *server) getEnrollmentGroup(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return getEnrollmentOf(s.enrollmentGroups(), w, r, key)
}

func (s *server) deleteEnrollmentGroup(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return deleteEnrollmentOf(s, s.enrollmentGroups(), w, r, key)
}

func (s *server) enableEnrollmentGroup(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return setEnrollmentStatus(s, s.enrollmentGroups(), w, r, key, registry.EnrollmentEnabled)
}

func (s *server) disableEnrollmentGroup(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return setEnrollmentStatus(s, s.enrollmentGroups(), w, r, key, registry.EnrollmentDisabled)
}

func (s *server) updateEnrollmentGroup(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req UpdateEnrollmentGroupRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	var restricted []string
	if req.Attestation != nil {
		restricted = append(restricted, "attestation")
	}
	if req.ReprovisionPolicy != nil {
		restricted = append(restricted, "reprovisionPolicy")
	}
	if err := operatorOnly(key, "enrollment group", restricted...); err != nil {
		return err
	}
	if req.Attestation != nil {
		fillGroupKeys(req.Attestation)
	}
	return modify(s, s.enrollmentGroups(), w, r, key, req.Version, "update", "updated", func(g *registry.EnrollmentGroup) ([]string, error) {
		var changed []string
		if req.Attestation != nil && req.Attestation.X509CA != nil {
			// The same CA keeps its verification; another CA must be
			// verified again (or vouched for with "verified").
			x := *req.Attestation.X509CA
			x.CarryVerification(g.Attestation.X509CA, time.Now())
			req.Attestation.X509CA = &x
		}
		if req.Attestation != nil && !reflect.DeepEqual(*req.Attestation, g.Attestation) {
			g.Attestation = *req.Attestation
			changed = append(changed, "attestation")
		}
		return append(changed, policyChanges(&g.EnrollmentPolicies, req.ReprovisionPolicy, req.Status, &req.ActivationSettings)...), nil
	})
}

// deriveDeviceKey answers the key a device of a symmetric-key group signs
// its registrations with. The key is a secret: the event records who
// asked for which registration id, never the key.
func (s *server) deriveDeviceKey(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req DeriveDeviceKeyRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	k := s.enrollmentGroups()
	g, err := k.load(r, key)
	if err != nil {
		return err
	}
	regID := asciiLower(req.RegistrationID)
	if err := registry.ValidateRegistrationID("registration id", regID); err != nil {
		return err
	}
	sk := g.Attestation.SymmetricKey
	if g.Attestation.Type != registry.AttestationSymmetricKey || sk == nil || sk.PrimaryKey == "" {
		return invalid("enrollment group %q attests with %s, not a symmetric key: its devices have no derived keys", g.ID, g.Attestation.Type)
	}
	out := DerivedDeviceKey{RegistrationID: regID}
	if out.DeviceKey, err = attest.DeriveDeviceKey(sk.PrimaryKey, regID); err != nil {
		return fmt.Errorf("enrollment group %q: primary key: %w", g.ID, err)
	}
	if sk.SecondaryKey != "" {
		if out.SecondaryDeviceKey, err = attest.DeriveDeviceKey(sk.SecondaryKey, regID); err != nil {
			return fmt.Errorf("enrollment group %q: secondary key: %w", g.ID, err)
		}
	}
	s.audit(r, key, registry.AuditEvent{Action: "enrollment-group.derive-key",
		Detail: "derived the device key of registration id " + regID + " from enrollment group " + g.ID})
	writeJSON(w, http.StatusOK, out)
	return nil
}

// Proof of possession of an X.509 group's CA certificate, as DPS asks it:
// the operator gets a verification code, signs a certificate whose
// subject common name is the code with the CA's private key, and uploads
// it; the CA is then verified and the group admits devices.

// VerificationCode is the answer of POST
// /api/enrollment-groups/{id}/verification-code.
type VerificationCode struct {
	EnrollmentGroupID string `json:"enrollmentGroupId"`
	// VerificationCode is the subject common name the verification
	// certificate must have.
	VerificationCode string `json:"verificationCode"`
	// CASubject and CAThumbprint name the CA whose key must sign it.
	CASubject    string `json:"caSubject"`
	CAThumbprint string `json:"caThumbprint"`
	// Verified tells whether the CA is verified already (a new proof is
	// not needed, but may be given).
	Verified bool  `json:"verified"`
	Version  int64 `json:"version"`
}

// VerifyCARequest is the body of POST /api/enrollment-groups/{id}/verify.
type VerifyCARequest struct {
	// CertificatePEM is the verification certificate: subject common name
	// the verification code, signed by the CA's private key.
	CertificatePEM string `json:"certificatePem"`
	// Version, when given, is the version the proof is based on.
	Version *int64 `json:"version,omitempty"`
}

// groupCA returns the X.509 CA of g, or the 422 of a group that has none.
func groupCA(g *registry.EnrollmentGroup) (*registry.X509CAAttestation, *x509.Certificate, error) {
	x := g.Attestation.X509CA
	if g.Attestation.Type != registry.AttestationX509 || x == nil {
		return nil, nil, invalid("enrollment group %q attests with %s, not an X.509 CA: it has no CA certificate to verify", g.ID, g.Attestation.Type)
	}
	ca, err := x.Certificate()
	if err != nil {
		return nil, nil, err
	}
	return x, ca, nil
}

// generateVerificationCode gives the group's CA a new verification code;
// a code handed out before stops working.
func (s *server) generateVerificationCode(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req ActivateEnrollmentRequest // only its version is used
	if err := decodeOptionalJSON(w, r, &req); err != nil {
		return err
	}
	k := s.enrollmentGroups()
	return modifyAnswer(s, k, w, r, key, req.Version, "verification-code", "generated a CA verification code of", func(g *registry.EnrollmentGroup) ([]string, error) {
		x, _, err := groupCA(g)
		if err != nil {
			return nil, err
		}
		x.VerificationCode = registry.NewVerificationCode()
		return []string{"attestation.x509.verificationCode"}, nil
	}, func(g *registry.EnrollmentGroup) {
		x := g.Attestation.X509CA
		ca, _ := x.Certificate() // validated by the write
		out := VerificationCode{EnrollmentGroupID: g.ID, VerificationCode: x.VerificationCode, Verified: x.Verified, Version: g.Version}
		if ca != nil {
			out.CASubject, out.CAThumbprint = ca.Subject.String(), attest.CertificateThumbprint(ca)
		}
		w.Header().Set("ETag", etag(g.Version))
		writeJSON(w, http.StatusOK, out)
	})
}

// verifyGroupCA checks a verification certificate against the group's CA
// and pending code and, when it proves possession of the CA's key, marks
// the CA verified (the code is consumed).
func (s *server) verifyGroupCA(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req VerifyCARequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.CertificatePEM) == "" {
		return invalid("certificatePem is required: the verification certificate, PEM")
	}
	proof, err := registry.ParseCertificatePEM("verification certificate", strings.TrimSpace(req.CertificatePEM)+"\n")
	if err != nil {
		return err
	}
	return modify(s, s.enrollmentGroups(), w, r, key, req.Version, "verify", "verified the CA certificate of", func(g *registry.EnrollmentGroup) ([]string, error) {
		x, ca, err := groupCA(g)
		if err != nil {
			return nil, err
		}
		if x.VerificationCode == "" {
			return nil, invalid("enrollment group %q has no pending verification code: generate one (POST /api/enrollment-groups/%s/verification-code) and sign a certificate with it as its common name", g.ID, g.ID)
		}
		now := time.Now()
		if err := attest.VerifyProofOfPossession(ca, proof, x.VerificationCode, now); err != nil {
			return nil, invalid("%v", err)
		}
		x.MarkVerified(now)
		return []string{"attestation.x509.verified"}, nil
	})
}
