package provision

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/zerotouch/zerotouch/internal/attest"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// TPM attestation of DPS registrations, in two steps as Azure DPS runs it
// (see internal/attest/tpm.go for the blob):
//
//  1. The device registers with its endorsement key (EK) and storage root
//     key (SRK) and no token: ChallengeTPM checks the EK against the
//     individual enrollment's, makes a random key (the nonce), keeps it
//     here, pending, and answers with the activation blob that only that
//     TPM can load it from (401 with "authenticationKey").
//  2. The device loads the key in its TPM, signs its registration SAS token
//     with it and registers again with the token: Register (admitTPM)
//     verifies the token with the pending keys of that registration and
//     consumes the one that verifies. The key becomes the device's hub key
//     (its SAS tokens on the hub are signed by the TPM too), and the
//     assigned answer carries it once more in an activation blob
//     (TPMAuthenticationKey), which the SDKs import as the hub key.
//
// Pending keys live in memory only: bounded in number (per registration
// and in all), valid for TPMChallengeTTL, never written anywhere. A
// restart between the two steps loses them; the device's second step is
// then refused and it starts over, as the SDKs do on any refusal.

// TPMEvidence is what a TPM device registers with: its EK and SRK public
// areas, base64 TPM2B_PUBLIC, as the SDKs send them ("tpm" of the body).
type TPMEvidence struct {
	EndorsementKey, StorageRootKey string
}

// TPMChallenge is the answer to a registration's first step.
type TPMChallenge struct {
	// AuthenticationKey is the base64 activation blob.
	AuthenticationKey string
	// KeyName is the policy name to sign the token for ("registration").
	KeyName string
}

// Bounds on the pending TPM state.
const (
	// TPMChallengeTTL is how long a pending key (and an assigned answer's
	// blob) is kept: the SDKs answer a challenge and poll within seconds.
	TPMChallengeTTL = 5 * time.Minute
	// maxTPMPendingPerRegistration bounds the keys pending for one
	// registration, and tpmChallengeSpacing how often one is made: a new
	// challenge pushes out the oldest, so someone replaying the device's
	// (public) EK could push out the device's own — but only one every
	// tpmChallengeSpacing, which leaves a device some
	// maxTPMPendingPerRegistration × tpmChallengeSpacing to answer its
	// challenge. (Nothing can tell the device's challenge request from a
	// replay: the EK is public; this bounds the nuisance, it cannot end it.)
	maxTPMPendingPerRegistration = 4
	tpmChallengeSpacing          = 2 * time.Second
	// maxTPMPending bounds all pending keys and answers of the node.
	maxTPMPending = 10_000
)

// tpmState is a service's pending TPM keys and assigned answers.
type tpmState struct {
	mu      sync.Mutex
	pending map[string][]tpmPending // orgID "\n" regID → keys, oldest first
	answers map[string]tpmAnswer    // orgID "\n" regID → assigned answer's blob
	n       int                     // pending keys in all
}

type tpmPending struct {
	key     []byte
	ekName  []byte // the EK the key was encrypted to
	expires time.Time
}

type tpmAnswer struct {
	blob    string
	expires time.Time
}

// tpm returns the service's TPM state.
func (s *Service) tpm() *tpmState { return s.tpmChallenges }

func newTPMState() *tpmState {
	return &tpmState{pending: map[string][]tpmPending{}, answers: map[string]tpmAnswer{}}
}

// expire drops what is past; the caller holds mu.
func (t *tpmState) expire(now time.Time) {
	for k, ps := range t.pending {
		kept := ps[:0]
		for _, p := range ps {
			if now.Before(p.expires) {
				kept = append(kept, p)
			}
		}
		t.n -= len(ps) - len(kept)
		if len(kept) == 0 {
			delete(t.pending, k)
		} else {
			t.pending[k] = kept
		}
	}
	for k, a := range t.answers {
		if !now.Before(a.expires) {
			delete(t.answers, k)
		}
	}
}

// add records a pending key, the oldest of the registration's making room;
// a registration gets at most one new key every tpmChallengeSpacing.
func (t *tpmState) add(id string, p tpmPending, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n+len(t.answers) >= maxTPMPending {
		t.expire(now)
		if t.n+len(t.answers) >= maxTPMPending {
			return &Error{Reason: ReasonBusy, Msg: "too many TPM registrations are in progress; retry"}
		}
	}
	ps := t.pending[id]
	if n := len(ps); n > 0 && now.Before(ps[n-1].expires.Add(-TPMChallengeTTL+tpmChallengeSpacing)) {
		return &Error{Reason: ReasonBusy, Msg: "a TPM challenge for this registration was made a moment ago; retry"}
	}
	if len(ps) == maxTPMPendingPerRegistration {
		ps = append(ps[:0], ps[1:]...)
		t.n--
	}
	t.pending[id] = append(ps, p)
	t.n++
	return nil
}

