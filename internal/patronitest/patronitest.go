// Package patronitest starts a real, throw-away Patroni cluster on loopback — one etcd
// member and Patroni 3 nodes (PostgreSQL bootstrapped with initdb, replicas made with
// pg_basebackup) — for pgfront's integration tests and benchmarks. It owns the cluster's
// whole life: ports, configuration, the etcd and Patroni processes and the PostgreSQL
// servers Patroni starts, switchover, losing a node (KillNode) and bringing it back
// (StartNode), and removal.
//
//	if err := patronitest.Available(); err != nil {
//		return err // names the Debian packages to install
//	}
//	c, err := patronitest.Start(ctx, patronitest.Options{}) // leader up, replicas streaming
//	if err != nil {
//		return err
//	}
//	defer c.Cleanup()
//	leader, err := c.Leader(ctx)
//	...
//	err = c.Switchover(ctx, nil) // patronictl switchover --force
//
// Tests use New, which skips when the packages are missing.
//
// Every process is a direct child of the caller with a parent-death signal (SIGKILL), in
// its own process group. Each Patroni node runs in its own PID, mount and IPC namespace
// (util-linux unshare): Patroni starts PostgreSQL detached (setsid, double fork), so only
// the namespace holds the node together — when its first process, Patroni, dies, the
// kernel kills every process in it, PostgreSQL included, and its shared memory goes with
// the IPC namespace. As root, etcd, Patroni and PostgreSQL run as the "postgres" OS user;
// otherwise a user namespace maps the caller to itself.
package patronitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/pgtest"
)

const (
	startTimeout    = 90 * time.Second // etcd healthy, leader elected, replicas streaming
	failoverTimeout = 60 * time.Second // a new leader, a node back as a streaming replica
	killTimeout     = 10 * time.Second // a SIGKILLed node's namespace gone
	pollInterval    = 100 * time.Millisecond
	requestTimeout  = 2 * time.Second // one REST request or SQL query while polling
	portAttempts    = 5
	minPort         = 20000
	maxPort         = 40000
	maxNodes        = 9
	loopbackHost    = "127.0.0.1"
	osUser          = "postgres"
	logTailLines    = 40
)

// errPortInUse means a process of the cluster could not bind one of its ports.
var errPortInUse = errors.New("port in use")

// Options configures Start.
type Options struct {
	Nodes  int                              // Patroni nodes; 0 = 3
	BinDir string                           // PostgreSQL binaries; "" = pgtest.FindBinDir()
	Logf   func(format string, args ...any) // optional progress log

	// pickPorts chooses the n ports of an attempt (etcd client and peer, then each node's
	// PostgreSQL and REST API); nil = random. A seam for the tests of the port retry.
	pickPorts func(n int) []int
}

// Node is one Patroni member and its PostgreSQL server. The fields are set by Start and
// never change afterwards.
type Node struct {
	Name       string // "node1", "node2", ...: Patroni's member name and the replica's application_name
	PGPort     int
	RESTPort   int
	Dir        string // the node's dir: config, log, Unix socket; DataDir inside
	DataDir    string
	LogFile    string // output of Patroni and of the PostgreSQL it runs
	ConfigFile string // Patroni's YAML configuration
}

// PGAddr returns "127.0.0.1:PGPort".
func (n *Node) PGAddr() string { return net.JoinHostPort(loopbackHost, strconv.Itoa(n.PGPort)) }

// RESTAddr returns "127.0.0.1:RESTPort", the Patroni REST API (GET http://RESTAddr/patroni).
func (n *Node) RESTAddr() string { return net.JoinHostPort(loopbackHost, strconv.Itoa(n.RESTPort)) }

// DSN returns a libpq keyword/value string for the superuser on database postgres.
func (n *Node) DSN() string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable", loopbackHost, n.PGPort, superuser)
}

