package patronitest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// process is a running child: etcd, or the unshare that holds a node's namespaces. Its
// waiter goroutine (waitProcess) reaps it and closes done; err is valid once done is
// closed.
type process struct {
	name string
	log  string // its output
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// waitProcess reaps p; it lives exactly as long as the process.
func waitProcess(p *process) {
	p.err = p.cmd.Wait()
	close(p.done)
}

// spawn starts args as a direct child (with cred, if not nil), its output appended to
// logPath, in its own process group (a terminal's ^C reaches the test, not the cluster)
// and with SIGKILL as parent-death signal, so a test that dies takes it along. The kernel
// sends that signal when the forking thread exits; Go keeps its threads unless a locked
// goroutine exits.
func (c *Cluster) spawn(name, logPath string, cred *syscall.Credential, args []string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening log of %s: %w", name, err)
	}
	defer logFile.Close() // the child has its own descriptor
	if err := c.chown(logPath); err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = c.Dir
	cmd.Env = c.env(c.Dir)
	cmd.Stdout = logFile // an *os.File is handed to the child as is: no copying goroutine
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go waitProcess(p)
	return p, nil
}

// failed returns an error if p has exited or its log says it (or a PostgreSQL it
// started) could not bind a port; errPortInUse is in the chain then.
func (p *process) failed() error {
	var exitErr error
	select {
	case <-p.done:
		exitErr = fmt.Errorf("%s exited (%v)", p.name, p.err)
	default:
	}
	if b, err := os.ReadFile(p.log); err == nil && strings.Contains(strings.ToLower(string(b)), "address already in use") {
		return errors.Join(fmt.Errorf("%s: %w", p.name, errPortInUse), exitErr)
	}
	return exitErr
}

// kill sends SIGKILL to p and waits for it.
func (p *process) kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("%s (pid %d) still running %v after SIGKILL", p.name, p.cmd.Process.Pid, killTimeout)
	}
}

// killNamespace kills a node: SIGKILL to the first process of its PID namespace
// (Patroni, the only child of unshare). When it dies the kernel kills every other process
// of the namespace and reaps them before unshare can reap Patroni; unshare then exits, and
// once it is reaped nothing of the node runs. Without a child yet (just started), unshare
// itself is killed: --kill-child sends its child SIGKILL if it forks.
func (p *process) killNamespace() error {
	pid := p.cmd.Process.Pid
	if child := onlyChild(pid); child > 0 {
		if err := unix.Kill(child, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("killing pid %d: %w", child, err)
		}
		select {
		case <-p.done:
			return nil
		case <-time.After(killTimeout):
		}
	}
	return p.kill()
}

// onlyChild returns the child of pid (unshare has exactly one), or 0.
func onlyChild(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) != 1 {
		return 0
	}
	child, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return child
}

// env is the environment of the cluster's programs: the caller's without variables that
// would change what they do (PG*, PATRONI_*, ETCD*, ETCDCTL_*, locale, proxies) and with
// the C locale; HOME is home, so nothing reads the caller's dot files.
func (c *Cluster) env(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "PG"), strings.HasPrefix(k, "PATRONI"), strings.HasPrefix(k, "ETCD"),
			strings.HasPrefix(k, "LC_"), k == "LANG", k == "HOME", k == "PYTHONPATH", k == "PYTHONHOME",
			strings.HasSuffix(strings.ToLower(k), "_proxy"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "HOME="+home)
}

// logTail returns the last lines of a log, prefixed by its path, for an error message.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const maxTail = 16 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > maxTail {
		_, _ = f.Seek(fi.Size()-maxTail, io.SeekStart)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return fmt.Sprintf("\nlast lines of %s:\n%s", path, strings.Join(lines, "\n"))
}
