package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	gogithub "github.com/google/go-github/v62/github"
)

// deploymentsWrite is the permission set of deployment tokens.
func deploymentsWrite() Permissions { return Permissions{"deployments": "write"} }

// The states of a GitHub deployment status that deployd posts.
const (
	DeploymentInProgress = "in_progress"
	DeploymentSuccess    = "success"
	DeploymentFailure    = "failure"
	DeploymentError      = "error"
	DeploymentInactive   = "inactive"
)

// maxStatusDescription is the longest description GitHub accepts on a
// deployment status.
const maxStatusDescription = 140

// DeploymentReporterConfig is what NewDeploymentReporter needs.
type DeploymentReporterConfig struct {
	// App mints the installation tokens (deployments: write, one
	// repository). Required.
	App *App
	// Transport carries the Deployments API requests; nil means
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Timeout bounds each HTTP request; 0 means the App's timeout.
	Timeout time.Duration
}

// DeploymentReporter creates GitHub Deployments and their statuses
// (POST /repos/{owner}/{repo}/deployments and .../statuses) with an
// installation token of the App down-scoped to deployments: write and the
// one repository. Tokens come from the App's cache, so reporting costs one
// mint per installation and repository per token lifetime. It is safe for
// concurrent use.
type DeploymentReporter struct {
	app *App
	gh  *gogithub.Client // unauthenticated; each call adds its token
}

// NewDeploymentReporter checks cfg and returns a reporter. It makes no
// request.
func NewDeploymentReporter(cfg DeploymentReporterConfig) (*DeploymentReporter, error) {
	if cfg.App == nil {
		return nil, errors.New("new deployment reporter: no GitHub App")
	}
	gh, err := cfg.App.restClient(cfg.Transport, cfg.Timeout)
	if err != nil {
		return nil, fmt.Errorf("new deployment reporter: %w", err)
	}
	return &DeploymentReporter{app: cfg.App, gh: gh}, nil
}

// DeploymentStart describes a GitHub Deployment to create.
type DeploymentStart struct {
	// Repository is the service's repository, "owner/name". Required.
	Repository string
	// InstallationID is the App installation to act as; 0 means the
	// configured one, else the one covering Repository.
	InstallationID int64
	// Ref is the git ref (branch, tag or SHA) deployed. When GitHub does not
	// know it, or it is empty, the repository's default branch is used and
	// Ref is kept in the payload only.
	Ref string
	// Environment names the GitHub environment, e.g. the service's name.
	Environment string
	// Description is a short text shown with the deployment.
	Description string
	// Payload is extra JSON-encodable data stored with the deployment.
	Payload map[string]any
}

// Start creates a GitHub Deployment in the production, non-transient
// environment named by s, without merging the default branch into the ref
// and without requiring status checks, and returns its id. A failed call is
// a *Error (or the context's error) naming the request.
func (r *DeploymentReporter) Start(ctx context.Context, s DeploymentStart) (int64, error) {
	c, err := r.client(ctx, s.Repository, s.InstallationID)
	if err != nil {
		return 0, fmt.Errorf("create GitHub deployment: %w", err)
	}
	ref := s.Ref
	if ref == "" {
		if ref, err = c.defaultBranch(ctx); err != nil {
			return 0, fmt.Errorf("create GitHub deployment: %w", err)
		}
	}
	id, err := c.createDeployment(ctx, ref, s)
	if err != nil && s.Ref != "" && unknownRef(err) {
		// An image tag is often no git ref at all (latest, sha-abc123).
		if ref, err = c.defaultBranch(ctx); err != nil {
			return 0, fmt.Errorf("create GitHub deployment: ref %q is unknown to GitHub: %w", s.Ref, err)
		}
		id, err = c.createDeployment(ctx, ref, s)
	}
	if err != nil {
		return 0, fmt.Errorf("create GitHub deployment: %w", err)
	}
	return id, nil
}

// DeploymentStatus is a status to post on a GitHub Deployment.
type DeploymentStatus struct {
	// Repository and InstallationID are as in DeploymentStart.
	Repository     string
	InstallationID int64
	// ID is the deployment's id, as Start returned it.
	ID int64
	// State is one of DeploymentInProgress, DeploymentSuccess,
	// DeploymentFailure, DeploymentError and DeploymentInactive.
	State string
	// EnvironmentURL is where the deployed service is reached; optional.
	EnvironmentURL string
	// LogURL is where the deployment's log is shown; optional.
	LogURL string
	// Description is cut to the 140 characters GitHub accepts.
	Description string
}

