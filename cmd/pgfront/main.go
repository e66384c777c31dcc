// Command pgfront is a PostgreSQL-aware front door for a primary and its replicas.
//
//	pgfront run -c pgfront.yaml     # serve the routes of a config (default /etc/pgfront/pgfront.yaml)
//	pgfront check -c pgfront.yaml   # validate a config and check it against this machine
//	pgfront demo                    # throw-away primary + replica + pgfront, for a first look
//	pgfront ctl sessions            # the admin API: list, kill, drain, reload
//	pgfront probe                   # exit 0 when pgfront takes clients (a container's health check)
//	pgfront version                 # version, VCS revision, Go release
//	pgfront help run                # any command's help; also pgfront run -h
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/pgfront/pgfront/internal/cli"
	"github.com/pgfront/pgfront/internal/ctl"
	"github.com/pgfront/pgfront/internal/version"
)

// command is one `pgfront COMMAND`.
type command struct {
	name    string
	summary string            // one line, for the overview
	help    func(w io.Writer) // the full help: what it does, usage, flags, examples
	// run runs the command. flag.ErrHelp prints help (exit 0), a *cli.UsageError exits 2, an
	// exitCode exits with that code, any other error prints "pgfront NAME: ERROR" and exits 1.
	run func(args []string, stdout, stderr io.Writer) error
}

// exitCode is a command's exit status when it has already said why.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// commands is the dispatch table, in the overview's order.
func commands() []command {
	return []command{
		{"run", "serve the routes of a config (SIGHUP reload, SIGUSR2 upgrade, SIGTERM drain)", runHelp, runCmd},
		{"check", "validate a config, warn about risky settings, check it against this machine", checkHelp, checkCmd},
		{"demo", "start a throw-away primary + replica and pgfront in front of them", demoHelp, demoCmd},
		{"ctl", "talk to a running pgfront's admin API (sessions, servers, kill, drain, reload)", ctl.Help, ctlCmd},
		{"probe", "exit 0 when a running pgfront takes clients (GET /healthz), for health checks", ctl.ProbeHelp, probeCmd},
		// import: `pgfront import haproxy FILE` is built in import.go (importCmd, importHelp).
		{"import", "turn another proxy's config into a pgfront config (pgfront import haproxy FILE)", importHelp, importCmd},
		{"version", "print the version, VCS revision and Go release", versionHelp, versionCmd},
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func overview(w io.Writer) {
	io.WriteString(w, "pgfront: a PostgreSQL-aware front door for a primary and its replicas\n\nUsage: pgfront COMMAND [ARGS]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s  %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-8s  %s\n", "help", "print a command's help: pgfront help COMMAND")
	fmt.Fprintf(w, "\nA config file not named with -c is %s.\n", cli.DefaultConfig)
	io.WriteString(w, "Run 'pgfront help COMMAND' or 'pgfront COMMAND -h' for a command's usage and examples.\n")
}

func main() {
	os.Exit(pgfront(os.Args[1:], os.Stdout, os.Stderr))
}

// pgfront runs the command line args (without the program name) and returns the exit code.
func pgfront(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		overview(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		overview(stdout)
		return 0
	case "-version", "--version":
		fmt.Fprintln(stdout, version.Get())
		return 0
	case "help":
		if len(args) == 1 {
			overview(stdout)
			return 0
		}
		c, ok := lookup(args[1])
		if !ok {
			fmt.Fprintf(stderr, "pgfront help: unknown command %q\n\n", args[1])
			overview(stderr)
			return 2
		}
		c.help(stdout)
		return 0
	}
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(stderr, "pgfront: unknown command %q\n\n", args[0])
		overview(stderr)
		return 2
	}
	err := c.run(args[1:], stdout, stderr)
	var code exitCode
	var usage *cli.UsageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		c.help(stdout)
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "pgfront %s: %v\nRun 'pgfront help %s' for usage.\n", c.name, err, c.name)
		return 2
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		msg = "\n" + msg // a list of problems, one per line
	}
	fmt.Fprintf(stderr, "pgfront %s: %s\n", c.name, msg)
	return 1
}

func ctlCmd(args []string, stdout, stderr io.Writer) error {
	o := ctl.Options{Stdout: stdout, Stderr: stderr, Getenv: os.Getenv, DefaultConfig: cli.DefaultConfig}
	if code := ctl.Run(args, o); code != 0 {
		return exitCode(code)
	}
	return nil
}

func probeCmd(args []string, stdout, stderr io.Writer) error {
	o := ctl.Options{Stdout: stdout, Stderr: stderr, Getenv: os.Getenv, DefaultConfig: cli.DefaultConfig}
	if code := ctl.Probe(args, o); code != 0 {
		return exitCode(code)
	}
	return nil
}

var versionHelp = helpFunc(cli.Help{
	Usage: []string{"pgfront version", "pgfront --version"},
	About: "Prints the version (stamped by a release build, see `make release`; else the go command's\n" +
		"module version, or devel), the VCS revision it was built from and whether that tree had\n" +
		"uncommitted changes, and the Go release and platform. The same values are in the first log\n" +
		"line of `pgfront run` and in the pgfront_build_info metric.",
	Examples: []string{"pgfront version", "pgfront --version"},
}, nil)

func versionCmd(args []string, stdout, stderr io.Writer) error {
	rest, err := cli.Parse(flag.NewFlagSet("version", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return cli.Usagef("unexpected argument %q", rest[0])
	}
	fmt.Fprintln(stdout, version.Get())
	return nil
}

// helpFunc makes a command's help function from its text and flags (nil = none).
func helpFunc(h cli.Help, flags func() *flag.FlagSet) func(io.Writer) {
	return func(w io.Writer) {
		var fs *flag.FlagSet
		if flags != nil {
			fs = flags()
		}
		h.Write(w, fs)
	}
}
