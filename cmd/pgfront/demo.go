package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pgfront/pgfront/internal/app"
	"github.com/pgfront/pgfront/internal/cli"
	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// demoConfig is the embedded default the demo runs: one cluster of a primary and a replica,
// a read-write route and a read-only route.
const demoConfig = `
log:
  format: text
admin:
  listen: %s
clusters:
  demo:
    servers:
      - name: primary
        address: %s
        role: primary
      - name: replica
        address: %s
        role: replica
routes:
  rw:
    listen: %s
    cluster: demo
    role: primary
  ro:
    listen: %s
    cluster: demo
    role: replica
`

// demoFlags are demo's flags: the listen addresses.
type demoFlags struct {
	rw, ro, admin *string
}

func newDemoFlags() (*flag.FlagSet, demoFlags) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	return fs, demoFlags{
		rw:    fs.String("rw", "127.0.0.1:6432", "listen address of the read-write route"),
		ro:    fs.String("ro", "127.0.0.1:6433", "listen address of the read-only route"),
		admin: fs.String("admin", "127.0.0.1:9187", "listen address of the admin listener (stats page, /metrics, API)"),
	}
}

var demoHelp = helpFunc(cli.Help{
	Usage: []string{"pgfront demo [-rw ADDR] [-ro ADDR] [-admin ADDR]"},
	About: "Starts a throw-away PostgreSQL primary and a streaming replica in temporary directories,\n" +
		"and pgfront in front of them with a read-write and a read-only route, then prints psql\n" +
		"lines to connect and where the stats page, /metrics and the logs are. A port that is\n" +
		"taken falls back to a free one. Ctrl-C stops everything and removes the directories.\n" +
		"\n" +
		"Needs the PostgreSQL server binaries (initdb, postgres, pg_basebackup) on PATH, under\n" +
		"/usr/lib/postgresql/*/bin or in $PGFRONT_PG_BINDIR (Debian: apt-get install postgresql).\n" +
		"Run as root, PostgreSQL runs as the postgres OS user.",
	Examples: []string{
		"pgfront demo",
		"go run ./cmd/pgfront demo                     # from a clone",
		"pgfront demo -rw 127.0.0.1:7432 -ro 127.0.0.1:7433",
	},
}, func() *flag.FlagSet { fs, _ := newDemoFlags(); return fs })

func demoCmd(args []string, stdout, stderr io.Writer) error {
	fs, flags := newDemoFlags()
	rest, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return cli.Usagef("unexpected argument %q", rest[0])
	}
	rwAddr, roAddr, adminAddr := flags.rw, flags.ro, flags.admin
	if _, err := pgtest.FindBinDir(); err != nil {
		return err
	}
	// Fall back to free ports when the usual ones are taken (another demo, a local pgbouncer).
	*rwAddr = freeOr(*rwAddr)
	*roAddr = freeOr(*roAddr)
	*adminAddr = freeOr(*adminAddr)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	say := func(format string, a ...any) { fmt.Fprintf(stderr, "demo: "+format+"\n", a...) }
	say("starting a throw-away PostgreSQL primary ...")
	primary, err := pgtest.StartPrimary(ctx, pgtest.Options{})
	if err != nil {
		return err
	}
	defer func() { _ = primary.Cleanup() }()
	say("starting a streaming replica (pg_basebackup) ...")
	replica, err := primary.StartReplica(ctx, "replica")
	if err != nil {
		return err
	}
	defer func() { _ = replica.Cleanup() }()

	cfg, warnings, err := config.Parse([]byte(fmt.Sprintf(demoConfig, *adminAddr, primary.Addr(), replica.Addr(), *rwAddr, *roAddr)), "demo.yaml")
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	logPath := filepath.Join(primary.Dir, "pgfront.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logger := app.NewLogger("text", "info", io.MultiWriter(stderr, logFile))
	for _, w := range warnings {
		logger.Warn("config: " + w.String())
	}
	a, err := app.New(cfg, logger)
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
pgfront demo is running. Connect with:

  read-write (primary):  psql "host=127.0.0.1 port=%d user=postgres dbname=postgres"
  read-only  (replica):  psql "host=127.0.0.1 port=%d user=postgres dbname=postgres"

Watch it:
  stats page:  http://%s/
  metrics:     http://%s/metrics
  admin CLI:   go run ./cmd/pgfront ctl -addr http://%s sessions

Logs:
  pgfront:            %s (and this terminal)
  PostgreSQL primary: %s
  PostgreSQL replica: %s

Press Ctrl-C to stop everything and remove the temporary directories.
`, a.Addr("rw").(*net.TCPAddr).Port, a.Addr("ro").(*net.TCPAddr).Port,
		a.AdminAddr(), a.AdminAddr(), a.AdminAddr(), logPath, primary.LogFile, replica.LogFile)

	<-sigs
	say("stopping: sessions get 5s to finish (Ctrl-C again to stop now)")
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	done := make(chan struct{})
	go func() { a.Shutdown(sctx); close(done) }()
	select {
	case <-done:
	case <-sigs:
		scancel()
		<-done
	}
	say("stopped; removing temporary directories")
	return nil
}

// freeOr returns addr if it can be listened on now, otherwise the same host with port 0.
func freeOr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		_ = ln.Close()
		return addr
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		host, _, _ := net.SplitHostPort(addr)
		return net.JoinHostPort(host, "0")
	}
	return addr
}
