package sqlite

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/zerotouch/zerotouch/internal/registry"
)

// errNoSealer: symmetric keys are written only sealed, and this store was
// opened without Options.Sealer.
var errNoSealer = errors.New("sqlite: storing symmetric keys needs Options.Sealer")

// Labels bind a sealed value to its record and column (see internal/seal):
// a value copied into another row does not open there.
func enrollmentKeyLabel(orgID, regID, which string) string {
	return "enrollment/" + orgID + "/" + regID + "/" + which
}

func groupKeyLabel(orgID, id, which string) string {
	return "enrollment-group/" + orgID + "/" + id + "/" + which
}

func credentialKeyLabel(orgID, id string) string { return "credential/" + orgID + "/" + id }

// sealKeys seals a symmetric key pair for storage; a nil pair is "", "".
func (s *Store) sealKeys(k *registry.SymmetricKeyAttestation, label func(which string) string) (primary, secondary string, err error) {
	if k == nil {
		return "", "", nil
	}
	if s.sealer == nil {
		return "", "", errNoSealer
	}
	primary = s.sealer.Seal([]byte(k.PrimaryKey), label("primary"))
	if k.SecondaryKey != "" {
		secondary = s.sealer.Seal([]byte(k.SecondaryKey), label("secondary"))
	}
	return primary, secondary, nil
}

// openKeys opens what sealKeys stored.
func (s *Store) openKeys(primary, secondary string, label func(which string) string) (*registry.SymmetricKeyAttestation, error) {
	open := func(v, which string) (string, error) {
		if v == "" {
			return "", nil
		}
		if s.sealer == nil {
			return "", errNoSealer
		}
		b, err := s.sealer.Open(v, label(which))
		if err != nil {
			return "", fmt.Errorf("open the sealed %s key of %s: %w", which, label(which), err)
		}
		return string(b), nil
	}
	var k registry.SymmetricKeyAttestation
	var err error
	if k.PrimaryKey, err = open(primary, "primary"); err != nil {
		return nil, err
	}
	if k.SecondaryKey, err = open(secondary, "secondary"); err != nil {
		return nil, err
	}
	return &k, nil
}

// sealCredentialKey seals a SYMMETRIC_KEY credential's keys as one JSON
// value; "" for other credentials.
func (s *Store) sealCredentialKey(c *registry.Credential) (string, error) {
	if c.SymmetricKey == nil {
		if c.Type == registry.CredentialSymmetricKey {
			return "", fmt.Errorf("%w: SYMMETRIC_KEY credential without its key", registry.ErrInvalid)
		}
		return "", nil
	}
	if c.Type != registry.CredentialSymmetricKey {
		return "", fmt.Errorf("%w: a %s credential has no symmetric key", registry.ErrInvalid, c.Type)
	}
	if err := c.SymmetricKey.Validate(); err != nil {
		return "", err
	}
	if s.sealer == nil {
		return "", errNoSealer
	}
	b, _ := json.Marshal(c.SymmetricKey)
	defer clear(b)
	return s.sealer.Seal(b, credentialKeyLabel(c.OrgID, c.ID)), nil
}

// openCredentialKey sets c.SymmetricKey from its sealed column value.
func (s *Store) openCredentialKey(c *registry.Credential, sealed string) error {
	if sealed == "" {
		return nil
	}
	if s.sealer == nil {
		return errNoSealer
	}
	b, err := s.sealer.Open(sealed, credentialKeyLabel(c.OrgID, c.ID))
	if err != nil {
		return fmt.Errorf("open the sealed key of credential %s: %w", c.ID, err)
	}
	defer clear(b)
	var k registry.SymmetricKeyAttestation
	if err := json.Unmarshal(b, &k); err != nil {
		return fmt.Errorf("credential %s: sealed key: %w", c.ID, err)
	}
	c.SymmetricKey = &k
	return nil
}
