package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/zerotouch/zerotouch/internal/api"
	"github.com/zerotouch/zerotouch/internal/apiclient"
	"github.com/zerotouch/zerotouch/internal/registry"
)

// Fixture is a temporary provisioning profile a storm runs against,
// created through the management API.
type Fixture struct {
	client *apiclient.Client
	// ProfileID, Key and Secret identify the profile and let devices
	// provision against it.
	ProfileID, Name, Key, Secret string
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

// Cleanup deletes the profile's devices (with their credentials; the API
// deletes one device per call, there is no bulk deletion) and then the
// profile. It returns how many devices it deleted. progress, when set, is
// called after each page.
func (f *Fixture) Cleanup(ctx context.Context, progress func(deleted int)) (int, error) {
	var deleted atomic.Int64
	for {
		// Always the first page: what was deleted is gone from it.
		page, err := f.client.ListDevices(ctx, apiclient.DeviceFilter{ProfileID: f.ProfileID, Limit: registry.MaxPageSize})
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
	if err := f.client.DeleteProfile(ctx, f.ProfileID); err != nil {
		return int(deleted.Load()), fmt.Errorf("deleting the bench profile %s: %w", f.ProfileID, err)
	}
	return int(deleted.Load()), nil
}
