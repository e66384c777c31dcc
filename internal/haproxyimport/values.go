package haproxyimport

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// maxTime is HAProxy's largest timer: 2147483647 ms.
const maxTime = math.MaxInt32 * time.Millisecond

// parseTime reads an HAProxy time: a whole number with an optional unit us, ms, s, m, h or d;
// no unit means milliseconds. A non-zero time under a millisecond or over about 24.8 days is
// refused, as HAProxy refuses it. bare reports a number without a unit.
func parseTime(s string) (d time.Duration, bare bool, err error) {
	digits := len(s) - len(strings.TrimLeft(s, "0123456789"))
	if digits == 0 {
		return 0, false, fmt.Errorf("invalid time %q: want a whole number with an optional unit us, ms, s, m, h or d (no unit = ms)", s)
	}
	unit := time.Millisecond
	switch s[digits:] {
	case "":
		bare = true
	case "us":
		unit = time.Microsecond
	case "ms":
	case "s":
		unit = time.Second
	case "m":
		unit = time.Minute
	case "h":
		unit = time.Hour
	case "d":
		unit = 24 * time.Hour
	default:
		return 0, false, fmt.Errorf("invalid time %q: unknown unit %q (want us, ms, s, m, h or d, one unit only; no unit = ms)", s, s[digits:])
	}
	n, err := strconv.ParseUint(s[:digits], 10, 64)
	if err != nil || n > uint64(maxTime/unit) {
		return 0, false, fmt.Errorf("time %q is over HAProxy's limit of 2147483647ms (about 24.8 days)", s)
	}
	d = time.Duration(n) * unit
	if d > 0 && d < time.Millisecond {
		return 0, false, fmt.Errorf("time %q is under HAProxy's 1ms resolution", s)
	}
	return d.Round(time.Millisecond), bare, nil
}

// parseCount reads a non-negative decimal integer that fits an int32, as HAProxy's counts
// (maxconn, retries, fall, rise, weight, port).
func parseCount(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("invalid number %q: want a whole number from 0 to %d", s, math.MaxInt32)
	}
	return int(n), nil
}

