package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
)

// AgentConfig holds an Agent's dependencies.
type AgentConfig struct {
	// Host is this agent's fleet.host name.
	Host string
	// Services are the services as this host's configuration has them:
	// an intent for a service or image not here is refused.
	Services map[string]deployer.Service
	// Store is the agent's own store, where each intent becomes a
	// deployment that the executor carries out.
	Store     deployer.Store
	JetStream jetstream.JetStream
	// Key is the agent's curve key pair; HubKey the hub's curve public key.
	Key    nkeys.KeyPair
	HubKey string
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger zerolog.Logger
}

// Agent runs on a fleet host: it takes the intents meant for its host,
// carries each out with the local executor (deployer/podman's Pipeline)
// as a deployment in its own store, with the pull credential the hub
// sealed for it, and publishes the steps as they go and the result. Its
// Credentials and Notify are what the executor is built with. It holds
// no App key and mints nothing. Safe for concurrent use.
type Agent struct {
	cfg   AgentConfig
	creds *intentCredentials

	mu      sync.Mutex
	current *Intent // the intent being carried out
	sent    int     // steps of the current deployment already published
}

// NewAgent checks the dependencies and returns an Agent.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	switch {
	case ValidName(cfg.Host) != nil:
		return nil, fmt.Errorf("new agent: host: %w", ValidName(cfg.Host))
	case cfg.Store == nil:
		return nil, errors.New("new agent: no store")
	case cfg.JetStream == nil:
		return nil, errors.New("new agent: no JetStream")
	case cfg.Key == nil || cfg.HubKey == "":
		return nil, errors.New("new agent: no curve keys")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Agent{cfg: cfg, creds: &intentCredentials{}}, nil
}

// Credentials returns the credential source the agent's executor must
// use: the credential sealed in the intent being carried out, nothing
// else.
func (a *Agent) Credentials() deployer.Credentials { return a.creds }

// Notify is the executor's step hook: it publishes the deployment's new
// steps to the hub.
func (a *Agent) Notify(d deployer.Deployment) {
	a.mu.Lock()
	in, from := a.current, a.sent
	if in != nil && len(d.Steps) > from {
		a.sent = len(d.Steps)
	}
	a.mu.Unlock()
	if in == nil {
		return
	}
	for i := from; i < len(d.Steps); i++ {
		step := d.Steps[i]
		a.report(context.Background(), Report{Kind: ReportStep, Host: in.Host, Service: in.Service, Seq: in.Seq, Step: &step})
	}
}

// Run takes intents and carries them out with exec, one at a time, until
// ctx ends; it returns ctx's error or what stopped it reading.
func (a *Agent) Run(ctx context.Context, exec deployer.Executor) error {
	intents, err := OpenIntents(ctx, a.cfg.JetStream, a.cfg.Host)
	if err != nil {
		return err
	}
	intents.OnSkip = func(subject, reason string) {
		a.cfg.Logger.Warn().Str("subject", subject).Str("reason", reason).Msg("intent dropped")
	}
	for {
		p, err := intents.Next(ctx)
		if err != nil {
			return err
		}
		res := a.carryOut(ctx, exec, p)
		if ctx.Err() != nil {
			// Unacked: the intent is handed out again when the agent
			// comes back, unless a newer one replaced it.
			return ctx.Err()
		}
		a.report(ctx, res)
		if err := p.Done(ctx); err != nil {
			return err
		}
	}
}

