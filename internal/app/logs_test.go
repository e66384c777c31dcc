package app_test

// The session end record and its one log line, end to end against real PostgreSQL: a failed
// login says why, a clean passthrough end is clean, a client that rejects pgfront's certificate
// is logged as that, every server failing TLS verification is told as that, cancels and
// application_name and a replica route's fallback are visible, a state change is one line.

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfront/pgfront/internal/admin"
	"github.com/pgfront/pgfront/internal/certtest"
	"github.com/pgfront/pgfront/internal/pgtest"
)

// TestLoginFailedSaysWhy: a wrong password ends the session as login_failed with the server's
// SQLSTATE and message, every time (not server_eof or client_eof by who closed first).
func TestLoginFailedSaysWhy(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.CreateUser(ctx, "app", "right-pw", "scram-sha-256"); err != nil {
		t.Fatal(err)
	}
	e := startProxy(t, oneServerConfig(p, "", ""))
	a := e.addr("rw")
	for i := range 5 {
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=app password=wrong-pw dbname=postgres sslmode=disable", a.IP, a.Port))
		if err == nil {
			closeConn(c)
			t.Fatal("logged in with a wrong password")
		}
		if got := sqlstate(err); got != "28P01" {
			t.Fatalf("login %d: %v, want the server's 28P01", i, err)
		}
	}
	var recs []admin.EndedSession
	waitFor(t, 5*time.Second, "5 end records", func() bool {
		recs = recs[:0]
		for _, r := range e.recent() {
			if r.User == "app" {
				recs = append(recs, r)
			}
		}
		return len(recs) == 5
	})
	for _, r := range recs {
		if r.Cause != "login_failed" || r.SQLState != "28P01" || !strings.Contains(r.Error, `password authentication failed for user "app"`) ||
			r.Server != "c/pg" {
			t.Errorf("end record %+v, want login_failed with the server's 28P01 and message", r)
		}
	}
	line := e.logs.Lines(`msg="session ended"`, "cause=login_failed")
	if len(line) != 5 || logAttr(line[0], "level") != "WARN" || logAttr(line[0], "sqlstate") != "28P01" {
		t.Fatalf("login failure lines:\n%s", strings.Join(line, "\n"))
	}
}

// TestSessionRecordShowsWhatHappened: application_name, the fallback of a replica route to the
// primary, the server as cluster/server and a cancelled query are in the end record and on the
// session line; the CancelRequest gets its own INFO line saying where it went.
func TestSessionRecordShowsWhatHappened(t *testing.T) {
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, "", "")+"  ro: {listen: \"127.0.0.1:0\", cluster: c, role: replica, fallback: primary}\n")
	a := e.addr("ro")
	c := connectDSN(t, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable application_name=nightly-report", a.IP, a.Port))
	local := c.PgConn().Conn().LocalAddr().String()
	cancelQuery(t, p, c)
	closeConn(c)

	rec := e.ended(local)
	if rec.ApplicationName != "nightly-report" || !rec.Fallback || rec.Server != "c/pg" || rec.Cancels != 1 || rec.Cause != "client_terminate" {
		t.Fatalf("end record %+v", rec)
	}
	line := logLine(t, e.logs, `msg="session ended"`, local)
	for k, want := range map[string]string{"application_name": "nightly-report", "fallback": "true", "server": "c/pg", "cancels": "1"} {
		if got := logAttr(line, k); got != want {
			t.Errorf("%s=%q, want %q: %s", k, got, want, line)
		}
	}
	if logAttr(line, "duration_ms") == "" || logAttr(line, "duration") != "" {
		t.Errorf("duration not in milliseconds: %s", line)
	}
	cancels := e.logs.Lines(`level=INFO msg="cancel request"`, " result=forwarded ")
	if len(cancels) != 1 || logAttr(cancels[0], "server") != "c/pg" || logAttr(cancels[0], "cancelled_session") != fmt.Sprint(rec.ID) ||
		logAttr(cancels[0], "duration_ms") == "" {
		t.Fatalf("cancel request lines:\n%s", strings.Join(cancels, "\n"))
	}
}

