package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	applicationName = "pgfront-health"
	// closeTimeout bounds sending Terminate when a connection is given up.
	closeTimeout = time.Second
	// maxMessageLen bounds each message the server sends: the answers to a login and to
	// the check query are a few hundred bytes.
	maxMessageLen = 64 << 10
)

// checkQuery asks everything a check needs in one round trip: whether the server is in
// recovery, its WAL position (primary: written; replica: replayed) and a replica's replay
// lag in seconds. The lag is 0 when replay has caught up with what was received (an idle
// primary sends nothing, so the age of the last replayed transaction would grow without
// any lag); otherwise it is the age of the last replayed transaction, NULL when unknown.
const checkQuery = `SELECT pg_is_in_recovery(),
	CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
	CASE WHEN NOT pg_is_in_recovery() THEN 0
		WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
		ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END`

// PostgresOptions configures a PostgresChecker.
type PostgresOptions struct {
	Addr     string // host:port
	User     string // "" = "postgres"
	Database string // "" = "postgres"
	// Password returns the password; it is called on each (re)connect, so a rotated file
	// is picked up. nil = no password (trust).
	Password func() (string, error)
	// TLS holds libpq-style TLS parameters (sslmode, sslrootcert, sslcert, sslkey) for the
	// check's connection; nil or no sslmode means sslmode=disable. SCRAM uses channel binding
	// (SCRAM-SHA-256-PLUS) when the server offers it over TLS (channel_binding=prefer).
	TLS map[string]string
}

// PostgresChecker checks a server by logging in (trust, password, md5 or SCRAM-SHA-256,
// through pgconn) as application_name pgfront-health and running one query per check. It
// keeps its connection between checks; after any error the connection is closed and the
// next check opens a new one. PG* environment variables do not change what it connects
// to or how. Its methods are safe for concurrent use (calls are serialised).
type PostgresChecker struct {
	opts PostgresOptions

	// mu serialises checks and Close, and guards the fields below.
	mu     sync.Mutex
	conn   *pgconn.PgConn // kept between checks; nil: connect at the next check
	closed bool
}

var _ Checker = (*PostgresChecker)(nil)

// NewPostgres returns a checker of the PostgreSQL server at o.Addr. It connects at the
// first check.
func NewPostgres(o PostgresOptions) *PostgresChecker {
	if o.User == "" {
		o.User = "postgres"
	}
	if o.Database == "" {
		o.Database = "postgres"
	}
	return &PostgresChecker{opts: o}
}

// Check runs the check query, connecting first if needed. If the kept connection turns
// out to be broken (the server restarted, an administrator ended the backend), it tries
// once more on a new connection within the same deadline, so that only a server that
// cannot answer now fails the check.
func (c *PostgresChecker) Check(ctx context.Context) Observation {
	start := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	obs, err := c.check(ctx)
	if err != nil {
		return failed(err, time.Since(start))
	}
	obs.Duration = time.Since(start)
	return obs
}

func (c *PostgresChecker) check(ctx context.Context) (Observation, error) {
	if c.closed {
		return Observation{}, errors.New("checker closed")
	}
	reused := c.conn != nil
	if !reused {
		conn, err := c.connect(ctx)
		if err != nil {
			return Observation{}, err
		}
		c.conn = conn
	}
	obs, err := query(ctx, c.conn)
	if err == nil {
		return obs, nil
	}
	broken := c.conn.IsClosed() // pgconn closes a connection on network errors and FATALs
	c.dropConn()
	if !reused || !broken || ctx.Err() != nil {
		return Observation{}, err
	}
	conn, cerr := c.connect(ctx)
	if cerr != nil {
		return Observation{}, fmt.Errorf("%w; then %w", err, cerr)
	}
	c.conn = conn
	if obs, err = query(ctx, conn); err != nil {
		c.dropConn()
		return Observation{}, err
	}
	return obs, nil
}

// Close ends the kept connection with Terminate, so that the server logs a normal
// disconnection. Later checks fail.
func (c *PostgresChecker) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := c.conn.Close(ctx)
	c.conn = nil
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("closing connection to %s: %w", c.opts.Addr, err)
	}
	return nil
}

// dropConn closes the kept connection (with Terminate if it still works) and forgets it.
func (c *PostgresChecker) dropConn() {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = c.conn.Close(ctx) // nothing to do about a failed goodbye: the socket is closed either way
	c.conn = nil
}

// connect logs in. The error never contains the password.
func (c *PostgresChecker) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", c.opts.Addr, err)
	}
	return conn, nil
}

