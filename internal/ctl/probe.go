package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/pgfront/pgfront/internal/cli"
)

// probeFlags are probe's flags: where the admin API is, and how long to wait.
func probeFlags() (*flag.FlagSet, *flags) {
	fs := flag.NewFlagSet("pgfront probe", flag.ContinueOnError)
	f := &flags{}
	fs.StringVar(&f.addr, "addr", "", "admin API address, http://HOST:PORT or HOST:PORT (env PGFRONT_ADMIN_ADDR)")
	fs.StringVar(&f.config, "c", "", "config file to take the admin address from (default "+cli.DefaultConfig+", if it exists)")
	fs.DurationVar(&f.timeout, "timeout", 3*time.Second, "time limit of the request")
	return fs, f
}

// ProbeHelp writes `pgfront probe`'s help.
func ProbeHelp(w io.Writer) {
	fs, _ := probeFlags()
	cli.Help{
		Usage: []string{"pgfront probe [-addr URL] [-c FILE] [-timeout D]"},
		About: "Asks a running pgfront's admin API whether it takes new clients (GET /healthz) and\n" +
			"exits 0 when it does, 1 when it does not (draining: /healthz answers 503) or cannot be\n" +
			"reached. For a container's HEALTHCHECK or an exec probe: the image has no shell or curl.\n" +
			"/healthz needs no token. The address is found as `pgfront ctl` finds it: -addr, the\n" +
			"config -c names, $PGFRONT_ADMIN_ADDR, " + cli.DefaultConfig + " if it exists, then\n" +
			DefaultAddr + "; a wildcard admin.listen (0.0.0.0:9187) is asked on loopback.",
		Examples: []string{
			"pgfront probe",
			"pgfront probe -c /etc/pgfront/pgfront.yaml",
			`HEALTHCHECK CMD ["/pgfront", "probe"]     # in a Dockerfile`,
		},
	}.Write(w, fs)
}

// Probe runs `pgfront probe ARGS...`: 0 when pgfront takes clients, 1 when not or
// unreachable, 2 on a usage mistake. It prints /healthz's answer ("ok", or why not).
func Probe(args []string, o Options) int {
	o.defaults()
	fs, f := probeFlags()
	rest, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		ProbeHelp(o.Stdout)
		return exitOK
	}
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected argument %q", rest[0])
	}
	if err == nil && f.timeout <= 0 {
		err = errors.New("-timeout must be positive")
	}
	if err != nil {
		fmt.Fprintf(o.Stderr, "pgfront probe: %v\nRun 'pgfront probe -h' for usage.\n", err)
		return exitUsage
	}
	tg, err := findTarget(fs, f, o)
	if err != nil {
		fmt.Fprintf(o.Stderr, "pgfront probe: %v\n", err)
		return exitFailure
	}
	for _, n := range tg.notes {
		fmt.Fprintf(o.Stderr, "pgfront probe: note: %s\n", n)
	}
	c := newClient(tg, f.timeout)
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	body, err := c.do(ctx, http.MethodGet, "/healthz", nil)
	if err != nil {
		fmt.Fprintf(o.Stderr, "pgfront probe: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(o.Stdout, strings.TrimSpace(string(body)))
	return exitOK
}
