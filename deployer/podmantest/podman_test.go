package podmantest_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/deployer/podmantest"
	"github.com/deployd/deployd/deployer/registrytest"
)

// Credentials the test registry's token endpoint knows, besides its push
// account.
const (
	readerUser = "reader"
	readerPass = "reader-secret"
	appUser    = "x-access-token"
	appPass    = "ghs_installation-token" // accepted, but grants nothing
)

func authorize(username, password string, _ registrytest.Scope) ([]string, bool) {
	switch {
	case username == readerUser && password == readerPass:
		return []string{"pull"}, true
	case username == appUser && password == appPass:
		return nil, true
	}
	return nil, false
}

// bearer403 is what podman prints when the token endpoint refuses the
// credentials — the message of the ghcr.io incident.
const bearer403 = "Requesting bearer token: invalid status code from registry 403 (Forbidden)"

// TestEnvironment proves the end-to-end environment: a registry with
// ghcr.io-style token auth, images built and pushed with BuildApp, pulled
// and run by an isolated podman.
func TestEnvironment(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{Authorize: authorize, Service: "ghcr.test"})
	builder := podmantest.New(t)
	image := reg.Image("owner/v7/backend")
	push := podmantest.AppOptions{Username: reg.PushUser, Password: reg.PushPassword}

	start := time.Now()
	v1 := builder.BuildApp(t, image+":latest", "v1", push)
	t.Logf("first BuildApp (compile, import, push): %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	v2 := builder.BuildApp(t, image+":latest", "v2", push)
	t.Logf("second BuildApp: %v", time.Since(start).Round(time.Millisecond))
	if v1 == v2 {
		t.Fatalf("two builds gave the same digest %s", v1)
	}
	if again := builder.BuildApp(t, image+":again", "v2", push); again == v2 {
		t.Errorf("two builds of the same version gave the same digest %s", again)
	}
	if out, err := builder.Run(context.Background(), "images", "--quiet"); err != nil || out != "" {
		t.Errorf("builder storage after BuildApp: %q, %v; want no images left", out, err)
	}

	t.Run("pull with accepted credential", func(t *testing.T) {
		ctx := testContext(t)
		p := podmantest.New(t)
		login(t, ctx, p, reg.Host(), readerUser, readerPass)
		if _, err := p.Run(ctx, "pull", "--tls-verify=false", image+"@"+v1); err != nil {
			t.Fatal(err)
		}
		// The tag resolves to the last push.
		if _, err := p.Run(ctx, "pull", "--tls-verify=false", image+":latest"); err != nil {
			t.Fatal(err)
		}
		got, err := p.Run(ctx, "image", "inspect", "--format", "{{.Digest}}", image+":latest")
		if err != nil || got != v2 {
			t.Fatalf("digest of pulled latest = %q, %v; want %s", got, err, v2)
		}
		if !granted(reg, readerUser, "owner/v7/backend", "pull") {
			t.Errorf("no token granting pull to %s recorded: %+v", readerUser, reg.TokenRequests())
		}
	})

	t.Run("refused credential", func(t *testing.T) {
		ctx := testContext(t)
		p := podmantest.New(t)
		_, err := p.RunStdin(ctx, []byte("wrong-password\n"), "login", "--tls-verify=false",
			"--username", readerUser, "--password-stdin", reg.Host())
		if err == nil || !strings.Contains(err.Error(), bearer403) {
			t.Fatalf("login with a refused credential: %v; want an error containing %q", err, bearer403)
		}
		t.Logf("login error: %v", err)

		_, err = p.Run(ctx, "pull", "--tls-verify=false", "--creds", readerUser+":wrong-password", image+":latest")
		if err == nil || !strings.Contains(err.Error(), bearer403) {
			t.Fatalf("pull with a refused credential: %v; want an error containing %q", err, bearer403)
		}
		t.Logf("pull error: %v", err)
	})

	t.Run("login OK, pull denied", func(t *testing.T) {
		ctx := testContext(t)
		p := podmantest.New(t)
		login(t, ctx, p, reg.Host(), appUser, appPass)
		_, err := p.Run(ctx, "pull", "--tls-verify=false", image+"@"+v2)
		if err == nil {
			t.Fatal("pull with a token without pull access succeeded")
		}
		// distribution answers 401 UNAUTHORIZED with error="insufficient_scope",
		// which containers/image reports as "denied" followed by the body.
		const denied = "denied: requested access to the resource is denied"
		if msg := err.Error(); !strings.Contains(msg, denied) || !strings.Contains(msg, "unauthorized: authentication required") ||
			strings.Contains(msg, bearer403) {
			t.Fatalf("pull error = %v; want the registry's denied/unauthorized answer, not a refused token", err)
		}
		t.Logf("pull error: %v", err)
		for _, rec := range reg.TokenRequests() {
			if rec.Username == appUser && rec.Status != http.StatusOK {
				t.Errorf("token request of %s answered %d, want 200 (token granted, no access)", appUser, rec.Status)
			}
		}
		if granted(reg, appUser, "owner/v7/backend", "pull") {
			t.Errorf("a token granting pull to %s was recorded", appUser)
		}
	})

	t.Run("run pulled image", func(t *testing.T) {
		ctx := testContext(t)
		p := podmantest.New(t)
		pullAs(t, ctx, p, image+"@"+v2)
		port := podmantest.FreePort(t)
		if _, err := p.Run(ctx, "run", "-d", "--name", "backend", "--network", "host",
			"-e", "PORT="+strconv.Itoa(port), image+"@"+v2); err != nil {
			t.Fatal(err)
		}
		base := "http://127.0.0.1:" + strconv.Itoa(port)
		if got := waitGet(t, base+"/version", http.StatusOK); got != "v2" {
			t.Errorf("GET /version = %q, want v2", got)
		}
		waitGet(t, base+"/healthz", http.StatusOK)
		if _, err := p.Run(ctx, "stop", "backend"); err != nil {
			t.Fatal(err)
		}
		// The app handles SIGTERM and shuts down cleanly (exit code 0). Had
		// it ignored SIGTERM, as PID 1 does without a handler, podman would
		// have killed it after the stop timeout: 137 (SIGKILL).
		code, err := p.Run(ctx, "inspect", "--format", "{{.State.ExitCode}}", "backend")
		if err != nil {
			t.Fatal(err)
		}
		if code != "0" {
			t.Errorf("stopped container exit code = %q, want 0 (shut down on SIGTERM; 137 means killed)", code)
		}
	})

	t.Run("unhealthy and crashing images", func(t *testing.T) {
		ctx := testContext(t)
		sick := builder.BuildApp(t, image+":sick", "v3", podmantest.AppOptions{
			Username: reg.PushUser, Password: reg.PushPassword, Unhealthy: true, Env: []string{"EXTRA=1"}})
		crash := builder.BuildApp(t, image+":crash", "v4", podmantest.AppOptions{
			Username: reg.PushUser, Password: reg.PushPassword, Crash: true})

		p := podmantest.New(t)
		pullAs(t, ctx, p, image+"@"+sick)
		pullAs(t, ctx, p, image+"@"+crash)
		port := podmantest.FreePort(t)
		if _, err := p.Run(ctx, "run", "-d", "--name", "sick", "--network", "host",
			"-e", "PORT="+strconv.Itoa(port), image+"@"+sick); err != nil {
			t.Fatal(err)
		}
		base := "http://127.0.0.1:" + strconv.Itoa(port)
		if got := waitGet(t, base+"/version", http.StatusOK); got != "v3" {
			t.Errorf("GET /version = %q, want v3", got)
		}
		waitGet(t, base+"/healthz", http.StatusInternalServerError)

		if _, err := p.Run(ctx, "run", "-d", "--name", "crash", image+"@"+crash); err != nil {
			t.Fatal(err)
		}
		code, err := p.Run(ctx, "wait", "crash")
		if err != nil || code != "1" {
			t.Errorf("podman wait crash = %q, %v; want exit code 1", code, err)
		}
	})

	t.Run("cleanup leaves nothing", func(t *testing.T) {
		var dir string
		port := podmantest.FreePort(t)
		t.Run("user", func(t *testing.T) {
			p := podmantest.New(t)
			dir = p.Dir()
			ctx := testContext(t)
			pullAs(t, ctx, p, image+"@"+v1)
			if _, err := p.Run(ctx, "run", "-d", "--network", "host",
				"-e", "PORT="+strconv.Itoa(port), image+"@"+v1); err != nil {
				t.Fatal(err)
			}
			waitGet(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/version", http.StatusOK)
		})
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("podman directory %s still exists after the test: %v", dir, err)
		}
		if pids := processesMentioning(t, dir); len(pids) > 0 {
			t.Errorf("processes still use %s after the test: %v", dir, pids)
		}
		client := &http.Client{Timeout: time.Second}
		if resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/version"); err == nil {
			resp.Body.Close()
			t.Errorf("the container still answers after the test")
		}
	})
}

