package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"
)

// The sslmode values ClientOptions.Mode takes, as libpq spells them.
const (
	ModeDisable    = "disable"
	ModePrefer     = "prefer"
	ModeRequire    = "require"
	ModeVerifyCA   = "verify-ca"
	ModeVerifyFull = "verify-full"
)

var (
	// ErrServerNoSSL is wrapped by Negotiate's error when the server answers 'N' (no SSL)
	// and the mode does not allow plain connections.
	ErrServerNoSSL = errors.New("server does not support SSL")
	// ErrDataAfterSSLAnswer is wrapped by Negotiate's error when bytes follow the server's
	// 'S' before the TLS handshake: something between pgfront and the server is injecting
	// plaintext (CVE-2021-23222).
	ErrDataAfterSSLAnswer = errors.New("unexpected data after the server's SSL answer")
)

// ClientOptions configures the TLS pgfront uses towards PostgreSQL servers.
type ClientOptions struct {
	// Mode is libpq's sslmode: "disable", "prefer", "require", "verify-ca" or "verify-full".
	// Unlike libpq, require never verifies the certificate, even when CAFile is set.
	Mode string
	// CAFile holds the roots for verify-ca and verify-full (required for those two; unused
	// by the others).
	CAFile string
	// CertFile and KeyFile are a client certificate for servers that demand one (both or
	// neither). They are read once, by NewClient.
	CertFile, KeyFile string
}

// Client negotiates TLS on connections to PostgreSQL servers. It never changes after
// NewClient and is safe for concurrent use.
type Client struct {
	opts  ClientOptions
	roots *x509.CertPool   // verify-ca, verify-full
	cert  *tls.Certificate // nil without a client certificate
}

// NewClient checks the options and loads the files now; an error names the file at fault.
func NewClient(o ClientOptions) (*Client, error) {
	c := &Client{opts: o}
	switch o.Mode {
	case ModeDisable, ModePrefer, ModeRequire:
	case ModeVerifyCA, ModeVerifyFull:
		if o.CAFile == "" {
			return nil, fmt.Errorf("server TLS mode %s needs a CA file to verify the server's certificate", o.Mode)
		}
		pool, err := loadPool(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("loading server CA file: %w", err)
		}
		c.roots = pool
	default:
		return nil, fmt.Errorf("server TLS mode %q is not one of disable, prefer, require, verify-ca, verify-full", o.Mode)
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("a client certificate needs both a certificate file and a key file")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate %s with key %s: %w", o.CertFile, o.KeyFile, err)
		}
		c.cert = &cert
	}
	return c, nil
}

// Mode returns the sslmode.
func (c *Client) Mode() string { return c.opts.Mode }

// ConnParams returns libpq-style connection-string parameters for the same settings
// (sslmode, sslrootcert, sslcert, sslkey, and channel_binding=prefer), for the
// pgconn-based health check. sslrootcert is given only for verify-ca and verify-full:
// libpq and pgconn would verify with it under require too, which Negotiate does not.
func (c *Client) ConnParams() map[string]string {
	p := map[string]string{"sslmode": c.opts.Mode, "channel_binding": "prefer"}
	if c.roots != nil {
		p["sslrootcert"] = c.opts.CAFile
	}
	if c.cert != nil {
		p["sslcert"] = c.opts.CertFile
		p["sslkey"] = c.opts.KeyFile
	}
	return p
}

