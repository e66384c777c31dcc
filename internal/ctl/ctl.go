// Package ctl owns `pgfront ctl`, the command-line client of the admin API: it lists routes,
// servers, sessions, sockets and alerts as tables, prints the running configuration, kills
// sessions and sets a server ready, drain or maint.
//
//	pgfront ctl sessions
//	pgfront ctl -addr http://10.0.0.5:9187 -token-file /etc/pgfront/admin.token kill 42
//	pgfront ctl server main/pg2 drain
package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
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

const usageText = `usage: pgfront ctl [flags] COMMAND [ARGS]

Commands:
  routes                            list the routes (listeners)
  servers                           list the PostgreSQL servers and their health
  sessions                          list the open sessions
  sockets                           show pgfront's TCP socket states
  alerts                            list the alerts and whether they are active
  config                            print the running configuration (secrets redacted),
                                    its generation and hash
  reload                            re-read the config file and apply it; an invalid file
                                    changes nothing and its problems are printed (exit 1)
  kill ID                           end session ID now
  server CLUSTER/SERVER ready|drain|maint
                                    set a server's administrative state

Flags:
`

// Run runs `pgfront ctl ARGS...`; returns the exit code (0 ok, 1 failure, 2 usage).
func Run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("pgfront ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := DefaultAddr
	if v := getenv("PGFRONT_ADMIN_ADDR"); v != "" {
		addr = v
	}
	fs.StringVar(&addr, "addr", addr, "admin API address (env PGFRONT_ADMIN_ADDR)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (default: env PGFRONT_TOKEN)")
	rawJSON := fs.Bool("json", false, "print the API's JSON instead of a table")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit of the request")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "pgfront ctl: no command")
		fs.Usage()
		return exitUsage
	}
	if rest[0] == "help" {
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	}
	cmd, err := parseCommand(rest)
	if err != nil {
		fmt.Fprintf(stderr, "pgfront ctl: %v\n", err)
		fs.Usage()
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "pgfront ctl: -timeout must be positive")
		return exitUsage
	}
	base, err := baseURL(addr)
	if err != nil {
		fmt.Fprintf(stderr, "pgfront ctl: %v\n", err)
		return exitUsage
	}
	token, err := loadToken(*tokenFile, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "pgfront ctl: %v\n", err)
		return exitFailure
	}

	// One request per run: no keep-alive, so nothing stays open after Run returns.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.DisableKeepAlives = true
	defer transport.CloseIdleConnections()
	c := &client{base: base, token: token, http: &http.Client{Timeout: *timeout, Transport: transport}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, err := c.do(ctx, cmd.method, cmd.path, cmd.body)
	if err != nil {
		fmt.Fprintf(stderr, "pgfront ctl: %v\n", err)
		return exitFailure
	}
	if *rawJSON {
		stdout.Write(body)
		if !bytes.HasSuffix(body, []byte("\n")) {
			io.WriteString(stdout, "\n")
		}
		return exitOK
	}
	if err := cmd.print(stdout, body, time.Now()); err != nil {
		fmt.Fprintf(stderr, "pgfront ctl: %v\n", err)
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

// loadToken reads the token from the file when one is named, else from $PGFRONT_TOKEN;
// surrounding white space (a trailing newline) is not part of it.
func loadToken(file string, getenv func(string) string) (string, error) {
	if file == "" {
		return strings.TrimSpace(getenv("PGFRONT_TOKEN")), nil
	}
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

// client calls the admin API.
type client struct {
	base  string
	token string
	http  *http.Client
}

// do sends one request and returns the body of a 2xx answer; any other answer becomes an
// error with the HTTP status and the API's error text.
func (c *client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling the admin API: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
	}
	if res.StatusCode/100 != 2 {
		return nil, &apiError{status: res.Status, text: errorText(b)}
	}
	return b, nil
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
