package frontend

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/pgwire"
)

// A cancel another process relayed is answered once its owner is known, while the server is
// still taking it: the asker (a peer with a one-second bound) is not held for the server.
func TestStartCancelAnswersAtOnce(t *testing.T) {
	srv, taken, release := slowCancelServer(t)
	f := newTestFrontend(t, srv.Addr().String())
	c := dialRW(t, f)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))

	key := pgwire.CancelKey{ProcessID: 7, Secret: "\x00\x00\x00\x09"} // serveLoggedIn's, not reissued
	done := make(chan error, 1)
	started := make(chan error, 1)
	go func() { started <- f.StartCancel(key, func(err error) { done <- err }) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("StartCancel waits for the server")
	}
	<-taken
	select {
	case err := <-done:
		t.Fatalf("done before the server closed the cancel connection: %v", err)
	default:
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	if err := f.StartCancel(pgwire.CancelKey{ProcessID: 99, Secret: "\x00\x00\x00\x01"}, nil); !errors.Is(err, ErrUnknownCancelKey) {
		t.Fatalf("unknown key: %v", err)
	}
}

// Close waits for the cancels StartCancel is still sending.
func TestCloseWaitsForStartedCancels(t *testing.T) {
	srv, taken, release := slowCancelServer(t)
	f := newTestFrontend(t, srv.Addr().String())
	c := dialRW(t, f)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
	done := make(chan struct{})
	if err := f.StartCancel(pgwire.CancelKey{ProcessID: 7, Secret: "\x00\x00\x00\x09"}, func(error) { close(done) }); err != nil {
		t.Fatal(err)
	}
	<-taken
	closed := make(chan struct{})
	go func() { f.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a cancel was still being sent")
	case <-time.After(100 * time.Millisecond):
	}
	release()
	<-closed
	select {
	case <-done:
	default:
		t.Fatal("Close returned before the cancel's done")
	}
}

// slowCancelServer is a scripted server that logs clients in (serveLoggedIn) and holds each
// CancelRequest's connection open until release is called (also when the test ends): taken
// gets a value per CancelRequest received.
func slowCancelServer(t *testing.T) (srv net.Listener, taken <-chan struct{}, release func()) {
	t.Helper()
	held := make(chan struct{})
	got := make(chan struct{}, 4)
	srv = serveEach(t, func(c net.Conn) {
		defer c.Close()
		be := pgproto3.NewBackend(c, c)
		m, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		if _, ok := m.(*pgproto3.CancelRequest); ok {
			got <- struct{}{}
			<-held
			return
		}
		serveLoggedIn(be)
	})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(release) // before serveEach's cleanup, which waits for the handlers
	return srv, got, release
}
