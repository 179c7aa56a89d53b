package demo

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	_ "embed" // the demo app's source
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// appSource is internal/app, built outside this module at run time.
//
//go:embed internal/app/main.go
var appSource []byte

// quirksConf is the containers.conf for machines where podman's defaults
// cannot start a container: no default ulimits.
const quirksConf = `# Written by deployd demo: podman's default ulimits cannot be set here.
[containers]
default_ulimits = []
`

// tools are the commands the demo runs.
type tools struct {
	podman, registry, goCmd, runc string
}

// findTools finds podman, docker-registry and go (and runc, which only
// machines that need it must have).
func findTools(opts Options) (tools, error) {
	var t tools
	var missing []string
	find := func(given, name string, fallbacks ...string) string {
		if given != "" {
			return given
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, p := range fallbacks {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		return ""
	}
	if t.podman = find(opts.Podman, "podman", "/usr/bin/podman"); t.podman == "" {
		missing = append(missing, "podman")
	}
	if t.registry = find(opts.Registry, "docker-registry", "/usr/bin/docker-registry"); t.registry == "" {
		missing = append(missing, "docker-registry")
	}
	if t.goCmd = find(opts.Go, "go", filepath.Join(os.Getenv("GOROOT"), "bin", "go"), "/usr/local/go/bin/go"); t.goCmd == "" {
		missing = append(missing, "go (to build the demo app)")
	}
	t.runc = find("", "runc", "/usr/sbin/runc", "/usr/bin/runc")
	if len(missing) > 0 {
		return t, fmt.Errorf("demo: not found: %s (on Debian: apt-get install podman docker-registry runc golang, or run scripts/install-test-deps)", strings.Join(missing, ", "))
	}
	return t, nil
}

// podmanCmd runs podman with the demo's own storage.
type podmanCmd struct {
	bin    string
	dir    string   // the demo's working directory
	global []string // options before the subcommand
	env    []string // KEY=VALUE added to podman's environment
	auth   string   // an empty auth file, for the demo's own pushes
}

func newPodman(bin, dir string) (*podmanCmd, error) {
	p := &podmanCmd{bin: bin, dir: dir, auth: filepath.Join(dir, "push-auth.json")}
	for _, sub := range []string{"podman-tmp", "libpod-tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	}
	if err := os.WriteFile(p.auth, []byte(`{"auths":{}}`+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	p.global = p.storageArgs()
	// Big temporary files of pulls and imports stay in the demo's directory.
	p.env = []string{"TMPDIR=" + filepath.Join(dir, "podman-tmp")}
	return p, nil
}

// storageArgs are the options that keep podman's images, containers and
// state in the demo's directory.
func (p *podmanCmd) storageArgs() []string {
	return []string{
		"--root", filepath.Join(p.dir, "storage"),
		"--runroot", filepath.Join(p.dir, "run"),
		"--tmpdir", filepath.Join(p.dir, "libpod-tmp"),
		"--storage-driver", "vfs",
	}
}

// run runs podman with args and returns its trimmed standard output.
func (p *podmanCmd) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.bin, append(slices.Clone(p.global), args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("podman %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// configure settles the global options: given ones, else podman's defaults
// when a probe container runs with them, else runc and no default ulimits
// (a containers.conf of the demo's own, named by CONTAINERS_CONF).
func (p *podmanCmd) configure(ctx context.Context, given []string, tarPath, runc string, out io.Writer) error {
	if given != nil {
		p.global = append(p.storageArgs(), given...)
		return nil
	}
	const probe = "localhost/deployd-demo-probe:latest"
	if _, err := p.run(ctx, "import", "--change", `ENTRYPOINT ["/app"]`, tarPath, probe); err != nil {
		return fmt.Errorf("demo: make the probe image: %w", err)
	}
	defer func() { _, _ = p.run(context.WithoutCancel(ctx), "rmi", "--force", probe) }()
	probeArgs := []string{"run", "--rm", "--network", "host", probe, "probe"}
	_, defaultErr := p.run(ctx, probeArgs...)
	if defaultErr == nil {
		return nil
	}
	if runc == "" {
		return fmt.Errorf("demo: podman cannot run a container here, and runc, which often can, is not installed (apt-get install runc): %w", defaultErr)
	}
	conf := filepath.Join(p.dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(quirksConf), 0o644); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	p.global = append(p.storageArgs(), "--runtime", runc)
	p.env = append(p.env, "CONTAINERS_CONF="+conf)
	if _, err := p.run(ctx, probeArgs...); err != nil {
		return fmt.Errorf("demo: podman cannot run a container here, with its defaults (%w) nor with runc and no default ulimits (%w); pass the options it needs with --podman-arg", defaultErr, err)
	}
	fmt.Fprintf(out, "podman's defaults cannot run a container on this machine; the demo uses --runtime %s and a containers.conf without default ulimits\n", runc)
	return nil
}

// push makes an image of the demo app for version, pushes it to ref and
// returns the pushed manifest digest.
func (p *podmanCmd) push(ctx context.Context, tarPath, ref, version, dir string) (string, error) {
	if _, err := p.run(ctx, "import",
		"--change", `ENTRYPOINT ["/app"]`,
		"--change", "ENV VERSION="+version,
		// A nonce, so that every push has a digest of its own.
		"--change", "LABEL io.deployd.demo.build="+rand.Text(),
		tarPath, ref); err != nil {
		return "", fmt.Errorf("demo: make image %s: %w", ref, err)
	}
	digestFile := filepath.Join(dir, "digest")
	if _, err := p.run(ctx, "push", "--tls-verify=false", "--authfile", p.auth, "--digestfile", digestFile, ref); err != nil {
		return "", fmt.Errorf("demo: push %s: %w", ref, err)
	}
	b, err := os.ReadFile(digestFile)
	if err != nil {
		return "", fmt.Errorf("demo: read pushed digest: %w", err)
	}
	// Removed, so that deployd really pulls it from the registry.
	if _, err := p.run(ctx, "rmi", ref); err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// removeAll removes every container and image of the demo's storage.
func (p *podmanCmd) removeAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if _, err := p.run(ctx, "rm", "--all", "--force", "--time", "0"); err != nil {
		errs = append(errs, fmt.Errorf("demo: remove containers: %w", err))
	}
	if _, err := p.run(ctx, "rmi", "--all", "--force"); err != nil {
		errs = append(errs, fmt.Errorf("demo: remove images: %w", err))
	}
	return errors.Join(errs...)
}

// buildApp compiles the demo app as a static binary and packs it alone
// into a tar, whose path it returns.
func buildApp(ctx context.Context, goCmd, dir string) (string, error) {
	src := filepath.Join(dir, "app-src")
	if err := os.Mkdir(src, 0o700); err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	files := map[string][]byte{
		"go.mod":  []byte("module deploydDemoApp\n\ngo 1.22\n"),
		"main.go": appSource,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
			return "", fmt.Errorf("demo: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags=-s -w", "-o", "app", ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH,
		"GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("demo: build the demo app: %w: %s", err, bytes.TrimSpace(out))
	}
	bin, err := os.ReadFile(filepath.Join(src, "app"))
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	tarPath := filepath.Join(dir, "app.tar")
	if err := writeTar(tarPath, bin); err != nil {
		return "", fmt.Errorf("demo: pack the demo app: %w", err)
	}
	return tarPath, nil
}

// writeTar writes a tar holding only the executable /app.
func writeTar(path string, bin []byte) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: "app", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg,
		ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o600)
}
