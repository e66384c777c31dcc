package dcs

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// testEtcd is a single etcd on Unix sockets in a temp dir (no ports to pick), for the tests
// of the watcher. Stop and Start restart it on the same data and socket.
type testEtcd struct {
	t        testing.TB
	bin, dir string
	cmd      *exec.Cmd
	done     chan struct{}
	// With TLS: etcd's extra flags, and the client's config (Client uses it).
	tlsArgs   []string
	clientTLS *tls.Config
}

// startEtcd starts an etcd, or skips the test when there is none.
func startEtcd(t testing.TB) *testEtcd { return startEtcdTLS(t, nil, nil) }

// startEtcdTLS starts an etcd serving TLS with tlsArgs (nil: plain); clientTLS is how its
// tests' clients connect.
func startEtcdTLS(t testing.TB, tlsArgs []string, clientTLS *tls.Config) *testEtcd {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd not installed (the CI installs it):", err)
	}
	e := &testEtcd{t: t, bin: bin, dir: t.TempDir(), tlsArgs: tlsArgs, clientTLS: clientTLS}
	e.Start()
	t.Cleanup(e.Stop)
	return e
}

// Endpoint is the client endpoint.
func (e *testEtcd) Endpoint() string {
	return e.scheme() + "://" + filepath.Join(e.dir, "client.sock") + ":0"
}

func (e *testEtcd) scheme() string {
	if e.tlsArgs != nil {
		return "unixs"
	}
	return "unix"
}

// Start starts etcd and waits until it answers.
func (e *testEtcd) Start() {
	t := e.t
	t.Helper()
	log, err := os.OpenFile(filepath.Join(e.dir, "etcd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	peer := "unix://peer.sock:0"
	client := e.scheme() + "://client.sock:0"
	args := append([]string{"--name=e1", "--data-dir=data",
		"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer, "--initial-cluster=e1=" + peer}, e.tlsArgs...)
	cmd := exec.Command(e.bin, args...)
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.cmd, e.done = cmd, make(chan struct{})
	go func(done chan struct{}) { // reaps etcd; lives as long as it
		cmd.Wait()
		close(done)
	}(e.done)
	cli := e.Client()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/probe")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(e.dir, "etcd.log"))
			t.Fatalf("etcd did not start: %v\n%s", err, b)
		}
		select {
		case <-e.done:
			b, _ := os.ReadFile(filepath.Join(e.dir, "etcd.log"))
			t.Fatalf("etcd exited\n%s", b)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop kills etcd and waits for it.
func (e *testEtcd) Stop() {
	if e.cmd == nil {
		return
	}
	e.cmd.Process.Kill()
	<-e.done
	e.cmd = nil
	for _, s := range []string{"client.sock:0", "peer.sock:0"} {
		if err := os.Remove(filepath.Join(e.dir, s)); err != nil && !errors.Is(err, os.ErrNotExist) {
			e.t.Error(err)
		}
	}
}

// Client returns a client closed at the end of the test.
func (e *testEtcd) Client() *clientv3.Client {
	cli, err := clientv3.New(ClientConfig(context.Background(), Options{Endpoints: []string{e.Endpoint()}, TLS: e.clientTLS}))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cli.Close() })
	return cli
}
