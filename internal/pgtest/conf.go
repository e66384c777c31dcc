package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// defaultSettings make a throw-away server fast (no durability) and observable. Options'
// Settings override them.
var defaultSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"wal_level":          "replica",
	"max_wal_senders":    "10",
	"max_connections":    "200",
	"hot_standby":        "on",
	"shared_buffers":     "32MB",
	"log_connections":    "on",
	"log_disconnections": "on",
	// Keep WAL a replica made with pg_basebackup still needs, and let a standby's WAL
	// receiver reconnect quickly after its primary restarts.
	"wal_keep_size":               "64MB",
	"wal_retrieve_retry_interval": "100ms",
}

// includeConf makes postgresql.conf read pgtest.conf last, so that file (rewritten for
// each port, and copied to replicas by pg_basebackup) overrides initdb's values.
func (s *Server) includeConf() error {
	path := filepath.Join(s.DataDir, "postgresql.conf")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("opening postgresql.conf: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# Added by pgfront's pgtest; its settings override the above.\ninclude '%s'\n", pgtestConfName)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing postgresql.conf: %w", err)
	}
	return nil
}

// writeConf writes pgtest.conf for s.Port: defaults, then Options.Settings, then what the
// harness relies on (listen address, port, socket dir, logging to stderr = LogFile).
func (s *Server) writeConf() error {
	settings := maps.Clone(defaultSettings)
	maps.Copy(settings, s.opts.Settings)
	maps.Copy(settings, s.tlsSettings())
	maps.Copy(settings, map[string]string{
		"listen_addresses":        loopbackHost,
		"port":                    strconv.Itoa(s.Port),
		"unix_socket_directories": s.Dir,
		"cluster_name":            s.Name, // also a standby's application_name on its primary
		"log_destination":         "stderr",
		"logging_collector":       "off",
	})
	var b strings.Builder
	b.WriteString("# Written by pgfront's pgtest for this server (port, socket dir); rewritten for each port it tries.\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(settings[k]))
	}
	return s.writeOwned(filepath.Join(s.DataDir, pgtestConfName), b.String())
}

// quoteConf quotes a postgresql.conf value; quoted values are valid for every type.
func quoteConf(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
}

// writeHBA writes pg_hba.conf: users' password lines first (the first matching line wins),
// then trust for everything else on the socket and loopback, replication included. With
// Options.TLS the TCP lines follow its policy (see TLSFiles); the socket lines never change.
func (s *Server) writeHBA(users []hbaUser) error {
	tcp, opts, first := s.hbaTCP()
	var b strings.Builder
	b.WriteString("# Written by pgfront's pgtest. First matching line wins: password users first.\n")
	b.WriteString(first)
	for _, u := range users {
		fmt.Fprintf(&b, "local all \"%s\" %s\n", u.name, u.method)
		fmt.Fprintf(&b, "%s all \"%s\" 127.0.0.1/32 %s%s\n", tcp, u.name, u.method, opts)
		fmt.Fprintf(&b, "%s all \"%s\" ::1/128 %s%s\n", tcp, u.name, u.method, opts)
	}
	b.WriteString("local all all trust\n" +
		"local replication all trust\n")
	for _, db := range []string{"all", "replication"} {
		for _, addr := range []string{"127.0.0.1/32", "::1/128"} {
			fmt.Fprintf(&b, "%s %s all %s trust%s\n", tcp, db, addr, opts)
		}
	}
	return s.writeOwned(filepath.Join(s.DataDir, "pg_hba.conf"), b.String())
}

// reloadHBA makes the running server load its pg_hba.conf and returns once it has: the
// postmaster logs the SIGHUP and reloads pg_hba.conf before it accepts another connection.
func (s *Server) reloadHBA(ctx context.Context) error {
	// A file the server cannot parse would be kept out silently (only logged).
	bad, err := s.QueryValue(ctx, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL")
	if err != nil {
		return fmt.Errorf("checking pg_hba.conf of %s: %w", s.Name, err)
	}
	if bad != "0" {
		return fmt.Errorf("pg_hba.conf of %s has %s bad lines", s.Name, bad)
	}
	offset, err := fileSize(s.LogFile)
	if err != nil {
		return err
	}
	if err := s.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("reloading %s: %w", s.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		text, err := readFrom(s.LogFile, offset)
		if err != nil {
			return err
		}
		if strings.Contains(text, "received SIGHUP, reloading configuration files") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reloading %s: no reload in the server log: %w", s.Name, ctx.Err())
		case <-tick.C:
		}
	}
}

// writeOwned writes a file PostgreSQL must read, owned by the postgres user when root.
func (s *Server) writeOwned(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return s.chown(path)
}

// env is the environment of PostgreSQL programs: the caller's without PG* variables (a
// stray PGPORT or PGDATA would change what they do) and with the C locale; HOME is the
// server dir so nothing reads the caller's ~/.pgpass or ~/.psqlrc.
func (s *Server) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LANG=C", "LC_ALL=C", "HOME="+s.Dir)
}

// run runs a PostgreSQL program to completion, as postgres when root; its output goes into
// the error.
func (s *Server) run(ctx context.Context, prog string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, prog), args...)
	cmd.Dir = s.Dir
	cmd.Env = s.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("running %s for %s: %w\n%s", prog, s.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

func fileSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("reading server log: %w", err)
	}
	return fi.Size(), nil
}

// readFrom returns the content of path from offset on.
func readFrom(path string, offset int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading server log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "", fmt.Errorf("reading server log: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return "", fmt.Errorf("reading server log: %w", err)
	}
	return string(b), nil
}

// tail returns at most the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
