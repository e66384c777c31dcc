package handover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Listener kinds.
const (
	KindRoute = "route"
	KindAdmin = "admin"
)

const (
	protoName    = "pgfront-handover"
	protoVersion = 1

	// maxMessage bounds one message's JSON; a longer packet is refused unread.
	maxMessage = 64 << 10
	// MaxListeners is the most listeners one hand-over carries: the kernel passes at most
	// SCM_MAX_FD (253) descriptors in one message.
	MaxListeners = 253

	// ioTimeout bounds every read and write but the server's wait for "ready".
	ioTimeout = 10 * time.Second
	// defaultReadyTimeout bounds how long the old process waits for the new one to serve.
	defaultReadyTimeout = 30 * time.Second
)

// Message types.
const (
	msgTake   = "take"
	msgOffer  = "offer"
	msgRefuse = "refuse"
	msgReady  = "ready"
	msgAck    = "ack"
)

var (
	// ErrNoPeer is returned by Take when no process serves the path (no socket file, or
	// nothing listening on it): the caller binds its listeners fresh.
	ErrNoPeer = errors.New("no process serves the hand-over socket")
	// ErrVersion is returned when the peer speaks another protocol version.
	ErrVersion = errors.New("hand-over protocol version mismatch")
	// ErrRefused is returned by Take when the old process refused the request.
	ErrRefused = errors.New("hand-over refused by the old process")
	// ErrInUse is returned by Serve when another live process serves the path.
	ErrInUse = errors.New("another process serves the hand-over socket")
	// ErrPeerUID is returned when the peer runs as another user than this process (and not
	// as root).
	ErrPeerUID = errors.New("hand-over peer runs as another user")
)

// message is every message of the protocol; Type says which fields are set.
type message struct {
	Proto     string        `json:"proto"`
	Version   int           `json:"version"`
	Type      string        `json:"type"`
	PID       int           `json:"pid,omitempty"`
	Listeners []description `json:"listeners,omitempty"` // offer only
	Error     string        `json:"error,omitempty"`     // refuse only
}

// description describes the listener whose descriptor has the same index in the offer's
// SCM_RIGHTS.
type description struct {
	Kind   string `json:"kind"`
	Name   string `json:"name,omitempty"`
	Config string `json:"config"`
}

// newMessage returns a message of type typ in this process's protocol version.
func newMessage(typ string) message {
	return message{Proto: protoName, Version: protoVersion, Type: typ, PID: os.Getpid()}
}

// encodeMessage returns m as JSON, refusing what the peer would refuse.
func encodeMessage(m message) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %s message: %w", m.Type, err)
	}
	if len(b) > maxMessage {
		return nil, fmt.Errorf("encoding %s message: %d bytes, over the %d byte limit", m.Type, len(b), maxMessage)
	}
	return b, nil
}

