package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Decoding walks goccy/go-yaml's AST against the schema instead of using
// yaml.Unmarshal: the library decoder stops at the first error, and we want
// every unknown key, type error and bad duration in one report, each with
// its line and field path. The walk also records which fields the file set
// (for defaults and per-route timeout inheritance) and the line of every
// path (for validation and lint messages).

const (
	maxAliasHops  = 32 // an alias chain longer than this is a loop
	maxMergeDepth = 8  // nesting of "<<" merge keys
	// maxMappings bounds the mappings one decode visits: merge keys over
	// aliases can blow a small file up exponentially ("billion laughs").
	maxMappings = 100_000
)

// problems collects every problem found in one file.
type problems struct {
	file string
	data []byte // the file's text, for hints on YAML syntax errors
	list []Problem
}

// add records a problem unless path, or a path enclosing it, already has
// one: a value that failed to decode must not also be reported as missing
// or invalid by validation.
func (ps *problems) add(line int, path, format string, args ...any) {
	for _, p := range ps.list {
		if p.Path != "" && (path == p.Path || isUnder(path, p.Path)) {
			return
		}
	}
	ps.list = append(ps.list, Problem{File: ps.file, Line: line, Path: path, Message: fmt.Sprintf(format, args...)})
}

// err returns nil or an *Error with the problems in file order.
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	list := append([]Problem(nil), ps.list...)
	sort.SliceStable(list, func(i, j int) bool { return list[i].Line < list[j].Line })
	return &Error{Problems: list}
}

// isUnder reports whether path lies inside the node at parent.
func isUnder(path, parent string) bool {
	return strings.HasPrefix(path, parent) && len(path) > len(parent) &&
		(path[len(parent)] == '.' || path[len(parent)] == '[')
}

// join appends a mapping key to a field path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index appends a sequence index to a field path.
func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// meta is what decoding learned about the file besides the values.
type meta struct {
	lines map[string]int  // every path present in the file -> its line
	set   map[string]bool // scalar paths given a non-null value that decoded
}

func newMeta() *meta {
	return &meta{lines: map[string]int{}, set: map[string]bool{}}
}

func (m *meta) isSet(path string) bool { return m.set[path] }

// line returns the line of path or, when the file does not contain it (a
// missing field), of its nearest enclosing node.
func (m *meta) line(path string) int {
	for {
		if l, ok := m.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			path = ""
		} else {
			path = path[:i]
		}
	}
}

// parseRoot parses data into its single document's top-level mapping.
func parseRoot(data []byte, ps *problems) (root ast.Node, ok bool) {
	f, err := parseYAML(data)
	if err != nil {
		var ye yaml.Error
		if errors.As(err, &ye) {
			line, col := tokenLine(ye.GetToken()), tokenColumn(ye.GetToken())
			msg := "invalid YAML: " + ye.GetMessage()
			if hint := yamlHint(ps.data, line); hint != "" {
				msg += " (hint: " + hint + ")"
			}
			ps.list = append(ps.list, Problem{File: ps.file, Line: line, Column: col, Message: msg})
		} else {
			ps.add(0, "", "invalid YAML: %v", err)
		}
		return nil, false
	}
	var docs []*ast.DocumentNode
	for _, d := range f.Docs {
		if d != nil && d.Body != nil {
			docs = append(docs, d)
		}
	}
	switch {
	case len(docs) == 0:
		ps.add(0, "", "the config file is empty")
		return nil, false
	case len(docs) > 1:
		ps.add(nodeLine(docs[1].Body), "", "the config file must hold one YAML document, not %d", len(docs))
		return nil, false
	}
	root = docs[0].Body
	switch root.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return root, true
	}
	ps.add(nodeLine(root), "", "the top level must be a mapping (log, maxconn, clusters, routes, ...), not %s", kind(root))
	return nil, false
}

// parseYAML runs goccy's parser, turning a panic on hostile input into an
// error: Parse must never take the process down over a bad file.
func parseYAML(data []byte) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("parser failed: %v", r)
		}
	}()
	return parser.ParseBytes(data, 0)
}

