package config

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// Fleet makes several pgfront instances one for cancel requests: each instance tags the cancel
// keys it hands clients, and forwards a CancelRequest it does not own to the peer that does,
// over the peers' admin listeners, authenticated with the shared secret. A key no instance
// owns (a passthrough session's, or one whose owner is down) goes to the eligible servers of
// the route it arrived on, within a rate. Without this section an instance still issues its
// own keys and uses the fallback.
type Fleet struct {
	// Name is this instance's name in the fleet, from which its key tag is derived. Default
	// "" = the host name.
	Name string `json:"name"`
	// SecretFile / SecretEnv give the secret the fleet's instances share (at least 32
	// bytes): a file holding it or an environment variable. At most one; required when
	// peers are listed. Never logged.
	SecretFile string `json:"secret_file"`
	SecretEnv  string `json:"secret_env"`
	// Peers are the other instances' admin listeners: host:port, or an http:// or https://
	// URL (scheme, host and port only). Default none.
	Peers []string `json:"peers"`
	// DNSPeers are host names whose every address is a peer, at the name's port: a name with
	// one address per instance, such as a Kubernetes headless Service's. They are looked up
	// again every 10 s; this instance's own admin listener among the addresses is left out.
	// host:port only (plain http). Default none.
	DNSPeers []string `json:"dns_peers"`
	// Advertise is the address the other instances reach this one's admin listener at
	// (host:port, or an http(s) URL), registered in Patroni's DCS for discovery: with a
	// fleet secret, an instance whose cluster has a dcs section registers itself under
	// /<namespace>/<scope>/pgfront/<name> and takes the instances registered there as peers.
	// Default "" = admin.listen as bound, an unspecified host (0.0.0.0, ::) replaced by the
	// host name.
	Advertise string `json:"advertise"`
	// CancelFallbackRate is how many CancelRequests per second and route no instance owns
	// are sent to the route's eligible servers (each to every one of them). Default 10; 0 =
	// no fallback (they are dropped).
	CancelFallbackRate float64 `json:"cancel_fallback_rate"`
	// CancelFallbackBurst is the fallback's burst per route. Default 20; at least 1 when
	// the rate is not 0.
	CancelFallbackBurst int `json:"cancel_fallback_burst"`
}

// Fleet defaults.
const (
	defaultCancelFallbackRate  = 10
	defaultCancelFallbackBurst = 20
)

// fleet decodes the fleet section.
func (d *decoder) fleet(f *Fleet) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		d.mapping(n, path, []field{
			{"name", d.str(&f.Name)},
			{"secret_file", d.str(&f.SecretFile)},
			{"secret_env", d.str(&f.SecretEnv)},
			{"peers", d.strs(&f.Peers)},
			{"dns_peers", d.strs(&f.DNSPeers)},
			{"advertise", d.str(&f.Advertise)},
			{"cancel_fallback_rate", d.float(&f.CancelFallbackRate)},
			{"cancel_fallback_burst", d.int(&f.CancelFallbackBurst)},
		})
	}
}

// fleet checks the fleet section.
func (v *validator) fleet() {
	f := v.c.Fleet
	if f.Name != "" || v.m.isSet("fleet.name") {
		v.name("fleet.name", f.Name, "fleet")
	}
	v.oneSource("fleet", "fleet secret", "secret_file", f.SecretFile, "secret_env", f.SecretEnv)
	if len(f.Peers) > 0 && f.SecretFile == "" && f.SecretEnv == "" {
		v.bad("fleet.peers", "peers need a shared secret: set fleet.secret_file or fleet.secret_env")
	}
	if len(f.DNSPeers) > 0 && f.SecretFile == "" && f.SecretEnv == "" {
		v.bad("fleet.dns_peers", "peers need a shared secret: set fleet.secret_file or fleet.secret_env")
	}
	seenName := map[string]bool{}
	for i, p := range f.DNSPeers {
		path := index("fleet.dns_peers", i)
		if strings.Contains(p, "://") {
			v.bad(path, "must be host:port (every address of host is a peer, over http), not %q", p)
			continue
		}
		if _, _, err := splitAddr(p, false); err != nil {
			v.bad(path, "%v", err)
			continue
		}
		if seenName[p] {
			v.bad(path, "%s is listed twice", p)
		}
		seenName[p] = true
	}
	seen := map[string]bool{}
	for i, p := range f.Peers {
		path := index("fleet.peers", i)
		if err := checkPeer(p); err != nil {
			v.bad(path, "%v", err)
			continue
		}
		if seen[p] {
			v.bad(path, "peer %s is listed twice", p)
		}
		seen[p] = true
	}
	if f.Advertise != "" {
		if err := checkPeer(f.Advertise); err != nil {
			v.bad("fleet.advertise", "%v", err)
		}
	}
	if f.CancelFallbackRate < 0 {
		v.bad("fleet.cancel_fallback_rate", "must not be negative, not %g", f.CancelFallbackRate)
	}
	if f.CancelFallbackRate > 0 && f.CancelFallbackBurst < 1 {
		v.bad("fleet.cancel_fallback_burst", "must be at least 1 while cancel_fallback_rate is not 0, not %d", f.CancelFallbackBurst)
	}
}

// checkPeer checks a peer's admin address: host:port, or an http(s) URL with a port.
func checkPeer(p string) error {
	if !strings.Contains(p, "://") {
		_, _, err := splitAddr(p, false)
		return err
	}
	u, err := url.Parse(p)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("must be host:port or an http:// or https:// URL with only a host and port, not %q", p)
	}
	_, _, err = splitAddr(u.Host, false)
	return err
}
