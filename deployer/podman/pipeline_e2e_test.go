package podman_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/podman"
	"github.com/deployd/deployd/deployer/podmantest"
	"github.com/deployd/deployd/deployer/registrytest"
	"github.com/deployd/deployd/deployer/sqlite"
)

// fixedCredentials is a credential chain over a fixed list: it hands out
// the first source not put aside, like the real chain in auth does.
type fixedCredentials struct {
	mu     sync.Mutex
	list   []deployer.Credential
	denied map[string]string
}

func (c *fixedCredentials) Credential(_ context.Context, _ deployer.CredentialRequest) (deployer.Credential, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cred := range c.list {
		if _, ok := c.denied[cred.Source]; !ok {
			return cred, nil
		}
	}
	return deployer.Credential{}, fmt.Errorf("every credential source was refused: %v", c.denied)
}

func (c *fixedCredentials) Denied(_ deployer.CredentialRequest, source, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.denied == nil {
		c.denied = map[string]string{}
	}
	c.denied[source] = reason
}

func (c *fixedCredentials) Accepted(deployer.CredentialRequest, string) {}

func (c *fixedCredentials) Invalidate(deployer.CredentialRequest) {}

// pipelineEnv is a real registry with token auth, an isolated podman, a
// store and a queue running the real pipeline for one service "backend".
type pipelineEnv struct {
	t      *testing.T
	reg    *registrytest.Registry
	podman *podmantest.Podman
	store  *sqlite.Store
	queue  *deployer.Queue
	pipe   *podman.Pipeline
	spec   deployer.Service
	image  string
	port   int
	argv   *argvLog
}

// Credentials the test registry knows: the App token may log in but not
// pull (as ghcr.io does with private packages), the PAT may pull.
const (
	appToken = "ghs_apptoken_for_tests_0123456789"
	patToken = "ghp_pat_for_tests_0123456789"
)

func authorize(user, password string, scope registrytest.Scope) ([]string, bool) {
	switch password {
	case patToken:
		return []string{"pull"}, true
	case appToken:
		return nil, true // login OK, pull denied
	}
	return nil, false
}

func newPipelineEnv(t *testing.T, creds deployer.Credentials, mutate func(*deployer.Service)) *pipelineEnv {
	t.Helper()
	return newPipelineEnvWith(t, creds, authorize, mutate)
}

