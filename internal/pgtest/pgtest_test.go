package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it returns nil, failing the test after 20s.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		<-tick.C
	}
}

func mustValue(t *testing.T, s *Server, sql, want string) {
	t.Helper()
	got, err := s.QueryValue(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	if got != want {
		t.Fatalf("%s: %s = %q, want %q", s.Name, sql, got, want)
	}
}

func valueIs(s *Server, sql, want string) func() error {
	return func() error {
		got, err := s.QueryValue(context.Background(), sql)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s: %s = %q, want %q", s.Name, sql, got, want)
		}
		return nil
	}
}

func mustRefuse(t *testing.T, s *Server) {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr())
	if err == nil {
		conn.Close()
		t.Fatalf("%s: %s still accepts connections", s.Name, s.Addr())
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%s: dial %s: %v, want connection refused", s.Name, s.Addr(), err)
	}
}

func postmasterPID(t *testing.T, s *Server) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.proc == nil {
		t.Fatalf("%s: not running", s.Name)
	}
	return s.mu.proc.cmd.Process.Pid
}

func alive(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != 'Z'
}

// shmID returns the SysV shared memory id from the server's postmaster.pid.
func shmID(t *testing.T, s *Server) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	f := strings.Fields(lines[6])
	id, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("postmaster.pid line 7 %q: %v", lines[6], err)
	}
	return id
}

func TestFindBinDir(t *testing.T) {
	t.Setenv("PGFRONT_PG_BINDIR", "")
	dir, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, prog := range requiredPrograms {
		if _, err := os.Stat(filepath.Join(dir, prog)); err != nil {
			t.Errorf("FindBinDir() = %s without %s: %v", dir, prog, err)
		}
	}

	t.Setenv("PGFRONT_PG_BINDIR", dir)
	if got, err := FindBinDir(); err != nil || got != dir {
		t.Errorf("with PGFRONT_PG_BINDIR=%s: FindBinDir() = %q, %v", dir, got, err)
	}

	empty := t.TempDir()
	t.Setenv("PGFRONT_PG_BINDIR", empty)
	_, err = FindBinDir()
	if !errors.Is(err, ErrBinariesNotFound) {
		t.Fatalf("with an empty PGFRONT_PG_BINDIR: err = %v, want ErrBinariesNotFound", err)
	}
	for _, want := range []string{"apt-get install -y postgresql", "PGFRONT_PG_BINDIR", "initdb, postgres, pg_ctl, pg_basebackup", empty} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSortByVersionDesc(t *testing.T) {
	dirs := []string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/10/bin", "/usr/lib/postgresql/16/bin"}
	sortByVersionDesc(dirs)
	want := "/usr/lib/postgresql/16/bin /usr/lib/postgresql/15/bin /usr/lib/postgresql/10/bin /usr/lib/postgresql/9.6/bin"
	if got := strings.Join(dirs, " "); got != want {
		t.Errorf("sorted = %s, want %s", got, want)
	}
}

// recordingTB records Fatalf/Skipf and ends the goroutine, as testing does.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestNewPrimaryWithoutBinaries(t *testing.T) {
	t.Setenv("PGFRONT_PG_BINDIR", t.TempDir())
	for _, skipEnv := range []string{"", "1"} {
		t.Setenv("PGFRONT_SKIP_PG", skipEnv)
		rec := &recordingTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			NewPrimary(rec, nil)
		}()
		<-done
		if skipEnv == "1" {
			if rec.fatal != "" || !strings.Contains(rec.skip, "apt-get install -y postgresql") {
				t.Errorf("PGFRONT_SKIP_PG=1: fatal %q, skip %q; want a skip naming the package", rec.fatal, rec.skip)
			}
		} else if rec.skip != "" || !strings.Contains(rec.fatal, "apt-get install -y postgresql") {
			t.Errorf("fatal %q, skip %q; want a failure naming the package", rec.fatal, rec.skip)
		}
	}
}

