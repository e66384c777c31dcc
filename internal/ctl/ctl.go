// Package ctl owns the command-line clients of the admin API: `pgfront ctl`, which lists
// routes, servers, sessions, sockets and alerts as tables, prints the running configuration,
// reloads it, kills sessions and sets a server ready, drain or maint; and `pgfront probe`,
// which asks /healthz whether pgfront takes clients (a container's HEALTHCHECK, no shell
// needed). Both find the admin API the same way (see Options and the help text).
//
//	pgfront ctl sessions
//	pgfront ctl -c /etc/pgfront/pgfront.yaml servers     # address and token from the config
//	pgfront ctl kill 42 -addr http://10.0.0.5:9187 -token-file /etc/pgfront/admin.token
//	pgfront ctl server main/pg2 drain
//	pgfront probe
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pgfront/pgfront/internal/cli"
	"github.com/pgfront/pgfront/internal/config"
)

// DefaultAddr is the admin listener's default address.
const DefaultAddr = "http://127.0.0.1:9187"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// maxResponseBytes bounds what ctl reads from the API.
const maxResponseBytes = 64 << 20

// Options are what Run and Probe get from the process.
type Options struct {
	Stdout, Stderr io.Writer
	// Getenv reads the environment (PGFRONT_ADMIN_ADDR, PGFRONT_TOKEN and the token variables
	// a config names); nil = os.Getenv.
	Getenv func(string) string
	// DefaultConfig is the config file read for the admin address and token when -c names
	// none, if it exists; "" = none. pgfront passes cli.DefaultConfig.
	DefaultConfig string
}

func (o *Options) defaults() {
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
}

const commandsText = `Commands:
  routes                            list the routes (listeners)
  servers                           list the PostgreSQL servers and their health
  sessions                          list the open sessions
  sockets                           show pgfront's TCP socket states
  alerts                            list the alerts and whether they are active
  fleet                             show this instance's fleet (name, key tag) and the peers
                                    it forwards CancelRequests to
  config                            print the running configuration (secrets redacted),
                                    its generation and hash
  reload                            re-read the config file and apply it; an invalid file
                                    changes nothing and its problems are printed (exit 1)
  kill ID                           end session ID now
  server CLUSTER/SERVER ready|drain|maint
                                    set a server's administrative state
`

// findingText says how ctl finds the admin API and its token.
const findingText = "Which admin API: the first of -addr; admin.listen of the config -c names;\n" +
	"$PGFRONT_ADMIN_ADDR; admin.listen of " + cli.DefaultConfig + ", if it exists; else\n" +
	DefaultAddr + ". A wildcard admin.listen (0.0.0.0:9187) is called on loopback.\n" +
	"Which token: the first of -token-file; the token file or variable of the config -c names;\n" +
	"$PGFRONT_TOKEN; those of the default config. From a config, a read command uses the read\n" +
	"token when it can have it, an action the admin token."

// Help writes `pgfront ctl`'s help.
func Help(w io.Writer) {
	fs, _ := newFlags()
	cli.Help{
		Usage: []string{"pgfront ctl [flags] COMMAND [ARGS]   (flags may also follow the command)"},
		About: "Talks to a running pgfront's admin API: lists, prints, reloads, kills sessions and sets\n" +
			"server states. Exit 0 on success, 1 when the API refuses or cannot be reached, 2 on a\n" +
			"usage mistake.\n\n" + commandsText + "\n" + findingText,
		Examples: []string{
			"pgfront ctl sessions",
			"pgfront ctl servers -c /etc/pgfront/pgfront.yaml      # address and token from the config",
			"pgfront ctl -addr http://10.0.0.5:9187 -token-file admin.token kill 42",
			"pgfront ctl server main/pg2 drain                    # no new sessions on pg2",
			"pgfront ctl -json sessions | jq '.[] | select(.state == \"idle in transaction\")'",
		},
	}.Write(w, fs)
}

// flags are ctl's and probe's flags.
type flags struct {
	addr, config, tokenFile string
	json                    bool
	timeout                 time.Duration
}

