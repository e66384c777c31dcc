// Command pgfront is a PostgreSQL-aware front door for a primary and its replicas.
//
//	pgfront run -c pgfront.yaml     # serve the routes of a config
//	pgfront check -c pgfront.yaml   # validate and lint a config
//	pgfront demo                    # throw-away primary + replica + pgfront, for a first look
//	pgfront ctl sessions            # the admin API: list, kill, drain (see pgfront ctl -h)
package main

import (
	"fmt"
	"os"

	"github.com/pgfront/pgfront/internal/ctl"
)

const usage = `pgfront: a PostgreSQL-aware front door for a primary and its replicas

Usage:
  pgfront run   -c FILE   serve the routes of a config (SIGTERM/SIGINT: graceful stop; twice: now)
  pgfront check -c FILE   validate a config and warn about risky settings
  pgfront demo            start a throw-away primary + replica and pgfront in front of them
  pgfront ctl CMD ...     talk to a running pgfront's admin API (routes, servers, sessions,
                          sockets, alerts, config, kill ID, server CLUSTER/NAME ready|drain|maint)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "check":
		err = checkCmd(os.Args[2:], os.Stdout)
	case "demo":
		err = demoCmd(os.Args[2:])
	case "ctl":
		os.Exit(ctl.Run(os.Args[2:], os.Stdout, os.Stderr, os.Getenv))
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "pgfront: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgfront %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
