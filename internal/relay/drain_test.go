package relay

// Drain (end at a quiet transaction boundary) and End (never blocking its caller).

import (
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgfront/pgfront/internal/pgwire"
)

// expectFatalAfter reads pgfront's FATAL and checks it came no earlier than about min after
// since (the client's clock: it received the ReadyForQuery a little after pgfront sent it).
func expectFatalAfter(h *harness, code string, since time.Time, want time.Duration) {
	h.t.Helper()
	expectFatal(h, code)
	if d := time.Since(since); d < want-100*time.Millisecond {
		h.t.Fatalf("FATAL %s %s after the boundary, want after about %s", code, d, want)
	}
}

// A drain that starts right after the login leaves the client its first transaction; the session
// ends once the client has been quiet at the boundary for drainQuiet, not as the 'I' goes out.
func TestDrainLetsNewClientRunItsTransaction(t *testing.T) {
	h := newHarness(t, Options{})
	h.login()
	h.s.Drain(CauseShutdown)
	h.query("BEGIN", 'T')
	h.query("COMMIT", 'I')
	expectFatalAfter(h, pgwire.CodeAdminShutdown, time.Now(), drainQuiet)
	if r := h.result(); r.Cause != CauseShutdown {
		t.Fatalf("cause %s", r.Cause)
	}
	expectServer[*pgproto3.Terminate](h)
}

