// Command failover measures how long writes stop during a Patroni failover when they go
// through pgfront and when they go through HAProxy 2.6 configured as Patroni's
// documentation recommends, both in the same run against the same real cluster.
// bench/failover.sh builds and runs it; bench/README.md explains the figures.
//
//	failover -pgfront /tmp/x/pgfront              # table on stdout, progress on stderr
//	failover -keep                                # keep the work dir (logs, attempts.csv)
//
// It starts a three-node Patroni cluster (internal/patronitest), a pgfront process and a
// haproxy process in front of it, and two writers, one per proxy. Each writer inserts a
// row every 10 ms over one pgx connection and reconnects after any error. A poller
// records, every 100 ms, which node holds the leader key in etcd and which node Patroni
// reports as the running primary. Then come two scenarios: a planned switchover
// (patronictl switchover) and the loss of the leader's node (SIGKILL of Patroni and its
// PostgreSQL). Each ends once both writers have written to the new leader without a
// failure for 5 s, or 60 s after the event.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfront/pgfront/internal/patronitest"
)

// Fixed parameters of the measurement.
const (
	writeEvery     = 10 * time.Millisecond
	pollEvery      = 100 * time.Millisecond
	connectTimeout = 40 * time.Second // above pgfront's timeouts.queue (30s): its clients wait, then fail
	stmtTimeout    = 10 * time.Second
	readyTimeout   = 60 * time.Second
	surviveTarget  = time.Second // no session to a former leader may outlive its leadership by more
)

// The writers' names, also the proxy column of bench_writes.
const (
	proxyPgfront = "pgfront"
	proxyHAProxy = "haproxy"
)

var proxies = []string{proxyPgfront, proxyHAProxy}

const insertSQL = `INSERT INTO bench_writes(proxy, seq, ts) VALUES ($1, $2, clock_timestamp()) RETURNING pg_is_in_recovery(), inet_server_port()`

type options struct {
	pgfront  string // pgfront binary; "" = build ./cmd/pgfront
	haproxy  string
	portBase int // pgfront listens on portBase, haproxy on portBase+1
	steady   time.Duration
	settle   time.Duration
	maxWait  time.Duration
	keep     bool
	dcs      bool // pgfront's dcs role source, and the split of the gap it makes measurable
}