// newPipelineEnvWith is newPipelineEnv with the registry's own Authorize.
func newPipelineEnvWith(t *testing.T, creds deployer.Credentials, auth func(string, string, registrytest.Scope) ([]string, bool), mutate func(*deployer.Service)) *pipelineEnv {
	t.Helper()
	reg := registrytest.Start(t, registrytest.Options{Authorize: auth})
	pm := podmantest.New(t)
	store, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &pipelineEnv{t: t, reg: reg, podman: pm, store: store, image: reg.Image("acme/v7/backend"),
		port: podmantest.FreePort(t), argv: newArgvLog(t)}
	spec := deployer.Service{
		Name: "backend", Host: reg.Host(), Image: e.image, Repository: "acme/v7", DefaultTag: "latest",
		Insecure: true, Strategy: deployer.StrategyContainer,
		Container: deployer.Container{Name: "t-backend", Args: []string{"--network", "host", "-e", fmt.Sprintf("PORT=%d", e.port)}},
		Health:    deployer.Health{URL: fmt.Sprintf("http://127.0.0.1:%d/healthz", e.port), Timeout: 20 * time.Second, Interval: 200 * time.Millisecond},
		Rollback:  true, KeepImages: 3,
	}
	if mutate != nil {
		mutate(&spec)
	}
	p, err := podman.NewPipeline(podman.PipelineConfig{
		Services:    map[string]deployer.Service{"backend": spec},
		Store:       store,
		Credentials: creds,
		Resolver:    podman.RegistryResolver{UserAgent: "deployd-test"},
		Runner:      &podman.CommandRunner{Env: append(podman.ChildEnv(os.Environ()), pm.Env()...)},
		Podman:      podman.Config{Command: e.argv.wrap(pm.Binary()), GlobalArgs: pm.GlobalArgs(), AuthFile: filepath.Join(t.TempDir(), "auth.json")},
		Logger:      zerolog.Nop(),
		Retry:       podman.Retry{Attempts: 3, Base: 20 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.pipe, e.spec = p, spec
	q, err := deployer.NewQueue(deployer.QueueConfig{Store: store, Executor: p, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Shutdown(context.Background()) })
	e.queue = q
	return e
}

// push builds and pushes a new version as :latest and returns its digest.
func (e *pipelineEnv) push(version string, opts podmantest.AppOptions) string {
	e.t.Helper()
	opts.Username, opts.Password = e.reg.PushUser, e.reg.PushPassword
	return e.podman.BuildApp(e.t, e.image+":latest", version, opts)
}

// deploy queues a deployment and waits for its end.
func (e *pipelineEnv) deploy(r deployer.Request) deployer.Deployment {
	e.t.Helper()
	if r.Service == "" {
		r.Service = "backend"
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	if r.Trigger.Kind == "" {
		r.Trigger = deployer.Trigger{Kind: deployer.TriggerManual, Subject: "test"}
	}
	d, err := e.queue.Enqueue(context.Background(), r)
	if err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, err := e.store.Deployment(context.Background(), d.ID)
		if err != nil {
			e.t.Fatal(err)
		}
		if got.State.Final() {
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("deployment %d still %s after 2 minutes", d.ID, got.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// version asks the running service for its version.
func (e *pipelineEnv) version() string {
	e.t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/version", e.port))
	if err != nil {
		e.t.Fatalf("service does not answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func (e *pipelineEnv) containers() []string {
	e.t.Helper()
	out, err := e.podman.Run(context.Background(), "ps", "--all", "--format", "{{.Names}}")
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Fields(out)
}

func stepNames(d deployer.Deployment) string {
	var names []string
	for _, s := range d.Steps {
		names = append(names, s.Name+":"+s.Outcome)
	}
	return strings.Join(names, " ")
}

func requireState(t *testing.T, d deployer.Deployment, want deployer.State) {
	t.Helper()
	if d.State != want {
		t.Fatalf("deployment %d is %s (%s: %s; hint %q), want %s; steps: %s", d.ID, d.State, d.ErrorClass, d.Error, d.Hint, want, stepNames(d))
	}
}

func TestPipelineDeploysUpgradesAndSkipsUnchanged(t *testing.T) {
	e := newPipelineEnv(t, &fixedCredentials{list: []deployer.Credential{{Source: "token_file", Username: "x-access-token", Password: deployer.NewPassword(patToken)}}}, nil)

	d1 := e.push("v1", podmantest.AppOptions{})
	first := e.deploy(deployer.Request{})
	requireState(t, first, deployer.StateSucceeded)
	if first.Digest != d1 {
		t.Errorf("deployed digest %s, want the pushed %s", first.Digest, d1)
	}
	if got := e.version(); got != "v1" {
		t.Errorf("service answers version %q, want v1", got)
	}
	for _, step := range []string{"resolve:ok", "login:ok", "pull:ok", "switch:ok", "verify:ok"} {
		if !strings.Contains(stepNames(first), step) {
			t.Errorf("step log %q lacks %s", stepNames(first), step)
		}
	}

	d2 := e.push("v2", podmantest.AppOptions{})
	second := e.deploy(deployer.Request{})
	requireState(t, second, deployer.StateSucceeded)
	if second.Digest != d2 || e.version() != "v2" {
		t.Errorf("after the second push: digest %s version %s, want %s v2", second.Digest, e.version(), d2)
	}
	if got := e.containers(); len(got) != 1 || got[0] != "t-backend" {
		t.Errorf("containers after upgrade: %v, want only t-backend", got)
	}
	st, _ := e.store.ServiceStatus(context.Background(), "backend")
	if st.Digest != d2 || st.PreviousDigest != d1 {
		t.Errorf("service status digest %s previous %s, want %s and %s", st.Digest, st.PreviousDigest, d2, d1)
	}

	pullsBefore := e.argv.count("pull")
	same := e.deploy(deployer.Request{})
	requireState(t, same, deployer.StateUnchanged)
	if n := e.argv.count("pull"); n != pullsBefore {
		t.Errorf("an unchanged deployment ran podman pull (%d pulls before, %d after)", pullsBefore, n)
	}
	e.argv.assertAbsent(patToken)
}

func TestPipelineRollsBackUnhealthyVersion(t *testing.T) {
	e := newPipelineEnv(t, &fixedCredentials{list: []deployer.Credential{{Source: "token_file", Username: "x", Password: deployer.NewPassword(patToken)}}},
		func(s *deployer.Service) { s.Health.Timeout = 3 * time.Second })
	e.push("v1", podmantest.AppOptions{})
	requireState(t, e.deploy(deployer.Request{}), deployer.StateSucceeded)

	e.push("v2-broken", podmantest.AppOptions{Unhealthy: true})
	bad := e.deploy(deployer.Request{})
	requireState(t, bad, deployer.StateRolledBack)
	if bad.ErrorClass != deployer.ClassHealth || bad.Hint == "" {
		t.Errorf("rolled back with class %q hint %q, want health with a hint", bad.ErrorClass, bad.Hint)
	}
	if !strings.Contains(stepNames(bad), "verify:failed") || !strings.Contains(stepNames(bad), "rollback:ok") {
		t.Errorf("step log %q should show verify failing and rollback succeeding", stepNames(bad))
	}
	if got := e.version(); got != "v1" {
		t.Errorf("after rollback the service answers %q, want v1", got)
	}
}

func TestPipelineFallsBackWhenRegistryDeniesAppToken(t *testing.T) {
	creds := &fixedCredentials{list: []deployer.Credential{
		{Source: "github_app", Username: "x-access-token", Password: deployer.NewPassword(appToken)},
		{Source: "token_file", Username: "x-access-token", Password: deployer.NewPassword(patToken)},
	}}
	e := newPipelineEnv(t, creds, nil)
	e.push("v1", podmantest.AppOptions{})
	d := e.deploy(deployer.Request{})
	requireState(t, d, deployer.StateSucceeded)
	if _, denied := creds.denied["github_app"]; !denied {
		t.Error("the App token was not reported as denied")
	}
	var sawFallback bool
	for _, s := range d.Steps {
		if s.Outcome == "failed" && strings.Contains(s.Message, "github_app") && strings.Contains(s.Message, "next source") {
			sawFallback = true
		}
	}
	if !sawFallback {
		t.Errorf("step log does not say the App token was refused and the next source used: %s", stepNames(d))
	}
	st, err := e.store.ServiceStatus(context.Background(), "backend")
	if err != nil {
		t.Fatal(err)
	}
	if st.Credential != "token_file" || !strings.Contains(st.CredentialNote, "github_app") {
		t.Errorf("service records credential %q note %q; want token_file, and why github_app was passed over", st.Credential, st.CredentialNote)
	}
	e.argv.assertAbsent(appToken)
	e.argv.assertAbsent(patToken)
}

func TestPipelineAuthFailureIsExplained(t *testing.T) {
	e := newPipelineEnv(t, &fixedCredentials{list: []deployer.Credential{{Source: "token_file", Username: "x", Password: deployer.NewPassword("wrong-token")}}}, nil)
	e.push("v1", podmantest.AppOptions{})
	d := e.deploy(deployer.Request{})
	requireState(t, d, deployer.StateFailed)
	t.Logf("error: %s\nhint: %s\nsteps: %+v", d.Error, d.Hint, d.Steps)
	if d.ErrorClass != deployer.ClassAuth {
		t.Errorf("class %q, want auth", d.ErrorClass)
	}
	if !strings.Contains(d.Hint, "token_file") {
		t.Errorf("hint %q does not name the refused source", d.Hint)
	}
	if strings.Contains(d.Error, "wrong-token") || strings.Contains(d.Hint, "wrong-token") {
		t.Error("the refused token appears in the deployment's error")
	}
}

// argvLog wraps podman in a script that records every argv, so tests can
// assert that no secret ever reaches a process's arguments.
type argvLog struct {
	t    *testing.T
	path string
}

func newArgvLog(t *testing.T) *argvLog {
	return &argvLog{t: t, path: filepath.Join(t.TempDir(), "argv.log")}
}

// wrap returns the path of a podman wrapper that logs its argv to the log.
func (a *argvLog) wrap(podman string) string {
	a.t.Helper()
	script := filepath.Join(a.t.TempDir(), "podman")
	body := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %q\nexec %q \"$@\"\n", a.path, podman)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		a.t.Fatal(err)
	}
	return script
}

func (a *argvLog) lines() []string {
	b, err := os.ReadFile(a.path)
	if err != nil && !os.IsNotExist(err) {
		a.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// count returns how many podman calls had sub as a word.
func (a *argvLog) count(sub string) int {
	n := 0
	for _, l := range a.lines() {
		for _, w := range strings.Fields(l) {
			if w == sub {
				n++
				break
			}
		}
	}
	return n
}

func (a *argvLog) assertAbsent(secret string) {
	a.t.Helper()
	for _, l := range a.lines() {
		if strings.Contains(l, secret) {
			a.t.Errorf("a secret appears in podman's argv: %q", strings.ReplaceAll(l, secret, "<SECRET>"))
		}
	}
}

func patCredentials() *fixedCredentials {
	return &fixedCredentials{list: []deployer.Credential{{Source: "token_file", Username: "x-access-token", Password: deployer.NewPassword(patToken)}}}
}

func TestPipelinePrunesOldImages(t *testing.T) {
	e := newPipelineEnv(t, patCredentials(), func(s *deployer.Service) { s.KeepImages = 2 })
	var last string
	for i := range 5 {
		last = e.push(fmt.Sprintf("v%d", i), podmantest.AppOptions{})
		requireState(t, e.deploy(deployer.Request{}), deployer.StateSucceeded)
	}
	out, err := e.podman.Run(context.Background(), "images", "--format", "{{.Digest}}", "--filter", "reference="+e.image)
	if err != nil {
		t.Fatal(err)
	}
	kept := strings.Fields(out)
	if len(kept) != 2 {
		t.Errorf("%d images kept after 5 deployments with keep_images 2: %v", len(kept), kept)
	}
	if !strings.Contains(out, last) {
		t.Errorf("the running image %s was pruned: %v", last, kept)
	}
}

func TestPipelineDryRunChangesNothing(t *testing.T) {
	e := newPipelineEnv(t, patCredentials(), nil)
	e.push("v1", podmantest.AppOptions{})
	requireState(t, e.deploy(deployer.Request{}), deployer.StateSucceeded)
	v2 := e.push("v2", podmantest.AppOptions{})
	pulls := e.argv.count("pull")

	dry := e.deploy(deployer.Request{DryRun: true})
	requireState(t, dry, deployer.StateSucceeded)
	if !dry.DryRun || !strings.Contains(stepNames(dry), "plan:ok") {
		t.Errorf("dry run: dry_run %v, steps %s; want the plan recorded", dry.DryRun, stepNames(dry))
	}
	if plan := dry.Steps[len(dry.Steps)-1].Message; !strings.Contains(plan, v2) {
		t.Errorf("plan %q does not name the digest it would pull (%s)", plan, v2)
	}
	if e.argv.count("pull") != pulls || e.version() != "v1" {
		t.Errorf("dry run changed something: %d pulls (was %d), service answers %s", e.argv.count("pull"), pulls, e.version())
	}
	if st, _ := e.store.ServiceStatus(context.Background(), "backend"); st.Digest == v2 {
		t.Error("dry run recorded the new digest as running")
	}
}

func TestReconcileCatchesUpButNeverUndoesARollback(t *testing.T) {
	e := newPipelineEnv(t, patCredentials(), nil)
	ctx := context.Background()
	rec, err := deployer.NewReconciler(deployer.ReconcilerConfig{Services: []deployer.Service{e.spec},
		Resolver: e.pipe, Store: e.store, Queue: e.queue, Interval: time.Hour, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	v1 := e.push("v1", podmantest.AppOptions{})
	// Nothing runs yet and no webhook came: reconcile deploys v1.
	queued := rec.Once(ctx)
	if len(queued) != 1 || queued[0].Trigger.Kind != deployer.TriggerReconcile || queued[0].Digest != v1 {
		t.Fatalf("reconcile queued %+v, want one reconcile deployment of %s", queued, v1)
	}
	waitEnd(t, e, queued[0].ID, deployer.StateSucceeded)

	// A push whose webhook was missed.
	v2 := e.push("v2", podmantest.AppOptions{})
	queued = rec.Once(ctx)
	if len(queued) != 1 || queued[0].Digest != v2 {
		t.Fatalf("reconcile after a missed push queued %+v, want %s", queued, v2)
	}
	waitEnd(t, e, queued[0].ID, deployer.StateSucceeded)
	if e.version() != "v2" {
		t.Fatalf("service answers %s after reconcile, want v2", e.version())
	}
	if again := rec.Once(ctx); len(again) != 0 {
		t.Errorf("reconcile with nothing new queued %+v", again)
	}

	// The operator rolls back to v1: reconcile must not bring v2 back.
	back := e.deploy(deployer.Request{Digest: v1, Force: true, Trigger: deployer.Trigger{Kind: deployer.TriggerRollback, Subject: "ops"}})
	requireState(t, back, deployer.StateSucceeded)
	if again := rec.Once(ctx); len(again) != 0 {
		t.Errorf("reconcile undid the rollback: queued %+v", again)
	}

	// Nor may a webhook: an old delivery for v2 under a new id is held back.
	rc, err := e.queue.RecordDelivery(ctx, deployer.Delivery{ID: "replayed", Event: "registry_package", BodySHA256: "ab12", ReceivedAt: time.Now(), Result: deployer.ResultQueued},
		[]deployer.Request{{Service: "backend", Tag: "latest", Digest: v2, Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, DeliveryID: "replayed"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.Deployments) != 0 || !strings.Contains(rc.Ignored, "never deploy backwards") {
		t.Errorf("replayed delivery for a replaced digest: %+v, want ignored as backwards", rc)
	}
	// A webhook naming the tag only resolves to v2 and is stopped by the guard.
	guarded := e.deploy(deployer.Request{Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, DeliveryID: "tag-only"}})
	requireState(t, guarded, deployer.StateUnchanged)
	if !strings.Contains(stepNames(guarded), "guard:ok") || e.version() != "v1" {
		t.Errorf("tag-only webhook for a replaced digest: steps %s, service %s; want the guard to keep v1", stepNames(guarded), e.version())
	}

	// A new push is deployed again.
	v3 := e.push("v3", podmantest.AppOptions{})
	queued = rec.Once(ctx)
	if len(queued) != 1 || queued[0].Digest != v3 {
		t.Fatalf("reconcile after a new push queued %+v, want %s", queued, v3)
	}
	waitEnd(t, e, queued[0].ID, deployer.StateSucceeded)
}

func TestPipelineRetriesTransientFailures(t *testing.T) {
	e := newPipelineEnv(t, patCredentials(), nil)
	e.push("v1", podmantest.AppOptions{})
	e.reg.Close() // the registry goes away
	d := e.deploy(deployer.Request{})
	requireState(t, d, deployer.StateFailed)
	if d.ErrorClass != deployer.ClassNetwork {
		t.Errorf("class %s, want network", d.ErrorClass)
	}
	if n := strings.Count(stepNames(d), "resolve:failed"); n != 3 {
		t.Errorf("resolve ran %d times, want 3 (the retry budget): %s", n, stepNames(d))
	}
}

func waitEnd(t *testing.T, e *pipelineEnv, id int64, want deployer.State) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		d, err := e.store.Deployment(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if d.State.Final() {
			requireState(t, d, want)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment %d still %s", id, d.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rotatingCredentials is a github_app source whose token changes when
// Invalidate asks for a fresh one, as the App's cache does.
type rotatingCredentials struct {
	mu          sync.Mutex
	tokens      []string
	invalidated int
}

func (c *rotatingCredentials) Credential(context.Context, deployer.CredentialRequest) (deployer.Credential, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.invalidated >= len(c.tokens) {
		return deployer.Credential{}, fmt.Errorf("no fresh token left")
	}
	return deployer.Credential{Source: "github_app", Username: "x-access-token", Password: deployer.NewPassword(c.tokens[c.invalidated])}, nil
}

func (c *rotatingCredentials) Denied(deployer.CredentialRequest, string, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidated = len(c.tokens) // nothing else to offer
}

func (c *rotatingCredentials) Accepted(deployer.CredentialRequest, string) {}

func (c *rotatingCredentials) Invalidate(deployer.CredentialRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidated++
}

func TestPipelineFreshTokenReachesPodmanAtPull(t *testing.T) {
	const stale, fresh = "ghs_stale_token_0123456789", "ghs_fresh_token_0123456789"
	var mu sync.Mutex
	staleGrants := 0
	reg := func(user, password string, scope registrytest.Scope) ([]string, bool) {
		mu.Lock()
		defer mu.Unlock()
		switch password {
		case fresh:
			return []string{"pull"}, true
		case stale:
			// The stale token logs in and resolves the tag, then loses
			// access before the pull.
			if scope.Name == "" {
				return nil, true
			}
			staleGrants++
			if staleGrants == 1 {
				return []string{"pull"}, true
			}
			return nil, false
		}
		return authorize(user, password, scope)
	}
	creds := &rotatingCredentials{tokens: []string{stale, fresh}}
	e := newPipelineEnvWith(t, creds, reg, nil)
	e.push("v1", podmantest.AppOptions{})
	d := e.deploy(deployer.Request{})
	requireState(t, d, deployer.StateSucceeded)
	if creds.invalidated != 1 {
		t.Errorf("Invalidate called %d times, want once", creds.invalidated)
	}
	if stepNames(d) != "resolve:ok login:ok pull:failed login:ok pull:ok switch:ok verify:ok" {
		t.Errorf("steps %s: want the pull refused with the stale token, then a second login with the fresh one", stepNames(d))
	}
	e.argv.assertAbsent(stale)
	e.argv.assertAbsent(fresh)
}

func TestPipelineServiceDryRunIsRecordedAndChangesNothing(t *testing.T) {
	e := newPipelineEnv(t, patCredentials(), func(s *deployer.Service) { s.DryRun = true })
	e.push("v1", podmantest.AppOptions{})
	d := e.deploy(deployer.Request{})
	requireState(t, d, deployer.StateSucceeded)
	if !d.DryRun || !strings.Contains(stepNames(d), "plan:ok") {
		t.Errorf("service-wide dry run: dry_run %v, steps %s; want it recorded as a dry run with its plan", d.DryRun, stepNames(d))
	}
	if n := e.argv.count("pull"); n != 0 {
		t.Errorf("a dry-run service pulled %d times", n)
	}
	if got := e.containers(); len(got) != 0 {
		t.Errorf("a dry-run service started containers %v", got)
	}
}

// fakeSystemctl puts first on PATH a systemctl that records its
// arguments, for the systemd strategy, and returns the file it records into.
func fakeSystemctl(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "systemctl.log")
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %q\n", log)
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// deployd runs "systemctl" from PATH, as it finds it at run time.
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return log
}

func TestPipelineCommandStrategyGetsDeployEnvironmentAndNoSecrets(t *testing.T) {
	t.Setenv("DEPLOYD_WEBHOOK_SECRET", "must-not-reach-children")
	out := filepath.Join(t.TempDir(), "env.txt")
	e := newPipelineEnv(t, patCredentials(), func(s *deployer.Service) {
		s.Strategy = deployer.StrategyCommand
		s.Command = []string{"/bin/sh", "-c", "env > " + out}
		s.Health = deployer.Health{}
	})
	v1 := e.push("v1", podmantest.AppOptions{})
	d := e.deploy(deployer.Request{})
	requireState(t, d, deployer.StateSucceeded)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := string(b)
	for _, want := range []string{"DEPLOY_SERVICE=backend", "DEPLOY_IMAGE=" + e.image, "DEPLOY_TAG=latest",
		"DEPLOY_DIGEST=" + v1, fmt.Sprintf("DEPLOY_ID=%d", d.ID)} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("the command's environment lacks %s", want)
		}
	}
	if strings.Contains(env, "must-not-reach-children") || strings.Contains(env, patToken) {
		t.Error("a secret reached the deploy command's environment")
	}
}

func TestPipelineSystemdStrategyMovesTheUnitsTag(t *testing.T) {
	calls := fakeSystemctl(t)
	e := newPipelineEnv(t, patCredentials(), func(s *deployer.Service) {
		s.Strategy = deployer.StrategySystemd
		s.Systemd = deployer.Systemd{Unit: "v7-backend.service"}
		s.Health = deployer.Health{}
	})
	v1 := e.push("v1", podmantest.AppOptions{})
	requireState(t, e.deploy(deployer.Request{}), deployer.StateSucceeded)
	v2 := e.push("v2", podmantest.AppOptions{})
	requireState(t, e.deploy(deployer.Request{}), deployer.StateSucceeded)
	// A rollback deploys by digest: the unit's tag must move back too.
	requireState(t, e.deploy(deployer.Request{Digest: v1, Force: true, Trigger: deployer.Trigger{Kind: deployer.TriggerRollback, Subject: "ops"}}), deployer.StateSucceeded)
	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "restart v7-backend.service"); got != 3 {
		t.Errorf("systemctl calls %q, want 3 restarts of the unit", b)
	}
	out, err := e.podman.Run(context.Background(), "image", "inspect", "--format", "{{.Digest}}", e.image+":latest")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != v1 {
		t.Errorf("after the rollback :latest points at %s, want %s (v2 was %s)", out, v1, v2)
	}
}

// lyingFront puts a proxy in front of the registry at host that answers
// every HEAD request for a manifest by digest with the digest lie() returns
// in Docker-Content-Digest, as a broken or hostile registry could, and
// returns the proxy's host. It counts the lies it told.
func lyingFront(t *testing.T, host string, lie func() string, lies *atomic.Int64) string {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: host}
	front := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error {
			if d := lie(); d != "" && resp.Request.Method == http.MethodHead && strings.Contains(resp.Request.URL.Path, "/manifests/sha256:") {
				resp.Header.Set("Docker-Content-Digest", d)
				lies.Add(1)
			}
			return nil
		},
	})
	t.Cleanup(front.Close)
	return strings.TrimPrefix(front.URL, "http://")
}

func TestPipelineDeploysTheRequestedDigestWhateverTheRegistryAnswers(t *testing.T) {
	var (
		lie  atomic.Pointer[string]
		lies atomic.Int64
	)
	lie.Store(new(string))
	e := newPipelineEnv(t, patCredentials(), func(s *deployer.Service) {
		front := lyingFront(t, s.Host, func() string { return *lie.Load() }, &lies)
		s.Image = front + strings.TrimPrefix(s.Image, s.Host)
		s.Host = front
	})
	v1 := e.push("v1", podmantest.AppOptions{})
	v2 := e.push("v2", podmantest.AppOptions{})
	lie.Store(&v2) // asked about v1, the registry says v2 (which :latest is)

	// A webhook names latest at v1 (an older push's delivery arriving late).
	d := e.deploy(deployer.Request{Tag: "latest", Digest: v1, Trigger: deployer.Trigger{Kind: deployer.TriggerWebhook, DeliveryID: "late"}})
	requireState(t, d, deployer.StateSucceeded)
	if lies.Load() == 0 {
		t.Fatal("the registry front told no lie: the test proves nothing")
	}
	if d.Digest != v1 || e.version() != "v1" {
		t.Errorf("deployed %s, service answers %s; want the requested %s (v1), not the registry's answer %s", d.Digest, e.version(), v1, v2)
	}
	if st, _ := e.store.ServiceStatus(context.Background(), "backend"); st.Digest != v1 {
		t.Errorf("service status records %s as running, want %s", st.Digest, v1)
	}
	for _, l := range e.argv.lines() {
		if strings.Contains(l, "pull") && !strings.HasSuffix(l, "@"+v1) {
			t.Errorf("podman pulled something other than the requested digest: %q", l)
		}
	}
	if !strings.Contains(d.Steps[0].Message, "the registry answered digest "+v2) {
		t.Errorf("resolve step %q does not say the registry answered another digest", d.Steps[0].Message)
	}
}
