package provision

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/pki"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// Reasons of refused device registrations (Azure DPS).
const (
	// ReasonNotEnrolled: no enrollment admits the registration: unknown
	// ID scope or registration id, or evidence that matches no
	// enrollment group.
	ReasonNotEnrolled Reason = "not-enrolled"
	// ReasonEnrollmentDisabled: the enrollment (or its group) is
	// disabled. Only a device that proved its identity learns it.
	ReasonEnrollmentDisabled Reason = "enrollment-disabled"
	// ReasonTokenExpired: the SAS token verifies but has expired (often a
	// device clock that is wrong).
	ReasonTokenExpired Reason = "token-expired"
	// ReasonAllocationFailed: no hub can take the device, or the custom
	// allocation webhook answered something unusable. Retrying will not
	// help until the configuration changes.
	ReasonAllocationFailed Reason = "allocation-failed"
	// ReasonAllocationUnavailable: the custom allocation webhook is down
	// or slow; the device should retry later.
	ReasonAllocationUnavailable Reason = "allocation-unavailable"
)

// DPSDialect names the Azure DPS dialect in audit events and metrics.
const DPSDialect = "azure-dps"

// dpsProfileName is the profile every device registered through DPS
// belongs to (one per organisation, created on first use): devices need a
// profile, and DPS devices are governed by enrollments instead.
const dpsProfileName = "azure-dps"

// RegistrationRequest is a device's registration (Azure DPS), whatever
// carried it. Exactly one kind of evidence is given.
type RegistrationRequest struct {
	// Transport that carried it, for the audit trail ("mqtt", "https").
	Transport string
	// Source is the sender's address, for rate limiting, audit and
	// region lookup.
	Source string
	// IDScope and RegistrationID name the registration, as sent (any case).
	IDScope, RegistrationID string
	// SASToken is the device's shared access signature (symmetric-key
	// attestation).
	SASToken string
	// Certificates is the device's TLS client certificate chain, leaf
	// first (X.509 attestation).
	Certificates []*x509.Certificate
	// TPM is the device's endorsement and storage root keys (TPM
	// attestation, dps_tpm.go): without SASToken, the first step of the
	// registration (ChallengeTPM); with it, the second (Register).
	TPM *TPMEvidence
	// Payload is the custom payload the device sent (DPS "payload"); it
	// goes to a custom allocation webhook.
	Payload json.RawMessage
}

// RegistrationResult is a successful registration: the device is
// assigned, durably.
type RegistrationResult struct {
	Registration registry.Registration
	Device       registry.Device
}

// TwinStore keeps device twins (internal/device).
type TwinStore interface {
	// ResetTwin replaces the device's tags and desired properties with an
	// initial twin's, durably and idempotently; fresh says the device is
	// new, so that there is nothing to replace.
	ResetTwin(ctx context.Context, deviceID string, tags, desired json.RawMessage, fresh bool) error
	// Forget deletes everything kept for the device.
	Forget(ctx context.Context, deviceID string) error
}

// DPSOptions are what device registrations need beyond the store.
type DPSOptions struct {
	// Allocator applies allocation policies; nil uses allocate.New with
	// default options.
	Allocator *allocate.Allocator
	// Hubs returns the hubs devices can be assigned to; required for
	// registrations to succeed.
	Hubs func() []allocate.Hub
	// Regions maps source addresses to regions for geoLatency.
	Regions allocate.RegionMap
	// Twins receives initial twins; nil keeps no twin.
	Twins TwinStore
	// SAS verifies shared access signatures (clock, skew).
	SAS attest.SASVerifier
}

// admission is a registration whose evidence an enrollment accepted.
type admission struct {
	orgID, regID string
	enrollment   *registry.Enrollment      // individual enrollment, or
	group        *registry.EnrollmentGroup // the group that admitted it
	policies     registry.EnrollmentPolicies
	hubDeviceID  string
	attestation  registry.AttestationType
	// keys are the device's symmetric keys (derived from the group's for
	// a group), which the hub checks its SAS tokens with.
	keys *registry.SymmetricKeyAttestation
	// cert is the device's leaf certificate (X.509 attestation), which
	// the hub authenticates it by.
	cert *x509.Certificate
}

