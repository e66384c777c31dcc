package handover

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// maxSocketPath is the longest path bind(2) takes for a unix socket (sun_path is 108 bytes
// with its terminating NUL).
const maxSocketPath = 107

// DefaultPath returns the hand-over socket path for a config file, so that two processes
// started with the same config meet and processes of different configs never do. The
// directory is $RUNTIME_DIRECTORY (its first entry), as systemd's RuntimeDirectory= sets it,
// else os.TempDir(); the name is "pgfront-" and the first 16 hex digits of the SHA-256 of
// the absolute, cleaned config path. Symbolic links are not resolved: a deployment that
// repoints a config symlink still meets its predecessor.
//
// Prefer RuntimeDirectory: in a shared /tmp another user can occupy the name first (Serve
// then fails, and Take refuses a peer of another uid).
func DefaultPath(configFile string) (string, error) {
	if configFile == "" {
		return "", errors.New("deriving the hand-over socket path: no config file")
	}
	abs, err := filepath.Abs(configFile)
	if err != nil {
		return "", fmt.Errorf("deriving the hand-over socket path from %s: %w", configFile, err)
	}
	sum := sha256.Sum256([]byte(abs))
	dir := os.TempDir()
	if rd, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); rd != "" {
		dir = rd
	}
	p := filepath.Join(dir, "pgfront-"+hex.EncodeToString(sum[:8])+".sock")
	if len(p) > maxSocketPath {
		return "", fmt.Errorf("deriving the hand-over socket path: %s is %d bytes, over the %d a unix socket takes", p, len(p), maxSocketPath)
	}
	return p, nil
}
