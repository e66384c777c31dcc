package handover

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("RUNTIME_DIRECTORY", "")

	p, err := DefaultPath("pgfront.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(p) != filepath.Clean(os.TempDir()) || !strings.HasPrefix(filepath.Base(p), "pgfront-") ||
		!strings.HasSuffix(p, ".sock") || len(filepath.Base(p)) != len("pgfront-")+16+len(".sock") {
		t.Errorf("DefaultPath = %s", p)
	}
	for _, same := range []string{filepath.Join(dir, "pgfront.yaml"), "./x/../pgfront.yaml", dir + "//pgfront.yaml"} {
		if q, err := DefaultPath(same); err != nil || q != p {
			t.Errorf("DefaultPath(%s) = %s, %v; want %s", same, q, err, p)
		}
	}
	if q, err := DefaultPath("other.yaml"); err != nil || q == p {
		t.Errorf("another config: %s, %v", q, err)
	}

	t.Setenv("RUNTIME_DIRECTORY", "/run/pgfront:/run/other")
	if q, err := DefaultPath("pgfront.yaml"); err != nil || q != filepath.Join("/run/pgfront", filepath.Base(p)) {
		t.Errorf("with RUNTIME_DIRECTORY: %s, %v", q, err)
	}
	t.Setenv("RUNTIME_DIRECTORY", "/"+strings.Repeat("d", 100))
	if _, err := DefaultPath("pgfront.yaml"); err == nil || !strings.Contains(err.Error(), "over the 107") {
		t.Errorf("too long: %v", err)
	}
	if _, err := DefaultPath(""); err == nil {
		t.Error("no config file: no error")
	}
}
