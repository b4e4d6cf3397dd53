// Package provision is zerotouch's protocol-neutral provisioning pipeline:
//
//	attest → decide → issue → commit → audit
//
// Dialects (ThingsBoard, later Azure DPS and AWS) decode their wire format
// into a Request, call Service.Provision, and encode the Result or the
// refusal (*Error) in their own terms. The answer must only be sent after
// Provision returns: by then the decision is durable.
package provision

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/zerotouch/zerotouch/internal/allocate"
	"github.com/zerotouch/zerotouch/internal/metrics"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// Request is a device's provisioning request, whatever carried it.
type Request struct {
	// Dialect that carried the request, for audit and metrics ("thingsboard").
	Dialect string
	// Source identifies the sender for rate limiting and audit: an IP address.
	Source string
	// ProvisionKey and ProvisionSecret identify and authenticate the profile.
	ProvisionKey, ProvisionSecret string
	// DeviceName may be empty for the allow-create strategy: a random name is
	// then generated (as ThingsBoard does).
	DeviceName string
	// Credentials the device brings; zero value asks for server-generated ones.
	Credentials CredentialsRequest
}

// Result is a successful provisioning.
type Result struct {
	Device      registry.Device
	Credentials IssuedCredentials
	// Reprovisioned is true when the device had been provisioned before and
	// its credentials were rotated.
	Reprovisioned bool
}

// Options configure a Service.
type Options struct {
	Store   registry.Store
	Logger  *slog.Logger
	Metrics *metrics.Metrics // may be nil
	// Limiter slows down failing sources; nil uses NewFailureLimiter().
	Limiter *FailureLimiter
	// Now is the clock; nil uses time.Now.
	Now func() time.Time
	// Verifier checks provision secrets; share one with the hub so that
	// both remember the same verified secrets. nil uses a private one.
	Verifier *secret.Verifier
	// DPS configures device registrations (Register).
	DPS DPSOptions
}

// Service runs the pipeline.
type Service struct {
	store   registry.Store
	log     *slog.Logger
	metrics *metrics.Metrics
	limiter *FailureLimiter
	now     func() time.Time
	secrets *secret.Verifier
	// dummyHash is verified against when the key is unknown, so that the
	// answer takes as long as for a known key with a wrong secret. It is a
	// slow hash, as are those of operator-chosen secrets, the only ones
	// worth guessing: a wrong guess against a generated secret's fast hash
	// is answered sooner, which tells the key exists but not the secret,
	// whose 142 bits no one will guess.
	dummyHash string
	devices   keyLock
	audits    auditSuppressor
	chains    chainCache // for TrustedCAs

	dps DPSOptions
	// tpmChallenges are the pending TPM challenges of registrations
	// (dps_tpm.go).
	tpmChallenges *tpmState
	// scopes maps ID scopes to their organisation (bounded by the number
	// of organisations: only scopes that exist are kept).
	scopes sync.Map
}

