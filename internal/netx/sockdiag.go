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
// With 40,000 sockets in the namespace a call costs about 30 ms through sock_diag, nearly
// all of it in the kernel walking its tables (45 ms on a kernel that needs a walk per
// family), and about 100 ms through /proc (BenchmarkReadTCPSockets40k). Pass
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
// took 29 ms and 18 MB per call, against 20 ms and nothing for the dumps here (one per family,
// then).
const (
	sizeofInetDiagReqV2 = 56 // family, protocol, ext, pad, states u32, sockid (48)
	sizeofInetDiagReq   = 60 // family, src_len, dst_len, ext, sockid (48), states u32, dbs u32
	tcpDiagGetSock      = 18 // TCPDIAG_GETSOCK, the request of struct inet_diag_req
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

// readTCPSocketsDiag appends the TCP sockets of both families to dst through netlink: one
// dump for both (legacyRequest), or one per family. On error dst's original elements are
// kept and the rest is undefined.
func readTCPSocketsDiag(dst []Socket) ([]Socket, error) {
	bufp := diagBufs.Get().(*[]byte)
	defer diagBufs.Put(bufp)
	var legacyErr error
	if !legacyRefused.Load() {
		n := len(dst)
		req := legacyRequest()
		var err error
		if dst, err = dumpOn(req[:], *bufp, dst); err == nil {
			return dst, nil
		}
		// A kernel without the old request refuses it: one dump per family from now on. Any
		// other failure: one dump per family this time.
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) {
			legacyRefused.Store(true)
		} else {
			legacyErr = err
		}
		dst = dst[:n]
	}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := familyRequest(family)
		var err error
		if dst, err = dumpOn(req[:], *bufp, dst); err != nil {
			if legacyErr != nil {
				return dst, fmt.Errorf("dumping tcp sockets: %w; then family %d: %w", legacyErr, family, err)
			}
			return dst, fmt.Errorf("dumping tcp sockets (family %d): %w", family, err)
		}
	}
	return dst, nil
}

// dumpOn dumps req (dumpTwice) through a netlink socket of its own: a dump that failed
// part-way leaves its socket busy with it.
func dumpOn(req []byte, buf []byte, dst []Socket) ([]Socket, error) {
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
	return dumpTwice(fd, req, buf, dst)
}

// dumpTwice dumps req once more if the first dump was interrupted; a second interrupted dump
// is still a fair picture of a table that is changing anyway.
func dumpTwice(fd int, req []byte, buf []byte, dst []Socket) ([]Socket, error) {
	n := len(dst)
	dst, err := dumpTCP(fd, req, buf, dst)
	if errors.Is(err, errDumpInterrupted) {
		dst, err = dumpTCP(fd, req, buf, dst[:n])
		if errors.Is(err, errDumpInterrupted) {
			err = nil
		}
	}
	return dst, err
}

// legacyRefused is set once the kernel refused the TCPDIAG_GETSOCK request.
var legacyRefused atomic.Bool

// legacyRequest is a TCPDIAG_GETSOCK dump request (struct inet_diag_req) for every state:
// the request of before SOCK_DIAG_BY_FAMILY, which the kernel still answers, and answers for
// both families in one walk of its socket tables (it dumps family AF_UNSPEC). Each walk visits
// every socket of the namespace, TIME_WAIT ones included, and every bucket of the hash table:
// under connection churn that is most of a sample's cost, so one walk instead of two halves it.
func legacyRequest() (req [unix.SizeofNlMsghdr + sizeofInetDiagReq]byte) {
	putHeader(req[:], tcpDiagGetSock)
	r := req[unix.SizeofNlMsghdr:]
	r[0] = unix.AF_INET // idiag_family: only checked by exact-socket lookups
	binary.NativeEndian.PutUint32(r[52:], allTCPStates)
	return req
}

// familyRequest is a SOCK_DIAG_BY_FAMILY dump request (struct inet_diag_req_v2) for every state
// of one family's TCP sockets.
func familyRequest(family uint8) (req [unix.SizeofNlMsghdr + sizeofInetDiagReqV2]byte) {
	putHeader(req[:], unix.SOCK_DIAG_BY_FAMILY)
	r := req[unix.SizeofNlMsghdr:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	// r[2] idiag_ext 0: no extensions (tcp_info etc.), only the base message.
	binary.NativeEndian.PutUint32(r[4:], allTCPStates)
	return req
}

// putHeader fills req's netlink header for a dump request of type typ (the sequence number is
// dumpTCP's).
func putHeader(req []byte, typ uint16) {
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], typ)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	// req[12:16], the port id: 0, the kernel fills it in.
}

// dumpTCP sends a dump request (its sequence number set here) and appends the answer.
func dumpTCP(fd int, req []byte, buf []byte, dst []Socket) ([]Socket, error) {
	seq := diagSeq.Add(1)
	binary.NativeEndian.PutUint32(req[8:], seq)
	// An unconnected netlink socket sends to the kernel.
	if _, err := unix.Write(fd, req); err != nil {
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
		case unix.SOCK_DIAG_BY_FAMILY, tcpDiagGetSock: // the answer has the request's type
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