func main() {
	var o options
	flag.StringVar(&o.pgfront, "pgfront", "", "pgfront binary (default: go build ./cmd/pgfront into the work dir; run from the module)")
	flag.StringVar(&o.haproxy, "haproxy", "/usr/sbin/haproxy", "haproxy binary")
	flag.IntVar(&o.portBase, "port-base", 26432, "pgfront listens on this loopback port, haproxy on the next")
	flag.DurationVar(&o.steady, "steady", 3*time.Second, "steady writes through both proxies before each event")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "failure-free writes to the new leader that end a scenario")
	flag.DurationVar(&o.maxWait, "max", 60*time.Second, "bound of a scenario, from its event")
	flag.BoolVar(&o.keep, "keep", false, "keep the work dir: configs, pgfront and haproxy logs, Patroni logs, attempts.csv")
	flag.BoolVar(&o.dcs, "dcs", false, "pgfront follows Patroni's leader key from etcd (clusters.X.dcs); report pgfront's own share of the gap")
	flag.Parse()
	if err := patronitest.Available(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "failover:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[failover %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// bench is one run: the cluster, the proxies, the writers and the leader timeline.
type bench struct {
	o       options
	dir     string
	cluster *patronitest.Cluster
	byPort  map[int]*patronitest.Node
	writers map[string]*writer
	tl      *timeline
	dcs     *dcsTimeline // -dcs: the leader key from the bench's own watch
	procs   []*child
	pgfLog  string
	haLog   string
}

func run(ctx context.Context, o options) (retErr error) {
	dir, err := os.MkdirTemp("", "pgfront-failover-")
	if err != nil {
		return err
	}
	b := &bench{o: o, dir: dir, byPort: map[int]*patronitest.Node{}, writers: map[string]*writer{},
		pgfLog: filepath.Join(dir, "pgfront.log"), haLog: filepath.Join(dir, "haproxy.log")}
	// A failed run keeps its work dir for a look at the logs; an interrupted one does not.
	failed := func() bool { return retErr != nil && ctx.Err() == nil }
	defer func() {
		if o.keep || failed() {
			logf("work dir kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	if b.o.pgfront == "" {
		b.o.pgfront = filepath.Join(dir, "pgfront")
		logf("building pgfront")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.o.pgfront, "github.com/pgfront/pgfront/cmd/pgfront")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building pgfront: %w", err)
		}
	}

	logf("starting a 3-node Patroni cluster")
	c, err := patronitest.Start(ctx, patronitest.Options{Nodes: 3, Logf: logf})
	if err != nil {
		return err
	}
	b.cluster = c
	defer func() {
		if o.keep || failed() {
			for _, n := range c.Nodes {
				copyFile(n.LogFile, filepath.Join(dir, n.Name+".patroni.log"))
			}
		}
		if err := c.Cleanup(); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	for _, n := range c.Nodes {
		b.byPort[n.PGPort] = n
	}
	leader, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	if err := execSQL(ctx, leader.DSN(), `CREATE TABLE bench_writes (
		id bigserial PRIMARY KEY, proxy text NOT NULL, seq bigint NOT NULL, ts timestamptz NOT NULL)`); err != nil {
		return fmt.Errorf("creating bench_writes on %s: %w", leader.Name, err)
	}

	defer b.stopProcs()
	pgfAddr, err := b.startPgfront(ctx)
	if err != nil {
		return err
	}
	haAddr, err := b.startHAProxy(ctx)
	if err != nil {
		return err
	}
	for name, addr := range map[string]string{proxyPgfront: pgfAddr, proxyHAProxy: haAddr} {
		if err := waitWritable(ctx, addr); err != nil {
			return fmt.Errorf("%s at %s: %w", name, addr, err)
		}
	}

	// The poller and the writers run until the scenarios are over.
	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	b.tl = &timeline{}
	etcdKey := c.Namespace + c.Scope + "/leader"
	wg.Add(1)
	go func() { defer wg.Done(); pollLeader(runCtx, c, etcdKey, b.tl) }()
	if o.dcs {
		if b.dcs, err = watchDCS(runCtx, c, etcdKey, &wg); err != nil {
			stopRun()
			wg.Wait()
			return err
		}
	}
	for name, addr := range map[string]string{proxyPgfront: pgfAddr, proxyHAProxy: haAddr} {
		w := &writer{name: name, addr: addr}
		b.writers[name] = w
		wg.Add(1)
		go func() { defer wg.Done(); w.run(runCtx) }()
	}
	stopAll := func() { stopRun(); wg.Wait() }
	defer stopAll()

	var scs []*scenario
	sc, err := b.scenario(ctx, "switchover", func(old *patronitest.Node) error {
		return c.Switchover(ctx, nil)
	})
	if sc != nil {
		scs = append(scs, sc)
	}
	if err != nil {
		return err
	}
	logf("waiting for %s to stream again as a replica", sc.old.Name)
	if err := c.WaitReplica(ctx, sc.old); err != nil {
		return err
	}
	sc, err = b.scenario(ctx, "node loss", func(old *patronitest.Node) error {
		return c.KillNode(old)
	})
	if sc != nil {
		scs = append(scs, sc)
	}
	if err != nil {
		return err
	}
	stopAll()

	final, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	missing, err := b.missingAcks(ctx, final)
	if err != nil {
		return err
	}
	if o.keep {
		b.writeCSV(filepath.Join(dir, "attempts.csv"))
	}
	b.report(os.Stdout, scs, missing)
	if o.dcs {
		b.reportDCS(os.Stdout, scs)
	}
	return nil
}

// ---------------------------------------------------------------- processes

// child is a process the bench started; it is killed at the end.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (b *bench) spawn(name, logPath string, args ...string) (*child, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = b.dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	b.procs = append(b.procs, p)
	return p, nil
}

// stopProcs ends every process the bench started (SIGTERM, then SIGKILL after 5 s).
func (b *bench) stopProcs() {
	for _, p := range b.procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	b.procs = nil
}

// pgfrontHealth is the cluster's health section: pgfront's recommended fast-failover
// settings (see bench/README.md).
const pgfrontHealth = `{check: patroni, interval: 1s, fast_interval: 200ms, timeout: 500ms, rise: 1, fall: 1}`

func (b *bench) startPgfront(ctx context.Context) (string, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.o.portBase))
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "log: {format: json, level: info}\ntimeouts: {queue: 30s}\nclusters:\n  patroni:\n")
	fmt.Fprintf(&cfg, "    health: %s\n", pgfrontHealth)
	if b.o.dcs {
		fmt.Fprintf(&cfg, "    dcs: {etcd: {hosts: [%q], namespace: %q, scope: %q}}\n", b.cluster.EtcdAddr(), b.cluster.Namespace, b.cluster.Scope)
	}
	fmt.Fprintf(&cfg, "    servers:\n")
	for _, n := range b.cluster.Nodes {
		fmt.Fprintf(&cfg, "      - {name: %s, address: %q, patroni: %q}\n", n.Name, n.PGAddr(), n.RESTAddr())
	}
	fmt.Fprintf(&cfg, "routes:\n  rw: {listen: %q, cluster: patroni, role: primary}\n", addr)
	path := filepath.Join(b.dir, "pgfront.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		return "", err
	}
	p, err := b.spawn("pgfront", b.pgfLog, b.o.pgfront, "run", "-c", path)
	if err != nil {
		return "", err
	}
	return addr, waitListen(ctx, p, addr, b.pgfLog)
}

