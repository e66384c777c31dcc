package netx

import (
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw socket calls for code that owns sockets outside Go's poller (the relay's event loops).
// The sockets are non-blocking, so none of these can block; made as raw system calls, they
// never tell the scheduler about a blocking call (which wakes the runtime's monitor thread
// when the process was idle: see RawIO).

func rawErrno(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// RawAccept accepts one connection on the non-blocking listening socket lfd: a non-blocking,
// close-on-exec socket, and the peer's address (the zero AddrPort if the kernel gave none
// that is TCP/IP). EAGAIN when none is waiting.
func RawAccept(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	for {
		l := uint32(unix.SizeofSockaddrAny)
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)),
			unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, netip.AddrPort{}, e
		}
		peer, _ := sockaddrAddrPort(&rsa)
		return int(r), peer, nil
	}
}

// RawSetsockoptInt sets an integer socket option.
func RawSetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	return rawErrno(e)
}

// RawSockError returns and clears a socket's pending error (SO_ERROR): nil once a
// non-blocking connect succeeded.
func RawSockError(fd int) error {
	var v int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return rawErrno(unix.Errno(v))
}

// RawSocket creates a non-blocking, close-on-exec TCP socket for addr's family and lets setup
// set its options (nil: none).
func RawSocket(addr netip.AddrPort, setup func(fd int) error) (int, error) {
	family := unix.AF_INET
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if e != 0 {
		return -1, fmt.Errorf("socket: %w", e)
	}
	fd := int(r)
	if setup != nil {
		if err := setup(fd); err != nil {
			_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
			return -1, err
		}
	}
	return fd, nil
}

// RawConnect starts connecting a socket from RawSocket to addr (no zone: a link-local
// address with one is refused). nil: connecting (wait for the socket to be writable, then
// RawSockError) or already connected.
func RawConnect(fd int, addr netip.AddrPort) error {
	if addr.Addr().Zone() != "" {
		return fmt.Errorf("connect: %s has a zone", addr)
	}
	var e unix.Errno
	if !addr.Addr().Is6() || addr.Addr().Is4In6() {
		var s4 unix.RawSockaddrInet4
		s4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s4.Port))[:], addr.Port())
		s4.Addr = addr.Addr().Unmap().As4()
		e = connect(fd, unsafe.Pointer(&s4), unix.SizeofSockaddrInet4)
	} else {
		var s6 unix.RawSockaddrInet6
		s6.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&s6.Port))[:], addr.Port())
		s6.Addr = addr.Addr().As16()
		e = connect(fd, unsafe.Pointer(&s6), unix.SizeofSockaddrInet6)
	}
	if e != 0 {
		return fmt.Errorf("connect: %w", e)
	}
	return nil
}

// connect starts a non-blocking connect: 0 when it is under way or done.
func connect(fd int, sa unsafe.Pointer, salen uintptr) unix.Errno {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), salen)
	for e == unix.EINTR {
		// Interrupted, the connect goes on: asking again says where it is.
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), salen)
		if e == unix.EALREADY || e == unix.EISCONN {
			return 0
		}
	}
	if e == unix.EINPROGRESS {
		return 0
	}
	return e
}

// DupFD returns a close-on-exec duplicate of the socket of c, a syscall.Conn (a net.TCPConn,
// a net.TCPListener), for code that owns it outside Go's poller. The duplicate shares the
// open file with c: the same socket, non-blocking as c's.
func DupFD(c any) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no file descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		r, _, e := unix.RawSyscall(unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, 0)
		nfd, derr = int(r), rawErrno(e)
	}); err != nil {
		return -1, err
	}
	return nfd, derr
}

// RawLocalAddr returns a TCP socket's local address (getsockname as a raw system call:
// x/sys/unix's may make one the scheduler is told about).
func RawLocalAddr(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	l := uint32(unix.SizeofSockaddrAny)
	_, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return sockaddrAddrPort(&rsa)
}

// sockaddrAddrPort is an IPv4 or IPv6 socket address as an AddrPort.
func sockaddrAddrPort(rsa *unix.RawSockaddrAny) (netip.AddrPort, error) {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&a.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), port), nil
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&a.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), port), nil
	}
	return netip.AddrPort{}, fmt.Errorf("address family %d is not TCP/IP", rsa.Addr.Family)
}

// ApplyFD sets what Dialer, ListenConfig and Apply set on a connection (keepalive, its
// timings and TCP_USER_TIMEOUT) and TCP_NODELAY, as the net package does, on a socket
// outside Go's poller.
func (k KeepAlive) ApplyFD(fd int) error {
	set := func(level, opt, v int, name string) error {
		if err := RawSetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
		return nil
	}
	if err := set(unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, "TCP_NODELAY"); err != nil {
		return err
	}
	if k.Idle <= 0 {
		if err := set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0, "SO_KEEPALIVE"); err != nil {
			return err
		}
	} else {
		if err := set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"); err != nil {
			return err
		}
		if err := set(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, seconds(k.Idle), "TCP_KEEPIDLE"); err != nil {
			return err
		}
		interval := k.Interval
		if interval == 0 {
			interval = 15 * time.Second
		}
		if interval > 0 {
			if err := set(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, seconds(interval), "TCP_KEEPINTVL"); err != nil {
				return err
			}
		}
		count := k.Count
		if count == 0 {
			count = 9
		}
		if count > 0 {
			if err := set(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, count, "TCP_KEEPCNT"); err != nil {
				return err
			}
		}
	}
	if k.UserTimeout > 0 {
		ms := min((k.UserTimeout+time.Millisecond-1)/time.Millisecond, math.MaxInt32)
		return set(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(ms), "TCP_USER_TIMEOUT")
	}
	return nil
}

// seconds rounds d up to whole seconds, as the net package does for keepalive.
func seconds(d time.Duration) int {
	return int(min((d+time.Second-1)/time.Second, math.MaxInt32))
}

// FDConn returns a net.Conn on the socket fd and takes fd (closed in any case; the net.Conn
// has its own duplicate). Nothing else may be using fd: the socket is in blocking mode for a
// moment, so that os.NewFile does not add fd to Go's poller (net.FileConn adds its duplicate
// and makes the socket non-blocking again).
func FDConn(fd int) (net.Conn, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f)
	_ = f.Close()
	return c, err
}