// Register runs a device registration: attest (the evidence against the
// enrollment), decide (enabled? registered before? reprovisioning
// policy), allocate (the hub), issue (the device's hub credential), commit
// (device, credential, registration state and audit event, in one durable
// transaction; the initial twin before it). It returns a *Error for every
// refusal, audited when Register returns.
func (s *Service) Register(ctx context.Context, req RegistrationRequest) (*RegistrationResult, error) {
	start := s.now()
	if err := s.slowDown(ctx, req.Source); err != nil {
		return nil, err
	}
	var res *RegistrationResult
	a, err := s.admit(ctx, req)
	if err == nil {
		unlock := s.devices.lock("dps\n" + a.orgID + "\n" + a.regID)
		for attempt := 1; ; attempt++ {
			res, err = s.assign(ctx, req, a)
			var ce *registry.ConflictError
			if err == nil || !errors.As(err, &ce) || (ce.What != "device" && ce.What != "registration") || attempt == maxAttempts {
				break
			}
		}
		unlock()
	}
	result := "success"
	if err != nil {
		pe := s.failure(ctx, err, "the device id is already used by another device's credentials", DPSDialect, req.Source)
		err = pe
		result = string(pe.Reason)
		s.countFailure(req.Source, pe.Reason)
		ev := registry.AuditEvent{Action: "register", Source: req.Source, Dialect: DPSDialect}
		if a != nil {
			ev.OrgID = a.orgID
		}
		s.auditRefusal(ctx, ev, registrationSubject(req, pe.Reason), pe)
	}
	s.metrics.ObserveProvision(DPSDialect, result, s.now().Sub(start))
	return res, err
}

// RefuseRegistration records a registration that a dialect refused before
// it reached the pipeline (a malformed body, an unsupported api-version):
// it is audited and counted like any other refusal. It returns the *Error
// to encode.
func (s *Service) RefuseRegistration(ctx context.Context, req RegistrationRequest, reason Reason, msg string) *Error {
	e := refuse(reason, "%s", msg)
	s.countFailure(req.Source, reason)
	s.auditRefusal(ctx, registry.AuditEvent{Action: "register", Source: req.Source, Dialect: DPSDialect}, registrationSubject(req, reason), e)
	s.metrics.ObserveProvision(DPSDialect, string(reason), 0)
	return e
}

func registrationSubject(req RegistrationRequest, r Reason) string {
	if req.RegistrationID == "" || r == ReasonBadRequest {
		return ""
	}
	return fmt.Sprintf("registration %q", clipID(req.RegistrationID))
}

// Registration returns the registration state an operation wrote, for a
// device polling its operation: the operation must be the registration's
// latest. Operation ids are random 128-bit values, so knowing one is the
// proof of having registered.
func (s *Service) Registration(ctx context.Context, idScope, registrationID, operationID string) (*registry.Registration, error) {
	orgID, err := s.orgOfScope(ctx, idScope)
	if err != nil {
		return nil, err
	}
	r, err := s.store.GetRegistration(ctx, orgID, registrationID)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, refuse(ReasonNotEnrolled, "no operation %q for registration %q", clipID(operationID), clipID(registrationID))
	case err != nil:
		return nil, s.failure(ctx, err, "", DPSDialect, "")
	case subtle.ConstantTimeCompare([]byte(r.OperationID), []byte(operationID)) != 1:
		return nil, refuse(ReasonNotEnrolled, "no operation %q for registration %q", clipID(operationID), clipID(registrationID))
	}
	return r, nil
}

