package main

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// podman runs podman and returns its standard output.
func podman(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command("podman", args...)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		return out, &podmanError{args: args, err: err, stderr: errOut.String()}
	}
	return out, nil
}

type podmanError struct {
	args   []string
	err    error
	stderr string
}

func (e *podmanError) Error() string {
	return "podman " + strings.Join(e.args, " ") + ": " + e.err.Error() + "\n" + e.stderr
}

// TestContainerImage builds the image's prebuilt variant from a static binary (nothing is
// pulled: the base is scratch) and checks what it holds and how it is configured: the binary
// alone (no shell), non-root, the entrypoint and command, the ports, the health check. Then
// it runs the image where podman can run containers, and says why not where it cannot.
func TestContainerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (Debian package podman)")
	}
	// The build context: the Dockerfile, .dockerignore and dist/ as `make release` leaves it.
	ctx := t.TempDir()
	root := repoRoot(t)
	for _, f := range []string{"Dockerfile", ".dockerignore"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctx, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	binary := filepath.Join(ctx, "dist", "pgfront-linux-"+runtime.GOARCH)
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X github.com/pgfront/pgfront/internal/version.stamped=v0.0.0-imagetest", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}

	suffix := make([]byte, 6)
	rand.Read(suffix)
	image := "localhost/pgfront-test:" + hex.EncodeToString(suffix)
	if _, err := podman(t, "build", "--format", "docker", "--layers=false", "--target", "prebuilt", "-t", image, ctx); err != nil {
		t.Fatal(err)
	}
	defer podman(t, "rmi", "-f", image)

	out, err := podman(t, "image", "inspect", image)
	if err != nil {
		t.Fatal(err)
	}
	var inspect []struct {
		Config struct {
			User         string
			Env          []string
			Entrypoint   []string
			Cmd          []string
			ExposedPorts map[string]any
		}
		Healthcheck struct{ Test []string }
	}
	if err := json.Unmarshal(out, &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v\n%s", err, out)
	}
	c := inspect[0].Config
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (not root)", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/pgfront"}) || !slices.Equal(c.Cmd, []string{"run", "-c", "/etc/pgfront/pgfront.yaml"}) {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	for _, p := range []string{"6432/tcp", "6433/tcp", "9187/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	if !slices.Contains(c.Env, "PGFRONT_HANDOVER_SOCKET=off") {
		t.Errorf("env %q lacks PGFRONT_HANDOVER_SOCKET=off", c.Env)
	}
	if hc := inspect[0].Healthcheck.Test; !slices.Equal(hc, []string{"CMD", "/pgfront", "probe"}) {
		t.Errorf("health check %q, want the exec form of pgfront probe (no shell)", hc)
	}

	// The file system: /pgfront, the binary built above, executable, and nothing else (no
	// /bin/sh).
	id, err := podman(t, "create", image)
	if err != nil {
		t.Fatal(err)
	}
	container := strings.TrimSpace(string(id))
	defer podman(t, "rm", "-f", container)
	tarball, err := podman(t, "export", container)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	tr := tar.NewReader(bytes.NewReader(tarball))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag == tar.TypeDir {
			continue
		}
		files = append(files, name)
		if name == "pgfront" {
			got, _ := io.ReadAll(tr)
			if !bytes.Equal(got, want) || h.Mode&0o111 == 0 {
				t.Errorf("/pgfront is not the binary built (mode %o, %d bytes, want %d)", h.Mode, len(got), len(want))
			}
		}
	}
	// podman create may add mount points for /etc/hosts and friends as empty files.
	files = slices.DeleteFunc(files, func(f string) bool {
		return f == "etc/hosts" || f == "etc/hostname" || f == "etc/resolv.conf" || strings.HasPrefix(f, "run/")
	})
	if !slices.Equal(files, []string{"pgfront"}) {
		t.Errorf("the image holds %q, want only pgfront", files)
	}

	t.Run("run", func(t *testing.T) {
		out, err := podman(t, "run", "--rm", "--network", "none", "--no-healthcheck", image, "version")
		if err != nil {
			t.Skipf("podman cannot run containers here (the build and the checks above ran): %s", lastLine(err.Error()))
		}
		if !strings.HasPrefix(string(out), "pgfront v0.0.0-imagetest (") {
			t.Errorf("pgfront version in the container: %q", out)
		}
		out, err = podman(t, "run", "--rm", "--network", "none", "--no-healthcheck", image, "probe", "-timeout", "1s")
		if err == nil || !strings.Contains(err.Error(), "cannot reach the admin API at http://127.0.0.1:9187") {
			t.Errorf("probe with nothing running: %v %s", err, out)
		}
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestDockerfileFromSource: the from-source variant (it needs the golang image, which cannot
// be pulled everywhere, so it is not built here) is the default target, builds the same
// static, stamped binary as `make release`, and lands in the same base as the prebuilt one.
func TestDockerfileFromSource(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	var run string
	for _, l := range strings.Split(strings.ReplaceAll(string(data), "\\\n", " "), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) > 0 && f[0] == "FROM":
			froms = append(froms, strings.Join(f[1:], " "))
		case len(f) > 0 && f[0] == "RUN" && strings.Contains(l, "go build"):
			run = l
		}
	}
	if want := []string{"${GO_IMAGE} AS build", "scratch AS base", "base AS prebuilt", "base AS source"}; !slices.Equal(froms, want) {
		t.Errorf("stages %q, want %q (source last: the default target)", froms, want)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "internal/version.stamped=${VERSION}", "internal/version.stampedRevision=${REVISION}", "./cmd/pgfront"} {
		if !strings.Contains(run, want) {
			t.Errorf("the build stage's %q lacks %q", run, want)
		}
	}
}
