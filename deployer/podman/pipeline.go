// Package podman carries deployments out on the host deployd runs on: it
// is the [deployer.Executor] for this host. It owns the pipeline's steps
// (resolve the tag at the registry with containers/image, podman login
// and pull, switch by strategy, verify, roll back, prune), the command
// runner every external command goes through, and the reading of registry
// and podman errors as deployer.Failure classes with hints.
//
// Of deployd's packages it imports only deployer. Only the command
// (cmd/deployd) wires it up; everything else speaks deployer's vocabulary.
package podman

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
)

// Config says how the pipeline runs podman.
type Config struct {
	Command    string   // "podman"
	GlobalArgs []string // before every subcommand, e.g. --root/--runroot or --remote
	RunArgs    []string // after "run" and before the service's args (e.g. --runtime runc in tests)
	AuthFile   string   // registry auth file, written mode 0600 by podman login
}

// PipelineConfig holds a Pipeline's dependencies.
type PipelineConfig struct {
	Services    map[string]deployer.Service
	Store       deployer.Store
	Credentials deployer.Credentials
	Resolver    Resolver
	Runner      *CommandRunner
	Podman      Config
	// HTTPClient runs health checks; nil means a client without proxy settings.
	HTTPClient *http.Client
	Logger     zerolog.Logger
	// Notify, if set, is called after every step.
	Notify func(deployer.Deployment)
	// PullTimeout bounds a pull (default 10m); StepTimeout any other command (default 2m).
	PullTimeout time.Duration
	StepTimeout time.Duration
	// Retry is the budget for transient registry failures.
	Retry Retry
	// Images verifies the attestations of a digest before it is pulled,
	// for the services whose verify.attestations is warn or required;
	// required when any service verifies.
	Images deployer.ImageVerifier
}

// Pipeline carries out deployments step by step: resolve, verify-image
// (for services that verify attestations), login, pull, switch, verify,
// and roll back when verify fails. It is a
// deployer.Executor and is safe for concurrent use by different services'
// workers.
type Pipeline struct {
	services    map[string]deployer.Service
	store       deployer.Store
	guard       deployer.Guard
	creds       deployer.Credentials
	resolver    Resolver
	runner      *CommandRunner
	podman      Config
	http        *http.Client
	log         zerolog.Logger
	notify      func(deployer.Deployment)
	pullTimeout time.Duration
	stepTimeout time.Duration
	retry       Retry
	images      deployer.ImageVerifier

	// loginMu serializes writes to the auth file; logins remembers, per
	// registry host, which credential it holds (a hash, not the secret).
	loginMu sync.Mutex
	logins  map[string][sha256.Size]byte
	// hostMu guards hosts, the per-host locks held across login and pull.
	hostMu sync.Mutex
	hosts  map[string]*sync.Mutex
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
	case cfg.Images == nil && verifying(cfg.Services):
		return nil, errors.New("new pipeline: services verify their images' attestations but no image verifier was given")
	}
	p := &Pipeline{
		services:    cfg.Services,
		store:       cfg.Store,
		guard:       deployer.NewGuard(cfg.Store),
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
		images:      cfg.Images,
		logins:      make(map[string][sha256.Size]byte),
		hosts:       make(map[string]*sync.Mutex),
	}
	if p.http == nil {
		p.http = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	}
	if p.notify == nil {
		p.notify = func(deployer.Deployment) {}
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
	d      deployer.Deployment
	spec   deployer.Service
	status deployer.ServiceStatus
	req    deployer.CredentialRequest
	cred   deployer.Credential
	// passedOver says which credential sources the registry refused, and why.
	passedOver []string
	// loginReused is set when the pull relies on a login written earlier.
	loginReused bool
	// retries counts transient-failure retries; the budget is per deployment.
	retries int
	// quiet jobs (reconcile's look-ups) keep no step log.
	quiet bool
	log   zerolog.Logger
}