// carryOut runs one intent and returns its result report.
func (a *Agent) carryOut(ctx context.Context, exec deployer.Executor, p *Pending) Report {
	in := p.Intent
	res := Report{Kind: ReportResult, Host: in.Host, Service: in.Service, Seq: in.Seq, Digest: in.Digest}
	refuse := func(class, hint string, err error) Report {
		res.State, res.ErrorClass, res.Error, res.Hint = deployer.StateFailed, class, err.Error(), hint
		return res
	}
	spec, ok := a.cfg.Services[in.Service]
	switch {
	case !ok:
		return refuse(deployer.ClassConfig, "add the service to this host's configuration",
			fmt.Errorf("service %s is not configured on host %s", in.Service, in.Host))
	case spec.Image != in.Image:
		return refuse(deployer.ClassConfig, "make the service's image the same on the hub and this host",
			fmt.Errorf("intent names image %s; host %s runs %s from %s", in.Image, in.Host, in.Service, spec.Image))
	}
	cred, err := OpenCredential(a.cfg.Key, a.cfg.HubKey, in, a.cfg.Now())
	if err != nil {
		return refuse(deployer.ClassAuth, "check that the hub has this host's current key (deployd fleet add-host)", err)
	}
	a.creds.set(spec.Image, cred)
	defer a.creds.set("", deployer.Credential{})

	d, err := a.cfg.Store.Enqueue(ctx, deployer.Request{Service: in.Service, Tag: in.Tag, Digest: in.Digest,
		Trigger: in.Trigger, Force: in.Force, DryRun: in.DryRun,
		Note: fmt.Sprintf("intent %d of rollout %d from the hub", in.Seq, in.RolloutID)})
	if err == nil {
		var ok bool
		d, ok, err = a.cfg.Store.ClaimNext(ctx, in.Service)
		if err == nil && !ok {
			err = errors.New("the queued deployment was gone")
		}
	}
	if err != nil {
		return refuse(deployer.ClassConfig, "check deployd's data directory on "+in.Host, fmt.Errorf("queue the intent: %w", err))
	}
	a.mu.Lock()
	a.current, a.sent = &in, 0
	a.mu.Unlock()
	a.Notify(d) // the steps so far: the request's note
	stop := a.keepAlive(p)
	d = exec.Execute(ctx, d)
	stop()
	a.mu.Lock()
	a.current = nil
	a.mu.Unlock()
	if !d.State.Final() {
		d.State = deployer.StateInterrupted
	}
	if err := a.cfg.Store.Finish(context.WithoutCancel(ctx), d); err != nil {
		a.cfg.Logger.Error().Err(err).Int64("deployment_id", d.ID).Msg("record the end of a deployment")
	}
	res.State, res.ErrorClass, res.Error, res.Hint = d.State, d.ErrorClass, d.Error, d.Hint
	if d.Digest != "" {
		res.Digest = d.Digest
	}
	if st, err := a.cfg.Store.ServiceStatus(context.WithoutCancel(ctx), in.Service); err == nil {
		res.Running = st.Digest
	}
	return res
}

// keepAlive tells JetStream every while that the agent still works on p,
// until the returned stop is called.
func (a *Agent) keepAlive(p *Pending) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(IntentAckWait / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := p.Working(); err != nil {
					a.cfg.Logger.Warn().Err(err).Msg("intent keep-alive")
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// report publishes r on the agent's report subject.
func (a *Agent) report(ctx context.Context, r Report) {
	data, err := json.Marshal(r)
	if err == nil {
		_, err = a.cfg.JetStream.Publish(ctx, ReportSubject(r.Host, r.Service), data)
	}
	if err != nil {
		a.cfg.Logger.Error().Err(err).Str("kind", string(r.Kind)).Int64("intent", r.Seq).Msg("publish report")
	}
}

// intentCredentials is the agent's deployer.Credentials: the credential
// sealed in the intent being carried out, for its image only.
type intentCredentials struct {
	mu    sync.Mutex
	image string
	cred  deployer.Credential
}

func (c *intentCredentials) set(image string, cred deployer.Credential) {
	c.mu.Lock()
	c.image, c.cred = image, cred
	c.mu.Unlock()
}

// Credential returns the intent's credential for its image.
func (c *intentCredentials) Credential(_ context.Context, req deployer.CredentialRequest) (deployer.Credential, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.Image != c.image {
		return deployer.Credential{}, fmt.Errorf("no credential from the hub for %s", req.Image)
	}
	for _, refused := range req.Refused {
		if refused == c.cred.Source {
			return deployer.Credential{}, fmt.Errorf("the registry refused the hub's %s credential for %s", refused, req.Image)
		}
	}
	return c.cred, nil
}

// Denied does nothing: the result tells the hub, whose chain decides.
func (c *intentCredentials) Denied(deployer.CredentialRequest, string, string) {}

// Accepted does nothing.
func (c *intentCredentials) Accepted(deployer.CredentialRequest, string) {}

// Invalidate does nothing: only the hub mints.
func (c *intentCredentials) Invalidate(deployer.CredentialRequest) {}