func newFlags() (*flag.FlagSet, *flags) {
	fs := flag.NewFlagSet("pgfront ctl", flag.ContinueOnError)
	f := &flags{}
	fs.StringVar(&f.addr, "addr", "", "admin API address, http://HOST:PORT or HOST:PORT (default: see above; env PGFRONT_ADMIN_ADDR)")
	fs.StringVar(&f.config, "c", "", "config file to take the admin address and token from (default "+cli.DefaultConfig+", if it exists)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token (default: env PGFRONT_TOKEN)")
	fs.BoolVar(&f.json, "json", false, "print the API's JSON instead of a table")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "time limit of the request")
	return fs, f
}

// Run runs `pgfront ctl ARGS...`; returns the exit code (0 ok, 1 failure, 2 usage).
func Run(args []string, o Options) int {
	o.defaults()
	fs, f := newFlags()
	rest, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) || (err == nil && len(rest) > 0 && rest[0] == "help") {
		Help(o.Stdout)
		return exitOK
	}
	usage := func(err error) int {
		fmt.Fprintf(o.Stderr, "pgfront ctl: %v\nRun 'pgfront ctl -h' for usage.\n", err)
		return exitUsage
	}
	if err != nil {
		return usage(err)
	}
	if len(rest) == 0 {
		return usage(errors.New("no command"))
	}
	cmd, err := parseCommand(rest)
	if err != nil {
		return usage(err)
	}
	if f.timeout <= 0 {
		return usage(errors.New("-timeout must be positive"))
	}
	tg, err := findTarget(fs, f, o)
	if err == nil {
		tg.token, err = tg.findToken(f.tokenFile, o.Getenv, cmd.method != http.MethodGet)
	}
	if err != nil {
		var ue *cli.UsageError
		if errors.As(err, &ue) {
			return usage(err)
		}
		fmt.Fprintf(o.Stderr, "pgfront ctl: %v\n", err)
		return exitFailure
	}
	for _, n := range tg.notes {
		fmt.Fprintf(o.Stderr, "pgfront ctl: note: %s\n", n)
	}

	c := newClient(tg, f.timeout)
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	body, err := c.do(ctx, cmd.method, cmd.path, cmd.body)
	if err != nil {
		fmt.Fprintf(o.Stderr, "pgfront ctl: %v\n", err)
		return exitFailure
	}
	if f.json {
		o.Stdout.Write(body)
		if !bytes.HasSuffix(body, []byte("\n")) {
			io.WriteString(o.Stdout, "\n")
		}
		return exitOK
	}
	if err := cmd.print(o.Stdout, body, time.Now()); err != nil {
		fmt.Fprintf(o.Stderr, "pgfront ctl: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// command is one parsed command: the request to send and how to print its answer.
type command struct {
	method, path string
	body         []byte
	print        func(w io.Writer, body []byte, now time.Time) error
}

// parseCommand checks the command and its arguments; errors are usage errors.
func parseCommand(args []string) (command, error) {
	name, params := args[0], args[1:]
	want := func(n int, usage string) error {
		if len(params) != n {
			return fmt.Errorf("usage: pgfront ctl %s", usage)
		}
		return nil
	}
	list := func(path string, print func(io.Writer, []byte, time.Time) error) (command, error) {
		if err := want(0, name); err != nil {
			return command{}, err
		}
		return command{method: http.MethodGet, path: path, print: print}, nil
	}
	switch name {
	case "routes":
		return list("/api/v1/routes", printRoutes)
	case "servers":
		return list("/api/v1/servers", printServers)
	case "sessions":
		return list("/api/v1/sessions", printSessions)
	case "sockets":
		return list("/api/v1/sockets", printSockets)
	case "alerts":
		return list("/api/v1/alerts", printAlerts)
	case "fleet":
		return list("/api/v1/overview", printFleet)
	case "config":
		return list("/api/v1/config", printIndented)
	case "reload":
		if err := want(0, "reload"); err != nil {
			return command{}, err
		}
		return command{method: http.MethodPost, path: "/api/v1/reload", print: printReload}, nil
	case "kill":
		if err := want(1, "kill ID"); err != nil {
			return command{}, err
		}
		id, err := strconv.ParseUint(params[0], 10, 64)
		if err != nil {
			return command{}, fmt.Errorf("kill: session id %q is not a number", params[0])
		}
		return command{method: http.MethodPost, path: "/api/v1/sessions/" + strconv.FormatUint(id, 10) + "/kill", print: printKilled}, nil
	case "server":
		if err := want(2, "server CLUSTER/SERVER ready|drain|maint"); err != nil {
			return command{}, err
		}
		cluster, server, ok := strings.Cut(params[0], "/")
		if !ok || cluster == "" || server == "" || strings.Contains(server, "/") {
			return command{}, fmt.Errorf("server: %q is not CLUSTER/SERVER", params[0])
		}
		state := params[1]
		switch state {
		case "ready", "drain", "maint":
		default:
			return command{}, fmt.Errorf("server: state %q is not ready, drain or maint", state)
		}
		body, _ := json.Marshal(map[string]string{"state": state})
		return command{
			method: http.MethodPost,
			path:   "/api/v1/servers/" + url.PathEscape(cluster) + "/" + url.PathEscape(server) + "/state",
			body:   body,
			print:  printState,
		}, nil
	}
	return command{}, fmt.Errorf("unknown command %q", name)
}

// baseURL accepts http(s)://host:port[/prefix] or a bare host:port.
func baseURL(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("bad -addr %q: want http://HOST:PORT", addr)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// listenURL turns an admin.listen address into one to call: a wildcard host (":9187",
// "0.0.0.0:9187", "[::]:9187") is reached on loopback.
func listenURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin.listen %q is not host:port", listen)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// target is the admin API a run calls, and how it was chosen.
type target struct {
	base  string // http://127.0.0.1:9187
	from  string // "-addr", "admin.listen in FILE", "$PGFRONT_ADMIN_ADDR", "the default"
	token string
	notes []string // said on stderr before the call (a default config that could not be used)
	// explicit is the config -c named; implicit the default config, when it exists and loads.
	explicit, implicit *config.Config
}

// findTarget works out the address, from the most explicit source down: -addr, the config -c
// names, $PGFRONT_ADMIN_ADDR, the default config (if it exists), DefaultAddr.
func findTarget(fs *flag.FlagSet, f *flags, o Options) (target, error) {
	var tg target
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })

	if set["c"] {
		if f.config == "" {
			return tg, cli.Usagef("-c needs a config file")
		}
		cfg, _, err := config.Load(f.config)
		if err != nil {
			return tg, fmt.Errorf("reading the admin address from %s: %w", f.config, err)
		}
		tg.explicit = cfg
	} else if o.DefaultConfig != "" {
		if _, err := os.Stat(o.DefaultConfig); err == nil {
			cfg, _, err := config.Load(o.DefaultConfig)
			if err != nil {
				tg.notes = append(tg.notes, fmt.Sprintf("not using %s for the admin address: %v", o.DefaultConfig, firstLine(err)))
			} else {
				tg.implicit = cfg
			}
		}
	}
	explicit, implicit := tg.explicit, tg.implicit

	// The address.
	fromConfig := func(cfg *config.Config) error {
		if cfg.Admin.Listen == "" {
			return fmt.Errorf("%s turns the admin API off (admin.listen is empty): set admin.listen there, or use -addr", cfg.Path)
		}
		u, err := listenURL(cfg.Admin.Listen)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.Path, err)
		}
		tg.base, tg.from = u, "admin.listen in "+cfg.Path
		return nil
	}
	var err error
	switch env := o.Getenv("PGFRONT_ADMIN_ADDR"); {
	case set["addr"]:
		if tg.base, err = baseURL(f.addr); err != nil {
			return tg, &cli.UsageError{Err: err}
		}
		tg.from = "-addr"
	case explicit != nil:
		if err := fromConfig(explicit); err != nil {
			return tg, err
		}
	case env != "":
		if tg.base, err = baseURL(env); err != nil {
			return tg, &cli.UsageError{Err: fmt.Errorf("$PGFRONT_ADMIN_ADDR: %w", err)}
		}
		tg.from = "$PGFRONT_ADMIN_ADDR"
	case implicit != nil:
		if err := fromConfig(implicit); err != nil {
			return tg, err
		}
	default:
		tg.base, tg.from = DefaultAddr, "the default"
	}

	return tg, nil
}

