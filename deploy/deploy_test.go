package deploy_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/goccy/go-yaml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.uber.org/goleak"

	"github.com/pgfront/pgfront/internal/config"
	"github.com/pgfront/pgfront/internal/frontend"
	"github.com/pgfront/pgfront/internal/observe"
	"github.com/pgfront/pgfront/internal/relay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	rulesPath     = "prometheus/pgfront-alerts.yml"
	dashboardPath = "grafana/pgfront-dashboard.json"
)

// ---------------------------------------------------------------------------------------
// The documented contract (README, internal/observe/families.go): label values with a fixed
// meaning. Causes come from the relay, the one place they are defined.

var (
	causes = func() []string {
		var out []string
		for _, c := range relay.AllCauses() {
			out = append(out, c.String())
		}
		return out
	}()
	socketStates = []string{
		"ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
		"CLOSE_WAIT", "LAST_ACK", "CLOSING",
	}
	builtinAlertNames = []string{"close_wait", "fin_wait2", "half_closed_age", "queue", "fd_usage"}
)

// valueCheckedLabels are the labels whose values come from a fixed set; a query that
// compares one of them with `=` or `!=` must use a value from that set.
var valueCheckedLabels = []string{"state", "cause", "reason", "role", "direction", "side", "result", "alert", "to"}

// labelValues holds a label's allowed values where the label means the same in every
// family; familyLabelValues overrides it where one name means different things.
var (
	labelValues = map[string][]string{
		"cause":     causes,
		"reason":    causes, // a refusal reason is a termination cause
		"role":      {"primary", "replica", "unknown"},
		"direction": {"client_to_server", "server_to_client"},
		"side":      {"client", "server"},
		"alert":     builtinAlertNames,
		"to":        {"up", "down", "primary", "replica", "unknown"},
	}
	familyLabelValues = map[string]map[string][]string{
		"pgfront_sockets":               {"state": socketStates},
		"pgfront_server_admin_state":    {"state": {"ready", "drain", "maint"}},
		"pgfront_cancel_requests_total": {"result": frontend.CancelResults()},
		"pgfront_socket_samples_total":  {"result": {"ok", "error"}},
		"pgfront_config_reloads_total":  {"result": {"success", "failure"}},
		"pgfront_tls_handshakes_total":  {"result": frontend.TLSResults()},
	}
)

// allowedValues returns the values label may take in family, if the label is value-checked.
func allowedValues(family, label string) ([]string, bool) {
	if !slices.Contains(valueCheckedLabels, label) {
		return nil, false
	}
	if vals, ok := familyLabelValues[family][label]; ok {
		return vals, true
	}
	vals, ok := labelValues[label]
	return vals, ok
}

// ---------------------------------------------------------------------------------------
// The catalogue: every series name a query may select, with the labels it carries.

// series is one selectable metric name: a counter or gauge family, or one of the _bucket,
// _sum, _count series of a histogram (or a summary's base name and _sum, _count).
type series struct {
	family string          // the family the name belongs to ("pgfront_queue_wait_seconds")
	labels map[string]bool // label names the series carries, without instance and job
}

type catalogue map[string]series

func (c catalogue) add(name, family string, labelNames ...string) error {
	if _, dup := c[name]; dup {
		return fmt.Errorf("series %q defined twice", name)
	}
	set := make(map[string]bool, len(labelNames))
	for _, l := range labelNames {
		set[l] = true
	}
	c[name] = series{family: family, labels: set}
	return nil
}

// addFamily adds a family's series names by type: a histogram's selectable names are its
// _bucket (with le), _sum and _count series, never the bare name.
func (c catalogue) addFamily(name, typ string, labelNames []string) error {
	switch typ {
	case "counter", "gauge", "untyped":
		return c.add(name, name, labelNames...)
	case "histogram":
		return joinErrs(
			c.add(name+"_bucket", name, append(slices.Clone(labelNames), "le")...),
			c.add(name+"_sum", name, labelNames...),
			c.add(name+"_count", name, labelNames...))
	case "summary":
		return joinErrs(
			c.add(name, name, append(slices.Clone(labelNames), "quantile")...),
			c.add(name+"_sum", name, labelNames...),
			c.add(name+"_count", name, labelNames...))
	default:
		return fmt.Errorf("family %s: unknown type %q", name, typ)
	}
}

func joinErrs(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// newCatalogue builds the catalogue from pgfront's families and the families gathered from
// a registry holding the Go runtime and process collectors, as pgfront registers them.
func newCatalogue(families []observe.Family) (catalogue, error) {
	cat := catalogue{}
	for _, f := range families {
		if !strings.HasPrefix(f.Name, "pgfront_") {
			return nil, fmt.Errorf("family %s: pgfront families are named pgfront_*", f.Name)
		}
		if err := cat.addFamily(f.Name, f.Type, f.Labels); err != nil {
			return nil, fmt.Errorf("adding pgfront family: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("registering go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("registering process collector: %w", err)
	}
	gathered, err := reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering go and process collectors: %w", err)
	}
	for _, mf := range gathered {
		var labelNames []string
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(labelNames, lp.GetName()) {
					labelNames = append(labelNames, lp.GetName())
				}
			}
		}
		typ := map[dto.MetricType]string{
			dto.MetricType_COUNTER: "counter", dto.MetricType_GAUGE: "gauge",
			dto.MetricType_UNTYPED: "untyped", dto.MetricType_HISTOGRAM: "histogram",
			dto.MetricType_SUMMARY: "summary",
		}[mf.GetType()]
		if err := cat.addFamily(mf.GetName(), typ, labelNames); err != nil {
			return nil, fmt.Errorf("adding gathered family: %w", err)
		}
	}
	return cat, nil
}

// ---------------------------------------------------------------------------------------
// The checker: parses a PromQL expression and reports every metric name, label name and
// label value that pgfront does not export.

type checker struct {
	cat    catalogue
	parser parser.Parser
}

func newChecker(t *testing.T) *checker {
	t.Helper()
	cat, err := newCatalogue(observe.Families())
	if err != nil {
		t.Fatalf("building the metric catalogue: %v", err)
	}
	return &checker{cat: cat, parser: parser.NewParser(parser.Options{})}
}

