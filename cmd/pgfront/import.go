package main

// The hook for `pgfront import` (issue 11, "Import an HAProxy config"): the dispatch table in
// main.go already lists "import" and calls importCmd; `pgfront help import` and
// `pgfront import -h` print importHelp. The importer replaces this file: keep the two names
// and signatures, parse flags with cli.Parse (so -h and flags after FILE work), return
// flag.ErrHelp for help, a *cli.UsageError (cli.Usagef) for a usage mistake (exit 2), any
// other error to exit 1.

import (
	"errors"
	"flag"
	"io"

	"github.com/pgfront/pgfront/internal/cli"
)

func importFlags() *flag.FlagSet {
	return flag.NewFlagSet("import", flag.ContinueOnError)
}

var importHelp = helpFunc(cli.Help{
	Usage: []string{"pgfront import haproxy FILE > pgfront.yaml"},
	About: "Turns an HAProxy config (the Patroni template: listen sections with option httpchk,\n" +
		"server ... check port 8008, default-server, maxconn, timeouts, balance) into a pgfront\n" +
		"config, with a comment on each key saying where it came from and a list of what could\n" +
		"not be mapped. Not built yet.",
	Examples: []string{"pgfront import haproxy /etc/haproxy/haproxy.cfg > pgfront.yaml && pgfront check -c pgfront.yaml"},
}, importFlags)

func importCmd(args []string, stdout, stderr io.Writer) error {
	if _, err := cli.Parse(importFlags(), args); err != nil {
		return err
	}
	return errors.New("not built yet")
}
