package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// A YAML syntax error is reported where the parser gave up, which is often a line after (or
// before) the mistake, in the parser's words ("mapping value is not allowed in this
// context"). yamlHint looks at the text up to the line after the error for the usual
// mistakes and names the line at fault: a tab in the indentation, a line that is neither
// `key: value` nor a list item, or a line whose indentation lines up with no enclosing key
// (or goes deeper under a key that already has a value).

// blockScalar matches the end of a line that starts a literal or folded block (`key: |`).
var blockScalar = regexp.MustCompile(`(^|:|-)\s*[|>][-+0-9]*$`)

// yamlHint returns what it found, or "" when it sees nothing wrong.
func yamlHint(data []byte, errLine int) string {
	if errLine <= 0 || len(data) == 0 {
		return ""
	}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	last := min(errLine+1, len(lines)) // 1-based, inclusive
	for n := 1; n <= last; n++ {
		l := lines[n-1]
		if ws := l[:len(l)-len(strings.TrimLeft(l, " \t"))]; strings.Contains(ws, "\t") {
			return fmt.Sprintf("line %d is indented with a tab; YAML indents with spaces only", n)
		}
	}
	for _, n := range []int{errLine, errLine + 1} {
		if n <= len(lines) && isBareWord(lines[n-1]) {
			return fmt.Sprintf("line %d (%q) is neither `key: value` nor a list item: is a colon missing?", n, strings.TrimSpace(lines[n-1]))
		}
	}
	return indentHint(lines[:last])
}

// isBareWord reports a line of one plain word or phrase, with no colon: in a config, where
// every line is a key, a list item or a comment, that is a key without its colon.
func isBareWord(l string) bool {
	t := strings.TrimSpace(stripComment(l))
	if t == "" || strings.Contains(t, ":") || strings.HasPrefix(t, "-") {
		return false
	}
	switch t[0] {
	case '[', ']', '{', '}', '"', '\'', '|', '>', '&', '*', '!', ',', '%':
		return false
	}
	return true
}

// indentHint walks the lines keeping the indentation of every open mapping and list, and
// describes the first line whose indentation fits none of them.
func indentHint(lines []string) string {
	var open []int // indentations of the open levels, increasing
	opens := false // the previous line ends with a key whose value is the block below it
	prev, prevText := 0, ""
	block := -1 // inside a `key: |` block: lines deeper than this are its text
	flow := 0   // depth of an open [ or { spanning lines
	for i, l := range lines {
		n := i + 1
		text := strings.TrimSpace(stripComment(l))
		if text == "" || text == "---" || text == "..." {
			continue
		}
		ind := len(l) - len(strings.TrimLeft(l, " "))
		if block >= 0 && ind > block {
			continue
		}
		block = -1
		if flow > 0 {
			flow += flowDelta(text)
			continue
		}
		if len(open) > 0 {
			top := open[len(open)-1]
			switch {
			case ind > top && !opens:
				return fmt.Sprintf("line %d is indented deeper than line %d (%q), which already has its value; line it up with the key it belongs to", n, prev, prevText)
			case ind <= top && !contains(open, ind):
				return fmt.Sprintf("line %d is indented %d spaces, in line with no key above it (the enclosing keys are indented %s spaces); keys of one mapping must be indented alike", n, ind, orList(itoas(open)))
			}
		}
		for len(open) > 0 && open[len(open)-1] > ind {
			open = open[:len(open)-1]
		}
		if len(open) == 0 || open[len(open)-1] < ind {
			open = append(open, ind)
		}
		// A list item opens a level where its content starts: "- name: a" -> the column of name.
		content := text
		for strings.HasPrefix(content, "-") && (len(content) == 1 || content[1] == ' ') {
			rest := strings.TrimLeft(content[1:], " ")
			ind += len(content) - len(rest)
			content = rest
			if content != "" {
				open = append(open, ind)
			}
		}
		opens = content == "" || strings.HasSuffix(content, ":")
		if blockScalar.MatchString(content) {
			block = len(l) - len(strings.TrimLeft(l, " "))
		}
		flow = max(0, flowDelta(content))
		prev, prevText = n, text
	}
	return ""
}

// stripComment removes a "# comment" that starts a line or follows a space, outside quotes.
func stripComment(l string) string {
	var quote byte
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '#' && (i == 0 || l[i-1] == ' ' || l[i-1] == '\t'):
			return l[:i]
		}
	}
	return l
}

// flowDelta counts the [ and { a line opens minus those it closes, outside quotes.
func flowDelta(l string) int {
	d := 0
	var quote byte
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '[' || c == '{':
			d++
		case c == ']' || c == '}':
			d--
		}
	}
	return d
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func itoas(xs []int) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = strconv.Itoa(x)
	}
	return out
}
