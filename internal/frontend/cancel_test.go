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
	f := loggedInFrontend(t, srv)

	key := pgwire.CancelKey{ProcessID: 7, Secret: "\x00\x00\x00\x09"} // serveLoggedIn's, not reissued
	done := make(chan error, 1)
	started := make(chan error, 1)
	go func() { started <- f.StartCancel(key, func(err error) { done <- err }) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second): // a peer's whole bound; a send in place takes cancelTimeout
		t.Fatal("StartCancel waits for the server")
	}
	<-taken
	select {
	case err := <-done:
		t.Fatalf("done before the server closed the cancel connection: %v", err)
	default:
	}
	release()
	if err := waitDone(t, done); err != nil {
		t.Fatal(err)
	}

	if err := f.StartCancel(pgwire.CancelKey{ProcessID: 99, Secret: "\x00\x00\x00\x01"}, nil); !errors.Is(err, ErrUnknownCancelKey) {
		t.Fatalf("unknown key: %v", err)
	}
}

// Close waits for the cancels StartCancel is still sending.
func TestCloseWaitsForStartedCancels(t *testing.T) {
	srv, taken, release := slowCancelServer(t)
	f := loggedInFrontend(t, srv)
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
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits after the server closed the cancel connection")
	}
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
	got := make(chan struct{}, 2*maxBackgroundCancels)
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

// loggedInFrontend serves route rw on server srv and logs one client in, whose session has
// serveLoggedIn's key (7, 9: not reissued).
func loggedInFrontend(t *testing.T, srv net.Listener) *Frontend {
	t.Helper()
	f := newTestFrontend(t, srv.Addr().String())
	c := dialRW(t, f)
	receiveUntil[*pgproto3.ReadyForQuery](t, startup(t, c, map[string]string{"user": "u"}))
	return f
}

// waitDone waits (10s) for a StartCancel's outcome.
func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the cancel's done was never called")
		return nil
	}
}

// A cancel whose server cannot be reached reports the failure to done and is not counted on
// the session.
func TestStartCancelFailure(t *testing.T) {
	srv, _, _ := slowCancelServer(t)
	f := loggedInFrontend(t, srv)
	_ = srv.Close() // the server takes no more connections: the cancel's connect is refused
	done := make(chan error, 1)
	if err := f.StartCancel(pgwire.CancelKey{ProcessID: 7, Secret: "\x00\x00\x00\x09"}, func(err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done); err == nil {
		t.Fatal("a cancel nobody took reported success")
	}
	for _, s := range f.registry.Snapshot() {
		if n := s.cancels.Load(); n != 0 {
			t.Fatalf("session counts %d cancels", n)
		}
	}
}

// At most maxBackgroundCancels cancels are sent on goroutines of their own; one more is sent
// on its caller's, which it holds until the server has taken it.
func TestStartCancelBounded(t *testing.T) {
	srv, taken, release := slowCancelServer(t)
	f := loggedInFrontend(t, srv)
	key := pgwire.CancelKey{ProcessID: 7, Secret: "\x00\x00\x00\x09"}
	for range maxBackgroundCancels {
		if err := f.StartCancel(key, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range maxBackgroundCancels {
		<-taken
	}
	returned := make(chan error, 1)
	go func() { returned <- f.StartCancel(key, nil) }()
	<-taken // the extra one reached the server from the caller's goroutine
	select {
	case err := <-returned:
		t.Fatalf("StartCancel returned (%v) with %d cancels under way: not bounded", err, maxBackgroundCancels)
	default:
	}
	release()
	if err := waitDone(t, returned); err != nil {
		t.Fatal(err)
	}
}
