package deployer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// PodmanConfig says how the pipeline runs podman.
type PodmanConfig struct {
	Command    string   // "podman"
	GlobalArgs []string // before every subcommand, e.g. --root/--runroot or --remote
	RunArgs    []string // after "run" and before the service's args (e.g. --runtime runc in tests)
	AuthFile   string   // registry auth file, written mode 0600 by podman login
}

// PipelineConfig holds a Pipeline's dependencies.
type PipelineConfig struct {
	Services    map[string]ServiceSpec
	Store       Store
	Credentials Credentials
	Resolver    Resolver
	Runner      *CommandRunner
	Podman      PodmanConfig
	// HTTPClient runs health checks; nil means a client without proxy settings.
	HTTPClient *http.Client
	Logger     zerolog.Logger
	// Notify, if set, is called after every step.
	Notify func(Deployment)
	// PullTimeout bounds a pull (default 10m); StepTimeout any other command (default 2m).
	PullTimeout time.Duration
	StepTimeout time.Duration
	// Retry is the budget for transient registry failures.
	Retry Retry
}

// Pipeline carries out deployments step by step: resolve, login, pull,
// switch, verify, and roll back when verify fails. It is an Executor and is
// safe for concurrent use by different services' workers.
type Pipeline struct {
	services    map[string]ServiceSpec
	store       Store
	creds       Credentials
	resolver    Resolver
	runner      *CommandRunner
	podman      PodmanConfig
	http        *http.Client
	log         zerolog.Logger
	notify      func(Deployment)
	pullTimeout time.Duration
	stepTimeout time.Duration
	retry       Retry
}

// NewPipeline checks the dependencies and returns a Pipeline.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("new pipeline: no store")
	case cfg.Credentials == nil:
		return nil, errors.New("new pipeline: no credentials")
	case cfg.Resolver == nil:
		return nil, errors.New("new pipeline: no resolver")
	case cfg.Runner == nil:
		return nil, errors.New("new pipeline: no command runner")
	case cfg.Podman.Command == "":
		return nil, errors.New("new pipeline: no podman command")
	case cfg.Podman.AuthFile == "":
		return nil, errors.New("new pipeline: no auth file")
	}
	p := &Pipeline{
		services:    cfg.Services,
		store:       cfg.Store,
		creds:       cfg.Credentials,
		resolver:    cfg.Resolver,
		runner:      cfg.Runner,
		podman:      cfg.Podman,
		http:        cfg.HTTPClient,
		log:         cfg.Logger,
		notify:      cfg.Notify,
		pullTimeout: cfg.PullTimeout,
		stepTimeout: cfg.StepTimeout,
		retry:       cfg.Retry.withDefaults(),
	}
	if p.http == nil {
		p.http = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	}
	if p.notify == nil {
		p.notify = func(Deployment) {}
	}
	if p.pullTimeout == 0 {
		p.pullTimeout = 10 * time.Minute
	}
	if p.stepTimeout == 0 {
		p.stepTimeout = 2 * time.Minute
	}
	return p, nil
}

// job is one deployment being carried out.
type job struct {
	p      *Pipeline
	d      Deployment
	spec   ServiceSpec
	status ServiceStatus
	req    CredentialRequest
	cred   Credential
	// passedOver says which credential sources the registry refused, and why.
	passedOver []string
	// quiet jobs (reconcile's look-ups) keep no step log.
	quiet bool
	log   zerolog.Logger
}

// Execute runs the deployment to its end state. See Executor.
func (p *Pipeline) Execute(ctx context.Context, d Deployment) Deployment {
	log := zerolog.Ctx(ctx)
	if log.GetLevel() == zerolog.Disabled {
		log = &p.log
	}
	spec, ok := p.services[d.Service]
	if !ok {
		return finish(d, StateFailed, fail(ClassConfig, "add the service to the configuration or remove its queued deployments",
			fmt.Errorf("service %q is not configured", d.Service)))
	}
	j := &job{p: p, d: d, spec: spec, log: *log,
		req: CredentialRequest{Host: spec.Host, Image: spec.Image, Repository: spec.Repository, InstallationID: d.Trigger.InstallationID}}
	st, err := p.store.ServiceStatus(ctx, spec.Name)
	if err != nil {
		return finish(d, StateFailed, fail(ClassConfig, "check deployd's data directory", fmt.Errorf("read service status: %w", err)))
	}
	j.status = st
	return j.run(ctx)
}