// findToken works out the token, from the most explicit source down: -token-file, the config
// -c named, $PGFRONT_TOKEN, the default config; none is "". action says the command needs the
// admin scope.
func (tg *target) findToken(tokenFile string, getenv func(string) string, action bool) (string, error) {
	switch env := strings.TrimSpace(getenv("PGFRONT_TOKEN")); {
	case tokenFile != "":
		return loadToken(tokenFile)
	case tg.explicit != nil:
		return configToken(tg.explicit.Admin, getenv, action)
	case env != "":
		return env, nil
	case tg.implicit != nil:
		return configToken(tg.implicit.Admin, getenv, action)
	}
	return "", nil
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// loadToken reads a token file; surrounding white space (a trailing newline) is not part of
// the token.
func loadToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading token file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("reading token file %s: it is empty", file)
	}
	return token, nil
}

// configToken takes a token from the sources a config names: for a read command the read
// token if it can be had, else the admin token; for an action the admin token, else the read
// one (the API then says the action needs the admin token). No token configured is "".
func configToken(a config.Admin, getenv func(string) string, action bool) (string, error) {
	type source struct{ key, file, env string }
	sources := []source{
		{"admin.read_token", a.ReadTokenFile, a.ReadTokenEnv},
		{"admin.admin_token", a.AdminTokenFile, a.AdminTokenEnv},
	}
	if action {
		sources[0], sources[1] = sources[1], sources[0]
	}
	var why []string
	for _, s := range sources {
		switch {
		case s.file != "":
			tok, err := loadToken(s.file)
			if err == nil {
				return tok, nil
			}
			why = append(why, fmt.Sprintf("%s_file: %v", s.key, err))
		case s.env != "":
			if tok := strings.TrimSpace(getenv(s.env)); tok != "" {
				return tok, nil
			}
			why = append(why, fmt.Sprintf("%s_env: $%s is not set", s.key, s.env))
		}
	}
	if len(why) == 0 {
		return "", nil
	}
	return "", fmt.Errorf("no token from the config: %s (or use -token-file or $PGFRONT_TOKEN)", strings.Join(why, "; "))
}

