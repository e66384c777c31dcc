package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"sort"

	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/cli"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/preflight"
)

func checkFlags() (fs *flag.FlagSet, config *string) {
	fs = flag.NewFlagSet("check", flag.ContinueOnError)
	return fs, configFlag(fs)
}

var checkHelp = helpFunc(cli.Help{
	Usage: []string{"pgfront check [-c FILE]"},
	About: "Checks a config (default " + cli.DefaultConfig + ") as `pgfront run` would load it, and\n" +
		"then against this machine. Every problem is reported at once, as FILE:LINE: field.path:\n" +
		"message (a YAML syntax error as FILE:LINE:COLUMN, with a hint when the indentation is\n" +
		"off).\n" +
		"\n" +
		"Errors (exit 1): the file does not load (unknown keys, bad values, YAML syntax), or a\n" +
		"file it names cannot serve: a certificate, key or CA file that is missing or unreadable,\n" +
		"a key that does not match its certificate, a certificate and key swapped, certificates\n" +
		"in the wrong order, an encrypted key, an admin token file that cannot be read.\n" +
		"\n" +
		"Warnings (exit 0, printed as WARNING: ...): risky settings (the HAProxy half-close trap\n" +
		"and friends), server and Patroni host names that do not resolve here, password_env and\n" +
		"admin token variables that are not set here (check may run in another environment than\n" +
		"the service: set them where pgfront runs), a CA certificate used as a server or client\n" +
		"certificate, a certificate outside its validity period.",
	Examples: []string{
		"pgfront check                                  # " + cli.DefaultConfig,
		"pgfront check -c pgfront.yaml",
		"pgfront check -c new.yaml && cp new.yaml /etc/pgfront/pgfront.yaml && systemctl reload pgfront",
	},
}, func() *flag.FlagSet { fs, _ := checkFlags(); return fs })

func checkCmd(args []string, out, _ io.Writer) error {
	flags, path := checkFlags()
	if err := parseConfigFlag(flags, path, args); err != nil {
		return err
	}
	cfg, src, warnings, err := config.LoadSource(*path)
	if err != nil {
		return loadError(*path, err)
	}
	more, err := preflight.Run(context.Background(), cfg, src, preflight.Options{})
	warnings = append(warnings, more...)
	sort.SliceStable(warnings, func(i, j int) bool { return warnings[i].Line < warnings[j].Line })
	for _, w := range warnings {
		fmt.Fprintf(out, "WARNING: %s\n", w)
	}
	if err != nil {
		return err
	}
	// Build (without starting) everything the config names, so what preflight does not check
	// is checked as run would (admin token files, ...). An admin token variable that is not
	// set here was warned about above: it may well be set where pgfront runs.
	built := *cfg
	readUnset, adminUnset := preflight.UnsetEnv(cfg, nil)
	if readUnset {
		built.Admin.ReadTokenEnv = ""
	}
	if adminUnset {
		built.Admin.AdminTokenEnv = ""
	}
	if preflight.FleetSecretUnset(cfg, nil) {
		built.Fleet.SecretEnv = ""
	}
	// The same for an etcd password variable of a dcs section (warned about by preflight).
	built.Clusters = maps.Clone(cfg.Clusters)
	for name, cl := range built.Clusters {
		if d := cl.DCS; d != nil && d.Etcd.PasswordEnv != "" {
			if _, ok := os.LookupEnv(d.Etcd.PasswordEnv); !ok {
				c, dc := *cl, *d
				dc.Etcd.PasswordEnv = ""
				c.DCS = &dc
				built.Clusters[name] = &c
			}
		}
	}
	a, err := app.New(&built, app.NewLogger("text", "error", io.Discard))
	if err != nil {
		return err
	}
	a.Close()
	fmt.Fprintf(out, "%s: OK (%d routes, %d clusters, %d warnings)\n", *path, len(cfg.Routes), len(cfg.Clusters), len(warnings))
	return nil
}
