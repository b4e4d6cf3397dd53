package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// State is what the agent keeps between runs: the credentials it got when
// it provisioned. It holds secrets, so its file is private (0600).
type State struct {
	Dialect         string `json:"dialect"`
	Server          string `json:"server"`
	DeviceName      string `json:"deviceName"`
	CredentialsType string `json:"credentialsType"`
	Token           string `json:"token,omitempty"`
	ClientID        string `json:"clientId,omitempty"`
	Username        string `json:"username,omitempty"`
	Password        string `json:"password,omitempty"`
	// Azure (dialect azure-dps): the hub DPS assigned (host[:port], used
	// verbatim), the device's id there, and the credential: the device's
	// symmetric key (an individual enrollment's, or the one derived from
	// a group key — the group key itself is never stored), or the files
	// of its certificate and key. OperationID is the registration's.
	AssignedHub  string `json:"assignedHub,omitempty"`
	DeviceID     string `json:"deviceId,omitempty"`
	SymmetricKey string `json:"symmetricKey,omitempty"`
	CertFile     string `json:"certFile,omitempty"`
	KeyFile      string `json:"keyFile,omitempty"`
	OperationID  string `json:"operationId,omitempty"`
	// PendingCertFile and PendingKeyFile are a renewed certificate and
	// key not yet used successfully: the agent connects with them first,
	// then they replace CertFile and KeyFile (which, for a ThingsBoard
	// device, are empty until its first renewal: the configuration's
	// files are used). Refused, they are dropped and the previous pair is
	// used again.
	PendingCertFile string `json:"pendingCertFile,omitempty"`
	PendingKeyFile  string `json:"pendingKeyFile,omitempty"`

	ProvisionedAt time.Time `json:"provisionedAt"`
}

// ErrNoState is returned by LoadState when there is no state file yet.
var ErrNoState = errors.New("no state file")

// LoadState reads the state file; ErrNoState (wrapped) when it does not
// exist. A file that exists but cannot be read as a state is an error, not
// a reason to provision again: provisioning a second time could be refused
// (policy never) or revoke credentials another copy still uses.
func LoadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoState, path)
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("state file %s is damaged (%v): move it away to provision again", path, err)
	}
	if s.CredentialsType == "" {
		return nil, fmt.Errorf("state file %s holds no credentials: move it away to provision again", path)
	}
	return &s, nil
}

// SaveState writes the state file atomically with permissions 0600.
func SaveState(path string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(b, '\n'), 0o600)
}

// WriteFileAtomic replaces path with data so that, whatever happens, path
// holds either its previous content or all of data: it writes a temporary
// file in the same directory (same file system, so rename is atomic),
// syncs it, renames it over path and syncs the directory so the rename
// itself survives a power cut. The temporary file is created with perm from
// the start, so a secret is never readable by others, not even briefly.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return writeFileAtomic(path, data, perm, nil)
}

// writeFileAtomic is WriteFileAtomic with a hook run between the synced
// write and the rename: tests use it to play a crash at the worst moment.
func writeFileAtomic(path string, data []byte, perm fs.FileMode, beforeRename func(tmp string) error) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600; Chmod covers a perm asked otherwise.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if beforeRename != nil {
		if err := beforeRename(tmp); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Best effort: some file systems cannot sync a directory.
		_ = d.Sync()
		d.Close()
	}
	return nil
}
