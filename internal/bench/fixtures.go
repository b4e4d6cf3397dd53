package bench

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Fixture is what a storm runs against, created through the management
// API and removed by Cleanup: a temporary provisioning profile
// (ThingsBoard), or a temporary enrollment group (Azure DPS).
type Fixture struct {
	client *apiclient.Client
	// ProfileID, Key and Secret identify the profile and let devices
	// provision against it.
	ProfileID, Name, Key, Secret string
	// GroupID and GroupKey identify a symmetric-key enrollment group and
	// its generated primary key; IDScope is the organisation's DPS ID
	// scope and CAChain the server's CA chain (PEM), which its MQTTS
	// listener's certificate verifies against.
	GroupID, GroupKey, IDScope string
	CAChain                    []byte
	// CA is an X.509 enrollment group's CA (made in memory by the bench,
	// its key never leaves the process), instead of GroupKey.
	CA *DeviceCA
	// devicePrefix starts the names of the devices the group's
	// registrations created (lower case, as registration ids are).
	devicePrefix string
}

// Describe names the fixture for people.
func (f *Fixture) Describe() string {
	if f.GroupID != "" {
		return "enrollment group " + f.GroupID
	}
	return fmt.Sprintf("profile %s (%s)", f.Name, f.ProfileID)
}

// Apply points t at the fixture: the profile's key and secret, or the
// group's key, the ID scope and the CA chain.
func (f *Fixture) Apply(t *Target) error {
	if f.GroupID == "" {
		t.ProfileKey, t.ProfileSecret = f.Key, f.Secret
		return nil
	}
	t.GroupKey, t.IDScope, t.CA = f.GroupKey, f.IDScope, f.CA
	if t.RootCAs == nil {
		return t.TrustCAChain(f.CAChain)
	}
	return nil
}

// TrustCAChain makes t's devices trust the certificates of chain (PEM),
// e.g. the server's CA chain from GET /ca/chain.pem.
func (t *Target) TrustCAChain(chain []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(chain) {
		return errors.New("the server's CA chain (GET /ca/chain.pem) holds no certificate")
	}
	t.RootCAs = pool
	return nil
}

// CreateDPSFixture creates an enabled symmetric-key enrollment group
// named name, whose keys the server generates, for devices whose
// registration ids start with devicePrefix (see Cleanup); it also reads
// the ID scope and the CA chain.
func CreateDPSFixture(ctx context.Context, c *apiclient.Client, name, devicePrefix string) (*Fixture, error) {
	f, g, err := createDPSGroup(ctx, c, name, devicePrefix, registry.GroupAttestation{Type: registry.AttestationSymmetricKey})
	if err != nil {
		return nil, err
	}
	if g.Attestation.SymmetricKey == nil || g.Attestation.SymmetricKey.PrimaryKey == "" {
		_, _ = f.Cleanup(ctx, nil)
		return nil, fmt.Errorf("the enrollment group %s came back without its keys (an API key of a role that may see them is needed)", g.ID)
	}
	f.GroupKey = g.Attestation.SymmetricKey.PrimaryKey
	return f, nil
}

// CreateDPSX509Fixture creates an enabled X.509 enrollment group named
// name, of a CA the bench makes in memory (ECDSA P-256) and vouches for as
// verified (which needs an operator key), for devices whose registration
// ids start with devicePrefix (see Cleanup); it also reads the ID scope
// and the CA chain.
func CreateDPSX509Fixture(ctx context.Context, c *apiclient.Client, name, devicePrefix string) (*Fixture, error) {
	ca, err := NewDeviceCA(strings.ToLower(name) + " CA")
	if err != nil {
		return nil, err
	}
	f, g, err := createDPSGroup(ctx, c, name, devicePrefix, registry.GroupAttestation{Type: registry.AttestationX509,
		X509CA: &registry.X509CAAttestation{CACertificatePEM: ca.PEM(), Verified: true}})
	if err != nil {
		return nil, err
	}
	if g.Attestation.X509CA == nil || !g.Attestation.X509CA.Verified {
		_, _ = f.Cleanup(ctx, nil)
		return nil, fmt.Errorf("the enrollment group %s came back with its CA not verified (an operator API key is needed to vouch for it)", g.ID)
	}
	f.CA = ca
	return f, nil
}

