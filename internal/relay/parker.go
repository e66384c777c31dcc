package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Parker holds sessions that have been idle for a while without any goroutine: their two
// sockets wait in one shared epoll set, and the first byte (or FIN) from either side, the
// idle bound, or End brings the copiers back. An idle session then costs its sockets and a
// few hundred bytes of heap instead of two goroutine stacks. Parker is safe for concurrent
// use; Close stops it.
type Parker struct {
	epfd   int
	wakefd int // eventfd that stops the wait loop
	done   chan struct{}

	mu struct {
		sync.Mutex
		byFD   map[int32]*Session
		closed bool
	}
}

// NewParker starts a parker's wait loop.
func NewParker() (*Parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll set: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("adding eventfd: %w", err)
	}
	p := &Parker{epfd: epfd, wakefd: wakefd, done: make(chan struct{})}
	p.mu.byFD = make(map[int32]*Session)
	go p.wait()
	return p, nil
}

// Close stops the wait loop; parked sessions must have been ended (unparked) first.
func (p *Parker) Close() {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return
	}
	p.mu.closed = true
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(p.wakefd, one[:])
	<-p.done
	unix.Close(p.epfd)
	unix.Close(p.wakefd)
}

// wait is the parker's goroutine: it blocks in epoll_wait (an OS thread of its own) and
// hands each ready session back to its copiers.
func (p *Parker) wait() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(p.wakefd) {
				return
			}
			p.mu.Lock()
			s := p.mu.byFD[ev.Fd]
			p.mu.Unlock()
			if s != nil {
				s.unpark()
			}
		}
	}
}

// add watches both of s's sockets (level-triggered, one shot): data already waiting is
// reported at once, so nothing that arrived while parking is missed.
func (p *Parker) add(s *Session, fds [2]int32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return errors.New("parker closed")
	}
	for i, fd := range fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: fd}
		if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			if i == 1 {
				_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fds[0]), nil)
				delete(p.mu.byFD, fds[0])
			}
			return err
		}
		p.mu.byFD[fd] = s
	}
	return nil
}

// remove stops watching s's sockets.
func (p *Parker) remove(fds [2]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fd := range fds {
		if _, ok := p.mu.byFD[fd]; ok {
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
			delete(p.mu.byFD, fd)
		}
	}
}

// Parked is the number of sessions parked now.
func (p *Parker) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.byFD) / 2
}

// connFD returns a connection's file descriptor, or false for conns without one (TLS).
func connFD(c net.Conn) (int32, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var fd int32
	if rc.Control(func(f uintptr) { fd = int32(f) }) != nil {
		return 0, false
	}
	return fd, true
}