// labelSet is the set of label names a sub-expression's series can carry. nil means
// unknown (under an unknown metric name, already reported): it accepts every label so that
// one mistake is reported once. instance and job, added at scrape time, are always there.
type labelSet map[string]bool

func newLabelSet(names ...string) labelSet {
	s := labelSet{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

func (s labelSet) has(name string) bool {
	return s == nil || s[name] || name == "instance" || name == "job"
}

func (s labelSet) without(names ...string) labelSet {
	if s == nil {
		return nil
	}
	out := maps.Clone(s)
	for _, n := range names {
		delete(out, n)
	}
	return out
}

func (s labelSet) with(names ...string) labelSet {
	if s == nil {
		return nil
	}
	out := maps.Clone(s)
	for _, n := range names {
		out[n] = true
	}
	return out
}

func (s labelSet) union(o labelSet) labelSet {
	if s == nil || o == nil {
		return nil
	}
	return s.with(slices.Collect(maps.Keys(o))...)
}

// metricName is the selector's metric name, given as a name or as __name__="...".
func metricName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

func isVector(e parser.Expr) bool {
	return e.Type() == parser.ValueTypeVector || e.Type() == parser.ValueTypeMatrix
}

func stringArg(e parser.Expr) string {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			break
		}
		e = p.Expr
	}
	if s, ok := e.(*parser.StringLiteral); ok {
		return s.Val
	}
	return ""
}

// labelsOf returns the label names e's result series can carry, following PromQL's rules
// for aggregations, vector matching and the label-changing functions.
func (c *checker) labelsOf(e parser.Expr) labelSet {
	switch n := e.(type) {
	case *parser.VectorSelector:
		s, ok := c.cat[metricName(n)]
		if !ok {
			return nil
		}
		return newLabelSet(slices.Collect(maps.Keys(s.labels))...)
	case *parser.MatrixSelector:
		return c.labelsOf(n.VectorSelector)
	case *parser.SubqueryExpr:
		return c.labelsOf(n.Expr)
	case *parser.ParenExpr:
		return c.labelsOf(n.Expr)
	case *parser.UnaryExpr:
		return c.labelsOf(n.Expr)
	case *parser.StepInvariantExpr:
		return c.labelsOf(n.Expr)
	case *parser.AggregateExpr:
		in := c.labelsOf(n.Expr)
		if n.Op == parser.TOPK || n.Op == parser.BOTTOMK || n.Op == parser.LIMITK || n.Op == parser.LIMIT_RATIO {
			return in // they select series, keeping every label
		}
		out := newLabelSet(n.Grouping...)
		if n.Without {
			out = in.without(n.Grouping...)
		}
		if n.Op == parser.COUNT_VALUES {
			out = out.with(stringArg(n.Param))
		}
		return out
	case *parser.BinaryExpr:
		l, r := c.labelsOf(n.LHS), c.labelsOf(n.RHS)
		switch {
		case !isVector(n.LHS) && !isVector(n.RHS):
			return labelSet{}
		case !isVector(n.RHS):
			return l
		case !isVector(n.LHS):
			return r
		}
		switch n.Op {
		case parser.LAND, parser.LUNLESS:
			return l
		case parser.LOR:
			return l.union(r)
		}
		m := n.VectorMatching
		switch m.Card {
		case parser.CardManyToOne:
			return l.with(m.Include...)
		case parser.CardOneToMany:
			return r.with(m.Include...)
		default:
			if m.On {
				return newLabelSet(m.MatchingLabels...)
			}
			return l.without(m.MatchingLabels...)
		}
	case *parser.Call:
		switch n.Func.Name {
		case "histogram_quantile", "histogram_fraction":
			return c.labelsOf(n.Args[len(n.Args)-1]).without("le")
		case "label_replace", "label_join":
			return c.labelsOf(n.Args[0]).with(stringArg(n.Args[1]))
		}
		for _, a := range n.Args {
			if isVector(a) {
				return c.labelsOf(a)
			}
		}
		return labelSet{}
	default: // literals
		return labelSet{}
	}
}

// check parses expr and returns every problem found, or nil.
func (c *checker) check(expr string) []string {
	e, err := c.parser.ParseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("parsing %q: %v", expr, err)}
	}
	return c.checkParsed(e)
}

func (c *checker) checkParsed(e parser.Expr) []string {
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			c.checkSelector(n, report)
		case *parser.AggregateExpr:
			in := c.labelsOf(n.Expr)
			for _, l := range n.Grouping {
				if !in.has(l) {
					report("%s: grouping label %q is not a label of the series aggregated", n.Op, l)
				}
			}
		case *parser.BinaryExpr:
			c.checkMatching(n, report)
		case *parser.Call:
			c.checkCall(n, report)
		}
		return nil
	})
	return problems
}

func (c *checker) checkSelector(vs *parser.VectorSelector, report func(string, ...any)) {
	name := metricName(vs)
	if name == "" {
		report("selector %s names no metric", vs)
		return
	}
	s, ok := c.cat[name]
	if !ok {
		report("unknown metric %q", name)
		return
	}
	for _, m := range vs.LabelMatchers {
		switch m.Name {
		case model.MetricNameLabel, "instance", "job":
			continue
		}
		if !s.labels[m.Name] {
			report("%s has no label %q", name, m.Name)
			continue
		}
		if m.Type != labels.MatchEqual && m.Type != labels.MatchNotEqual {
			continue
		}
		if allowed, ok := allowedValues(s.family, m.Name); ok && !slices.Contains(allowed, m.Value) {
			report("%s: %s=%q is not one of %v", name, m.Name, m.Value, allowed)
		}
	}
}

func (c *checker) checkMatching(n *parser.BinaryExpr, report func(string, ...any)) {
	m := n.VectorMatching
	if m == nil || !isVector(n.LHS) || !isVector(n.RHS) {
		return
	}
	l, r := c.labelsOf(n.LHS), c.labelsOf(n.RHS)
	for _, name := range m.MatchingLabels {
		if !l.has(name) || !r.has(name) {
			report("%s: matching label %q is not a label of both sides", n.Op, name)
		}
	}
	one := r // group_left: the included labels come from the "one" side
	if m.Card == parser.CardOneToMany {
		one = l
	}
	for _, name := range m.Include {
		if !one.has(name) {
			report("%s: group label %q is not a label of the one side", n.Op, name)
		}
	}
}

