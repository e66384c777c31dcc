package haproxyimport

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/pgfront/pgfront/internal/config"
)

// Problem is one reason an HAProxy file could not be imported.
type Problem struct {
	File    string
	Line    int
	Message string
}

// String formats p as "FILE:LINE: message".
func (p Problem) String() string { return loc(p.File, p.Line) + p.Message }

// Error is returned by Import for malformed input: every problem found, in line order.
type Error struct {
	Problems []Problem
}

// Error joins the problems, one per line.
func (e *Error) Error() string {
	s := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		s[i] = p.String()
	}
	return strings.Join(s, "\n")
}

// errGenerated marks output that does not load: a bug of the importer, never of the input.
var errGenerated = errors.New("the generated config does not load (a bug in pgfront import; please report it with the HAProxy file)")

// Note is a line of the HAProxy file that was not mapped (and why), or a warning about it.
type Note struct {
	File    string
	Line    int    // 0 when the note is about the generated config
	Text    string // the HAProxy statement, as read
	Message string
}

// String formats n as "FILE:LINE: text: message".
func (n Note) String() string {
	s := loc(n.File, n.Line)
	if n.Text != "" {
		s += n.Text + ": "
	}
	return s + n.Message
}

func loc(file string, line int) string {
	switch {
	case line <= 0:
		return ""
	case file == "":
		return "line " + strconv.Itoa(line) + ": "
	default:
		return file + ":" + strconv.Itoa(line) + ": "
	}
}

// Result is an imported configuration.
type Result struct {
	// YAML is the pgfront config: the notes and warnings as comments at the top, then every
	// mapped key with a comment naming its HAProxy line. It loads with config.Parse.
	YAML []byte
	// Skipped lists what was not mapped, and why, in line order.
	Skipped []Note
	// Warnings are the traps of the HAProxy file (half-closed connections held for the whole
	// client or server timeout, times without a unit), then what `pgfront check` warns about
	// in YAML.
	Warnings []Note
	// Routes, Clusters and Servers count what was mapped.
	Routes, Clusters, Servers int
}

// Import reads an HAProxy configuration and returns the pgfront configuration it maps to.
// file names the input in messages and comments. A malformed input gives an *Error with
// every problem and its line.
func Import(data []byte, file string) (*Result, error) {
	ps := &problems{file: file}
	ns := &notes{file: file, seen: map[string]bool{}}
	sections := split(data, ps)
	cfg := read(sections, ps, ns)
	if err := ps.err(); err != nil {
		return nil, err
	}
	o := convert(cfg, ps, ns)
	if err := ps.err(); err != nil {
		return nil, err
	}
	if len(o.routes) == 0 {
		ps.add(0, "nothing to import: no listen or frontend section serves PostgreSQL with a Patroni health check (option httpchk on /primary, /replica, ...; check port 8008 on the servers). Not mapped:\n%s", indentNotes(ns.skipped))
		return nil, ps.err()
	}
	body := o.yaml(file)
	_, warnings, err := config.Parse(body, "")
	if err != nil {
		return nil, fmt.Errorf("%w:\n%v\n%s", errGenerated, err, body)
	}
	for _, w := range warnings {
		ns.warnings = append(ns.warnings, Note{Text: "pgfront check", Message: w.Path + ": " + w.Message})
	}
	ns.sort()
	res := &Result{Skipped: ns.skipped, Warnings: ns.warnings, Routes: len(o.routes), Clusters: len(o.clusters)}
	for _, c := range o.clusters {
		res.Servers += len(c.servers)
	}
	res.YAML = append(header(file, res), body...)
	if _, _, err := config.Parse(res.YAML, ""); err != nil {
		return nil, fmt.Errorf("%w (its header):\n%v", errGenerated, err)
	}
	return res, nil
}

func indentNotes(ns []Note) string {
	if len(ns) == 0 {
		return "  (nothing)"
	}
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = "  " + n.String()
	}
	return strings.Join(s, "\n")
}

// problems collects the problems of an input.
type problems struct {
	file string
	list []Problem
}

func (ps *problems) add(line int, format string, args ...any) {
	ps.list = append(ps.list, Problem{File: ps.file, Line: line, Message: fmt.Sprintf(format, args...)})
}

func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	sort.SliceStable(ps.list, func(i, j int) bool { return ps.list[i].Line < ps.list[j].Line })
	return &Error{Problems: ps.list}
}

// notes collects what was not mapped and the warnings, each once.
type notes struct {
	file              string
	skipped, warnings []Note
	seen              map[string]bool
}

func (ns *notes) add(list *[]Note, s src, format string, args ...any) {
	n := Note{File: ns.file, Line: s.n, Text: s.text, Message: fmt.Sprintf(format, args...)}
	key := n.String()
	if ns.seen[key] {
		return
	}
	ns.seen[key] = true
	*list = append(*list, n)
}

// skip notes a line that was not mapped, and why.
func (ns *notes) skip(s src, format string, args ...any) { ns.add(&ns.skipped, s, format, args...) }

// warn notes a trap of the HAProxy file.
func (ns *notes) warn(s src, format string, args ...any) { ns.add(&ns.warnings, s, format, args...) }

func (ns *notes) sort() {
	for _, l := range []*[]Note{&ns.skipped, &ns.warnings} {
		sort.SliceStable(*l, func(i, j int) bool {
			a, b := (*l)[i].Line, (*l)[j].Line
			return a > 0 && (b == 0 || a < b) // notes about the output last
		})
	}
}
