package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/pgfront/pgfront/internal/handover"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// RunOptions configure Run.
type RunOptions struct {
	// HandoverSocket is the unix socket on which a running pgfront with the same config hands
	// its listening sockets to a new process (see internal/handover); "" turns hand-over off:
	// Run binds every address itself.
	HandoverSocket string
	// Upgrade, if set, is called on SIGUSR2 to start the new process (normally the same
	// command line, from the binary now on disk), which then takes the listeners over.
	Upgrade func() error
}

// takeTimeout bounds asking a previous process for its listeners.
const takeTimeout = 10 * time.Second

// Run takes the listeners of a previous pgfront (when one serves the hand-over socket), starts
// a, and serves until a stop signal or until a new process takes the listeners over; then it
// drains: sessions end at their next transaction boundary within shutdown.grace while health
// checks and mark-down go on. A second signal ends everything at once. SIGHUP reloads the
// config; SIGUSR2 starts the new process of a binary upgrade (RunOptions.Upgrade).
func (a *App) Run(sigs <-chan os.Signal, opts RunOptions) error {
	a.handoverPath = opts.HandoverSocket
	if err := a.startHandedOver(opts.HandoverSocket); err != nil {
		return err
	}
	handedOver := make(chan struct{})
	var srv *handover.Server
	if opts.HandoverSocket != "" {
		var err error
		srv, err = a.serveHandover(opts.HandoverSocket, handedOver)
		if err != nil {
			a.log.Warn("listeners cannot be handed to a new process", "socket", opts.HandoverSocket, "err", err)
		}
	}
	notify(daemon.SdNotifyReady, fmt.Sprintf("MAINPID=%d", os.Getpid()))

	var why string
	for why == "" {
		select {
		case <-handedOver:
			why = "a new pgfront process took the listeners"
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				notify(daemon.SdNotifyReloading)
				_, _ = a.Reload()
				notify(daemon.SdNotifyReady)
			case syscall.SIGUSR2:
				if opts.Upgrade == nil {
					a.log.Warn("SIGUSR2: no upgrade command; ignored")
					continue
				}
				a.log.Info("SIGUSR2: starting the new pgfront process; it takes the listeners over")
				if err := opts.Upgrade(); err != nil {
					a.log.Error("upgrade: the new process did not start; this one goes on serving", "err", err)
				}
			default:
				why = "signal " + sig.String()
			}
		}
	}
	// The hand-over socket stays open while draining: a new process started now takes the
	// admin listener (and nothing else: the routes' listeners are closed) instead of failing
	// to bind it.
	if srv != nil {
		defer srv.Close()
	}
	if opts.HandoverSocket != "" {
		// Clients of sessions still here send their cancels to the new process's address.
		if stop, err := a.serveDrainingCancels(opts.HandoverSocket); err != nil {
			a.log.Warn("cancel requests for draining sessions cannot be relayed to this process", "err", err)
		} else {
			defer stop()
		}
	}
	notify(daemon.SdNotifyStopping)
	grace := a.Config().Shutdown.Grace.D()
	a.log.Info("draining: sessions end at their next transaction boundary", "why", why, "grace", grace,
		"sessions", a.frontend.Sessions())
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan struct{})
	go func() { a.Shutdown(ctx); close(done) }()
	for {
		select {
		case <-done:
			a.log.Info("stopped")
			return nil
		case sig := <-sigs:
			if sig == syscall.SIGHUP || sig == syscall.SIGUSR2 {
				a.log.Warn("signal while draining: ignored", "signal", sig.String())
				continue
			}
			a.log.Warn("second signal: ending every session now", "signal", sig.String())
			cancel()
		}
	}
}

// startHandedOver starts a with the listeners a previous process hands over on path (none:
// it binds them itself), then tells that process to drain.
func (a *App) startHandedOver(path string) error {
	if path == "" {
		return a.Start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), takeTimeout)
	defer cancel()
	taken, err := handover.Take(ctx, path)
	if errors.Is(err, handover.ErrNoPeer) {
		return a.Start()
	}
	if err != nil {
		// A previous process is there but the hand-over failed: binding may still work (it
		// stopped listening), and if not the error says which address is taken.
		a.log.Warn("taking the listeners of the running pgfront failed; binding them", "socket", path, "err", err)
		return a.Start()
	}
	a.reloadMu.Lock()
	a.taken = taken
	a.reloadMu.Unlock()
	err = a.Start()
	a.reloadMu.Lock()
	a.taken = nil
	a.reloadMu.Unlock()
	if err != nil {
		taken.Abort()
		return err
	}
	if err := taken.Ready(); err != nil {
		a.log.Warn("the previous pgfront did not confirm the hand-over; it may go on serving beside this one", "err", err)
		return nil
	}
	a.log.Info("took the listeners of the previous pgfront process; it drains", "socket", path)
	return nil
}

// claim returns a listener handed over for a route or the admin listener, or nil.
func (a *App) claim(kind, name, addr string) net.Listener {
	if a.taken == nil {
		return nil
	}
	if ln, ok := a.taken.Claim(kind, name, addr); ok {
		return ln
	}
	return nil
}

