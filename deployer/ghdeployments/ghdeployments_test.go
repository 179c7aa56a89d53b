package ghdeployments

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/internal/testlog"
)

const (
	ghdAppID        = 5150
	ghdInstallation = 31
	ghdPublicURL    = "https://deploy.example.com"
	ghdDigest       = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// ghdFixture is a fake GitHub, an App pointed at it and a mirror logging
// into a buffer.
type ghdFixture struct {
	github *githubtest.FakeGitHub
	app    *github.App
	cfg    Config // the reporter's configuration as serve makes it
	logs   *testlog.Buffer
	log    zerolog.Logger
}

func newGHDFixture(t *testing.T) *ghdFixture {
	t.Helper()
	key, keyPEM := githubtest.NewKey(t)
	f := &ghdFixture{github: githubtest.NewFakeGitHub(t, ghdAppID, &key.PublicKey), logs: &testlog.Buffer{}}
	f.github.AddInstallation(githubtest.Installation{ID: ghdInstallation, Account: "acme"})
	f.log = zerolog.New(f.logs)
	pk, err := github.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	f.app, err = github.NewApp(github.AppConfig{ID: ghdAppID, Key: pk, APIURL: f.github.URL, Logger: f.log})
	if err != nil {
		t.Fatal(err)
	}
	api, err := github.NewDeploymentReporter(github.DeploymentReporterConfig{App: f.app})
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = Config{
		API:       api,
		PublicURL: ghdPublicURL + "/",
		Repositories: map[string]string{
			"web":  "acme/web",
			"tool": "", // no repository: not reported
		},
		Logger: f.log,
	}
	return f
}

// mirror builds the mirror as serve does.
func (f *ghdFixture) mirror(t *testing.T) *Reporter {
	t.Helper()
	g, err := New(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(time.Second) })
	return g
}

