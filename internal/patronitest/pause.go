package patronitest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PausePatroni freezes n's Patroni (SIGSTOP to its processes) and leaves its PostgreSQL
// running: the "Patroni dies but PostgreSQL stays writable" failure. The leader key, no
// longer renewed, expires after the DCS ttl and another node is promoted, while the old
// primary still accepts writes. ResumePatroni lets Patroni go on (it then demotes a
// PostgreSQL that lost the leader key).
func (c *Cluster) PausePatroni(n *Node) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.mu.nodes[n]
	switch {
	case p == nil:
		return fmt.Errorf("pausing %s: not running", n.Name)
	case c.isPaused(n):
		return fmt.Errorf("pausing %s: already paused", n.Name)
	}
	root := onlyChild(p.cmd.Process.Pid)
	if root <= 0 {
		return fmt.Errorf("pausing %s: Patroni not found", n.Name)
	}
	pids := patroniPids(root)
	for i, pid := range pids {
		if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
			for _, done := range pids[:i] {
				unix.Kill(done, unix.SIGCONT)
			}
			return fmt.Errorf("pausing %s: pid %d: %w", n.Name, pid, err)
		}
	}
	c.setPaused(n, pids)
	c.logf("patronitest: %s: Patroni paused (pids %v), PostgreSQL runs on", n.Name, pids)
	return nil
}

// ResumePatroni undoes PausePatroni.
func (c *Cluster) ResumePatroni(n *Node) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused.Lock()
	pids := c.paused.m[n]
	c.paused.Unlock()
	if pids == nil {
		return fmt.Errorf("resuming %s: not paused", n.Name)
	}
	c.setPaused(n, nil)
	var errs []error
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("resuming %s: pid %d: %w", n.Name, pid, err))
		}
	}
	c.logf("patronitest: %s: Patroni resumed", n.Name)
	return errors.Join(errs...)
}

// patroniPids are root (the namespace's first process: Patroni, which as PID 1 runs the
// real Patroni as its child) and every descendant that is not PostgreSQL's.
func patroniPids(root int) []int {
	var out []int
	var walk func(pid int)
	walk = func(pid int) {
		if comm(pid) == "postgres" {
			return
		}
		out = append(out, pid)
		for _, child := range children(pid) {
			walk(child)
		}
	}
	walk(root)
	return out
}

// comm is a process's command name ("" when it is gone).
func comm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// children lists the children of every thread of pid.
func children(pid int) []int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func (c *Cluster) isPaused(n *Node) bool {
	c.paused.Lock()
	defer c.paused.Unlock()
	return c.paused.m[n] != nil
}

// setPaused records n's stopped pids; nil forgets them.
func (c *Cluster) setPaused(n *Node, pids []int) {
	c.paused.Lock()
	defer c.paused.Unlock()
	if pids == nil {
		delete(c.paused.m, n)
		return
	}
	if c.paused.m == nil {
		c.paused.m = make(map[*Node][]int)
	}
	c.paused.m[n] = pids
}

// StopEtcd kills the cluster's etcd (the DCS becomes unreachable: Patroni keeps its roles for
// a while, then demotes a leader it cannot renew). StartEtcd brings it back on the same port
// and data.
func (c *Cluster) StopEtcd() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.mu.etcd
	if p == nil {
		return errors.New("stopping etcd: not running")
	}
	c.mu.etcd = nil
	if err := p.kill(); err != nil {
		return fmt.Errorf("stopping etcd: %w", err)
	}
	c.logf("patronitest: etcd stopped")
	return nil
}

// StartEtcd starts etcd again after StopEtcd and waits until it is healthy.
func (c *Cluster) StartEtcd(ctx context.Context) error {
	c.mu.Lock()
	running, removed := c.mu.etcd != nil, c.mu.removed
	c.mu.Unlock()
	switch {
	case removed:
		return errors.New("starting etcd: cluster removed by Cleanup")
	case running:
		return errors.New("starting etcd: already running")
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	c.logf("patronitest: etcd started again")
	return nil
}
