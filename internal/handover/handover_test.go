package handover

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary a taking process (see runChild) instead of running tests.
const childEnv = "PGFRONT_HANDOVER_TEST_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(runChild(path))
	}
	goleak.VerifyTestMain(m)
}

// threeListeners returns two route listeners and the admin listener on loopback.
func threeListeners(t *testing.T) []Listener {
	return []Listener{
		{Kind: KindRoute, Name: "rw", Config: "127.0.0.1:0", Ln: listenTCP(t, "127.0.0.1:0")},
		{Kind: KindRoute, Name: "ro", Config: "127.0.0.1:0", Ln: listenTCP(t, "127.0.0.1:0")},
		{Kind: KindAdmin, Config: "127.0.0.1:0", Ln: listenTCP(t, "127.0.0.1:0")},
	}
}

// TestHandOverUnderLoad hands over three listeners while a client dials them without
// pause: no dial fails, the new side serves every dial after the hand-over, and the path is
// free for the new side's own Serve as soon as Ready returns.
func TestHandOverUnderLoad(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	old := serveTagged("old", threeListeners(t))
	t.Cleanup(old.stop)

	var oldSrv atomic.Pointer[Server]
	handedOver := make(chan struct{})
	rec := newRecorder()
	srv, err := Serve(path, func() []Listener { return old.ls }, func() {
		old.stop()
		if err := oldSrv.Load().Close(); err != nil { // may be called from handedOver
			t.Errorf("closing from handedOver: %v", err)
		}
		close(handedOver)
	}, rec.logger())
	if err != nil {
		t.Fatal(err)
	}
	oldSrv.Store(srv)
	t.Cleanup(func() { srv.Close() })
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file %v, %v; want mode 0600", fi, err)
	}

	l := startLoad(old.addrs())
	l.waitWarm(t)

	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Abort()
	if tk.PeerPID() != os.Getpid() {
		t.Errorf("peer pid %d, want %d", tk.PeerPID(), os.Getpid())
	}
	fresh := serveTagged("new", claimAll(t, tk))
	t.Cleanup(fresh.stop)
	if err := tk.Ready(); err != nil {
		t.Fatal(err)
	}
	// Ready returned: the old side stopped serving its socket, the path is free.
	next, err := Serve(path, func() []Listener { return fresh.ls }, func() {}, nil)
	if err != nil {
		t.Fatalf("serving the next hand-over at once: %v", err)
	}
	waitClosed(t, handedOver, "handedOver")
	l.check(t, "old", "new")

	if err := srv.Close(); err != nil {
		t.Errorf("closing the old server again: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("the old server removed the new server's socket: %v", err)
	}
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	rec.waitFor(t, "listeners handed over")
}

