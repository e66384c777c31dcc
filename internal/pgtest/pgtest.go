// Package pgtest starts real, throw-away PostgreSQL servers — a primary and streaming
// replicas made with pg_basebackup — in temp directories on loopback, for pgfront's
// integration tests and for `pgfront demo`. It owns each server's whole life: initdb or
// pg_basebackup, configuration, the postmaster child process, crash simulation (Kill),
// restart, promotion, password users, TLS (ssl=on with given certificates and a pg_hba.conf
// that may demand TLS and client certificates) and removal.
//
// The core API does not depend on package testing; NewPrimary and NewPrimaryReplica wrap
// it for tests:
//
//	p, err := pgtest.StartPrimary(ctx, pgtest.Options{})
//	if err != nil {
//		return err
//	}
//	defer p.Cleanup()
//	r, err := p.StartReplica(ctx, "replica1") // returns once it streams from p
//	...
//	fmt.Println(p.PsqlCommand("postgres", "postgres"))
//
// As root, every PostgreSQL program runs as the "postgres" OS user (no su/sudo). The
// postmaster is a direct child process with a parent-death signal (SIGQUIT, an immediate
// shutdown), so a test binary that dies does not leave PostgreSQL running.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	startTimeout   = 30 * time.Second // postmaster ready, replica streaming, promotion
	stopTimeout    = 20 * time.Second // fast shutdown before escalating to SIGQUIT
	pollInterval   = 20 * time.Millisecond
	portAttempts   = 10
	minPort        = 20000
	maxPort        = 40000
	maxSocketPath  = 100 // PostgreSQL rejects socket paths of 108 bytes and more
	superuser      = "postgres"
	loopbackHost   = "127.0.0.1"
	defaultDB      = "postgres"
	serverLogName  = "server.log"
	dataDirName    = "data"
	pgtestConfName = "pgtest.conf"
)

// Options configures StartPrimary; replicas inherit the options of the server they are
// started from.
type Options struct {
	BinDir   string                           // "" = FindBinDir()
	BaseDir  string                           // parent for the temp dir; "" = os.TempDir(); postgres must be able to traverse it
	Settings map[string]string                // extra postgresql.conf settings (override the defaults, except listen/port/socket/logging)
	Logf     func(format string, args ...any) // optional progress log
	// TLS, when set, turns ssl on with these PEM files (written into the data directory,
	// owned by the server's OS user, mode 0600, as PostgreSQL demands for the key) and sets
	// the pg_hba.conf policy for TCP. See TLSFiles.
	TLS *TLSFiles

	// pickPort chooses the next port to try; nil = random in [minPort, maxPort]. A seam for
	// tests of the port-in-use retry.
	pickPort func() int
}

// Server is one PostgreSQL server started by this package. The exported fields are set
// when it is created and never change. Its methods are safe for concurrent use.
type Server struct {
	Name    string // "primary", "replica1", ...
	Host    string // "127.0.0.1"
	Port    int
	Dir     string // root temp dir of this server (data dir inside)
	DataDir string
	LogFile string // server log path

	opts Options
	bin  string
	cred *syscall.Credential // nil unless running as root

	// mu guards the process and everything that changes after creation. Methods that wait
	// for the server (start, stop, reload) hold it, so lifecycle calls are serialised.
	mu struct {
		sync.Mutex
		proc     *process  // running postmaster; nil when stopped
		removed  bool      // Cleanup removed Dir
		users    []hbaUser // password users; their pg_hba.conf lines come first
		replicas []*Server // started from this server; they get its password users' lines too
	}
}

type hbaUser struct{ name, method string }