func (j *job) run(ctx context.Context) Deployment {
	digest, err := j.resolve(ctx)
	if err != nil {
		return j.end(ctx, StateFailed, err)
	}
	j.d.Digest = digest
	if digest == j.status.Digest && !j.d.Force {
		j.step(ctx, "resolve", time.Now(), nil, "already running "+shortDigest(digest)+"; nothing to do")
		return j.end(ctx, StateUnchanged, nil)
	}
	if reason, err := j.p.backwards(ctx, j.d.Service, j.d.Trigger, digest); err != nil {
		return j.end(ctx, StateFailed, fail(ClassConfig, "check deployd's data directory", err))
	} else if reason != "" {
		j.step(ctx, "guard", time.Now(), nil, reason)
		return j.end(ctx, StateUnchanged, nil)
	}
	if j.d.DryRun || j.spec.DryRun {
		j.step(ctx, "plan", time.Now(), nil, fmt.Sprintf("dry run: would pull %s@%s and switch %s (%s)",
			j.spec.Image, digest, j.spec.Name, j.spec.Strategy))
		return j.end(ctx, StateSucceeded, nil)
	}
	if err := j.fetch(ctx); err != nil {
		return j.end(ctx, StateFailed, err)
	}
	previous, err := j.switchTo(ctx, digest)
	if err != nil {
		return j.end(ctx, StateFailed, err)
	}
	if verr := j.verify(ctx); verr != nil {
		return j.recover(ctx, previous, verr)
	}
	j.cleanupPrevious(ctx)
	if err := j.recordRunning(ctx, digest); err != nil {
		return j.end(ctx, StateFailed, err)
	}
	j.prune(ctx)
	return j.end(ctx, StateSucceeded, nil)
}

// backwards says why deploying digest for a trigger would move the service
// back to a version this host already ran and replaced, or "" when it
// would not. Only webhooks and reconcile are held back: an authenticated
// manual deploy or rollback may go back on purpose.
func (p *Pipeline) backwards(ctx context.Context, service string, t Trigger, digest string) (string, error) {
	if t.Kind != TriggerWebhook && t.Kind != TriggerReconcile {
		return "", nil
	}
	replaced, err := p.store.DigestReplaced(ctx, service, digest)
	if err != nil || !replaced {
		return "", err
	}
	return shortDigest(digest) + " already ran on this host and was replaced; " + string(t.Kind) +
		" triggers never deploy backwards (deploy it manually or roll back to go back)", nil
}

// prune removes the service's images beyond the newest keep_images, never
// the running or the previous one. Failures are logged, not fatal: the
// deployment itself succeeded.
func (j *job) prune(ctx context.Context) {
	if j.spec.KeepImages <= 0 || j.spec.Strategy == StrategyCommand {
		return
	}
	start := time.Now()
	out, err := j.podmanRun(ctx, j.p.stepTimeout, "images", "--format", "json", "--filter", "reference="+j.spec.Image)
	if err != nil {
		j.log.Warn().Err(err).Msg("prune: list images")
		return
	}
	var images []struct {
		ID      string `json:"Id"`
		Digest  string `json:"Digest"`
		Created int64  `json:"Created"`
	}
	if err := json.Unmarshal([]byte(out), &images); err != nil {
		j.log.Warn().Err(err).Msg("prune: decode podman images")
		return
	}
	sort.Slice(images, func(a, b int) bool { return images[a].Created > images[b].Created })
	var removed []string
	for i, img := range images {
		if i < j.spec.KeepImages || img.Digest == j.status.Digest || img.Digest == j.status.PreviousDigest {
			continue
		}
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rmi", img.ID); err != nil {
			j.log.Warn().Err(err).Str("image", img.ID).Msg("prune: remove image")
			continue
		}
		removed = append(removed, shortDigest(img.Digest))
	}
	if len(removed) > 0 {
		j.step(ctx, "prune", start, nil, fmt.Sprintf("removed %d old image(s): %s; kept the newest %d",
			len(removed), strings.Join(removed, ", "), j.spec.KeepImages))
	}
}