// Cluster is a running etcd with Patroni nodes. The exported fields are set by Start and
// never change afterwards. Its methods are safe for concurrent use.
type Cluster struct {
	Nodes     []*Node
	Scope     string // Patroni's scope (cluster name)
	Namespace string // Patroni's DCS namespace: its keys are under Namespace+Scope+"/" in etcd
	Dir       string // root temp dir: etcd's data and log, patronictl.yml, one dir per node
	EtcdLog   string // etcd's output
	CtlConfig string // patronictl's configuration (-c)

	etcdClientPort int
	etcdPeerPort   int

	opts Options
	bin  string
	cred *syscall.Credential // nil unless running as root
	http *http.Client

	// mu guards the processes. KillNode, StartNode and Cleanup hold it while they wait for
	// processes, so they are serialised.
	mu struct {
		sync.Mutex
		etcd    *process
		nodes   map[*Node]*process // running Patroni namespaces
		removed bool               // Cleanup ran
	}
	// paused holds the pids PausePatroni stopped, by node. Its own lock: status, called with
	// mu held, reads it.
	paused struct {
		sync.Mutex
		m map[*Node][]int
	}
}

// EtcdAddr returns "127.0.0.1:port" of etcd's client API (v3; its gRPC gateway is at /v3/).
func (c *Cluster) EtcdAddr() string {
	return net.JoinHostPort(loopbackHost, strconv.Itoa(c.etcdClientPort))
}

// Start creates a temp dir under os.TempDir(), starts etcd and the Patroni nodes on
// random loopback ports (retrying with other ports when one is taken) and returns once a
// leader runs as primary and every other node streams from it. On error nothing is left
// behind.
func Start(ctx context.Context, o Options) (_ *Cluster, retErr error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Nodes < 1 || o.Nodes > maxNodes {
		return nil, fmt.Errorf("patronitest: %d nodes: want 1 to %d", o.Nodes, maxNodes)
	}
	if err := Available(); err != nil {
		return nil, err
	}
	bin := o.BinDir
	if bin == "" {
		var err error
		if bin, err = pgtest.FindBinDir(); err != nil {
			return nil, err
		}
	}
	cred, err := pgtest.PostgresCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(os.TempDir(), "patronitest-")
	if err != nil {
		return nil, fmt.Errorf("creating cluster dir: %w", err)
	}
	c := &Cluster{
		Scope:     "patronitest",
		Namespace: "/service/",
		Dir:       dir,
		EtcdLog:   filepath.Join(dir, "etcd.log"),
		CtlConfig: filepath.Join(dir, "patronictl.yml"),
		opts:      o,
		bin:       bin,
		cred:      cred,
		http: &http.Client{Transport: &http.Transport{
			Proxy:             nil, // straight to loopback, whatever the environment says
			DisableKeepAlives: true,
		}},
	}
	c.mu.nodes = make(map[*Node]*process)
	for i := range o.Nodes {
		name := "node" + strconv.Itoa(i+1)
		nd := filepath.Join(dir, name)
		c.Nodes = append(c.Nodes, &Node{
			Name:       name,
			Dir:        nd,
			DataDir:    filepath.Join(nd, "data"),
			LogFile:    filepath.Join(nd, "patroni.log"),
			ConfigFile: filepath.Join(nd, "patroni.yml"),
		})
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, c.Cleanup())
		}
	}()
	if err := c.chown(dir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	started := time.Now()
	for attempt := 1; ; attempt++ {
		err := c.launch(ctx)
		if err == nil {
			c.logf("patronitest: cluster of %d nodes ready in %v (dir %s, etcd %s)",
				len(c.Nodes), time.Since(started).Round(time.Millisecond), c.Dir, c.EtcdAddr())
			return c, nil
		}
		if !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return nil, err
		}
		msg, _, _ := strings.Cut(err.Error(), "\n")
		c.logf("patronitest: attempt %d: %s; starting over with other ports", attempt, msg)
		if err := c.reset(); err != nil {
			return nil, err
		}
	}
}

