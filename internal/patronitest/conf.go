package patronitest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/goccy/go-yaml"
)

// DCS timing: fast enough for tests, and within Patroni's rule ttl >= loop_wait +
// 2*retry_timeout. A killed leader's key expires at most ttl seconds after its last renewal.
const (
	dcsTTL          = 10
	dcsLoopWait     = 2
	dcsRetryTimeout = 4
)

// pgParameters are the cluster-wide PostgreSQL settings (bootstrap.dcs): a fast,
// non-durable server. full_page_writes stays on: pg_rewind needs it.
var pgParameters = map[string]string{
	"fsync":                 "off",
	"synchronous_commit":    "off",
	"max_connections":       "200",
	"max_wal_senders":       "10",
	"max_replication_slots": "10",
	"wal_level":             "replica",
	"wal_log_hints":         "on",
	"wal_keep_size":         "64MB",
	"hot_standby":           "on",
	"shared_buffers":        "32MB",
	// Every shared memory segment lives in the node's IPC namespace and goes with it, even
	// after a SIGKILL; POSIX segments would stay behind in /dev/shm.
	"dynamic_shared_memory_type":  "sysv",
	"wal_retrieve_retry_interval": "100ms",
}

// superuser is the PostgreSQL superuser (initdb --username, Patroni's own connections,
// DSN); replicationUser is the role replicas stream as. pg_hba trusts loopback.
const (
	superuser       = "postgres"
	replicationUser = "replicator"
)

// dcsConfig is the etcd3 section shared by the nodes and patronictl.
func (c *Cluster) dcsConfig() map[string]any {
	return map[string]any{"hosts": []string{c.EtcdAddr()}, "protocol": "http"}
}

// writeNodeConfig writes n's Patroni configuration for its current ports.
func (c *Cluster) writeNodeConfig(n *Node) error {
	pgAddr, restAddr := n.PGAddr(), n.RESTAddr()
	conf := map[string]any{
		"scope":     c.Scope,
		"namespace": c.Namespace,
		"name":      n.Name,
		"log":       map[string]any{"level": "INFO"},
		"restapi":   map[string]any{"listen": restAddr, "connect_address": restAddr},
		"etcd3":     c.dcsConfig(),
		"bootstrap": map[string]any{
			"dcs": map[string]any{
				"ttl":                     dcsTTL,
				"loop_wait":               dcsLoopWait,
				"retry_timeout":           dcsRetryTimeout,
				"maximum_lag_on_failover": 1 << 20,
				"postgresql": map[string]any{
					"use_pg_rewind": true,
					"use_slots":     true,
					"parameters":    pgParameters,
				},
			},
			"initdb": []any{map[string]string{"encoding": "UTF8"}, map[string]string{"locale": "C"}, "no-sync"},
		},
		"postgresql": map[string]any{
			"listen":          pgAddr,
			"connect_address": pgAddr,
			"data_dir":        n.DataDir,
			"bin_dir":         c.bin,
			"pgpass":          filepath.Join(n.Dir, "pgpass"),
			"authentication": map[string]any{
				"superuser":   map[string]string{"username": superuser},
				"replication": map[string]string{"username": replicationUser},
				"rewind":      map[string]string{"username": superuser},
			},
			"parameters": map[string]string{
				"unix_socket_directories": n.Dir,
			},
			"pg_hba": []string{
				"local all all trust",
				"local replication all trust",
				"host all all 127.0.0.1/32 trust",
				"host replication all 127.0.0.1/32 trust",
			},
			"basebackup": []any{map[string]string{"checkpoint": "fast"}},
		},
		"watchdog": map[string]any{"mode": "off"},
	}
	return c.writeYAML(n.ConfigFile, conf)
}

// writeCtlConfig writes the configuration patronictl is run with: the scope and the DCS.
func (c *Cluster) writeCtlConfig() error {
	return c.writeYAML(c.CtlConfig, map[string]any{
		"scope":     c.Scope,
		"namespace": c.Namespace,
		"etcd3":     c.dcsConfig(),
	})
}

func (c *Cluster) writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return c.chown(path)
}

// etcdArgs are the arguments of the cluster's single-member etcd, on loopback ports.
func (c *Cluster) etcdArgs() []string {
	client := "http://" + c.EtcdAddr()
	peer := "http://127.0.0.1:" + strconv.Itoa(c.etcdPeerPort)
	return []string{
		"--name=etcd1",
		"--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=etcd1=" + peer,
		"--initial-cluster-state=new",
		"--initial-cluster-token=" + c.Scope,
		"--logger=zap",
		"--log-outputs=stderr",
	}
}