// TestTLSClientRejectsCertificate: clients that do not trust pgfront's certificate (libpq over
// TLS 1.2 and 1.3, pgx) are logged and counted as rejecting it, whatever crypto/tls reported
// ("bad record MAC" for libpq in TLS 1.3); the certificate's expiry is a gauge.
func TestTLSClientRejectsCertificate(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimary(t, nil)
	e := startProxy(t, oneServerConfig(p, f.terminate(""), ""))
	other, err := certtest.NewCA("a CA pgfront's certificate is not from")
	if err != nil {
		t.Fatal(err)
	}
	otherFile, err := other.WriteFile(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	a := e.addr("rw")
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10", a.Port, otherFile)

	rejected := 0
	wantRejected := func(t *testing.T, who string) {
		t.Helper()
		rejected++
		var recs []admin.EndedSession
		waitFor(t, 5*time.Second, "the rejection's end record", func() bool {
			recs = recs[:0]
			for _, r := range e.recent() {
				if r.TLSResult != "" {
					recs = append(recs, r)
				}
			}
			return len(recs) == rejected
		})
		r := recs[0]
		if r.Cause != "tls_error" || r.TLSResult != "client_rejected_certificate" || !strings.Contains(r.Error, "the client rejected pgfront's certificate") {
			t.Errorf("%s: end record %+v", who, r)
		}
		if got := e.value("pgfront_tls_handshakes_total", "route", "rw", "result", "client_rejected_certificate"); got != float64(rejected) {
			t.Errorf("%s: %g handshakes counted as rejected, want %d", who, got, rejected)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, dsn); err == nil {
		closeConn(c)
		t.Fatal("pgx trusted a certificate from another CA")
	}
	wantRejected(t, "pgx")
	if psql, err := exec.LookPath("psql"); err != nil {
		t.Logf("no psql on PATH: libpq's rejections not tested")
	} else {
		for _, max := range []string{"TLSv1.2", "TLSv1.3"} {
			out, err := exec.Command(psql, dsn+" ssl_max_protocol_version="+max, "-Atc", "SELECT 1").CombinedOutput()
			if err == nil {
				t.Fatalf("psql (%s) trusted a certificate from another CA: %s", max, out)
			}
			wantRejected(t, "psql "+max)
		}
	}
	lines := e.logs.Lines(`level=WARN msg="session ended"`, "tls_result=client_rejected_certificate")
	if len(lines) != rejected || strings.Contains(strings.Join(lines, "\n"), "bad record MAC") {
		t.Errorf("rejection lines:\n%s", strings.Join(lines, "\n"))
	}

	connectDSN(t, f.tlsDSN(e, "rw", "verify-full"))
	if got := e.value("pgfront_tls_handshakes_total", "route", "rw", "result", "ok"); got != 1 {
		t.Errorf("%g handshakes counted ok, want 1", got)
	}
	if got := e.value("pgfront_tls_certificate_expiry_timestamp_seconds", "route", "rw", "file", f.proxyCert); got != float64(f.proxyLeaf.Cert.NotAfter.Unix()) {
		t.Errorf("certificate expiry %g, want %d", got, f.proxyLeaf.Cert.NotAfter.Unix())
	}
}

// TestPassthroughCleanEnd: PostgreSQL resets a passthrough connection after the client's
// Terminate (it does not read the TLS close_notify behind it); that is still a clean end.
func TestPassthroughCleanEnd(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimaryTLS(t, f.serverFiles(certtest.LeafOptions{CommonName: "postgres-server", Hosts: []string{"127.0.0.1"}}), nil)
	e := startProxy(t, oneServerConfig(p, "tls:\n  mode: passthrough\n", ""))
	for range 5 {
		c := connectDSN(t, f.tlsDSN(e, "rw", "verify-full"))
		queryString(t, c, "SELECT 'x'")
		local := c.PgConn().Conn().LocalAddr().String()
		closeConn(c)
		// Blind, pgfront sees two FINs (or a FIN and the reset the other side's close caused)
		// in either order: both are clean ends, neither a reset.
		if rec := e.ended(local); (rec.Cause != "client_eof" && rec.Cause != "server_eof") || rec.TLS != "passthrough" || rec.Error != "" {
			t.Fatalf("end record %+v, want a clean client_eof or server_eof", rec)
		}
	}
}

// TestNoServerBecauseTLSVerificationFailed: when the health checks cannot verify any server's
// certificate, a client is told that rather than that a failover may be in progress, and the
// server's going down is one log line that says why.
func TestNoServerBecauseTLSVerificationFailed(t *testing.T) {
	f := newTLSFixture(t)
	p := pgtest.NewPrimaryTLS(t, f.serverFiles(certtest.LeafOptions{CommonName: "postgres-server", Hosts: []string{"127.0.0.1"}}), nil)
	other, err := certtest.NewCA("not the servers' CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile, err := other.WriteFile(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(oneServerConfig(p, "timeouts:\n  queue: 500ms\n  failover_wait: 500ms\n", ""), "    servers:", fmt.Sprintf(
		"    server_tls: {mode: verify-full, ca_file: %s}\n    health: {check: postgres, interval: 300ms, fast_interval: 100ms, timeout: 250ms, fall: 1}\n    servers:",
		otherFile), 1)
	cfg = strings.Replace(cfg, "        role: primary\n", "", 1)
	e := startProxy(t, cfg)
	waitStateLog(t, e, 10*time.Second, "pg", "up=false")

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err = pgx.Connect(ctx, e.dsn("rw"))
	wantPgError(t, err, "57P03", "every server failed TLS verification")
	if strings.Contains(err.Error(), "failover") {
		t.Fatalf("client told %v", err)
	}
	var rec admin.EndedSession
	waitFor(t, 5*time.Second, "the refusal's end record", func() bool {
		return e.countEnded(func(r admin.EndedSession) bool {
			if r.Cause == "no_server" {
				rec = r
				return true
			}
			return false
		}) == 1
	})
	if !strings.Contains(rec.Error, "every server failed TLS verification (c/pg: ") || !strings.Contains(rec.Error, "x509") {
		t.Fatalf("end record %+v", rec)
	}
	down := e.logs.Lines("server=c/pg ", "up=false")
	if len(down) != 1 || logAttr(down[0], "msg") != "server state changed" || !strings.Contains(logAttr(down[0], "err"), "x509") {
		t.Fatalf("the server's going down, want one line with the reason:\n%s", strings.Join(down, "\n"))
	}
}