func (b *bench) startHAProxy(ctx context.Context) (string, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(b.o.portBase+1))
	var cfg strings.Builder
	// As Patroni's documentation (and its haproxy.cfg example) recommends; the log lines
	// only record health-check transitions, for the event timeline.
	fmt.Fprintf(&cfg, `global
    maxconn 5000
    log stdout format iso local0 info

defaults
    log global
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 5s
    timeout server 30m
    timeout check 5s

listen primary
    bind %s
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
`, addr)
	for _, n := range b.cluster.Nodes {
		fmt.Fprintf(&cfg, "    server %s %s maxconn 100 check port %d\n", n.Name, n.PGAddr(), n.RESTPort)
	}
	path := filepath.Join(b.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		return "", err
	}
	pid := filepath.Join(b.dir, "haproxy.pid")
	p, err := b.spawn("haproxy", b.haLog, b.o.haproxy, "-db", "-f", path, "-p", pid)
	if err != nil {
		return "", err
	}
	return addr, waitListen(ctx, p, addr, b.haLog)
}

// waitListen waits until addr accepts connections, failing early if p exits.
func waitListen(ctx context.Context, p *child, addr, logPath string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("%s exited: %s", p.name, out)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not listening after %v", p.name, addr, readyTimeout)
		}
	}
}

// waitWritable waits until an insert through addr succeeds on a primary.
func waitWritable(ctx context.Context, addr string) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		last = execSQL(ctx, dsn(addr), `INSERT INTO bench_writes(proxy, seq, ts) SELECT 'probe', 0, now() WHERE NOT pg_is_in_recovery()`)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("no successful write within %v: %w", readyTimeout, last)
}

func dsn(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable", host, port)
}

func execSQL(ctx context.Context, dsn, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, stmtTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func copyFile(from, to string) {
	if b, err := os.ReadFile(from); err == nil {
		_ = os.WriteFile(to, b, 0o600)
	}
}

// ---------------------------------------------------------------- leader timeline

// leaderObs is one poll: who holds the leader key in etcd, and which node Patroni's REST
// API reports as the running primary holding it (cluster.Leader); "" = none.
type leaderObs struct {
	at        time.Time
	keyHolder string
	running   string
}

type timeline struct {
	mu  sync.Mutex
	obs []leaderObs
}

func (t *timeline) add(o leaderObs) {
	t.mu.Lock()
	t.obs = append(t.obs, o)
	t.mu.Unlock()
}

func (t *timeline) snapshot() []leaderObs {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.obs)
}