// launch picks ports, writes the configurations and starts etcd and every node, then
// waits for the cluster to be ready.
func (c *Cluster) launch(ctx context.Context) error {
	pick := c.opts.pickPorts
	if pick == nil {
		pick = pickPorts
	}
	ports := pick(2 + 2*len(c.Nodes))
	c.etcdClientPort, c.etcdPeerPort = ports[0], ports[1]
	for i, n := range c.Nodes {
		n.PGPort, n.RESTPort = ports[2+2*i], ports[3+2*i]
		if err := os.Mkdir(n.Dir, 0o700); err != nil {
			return fmt.Errorf("creating node dir: %w", err)
		}
		if err := c.chown(n.Dir); err != nil {
			return err
		}
		if err := c.writeNodeConfig(n); err != nil {
			return err
		}
	}
	if err := c.writeCtlConfig(); err != nil {
		return err
	}
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.Nodes {
		if err := c.startNodeLocked(n); err != nil {
			return err
		}
	}
	return c.waitReadyLocked(ctx)
}

// reset stops every process and removes what an attempt left (data, logs, configs).
func (c *Cluster) reset() error {
	c.mu.Lock()
	err := c.stopAllLocked()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(c.Dir)
	if err != nil {
		return fmt.Errorf("clearing %s: %w", c.Dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(c.Dir, e.Name())); err != nil {
			return fmt.Errorf("clearing %s: %w", c.Dir, err)
		}
	}
	return nil
}

// startEtcd starts etcd and waits until it reports itself healthy.
func (c *Cluster) startEtcd(ctx context.Context) error {
	path, err := exec.LookPath("etcd")
	if err != nil {
		return fmt.Errorf("finding etcd: %w", err)
	}
	p, err := c.spawn("etcd", c.EtcdLog, c.cred, append([]string{path}, c.etcdArgs()...))
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.mu.etcd = p
	c.mu.Unlock()
	url := "http://" + c.EtcdAddr() + "/health"
	return poll(ctx, func(ctx context.Context) (bool, error) {
		if err := p.failed(); err != nil {
			return false, err
		}
		var h struct {
			Health string `json:"health"`
		}
		if err := c.getJSON(ctx, url, &h); err != nil {
			return false, nil
		}
		return h.Health == "true", nil
	}, func(err error) error {
		return fmt.Errorf("waiting for etcd on %s: %w%s", c.EtcdAddr(), err, logTail(c.EtcdLog))
	})
}

// startNodeLocked starts n's Patroni in its own namespaces. c.mu is held.
func (c *Cluster) startNodeLocked(n *Node) error {
	patroni, err := exec.LookPath("patroni")
	if err != nil {
		return fmt.Errorf("finding patroni: %w", err)
	}
	args := []string{"unshare", "--pid", "--fork", "--mount-proc", "--ipc", "--kill-child=SIGKILL", "--"}
	if c.cred != nil {
		// setpriv changes the user; that clears the parent-death signal --kill-child set,
		// hence --pdeathsig again.
		args = append(args, "setpriv",
			"--reuid="+strconv.FormatUint(uint64(c.cred.Uid), 10),
			"--regid="+strconv.FormatUint(uint64(c.cred.Gid), 10),
			"--clear-groups", "--pdeathsig=SIGKILL", "--")
	} else {
		// Not root: a user namespace (the caller mapped to itself) allows the others.
		args = slices.Insert(args, 1, "--user", "--map-current-user")
	}
	args = append(args, patroni, n.ConfigFile)
	p, err := c.spawn(n.Name, n.LogFile, nil, args)
	if err != nil {
		return err
	}
	c.mu.nodes[n] = p
	c.logf("patronitest: %s: started (pg %s, rest %s, dir %s)", n.Name, n.PGAddr(), n.RESTAddr(), n.Dir)
	return nil
}

