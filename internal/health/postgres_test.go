package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgfront/pgfront/internal/pgtest"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newPostgres returns a checker closed when the test ends (before its servers stop).
func newPostgres(t *testing.T, o PostgresOptions) *PostgresChecker {
	c := NewPostgres(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustOK(t *testing.T, c Checker) Observation {
	t.Helper()
	obs := checkWithin(c, 10*time.Second)
	if !obs.OK {
		t.Fatalf("check failed: %v", obs.Err)
	}
	return obs
}

func value(t *testing.T, s *pgtest.Server, sql string) string {
	t.Helper()
	v, err := s.QueryValue(testContext(t), sql)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func exec(t *testing.T, s *pgtest.Server, sql string) {
	t.Helper()
	if err := s.Exec(testContext(t), sql); err != nil {
		t.Fatal(err)
	}
}

// healthBackends lists the pids of the server's pgfront-health sessions.
func healthBackends(t *testing.T, s *pgtest.Server) string {
	return value(t, s, "SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') FROM pg_stat_activity WHERE application_name = 'pgfront-health'")
}

// checkerPID is the backend pid of c's kept connection.
func checkerPID(t *testing.T, c *PostgresChecker) uint32 {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		t.Fatal("no kept connection")
	}
	return c.conn.PID()
}

func TestPostgresRoles(t *testing.T) {
	t.Parallel()
	p, r := pgtest.NewPrimaryReplica(t)
	cp := newPostgres(t, PostgresOptions{Addr: p.Addr()})
	cr := newPostgres(t, PostgresOptions{Addr: r.Addr(), User: "postgres", Database: "postgres"})

	obs := mustOK(t, cp)
	if obs.Role != RolePrimary || obs.InRecovery || obs.LSN == 0 || obs.LagSeconds != 0 || obs.Duration <= 0 {
		t.Errorf("primary: %+v, want primary, not in recovery, LSN > 0, lag 0", obs)
	}
	if want := value(t, p, "SELECT pg_current_wal_lsn()"); obs.LSN > mustLSN(t, want) {
		t.Errorf("primary LSN %X beyond pg_current_wal_lsn() %s", obs.LSN, want)
	}
	obs = mustOK(t, cr)
	if obs.Role != RoleReplica || !obs.InRecovery || obs.LSN == 0 {
		t.Errorf("replica: %+v, want replica, in recovery, LSN > 0", obs)
	}
	pid := checkerPID(t, cr)

	if err := r.Promote(testContext(t)); err != nil {
		t.Fatal(err)
	}
	obs = mustOK(t, cr)
	if obs.Role != RolePrimary || obs.InRecovery || obs.LagSeconds != 0 {
		t.Errorf("promoted replica: %+v, want primary", obs)
	}
	if got := checkerPID(t, cr); got != pid {
		t.Errorf("the promotion check used a new connection (pid %d, was %d)", got, pid)
	}
}

func mustLSN(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := parseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPostgresReuseAndTerminate: one connection serves all checks, and Close ends it with
// Terminate: the server logs a disconnection and no unexpected EOF or reset for it.
func TestPostgresReuseAndTerminate(t *testing.T) {
	t.Parallel()
	// At debug1 the server logs "unexpected EOF on client connection" for a client that
	// leaves without Terminate (at the default level only inside a transaction).
	p := pgtest.NewPrimary(t, map[string]string{"log_min_messages": "debug1", "log_line_prefix": "%m [%p] "})
	c := newPostgres(t, PostgresOptions{Addr: p.Addr()})
	mustOK(t, c)
	pid := checkerPID(t, c)
	for range 5 {
		mustOK(t, c)
	}
	if got := checkerPID(t, c); got != pid {
		t.Fatalf("pid %d after more checks, was %d", got, pid)
	}
	if got := healthBackends(t, p); got != strconv.Itoa(int(pid)) {
		t.Fatalf("pgfront-health backends %q, want just %d", got, pid)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if obs := checkWithin(c, time.Second); obs.OK || !strings.Contains(obs.Err.Error(), "closed") {
		t.Errorf("check after Close: %+v", obs)
	}
	waitFor(t, "the backend to log its end", func() bool {
		return len(logLines(t, p, pid, "disconnection:")) == 1
	})

	// The control: a client that just closes its socket is logged as an unexpected EOF.
	raw, err := pgconn.Connect(testContext(t), p.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	rawPID := raw.PID()
	_ = raw.Conn().Close()
	waitFor(t, "the control backend to log its end", func() bool {
		return len(logLines(t, p, rawPID, "disconnection:")) == 1
	})
	if len(logLines(t, p, rawPID, "unexpected EOF")) == 0 {
		t.Fatalf("the control backend [%d] logged no unexpected EOF: the test cannot see a missing Terminate", rawPID)
	}

	for _, bad := range []string{"unexpected EOF", "connection reset", "could not receive data"} {
		if lines := logLines(t, p, pid, bad); len(lines) > 0 {
			t.Errorf("server log for the checker's backend [%d]: %q", pid, lines)
		}
	}
}

// logLines returns the server log lines of backend pid that contain substr.
func logLines(t *testing.T, s *pgtest.Server, pid uint32, substr string) []string {
	t.Helper()
	b, err := os.ReadFile(s.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("[%d] ", pid)
	var out []string
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, tag) && strings.Contains(line, substr) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// TestPostgresPasswords: SCRAM and md5 users with passwords from a file and from the
// environment; a wrong password fails clearly, is logged once by a monitor, and a
// rotated file is read at the next connection. Not parallel: it sets environment variables.
func TestPostgresPasswords(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx := testContext(t)
	const scramPW, md5PW, wrongPW = "scr'am pw\\1", "md5-pw-2", "not-the-password-77"
	if err := p.CreateUser(ctx, "scram_user", scramPW, "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateUser(ctx, "md5_user", md5PW, "md5"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	scramFile := writeFile("scram", scramPW+"\n")
	md5File := writeFile("md5", md5PW+"\r\n")
	t.Setenv("PGFRONT_TEST_SCRAM", scramPW)
	t.Setenv("PGFRONT_TEST_MD5", md5PW)

	for _, tt := range []struct {
		name, user string
		password   func() (string, error)
	}{
		{"scram from file", "scram_user", PasswordFromFile(scramFile)},
		{"scram from env", "scram_user", PasswordFromEnv("PGFRONT_TEST_SCRAM")},
		{"md5 from file", "md5_user", PasswordFromFile(md5File)},
		{"md5 from env", "md5_user", PasswordFromEnv("PGFRONT_TEST_MD5")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newPostgres(t, PostgresOptions{Addr: p.Addr(), User: tt.user, Password: tt.password})
			if obs := mustOK(t, c); obs.Role != RolePrimary {
				t.Errorf("role %v", obs.Role)
			}
		})
	}

	t.Run("wrong password, then rotated", func(t *testing.T) {
		file := writeFile("rotated", wrongPW+"\n")
		c := newPostgres(t, PostgresOptions{Addr: p.Addr(), User: "scram_user", Password: PasswordFromFile(file)})
		obs := checkWithin(c, 10*time.Second)
		var pgErr *pgconn.PgError
		if obs.OK || !errors.As(obs.Err, &pgErr) || pgErr.Code != "28P01" {
			t.Fatalf("got %+v, want a 28P01 invalid_password error", obs)
		}
		msg := obs.Err.Error()
		if !strings.Contains(msg, "password authentication failed") || !strings.Contains(msg, p.Addr()) {
			t.Errorf("error %q does not say what failed where", msg)
		}
		if strings.Contains(msg, wrongPW) || strings.Contains(msg, scramPW) {
			t.Errorf("error %q contains a password", msg)
		}
		writeFile("rotated", scramPW)
		mustOK(t, c)
	})

	t.Run("environment ignored", func(t *testing.T) {
		// PGPASSWORD would log scram_user in; the checker must not use it.
		t.Setenv("PGPASSWORD", scramPW)
		t.Setenv("PGUSER", "scram_user")
		c := newPostgres(t, PostgresOptions{Addr: p.Addr(), User: "scram_user"})
		if obs := checkWithin(c, 10*time.Second); obs.OK {
			t.Error("check logged in with PGPASSWORD")
		}
		c = newPostgres(t, PostgresOptions{Addr: p.Addr()}) // postgres, not PGUSER's scram_user (trust)
		mustOK(t, c)
	})

	t.Run("monitor reports a wrong password without logging it", func(t *testing.T) {
		logger, logs := newTestLogger()
		rec := &recorder{}
		c := NewPostgres(PostgresOptions{Addr: p.Addr(), User: "md5_user", Password: func() (string, error) { return wrongPW, nil }})
		m := NewMonitor(Options{Interval: 2 * time.Millisecond, FastInterval: 2 * time.Millisecond, Timeout: 5 * time.Second,
			Logger: logger, Reporter: rec}, []Target{{Name: "pg1", Checker: c}})
		m.Start()
		waitFor(t, "30 checks", func() bool { return len(rec.get("pg1")) >= 30 })
		m.Stop()
		for _, st := range rec.get("pg1") {
			if st.Up || !strings.Contains(st.LastErr, "password authentication failed") || strings.Contains(st.LastErr, wrongPW) {
				t.Fatalf("status %+v", st)
			}
		}
		// The first failure is the down, which the reporter's state line says; the rest are
		// within the minute's rate limit.
		if got := logs.Lines("password authentication failed"); len(got) != 0 {
			t.Errorf("%d log lines about the failure over %d checks, want 0:\n%s", len(got), len(rec.get("pg1")), logs)
		}
		if strings.Contains(logs.String(), wrongPW) {
			t.Error("the log contains the password")
		}
	})
}

// TestPostgresLag pauses replay on the replica while the primary writes.
func TestPostgresLag(t *testing.T) {
	t.Parallel()
	p, r := pgtest.NewPrimaryReplica(t)
	cp := newPostgres(t, PostgresOptions{Addr: p.Addr()})
	cr := newPostgres(t, PostgresOptions{Addr: r.Addr()})

	// A first transaction gives the replica a replay timestamp to measure from. The
	// primary's insert position covers it (its checks report the written position, which
	// trails by up to wal_writer_delay with synchronous_commit off).
	exec(t, p, "CREATE TABLE lag (i int); INSERT INTO lag VALUES (1)")
	inserted := mustLSN(t, value(t, p, "SELECT pg_current_wal_insert_lsn()"))
	waitFor(t, "the replica to catch up", func() bool {
		obs := mustOK(t, cr)
		return obs.LSN >= inserted && obs.LagSeconds == 0
	})

	exec(t, r, "SELECT pg_wal_replay_pause()")
	exec(t, p, "INSERT INTO lag SELECT generate_series(1, 10000)")
	inserted = mustLSN(t, value(t, p, "SELECT pg_current_wal_insert_lsn()"))
	var behind, primary Observation
	waitFor(t, "the replica to lag", func() bool {
		behind, primary = mustOK(t, cr), mustOK(t, cp)
		return behind.LagSeconds > 0 && primary.LSN > behind.LSN
	})
	if behind.LSN >= inserted || primary.LagSeconds != 0 {
		t.Errorf("paused replica %+v, primary %+v, inserted up to %X", behind, primary, inserted)
	}

	exec(t, r, "SELECT pg_wal_replay_resume()")
	waitFor(t, "the replica to converge", func() bool {
		obs := mustOK(t, cr)
		return obs.LSN >= inserted && obs.LagSeconds == 0
	})
}

// TestPostgresReconnect: a server restart and an ended backend cost no failed check once
// the server answers again; a stopped server fails the postgres and tcp checks.
func TestPostgresReconnect(t *testing.T) {
	t.Parallel()
	p := pgtest.NewPrimary(t, nil)
	c := newPostgres(t, PostgresOptions{Addr: p.Addr()})
	tcp := NewTCP(p.Addr())
	mustOK(t, c)
	mustOK(t, tcp)
	pid := checkerPID(t, c)

	// An administrator ends the checker's backend: the next check reconnects at once.
	exec(t, p, fmt.Sprintf("SELECT pg_terminate_backend(%d)", pid))
	mustOK(t, c)
	if got := checkerPID(t, c); got == pid {
		t.Fatal("still on the terminated backend")
	}

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if obs := checkWithin(c, 5*time.Second); obs.OK || obs.Role != RoleUnknown || obs.LagSeconds != -1 {
		t.Errorf("postgres check of a stopped server: %+v", obs)
	}
	if obs := checkWithin(tcp, 5*time.Second); obs.OK || obs.Err == nil {
		t.Errorf("tcp check of a stopped server: %+v", obs)
	}
	if err := p.Restart(testContext(t)); err != nil {
		t.Fatal(err)
	}
	mustOK(t, c)
	mustOK(t, tcp)
}

// hangingServer accepts connections and never answers; it returns its address.
func hangingServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &holder{done: make(chan struct{})}
	go h.acceptAndHold(ln)
	t.Cleanup(func() {
		ln.Close()
		<-h.done
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

type holder struct {
	done  chan struct{}
	mu    sync.Mutex
	conns []net.Conn
}

// acceptAndHold keeps every connection open, unread, until the listener closes.
func (h *holder) acceptAndHold(ln net.Listener) {
	defer close(h.done)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.conns = append(h.conns, c)
		h.mu.Unlock()
	}
}

// TestPostgresHanging: a server that never answers is bounded by the timeout, and it does
// not slow down the checks of a healthy server of the same monitor.
func TestPostgresHanging(t *testing.T) {
	t.Parallel()
	hang := hangingServer(t)
	c := NewPostgres(PostgresOptions{Addr: hang})
	obs := checkWithin(c, 200*time.Millisecond)
	if obs.OK || !errors.Is(obs.Err, context.DeadlineExceeded) || obs.Duration > 3*time.Second {
		t.Errorf("check of a hanging server: %+v", obs)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}

	p := pgtest.NewPrimary(t, nil)
	const timeout = 300 * time.Millisecond
	healthyAtSecond := make(chan int, 1)
	rec := &recorder{onReport: func(target string, counts map[string]int) {
		if target == "hang" && counts["hang"] == 2 {
			healthyAtSecond <- counts["pg"]
		}
	}}
	m := NewMonitor(Options{Interval: 20 * time.Millisecond, FastInterval: 20 * time.Millisecond, Timeout: timeout,
		Jitter: -1, Reporter: rec}, []Target{
		{Name: "hang", Checker: NewPostgres(PostgresOptions{Addr: hang})},
		{Name: "pg", Checker: NewPostgres(PostgresOptions{Addr: p.Addr()})},
	})
	m.Start()
	var healthy int
	select {
	case healthy = <-healthyAtSecond:
	case <-time.After(30 * time.Second):
		t.Fatal("the hanging server's second check did not end")
	}
	m.Stop()
	// Two timed-out checks and a wait took over 600ms: at 20ms intervals the healthy
	// server had time for about 30 checks; a loop stuck behind the hanging one, for 2.
	if healthy < 10 {
		t.Errorf("the healthy server was checked %d times during the hanging server's first two checks", healthy)
	}
	for _, st := range rec.get("hang")[:2] {
		if st.Up || st.LastErr == "" || st.CheckDuration < timeout || st.CheckDuration > timeout+3*time.Second {
			t.Errorf("hanging server status %+v", st)
		}
	}
	for _, st := range rec.get("pg") {
		if !st.Up || st.Role != RolePrimary {
			t.Errorf("healthy server status %+v", st)
		}
	}
}

// TestPostgresBadOptions covers failures before any connection.
func TestPostgresBadOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    PostgresOptions
		want string
	}{
		{"no port", PostgresOptions{Addr: "127.0.0.1"}, "parsing address"},
		{"bad port", PostgresOptions{Addr: "127.0.0.1:99999"}, "bad port"},
		{"password error", PostgresOptions{Addr: "127.0.0.1:5432", Password: PasswordFromEnv("PGFRONT_TEST_UNSET_VAR")},
			"getting password: environment variable PGFRONT_TEST_UNSET_VAR is not set"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newPostgres(t, tt.o)
			obs := checkWithin(c, time.Second)
			if obs.OK || obs.Err == nil || !strings.Contains(obs.Err.Error(), tt.want) || obs.LagSeconds != -1 {
				t.Errorf("got %+v, want an error containing %q", obs, tt.want)
			}
		})
	}
}

func TestPasswordFuncs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for content, want := range map[string]string{"s3cret\n": "s3cret", "s3cret\r\n": "s3cret", "s3cret": "s3cret", " sp ace \n\n": " sp ace "} {
		if got, err := PasswordFromFile(write("pw", content))(); err != nil || got != want {
			t.Errorf("file %q: got %q, %v; want %q", content, got, err, want)
		}
	}
	missing := filepath.Join(dir, "missing")
	if _, err := PasswordFromFile(missing)(); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v, want an error naming it", err)
	}
	empty := write("empty", "\n")
	if _, err := PasswordFromFile(empty)(); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty file: %v, want an error naming it", err)
	}

	t.Setenv("PGFRONT_TEST_PW", "v4lue")
	t.Setenv("PGFRONT_TEST_EMPTY", "")
	if got, err := PasswordFromEnv("PGFRONT_TEST_PW")(); err != nil || got != "v4lue" {
		t.Errorf("env: got %q, %v", got, err)
	}
	for _, name := range []string{"PGFRONT_TEST_EMPTY", "PGFRONT_TEST_UNSET_VAR"} {
		if _, err := PasswordFromEnv(name)(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want an error naming it", name, err)
		}
	}
}

func TestParseRow(t *testing.T) {
	row := func(vals ...string) [][]byte {
		var r [][]byte
		for _, v := range vals {
			if v == "NULL" {
				r = append(r, nil)
			} else {
				r = append(r, []byte(v))
			}
		}
		return r
	}
	tests := []struct {
		row     [][]byte
		want    Observation
		wantErr bool
	}{
		{row("f", "0/3000060", "0"), Observation{OK: true, Role: RolePrimary, LSN: 0x3000060}, false},
		{row("t", "16/B374D848", "0"), Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 0x16B374D848}, false},
		{row("t", "1/0", "2.5"), Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 1 << 32, LagSeconds: 2.5}, false},
		{row("t", "1/0", "NULL"), Observation{OK: true, Role: RoleReplica, InRecovery: true, LSN: 1 << 32, LagSeconds: -1}, false},
		{row("t", "NULL", "-0.25"), Observation{OK: true, Role: RoleReplica, InRecovery: true}, false}, // clock skew
		{row("x", "0/0", "0"), Observation{}, true},
		{row("f", "bogus", "0"), Observation{}, true},
		{row("f", "0/0", "soon"), Observation{}, true},
	}
	for _, tt := range tests {
		got, err := parseRow(tt.row)
		if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
			t.Errorf("parseRow(%q) = %+v, %v; want %+v, error %v", tt.row, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseLSN(t *testing.T) {
	for s, want := range map[string]uint64{"0/0": 0, "0/3000060": 0x3000060, "16/B374D848": 0x16B374D848, "FFFFFFFF/FFFFFFFF": 1<<64 - 1} {
		if got, err := parseLSN(s); err != nil || got != want {
			t.Errorf("parseLSN(%q) = %X, %v; want %X", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "/", "1/", "/1", "1/2/3", "100000000/0", "0/100000000", "g/0", "-1/0", "+1/0"} {
		if _, err := parseLSN(s); err == nil {
			t.Errorf("parseLSN(%q) succeeded", s)
		}
	}
}

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "1/", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseLSN(s)
		if err != nil {
			return
		}
		back, err := parseLSN(fmt.Sprintf("%X/%X", v>>32, v&0xFFFFFFFF))
		if err != nil || back != v {
			t.Fatalf("%q: %X does not round-trip (%X, %v)", s, v, back, err)
		}
	})
}