// decodeMessage parses one message from untrusted bytes. The protocol name and version are
// checked before anything else, so that a peer of another version gets ErrVersion rather
// than a complaint about fields it may have renamed.
func decodeMessage(b []byte) (message, error) {
	if len(b) > maxMessage {
		return message{}, fmt.Errorf("decoding message: %d bytes, over the %d byte limit", len(b), maxMessage)
	}
	var env struct {
		Proto   string `json:"proto"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return message{}, fmt.Errorf("decoding message: %w", err)
	}
	if env.Proto != protoName {
		return message{}, fmt.Errorf("decoding message: protocol %q, want %q", env.Proto, protoName)
	}
	if env.Version != protoVersion {
		return message{}, fmt.Errorf("%w: the peer speaks version %d, this process speaks version %d",
			ErrVersion, env.Version, protoVersion)
	}
	var m message
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return message{}, fmt.Errorf("decoding message: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return message{}, errors.New("decoding message: data after the JSON object")
	}
	if len(m.Listeners) == 0 {
		m.Listeners = nil // "[]" and no field mean the same
	}
	if err := m.validate(); err != nil {
		return message{}, err
	}
	return m, nil
}

// validate checks what a well-formed message of m's type holds.
func (m message) validate() error {
	switch m.Type {
	case msgTake, msgReady, msgAck, msgRefuse:
		if len(m.Listeners) > 0 {
			return fmt.Errorf("checking %s message: it carries listeners", m.Type)
		}
	case msgOffer:
		if len(m.Listeners) > MaxListeners {
			return fmt.Errorf("checking offer: %d listeners, over the limit of %d", len(m.Listeners), MaxListeners)
		}
		for i, d := range m.Listeners {
			if err := d.validate(); err != nil {
				return fmt.Errorf("checking offer: listener %d: %w", i, err)
			}
		}
	default:
		return fmt.Errorf("checking message: unknown type %q", m.Type)
	}
	if m.Error != "" && m.Type != msgRefuse {
		return fmt.Errorf("checking %s message: it carries an error", m.Type)
	}
	return nil
}

func (d description) validate() error {
	switch d.Kind {
	case KindRoute:
	case KindAdmin:
		if d.Name != "" {
			return fmt.Errorf("admin listener named %q", d.Name)
		}
	default:
		return fmt.Errorf("unknown kind %q", d.Kind)
	}
	if d.Config == "" {
		return errors.New("no configured address")
	}
	return nil
}

// writeMessage sends m with fds in one packet. The caller sets the deadline.
func writeMessage(c *net.UnixConn, m message, fds []int) error {
	b, err := encodeMessage(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("sending %s message: %w", m.Type, err)
	}
	return nil
}

// readMessage receives one packet and returns its message and the descriptors that came
// with it, which the caller owns (they are close-on-exec). On error no descriptor is left
// open. The caller sets the deadline.
func readMessage(c *net.UnixConn) (message, []int, error) {
	buf := make([]byte, maxMessage+1)
	oob := make([]byte, unix.CmsgSpace(MaxListeners*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	// Collect the descriptors before looking at anything else, so none is forgotten.
	fds, ferr := parseRights(oob[:oobn])
	fail := func(err error) (message, []int, error) {
		closeFDs(fds)
		return message{}, nil, err
	}
	switch {
	case err != nil:
		return fail(fmt.Errorf("receiving message: %w", err))
	case ferr != nil:
		return fail(ferr)
	case flags&unix.MSG_TRUNC != 0 || n > maxMessage:
		return fail(fmt.Errorf("receiving message: over the %d byte limit", maxMessage))
	case flags&unix.MSG_CTRUNC != 0:
		return fail(fmt.Errorf("receiving message: over %d descriptors", MaxListeners))
	case n == 0:
		// An empty packet is a SOCK_SEQPACKET peer's end: no message is ever empty.
		return fail(fmt.Errorf("receiving message: %w", io.EOF))
	}
	m, err := decodeMessage(buf[:n])
	if err != nil {
		return fail(err)
	}
	return m, fds, nil
}

// parseRights returns the descriptors of every SCM_RIGHTS control message in oob. The kernel
// writes well-formed control messages, truncating whole descriptors only (MSG_CTRUNC).
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parsing control messages: %w", err)
	}
	var fds []int
	var firstErr error
	for i := range cmsgs {
		if cmsgs[i].Header.Level != unix.SOL_SOCKET || cmsgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&cmsgs[i])
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("parsing SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	if firstErr != nil {
		closeFDs(fds)
		return nil, firstErr
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// peerCred returns the credentials of c's peer, refusing a peer that runs as another user
// than this process, unless it is root.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", err)
	}
	if credErr != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", credErr)
	}
	if uid := os.Getuid(); cred.Uid != uint32(uid) && cred.Uid != 0 {
		return nil, fmt.Errorf("%w: pid %d runs as uid %d, this process as uid %d", ErrPeerUID, cred.Pid, cred.Uid, uid)
	}
	return cred, nil
}
