package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/config"
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
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP) // SIGHUP: reload certificates
	defer signal.Stop(sigs)
	return a.Run(sigs)
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