// keys returns the registration's pending keys for the EK named ekName
// that have not expired.
func (t *tpmState) keys(id string, ekName []byte, now time.Time) [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out [][]byte
	for _, p := range t.pending[id] {
		if now.Before(p.expires) && bytes.Equal(p.ekName, ekName) {
			out = append(out, p.key)
		}
	}
	return out
}

// consume removes a pending key once used, so that a token verifies once,
// and reports whether it was still pending (a concurrent request with the
// same token may have used it).
func (t *tpmState) consume(id string, key []byte) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	ps := t.pending[id]
	found := false
	for i, p := range ps {
		if bytes.Equal(p.key, key) {
			ps, found = append(ps[:i], ps[i+1:]...), true
			t.n--
			break
		}
	}
	if len(ps) == 0 {
		delete(t.pending, id)
	} else {
		t.pending[id] = ps
	}
	return found
}

func (t *tpmState) setAnswer(id, blob string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n+len(t.answers) >= maxTPMPending {
		t.expire(now)
	}
	t.answers[id] = tpmAnswer{blob: blob, expires: now.Add(TPMChallengeTTL)}
}

func (t *tpmState) answer(id string, now time.Time) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.answers[id]
	if !ok || !now.Before(a.expires) {
		return "", false
	}
	return a.blob, true
}

func tpmID(orgID, regID string) string { return orgID + "\n" + regID }

// ChallengeTPM runs the first step of a TPM registration (req.TPM set,
// no token): it answers with the activation blob of a fresh key, kept
// pending for the second step. It returns a *Error for every refusal
// (audited and counted like Register's): an unknown registration or an
// EK that is not the enrollment's is ReasonNotEnrolled; a malformed EK
// or SRK ReasonBadRequest.
func (s *Service) ChallengeTPM(ctx context.Context, req RegistrationRequest) (*TPMChallenge, error) {
	start := s.now()
	if err := s.slowDown(ctx, req.Source); err != nil {
		return nil, err
	}
	orgID, ch, err := s.challengeTPM(ctx, req)
	if err == nil {
		return ch, nil
	}
	pe := s.failure(ctx, err, "", DPSDialect, req.Source)
	s.countFailure(req.Source, pe.Reason)
	s.auditRefusal(ctx, registry.AuditEvent{OrgID: orgID, Action: "register", Source: req.Source, Dialect: DPSDialect},
		registrationSubject(req, pe.Reason), pe)
	s.metrics.ObserveProvision(DPSDialect, string(pe.Reason), s.now().Sub(start))
	return nil, pe
}

func (s *Service) challengeTPM(ctx context.Context, req RegistrationRequest) (string, *TPMChallenge, error) {
	if req.TPM == nil {
		return "", nil, refuse(ReasonBadRequest, "no TPM endorsement key")
	}
	orgID, err := s.orgOfScope(ctx, req.IDScope)
	if err != nil {
		return "", nil, err
	}
	regID := strings.ToLower(req.RegistrationID)
	e, ek, err := s.tpmEnrollment(ctx, orgID, regID, req.TPM)
	if err != nil {
		return orgID, nil, err
	}
	srk, err := attest.ParseTPMKey(req.TPM.StorageRootKey)
	switch {
	case req.TPM.StorageRootKey == "":
		return orgID, nil, refuse(ReasonBadRequest, "no TPM storage root key (tpm.storageRootKey)")
	case err != nil:
		return orgID, nil, refuse(ReasonBadRequest, "the storage root key: %s", err)
	}
	if err := srk.CheckStorageRootKey(); err != nil {
		return orgID, nil, refuse(ReasonBadRequest, "the storage root key: %s", err)
	}
	if e.Attestation.TPM.StorageRootKey != "" {
		if enrolled, err := attest.ParseTPMKey(e.Attestation.TPM.StorageRootKey); err == nil && !enrolled.SameKey(srk) {
			// The SRK changes when the TPM is cleared; the EK identifies the
			// device. Worth a note, not a refusal.
			s.log.InfoContext(ctx, "TPM registration with another storage root key than enrolled", "registration", regID)
		}
	}
	key := make([]byte, attest.TPMIdentityKeySize)
	rand.Read(key)
	blob, err := attest.BuildTPMActivation(rand.Reader, ek, srk, key)
	if err != nil {
		return orgID, nil, refuse(ReasonBadRequest, "no activation blob can be made for this TPM: %s", err)
	}
	now := s.now()
	if err := s.tpm().add(tpmID(orgID, regID), tpmPending{key: key, ekName: ek.Name, expires: now.Add(TPMChallengeTTL)}, now); err != nil {
		return orgID, nil, err
	}
	return orgID, &TPMChallenge{AuthenticationKey: base64.StdEncoding.EncodeToString(blob), KeyName: attest.RegistrationKeyName}, nil
}

