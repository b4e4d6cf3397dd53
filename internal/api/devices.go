package api

import (
	"cmp"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/zerotouch/zerotouch/internal/provision"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// CreateDeviceRequest is the body of POST /api/devices: a pre-provisioned
// device, which normally gets its credentials when it provisions itself.
type CreateDeviceRequest struct {
	Name string `json:"name"`
	// ProfileID or ProfileName names the device's profile (exactly one).
	ProfileID   string `json:"profileId,omitempty"`
	ProfileName string `json:"profileName,omitempty"`
	// Status defaults to enabled; a component maker registers units disabled.
	Status     registry.DeviceStatus `json:"status,omitempty"`
	Attributes map[string]any        `json:"attributes,omitempty"`
	// Credentials, when given, are issued now; an empty credentialsType
	// means the profile's default type, and empty values are generated.
	Credentials *CredentialsInput `json:"credentials,omitempty"`
}

// CredentialsInput is a credential as an operator gives it, with
// ThingsBoard's field names.
type CredentialsInput struct {
	CredentialsType registry.CredentialType `json:"credentialsType,omitempty"`
	Token           string                  `json:"token,omitempty"`
	ClientID        string                  `json:"clientId,omitempty"`
	Username        string                  `json:"username,omitempty"`
	Password        string                  `json:"password,omitempty"`
	// Hash is the X.509 certificate PEM or its SHA-256 fingerprint.
	Hash string `json:"hash,omitempty"`
}

// CreatedDevice is the answer to POST /api/devices.
type CreatedDevice struct {
	registry.Device
	// Credentials is set when the request asked for credentials: the
	// stored record plus its secrets in clear, shown this once.
	Credentials *IssuedCredential `json:"credentials,omitempty"`
}

// IssuedCredential is a credential with its secrets in clear.
type IssuedCredential struct {
	registry.Credential
	Token    string `json:"token,omitempty"`
	Password string `json:"password,omitempty"`
}

func (s *server) createDevice(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	var req CreateDeviceRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	p, err := s.resolveProfile(ctx, key.OrgID, req.ProfileID, req.ProfileName)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	nd := registry.NewDevice{Device: registry.Device{
		ID:         uuid.NewString(),
		OrgID:      key.OrgID,
		ProfileID:  p.ID,
		Name:       req.Name,
		Status:     cmp.Or(req.Status, registry.DeviceEnabled),
		Attributes: req.Attributes,
		CreatedAt:  now,
		UpdatedAt:  now,
	}}
	if err := nd.Device.Validate(); err != nil {
		return err
	}
	var out CreatedDevice
	if c := req.Credentials; c != nil {
		cred, issued, err := provision.BuildCredential(provision.CredentialsRequest{
			Type: c.CredentialsType, Token: c.Token,
			ClientID: c.ClientID, Username: c.Username, Password: c.Password,
			Certificate: c.Hash,
		}, p.DefaultCredentialType, now)
		if err != nil {
			return err
		}
		cred.OrgID, cred.DeviceID = key.OrgID, nd.Device.ID
		nd.Credentials = []registry.Credential{cred}
		out.Credentials = &IssuedCredential{Credential: cred, Token: issued.Token, Password: issued.Password}
	}
	if err := s.store.CreateDevices(ctx, []registry.NewDevice{nd}); err != nil {
		return err
	}
	s.audit(r, key, registry.AuditEvent{Action: "device.create", DeviceID: nd.Device.ID, ProfileID: p.ID, Detail: "created device " + nd.Device.Name})
	d, err := s.store.GetDevice(ctx, key.OrgID, nd.Device.ID) // as stored: version, timestamps
	if err != nil {
		return err
	}
	out.Device = *d
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *server) listDevices(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	q := r.URL.Query()
	opts, err := listOptions(q)
	if err != nil {
		return err
	}
	f := registry.DeviceFilter{ProfileID: q.Get("profileId"), NamePrefix: q.Get("namePrefix"), ListOptions: opts}
	if name := q.Get("profileName"); name != "" {
		p, err := s.resolveProfile(r.Context(), key.OrgID, f.ProfileID, name)
		if err != nil {
			return err
		}
		f.ProfileID = p.ID
	}
	if v := q.Get("status"); v != "" {
		if f.Status = registry.DeviceStatus(v); !f.Status.Valid() {
			return badRequest("query parameter status=%q: want enabled or disabled", v)
		}
	}
	if f.Provisioned, err = queryBool(q, "provisioned"); err != nil {
		return err
	}
	ds, next, err := s.store.ListDevices(r.Context(), key.OrgID, f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newList(ds, next))
	return nil
}

func (s *server) device(r *http.Request, key *registry.APIKey) (*registry.Device, error) {
	id := r.PathValue("id")
	d, err := s.store.GetDevice(r.Context(), key.OrgID, id)
	return d, notFound("device", id, err)
}

func (s *server) getDevice(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.device(r, key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *server) deleteDevice(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.device(r, key)
	if err != nil {
		return err
	}
	if err := s.store.DeleteDevice(r.Context(), key.OrgID, d.ID); err != nil {
		return notFound("device", d.ID, err)
	}
	s.audit(r, key, registry.AuditEvent{Action: "device.delete", DeviceID: d.ID, ProfileID: d.ProfileID, Detail: "deleted device " + d.Name})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) enableDevice(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return s.setDeviceStatus(w, r, key, registry.DeviceEnabled, "device.enable")
}

func (s *server) disableDevice(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	return s.setDeviceStatus(w, r, key, registry.DeviceDisabled, "device.disable")
}

func (s *server) setDeviceStatus(w http.ResponseWriter, r *http.Request, key *registry.APIKey, st registry.DeviceStatus, action string) error {
	id := r.PathValue("id")
	d, err := s.store.SetDeviceStatus(r.Context(), key.OrgID, id, st)
	if err != nil {
		return notFound("device", id, err)
	}
	s.audit(r, key, registry.AuditEvent{Action: action, DeviceID: d.ID, ProfileID: d.ProfileID, Detail: string(st) + " device " + d.Name})
	writeJSON(w, http.StatusOK, d)
	return nil
}

func (s *server) listCredentials(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	d, err := s.device(r, key) // an unknown device is a 404, not an empty list
	if err != nil {
		return err
	}
	cs, err := s.store.ListCredentials(r.Context(), key.OrgID, d.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newList(cs, ""))
	return nil
}

func (s *server) revokeCredential(w http.ResponseWriter, r *http.Request, key *registry.APIKey) error {
	id := r.PathValue("id")
	c, err := s.store.RevokeCredential(r.Context(), key.OrgID, id)
	if err != nil {
		return notFound("credential", id, err)
	}
	if err := s.revokeCredentialCertificate(r, c); err != nil {
		return err
	}
	s.audit(r, key, registry.AuditEvent{Action: "credential.revoke", DeviceID: c.DeviceID,
		Detail: "revoked " + string(c.Type) + " credential " + c.ID})
	writeJSON(w, http.StatusOK, c)
	return nil
}