// TestLifecycle drives a primary and its replica through replication, crash, restart,
// promotion and cleanup.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	p, err := StartPrimary(ctx, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Cleanup() })
	r, err := p.StartReplica(ctx, "replica1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Cleanup() })

	if _, err := p.StartReplica(ctx, "replica1"); err == nil {
		t.Error("a second replica1 of the same primary was accepted")
	}
	if want := "127.0.0.1:" + strconv.Itoa(p.Port); p.Addr() != want {
		t.Errorf("Addr() = %q, want %q", p.Addr(), want)
	}
	if want := fmt.Sprintf("host=127.0.0.1 port=%d user=u dbname=d sslmode=disable", r.Port); r.DSN("u", "d") != want {
		t.Errorf("DSN() = %q, want %q", r.DSN("u", "d"), want)
	}
	if want := fmt.Sprintf(`psql "host=127.0.0.1 port=%d user=postgres dbname=postgres"`, p.Port); p.PsqlCommand("postgres", "postgres") != want {
		t.Errorf("PsqlCommand() = %q, want %q", p.PsqlCommand("postgres", "postgres"), want)
	}
	if p.Port == r.Port || p.Port < minPort || p.Port > maxPort {
		t.Errorf("ports %d and %d: want distinct, in [%d, %d]", p.Port, r.Port, minPort, maxPort)
	}

	// Configuration and roles.
	mustValue(t, p, "SHOW fsync", "off")
	mustValue(t, p, "SHOW listen_addresses", "127.0.0.1")
	mustValue(t, r, "SHOW unix_socket_directories", r.Dir)
	mustValue(t, r, "SHOW port", strconv.Itoa(r.Port))
	mustValue(t, p, "SELECT pg_is_in_recovery()", "f")
	mustValue(t, r, "SELECT pg_is_in_recovery()", "t")
	mustValue(t, p, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'replica1' AND state = 'streaming'", "1")

	// Replication.
	if err := p.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('one')"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "first row on the replica", valueIs(r, "SELECT count(*) FROM t", "1"))
	var pgErr *pgconn.PgError
	if err := r.Exec(ctx, "INSERT INTO t VALUES ('no')"); !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Errorf("write on the replica: %v, want SQLSTATE 25006 (read-only transaction)", err)
	}

	// The server log is LogFile, with connections logged.
	log, err := os.ReadFile(p.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "connection authorized: user=postgres") {
		t.Errorf("%s has no connection log lines:\n%s", p.LogFile, tail(string(log), 20))
	}

	// Kill: the postmaster and all its backends are gone when it returns, with the shared
	// memory segment; Restart recovers the data.
	pid := postmasterPID(t, p)
	children := childPIDs(pid)
	if len(children) == 0 {
		t.Fatalf("postmaster %d has no children", pid)
	}
	shm := shmID(t, p)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, c := range append(children, pid) {
		if alive(c) {
			t.Errorf("process %d of the killed server is still running", c)
		}
	}
	if _, err := unix.SysvShmCtl(shm, unix.IPC_STAT, &unix.SysvShmDesc{}); err == nil {
		t.Errorf("shared memory segment %d of the killed server still exists", shm)
	}
	mustRefuse(t, p)
	if err := p.Kill(); err == nil {
		t.Error("Kill of a killed server succeeded")
	}
	oldPort := p.Port
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Port != oldPort {
		t.Errorf("restarted on port %d, want %d", p.Port, oldPort)
	}
	mustValue(t, p, "SELECT count(*) FROM t", "1")

	// The replica reconnects on its own; Kill and Restart it too.
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO t VALUES ('two')"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second row on the restarted replica", valueIs(r, "SELECT count(*) FROM t", "2"))

	// Stop is idempotent; Restart after Stop.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	mustRefuse(t, p)
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	mustValue(t, p, "SELECT count(*) FROM t", "2")

	// Promote makes the replica writable.
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	mustValue(t, r, "SELECT pg_is_in_recovery()", "f")
	if err := r.Exec(ctx, "INSERT INTO t VALUES ('three')"); err != nil {
		t.Fatalf("write after promotion: %v", err)
	}
	mustValue(t, r, "SELECT count(*) FROM t", "3")

	// Cleanup removes everything and is idempotent.
	for _, s := range []*Server{r, p} {
		if err := s.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(s.Dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %s still exists after Cleanup (%v)", s.Name, s.Dir, err)
		}
		mustRefuse(t, s)
		if err := s.Cleanup(); err != nil {
			t.Errorf("%s: second Cleanup: %v", s.Name, err)
		}
		if err := s.Restart(ctx); err == nil {
			t.Errorf("%s: Restart after Cleanup succeeded", s.Name)
		}
	}
}

