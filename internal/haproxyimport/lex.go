package haproxyimport

import (
	"strconv"
	"strings"
)

// line is one statement of the file: its words after quoting and escaping are resolved.
type line struct {
	n        int      // 1-based line number
	words    []string // never empty
	indented bool     // the line starts with a space or a tab
}

// text is the statement as one string for messages and comments: its words joined by single
// spaces, each printable.
func (l line) text() string {
	return printable(strings.Join(l.words, " "))
}

// section is a section keyword and the statements after it, up to the next section.
type section struct {
	kind  string // global, defaults, listen, frontend, backend, or another section keyword
	name  string // "" for global and an unnamed defaults
	from  string // the defaults section named by "from NAME"
	addr  string // listen NAME ADDR: the old form of bind
	head  line
	lines []line
}

// sectionKeywords start a section wherever they appear (HAProxy's rule 7). The importer maps
// the first five; the others are listed as not mapped.
var sectionKeywords = map[string]bool{
	"global": true, "defaults": true, "listen": true, "frontend": true, "backend": true,
	"userlist": true, "peers": true, "resolvers": true, "mailers": true, "program": true,
	"http-errors": true, "ring": true, "cache": true, "fcgi-app": true, "log-forward": true,
	"crt-store": true, "traces": true, "acme": true,
}

// split cuts data into sections. Lexical and structural problems are added to ps; the
// sections read so far are returned with them.
func split(data []byte, ps *problems) []*section {
	var out []*section
	var cur *section
	for i, raw := range strings.Split(string(data), "\n") {
		n := i + 1
		raw = strings.TrimSuffix(raw, "\r")
		if strings.IndexByte(raw, 0) >= 0 {
			ps.add(n, "NUL byte in the line")
			continue
		}
		words, err := tokenize(raw)
		if err != "" {
			ps.add(n, "%s", err)
			continue
		}
		if len(words) == 0 {
			continue
		}
		l := line{n: n, words: words, indented: raw[0] == ' ' || raw[0] == '\t'}
		kw := words[0]
		if strings.HasPrefix(kw, ".") {
			switch kw {
			case ".if", ".elif", ".else", ".endif":
				ps.add(n, "%s: conditional blocks are not supported: keep the branch that applies and remove the directives", kw)
			default: // .notice, .warning, .alert, .diag: messages at start-up only
			}
			continue
		}
		if sectionKeywords[kw] {
			cur = newSection(l, ps)
			out = append(out, cur)
			continue
		}
		switch {
		case cur == nil:
			ps.add(n, "%q outside any section: unknown section (sections are global, defaults, listen, frontend and backend)", printable(kw))
			continue
		case !l.indented && !knownKeyword(cur.kind, kw):
			ps.add(n, "unknown section %q (sections are global, defaults, listen, frontend and backend; a keyword of a section is indented)", printable(kw))
			continue
		}
		cur.lines = append(cur.lines, l)
	}
	return out
}

// newSection reads a section header: KIND [NAME] [ADDR] [from DEFAULTS].
func newSection(l line, ps *problems) *section {
	s := &section{kind: l.words[0], head: l}
	args := l.words[1:]
	if len(args) >= 2 && args[len(args)-2] == "from" {
		s.from = args[len(args)-1]
		args = args[:len(args)-2]
		if s.kind != "defaults" && s.kind != "listen" && s.kind != "frontend" && s.kind != "backend" {
			ps.add(l.n, "%s: \"from\" applies only to defaults, listen, frontend and backend sections", s.kind)
		}
	}
	switch s.kind {
	case "global":
		if len(args) > 0 {
			ps.add(l.n, "global takes no name, got %q", printable(args[0]))
		}
	case "defaults":
		if len(args) > 1 {
			ps.add(l.n, "defaults: unexpected %q after the name", printable(args[1]))
		}
		if len(args) > 0 {
			s.name = args[0]
		}
	case "listen", "frontend", "backend":
		if len(args) == 0 {
			ps.add(l.n, "%s needs a name", s.kind)
			return s
		}
		s.name = args[0]
		rest := args[1:]
		if s.kind == "listen" && len(rest) > 0 {
			s.addr, rest = rest[0], rest[1:] // listen NAME ADDR: the old form of bind
		}
		if len(rest) > 0 {
			ps.add(l.n, "%s %s: unexpected %q", s.kind, printable(s.name), printable(rest[0]))
		}
	default:
		if len(args) > 0 {
			s.name = args[0]
		}
	}
	return s
}

// tokenize cuts a line into words as HAProxy does: words are separated by unprotected spaces
// and tabs, an unprotected '#' starts a comment, a backslash escapes the next character
// (\n, \r, \t and \xNN included), double quotes protect spaces and '#' and keep "$VAR"
// (environment variables are not expanded here), single quotes protect everything. It
// returns a message instead of words when the line is malformed.
func tokenize(s string) ([]string, string) {
	var words []string
	var w strings.Builder
	inWord := false
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				w.WriteByte(c)
			}
			continue
		case c == '\\' && quote != '\'':
			if i+1 >= len(s) {
				return nil, "a backslash ends the line: HAProxy has no continuation lines"
			}
			i++
			switch e := s[i]; e {
			case 'n':
				w.WriteByte('\n')
			case 'r':
				w.WriteByte('\r')
			case 't':
				w.WriteByte('\t')
			case 'x':
				if i+2 >= len(s) {
					return nil, `\x needs two hex digits`
				}
				v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
				if err != nil {
					return nil, `\x needs two hex digits`
				}
				w.WriteByte(byte(v))
				i += 2
			default:
				w.WriteByte(e)
			}
			inWord = true
			continue
		case quote == '"':
			if c == '"' {
				quote = 0
			} else {
				w.WriteByte(c)
			}
			continue
		}
		switch c {
		case ' ', '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case '#':
			if inWord {
				words = append(words, w.String())
			}
			return words, ""
		case '"', '\'':
			quote = c
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, "unterminated " + map[byte]string{'"': "double", '\'': "single"}[quote] + " quote"
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, ""
}

// printable makes s safe for a message or a YAML comment: one line, valid UTF-8, every
// control or line-breaking character replaced by '?'.
func printable(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 || r == 0xfeff {
			return '?'
		}
		return r
	}, s)
}