// field maps one YAML key of a mapping to the function that decodes its value.
type field struct {
	key string
	dec func(n ast.Node, path string)
}

// entry is one key/value pair of a mapping, after merge keys are applied.
type entry struct {
	key   string
	line  int
	value ast.Node
}

type decoder struct {
	meta     *meta
	ps       *problems
	anchors  map[string][]*ast.AnchorNode // by name, in document order
	mappings int                          // mappings visited, for maxMappings
}

func newDecoder(root ast.Node, m *meta, ps *problems) *decoder {
	d := &decoder{meta: m, ps: ps, anchors: map[string][]*ast.AnchorNode{}}
	ast.Walk(anchorCollector(d.anchors), root)
	m.lines[""] = nodeLine(root)
	return d
}

type anchorCollector map[string][]*ast.AnchorNode

func (c anchorCollector) Visit(n ast.Node) ast.Visitor {
	if a, ok := n.(*ast.AnchorNode); ok && a.Name != nil && a.Name.GetToken() != nil {
		name := a.Name.GetToken().Value
		c[name] = append(c[name], a)
	}
	return c
}

func (d *decoder) problem(line int, path, format string, args ...any) {
	d.ps.add(line, path, format, args...)
}

// config decodes the top-level mapping.
func (d *decoder) config(root ast.Node) *Config {
	c := &Config{}
	d.mapping(root, "", []field{
		{"log", func(n ast.Node, p string) {
			d.mapping(n, p, []field{
				{"format", d.str(&c.Log.Format)},
				{"level", d.str(&c.Log.Level)},
			})
		}},
		{"maxconn", d.int(&c.MaxConn)},
		{"max_queue", d.int(&c.MaxQueue)},
		{"shutdown", func(n ast.Node, p string) {
			d.mapping(n, p, []field{{"grace", d.duration(&c.Shutdown.Grace)}})
		}},
		{"tcp", d.tcp(&c.TCP)},
		{"timeouts", d.timeouts(&c.Timeouts)},
		{"admin", func(n ast.Node, p string) {
			d.mapping(n, p, []field{
				{"listen", d.str(&c.Admin.Listen)},
				{"read_token_file", d.str(&c.Admin.ReadTokenFile)},
				{"read_token_env", d.str(&c.Admin.ReadTokenEnv)},
				{"admin_token_file", d.str(&c.Admin.AdminTokenFile)},
				{"admin_token_env", d.str(&c.Admin.AdminTokenEnv)},
			})
		}},
		{"alerts", func(n ast.Node, p string) {
			d.mapping(n, p, []field{
				{"sample_interval", d.duration(&c.Alerts.SampleInterval)},
				{"close_wait", d.int(&c.Alerts.CloseWait)},
				{"fin_wait2", d.int(&c.Alerts.FinWait2)},
				{"half_closed_age", d.duration(&c.Alerts.HalfClosedAge)},
				{"queue", d.int(&c.Alerts.Queue)},
				{"fd_usage", d.float(&c.Alerts.FDUsage)},
			})
		}},
		{"fleet", d.fleet(&c.Fleet)},
		{"clusters", func(n ast.Node, p string) { c.Clusters = d.clusters(n, p) }},
		{"routes", func(n ast.Node, p string) { c.Routes = d.routes(n, p) }},
	})
	return c
}

func (d *decoder) timeouts(t *Timeouts) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		var fs []field
		for _, f := range t.fields() {
			fs = append(fs, field{f.key, d.duration(f.ptr)})
		}
		d.mapping(n, path, fs)
	}
}

