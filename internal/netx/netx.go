// Package netx owns what pgfront asks of the kernel's TCP stack beyond plain reads and
// writes: the socket options that bound a dead peer (keepalive, TCP_USER_TIMEOUT), the
// kernel's view of the process's own TCP sockets and their states, and the classes of
// network errors that decide a session's termination cause.
//
//	k := netx.KeepAlive{Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3,
//		UserTimeout: 60 * time.Second}
//	server, err := k.Dialer(connectTimeout).DialContext(ctx, "tcp", addr) // options set
//	ln, err := k.ListenConfig().Listen(ctx, "tcp", addr) // accepted conns get keepalive
//	client, err := ln.Accept()
//	err = k.ApplyUserTimeout(client.(*net.TCPConn)) // and TCP_USER_TIMEOUT
//
// Linux only: TCP_USER_TIMEOUT and /proc/net/tcp are Linux interfaces.
package netx

import (
	"fmt"
	"math"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// KeepAlive is the dead-peer detection of one side's connections.
type KeepAlive struct {
	// Idle is how long a connection is idle before the first probe; rounded up to whole
	// seconds. 0 disables keepalive (and Interval and Count are ignored).
	Idle time.Duration
	// Interval is the time between unanswered probes, rounded up to whole seconds; 0 means
	// 15s (as net.KeepAliveConfig), negative leaves the socket's current value.
	Interval time.Duration
	// Count is the number of unanswered probes after which the kernel drops the
	// connection; 0 means 9 (as net.KeepAliveConfig), negative leaves the current value.
	Count int
	// UserTimeout is TCP_USER_TIMEOUT: how long sent data may stay unacknowledged (and,
	// with keepalive, how long probes may go unanswered) before the kernel drops the
	// connection; rounded up to milliseconds. 0 leaves the kernel default (off). It is
	// what ends a connection to a peer that vanished while pgfront was sending to it.
	UserTimeout time.Duration
}

// config is k as the net package's keepalive configuration. Disabled keepalive leaves the
// timings alone and only clears SO_KEEPALIVE.
func (k KeepAlive) config() net.KeepAliveConfig {
	if k.Idle <= 0 {
		return net.KeepAliveConfig{Enable: false, Idle: -1, Interval: -1, Count: -1}
	}
	return net.KeepAliveConfig{Enable: true, Idle: k.Idle, Interval: k.Interval, Count: k.Count}
}

// Apply sets k's keepalive options and TCP_USER_TIMEOUT on c. Use it on accepted
// connections (Go enables a default 15s keepalive on them, which Apply replaces).
func (k KeepAlive) Apply(c *net.TCPConn) error {
	if err := c.SetKeepAliveConfig(k.config()); err != nil {
		return fmt.Errorf("setting keepalive: %w", err)
	}
	if k.UserTimeout <= 0 {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("setting TCP_USER_TIMEOUT: %w", err)
	}
	return setUserTimeout(rc, k.UserTimeout)
}

// ListenConfig returns a listen configuration whose accepted connections get k's keepalive
// options from the net package (instead of its default 15s keepalive, set and then replaced:
// four system calls per connection saved). TCP_USER_TIMEOUT is not inherited from a listener
// on every kernel: set it with ApplyUserTimeout.
func (k KeepAlive) ListenConfig() net.ListenConfig {
	lc := net.ListenConfig{KeepAliveConfig: k.config()}
	if !lc.KeepAliveConfig.Enable {
		lc.KeepAlive = -1
	}
	return lc
}

// ApplyUserTimeout sets TCP_USER_TIMEOUT on c, if k has one.
func (k KeepAlive) ApplyUserTimeout(c *net.TCPConn) error {
	if k.UserTimeout <= 0 {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("setting TCP_USER_TIMEOUT: %w", err)
	}
	return setUserTimeout(rc, k.UserTimeout)
}

// Dialer returns a dialer with the given connect timeout (0 = none but the context's) whose
// TCP connections get k's options: keepalive through the dialer's KeepAliveConfig, and
// TCP_USER_TIMEOUT on the socket before it connects.
func (k KeepAlive) Dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAliveConfig: k.config()}
	if !d.KeepAliveConfig.Enable {
		d.KeepAlive = -1 // otherwise the net package enables its default keepalive
	}
	if k.UserTimeout > 0 {
		ut := k.UserTimeout
		d.Control = func(network, _ string, rc syscall.RawConn) error {
			switch network {
			case "tcp", "tcp4", "tcp6":
				return setUserTimeout(rc, ut)
			}
			return nil
		}
	}
	return d
}

func setUserTimeout(rc syscall.RawConn, d time.Duration) error {
	ms := min((d+time.Millisecond-1)/time.Millisecond, math.MaxInt32)
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(ms))
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("setting TCP_USER_TIMEOUT: %w", err)
	}
	return nil
}
