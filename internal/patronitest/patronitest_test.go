package patronitest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"
)

// crashChildEnv makes the test binary a helper for TestCrashedTestLeavesNothing: it starts
// a one-node cluster, prints its dir and waits to be killed.
const crashChildEnv = "PATRONITEST_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) == "1" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

func crashChild() {
	c, err := Start(context.Background(), Options{Nodes: 1})
	if err != nil {
		fmt.Println("error:", strings.ReplaceAll(err.Error(), "\n", " | "))
		os.Exit(1)
	}
	fmt.Println("dir:", c.Dir)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // killed before anything arrives
	_ = c.Cleanup()
	os.Exit(0)
}

// TestCluster runs one 3-node cluster through its life: replication, switchover with and
// without a candidate, losing the leader, bringing it back, cleanup.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	started := time.Now()
	c := New(t, Options{})
	t.Logf("start-up: %v", time.Since(started).Round(time.Millisecond))
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes))
	}

	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkRoles(ctx, t, c, leader)
	// Patroni keeps its keys in etcd's v3 API (the gRPC gateway at /v3/ of etcd 3.4).
	if got := etcdValue(ctx, t, c, c.Namespace+c.Scope+"/leader"); got != leader.Name {
		t.Errorf("leader key in etcd: %q, want %q", got, leader.Name)
	}

	// Data written on the leader reaches every replica, which refuses writes.
	mustExec(ctx, t, leader, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
	for _, n := range c.Nodes {
		if n != leader {
			waitValue(ctx, t, n, "SELECT sum(x) FROM t", "1")
			if err := execSQL(ctx, n, "INSERT INTO t VALUES (100)"); err == nil || !strings.Contains(err.Error(), "read-only") {
				t.Errorf("write on replica %s: %v, want a read-only error", n.Name, err)
			}
		}
	}

	// Switchover to a chosen replica: it leads, the old leader follows it.
	candidate := otherNode(c, leader)
	started = time.Now()
	if err := c.Switchover(ctx, candidate); err != nil {
		t.Fatal(err)
	}
	t.Logf("switchover %s -> %s: %v", leader.Name, candidate.Name, time.Since(started).Round(time.Millisecond))
	if got, err := c.Leader(ctx); err != nil || got != candidate {
		t.Fatalf("leader after switchover: %v, %v; want %s", nodeName(got), err, candidate.Name)
	}
	if err := c.WaitReplica(ctx, leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("switchover: old leader %s streams again after %v", leader.Name, time.Since(started).Round(time.Millisecond))
	waitReplicas(ctx, t, c, candidate)
	checkRoles(ctx, t, c, candidate)
	mustExec(ctx, t, candidate, "INSERT INTO t VALUES (2)")
	waitValue(ctx, t, leader, "SELECT sum(x) FROM t", "3")
	leader = candidate

	// Without a candidate Patroni picks one.
	if err := c.Switchover(ctx, nil); err != nil {
		t.Fatal(err)
	}
	next, err := c.Leader(ctx)
	if err != nil || next == leader {
		t.Fatalf("leader after switchover without candidate: %v, %v; want another than %s", nodeName(next), err, leader.Name)
	}
	if err := c.WaitReplica(ctx, leader); err != nil {
		t.Fatal(err)
	}
	leader = next

	// Losing the leader's machine: Patroni and PostgreSQL die at once; another node takes
	// over once the leader key expires.
	started = time.Now()
	if err := c.KillNode(leader); err != nil {
		t.Fatal(err)
	}
	if procs := processesUnder(t, leader.Dir); len(procs) > 0 {
		t.Errorf("processes of killed %s still running:\n%s", leader.Name, strings.Join(procs, "\n"))
	}
	if err := execSQL(ctx, leader, "SELECT 1"); err == nil {
		t.Errorf("killed %s still accepts connections", leader.Name)
	}
	if err := c.KillNode(leader); err == nil {
		t.Errorf("killing %s twice: no error", leader.Name)
	}
	newLeader, err := c.WaitLeader(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	failover := time.Since(started)
	t.Logf("failover after KillNode(%s): %s leads after %v", leader.Name, newLeader.Name, failover.Round(time.Millisecond))
	if failover > 30*time.Second {
		t.Errorf("failover took %v, want at most 30s", failover)
	}
	mustExec(ctx, t, newLeader, "INSERT INTO t VALUES (4)")

	// The lost node comes back as a replica of the new leader (pg_rewind if needed).
	started = time.Now()
	if err := c.StartNode(ctx, leader); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplica(ctx, leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("StartNode(%s): streaming again after %v", leader.Name, time.Since(started).Round(time.Millisecond))
	waitValue(ctx, t, leader, "SELECT sum(x) FROM t", "7")
	waitReplicas(ctx, t, c, newLeader)
	checkRoles(ctx, t, c, newLeader)
	if got := etcdValue(ctx, t, c, c.Namespace+c.Scope+"/leader"); got != newLeader.Name {
		t.Errorf("leader key in etcd: %q, want %q", got, newLeader.Name)
	}

	// Cleanup stops everything and removes the dir; a second call does nothing.
	if err := c.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if procs := processesUnder(t, c.Dir); len(procs) > 0 {
		t.Errorf("processes left after Cleanup:\n%s", strings.Join(procs, "\n"))
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after Cleanup: %v, want it removed", c.Dir, err)
	}
	if err := c.Cleanup(); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if err := c.StartNode(ctx, leader); err == nil {
		t.Error("StartNode after Cleanup: no error")
	}
}

// TestCrashedTestLeavesNothing kills a process that runs a cluster, as a crashed test
// binary would die, and checks that its etcd, Patroni and PostgreSQL die with it.
func TestCrashedTestLeavesNothing(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	started := time.Now()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	dir, ok := strings.CutPrefix(strings.TrimSpace(line), "dir: ")
	if err != nil || !ok {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper: %q, %v", line, err)
	}
	defer os.RemoveAll(dir) // the helper had no chance to
	t.Logf("helper's one-node cluster ready after %v", time.Since(started).Round(time.Millisecond))
	// The helper's cluster runs: etcd, Patroni and a postmaster with its backends.
	for _, want := range []string{"etcd", "patroni", "postgres"} {
		if !slicesContainsPrefix(processesUnder(t, dir), want) {
			t.Fatalf("no %s process under %s before the crash: %q", want, dir, processesUnder(t, dir))
		}
	}
	killed := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(killTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		procs := processesUnder(t, dir)
		if len(procs) == 0 {
			t.Logf("the cluster of the killed helper was gone after %v", time.Since(killed).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the crash, still running:\n%s", killTimeout, strings.Join(procs, "\n"))
		}
		<-tick.C
	}
}

// TestStartRetriesTakenPort takes the PostgreSQL port of the first attempt: Start must
// notice that the postmaster cannot bind it and start over on other ports.
func TestStartRetriesTakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	attempts := 0
	c := New(t, Options{Nodes: 1, pickPorts: func(n int) []int {
		attempts++
		ports := pickPorts(n)
		if attempts == 1 {
			for slices.Contains(ports, taken) { // the taken port must be the PostgreSQL port only
				ports = pickPorts(n)
			}
			ports[2] = taken
		}
		return ports
	}})
	if attempts != 2 || c.Nodes[0].PGPort == taken {
		t.Fatalf("%d attempts, PostgreSQL on %d; want 2 attempts and not the taken port %d", attempts, c.Nodes[0].PGPort, taken)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if leader, err := c.Leader(ctx); err != nil || leader != c.Nodes[0] {
		t.Fatalf("leader: %v, %v", nodeName(leader), err)
	}
}

func TestStartRejectsBadNodeCount(t *testing.T) {
	for _, n := range []int{-1, maxNodes + 1} {
		if c, err := Start(context.Background(), Options{Nodes: n}); err == nil {
			_ = c.Cleanup()
			t.Errorf("Start with %d nodes: no error", n)
		}
	}
}

func TestAvailableNamesMissingPackages(t *testing.T) {
	found := func(missing ...string) func(string) (string, error) {
		return func(prog string) (string, error) {
			for _, m := range missing {
				if prog == m {
					return "", exec.ErrNotFound
				}
			}
			return "/usr/bin/" + prog, nil
		}
	}
	importsOK := func(string) error { return nil }
	importsFail := func(string) error { return errors.New("No module named 'etcd'") }

	if err := available(found(), importsOK); err != nil {
		t.Errorf("everything there: %v", err)
	}
	for _, tc := range []struct {
		name    string
		look    func(string) (string, error)
		imports func(string) error
		want    []string
	}{
		{"no etcd", found("etcd"), importsOK, []string{"etcd", "etcd-server"}},
		{"no patroni", found("patroni", "patronictl"), importsFail, []string{"patroni, patronictl", "packages: patroni)"}},
		{"no python3-etcd", found(), importsFail, []string{"python3-etcd", "No module named 'etcd'"}},
		{"no unshare", found("unshare"), importsOK, []string{"unshare", "util-linux"}},
	} {
		err := available(tc.look, tc.imports)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		for _, w := range append(tc.want, installHint) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.name, err, w)
			}
		}
	}
}

// checkRoles checks what pgfront's Patroni checker sees — GET /primary is 200 on the
// leader only, GET /replica on the others only — and what PostgreSQL says.
func checkRoles(ctx context.Context, t *testing.T, c *Cluster, leader *Node) {
	t.Helper()
	for _, n := range c.Nodes {
		isLeader := n == leader
		for path, want := range map[string]bool{"/primary": isLeader, "/replica": !isLeader} {
			if got := restCode(ctx, t, n, path) == http.StatusOK; got != want {
				t.Errorf("%s: GET %s is 200: %v, want %v", n.Name, path, got, want)
			}
		}
		v, err := queryValue(ctx, n, "SELECT pg_is_in_recovery()")
		if want := map[bool]string{true: "f", false: "t"}[isLeader]; err != nil || v != want {
			t.Errorf("%s: pg_is_in_recovery() = %q, %v; want %s", n.Name, v, err, want)
		}
	}
}

// waitReplicas waits until every node but leader streams from it.
func waitReplicas(ctx context.Context, t *testing.T, c *Cluster, leader *Node) {
	t.Helper()
	for _, n := range c.Nodes {
		if n != leader {
			if err := c.WaitReplica(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// etcdValue reads key through etcd's v3 JSON gateway ("" if absent).
func etcdValue(ctx context.Context, t *testing.T, c *Cluster, key string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.EtcdAddr()+"/v3/kv/range", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("reading %s from etcd: %v", key, err)
	}
	defer resp.Body.Close()
	var r struct {
		KVs []struct {
			Value []byte `json:"value"` // base64 in JSON
		} `json:"kvs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("reading %s from etcd: %s, %v", key, resp.Status, err)
	}
	if len(r.KVs) == 0 {
		return ""
	}
	return string(r.KVs[0].Value)
}

func restCode(ctx context.Context, t *testing.T, n *Node, path string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.RESTAddr()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("GET %s on %s: %v", path, n.Name, err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func otherNode(c *Cluster, not *Node) *Node {
	for _, n := range c.Nodes {
		if n != not {
			return n
		}
	}
	return nil
}

func nodeName(n *Node) string {
	if n == nil {
		return "none"
	}
	return n.Name
}

func execSQL(ctx context.Context, n *Node, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	conn, err := pgconn.Connect(ctx, n.DSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql).ReadAll()
	return err
}

func mustExec(ctx context.Context, t *testing.T, n *Node, sql string) {
	t.Helper()
	if err := execSQL(ctx, n, sql); err != nil {
		t.Fatalf("%s on %s: %v", sql, n.Name, err)
	}
}

// waitValue polls sql on n until it returns want, for at most 30s.
func waitValue(ctx context.Context, t *testing.T, n *Node, sql, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got string
	var err error
	if perr := poll(ctx, func(ctx context.Context) (bool, error) {
		got, err = queryValue(ctx, n, sql)
		return err == nil && got == want, nil
	}, func(e error) error { return e }); perr != nil {
		t.Fatalf("%s on %s: %q, %v; want %q (%v)", sql, n.Name, got, err, want, perr)
	}
}

// processesUnder lists running processes ("comm pid cmdline") whose command line mentions
// dir, as pgrep -f finds them, or whose working directory is in it: PostgreSQL's backends
// run in their data dir, with titles that name no path.
func processesUnder(t *testing.T, dir string) []string {
	t.Helper()
	out, err := exec.Command("pgrep", "-f", dir).Output()
	var exitErr *exec.ExitError
	if err != nil && !(errors.As(err, &exitErr) && exitErr.ExitCode() == 1) { // 1: none
		t.Fatalf("pgrep: %v", err)
	}
	pids := strings.Fields(string(out))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || slices.Contains(pids, e.Name()) {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && strings.HasPrefix(cwd, dir) {
			pids = append(pids, e.Name())
		}
	}
	var procs []string
	for _, pid := range pids {
		comm, err := os.ReadFile(filepath.Join("/proc", pid, "comm"))
		if err != nil {
			continue // gone since
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
		args := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")
		procs = append(procs, fmt.Sprintf("%s %s %s", strings.TrimSpace(string(comm)), pid, args))
	}
	return procs
}

func slicesContainsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}
