// Package preflight owns the checks `pgfront check` makes of a valid config against the
// machine it is about to run on, beyond what the file itself can say: host names of servers
// and Patroni APIs that do not resolve here, password and token environment variables that
// are not set, and certificate, key and CA files that cannot serve — unreadable, a key that
// does not match its certificate, a certificate and key swapped, a CA certificate where a
// server or client certificate belongs, a certificate out of its validity period.
//
//	cfg, src, warnings, err := config.LoadSource(path)
//	...
//	more, err := preflight.Run(ctx, cfg, src, preflight.Options{})
//	// more: warnings (pgfront runs, but ...); err: a *config.Error (pgfront run would fail)
//
// Findings are config.Warning and config.Problem values located at the field that names the
// host, variable or file, so they print like every other config message: FILE:LINE: path: message.
package preflight

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgfront/pgfront/internal/config"
)

// defaultLookupTimeout bounds the host name lookups (they run at once).
const defaultLookupTimeout = 5 * time.Second

// Options are the seams of Run; the zero value checks the real machine.
type Options struct {
	// LookupHost resolves a host name; nil = net.DefaultResolver.LookupHost.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// LookupEnv reads an environment variable; nil = os.LookupEnv.
	LookupEnv func(name string) (string, bool)
	// LookupTimeout bounds all host name lookups together. Default 5s.
	LookupTimeout time.Duration
	// Now is the time certificates' validity is judged at; zero = time.Now().
	Now time.Time
	// Dial connects to an etcd endpoint of a dcs section; nil = net.Dialer.DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Run checks cfg (loaded from the file src describes) against this machine. It returns the
// warnings in file order and, when a file the config names cannot serve (pgfront run would
// fail on it), a *config.Error listing every such problem.
func Run(ctx context.Context, cfg *config.Config, src *config.Source, o Options) ([]config.Warning, error) {
	if o.LookupHost == nil {
		o.LookupHost = net.DefaultResolver.LookupHost
	}
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.LookupTimeout <= 0 {
		o.LookupTimeout = defaultLookupTimeout
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Dial == nil {
		o.Dial = dialer.DialContext
	}
	c := &checker{cfg: cfg, src: src, opts: o}
	c.hosts(ctx)
	c.environment()
	c.certificates()
	c.dcs(ctx)
	sort.SliceStable(c.warnings, func(i, j int) bool { return c.warnings[i].Line < c.warnings[j].Line })
	if len(c.problems) == 0 {
		return c.warnings, nil
	}
	sort.SliceStable(c.problems, func(i, j int) bool { return c.problems[i].Line < c.problems[j].Line })
	return c.warnings, &config.Error{Problems: c.problems}
}

// checker collects the findings of one Run; it is used by one goroutine.
type checker struct {
	cfg      *config.Config
	src      *config.Source
	opts     Options
	warnings []config.Warning
	problems []config.Problem
}

func (c *checker) warn(path, format string, args ...any) {
	c.warnings = append(c.warnings, c.src.Warning(path, format, args...))
}

func (c *checker) problem(path, format string, args ...any) {
	c.problems = append(c.problems, c.src.Problem(path, format, args...))
}

// hostField is a config field holding a host:port whose host is a name.
type hostField struct {
	path, host string
	unresolved string // what a host that does not resolve costs
}

// What an unresolved host costs, by field.
const (
	serverUnresolved  = "its health checks fail, and it gets no sessions, until it does"
	dnsPeerUnresolved = "no peer is found through it until it does (a cancel that reaches this instance for another's session is lost)"
)

// hosts resolves every host name of the servers' and Patroni APIs' addresses and of
// fleet.dns_peers at once and warns about those that do not resolve: their health checks
// fail (or no peer is found through them) until they do.
func (c *checker) hosts(ctx context.Context) {
	var fields []hostField
	add := func(path, addr, unresolved string) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			return // validation has judged the form
		}
		if _, err := netip.ParseAddr(host); err == nil {
			return
		}
		fields = append(fields, hostField{path, host, unresolved})
	}
	for _, name := range c.cfg.ClusterNames() {
		for i, s := range c.cfg.Clusters[name].Servers {
			p := "clusters." + name + ".servers[" + strconv.Itoa(i) + "]"
			add(p+".address", s.Address, serverUnresolved)
			add(p+".patroni", s.Patroni, serverUnresolved)
		}
	}
	for i, p := range c.cfg.Fleet.DNSPeers {
		add("fleet.dns_peers["+strconv.Itoa(i)+"]", p, dnsPeerUnresolved)
	}
	if len(fields) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.LookupTimeout)
	defer cancel()
	results := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, f := range fields {
		mu.Lock()
		_, seen := results[f.host]
		results[f.host] = nil
		mu.Unlock()
		if seen {
			continue
		}
		wg.Add(1)
		go func(host string) {
			defer wg.Done()
			_, err := c.opts.LookupHost(ctx, host)
			mu.Lock()
			results[host] = err
			mu.Unlock()
		}(f.host)
	}
	wg.Wait()
	for _, f := range fields {
		if err := results[f.host]; err != nil {
			c.warn(f.path, "host %q does not resolve on this machine (%v): %s", f.host, lookupReason(err), f.unresolved)
		}
	}
}

