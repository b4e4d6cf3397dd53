package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/zerotouch/zerotouch/internal/registry"
	"github.com/zerotouch/zerotouch/internal/secret"
)

// AdminKeyPrefix starts every generated API key, so that a leaked key is
// recognisable by secret scanners.
const AdminKeyPrefix = "ztk_"

// bootstrapAdminKey makes sure the default organisation can be managed:
//   - a key given by the operator is stored (as a hash) unless already there;
//   - otherwise, when no key exists yet (first start), one is generated and
//     printed to banner, the only time it is ever shown.
func bootstrapAdminKey(ctx context.Context, st registry.Store, given string, banner io.Writer) error {
	if given != "" {
		_, err := st.GetAPIKeyByHash(ctx, secret.LookupHash(given))
		if err == nil {
			return nil
		}
		if !errors.Is(err, registry.ErrNotFound) {
			return err
		}
		return st.CreateAPIKey(ctx, &registry.APIKey{ID: uuid.NewString(), OrgID: registry.DefaultOrgID,
			Name: "initial admin key (from configuration)", Role: registry.RoleAdmin,
			Hash: secret.LookupHash(given), CreatedAt: time.Now().UTC()})
	}
	keys, err := st.ListAPIKeys(ctx, registry.DefaultOrgID)
	if err != nil {
		return err
	}
	if len(keys) > 0 {
		return nil
	}
	key := AdminKeyPrefix + secret.Generate(32)
	if err := st.CreateAPIKey(ctx, &registry.APIKey{ID: uuid.NewString(), OrgID: registry.DefaultOrgID,
		Name: "initial admin key (generated)", Role: registry.RoleAdmin,
		Hash: secret.LookupHash(key), CreatedAt: time.Now().UTC()}); err != nil {
		return err
	}
	_, err = fmt.Fprintf(banner, `
  zerotouch generated an admin API key. It is shown only this once; store it now:

      export ZEROTOUCH_API_KEY=%s

  Only its hash is kept. Lost it? Stop the server and start it once with
  ZEROTOUCH_ADMIN_KEY=<a new key of 16+ characters> to add another.

`, key)
	return err
}