var (
	namePattern    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)
	userPattern    = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,63}$`)
	settingPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)
)

// StartPrimary initialises a new cluster in a temp dir under opts.BaseDir and starts it on
// a free port of 127.0.0.1; it returns once the server accepts connections. On error
// nothing is left behind.
func StartPrimary(ctx context.Context, opts Options) (_ *Server, retErr error) {
	if opts.TLS != nil {
		if err := opts.TLS.validate(); err != nil {
			return nil, err
		}
		opts.TLS = opts.TLS.clone() // the caller may reuse its value; replicas share this one
	}
	s, err := newServer("primary", opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, s.Cleanup())
		}
	}()
	s.logf("pgtest: %s: initdb in %s", s.Name, s.DataDir)
	if err := s.run(ctx, "initdb", "-D", s.DataDir, "-U", superuser, "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"); err != nil {
		return nil, err
	}
	if err := s.includeConf(); err != nil {
		return nil, err
	}
	if s.opts.TLS != nil {
		if err := s.writeTLSFiles(); err != nil {
			return nil, err
		}
	}
	if err := s.writeHBA(nil); err != nil {
		return nil, err
	}
	s.mu.Lock()
	err = s.startLocked(ctx, true)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// StartReplica makes a streaming replica of s with pg_basebackup (-R -X stream), starts it
// on its own port and returns once s's pg_stat_replication shows it streaming (its
// application_name is its name). The replica has s's password users too.
func (s *Server) StartReplica(ctx context.Context, name string) (_ *Server, retErr error) {
	s.mu.Lock()
	running := s.mu.proc != nil
	users := slices.Clone(s.mu.users)
	dup := slices.ContainsFunc(s.mu.replicas, func(r *Server) bool { return r.Name == name })
	s.mu.Unlock()
	switch {
	case !running:
		return nil, fmt.Errorf("starting replica %s: %s is not running", name, s.Name)
	case dup:
		return nil, fmt.Errorf("starting replica %s: %s already has a replica of that name", name, s.Name)
	}
	opts := s.opts
	opts.BinDir = s.bin
	r, err := newServer(name, opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, r.Cleanup())
		}
	}()
	r.logf("pgtest: %s: pg_basebackup from %s into %s", r.Name, s.Name, r.DataDir)
	// -R writes this host into primary_conninfo: with TLS that is s's Unix socket, which
	// needs no client certificate.
	if err := r.run(ctx, "pg_basebackup", "-h", s.adminHost(), "-p", strconv.Itoa(s.Port), "-U", superuser,
		"-D", r.DataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.mu.users = users
	err = r.writeHBA(users)
	if err == nil {
		err = r.startLocked(ctx, true)
	}
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	q := fmt.Sprintf("SELECT count(*) FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
		quoteLiteral(name))
	if err := s.waitValue(ctx, q, "1"); err != nil {
		return nil, fmt.Errorf("waiting for %s to stream from %s: %w", name, s.Name, err)
	}
	s.mu.Lock()
	s.mu.replicas = append(s.mu.replicas, r)
	s.mu.Unlock()
	return r, nil
}

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// DSN returns a libpq keyword/value connection string for user and database db.
func (s *Server) DSN(user, db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.Host, s.Port, user, db)
}

// PsqlCommand returns a shell command that connects psql to the server.
func (s *Server) PsqlCommand(user, db string) string {
	return fmt.Sprintf("psql \"host=%s port=%d user=%s dbname=%s\"", s.Host, s.Port, user, db)
}

// Stop shuts the server down (fast shutdown: SIGINT, then SIGQUIT and SIGKILL if it has not
// exited within 20s) and waits for it. Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

// Kill simulates a crash: SIGKILL to the postmaster. It returns once the postmaster is
// reaped and its backends, which notice the postmaster's death, have exited; the port then
// refuses connections and Restart can start the server again (with crash recovery).
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.mu.proc
	if p == nil {
		return fmt.Errorf("killing %s: not running", s.Name)
	}
	s.mu.proc = nil
	return s.killAndRelease(p)
}

// Restart starts the server again on the same port, after Stop or Kill (a running server is
// stopped first), and returns once it accepts connections. A replica resumes streaming on
// its own; Restart does not wait for that.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.removed {
		return fmt.Errorf("restarting %s: removed by Cleanup", s.Name)
	}
	if err := s.stopLocked(); err != nil {
		return err
	}
	return s.startLocked(ctx, false)
}

// Promote ends recovery on a replica (pg_promote) and returns once it is no longer in
// recovery, so it accepts writes.
func (s *Server) Promote(ctx context.Context) error {
	v, err := s.QueryValue(ctx, "SELECT pg_promote(true, 30)")
	if err != nil {
		return fmt.Errorf("promoting %s: %w", s.Name, err)
	}
	if v != "t" {
		return fmt.Errorf("promoting %s: pg_promote returned %q", s.Name, v)
	}
	if err := s.waitValue(ctx, "SELECT pg_is_in_recovery()", "f"); err != nil {
		return fmt.Errorf("promoting %s: %w", s.Name, err)
	}
	s.logf("pgtest: %s: promoted", s.Name)
	return nil
}

// Cleanup stops the server and removes its directory. It is idempotent.
func (s *Server) Cleanup() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.stopLocked()
	if !s.mu.removed {
		if rmErr := os.RemoveAll(s.Dir); rmErr != nil {
			return errors.Join(err, fmt.Errorf("removing %s: %w", s.Dir, rmErr))
		}
		s.mu.removed = true
	}
	return err
}

// Exec runs sql (one or more statements, simple protocol) as the superuser over TCP (the
// Unix socket when the server has TLS). A server error is a *pgconn.PgError in the chain.
func (s *Server) Exec(ctx context.Context, sql string) error {
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		return fmt.Errorf("running %q on %s: %w", sql, s.Name, err)
	}
	return nil
}

// QueryValue runs sql as the superuser and returns the first column of the first row of the
// last result, in text format ("" for NULL), e.g. "t" for SELECT pg_is_in_recovery().
func (s *Server) QueryValue(ctx context.Context, sql string) (string, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	v, err := queryValue(ctx, conn, sql)
	if err != nil {
		return "", fmt.Errorf("running %q on %s: %w", sql, s.Name, err)
	}
	return v, nil
}

// CreateUser creates a login role with password, stored with method ("scram-sha-256" or
// "md5"), and puts pg_hba.conf lines requiring that method for it (local and loopback)
// ahead of the trust lines, on s and on the replicas started from it; running servers are
// reloaded before it returns. Names are limited to letters, digits, '_', '.' and '-'.
func (s *Server) CreateUser(ctx context.Context, name, password, method string) error {
	if !userPattern.MatchString(name) {
		return fmt.Errorf("creating user %q: name must match %s", name, userPattern)
	}
	if method != "scram-sha-256" && method != "md5" {
		return fmt.Errorf("creating user %s: method %q is not scram-sha-256 or md5", name, method)
	}
	sql := fmt.Sprintf("SET password_encryption = %s; CREATE ROLE %s LOGIN PASSWORD %s",
		quoteLiteral(method), quoteIdent(name), quoteLiteral(password))
	if err := s.Exec(ctx, sql); err != nil {
		return fmt.Errorf("creating user %s: %w", name, err)
	}
	return s.addHBAUser(ctx, hbaUser{name: name, method: method})
}

// addHBAUser adds u's lines to s's pg_hba.conf and its replicas', reloading running servers.
func (s *Server) addHBAUser(ctx context.Context, u hbaUser) error {
	s.mu.Lock()
	replicas := slices.Clone(s.mu.replicas)
	err := s.addHBAUserLocked(ctx, u)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	for _, r := range replicas {
		if err := r.addHBAUser(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) addHBAUserLocked(ctx context.Context, u hbaUser) error {
	if s.mu.removed {
		return nil
	}
	if !slices.Contains(s.mu.users, u) {
		s.mu.users = append(s.mu.users, u)
	}
	if err := s.writeHBA(s.mu.users); err != nil {
		return err
	}
	if s.mu.proc == nil {
		return nil // read at the next start
	}
	return s.reloadHBA(ctx)
}

// newServer validates the options and creates the server's directory (owned by postgres
// when running as root).
func newServer(name string, opts Options) (*Server, error) {
	if !namePattern.MatchString(name) {
		return nil, fmt.Errorf("server name %q must match %s", name, namePattern)
	}
	for k := range opts.Settings {
		if !settingPattern.MatchString(k) {
			return nil, fmt.Errorf("setting name %q is not a PostgreSQL parameter name", k)
		}
	}
	bin := opts.BinDir
	if bin == "" {
		var err error
		if bin, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	cred, err := PostgresCredential()
	if err != nil {
		return nil, err
	}
	base := opts.BaseDir
	if base == "" {
		base = os.TempDir()
	}
	if base, err = filepath.Abs(base); err != nil {
		return nil, fmt.Errorf("resolving base dir: %w", err)
	}
	// MkdirTemp appends at most 10 digits.
	if n := len(filepath.Join(base, "pgtest-"+name+"-4294967295", ".s.PGSQL.65535")); n >= maxSocketPath {
		return nil, fmt.Errorf("socket path under %s would be up to %d bytes, PostgreSQL needs < %d: use a shorter BaseDir", base, n, maxSocketPath)
	}
	dir, err := os.MkdirTemp(base, "pgtest-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("creating server dir: %w", err)
	}
	s := &Server{
		Name:    name,
		Host:    loopbackHost,
		Dir:     dir,
		DataDir: filepath.Join(dir, dataDirName),
		LogFile: filepath.Join(dir, serverLogName),
		opts:    opts,
		bin:     bin,
		cred:    cred,
	}
	if err := s.chown(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// PostgresCredential returns the credential PostgreSQL programs (and their helpers: etcd,
// Patroni) run with: none for a normal user; the postgres OS user for root, which initdb and
// postgres refuse to run as.
func PostgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(superuser)
	if err != nil {
		return nil, fmt.Errorf("running as root needs the %q OS user to run PostgreSQL: %w", superuser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing uid of %s: %w", superuser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parsing gid of %s: %w", superuser, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func (s *Server) chown(path string) error {
	if s.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
		return fmt.Errorf("handing %s to %s: %w", path, superuser, err)
	}
	return nil
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

func (s *Server) pickPort() int {
	if s.opts.pickPort != nil {
		return s.opts.pickPort()
	}
	return minPort + rand.IntN(maxPort-minPort+1)
}

// connect opens a superuser connection (TCP, or the Unix socket for a TLS server); the
// caller closes it.
func (s *Server) connect(ctx context.Context) (*pgconn.PgConn, error) {
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.adminHost(), s.Port, superuser, defaultDB)
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", s.Name, err)
	}
	return conn, nil
}

func queryValue(ctx context.Context, conn *pgconn.PgConn, sql string) (string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return "", err
	}
	if len(results) == 0 || len(results[len(results)-1].Rows) == 0 || len(results[len(results)-1].Rows[0]) == 0 {
		return "", errors.New("no value returned")
	}
	return string(results[len(results)-1].Rows[0][0]), nil
}

// waitValue polls sql on one connection (reconnecting as needed) until it returns want,
// for at most startTimeout.
func (s *Server) waitValue(ctx context.Context, sql, want string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	var last string
	var lastErr error
	for {
		if conn == nil {
			conn, lastErr = s.connect(ctx)
		}
		if conn != nil {
			last, lastErr = queryValue(ctx, conn, sql)
			if lastErr == nil && last == want {
				return nil
			}
			if conn.IsClosed() {
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%q on %s returned %q, not %q (last error: %v): %w", sql, s.Name, last, want, lastErr, ctx.Err())
		case <-tick.C:
		}
	}
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteLiteral quotes an SQL string literal (standard_conforming_strings is on).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
