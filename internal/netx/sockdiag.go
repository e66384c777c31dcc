package netx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Where ReadTCPSockets read the table from.
const (
	SourceSockDiag = "sock_diag"
	SourceProc     = "proc"
)

// ReadTCPSockets appends every TCP socket (IPv4 and IPv6) of this network namespace to dst,
// read through sock_diag (netlink INET_DIAG), or from /proc/self/net/tcp{,6} when netlink is
// denied or unavailable. It reports which source it used: "sock_diag" or "proc".
//
// Addresses are as the kernel reports them: a dual-stack socket talking IPv4 is listed with
// IPv4-mapped addresses; callers normalise with Unmap. Like OwnSockets, the table is read in several
// pieces while it changes, so a socket opened or closed meanwhile may be missing or, rarely,
// listed twice.
//
// With 40,000 sockets in the namespace a call costs about 20 ms through sock_diag, nearly
// all of it in the kernel, and about 80 ms through /proc (BenchmarkReadTCPSockets40k). Pass
// the previous result as dst to reuse its memory: sock_diag then allocates nothing.
func ReadTCPSockets(dst []Socket) ([]Socket, string, error) {
	n := len(dst)
	socks, diagErr := readTCPSocketsDiag(dst)
	if diagErr == nil {
		return socks, SourceSockDiag, nil
	}
	// Netlink denied (EPERM, EACCES under seccomp or a restricted container), absent
	// (EPROTONOSUPPORT), or failing for any other reason: /proc has the same table.
	socks, procErr := readTCPSocketsProc(socks[:n])
	if procErr != nil {
		return socks[:n], "", fmt.Errorf("reading tcp sockets: sock_diag: %w; proc: %w", diagErr, procErr)
	}
	return socks, SourceProc, nil
}

// readTCPSocketsProc appends the sockets of /proc/self/net/tcp and tcp6 (which a kernel
// without IPv6 does not have) to dst.
func readTCPSocketsProc(dst []Socket) ([]Socket, error) {
	for _, tab := range []struct {
		path string
		v6   bool
	}{{"/proc/self/net/tcp", false}, {"/proc/self/net/tcp6", true}} {
		f, err := os.Open(tab.path)
		if err != nil {
			if tab.v6 && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return dst, fmt.Errorf("opening %s: %w", tab.path, err)
		}
		dst, err = parseProcNetTCP(f, tab.v6, nil, dst)
		f.Close()
		if err != nil {
			return dst, fmt.Errorf("reading %s: %w", tab.path, err)
		}
	}
	return dst, nil
}

// The netlink sock_diag wire format (include/uapi/linux/inet_diag.h). x/sys/unix has the
// constants but not these structs. vishvananda/netlink's SocketDiagTCP asks the kernel for
// tcp_info on every socket and allocates three objects per socket: with 40,000 sockets it
// took 29 ms and 18 MB per call, against 20 ms and nothing for the dump here.
const (
	sizeofInetDiagReqV2 = 56 // family, protocol, ext, pad, states u32, sockid (48)
	sizeofInetDiagMsg   = 72 // family, state, timer, retrans, sockid (48), expires, rqueue, wqueue, uid, inode

	// The kernel sends at most 32 KiB per read of a dump (netlink_recvmsg caps
	// max_recvmsg_len); a bigger buffer is never truncated.
	diagBufSize = 64 << 10

	allTCPStates = 0xffffffff // a bit per state: all of them, request sockets included
)

// errDumpInterrupted means the kernel flagged a dump as inconsistent (NLM_F_DUMP_INTR):
// the table changed in a way the dump could not follow.
var errDumpInterrupted = errors.New("netlink dump interrupted")

var (
	diagBufs = sync.Pool{New: func() any { b := make([]byte, diagBufSize); return &b }}
	diagSeq  atomic.Uint32
)

// readTCPSocketsDiag appends the TCP sockets of both families to dst through one netlink
// socket. On error dst's original elements are kept and the rest is undefined.
func readTCPSocketsDiag(dst []Socket) ([]Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return dst, fmt.Errorf("opening netlink socket: %w", err)
	}
	defer unix.Close(fd)
	// A dump is answered at once; the timeout only bounds a kernel that never finishes.
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return dst, fmt.Errorf("setting netlink receive timeout: %w", err)
	}
	bufp := diagBufs.Get().(*[]byte)
	defer diagBufs.Put(bufp)

	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		n := len(dst)
		dst, err = dumpTCP(fd, family, *bufp, dst)
		if errors.Is(err, errDumpInterrupted) {
			// Once more; a second interrupted dump is still a fair picture of a table
			// that is changing anyway.
			dst, err = dumpTCP(fd, family, *bufp, dst[:n])
			if errors.Is(err, errDumpInterrupted) {
				err = nil
			}
		}
		if err != nil {
			return dst, fmt.Errorf("dumping tcp sockets (family %d): %w", family, err)
		}
	}
	return dst, nil
}

