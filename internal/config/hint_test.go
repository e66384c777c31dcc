package config

import (
	"errors"
	"strings"
	"testing"
)

// TestYAMLSyntaxErrors: a YAML syntax error names its line and column, and the usual
// indentation mistakes get a hint naming the line at fault (which may not be the line the
// parser gave up on).
func TestYAMLSyntaxErrors(t *testing.T) {
	tests := []struct {
		name      string
		src       string
		wantLoc   string // "f.yaml:LINE:COL: invalid YAML: "
		wantHint  string // "" = no hint
		otherwise string // a word the message must hold
	}{
		{"tab indentation", "clusters:\n\tc:\n    servers: []\n",
			"f.yaml:2:1: invalid YAML: ", "line 2 is indented with a tab; YAML indents with spaces only", ""},
		{"a key deeper than its sibling", "routes:\n  rw:\n    listen: a\n      cluster: c\n",
			"f.yaml:3:13: invalid YAML: ", `line 4 is indented deeper than line 3 ("listen: a"), which already has its value`, ""},
		{"a key shallower than its sibling", "routes:\n  rw:\n    listen: a\n   cluster: c\n",
			"f.yaml:4:4: invalid YAML: ", "line 4 is indented 3 spaces, in line with no key above it (the enclosing keys are indented 0, 2 or 4 spaces)", ""},
		{"a list item's key out of line", "clusters:\n  c:\n    servers:\n      - name: a\n       address: b\n",
			"f.yaml:5:8: invalid YAML: ", "line 5 is indented 7 spaces, in line with no key above it (the enclosing keys are indented 0, 2, 4, 6 or 8 spaces)", ""},
		{"one space short at the top", "log:\n  format: text\n level: info\n",
			"f.yaml:3:2: invalid YAML: ", "line 3 is indented 1 spaces", ""},
		{"a key without its colon", "routes:\n  rw\n    listen: a\n",
			"f.yaml:2:3: invalid YAML: ", "line 2 (\"rw\") is neither `key: value` nor a list item: is a colon missing?", ""},
		{"an unclosed quote", "routes:\n  rw:\n    listen: \"a\n",
			"f.yaml:3:13: invalid YAML: ", "", "double-quoted"},
		{"an unclosed flow mapping", "routes: {rw: {listen: a}\n",
			"f.yaml:1:9: invalid YAML: ", "", "'}'"},
		{"a literal block and a flow list do not confuse the hint", "log:\n  format: |\n      text\n        more\nroutes: [\n    a,\n  b]\nx: 1\n  y: 2\n",
			"f.yaml:8:4: invalid YAML: ", `line 9 is indented deeper than line 8 ("x: 1")`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.src), "f.yaml")
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) != 1 {
				t.Fatalf("want one problem, got %v", err)
			}
			msg := e.Error()
			if !strings.HasPrefix(msg, tt.wantLoc) {
				t.Errorf("message %q does not start with %q", msg, tt.wantLoc)
			}
			if tt.wantHint != "" && !strings.Contains(msg, "(hint: "+tt.wantHint) {
				t.Errorf("message %q lacks the hint %q", msg, tt.wantHint)
			}
			if tt.wantHint == "" && strings.Contains(msg, "hint:") {
				t.Errorf("message %q has a hint, want none", msg)
			}
			if !strings.Contains(msg, tt.otherwise) {
				t.Errorf("message %q lacks %q", msg, tt.otherwise)
			}
			if e.Problems[0].Column == 0 {
				t.Errorf("no column: %+v", e.Problems[0])
			}
		})
	}
}

func TestIndentHintIgnoresValidYAML(t *testing.T) {
	valid := []string{
		"clusters:\n  c:\n    servers:\n    - name: a\n      address: b\n    - name: c\n  d: {}\nroutes: {}\n",
		"a:\n  - - x\n    - y\n  - z: 1\n    w: 2\nb: |\n    text\n      more\nc: [1,\n  2]\n# c\n   # indented comment\nd: 'x # y'\n",
		"a: >-\n  folded\n  text\nb:\n  c: 1\n",
	}
	for _, src := range valid {
		if h := indentHint(strings.Split(src, "\n")); h != "" {
			t.Errorf("hint %q for valid YAML:\n%s", h, src)
		}
	}
}

func TestFormatLocColumn(t *testing.T) {
	for _, tt := range []struct {
		p    Problem
		want string
	}{
		{Problem{File: "f.yaml", Line: 3, Column: 7, Message: "m"}, "f.yaml:3:7: m"},
		{Problem{Line: 3, Column: 7, Message: "m"}, "line 3 column 7: m"},
		{Problem{File: "f.yaml", Line: 3, Path: "a.b", Message: "m"}, "f.yaml:3: a.b: m"},
		{Problem{File: "f.yaml", Column: 7, Message: "m"}, "f.yaml: m"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.p, got, tt.want)
		}
	}
}