// waitReadyLocked waits until a leader runs as primary, every node's Patroni says
// "running" and every other node streams from the leader. c.mu is held.
func (c *Cluster) waitReadyLocked(ctx context.Context) error {
	var last string
	return poll(ctx, func(ctx context.Context) (bool, error) {
		if err := c.checkProcessesLocked(); err != nil {
			return false, err
		}
		leader, err := c.Leader(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		var others []*Node
		for _, n := range c.Nodes {
			if n != leader {
				others = append(others, n)
			}
		}
		if err := c.checkReplicas(ctx, leader, others); err != nil {
			last = err.Error()
			return false, nil
		}
		return true, nil
	}, func(err error) error {
		var logs strings.Builder
		for _, n := range c.Nodes {
			fmt.Fprintf(&logs, "\n%s:%s", n.Name, logTail(n.LogFile))
		}
		return fmt.Errorf("waiting for the Patroni cluster in %s (last: %s): %w%s", c.Dir, last, err, logs.String())
	})
}

// checkProcessesLocked fails if a process has exited or could not bind its port. c.mu is
// held.
func (c *Cluster) checkProcessesLocked() error {
	if c.mu.etcd == nil {
		return errors.New("etcd is not running")
	}
	if err := c.mu.etcd.failed(); err != nil {
		return fmt.Errorf("%w%s", err, logTail(c.EtcdLog))
	}
	for _, n := range c.Nodes {
		p := c.mu.nodes[n]
		if p == nil {
			continue
		}
		if err := p.failed(); err != nil {
			return fmt.Errorf("%w%s", err, logTail(n.LogFile))
		}
	}
	return nil
}

// checkReplicas checks that each node's Patroni says it is a running replica and that
// the leader's pg_stat_replication shows it streaming.
func (c *Cluster) checkReplicas(ctx context.Context, leader *Node, replicas []*Node) error {
	for _, n := range replicas {
		st, err := c.status(ctx, n)
		if err != nil {
			return err
		}
		if st.Role != "replica" || st.State != "running" {
			return fmt.Errorf("%s is %s %s, not a running replica", n.Name, st.State, st.Role)
		}
	}
	if len(replicas) == 0 {
		return nil
	}
	v, err := queryValue(ctx, leader, "SELECT string_agg(application_name, ',') FROM pg_stat_replication WHERE state = 'streaming'")
	if err != nil {
		return err
	}
	streaming := strings.Split(v, ",")
	for _, n := range replicas {
		if !slices.Contains(streaming, n.Name) {
			return fmt.Errorf("%s does not stream from %s (streaming: %q)", n.Name, leader.Name, v)
		}
	}
	return nil
}

// patroniStatus is the part of GET /patroni this package reads.
type patroniStatus struct {
	State           string `json:"state"` // "running", "starting", "stopped", ...
	Role            string `json:"role"`  // "master" (Patroni < 4), "primary", "replica", ...
	ClusterUnlocked bool   `json:"cluster_unlocked"`
	Timeline        int    `json:"timeline"`
}

func (s patroniStatus) isPrimary() bool { return s.Role == "master" || s.Role == "primary" }

func (c *Cluster) status(ctx context.Context, n *Node) (patroniStatus, error) {
	var st patroniStatus
	if c.isPaused(n) {
		// A frozen Patroni's listener still completes handshakes until its backlog fills;
		// asking it would only leave dials behind.
		return st, fmt.Errorf("%s: Patroni paused", n.Name)
	}
	err := c.getJSON(ctx, "http://"+n.RESTAddr()+"/patroni", &st)
	return st, err
}

// Leader returns the node whose Patroni (GET /patroni) reports it a running primary that
// holds the leader key (cluster_unlocked false). It is an error if no node or more than
// one does.
func (c *Cluster) Leader(ctx context.Context) (*Node, error) {
	var leaders []*Node
	var seen []string
	for _, n := range c.Nodes {
		st, err := c.status(ctx, n)
		if err != nil {
			seen = append(seen, n.Name+": unreachable")
			continue
		}
		seen = append(seen, fmt.Sprintf("%s: %s %s", n.Name, st.State, st.Role))
		if st.isPrimary() && st.State == "running" && !st.ClusterUnlocked {
			leaders = append(leaders, n)
		}
	}
	switch len(leaders) {
	case 1:
		return leaders[0], nil
	case 0:
		return nil, fmt.Errorf("no leader (%s)", strings.Join(seen, ", "))
	default:
		return nil, fmt.Errorf("more than one leader (%s)", strings.Join(seen, ", "))
	}
}

// WaitLeader waits (at most a minute, or until ctx ends) for Leader to return a node
// other than not; nil accepts any leader.
func (c *Cluster) WaitLeader(ctx context.Context, not *Node) (*Node, error) {
	ctx, cancel := context.WithTimeout(ctx, failoverTimeout)
	defer cancel()
	var leader *Node
	var last error
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		leader, last = c.Leader(ctx)
		if last == nil && leader == not {
			last = fmt.Errorf("%s is still the leader", leader.Name)
		}
		return last == nil, nil
	}, func(err error) error {
		return fmt.Errorf("waiting for a new leader: %w (last: %v)", err, last)
	})
	if err != nil {
		return nil, err
	}
	return leader, nil
}