func (c *checker) checkCall(n *parser.Call, report func(string, ...any)) {
	var used []string
	var of parser.Expr
	switch n.Func.Name {
	case "histogram_quantile":
		if in := c.labelsOf(n.Args[1]); in != nil && !in["le"] {
			report("histogram_quantile over series without an le label")
		}
		return
	case "label_replace":
		used, of = []string{stringArg(n.Args[3])}, n.Args[0]
	case "label_join":
		for _, a := range n.Args[3:] {
			used = append(used, stringArg(a))
		}
		of = n.Args[0]
	case "sort_by_label", "sort_by_label_desc":
		for _, a := range n.Args[1:] {
			used = append(used, stringArg(a))
		}
		of = n.Args[0]
	default:
		return
	}
	in := c.labelsOf(of)
	for _, l := range used {
		if l != "" && !in.has(l) {
			report("%s: label %q is not a label of its argument", n.Func.Name, l)
		}
	}
}

// ---------------------------------------------------------------------------------------
// The rule file.

type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval"`
	Rules    []rule `yaml:"rules"`
}

// rule is an alerting rule; the file holds no recording rules, so `record` is an unknown
// field like any typo.
type rule struct {
	Alert         string            `yaml:"alert"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

var (
	alertNameRE     = regexp.MustCompile(`^Pgfront[A-Z][A-Za-z0-9]*$`)
	labelsRefRE     = regexp.MustCompile(`\$labels\.([A-Za-z_][A-Za-z0-9_]*)`)
	annotationNames = []string{"summary", "description", "runbook"}
)

// templateFuncs stubs the Prometheus template functions the annotations may use, so that
// text/template can parse them; an unknown function is a parse error.
var templateFuncs = template.FuncMap{
	"humanize": fmt.Sprint, "humanize1024": fmt.Sprint, "humanizeDuration": fmt.Sprint,
	"humanizePercentage": fmt.Sprint, "humanizeTimestamp": fmt.Sprint,
	"toUpper": strings.ToUpper, "toLower": strings.ToLower, "title": strings.ToTitle,
	"first": fmt.Sprint, "value": fmt.Sprint, "label": fmt.Sprint, "query": fmt.Sprint,
}

// templateDefs is what Prometheus prepends to every annotation template.
const templateDefs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}"

// checkRules decodes a rule file strictly and returns it with every problem found.
func checkRules(c *checker, data []byte) (ruleFile, []string) {
	var f ruleFile
	if err := yaml.UnmarshalWithOptions(data, &f, yaml.Strict()); err != nil {
		return f, []string{fmt.Sprintf("decoding rules: %v", err)}
	}
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if len(f.Groups) != 1 || f.Groups[0].Name != "pgfront" {
		report("want exactly one group named pgfront, have %d groups", len(f.Groups))
	}
	seen := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name != "pgfront" {
			report("group %q: want name pgfront", g.Name)
		}
		if len(g.Rules) == 0 {
			report("group %q has no rules", g.Name)
		}
		if g.Interval != "" {
			if _, err := model.ParseDuration(g.Interval); err != nil {
				report("group %q: interval: %v", g.Name, err)
			}
		}
		for i, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = fmt.Sprintf("rule #%d", i)
			}
			for _, p := range checkRule(c, r, seen) {
				report("%s: %s", name, p)
			}
		}
	}
	return f, problems
}

func checkRule(c *checker, r rule, seen map[string]bool) []string {
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if !alertNameRE.MatchString(r.Alert) {
		report("alert name %q: want Pgfront followed by a CamelCase name", r.Alert)
	}
	if seen[r.Alert] {
		report("alert defined twice")
	}
	seen[r.Alert] = true
	for field, d := range map[string]string{"for": r.For, "keep_firing_for": r.KeepFiringFor} {
		if d == "" {
			continue
		}
		if _, err := model.ParseDuration(d); err != nil {
			report("%s: %v", field, err)
		}
	}
	if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
		report("labels.severity %q: want warning or critical", sev)
	}
	for _, a := range annotationNames {
		if strings.TrimSpace(r.Annotations[a]) == "" {
			report("annotations.%s is missing", a)
		}
	}
	for _, a := range slices.Sorted(maps.Keys(r.Annotations)) {
		if !slices.Contains(annotationNames, a) {
			report("annotations.%s: unknown annotation (want %v)", a, annotationNames)
		}
	}
	if strings.TrimSpace(r.Expr) == "" {
		report("expr is empty")
		return problems
	}
	e, err := c.parser.ParseExpr(r.Expr)
	if err != nil {
		report("parsing expr: %v", err)
		return problems
	}
	problems = append(problems, c.checkParsed(e)...)
	out := c.labelsOf(e)
	for _, a := range slices.Sorted(maps.Keys(r.Annotations)) {
		text := r.Annotations[a]
		if _, err := template.New(a).Funcs(templateFuncs).Parse(templateDefs + text); err != nil {
			report("annotations.%s: parsing template: %v", a, err)
		}
		for _, m := range labelsRefRE.FindAllStringSubmatch(text, -1) {
			if !out.has(m[1]) {
				report("annotations.%s uses $labels.%s, which the expr's alerts do not carry", a, m[1])
			}
		}
	}
	return problems
}

// ---------------------------------------------------------------------------------------
// The dashboard.

type dashboard struct {
	Inputs        []dashboardInput `json:"__inputs"`
	SchemaVersion int              `json:"schemaVersion"`
	Title         string           `json:"title"`
	UID           string           `json:"uid"`
	Templating    struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

// dashboardInput is what Grafana asks for when the dashboard is imported in its UI.
type dashboardInput struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	PluginID string `json:"pluginId"`
}

type templateVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "..."} for Prometheus
	Definition string          `json:"definition"`
	Datasource *datasource     `json:"datasource"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct {
	H, W, X, Y int
}

type panel struct {
	ID          int        `json:"id"`
	Type        string     `json:"type"`
	Title       string     `json:"title"`
	GridPos     *gridPos   `json:"gridPos"`
	Datasource  datasource `json:"datasource"`
	Targets     []target   `json:"targets"`
	Panels      []panel    `json:"panels"` // a collapsed row's panels
	FieldConfig struct {
		Defaults struct {
			Thresholds *struct {
				Steps []thresholdStep `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

// thresholdStep is one colour step; the base step has no value (null).
type thresholdStep struct {
	Color string   `json:"color"`
	Value *float64 `json:"value"`
}

type target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *datasource `json:"datasource"`
}

// builtinPanelTypes are panels that ship with Grafana: the dashboard needs no plugin.
var builtinPanelTypes = []string{
	"row", "timeseries", "stat", "gauge", "bargauge", "table", "state-timeline",
	"status-history", "barchart", "heatmap", "text",
}

var wantDatasource = datasource{Type: "prometheus", UID: "${DS_PROMETHEUS}"}

// instanceSentinel replaces $instance before parsing, so that the test can tell that every
// selector filters on the dashboard's instance variable.
const instanceSentinel = "pgfront-dashboard-instance-variable"

// grafanaVars replaces Grafana's variables with concrete values PromQL accepts. Longer
// names first: the replacer tries its pairs in order at each position.
var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "5m", "$__rate_interval", "5m",
	"${__interval}", "1m", "$__interval", "1m",
	"${__range}", "1h", "$__range", "1h",
	"${instance}", instanceSentinel, "$instance", instanceSentinel,
)

// panelInfo is what the content checks need to know about one panel.
type panelInfo struct {
	row       string // the title of the row above the panel
	panel     panel
	selectors []*parser.VectorSelector
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)

// checkDashboard decodes a dashboard and returns its panels with every problem found.
func checkDashboard(c *checker, data []byte) ([]panelInfo, []string) {
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, []string{fmt.Sprintf("decoding dashboard: %v", err)}
	}
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if d.SchemaVersion != 39 {
		report("schemaVersion %d: want 39", d.SchemaVersion)
	}
	if d.Title == "" || d.UID == "" {
		report("title %q and uid %q must be set", d.Title, d.UID)
	}
	if !slices.ContainsFunc(d.Inputs, func(in dashboardInput) bool {
		return in.Name == "DS_PROMETHEUS" && in.Type == "datasource" && in.PluginID == "prometheus"
	}) {
		report("__inputs has no DS_PROMETHEUS prometheus datasource")
	}
	checkTemplating(c, d.Templating.List, report)

	var infos []panelInfo
	ids := map[int]string{}
	var placed []panel
	row := ""
	var walk func(ps []panel, nested bool)
	walk = func(ps []panel, nested bool) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if p.ID <= 0 {
				report("%s: id must be positive", where)
			} else if other, dup := ids[p.ID]; dup {
				report("%s: id also used by %q", where, other)
			}
			ids[p.ID] = p.Title
			if strings.TrimSpace(p.Title) == "" {
				report("%s: no title", where)
			}
			if !slices.Contains(builtinPanelTypes, p.Type) {
				report("%s: type %q is not a built-in panel", where, p.Type)
			}
			switch {
			case p.GridPos == nil:
				report("%s: no gridPos", where)
			case p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.Y < 0 || p.GridPos.X+p.GridPos.W > 24:
				report("%s: gridPos %+v is outside the 24-column grid", where, *p.GridPos)
			default:
				if !nested {
					for _, q := range placed {
						if overlaps(*p.GridPos, *q.GridPos) {
							report("%s: overlaps panel %d %q", where, q.ID, q.Title)
						}
					}
					placed = append(placed, p)
				}
			}
			if p.Type == "row" {
				row = p.Title
				if len(p.Targets) > 0 {
					report("%s: a row has no queries", where)
				}
				walk(p.Panels, true)
				continue
			}
			if len(p.Panels) > 0 {
				report("%s: only rows nest panels", where)
			}
			info := panelInfo{row: row, panel: p}
			for _, pr := range checkPanelTargets(c, p) {
				report("%s: %s", where, pr)
			}
			for _, t := range p.Targets {
				if e, err := c.parser.ParseExpr(grafanaVars.Replace(t.Expr)); err == nil {
					info.selectors = append(info.selectors, selectorsOf(e)...)
				}
			}
			infos = append(infos, info)
		}
	}
	walk(d.Panels, false)
	return infos, problems
}

func overlaps(a, b gridPos) bool {
	return a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H
}

func checkTemplating(c *checker, vars []templateVar, report func(string, ...any)) {
	byName := map[string]templateVar{}
	for _, v := range vars {
		byName[v.Name] = v
	}
	if ds, ok := byName["DS_PROMETHEUS"]; !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		report("templating: want a datasource variable DS_PROMETHEUS of type prometheus")
	}
	inst, ok := byName["instance"]
	if !ok || inst.Type != "query" {
		report("templating: want a query variable instance")
		return
	}
	if inst.Datasource == nil || *inst.Datasource != wantDatasource {
		report("templating: instance: datasource %v, want %v", inst.Datasource, wantDatasource)
	}
	var query string
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(inst.Query, &query); err != nil {
		if err := json.Unmarshal(inst.Query, &obj); err != nil {
			report("templating: instance: query is neither a string nor {query}: %v", err)
		}
		query = obj.Query
	}
	const want = "label_values(pgfront_route_sessions, instance)"
	if query != want || inst.Definition != want {
		report("templating: instance: query %q, definition %q, want %q", query, inst.Definition, want)
	}
	if m := labelValuesRE.FindStringSubmatch(query); m != nil {
		for _, p := range c.check(m[1]) {
			report("templating: instance: %s", p)
		}
	}
}

func checkPanelTargets(c *checker, p panel) []string {
	var problems []string
	report := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	if p.Type == "text" {
		return nil
	}
	if p.Datasource != wantDatasource {
		report("datasource %v, want %v", p.Datasource, wantDatasource)
	}
	if len(p.Targets) == 0 {
		report("no targets")
	}
	refs := map[string]bool{}
	for _, t := range p.Targets {
		if t.RefID == "" || refs[t.RefID] {
			report("target refId %q is empty or repeated", t.RefID)
		}
		refs[t.RefID] = true
		if t.Datasource == nil || *t.Datasource != wantDatasource {
			report("target %s: datasource %v, want %v", t.RefID, t.Datasource, wantDatasource)
		}
		expr := grafanaVars.Replace(t.Expr)
		if strings.Contains(expr, "$") {
			report("target %s: unknown variable in %q", t.RefID, t.Expr)
			continue
		}
		e, err := c.parser.ParseExpr(expr)
		if err != nil {
			report("target %s: parsing %q: %v", t.RefID, t.Expr, err)
			continue
		}
		for _, pr := range c.checkParsed(e) {
			report("target %s: %s", t.RefID, pr)
		}
		for _, vs := range selectorsOf(e) {
			if !slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
				return m.Name == "instance" && m.Type == labels.MatchRegexp && m.Value == instanceSentinel
			}) {
				report(`target %s: selector %s does not filter on instance=~"$instance"`, t.RefID, vs)
			}
		}
	}
	return problems
}

func selectorsOf(e parser.Expr) []*parser.VectorSelector {
	var out []*parser.VectorSelector
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			out = append(out, vs)
		}
		return nil
	})
	return out
}

// ---------------------------------------------------------------------------------------
// Tests of the shipped files.

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return data
}

func TestRulesCheckClean(t *testing.T) {
	c := newChecker(t)
	f, problems := checkRules(c, readFile(t, rulesPath))
	for _, p := range problems {
		t.Error(p)
	}
	if len(f.Groups) == 0 || len(f.Groups[0].Rules) < 10 {
		t.Fatalf("rules file holds %+v, want the pgfront group with at least 10 alerts", f.Groups)
	}
}

// TestRulesContent checks the alerts the rule file promises, with their `for`, severity
// and thresholds, against the documented contract.
func TestRulesContent(t *testing.T) {
	c := newChecker(t)
	f, problems := checkRules(c, readFile(t, rulesPath))
	if len(problems) > 0 || len(f.Groups) != 1 {
		t.Fatalf("rules file has problems (see TestRulesCheckClean): %v", problems)
	}
	rules := map[string]rule{}
	for _, r := range f.Groups[0].Rules {
		rules[r.Alert] = r
	}
	want := []struct {
		alert, forDur, severity string
	}{
		{"PgfrontCloseWait", "1m", ""},
		{"PgfrontFinWait2", "1m", ""},
		{"PgfrontHalfClosedAge", "", ""},
		{"PgfrontQueue", "1m", ""},
		{"PgfrontFdUsage", "", ""},
		{"PgfrontBuiltinAlert", "", ""},
		{"PgfrontServerDown", "1m", ""},
		{"PgfrontNoPrimary", "30s", "critical"},
		{"PgfrontSplitBrain", "10s", "critical"},
		{"PgfrontRefusals", "5m", "warning"},
		{"PgfrontSocketSampleFailing", "", ""},
		{"PgfrontConfigReloadFailed", "", "warning"},
		{"PgfrontTLSCertificateExpiry", "", "warning"},
		{"PgfrontAcceptErrors", "", "critical"},
	}
	for _, w := range want {
		r, ok := rules[w.alert]
		if !ok {
			t.Errorf("alert %s is missing", w.alert)
			continue
		}
		if r.For != w.forDur {
			t.Errorf("%s: for %q, want %q", w.alert, r.For, w.forDur)
		}
		if w.severity != "" && r.Labels["severity"] != w.severity {
			t.Errorf("%s: severity %q, want %q", w.alert, r.Labels["severity"], w.severity)
		}
	}
	if len(rules) != len(want) {
		t.Errorf("%d alerts, want %d: update this test when adding one", len(rules), len(want))
	}

	// Alerts that only make sense with a given label on their output.
	for alert, label := range map[string]string{
		"PgfrontBuiltinAlert": "alert", "PgfrontNoPrimary": "cluster", "PgfrontSplitBrain": "cluster", "PgfrontRefusals": "reason",
		"PgfrontServerDown": "server", "PgfrontTLSCertificateExpiry": "route", "PgfrontAcceptErrors": "route",
	} {
		e, err := c.parser.ParseExpr(rules[alert].Expr)
		if err != nil {
			t.Fatalf("%s: %v", alert, err)
		}
		if out := c.labelsOf(e); out == nil || !out[label] {
			t.Errorf("%s: alerts carry labels %v, want %q among them", alert, slices.Sorted(maps.Keys(out)), label)
		}
	}
}

// TestRulesTLSCertificateExpiry: the expiry alert fires 14 days before a route certificate's
// NotAfter, per certificate.
func TestRulesTLSCertificateExpiry(t *testing.T) {
	c := newChecker(t)
	f, problems := checkRules(c, readFile(t, rulesPath))
	if len(problems) > 0 || len(f.Groups) != 1 {
		t.Fatalf("rules file has problems (see TestRulesCheckClean): %v", problems)
	}
	var expr string
	for _, r := range f.Groups[0].Rules {
		if r.Alert == "PgfrontTLSCertificateExpiry" {
			expr = r.Expr
		}
	}
	e, err := c.parser.ParseExpr(expr)
	if err != nil {
		t.Fatalf("PgfrontTLSCertificateExpiry: %v", err)
	}
	b, ok := e.(*parser.BinaryExpr)
	if !ok || b.Op != parser.LSS || b.ReturnBool {
		t.Fatalf("expr %q is not `... < threshold`", expr)
	}
	if got := constValue(b.RHS); got != 14*86400 {
		t.Errorf("threshold %s = %g seconds, want 14 days", b.RHS, got)
	}
	var got []string
	for _, vs := range selectorsOf(b.LHS) {
		got = append(got, vs.String())
	}
	if want := []string{"pgfront_tls_certificate_expiry_timestamp_seconds"}; !slices.Equal(got, want) {
		t.Errorf("reads %v, want %v", got, want)
	}
	if out := c.labelsOf(e); !out["file"] || !out["subject"] {
		t.Errorf("alerts carry labels %v, want file and subject (one alert per certificate)", slices.Sorted(maps.Keys(out)))
	}
}

// constValue evaluates a constant expression of number literals and * (NaN otherwise).
func constValue(e parser.Expr) float64 {
	switch v := e.(type) {
	case *parser.NumberLiteral:
		return v.Val
	case *parser.ParenExpr:
		return constValue(v.Expr)
	case *parser.BinaryExpr:
		if v.Op == parser.MUL {
			return constValue(v.LHS) * constValue(v.RHS)
		}
	}
	return math.NaN()
}

// TestRulesMirrorBuiltinAlerts checks that each built-in alert has a rule over the same
// metric with the built-in default threshold.
func TestRulesMirrorBuiltinAlerts(t *testing.T) {
	c := newChecker(t)
	f, problems := checkRules(c, readFile(t, rulesPath))
	if len(problems) > 0 || len(f.Groups) != 1 {
		t.Fatalf("rules file has problems (see TestRulesCheckClean): %v", problems)
	}
	// The built-in defaults, as pgfront itself applies them.
	def, _, err := config.Parse([]byte("clusters: {c: {servers: [{name: s, address: \"127.0.0.1:1\", role: primary}]}}\n"+
		"routes: {r: {listen: \"127.0.0.1:0\", cluster: c, role: primary}}\n"), "defaults.yaml")
	if err != nil {
		t.Fatal(err)
	}
	al := def.Alerts
	mirrors := []struct {
		builtin, alert string
		threshold      float64  // the built-in default
		selectors      []string // what the rule must read, in order
	}{
		{"close_wait", "PgfrontCloseWait", float64(al.CloseWait), []string{`pgfront_sockets{state="CLOSE_WAIT"}`}},
		{"fin_wait2", "PgfrontFinWait2", float64(al.FinWait2), []string{`pgfront_sockets{state="FIN_WAIT2"}`}},
		{"half_closed_age", "PgfrontHalfClosedAge", al.HalfClosedAge.D().Seconds(), []string{"pgfront_half_closed_oldest_seconds"}},
		{"queue", "PgfrontQueue", float64(al.Queue), []string{"pgfront_queued_sessions"}},
		{"fd_usage", "PgfrontFdUsage", al.FDUsage, []string{"process_open_fds", "process_max_fds"}},
	}
	var builtins []string
	for _, m := range mirrors {
		builtins = append(builtins, m.builtin)
	}
	if !slices.Equal(builtins, builtinAlertNames) {
		t.Errorf("mirrored built-ins %v, want every built-in alert %v", builtins, builtinAlertNames)
	}
	for _, m := range mirrors {
		var r *rule
		for i := range f.Groups[0].Rules {
			if f.Groups[0].Rules[i].Alert == m.alert {
				r = &f.Groups[0].Rules[i]
			}
		}
		if r == nil {
			t.Errorf("%s (built-in %s) is missing", m.alert, m.builtin)
			continue
		}
		e, err := c.parser.ParseExpr(r.Expr)
		if err != nil {
			t.Fatalf("%s: %v", m.alert, err)
		}
		b, ok := e.(*parser.BinaryExpr)
		if !ok || b.Op != parser.GTE || b.ReturnBool {
			t.Errorf("%s: expr %q is not `... >= threshold`", m.alert, r.Expr)
			continue
		}
		if n, ok := b.RHS.(*parser.NumberLiteral); !ok || n.Val != m.threshold {
			t.Errorf("%s: threshold %s, want the built-in default %v", m.alert, b.RHS, m.threshold)
		}
		var got []string
		for _, vs := range selectorsOf(b.LHS) {
			got = append(got, vs.String())
		}
		if !slices.Equal(got, m.selectors) {
			t.Errorf("%s: reads %v, want %v", m.alert, got, m.selectors)
		}
	}
}

func TestDashboardCheckClean(t *testing.T) {
	c := newChecker(t)
	panels, problems := checkDashboard(c, readFile(t, dashboardPath))
	for _, p := range problems {
		t.Error(p)
	}
	if len(panels) < 20 {
		t.Errorf("%d panels, want the full dashboard", len(panels))
	}
}

// TestDashboardContent checks that each row shows what the spec asks of it, and that the
// CLOSE_WAIT and FIN_WAIT2 stat panels turn red at the built-in thresholds.
func TestDashboardContent(t *testing.T) {
	c := newChecker(t)
	panels, problems := checkDashboard(c, readFile(t, dashboardPath))
	if len(problems) > 0 {
		t.Fatalf("dashboard has problems (see TestDashboardCheckClean): %v", problems)
	}
	rows := []struct {
		title  string
		series []string
	}{
		{"Sessions", []string{"pgfront_route_sessions", "pgfront_sessions_total", "pgfront_sessions_ended_total",
			"pgfront_refusals_total", "pgfront_queued_sessions", "pgfront_queue_wait_seconds_bucket"}},
		{"Sockets", []string{"pgfront_sockets", "pgfront_half_closed_sessions", "pgfront_half_closed_oldest_seconds"}},
		{"Servers", []string{"pgfront_server_up", "pgfront_server_role", "pgfront_server_lag_bytes",
			"pgfront_server_lag_seconds", "pgfront_server_check_duration_seconds_bucket", "pgfront_server_transitions_total"}},
		{"Traffic", []string{"pgfront_bytes_total", "pgfront_queries_total", "pgfront_transactions_total",
			"pgfront_query_duration_seconds_bucket", "pgfront_transaction_duration_seconds_bucket"}},
		{"Alerts", []string{"pgfront_alert_active"}},
		{"Process", []string{"process_open_fds", "process_max_fds", "go_goroutines", "process_resident_memory_bytes"}},
	}
	shown := map[string]map[string]bool{}
	for _, p := range panels {
		if shown[p.row] == nil {
			shown[p.row] = map[string]bool{}
		}
		for _, vs := range p.selectors {
			shown[p.row][metricName(vs)] = true
		}
	}
	for _, r := range rows {
		if shown[r.title] == nil {
			t.Errorf("row %q is missing or empty", r.title)
			continue
		}
		for _, s := range r.series {
			if !shown[r.title][s] {
				t.Errorf("row %q shows no %s", r.title, s)
			}
		}
	}

	for _, state := range []string{"CLOSE_WAIT", "FIN_WAIT2"} {
		found := false
		for _, p := range panels {
			if p.panel.Type != "stat" || !slices.ContainsFunc(p.selectors, func(vs *parser.VectorSelector) bool {
				return metricName(vs) == "pgfront_sockets" && slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool {
					return m.Name == "state" && m.Type == labels.MatchEqual && m.Value == state
				})
			}) {
				continue
			}
			found = true
			th := p.panel.FieldConfig.Defaults.Thresholds
			if th == nil || !slices.ContainsFunc(th.Steps, func(s thresholdStep) bool {
				return s.Color == "red" && s.Value != nil && *s.Value == 50
			}) {
				t.Errorf("stat panel %q: want a red threshold at the built-in 50", p.panel.Title)
			}
		}
		if !found {
			t.Errorf("no stat panel shows pgfront_sockets{state=%q}", state)
		}
	}
}

// TestValueSetsCoverFamilies fails when a family gains a value-checked label (state,
// result, ...) that the contract table in this file does not describe.
func TestValueSetsCoverFamilies(t *testing.T) {
	checked := 0
	for _, f := range observe.Families() {
		for _, l := range f.Labels {
			if !slices.Contains(valueCheckedLabels, l) {
				continue
			}
			checked++
			if _, ok := allowedValues(f.Name, l); !ok {
				t.Errorf("%s: label %q has no allowed-value set in this test", f.Name, l)
			}
		}
	}
	if checked < 10 {
		t.Errorf("only %d value-checked labels among the families, want the documented ones", checked)
	}
}

// ---------------------------------------------------------------------------------------
// Tests of the checkers themselves: each mistake must be reported.

func TestCheckerAcceptsValidExpressions(t *testing.T) {
	c := newChecker(t)
	for _, expr := range []string{
		`process_open_fds / process_max_fds >= 0.8`,
		`go_gc_duration_seconds{quantile="0.5"}`,
		`histogram_quantile(0.9, sum by (le, route) (rate(pgfront_query_duration_seconds_bucket[5m])))`,
		`pgfront_server_role{role="primary"} * on (cluster, server) group_left (route) pgfront_queries_total`,
		`count_values without (cluster) ("up", pgfront_server_up)`,
		`sum by (up) (count_values without (cluster) ("up", pgfront_server_up))`,
		`label_replace(pgfront_server_up, "host", "$1", "server", "(.*):.*")`,
		`sum by (host) (label_replace(pgfront_server_up, "host", "$1", "server", "(.*):.*"))`,
		`pgfront_sockets{side="client", state!="ESTABLISHED", cluster=""}`,
		`pgfront_server_admin_state{state="drain"} == 1`,
		`sum by (job, instance) (pgfront_maxconn)`,
	} {
		if problems := c.check(expr); len(problems) > 0 {
			t.Errorf("check(%s) = %v, want no problems", expr, problems)
		}
	}
}

func TestCheckerReportsMistakes(t *testing.T) {
	c := newChecker(t)
	for _, tc := range []struct {
		expr, want string
	}{
		{`sum by (instance) (pgfront_socket{state="CLOSE_WAIT"}) >= 50`, `unknown metric "pgfront_socket"`},
		{`pgfront_sockets{sate="CLOSE_WAIT"}`, `pgfront_sockets has no label "sate"`},
		{`pgfront_sockets{state="CLOSEWAIT"}`, `state="CLOSEWAIT" is not one of`},
		{`pgfront_server_admin_state{state="CLOSE_WAIT"}`, `state="CLOSE_WAIT" is not one of`},
		{`pgfront_socket_samples_total{result="failed"}`, `result="failed" is not one of`},
		{`pgfront_refusals_total{reason="too_many"}`, `reason="too_many" is not one of`},
		{`sum by (cluster) (pgfront_route_sessions)`, `grouping label "cluster"`},
		{`sum by (route) (sum by (cluster) (pgfront_server_up))`, `grouping label "route"`},
		{`sum by (server) (sum without (server) (pgfront_server_up))`, `grouping label "server"`},
		{`pgfront_route_sessions * on (route) pgfront_server_up`, `matching label "route" is not a label of both sides`},
		{`pgfront_server_up * on (cluster, server) group_left (role) pgfront_server_sessions`, `group label "role"`},
		{`pgfront_queue_wait_seconds`, `unknown metric "pgfront_queue_wait_seconds"`},
		{`pgfront_route_sessions_bucket`, `unknown metric "pgfront_route_sessions_bucket"`},
		{`pgfront_queue_wait_seconds_sum{le="1"}`, `has no label "le"`},
		{`histogram_quantile(0.9, sum by (route) (rate(pgfront_queue_wait_seconds_bucket[5m])))`, `without an le label`},
		{`label_replace(pgfront_server_up, "host", "$1", "instanse", "(.*)")`, `label "instanse"`},
		{`process_open_fd / process_max_fds`, `unknown metric "process_open_fd"`},
		{`{__name__=~"pgfront_.*"}`, `names no metric`},
		{`sum by (instance) (pgfront_sockets{state="CLOSE_WAIT"} >= 50`, `parsing`},
	} {
		problems := c.check(tc.expr)
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("check(%s) = %q, want a problem containing %q", tc.expr, problems, tc.want)
		}
	}
}

// validRule is a rule file the checker accepts; each case below breaks one thing in it.
const validRule = `groups:
  - name: pgfront
    rules:
      - alert: PgfrontTest
        expr: sum by (instance, route) (pgfront_queued_sessions) >= 1
        for: 1m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.route }} on {{ $labels.instance }}: {{ $value | humanize }}"
          description: "queued"
          runbook: "look"
`

func TestCheckRulesReportsMistakes(t *testing.T) {
	c := newChecker(t)
	if _, problems := checkRules(c, []byte(validRule)); len(problems) > 0 {
		t.Fatalf("the valid rule has problems: %v", problems)
	}
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"misspelt metric", "pgfront_queued_sessions", `pgfront_socket{state="CLOSE_WAIT"}`, `unknown metric "pgfront_socket"`},
		{"bad label", "(pgfront_queued_sessions)", `(pgfront_queued_sessions{cluster="a"})`, `has no label "cluster"`},
		{"unknown field", "annotations:", "anotations:", "decoding rules"},
		{"bad severity", "severity: warning", "severity: page", `labels.severity "page"`},
		{"bad for", "for: 1m", "for: 1 minute", "for:"},
		{"missing runbook", `runbook: "look"`, `runbok: "look"`, "annotations.runbook is missing"},
		{"label not carried", "$labels.route", "$labels.cluster", "$labels.cluster"},
		{"bad template", "| humanize", "| humanise", "parsing template"},
		{"group name", "name: pgfront", "name: pgfrontd", "want exactly one group"},
		{"alert name", "alert: PgfrontTest", "alert: test", `alert name "test"`},
		{"syntax", ">= 1", ">=", "parsing expr"},
	} {
		data := strings.Replace(validRule, tc.old, tc.new, 1)
		if data == validRule {
			t.Fatalf("%s: %q is not in the valid rule", tc.name, tc.old)
		}
		_, problems := checkRules(c, []byte(data))
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%s: problems %q, want one containing %q", tc.name, problems, tc.want)
		}
	}
}

// validDashboard is a dashboard the checker accepts; each case below breaks one thing.
const validDashboard = `{
  "__inputs": [{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}],
  "schemaVersion": 39, "title": "t", "uid": "t",
  "templating": {"list": [
    {"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus"},
    {"name": "instance", "type": "query", "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
     "definition": "label_values(pgfront_route_sessions, instance)",
     "query": {"query": "label_values(pgfront_route_sessions, instance)"}}
  ]},
  "panels": [
    {"id": 1, "type": "row", "title": "Sessions", "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}},
    {"id": 2, "type": "timeseries", "title": "Open", "gridPos": {"h": 8, "w": 12, "x": 0, "y": 1},
     "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
     "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
       "expr": "sum by (route) (rate(pgfront_sessions_total{instance=~\"$instance\"}[$__rate_interval]))"}]},
    {"id": 3, "type": "stat", "title": "Queued", "gridPos": {"h": 8, "w": 12, "x": 12, "y": 1},
     "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
     "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
       "expr": "sum(pgfront_queued_sessions{instance=~\"$instance\"})"}]}
  ]
}`

func TestCheckDashboardReportsMistakes(t *testing.T) {
	c := newChecker(t)
	panels, problems := checkDashboard(c, []byte(validDashboard))
	if len(problems) > 0 {
		t.Fatalf("the valid dashboard has problems: %v", problems)
	}
	if len(panels) != 2 || panels[0].row != "Sessions" || len(panels[1].selectors) != 1 {
		t.Fatalf("panels %+v: want 2 in row Sessions with one selector each", panels)
	}
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"misspelt metric", "pgfront_queued_sessions{", `pgfront_socket{state=\"CLOSE_WAIT\", `, `unknown metric "pgfront_socket"`},
		{"bad label", `pgfront_queued_sessions{`, `pgfront_queued_sessions{cause=\"x\", `, `has no label "cause"`},
		{"no instance filter", `pgfront_queued_sessions{instance=~\"$instance\"}`, `pgfront_queued_sessions`, `does not filter on instance`},
		{"unknown variable", `[$__rate_interval]`, `[$interval]`, "unknown variable"},
		{"duplicate id", `"id": 3`, `"id": 2`, "id also used by"},
		{"no gridPos", `"gridPos": {"h": 8, "w": 12, "x": 12, "y": 1},`, ``, "no gridPos"},
		{"overlap", `"x": 12, "y": 1`, `"x": 6, "y": 1`, "overlaps panel 2"},
		{"too wide", `"x": 12, "y": 1`, `"x": 13, "y": 1`, "outside the 24-column grid"},
		{"no title", `"title": "Queued"`, `"title": ""`, "no title"},
		{"plugin panel", `"type": "stat"`, `"type": "grafana-piechart-panel"`, "not a built-in panel"},
		{"datasource", `"type": "stat", "title": "Queued", "gridPos": {"h": 8, "w": 12, "x": 12, "y": 1},
     "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}`, `"type": "stat", "title": "Queued", "gridPos": {"h": 8, "w": 12, "x": 12, "y": 1},
     "datasource": {"type": "prometheus", "uid": "abc"}`, "datasource"},
		{"schema", `"schemaVersion": 39`, `"schemaVersion": 38`, "schemaVersion 38"},
		{"inputs", `"name": "DS_PROMETHEUS", "type": "datasource", "pluginId"`, `"name": "DS_PROM", "type": "datasource", "pluginId"`, "__inputs"},
		{"instance variable", `"query": {"query": "label_values(pgfront_route_sessions, instance)"}`, `"query": {"query": "label_values(pgfront_route_session, instance)"}`, `unknown metric "pgfront_route_session"`},
		{"syntax", `sum(pgfront_queued_sessions`, `sum((pgfront_queued_sessions`, "parsing"},
	} {
		data := strings.Replace(validDashboard, tc.old, tc.new, 1)
		if data == validDashboard {
			t.Fatalf("%s: %q is not in the valid dashboard", tc.name, tc.old)
		}
		_, problems := checkDashboard(c, []byte(data))
		if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
			t.Errorf("%s: problems %q, want one containing %q", tc.name, problems, tc.want)
		}
	}
}

