package patronitest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// installHint is how to get everything this package runs, on Debian and Ubuntu.
const installHint = "apt-get install -y patroni etcd-server etcd-client python3-etcd"

// Available reports whether a cluster can be started here: nil if patroni, patronictl,
// etcd, python3-etcd (which Patroni's etcd3 DCS imports) and util-linux's unshare and
// setpriv are usable. Otherwise its error names the missing Debian packages and the
// command that installs them. The answer is computed once per process.
func Available() error { return availableOnce() }

var availableOnce = sync.OnceValue(func() error { return available(exec.LookPath, pythonImports) })

// tool is a program this package runs and the Debian package that ships it.
type tool struct{ prog, pkg string }

var tools = []tool{
	{"patroni", "patroni"},
	{"patronictl", "patroni"},
	{"etcd", "etcd-server"},
	{"unshare", "util-linux"},
	{"setpriv", "util-linux"},
}

// available checks with the given look-ups (seams for the tests): lookPath finds a
// program, imports runs Patroni's interpreter on `import etcd, patroni.dcs.etcd3`.
func available(lookPath func(string) (string, error), imports func(patroni string) error) error {
	var missing, pkgs []string
	addPkg := func(pkg string) {
		if !slices.Contains(pkgs, pkg) {
			pkgs = append(pkgs, pkg)
		}
	}
	var patroni string
	for _, t := range tools {
		path, err := lookPath(t.prog)
		if err != nil {
			missing = append(missing, t.prog)
			addPkg(t.pkg)
			continue
		}
		if t.prog == "patroni" {
			patroni = path
		}
	}
	if patroni != "" {
		if err := imports(patroni); err != nil {
			missing = append(missing, fmt.Sprintf("python modules etcd and patroni.dcs.etcd3 (%v)", err))
			addPkg("python3-etcd")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("patronitest: a Patroni cluster needs %s, not usable here (missing Debian packages: %s); install with: %s",
		strings.Join(missing, ", "), strings.Join(pkgs, " "), installHint)
}

// pythonImports runs the interpreter of the patroni script (its #! line) on the imports
// the etcd3 DCS needs.
func pythonImports(patroni string) error {
	f, err := os.Open(patroni)
	if err != nil {
		return err
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	f.Close()
	if err != nil || !strings.HasPrefix(line, "#!") {
		return fmt.Errorf("%s has no #! line", patroni)
	}
	args := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(args) == 0 {
		return fmt.Errorf("%s has an empty #! line", patroni)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append(args, "-c", "import etcd, patroni.dcs.etcd3")
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, lastLine(string(out)))
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
