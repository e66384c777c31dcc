package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pgfront/pgfront/internal/cli"
	"github.com/pgfront/pgfront/internal/haproxyimport"
)

var importHelp = helpFunc(cli.Help{
	Usage: []string{"pgfront import haproxy FILE > pgfront.yaml"},
	About: "Reads an HAProxy configuration (FILE, or - for standard input) of the kind run in front of\n" +
		"Patroni: listen (or frontend and backend) sections with option httpchk on Patroni's REST API\n" +
		"(/primary, /replica, /read-only, ...), servers with check port 8008, default-server\n" +
		"inter/fall/rise/on-marked-down, maxconn, timeouts, balance, retries. Writes the pgfront config\n" +
		"to standard output, with a comment on each key naming the HAProxy line it comes from and,\n" +
		"at the top, what could not be mapped and why and the traps of the original (half-closed\n" +
		"connections held for the whole client or server timeout). A summary goes to standard error.\n" +
		"A malformed file is refused with every problem and its line; exit status 1.",
	Examples: []string{
		"pgfront import haproxy /etc/haproxy/haproxy.cfg > pgfront.yaml",
		"pgfront check -c pgfront.yaml",
		"ssh lb1 cat /etc/haproxy/haproxy.cfg | pgfront import haproxy - > pgfront.yaml",
	},
}, nil)

// maxImportBytes bounds the file read: HAProxy configs are kilobytes.
const maxImportBytes = 16 << 20

// importCmd runs `pgfront import ARGS...`: the YAML goes to stdout, the summary to stderr.
func importCmd(args []string, stdout, stderr io.Writer) error {
	return runImport(args, os.Stdin, stdout, stderr)
}

func runImport(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var pos []string
	for _, a := range args {
		switch {
		case a == "-h" || a == "-help" || a == "--help" || a == "help":
			return flag.ErrHelp // the dispatcher prints importHelp
		case strings.HasPrefix(a, "-") && a != "-":
			return fmt.Errorf("unknown flag %s (see pgfront import -h)", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) == 0 {
		return errors.New("want a format and a file: pgfront import haproxy FILE (see pgfront import -h)")
	}
	if pos[0] != "haproxy" {
		return fmt.Errorf("unknown format %q: pgfront imports haproxy (pgfront import haproxy FILE)", pos[0])
	}
	if len(pos) != 2 {
		return errors.New("want one file: pgfront import haproxy FILE, or - for standard input")
	}
	name, in := filepath.Base(pos[1]), stdin
	if pos[1] == "-" {
		name = "stdin"
	} else {
		f, err := os.Open(pos[1])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(io.LimitReader(in, maxImportBytes+1))
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > maxImportBytes {
		return fmt.Errorf("%s is over %d MiB: not an HAProxy config", name, maxImportBytes>>20)
	}
	res, err := haproxyimport.Import(data, name)
	if err != nil {
		return err
	}
	if _, err := stdout.Write(res.YAML); err != nil {
		return fmt.Errorf("writing the config: %w", err)
	}
	plural := func(n int, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %ss", n, one)
	}
	fmt.Fprintf(stderr, "pgfront import: %s, %s, %s from %s\n", plural(res.Routes, "route"), plural(res.Clusters, "cluster"), plural(res.Servers, "server"), name)
	if len(res.Warnings) > 0 {
		fmt.Fprintf(stderr, "%s:\n", plural(len(res.Warnings), "warning"))
		for _, n := range res.Warnings {
			fmt.Fprintf(stderr, "  %s\n", n)
		}
	}
	if len(res.Skipped) > 0 {
		fmt.Fprintf(stderr, "%s not mapped (also listed at the top of the output):\n", plural(len(res.Skipped), "line"))
		for _, n := range res.Skipped {
			fmt.Fprintf(stderr, "  %s\n", n)
		}
	}
	fmt.Fprintln(stderr, "Review the config, then run: pgfront check -c FILE")
	return nil
}
