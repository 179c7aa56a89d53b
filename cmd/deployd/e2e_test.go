package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/deployer/podmantest"
	"github.com/deployd/deployd/deployer/registrytest"
	"github.com/deployd/deployd/internal/testlog"
)

// The fixtures' installation and package.
const (
	fixtureInstallation = 52310042
	e2ePAT              = "ghp_e2e_pat_0123456789abcdef"
)

// stack is deployd with everything real but GitHub: podman, a registry
// with bearer-token auth that accepts only installation tokens the fake
// GitHub minted (as ghcr.io does), and the App's key.
type stack struct {
	t       testing.TB
	github  *githubtest.FakeGitHub
	reg     *registrytest.Registry
	podman  *podmantest.Podman
	image   string
	port    int
	dataDir string
	config  string
	argvLog string
	podmanW string // the podman wrapper deployd runs
	// refusePAT, while set, makes the token endpoint refuse the PAT too.
	refusePAT *atomic.Bool
}

type stackOptions struct {
	// registryDeniesApp makes the token endpoint refuse App tokens
	// (403), so only the PAT works.
	registryDeniesApp bool
	// credentials of the registry; default [github_app].
	credentials string
	// healthTimeout of the service; default 20s.
	healthTimeout string
	// reconcile is the reconcile_interval; default 0 (off).
	reconcile string
	// extraConfig is appended to the configuration, whose last key is
	// backend's health under services: more keys of backend (indented by
	// four spaces), then more services, then more top-level keys.
	extraConfig string
}

func newStack(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	key, pemBytes := githubtest.NewKey(t)
	gh := githubtest.NewFakeGitHub(t, 4242, &key.PublicKey)
	gh.AddInstallation(githubtest.Installation{ID: fixtureInstallation, Account: "Acme-Corp"})
	refusePAT := new(atomic.Bool)
	reg := registrytest.Start(t, registrytest.Options{Authorize: func(user, pass string, scope registrytest.Scope) ([]string, bool) {
		if pass == e2ePAT && !refusePAT.Load() {
			return []string{"pull"}, true
		}
		if gh.ValidToken(pass) && !opts.registryDeniesApp {
			return []string{"pull"}, true
		}
		return nil, false
	}})
	pm := podmantest.New(t)
	for _, kv := range pm.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	s := &stack{t: t, github: gh, reg: reg, podman: pm, image: reg.Image("acme-corp/v7/backend"),
		port: podmantest.FreePort(t), dataDir: t.TempDir(), refusePAT: refusePAT}
	dir := t.TempDir()
	s.argvLog = filepath.Join(dir, "argv.log")
	s.podmanW = writeFile(t, dir, "podman", fmt.Sprintf(
		"#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %q\nif [ -f %q ] && [ \"$1\" != login ]; then for a in \"$@\"; do [ \"$a\" = pull ] && sleep 30; done; fi\nexec %q \"$@\"\n",
		s.argvLog, filepath.Join(dir, "slow-pull"), pm.Binary()), 0o755)
	keyFile := writeFile(t, dir, "app.pem", string(pemBytes), 0o600)
	secretFile := writeFile(t, dir, "webhook-secret", testSecret, 0o600)
	patFile := writeFile(t, dir, "pat", e2ePAT+"\n", 0o600)
	if opts.credentials == "" {
		opts.credentials = "[github_app]"
	}
	if opts.healthTimeout == "" {
		opts.healthTimeout = "20s"
	}
	if opts.reconcile == "" {
		opts.reconcile = "0"
	}
	globalArgs := ""
	for _, a := range pm.GlobalArgs() {
		globalArgs += fmt.Sprintf("%q, ", a)
	}
	s.config = writeFile(t, dir, "deployd.yaml", fmt.Sprintf(`
listen: 127.0.0.1:0
data_dir: %q
log: {level: debug, format: json}
reconcile_interval: %s
github:
  api_url: %s
  webhook_secret_file: %q
  app: {id: 4242, private_key_file: %q}
  deployments: true
public_url: https://deploy.example.test
registries:
  %s:
    credentials: %s
    token_file: %q
    insecure: true
    github_packages: true
podman:
  command: %q
  global_args: [%s]
services:
  backend:
    image: %s
    repository: Acme-Corp/v7
    tags: ["latest", "sha-*"]
    on:
      package: true
      workflow_run: {workflows: ["CI/CD"], branches: ["main"], tag: "sha-{{.ShortSHA}}"}
    container:
      name: e2e-backend
      args: ["--network", "host", "-e", "PORT=%d"]
    health: {url: "http://127.0.0.1:%d/healthz", timeout: %s, interval: 200ms}
`, s.dataDir, opts.reconcile, gh.URL, secretFile, keyFile, reg.Host(), opts.credentials, patFile, s.podmanW, globalArgs,
		s.image, s.port, s.port, opts.healthTimeout)+opts.extraConfig, 0o600)
	return s
}