// New returns a Service.
func New(o Options) *Service {
	s := &Service{store: o.Store, log: o.Logger, metrics: o.Metrics, limiter: o.Limiter, now: o.Now, secrets: o.Verifier, dps: o.DPS,
		tpmChallenges: newTPMState()}
	if s.dps.Allocator == nil {
		s.dps.Allocator = allocate.New(allocate.Options{})
	}
	if s.dps.SAS.Now == nil {
		s.dps.SAS.Now = func() time.Time { return s.now() }
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.limiter == nil {
		s.limiter = NewFailureLimiter()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.secrets == nil {
		s.secrets = secret.NewVerifier(0)
	}
	s.dummyHash = secret.HashSlow(secret.Generate(secret.TokenLength))
	s.audits = auditSuppressor{window: time.Minute, max: 10_000}
	return s
}

// generatedNameLength is ThingsBoard's length for names it makes up.
const generatedNameLength = 20

// maxAttempts bounds retries when a concurrent request wrote the same device.
const maxAttempts = 4

// Provision runs the pipeline for one request. It returns a *Error for every
// refusal; the refusal has been audited when Provision returns.
func (s *Service) Provision(ctx context.Context, req Request) (*Result, error) {
	start := s.now()
	if err := s.slowDown(ctx, req.Source); err != nil {
		return nil, err
	}
	var (
		res     *Result
		profile *registry.Profile
		err     error
	)
	profile, err = s.attest(ctx, req)
	if err == nil {
		// Identical requests on this node wait for each other; those of
		// other nodes are caught by the store's version check, and retried.
		unlock := s.devices.lock(profile.ID + "\n" + strings.TrimSpace(req.DeviceName))
		for attempt := 1; ; attempt++ {
			res, err = s.decideAndCommit(ctx, profile, req)
			var ce *registry.ConflictError
			if err == nil || !errors.As(err, &ce) || ce.What != "device" || attempt == maxAttempts {
				break
			}
			// Someone wrote the same device between our read and our commit:
			// decide again on what is there now.
		}
		unlock()
	}
	result := "success"
	if err != nil {
		pe := s.failure(ctx, err, "these credentials are already used by another device", req.Dialect, req.Source)
		err = pe
		result = string(pe.Reason)
		s.countFailure(req.Source, pe.Reason)
		s.auditFailure(ctx, req, profile, pe)
	}
	s.metrics.ObserveProvision(req.Dialect, result, s.now().Sub(start))
	return res, err
}

// slowDown waits as long as the failure limiter asks of source.
func (s *Service) slowDown(ctx context.Context, source string) error {
	d := s.limiter.Delay(source, s.now())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return &Error{Reason: ReasonInternal, Msg: "request abandoned", Err: ctx.Err()}
	case <-t.C:
		return nil
	}
}

// attest finds the profile by its key and checks the secret in constant time.
func (s *Service) attest(ctx context.Context, req Request) (*registry.Profile, error) {
	if req.ProvisionKey == "" || req.ProvisionSecret == "" {
		return nil, refuse(ReasonBadKeyOrSecret, "provision key and secret are required")
	}
	p, err := s.store.GetProfileByProvisionKey(ctx, req.ProvisionKey)
	if errors.Is(err, registry.ErrNotFound) {
		s.secrets.Verify(req.ProvisionSecret, s.dummyHash)
		return nil, refuse(ReasonBadKeyOrSecret, "unknown provision key or wrong secret")
	}
	if err != nil {
		return nil, err
	}
	if !s.secrets.Verify(req.ProvisionSecret, p.ProvisionSecretHash) {
		return p, refuse(ReasonBadKeyOrSecret, "unknown provision key or wrong secret")
	}
	if p.Strategy == registry.StrategyDisabled {
		return p, refuse(ReasonProvisioningDisabled, "provisioning is disabled for this profile")
	}
	return p, nil
}

// decideAndCommit applies the profile's strategy and reprovisioning policy
// to the device as it is now, issues the credentials and commits.
func (s *Service) decideAndCommit(ctx context.Context, p *registry.Profile, req Request) (*Result, error) {
	name := strings.TrimSpace(req.DeviceName)
	if name == "" && p.Strategy == registry.StrategyAllowCreate {
		name = secret.Generate(generatedNameLength)
	}
	if err := registry.ValidateName("device", name); err != nil {
		return nil, refuse(ReasonBadRequest, "%s", strings.TrimPrefix(err.Error(), registry.ErrInvalid.Error()+": "))
	}
	dev, err := s.store.GetDeviceByName(ctx, p.OrgID, name)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return nil, err
	}
	if dev != nil && dev.ProfileID != p.ID {
		// Another profile's device: neither strategy may touch it.
		if p.Strategy == registry.StrategyPreProvisioned {
			return nil, refuse(ReasonNotPreProvisioned, "no pre-provisioned device named %q in this profile", name)
		}
		return nil, refuse(ReasonAlreadyProvisioned, "device name %q is already taken", name)
	}
	now := s.now().UTC()
	c := &registry.ProvisionCommit{At: now}
	switch {
	case dev == nil && p.Strategy == registry.StrategyPreProvisioned:
		return nil, refuse(ReasonNotPreProvisioned, "no pre-provisioned device named %q in this profile", name)
	case dev == nil:
		dev = &registry.Device{ID: uuid.NewString(), OrgID: p.OrgID, ProfileID: p.ID, Name: name, Status: registry.DeviceEnabled}
		c.Create = true
	case dev.Status != registry.DeviceEnabled:
		return nil, refuse(ReasonDeviceDisabled, "device %q is disabled", name)
	case dev.ProvisionedAt != nil && p.ReprovisionPolicy == registry.ReprovisionNever:
		return nil, refuse(ReasonAlreadyProvisioned, "device %q is already provisioned", name)
	default:
		// A pre-provisioned device calling home for the first time, or a
		// reprovisioning under the rotate policy: whatever credentials the
		// device had are replaced, so they never pile up.
		c.ExpectVersion = dev.Version
		c.RevokeActive = true
	}
	cred, issued, err := BuildCredential(req.Credentials, p.DefaultCredentialType, now)
	if err != nil {
		return nil, &Error{Reason: ReasonBadCredentials, Msg: strings.TrimPrefix(err.Error(), ErrBadCredentials.Error()+": ")}
	}
	reprovisioned := dev.ProvisionedAt != nil
	dev.ProvisionedAt = &now
	c.Device = dev
	c.Credentials = []registry.Credential{cred}
	c.Audit = registry.AuditEvent{
		OrgID: p.OrgID, Time: now, Actor: "device", Action: "provision", Result: "success",
		ProfileID: p.ID, Source: req.Source, Dialect: req.Dialect,
		Detail: fmt.Sprintf("device %q provisioned with %s credentials", name, cred.Type),
	}
	if reprovisioned {
		c.Audit.Detail = fmt.Sprintf("device %q reprovisioned: new %s credentials, previous ones revoked", name, cred.Type)
	}
	if err := s.store.CommitProvision(ctx, c); err != nil {
		return nil, err
	}
	return &Result{Device: *c.Device, Credentials: issued, Reprovisioned: reprovisioned}, nil
}