// TestGlobalArgsAndEnv checks the settings handed to deployd's runner.
func TestGlobalArgsAndEnv(t *testing.T) {
	p := podmantest.New(t)
	args := p.GlobalArgs()
	for _, flag := range []string{"--root", "--runroot", "--tmpdir", "--storage-driver", "--runtime"} {
		i := slices.Index(args, flag)
		if i < 0 || i+1 >= len(args) {
			t.Fatalf("GlobalArgs() = %q: missing %s", args, flag)
		}
		if under := flag != "--storage-driver" && flag != "--runtime"; under && !strings.HasPrefix(args[i+1], p.Dir()+"/") {
			t.Errorf("%s %s: not under %s", flag, args[i+1], p.Dir())
		}
	}
	if len(p.Dir()) > 30 {
		t.Errorf("Dir() = %q: too long for conmon's socket paths", p.Dir())
	}
	var conf string
	for _, kv := range p.Env() {
		if v, ok := strings.CutPrefix(kv, "CONTAINERS_CONF="); ok {
			conf = v
		}
	}
	b, err := os.ReadFile(conf)
	if err != nil || !strings.Contains(string(b), "default_ulimits = []") {
		t.Fatalf("CONTAINERS_CONF %q: %v %q; want default_ulimits = []", conf, err, b)
	}
	if filepath.Dir(conf) != p.Dir() {
		t.Errorf("CONTAINERS_CONF %s not in %s", conf, p.Dir())
	}

	// The settings are what podman actually uses.
	ctx := testContext(t)
	out, err := p.Run(ctx, "info", "--format", "{{.Store.GraphRoot}} {{.Store.GraphDriverName}} {{.Host.OCIRuntime.Path}}")
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(p.Dir(), "root") + " vfs runc"
	if f := strings.Fields(out); len(f) != 3 || f[0]+" "+f[1]+" "+filepath.Base(f[2]) != want {
		t.Errorf("podman info = %q, want %q (runtime by path)", out, want)
	}
}

