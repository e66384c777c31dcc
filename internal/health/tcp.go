package health

import (
	"context"
	"fmt"
	"net"
	"time"
)

// TCPChecker checks that a server accepts TCP connections: it connects, then closes. It
// learns no role. Its methods are safe for concurrent use.
type TCPChecker struct {
	addr string
}

var _ Checker = (*TCPChecker)(nil)

// NewTCP returns a checker that connects to addr (host:port).
func NewTCP(addr string) *TCPChecker { return &TCPChecker{addr: addr} }

// Check connects once, bounded by ctx.
func (c *TCPChecker) Check(ctx context.Context) Observation {
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return failed(fmt.Errorf("connecting to %s: %w", c.addr, err), time.Since(start))
	}
	_ = conn.Close() // nothing was sent: the connection's fate is not the check's
	return Observation{OK: true, LagSeconds: -1, Duration: time.Since(start)}
}

// Close does nothing: no connection is kept.
func (c *TCPChecker) Close() error { return nil }