// Resolve looks up the digest of service's tag at the registry with the
// credential chain, as a deployment's resolve step does, but records no
// step. Reconcile uses it.
func (p *Pipeline) Resolve(ctx context.Context, service, tag string) (string, error) {
	spec, ok := p.services[service]
	if !ok {
		return "", fmt.Errorf("service %q is not configured", service)
	}
	j := &job{p: p, spec: spec, quiet: true, log: p.log,
		d:   Deployment{Service: service, Tag: tag},
		req: CredentialRequest{Host: spec.Host, Image: spec.Image, Repository: spec.Repository}}
	return j.resolve(ctx)
}

// resolve finds the digest to deploy, trying credentials in the chain's
// order until the registry accepts one.
func (j *job) resolve(ctx context.Context) (string, error) {
	ref := j.spec.Image + ":" + j.d.Tag
	if j.d.Digest != "" {
		ref = j.spec.Image + "@" + j.d.Digest
	}
	return withCredentials(ctx, j, "resolve", func(ctx context.Context) (string, error) {
		d, err := j.p.resolver.Digest(ctx, ref, j.cred, j.spec.Insecure)
		if err != nil {
			return "", err
		}
		return d, nil
	}, func(d string) string { return ref + " is " + d + " (credential " + j.cred.Source + ")" })
}

// fetch logs podman in and pulls the image by digest, moving to the next
// credential source when the registry refuses one.
func (j *job) fetch(ctx context.Context) error {
	ref := j.spec.Image + "@" + j.d.Digest
	loggedIn := ""
	_, err := withCredentials(ctx, j, "pull", func(ctx context.Context) (string, error) {
		if loggedIn != j.cred.Source {
			if err := j.login(ctx); err != nil {
				return "", err
			}
			loggedIn = j.cred.Source
		}
		args := []string{"pull", "--quiet", "--authfile", j.p.podman.AuthFile}
		if j.spec.Insecure {
			args = append(args, "--tls-verify=false")
		}
		_, err := j.podmanRun(ctx, j.p.pullTimeout, append(args, ref)...)
		return "", err
	}, func(string) string { return "pulled " + ref })
	return err
}

// login writes the credential into the auth file through podman login,
// the password on stdin; an anonymous credential logs out instead so that
// a stale entry cannot be used.
func (j *job) login(ctx context.Context) error {
	start := time.Now()
	if err := prepareAuthFile(j.p.podman.AuthFile); err != nil {
		j.step(ctx, "login", start, err, "")
		return fail(ClassConfig, "check that deployd can write its data directory", err)
	}
	if j.cred.Anonymous() {
		_, err := j.podmanRun(ctx, j.p.stepTimeout, "logout", "--authfile", j.p.podman.AuthFile, j.spec.Host)
		if err != nil && !strings.Contains(err.Error(), "not logged in") {
			j.step(ctx, "login", start, err, "")
			return classifyRegistryError(j.spec.Image, j.cred.Source, err)
		}
		j.step(ctx, "login", start, nil, "anonymous access to "+j.spec.Host)
		return nil
	}
	args := []string{"login", "--authfile", j.p.podman.AuthFile, "--username", j.cred.Username, "--password-stdin"}
	if j.spec.Insecure {
		args = append(args, "--tls-verify=false")
	}
	_, err := j.podmanRunStdin(ctx, j.p.stepTimeout, strings.NewReader(j.cred.Password.Reveal()), append(args, j.spec.Host)...)
	if err != nil {
		f := classifyRegistryError(j.spec.Image, j.cred.Source, err)
		j.step(ctx, "login", start, f, "")
		return f
	}
	j.step(ctx, "login", start, nil, "logged in to "+j.spec.Host+" as "+j.cred.Username+" ("+j.cred.Source+")")
	return nil
}