// runDeployment sends one deployment of web through a real queue whose
// executor ends it as end says, with notify in the queue's Notify chain,
// and returns it in its final state.
func runDeployment(t *testing.T, notify func(deployer.Deployment), end func(deployer.Deployment) deployer.Deployment) deployer.Deployment {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ended := make(chan deployer.Deployment, 1)
	q, err := deployer.NewQueue(deployer.QueueConfig{
		Store:    store,
		Executor: deployer.ExecutorFunc(func(_ context.Context, d deployer.Deployment) deployer.Deployment { return end(d) }),
		Logger:   zerolog.Nop(),
		Notify: func(d deployer.Deployment) {
			notify(d)
			if d.State.Final() {
				ended <- d
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Shutdown(ctx) }()
	if _, err := q.Enqueue(ctx, deployer.Request{Service: "web", Tag: "v1.2.3", Trigger: deployer.Trigger{Kind: deployer.TriggerManual}}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-ended:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the deployment did not end")
	}
	return deployer.Deployment{}
}

func succeed(d deployer.Deployment) deployer.Deployment {
	d.State, d.Digest = deployer.StateSucceeded, ghdDigest
	return d
}

func TestGitHubDeploymentsSuccess(t *testing.T) {
	f := newGHDFixture(t)
	g := f.mirror(t)
	d := runDeployment(t, g.Notify, succeed)
	g.Close(10 * time.Second)

	deps := f.github.Deployments()
	if len(deps) != 1 {
		t.Fatalf("GitHub deployments = %+v, want one", deps)
	}
	gd := deps[0]
	if gd.Repository != "acme/web" || gd.Ref != "v1.2.3" || gd.Environment != "web" {
		t.Errorf("GitHub deployment = %+v", gd)
	}
	var body struct {
		AutoMerge             *bool          `json:"auto_merge"`
		RequiredContexts      []string       `json:"required_contexts"`
		TransientEnvironment  *bool          `json:"transient_environment"`
		ProductionEnvironment *bool          `json:"production_environment"`
		Payload               map[string]any `json:"payload"`
	}
	if err := json.Unmarshal(gd.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.AutoMerge == nil || *body.AutoMerge || body.RequiredContexts == nil || len(body.RequiredContexts) != 0 ||
		body.TransientEnvironment == nil || *body.TransientEnvironment ||
		body.ProductionEnvironment == nil || !*body.ProductionEnvironment {
		t.Errorf("GitHub deployment body = %s", gd.Body)
	}
	// The digest is only known once resolved, so the payload has what the
	// deployment had when it started running.
	if body.Payload["deployd_deployment_id"] != float64(d.ID) || body.Payload["tag"] != "v1.2.3" || body.Payload["service"] != "web" {
		t.Errorf("payload = %v", body.Payload)
	}

	sts := f.github.DeploymentStatuses()
	var states []string
	for _, s := range sts {
		states = append(states, s.State)
		if s.DeploymentID != gd.ID || s.EnvironmentURL != ghdPublicURL ||
			s.LogURL != ghdPublicURL+"/api/v1/deployments/1" {
			t.Errorf("status = %+v", s)
		}
	}
	if !reflect.DeepEqual(states, []string{"in_progress", "success"}) {
		t.Errorf("statuses = %q, want in_progress then success", states)
	}
	if got := sts[len(sts)-1].Description; got != "deployed v1.2.3 (sha256:0123456789ab)" {
		t.Errorf("success description = %q", got)
	}
	if n := f.github.MintCount(); n != 1 {
		t.Errorf("mints = %d, want 1", n)
	}
	if strings.Contains(f.logs.String(), "cannot report") {
		t.Errorf("failures logged:\n%s", f.logs)
	}
}

func TestGitHubDeploymentsFinalStates(t *testing.T) {
	f := newGHDFixture(t)
	g := f.mirror(t)
	cases := []struct {
		state     deployer.State
		class     string
		wantState string
		wantDesc  string
	}{
		{deployer.StateFailed, "health", "failure", "failed (health)"},
		{deployer.StateRolledBack, "podman", "failure", "failed (podman); rolled back to the previous version"},
		{deployer.StateUnchanged, "", "success", "already running v1.2.3 (sha256:0123456789ab)"},
		{deployer.StateInterrupted, "", "error", "interrupted: deployd stopped before the deployment ended"},
	}
	for i, c := range cases {
		d := deployer.Deployment{ID: int64(i + 1), Service: "web", Tag: "v1.2.3", State: deployer.StateRunning}
		g.Notify(d)
		d.State, d.ErrorClass, d.Digest = c.state, c.class, ghdDigest
		d.Error = "secret-ish internal detail"
		g.Notify(d)
	}
	g.Close(10 * time.Second)

	deps := f.github.Deployments()
	if len(deps) != len(cases) {
		t.Fatalf("GitHub deployments = %d, want %d", len(deps), len(cases))
	}
	sts := f.github.DeploymentStatuses()
	if len(sts) != 2*len(cases) {
		t.Fatalf("statuses = %+v", sts)
	}
	for i, c := range cases {
		in, end := sts[2*i], sts[2*i+1]
		if in.State != "in_progress" || end.State != c.wantState || end.Description != c.wantDesc ||
			end.DeploymentID != deps[i].ID {
			t.Errorf("%s: statuses %+v, %+v; want %s %q", c.state, in, end, c.wantState, c.wantDesc)
		}
		if strings.Contains(string(end.Body), "internal detail") {
			t.Errorf("%s: the error text went to GitHub: %s", c.state, end.Body)
		}
	}
	if n := f.github.MintCount(); n != 1 {
		t.Errorf("mints = %d, want 1 for one repository", n)
	}
}

func TestGitHubDeploymentsFailurePathThroughQueue(t *testing.T) {
	f := newGHDFixture(t)
	g := f.mirror(t)
	runDeployment(t, g.Notify, func(d deployer.Deployment) deployer.Deployment {
		d.State, d.ErrorClass, d.Error = deployer.StateFailed, "health", "health check failed"
		return d
	})
	g.Close(10 * time.Second)
	sts := f.github.DeploymentStatuses()
	if len(sts) != 2 || sts[0].State != "in_progress" || sts[1].State != "failure" || sts[1].Description != "failed (health)" {
		t.Errorf("statuses = %+v", sts)
	}
}

func TestGitHubDeploymentsGitHubDown(t *testing.T) {
	f := newGHDFixture(t)
	g := f.mirror(t)
	f.github.SetDown(githubtest.Down500)
	d := runDeployment(t, g.Notify, succeed)
	if d.State != deployer.StateSucceeded {
		t.Errorf("deployment ended %s with GitHub down", d.State)
	}
	g.Close(10 * time.Second)
	if n := len(f.github.Deployments()) + len(f.github.DeploymentStatuses()); n != 0 {
		t.Errorf("GitHub recorded %d deployments and statuses while down", n)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, `"level":"warn"`) || !strings.Contains(logs, "cannot report the deployment to GitHub") ||
		!strings.Contains(logs, `"deployment_id":1`) {
		t.Errorf("no warning about GitHub being down:\n%s", logs)
	}
	if strings.Contains(logs, "ghs_") || strings.Contains(logs, "BEGIN") {
		t.Errorf("a secret was logged:\n%s", logs)
	}
}

// blockingReporter never answers until released.
type blockingReporter struct {
	release chan struct{}
	mu      sync.Mutex
	calls   int
}

func (b *blockingReporter) Start(ctx context.Context, _ github.DeploymentStart) (int64, error) {
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
	select {
	case <-b.release:
		return 1, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (b *blockingReporter) Status(context.Context, github.DeploymentStatus) error { return nil }

func TestGitHubDeploymentsNeverBlock(t *testing.T) {
	logs := &testlog.Buffer{}
	rep := &blockingReporter{release: make(chan struct{})}
	g, err := New(Config{
		API: rep, Repositories: map[string]string{"web": "acme/web"},
		Logger: zerolog.New(logs), QueueSize: 2, Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	// returns fails the test if f hangs; it sets no speed threshold.
	returns := func(what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			f()
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s hangs while GitHub does not answer", what)
		}
	}
	returns("Notify", func() {
		for i := range 50 {
			g.Notify(deployer.Deployment{ID: int64(i + 1), Service: "web", Tag: "v1", State: deployer.StateRunning})
		}
	})
	if !strings.Contains(logs.String(), "GitHub deployment report dropped") {
		t.Errorf("no warning about dropped reports:\n%s", logs)
	}
	// Close gives up on a hanging GitHub after its wait and cancels the call.
	returns("Close", func() { g.Close(100 * time.Millisecond) })
	if !strings.Contains(logs.String(), "abandoned at shutdown") {
		t.Errorf("no warning about abandoned reports:\n%s", logs)
	}
	g.Notify(deployer.Deployment{ID: 99, Service: "web", State: deployer.StateRunning}) // after Close: ignored, no panic
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.calls != 1 {
		t.Errorf("calls = %d, want 1 (the rest were queued behind it and abandoned)", rep.calls)
	}
}

func TestLinkBaseDropsCredentials(t *testing.T) {
	for in, want := range map[string]string{
		"https://deploy.example.com/":                   "https://deploy.example.com",
		"https://ops:hunter2@deploy.example.com/d/?x#y": "https://deploy.example.com/d",
		"http://10.0.0.5:8080":                          "http://10.0.0.5:8080",
		"":                                              "",
		"deploy.example.com":                            "",
	} {
		if got := linkBase(in); got != want {
			t.Errorf("linkBase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGitHubDeploymentsOffOrNotApplicable(t *testing.T) {
	f := newGHDFixture(t)

	// github.deployments off, or no App: no mirror (serve's wiring, tested
	// in cmd/deployd), and a nil one is inert.
	var g *Reporter
	runDeployment(t, g.Notify, succeed)
	g.Close(time.Second)

	// Dry runs, services without a repository and other states: no calls.
	g = f.mirror(t)
	g.Notify(deployer.Deployment{ID: 1, Service: "web", Tag: "v1", State: deployer.StateRunning, DryRun: true})
	g.Notify(deployer.Deployment{ID: 1, Service: "web", Tag: "v1", State: deployer.StateSucceeded, DryRun: true})
	g.Notify(deployer.Deployment{ID: 2, Service: "tool", Tag: "v1", State: deployer.StateRunning})
	g.Notify(deployer.Deployment{ID: 2, Service: "tool", Tag: "v1", State: deployer.StateSucceeded})
	g.Notify(deployer.Deployment{ID: 3, Service: "web", Tag: "v1", State: deployer.StateQueued})
	g.Notify(deployer.Deployment{ID: 3, Service: "web", Tag: "v1", State: deployer.StateSuperseded})
	g.Close(10 * time.Second)
	if n := f.github.Requests(); n != 0 {
		t.Errorf("GitHub got %d requests", n)
	}
	if !strings.Contains(f.logs.String(), "service has no repository") {
		t.Errorf("no warning about the service without repository:\n%s", f.logs)
	}
}

func TestNewNeedsAPI(t *testing.T) {
	if g, err := New(Config{Repositories: map[string]string{"web": "acme/web"}}); err == nil {
		g.Close(time.Second)
		t.Fatal("New without an API succeeded")
	}
}