// config builds the connection settings. Every setting that PG* environment variables
// could supply is given explicitly, so the environment only matters through what pgconn
// reads before it sees them (a PGSERVICE that names no service makes every check fail).
func (c *PostgresChecker) config() (*pgconn.Config, error) {
	host, portText, err := net.SplitHostPort(c.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("parsing address %q: %w", c.opts.Addr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("parsing address %q: bad port", c.opts.Addr)
	}
	password := ""
	if c.opts.Password != nil {
		if password, err = c.opts.Password(); err != nil {
			return nil, fmt.Errorf("getting password: %w", err)
		}
	}
	connString := fmt.Sprintf("host=%s port=%d user=%s dbname=%s target_session_attrs=any channel_binding=prefer",
		quoteConnValue(host), port, quoteConnValue(c.opts.User), quoteConnValue(c.opts.Database))
	sslmode := c.opts.TLS["sslmode"]
	if sslmode == "" {
		sslmode = "disable"
	}
	connString += " sslmode=" + quoteConnValue(sslmode)
	for _, k := range []string{"sslrootcert", "sslcert", "sslkey"} {
		if v := c.opts.TLS[k]; v != "" {
			connString += " " + k + "=" + quoteConnValue(v)
		}
	}
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("building connection settings for %s: %w", c.opts.Addr, err)
	}
	cfg.Password = password // also replaces one found through PGPASSWORD or a passfile
	cfg.RuntimeParams = map[string]string{"application_name": applicationName}
	if sslmode != "prefer" {
		cfg.Fallbacks = nil // prefer's one fallback is the same server without TLS
	}
	cfg.ConnectTimeout = 0 // the check's context bounds connecting
	cfg.RequireAuth = ""
	cfg.MaxProtocolMessageBodyLen = maxMessageLen
	return cfg, nil
}

// quoteConnValue quotes a keyword/value connection string value.
func quoteConnValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// query runs checkQuery on conn.
func query(ctx context.Context, conn *pgconn.PgConn) (Observation, error) {
	results, err := conn.Exec(ctx, checkQuery).ReadAll()
	if err != nil {
		return Observation{}, fmt.Errorf("running check query: %w", err)
	}
	if len(results) != 1 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) != 3 {
		return Observation{}, errors.New("running check query: unexpected result shape")
	}
	return parseRow(results[0].Rows[0])
}

// parseRow reads the text values of checkQuery's row.
func parseRow(row [][]byte) (Observation, error) {
	obs := Observation{OK: true, Role: RolePrimary}
	switch string(row[0]) {
	case "t":
		obs.InRecovery, obs.Role = true, RoleReplica
	case "f":
	default:
		return Observation{}, fmt.Errorf("parsing pg_is_in_recovery: %q is not a boolean", row[0])
	}
	if row[1] != nil {
		lsn, err := parseLSN(string(row[1]))
		if err != nil {
			return Observation{}, err
		}
		obs.LSN = lsn
	}
	obs.LagSeconds = -1
	if row[2] != nil {
		lag, err := strconv.ParseFloat(string(row[2]), 64)
		if err != nil {
			return Observation{}, fmt.Errorf("parsing replay lag %q: %w", row[2], err)
		}
		// The replayed transaction's time comes from the primary's clock and now() from the
		// replica's: a skew can make the difference negative.
		obs.LagSeconds = max(lag, 0)
	}
	return obs, nil
}

// parseLSN parses PostgreSQL's text form of a WAL position ("16/B374D848": the high and low
// 32 bits in hexadecimal) into a byte position.
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok {
		h, herr := strconv.ParseUint(hi, 16, 32)
		l, lerr := strconv.ParseUint(lo, 16, 32)
		if herr == nil && lerr == nil {
			return h<<32 | l, nil
		}
	}
	return 0, fmt.Errorf("parsing LSN %q: not of the form X/Y in hexadecimal", s)
}

// PasswordFromFile returns a Password func that reads path at each call, without its
// trailing newline. Errors name the file, never its content.
func PasswordFromFile(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("reading password file: %w", err) // *PathError names path
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return "", fmt.Errorf("password file %s is empty", path)
		}
		return p, nil
	}
}

// PasswordFromEnv returns a Password func that reads the environment variable name at each
// call. Errors name the variable, never its value.
func PasswordFromEnv(name string) func() (string, error) {
	return func() (string, error) {
		p, ok := os.LookupEnv(name)
		switch {
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set", name)
		case p == "":
			return "", fmt.Errorf("environment variable %s is empty", name)
		}
		return p, nil
	}
}
