package frontend

import (
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// BenchmarkLoginChurn opens a session, logs in (scripted server), and leaves with Terminate,
// b.N times: what a connection costs pgfront under churn (allocations include the test's
// own client and server ends).
func BenchmarkLoginChurn(b *testing.B) {
	ln := fakeServer(b)
	f := newTestFrontend(b, ln.Addr().String())
	addr := f.Addr("rw").String()
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fe := pgproto3.NewFrontend(c, c)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "u"}})
		if err := fe.Flush(); err != nil {
			b.Fatal(err)
		}
		for {
			m, err := fe.Receive()
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := m.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		fe.Send(&pgproto3.Terminate{})
		_ = fe.Flush()
		_, _ = c.Read(make([]byte, 1)) // EOF once pgfront closed
		_ = c.Close()
	}
}
