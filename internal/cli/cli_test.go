package cli

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func newFlags() (*flag.FlagSet, *string, *bool, *time.Duration) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	addr := fs.String("addr", "default", "address")
	js := fs.Bool("json", false, "json")
	d := fs.Duration("timeout", time.Second, "timeout")
	return fs, addr, js, d
}

func TestParseInterleaved(t *testing.T) {
	tests := []struct {
		args     []string
		wantPos  string
		wantAddr string
		wantJSON bool
		wantTime time.Duration
	}{
		{[]string{"servers"}, "servers", "default", false, time.Second},
		{[]string{"-addr", "X", "servers"}, "servers", "X", false, time.Second},
		{[]string{"servers", "-addr", "X"}, "servers", "X", false, time.Second},
		{[]string{"servers", "--addr=X", "-json"}, "servers", "X", true, time.Second},
		{[]string{"server", "-json", "main/pg1", "-timeout", "3s", "drain"}, "server main/pg1 drain", "default", true, 3 * time.Second},
		{[]string{"kill", "-1"}, "kill -1", "default", false, time.Second},
		{[]string{"a", "--", "-addr", "X"}, "a -addr X", "default", false, time.Second},
		{[]string{"-", "-json"}, "-", "default", true, time.Second},
		{[]string{"-json=false", "x"}, "x", "default", false, time.Second},
		{[]string{"-addr", "--", "x"}, "x", "--", false, time.Second},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs, addr, js, d := newFlags()
			pos, err := Parse(fs, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(pos, " "); got != tt.wantPos || *addr != tt.wantAddr || *js != tt.wantJSON || *d != tt.wantTime {
				t.Errorf("positional %q addr %q json %v timeout %v; want %q %q %v %v", got, *addr, *js, *d, tt.wantPos, tt.wantAddr, tt.wantJSON, tt.wantTime)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"servers", "--help"}, {"-help", "x"}} {
		fs, _, _, _ := newFlags()
		if _, err := Parse(fs, args); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: %v, want flag.ErrHelp", args, err)
		}
	}
	for args, want := range map[string]string{
		"servers -bogus":   "flag provided but not defined: -bogus",
		"servers -addr":    "flag needs an argument: -addr",
		"-timeout 3 x":     `invalid value "3" for flag -timeout`,
		"-json=maybe list": `invalid boolean value "maybe" for -json`,
	} {
		fs, _, _, _ := newFlags()
		_, err := Parse(fs, strings.Fields(args))
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want a UsageError with %q", args, err, want)
		}
	}
}

func TestHelpWrite(t *testing.T) {
	fs, _, _, _ := newFlags()
	var b strings.Builder
	Help{
		Usage:    []string{"pgfront t [flags] CMD", "pgfront t help"},
		About:    "Does t.\n\nMore about t.\n",
		Examples: []string{"pgfront t -json servers   # as JSON"},
	}.Write(&b, fs)
	want := `usage: pgfront t [flags] CMD
       pgfront t help

Does t.

More about t.

Flags:
  -addr string
    	address (default "default")
  -json
    	json
  -timeout duration
    	timeout (default 1s)

Examples:
  pgfront t -json servers   # as JSON
`
	if b.String() != want {
		t.Errorf("help:\n%s\nwant:\n%s", b.String(), want)
	}
}
