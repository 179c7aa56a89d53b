// Package ghdeployments reports deployd's deployments to GitHub's
// Deployments API (SPEC §6 Outputs). Its Reporter is a subscriber of
// deployment events: the queue's Notify hook hands it every change, and it
// creates a GitHub Deployment when a deployment starts running, posts
// in_progress, then success, failure or error when it ends. It reaches
// GitHub through the small API interface that auth/github's
// DeploymentReporter satisfies.
package ghdeployments

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/deployer"
)

// Limits of the reporter.
const (
	// DefaultQueueSize is how many reports may wait for the worker;
	// beyond, reports are dropped and logged.
	DefaultQueueSize = 64
	// DefaultTimeout bounds one report (token, create, status).
	DefaultTimeout = 20 * time.Second
	// CloseTimeout is how long shutdown should wait for the reports still
	// queued (the wait given to Close).
	CloseTimeout = 10 * time.Second
	// remembered is how many deployd → GitHub deployment ids are kept; the
	// oldest is forgotten first.
	remembered = 256
)

// Log keys of the reporter, next to deployer's stable ones.
const (
	keyGitHubDeploymentID = "github_deployment_id"
	keyGitHubState        = "github_state"
)

// API is what the reporter needs of GitHub's Deployments API;
// *github.DeploymentReporter implements it.
type API interface {
	Start(ctx context.Context, s github.DeploymentStart) (int64, error)
	Status(ctx context.Context, s github.DeploymentStatus) error
}

// Reporter mirrors deployd's deployments to GitHub's Deployments API:
// when a deployment starts running it creates a GitHub Deployment and
// posts in_progress; when it ends it posts success, failure or error.
// Notify only queues the work: one background worker talks to GitHub, in
// order, with a timeout per report, so GitHub being slow or down never
// holds up a deployment; it logs a warning instead. The GitHub deployment
// ids live in memory only. A nil *Reporter does nothing. Its methods are
// safe for concurrent use.
type Reporter struct {
	api       API
	repos     map[string]string // service → "owner/name"
	publicURL string            // without a trailing slash; "" for no links
	log       zerolog.Logger
	timeout   time.Duration

	ctx    context.Context // the worker's; cancelled when Close gives up
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	closed bool
	jobs   chan job

	ids recentIDs // deployd id → GitHub id; the worker's own
}

// job is one deployment change to report.
type job struct {
	d    deployer.Deployment
	repo string
}

// Config is what New needs.
type Config struct {
	// API creates the GitHub deployments and their statuses. Required.
	API API
	// Repositories maps each service to its repository, "owner/name".
	// Services without one are not reported; New logs a warning for each
	// service mapped to "".
	Repositories map[string]string
	// PublicURL is deployd's public_url: the environment and log links on
	// GitHub start with it, without any user:password, query or fragment.
	// No links are sent when it is not an absolute http(s) URL.
	PublicURL string
	Logger    zerolog.Logger
	// QueueSize and Timeout default to DefaultQueueSize and DefaultTimeout.
	QueueSize int
	Timeout   time.Duration
}