// serveHandover answers a later process's request for the listeners; handedOver is closed once
// it has them and serves.
func (a *App) serveHandover(path string, handedOver chan<- struct{}) (*handover.Server, error) {
	offer := func() []handover.Listener {
		a.reloadMu.Lock()
		defer a.reloadMu.Unlock()
		var out []handover.Listener
		for name, ln := range a.frontend.Listeners() {
			if tl, ok := ln.(*net.TCPListener); ok {
				out = append(out, handover.Listener{Kind: "route", Name: name, Config: a.gen.cfg.Routes[name].Listen, Ln: tl})
			}
		}
		if a.admin != nil {
			if tl, ok := a.admin.Listener().(*net.TCPListener); ok {
				out = append(out, handover.Listener{Kind: "admin", Config: a.gen.cfg.Admin.Listen, Ln: tl})
			}
		}
		return out
	}
	done := func() {
		// The new process accepts on the same sockets: stop accepting here, at once, and
		// leave the admin address to it too.
		a.setDraining("handed over to a new process")
		a.frontend.StopAccepting()
		a.reloadMu.Lock()
		adm := a.admin
		a.admin = nil
		a.reloadMu.Unlock()
		if adm != nil {
			adm.Close() // outside the lock: a reload request it waits for takes the lock
		}
		close(handedOver)
	}
	return handover.Serve(path, offer, done, a.log)
}

// notify tells systemd (Type=notify) about pgfront's state; a no-op elsewhere.
func notify(states ...string) {
	for _, st := range states {
		_, _ = daemon.SdNotify(false, st)
	}
}

// drainingSuffix names the socket on which a draining process takes the CancelRequests its
// successor received for sessions it still holds: <hand-over path><suffix><pid>-<n>.
const drainingSuffix = ".draining-"

// drainingSeq tells apart the draining sockets of Apps in one process (tests).
var drainingSeq atomic.Uint64

// cancelRelayTimeout bounds one relayed CancelRequest between processes.
const cancelRelayTimeout = 5 * time.Second

// serveDrainingCancels answers relayed CancelRequests while this process drains: a session
// that outlives the hand-over still gets its query cancelled when its client's cancel
// connection lands on the new process. stop closes the socket and waits for its goroutine.
func (a *App) serveDrainingCancels(handoverPath string) (stop func(), err error) {
	path := fmt.Sprintf("%s%s%d-%d", handoverPath, drainingSuffix, os.Getpid(), drainingSeq.Add(1))
	_ = os.Remove(path) // a previous process with our pid left it
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("restricting %s: %w", path, err)
	}
	a.drainingPath.Store(&path)
	done := make(chan struct{})
	go a.relayedCancels(ln, done)
	return func() {
		_ = ln.Close()
		<-done
		_ = os.Remove(path)
	}, nil
}

// relayedCancels is the goroutine of serveDrainingCancels: one CancelRequest per connection,
// answered with 'Y' (sent to the session's server) or 'N' (no such session here).
func (a *App) relayedCancels(ln net.Listener, done chan<- struct{}) {
	defer close(done)
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by stop
		}
		a.relayedCancel(c)
	}
}

func (a *App) relayedCancel(c net.Conn) {
	defer c.Close()
	if !samePeer(c) {
		return
	}
	_ = c.SetDeadline(time.Now().Add(cancelRelayTimeout))
	pkt, err := pgwire.ReadFirstPacket(c)
	if err != nil || pkt.Kind != pgwire.KindCancel {
		return
	}
	answer := []byte{'N'}
	// Answered once the owner is known (see StartCancel); a server that then does not take
	// the cancel is logged here, the owner.
	if a.frontend.StartCancel(pkt.Cancel, func(err error) {
		if err != nil {
			a.log.Warn("relayed cancel request failed", "pid", pkt.Cancel.ProcessID, "err", err)
		}
	}) == nil {
		answer[0] = 'Y'
	}
	_, _ = c.Write(answer)
}

// forwardCancel offers a CancelRequest no session here has to the processes still draining
// after handing their listeners to this one (or to a predecessor of this one).
func (a *App) forwardCancel(key pgwire.CancelKey) bool {
	if a.handoverPath == "" {
		return false
	}
	paths, _ := filepath.Glob(a.handoverPath + drainingSuffix + "*")
	for _, p := range paths {
		if own := a.drainingPath.Load(); own != nil && p == *own {
			continue
		}
		if relayCancel(p, key) {
			return true
		}
	}
	return false
}

// relayCancel sends key to the draining process at path and reports whether it had the session.
func relayCancel(path string, key pgwire.CancelKey) bool {
	c, err := net.DialTimeout("unix", path, cancelRelayTimeout)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			_ = os.Remove(path) // its process is gone
		}
		return false
	}
	defer c.Close()
	if !samePeer(c) { // a cancel key is a secret: only to our own user
		return false
	}
	_ = c.SetDeadline(time.Now().Add(cancelRelayTimeout))
	if _, err := c.Write(pgwire.EncodeCancelRequest(key)); err != nil {
		return false
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	return err == nil && b[0] == 'Y'
}

// samePeer reports whether the process at the other end of a unix conn runs as our user (or
// root).
func samePeer(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil || credErr != nil {
		return false
	}
	return cred.Uid == uint32(os.Getuid()) || cred.Uid == 0
}