// client calls the admin API.
type client struct {
	tg        target
	transport *http.Transport
	http      *http.Client
}

// newClient makes a client for one request: no keep-alive, so nothing stays open after the
// run (close releases the rest).
func newClient(tg target, timeout time.Duration) *client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DisableKeepAlives = true
	return &client{tg: tg, transport: transport, http: &http.Client{Timeout: timeout, Transport: transport}}
}

func (c *client) close() { c.transport.CloseIdleConnections() }

// do sends one request and returns the body of a 2xx answer; any other answer becomes an
// error with the HTTP status and the API's error text, and an API it cannot reach an error
// that names the address and how it was chosen.
func (c *client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.tg.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.tg.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.tg.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, fmt.Errorf("cannot reach the admin API at %s (%s): %v\n"+
				"  choose another with -addr URL, -c CONFIG (its admin.listen) or $PGFRONT_ADMIN_ADDR", c.tg.base, c.tg.from, opErr)
		}
		return nil, fmt.Errorf("calling the admin API at %s (%s): %w", c.tg.base, c.tg.from, unwrapURL(err))
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
	}
	if res.StatusCode/100 != 2 {
		return b, &apiError{status: res.Status, text: errorText(b)}
	}
	return b, nil
}

// unwrapURL drops *url.Error's `Get "http://...":` prefix: the message already names the
// address.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// apiError is a non-2xx answer: "401 Unauthorized: token required: ...".
type apiError struct {
	status string
	text   string
}

func (e *apiError) Error() string {
	if e.text == "" {
		return e.status
	}
	return e.status + ": " + e.text
}

// errorText is the "error" of a JSON error body, else the body itself, cut short.
func errorText(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
