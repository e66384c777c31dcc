package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrBinariesNotFound is wrapped by FindBinDir's error when no usable PostgreSQL server
// binaries are found.
var ErrBinariesNotFound = errors.New("PostgreSQL server binaries (initdb, postgres, pg_ctl, pg_basebackup) not found; " +
	"install them with: apt-get install -y postgresql (or set PGFRONT_PG_BINDIR to the directory that holds them)")

// requiredPrograms are the binaries this package runs; a directory qualifies only if it has
// all of them (Debian puts wrappers for some client tools in /usr/bin but not initdb).
var requiredPrograms = []string{"initdb", "postgres", "pg_basebackup"}

// FindBinDir locates PostgreSQL server binaries: $PGFRONT_PG_BINDIR, then the directory of
// `postgres`/`initdb` on PATH, then the highest /usr/lib/postgresql/*/bin.
func FindBinDir() (string, error) {
	if dir := os.Getenv("PGFRONT_PG_BINDIR"); dir != "" {
		if hasPrograms(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("PGFRONT_PG_BINDIR=%s lacks %s: %w", dir, strings.Join(requiredPrograms, ", "), ErrBinariesNotFound)
	}
	for _, prog := range []string{"postgres", "initdb"} {
		path, err := exec.LookPath(prog)
		if err != nil {
			continue
		}
		if dir := filepath.Dir(path); hasPrograms(dir) {
			return dir, nil
		}
		// A symlink on PATH (Homebrew, alternatives) may point into the real bin dir.
		if real, err := filepath.EvalSymlinks(path); err == nil {
			if dir := filepath.Dir(real); hasPrograms(dir) {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sortByVersionDesc(dirs)
	for _, dir := range dirs {
		if hasPrograms(dir) {
			return dir, nil
		}
	}
	return "", ErrBinariesNotFound
}

func hasPrograms(dir string) bool {
	for _, prog := range requiredPrograms {
		fi, err := os.Stat(filepath.Join(dir, prog))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// sortByVersionDesc orders /usr/lib/postgresql/<version>/bin paths highest version first,
// comparing versions numerically ("9.6" < "15").
func sortByVersionDesc(dirs []string) {
	version := func(dir string) []int {
		var v []int
		for _, part := range strings.Split(filepath.Base(filepath.Dir(dir)), ".") {
			n, err := strconv.Atoi(part)
			if err != nil {
				n = -1
			}
			v = append(v, n)
		}
		return v
	}
	sort.SliceStable(dirs, func(i, j int) bool {
		a, b := version(dirs[i]), version(dirs[j])
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return len(a) > len(b)
	})
}