// WaitReplica waits (at most a minute, or until ctx ends) until n's Patroni reports it a
// running replica and it streams from the leader.
func (c *Cluster) WaitReplica(ctx context.Context, n *Node) error {
	ctx, cancel := context.WithTimeout(ctx, failoverTimeout)
	defer cancel()
	var last error
	return poll(ctx, func(ctx context.Context) (bool, error) {
		leader, err := c.Leader(ctx)
		if err == nil && leader == n {
			err = fmt.Errorf("%s is the leader", n.Name)
		}
		if err == nil {
			err = c.checkReplicas(ctx, leader, []*Node{n})
		}
		last = err
		return err == nil, nil
	}, func(err error) error {
		return fmt.Errorf("waiting for %s to stream as a replica: %w (last: %v)", n.Name, err, last)
	})
}

// Switchover runs `patronictl switchover --force` (with --candidate when candidate is not
// nil) and returns once a new leader — the candidate, if given — runs as primary. The
// old leader comes back as a replica afterwards; WaitReplica waits for that.
func (c *Cluster) Switchover(ctx context.Context, candidate *Node) error {
	old, err := c.Leader(ctx)
	if err != nil {
		return fmt.Errorf("switchover: %w", err)
	}
	if candidate == old {
		return fmt.Errorf("switchover: %s is already the leader", old.Name)
	}
	args := []string{"-c", c.CtlConfig, "switchover", "--force"}
	if candidate != nil {
		args = append(args, "--candidate", candidate.Name)
	}
	started := time.Now()
	out, err := c.runCtl(ctx, args...)
	if err != nil {
		return fmt.Errorf("switchover: %w", err)
	}
	// patronictl exits 0 when Patroni refuses ("Switchover failed, details: 412, ...");
	// only an unknown outcome (503) is worth waiting for.
	if strings.Contains(out, "failed, details") && !strings.Contains(out, "status unknown") {
		return fmt.Errorf("switchover from %s refused:\n%s", old.Name, out)
	}
	leader, err := c.WaitLeader(ctx, old)
	if err != nil {
		return fmt.Errorf("switchover from %s: %w; patronictl said:\n%s", old.Name, err, out)
	}
	if candidate != nil && leader != candidate {
		return fmt.Errorf("switchover: %s became the leader, not %s", leader.Name, candidate.Name)
	}
	c.logf("patronitest: switchover %s -> %s in %v", old.Name, leader.Name, time.Since(started).Round(time.Millisecond))
	return nil
}

// runCtl runs patronictl and returns its output.
func (c *Cluster) runCtl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, failoverTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "patronictl", args...)
	cmd.Dir = c.Dir
	cmd.Env = c.env(c.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("patronictl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// KillNode simulates losing n's machine: SIGKILL to its Patroni, whose death takes every
// process of its namespace with it, PostgreSQL included. It returns once all of them are
// gone and reaped. StartNode brings the node back.
func (c *Cluster) KillNode(n *Node) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.mu.nodes[n]
	if p == nil {
		return fmt.Errorf("killing %s: not running", n.Name)
	}
	delete(c.mu.nodes, n)
	c.setPaused(n, nil) // SIGKILL ends stopped processes too
	if err := p.killNamespace(); err != nil {
		return fmt.Errorf("killing %s: %w", n.Name, err)
	}
	// Its processes are gone: their lock files are stale. PostgreSQL could mistake one
	// for a live server, as pids of a new namespace start at 1 again.
	for _, path := range []string{
		filepath.Join(n.DataDir, "postmaster.pid"),
		filepath.Join(n.Dir, fmt.Sprintf(".s.PGSQL.%d.lock", n.PGPort)),
	} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing stale %s: %w", path, err)
		}
	}
	c.logf("patronitest: %s: killed", n.Name)
	return nil
}