// Execute runs the deployment to its end state. See deployer.Executor.
func (p *Pipeline) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	log := zerolog.Ctx(ctx)
	if log.GetLevel() == zerolog.Disabled {
		log = &p.log
	}
	spec, ok := p.services[d.Service]
	if !ok {
		return finish(d, deployer.StateFailed, fail(deployer.ClassConfig, "add the service to the configuration or remove its queued deployments",
			fmt.Errorf("service %q is not configured", d.Service)))
	}
	j := &job{p: p, d: d, spec: spec, log: *log,
		req: deployer.CredentialRequest{Host: spec.Host, Image: spec.Image, Repository: spec.Repository, InstallationID: d.Trigger.InstallationID,
			// An operator's deploy or rollback is a deliberate retry: every
			// source gets its chance, put aside or not.
			IgnorePutAside: d.Trigger.Kind == deployer.TriggerManual || d.Trigger.Kind == deployer.TriggerRollback}}
	st, err := p.store.ServiceStatus(ctx, spec.Name)
	if err != nil {
		return finish(d, deployer.StateFailed, fail(deployer.ClassConfig, "check deployd's data directory", fmt.Errorf("read service status: %w", err)))
	}
	j.status = st
	return j.run(ctx)
}

func (j *job) run(ctx context.Context) deployer.Deployment {
	digest, err := j.resolve(ctx)
	if err != nil {
		return j.end(ctx, deployer.StateFailed, err)
	}
	j.d.Digest = digest
	if digest == j.status.Digest && !j.d.Force {
		j.step(ctx, "resolve", time.Now(), nil, "already running "+deployer.ShortDigest(digest)+"; nothing to do")
		return j.end(ctx, deployer.StateUnchanged, nil)
	}
	if reason, err := j.p.guard.Digest(ctx, j.d.Service, j.d.Trigger, digest); err != nil {
		return j.end(ctx, deployer.StateFailed, fail(deployer.ClassConfig, "check deployd's data directory", err))
	} else if reason != "" {
		j.step(ctx, deployer.StepGuard, time.Now(), nil, reason)
		return j.end(ctx, deployer.StateUnchanged, nil)
	}
	if err := j.verifyImage(ctx); err != nil {
		return j.end(ctx, deployer.StateFailed, err)
	}
	if j.d.DryRun || j.spec.DryRun {
		j.d.DryRun = true // a service-wide dry run is recorded as one
		j.step(ctx, "plan", time.Now(), nil, fmt.Sprintf("dry run: would pull %s@%s and switch %s (%s)",
			j.spec.Image, digest, j.spec.Name, j.spec.Strategy))
		return j.end(ctx, deployer.StateSucceeded, nil)
	}
	if err := j.fetch(ctx); err != nil {
		return j.end(ctx, deployer.StateFailed, err)
	}
	previous, err := j.switchTo(ctx, digest)
	if err != nil {
		return j.end(ctx, deployer.StateFailed, err)
	}
	if verr := j.verify(ctx); verr != nil {
		return j.recover(ctx, previous, verr)
	}
	j.cleanupPrevious(ctx)
	if err := j.recordRunning(ctx, digest); err != nil {
		return j.end(ctx, deployer.StateFailed, err)
	}
	j.prune(ctx)
	return j.end(ctx, deployer.StateSucceeded, nil)
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
		d:   deployer.Deployment{Service: service, Tag: tag},
		req: deployer.CredentialRequest{Host: spec.Host, Image: spec.Image, Repository: spec.Repository}}
	return j.resolve(ctx)
}

// resolve finds the digest to deploy, trying credentials in the chain's
// order until the registry accepts one: the tag's digest at the registry,
// or the requested digest itself. A requested digest is only looked up to
// check that the registry has it; whatever digest the registry answers for
// it, the requested one is deployed (and the pull by digest verifies it).
func (j *job) resolve(ctx context.Context) (string, error) {
	ref := j.spec.Image + ":" + j.d.Tag
	want := j.d.Digest
	if want != "" {
		ref = j.spec.Image + "@" + want
	}
	var answered string
	return withCredentials(ctx, j, "resolve", nil, func(ctx context.Context) (string, error) {
		// containers/image's client has no response timeout of its own.
		ctx, cancel := context.WithTimeout(ctx, j.p.stepTimeout)
		defer cancel()
		d, err := j.p.resolver.Digest(ctx, ref, j.cred, j.spec.Insecure)
		if err != nil {
			return "", err
		}
		if want != "" {
			answered = d
			return want, nil
		}
		return d, nil
	}, func(d string) string {
		switch {
		case want == "":
			return ref + " is " + d + " (credential " + j.cred.Source + ")"
		case answered != want:
			return "the registry answered digest " + answered + " for " + ref +
				"; deploying the requested digest, which the pull verifies (credential " + j.cred.Source + ")"
		}
		return ref + " is at the registry (credential " + j.cred.Source + ")"
	})
}

