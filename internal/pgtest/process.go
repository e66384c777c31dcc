package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

// errPortInUse means the postmaster exited because its port was taken.
var errPortInUse = errors.New("port in use")

// process is a running postmaster. Its waiter goroutine (waitProcess) reaps it and closes
// done; err is valid once done is closed.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// waitProcess reaps p; it lives exactly as long as the postmaster.
func waitProcess(p *process) {
	p.err = p.cmd.Wait()
	close(p.done)
}

// signalAndWait sends sig unless p has exited and reports whether it exits within timeout.
func (p *process) signalAndWait(sig os.Signal, timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	_ = p.cmd.Process.Signal(sig) // fails only if it has just exited
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// startLocked starts the postmaster and waits until it accepts connections. With newPort it
// picks a port (and writes pgtest.conf for it), retrying with another one when the port is
// taken; otherwise it reuses s.Port. s.mu is held.
func (s *Server) startLocked(ctx context.Context, newPort bool) error {
	attempts := 1
	if newPort {
		attempts = portAttempts
	}
	var err error
	for range attempts {
		if newPort {
			s.Port = s.pickPort()
			if err := s.writeConf(); err != nil {
				return err
			}
		}
		err = s.launchLocked(ctx)
		if err == nil || !newPort || !errors.Is(err, errPortInUse) {
			return err
		}
		s.logf("pgtest: %s: port %d in use, trying another", s.Name, s.Port)
	}
	return fmt.Errorf("starting %s: no free port in %d attempts: %w", s.Name, attempts, err)
}

// launchLocked starts `postgres -D DataDir` as a direct child, its output appended to
// LogFile, and waits until it is ready. On failure the process is gone again.
func (s *Server) launchLocked(ctx context.Context) error {
	logFile, err := os.OpenFile(s.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening server log: %w", err)
	}
	fi, err := logFile.Stat()
	if err != nil {
		logFile.Close()
		return fmt.Errorf("opening server log: %w", err)
	}
	offset := fi.Size()
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.DataDir)
	cmd.Dir = s.Dir
	cmd.Env = s.env()
	cmd.Stdout = logFile // an *os.File is handed to the child as is: no copying goroutine
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		// Own process group: a terminal's ^C reaches the test, not PostgreSQL directly.
		Setpgid: true,
		// If this process dies, the postmaster does an immediate shutdown. The kernel sends
		// it when the forking thread exits; Go keeps threads unless a locked goroutine
		// exits, and sets it after the credential change, which would clear it.
		Pdeathsig: syscall.SIGQUIT,
	}
	err = cmd.Start()
	logFile.Close() // the child has its own descriptor
	if err != nil {
		return fmt.Errorf("starting postgres for %s: %w", s.Name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go waitProcess(p)
	if err := s.waitReady(ctx, p, offset); err != nil {
		return errors.Join(err, s.killAndRelease(p))
	}
	s.mu.proc = p
	s.logf("pgtest: %s: ready on %s (pid %d, dir %s)", s.Name, s.Addr(), cmd.Process.Pid, s.Dir)
	return nil
}

// waitReady polls a connection through the server's own Unix socket (which no other server
// can answer, unlike a possibly reused TCP port) until it succeeds, the postmaster exits or
// startTimeout passes. The postmaster binds its TCP port before it creates the socket.
func (s *Server) waitReady(ctx context.Context, p *process, logOffset int64) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.Dir, s.Port, superuser, defaultDB)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var lastErr error
	for {
		conn, err := pgconn.Connect(ctx, dsn)
		if err == nil {
			return conn.Close(ctx)
		}
		lastErr = err
		select {
		case <-p.done:
			log, _ := readFrom(s.LogFile, logOffset)
			if strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use") {
				return fmt.Errorf("starting %s on port %d: %w; server log %s:\n%s", s.Name, s.Port, errPortInUse, s.LogFile, tail(log, 30))
			}
			return fmt.Errorf("starting %s: postgres exited (%v); server log %s:\n%s", s.Name, p.err, s.LogFile, tail(log, 30))
		case <-ctx.Done():
			log, _ := readFrom(s.LogFile, logOffset)
			return fmt.Errorf("starting %s: not ready (last: %v): %w; server log %s:\n%s", s.Name, lastErr, ctx.Err(), s.LogFile, tail(log, 30))
		case <-tick.C:
		}
	}
}

// stopLocked does a fast shutdown of the running server, escalating to SIGQUIT (immediate
// shutdown) and SIGKILL if it does not exit. s.mu is held.
func (s *Server) stopLocked() error {
	p := s.mu.proc
	if p == nil {
		return nil
	}
	s.mu.proc = nil
	if !p.signalAndWait(syscall.SIGINT, stopTimeout) {
		s.logf("pgtest: %s: no exit %v after SIGINT, sending SIGQUIT", s.Name, stopTimeout)
		if !p.signalAndWait(syscall.SIGQUIT, 5*time.Second) {
			s.logf("pgtest: %s: no exit after SIGQUIT, sending SIGKILL", s.Name)
			return s.killAndRelease(p)
		}
	}
	return s.releaseCrashed()
}