// clipID shortens an id chosen by the device before it is quoted.
func clipID(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func (s *Service) orgOfScope(ctx context.Context, idScope string) (string, error) {
	scope, ok := registry.CanonicalIDScope(idScope)
	if !ok {
		return "", refuse(ReasonNotEnrolled, "unknown ID scope %q", clipID(idScope))
	}
	if orgID, ok := s.scopes.Load(scope); ok {
		return orgID.(string), nil
	}
	orgID, err := s.store.OrgByIDScope(ctx, scope)
	if errors.Is(err, registry.ErrNotFound) {
		return "", refuse(ReasonNotEnrolled, "unknown ID scope %q", scope)
	}
	if err == nil {
		// An ID scope never changes once generated (registry.Store.IDScope).
		s.scopes.Store(scope, orgID)
	}
	return orgID, err
}

// admit finds the enrollment that accepts the request's evidence.
func (s *Service) admit(ctx context.Context, req RegistrationRequest) (*admission, error) {
	orgID, err := s.orgOfScope(ctx, req.IDScope)
	if err != nil {
		return nil, err
	}
	a := &admission{orgID: orgID, regID: strings.ToLower(req.RegistrationID)}
	if err := registry.ValidateRegistrationID("registration id", a.regID); err != nil {
		return a, refuse(ReasonBadRequest, "%s", strings.TrimPrefix(err.Error(), registry.ErrInvalid.Error()+": "))
	}
	switch {
	case req.TPM != nil: // TPM attestation (dps_tpm.go)
		scope, _ := registry.CanonicalIDScope(req.IDScope)
		err = s.admitTPM(ctx, req, attest.RegistrationResource(scope, a.regID), a)
	case req.SASToken != "":
		scope, _ := registry.CanonicalIDScope(req.IDScope)
		err = s.admitSymmetricKey(ctx, req, attest.RegistrationResource(scope, a.regID), a)
	case len(req.Certificates) > 0:
		err = s.admitX509(ctx, req, a)
	default:
		err = refuse(ReasonBadKeyOrSecret, "no evidence: a shared access signature or a client certificate is required")
	}
	if err != nil {
		return a, err
	}
	switch {
	case a.policies.Status != registry.EnrollmentEnabled && a.group != nil:
		return a, refuse(ReasonEnrollmentDisabled, "the enrollment group %q is disabled", a.group.ID)
	case a.policies.Status != registry.EnrollmentEnabled:
		return a, refuse(ReasonEnrollmentDisabled, "the enrollment of %q is disabled", a.regID)
	}
	return a, nil
}

// admitSymmetricKey verifies the SAS token with the individual
// enrollment's keys or, without one, with the keys every symmetric-key
// group derives for the registration id (DPS tries the groups too: the
// token does not name its group).
func (s *Service) admitSymmetricKey(ctx context.Context, req RegistrationRequest, resource string, a *admission) error {
	e, err := s.store.GetEnrollment(ctx, a.orgID, a.regID)
	switch {
	case err == nil && e.Attestation.SymmetricKey == nil:
		return refuse(ReasonBadKeyOrSecret, "the enrollment of %q does not attest with symmetric keys", a.regID)
	case err == nil:
		if _, err := s.dps.SAS.Verify(req.SASToken, resource, e.Attestation.SymmetricKey.Keys()...); err != nil {
			return sasRefusal(err)
		}
		a.enrollment, a.policies, a.keys = e, e.EnrollmentPolicies, e.Attestation.SymmetricKey
		a.hubDeviceID, a.attestation = cmp.Or(e.DeviceID, a.regID), registry.AttestationSymmetricKey
		return nil
	case !errors.Is(err, registry.ErrNotFound):
		return err
	}
	groups, err := s.symmetricGroups(ctx, a.orgID)
	if err != nil {
		return err
	}
	// Devices derive their key from the registration id as they spell it;
	// ids are stored in lower case.
	ids := []string{a.regID}
	if req.RegistrationID != a.regID {
		ids = append(ids, req.RegistrationID)
	}
	for i := range groups {
		g := &groups[i]
		for _, id := range ids {
			keys, err := deriveKeys(g.Attestation.SymmetricKey, id)
			if err != nil {
				return err
			}
			_, verr := s.dps.SAS.Verify(req.SASToken, resource, keys.Keys()...)
			if errors.Is(verr, attest.ErrBadSignature) {
				continue
			}
			if verr != nil {
				// Malformed or for another resource whatever the key;
				// expired only once the signature verified.
				return sasRefusal(verr)
			}
			a.group, a.policies, a.keys = g, g.EnrollmentPolicies, keys
			a.hubDeviceID, a.attestation = a.regID, registry.AttestationSymmetricKey
			return nil
		}
	}
	if len(groups) == 0 {
		return refuse(ReasonNotEnrolled, "no enrollment for registration %q", a.regID)
	}
	return refuse(ReasonBadKeyOrSecret, "the shared access signature matches no enrollment of %q", a.regID)
}

func deriveKeys(group *registry.SymmetricKeyAttestation, regID string) (*registry.SymmetricKeyAttestation, error) {
	var k registry.SymmetricKeyAttestation
	var err error
	if k.PrimaryKey, err = attest.DeriveDeviceKey(group.PrimaryKey, regID); err != nil {
		return nil, err
	}
	if group.SecondaryKey != "" {
		if k.SecondaryKey, err = attest.DeriveDeviceKey(group.SecondaryKey, regID); err != nil {
			return nil, err
		}
	}
	return &k, nil
}

// symmetricGroups lists the organisation's symmetric-key groups.
func (s *Service) symmetricGroups(ctx context.Context, orgID string) ([]registry.EnrollmentGroup, error) {
	return s.groups(ctx, orgID, func(g *registry.EnrollmentGroup) bool { return g.Attestation.SymmetricKey != nil })
}

// groups lists the organisation's enrollment groups that keep accepts,
// ordered by id.
func (s *Service) groups(ctx context.Context, orgID string, keep func(*registry.EnrollmentGroup) bool) ([]registry.EnrollmentGroup, error) {
	var out []registry.EnrollmentGroup
	opts := registry.ListOptions{Limit: 1000}
	for {
		page, next, err := s.store.ListEnrollmentGroups(ctx, orgID, opts)
		if err != nil {
			return nil, err
		}
		for i := range page {
			if keep(&page[i]) {
				out = append(out, page[i])
			}
		}
		if next == "" {
			return out, nil
		}
		opts.After = next
	}
}

// sasRefusal turns a token verification failure into the refusal the
// device gets. A key that does not decode is the operator's fault.
func sasRefusal(err error) error {
	switch {
	case errors.Is(err, attest.ErrExpired):
		return &Error{Reason: ReasonTokenExpired, Msg: "the shared access signature has expired: check the device's clock", Err: err}
	case errors.Is(err, attest.ErrBadKey):
		return err
	}
	return &Error{Reason: ReasonBadKeyOrSecret, Msg: "the shared access signature is not valid for this registration", Err: err}
}

// assign decides what the registration does to the device, allocates its
// hub and commits.
func (s *Service) assign(ctx context.Context, req RegistrationRequest, a *admission) (*RegistrationResult, error) {
	prev, err := s.store.GetRegistration(ctx, a.orgID, a.regID)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	now := s.now().UTC()
	c := &registry.ProvisionCommit{At: now}
	reg := registry.Registration{
		RegistrationID: a.regID, HubDeviceID: a.hubDeviceID, OperationID: newOperationID(),
		Substatus: registry.SubstatusInitialAssignment, Payload: a.policies.CustomPayload,
	}
	if a.group != nil {
		reg.EnrollmentGroupID = a.group.ID
	}
	twin := a.policies.InitialTwin
	resetTwin, allocateHub := true, true
	var dev *registry.Device
	if prev == nil {
		// The name only: a new device's credential conflict is caught by
		// the commit, and the twin written for its fresh id is dropped.
		if err := s.checkDeviceName(ctx, a.orgID, a.hubDeviceID, ""); err != nil {
			return nil, err
		}
		p, err := s.dpsProfile(ctx, a.orgID)
		if err != nil {
			return nil, err
		}
		dev = &registry.Device{ID: uuid.NewString(), OrgID: a.orgID, ProfileID: p.ID, Name: a.hubDeviceID, Status: registry.DeviceEnabled}
		c.Create = true
	} else {
		if dev, err = s.store.GetDevice(ctx, a.orgID, prev.DeviceID); err != nil {
			return nil, err
		}
		if dev.Status != registry.DeviceEnabled {
			return nil, refuse(ReasonDeviceDisabled, "device %q is disabled", dev.Name)
		}
		c.ExpectVersion, c.RevokeActive = dev.Version, true
		reg.Version, reg.CreatedAt = prev.Version, prev.CreatedAt
		switch a.policies.ReprovisionPolicy {
		case registry.EnrollmentReprovisionNever:
			// The device stays where it is, with its twin and its id.
			resetTwin, allocateHub = false, false
			reg.AssignedHub, reg.HubDeviceID, reg.Substatus = prev.AssignedHub, prev.HubDeviceID, prev.Substatus
		case registry.EnrollmentReprovisionMigrate:
			resetTwin = false
			reg.Substatus = registry.SubstatusDeviceDataMigrated
		default:
			reg.Substatus = registry.SubstatusDeviceDataReset
		}
		if reg.HubDeviceID != dev.Name {
			// The enrollment's device id changed: the new one must be free.
			if err := s.checkHubDeviceID(ctx, a, reg.HubDeviceID, dev.ID); err != nil {
				return nil, err
			}
		}
		dev.Name = reg.HubDeviceID
	}
	var webhookNote string
	if allocateHub {
		res, err := s.allocate(ctx, req, a, prev)
		if err != nil {
			return nil, err
		}
		webhookNote = attemptsNote(res.Attempts)
		reg.AssignedHub = res.Hub
		if res.InitialTwin != nil {
			twin = *res.InitialTwin
		}
		if res.Payload != nil {
			reg.Payload = res.Payload
		}
		if prev != nil && a.policies.ReprovisionPolicy == registry.EnrollmentReprovisionReset && res.Hub == prev.AssignedHub {
			reg.Substatus = registry.SubstatusReprovisionedToInit
		}
	}
	dev.ProvisionedAt = &now
	c.Device = dev
	switch {
	case prev != nil && s.keepsCredential(ctx, a, dev.ID, reg.HubDeviceID):
		// The same key or certificate as before: no new row, nothing
		// revoked, so that devices registering at every boot do not pile
		// up credentials.
		c.RevokeActive = false
	case a.keys != nil:
		c.Credentials = []registry.Credential{{Type: registry.CredentialSymmetricKey,
			LookupKey: registry.HubDeviceLookupKey(reg.HubDeviceID), SymmetricKey: a.keys}}
	case a.cert != nil:
		cred, err := x509Credential(a.cert, now)
		if err != nil {
			return nil, err
		}
		c.Credentials = []registry.Credential{cred}
	}
	c.Registration = &reg
	via := "individual enrollment"
	if a.group != nil {
		via = fmt.Sprintf("enrollment group %q", a.group.ID)
	}
	c.Audit = registry.AuditEvent{
		OrgID: a.orgID, Time: now, Actor: "device", Action: "register", Result: "success",
		ProfileID: dev.ProfileID, Source: req.Source, Dialect: DPSDialect,
		Detail: fmt.Sprintf("registration %q (%s, %s over %s) assigned to hub %q as device %q (%s)",
			a.regID, via, a.attestation, cmp.Or(req.Transport, "?"), reg.AssignedHub, reg.HubDeviceID, reg.Substatus) + webhookNote,
	}
	// The twin first: if the commit then fails, the device retries and
	// the reset runs again; the other order could answer a device whose
	// twin was never written.
	if resetTwin && s.dps.Twins != nil {
		// A new device has no attributes yet: nothing to delete first.
		if err := s.dps.Twins.ResetTwin(ctx, dev.ID, twin.Tags, twin.DesiredProperties, c.Create); err != nil {
			return nil, fmt.Errorf("write the initial twin: %w", err)
		}
	}
	if err := s.store.CommitProvision(ctx, c); err != nil {
		if c.Create && resetTwin && s.dps.Twins != nil {
			// No device came of it: its twin goes (a retry writes it anew).
			if ferr := s.dps.Twins.Forget(context.WithoutCancel(ctx), dev.ID); ferr != nil {
				s.log.WarnContext(ctx, "the twin of a registration that failed was not deleted", "device", dev.ID, "error", ferr)
			}
		}
		return nil, err
	}
	return &RegistrationResult{Registration: *c.Registration, Device: *c.Device}, nil
}

// checkHubDeviceID refuses a hub device id that another device of the
// organisation already has (as its name, or its hub credential's id).
// self is the device taking it, empty for a new one. Checked before any
// write, so that a refusal leaves the twin alone.
func (s *Service) checkHubDeviceID(ctx context.Context, a *admission, id, self string) error {
	if err := s.checkDeviceName(ctx, a.orgID, id, self); err != nil {
		return err
	}
	if a.keys == nil {
		return nil
	}
	_, holder, err := s.store.FindActiveCredential(ctx, registry.CredentialSymmetricKey, registry.HubDeviceLookupKey(id))
	switch {
	case err == nil && holder.ID != self:
		return refuse(ReasonCredentialsTaken, "device id %q is the hub identity of another device", id)
	case err != nil && !errors.Is(err, registry.ErrNotFound):
		return err
	}
	return nil
}

// checkDeviceName refuses a device name that another device of the
// organisation than self has.
func (s *Service) checkDeviceName(ctx context.Context, orgID, name, self string) error {
	other, err := s.store.GetDeviceByName(ctx, orgID, name)
	switch {
	case err == nil && other.ID != self:
		return refuse(ReasonAlreadyProvisioned, "device id %q is taken by device %s", name, other.ID)
	case err != nil && !errors.Is(err, registry.ErrNotFound):
		return err
	}
	return nil
}

// keepsCredential reports whether the device's active hub credential is
// already the one this registration would issue.
func (s *Service) keepsCredential(ctx context.Context, a *admission, deviceID, hubDeviceID string) bool {
	switch {
	case a.keys != nil:
		cred, holder, err := s.store.FindActiveCredential(ctx, registry.CredentialSymmetricKey, registry.HubDeviceLookupKey(hubDeviceID))
		return err == nil && holder.ID == deviceID && cred.SymmetricKey != nil && *cred.SymmetricKey == *a.keys
	case a.cert != nil:
		_, holder, err := s.store.FindActiveCredential(ctx, registry.CredentialX509, pki.Fingerprint(a.cert.Raw))
		return err == nil && holder.ID == deviceID
	}
	return false
}

// allocate picks the device's hub under the enrollment's policy.
func (s *Service) allocate(ctx context.Context, req RegistrationRequest, a *admission, prev *registry.Registration) (allocate.Result, error) {
	areq := allocate.Request{RegistrationID: a.regID, Policy: a.policies.AllocationPolicy, IoTHubs: a.policies.IoTHubs}
	if region, ok := s.dps.Regions.LookupRemote(req.Source); ok {
		areq.Region = region
	}
	if prev != nil {
		areq.CurrentHub, areq.CurrentDeviceID = prev.AssignedHub, prev.HubDeviceID
	}
	if areq.Policy == registry.AllocationCustom {
		areq.Webhook = &allocate.WebhookRequest{
			IndividualEnrollment: a.enrollment, EnrollmentGroup: a.group,
			Attestation: a.deviceAttestation(), Payload: req.Payload,
		}
	}
	var hubs []allocate.Hub
	if s.dps.Hubs != nil {
		hubs = s.dps.Hubs()
	}
	res, err := s.dps.Allocator.Allocate(ctx, hubs, areq)
	if len(res.Attempts) > 0 {
		s.log.InfoContext(ctx, "custom allocation webhook called", "registration", a.regID, "attempts", len(res.Attempts), "error", err)
	}
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, allocate.ErrWebhookUnavailable):
		return res, &Error{Reason: ReasonAllocationUnavailable, Msg: "the allocation webhook is unavailable; retry later" + attemptsNote(res.Attempts), Err: err}
	case errors.Is(err, allocate.ErrNoHub), errors.Is(err, allocate.ErrWebhookBadAnswer), errors.Is(err, registry.ErrInvalid):
		return res, &Error{Reason: ReasonAllocationFailed, Msg: "no hub could be allocated: " + err.Error(), Err: err}
	}
	return res, err
}

