// Package cli owns the conventions every pgfront command shares: flags may come before or
// after positional arguments (`pgfront ctl servers -addr X`), -h and --help print the
// command's help (what it does, usage, flags and examples) on stdout and exit 0, a mistake in
// how a command was called is a UsageError (exit 2, with a pointer to the help), and a config
// file that -c does not name is DefaultConfig.
//
//	fs := flag.NewFlagSet("check", flag.ContinueOnError)
//	path := fs.String("c", cli.DefaultConfig, "config file")
//	args, err := cli.Parse(fs, os.Args[2:]) // flag.ErrHelp for -h, a *UsageError for a bad flag
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// DefaultConfig is the config file a command reads when -c does not name one.
const DefaultConfig = "/etc/pgfront/pgfront.yaml"

// UsageError is a mistake in how a command was called (an unknown flag, a missing or extra
// argument): the command exits 2 and points at its help.
type UsageError struct {
	Err error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Parse parses the flags of fs found anywhere in args and returns the other arguments in
// order. Everything after "--" is positional; so is "-" and anything that looks like a
// negative number ("-1"). A flag that takes a value takes the next argument unless written
// -flag=value. It returns flag.ErrHelp for -h, -help or --help (unless fs defines them) and
// a *UsageError for any other flag error; it prints nothing (fs's output is discarded).
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !isFlag(a) {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if hasValue || i+1 >= len(args) {
			continue
		}
		if f := fs.Lookup(name); f != nil && !isBool(f) {
			i++
			flags = append(flags, args[i])
		}
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, flag.ErrHelp
		}
		return nil, &UsageError{Err: err}
	}
	return positional, nil
}

// isFlag reports whether a looks like a flag: a dash and a letter ("-c", "--help"), not "-",
// not "-1".
func isFlag(a string) bool {
	if len(a) < 2 || a[0] != '-' {
		return false
	}
	c := strings.TrimLeft(a, "-")
	return c != "" && !(c[0] >= '0' && c[0] <= '9') && c[0] != '.'
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Help is a command's help text.
type Help struct {
	// Usage lines, without the leading "usage: ": "pgfront check [-c FILE]".
	Usage []string
	// About says what the command does: paragraphs separated by blank lines.
	About string
	// Examples, one per line, each with an optional "# comment".
	Examples []string
}

// Write prints h with the flags of fs (nil = none):
//
//	usage: pgfront check [-c FILE]
//
//	<About>
//
//	Flags:
//	  -c string ...
//
//	Examples:
//	  pgfront check -c pgfront.yaml
func (h Help) Write(w io.Writer, fs *flag.FlagSet) {
	for i, u := range h.Usage {
		if i == 0 {
			fmt.Fprintf(w, "usage: %s\n", u)
		} else {
			fmt.Fprintf(w, "       %s\n", u)
		}
	}
	if h.About != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(h.About, "\n"))
	}
	if fs != nil {
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			io.WriteString(w, "\nFlags:\n")
			out := fs.Output()
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(out)
		}
	}
	if len(h.Examples) > 0 {
		io.WriteString(w, "\nExamples:\n")
		for _, e := range h.Examples {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}