// TestCatalogueRejectsBadFamilies checks the catalogue's own guards: a family outside
// pgfront_*, one of an unknown type, and a duplicate are errors, not silently accepted.
func TestCatalogueRejectsBadFamilies(t *testing.T) {
	for _, tc := range []struct {
		name string
		fams []observe.Family
		want string
	}{
		{"prefix", []observe.Family{{Name: "sessions_total", Type: "counter"}}, "named pgfront_"},
		{"type", []observe.Family{{Name: "pgfront_x", Type: "summary2"}}, `unknown type "summary2"`},
		{"duplicate", []observe.Family{{Name: "pgfront_x", Type: "gauge"}, {Name: "pgfront_x", Type: "gauge"}}, "defined twice"},
		{"histogram clash", []observe.Family{{Name: "pgfront_x", Type: "histogram"}, {Name: "pgfront_x_count", Type: "gauge"}}, "defined twice"},
	} {
		_, err := newCatalogue(tc.fams)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	cat, err := newCatalogue(nil)
	if err != nil {
		t.Fatalf("catalogue of the runtime collectors: %v", err)
	}
	for _, name := range []string{"process_open_fds", "process_max_fds", "process_resident_memory_bytes", "go_goroutines", "go_gc_duration_seconds_count"} {
		if _, ok := cat[name]; !ok {
			t.Errorf("runtime collectors do not provide %s", name)
		}
	}
}