// push builds and pushes version under tag and returns its digest.
func (s *stack) push(tag, version string) string {
	s.t.Helper()
	return s.podman.BuildApp(s.t, s.image+":"+tag, version, podmantest.AppOptions{Username: s.reg.PushUser, Password: s.reg.PushPassword})
}

// packageEvent is the tagged registry_package fixture for tag and digest.
func (s *stack) packageEvent(tag, digest string) []byte {
	s.t.Helper()
	return edit(s.t, fixture(s.t, "registry_package.published.container-tagged.json"), func(m map[string]any) {
		dig(m, "registry_package", "package_version", "container_metadata", "tag")["name"] = tag
		dig(m, "registry_package", "package_version", "container_metadata", "tag")["digest"] = digest
	})
}

// waitDeployment polls the API until deployment id ends and returns it.
func waitDeployment(t testing.TB, d *instance, id int64) deploymentJSON {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var dep deploymentJSON
		d.getJSON(fmt.Sprintf("/api/v1/deployments/%d", id), http.StatusOK, &dep)
		if dep.State != "queued" && dep.State != "running" {
			return dep
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment %d still %s after 3 minutes", id, dep.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queue posts a delivery that must queue deployments and returns their ids.
func (i *instance) queue(d delivery) []int64 {
	i.t.Helper()
	status, body := i.post(testSecret, d)
	if status != http.StatusAccepted {
		i.t.Fatalf("webhook answered %d %s, want 202", status, body)
	}
	var r struct {
		Deployments []int64 `json:"deployments"`
	}
	if err := jsonUnmarshal(body, &r); err != nil || len(r.Deployments) == 0 {
		i.t.Fatalf("202 answer %s: %v", body, err)
	}
	return r.Deployments
}

func (s *stack) version() string { return versionAt(s.port) }

// versionAt is what the test server on port says its version is.
func versionAt(port int) string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/version", port))
	if err != nil {
		return "unreachable: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func (s *stack) argv() string {
	b, _ := os.ReadFile(s.argvLog)
	return string(b)
}

// assertNoTokenInArgv checks every minted installation token and the PAT
// against every podman argv deployd ran.
func (s *stack) assertNoTokenInArgv() {
	s.t.Helper()
	argv := s.argv()
	if argv == "" {
		s.t.Fatal("no podman call was recorded")
	}
	for _, m := range s.github.Mints() {
		if strings.Contains(argv, m.Token) {
			s.t.Errorf("installation token of installation %d appears in podman's argv", m.InstallationID)
		}
	}
	if strings.Contains(argv, e2ePAT) {
		s.t.Error("the PAT appears in podman's argv")
	}
}

func TestEndToEndWebhookDeploys(t *testing.T) {
	s := newStack(t, stackOptions{})
	d := startDeployd(t, s.config, nil)

	// 1. A registry_package delivery for backend:latest deploys it.
	v1 := s.push("latest", "v1")
	ids := d.queue(delivery{event: "registry_package", id: "e2e-1", body: s.packageEvent("latest", v1)})
	dep := waitDeployment(t, d, ids[0])
	if dep.State != "succeeded" || dep.Digest != v1 {
		t.Fatalf("first deployment: %s %s (%s %s), want succeeded %s; steps %+v", dep.State, dep.Digest, dep.ErrorClass, dep.Error, v1, dep.Steps)
	}
	if got := s.version(); got != "v1" {
		t.Fatalf("service answers %q, want v1", got)
	}
	var steps []string
	for _, st := range dep.Steps {
		steps = append(steps, st.Name)
	}
	if strings.Join(steps, ",") != "resolve,login,pull,switch,verify" {
		t.Errorf("steps %v, want resolve, login, pull, switch, verify", steps)
	}
	var pullMints int
	for _, m := range s.github.Mints() {
		if m.Permissions["packages"] == "read" {
			pullMints++
			if m.InstallationID != fixtureInstallation {
				t.Errorf("pull token minted for installation %d, want the delivery's %d", m.InstallationID, fixtureInstallation)
			}
		}
	}
	if pullMints != 1 {
		t.Errorf("%d pull tokens minted, want 1", pullMints)
	}
	// The deployment is mirrored to GitHub's Deployments API.
	waitFor(t, "GitHub deployment statuses", func() bool {
		var states []string
		for _, st := range s.github.DeploymentStatuses() {
			states = append(states, st.State)
		}
		return strings.Join(states, ",") == "in_progress,success"
	})
	if deps := s.github.Deployments(); len(deps) != 1 || deps[0].Environment != "backend" || deps[0].Repository != "Acme-Corp/v7" {
		t.Errorf("GitHub deployments %+v, want one for environment backend of Acme-Corp/v7", deps)
	}

	// 2. A second push of latest upgrades; one container remains.
	v2 := s.push("latest", "v2")
	ids = d.queue(delivery{event: "registry_package", id: "e2e-2", body: s.packageEvent("latest", v2)})
	if dep := waitDeployment(t, d, ids[0]); dep.State != "succeeded" || s.version() != "v2" {
		t.Fatalf("upgrade: %s (%s), service answers %q", dep.State, dep.Error, s.version())
	}
	out, err := s.podman.Run(context.Background(), "ps", "--all", "--format", "{{.Names}}")
	if err != nil || strings.TrimSpace(out) != "e2e-backend" {
		t.Errorf("containers after upgrade: %q (%v), want only e2e-backend", out, err)
	}

	// 3. The same digest again (an "updated" event) is unchanged: no pull.
	pulls := strings.Count(s.argv(), " pull ")
	same := edit(t, s.packageEvent("latest", v2), func(m map[string]any) { m["action"] = "updated" })
	ids = d.queue(delivery{event: "registry_package", id: "e2e-3", body: same})
	if dep := waitDeployment(t, d, ids[0]); dep.State != "unchanged" {
		t.Errorf("same digest again: %s, want unchanged", dep.State)
	}
	if n := strings.Count(s.argv(), " pull "); n != pulls {
		t.Errorf("an unchanged deployment pulled (%d pulls before, %d after)", pulls, n)
	}

	// 5. A successful workflow_run deploys sha-<short sha>.
	sha := "3484a3fb816e0859fd6e1cea078d76385ff50625"
	v3 := s.push("sha-3484a3f", "v3")
	run := edit(t, fixture(t, "workflow_run.completed.json"), func(m map[string]any) {
		wr := dig(m, "workflow_run")
		wr["name"], wr["head_branch"], wr["head_sha"], wr["event"] = "CI/CD", "main", sha, "push"
		dig(m, "repository")["full_name"] = "Acme-Corp/v7"
		dig(m, "workflow_run", "head_repository")["full_name"] = "Acme-Corp/v7"
		m["installation"] = map[string]any{"id": float64(fixtureInstallation)}
	})
	ids = d.queue(delivery{event: "workflow_run", id: "e2e-5", body: run})
	dep = waitDeployment(t, d, ids[0])
	if dep.State != "succeeded" || dep.Tag != "sha-3484a3f" || dep.Digest != v3 || s.version() != "v3" {
		t.Errorf("workflow_run deploy: %s tag %s digest %s version %s, want succeeded sha-3484a3f %s v3", dep.State, dep.Tag, dep.Digest, s.version(), v3)
	}

	// 4. Ten deliveries in a burst: at most two run, the last one wins.
	var digests []string
	for i := range 10 {
		digests = append(digests, s.push("latest", fmt.Sprintf("burst-%d", i)))
	}
	var last int64
	for i, dg := range digests {
		ids := d.queue(delivery{event: "registry_package", id: fmt.Sprintf("e2e-burst-%d", i), body: s.packageEvent("latest", dg)})
		last = ids[0]
	}
	dep = waitDeployment(t, d, last)
	if dep.State != "succeeded" || dep.Digest != digests[9] || s.version() != "burst-9" {
		t.Fatalf("after the burst: %s %s, service %q, want succeeded %s burst-9", dep.State, dep.Digest, s.version(), digests[9])
	}
	var all deploymentsResponse
	d.getJSON("/api/v1/deployments?service=backend&limit=500", http.StatusOK, &all)
	ran, superseded := 0, 0
	for _, x := range all.Deployments {
		if x.Trigger.DeliveryID == "" || !strings.HasPrefix(x.Trigger.DeliveryID, "e2e-burst-") {
			continue
		}
		switch x.State {
		case "superseded":
			superseded++
		default:
			ran++
		}
	}
	if ran > 2 || ran+superseded != 10 {
		t.Errorf("burst of 10: %d ran, %d superseded; want at most 2 ran\n%s", ran, superseded, all)
	}

	// Tokens: one mint per permission set for the whole run (pulls and
	// the Deployments API), none in any argv.
	if n := s.github.MintCount(); n != 2 {
		t.Errorf("%d installation tokens minted, want 2 (one for pulls, one for deployments; both cached)", n)
	}
	s.assertNoTokenInArgv()
}

// GitHub's published registry_package example carries a tag digest of 40
// hex digits, which is no digest. A tagged push of that shape still deploys:
// by its package_version.version when that is a digest, else by its tag,
// resolved at the registry; the step log says the payload's digest was unusable.
func TestEndToEndUnusablePayloadDigest(t *testing.T) {
	const exampleDigest = "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b"
	s := newStack(t, stackOptions{})
	d := startDeployd(t, s.config, nil)
	// The example as published, pointed at the stack's service and tagged.
	example := func(version string) []byte {
		return edit(t, fixture(t, "registry_package.published.json"), func(m map[string]any) {
			pkg := dig(m, "registry_package")
			pkg["namespace"], pkg["name"] = "Acme-Corp", "v7/backend"
			tag := dig(m, "registry_package", "package_version", "container_metadata", "tag")
			if tag["digest"] != exampleDigest {
				t.Fatalf("the example's tag digest is %v, not %s", tag["digest"], exampleDigest)
			}
			tag["name"] = "latest"
			if version == "" {
				delete(dig(m, "registry_package", "package_version"), "version")
			} else {
				dig(m, "registry_package", "package_version")["version"] = version
			}
			dig(m, "repository")["full_name"] = "Acme-Corp/v7"
			m["installation"] = map[string]any{"id": float64(fixtureInstallation)}
		})
	}
	check := func(dep deploymentJSON, digest, version, note, resolved string) {
		t.Helper()
		if dep.State != "succeeded" || dep.Tag != "latest" || dep.Digest != digest || s.version() != version {
			t.Fatalf("deployment %s tag %s digest %s (%s %s), service %q; want succeeded latest %s, %s",
				dep.State, dep.Tag, dep.Digest, dep.ErrorClass, dep.Error, s.version(), digest, version)
		}
		if len(dep.Steps) < 2 || dep.Steps[0].Name != "request" || !strings.Contains(dep.Steps[0].Message, note) ||
			dep.Steps[1].Name != "resolve" || !strings.Contains(dep.Steps[1].Message, resolved) {
			t.Errorf("steps %+v: want the note %q first, then resolve saying %q", dep.Steps, note, resolved)
		}
	}

	// No package_version.version: the tag is resolved.
	v1 := s.push("latest", "v1")
	ids := d.queue(delivery{event: "registry_package", id: "example-1", body: example("")})
	check(waitDeployment(t, d, ids[0]), v1, "v1",
		`the payload's digest "`+exampleDigest+`" is unusable (not sha256: and 64 hex digits); the tag latest is resolved at the registry instead`,
		s.image+":latest is "+v1)

	// package_version.version is a digest: it is deployed.
	v2 := s.push("latest", "v2")
	ids = d.queue(delivery{event: "registry_package", id: "example-2", body: example(v2)})
	check(waitDeployment(t, d, ids[0]), v2, "v2",
		`the payload's tag digest "`+exampleDigest+`" is unusable (not sha256: and 64 hex digits); deploying its package_version.version `+v2+` instead`,
		s.image+"@"+v2+" is at the registry")
}

func TestEndToEndRegistryRefusesCredential(t *testing.T) {
	s := newStack(t, stackOptions{registryDeniesApp: true})
	d := startDeployd(t, s.config, nil)
	v1 := s.push("latest", "v1")
	ids := d.queue(delivery{event: "registry_package", id: "e2e-denied", body: s.packageEvent("latest", v1)})
	dep := waitDeployment(t, d, ids[0])
	if dep.State != "failed" || dep.ErrorClass != "auth" {
		t.Fatalf("denied pull: %s %s, want failed auth", dep.State, dep.ErrorClass)
	}
	if !strings.Contains(dep.Hint, "GitHub App") || !strings.Contains(dep.Hint, "token_file") {
		t.Errorf("hint %q should explain the App token refusal and name token_file", dep.Hint)
	}
	for _, text := range []string{dep.Error, dep.Hint} {
		if strings.Contains(text, "Requesting bearer token") {
			t.Errorf("the registry's raw message is shown bare: %q", text)
		}
		for _, m := range s.github.Mints() {
			if strings.Contains(text, m.Token) {
				t.Error("the installation token appears in the deployment's error")
			}
		}
	}
}

func TestEndToEndFallsBackToPAT(t *testing.T) {
	s := newStack(t, stackOptions{registryDeniesApp: true, credentials: "[github_app, token_file]"})
	d := startDeployd(t, s.config, nil)
	v1 := s.push("latest", "v1")
	ids := d.queue(delivery{event: "registry_package", id: "e2e-fallback", body: s.packageEvent("latest", v1)})
	dep := waitDeployment(t, d, ids[0])
	if dep.State != "succeeded" || s.version() != "v1" {
		t.Fatalf("fallback deploy: %s (%s %s), service %q", dep.State, dep.ErrorClass, dep.Error, s.version())
	}
	var fellBack bool
	for _, st := range dep.Steps {
		if st.Outcome == "failed" && strings.Contains(st.Message, "github_app") {
			fellBack = true
		}
	}
	if !fellBack {
		t.Errorf("the step log does not record the App token refusal: %+v", dep.Steps)
	}
	s.assertNoTokenInArgv()
}

// process is deployd run as a built binary, so that it can be SIGKILLed.
type process struct {
	cmd  *exec.Cmd
	logs *testlog.Buffer
	addr string
}

// buildDeployd builds the deployd binary once per test.
func buildDeployd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "deployd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startProcess(t *testing.T, bin, config string) *process {
	t.Helper()
	p := &process{logs: &testlog.Buffer{}}
	p.cmd = exec.Command(bin, "serve", "--config", config)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for p.addr = listenAddr(p.logs.String()); p.addr == ""; p.addr = listenAddr(p.logs.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("deployd did not listen:\n%s", p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// kill sends SIGKILL to deployd and everything it started.
func (p *process) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = p.cmd.Wait()
}

func TestEndToEndKilledDuringPullResumes(t *testing.T) {
	bin := buildDeployd(t)
	s := newStack(t, stackOptions{})
	slow := filepath.Join(filepath.Dir(s.podmanW), "slow-pull")
	writeFile(t, filepath.Dir(slow), "slow-pull", "", 0o600)

	p := startProcess(t, bin, s.config)
	d := &instance{t: t, addr: p.addr}
	v1 := s.push("latest", "v1")
	ids := d.queue(delivery{event: "registry_package", id: "e2e-kill", body: s.packageEvent("latest", v1)})
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(s.argv(), " pull ") {
		if time.Now().After(deadline) {
			t.Fatalf("no pull started:\n%s", p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.kill() // SIGKILL in the middle of the pull

	if err := os.Remove(slow); err != nil {
		t.Fatal(err)
	}
	p2 := startProcess(t, bin, s.config)
	d2 := &instance{t: t, addr: p2.addr}
	if dep := waitDeployment(t, d2, ids[0]); dep.State != "interrupted" {
		t.Errorf("the deployment cut short by SIGKILL is %s, want interrupted", dep.State)
	}
	var all deploymentsResponse
	deadline = time.Now().Add(2 * time.Minute)
	for {
		d2.getJSON("/api/v1/deployments?service=backend", http.StatusOK, &all)
		if len(all.Deployments) > 1 && all.Deployments[0].State != "queued" && all.Deployments[0].State != "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no resumed deployment ended:\n%s", all)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resumed := all.Deployments[0]
	if resumed.State != "succeeded" || resumed.Digest != v1 || resumed.Trigger.DeliveryID != "e2e-kill" || s.version() != "v1" {
		t.Errorf("after restart: %s %s (delivery %s), service %q; want succeeded %s from e2e-kill, v1",
			resumed.State, resumed.Digest, resumed.Trigger.DeliveryID, s.version(), v1)
	}
}

// TestEndToEndRefusedCredentialsDoNotLockDeploysOut: the registry refuses
// every credential source (the App token, as ghcr.io does for a private
// package, and the PAT), so a deploy fails with class auth. Once the PAT is
// restored, the next deploy succeeds at once, after a SIGKILL and restart
// on the same data_dir and without one: a source put aside never leaves
// the chain empty.
func TestEndToEndRefusedCredentialsDoNotLockDeploysOut(t *testing.T) {
	bin := buildDeployd(t)
	s := newStack(t, stackOptions{registryDeniesApp: true, credentials: "[github_app, token_file]"})

	// refused pushes version and fails to deploy it while the registry
	// refuses the PAT too, then restores the PAT.
	refused := func(d *instance, id, version string) {
		t.Helper()
		s.refusePAT.Store(true)
		digest := s.push("latest", version)
		ids := d.queue(delivery{event: "registry_package", id: id, body: s.packageEvent("latest", digest)})
		if dep := waitDeployment(t, d, ids[0]); dep.State != "failed" || dep.ErrorClass != "auth" {
			t.Fatalf("deploy %s with every credential refused: %s %s (%s), want failed auth", version, dep.State, dep.ErrorClass, dep.Error)
		}
		s.refusePAT.Store(false)
	}
	// deploys pushes version and requires the next deploy to succeed.
	deploys := func(d *instance, id, version string) {
		t.Helper()
		digest := s.push("latest", version)
		ids := d.queue(delivery{event: "registry_package", id: id, body: s.packageEvent("latest", digest)})
		dep := waitDeployment(t, d, ids[0])
		if dep.State != "succeeded" || dep.Digest != digest || s.version() != version {
			t.Fatalf("deploy %s after the PAT was restored: %s %s (%s; hint %q), service %q; want succeeded at once",
				version, dep.State, dep.ErrorClass, dep.Error, dep.Hint, s.version())
		}
		var usedPAT bool
		for _, st := range dep.Steps {
			usedPAT = usedPAT || (st.Name == "login" && st.Outcome == "ok" && strings.Contains(st.Message, "(token_file)"))
		}
		if !usedPAT {
			t.Errorf("deploy %s: the step log shows no login with the restored token_file: %+v", version, dep.Steps)
		}
	}

	p := startProcess(t, bin, s.config)
	refused(&instance{t: t, addr: p.addr}, "e2e-lockout-1", "v1")
	p.kill()
	p2 := startProcess(t, bin, s.config)
	d := &instance{t: t, addr: p2.addr}
	deploys(d, "e2e-lockout-2", "v2")

	// The same without a restart: both sources were refused moments ago.
	refused(d, "e2e-lockout-3", "v3")
	deploys(d, "e2e-lockout-4", "v4")
	s.assertNoTokenInArgv()
}

// waitNewest waits until the newest deployment of backend is one other
// than those in seen and has ended, and returns it.
func waitNewest(t testing.TB, d *instance, after int64) deploymentJSON {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var all deploymentsResponse
		d.getJSON("/api/v1/deployments?service=backend&limit=1", http.StatusOK, &all)
		if len(all.Deployments) == 1 && all.Deployments[0].ID > after {
			if dep := all.Deployments[0]; dep.State != "queued" && dep.State != "running" {
				return waitDeployment(t, d, dep.ID)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no deployment after #%d ended:\n%s", after, all)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestEndToEndReconcileDeploysWebhookMissedWhileStopped(t *testing.T) {
	s := newStack(t, stackOptions{reconcile: "10m"})
	v1 := s.push("latest", "v1")
	d := startDeployd(t, s.config, nil)
	// Nothing ran yet: the start-up pass deploys what the registry has.
	first := waitNewest(t, d, 0)
	if first.State != "succeeded" || first.Digest != v1 || first.Trigger.Kind != "reconcile" {
		t.Fatalf("start-up reconcile: %s %s by %s, want succeeded %s by reconcile", first.State, first.Digest, first.Trigger.Kind, v1)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}

	v2 := s.push("latest", "v2") // its webhook never arrives
	d2 := startDeployd(t, s.config, nil)
	caught := waitNewest(t, d2, first.ID)
	if caught.State != "succeeded" || caught.Digest != v2 || caught.Trigger.Kind != "reconcile" || s.version() != "v2" {
		t.Errorf("after restart: %s %s by %s, service %q; want succeeded %s by reconcile, v2", caught.State, caught.Digest, caught.Trigger.Kind, s.version(), v2)
	}
}

func TestEndToEndGitHubDown(t *testing.T) {
	t.Run("cached token still deploys", func(t *testing.T) {
		s := newStack(t, stackOptions{})
		d := startDeployd(t, s.config, nil)
		v1 := s.push("latest", "v1")
		ids := d.queue(delivery{event: "registry_package", id: "down-1", body: s.packageEvent("latest", v1)})
		if dep := waitDeployment(t, d, ids[0]); dep.State != "succeeded" {
			t.Fatalf("first deploy: %s %s", dep.State, dep.Error)
		}
		s.github.SetDown(githubtest.DownRefused)
		v2 := s.push("latest", "v2")
		ids = d.queue(delivery{event: "registry_package", id: "down-2", body: s.packageEvent("latest", v2)})
		if dep := waitDeployment(t, d, ids[0]); dep.State != "succeeded" || s.version() != "v2" {
			t.Errorf("deploy with GitHub down and a cached token: %s (%s %s), service %q", dep.State, dep.ErrorClass, dep.Error, s.version())
		}
	})
	t.Run("no token fails with a hint and reconcile recovers", func(t *testing.T) {
		s := newStack(t, stackOptions{reconcile: "1s"})
		s.github.SetDown(githubtest.DownRefused)
		v1 := s.push("latest", "v1")
		d := startDeployd(t, s.config, nil)
		ids := d.queue(delivery{event: "registry_package", id: "down-3", body: s.packageEvent("latest", v1)})
		dep := waitDeployment(t, d, ids[0])
		if dep.State != "failed" || dep.ErrorClass != "auth" || !strings.Contains(strings.ToLower(dep.Error+dep.Hint), "github") {
			t.Fatalf("deploy with GitHub down and no token: %s %s %q hint %q, want failed auth naming GitHub", dep.State, dep.ErrorClass, dep.Error, dep.Hint)
		}
		s.github.SetDown(githubtest.Up)
		back := waitNewest(t, d, ids[0])
		if back.State != "succeeded" || back.Trigger.Kind != "reconcile" || s.version() != "v1" {
			t.Errorf("after GitHub came back: %s by %s, service %q; want succeeded by reconcile, v1", back.State, back.Trigger.Kind, s.version())
		}
	})
}

// waitFor polls cond for up to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