// prepareAuthFile creates the registry auth file (mode 0600) when it is
// missing, as podman refuses a missing one, and tightens a looser mode.
func prepareAuthFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		_, werr := f.WriteString(`{"auths":{}}` + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("create auth file: %w", werr)
		}
		return nil
	case !errors.Is(err, os.ErrExist):
		return fmt.Errorf("create auth file: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("auth file mode: %w", err)
	}
	return nil
}

// withCredentials runs op with the chain's credential. When the registry
// refuses it (class auth), a GitHub App token is minted afresh and tried
// once more, then the source is put aside and op runs again with the next
// one. Transient failures (network, 5xx, 429) are retried with backoff
// within the pipeline's retry budget. Every attempt is a step in the log.
func withCredentials(ctx context.Context, j *job, name string, op func(context.Context) (string, error), okMsg func(string) string) (string, error) {
	const maxAttempts = 16 // a bound on top of the per-cause ones below
	var last error
	refreshed := map[string]bool{}
	retries := 0
	for range maxAttempts {
		if j.cred.Source == "" {
			c, err := j.p.creds.Credential(ctx, j.req)
			if err != nil {
				hint := "no credential source is left for " + j.spec.Image + "; see the credential health on the status page"
				if last != nil {
					hint = authHint(j.spec.Image, lastSource(last))
				}
				f := fail(ClassAuth, hint, err)
				j.step(ctx, "credentials", time.Now(), f, "")
				return "", f
			}
			j.cred = c
		}
		start := time.Now()
		out, err := op(ctx)
		if err == nil {
			j.p.creds.Accepted(j.req, j.cred.Source)
			j.step(ctx, name, start, nil, okMsg(out))
			return out, nil
		}
		f := classifyRegistryError(j.spec.Image, j.cred.Source, err)
		switch {
		case ctx.Err() != nil:
			j.step(ctx, name, start, f, "")
			return "", f
		case f.Class == ClassAuth && j.cred.Source == sourceGitHubApp && !refreshed[j.cred.Source]:
			refreshed[j.cred.Source] = true
			j.step(ctx, name, start, f, "registry refused the GitHub App token; retrying once with a freshly minted one")
			j.p.creds.Invalidate(j.req)
			j.cred = Credential{}
		case f.Class == ClassAuth:
			j.step(ctx, name, start, f, "registry refused credential "+j.cred.Source+"; putting it aside and trying the next source")
			j.p.creds.Denied(j.req, j.cred.Source, f.Error())
			j.passedOver = append(j.passedOver, j.cred.Source+": "+f.Error())
			last = &sourceError{source: j.cred.Source, err: f}
			j.cred = Credential{}
		case f.Transient() && retries < j.p.retry.Attempts-1:
			retries++
			wait := j.p.retry.backoff(retries)
			j.step(ctx, name, start, f, fmt.Sprintf("transient failure; retry %d of %d in %s", retries, j.p.retry.Attempts-1, wait.Round(time.Millisecond)))
			select {
			case <-ctx.Done():
				return "", fail(ClassNetwork, f.Hint, ctx.Err())
			case <-time.After(wait):
			}
		default:
			j.step(ctx, name, start, f, "")
			return "", f
		}
	}
	if last == nil {
		last = fail(ClassNetwork, "the registry kept failing; deployd will catch up on the next reconcile", errors.New("too many attempts"))
	}
	return "", last
}

// sourceGitHubApp is the credential source whose tokens can be minted afresh.
const sourceGitHubApp = "github_app"

// Retry is the budget for transient failures of one step of a deployment.
type Retry struct {
	// Attempts is how many times a step runs at most (default 4).
	Attempts int
	// Base is the first wait (default 1s); each retry doubles it, up to Max
	// (default 30s), plus up to half again of random jitter.
	Base, Max time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 4
	}
	if r.Base <= 0 {
		r.Base = time.Second
	}
	if r.Max <= 0 {
		r.Max = 30 * time.Second
	}
	return r
}

// backoff returns the wait before retry n (1-based).
func (r Retry) backoff(n int) time.Duration {
	d := r.Base << (n - 1)
	if d > r.Max || d <= 0 {
		d = r.Max
	}
	return d + time.Duration(rand.Int64N(int64(d)/2+1))
}

// sourceError remembers which credential source a failure belongs to.
type sourceError struct {
	source string
	err    *Failure
}