// tcp decodes a tcp section (global or a route's): the keys directly under it set both sides,
// unless that side's own key is set too, before or after it in the file.
func (d *decoder) tcp(t *TCP) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		var fs []field
		for i, f := range (&TCPSide{}).fields() {
			fs = append(fs, field{f.key, func(n ast.Node, p string) {
				var both TCPSide
				bf := both.fields()[i]
				d.tcpField(bf)(n, p)
				if !d.meta.isSet(p) {
					return
				}
				for _, sd := range t.sides() {
					if !d.meta.isSet(join(path, sd.key+"."+f.key)) {
						sd.side.fields()[i].copyFrom(bf)
					}
				}
			}})
		}
		for _, sd := range t.sides() {
			fs = append(fs, field{sd.key, func(n ast.Node, p string) {
				var sfs []field
				for _, f := range sd.side.fields() {
					sfs = append(sfs, field{f.key, d.tcpField(f)})
				}
				d.mapping(n, p, sfs)
			}})
		}
		d.mapping(n, path, fs)
	}
}

func (d *decoder) tcpField(f tcpField) func(ast.Node, string) {
	if f.dur != nil {
		return d.duration(f.dur)
	}
	return d.int(f.num)
}

func (d *decoder) clusters(n ast.Node, path string) map[string]*Cluster {
	out := map[string]*Cluster{}
	for _, e := range d.named(n, path) {
		cl := &Cluster{Name: e.key}
		out[e.key] = cl
		d.mapping(e.value, join(path, e.key), []field{
			{"on_marked_down", d.str(&cl.OnMarkedDown)},
			{"health", d.health(&cl.Health)},
			{"server_tls", func(n ast.Node, p string) {
				t := &cl.ServerTLS
				d.mapping(n, p, []field{
					{"mode", d.str(&t.Mode)},
					{"ca_file", d.str(&t.CAFile)},
					{"cert_file", d.str(&t.CertFile)},
					{"key_file", d.str(&t.KeyFile)},
				})
			}},
			{"servers", func(n ast.Node, p string) { cl.Servers = d.servers(n, p) }},
			{"dcs", d.dcs(&cl.DCS)},
		})
	}
	return out
}

func (d *decoder) health(h *Health) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		d.mapping(n, path, []field{
			{"check", d.str(&h.Check)},
			{"interval", d.duration(&h.Interval)},
			{"fast_interval", d.duration(&h.FastInterval)},
			{"timeout", d.duration(&h.Timeout)},
			{"rise", d.int(&h.Rise)},
			{"fall", d.int(&h.Fall)},
			{"jitter", d.float(&h.Jitter)},
			{"user", d.str(&h.User)},
			{"database", d.str(&h.Database)},
			{"password_file", d.str(&h.PasswordFile)},
			{"password_env", d.str(&h.PasswordEnv)},
			{"password", d.str(&h.Password)},
			{"patroni_scheme", d.str(&h.PatroniScheme)},
		})
	}
}

func (d *decoder) servers(n ast.Node, path string) []*Server {
	var out []*Server
	d.sequence(n, path, func(el ast.Node, p string) {
		s := &Server{}
		out = append(out, s)
		d.mapping(el, p, []field{
			{"name", d.str(&s.Name)},
			{"address", d.str(&s.Address)},
			{"role", d.str(&s.Role)},
			{"maxconn", d.int(&s.MaxConn)},
			{"weight", d.int(&s.Weight)},
			{"patroni", d.str(&s.Patroni)},
		})
	})
	return out
}

