package frontend

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// BenchmarkIdleSessionMemory holds b.N idle sessions through pgfront (scripted server) and
// reports the Go stack and heap they keep, per session. The bench script measures RSS against
// HAProxy; this shows where the bytes are.
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 2000
	ln := holdServer(b)
	f := newTestFrontend(b, ln.Addr().String())
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", f.Addr("rw").String())
		if err != nil {
			b.Fatal(err)
		}
		receiveUntil[*pgproto3.ReadyForQuery](b, startup(b, c, map[string]string{"user": "u"}))
		conns = append(conns, c)
	}
	// Idle sessions are parked on the event loops: measure them so, as they live.
	deadline := time.Now().Add(20 * time.Second)
	for (f.Sessions() != n || f.Parked() != n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.Parked() != n {
		b.Fatalf("%d of %d sessions parked", f.Parked(), n)
	}
	for range 4 { // each GC halves an idle goroutine's stack at most once
		runtime.GC()
	}
	runtime.ReadMemStats(&after)
	per := func(a, b uint64) string { return fmt.Sprintf("%.0f", float64(int64(a)-int64(b))/n) }
	b.ReportMetric(float64(int64(after.StackInuse)-int64(before.StackInuse))/n, "stack-B/session")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/n, "heap-B/session")
	b.Logf("goroutines %d; stack %s B/session, heap %s B/session; per session: Sys %s HeapIdle %s HeapReleased %s StackSys %s MSpanInuse %s GCSys %s OtherSys %s",
		runtime.NumGoroutine(), per(after.StackInuse, before.StackInuse), per(after.HeapInuse, before.HeapInuse),
		per(after.Sys, before.Sys), per(after.HeapIdle, before.HeapIdle), per(after.HeapReleased, before.HeapReleased),
		per(after.StackSys, before.StackSys), per(after.MSpanInuse, before.MSpanInuse), per(after.GCSys, before.GCSys), per(after.OtherSys, before.OtherSys))
	if path := os.Getenv("PGFRONT_HEAPPROFILE"); path != "" {
		if out, err := os.Create(path); err == nil {
			_ = pprof.WriteHeapProfile(out)
			_ = out.Close()
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// holdServer logs clients in and then holds their connections without a goroutine, so the
// benchmark measures pgfront's side only.
func holdServer(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	var held []net.Conn
	login := append(append(append([]byte{},
		mustEncode(&pgproto3.AuthenticationOk{})...),
		mustEncode(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})...),
		mustEncode(&pgproto3.ReadyForQuery{TxStatus: 'I'})...)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, h := range held {
					_ = h.Close()
				}
				return
			}
			// The StartupMessage is left unread: the server answers and holds the conn.
			if _, err := c.Write(login); err != nil {
				_ = c.Close()
				continue
			}
			held = append(held, c)
		}
	}()
	b.Cleanup(func() { _ = ln.Close(); <-done })
	return ln
}

func mustEncode(m pgproto3.BackendMessage) []byte {
	buf, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	return buf
}