// testContext returns a context that ends with the test or after two
// minutes.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// login runs podman login with the password on stdin and fails the test
// if it does not succeed.
func login(t *testing.T, ctx context.Context, p *podmantest.Podman, host, user, pass string) {
	t.Helper()
	out, err := p.RunStdin(ctx, []byte(pass+"\n"), "login", "--tls-verify=false",
		"--username", user, "--password-stdin", host)
	if err != nil {
		t.Fatalf("podman login as %s: %v", user, err)
	}
	if !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("podman login as %s printed %q", user, out)
	}
}

// pullAs pulls ref with the reader's credentials.
func pullAs(t *testing.T, ctx context.Context, p *podmantest.Podman, ref string) {
	t.Helper()
	if _, err := p.Run(ctx, "pull", "--tls-verify=false", "--creds", readerUser+":"+readerPass, ref); err != nil {
		t.Fatal(err)
	}
}

// granted reports whether a token granting action on repo to user was
// issued.
func granted(reg *registrytest.Registry, user, repo, action string) bool {
	for _, rec := range reg.TokenRequests() {
		if rec.Username != user {
			continue
		}
		for _, g := range rec.Granted {
			if g.Type == "repository" && g.Name == repo && slices.Contains(g.Actions, action) {
				return true
			}
		}
	}
	return false
}

// waitGet polls url until it answers with status, and returns the body.
func waitGet(t *testing.T, url string, status int) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == status {
				return string(body)
			}
			last = resp.Status + ": " + string(body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: want status %d within 30s, last: %s", url, status, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processesMentioning returns the pids whose command line mentions dir.
func processesMentioning(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), dir+"/") {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