func (d *decoder) routes(n ast.Node, path string) map[string]*Route {
	out := map[string]*Route{}
	for _, e := range d.named(n, path) {
		r := &Route{Name: e.key}
		out[e.key] = r
		d.mapping(e.value, join(path, e.key), []field{
			{"listen", d.str(&r.Listen)},
			{"cluster", d.str(&r.Cluster)},
			{"role", d.str(&r.Role)},
			{"balance", d.str(&r.Balance)},
			{"maxconn", d.int(&r.MaxConn)},
			{"on_client_fin", d.str(&r.OnClientFin)},
			{"connect_retries", d.int(&r.ConnectRetries)},
			{"timeouts", d.timeouts(&r.Timeouts)},
			{"tcp", d.tcp(&r.TCP)},
			{"max_lag", func(n ast.Node, p string) {
				d.mapping(n, p, []field{
					{"bytes", d.size(&r.MaxLag.Bytes)},
					{"time", d.duration(&r.MaxLag.Time)},
				})
			}},
			{"fallback", d.str(&r.Fallback)},
			{"sync_standby_only", d.bool(&r.SyncStandbyOnly)},
			{"tls", func(n ast.Node, p string) {
				t := &r.TLS
				d.mapping(n, p, []field{
					{"mode", d.str(&t.Mode)},
					{"cert_file", d.str(&t.CertFile)},
					{"key_file", d.str(&t.KeyFile)},
					{"require", d.bool(&t.Require)},
					{"client_ca_file", d.str(&t.ClientCAFile)},
					{"sni", func(n ast.Node, p string) {
						t.SNI = map[string]string{}
						for _, e := range d.named(n, p) {
							var cl string
							d.str(&cl)(e.value, join(p, e.key))
							t.SNI[e.key] = cl
						}
					}},
				})
			}},
			{"proxy_protocol", func(n ast.Node, p string) {
				pp := &ProxyProtocol{}
				r.ProxyProtocol = pp
				d.mapping(n, p, []field{
					{"trusted", func(n ast.Node, p string) {
						d.sequence(n, p, func(el ast.Node, p string) {
							var s string
							d.str(&s)(el, p)
							if s == "" {
								return
							}
							pfx, err := parseNetwork(s)
							if err != nil {
								d.problem(nodeLine(el), p, "%v", err)
								return
							}
							pp.Trusted = append(pp.Trusted, pfx)
						})
					}},
				})
			}},
		})
	}
	return out
}

// parseNetwork parses a CIDR network or a single address (a /32 or /128).
func parseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network (CIDR such as 10.0.0.0/8, or an address)", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a network (CIDR such as 10.0.0.0/8, or an address)", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// named returns the entries of a mapping whose keys are user-chosen names
// (clusters, routes), recording each name's line.
func (d *decoder) named(n ast.Node, path string) []entry {
	es, _ := d.entries(n, path, 0)
	for _, e := range es {
		d.meta.lines[join(path, e.key)] = e.line
	}
	return es
}

// mapping decodes a mapping with a fixed set of keys; any other key is a
// problem.
func (d *decoder) mapping(n ast.Node, path string, fields []field) {
	es, _ := d.entries(n, path, 0)
	for _, e := range es {
		p := join(path, e.key)
		d.meta.lines[p] = e.line
		f := lookup(fields, e.key)
		if f == nil {
			d.problem(e.line, p, "unknown field %q%s", e.key, suggest(e.key, fields))
			continue
		}
		f.dec(e.value, p)
	}
}

func lookup(fields []field, key string) *field {
	for i := range fields {
		if fields[i].key == key {
			return &fields[i]
		}
	}
	return nil
}