// killAndRelease SIGKILLs the postmaster, reaps it and its orphaned backends, and releases
// what the crash left behind.
func (s *Server) killAndRelease(p *process) error {
	// The backends outlive the postmaster briefly and are reparented to the nearest
	// subreaper, else to init; an init that does not reap (a container's) would keep them
	// as zombies for good. As a subreaper this process gets them and reaps them itself.
	// Without that, a pid reaped by init could be reused by a child that is not ours to reap.
	subreaperOnce.Do(func() { isSubreaper = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == nil })
	// Freeze the postmaster so that its list of children is complete when it dies.
	pid := p.cmd.Process.Pid
	var children []int
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err == nil && isSubreaper && waitStopped(pid) {
		children = childPIDs(pid)
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", s.Name, err)
	}
	<-p.done
	// The kernel reparented the children before the postmaster became reapable.
	s.reapOrphans(children)
	return s.releaseCrashed()
}

var (
	subreaperOnce sync.Once
	isSubreaper   bool // written once under subreaperOnce
)

// procStat returns the state letter and parent pid of pid; ok is false if it is gone.
func procStat(pid int) (state byte, ppid int, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid ...": comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err == nil
}

// childPIDs lists the children of ppid from /proc.
func childPIDs(ppid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, parent, ok := procStat(pid); ok && parent == ppid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitStopped reports whether pid enters the stopped state within a second.
func waitStopped(pid int) bool {
	deadline := time.Now().Add(time.Second)
	tick := time.NewTicker(time.Millisecond) // a signal in flight: nothing to wait on but /proc
	defer tick.Stop()
	for {
		switch state, _, ok := procStat(pid); {
		case !ok || state == 'Z':
			return false // already dead: nothing to freeze
		case state == 'T':
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// reapOrphans waits for the killed postmaster's children, now ours, to exit. They notice
// the postmaster's death at their next wait; one still busy after stopTimeout is killed.
func (s *Server) reapOrphans(pids []int) {
	deadline := time.Now().Add(stopTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for len(pids) > 0 {
		options := unix.WNOHANG
		if time.Now().After(deadline) {
			s.logf("pgtest: %s: killing %d backends that outlived the postmaster by %v", s.Name, len(pids), stopTimeout)
			for _, pid := range pids {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
			options = 0
		}
		pending := pids[:0]
		for _, pid := range pids {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, options, nil)
			if (err == nil && got == 0) || errors.Is(err, unix.EINTR) {
				pending = append(pending, pid) // still running
			}
			// Otherwise reaped, or already gone (ECHILD).
		}
		pids = pending
		if len(pids) > 0 {
			<-tick.C
		}
	}
}

// releaseCrashed runs after the postmaster exited. A clean exit removes postmaster.pid and
// there is nothing to do. After a crash its backends exit on their own once they notice;
// this waits for them — the postmaster's SysV shared memory segment (key and id on line 7
// of postmaster.pid) counts one attachment per live process, which is also how PostgreSQL
// decides whether a data dir may be started again — then removes the segment, which would
// otherwise outlive the server, and the stale lock files.
func (s *Server) releaseCrashed() error {
	pidFile := filepath.Join(s.DataDir, "postmaster.pid")
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading postmaster.pid of %s: %w", s.Name, err)
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) > 6 {
		if f := strings.Fields(lines[6]); len(f) == 2 {
			key, kerr := strconv.ParseInt(f[0], 10, 64)
			id, ierr := strconv.Atoi(f[1])
			if kerr == nil && ierr == nil {
				if err := s.releaseShm(int32(key), id); err != nil {
					return err
				}
			}
		}
	}
	for _, path := range []string{pidFile, filepath.Join(s.Dir, fmt.Sprintf(".s.PGSQL.%d.lock", s.Port))} {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing stale %s: %w", path, err)
		}
	}
	return nil
}

// releaseShm waits until no process is attached to the segment, then removes it.
func (s *Server) releaseShm(key int32, id int) error {
	deadline := time.Now().Add(stopTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var desc unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &desc); err != nil || desc.Perm.Key != key {
			return nil // gone (or the id now names someone else's segment)
		}
		if desc.Nattch == 0 {
			if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
				return fmt.Errorf("removing shared memory of %s: %w", s.Name, err)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d processes still attached to its shared memory %v after the postmaster died",
				s.Name, desc.Nattch, stopTimeout)
		}
		<-tick.C
	}
}
