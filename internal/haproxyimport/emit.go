package haproxyimport

import (
	"fmt"
	"strconv"
	"strings"
)

// wrapAt is the width comment paragraphs are wrapped to.
const wrapAt = 96

// maxSources is how many HAProxy lines a key's comment names before "and N more".
const maxSources = 3

// writer writes YAML with comments.
type writer struct {
	b    strings.Builder
	file string
	said map[string]bool // the whys written so far: each is written once, above its first key
}

// comment writes text as comment lines at indent, wrapped; first and rest prefix the first
// and the following lines after "# ".
func (w *writer) comment(indent int, text, first, rest string) {
	pad := strings.Repeat(" ", indent)
	prefix := first
	for _, l := range wrap(printable(text), wrapAt-indent-2-len(first)) {
		w.b.WriteString(pad + "#" + strings.TrimRight(" "+prefix+l, " ") + "\n")
		prefix = rest
	}
}

// wrap cuts text into lines of at most width bytes at spaces (a longer word stays whole).
func wrap(text string, width int) []string {
	width = max(width, 20)
	var out []string
	line := ""
	for _, word := range strings.Fields(text) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) <= width:
			line += " " + word
		default:
			out = append(out, line)
			line = word
		}
	}
	if line != "" || len(out) == 0 {
		out = append(out, line)
	}
	return out
}

// sources writes the comment naming where a value comes from: "FILE:12, 30: text" for lines
// of the same text.
func (w *writer) sources(srcs []src) string {
	var texts []string
	lines := map[string][]string{}
	for _, s := range srcs {
		if _, ok := lines[s.text]; !ok {
			texts = append(texts, s.text)
		}
		lines[s.text] = append(lines[s.text], strconv.Itoa(s.n))
	}
	var parts []string
	for i, t := range texts {
		if i == maxSources {
			parts = append(parts, fmt.Sprintf("and %d more", len(texts)-maxSources))
			break
		}
		l := loc(w.file, 1) // "FILE:1: "
		l = strings.TrimSuffix(l, "1: ") + strings.Join(lines[t], ", ") + ": "
		parts = append(parts, l+t)
	}
	if len(parts) == 0 {
		return ""
	}
	return "  # " + printable(strings.Join(parts, "; "))
}

// item writes "key: value  # sources", with its why above.
func (w *writer) item(indent int, it item, dash bool) {
	if it.why != "" && !w.said[it.why] {
		w.said[it.why] = true
		w.comment(indent, it.why, "", "")
	}
	lead := strings.Repeat(" ", indent)
	if dash {
		lead = strings.Repeat(" ", indent-2) + "- "
	}
	w.b.WriteString(lead + it.key + ": " + it.value + w.sources(it.srcs) + "\n")
}

func (w *writer) items(indent int, items []item) {
	for _, it := range items {
		w.item(indent, it, false)
	}
}

// yaml writes the config body (without the header).
func (o *output) yaml(file string) []byte {
	w := &writer{file: file, said: map[string]bool{}}
	if len(o.top) > 0 {
		w.items(0, o.top)
		w.b.WriteString("\n")
	}
	if len(o.timeouts) > 0 {
		w.b.WriteString("timeouts:\n")
		w.items(2, o.timeouts)
		w.b.WriteString("\n")
	}
	if len(o.admin) > 0 {
		w.b.WriteString("admin:\n")
		w.items(2, o.admin)
		w.b.WriteString("\n")
	}
	w.b.WriteString("clusters:\n")
	for _, c := range o.clusters {
		if c.why != "" {
			w.comment(2, c.why, "", "")
		}
		w.b.WriteString("  " + yamlString(c.name) + ":\n")
		w.items(4, c.items)
		w.b.WriteString("    health:\n")
		w.items(6, c.health)
		w.b.WriteString("    servers:\n")
		for _, s := range c.servers {
			for i, it := range s.items {
				w.item(8, it, i == 0)
			}
		}
	}
	w.b.WriteString("\nroutes:\n")
	for _, r := range o.routes {
		if r.why != "" {
			w.comment(2, r.why, "", "")
		}
		w.b.WriteString("  " + yamlString(r.name) + ":\n")
		w.items(4, r.items)
		if len(r.maxLag) > 0 {
			w.b.WriteString("    max_lag:\n")
			w.items(6, r.maxLag)
		}
		if len(r.timeouts) > 0 {
			w.b.WriteString("    timeouts:\n")
			w.items(6, r.timeouts)
		}
	}
	return []byte(w.b.String())
}

// header writes the comments at the top: what was imported, the warnings, what was not
// mapped.
func header(file string, res *Result) []byte {
	w := &writer{file: file, said: map[string]bool{}}
	name := file
	if name == "" {
		name = "an HAProxy config"
	}
	plural := func(n int, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return strconv.Itoa(n) + " " + one + "s"
	}
	w.comment(0, fmt.Sprintf("pgfront configuration imported from %s by `pgfront import haproxy`: %s, %s, %s. "+
		"Each key's comment names the HAProxy line it comes from; a comment above a key says where pgfront's meaning differs. "+
		"Review it, then run `pgfront check -c FILE`.",
		name, plural(res.Routes, "route"), plural(res.Clusters, "cluster"), plural(res.Servers, "server")), "", "")
	for _, part := range []struct {
		title string
		list  []Note
	}{{"Warnings", res.Warnings}, {"Not mapped", res.Skipped}} {
		if len(part.list) == 0 {
			continue
		}
		w.b.WriteString("#\n# " + part.title + ":\n")
		for _, n := range part.list {
			w.comment(0, n.String(), "  ", "    ")
		}
	}
	w.b.WriteString("\n")
	return []byte(w.b.String())
}
