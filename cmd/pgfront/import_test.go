package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgfront/pgfront/internal/config"
)

const patroniCfg = "../../internal/haproxyimport/testdata/patroni.cfg"

// TestImportHAProxy runs `pgfront import haproxy FILE` on the Patroni template: the YAML on
// stdout loads with no problem, the summary on stderr lists the warnings and what was not
// mapped.
func TestImportHAProxy(t *testing.T) {
	var out, errOut strings.Builder
	if err := importCmd([]string{"haproxy", patroniCfg}, &out, &errOut); err != nil {
		t.Fatalf("import: %v\n%s", err, errOut.String())
	}
	cfg, _, err := config.Parse([]byte(out.String()), "pgfront.yaml")
	if err != nil {
		t.Fatalf("the output does not load: %v\n%s", err, out.String())
	}
	if len(cfg.Routes) != 2 || cfg.Clusters["main"] == nil {
		t.Errorf("routes %v, clusters %v", cfg.RouteNames(), cfg.ClusterNames())
	}
	if !strings.Contains(out.String(), "# patroni.cfg:10: timeout client 30m") {
		t.Errorf("the YAML's comments do not name the HAProxy lines:\n%s", out.String())
	}
	for _, want := range []string{
		"pgfront import: 2 routes, 1 cluster, 3 servers from patroni.cfg\n",
		"2 warnings:\n  patroni.cfg:10: timeout client 30m: no timeout client-fin",
		"3 lines not mapped (also listed at the top of the output):\n  patroni.cfg:7: log global: ",
		"pgfront check -c FILE",
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
}

// TestImportStdin reads the config from standard input ("-").
func TestImportStdin(t *testing.T) {
	data, err := os.ReadFile(patroniCfg)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if err := runImport([]string{"haproxy", "-"}, strings.NewReader(string(data)), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "# stdin:22: bind *:5000") || !strings.Contains(errOut.String(), "from stdin") {
		t.Errorf("stdin not named in the output:\n%s\n%s", out.String(), errOut.String())
	}
}

// TestImportErrors: malformed input and usage mistakes fail with a message that says what
// to fix, and write nothing to stdout; help is no error.
func TestImportErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.cfg")
	if err := os.WriteFile(bad, []byte("listen pg\n    timeout client 5x\n    server pg1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"haproxy", bad}, []string{`bad.cfg:2: timeout client: invalid time "5x"`, "bad.cfg:3: server pg1 has no address"}},
		{nil, []string{"want a format and a file"}},
		{[]string{"nginx", bad}, []string{`unknown format "nginx"`}},
		{[]string{"haproxy"}, []string{"want one file"}},
		{[]string{"haproxy", bad, bad}, []string{"want one file"}},
		{[]string{"haproxy", "-x", bad}, []string{"unknown flag -x"}},
		{[]string{"haproxy", filepath.Join(t.TempDir(), "missing.cfg")}, []string{"missing.cfg", "no such file"}},
	} {
		var out, errOut strings.Builder
		err := runImport(tc.args, strings.NewReader(""), &out, &errOut)
		if err == nil {
			t.Errorf("import %q: no error", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("import %q: error %q lacks %q", tc.args, err, w)
			}
		}
		if out.Len() > 0 {
			t.Errorf("import %q wrote to stdout on error:\n%s", tc.args, out.String())
		}
	}
	for _, h := range []string{"-h", "--help", "help"} {
		var out, errOut strings.Builder
		if err := runImport([]string{"haproxy", h}, strings.NewReader(""), &out, &errOut); !errors.Is(err, flag.ErrHelp) || out.Len() > 0 {
			t.Errorf("import %s: %v, output %q; want flag.ErrHelp for the dispatcher to print the help", h, err, out.String())
		}
	}
}