// attemptsNote says, for the audit trail, how the custom allocation
// webhook's calls went; empty when it was not called.
func attemptsNote(attempts []allocate.Attempt) string {
	if len(attempts) == 0 {
		return ""
	}
	last := attempts[len(attempts)-1]
	outcome := fmt.Sprintf("HTTP %d", last.Status)
	if last.Error != "" {
		outcome = last.Error
	}
	return fmt.Sprintf(" (custom allocation webhook: %d attempt(s), the last %s after %s)", len(attempts), outcome, last.Duration.Round(time.Millisecond))
}

// dpsProfile returns the organisation's profile of DPS devices, creating
// it on first use. Its strategy is disabled: the profile's own
// provisioning (ThingsBoard's) admits nobody, enrollments do.
func (s *Service) dpsProfile(ctx context.Context, orgID string) (*registry.Profile, error) {
	// Not cached: an operator may delete it once its devices are gone.
	key := "azure-dps/" + orgID
	p, err := s.store.GetProfileByProvisionKey(ctx, key)
	if errors.Is(err, registry.ErrNotFound) {
		p = &registry.Profile{OrgID: orgID, Name: dpsProfileName, Strategy: registry.StrategyDisabled,
			Description:  "Devices registered through the Azure DPS-compatible service; enrollments govern them.",
			ProvisionKey: key, ProvisionSecretHash: secret.Hash(secret.Generate(secret.TokenLength)),
			DefaultCredentialType: registry.CredentialAccessToken, ReprovisionPolicy: registry.ReprovisionNever}
		err = s.store.CreateProfile(ctx, p)
		var ce *registry.ConflictError
		if errors.As(err, &ce) { // created meanwhile, by another request or node
			p, err = s.store.GetProfileByProvisionKey(ctx, key)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the azure-dps profile: %w", err)
	}
	return p, nil
}

// newOperationID is a registration operation's id: 128 random bits, the
// proof a polling device gives.
func newOperationID() string {
	var b [16]byte
	rand.Read(b[:])
	return "4." + hex.EncodeToString(b[:8]) + "." + hex.EncodeToString(b[8:])
}
