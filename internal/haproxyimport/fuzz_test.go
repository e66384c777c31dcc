package haproxyimport

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgfront/pgfront/internal/config"
)

// FuzzImport feeds arbitrary bytes to the importer: it never panics, malformed input is an
// *Error, and whatever it imports loads with pgfront's config loader.
//
//	go test -fuzz FuzzImport ./internal/haproxyimport/
func FuzzImport(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.cfg")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"listen pg\n    bind :5000\n    option httpchk /primary\n    server a 10.0.0.1:5432 check port 8008\n",
		"frontend fe\n bind [::1]:5000,*:5001\n default_backend be\nbackend be\n http-check send meth GET uri /replica?lag=1GB\n server \"x y\" h:5 port 1 addr ::1 inter 1 fastinter 9d fall 0\n",
		"defaults a\n timeout tunnel 0\ndefaults b from a\n timeout client-fin 0\nlisten p from b\n bind ipv6@:::1\n option httpchk OPTIONS /read-only\n server s1 [fe80::1]:1 check port 2\n",
		"listen pg 0.0.0.0:9187\n option httpchk\n server a 1.2.3.4:5 port 6 check-ssl\n",
		".if 1\nlisten '\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Import(data, "fuzz.cfg")
		if err != nil {
			var e *Error
			if errors.Is(err, errGenerated) || !errors.As(err, &e) {
				t.Fatalf("Import: %v", err)
			}
			return
		}
		if _, _, err := config.Parse(res.YAML, ""); err != nil {
			t.Fatalf("the import does not load: %v\n%s", err, res.YAML)
		}
	})
}
