package main

// Reload and upgrade end to end, with real processes: `pgfront run` in front of a real primary
// and streaming replica, under connection churn (pgbench -C) and long transactions, through 10
// config reloads (SIGHUP) and 3 upgrades (a second `pgfront run` on the same config file takes
// the listeners). No connection may fail, no transaction may break, and every old process must
// exit by itself, with status 0, once its sessions are done.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/pgtest"
)

// syncBuffer is a bytes.Buffer safe for one writer (a process's output copier) and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logRecord is one line of pgfront's JSON log.
type logRecord map[string]any

func (r logRecord) str(key string) string { s, _ := r[key].(string); return s }

// pgfrontProc is one `pgfront run` process started by the test. Its stderr (JSON log lines) goes
// to log; done is closed when it has exited, and then err is cmd.Wait's result.
type pgfrontProc struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error
}

// startPgfront starts `pgfront run -c cfg`; the process is killed, if still running, when the
// test ends.
func startPgfront(t *testing.T, bin, cfg, name string) *pgfrontProc {
	t.Helper()
	p := &pgfrontProc{name: name, log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "run", "-c", cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting pgfront %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// records are the JSON log lines written so far.
func (p *pgfrontProc) records() []logRecord {
	var out []logRecord
	sc := bufio.NewScanner(strings.NewReader(p.log.String()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r logRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// find returns the first record with message msg for which match (may be nil) holds.
func (p *pgfrontProc) find(msg string, match func(logRecord) bool) (logRecord, bool) {
	for _, r := range p.records() {
		if r.str("msg") == msg && (match == nil || match(r)) {
			return r, true
		}
	}
	return nil, false
}

// waitRecord polls the log until a record with message msg (and match) appears; the process
// exiting first, or the deadline, fails the test.
func (p *pgfrontProc) waitRecord(t *testing.T, within time.Duration, msg string, match func(logRecord) bool) logRecord {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if r, ok := p.find(msg, match); ok {
			return r
		}
		select {
		case <-p.done:
			t.Fatalf("pgfront %s exited (%v) before logging %q", p.name, p.err, msg)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgfront %s did not log %q within %s", p.name, msg, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listening waits until the process listens and returns the route rw's and the admin
// listener's addresses.
func (p *pgfrontProc) listening(t *testing.T) (rw, admin string) {
	t.Helper()
	r := p.waitRecord(t, 20*time.Second, "route listening", func(r logRecord) bool { return r.str("route") == "rw" })
	a := p.waitRecord(t, 20*time.Second, "admin listening", nil)
	return r.str("addr"), a.str("addr")
}

// wait waits for the process to exit and returns how long that took.
func (p *pgfrontProc) wait(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-p.done:
		return time.Since(start)
	case <-time.After(within):
		t.Fatalf("pgfront %s still running %s after it was told to stop", p.name, within)
		return 0
	}
}

// summary is the process's log for a failure report: every line except the ordinary end of a
// session (client sent Terminate), which churn makes thousands of.
func (p *pgfrontProc) summary() string {
	var b strings.Builder
	skipped := 0
	for line := range strings.Lines(p.log.String()) {
		if strings.Contains(line, `"msg":"session ended"`) && strings.Contains(line, `"cause":"client_terminate"`) {
			skipped++
			continue
		}
		b.WriteString(line)
	}
	fmt.Fprintf(&b, "(%d session ended lines with cause client_terminate left out)\n", skipped)
	return b.String()
}

// lifecycleConfig is the config file's content for one step.
type lifecycleConfig struct {
	primary, replica string // addresses
	extra            bool   // route extra (primary) on a port of its own
	withReplica      bool   // server r in cluster c, and route ro (replica)
	slow             bool   // timeouts client_idle 9m and queue 6s instead of 10m and 5s
}

func (c lifecycleConfig) yaml() string {
	idle, queue := "10m", "5s"
	if c.slow {
		idle, queue = "9m", "6s"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `log: {format: json, level: info}
admin: {listen: "127.0.0.1:0"}
shutdown: {grace: 30s}
timeouts: {client_idle: %s, queue: %s}
clusters:
  c:
    health: {check: postgres, interval: 1s, fast_interval: 200ms, timeout: 900ms, rise: 1, fall: 3}
    servers:
      - {name: pg, address: "%s", role: primary}
`, idle, queue, c.primary)
	if c.withReplica {
		fmt.Fprintf(&b, "      - {name: r, address: \"%s\", role: replica}\n", c.replica)
	}
	b.WriteString("routes:\n  rw: {listen: \"127.0.0.1:0\", cluster: c, role: primary}\n")
	if c.extra {
		b.WriteString("  extra: {listen: \"127.0.0.1:0\", cluster: c, role: primary}\n")
	}
	if c.withReplica {
		b.WriteString("  ro: {listen: \"127.0.0.1:0\", cluster: c, role: replica}\n")
	}
	return b.String()
}

// routes are the route names the config has.
func (c lifecycleConfig) routes() []string {
	names := []string{"rw"}
	if c.extra {
		names = append(names, "extra")
	}
	if c.withReplica {
		names = append(names, "ro")
	}
	return names
}

// writeFileAtomic replaces path's content in one rename, as an operator's tooling should: a
// process starting or reloading meanwhile reads the old file or the new one, never half.
func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// ctlJSON runs `pgfront ctl -addr http://ADMIN -json CMD` and decodes its output into v.
func ctlJSON(bin, admin, cmd string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "ctl", "-addr", "http://"+admin, "-json", cmd).Output()
	if err != nil {
		return fmt.Errorf("pgfront ctl %s: %w", cmd, err)
	}
	return json.Unmarshal(out, v)
}

// longTx is a client that runs BEGIN; INSERT; SELECT pg_sleep(1..2); INSERT; COMMIT again and
// again through a route, each statement a round trip of its own. With reconnect it opens a new
// connection per transaction; without, it keeps its connection, waits think between two
// transactions, and reconnects when a drain ended it between two transactions (57P01 in
// answer to BEGIN, which is fine). A think time over a draining pgfront's 500ms of quiet gets
// it ended at a quiet boundary; none (a busy pooled connection) at the first boundary 2s into
// the drain. A transaction that fails between BEGIN and the end of COMMIT is broken.
type longTx struct {
	id        int
	dsn       string
	reconnect bool
	think     time.Duration
	stop      <-chan struct{}

	committed  atomic.Int64
	drained    atomic.Int64 // connections ended between transactions with 57P01
	mu         sync.Mutex
	broken     []error // failures inside a transaction
	connFailed []error // failures to connect, or to start a transaction, other than 57P01
}

func (c *longTx) run(deadline time.Time) {
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	closeConn := func() {
		_ = conn.Close(context.Background())
		conn = nil
	}
	for seq := 1; time.Now().Before(deadline); seq++ {
		select {
		case <-c.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if conn == nil {
			var err error
			if conn, err = pgconn.Connect(ctx, c.dsn); err != nil {
				cancel()
				conn = nil
				c.record(&c.connFailed, fmt.Errorf("client %d connect: %w", c.id, err))
				continue
			}
		}
		if _, err := conn.Exec(ctx, "BEGIN").ReadAll(); err != nil {
			cancel()
			closeConn()
			if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "57P01" {
				c.drained.Add(1) // ended at a boundary, between two transactions
			} else {
				c.record(&c.connFailed, fmt.Errorf("client %d BEGIN: %w", c.id, err))
			}
			continue
		}
		sleep := 1 + rand.Float64()
		err := c.body(ctx, conn, seq, sleep)
		cancel()
		if err != nil {
			c.record(&c.broken, fmt.Errorf("client %d transaction %d: %w", c.id, seq, err))
			closeConn()
			continue
		}
		c.committed.Add(1)
		if c.reconnect {
			closeConn()
			continue
		}
		select {
		case <-c.stop:
			return
		case <-time.After(c.think):
		}
	}
}

func (c *longTx) body(ctx context.Context, conn *pgconn.PgConn, seq int, sleep float64) error {
	for _, sql := range []string{
		fmt.Sprintf("INSERT INTO lifecycle (client, seq, n) VALUES (%d, %d, 1)", c.id, seq),
		fmt.Sprintf("SELECT pg_sleep(%.3f)", sleep),
		fmt.Sprintf("INSERT INTO lifecycle (client, seq, n) VALUES (%d, %d, 2)", c.id, seq),
		"COMMIT",
	} {
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	return nil
}

func (c *longTx) record(to *[]error, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*to = append(*to, err)
}

func (c *longTx) failures() (broken, connFailed []error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.broken...), append([]error(nil), c.connFailed...)
}

// pgbenchResult is what the test reads from pgbench's output.
type pgbenchResult struct {
	out       string
	err       error // exec's: a non-zero exit
	processed int
	failed    int
	aborted   int
	tps       string
}

var (
	pgbenchProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	pgbenchFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	pgbenchAborted   = regexp.MustCompile(`(?m)client \d+ aborted`)
	pgbenchTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
)

func parsePgbench(out string, err error) pgbenchResult {
	r := pgbenchResult{out: out, err: err, processed: -1, failed: -1}
	if m := pgbenchProcessed.FindStringSubmatch(out); m != nil {
		r.processed, _ = strconv.Atoi(m[1])
	}
	if m := pgbenchFailed.FindStringSubmatch(out); m != nil {
		r.failed, _ = strconv.Atoi(m[1])
	}
	r.aborted = len(pgbenchAborted.FindAllString(out, -1))
	if m := pgbenchTPS.FindStringSubmatch(out); m != nil {
		r.tps = m[1]
	}
	return r
}

// findPgbench returns the pgbench next to the PostgreSQL server binaries, else the one on PATH.
func findPgbench() (string, error) {
	if dir, err := pgtest.FindBinDir(); err == nil {
		if p := filepath.Join(dir, "pgbench"); fileExecutable(p) {
			return p, nil
		}
	}
	return exec.LookPath("pgbench")
}

func fileExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// TestReloadAndUpgradeUnderLoad runs `pgfront run` as a real process in front of a real primary
// and replica while pgbench -C connects once per transaction and Go clients run long
// transactions (BEGIN; INSERT; pg_sleep(1..2); INSERT; COMMIT) through route rw, and meanwhile
// reloads the config 10 times (routes and a server added and removed, timeouts changed; each
// confirmed by the generation `pgfront ctl config` reports) and upgrades 3 times (a second
// `pgfront run` on the same file takes the listeners; the old one must exit by itself, status
// 0, once its sessions are done, long before shutdown.grace). It asserts pgbench saw no failed
// transaction and no aborted client, no long transaction broke, and the rows committed are
// exactly two per committed transaction.
func TestReloadAndUpgradeUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it against PostgreSQL under load")
	}
	pgbench, err := findPgbench()
	if err != nil {
		t.Skipf("cmd/pgfront: pgbench not found (Debian: postgresql or postgresql-client): %v", err)
	}
	primary, replica := pgtest.NewPrimaryReplica(t)
	bin := pgfrontBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := primary.Exec(ctx, "CREATE TABLE lifecycle (client int, seq int, n int, PRIMARY KEY (client, seq, n))"); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "pgfront.yaml")
	cfg := lifecycleConfig{primary: primary.Addr(), replica: replica.Addr()}
	writeFileAtomic(t, cfgPath, cfg.yaml())

	var procs []*pgfrontProc
	var pgb pgbenchResult
	pgbenchDone := make(chan struct{})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range procs {
			t.Logf("pgfront %s (exit: %v) log:\n%s", p.name, p.err, p.summary())
		}
		select {
		case <-pgbenchDone:
			t.Logf("pgbench output:\n%s", pgb.out)
		default:
		}
	})
	start := func(name string) *pgfrontProc {
		p := startPgfront(t, bin, cfgPath, name)
		procs = append(procs, p)
		return p
	}

	cur := start("A")
	rwAddr, adminAddr := cur.listening(t)
	host, port, _ := net.SplitHostPort(rwAddr)
	t.Logf("pgfront A: route rw on %s, admin on %s", rwAddr, adminAddr)

	// The load. pgbench runs for a fixed time that covers every step below (checked at the end).
	const pgbenchSeconds = 30
	script := filepath.Join(dir, "select1.sql")
	if err := os.WriteFile(script, []byte("SELECT 1;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pgbenchCmd := exec.Command(pgbench, "-n", "-C", "-c", "4", "-j", "2", "-T", strconv.Itoa(pgbenchSeconds),
		"-f", script, "-h", host, "-p", port, "-U", "postgres", "postgres")
	pgbenchCmd.Env = append(os.Environ(), "PGCONNECT_TIMEOUT=10")
	pgbenchCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var pgbenchOut syncBuffer
	pgbenchCmd.Stdout, pgbenchCmd.Stderr = &pgbenchOut, &pgbenchOut
	if err := pgbenchCmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := pgbenchCmd.Wait()
		pgb = parsePgbench(pgbenchOut.String(), err)
		close(pgbenchDone)
	}()
	t.Cleanup(func() {
		select {
		case <-pgbenchDone:
		default:
			_ = pgbenchCmd.Process.Kill()
			<-pgbenchDone
		}
	})

	stopClients := make(chan struct{})
	var clients []*longTx
	var wg sync.WaitGroup
	clientDeadline := time.Now().Add(pgbenchSeconds * time.Second)
	for i := range 4 {
		// 0, 2: a connection per transaction; 1: one connection, transactions back to back;
		// 3: one connection, 700ms between transactions.
		c := &longTx{id: i, reconnect: i%2 == 0, think: time.Duration(i/3) * 700 * time.Millisecond, stop: stopClients,
			dsn: fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=10", host, port)}
		clients = append(clients, c)
		wg.Go(func() { c.run(clientDeadline) })
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(stopClients)
			wg.Wait()
		}
	}
	t.Cleanup(stop)
	committed := func() int64 {
		var n int64
		for _, c := range clients {
			n += c.committed.Load()
		}
		return n
	}
	// waitCommitted waits until the long-transaction clients have committed n more.
	waitCommitted := func(n int64, what string) {
		t.Helper()
		want := committed() + n
		deadline := time.Now().Add(15 * time.Second)
		for committed() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the long-transaction clients committed %d, want %d within 15s", what, committed(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCommitted(int64(len(clients)), "before the first step")

	generation := uint64(1) // of the current process; a new process starts at 1
	reload := func(i int, next lifecycleConfig) {
		t.Helper()
		var before struct{ Hash string }
		if err := ctlJSON(bin, adminAddr, "config", &before); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		writeFileAtomic(t, cfgPath, next.yaml())
		sent := time.Now()
		if err := cur.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := sent.Add(10 * time.Second)
		for {
			var got struct {
				Generation uint64
				Hash       string
			}
			if err := ctlJSON(bin, adminAddr, "config", &got); err != nil {
				t.Fatalf("reload %d: %v", i, err)
			}
			if got.Generation == generation+1 {
				if got.Hash == before.Hash {
					t.Fatalf("reload %d: generation %d has the hash of the one before", i, got.Generation)
				}
				generation = got.Generation
				break
			}
			if got.Generation > generation+1 || time.Now().After(deadline) {
				t.Fatalf("reload %d: generation %d, want %d within 10s", i, got.Generation, generation+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
		applied := time.Since(sent)
		var routes []struct{ Name, Listen string }
		if err := ctlJSON(bin, adminAddr, "routes", &routes); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		var names []string
		for _, r := range routes {
			names = append(names, r.Name)
			// A route the reload added serves at once, from the right server.
			if r.Name == "rw" {
				continue
			}
			h, p, _ := net.SplitHostPort(r.Listen)
			v, err := queryOnce(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=10", h, p),
				"SELECT pg_is_in_recovery()")
			if want := map[string]string{"extra": "f", "ro": "t"}[r.Name]; err != nil || v != want {
				t.Fatalf("reload %d: route %s on %s: pg_is_in_recovery() = %q, %v; want %q", i, r.Name, r.Listen, v, err, want)
			}
		}
		if got, want := strings.Join(slices.Sorted(slices.Values(names)), ","), strings.Join(slices.Sorted(slices.Values(next.routes())), ","); got != want {
			t.Fatalf("reload %d: routes after the reload: %s, want %s", i, got, want)
		}
		cfg = next
		t.Logf("reload %d: generation %d applied %s after SIGHUP; routes %s", i, generation, applied.Round(time.Millisecond), strings.Join(names, ","))
	}

	upgrades := 0
	upgrade := func() {
		t.Helper()
		upgrades++
		old := cur
		next := start(string(rune('A' + upgrades)))
		next.waitRecord(t, 20*time.Second, "took the listeners of the previous pgfront process; it drains", nil)
		handedOver := time.Now()
		nextRW, nextAdmin := next.listening(t)
		if nextRW != rwAddr || nextAdmin != adminAddr {
			t.Fatalf("upgrade %d: pgfront %s listens on rw %s, admin %s; want the same sockets %s, %s",
				upgrades, next.name, nextRW, nextAdmin, rwAddr, adminAddr)
		}
		// The old process ends each session at its next transaction boundary and exits: after
		// 0.5s of quiet there, or at the first boundary 2s into the drain for the client that
		// never pauses; a long transaction lasts at most 2s. Far below shutdown.grace (30s).
		old.wait(t, 15*time.Second)
		exited := time.Since(handedOver)
		if old.err != nil {
			t.Fatalf("upgrade %d: the old pgfront %s exited with %v", upgrades, old.name, old.err)
		}
		if _, ok := old.find("stopped", nil); !ok {
			t.Fatalf("upgrade %d: the old pgfront %s exited without logging \"stopped\"", upgrades, old.name)
		}
		cur, generation = next, 1
		var got struct{ Generation uint64 }
		if err := ctlJSON(bin, adminAddr, "config", &got); err != nil || got.Generation != 1 {
			t.Fatalf("upgrade %d: ctl config on the new process: generation %d, %v; want 1", upgrades, got.Generation, err)
		}
		t.Logf("upgrade %d: pgfront %s took over; %s exited (status 0) %s after the hand-over",
			upgrades, next.name, old.name, exited.Round(time.Millisecond))
		waitCommitted(2, fmt.Sprintf("after upgrade %d", upgrades))
	}

	steps := []func(c lifecycleConfig) lifecycleConfig{
		func(c lifecycleConfig) lifecycleConfig { c.extra = !c.extra; return c },
		func(c lifecycleConfig) lifecycleConfig { c.withReplica = !c.withReplica; return c },
		func(c lifecycleConfig) lifecycleConfig { c.slow = !c.slow; return c },
	}
	stepsStart := time.Now()
	for i := 1; i <= 10; i++ {
		reload(i, steps[(i-1)%len(steps)](cfg))
		if i%3 == 0 {
			upgrade()
		}
	}
	stepsDone := time.Now()
	t.Logf("10 reloads and 3 upgrades took %s", stepsDone.Sub(stepsStart).Round(time.Millisecond))
	select {
	case <-pgbenchDone:
		t.Fatalf("pgbench (-T %d) ended before the reloads and upgrades did: it must cover them", pgbenchSeconds)
	default:
	}
	stop()
	select {
	case <-pgbenchDone:
	case <-time.After(time.Until(stepsDone.Add(pgbenchSeconds*time.Second + 30*time.Second))):
		t.Fatal("pgbench did not end")
	}

	// The last process stops as an operator would stop it.
	if err := cur.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cur.wait(t, 15*time.Second)
	if cur.err != nil {
		t.Errorf("the last pgfront %s exited with %v after SIGTERM", cur.name, cur.err)
	}

	t.Logf("pgbench: %d transactions (one connection each), tps %s, %d failed, %d aborted clients",
		pgb.processed, pgb.tps, pgb.failed, pgb.aborted)
	if pgb.err != nil || pgb.failed != 0 || pgb.aborted != 0 || pgb.processed <= 0 {
		t.Errorf("pgbench: exit %v, %d failed transactions, %d aborted clients, %d processed; want exit 0, 0, 0, > 0",
			pgb.err, pgb.failed, pgb.aborted, pgb.processed)
	}
	var drained int64
	for _, c := range clients {
		broken, connFailed := c.failures()
		for _, err := range broken {
			t.Errorf("broken transaction: %v", err)
		}
		for _, err := range connFailed {
			t.Errorf("failed connection: %v", err)
		}
		drained += c.drained.Load()
		// A client that keeps its connection was on an old process at some upgrade, and was
		// ended there between two transactions.
		if !c.reconnect && c.drained.Load() == 0 {
			t.Errorf("client %d (one connection, %s between transactions) was never ended by a drain in %d upgrades", c.id, c.think, upgrades)
		}
	}
	t.Logf("long transactions: %d committed, %d connections ended between transactions (57P01)", committed(), drained)
	rows, err := primary.QueryValue(ctx, "SELECT count(*) FROM lifecycle")
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.FormatInt(2*committed(), 10); rows != want {
		t.Errorf("rows in lifecycle: %s, want %s (2 per committed transaction)", rows, want)
	}
	for _, p := range procs {
		for _, r := range p.records() {
			if msg := r.str("msg"); msg == "session refused" || msg == "server connect failed" {
				t.Errorf("pgfront %s: %s: %v", p.name, msg, r)
			} else if lvl := r.str("level"); lvl == "WARN" || lvl == "ERROR" {
				t.Logf("pgfront %s: %s %s: %v", p.name, lvl, msg, r)
			}
		}
	}
}

// queryOnce connects, runs sql and returns the first column of the first row.
func queryOnce(ctx context.Context, dsn, sql string) (string, error) {
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return "", err
	}
	if len(res) == 0 || len(res[0].Rows) == 0 {
		return "", errors.New("no rows")
	}
	return string(res[0].Rows[0][0]), nil
}