// tpmEnrollment finds the TPM individual enrollment of regID and checks
// the device's EK against it. DPS has no TPM groups.
func (s *Service) tpmEnrollment(ctx context.Context, orgID, regID string, ev *TPMEvidence) (*registry.Enrollment, *attest.TPMKey, error) {
	if err := registry.ValidateRegistrationID("registration id", regID); err != nil {
		return nil, nil, refuse(ReasonBadRequest, "%s", strings.TrimPrefix(err.Error(), registry.ErrInvalid.Error()+": "))
	}
	ek, err := attest.ParseTPMKey(ev.EndorsementKey)
	switch {
	case ev.EndorsementKey == "":
		return nil, nil, refuse(ReasonBadRequest, "no TPM endorsement key (tpm.endorsementKey)")
	case err != nil:
		return nil, nil, refuse(ReasonBadRequest, "the endorsement key: %s", err)
	}
	e, err := s.store.GetEnrollment(ctx, orgID, regID)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, nil, refuse(ReasonNotEnrolled, "no enrollment for registration %q", regID)
	case err != nil:
		return nil, nil, err
	case e.Attestation.TPM == nil:
		return nil, nil, refuse(ReasonBadKeyOrSecret, "the enrollment of %q does not attest with a TPM", regID)
	}
	enrolled, err := attest.ParseTPMKey(e.Attestation.TPM.EndorsementKey)
	if err != nil {
		// The operator's data, not the device's: logged, answered 500.
		return nil, nil, fmt.Errorf("the enrolled endorsement key of %q: %w", regID, err)
	}
	if !enrolled.SameKey(ek) {
		return nil, nil, refuse(ReasonNotEnrolled, "the TPM endorsement key is not the one enrolled for %q", regID)
	}
	if err := ek.CheckEndorsementKey(); err != nil {
		return nil, nil, refuse(ReasonBadRequest, "the endorsement key: %s", err)
	}
	return e, ek, nil
}

// admitTPM is a TPM registration's second step: the token must verify
// with a key pending for this registration and EK.
func (s *Service) admitTPM(ctx context.Context, req RegistrationRequest, resource string, a *admission) error {
	e, ek, err := s.tpmEnrollment(ctx, a.orgID, a.regID, req.TPM)
	if err != nil {
		return err
	}
	if req.SASToken == "" {
		return refuse(ReasonBadKeyOrSecret, "no shared access signature: register without one first to get the TPM's key")
	}
	t, id := s.tpm(), tpmID(a.orgID, a.regID)
	pending := t.keys(id, ek.Name, s.now())
	if len(pending) == 0 {
		return refuse(ReasonBadKeyOrSecret, "no TPM challenge is pending for %q (expired, or the server restarted): register without a token to get one", a.regID)
	}
	var key []byte
	for _, k := range pending {
		_, verr := s.dps.SAS.Verify(req.SASToken, resource, base64.StdEncoding.EncodeToString(k))
		if verr == nil {
			key = k
			break
		}
		if !errors.Is(verr, attest.ErrBadSignature) {
			// Malformed, for another resource, or expired once verified.
			return sasRefusal(verr)
		}
	}
	if key == nil {
		return sasRefusal(attest.ErrBadSignature)
	}
	if !t.consume(id, key) {
		return refuse(ReasonBadKeyOrSecret, "the TPM challenge of %q was used by another request", a.regID)
	}
	srk, err := attest.ParseTPMKey(req.TPM.StorageRootKey)
	if err != nil {
		return refuse(ReasonBadRequest, "the storage root key: %s", err)
	}
	// The same key, for the hub, in the assigned answer.
	blob, err := attest.BuildTPMActivation(rand.Reader, ek, srk, key)
	if err != nil {
		return refuse(ReasonBadRequest, "no activation blob can be made for this TPM: %s", err)
	}
	t.setAnswer(id, base64.StdEncoding.EncodeToString(blob), s.now())
	a.enrollment, a.policies = e, e.EnrollmentPolicies
	a.keys = &registry.SymmetricKeyAttestation{PrimaryKey: base64.StdEncoding.EncodeToString(key)}
	a.hubDeviceID, a.attestation = cmp.Or(e.DeviceID, a.regID), registry.AttestationTPM
	return nil
}

// TPMAuthenticationKey returns the activation blob of a TPM device's hub
// key, for the answer to its poll of an assigned registration
// (registrationState.tpm.authenticationKey, which the SDKs import), and
// whether there is one: only for a TPM registration assigned in the last
// TPMChallengeTTL on this node. The caller has checked the operation (see
// Registration).
func (s *Service) TPMAuthenticationKey(ctx context.Context, idScope, registrationID string) (string, bool) {
	orgID, err := s.orgOfScope(ctx, idScope)
	if err != nil {
		return "", false
	}
	return s.tpm().answer(tpmID(orgID, strings.ToLower(registrationID)), s.now())
}