// New starts the reporter's worker; call Close to stop it. It fails when
// cfg has no API.
func New(cfg Config) (*Reporter, error) {
	if cfg.API == nil {
		return nil, errors.New("new GitHub deployments reporter: no API")
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	repos := make(map[string]string, len(cfg.Repositories))
	for name, repo := range cfg.Repositories {
		if repo == "" {
			cfg.Logger.Warn().Str(deployer.KeyService, name).Msg("service has no repository: its deployments are not reported to GitHub")
			continue
		}
		repos[name] = repo
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Reporter{
		api:       cfg.API,
		repos:     repos,
		publicURL: linkBase(cfg.PublicURL),
		log:       cfg.Logger,
		timeout:   cfg.Timeout,
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		jobs:      make(chan job, cfg.QueueSize),
		ids:       newRecentIDs(remembered),
	}
	go g.work()
	return g, nil
}

// linkBase returns public_url for links shown on GitHub: without any
// user:password, query or fragment, and "" when it is not an absolute
// http(s) URL.
func linkBase(publicURL string) string {
	u, err := url.Parse(publicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return strings.TrimRight(u.String(), "/")
}

// Notify is a deployer Notify hook (deployer.QueueConfig.Notify): it queues
// running and final states of deployments that are not dry runs, and never
// blocks. When the queue is full the change is dropped and a warning
// logged.
func (g *Reporter) Notify(d deployer.Deployment) {
	if g == nil || d.DryRun || (d.State != deployer.StateRunning && !d.State.Final()) {
		return
	}
	repo := g.repos[d.Service]
	if repo == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	select {
	case g.jobs <- job{d: d, repo: repo}:
	default:
		log := g.logger(d)
		log.Warn().Str("state", string(d.State)).
			Msg("GitHub deployment report dropped: too many waiting")
	}
}

// Close stops taking reports and waits up to wait for the queued ones to be
// sent; then it abandons the rest (the call in flight is cancelled).
func (g *Reporter) Close(wait time.Duration) {
	if g == nil {
		return
	}
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		close(g.jobs)
	}
	g.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-g.done:
	case <-t.C:
		g.log.Warn().Dur("waited", wait).Msg("GitHub deployment reports abandoned at shutdown")
		g.cancel()
		<-g.done
	}
	g.cancel()
}

func (g *Reporter) work() {
	defer close(g.done)
	for j := range g.jobs {
		if g.ctx.Err() != nil {
			continue // Close gave up: drain without calling GitHub
		}
		if j.d.State == deployer.StateRunning {
			g.start(j)
		} else {
			g.finish(j)
		}
	}
}

// start creates the GitHub deployment and posts in_progress.
func (g *Reporter) start(j job) {
	d := j.d
	if _, ok := g.ids.get(d.ID); ok {
		return // already reported
	}
	log := g.logger(d)
	ctx, cancel := context.WithTimeout(log.WithContext(g.ctx), g.timeout)
	defer cancel()
	ref := d.Tag // the image tag is often a git tag too; else the default branch
	payload := map[string]any{"deployd_deployment_id": d.ID, "service": d.Service}
	if d.Tag != "" {
		payload["tag"] = d.Tag
	}
	if d.Digest != "" {
		payload["digest"] = d.Digest
	}
	id, err := g.api.Start(ctx, github.DeploymentStart{
		Repository:     j.repo,
		InstallationID: d.Trigger.InstallationID,
		Ref:            ref,
		Environment:    d.Service,
		Description:    fmt.Sprintf("deployd #%d: %s %s", d.ID, d.Service, imageRef(d)),
		Payload:        payload,
	})
	if err != nil {
		log.Warn().Err(err).Msg("cannot report the deployment to GitHub")
		return
	}
	g.ids.put(d.ID, id)
	log.Debug().Int64(keyGitHubDeploymentID, id).Msg("GitHub deployment created")
	g.status(ctx, log, j, id, github.DeploymentInProgress, "deploying "+imageRef(d))
}

// finish posts the final status of a reported deployment.
func (g *Reporter) finish(j job) {
	d := j.d
	id, ok := g.ids.get(d.ID)
	if !ok {
		return // never reported (not started here, or GitHub refused)
	}
	g.ids.remove(d.ID)
	state, desc := finalStatus(d)
	log := g.logger(d)
	ctx, cancel := context.WithTimeout(log.WithContext(g.ctx), g.timeout)
	defer cancel()
	g.status(ctx, log, j, id, state, desc)
}

func (g *Reporter) status(ctx context.Context, log zerolog.Logger, j job, id int64, state, desc string) {
	s := github.DeploymentStatus{
		Repository:     j.repo,
		InstallationID: j.d.Trigger.InstallationID,
		ID:             id,
		State:          state,
		Description:    desc,
	}
	if g.publicURL != "" {
		s.EnvironmentURL = g.publicURL
		s.LogURL = g.publicURL + "/api/v1/deployments/" + strconv.FormatInt(j.d.ID, 10)
	}
	if err := g.api.Status(ctx, s); err != nil {
		log.Warn().Err(err).Int64(keyGitHubDeploymentID, id).Str(keyGitHubState, state).
			Msg("cannot report the deployment's status to GitHub")
	}
}

// finalStatus maps a final state to GitHub's status and a short
// description. The failure text stays in deployd (behind log_url): GitHub
// shows statuses to everyone who can read the repository.
func finalStatus(d deployer.Deployment) (state, desc string) {
	switch d.State {
	case deployer.StateSucceeded:
		return github.DeploymentSuccess, "deployed " + imageRef(d)
	case deployer.StateUnchanged:
		return github.DeploymentSuccess, "already running " + imageRef(d)
	case deployer.StateFailed:
		return github.DeploymentFailure, "failed" + failureClass(d)
	case deployer.StateRolledBack:
		return github.DeploymentFailure, "failed" + failureClass(d) + "; rolled back to the previous version"
	default: // interrupted: deployd stopped; it queues the deployment again on start
		return github.DeploymentError, "interrupted: deployd stopped before the deployment ended"
	}
}

func failureClass(d deployer.Deployment) string {
	if d.ErrorClass == "" {
		return ""
	}
	return " (" + d.ErrorClass + ")"
}

// imageRef names what a deployment deploys: "v1.2.3 (sha256:0123456789ab)".
func imageRef(d deployer.Deployment) string {
	digest := d.Digest
	if len(digest) > len("sha256:")+12 {
		digest = digest[:len("sha256:")+12]
	}
	switch {
	case d.Tag != "" && digest != "":
		return d.Tag + " (" + digest + ")"
	case d.Tag != "":
		return d.Tag
	}
	return digest
}

func (g *Reporter) logger(d deployer.Deployment) zerolog.Logger {
	return g.log.With().Str(deployer.KeyService, d.Service).Int64(deployer.KeyDeploymentID, d.ID).Logger()
}

// recentIDs maps deployd deployment ids to GitHub deployment ids, keeping
// at most max entries: the oldest is forgotten first. Not safe for
// concurrent use.
type recentIDs struct {
	max   int
	m     map[int64]int64
	order []int64 // insertion order; may hold removed keys
}

func newRecentIDs(limit int) recentIDs {
	return recentIDs{max: limit, m: make(map[int64]int64, limit)}
}

func (r *recentIDs) get(k int64) (int64, bool) { v, ok := r.m[k]; return v, ok }

func (r *recentIDs) remove(k int64) { delete(r.m, k) }

func (r *recentIDs) put(k, v int64) {
	if _, ok := r.m[k]; !ok {
		r.order = append(r.order, k)
	}
	r.m[k] = v
	for len(r.m) > r.max {
		old := r.order[0]
		r.order = r.order[1:]
		delete(r.m, old)
	}
	if len(r.order) > 2*r.max { // compact keys removed since
		kept := r.order[:0]
		for _, k := range r.order {
			if _, ok := r.m[k]; ok {
				kept = append(kept, k)
			}
		}
		r.order = kept
	}
}
