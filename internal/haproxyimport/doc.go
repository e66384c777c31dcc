// Package haproxyimport owns `pgfront import haproxy`: it reads an HAProxy configuration of the
// kind run in front of Patroni today (HAProxy's config syntax, the global, defaults, listen,
// frontend and backend sections) and writes the pgfront configuration that does the same job,
// as YAML with a comment on each key saying which HAProxy line it comes from, a list of what
// could not be mapped and why, and warnings for the traps of the original (half-closed
// connections held for the whole client or server timeout).
//
//	res, err := haproxyimport.Import(data, "haproxy.cfg")
//	if err != nil {
//		return err // *haproxyimport.Error: one "haproxy.cfg:LINE: message" per problem
//	}
//	os.Stdout.Write(res.YAML) // loads with config.Parse; res.Skipped and res.Warnings say the rest
//
// The mapping:
//
//   - a listen section (or a frontend with its default_backend) whose health check is
//     `option httpchk` (or `http-check send`) on a Patroni endpoint becomes a route: /, /primary,
//     /master, /leader and /read-write give role primary; /replica gives replica
//     (?lag=N gives max_lag.bytes); /read-only (the replicas and the primary) and /health give
//     any. Its first TCP bind is the route's listen address.
//   - the servers of those sections become the servers of a cluster "main" with
//     health.check patroni; each server's check address (addr, else its own host) and check port
//     give its patroni address. Sections that share no server become separate clusters.
//   - inter, fastinter, fall, rise, timeout check and check-ssl give the cluster's health
//     settings; on-marked-down shutdown-sessions gives on_marked_down; maxconn and weight the
//     server's. HAProxy counts a server's maxconn per proxy, pgfront per server: the largest
//     is kept.
//   - global maxconn gives maxconn; a frontend's (or listen's) maxconn the route's; balance
//     roundrobin, static-rr, leastconn and first the route's balance; retries (and option
//     redispatch) the route's connect_retries.
//   - timeouts: HAProxy in TCP mode ends a connection silent both ways for the shorter of
//     timeout client and timeout server (timeout tunnel replaces both); pgfront bounds each
//     state of a session on its own, so that one bound becomes client_idle,
//     idle_in_transaction and server_idle. timeout connect gives connect, timeout queue (or,
//     as in HAProxy, timeout connect) gives queue, client-fin and server-fin give client_fin
//     and server_fin. A 0 means "no timeout" in HAProxy; in pgfront 0 is "off" for the idle and
//     FIN bounds, so those carry over, while connect and queue keep pgfront's defaults.
//     timeout queue is the wait for a slot only: the wait for a server of the route's role
//     during a failover (pgfront's failover_wait, default 35s) has no HAProxy counterpart
//     (HAProxy refuses at once when every server is down) and keeps its default.
//
// Everything else is listed as not mapped, with the reason. Malformed input (an unknown
// section, a keyword outside any section, a server without an address, a bad time such as
// `5x`, an unterminated quote) is an *Error listing every problem with its line; Import never
// panics. Import validates its own output with internal/config, and reports what `pgfront
// check` would warn about in it.
package haproxyimport
