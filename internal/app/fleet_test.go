package app_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfront/pgfront/internal/certtest"
	"github.com/pgfront/pgfront/internal/fleet"
	"github.com/pgfront/pgfront/internal/pgtest"
	"github.com/pgfront/pgfront/internal/pgwire"
)

// testFleetSecret is the fleet secret of the tests' instances (32 bytes).
const testFleetSecret = "fleet-secret-for-tests-0123456789"

// fleetSecretFile writes the test fleet secret to a file and returns its path.
func fleetSecretFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fleet.key")
	if err := os.WriteFile(path, []byte(testFleetSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fleetYAML is a fleet section for an instance named name with the given peers.
func fleetYAML(secretFile, name string, peers ...string) string {
	s := fmt.Sprintf("fleet:\n  name: %s\n  secret_file: %s\n", name, secretFile)
	if len(peers) > 0 {
		s += "  peers: [" + strings.Join(peers, ", ") + "]\n"
	}
	return s
}

// sendCancelTo sends a CancelRequest for key to addr and waits until pgfront closes the
// connection (it has routed the request); it returns the client address the log line names.
func sendCancelTo(t *testing.T, addr string, key pgwire.CancelKey) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(pgwire.EncodeCancelRequest(key)); err != nil {
		t.Fatal(err)
	}
	if n, err := io.ReadFull(c, make([]byte, 1)); n != 0 || isTimeout(err) {
		t.Fatalf("after a CancelRequest: read %d bytes, %v; want the connection closed", n, err)
	}
	return c.LocalAddr().String()
}

// keyOf is the backend key a pgconn client got.
func keyOf(c *pgconn.PgConn) pgwire.CancelKey {
	return pgwire.CancelKey{ProcessID: c.PID(), Secret: string(c.SecretKey())}
}

// waitCancelled waits for s's query to end with 57014 (query canceled).
func waitCancelled(t *testing.T, s *cancelSession, within time.Duration) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(within):
		t.Fatalf("%s's pg_sleep(30) not cancelled within %s", s.name, within)
	}
	s.done = nil
	if code := sqlstate(s.err); code != "57014" {
		t.Fatalf("%s's query ended with %v, want SQLSTATE 57014", s.name, s.err)
	}
}

// stopSleeping cancels a test session's query directly at its server on cleanup, so no
// pg_sleep(30) outlives the test.
func stopSleeping(t *testing.T, sessions ...*cancelSession) {
	t.Cleanup(func() {
		for _, s := range sessions {
			if s.done != nil {
				_, _ = s.server.QueryValue(context.Background(),
					fmt.Sprintf("SELECT pg_cancel_backend(%d)", s.conn.PID()))
				<-s.done
			}
		}
	})
}

// TestFleetCancelAcrossInstances: two pgfront instances A and B on one PostgreSQL, each
// pointing at the other's admin listener. The client of a session through A sees the server's
// own pid (pg_backend_pid(), a NOTIFY's pid) but a secret pgfront issued: sent straight to
// PostgreSQL it cancels nothing. Sent to B it reaches A over the peer channel and cancels the
// query; a forged key (right pid, wrong secret) cancels nothing anywhere.
func TestFleetCancelAcrossInstances(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	secret := fleetSecretFile(t)
	if fleet.TagOf("pgfront-a") == fleet.TagOf("pgfront-b") {
		t.Fatal("the test's instance names share a tag")
	}
	a := startProxy(t, oneServerConfig(p, "", fleetYAML(secret, "pgfront-a")))
	b := startProxy(t, oneServerConfig(p, "", fleetYAML(secret, "pgfront-b", a.app.AdminAddr().String())))
	a.app.Fleet().SetPeers("test", []fleet.Peer{{Addr: b.app.AdminAddr().String()}})

	// The pid is the server's: pg_backend_pid() and a NOTIFY's sender agree with the key.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	lc, err := pgx.Connect(ctx, a.dsn("rw"))
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close(context.Background())
	if _, err := lc.Exec(ctx, "LISTEN fleet_test"); err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Exec(ctx, "NOTIFY fleet_test"); err != nil {
		t.Fatal(err)
	}
	n, err := lc.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var backendPID uint32
	if err := lc.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backendPID); err != nil {
		t.Fatal(err)
	}
	if pid := lc.PgConn().PID(); pid != backendPID || n.PID != backendPID {
		t.Fatalf("client's pid %d, pg_backend_pid() %d, NOTIFY's pid %d: want one pid", pid, backendPID, n.PID)
	}

	s := &cancelSession{name: "A's session", conn: a.pgconnect("rw"), server: p}
	stopSleeping(t, s)
	key := keyOf(s.conn)
	s.start(t)

	// The secret is pgfront's: PostgreSQL itself does not know it.
	sendCancelDirect(t, p.Addr(), key)
	// A forged key (right pid, wrong secret) through B: no instance owns it, so it goes to the
	// route's server as received (the fallback), which ignores it.
	forged := key
	forged.Secret = string([]byte{key.Secret[0] ^ 0xff, key.Secret[1], key.Secret[2], key.Secret[3]})
	client := sendCancelTo(t, b.addr("rw").String(), forged)
	if line := logLine(t, b.logs, `msg="cancel request"`, client); logAttr(line, "result") != "fallback" {
		t.Fatalf("forged key: %s", line)
	}
	// Nothing cancelled it: a query ended by those would have ended by now. PostgreSQL
	// handles a cancel before it closes the cancel connection, and the cancel connections
	// above were closed.
	s.stillRunning(t)

	// The real key, sent to B: forwarded to A over the peer channel, and cancelled.
	start := time.Now()
	client = sendCancelTo(t, b.addr("rw").String(), key)
	waitCancelled(t, s, 10*time.Second)
	line := logLine(t, b.logs, `msg="cancel request"`, client)
	if logAttr(line, "result") != "peer" || logAttr(line, "peer") != a.app.AdminAddr().String() || logAttr(line, "level") != "INFO" ||
		logAttr(line, "route") != "rw" || logAttr(line, "duration_ms") == "" {
		t.Fatalf("B's cancel request line: %s", line)
	}
	t.Logf("cancel through B took %s", time.Since(start))
	b.waitMetric(5*time.Second, 1, "pgfront_cancel_requests_total", "route", "rw", "result", "peer")
	b.waitMetric(5*time.Second, 1, "pgfront_cancel_requests_total", "route", "rw", "result", "fallback")
	// A writes its line once PostgreSQL has taken the cancel, after it answered B.
	waitFor(t, 10*time.Second, "A's forwarded peer cancel request line", func() bool {
		return strings.Contains(a.logs.String(), `msg="peer cancel request" route=rw result=forwarded`)
	})
	// The session goes on.
	if v := pgQuery(t, s.conn, "SELECT 1"); v != "1" {
		t.Fatalf("after its cancel: %q", v)
	}
}