// A session already quiet for drainQuiet when the drain starts ends at once.
func TestDrainEndsQuietSessionAtOnce(t *testing.T) {
	h := newHarness(t, Options{})
	h.login()
	deadline := time.Now().Add(10 * time.Second)
	for st := h.s.State(); st.IdleSince.IsZero() || time.Since(st.IdleSince) < drainQuiet; st = h.s.State() {
		if time.Now().After(deadline) {
			t.Fatalf("session not idle: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	h.s.Drain(CauseShutdown)
	expectFatal(h, pgwire.CodeAdminShutdown)
	if d := time.Since(start); d > drainQuiet/2 {
		t.Fatalf("quiet session ended %s after the drain, want at once", d)
	}
}

// A client that never pauses drainQuiet between two transactions (a busy pooled connection) is
// not kept until the drain's grace runs out and then cut mid-transaction: its transactions run
// undisturbed until drainBusy, and the first boundary after that ends the session at once,
// without waiting for a quiet moment that never comes.
func TestDrainEndsBusyClientAtBoundaryAfterDrainBusy(t *testing.T) {
	h := newHarness(t, Options{})
	h.login()
	start := time.Now()
	h.s.Drain(CauseShutdown)
	n := 0
	for time.Since(start) < drainBusy-drainQuiet && n < 1_000_000 {
		h.query("BEGIN", 'T')
		h.query("COMMIT", 'I')
		n++
	}
	h.query("BEGIN", 'T') // open across drainBusy
	<-time.After(time.Until(start.Add(drainBusy + 50*time.Millisecond)))
	h.query("COMMIT", 'I')
	committed := time.Now()
	expectFatal(h, pgwire.CodeAdminShutdown)
	if d := time.Since(committed); d > drainQuiet/2 {
		t.Fatalf("busy session ended %s after its boundary past drainBusy, want at once", d)
	}
	if r := h.result(); r.Cause != CauseShutdown {
		t.Fatalf("cause %s", r.Cause)
	}
	expectServer[*pgproto3.Terminate](h)
}

// drainBusy counts from the login when that ends after the drain began: a client whose login
// finishes late still runs its first transaction, and ends after the quiet moment that follows.
func TestDrainLetsLateLoginRunItsTransaction(t *testing.T) {
	h := newHarness(t, Options{})
	h.s.Drain(CauseShutdown) // still logging in
	<-time.After(drainBusy + 50*time.Millisecond)
	h.login()
	h.query("SELECT 1", 'I')
	expectFatalAfter(h, pgwire.CodeAdminShutdown, time.Now(), drainQuiet)
	if r := h.result(); r.Cause != CauseShutdown {
		t.Fatalf("cause %s", r.Cause)
	}
}

// A draining session idle inside a transaction on an event loop keeps waiting for its COMMIT
// (it once ended with idle_in_transaction when it parked); the COMMIT wakes it, and it ends
// at the boundary after drainQuiet.
func TestDrainInTransactionParksAndWaitsForCommit(t *testing.T) {
	h, p := newParkHarness(t, Options{IdleInTransaction: time.Hour})
	h.login()
	h.query("BEGIN", 'T')
	h.s.Drain(CauseShutdown)
	waitParked(t, p, 1)
	h.query("COMMIT", 'I')
	expectFatalAfter(h, pgwire.CodeAdminShutdown, time.Now(), drainQuiet)
	if r := h.result(); r.Cause != CauseShutdown {
		t.Fatalf("cause %s", r.Cause)
	}
}

// A session idle on an event loop at a boundary that has been quiet less than drainQuiet when the drain starts
// is woken when the quiet moment is over, not at once.
func TestDrainParkedSessionWaitsForQuiet(t *testing.T) {
	h, p := newParkHarness(t, Options{})
	h.login()
	h.query("SELECT 1", 'I')
	idle := time.Now()
	waitParked(t, p, 1)
	h.s.Drain(CauseServerDown)
	expectFatalAfter(h, pgwire.CodeAdminShutdown, idle, drainQuiet)
	if r := h.result(); r.Cause != CauseServerDown {
		t.Fatalf("cause %s", r.Cause)
	}
	if p.Parked() != 0 {
		t.Fatal("ended session still parked")
	}
}

// End never waits for the cancel: the caller may be a health check loop, and a hung server holds
// a cancel for the whole cancel timeout. The session's own goroutine sends it, after the client
// got its FATAL and its socket was closed.
func TestEndDoesNotWaitForCancel(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	h := newHarness(t, Options{ServerFin: 10 * time.Second, Hooks: &funcHooks{cancel: func(pgwire.CancelKey) { <-release }}})
	t.Cleanup(unblock) // before the harness's own cleanup (LIFO)
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
	expectServer[*pgproto3.Query](h)

	ended := make(chan struct{})
	go func() {
		h.s.End(CauseServerDown)
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(time.Second):
		t.Fatal("End blocked while the cancel hangs")
	}
	expectFatal(h, pgwire.CodeAdminShutdown)
	if err := readToEOF(t, h.client); err != nil {
		t.Fatalf("client not closed while the cancel hangs: %v", err)
	}
	h.waitCancels(1)

	unblock()
	h.serverSend(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "canceled"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	expectServer[*pgproto3.Terminate](h)
	if r := h.result(); r.Cause != CauseServerDown {
		t.Fatalf("cause %s", r.Cause)
	}
}

// A forced end at shutdown cancels the running query and resets the server connection at once,
// rather than waiting up to server_fin for the server to answer: nobody waits for a shutdown
// longer than its grace.
func TestEndAtShutdownCancelsAndResets(t *testing.T) {
	h := newHarness(t, Options{ServerFin: 10 * time.Second})
	h.login()
	h.clientSend(&pgproto3.Query{String: "SELECT pg_sleep(60)"})
	expectServer[*pgproto3.Query](h)
	h.s.End(CauseShutdown)
	expectFatal(h, pgwire.CodeAdminShutdown)
	select {
	case r := <-h.res:
		h.res <- r // for the harness's cleanup
		if r.Cause != CauseShutdown {
			t.Fatalf("cause %s", r.Cause)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("session still ending 2s after a forced end at shutdown")
	}
	if n := h.cancelCount(); n != 1 {
		t.Fatalf("%d cancels, want 1", n)
	}
	_ = h.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := h.server.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("server end got %v, want a reset", err)
	}
}