// Status posts a status on a GitHub Deployment. A failed call is a
// *Error (or the context's error) naming the request.
func (r *DeploymentReporter) Status(ctx context.Context, s DeploymentStatus) error {
	switch s.State {
	case DeploymentInProgress, DeploymentSuccess, DeploymentFailure, DeploymentError, DeploymentInactive:
	default:
		return fmt.Errorf("post GitHub deployment status: unknown state %q", s.State)
	}
	if s.ID <= 0 {
		return fmt.Errorf("post GitHub deployment status: invalid deployment id %d", s.ID)
	}
	c, err := r.client(ctx, s.Repository, s.InstallationID)
	if err != nil {
		return fmt.Errorf("post GitHub deployment status: %w", err)
	}
	req := &gogithub.DeploymentStatusRequest{State: gogithub.String(s.State)}
	if s.EnvironmentURL != "" {
		req.EnvironmentURL = gogithub.String(s.EnvironmentURL)
	}
	if s.LogURL != "" {
		req.LogURL = gogithub.String(s.LogURL)
	}
	if s.Description != "" {
		req.Description = gogithub.String(truncate(s.Description, maxStatusDescription))
	}
	_, _, err = c.gh.Repositories.CreateDeploymentStatus(ctx, c.owner, c.name, s.ID, req)
	if err != nil {
		return fmt.Errorf("post GitHub deployment status: %w",
			c.classify(fmt.Sprintf("POST /repos/%s/%s/deployments/%d/statuses", c.owner, c.name, s.ID), err))
	}
	return nil
}

// repoClient is a go-github client authenticated for one repository.
type repoClient struct {
	r            *DeploymentReporter
	gh           *gogithub.Client
	owner, name  string
	installation int64
}

// client resolves the installation for repository, gets a token scoped to
// deployments: write and the repository, and returns a client carrying it.
func (r *DeploymentReporter) client(ctx context.Context, repository string, installationID int64) (*repoClient, error) {
	owner, name, ok := strings.Cut(repository, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("repository %q is not owner/name", repository)
	}
	inst, err := r.app.ResolveInstallation(ctx, installationID, repository)
	if err != nil {
		return nil, err
	}
	tok, _, err := r.app.ScopedToken(ctx, inst, deploymentsWrite(), []string{repository})
	if err != nil {
		return nil, err
	}
	return &repoClient{
		r:            r,
		gh:           r.gh.WithAuthToken(tok.Reveal()),
		owner:        owner,
		name:         name,
		installation: inst,
	}, nil
}

// createDeployment posts the deployment with ref.
func (c *repoClient) createDeployment(ctx context.Context, ref string, s DeploymentStart) (int64, error) {
	req := &gogithub.DeploymentRequest{
		Ref:                   gogithub.String(ref),
		AutoMerge:             gogithub.Bool(false),
		RequiredContexts:      &[]string{},
		TransientEnvironment:  gogithub.Bool(false),
		ProductionEnvironment: gogithub.Bool(true),
	}
	if s.Environment != "" {
		req.Environment = gogithub.String(s.Environment)
	}
	if s.Description != "" {
		req.Description = gogithub.String(s.Description)
	}
	if len(s.Payload) > 0 {
		req.Payload = s.Payload
	}
	d, _, err := c.gh.Repositories.CreateDeployment(ctx, c.owner, c.name, req)
	if err != nil {
		return 0, c.classify(fmt.Sprintf("POST /repos/%s/%s/deployments", c.owner, c.name), err)
	}
	if d.GetID() == 0 {
		return 0, fmt.Errorf("POST /repos/%s/%s/deployments: GitHub answered without a deployment id", c.owner, c.name)
	}
	return d.GetID(), nil
}

// defaultBranch asks GitHub for the repository's default branch.
func (c *repoClient) defaultBranch(ctx context.Context) (string, error) {
	repo, _, err := c.gh.Repositories.Get(ctx, c.owner, c.name)
	if err != nil {
		return "", c.classify(fmt.Sprintf("GET /repos/%s/%s", c.owner, c.name), err)
	}
	if repo.GetDefaultBranch() == "" {
		return "", fmt.Errorf("GET /repos/%s/%s: GitHub answered without a default branch", c.owner, c.name)
	}
	return repo.GetDefaultBranch(), nil
}

// classify explains a failed Deployments API call.
func (c *repoClient) classify(op string, err error) error {
	return classify(call{
		op:           op,
		appID:        c.r.app.id,
		installation: c.installation,
		repository:   c.owner + "/" + c.name,
		repositories: []string{c.owner + "/" + c.name},
		permissions:  deploymentsWrite(),
	}, err, c.r.app.clock())
}

// unknownRef reports whether GitHub refused a deployment because it does not
// know its ref (422 "No ref found for: ...").
func unknownRef(err error) bool {
	var ge *Error
	if !errors.As(err, &ge) || ge.Status != http.StatusUnprocessableEntity {
		return false
	}
	var er *gogithub.ErrorResponse
	return errors.As(err, &er) && strings.Contains(strings.ToLower(er.Message), "ref")
}

// truncate cuts s to at most n runes, ending it with "…" when cut.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