// createDPSGroup reads the ID scope and the CA chain and creates an
// enabled enrollment group named name with attestation a.
func createDPSGroup(ctx context.Context, c *apiclient.Client, name, devicePrefix string, a registry.GroupAttestation) (*Fixture, *registry.EnrollmentGroup, error) {
	scope, err := c.IDScope(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the ID scope: %w", err)
	}
	chain, err := c.CAChainPEM(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA chain: %w", err)
	}
	g, err := c.CreateEnrollmentGroup(ctx, api.CreateEnrollmentGroupRequest{
		ID:          strings.ToLower(name),
		Attestation: a,
		EnrollmentPolicies: registry.EnrollmentPolicies{
			Status:            registry.EnrollmentEnabled,
			ReprovisionPolicy: registry.EnrollmentReprovisionNever,
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("creating the bench enrollment group: %w", err)
	}
	return &Fixture{client: c, GroupID: g.ID, IDScope: scope, CAChain: chain, devicePrefix: strings.ToLower(devicePrefix)}, g, nil
}

// CreateFixture creates a profile named name that lets devices create
// themselves (allow-create), issues access tokens and never
// reprovisions.
func CreateFixture(ctx context.Context, c *apiclient.Client, name string) (*Fixture, error) {
	p, err := c.CreateProfile(ctx, api.CreateProfileRequest{
		Name:                   name,
		Description:            "temporary profile of zerotouch bench provision",
		Strategy:               registry.StrategyAllowCreate,
		DefaultCredentialsType: registry.CredentialAccessToken,
		ReprovisionPolicy:      registry.ReprovisionNever,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the bench profile: %w", err)
	}
	return &Fixture{client: c, ProfileID: p.ID, Name: p.Name, Key: p.ProvisionKey, Secret: p.ProvisionDeviceSecret}, nil
}

// cleanupWorkers is how many devices are deleted at once: each deletion
// is a durable commit, which the server groups when they come together.
const cleanupWorkers = 16

// dpsProfile is the profile the server puts every device registered
// through DPS in (provision.dpsProfileName).
const dpsProfile = "azure-dps"

// Cleanup deletes the fixture's devices (with their credentials and, for
// DPS, their registration records; the API deletes one device per call,
// there is no bulk deletion) and then the profile or the enrollment
// group. A group's devices are the DPS devices whose names start with the
// bench's prefix. It returns how many devices it deleted. progress, when
// set, is called after each page.
func (f *Fixture) Cleanup(ctx context.Context, progress func(deleted int)) (int, error) {
	var deleted atomic.Int64
	filter := apiclient.DeviceFilter{ProfileID: f.ProfileID, Limit: registry.MaxPageSize}
	if f.GroupID != "" {
		filter = apiclient.DeviceFilter{ProfileName: dpsProfile, NamePrefix: f.devicePrefix, Limit: registry.MaxPageSize}
	}
	for f.GroupID == "" || f.devicePrefix != "" {
		// Always the first page: what was deleted is gone from it.
		page, err := f.client.ListDevices(ctx, filter)
		var ae *apiclient.Error
		if f.GroupID != "" && errors.As(err, &ae) && ae.Status == 422 {
			break // no DPS profile yet: no device registered through DPS
		}
		if err != nil {
			return int(deleted.Load()), fmt.Errorf("listing the bench devices: %w", err)
		}
		if len(page.Items) == 0 {
			break
		}
		ids := make(chan string)
		var firstErr error
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range cleanupWorkers {
			wg.Go(func() {
				for id := range ids {
					err := f.client.DeleteDevice(ctx, id)
					var ae *apiclient.Error
					if errors.As(err, &ae) && ae.Status == 404 {
						err = nil // deleted meanwhile
					}
					if err != nil {
						mu.Lock()
						firstErr = cmp.Or(firstErr, err)
						mu.Unlock()
						continue
					}
					deleted.Add(1)
				}
			})
		}
		for _, d := range page.Items {
			ids <- d.ID
		}
		close(ids)
		wg.Wait()
		if firstErr != nil {
			return int(deleted.Load()), fmt.Errorf("deleting the bench devices: %w", firstErr)
		}
		if progress != nil {
			progress(int(deleted.Load()))
		}
	}
	if f.GroupID != "" {
		if err := f.client.DeleteEnrollmentGroup(ctx, f.GroupID); err != nil {
			return int(deleted.Load()), fmt.Errorf("deleting the bench enrollment group %s: %w", f.GroupID, err)
		}
		return int(deleted.Load()), nil
	}
	if err := f.client.DeleteProfile(ctx, f.ProfileID); err != nil {
		return int(deleted.Load()), fmt.Errorf("deleting the bench profile %s: %w", f.ProfileID, err)
	}
	return int(deleted.Load()), nil
}
