package pki

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Names of the files in a CA directory (see the package documentation).
const (
	rootCertFile    = "root.crt"
	rootKeyFile     = "root.key"
	issuingCertFile = "issuing.crt"
	issuingKeyFile  = "issuing.key"
	crlNumberFile   = "crlnumber"
	defaultKEKFile  = "kek"
	// creatingMarker is written first when a CA is created and removed
	// last: a directory holding it, without issuing.crt, is an interrupted
	// creation whose files were never used, and may be cleared.
	creatingMarker = ".creating"
	tmpPrefix      = ".tmp-"
)

// maxFileSize bounds what is read from the CA directory, so that a
// damaged or replaced file cannot make Open allocate without limit.
const maxFileSize = 1 << 20

// readFile reads a CA file of at most maxFileSize bytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, path, maxFileSize)
	}
	return b, nil
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory is written, synced and renamed over path, and the directory is
// synced, so that a crash leaves either the old file or the new one, whole.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tmpPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600; set perm before any byte is written.
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a directory's entries (a rename, a new file) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		// Some platforms cannot sync a directory; the rename is then as
		// durable as the platform makes it.
		return err
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// dirState says what a CA directory holds.
type dirState int

const (
	dirEmpty       dirState = iota // missing, empty, or an interrupted creation (cleared)
	dirHasCA                       // issuing.crt exists
	dirUnknownData                 // other files: not ours to overwrite
)

// inspectDir classifies dir, clearing the leftovers of an interrupted
// creation. keyFile is never removed: it may predate the creation.
func inspectDir(dir, keyFile string) (dirState, []string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return dirEmpty, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	var names []string
	marker := false
	for _, e := range entries {
		switch e.Name() {
		case issuingCertFile:
			return dirHasCA, nil, nil
		case creatingMarker:
			marker = true
		}
		names = append(names, e.Name())
	}
	if len(names) == 0 {
		return dirEmpty, nil, nil
	}
	if !marker {
		return dirUnknownData, names, nil
	}
	ours := func(n string) bool {
		switch n {
		case rootCertFile, rootKeyFile, issuingKeyFile, crlNumberFile, creatingMarker:
			return true
		}
		return strings.HasPrefix(n, tmpPrefix)
	}
	for _, n := range names {
		if !ours(n) && filepath.Join(dir, n) != keyFile {
			return dirUnknownData, names, nil
		}
	}
	for _, n := range names {
		if ours(n) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return 0, nil, fmt.Errorf("clear an interrupted CA creation: %w", err)
			}
		}
	}
	return dirEmpty, nil, nil
}
