package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/pgfront/pgfront/internal/handover"
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