func (e *sourceError) Error() string { return e.source + ": " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func lastSource(err error) string {
	var se *sourceError
	if errors.As(err, &se) {
		return se.source
	}
	return ""
}

// switchTo puts digest in place by the service's strategy and returns what
// ran before, for a rollback.
func (j *job) switchTo(ctx context.Context, digest string) (previous string, err error) {
	start := time.Now()
	previous = j.status.Digest
	switch j.spec.Strategy {
	case StrategyContainer:
		err = j.switchContainer(ctx, digest)
	case StrategySystemd:
		err = j.switchSystemd(ctx, digest)
	case StrategyCommand:
		err = j.switchCommand(ctx, digest)
	default:
		err = fail(ClassConfig, "use strategy container, systemd or command", fmt.Errorf("unknown strategy %q", j.spec.Strategy))
	}
	j.step(ctx, "switch", start, err, j.spec.Strategy+": now "+shortDigest(digest))
	return previous, err
}

func (j *job) previousName() string { return j.spec.Container.Name + "-previous" }

func (j *job) switchContainer(ctx context.Context, digest string) error {
	name := j.spec.Container.Name
	exists, err := j.containerExists(ctx, name)
	if err != nil {
		return fail(ClassPodman, "check that podman works for deployd's user", err)
	}
	if exists {
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rm", "--force", "--ignore", j.previousName()); err != nil {
			return fail(ClassPodman, "remove "+j.previousName()+" by hand", err)
		}
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "stop", "--time", "10", name); err != nil {
			return fail(ClassPodman, "stop "+name+" by hand and redeploy", err)
		}
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rename", name, j.previousName()); err != nil {
			return fail(ClassPodman, "rename "+name+" by hand and redeploy", err)
		}
	}
	if err := j.runContainer(ctx, digest); err != nil {
		if exists {
			j.restorePrevious(ctx)
		}
		return fail(ClassPodman, "check the service's container args; the previous container was restored", err)
	}
	return nil
}

func (j *job) runContainer(ctx context.Context, digest string) error {
	args := []string{"run", "--detach", "--name", j.spec.Container.Name,
		"--label", "io.deployd.service=" + j.spec.Name, "--label", "io.deployd.digest=" + digest}
	args = append(args, j.p.podman.RunArgs...)
	args = append(args, j.spec.Container.Args...)
	args = append(args, j.spec.Image+"@"+digest)
	args = append(args, j.spec.Container.Command...)
	_, err := j.podmanRun(ctx, j.p.stepTimeout, args...)
	return err
}

// restorePrevious puts NAME-previous back in place of a failed NAME.
func (j *job) restorePrevious(ctx context.Context) error {
	name := j.spec.Container.Name
	if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rm", "--force", "--ignore", name); err != nil {
		return err
	}
	if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rename", j.previousName(), name); err != nil {
		return err
	}
	_, err := j.podmanRun(ctx, j.p.stepTimeout, "start", name)
	return err
}

func (j *job) containerExists(ctx context.Context, name string) (bool, error) {
	_, err := j.podmanRun(ctx, j.p.stepTimeout, "container", "exists", name)
	var ce *CommandError
	if errors.As(err, &ce) && ce.ExitCode == 1 {
		return false, nil
	}
	return err == nil, err
}

func (j *job) switchSystemd(ctx context.Context, digest string) error {
	// Quadlet units name the image by tag: point the tag at the pulled digest.
	if j.d.Tag != "" {
		if _, err := j.podmanRun(ctx, j.p.stepTimeout, "tag", j.spec.Image+"@"+digest, j.spec.Image+":"+j.d.Tag); err != nil {
			return fail(ClassPodman, "see podman's message", err)
		}
	}
	argv := []string{"systemctl"}
	if j.spec.Systemd.User {
		argv = append(argv, "--user")
	}
	argv = append(argv, "restart", j.spec.Systemd.Unit)
	if _, err := j.p.runner.Run(ctx, j.p.stepTimeout, nil, nil, argv...); err != nil {
		return fail(ClassConfig, "check the unit with systemctl status "+j.spec.Systemd.Unit, err)
	}
	return nil
}