// TestHandOverKeepsBacklog: a connection the kernel queued on the old side's listener
// before the hand-over, never accepted there, is accepted by the new side.
func TestHandOverKeepsBacklog(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	ln := listenTCP(t, "127.0.0.1:0")
	handedOver := make(chan struct{})
	srv, err := Serve(path, func() []Listener {
		return []Listener{{Kind: KindRoute, Name: "rw", Config: "127.0.0.1:0", Ln: ln}}
	}, func() { ln.Close(); close(handedOver) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	queued, err := net.Dial("tcp", ln.Addr().String()) // completes in the kernel: nobody accepts
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()
	if _, err := queued.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}

	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Abort()
	taken, ok := tk.Claim(KindRoute, "rw", "127.0.0.1:0")
	if !ok {
		t.Fatal("claim failed")
	}
	defer taken.Close()
	if err := tk.Ready(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, handedOver, "handedOver")

	taken.SetDeadline(time.Now().Add(waitLimit))
	c, err := taken.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RemoteAddr().String() != queued.LocalAddr().String() {
		t.Errorf("accepted %s, want the queued %s", c.RemoteAddr(), queued.LocalAddr())
	}
	c.SetDeadline(time.Now().Add(waitLimit))
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "early" {
		t.Errorf("read %q, %v; want early", b, err)
	}
}

// TestHandOverToChildProcess hands the listeners to a second process (this test binary
// run as runChild) under load.
func TestHandOverToChildProcess(t *testing.T) {
	path := sockPath(t)
	old := serveTagged("parent", threeListeners(t))
	t.Cleanup(old.stop)
	handedOver := make(chan struct{})
	srv, err := Serve(path, func() []Listener { return old.ls }, func() { old.stop(); close(handedOver) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	l := startLoad(old.addrs())
	l.waitWarm(t)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "serving\n" {
		t.Fatalf("child said %q, %v; stderr:\n%s", line, err, stderr.String())
	}
	waitClosed(t, handedOver, "handedOver")
	l.check(t, "parent", "child")

	stdin.Close() // the child's signal to stop
	waited = true
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v; stderr:\n%s", err, stderr.String())
	}
}

// runChild is the taking process of TestHandOverToChildProcess: it takes every listener,
// serves them with the tag "child", says ready and on stdout "serving", and stops when its
// stdin closes.
func runChild(path string) int {
	fail := func(err error) int {
		os.Stderr.WriteString("child: " + err.Error() + "\n")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	tk, err := Take(ctx, path)
	if err != nil {
		return fail(err)
	}
	defer tk.Abort()
	var ls []Listener
	for _, l := range tk.Listeners() {
		ln, ok := tk.Claim(l.Kind, l.Name, l.Config)
		if !ok {
			return fail(errors.New("claiming " + l.Kind + " " + l.Name))
		}
		ls = append(ls, Listener{Kind: l.Kind, Name: l.Name, Config: l.Config, Ln: ln})
	}
	if len(ls) != 3 {
		return fail(errors.New("received " + strconv.Itoa(len(ls)) + " listeners, want 3"))
	}
	s := serveTagged("child", ls)
	defer s.stop()
	if err := tk.Ready(); err != nil {
		return fail(err)
	}
	os.Stdout.WriteString("serving\n")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func TestTakeWithoutServer(t *testing.T) {
	checkFDs(t)
	t.Run("no file", func(t *testing.T) {
		_, err := Take(takeCtx(t), sockPath(t))
		if !errors.Is(err, ErrNoPeer) || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("got %v, want ErrNoPeer wrapping ENOENT", err)
		}
	})
	t.Run("stale file", func(t *testing.T) {
		path := sockPath(t)
		staleSocket(t, path)
		_, err := Take(takeCtx(t), path)
		if !errors.Is(err, ErrNoPeer) || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("got %v, want ErrNoPeer wrapping ECONNREFUSED", err)
		}
	})
}

// staleSocket leaves a socket file at path that nothing listens on, as a crashed process
// would.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func TestServeReplacesStaleSocket(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	staleSocket(t, path)
	srv, err := Serve(path, func() []Listener { return nil }, func() {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	tk.Abort()
}

func TestServeRefusesLiveSocketAndOtherFiles(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	rec := newRecorder()
	srv, err := Serve(path, func() []Listener { return nil }, func() {}, rec.logger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := Serve(path, func() []Listener { return nil }, func() {}, nil); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Serve: %v, want ErrInUse", err)
	}
	// The probe was no request: the first server still answers.
	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	tk.Abort()

	file := sockPath(t)
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(file, func() []Listener { return nil }, func() {}, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Serve on a regular file: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("the regular file was touched: %q, %v", b, err)
	}
}

// TestAbortKeepsOldServing: a taker that aborts changes nothing, and a later one succeeds.
func TestAbortKeepsOldServing(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	old := serveTagged("old", threeListeners(t))
	t.Cleanup(old.stop)
	handedOver := make(chan struct{})
	srv, err := Serve(path, func() []Listener { return old.ls }, func() { old.stop(); close(handedOver) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	claimed, ok := tk.Claim(KindRoute, "rw", "127.0.0.1:0")
	if !ok {
		t.Fatal("claim failed")
	}
	tk.Abort()
	claimed.Close() // the caller's, as after a failed start
	if _, ok := tk.Claim(KindAdmin, "", "127.0.0.1:0"); ok {
		t.Error("Claim after Abort succeeded")
	}
	if err := tk.Ready(); err == nil {
		t.Error("Ready after Abort succeeded")
	}
	for _, a := range old.addrs() {
		if tag, err := dialTag(a); err != nil || tag != "old" {
			t.Fatalf("dialling %s after Abort: %q, %v", a, tag, err)
		}
	}
	if isClosed(handedOver) {
		t.Fatal("handedOver called after Abort")
	}

	tk, err = Take(takeCtx(t), path)
	if err != nil {
		t.Fatalf("second Take: %v", err)
	}
	defer tk.Abort()
	fresh := serveTagged("new", claimAll(t, tk))
	t.Cleanup(fresh.stop)
	if err := tk.Ready(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, handedOver, "handedOver")
	for _, a := range old.addrs() {
		if tag, err := dialTag(a); err != nil || tag != "new" {
			t.Fatalf("dialling %s after the hand-over: %q, %v", a, tag, err)
		}
	}
}

// TestReadyTimeout: a taker that says nothing in time changes nothing, and its late Ready
// fails.
func TestReadyTimeout(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	ln := listenTCP(t, "127.0.0.1:0")
	handedOver := make(chan struct{})
	rec := newRecorder()
	srv, err := serve(path, func() []Listener {
		return []Listener{{Kind: KindAdmin, Config: "127.0.0.1:0", Ln: ln}}
	}, func() { close(handedOver) }, rec.logger(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	err = rec.waitFor(t, "hand-over not completed; still serving")
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("logged %v, want a deadline", err)
	}
	if err := tk.Ready(); err == nil {
		t.Fatal("late Ready succeeded")
	}

	tk, err = Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	if isClosed(handedOver) {
		t.Fatal("handedOver called after the timeout")
	}
	claimAll(t, tk)
	if err := tk.Ready(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, handedOver, "handedOver")
}

// TestCloseDuringRequest: Close cuts a pending hand-over short; the taker's Ready fails and
// handedOver is not called.
func TestCloseDuringRequest(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	ln := listenTCP(t, "127.0.0.1:0")
	srv, err := Serve(path, func() []Listener {
		return []Listener{{Kind: KindAdmin, Config: "127.0.0.1:0", Ln: ln}}
	}, func() { t.Error("handedOver called") }, nil)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	if err := tk.Ready(); err == nil {
		t.Fatal("Ready succeeded after Close")
	}
}

func TestEmptyOffer(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	handedOver := make(chan struct{})
	srv, err := Serve(path, func() []Listener { return nil }, func() { close(handedOver) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	if ls := tk.Listeners(); len(ls) != 0 {
		t.Fatalf("received %v", ls)
	}
	if err := tk.Ready(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, handedOver, "handedOver")
}

func TestOfferTooManyListeners(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	ln := listenTCP(t, "127.0.0.1:0")
	rec := newRecorder()
	srv, err := Serve(path, func() []Listener {
		ls := make([]Listener, MaxListeners+1)
		for i := range ls {
			ls[i] = Listener{Kind: KindRoute, Name: strconv.Itoa(i), Config: "127.0.0.1:0", Ln: ln}
		}
		return ls
	}, func() { t.Error("handedOver called") }, rec.logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	_, err = Take(takeCtx(t), path)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "254, over the limit of 253") {
		t.Fatalf("got %v, want a refusal naming the limit", err)
	}
	rec.waitFor(t, "offering listeners for hand-over")
}

// TestVersionMismatch: each side reports the other's version clearly.
func TestVersionMismatch(t *testing.T) {
	checkFDs(t)
	t.Run("taker speaks another version", func(t *testing.T) {
		path := sockPath(t)
		rec := newRecorder()
		srv, err := Serve(path, func() []Listener { return nil }, func() { t.Error("handedOver called") }, rec.logger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		c := rawDial(t, path)
		if _, err := c.Write([]byte(`{"proto":"pgfront-handover","version":2,"type":"take","want":"new things"}`)); err != nil {
			t.Fatal(err)
		}
		m, fds, err := readMessage(c)
		if err != nil || len(fds) != 0 {
			t.Fatalf("reading the answer: %v, %d fds", err, len(fds))
		}
		if m.Type != msgRefuse || m.Version != 1 || !strings.Contains(m.Error, "the peer speaks version 2, this process speaks version 1") {
			t.Errorf("answer %+v, want a version 1 refusal naming both versions", m)
		}
		if err := rec.waitFor(t, "offering listeners for hand-over"); !errors.Is(err, ErrVersion) {
			t.Errorf("logged %v, want ErrVersion", err)
		}
		// Still serving.
		tk, err := Take(takeCtx(t), path)
		if err != nil {
			t.Fatal(err)
		}
		tk.Abort()
	})
	t.Run("server speaks another version", func(t *testing.T) {
		path := sockPath(t)
		ln := listenTCP(t, "127.0.0.1:0")
		fakeServer(t, path, func(c *net.UnixConn) {
			fd, err := dupListener(ln)
			if err != nil {
				t.Error(err)
				return
			}
			defer unix.Close(fd)
			c.WriteMsgUnix([]byte(`{"proto":"pgfront-handover","version":2,"type":"offer","sockets":[]}`), unix.UnixRights(fd), nil)
		})
		_, err := Take(takeCtx(t), path)
		if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "the peer speaks version 2, this process speaks version 1") {
			t.Fatalf("got %v, want ErrVersion naming both versions", err)
		}
	})
}

// TestOversizedMessages: a description over the limit is refused on either side, and its
// descriptors are closed.
func TestOversizedMessages(t *testing.T) {
	checkFDs(t)
	big := func() []byte {
		m := newMessage(msgOffer)
		m.Error = strings.Repeat("x", maxMessage) // any field will do: the size is checked first
		b, _ := json.Marshal(m)
		return b
	}
	t.Run("offer", func(t *testing.T) {
		path := sockPath(t)
		ln := listenTCP(t, "127.0.0.1:0")
		fakeServer(t, path, func(c *net.UnixConn) {
			fd, err := dupListener(ln)
			if err != nil {
				t.Error(err)
				return
			}
			defer unix.Close(fd)
			if _, _, err := c.WriteMsgUnix(big(), unix.UnixRights(fd, fd), nil); err != nil {
				t.Error(err)
			}
		})
		_, err := Take(takeCtx(t), path)
		if err == nil || !strings.Contains(err.Error(), "over the 65536 byte limit") {
			t.Fatalf("got %v, want the size limit", err)
		}
	})
	t.Run("request", func(t *testing.T) {
		path := sockPath(t)
		rec := newRecorder()
		srv, err := Serve(path, func() []Listener { return nil }, func() {}, rec.logger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		c := rawDial(t, path)
		if _, err := c.Write(big()); err != nil {
			t.Fatal(err)
		}
		err = rec.waitFor(t, "offering listeners for hand-over")
		if err == nil || !strings.Contains(err.Error(), "over the 65536 byte limit") {
			t.Errorf("logged %v, want the size limit", err)
		}
		if m, _, err := readMessage(c); err != nil || m.Type != msgRefuse {
			t.Errorf("answer %+v, %v; want a refusal", m, err)
		}
		tk, err := Take(takeCtx(t), path)
		if err != nil {
			t.Fatal(err)
		}
		tk.Abort()
	})
}

// TestTakeRejectsNonListeners: a descriptor that is not a listening TCP socket fails Take,
// and every received descriptor is closed, including the good ones before and after it.
func TestTakeRejectsNonListeners(t *testing.T) {
	checkFDs(t)
	good := listenTCP(t, "127.0.0.1:0")
	cases := map[string]func(t *testing.T) int{
		"pipe": func(t *testing.T) int {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			unix.Close(p[1])
			return p[0]
		},
		"tcp connection": func(t *testing.T) int {
			c, err := net.Dial("tcp", good.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			raw, _ := c.(*net.TCPConn).SyscallConn()
			fd := -1
			raw.Control(func(s uintptr) { fd, _ = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
			return fd
		},
		"tcp socket not listening": func(t *testing.T) int {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
			if err != nil {
				t.Fatal(err)
			}
			return fd
		},
		"udp socket": func(t *testing.T) int {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			return fd
		},
		"unix listener": func(t *testing.T) int {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Bind(fd, &unix.SockaddrUnix{Name: "@pgfront-handover-test-" + strconv.Itoa(os.Getpid())}); err != nil {
				t.Fatal(err)
			}
			if err := unix.Listen(fd, 1); err != nil {
				t.Fatal(err)
			}
			return fd
		},
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			path := sockPath(t)
			fakeServer(t, path, func(c *net.UnixConn) {
				goodFD, err := dupListener(good)
				if err != nil {
					t.Error(err)
					return
				}
				badFD := bad(t)
				defer unix.Close(goodFD)
				defer unix.Close(badFD)
				m := newMessage(msgOffer)
				m.Listeners = []description{
					{Kind: KindRoute, Name: "a", Config: "127.0.0.1:0"},
					{Kind: KindRoute, Name: "b", Config: "127.0.0.1:0"},
					{Kind: KindAdmin, Config: "127.0.0.1:0"},
				}
				// Good ones on both sides of the bad one: both must be closed.
				if err := writeMessage(c, m, []int{goodFD, badFD, goodFD}); err != nil {
					t.Error(err)
				}
			})
			_, err := Take(takeCtx(t), path)
			if err == nil || !strings.Contains(err.Error(), `receiving listener 1 (route "b" at 127.0.0.1:0): checking the descriptor`) {
				t.Fatalf("got %v, want listener 1 refused", err)
			}
		})
	}
	t.Run("fewer descriptors than listeners", func(t *testing.T) {
		path := sockPath(t)
		fakeServer(t, path, func(c *net.UnixConn) {
			fd, err := dupListener(good)
			if err != nil {
				t.Error(err)
				return
			}
			defer unix.Close(fd)
			m := newMessage(msgOffer)
			m.Listeners = []description{{Kind: KindRoute, Name: "a", Config: "127.0.0.1:0"}, {Kind: KindAdmin, Config: "127.0.0.1:0"}}
			writeMessage(c, m, []int{fd})
		})
		_, err := Take(takeCtx(t), path)
		if err == nil || !strings.Contains(err.Error(), "1 descriptors for 2 listeners") {
			t.Fatalf("got %v", err)
		}
	})
}

// TestTakeCancelled: cancelling the context ends a Take that the server never answers.
func TestTakeCancelled(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	asked, release := make(chan struct{}), make(chan struct{})
	fakeServer(t, path, func(c *net.UnixConn) {
		close(asked)
		<-release
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		select {
		case <-asked: // Take waits for the offer now
			cancel()
		case <-ctx.Done():
		}
	}()
	_, err := Take(ctx, path)
	close(release)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// TestClaim covers the matching rules: by kind, name and configured address first, then by
// kind and bound address, never by address for port 0.
func TestClaim(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	a := listenTCP(t, "127.0.0.1:0")
	b := listenTCP(t, "127.0.0.1:0")
	c := listenTCP(t, "0.0.0.0:0")
	d := listenTCP(t, "127.0.0.1:0")
	adm := listenTCP(t, "127.0.0.1:0")
	port := func(ln *net.TCPListener) string { return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) }
	offered := []Listener{
		{Kind: KindRoute, Name: "a", Config: "127.0.0.1:0", Ln: a},
		{Kind: KindRoute, Name: "b", Config: "127.0.0.1:" + port(b), Ln: b},
		{Kind: KindRoute, Name: "c", Config: "0.0.0.0:" + port(c), Ln: c},
		{Kind: KindRoute, Name: "d", Config: "127.0.0.1:0", Ln: d},
		{Kind: KindAdmin, Config: "127.0.0.1:0", Ln: adm},
	}
	srv, err := Serve(path, func() []Listener { return offered }, func() { t.Error("handedOver called") }, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Abort()
	received := map[string]*net.TCPListener{}
	for _, l := range tk.Listeners() {
		received[l.Kind+"/"+l.Name] = l.Ln
	}

	steps := []struct {
		kind, name, config string
		want               string // key in received, "" for none
	}{
		{KindRoute, "a", "127.0.0.1:0", "route/a"},
		{KindRoute, "a", "127.0.0.1:0", ""},                         // claimed already
		{KindRoute, "renamed", "127.0.0.1:0", ""},                   // port 0: by name only, d stays
		{KindAdmin, "", "127.0.0.1:" + port(b), ""},                 // b's address, but a route
		{KindRoute, "b-renamed", "localhost:" + port(b), "route/b"}, // by bound address
		{KindRoute, "c-renamed", ":" + port(c), "route/c"},          // wildcards are equal
		{KindRoute, "e", "127.0.0.1:" + port(adm), ""},              // the admin's address, but a route
		{KindRoute, "f", "not an address", ""},                      //
		{KindAdmin, "", "127.0.0.1:0", "admin/"},                    //
		{KindRoute, "d", "127.0.0.1:0", "route/d"},                  //
		{KindRoute, "d", "127.0.0.1:" + port(d), ""},                // claimed already
	}
	var claimed []*net.TCPListener
	for _, s := range steps {
		ln, ok := tk.Claim(s.kind, s.name, s.config)
		if s.want == "" {
			if ok {
				t.Errorf("Claim(%s, %q, %s) = %s, want none", s.kind, s.name, s.config, ln.Addr())
			}
			continue
		}
		if !ok || ln != received[s.want] {
			t.Errorf("Claim(%s, %q, %s) = %v, %v; want %s", s.kind, s.name, s.config, ln, ok, s.want)
			continue
		}
		claimed = append(claimed, ln)
	}
	tk.Abort()
	// Claimed listeners are the caller's: still open.
	for _, ln := range claimed {
		ln.SetDeadline(time.Now())
		if _, err := ln.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("claimed listener %s after Abort: %v", ln.Addr(), err)
		}
		ln.Close()
	}
}

func TestClaimAbortClosesUnclaimed(t *testing.T) {
	checkFDs(t)
	path := sockPath(t)
	ls := threeListeners(t)
	srv, err := Serve(path, func() []Listener { return ls }, func() {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tk, err := Take(takeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	received := tk.Listeners()
	tk.Abort()
	for _, l := range received {
		if _, err := l.Ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("unclaimed %s after Abort: %v", l.Ln.Addr(), err)
		}
	}
	// The old side's own listeners are untouched.
	for _, l := range ls {
		l.Ln.SetDeadline(time.Now())
		if _, err := l.Ln.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("old %s after Abort: %v", l.Ln.Addr(), err)
		}
	}
}