// fetch logs podman in and pulls the image by digest, moving to the next
// credential source when the registry refuses one.
func (j *job) fetch(ctx context.Context) error {
	// The auth file holds one login per registry host, and services on the
	// same host may need different tokens (App tokens are scoped to one
	// repository): a service's login and its pull must not interleave with
	// another's.
	unlock := j.p.lockHost(j.spec.Host)
	defer unlock()
	ref := j.spec.Image + "@" + j.d.Digest
	login := func(ctx context.Context) (string, error) { return "", j.ensureLogin(ctx) }
	_, err := withCredentials(ctx, j, "pull", login, func(ctx context.Context) (string, error) {
		args := []string{"pull", "--quiet", "--authfile", j.p.podman.AuthFile}
		if j.spec.Insecure {
			args = append(args, "--tls-verify=false")
		}
		_, err := j.podmanRun(ctx, j.p.pullTimeout, append(args, ref)...)
		return "", err
	}, func(string) string { return "pulled " + ref })
	return err
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
	if j.d.Trigger.RunID > st.LastRunID {
		st.LastRunID, st.LastRunNumber = j.d.Trigger.RunID, j.d.Trigger.RunNumber
	}
	if j.spec.Strategy == deployer.StrategyContainer {
		st.Container = j.spec.Container.Name
	}
	st.UpdatedAt = time.Now().UTC()
	if err := j.p.store.SetServiceStatus(ctx, st); err != nil {
		return fail(deployer.ClassConfig, "check deployd's data directory", fmt.Errorf("record running version: %w", err))
	}
	j.status = st
	return nil
}

// step appends a step to the deployment's log and logs it.
func (j *job) step(ctx context.Context, name string, start time.Time, err error, msg string) {
	if j.quiet {
		j.log.Debug().Str(deployer.KeyService, j.spec.Name).Str(deployer.KeyStep, name).AnErr("error", err).Msg(j.redact(msg))
		return
	}
	s := deployer.Step{Name: name, Started: start.UTC(), Duration: time.Since(start), Outcome: "ok", Message: msg}
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
	ev.Str(deployer.KeyStep, name).Str("outcome", s.Outcome).Dur("duration", s.Duration).Msg(s.Message)
	j.p.notify(j.d)
}

// redact removes the credential's secret from text, in case a tool echoed it.
func (j *job) redact(s string) string {
	if pw := j.cred.Password.Reveal(); len(pw) >= 4 {
		s = strings.ReplaceAll(s, pw, "[redacted]")
	}
	return s
}

func (j *job) end(ctx context.Context, state deployer.State, err error) deployer.Deployment {
	if ctx.Err() != nil && state == deployer.StateFailed {
		state = deployer.StateInterrupted
	}
	d := finish(j.d, state, err)
	d.Error, d.Hint = j.redact(d.Error), j.redact(d.Hint)
	return d
}

// finish sets d's end state and failure fields.
func finish(d deployer.Deployment, state deployer.State, err error) deployer.Deployment {
	d.State = state
	now := time.Now().UTC()
	d.FinishedAt = &now
	if err != nil {
		f := asFailure(err)
		d.ErrorClass, d.Error, d.Hint = f.Class, f.Error(), f.Hint
	}
	return d
}

func asFailure(err error) *deployer.Failure {
	var f *deployer.Failure
	if errors.As(err, &f) {
		return f
	}
	return fail(deployer.ClassPodman, "see the step log", err)
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

// lockHost takes the registry host's fetch lock and returns its release.
func (p *Pipeline) lockHost(host string) (unlock func()) {
	p.hostMu.Lock()
	m, ok := p.hosts[host]
	if !ok {
		m = &sync.Mutex{}
		p.hosts[host] = m
	}
	p.hostMu.Unlock()
	m.Lock()
	return m.Unlock
}
