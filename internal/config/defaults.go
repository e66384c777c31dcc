package config

import "time"

// Default values, as documented on the Config fields and in
// pgfront.example.yaml.
// DefaultAdminListen is where the admin listener binds when the file does
// not say.
const DefaultAdminListen = "127.0.0.1:9187"

const (
	defaultMaxConn        = 10000
	defaultMaxQueue       = 1000
	defaultConnectRetries = 2
)

// defaultTimeouts are the global timeouts a file does not set.
var defaultTimeouts = Timeouts{
	Startup:           Duration(10 * time.Second),
	Connect:           Duration(3 * time.Second),
	Queue:             Duration(5 * time.Second),
	FailoverWait:      Duration(35 * time.Second),
	ClientIdle:        Duration(time.Hour),
	IdleInTransaction: Duration(10 * time.Minute),
	ServerIdle:        0,
	ClientFin:         Duration(5 * time.Second),
	ServerFin:         Duration(5 * time.Second),
}

// defaultTCPSide is both sides' tcp settings when the file sets nothing: a peer that vanishes
// is given up within 13s whatever its session is doing (see TCPSide.VanishBound), at the cost
// of one keepalive probe and its answer per idle socket every 5s.
var defaultTCPSide = TCPSide{
	KeepaliveIdle:     Duration(5 * time.Second),
	KeepaliveInterval: Duration(2 * time.Second),
	KeepaliveCount:    4,
	UserTimeout:       Duration(13 * time.Second),
}

// defaultHealth is a cluster's health section when the file sets nothing.
// The password sources have no default.
var defaultHealth = Health{
	Check:         "postgres",
	Interval:      Duration(2 * time.Second),
	FastInterval:  Duration(500 * time.Millisecond),
	Timeout:       Duration(time.Second),
	Rise:          2,
	Fall:          2,
	Jitter:        0.1,
	User:          "postgres",
	Database:      "postgres",
	PatroniScheme: "http",
}

// applyDefaults is the one place defaults are applied: every field the file
// did not set (isSet reports the field paths it did) gets its default, and
// every route's timeouts are resolved against the global ones. Set fields
// are left alone, even when zero: zero has a meaning ("off", "unlimited").
func applyDefaults(c *Config, isSet func(path string) bool) {
	str := func(dst *string, path, def string) {
		if !isSet(path) {
			*dst = def
		}
	}
	num := func(dst *int, path string, def int) {
		if !isSet(path) {
			*dst = def
		}
	}
	dur := func(dst *Duration, path string, def time.Duration) {
		if !isSet(path) {
			*dst = Duration(def)
		}
	}

	str(&c.Log.Format, "log.format", "text")
	str(&c.Log.Level, "log.level", "info")
	num(&c.MaxConn, "maxconn", defaultMaxConn)
	num(&c.MaxQueue, "max_queue", defaultMaxQueue)
	dur(&c.Shutdown.Grace, "shutdown.grace", 30*time.Second)
	defTCP := TCP{Client: defaultTCPSide, Server: defaultTCPSide}
	resolveTCP(&c.TCP, &defTCP, "tcp", isSet)
	str(&c.Admin.Listen, "admin.listen", DefaultAdminListen)
	if !isSet("fleet.cancel_fallback_rate") {
		c.Fleet.CancelFallbackRate = defaultCancelFallbackRate
	}
	num(&c.Fleet.CancelFallbackBurst, "fleet.cancel_fallback_burst", defaultCancelFallbackBurst)
	dur(&c.Alerts.SampleInterval, "alerts.sample_interval", 5*time.Second)
	num(&c.Alerts.CloseWait, "alerts.close_wait", 50)
	num(&c.Alerts.FinWait2, "alerts.fin_wait2", 50)
	dur(&c.Alerts.HalfClosedAge, "alerts.half_closed_age", 30*time.Second)
	num(&c.Alerts.Queue, "alerts.queue", 100)
	if !isSet("alerts.fd_usage") {
		c.Alerts.FDUsage = 0.8
	}

	def := defaultTimeouts
	defFields := def.fields()
	for i, f := range c.Timeouts.fields() {
		dur(f.ptr, "timeouts."+f.key, defFields[i].ptr.D())
	}

	if c.Clusters == nil {
		c.Clusters = map[string]*Cluster{}
	}
	for name, cl := range c.Clusters {
		p := "clusters." + name
		str(&cl.OnMarkedDown, p+".on_marked_down", "shutdown_sessions")
		str(&cl.ServerTLS.Mode, p+".server_tls.mode", "disable")
		h, hp, def := &cl.Health, p+".health", defaultHealth
		str(&h.Check, hp+".check", def.Check)
		dur(&h.Interval, hp+".interval", def.Interval.D())
		dur(&h.FastInterval, hp+".fast_interval", def.FastInterval.D())
		dur(&h.Timeout, hp+".timeout", def.Timeout.D())
		num(&h.Rise, hp+".rise", def.Rise)
		num(&h.Fall, hp+".fall", def.Fall)
		if !isSet(hp + ".jitter") {
			h.Jitter = def.Jitter
		}
		str(&h.User, hp+".user", def.User)
		str(&h.Database, hp+".database", def.Database)
		str(&h.PatroniScheme, hp+".patroni_scheme", def.PatroniScheme)
		for i, s := range cl.Servers {
			sp := index(p+".servers", i)
			num(&s.Weight, sp+".weight", 1)
		}
		dcsDefaults(cl.DCS, p+".dcs", isSet)
	}

	if c.Routes == nil {
		c.Routes = map[string]*Route{}
	}
	global := c.Timeouts.fields()
	for name, r := range c.Routes {
		p := "routes." + name
		balance := "roundrobin"
		if r.Role == "primary" {
			balance = "first"
		}
		str(&r.Balance, p+".balance", balance)
		str(&r.OnClientFin, p+".on_client_fin", "abort")
		str(&r.TLS.Mode, p+".tls.mode", "disable")
		num(&r.ConnectRetries, p+".connect_retries", defaultConnectRetries)
		if r.Role == "replica" { // other roles have no fallback (validate rejects one)
			str(&r.Fallback, p+".fallback", "primary")
		}
		for i, f := range r.Timeouts.fields() {
			dur(f.ptr, p+".timeouts."+f.key, global[i].ptr.D())
		}
		resolveTCP(&r.TCP, &c.TCP, p+".tcp", isSet)
	}
}

// resolveTCP gives every field of t that the section at path (tcp, or a route's) does not set,
// neither for its side nor for both, the value it has in from (the defaults, or the resolved
// global section).
func resolveTCP(t, from *TCP, path string, isSet func(string) bool) {
	fromSides := from.sides()
	for i, sd := range t.sides() {
		fromFields := fromSides[i].side.fields()
		for j, f := range sd.side.fields() {
			if !tcpSet(isSet, path, sd.key, f.key) {
				f.copyFrom(fromFields[j])
			}
		}
	}
}

// tcpSet reports whether the tcp section at path sets key for side, itself or for both sides.
func tcpSet(isSet func(string) bool, path, side, key string) bool {
	return isSet(path+"."+side+"."+key) || isSet(path+"."+key)
}
