package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgfront/pgfront/internal/cli"
	"github.com/pgfront/pgfront/internal/version"
)

type result struct {
	code           int
	stdout, stderr string
}

func call(args ...string) result {
	var out, errOut bytes.Buffer
	code := pgfront(args, &out, &errOut)
	return result{code, out.String(), errOut.String()}
}

func (r result) want(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

// TestHelpForEveryCommand: `pgfront help CMD`, `pgfront CMD --help` and `pgfront CMD -h`
// print the same help (what it does, usage, examples) on stdout and exit 0, for every
// command, also with other flags and arguments around.
func TestHelpForEveryCommand(t *testing.T) {
	names := []string{"run", "check", "demo", "ctl", "probe", "import", "version"}
	var listed []string
	for _, c := range commands() {
		listed = append(listed, c.name)
	}
	if strings.Join(listed, " ") != strings.Join(names, " ") {
		t.Errorf("commands %v, want %v", listed, names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			h := call("help", name)
			h.want(t, 0)
			if !strings.HasPrefix(h.stdout, "usage: pgfront "+name) || !strings.Contains(h.stdout, "\nExamples:\n  pgfront") || h.stderr != "" {
				t.Errorf("help %s:\n%s\nstderr %q", name, h.stdout, h.stderr)
			}
			for _, args := range [][]string{{name, "--help"}, {name, "-h"}, {name, "-help"}, {name, "x", "-h"}} {
				r := call(args...)
				r.want(t, 0)
				if r.stdout != h.stdout || r.stderr != "" {
					t.Errorf("%q printed other help than `pgfront help %s`:\n%s\nstderr %q", args, name, r.stdout, r.stderr)
				}
			}
		})
	}
	// The default config path is said where -c is taken.
	for _, name := range []string{"run", "check", "ctl", "probe"} {
		if r := call("help", name); !strings.Contains(r.stdout, cli.DefaultConfig) || !strings.Contains(r.stdout, "-c ") {
			t.Errorf("help %s does not mention -c and %s:\n%s", name, cli.DefaultConfig, r.stdout)
		}
	}
}

func TestOverview(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		r := call(args...)
		r.want(t, 0)
		for _, c := range commands() {
			if !strings.Contains(r.stdout, "\n  "+c.name+" ") {
				t.Errorf("%q: overview lacks %s:\n%s", args, c.name, r.stdout)
			}
		}
	}
	r := call()
	r.want(t, 2)
	if !strings.Contains(r.stderr, "Commands:") {
		t.Errorf("no arguments: %q", r.stderr)
	}
	r = call("frobnicate")
	r.want(t, 2)
	if !strings.HasPrefix(r.stderr, `pgfront: unknown command "frobnicate"`) {
		t.Errorf("unknown command: %q", r.stderr)
	}
	call("help", "frobnicate").want(t, 2)
}

func TestVersion(t *testing.T) {
	want := version.Get().String() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		r := call(args...)
		r.want(t, 0)
		if r.stdout != want {
			t.Errorf("%q: %q, want %q", args, r.stdout, want)
		}
	}
	call("version", "extra").want(t, 2)
}

// TestUsageErrors: a mistake in how a command is called exits 2 and points at its help.
func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "-bogus"}, "pgfront run: flag provided but not defined: -bogus\nRun 'pgfront help run' for usage.\n"},
		{[]string{"check", "pgfront.yaml"}, "pgfront check: unexpected argument \"pgfront.yaml\" (name the config file with -c FILE)\nRun 'pgfront help check' for usage.\n"},
		{[]string{"check", "-c"}, "pgfront check: flag needs an argument: -c\nRun 'pgfront help check' for usage.\n"},
		{[]string{"demo", "-rw"}, "pgfront demo: flag needs an argument: -rw\nRun 'pgfront help demo' for usage.\n"},
		{[]string{"ctl", "frobnicate"}, "pgfront ctl: unknown command \"frobnicate\"\nRun 'pgfront ctl -h' for usage.\n"},
	} {
		r := call(tt.args...)
		r.want(t, 2)
		if r.stderr != tt.want || r.stdout != "" {
			t.Errorf("%q: stderr %q, want %q", tt.args, r.stderr, tt.want)
		}
	}
}

// TestImportDispatch: `pgfront import` reaches the importer, and its help is the importer's.
func TestImportDispatch(t *testing.T) {
	r := call("import", "haproxy", filepath.Join(t.TempDir(), "missing.cfg"))
	r.want(t, 1)
	if !strings.HasPrefix(r.stderr, "pgfront import: ") || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("stderr %q", r.stderr)
	}
	r = call("help", "import")
	r.want(t, 0)
	if !strings.Contains(r.stdout, "pgfront import haproxy FILE") {
		t.Errorf("help import: %q", r.stdout)
	}
}

// TestFlagsAfterArguments: `pgfront check -c FILE` and `pgfront check ... -c FILE` alike;
// -c absent is the default path, named in the error with how to choose another.
func TestConfigFlagAnywhereAndDefault(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	os.WriteFile(path, []byte(minimalConfig), 0o600)
	r := call("check", "-c", path)
	r.want(t, 0)
	if !strings.Contains(r.stdout, path+": OK") {
		t.Errorf("check: %q", r.stdout)
	}
	if _, err := os.Stat(cli.DefaultConfig); err == nil {
		t.Skipf("%s exists on this machine: the missing-default message is not tested", cli.DefaultConfig)
	}
	for _, name := range []string{"check", "run"} {
		r := call(name)
		r.want(t, 1)
		want := "pgfront " + name + ": reading config: open " + cli.DefaultConfig + ": no such file or directory (the default config file; name another with -c FILE)\n"
		if r.stderr != want {
			t.Errorf("%s without -c: stderr %q, want %q", name, r.stderr, want)
		}
	}
}

const minimalConfig = `
clusters:
  c:
    health: {check: none}
    servers:
      - {name: a, address: 127.0.0.1:5432, role: primary}
routes:
  rw: {listen: 127.0.0.1:0, cluster: c, role: primary}
`
