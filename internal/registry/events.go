package registry

import (
	"context"
	"sync"
)

// ChangeKind names a change that live sessions must react to.
type ChangeKind string

// Changes that end sessions.
const (
	// ChangeCredentialsRevoked: the credentials in Change.CredentialIDs no
	// longer authenticate.
	ChangeCredentialsRevoked ChangeKind = "credentials-revoked"
	// ChangeDeviceDisabled: no credential of the device authenticates.
	ChangeDeviceDisabled ChangeKind = "device-disabled"
	// ChangeDeviceDeleted: the device and its credentials are gone.
	ChangeDeviceDeleted ChangeKind = "device-deleted"
	// ChangeCertificatesRevoked: the certificates of the built-in CA with
	// the serials in Change.Serials no longer authenticate.
	ChangeCertificatesRevoked ChangeKind = "certificates-revoked"
)

// Change is published after a write that invalidates device sessions.
type Change struct {
	Kind          ChangeKind
	OrgID         string
	DeviceID      string
	CredentialIDs []string
	// Serials are certificate serials (lowercase hex), for
	// ChangeCertificatesRevoked.
	Serials []string
}

// Changes fans out Change notifications to subscribers in-process (the hub
// subscribes to disconnect sessions). Cross-node delivery comes later over NATS.
type Changes struct {
	mu   sync.RWMutex
	subs []func(Change)
}

// Subscribe registers fn; fn must not block for long.
func (c *Changes) Subscribe(fn func(Change)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.subs = append(c.subs, fn)
}

// Publish calls every subscriber, outside the lock so that a subscriber
// may itself subscribe.
func (c *Changes) Publish(ch Change) {
	c.mu.RLock()
	subs := c.subs[:len(c.subs):len(c.subs)]
	c.mu.RUnlock()
	for _, fn := range subs {
		fn(ch)
	}
}

// NotifyingStore wraps a Store and publishes a Change after every successful
// write that must end live sessions, so no caller can forget to.
type NotifyingStore struct {
	Store
	Changes *Changes
}

// SetDeviceStatus publishes ChangeDeviceDisabled when a device is disabled.
func (s NotifyingStore) SetDeviceStatus(ctx context.Context, orgID, id string, status DeviceStatus) (*Device, error) {
	d, err := s.Store.SetDeviceStatus(ctx, orgID, id, status)
	if err == nil && status == DeviceDisabled {
		s.Changes.Publish(Change{Kind: ChangeDeviceDisabled, OrgID: orgID, DeviceID: id})
	}
	return d, err
}

// DeleteDevice publishes ChangeDeviceDeleted.
func (s NotifyingStore) DeleteDevice(ctx context.Context, orgID, id string) error {
	err := s.Store.DeleteDevice(ctx, orgID, id)
	if err == nil {
		s.Changes.Publish(Change{Kind: ChangeDeviceDeleted, OrgID: orgID, DeviceID: id})
	}
	return err
}

// RevokeCredential publishes ChangeCredentialsRevoked.
func (s NotifyingStore) RevokeCredential(ctx context.Context, orgID, id string) (*Credential, error) {
	c, err := s.Store.RevokeCredential(ctx, orgID, id)
	if err == nil {
		s.Changes.Publish(Change{Kind: ChangeCredentialsRevoked, OrgID: orgID, DeviceID: c.DeviceID, CredentialIDs: []string{c.ID}})
	}
	return c, err
}

// CommitProvision publishes ChangeCredentialsRevoked for rotated
// credentials and ChangeCertificatesRevoked for rotated certificates.
func (s NotifyingStore) CommitProvision(ctx context.Context, c *ProvisionCommit) error {
	err := s.Store.CommitProvision(ctx, c)
	if err != nil {
		return err
	}
	if len(c.Revoked) > 0 {
		ids := make([]string, len(c.Revoked))
		for i, r := range c.Revoked {
			ids[i] = r.ID
		}
		s.Changes.Publish(Change{Kind: ChangeCredentialsRevoked, OrgID: c.Device.OrgID, DeviceID: c.Device.ID, CredentialIDs: ids})
	}
	if len(c.RevokedCertificates) > 0 {
		serials := make([]string, len(c.RevokedCertificates))
		for i, r := range c.RevokedCertificates {
			serials[i] = r.Serial
		}
		s.Changes.Publish(Change{Kind: ChangeCertificatesRevoked, OrgID: c.Device.OrgID, DeviceID: c.Device.ID, Serials: serials})
	}
	return nil
}

// RevokeCertificate publishes ChangeCertificatesRevoked, also when the
// certificate was already revoked (harmless, and it covers a session that
// raced the first revocation).
func (s NotifyingStore) RevokeCertificate(ctx context.Context, orgID, serial string, reason RevocationReason) (*Certificate, error) {
	c, err := s.Store.RevokeCertificate(ctx, orgID, serial, reason)
	if err == nil {
		s.Changes.Publish(Change{Kind: ChangeCertificatesRevoked, OrgID: orgID, DeviceID: c.DeviceID, Serials: []string{c.Serial}})
	}
	return c, err
}