// lookupReason says why a lookup failed, without repeating the host name.
func lookupReason(err error) string {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		switch {
		case dnsErr.IsNotFound:
			return "no such host"
		case dnsErr.IsTimeout:
			return "the lookup timed out"
		}
		return dnsErr.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "the lookup timed out"
	}
	return err.Error()
}

// environment warns about environment variables the config reads that are not set here.
// `pgfront check` often runs in another environment than the service (a shell, not the
// systemd unit or the container), so these are warnings, not errors.
func (c *checker) environment() {
	for _, name := range c.cfg.ClusterNames() {
		h := c.cfg.Clusters[name].Health
		if h.Check != "postgres" || h.PasswordEnv == "" {
			continue
		}
		p := "clusters." + name + ".health.password_env"
		switch v, ok := c.opts.LookupEnv(h.PasswordEnv); {
		case !ok:
			c.warn(p, "environment variable %s is not set here: the health checks of cluster %s cannot log in without it (set it where pgfront runs: the systemd unit's Environment= or EnvironmentFile=, the container's env)", h.PasswordEnv, name)
		case v == "":
			c.warn(p, "environment variable %s is set but empty: the health checks of cluster %s log in without a password", h.PasswordEnv, name)
		}
	}
	a := c.cfg.Admin
	for _, t := range []struct{ key, env string }{{"read_token_env", a.ReadTokenEnv}, {"admin_token_env", a.AdminTokenEnv}} {
		if t.env == "" {
			continue
		}
		switch v, ok := c.opts.LookupEnv(t.env); {
		case !ok:
			c.warn("admin."+t.key, "environment variable %s is not set here: pgfront run refuses to start without it (set it where pgfront runs)", t.env)
		case v == "" || isSpace(v):
			c.warn("admin."+t.key, "environment variable %s is set but empty: pgfront run refuses an empty token", t.env)
		}
	}
	if env := c.cfg.Fleet.SecretEnv; env != "" {
		switch v, ok := c.opts.LookupEnv(env); {
		case !ok:
			c.warn("fleet.secret_env", "environment variable %s is not set here: pgfront run refuses to start without it (set it where pgfront runs)", env)
		case len(strings.TrimSpace(v)) < 32:
			c.warn("fleet.secret_env", "environment variable %s holds fewer than 32 bytes: pgfront run refuses so short a fleet secret", env)
		}
	}
}

// FleetSecretUnset reports whether the fleet secret variable cfg reads is missing or empty
// here (nil lookupEnv = os.LookupEnv): Run warns about it, and a check that builds the config
// should leave it out rather than fail on it.
func FleetSecretUnset(cfg *config.Config, lookupEnv func(string) (string, bool)) bool {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	if cfg.Fleet.SecretEnv == "" {
		return false
	}
	v, ok := lookupEnv(cfg.Fleet.SecretEnv)
	return !ok || isSpace(v)
}

// UnsetEnv returns the names of the admin token variables cfg reads that lookupEnv does not
// find (nil = os.LookupEnv): Run warns about them, and a check that builds the config should
// leave them out rather than fail on them.
func UnsetEnv(cfg *config.Config, lookupEnv func(string) (string, bool)) (readToken, adminToken bool) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	unset := func(name string) bool {
		if name == "" {
			return false
		}
		v, ok := lookupEnv(name)
		return !ok || isSpace(v)
	}
	return unset(cfg.Admin.ReadTokenEnv), unset(cfg.Admin.AdminTokenEnv)
}

func isSpace(s string) bool { return strings.TrimSpace(s) == "" }