// StartNode starts a node again after KillNode, on the same ports, and returns once its
// Patroni answers; it rejoins as a replica (pg_rewind if it was the leader), which
// WaitReplica waits for.
func (c *Cluster) StartNode(ctx context.Context, n *Node) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.mu.removed:
		return fmt.Errorf("starting %s: cluster removed by Cleanup", n.Name)
	case c.mu.nodes[n] != nil:
		return fmt.Errorf("starting %s: already running", n.Name)
	case !slices.Contains(c.Nodes, n):
		return fmt.Errorf("starting %s: not a node of this cluster", n.Name)
	}
	if err := c.startNodeLocked(n); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	p := c.mu.nodes[n]
	return poll(ctx, func(ctx context.Context) (bool, error) {
		if err := p.failed(); err != nil {
			return false, err
		}
		_, err := c.status(ctx, n)
		return err == nil, nil
	}, func(err error) error {
		return fmt.Errorf("starting %s: %w%s", n.Name, err, logTail(n.LogFile))
	})
}

// Cleanup kills every process of the cluster, waits for them and removes Dir. It is
// idempotent.
func (c *Cluster) Cleanup() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.stopAllLocked()
	if !c.mu.removed {
		if rmErr := os.RemoveAll(c.Dir); rmErr != nil {
			return errors.Join(err, fmt.Errorf("removing %s: %w", c.Dir, rmErr))
		}
		c.mu.removed = true
	}
	return err
}

// stopAllLocked kills the nodes, then etcd, and waits for them. Nothing survives it: a
// throw-away cluster needs no clean shutdown. c.mu is held.
func (c *Cluster) stopAllLocked() error {
	var errs []error
	for _, n := range c.Nodes {
		if p := c.mu.nodes[n]; p != nil {
			delete(c.mu.nodes, n)
			if err := p.killNamespace(); err != nil {
				errs = append(errs, fmt.Errorf("stopping %s: %w", n.Name, err))
			}
		}
	}
	if p := c.mu.etcd; p != nil {
		c.mu.etcd = nil
		if err := p.kill(); err != nil {
			errs = append(errs, fmt.Errorf("stopping etcd: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf(format, args...)
	}
}

// getJSON decodes the answer of a GET (status 2xx or 503: Patroni answers /patroni with
// 503 when PostgreSQL is not running) into v, within requestTimeout.
func (c *Cluster) getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusServiceUnavailable {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// queryValue runs sql on n as the superuser and returns the first column of the first
// row ("" for NULL or no row), within requestTimeout.
func queryValue(ctx context.Context, n *Node, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	conn, err := pgconn.Connect(ctx, n.DSN())
	if err != nil {
		return "", fmt.Errorf("connecting to %s: %w", n.Name, err)
	}
	defer conn.Close(context.Background())
	res := conn.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		return "", fmt.Errorf("running %q on %s: %w", sql, n.Name, res.Err)
	}
	if len(res.Rows) == 0 || len(res.Rows[0]) == 0 {
		return "", nil
	}
	return string(res.Rows[0][0]), nil
}

// poll calls check every pollInterval until it returns true or an error, or ctx ends;
// wrap turns the error (check's or ctx's) into the one returned.
func poll(ctx context.Context, check func(context.Context) (bool, error), wrap func(error) error) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		ok, err := check(ctx)
		if err != nil {
			return wrap(err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return wrap(ctx.Err())
		case <-tick.C:
		}
	}
}

// pickPorts returns n distinct random ports in [minPort, maxPort] outside the kernel's
// ephemeral range (ip_local_port_range): under heavy loopback traffic (a benchmark's tens
// of thousands of connections) most of those are some connection's local port, and bind
// fails on them.
func pickPorts(n int) []int {
	lo, hi := ephemeralRange()
	var ports []int
	for len(ports) < n {
		p := minPort + rand.IntN(maxPort-minPort+1)
		if lo <= p && p <= hi && (lo > minPort || hi < maxPort) {
			continue // unless the range covers them all
		}
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// ephemeralRange returns the kernel's range of local ports for outgoing connections, or
// 0, -1 if unknown.
func ephemeralRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, -1
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, -1
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return 0, -1
	}
	return lo, hi
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("handing %s to %s: %w", path, osUser, err)
	}
	return nil
}
