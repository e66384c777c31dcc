package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binDir holds the binaries the tests build (TestMain makes and removes it).
var binDir string

var built struct {
	sync.Mutex
	path string
	err  error
	out  []byte
}

// pgfrontBinary builds ./cmd/pgfront once per test run and returns its path.
func pgfrontBinary(t *testing.T) string {
	t.Helper()
	built.Lock()
	defer built.Unlock()
	if built.path == "" && built.err == nil {
		path := filepath.Join(binDir, "pgfront")
		cmd := exec.Command("go", "build", "-o", path, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		built.out, built.err = cmd.CombinedOutput()
		if built.err == nil {
			built.path = path
		}
	}
	if built.err != nil {
		t.Fatalf("go build: %v\n%s", built.err, built.out)
	}
	return built.path
}

// repoRoot is the repository's top directory (tests run in cmd/pgfront).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from the test's directory: %v", err)
	}
	return root
}
