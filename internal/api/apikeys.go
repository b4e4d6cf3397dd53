package api

import (
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// CreateAPIKeyRequest is the body of POST /api/apikeys.
type CreateAPIKeyRequest struct {
	Name string `json:"name"`
	// Role is admin, operator, oem or viewer.
	Role string `json:"role"`
}

// CreatedAPIKey is the answer to POST /api/apikeys: the key in clear,
// shown this once.
type CreatedAPIKey struct {
	registry.APIKey
	Key string `json:"key"`
}

func (s *server) listAPIKeys(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	ks, err := s.store.ListAPIKeys(r.Context(), key.OrgID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newList(ks, ""))
	return nil
}

func (s *server) createAPIKey(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req CreateAPIKeyRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := registry.ValidateName("API key", req.Name); err != nil {
		return err
	}
	if parseRole(req.Role) == rolePublic {
		return invalid("unknown role %q (want admin, operator, oem or viewer)", req.Role)
	}
	plain := secret.Generate(secret.TokenLength)
	k := &registry.APIKey{
		ID:        uuid.NewString(),
		OrgID:     key.OrgID,
		Name:      req.Name,
		Role:      req.Role,
		Hash:      secret.LookupHash(plain),
		CreatedAt: time.Now().UTC(),
	}
	if err := s.store.CreateAPIKey(r.Context(), k); err != nil {
		return err
	}
	s.audit(r, key, registry.AuditEvent{Action: "apikey.create", Detail: "created " + k.Role + " API key " + k.Name + " (" + k.ID + ")"})
	writeJSON(w, http.StatusCreated, CreatedAPIKey{APIKey: *k, Key: plain})
	return nil
}

func (s *server) deleteAPIKey(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	id := r.PathValue("id")
	ks, err := s.store.ListAPIKeys(r.Context(), key.OrgID)
	if err != nil {
		return err
	}
	var target *registry.APIKey
	for i := range ks {
		if ks[i].ID == id {
			target = &ks[i]
		}
	}
	if target == nil {
		return notFound("API key", id, registry.ErrNotFound)
	}
	// The store refuses, atomically with the deletion, to delete the last
	// admin key (which would leave nobody able to make keys): a
	// ConflictError, answered 409.
	if err := s.store.DeleteAPIKey(r.Context(), key.OrgID, id); err != nil {
		return notFound("API key", id, err)
	}
	s.audit(r, key, registry.AuditEvent{Action: "apikey.delete", Detail: "deleted " + target.Role + " API key " + target.Name + " (" + id + ")"})
	w.WriteHeader(http.StatusNoContent)
	return nil
}
