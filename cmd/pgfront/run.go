package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/handover"
)

func configFlag(name string, args []string) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("c", "", "config file (YAML)")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if *path == "" {
		return "", errors.New("missing -c FILE")
	}
	return *path, nil
}

func runCmd(args []string) error {
	path, err := configFlag("run", args)
	if err != nil {
		return err
	}
	socket := os.Getenv("PGFRONT_HANDOVER_SOCKET")
	if socket == "" {
		if socket, err = handover.DefaultPath(path); err != nil {
			return err
		}
	}
	cfg, warnings, err := config.Load(path)
	if err != nil {
		return err
	}
	logger := app.NewLogger(cfg.Log.Format, cfg.Log.Level, os.Stderr)
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

func checkCmd(args []string, out io.Writer) error {
	path, err := configFlag("check", args)
	if err != nil {
		return err
	}
	cfg, warnings, err := config.Load(path)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(out, "WARNING: %s\n", w)
	}
	// Build (without starting) everything the config names, so files it points at (TLS
	// certificates and keys, admin tokens) are checked too.
	a, err := app.New(cfg, app.NewLogger("text", "error", io.Discard))
	if err != nil {
		return err
	}
	a.Close()
	fmt.Fprintf(out, "%s: OK (%d routes, %d clusters, %d warnings)\n", path, len(cfg.Routes), len(cfg.Clusters), len(warnings))
	return nil
}