// suggest proposes the known key closest to a misspelt one, or lists the
// known keys when none is close.
func suggest(key string, fields []field) string {
	best, bestDist := "", 3
	for _, f := range fields {
		if dist := editDistance(key, f.key); dist < bestDist {
			best, bestDist = f.key, dist
		}
	}
	// Short keys are all close to each other; only suggest a near miss.
	if best != "" && bestDist*3 <= len(key) {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	return " (known: " + strings.Join(keys, ", ") + ")"
}

// editDistance is the optimal-string-alignment distance between a and b:
// Levenshtein with a swap of two neighbours counted as one edit.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// entries returns the key/value pairs of the mapping n, with "<<" merge
// keys applied (keys written in the mapping win over merged ones; among
// merged mappings the first wins). A null value is an empty mapping.
// ok is false, with a problem recorded, when n is not a mapping.
func (d *decoder) entries(n ast.Node, path string, depth int) (es []entry, ok bool) {
	n, ok = d.resolve(n, path)
	if !ok {
		return nil, false
	}
	var values []*ast.MappingValueNode
	switch v := n.(type) {
	case nil, *ast.NullNode:
		return nil, true
	case *ast.MappingNode:
		values = v.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{v}
	default:
		d.problem(nodeLine(n), path, "must be a mapping, not %s", kind(n))
		return nil, false
	}
	if d.mappings++; d.mappings > maxMappings {
		if d.mappings == maxMappings+1 {
			d.problem(nodeLine(n), path, "too many merged mappings (more than %d): check merge keys (<<) and aliases", maxMappings)
		}
		return nil, false
	}
	seen := map[string]bool{}
	var merged []entry
	for _, mv := range values {
		if mv == nil || mv.Key == nil {
			continue
		}
		if mv.Key.IsMergeKey() {
			if depth >= maxMergeDepth {
				d.problem(nodeLine(mv.Key), path, "merge keys (<<) nested too deep")
				continue
			}
			merged = append(merged, d.merge(mv.Value, path, depth+1)...)
			continue
		}
		key, ok := d.keyText(mv.Key, path)
		if !ok {
			continue
		}
		if seen[key] {
			d.problem(nodeLine(mv.Key), join(path, key), "duplicate key %q", key)
			continue
		}
		seen[key] = true
		es = append(es, entry{key: key, line: nodeLine(mv.Key), value: mv.Value})
	}
	for _, e := range merged {
		if !seen[e.key] {
			seen[e.key] = true
			es = append(es, e)
		}
	}
	return es, true
}

// merge returns the entries a "<<" key brings in: one mapping or a list of them.
func (d *decoder) merge(n ast.Node, path string, depth int) []entry {
	r, ok := d.resolve(n, path)
	if !ok {
		return nil
	}
	seq, isSeq := r.(*ast.SequenceNode)
	if !isSeq {
		es, _ := d.entries(r, path, depth)
		return es
	}
	var out []entry
	for _, el := range seq.Values {
		es, _ := d.entries(el, path, depth)
		out = append(out, es...)
	}
	return out
}

// keyText returns a mapping key as a string; keys must be scalars.
func (d *decoder) keyText(k ast.Node, path string) (string, bool) {
	if mk, ok := k.(*ast.MappingKeyNode); ok {
		k = mk.Value
	}
	r, ok := d.resolve(k, path)
	if !ok {
		return "", false
	}
	if s, ok := scalarText(r); ok {
		return s, true
	}
	d.problem(nodeLine(k), path, "mapping keys must be strings, not %s", kind(r))
	return "", false
}

// sequence calls each for every element of the list n. A null value is an
// empty list.
func (d *decoder) sequence(n ast.Node, path string, each func(el ast.Node, path string)) {
	r, ok := d.resolve(n, path)
	if !ok {
		return
	}
	switch v := r.(type) {
	case nil, *ast.NullNode:
	case *ast.SequenceNode:
		for i, el := range v.Values {
			p := index(path, i)
			d.meta.lines[p] = nodeLine(el)
			each(el, p)
		}
	default:
		d.problem(nodeLine(r), path, "must be a list, not %s", kind(r))
	}
}

// resolve strips anchors and tags and follows aliases. ok is false, with a
// problem recorded, for an alias with no anchor before it or an alias loop.
func (d *decoder) resolve(n ast.Node, path string) (ast.Node, bool) {
	for range maxAliasHops {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.TagNode:
			n = v.Value
		case *ast.AliasNode:
			a := d.anchorFor(v)
			if a == nil {
				d.problem(nodeLine(v), path, "alias %s refers to no anchor before it", aliasName(v))
				return nil, false
			}
			n = a.Value
		default:
			return n, true
		}
	}
	d.problem(nodeLine(n), path, "alias loop")
	return nil, false
}

// anchorFor returns the anchor an alias refers to: the last one of that
// name defined before the alias.
func (d *decoder) anchorFor(a *ast.AliasNode) *ast.AnchorNode {
	if a.Value == nil || a.Value.GetToken() == nil {
		return nil
	}
	name := a.Value.GetToken().Value
	at := a.GetToken()
	var found *ast.AnchorNode
	for _, an := range d.anchors[name] {
		if at == nil || before(an.GetToken(), at) {
			found = an
		}
	}
	return found
}

