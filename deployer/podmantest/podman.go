package podmantest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/internal/e2e"
)

// containersConf is the containers.conf used by every isolated podman.
const containersConf = `# Written by deployd's podmantest for one test.
[containers]
# The default ulimits (RLIMIT_NOFILE ...) cannot be set on the test machines.
default_ulimits = []

[engine]
# crun fails on the test machines; podman is also given --runtime.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`

// Podman runs podman with storage, configuration and auth file private to
// one test. Its methods are safe for concurrent use.
type Podman struct {
	bin    string
	dir    string
	global []string
	env    []string
}

// New returns an isolated podman for the test; its containers and storage
// are removed when the test ends. It skips the test when podman or runc is
// missing (fails it when DEPLOYD_E2E or CI is set).
func New(t testing.TB) *Podman {
	t.Helper()
	bin := findBinary(t, "podman", "/usr/bin/podman")
	runc := findBinary(t, "runc", "/usr/sbin/runc", "/usr/bin/runc")

	// Not t.TempDir(): its path contains the test name and can be too long
	// for the sockets conmon creates under the run root.
	base := os.TempDir()
	if len(base) > 20 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pt")
	if err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	p := &Podman{bin: bin, dir: dir}
	t.Cleanup(func() { p.cleanup(t) })

	for _, sub := range []string{"tmp", "libpod"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatalf("podmantest: %v", err)
		}
	}
	// podman 4.3 fails on a missing REGISTRY_AUTH_FILE, even with --creds.
	authFile := filepath.Join(dir, "auth.json")
	if err := os.WriteFile(authFile, []byte(`{"auths":{}}`+"\n"), 0o600); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(containersConf), 0o644); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	p.global = []string{
		"--root", filepath.Join(dir, "root"),
		"--runroot", filepath.Join(dir, "run"),
		"--tmpdir", filepath.Join(dir, "libpod"),
		"--storage-driver", "vfs",
		"--runtime", runc,
		"--cgroup-manager", "cgroupfs",
		"--events-backend", "file",
	}
	p.env = []string{
		"CONTAINERS_CONF=" + conf,
		"REGISTRY_AUTH_FILE=" + authFile,
		"TMPDIR=" + filepath.Join(dir, "tmp"), // big temporary files of pulls and imports
	}
	return p
}

// GlobalArgs returns the options that go before the podman subcommand
// (storage location and driver, runtime, cgroup manager, events backend).
// The caller may modify the returned slice.
func (p *Podman) GlobalArgs() []string { return slices.Clone(p.global) }

// Env returns the KEY=VALUE variables to add to the environment of podman
// processes (CONTAINERS_CONF, REGISTRY_AUTH_FILE, TMPDIR). The caller may
// modify the returned slice.
func (p *Podman) Env() []string { return slices.Clone(p.env) }

// Binary returns the path of the podman executable.
func (p *Podman) Binary() string { return p.bin }

// Dir returns the temporary directory holding this podman's storage and
// configuration; it is removed when the test ends.
func (p *Podman) Dir() string { return p.dir }

// Command returns an unstarted command running podman with the global
// arguments, args and the isolated environment. It is stopped (SIGKILL)
// when ctx is done.
func (p *Podman) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, p.bin, append(p.GlobalArgs(), args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs podman with args and returns its standard output with
// surrounding white space trimmed. On failure the error names the
// subcommand and holds podman's standard error.
func (p *Podman) Run(ctx context.Context, args ...string) (string, error) {
	return p.RunStdin(ctx, nil, args...)
}

// RunStdin is Run with stdin as podman's standard input, as for
// `podman login --password-stdin`.
func (p *Podman) RunStdin(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := p.Command(ctx, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return strings.TrimSpace(stdout.String()),
			fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// cleanup removes every container and the storage directory.
func (p *Podman) cleanup(t testing.TB) {
	t.Helper()
	if p.global != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := p.Run(ctx, "rm", "--all", "--force", "--time", "0"); err != nil {
			t.Errorf("podmantest: remove containers: %v", err)
		} else if out != "" {
			t.Logf("podmantest: removed containers %s", strings.Join(strings.Fields(out), " "))
		}
		if out, err := p.Run(ctx, "pod", "rm", "--all", "--force"); err != nil {
			t.Errorf("podmantest: remove pods: %v (%s)", err, out)
		}
	}
	// conmon and its exit command (`podman container cleanup`) finish
	// asynchronously after `podman rm`; removing the directory under them
	// would race with their writes.
	deadline := time.Now().Add(15 * time.Second)
	for pids := processesUsing(p.dir); len(pids) > 0; pids = processesUsing(p.dir) {
		if time.Now().After(deadline) {
			t.Errorf("podmantest: processes %v still use %s 15s after removing the containers; killing them", pids, p.dir)
			for _, pid := range pids {
				_ = kill(pid)
			}
			time.Sleep(100 * time.Millisecond)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := unmountUnder(p.dir); err != nil {
		t.Errorf("podmantest: %v", err)
	}
	if err := os.RemoveAll(p.dir); err != nil {
		t.Errorf("podmantest: remove %s: %v", p.dir, err)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a container run with --network host -e PORT=N. Another process can take
// it in between; tests accept that small race.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("podmantest: find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	return port
}

// findBinary finds name on PATH or at one of the well-known paths, or
// skips or fails the test.
func findBinary(t testing.TB, name string, fallbacks ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range fallbacks {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("podmantest: %s not found on PATH (run scripts/install-test-deps or apt-get install %s)", name, name)
	e2e.Missing(t, msg)
	return ""
}