// hostName is a DNS name as pgfront can dial it.
var hostName = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$`)

// address is a host and port as written in the pgfront config.
type address struct {
	host string // an IP address (IPv6 without brackets) or a host name; "0.0.0.0" for HAProxy's "*"
	port int
}

// String writes a as host:port, bracketing IPv6.
func (a address) String() string {
	h := a.host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return h + ":" + strconv.Itoa(a.port)
}

// tcpPrefixes are the address prefixes of TCP sockets; others (unix@, abns@, fd@, udp@,
// quic4@, ...) are not something pgfront can listen on or dial.
var tcpPrefixes = []string{"ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"}

// errNotTCP marks an address that is valid for HAProxy but no TCP address (unix sockets,
// inherited descriptors, ...): not mapped rather than malformed.
type errNotTCP struct{ addr string }

func (e errNotTCP) Error() string {
	return fmt.Sprintf("%q is not a TCP address (pgfront listens on and dials TCP only)", e.addr)
}

// splitHAAddr splits HAProxy's [prefix@]host:port forms: "*:5000", ":5000", "[::]:5000",
// ":::5000", "ipv6@::1:5432". The port is the text after the last colon, "" when there is
// none.
func splitHAAddr(s string) (host, port string, err error) {
	raw := s
	if at := strings.IndexByte(s, '@'); at >= 0 {
		prefix := s[:at+1]
		ok := false
		for _, p := range tcpPrefixes {
			ok = ok || prefix == p
		}
		if !ok {
			return "", "", errNotTCP{raw}
		}
		s = s[at+1:]
	}
	if strings.HasPrefix(s, "/") {
		return "", "", errNotTCP{raw}
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", fmt.Errorf("address %q: unclosed [", raw)
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" {
			return host, "", nil
		}
		if rest[0] != ':' {
			return "", "", fmt.Errorf("address %q: want [IPv6]:port", raw)
		}
		return host, rest[1:], nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, "", nil
	}
	return s[:i], s[i+1:], nil
}

// checkHost accepts an IP address or a host name.
func checkHost(h, raw string) (string, error) {
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.String(), nil
	}
	if !hostName.MatchString(h) || strings.Contains(h, "..") {
		if strings.Contains(h, "$") {
			return "", fmt.Errorf("address %q: host %q is not an IP address or host name (environment variables are not expanded: write the value)", raw, printable(h))
		}
		return "", fmt.Errorf("address %q: host %q is not an IP address or host name", raw, printable(h))
	}
	return h, nil
}

// parsePort reads a TCP port, 1..65535.
func parsePort(p, raw string) (int, error) {
	n, err := strconv.Atoi(p)
	if err != nil || strings.TrimLeft(p, "0123456789") != "" || n < 1 || n > 65535 {
		return 0, fmt.Errorf("address %q: port %q must be a number from 1 to 65535", raw, printable(p))
	}
	return n, nil
}

// parseBindAddr reads one address of a bind line. "*" and "" mean every IPv4 address, as in
// HAProxy ("0.0.0.0" in pgfront; "::" stays "::", which Go listens on dual-stack).
func parseBindAddr(s string) (address, error) {
	host, port, err := splitHAAddr(s)
	if err != nil {
		return address{}, err
	}
	if port == "" {
		return address{}, fmt.Errorf("bind address %q has no port", printable(s))
	}
	if lo, hi, ok := strings.Cut(port, "-"); ok {
		if lo != hi {
			return address{}, errNotTCP{s + " (a port range: pgfront listens on one port per route)"}
		}
		port = lo
	}
	n, err := parsePort(port, s)
	if err != nil {
		return address{}, err
	}
	if host == "" || host == "*" {
		host = "0.0.0.0"
	}
	if host, err = checkHost(host, s); err != nil {
		return address{}, err
	}
	return address{host, n}, nil
}

// parseServerAddr reads a server's address: pgfront needs the port, where HAProxy would use
// the port the client connected to when there is none.
func parseServerAddr(s string) (address, error) {
	host, port, err := splitHAAddr(s)
	if err != nil {
		return address{}, err
	}
	if port == "" || strings.HasPrefix(port, "+") || strings.HasPrefix(port, "-") {
		return address{}, fmt.Errorf("server address %q has no port: HAProxy then connects to the port the client used, pgfront needs the server's own (write %s:5432)", printable(s), printable(host))
	}
	n, err := parsePort(port, s)
	if err != nil {
		return address{}, err
	}
	if host == "" || host == "*" {
		return address{}, fmt.Errorf("server address %q has no host", printable(s))
	}
	if host, err = checkHost(host, s); err != nil {
		return address{}, err
	}
	return address{host, n}, nil
}

// namePattern is what pgfront accepts as a route, cluster or server name.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// pgName turns an HAProxy name into a pgfront name: characters pgfront does not accept
// become '_'.
func pgName(s string) string {
	out := strings.Map(func(r rune) rune {
		if r < 0x80 && namePattern.MatchString(string(r)) {
			return r
		}
		return '_'
	}, s)
	if out == "" {
		out = "_"
	}
	return out
}

// plainScalar is a YAML scalar that needs no quotes and reads back as the same string.
var plainScalar = regexp.MustCompile(`^[A-Za-z_/][A-Za-z0-9_./-]*(:[0-9]+)?$|^[0-9]+(\.[0-9]+){3}:[0-9]+$`)

// yamlString writes s as a YAML scalar that reads back as the string s.
func yamlString(s string) string {
	switch strings.ToLower(s) {
	case "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~":
	default:
		if plainScalar.MatchString(s) {
			return s
		}
	}
	b, _ := json.Marshal(s) // a JSON string is a YAML double-quoted scalar
	return string(b)
}