func aliasName(a *ast.AliasNode) string {
	if a.Value == nil || a.Value.GetToken() == nil {
		return "*"
	}
	return "*" + a.Value.GetToken().Value
}

func before(a, b *token.Token) bool {
	if a == nil || b == nil || a.Position == nil || b.Position == nil {
		return false
	}
	pa, pb := a.Position, b.Position
	return pa.Line < pb.Line || (pa.Line == pb.Line && pa.Column < pb.Column)
}

// scalar resolves n to a scalar. present is false for null (the field
// counts as not set) and, with a problem recorded, for non-scalars.
func (d *decoder) scalar(n ast.Node, path, want string) (r ast.Node, present bool) {
	r, ok := d.resolve(n, path)
	if !ok {
		return nil, false
	}
	switch r.(type) {
	case nil, *ast.NullNode:
		return nil, false
	case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
		d.problem(nodeLine(r), path, "must be %s, not %s", want, kind(r))
		return nil, false
	}
	return r, true
}

// str decodes any scalar as its text (a name like 01 stays "01").
func (d *decoder) str(dst *string) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		r, ok := d.scalar(n, path, "a string")
		if !ok {
			return
		}
		s, ok := scalarText(r)
		if !ok {
			d.problem(nodeLine(r), path, "must be a string, not %s", kind(r))
			return
		}
		*dst = s
		d.meta.set[path] = true
	}
}

// strs decodes a sequence of scalars as their texts (str each); present and empty is [], not
// nil.
func (d *decoder) strs(dst *[]string) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		*dst = []string{}
		d.sequence(n, path, func(el ast.Node, p string) {
			var s string
			d.str(&s)(el, p)
			*dst = append(*dst, s)
		})
	}
}

// bool decodes true or false (YAML 1.2: not yes/no, not a quoted string).
func (d *decoder) bool(dst *bool) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		r, ok := d.scalar(n, path, "true or false")
		if !ok {
			return
		}
		b, ok := r.(*ast.BoolNode)
		if !ok {
			d.problem(nodeLine(r), path, "must be true or false, not %s", describe(r))
			return
		}
		*dst = b.Value
		d.meta.set[path] = true
	}
}

// int decodes an integer; a quoted number is a string, not an integer.
func (d *decoder) int(dst *int) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		r, ok := d.scalar(n, path, "an integer")
		if !ok {
			return
		}
		in, ok := r.(*ast.IntegerNode)
		if !ok {
			d.problem(nodeLine(r), path, "must be an integer, not %s", describe(r))
			return
		}
		switch v := in.Value.(type) {
		case int64:
			*dst = int(v)
		case uint64:
			if v > math.MaxInt64 {
				d.problem(nodeLine(r), path, "integer %s is out of range", tokenText(r))
				return
			}
			*dst = int(v)
		default:
			d.problem(nodeLine(r), path, "must be an integer, not %s", describe(r))
			return
		}
		d.meta.set[path] = true
	}
}

// duration decodes a Go duration string ("5s", "1m30s") or a plain 0.
func (d *decoder) duration(dst *Duration) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		r, ok := d.scalar(n, path, "a duration")
		if !ok {
			return
		}
		switch v := r.(type) {
		case *ast.StringNode:
			dur, err := parseDuration(v.Value)
			if err != nil {
				d.problem(nodeLine(r), path, "%v", err)
				return
			}
			*dst = dur
		case *ast.IntegerNode:
			if tokenText(r) != "0" {
				d.problem(nodeLine(r), path, "duration %s needs a unit, e.g. %ss (only 0 may be written without one)", tokenText(r), tokenText(r))
				return
			}
			*dst = 0
		default:
			d.problem(nodeLine(r), path, "must be a duration such as 5s or 1m30s, not %s", describe(r))
			return
		}
		d.meta.set[path] = true
	}
}