// dumpTCP sends one SOCK_DIAG_BY_FAMILY dump request for family and appends the answer.
func dumpTCP(fd int, family uint8, buf []byte, dst []Socket) ([]Socket, error) {
	seq := diagSeq.Add(1)
	var req [unix.SizeofNlMsghdr + sizeofInetDiagReqV2]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	// req[12:16], the port id: 0, the kernel fills it in.
	r := req[unix.SizeofNlMsghdr:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	// r[2] idiag_ext 0: no extensions (tcp_info etc.), only the base message.
	ne.PutUint32(r[4:], allTCPStates)
	// An unconnected netlink socket sends to the kernel.
	if _, err := unix.Write(fd, req[:]); err != nil {
		return dst, fmt.Errorf("sending dump request: %w", err)
	}
	interrupted := false
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return dst, fmt.Errorf("reading dump: %w", err)
		}
		var done, intr bool
		dst, done, intr, err = parseDiagMessages(buf[:n], seq, dst)
		interrupted = interrupted || intr
		if err != nil {
			return dst, err
		}
		if done {
			break
		}
	}
	if interrupted {
		return dst, errDumpInterrupted
	}
	return dst, nil
}

// parseDiagMessages appends the sockets of the inet_diag messages in b (one read of a dump
// answering request seq) to dst. done is set by the end of the dump; intr by a message the
// kernel flagged as part of an inconsistent dump.
func parseDiagMessages(b []byte, seq uint32, dst []Socket) (_ []Socket, done, intr bool, _ error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		msgLen := ne.Uint32(b[0:])
		typ := ne.Uint16(b[4:])
		flags := ne.Uint16(b[6:])
		msgSeq := ne.Uint32(b[8:])
		if msgLen < unix.SizeofNlMsghdr || uint64(msgLen) > uint64(len(b)) {
			return dst, false, intr, fmt.Errorf("malformed netlink message: length %d of %d bytes", msgLen, len(b))
		}
		data := b[unix.SizeofNlMsghdr:msgLen]
		// Messages are padded to 4 bytes; the last one of a read may not be.
		b = b[min(uint64(len(b)), (uint64(msgLen)+3)&^3):]
		if msgSeq != seq {
			continue // not an answer to this request
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			intr = true
		}
		switch typ {
		case unix.NLMSG_DONE:
			// The dump's status: 0, or a negative errno when it failed part-way.
			if len(data) >= 4 {
				if errno := int32(ne.Uint32(data)); errno < 0 {
					return dst, true, intr, fmt.Errorf("dump failed: %w", unix.Errno(-errno))
				}
			}
			return dst, true, intr, nil
		case unix.NLMSG_ERROR:
			if len(data) < 4 {
				return dst, true, intr, errors.New("malformed netlink error message")
			}
			if errno := int32(ne.Uint32(data)); errno < 0 {
				return dst, true, intr, unix.Errno(-errno)
			}
			return dst, true, intr, nil // an acknowledgement: no error, nothing more comes
		case unix.SOCK_DIAG_BY_FAMILY:
			s, err := parseInetDiagMsg(data)
			if err != nil {
				return dst, false, intr, err
			}
			dst = append(dst, s)
		}
	}
	return dst, false, intr, nil
}

// parseInetDiagMsg decodes one struct inet_diag_msg. Ports and addresses are in network
// byte order, the rest in the machine's.
func parseInetDiagMsg(m []byte) (Socket, error) {
	if len(m) < sizeofInetDiagMsg {
		return Socket{}, fmt.Errorf("short inet_diag message: %d bytes", len(m))
	}
	var s Socket
	s.State = TCPState(m[1])
	sport := binary.BigEndian.Uint16(m[4:])
	dport := binary.BigEndian.Uint16(m[6:])
	switch m[0] {
	case unix.AF_INET:
		s.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m[8:12])), sport)
		s.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m[24:28])), dport)
	case unix.AF_INET6:
		s.Local = netip.AddrPortFrom(netip.AddrFrom16([16]byte(m[8:24])), sport)
		s.Remote = netip.AddrPortFrom(netip.AddrFrom16([16]byte(m[24:40])), dport)
	default:
		return Socket{}, fmt.Errorf("inet_diag message of family %d", m[0])
	}
	s.Inode = uint64(binary.NativeEndian.Uint32(m[68:]))
	return s, nil
}