func (j *job) switchCommand(ctx context.Context, digest string) error {
	env := []string{
		"DEPLOY_SERVICE=" + j.spec.Name,
		"DEPLOY_IMAGE=" + j.spec.Image,
		"DEPLOY_TAG=" + j.d.Tag,
		"DEPLOY_DIGEST=" + digest,
		fmt.Sprintf("DEPLOY_ID=%d", j.d.ID),
	}
	if _, err := j.p.runner.Run(ctx, j.p.stepTimeout, nil, env, j.spec.Command...); err != nil {
		return fail(ClassConfig, "the service's deploy command failed; run it by hand with the DEPLOY_* variables to see why", err)
	}
	return nil
}

// verify polls the health URL until it answers 2xx or the timeout passes,
// and fails early when the container stops.
func (j *job) verify(ctx context.Context) error {
	start := time.Now()
	h := j.spec.Health
	timeout, interval := h.Timeout, h.Interval
	if timeout <= 0 {
		timeout = time.Minute
	}
	if interval <= 0 {
		interval = 2 * time.Second
	}
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if j.spec.Strategy == StrategyContainer {
			if state, err := j.containerState(ctx); err == nil && state != "running" {
				err := fail(ClassHealth, "the new container stopped; see podman logs "+j.spec.Container.Name,
					fmt.Errorf("container %s is %s%s", j.spec.Container.Name, state, j.logsTail(ctx)))
				j.step(ctx, "verify", start, err, "")
				return err
			}
		}
		if h.URL == "" {
			j.step(ctx, "verify", start, nil, "no health URL configured; the service is running")
			return nil
		}
		ok, msg := j.probe(ctx, h.URL, interval)
		if ok {
			j.step(ctx, "verify", start, nil, h.URL+" answered "+msg)
			return nil
		}
		last = msg
		if time.Now().Add(interval).After(deadline) {
			err := fail(ClassHealth, "the new version did not become healthy within "+timeout.String()+"; check its logs and health endpoint",
				fmt.Errorf("health check %s failed: %s", h.URL, last))
			j.step(ctx, "verify", start, err, "")
			return err
		}
		select {
		case <-ctx.Done():
			j.step(ctx, "verify", start, ctx.Err(), "")
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

func (j *job) probe(ctx context.Context, url string, timeout time.Duration) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := j.p.http.Do(req)
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300, resp.Status
}

func (j *job) containerState(ctx context.Context) (string, error) {
	out, err := j.podmanRun(ctx, j.p.stepTimeout, "container", "inspect", "--format", "{{.State.Status}}", j.spec.Container.Name)
	return strings.TrimSpace(out), err
}

func (j *job) logsTail(ctx context.Context) string {
	out, err := j.podmanRun(ctx, j.p.stepTimeout, "logs", "--tail", "5", j.spec.Container.Name)
	if err != nil || strings.TrimSpace(out) == "" {
		return ""
	}
	return "; last output: " + strings.TrimSpace(out)
}

// recover handles a failed verify: roll back when the service allows it.
func (j *job) recover(ctx context.Context, previous string, cause error) Deployment {
	if !j.spec.Rollback || previous == "" {
		return j.end(ctx, StateFailed, cause)
	}
	start := time.Now()
	var err error
	switch j.spec.Strategy {
	case StrategyContainer:
		err = j.restorePrevious(ctx)
	case StrategySystemd:
		err = j.switchSystemd(ctx, previous)
	case StrategyCommand:
		err = j.switchCommand(ctx, previous)
	}
	if err == nil {
		err = j.verify(ctx)
	}
	if err != nil {
		j.step(ctx, "rollback", start, err, "")
		j.status.Degraded = true
		j.status.UpdatedAt = time.Now().UTC()
		if serr := j.p.store.SetServiceStatus(ctx, j.status); serr != nil {
			j.log.Error().Err(serr).Msg("record degraded service")
		}
		f := asFailure(cause)
		f.Hint = "rollback failed too (" + err.Error() + "): the service may be down; " + f.Hint
		return j.end(ctx, StateFailed, f)
	}
	j.step(ctx, "rollback", start, nil, "restored "+shortDigest(previous))
	return j.end(ctx, StateRolledBack, cause)
}

// cleanupPrevious removes the replaced container once the new one is healthy.
func (j *job) cleanupPrevious(ctx context.Context) {
	if j.spec.Strategy != StrategyContainer {
		return
	}
	if _, err := j.podmanRun(ctx, j.p.stepTimeout, "rm", "--force", "--ignore", j.previousName()); err != nil {
		j.log.Warn().Err(err).Msg("remove previous container")
	}
}

func (j *job) recordRunning(ctx context.Context, digest string) error {
	st := j.status
	if st.Digest != digest {
		st.PreviousDigest = st.Digest
	}
	st.Name = j.spec.Name
	st.Digest = digest
	st.Tag = j.d.Tag
	st.Degraded = false
	st.Credential = j.cred.Source
	st.CredentialNote = strings.Join(j.passedOver, "; ")
	st.LastDeploymentID = j.d.ID
	if j.d.Trigger.RunNumber > st.LastRunNumber {
		st.LastRunNumber = j.d.Trigger.RunNumber
	}
	if j.spec.Strategy == StrategyContainer {
		st.Container = j.spec.Container.Name
	}
	st.UpdatedAt = time.Now().UTC()
	if err := j.p.store.SetServiceStatus(ctx, st); err != nil {
		return fail(ClassConfig, "check deployd's data directory", fmt.Errorf("record running version: %w", err))
	}
	j.status = st
	return nil
}

// step appends a step to the deployment's log and logs it.
func (j *job) step(ctx context.Context, name string, start time.Time, err error, msg string) {
	if j.quiet {
		j.log.Debug().Str(KeyService, j.spec.Name).Str(KeyStep, name).AnErr("error", err).Msg(j.redact(msg))
		return
	}
	s := Step{Name: name, Started: start.UTC(), Duration: time.Since(start), Outcome: "ok", Message: msg}
	if err != nil {
		s.Outcome = "failed"
		if msg == "" {
			s.Message = err.Error()
		} else {
			s.Message = msg + ": " + err.Error()
		}
	}
	s.Message = j.redact(s.Message)
	j.d.Steps = append(j.d.Steps, s)
	if aerr := j.p.store.AppendStep(context.WithoutCancel(ctx), j.d.ID, s); aerr != nil {
		j.log.Error().Err(aerr).Msg("record step")
	}
	ev := j.log.Info()
	if err != nil {
		ev = j.log.Warn()
	}
	ev.Str(KeyStep, name).Str("outcome", s.Outcome).Dur("duration", s.Duration).Msg(s.Message)
	j.p.notify(j.d)
}

// redact removes the credential's secret from text, in case a tool echoed it.
func (j *job) redact(s string) string {
	if pw := j.cred.Password.Reveal(); len(pw) >= 4 {
		s = strings.ReplaceAll(s, pw, "[redacted]")
	}
	return s
}

func (j *job) end(ctx context.Context, state State, err error) Deployment {
	if ctx.Err() != nil && state == StateFailed {
		state = StateInterrupted
	}
	return finish(j.d, state, err)
}

// finish sets d's end state and failure fields.
func finish(d Deployment, state State, err error) Deployment {
	d.State = state
	now := time.Now().UTC()
	d.FinishedAt = &now
	if err != nil {
		f := asFailure(err)
		d.ErrorClass, d.Error, d.Hint = f.Class, f.Error(), f.Hint
	}
	return d
}

func asFailure(err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	return fail(ClassPodman, "see the step log", err)
}

func (j *job) podmanRun(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	return j.podmanRunStdin(ctx, timeout, nil, args...)
}

func (j *job) podmanRunStdin(ctx context.Context, timeout time.Duration, stdin *strings.Reader, args ...string) (string, error) {
	argv := append([]string{j.p.podman.Command}, j.p.podman.GlobalArgs...)
	argv = append(argv, args...)
	if stdin == nil {
		return j.p.runner.Run(ctx, timeout, nil, nil, argv...)
	}
	return j.p.runner.Run(ctx, timeout, stdin, nil, argv...)
}

// shortDigest returns the first 12 hex digits of a sha256 digest.
func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
