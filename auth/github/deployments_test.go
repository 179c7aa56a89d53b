package github_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
)

func newReporter(t *testing.T, e *env, rt http.RoundTripper) *github.DeploymentReporter {
	t.Helper()
	r, err := github.NewDeploymentReporter(github.DeploymentReporterConfig{App: e.app, Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDeploymentReporterStartAndStatus(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	r := newReporter(t, e, nil)

	id, err := r.Start(ctx, github.DeploymentStart{
		Repository:  "acme/web",
		Ref:         "v1.2.3",
		Environment: "web",
		Description: "deployd #7: web v1.2.3",
		Payload:     map[string]any{"deployd_deployment_id": 7, "digest": "sha256:abc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{github.DeploymentInProgress, github.DeploymentSuccess} {
		err := r.Status(ctx, github.DeploymentStatus{
			Repository: "acme/web", ID: id, State: st,
			EnvironmentURL: "https://deploy.example.com", LogURL: "https://deploy.example.com/api/v1/deployments/7",
			Description: strings.Repeat("x", 200),
		})
		if err != nil {
			t.Fatalf("status %s: %v", st, err)
		}
	}

	deps := e.gh.Deployments()
	if len(deps) != 1 {
		t.Fatalf("deployments = %+v, want one", deps)
	}
	d := deps[0]
	if d.ID != id || d.Repository != "acme/web" || d.Ref != "v1.2.3" || d.Environment != "web" {
		t.Errorf("deployment = %+v", d)
	}
	var body map[string]any
	if err := json.Unmarshal(d.Body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"auto_merge": false, "required_contexts": []any{}, "transient_environment": false,
		"production_environment": true, "description": "deployd #7: web v1.2.3",
		"payload": map[string]any{"deployd_deployment_id": float64(7), "digest": "sha256:abc"},
	}
	for k, v := range want {
		if !reflect.DeepEqual(body[k], v) {
			t.Errorf("body[%s] = %#v, want %#v", k, body[k], v)
		}
	}

	sts := e.gh.DeploymentStatuses()
	if len(sts) != 2 || sts[0].State != "in_progress" || sts[1].State != "success" {
		t.Fatalf("statuses = %+v", sts)
	}
	for _, s := range sts {
		if s.DeploymentID != id || s.EnvironmentURL != "https://deploy.example.com" ||
			s.LogURL != "https://deploy.example.com/api/v1/deployments/7" {
			t.Errorf("status = %+v", s)
		}
		if n := len([]rune(s.Description)); n != 140 {
			t.Errorf("description has %d characters, want 140", n)
		}
	}

	// One token, down-scoped to deployments: write and the repository,
	// served from the cache for every call.
	mints := e.gh.Mints()
	if len(mints) != 1 {
		t.Fatalf("mints = %d, want 1", len(mints))
	}
	if m := mints[0]; !reflect.DeepEqual(m.Permissions, map[string]string{"deployments": "write"}) ||
		!reflect.DeepEqual(m.Repositories, []string{"web"}) || m.InstallationID != testInstallation {
		t.Errorf("mint = %+v", m)
	}
}

// refRewriter stands in front of the fake GitHub as a GitHub that knows no
// ref "latest" and whose acme/web defaults to branch main.
type refRewriter struct {
	mu    sync.Mutex
	paths []string
}

func (rw *refRewriter) RoundTrip(req *http.Request) (*http.Response, error) {
	rw.mu.Lock()
	rw.paths = append(rw.paths, req.Method+" "+req.URL.Path)
	rw.mu.Unlock()
	answer := func(status int, body string) (*http.Response, error) {
		return &http.Response{
			StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), Request: req,
		}, nil
	}
	switch {
	case req.Method == http.MethodGet && req.URL.Path == "/repos/acme/web":
		return answer(http.StatusOK, `{"full_name":"acme/web","default_branch":"main"}`)
	case req.Method == http.MethodPost && req.URL.Path == "/repos/acme/web/deployments":
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		if strings.Contains(string(b), `"ref":"latest"`) {
			return answer(http.StatusUnprocessableEntity, `{"message":"No ref found for: latest"}`)
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(strings.NewReader(string(b)))
	}
	return http.DefaultTransport.RoundTrip(req)
}

func TestDeploymentReporterUnknownRefUsesDefaultBranch(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	rw := &refRewriter{}
	r := newReporter(t, e, rw)

	if _, err := r.Start(ctx, github.DeploymentStart{Repository: "acme/web", Ref: "latest", Environment: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Start(ctx, github.DeploymentStart{Repository: "acme/web", Environment: "web"}); err != nil {
		t.Fatal(err)
	}
	deps := e.gh.Deployments()
	if len(deps) != 2 || deps[0].Ref != "main" || deps[1].Ref != "main" {
		t.Fatalf("deployments = %+v, want two on main", deps)
	}
	want := []string{
		"POST /repos/acme/web/deployments", "GET /repos/acme/web", "POST /repos/acme/web/deployments",
		"GET /repos/acme/web", "POST /repos/acme/web/deployments",
	}
	if !reflect.DeepEqual(rw.paths, want) {
		t.Errorf("requests = %q, want %q", rw.paths, want)
	}
}

func TestDeploymentReporterFailures(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	r := newReporter(t, e, nil)

	if _, err := r.Start(ctx, github.DeploymentStart{Repository: "web", Ref: "v1"}); err == nil || !strings.Contains(err.Error(), "owner/name") {
		t.Errorf("repository without owner: error = %v", err)
	}
	if err := r.Status(ctx, github.DeploymentStatus{Repository: "acme/web", ID: 1, State: "done"}); err == nil {
		t.Error("unknown state accepted")
	}
	if e.gh.Requests() != 0 {
		t.Errorf("invalid calls reached GitHub %d times", e.gh.Requests())
	}

	// A repository outside the installation.
	_, err := r.Start(ctx, github.DeploymentStart{Repository: "other/api", Ref: "v1"})
	asGitHubError(t, err, github.KindNotInstalled)

	// GitHub down: a plain-words error, no panic, no hang.
	e.gh.SetDown(githubtest.Down500)
	_, err = r.Start(ctx, github.DeploymentStart{Repository: "acme/web", Ref: "v1"})
	asGitHubError(t, err, github.KindUnreachable)
	if !strings.HasPrefix(err.Error(), "create GitHub deployment: ") {
		t.Errorf("error = %v", err)
	}
	e.gh.SetDown(githubtest.Up)

	id, err := r.Start(ctx, github.DeploymentStart{Repository: "acme/web", Ref: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	e.gh.SetDown(githubtest.DownHangUp)
	err = r.Status(ctx, github.DeploymentStatus{Repository: "acme/web", ID: id, State: github.DeploymentFailure})
	asGitHubError(t, err, github.KindUnreachable)
	if strings.Contains(err.Error(), "ghs_") {
		t.Errorf("error shows a token: %v", err)
	}

	if _, err := github.NewDeploymentReporter(github.DeploymentReporterConfig{}); err == nil {
		t.Error("reporter without App accepted")
	}
}