// countFailure feeds the failure limiter with the refusals a source can
// cause at will: guessed secrets and malformed requests.
func (s *Service) countFailure(source string, r Reason) {
	if r == ReasonBadKeyOrSecret || r == ReasonBadRequest || r == ReasonNotEnrolled {
		s.limiter.Fail(source, s.now())
	}
}

// auditFailure records a refusal. A source that is being slowed down gets
// at most one event a minute per reason (the next says how many it stands
// for), so that a flood cannot fill the disk or hog the writer. A failure to
// write the event is logged, not returned: the answer does not depend on it.
func (s *Service) auditFailure(ctx context.Context, req Request, p *registry.Profile, e *Error) {
	ev := registry.AuditEvent{Action: "provision", Source: req.Source, Dialect: req.Dialect}
	if p != nil {
		ev.OrgID, ev.ProfileID = p.OrgID, p.ID
	}
	subject := ""
	if req.DeviceName != "" && e.Reason != ReasonBadRequest {
		subject = fmt.Sprintf("device %q", req.DeviceName)
	}
	s.auditRefusal(ctx, ev, subject, e)
}

// auditRefusal records the refusal e as ev (whose OrgID, ProfileID,
// Action, Source and Dialect the caller sets; OrgID defaults to the
// default organisation), its detail prefixed by subject when set. A
// source that is being slowed down gets at most one event a minute per
// reason (the next says how many it stands for), so that a flood cannot
// fill the disk or hog the writer. A failure to write the event is
// logged, not returned: the answer does not depend on it.
func (s *Service) auditRefusal(ctx context.Context, ev registry.AuditEvent, subject string, e *Error) {
	now := s.now()
	folded := 0
	if s.limiter.Delay(ev.Source, now) > 0 {
		var write bool
		if write, folded = s.audits.admit(ev.Source, string(e.Reason), now); !write {
			return
		}
	}
	ev.OrgID = cmp.Or(ev.OrgID, registry.DefaultOrgID)
	ev.Time, ev.Actor, ev.Result, ev.Detail = now.UTC(), "device", string(e.Reason), e.Msg
	if subject != "" {
		ev.Detail = subject + ": " + e.Msg
	}
	if folded > 0 {
		ev.Detail += fmt.Sprintf(" (and %d more such refusals from this source in the last minute, not recorded one by one)", folded)
	}
	s.log.InfoContext(ctx, "request refused", "action", ev.Action, "dialect", ev.Dialect, "source", ev.Source, "reason", e.Reason, "detail", ev.Detail)
	if err := s.store.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
		s.log.ErrorContext(ctx, "audit event lost", "error", err)
	}
}

// Refuse records a request that a dialect refused before it reached the
// pipeline (malformed JSON, unknown fields, oversized payload): it is
// audited and counted like any other refusal. It returns the *Error to encode.
func (s *Service) Refuse(ctx context.Context, req Request, reason Reason, msg string) *Error {
	e := refuse(reason, "%s", msg)
	s.countFailure(req.Source, reason)
	s.auditFailure(ctx, req, nil, e)
	s.metrics.ObserveProvision(req.Dialect, string(reason), 0)
	return e
}

// failure turns what went wrong in a pipeline into an *Error: a commit's
// conflicts get their reason (taken says what is already used), anything
// unexpected is logged and becomes ReasonInternal, with no detail for the
// device.
func (s *Service) failure(ctx context.Context, err error, taken, dialect, source string) *Error {
	var ce *registry.ConflictError
	switch {
	case errors.As(err, &ce) && ce.What == "credential":
		return &Error{Reason: ReasonCredentialsTaken, Msg: taken, Err: err}
	case errors.As(err, &ce) && ce.What == "device":
		return &Error{Reason: ReasonBusy, Msg: "other requests for this device keep changing it; retry", Err: err}
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe
	}
	s.log.ErrorContext(ctx, "provisioning failed", "dialect", dialect, "source", source, "error", err)
	return &Error{Reason: ReasonInternal, Msg: "the server could not complete the request", Err: err}
}