// sendCancelDirect sends a CancelRequest to PostgreSQL itself and waits for it to close.
func sendCancelDirect(t *testing.T, addr string, key pgwire.CancelKey) {
	t.Helper()
	sendCancelTo(t, addr, key)
}

// TestFleetOwnerDownFallback: B's only peer is down. A key no live instance owns — here the
// real key of a session straight to PostgreSQL, as a passthrough session's or a session of a
// proxy outside the fleet would be — goes, after the peer attempt fails, to the route's server
// as received, and cancels its query.
func TestFleetOwnerDownFallback(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // the peer is down: nothing listens there now
	b := startProxy(t, oneServerConfig(p, "", fleetYAML(fleetSecretFile(t), "pgfront-b", deadAddr)))

	direct, err := pgconn.Connect(context.Background(), fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", p.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	s := &cancelSession{name: "direct session", conn: direct, server: p}
	stopSleeping(t, s)
	s.start(t)
	client := sendCancelTo(t, b.addr("rw").String(), keyOf(direct))
	waitCancelled(t, s, 10*time.Second)
	line := logLine(t, b.logs, `msg="cancel request"`, client)
	if logAttr(line, "result") != "fallback" || logAttr(line, "server") != "c/pg" || logAttr(line, "servers") != "1" ||
		!strings.Contains(logAttr(line, "err"), deadAddr) {
		t.Fatalf("cancel request line (want the fallback, and the peer that could not be asked): %s", line)
	}
}

// TestFleetPassthroughCancel: a session on a TLS passthrough route carries the server's own
// key (pgfront cannot see it); the client's plain CancelRequest (psql's Ctrl-C) goes to the
// route's server by the fallback and cancels the query.
func TestFleetPassthroughCancel(t *testing.T) {
	f := newTLSFixture(t)
	files := f.serverFiles(certtest.LeafOptions{CommonName: "postgres-server", Hosts: []string{"127.0.0.1"}})
	p := pgtest.NewPrimaryTLS(t, files, nil)
	e := startProxy(t, oneServerConfig(p, "tls:\n  mode: passthrough\n", ""))

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, f.tlsDSN(e, "rw", "verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	s := &cancelSession{name: "passthrough session", conn: c, server: p}
	stopSleeping(t, s)
	s.start(t)
	client := sendCancelTo(t, e.addr("rw").String(), keyOf(c))
	waitCancelled(t, s, 10*time.Second)
	if line := logLine(t, e.logs, `msg="cancel request"`, client); logAttr(line, "result") != "fallback" {
		t.Fatalf("cancel request line: %s", line)
	}
}

// TestFleetFallbackRateLimit: a flood of junk cancels becomes at most the route's fallback
// burst of server connections; the rest are dropped and counted.
func TestFleetFallbackRateLimit(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "", "fleet:\n  cancel_fallback_rate: 0.001\n  cancel_fallback_burst: 2\n"))
	var results []string
	for i := range 6 {
		client := sendCancelTo(t, e.addr("rw").String(), pgwire.CancelKey{ProcessID: uint32(1000 + i), Secret: "junk"})
		results = append(results, logAttr(logLine(t, e.logs, `msg="cancel request"`, client), "result"))
	}
	want := []string{"fallback", "fallback", "rate_limited", "rate_limited", "rate_limited", "rate_limited"}
	if strings.Join(results, " ") != strings.Join(want, " ") {
		t.Fatalf("results %v, want %v", results, want)
	}
	e.waitMetric(5*time.Second, 2, "pgfront_cancel_requests_total", "route", "rw", "result", "fallback")
	e.waitMetric(5*time.Second, 4, "pgfront_cancel_requests_total", "route", "rw", "result", "rate_limited")
}

