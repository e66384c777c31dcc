package netx

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TCPState is a TCP socket state, numbered as the Linux kernel numbers them (the st column
// of /proc/net/tcp, sock_diag's idiag_state).
type TCPState uint8

// The kernel's TCP states (include/net/tcp_states.h).
const (
	TCPEstablished TCPState = iota + 1
	TCPSynSent
	TCPSynRecv
	TCPFinWait1
	TCPFinWait2
	TCPTimeWait
	TCPClose
	TCPCloseWait
	TCPLastAck
	TCPListen
	TCPClosing
	TCPNewSynRecv
)

var stateNames = [...]string{
	TCPEstablished: "ESTABLISHED",
	TCPSynSent:     "SYN_SENT",
	TCPSynRecv:     "SYN_RECV",
	TCPFinWait1:    "FIN_WAIT1",
	TCPFinWait2:    "FIN_WAIT2",
	TCPTimeWait:    "TIME_WAIT",
	TCPClose:       "CLOSE",
	TCPCloseWait:   "CLOSE_WAIT",
	TCPLastAck:     "LAST_ACK",
	TCPListen:      "LISTEN",
	TCPClosing:     "CLOSING",
	TCPNewSynRecv:  "NEW_SYN_RECV",
}

// String returns the kernel's name of the state ("ESTABLISHED", "CLOSE_WAIT", ...), or
// "TCPState(N)" for a number the kernel does not define.
func (s TCPState) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return "TCPState(" + strconv.Itoa(int(s)) + ")"
}

// Socket is one TCP socket as the kernel lists it.
type Socket struct {
	Local, Remote netip.AddrPort // as the kernel has them: IPv4-mapped addresses stay mapped
	State         TCPState
	Inode         uint64 // 0 for sockets no process holds (TIME_WAIT, orphans)
}

// OwnSockets returns the TCP sockets (IPv4 and IPv6) of this process's network namespace
// that this process holds open: those whose inode is behind one of its file descriptors
// (/proc/self/fd/N -> "socket:[inode]").
//
// Sockets no process holds have inode 0 and are left out: TIME_WAIT, and orphans, the
// sockets the process has closed while the kernel still finishes the connection (FIN_WAIT1,
// FIN_WAIT2, LAST_ACK, CLOSING after close()). A half-closed session that still holds its
// sockets (after CloseWrite, or with the peer's FIN read) is listed.
//
// The result is a snapshot taken in two reads (descriptors, then the kernel's table), not
// atomically: a socket opened or closed in between may be missing. The cost grows with the
// number of TCP sockets in the namespace, not only this process's.
func OwnSockets() ([]Socket, error) {
	inodes, err := ownSocketInodes()
	if err != nil {
		return nil, err
	}
	var socks []Socket
	// The kernel serves the table in several reads and resumes each by position, so a table
	// that changes meanwhile can repeat a socket: keep each inode once.
	seen := make(map[uint64]bool)
	keep := func(s Socket) bool {
		_, ok := inodes[s.Inode]
		if !ok || s.Inode == 0 || seen[s.Inode] {
			return false
		}
		seen[s.Inode] = true
		return true
	}
	for _, tab := range []struct {
		path string
		v6   bool
	}{{"/proc/self/net/tcp", false}, {"/proc/self/net/tcp6", true}} {
		f, err := os.Open(tab.path)
		if err != nil {
			if tab.v6 && errors.Is(err, fs.ErrNotExist) { // kernel without IPv6
				continue
			}
			return nil, fmt.Errorf("reading own sockets: %w", err)
		}
		socks, err = parseProcNetTCP(f, tab.v6, keep, socks)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", tab.path, err)
		}
	}
	return socks, nil
}

// ownSocketInodes returns the inodes of the sockets behind this process's descriptors.
func ownSocketInodes() (map[uint64]struct{}, error) {
	const dir = "/proc/self/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading own sockets: %w", err)
	}
	inodes := make(map[uint64]struct{}, len(ents))
	for _, e := range ents {
		// Errors are descriptors closed since ReadDir (including ReadDir's own): skip them.
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		rest, ok := strings.CutPrefix(target, "socket:[")
		if !ok {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 64); err == nil {
			inodes[ino] = struct{}{}
		}
	}
	return inodes, nil
}

// ParseProcNetTCP parses the text of /proc/net/tcp (v6 false) or /proc/net/tcp6 (v6 true).
// The header line is skipped; any malformed line is an error naming its line number.
//
// Addresses are written by the kernel as the hex of 32-bit words in host byte order
// (127.0.0.1 is 0100007F on little-endian machines), ports as plain hex numbers; the parser
// decodes them for the machine it runs on.
func ParseProcNetTCP(r io.Reader, v6 bool) ([]Socket, error) {
	return parseProcNetTCP(r, v6, nil, nil)
}

// parseProcNetTCP appends to dst the sockets for which keep (nil: all) returns true.
func parseProcNetTCP(r io.Reader, v6 bool, keep func(Socket) bool, dst []Socket) ([]Socket, error) {
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || (line == 1 && f[0] == "sl") {
			continue
		}
		s, err := parseLine(f, v6)
		if err != nil {
			return dst, fmt.Errorf("line %d: %w", line, err)
		}
		if keep == nil || keep(s) {
			dst = append(dst, s)
		}
	}
	if err := sc.Err(); err != nil {
		return dst, err
	}
	return dst, nil
}

// parseLine parses the fields "sl local remote st tx:rx tr:when retrnsmt uid timeout inode ...".
func parseLine(f []string, v6 bool) (Socket, error) {
	var s Socket
	if len(f) < 10 || !strings.HasSuffix(f[0], ":") {
		return s, fmt.Errorf("malformed socket line %q", strings.Join(f, " "))
	}
	var err error
	if s.Local, err = parseAddrPort(f[1], v6); err != nil {
		return s, fmt.Errorf("local address: %w", err)
	}
	if s.Remote, err = parseAddrPort(f[2], v6); err != nil {
		return s, fmt.Errorf("remote address: %w", err)
	}
	st, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return s, fmt.Errorf("state: %w", err)
	}
	s.State = TCPState(st)
	if s.Inode, err = strconv.ParseUint(f[9], 10, 64); err != nil {
		return s, fmt.Errorf("inode: %w", err)
	}
	return s, nil
}

// parseAddrPort parses "0100007F:1F90" (IPv4) or 32 hex digits and a port (IPv6).
func parseAddrPort(s string, v6 bool) (netip.AddrPort, error) {
	host, port, ok := strings.Cut(s, ":")
	words := 1
	if v6 {
		words = 4
	}
	if !ok || len(host) != 8*words || len(port) != 4 {
		return netip.AddrPort{}, fmt.Errorf("malformed address %q", s)
	}
	var b [16]byte
	for i := range words {
		w, err := strconv.ParseUint(host[8*i:8*i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("malformed address %q", s)
		}
		binary.NativeEndian.PutUint32(b[4*i:], uint32(w))
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("malformed port in %q", s)
	}
	addr := netip.AddrFrom16(b)
	if !v6 {
		addr = netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrPortFrom(addr, uint16(p)), nil
}
