package pgtest

import (
	"context"
	"os"
	"testing"
)

// NewPrimary starts a primary for the test (with extra postgresql.conf settings, may be
// nil) and removes it when the test ends; a failing test logs the tail of its server log.
// Missing PostgreSQL binaries fail the test with what to install, or skip it if the
// environment has PGFRONT_SKIP_PG=1.
func NewPrimary(t testing.TB, settings map[string]string) *Server {
	t.Helper()
	return newPrimary(t, Options{Settings: settings})
}

// NewPrimaryTLS starts a primary with ssl on (see TLSFiles) for the test, like NewPrimary.
func NewPrimaryTLS(t testing.TB, files *TLSFiles, settings map[string]string) *Server {
	t.Helper()
	if files == nil {
		t.Fatalf("pgtest: NewPrimaryTLS without TLS files")
	}
	return newPrimary(t, Options{Settings: settings, TLS: files})
}

// newPrimary starts a primary with opts (BinDir and Logf filled in) for the test.
func newPrimary(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := FindBinDir()
	if err != nil {
		if os.Getenv("PGFRONT_SKIP_PG") == "1" {
			t.Skipf("pgtest: %v (skipped: PGFRONT_SKIP_PG=1)", err)
		}
		t.Fatalf("pgtest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*startTimeout)
	defer cancel()
	opts.BinDir, opts.Logf = bin, t.Logf
	s, err := StartPrimary(ctx, opts)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	registerCleanup(t, s)
	return s
}

// NewPrimaryReplica starts a primary and a streaming replica of it ("replica1") for the
// test, like NewPrimary.
func NewPrimaryReplica(t testing.TB) (primary, replica *Server) {
	t.Helper()
	primary = NewPrimary(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*startTimeout)
	defer cancel()
	replica, err := primary.StartReplica(ctx, "replica1")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	registerCleanup(t, replica) // runs first: cleanups are last in, first out
	return primary, replica
}

func registerCleanup(t testing.TB, s *Server) {
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := readFrom(s.LogFile, 0); err == nil {
				t.Logf("pgtest: %s: last lines of %s:\n%s", s.Name, s.LogFile, tail(log, 40))
			}
		}
		if err := s.Cleanup(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
}