// TestFleetPeerChannelAuth: the peer endpoint on the admin listener takes only requests signed
// with the fleet secret within ±30s, whatever admin tokens say: a bad signature and a stale
// timestamp get 403, a good request for an unknown key "unknown".
func TestFleetPeerChannelAuth(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "", fleetYAML(fleetSecretFile(t), "pgfront-a")))
	url := "http://" + e.app.AdminAddr().String() + fleet.PeerCancelPath
	key := fleet.PeerKey([]byte(testFleetSecret))
	req := fleet.Request{Key: pgwire.CancelKey{ProcessID: 4242, Secret: "abcd"}, Route: "rw"}
	post := func(body []byte, ts, sig string) (int, string) {
		hr, err := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set(fleet.HeaderTimestamp, ts)
		hr.Header.Set(fleet.HeaderSignature, sig)
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	defer http.DefaultClient.CloseIdleConnections()

	body, ts, sig := fleet.EncodeRequest(key, req, time.Now())
	if code, _ := post(body, ts, strings.Repeat("ab", 32)); code != http.StatusForbidden {
		t.Errorf("bad signature: %d, want 403", code)
	}
	other := fleet.PeerKey([]byte("another-fleet-secret-0123456789xx"))
	if code, _ := post(fleet.EncodeRequest(other, req, time.Now())); code != http.StatusForbidden {
		t.Errorf("other fleet's signature: %d, want 403", code)
	}
	if code, _ := post(fleet.EncodeRequest(key, req, time.Now().Add(-time.Minute))); code != http.StatusForbidden {
		t.Errorf("stale timestamp: %d, want 403", code)
	}
	if code, answer := post(body, ts, sig); code != http.StatusOK || !strings.Contains(answer, `"result":"unknown"`) {
		t.Errorf("good request for an unknown key: %d %s", code, answer)
	}
	if c := e.app.Fleet().Counters(); c.Refused != 3 {
		t.Errorf("refused peer requests counted %d, want 3", c.Refused)
	}
}

// TestFleetReload: a reload applies the fleet section: peers, secret and fallback rate; a
// secret too short fails the reload, naming its length but never its bytes.
func TestFleetReload(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxyFile(t, oneServerConfig(p, "", ""))
	junk := pgwire.CancelKey{ProcessID: 77, Secret: "junk"}
	if line := logLine(t, e.logs, `msg="cancel request"`, sendCancelTo(t, e.addr("rw").String(), junk)); logAttr(line, "result") != "fallback" {
		t.Fatalf("before the reload: %s", line)
	}

	secret := fleetSecretFile(t)
	changes := e.reload(t, oneServerConfig(p, "", fleetYAML(secret, "pgfront-a", "10.0.0.2:9187")+"  cancel_fallback_rate: 0\n"))
	if !strings.Contains(strings.Join(changes, "\n"), "fleet: changed") {
		t.Errorf("changes %v do not mention the fleet", changes)
	}
	if peers := e.app.Fleet().Peers(); len(peers) != 1 || peers[0].Addr != "10.0.0.2:9187" {
		t.Fatalf("peers after the reload: %v", peers)
	}
	if tag := e.app.Fleet().Tag(); tag != fleet.TagOf("pgfront-a") {
		t.Fatalf("tag after the reload %d, want pgfront-a's", tag)
	}
	// Nobody owns the key, the peer is not reachable or does not have it, and there is no
	// fallback any more: dropped.
	e.app.Fleet().SetPeers("config", nil)
	if line := logLine(t, e.logs, `msg="cancel request"`, sendCancelTo(t, e.addr("rw").String(), junk)); logAttr(line, "result") != "unknown_key" {
		t.Fatalf("after the reload: %s", line)
	}

	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("sixteen-byte-key"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.write(t, oneServerConfig(p, "", fleetYAML(short, "pgfront-a")))
	_, err := e.app.Reload()
	if err == nil || !strings.Contains(err.Error(), "fleet.secret: 16 bytes") || strings.Contains(err.Error(), "sixteen") {
		t.Fatalf("reload with a short secret: %v", err)
	}
}