// float decodes a finite number; an integer is a number too.
func (d *decoder) float(dst *float64) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		r, ok := d.scalar(n, path, "a number")
		if !ok {
			return
		}
		var f float64
		switch v := r.(type) {
		case *ast.FloatNode:
			f = v.Value
		case *ast.IntegerNode:
			switch i := v.Value.(type) {
			case int64:
				f = float64(i)
			case uint64:
				f = float64(i)
			default:
				d.problem(nodeLine(r), path, "must be a number, not %s", describe(r))
				return
			}
		case *ast.InfinityNode, *ast.NanNode:
			f = math.NaN()
		default:
			d.problem(nodeLine(r), path, "must be a number, not %s", describe(r))
			return
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			d.problem(nodeLine(r), path, "number %s is out of range", tokenText(r))
			return
		}
		*dst = f
		d.meta.set[path] = true
	}
}

// size decodes a byte count: a plain integer or a string with a unit ("16MB").
func (d *decoder) size(dst *Size) func(ast.Node, string) {
	return func(n ast.Node, path string) {
		r, ok := d.scalar(n, path, "a size")
		if !ok {
			return
		}
		switch v := r.(type) {
		case *ast.StringNode:
			sz, err := parseSize(v.Value)
			if err != nil {
				d.problem(nodeLine(r), path, "%v", err)
				return
			}
			*dst = sz
		case *ast.IntegerNode:
			switch i := v.Value.(type) {
			case int64:
				if i < 0 {
					d.problem(nodeLine(r), path, "size %s must not be negative", tokenText(r))
					return
				}
				*dst = Size(i)
			case uint64:
				if i > math.MaxInt64 {
					d.problem(nodeLine(r), path, "size %s is too large", tokenText(r))
					return
				}
				*dst = Size(i)
			default:
				d.problem(nodeLine(r), path, "must be a size such as 16MB or 1024 (bytes), not %s", describe(r))
				return
			}
		default:
			d.problem(nodeLine(r), path, "must be a size such as 16MB or 1024 (bytes), not %s", describe(r))
			return
		}
		d.meta.set[path] = true
	}
}

// scalarText returns the text of a scalar node: the decoded value of a
// string, the source text of anything else.
func scalarText(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		if v.Value == nil {
			return "", true
		}
		return v.Value.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return tokenText(n), true
	}
	return "", false
}

func tokenText(n ast.Node) string {
	if n == nil || n.GetToken() == nil {
		return ""
	}
	return n.GetToken().Value
}

// kind names a node's YAML type for messages.
func kind(n ast.Node) string {
	switch n.(type) {
	case nil, *ast.NullNode:
		return "null"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		return "a string"
	case *ast.IntegerNode:
		return "an integer"
	case *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "a number"
	case *ast.BoolNode:
		return "a boolean"
	}
	return "a " + n.Type().String()
}

// describe is kind plus the text of a scalar: `a string ("5")`.
func describe(n ast.Node) string {
	if s, ok := scalarText(n); ok {
		return fmt.Sprintf("%s (%q)", kind(n), s)
	}
	return kind(n)
}

// nodeLine returns the line a node starts on; for a block mapping, the
// line of its first key.
func nodeLine(n ast.Node) int {
	switch v := n.(type) {
	case nil:
		return 0
	case *ast.MappingNode:
		if len(v.Values) > 0 && v.Values[0] != nil && v.Values[0].Key != nil {
			return nodeLine(v.Values[0].Key)
		}
	case *ast.MappingValueNode:
		if v.Key != nil {
			return nodeLine(v.Key)
		}
	}
	return tokenLine(n.GetToken())
}

func tokenLine(t *token.Token) int {
	if t == nil || t.Position == nil {
		return 0
	}
	return t.Position.Line
}

func tokenColumn(t *token.Token) int {
	if t == nil || t.Position == nil {
		return 0
	}
	return t.Position.Column
}