// pollLeader records a leaderObs every pollEvery until ctx ends.
func pollLeader(ctx context.Context, c *patronitest.Cluster, key string, tl *timeline) {
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: time.Second}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		at := time.Now()
		holder, err := etcdGet(ctx, client, c.EtcdAddr(), key)
		if err != nil {
			holder = "?"
		}
		var running string
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		if n, err := c.Leader(lctx); err == nil {
			running = n.Name
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		tl.add(leaderObs{at: at, keyHolder: holder, running: running})
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// etcdGet reads key through etcd's v3 JSON gateway; "" if it does not exist.
func etcdGet(ctx context.Context, client *http.Client, addr, key string) (string, error) {
	body, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v3/kv/range", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("etcd range: %s", resp.Status)
	}
	var r struct {
		Kvs []struct {
			Value string `json:"value"`
		} `json:"kvs"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return "", err
	}
	if len(r.Kvs) == 0 {
		return "", nil
	}
	v, err := base64.StdEncoding.DecodeString(r.Kvs[0].Value)
	return string(v), err
}

// lostKeyAt reports whether node, at time t, had already lost the leader key: the last
// observation at or before t names another holder (or none) and an earlier one named it.
func lostKeyAt(obs []leaderObs, node string, t time.Time) bool {
	held := false
	for _, o := range obs {
		if o.at.After(t) {
			break
		}
		if o.keyHolder == node {
			held = true
		}
	}
	if !held {
		return false
	}
	for i := len(obs) - 1; i >= 0; i-- {
		if !obs[i].at.After(t) {
			return obs[i].keyHolder != node && obs[i].keyHolder != "?"
		}
	}
	return false
}

// firstAfter returns the time of the first observation at or after from that satisfies f.
func firstAfter(obs []leaderObs, from time.Time, f func(leaderObs) bool) (time.Time, bool) {
	for _, o := range obs {
		if !o.at.Before(from) && f(o) {
			return o.at, true
		}
	}
	return time.Time{}, false
}

// ---------------------------------------------------------------- writers

// attempt is one tick of a writer: a connect if it had no connection, then the insert.
type attempt struct {
	start, end  time.Time
	insertStart time.Time // zero if it failed before sending the insert
	ok          bool
	err         string
	seq         int64 // 0 if no insert was sent
	port        int   // server port of the connection used (0 unknown)
	inRecovery  bool
}

// connRec is one connection of a writer and the server behind it.
type connRec struct {
	opened, closed time.Time // closed zero while open
	port           int
	closeErr       string
}

type writer struct {
	name, addr string

	mu struct {
		sync.Mutex
		attempts []attempt
		conns    []*connRec
	}
}

// run writes every writeEvery until ctx ends, keeping one connection and replacing it
// after any error, as an application would.
func (w *writer) run(ctx context.Context) {
	tick := time.NewTicker(writeEvery)
	defer tick.Stop()
	var conn *pgx.Conn
	var cur *connRec
	var seq int64
	closeConn := func(reason string) {
		if conn == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(cctx)
		cancel()
		w.mu.Lock()
		cur.closed, cur.closeErr = time.Now(), reason
		w.mu.Unlock()
		conn, cur = nil, nil
	}
	defer closeConn("end of run")
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		a := attempt{start: time.Now()}
		if conn == nil {
			var err error
			conn, cur, err = w.connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				a.end, a.err = time.Now(), "connect: "+oneLine(err)
				w.record(a)
				continue
			}
		}
		seq++
		a.seq, a.port, a.insertStart = seq, cur.port, time.Now()
		ictx, cancel := context.WithTimeout(ctx, stmtTimeout)
		var port int32
		err := conn.QueryRow(ictx, insertSQL, w.name, seq).Scan(&a.inRecovery, &port)
		cancel()
		a.end = time.Now()
		if err != nil && ctx.Err() != nil {
			return // the run ended during the insert: says nothing about the proxy
		}
		if err != nil {
			a.err = oneLine(err)
			w.record(a)
			closeConn(a.err)
			continue
		}
		a.ok, a.port = true, int(port)
		w.record(a)
	}
}

// connect opens a connection and learns the server's port.
func (w *writer) connect(ctx context.Context) (*pgx.Conn, *connRec, error) {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn(w.addr))
	if err != nil {
		return nil, nil, err
	}
	var port int32
	if err := conn.QueryRow(cctx, "SELECT inet_server_port()").Scan(&port); err != nil {
		_ = conn.Close(context.Background())
		return nil, nil, fmt.Errorf("reading server port: %w", err)
	}
	rec := &connRec{opened: time.Now(), port: int(port)}
	w.mu.Lock()
	w.mu.conns = append(w.mu.conns, rec)
	w.mu.Unlock()
	return conn, rec, nil
}

func (w *writer) record(a attempt) {
	w.mu.Lock()
	w.mu.attempts = append(w.mu.attempts, a)
	w.mu.Unlock()
}

func (w *writer) snapshot() ([]attempt, []connRec) {
	w.mu.Lock()
	defer w.mu.Unlock()
	conns := make([]connRec, len(w.mu.conns))
	for i, c := range w.mu.conns {
		conns[i] = *c
	}
	return slices.Clone(w.mu.attempts), conns
}

// oneLine shortens err for the report: its first line, without pgx's "failed to connect
// to `user=... database=...`: host:port (host): " prefix.
func oneLine(err error) string {
	s := err.Error()
	if strings.HasPrefix(s, "failed to connect to ") {
		if _, rest, ok := strings.Cut(s, "): "); ok {
			s = rest
		}
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// ---------------------------------------------------------------- scenarios

type scenario struct {
	name      string
	old, new  *patronitest.Node
	event     time.Time // the switchover request or the kill
	end       time.Time
	completed bool // both writers settled on the new leader within the bound
	actionErr error
}

// scenario waits for steady writes, runs action against the current leader and waits
// until both writers have written to the new leader without failure for settle.
func (b *bench) scenario(ctx context.Context, name string, action func(old *patronitest.Node) error) (*scenario, error) {
	if err := b.waitSteady(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	old, err := b.cluster.Leader(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sc := &scenario{name: name, old: old}
	logf("%s: leader %s", name, old.Name)
	sc.event = time.Now()
	bound := sc.event.Add(b.o.maxWait)
	bctx, cancel := context.WithDeadline(ctx, bound)
	defer cancel()
	if err := action(old); err != nil {
		sc.actionErr = err
		logf("%s: %v", name, err)
	}
	if sc.new, err = b.cluster.WaitLeader(bctx, old); err != nil {
		sc.end = time.Now()
		return sc, fmt.Errorf("%s: %w", name, err)
	}
	logf("%s: new leader %s after %v", name, sc.new.Name, time.Since(sc.event).Round(time.Millisecond))
	for {
		now := time.Now()
		settled := true
		for _, w := range b.writers {
			if !w.settled(now, sc.event, sc.new.PGPort, b.o.settle) {
				settled = false
			}
		}
		if settled {
			sc.end, sc.completed = now, true
			logf("%s: both writers settled on %s", name, sc.new.Name)
			return sc, nil
		}
		if now.After(bound) {
			sc.end = now
			logf("%s: writers not settled %v after the event", name, b.o.maxWait)
			return sc, nil
		}
		select {
		case <-ctx.Done():
			return sc, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// settled reports whether the writer's attempts since event end with a run of successes
// on port that began at least d before now.
func (w *writer) settled(now, event time.Time, port int, d time.Duration) bool {
	atts, _ := w.snapshot()
	var streakStart time.Time
	for i := len(atts) - 1; i >= 0; i-- {
		a := atts[i]
		if !a.ok || a.port != port || a.start.Before(event) {
			break
		}
		streakStart = a.start
	}
	return !streakStart.IsZero() && now.Sub(streakStart) >= d
}

// waitSteady waits until both writers have written without failure for o.steady.
func (b *bench) waitSteady(ctx context.Context) error {
	deadline := time.Now().Add(b.o.maxWait)
	for {
		now := time.Now()
		ok := true
		for _, w := range b.writers {
			atts, _ := w.snapshot()
			var streakStart time.Time
			for i := len(atts) - 1; i >= 0 && atts[i].ok; i-- {
				streakStart = atts[i].start
			}
			if streakStart.IsZero() || now.Sub(streakStart) < b.o.steady {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if now.After(deadline) {
			return fmt.Errorf("writers not steady within %v", b.o.maxWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// missingAcks returns, per writer, the sequence numbers of acknowledged inserts that are
// not in final's table.
func (b *bench) missingAcks(ctx context.Context, final *patronitest.Node) (map[string]map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, final.DSN())
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	missing := map[string]map[int64]bool{}
	for _, name := range proxies {
		rows, err := conn.Query(ctx, "SELECT seq FROM bench_writes WHERE proxy = $1", name)
		if err != nil {
			return nil, err
		}
		have := map[int64]bool{}
		for rows.Next() {
			var s int64
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return nil, err
			}
			have[s] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		missing[name] = map[int64]bool{}
		atts, _ := b.writers[name].snapshot()
		for _, a := range atts {
			if a.ok && !have[a.seq] {
				missing[name][a.seq] = true
			}
		}
	}
	return missing, nil
}

// ---------------------------------------------------------------- results

// result is one writer's figures for one scenario.
type result struct {
	window      time.Duration // longest gap between consecutive successful writes around the event
	gapFrom     time.Time     // the gap's last success before it
	gapTo       time.Time     // its first success after
	failed      int           // failed attempts from the event to the end
	oldEnd      time.Duration // when the connection held at the event to the old leader ended, from tChange
	oldEndOK    bool
	newConns    int           // connections to the old leader opened after tChange
	lastOnOld   time.Duration // last moment any connection to the old leader was open, from tChange
	formerAcked int           // writes accepted by a node that had lost the key, or in recovery
	afterNew    time.Duration // from tNew to the first success after the window
	afterNewOK  bool
}

// tChange is when the old leader stopped being the leader: the first poll at or after the
// event where Patroni no longer reports it as the running primary holding the key.
func (sc *scenario) tChange(obs []leaderObs) time.Time {
	t, ok := firstAfter(obs, sc.event, func(o leaderObs) bool { return o.running != sc.old.Name })
	if !ok {
		return sc.end
	}
	return t
}

func (b *bench) nodeName(port int) string {
	if n := b.byPort[port]; n != nil {
		return n.Name
	}
	return "port " + strconv.Itoa(port)
}

// tNew is when the new leader was first seen running as primary with the leader key.
func (sc *scenario) tNew(obs []leaderObs) (time.Time, bool) {
	if sc.new == nil {
		return time.Time{}, false
	}
	return firstAfter(obs, sc.event, func(o leaderObs) bool { return o.running == sc.new.Name })
}

func (b *bench) compute(sc *scenario, w *writer, obs []leaderObs) result {
	atts, conns := w.snapshot()
	var r result
	tc := sc.tChange(obs)
	// Window: the longest interval between two consecutive successes, where the later one
	// comes after the event and the earlier one before the scenario's end.
	var prev time.Time
	for _, a := range atts {
		if !a.ok {
			continue
		}
		if !prev.IsZero() && a.end.After(sc.event) && prev.Before(sc.end) {
			if g := a.end.Sub(prev); g > r.window {
				r.window, r.gapFrom, r.gapTo = g, prev, a.end
			}
		}
		prev = a.end
	}
	for _, a := range atts {
		if a.start.Before(sc.event) || a.start.After(sc.end) {
			continue
		}
		if !a.ok {
			r.failed++
			continue
		}
		n := b.byPort[a.port]
		if a.inRecovery || (n != nil && lostKeyAt(obs, n.Name, a.insertStart)) {
			r.formerAcked++
		}
	}
	if t, ok := sc.tNew(obs); ok && !r.gapTo.IsZero() {
		r.afterNew, r.afterNewOK = r.gapTo.Sub(t), true
	}
	r.lastOnOld = -1 << 62
	for _, c := range conns {
		if c.port != sc.old.PGPort {
			continue
		}
		closed := c.closed
		if closed.IsZero() {
			closed = sc.end
		}
		if closed.Before(sc.event) || c.opened.After(sc.end) {
			continue
		}
		if !c.opened.After(sc.event) {
			r.oldEnd, r.oldEndOK = closed.Sub(tc), true
		} else if c.opened.After(tc) {
			r.newConns++
		}
		if d := closed.Sub(tc); d > r.lastOnOld {
			r.lastOnOld = d
		}
	}
	return r
}

// legend explains the table's columns; bench/README.md says the same at more length.
const legend = `columns:
  window ms          write-unavailability window: the longest interval between two consecutive
                     successful writes of the writer (commit acknowledged by the client), the later
                     one after the event; failed and late writes both fall inside it
  after new ms       from tNew (new leader first seen running primary with the key, 100 ms polls)
                     to the writer's first success after the window: the proxy's own share
  failed             attempts (connect or insert) that failed, from the event to the end
  old sess ms        when the writer's connection to the old leader, open at the event, ended
                     (the writer's error), relative to tChange (old leader first seen no longer the
                     running primary, 100 ms polls); negative = ended before tChange
  new sess           connections to the old leader the writer opened after tChange
  last on old ms     last moment the writer had any connection to the old leader, relative to tChange
  former-leader      writes acknowledged by a node that had already lost the leader key (etcd, per the
                     100 ms timeline, at the insert's start) or that answered pg_is_in_recovery() = true
  acked lost         writes acknowledged to the writer but missing on the final leader
                     (asynchronous replication and synchronous_commit=off in the test cluster)
`

func (b *bench) report(out io.Writer, scs []*scenario, missing map[string]map[int64]bool) {
	obs := b.tl.snapshot()
	pgfEvents := parsePgfrontLog(b.pgfLog)
	haEvents := parseHAProxyLog(b.haLog)
	fmt.Fprintf(out, "pgfront failover benchmark: 3-node Patroni cluster (%s; ttl 10s, loop_wait 2s, retry_timeout 4s), a write every %v per proxy\n",
		patroniVersion(), writeEvery)
	fmt.Fprintf(out, "pgfront:  health %s, timeouts.queue 30s\n", pgfrontHealth)
	fmt.Fprintf(out, "HAProxy %s: option httpchk OPTIONS /primary, default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n\n",
		haproxyVersion(b.o.haproxy))

	results := map[*scenario]map[string]result{}
	lost := map[*scenario]map[string]int{}
	for _, sc := range scs {
		results[sc] = map[string]result{}
		lost[sc] = map[string]int{}
	}
	// A lost write went with the history of the node that acknowledged it: it counts for
	// the first scenario, not over before the write, that replaced that node as leader.
	for _, p := range proxies {
		atts, _ := b.writers[p].snapshot()
		for _, a := range atts {
			if !a.ok || !missing[p][a.seq] {
				continue
			}
			for _, sc := range scs {
				if sc.old.PGPort == a.port && !a.start.After(sc.end) {
					lost[sc][p]++
					break
				}
			}
		}
	}
	for _, sc := range scs {
		for _, p := range proxies {
			results[sc][p] = b.compute(sc, b.writers[p], obs)
		}
		b.printTimeline(out, sc, obs, pgfEvents, haEvents, results[sc], missing)
	}

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tproxy\twindow ms\tafter new ms\tfailed\told sess ms\tnew sess\tlast on old ms\tformer-leader\tacked lost\t")
	for _, sc := range scs {
		for _, p := range proxies {
			r := results[sc][p]
			oldEnd, afterNew := "-", "-"
			if r.oldEndOK {
				oldEnd = ms(r.oldEnd)
			}
			if r.afterNewOK {
				afterNew = ms(r.afterNew)
			}
			win := ms(r.window)
			if !sc.completed {
				win = ">=" + win
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%d\t%d\t\n",
				sc.name, p, win, afterNew, r.failed, oldEnd, r.newConns, lastStr(r), r.formerAcked, lost[sc][p])
		}
	}
	tw.Flush()
	fmt.Fprintln(out)
	fmt.Fprint(out, legend)
	fmt.Fprintln(out)

	fmt.Fprintln(out, "targets:")
	for _, sc := range scs {
		pf, ha := results[sc][proxyPgfront], results[sc][proxyHAProxy]
		ratio := float64(pf.window) / float64(ha.window)
		ok, want := ratio <= 1, "<= 1.00 (never longer)"
		if sc.name == "switchover" {
			ok, want = ratio <= 0.5, "<= 0.50"
		}
		fmt.Fprintf(out, "  %-10s  window pgfront/HAProxy = %s/%s ms = %.2f, want %s: %s\n", sc.name, ms(pf.window), ms(ha.window), ratio, want, verdict(ok && sc.completed))
		fmt.Fprintf(out, "  %-10s  pgfront writes accepted by a former leader = %d, want 0: %s\n", sc.name, pf.formerAcked, verdict(pf.formerAcked == 0))
		fmt.Fprintf(out, "  %-10s  pgfront connection to the old leader after tChange: last %s ms, want <= %s: %s\n",
			sc.name, lastStr(pf), ms(surviveTarget), verdict(pf.lastOnOld <= surviveTarget))
	}
}

func lastStr(r result) string {
	if r.lastOnOld <= -1<<61 {
		return "none"
	}
	return ms(r.lastOnOld)
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

func rel(t, base time.Time) string { return fmt.Sprintf("%+7.3fs", t.Sub(base).Seconds()) }

// printTimeline prints what happened around one scenario's event, relative to it. Lines
// with the same text are collapsed into the first, with a count and the time of the last.
func (b *bench) printTimeline(out io.Writer, sc *scenario, obs []leaderObs, pgf, ha []logEvent, rs map[string]result, missing map[string]map[int64]bool) {
	newName := "?"
	if sc.new != nil {
		newName = sc.new.Name
	}
	fmt.Fprintf(out, "== %s: %s -> %s (event at %s; times relative to it)\n", sc.name, sc.old.Name, newName, sc.event.Format("15:04:05.000"))
	type line struct {
		at, last time.Time
		n        int
		txt      string
	}
	var lines []*line
	byTxt := map[string]*line{}
	add := func(at time.Time, txt string) {
		if l := byTxt[txt]; l != nil {
			l.n++
			l.last = at
			return
		}
		l := &line{at: at, last: at, n: 1, txt: txt}
		byTxt[txt] = l
		lines = append(lines, l)
	}
	event := map[string]string{"switchover": "patronictl switchover", "node loss": "SIGKILL of " + sc.old.Name + "'s Patroni and PostgreSQL"}[sc.name]
	add(sc.event, "EVENT: "+event)
	if sc.actionErr != nil {
		add(sc.event, "action error: "+sc.actionErr.Error())
	}
	if t, ok := firstAfter(obs, sc.event, func(o leaderObs) bool { return o.running != sc.old.Name }); ok {
		add(t, "CLUSTER: "+sc.old.Name+" no longer the running primary per Patroni's REST API (tChange)")
	}
	if t, ok := firstAfter(obs, sc.event, func(o leaderObs) bool { return o.keyHolder != sc.old.Name && o.keyHolder != "?" }); ok {
		add(t, "CLUSTER: "+sc.old.Name+" no longer holds the leader key in etcd")
	}
	if t, ok := sc.tNew(obs); ok {
		add(t, "CLUSTER: "+newName+" running primary holding the leader key (tNew)")
	}
	from, to := sc.event.Add(-time.Second), sc.end
	for _, e := range pgf {
		if !e.at.Before(from) && !e.at.After(to) {
			add(e.at, "pgfront: "+e.txt)
		}
	}
	for _, e := range ha {
		if !e.at.Before(from) && !e.at.After(to) {
			add(e.at, "haproxy: "+e.txt)
		}
	}
	for _, p := range proxies {
		r := rs[p]
		if !r.gapFrom.IsZero() {
			add(r.gapFrom, p+" writer: last success before the window")
			add(r.gapTo, fmt.Sprintf("%s writer: first success after the window (%s ms)", p, ms(r.window)))
		}
		atts, _ := b.writers[p].snapshot()
		for _, a := range atts {
			if a.start.Before(from) || a.start.After(sc.end) {
				continue
			}
			switch {
			case !a.ok && !a.start.Before(sc.event):
				add(a.start, fmt.Sprintf("%s writer: %s", p, a.err))
			case a.ok && missing[p][a.seq] && a.port == sc.old.PGPort:
				add(a.end, fmt.Sprintf("%s writer: acknowledged by %s, missing on the final leader", p, b.nodeName(a.port)))
			}
		}
	}
	add(sc.end, map[bool]string{true: "END: both writers settled on the new leader", false: "END: bound reached"}[sc.completed])
	slices.SortStableFunc(lines, func(a, b *line) int { return a.at.Compare(b.at) })
	for _, l := range lines {
		if l.n > 1 {
			fmt.Fprintf(out, "  %s  %s  [x%d, last %s]\n", rel(l.at, sc.event), l.txt, l.n, strings.TrimSpace(rel(l.last, sc.event)))
		} else {
			fmt.Fprintf(out, "  %s  %s\n", rel(l.at, sc.event), l.txt)
		}
	}
	fmt.Fprintln(out)
}

// logEvent is one line of a proxy's log worth showing on the timeline.
type logEvent struct {
	at  time.Time
	txt string
}

// parsePgfrontLog reads pgfront's JSON log: state changes, session ends (with their
// cause) and refusals.
func parsePgfrontLog(path string) []logEvent {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var evs []logEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"]))
		if err != nil {
			continue
		}
		str := func(k string) string {
			if v, ok := m[k]; ok {
				return fmt.Sprint(v)
			}
			return ""
		}
		var txt string
		switch msg := str("msg"); msg {
		case "server state changed":
			txt = fmt.Sprintf("state of %s: up=%s role=%s fenced=%s (was up=%s role=%s)",
				str("server"), str("up"), str("role"), str("fenced"), str("was_up"), str("was_role"))
			if e := str("err"); e != "" {
				txt += ": " + e
			}
		case "session ended":
			if str("route") != "rw" || str("user") == "" || str("cause") == "client_terminate" {
				continue
			}
			txt = fmt.Sprintf("session ended, server %q, cause %s", str("server"), str("cause"))
			if e := str("err"); e != "" {
				txt += ": " + e
			}
		case "health check failed":
			txt = fmt.Sprintf("%s %s", str("server"), msg)
			for _, k := range []string{"error", "failures_not_logged"} {
				if v := str(k); v != "" {
					txt += fmt.Sprintf(" %s=%s", k, v)
				}
			}
		case "server refused the session before the client saw anything; trying another server", "server connect failed":
			txt = fmt.Sprintf("%s (server %s)", msg, str("server"))
		default:
			continue
		}
		evs = append(evs, logEvent{at, txt})
	}
	return evs
}

// parseHAProxyLog reads haproxy's log ("format iso": an RFC 3339 timestamp first) for
// server state changes.
func parseHAProxyLog(path string) []logEvent {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var evs []logEvent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "Server primary/")
		if i < 0 {
			continue
		}
		ts, _, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		txt := line[i:]
		if j := strings.Index(txt, ". "); j > 0 {
			txt = txt[:j]
		}
		evs = append(evs, logEvent{at, txt})
	}
	return evs
}

func patroniVersion() string {
	out, err := exec.Command("patroni", "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func haproxyVersion(bin string) string {
	out, err := exec.Command(bin, "-v").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) >= 3 {
		return f[2]
	}
	return ""
}

// writeCSV writes every attempt of both writers, for a closer look.
func (b *bench) writeCSV(path string) {
	var sb strings.Builder
	sb.WriteString("proxy,start,end,insert_start,ok,seq,port,in_recovery,err\n")
	for _, p := range proxies {
		atts, _ := b.writers[p].snapshot()
		for _, a := range atts {
			is := ""
			if !a.insertStart.IsZero() {
				is = a.insertStart.Format(time.RFC3339Nano)
			}
			fmt.Fprintf(&sb, "%s,%s,%s,%s,%v,%d,%d,%v,%q\n", p, a.start.Format(time.RFC3339Nano), a.end.Format(time.RFC3339Nano),
				is, a.ok, a.seq, a.port, a.inRecovery, a.err)
		}
	}
	_ = os.WriteFile(path, []byte(sb.String()), 0o600)
}
