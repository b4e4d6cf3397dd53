package api

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// CreateProfileRequest is the body of POST /api/profiles.
type CreateProfileRequest struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Strategy    registry.Strategy `json:"strategy"`
	// DefaultCredentialsType defaults to ACCESS_TOKEN.
	DefaultCredentialsType registry.CredentialType `json:"defaultCredentialsType,omitempty"`
	// ReprovisionPolicy defaults to never.
	ReprovisionPolicy registry.ReprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	// ProvisionDeviceKey and ProvisionDeviceSecret are generated when empty;
	// an operator sets them to match devices already flashed with them.
	ProvisionDeviceKey    string `json:"provisionDeviceKey,omitempty"`
	ProvisionDeviceSecret string `json:"provisionDeviceSecret,omitempty"`
	// X509CertificateChain, when set, provisions devices on their first
	// TLS connection with a certificate chained to the CAs it holds.
	X509CertificateChain *registry.X509ChainProvisioning `json:"x509CertificateChain,omitempty"`
}

// UpdateProfileRequest is the body of PATCH /api/profiles/{id}: absent
// fields are left unchanged.
type UpdateProfileRequest struct {
	Name                   *string                     `json:"name,omitempty"`
	Description            *string                     `json:"description,omitempty"`
	Strategy               *registry.Strategy          `json:"strategy,omitempty"`
	DefaultCredentialsType *registry.CredentialType    `json:"defaultCredentialsType,omitempty"`
	ReprovisionPolicy      *registry.ReprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	ProvisionDeviceKey     *string                     `json:"provisionDeviceKey,omitempty"`
	// ProvisionDeviceSecret sets a chosen secret (it is not echoed back);
	// POST /api/profiles/{id}/rotate-secret generates one instead.
	ProvisionDeviceSecret *string `json:"provisionDeviceSecret,omitempty"`
	// X509CertificateChain replaces the profile's X.509 chain
	// provisioning when it is an object and removes it when it is null;
	// absent leaves it unchanged.
	X509CertificateChain X509ChainUpdate `json:"x509CertificateChain,omitzero"`
	// Version, when given, is the version of the profile the change is
	// based on (as read by the client): if the profile has been written
	// since, the PATCH is refused with 409 instead of overwriting that write.
	Version *int64 `json:"version,omitempty"`
}

// X509ChainUpdate is a PATCH of a profile's X.509 chain provisioning: the
// zero value changes nothing; Set with a nil Chain (JSON null) removes it;
// Set with a Chain replaces it. It stays comparable, so that a request can
// be compared with the empty one.
type X509ChainUpdate struct {
	Set   bool
	Chain *registry.X509ChainProvisioning
}

// UnmarshalJSON reads null or an X509ChainProvisioning object, refusing
// unknown fields as the rest of the API does.
func (u *X509ChainUpdate) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*u = X509ChainUpdate{Set: true}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c registry.X509ChainProvisioning
	if err := dec.Decode(&c); err != nil {
		return fmt.Errorf("x509CertificateChain: %w", err)
	}
	*u = X509ChainUpdate{Set: true, Chain: &c}
	return nil
}

// MarshalJSON writes null or the object; the zero value is left out by
// the request's omitzero.
func (u X509ChainUpdate) MarshalJSON() ([]byte, error) {
	if u.Chain == nil {
		return []byte("null"), nil
	}
	return json.Marshal(u.Chain)
}

// ProfileWithSecret is a profile with its provision secret in clear: the
// answer to creating a profile or rotating its secret, the only times the
// secret is shown.
type ProfileWithSecret struct {
	registry.Profile
	ProvisionDeviceSecret string `json:"provisionDeviceSecret"`
}

// setProvisionSecret stores the hash of s (generated when empty) in p and
// returns the secret in clear. A generated secret gets a fast hash, a chosen
// one a slow hash.
func setProvisionSecret(p *registry.Profile, s string) (string, error) {
	if s == "" {
		s = secret.Generate(secret.TokenLength)
		p.ProvisionSecretHash = secret.Hash(s)
		return s, nil
	}
	if len(s) > registry.MaxKeyLen || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", invalid("provision secret must be at most %d bytes of printable UTF-8", registry.MaxKeyLen)
	}
	// Chosen by the operator: it may be guessable, so hash it slowly.
	p.ProvisionSecretHash = secret.HashSlow(s)
	return s, nil
}

func (s *server) createProfile(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req CreateProfileRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	p := &registry.Profile{
		OrgID:                 key.OrgID,
		Name:                  req.Name,
		Description:           req.Description,
		Strategy:              req.Strategy,
		DefaultCredentialType: cmp.Or(req.DefaultCredentialsType, registry.CredentialAccessToken),
		ReprovisionPolicy:     cmp.Or(req.ReprovisionPolicy, registry.ReprovisionNever),
		ProvisionKey:          cmp.Or(req.ProvisionDeviceKey, secret.Generate(secret.TokenLength)),
		X509Chain:             req.X509CertificateChain,
	}
	plain, err := setProvisionSecret(p, req.ProvisionDeviceSecret)
	if err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if err := s.store.CreateProfile(r.Context(), p); err != nil {
		return err
	}
	s.audit(r, key, registry.AuditEvent{Action: "profile.create", ProfileID: p.ID, Detail: "created profile " + p.Name})
	writeJSON(w, http.StatusCreated, ProfileWithSecret{Profile: *p, ProvisionDeviceSecret: plain})
	return nil
}

