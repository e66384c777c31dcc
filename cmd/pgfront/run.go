package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/cli"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/handover"
	"github.com/pgfront/pgfront/internal/version"
)

// runFlags are run's flags; *config is the config file.
func runFlags() (fs *flag.FlagSet, config *string) {
	fs = flag.NewFlagSet("run", flag.ContinueOnError)
	return fs, configFlag(fs)
}

// configFlag defines -c, the config file, on fs.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("c", cli.DefaultConfig, "config file (YAML)")
}

// parseConfigFlag parses args for a command whose only argument is -c FILE.
func parseConfigFlag(fs *flag.FlagSet, path *string, args []string) error {
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return cli.Usagef("unexpected argument %q (name the config file with -c FILE)", rest[0])
	}
	if *path == "" {
		return cli.Usagef("-c needs a config file")
	}
	return nil
}

// loadError adds, to a config file that is missing because -c was not given, how to name one.
func loadError(path string, err error) error {
	if path == cli.DefaultConfig && errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (the default config file; name another with -c FILE)", err)
	}
	return err
}

var runHelp = helpFunc(cli.Help{
	Usage: []string{"pgfront run [-c FILE]"},
	About: "Loads the config (default " + cli.DefaultConfig + "), listens on every route and the admin\n" +
		"address, and serves until stopped. The first log line names the version, the VCS revision,\n" +
		"the Go release and the config file.\n" +
		"\n" +
		"Signals: SIGHUP reloads the config in place (an invalid file changes nothing); SIGUSR2\n" +
		"starts the binary now on disk, which takes the listeners over (an upgrade without a\n" +
		"refused connection); SIGTERM or SIGINT drains: sessions end at their next transaction\n" +
		"boundary within shutdown.grace; a second signal stops at once.\n" +
		"\n" +
		"Environment: PGFRONT_HANDOVER_SOCKET is the hand-over socket for SIGUSR2 (default: in\n" +
		"$RUNTIME_DIRECTORY or the temp directory, named after the config path; \"off\" turns\n" +
		"hand-over off, as the container image does); PGFRONT_CPUPROFILE=FILE writes a CPU profile.",
	Examples: []string{
		"pgfront run                                   # " + cli.DefaultConfig,
		"pgfront run -c pgfront.yaml",
		"kill -HUP $(pidof pgfront)                    # reload the config",
		"systemctl reload pgfront                      # the same, under systemd",
	},
}, func() *flag.FlagSet { fs, _ := runFlags(); return fs })

func runCmd(args []string, stdout, stderr io.Writer) error {
	flags, path := runFlags()
	if err := parseConfigFlag(flags, path, args); err != nil {
		return err
	}
	socket, err := handoverSocket(os.Getenv("PGFRONT_HANDOVER_SOCKET"), *path)
	if err != nil {
		return err
	}
	cfg, warnings, err := config.Load(*path)
	if err != nil {
		return loadError(*path, err)
	}
	logger := app.NewLogger(cfg.Log.Format, cfg.Log.Level, stderr)
	logger.Info("pgfront starting", append(version.Get().LogAttrs(), "config", *path)...)
	for _, w := range warnings {
		logger.Warn("config: " + w.String())
	}
	a, err := app.New(cfg, logger)
	if err != nil {
		return err
	}
	// PGFRONT_CPUPROFILE=FILE writes a CPU profile of the whole run (go tool pprof FILE).
	if path := os.Getenv("PGFRONT_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	sigs := make(chan os.Signal, 2)
	// SIGHUP: reload the config; SIGUSR2: start the new binary, which takes the listeners over.
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	return a.Run(sigs, app.RunOptions{HandoverSocket: socket, Upgrade: upgrader(os.Args)})
}

// handoverSocket is the hand-over socket's path: $PGFRONT_HANDOVER_SOCKET (env), "" (hand-over
// off) when that is "off", else the default path for the config file.
func handoverSocket(env, configPath string) (string, error) {
	switch env {
	case "off":
		return "", nil
	case "":
		return handover.DefaultPath(configPath)
	}
	return env, nil
}

// upgrader starts a new pgfront with this process's command line from the binary at the path
// this one was started from (a package upgrade replaced it there); the new process finds this
// one through the hand-over socket, takes the listeners and tells it to drain. Its output goes
// where this process's goes.
func upgrader(argv []string) func() error {
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		bin = argv[0]
	}
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	return func() error {
		cmd := exec.Command(bin, argv[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting %s: %w", bin, err)
		}
		// The new process outlives this one; nobody waits for it but init (or systemd, told
		// its pid by sd_notify MAINPID).
		return cmd.Process.Release()
	}
}
