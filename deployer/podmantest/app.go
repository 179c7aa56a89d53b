package podmantest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	_ "embed" // the test server's source
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// appSource is internal/testapp, built outside this module so that tests
// can build it from any working directory.
//
//go:embed internal/testapp/main.go
var appSource []byte

// AppOptions vary the image [Podman.BuildApp] makes.
type AppOptions struct {
	// Username and Password authenticate the push (for registrytest, its
	// PushUser and PushPassword). They reach podman through an auth file,
	// never its arguments. With an empty Username the push uses this
	// podman's own auth file (see `podman login`).
	Username, Password string

	// Unhealthy bakes HEALTHY=false into the image: GET /healthz answers
	// 500 while GET /version still works.
	Unhealthy bool

	// Crash bakes CRASH=true into the image: the server exits with status
	// 1 as soon as it starts.
	Crash bool

	// Env holds more KEY=VALUE variables to bake into the image.
	Env []string

	// Keep leaves the image in this podman's storage after the push. By
	// default it is removed, so a later pull with the same podman really
	// fetches from the registry.
	Keep bool
}

// appBuild caches the compiled test server for the test binary's lifetime.
var appBuild struct {
	mu  sync.Mutex
	bin []byte
}

var (
	versionRE = regexp.MustCompile(`^[A-Za-z0-9_.+-]{1,128}$`)
	digestRE  = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// BuildApp makes an image of the test HTTP server for version, pushes it
// to ref (HOST/PATH:TAG, on a plain-HTTP registry) and returns the pushed
// manifest digest ("sha256:..."). Every call makes a new image with a
// distinct digest, even for the same version. The image's only file is
// /app, its entrypoint; it serves GET /version (the version) and GET
// /healthz on $PORT (default 8080). BuildApp fails the test on error.
func (p *Podman) BuildApp(t testing.TB, ref, version string, opts AppOptions) string {
	t.Helper()
	if !versionRE.MatchString(version) {
		t.Fatalf("podmantest: BuildApp: version %q: want 1-128 of [A-Za-z0-9_.+-]", version)
	}
	for _, kv := range opts.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsAny(kv, "\n") {
			t.Fatalf("podmantest: BuildApp: env %q: want KEY=VALUE", kv)
		}
	}
	bin := appBinary(t)
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "app.tar")
	if err := writeAppTar(tarPath, bin); err != nil {
		t.Fatalf("podmantest: BuildApp: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	args := []string{"import",
		"--change", `ENTRYPOINT ["/app"]`,
		"--change", "ENV VERSION=" + version,
		// A nonce, so that two builds of one version in the same second
		// still differ.
		"--change", "LABEL io.deployd.podmantest.build=" + rand.Text(),
	}
	if opts.Unhealthy {
		args = append(args, "--change", "ENV HEALTHY=false")
	}
	if opts.Crash {
		args = append(args, "--change", "ENV CRASH=true")
	}
	for _, kv := range opts.Env {
		args = append(args, "--change", "ENV "+kv)
	}
	args = append(args, tarPath, ref)
	if _, err := p.Run(ctx, args...); err != nil {
		t.Fatalf("podmantest: BuildApp: %v", err)
	}

	digestFile := filepath.Join(dir, "digest")
	push := []string{"push", "--tls-verify=false", "--digestfile", digestFile}
	if opts.Username != "" {
		authFile := filepath.Join(dir, "auth.json")
		if err := writeAuthFile(authFile, ref, opts.Username, opts.Password); err != nil {
			t.Fatalf("podmantest: BuildApp: %v", err)
		}
		push = append(push, "--authfile", authFile)
	}
	push = append(push, ref)
	if _, err := p.Run(ctx, push...); err != nil {
		t.Fatalf("podmantest: BuildApp: %v", err)
	}
	b, err := os.ReadFile(digestFile)
	if err != nil {
		t.Fatalf("podmantest: BuildApp: read pushed digest: %v", err)
	}
	digest := strings.TrimSpace(string(b))
	if !digestRE.MatchString(digest) {
		t.Fatalf("podmantest: BuildApp: podman push wrote digest %q", digest)
	}
	if !opts.Keep {
		if _, err := p.Run(ctx, "rmi", ref); err != nil {
			t.Fatalf("podmantest: BuildApp: %v", err)
		}
	}
	t.Logf("podmantest: pushed %s (version %s) as %s", ref, version, digest)
	return digest
}

// appBinary returns the static test server, compiling it on first use.
func appBinary(t testing.TB) []byte {
	t.Helper()
	appBuild.mu.Lock()
	defer appBuild.mu.Unlock()
	if appBuild.bin != nil {
		return appBuild.bin
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			t.Fatalf("podmantest: the go command is needed to build the test server: not on PATH and not in $GOROOT/bin")
		}
	}
	dir, err := os.MkdirTemp("", "podmantest-app")
	if err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	defer os.RemoveAll(dir)
	files := map[string][]byte{
		"go.mod":  []byte("module testapp\n\ngo 1.22\n"),
		"main.go": appSource,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatalf("podmantest: %v", err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", "app", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH,
		"GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("podmantest: build the test server: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "app"))
	if err != nil {
		t.Fatalf("podmantest: %v", err)
	}
	t.Logf("podmantest: built the test server in %v", time.Since(start).Round(time.Millisecond))
	appBuild.bin = bin
	return bin
}

// writeAppTar writes a tar holding only the executable /app.
func writeAppTar(path string, bin []byte) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{
		Name:     "app",
		Mode:     0o755,
		Size:     int64(len(bin)),
		Typeflag: tar.TypeReg,
		ModTime:  time.Unix(0, 0), // identical layers across builds
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// writeAuthFile writes a containers auth file (mode 0600) with the
// credentials for ref's registry.
func writeAuthFile(path, ref, username, password string) error {
	host, _, ok := strings.Cut(ref, "/")
	if !ok {
		return fmt.Errorf("image %q: want HOST/PATH[:TAG]", ref)
	}
	auth := base64.StdEncoding.EncodeToString([]byte(username + ":" + password))
	data, err := json.Marshal(map[string]any{
		"auths": map[string]any{host: map[string]string{"auth": auth}},
	})
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