func (s *server) listProfiles(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	opts, err := listOptions(r.URL.Query())
	if err != nil {
		return err
	}
	ps, next, err := s.store.ListProfiles(r.Context(), key.OrgID, opts)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newList(ps, next))
	return nil
}

func (s *server) profile(r *http.Request, key *registry.APIKey) (*registry.Profile, error) {
	id := r.PathValue("id")
	p, err := s.store.GetProfile(r.Context(), key.OrgID, id)
	return p, notFound("profile", id, err)
}

func (s *server) getProfile(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	p, err := s.profile(r, key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (s *server) updateProfile(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req UpdateProfileRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	p, err := s.profile(r, key)
	if err != nil {
		return err
	}
	if req.Version != nil && *req.Version != p.Version {
		return conflict("profile %q is at version %d, the change is based on version %d: read it again and reapply the change",
			p.ID, p.Version, *req.Version)
	}
	// The update applies only if the profile is still at the version just
	// read (p.Version): a write in between, such as a secret rotation, is
	// never overwritten with what was read before it.
	base := p.Version
	var changed []string
	set := func(name string, dst *string, v *string) {
		if v != nil && *v != *dst {
			*dst = *v
			changed = append(changed, name)
		}
	}
	set("name", &p.Name, req.Name)
	set("description", &p.Description, req.Description)
	set("strategy", (*string)(&p.Strategy), (*string)(req.Strategy))
	set("defaultCredentialsType", (*string)(&p.DefaultCredentialType), (*string)(req.DefaultCredentialsType))
	set("reprovisionPolicy", (*string)(&p.ReprovisionPolicy), (*string)(req.ReprovisionPolicy))
	set("provisionDeviceKey", &p.ProvisionKey, req.ProvisionDeviceKey)
	if req.ProvisionDeviceSecret != nil {
		if *req.ProvisionDeviceSecret == "" {
			return invalid("provisionDeviceSecret is empty; use rotate-secret to generate one")
		}
		if _, err := setProvisionSecret(p, *req.ProvisionDeviceSecret); err != nil {
			return err
		}
		changed = append(changed, "provisionDeviceSecret")
	}
	if u := req.X509CertificateChain; u.Set && !reflect.DeepEqual(u.Chain, p.X509Chain) {
		p.X509Chain = u.Chain
		changed = append(changed, "x509CertificateChain")
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if err := s.store.UpdateProfile(r.Context(), p); err != nil {
		if s.profileChangedSince(r, key, p.ID, base, err) {
			return conflict("profile %q changed while it was being updated: read it again and retry", p.ID)
		}
		return notFound("profile", p.ID, err)
	}
	s.audit(r, key, registry.AuditEvent{Action: "profile.update", ProfileID: p.ID,
		Detail: "updated profile " + p.Name + " (changed: " + cmp.Or(strings.Join(changed, ", "), "nothing") + ")"})
	writeJSON(w, http.StatusOK, p)
	return nil
}

// profileChangedSince tells whether err, from UpdateProfile of a profile
// read at version base, is the store's version check: another write got in
// between. A conflict of the same What ("profile") may also be a name or
// provision key taken; the version check comes first in every store, and
// versions only grow, so the stored version still being base means the
// conflict is a uniqueness one.
func (s *server) profileChangedSince(r *http.Request, key *registry.APIKey, id string, base int64, err error) bool {
	var ce *registry.ConflictError
	if !errors.As(err, &ce) || ce.What != "profile" {
		return false
	}
	cur, gerr := s.store.GetProfile(r.Context(), key.OrgID, id)
	return gerr == nil && cur.Version != base
}

// conflict is a 409 answer with a message of its own.
func conflict(format string, args ...any) error {
	return &httpError{http.StatusConflict, CodeConflict, fmt.Sprintf(format, args...)}
}

func (s *server) deleteProfile(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	p, err := s.profile(r, key)
	if err != nil {
		return err
	}
	if err := s.store.DeleteProfile(r.Context(), key.OrgID, p.ID); err != nil {
		return notFound("profile", p.ID, err)
	}
	s.audit(r, key, registry.AuditEvent{Action: "profile.delete", ProfileID: p.ID, Detail: "deleted profile " + p.Name})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) rotateProfileSecret(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	p, err := s.profile(r, key)
	if err != nil {
		return err
	}
	plain, err := setProvisionSecret(p, "")
	if err != nil {
		return err
	}
	// Written only if nobody wrote the profile since it was read, so a
	// concurrent PATCH cannot put the old secret back, nor this rotation
	// undo the PATCH. On a conflict the generated secret is discarded, never
	// shown: the client retries, and gets a secret that was stored.
	if err := s.store.UpdateProfile(r.Context(), p); err != nil {
		if errors.Is(err, registry.ErrConflict) {
			return conflict("the profile changed while rotating its secret; retry")
		}
		return notFound("profile", p.ID, err)
	}
	s.audit(r, key, registry.AuditEvent{Action: "profile.rotate-secret", ProfileID: p.ID, Detail: "rotated the provision secret of profile " + p.Name})
	writeJSON(w, http.StatusOK, ProfileWithSecret{Profile: *p, ProvisionDeviceSecret: plain})
	return nil
}
