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
		fe := startup(b, c, map[string]string{"user": "u"})
		receiveUntil[*pgproto3.ReadyForQuery](b, fe)
		fe.Send(&pgproto3.Terminate{})
		_ = fe.Flush()
		_, _ = c.Read(make([]byte, 1)) // EOF once pgfront closed
		_ = c.Close()
	}
}
