package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestMarkDownOfHungServerEndsSessionsAtOnce: a server that hangs (postmaster and backends
// stopped, while the kernel still accepts connections to its port) is marked down, and every
// session on it, busy or idle, ends within a second of that, although the cancel of each busy
// one waits its whole timeout on the hung server; the cancels must not hold the health loop,
// which goes on checking the server.
func TestMarkDownOfHungServerEndsSessionsAtOnce(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	cfg := strings.Replace(oneServerConfig(p, "", ""), "    servers:",
		"    health: {check: postgres, interval: 500ms, fast_interval: 100ms, timeout: 300ms, rise: 1, fall: 1}\n    servers:", 1)
	e := startProxy(t, cfg)
	server := func() admin.Server {
		var list []admin.Server
		if code := e.api("GET", "/api/v1/servers", "", nil, &list); code != 200 || len(list) != 1 {
			t.Fatalf("GET servers: %d %+v", code, list)
		}
		return list[0]
	}
	waitFor(t, 10*time.Second, "server pg up", func() bool { s := server(); return s.Up && !s.LastCheck.IsZero() })

	type ended struct {
		at  time.Time
		err error
	}
	const busy, idle = 3, 2
	var results []chan ended
	var pids []string
	for range busy {
		c := e.pgconnect("rw")
		pid, _ := sessionInfo(t, c)
		pids = append(pids, fmt.Sprint(pid))
		ch := make(chan ended, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := c.Exec(ctx, "SELECT pg_sleep(60)").ReadAll()
			ch <- ended{time.Now(), err}
		}()
		results = append(results, ch)
	}
	waitFor(t, 10*time.Second, "pg_sleep to run in every busy session", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v, err := p.QueryValue(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid IN ("+strings.Join(pids, ",")+")")
		return err == nil && v == fmt.Sprint(busy)
	})
	for range idle {
		c := e.pgconnect("rw")
		ch := make(chan ended, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := c.WaitForNotification(ctx)
			ch <- ended{time.Now(), err}
		}()
		results = append(results, ch)
	}

	freeze(t, p)
	var downAt time.Time
	waitFor(t, 10*time.Second, "the hung server to be marked down", func() bool {
		if server().Up {
			return false
		}
		downAt = time.Now()
		return true
	})
	for i, ch := range results {
		select {
		case r := <-ch:
			if d := r.at.Sub(downAt); d > time.Second {
				t.Errorf("session %d ended %s after the mark-down, want within 1s", i, d.Round(time.Millisecond))
			}
			wantFatal(t, r.err, "57P01")
		case <-time.After(time.Until(downAt.Add(3 * time.Second))):
			t.Fatalf("session %d still open 3s after the mark-down", i)
		}
	}

	last := server().LastCheck
	for range 2 {
		waitFor(t, 3*time.Second, "the health loop to check the hung server again", func() bool {
			lc := server().LastCheck
			if lc.After(last) {
				last = lc
				return true
			}
			return false
		})
	}
}

// freeze stops p's postmaster and all its children (backends, background processes) with
// SIGSTOP, as a hung machine would look: the kernel still completes TCP handshakes to its port,
// and nothing answers. They are continued at the end of the test.
func freeze(t *testing.T, p *pgtest.Server) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(p.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	var stopped []int
	t.Cleanup(func() {
		for _, pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	stop := func(pid int) {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("stopping %d: %v", pid, err)
		}
		stopped = append(stopped, pid)
	}
	stop(pm) // first, so that it forks no child the list below would miss
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if pid, err := strconv.Atoi(en.Name()); err == nil && parentPID(pid) == pm {
			stop(pid)
		}
	}
}

// parentPID is pid's parent process id from /proc, or 0 if it is gone.
func parentPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ...": comm may contain spaces and parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}