// TestPortInUse starts on a port another socket listens on: the server must move to
// another port. It also checks that Settings reach postgresql.conf, quoted.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // held open while the server starts
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	var picked []int
	opts := Options{
		Settings: map[string]string{"work_mem": "7MB", "application_name": `it's a \ test`},
		Logf:     t.Logf,
		pickPort: func() int {
			port := busy
			if len(picked) > 0 {
				port = minPort + rand.IntN(maxPort-minPort+1)
			}
			picked = append(picked, port)
			return port
		},
	}
	s, err := StartPrimary(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Cleanup() })
	if len(picked) < 2 || s.Port == busy || s.Port != picked[len(picked)-1] {
		t.Errorf("ports tried %v, server on %d; want it off the busy port %d", picked, s.Port, busy)
	}
	log, err := os.ReadFile(s.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "could not bind") {
		t.Errorf("server log does not show the failed bind:\n%s", log)
	}
	mustValue(t, s, "SHOW work_mem", "7MB")
	mustValue(t, s, "SHOW application_name", `it's a \ test`)

	// Restart keeps the port: if it is taken, it fails and says why.
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	taker, err := net.Listen("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	err = s.Restart(ctx)
	taker.Close()
	if !errors.Is(err, errPortInUse) || !strings.Contains(err.Error(), "could not bind IPv4 address") {
		t.Fatalf("Restart on a taken port: %v, want errPortInUse with the server log", err)
	}
	mustRefuse(t, s)
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	mustValue(t, s, "SHOW work_mem", "7MB")
}

// TestStartFailure: a server that cannot start leaves nothing behind, and says why.
func TestStartFailure(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// Not t.TempDir(): its parent is 0700 root, which the postgres user cannot traverse.
	base, err := os.MkdirTemp("", "pgtest-base-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "initdb"), []byte("#!/bin/sh\necho 'initdb: simulated failure' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	_, err = StartPrimary(ctx, Options{BinDir: bin, BaseDir: base})
	if err == nil || !strings.Contains(err.Error(), "initdb: simulated failure") {
		t.Fatalf("StartPrimary with a failing initdb: %v, want its output in the error", err)
	}
	if entries, err := os.ReadDir(base); err != nil || len(entries) != 1 {
		t.Errorf("base dir after a failed start: %v %v, want only bin", entries, err)
	}

	if _, err := StartPrimary(ctx, Options{BinDir: bin, BaseDir: base, Settings: map[string]string{"work_mem = 1\nfsync": "on"}}); err == nil {
		t.Error("a setting name with a newline was accepted")
	}
	if _, err := StartPrimary(ctx, Options{BinDir: bin, BaseDir: strings.Repeat("/x", 50)}); err == nil || !strings.Contains(err.Error(), "shorter BaseDir") {
		t.Errorf("a base dir too long for the socket path: %v", err)
	}
}

func connectAs(ctx context.Context, s *Server, user, password string) error {
	cfg, err := pgconn.ParseConfig(s.DSN(user, "postgres"))
	if err != nil {
		return err
	}
	cfg.Password = password
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

func TestCreateUser(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	p, r := NewPrimaryReplica(t)

	const alicePW = `s3cret'"\x`
	if err := p.CreateUser(ctx, "alice", alicePW, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateUser(ctx, "bob", "pw", "md5"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateUser(ctx, "carol", "pw", "password"); err == nil {
		t.Error("method password was accepted")
	}
	if err := p.CreateUser(ctx, `x" trust`, "pw", "md5"); err == nil {
		t.Error("a user name with a quote was accepted")
	}
	mustValue(t, p, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'alice'", "t")
	mustValue(t, p, "SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'bob'", "t")

	for _, s := range []*Server{p, r} {
		eventually(t, s.Name+": alice logs in", func() error { return connectAs(ctx, s, "alice", alicePW) })
		eventually(t, s.Name+": bob logs in", func() error { return connectAs(ctx, s, "bob", "pw") })
		for _, user := range []string{"alice", "bob"} {
			err := connectAs(ctx, s, user, "wrong")
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Errorf("%s: %s with a wrong password: %v, want SQLSTATE 28P01", s.Name, user, err)
			}
		}
		// Everyone else is still trusted.
		if err := connectAs(ctx, s, "postgres", ""); err != nil {
			t.Errorf("%s: postgres without password: %v", s.Name, err)
		}
	}
}