// Negotiate runs PostgreSQL's SSLRequest on a fresh connection to addr (host:port, the host
// is the verify-full name) and returns the connection to use: a *tls.Conn after 'S', conn
// itself after 'N' when the mode allows plain (prefer), or an error (ErrServerNoSSL after
// 'N' otherwise; certificate errors name the address and mode). disable returns conn
// untouched without any SSLRequest. Unlike libpq, prefer does not reconnect without TLS when
// the server says 'S' and the handshake then fails, nor when the server answers 'E'.
//
// The answer is read with a 1-byte read, and when conn exposes its socket
// (syscall.Conn) bytes already waiting after an 'S' fail with ErrDataAfterSSLAnswer; bytes
// arriving later are fed to the TLS handshake, which rejects them.
//
// ctx bounds the exchange through conn's deadline, which is cleared before returning. conn
// stays the caller's: Negotiate never closes it, also not on error.
func (c *Client) Negotiate(ctx context.Context, conn net.Conn, addr string) (out net.Conn, retErr error) {
	if c.opts.Mode == ModeDisable {
		return conn, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("negotiating SSL with server %s: %w", addr, err)
	}
	if d, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(d); err != nil {
			return nil, fmt.Errorf("negotiating SSL with server %s: %w", addr, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() && retErr == nil {
			// ctx ended and its deadline may land after the one cleared below.
			retErr = fmt.Errorf("negotiating SSL with server %s: %w", addr, ctx.Err())
		}
		if err := conn.SetDeadline(time.Time{}); err != nil && retErr == nil {
			retErr = fmt.Errorf("negotiating SSL with server %s: %w", addr, err)
		}
		if retErr != nil {
			out = nil
		}
	}()
	ioErr := func(doing string, err error) error {
		if cerr := contextError(ctx, err); cerr != nil {
			return fmt.Errorf("%s server %s: %w (%v)", doing, addr, cerr, err)
		}
		return fmt.Errorf("%s server %s: %w", doing, addr, err)
	}

	req, err := (&pgproto3.SSLRequest{}).Encode(nil)
	if err != nil {
		return nil, fmt.Errorf("encoding SSLRequest: %w", err)
	}
	if _, err := conn.Write(req); err != nil {
		return nil, ioErr("sending SSLRequest to", err)
	}
	var answer [1]byte // exactly one byte: nothing after it may be read as plaintext
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return nil, ioErr("reading the SSL answer of", err)
	}
	switch answer[0] {
	case 'S':
	case 'N':
		if c.opts.Mode == ModePrefer {
			return conn, nil
		}
		return nil, fmt.Errorf("server at %s does not support SSL, but server_tls is %s: %w", addr, c.opts.Mode, ErrServerNoSSL)
	case 'E':
		// A server too old for SSLRequest, or one failing at start-up. The message is not
		// read: it came unencrypted and unauthenticated (CVE-2024-10977).
		return nil, fmt.Errorf("server at %s answered SSLRequest with an error message", addr)
	default:
		return nil, fmt.Errorf("server at %s answered SSLRequest with %q, not 'S' or 'N'", addr, answer[0])
	}
	if n := pendingBytes(conn); n > 0 {
		return nil, fmt.Errorf("server at %s sent %d bytes after agreeing to SSL: %w", addr, n, ErrDataAfterSSLAnswer)
	}
	tc := tls.Client(conn, c.config(host, addr))
	if err := tc.Handshake(); err != nil {
		var cerr *certError
		if errors.As(err, &cerr) {
			return nil, err
		}
		return nil, ioErr(fmt.Sprintf("TLS handshake (%s) with", c.opts.Mode), err)
	}
	return tc, nil
}

// contextError returns why ctx ended if it explains ioErr: ctx's error, or
// context.DeadlineExceeded for conn's deadline (set from ctx's) firing just before ctx's own.
func contextError(ctx context.Context, ioErr error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && errors.Is(ioErr, os.ErrDeadlineExceeded) && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// config is the tls.Config for one connection to addr.
func (c *Client) config(host, addr string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,           // SNI; Go sends none for an IP address
		NextProtos: []string{ALPN}, // as libpq 17 does; older servers ignore it
		// Verification is done in VerifyConnection for every mode that verifies, so that
		// verify-ca can skip the host name and errors can name the server.
		InsecureSkipVerify: true,
	}
	if c.cert != nil {
		cfg.Certificates = []tls.Certificate{*c.cert}
	}
	switch c.opts.Mode {
	case ModeVerifyCA:
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return c.verify(cs, "", addr) }
	case ModeVerifyFull:
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return c.verify(cs, host, addr) }
	}
	return cfg
}

// verify checks the server's chain against the roots and, unless host is "", its name
// (a DNS name or an IP address).
func (c *Client) verify(cs tls.ConnectionState, host, addr string) error {
	if len(cs.PeerCertificates) == 0 {
		return &certError{addr: addr, mode: c.opts.Mode, err: errors.New("no certificate")}
	}
	opts := x509.VerifyOptions{Roots: c.roots, Intermediates: x509.NewCertPool(), DNSName: host}
	for _, ic := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return &certError{addr: addr, mode: c.opts.Mode, err: err}
	}
	return nil
}

// certError is a server certificate that failed verification; it unwraps to the x509 error
// (x509.HostnameError, x509.UnknownAuthorityError, x509.CertificateInvalidError, ...).
type certError struct {
	addr, mode string
	err        error
}

func (e *certError) Error() string {
	return fmt.Sprintf("verifying the certificate of server %s (%s): %v", e.addr, e.mode, e.err)
}

func (e *certError) Unwrap() error { return e.err }

// pendingBytes returns how many bytes are waiting in conn's socket receive queue, or 0 when
// conn does not expose its socket.
func pendingBytes(conn net.Conn) int {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = raw.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n
}

// IsVerifyError reports whether err (from Negotiate, or a TLS client of crypto/tls) is a
// server certificate that failed verification: unknown authority, wrong host name, expired.
func IsVerifyError(err error) bool {
	var ce *certError
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	return errors.As(err, &ce) || errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &hn)
}
