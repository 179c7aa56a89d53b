package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
)

// HubStore is what the hub keeps: the deployer's store, and the rollouts
// with their host deployments (deployer/sqlite's Store).
type HubStore interface {
	deployer.Store
	StartRollout(ctx context.Context, parent deployer.Deployment, policy string) (int64, error)
	StartHostDeployment(ctx context.Context, rolloutID int64, parent deployer.Deployment, host string) (deployer.Deployment, error)
	FinishHostDeployment(ctx context.Context, d deployer.Deployment, running string) error
	HostStatuses(ctx context.Context, service string) ([]deployer.HostStatus, error)
}

// Resolver looks up the digest a tag points at in a registry
// (deployer/podman's RegistryResolver).
type Resolver interface {
	Digest(ctx context.Context, ref string, cred deployer.Credential, insecure bool) (string, error)
}

// HubConfig holds a Hub's dependencies.
type HubConfig struct {
	// Services are the configured services; those with Hosts roll out
	// to the fleet, the others run on Local.
	Services map[string]deployer.Service
	// Local carries out the deployments of services without hosts; nil
	// fails them.
	Local       deployer.Executor
	Store       HubStore
	Credentials deployer.Credentials
	Resolver    Resolver
	JetStream   jetstream.JetStream
	// Key is the hub's curve key pair, which seals pull credentials.
	Key nkeys.KeyPair
	// Agents maps each host to its agent's curve public key.
	Agents map[string]string
	// ResultTimeout bounds the wait for one host's result (default 10m);
	// a host that does not answer in time is marked interrupted, and its
	// intent stays for it.
	ResultTimeout time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger zerolog.Logger
}

// Hub is the deployer.Executor of a hub: for a service with fleet hosts it
// resolves the digest, applies the never-backwards Guard, records a
// rollout, and sends each host an intent with a pull credential sealed for
// that host's agent, all at once or one by one, recording each host's
// steps and result in the host's own deployment as the agent reports
// them. Services without hosts go to the local executor unchanged. Run
// must run for results to arrive. It is safe for concurrent use.
type Hub struct {
	cfg   HubConfig
	guard deployer.Guard

	mu      sync.Mutex
	waiters map[int64]chan Report // host deployment id → its result
}

// NewHub checks the dependencies and returns a Hub.
func NewHub(cfg HubConfig) (*Hub, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("new hub: no store")
	case cfg.Credentials == nil:
		return nil, errors.New("new hub: no credentials")
	case cfg.Resolver == nil:
		return nil, errors.New("new hub: no resolver")
	case cfg.JetStream == nil:
		return nil, errors.New("new hub: no JetStream")
	case cfg.Key == nil:
		return nil, errors.New("new hub: no curve key")
	}
	for name, s := range cfg.Services {
		for _, h := range s.Hosts {
			if cfg.Agents[h] == "" {
				return nil, fmt.Errorf("new hub: service %s runs on host %s, which has no agent key (deployd fleet add-host %s)", name, h, h)
			}
		}
	}
	if cfg.ResultTimeout <= 0 {
		cfg.ResultTimeout = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Hub{cfg: cfg, guard: deployer.NewGuard(cfg.Store), waiters: map[int64]chan Report{}}, nil
}

// Execute carries out d. See deployer.Executor.
func (h *Hub) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	spec, ok := h.cfg.Services[d.Service]
	if ok && len(spec.Hosts) == 0 {
		if h.cfg.Local == nil {
			return failed(d, deployer.ClassConfig, "list the service's hosts, or run deployd as an agent for this host too",
				fmt.Errorf("service %s has no fleet hosts and this hub deploys nothing itself", d.Service))
		}
		return h.cfg.Local.Execute(ctx, d)
	}
	if !ok {
		return failed(d, deployer.ClassConfig, "add the service to the configuration or remove its queued deployments",
			fmt.Errorf("service %q is not configured", d.Service))
	}
	r := &rollout{h: h, d: d, spec: spec, log: zerolog.Ctx(ctx)}
	if r.log.GetLevel() == zerolog.Disabled {
		r.log = &h.cfg.Logger
	}
	defer r.saveSteps(ctx)
	return r.run(ctx)
}

// failed ends d failed with the class, hint and cause.
func failed(d deployer.Deployment, class, hint string, err error) deployer.Deployment {
	d.State, d.ErrorClass, d.Error, d.Hint = deployer.StateFailed, class, err.Error(), hint
	return d
}

// rollout is one deployment of a fleet service being carried out.
type rollout struct {
	h    *Hub
	d    deployer.Deployment
	spec deployer.Service
	log  *zerolog.Logger
	id   int64
	cred deployer.Credential
	// unsaved are steps not yet in the store: those before the first
	// intent is out are saved after it, off the path to the agents.
	unsaved []deployer.Step
}

func (r *rollout) run(ctx context.Context) deployer.Deployment {
	st, err := r.h.cfg.Store.ServiceStatus(ctx, r.spec.Name)
	if err != nil {
		return failed(r.d, deployer.ClassConfig, "check deployd's data directory", fmt.Errorf("read service status: %w", err))
	}
	req := deployer.CredentialRequest{Host: r.spec.Host, Image: r.spec.Image, Repository: r.spec.Repository,
		InstallationID: r.d.Trigger.InstallationID,
		IgnorePutAside: r.d.Trigger.Kind == deployer.TriggerManual || r.d.Trigger.Kind == deployer.TriggerRollback}
	started := r.h.cfg.Now()
	r.cred, err = r.h.cfg.Credentials.Credential(ctx, req)
	if err != nil {
		r.step(ctx, "credentials", started, err, "")
		return failed(r.d, deployer.ClassAuth, "check the registry's credentials with deployd doctor", fmt.Errorf("credentials for %s: %w", r.spec.Host, err))
	}
	r.step(ctx, "credentials", started, nil, "pull credential from "+r.cred.Source+", sealed for each host")
	if r.d.Digest == "" {
		started = r.h.cfg.Now()
		digest, err := r.h.cfg.Resolver.Digest(ctx, r.spec.Image+":"+r.d.Tag, r.cred, r.spec.Insecure)
		if err != nil {
			r.step(ctx, "resolve", started, err, "")
			class := deployer.ClassNetwork
			var f *deployer.Failure
			if errors.As(err, &f) {
				class = f.Class
			}
			return failed(r.d, class, "check that the tag exists and the registry answers", err)
		}
		r.d.Digest = digest
		r.step(ctx, "resolve", started, nil, r.d.Tag+" is "+deployer.ShortDigest(digest))
	}
	hosts, err := r.hostsToDeploy(ctx)
	if err != nil {
		return failed(r.d, deployer.ClassConfig, "check deployd's data directory", err)
	}
	if len(hosts) == 0 {
		r.step(ctx, "resolve", r.h.cfg.Now(), nil, "every host already runs "+deployer.ShortDigest(r.d.Digest)+"; nothing to do")
		r.d.State = deployer.StateUnchanged
		return r.d
	}
	if reason, err := r.h.guard.Digest(ctx, r.d.Service, r.d.Trigger, r.d.Digest); err != nil {
		return failed(r.d, deployer.ClassConfig, "check deployd's data directory", err)
	} else if reason != "" {
		r.step(ctx, deployer.StepGuard, r.h.cfg.Now(), nil, reason)
		r.d.State = deployer.StateUnchanged
		return r.d
	}
	if r.id, err = r.h.cfg.Store.StartRollout(ctx, r.d, r.spec.Rollout); err != nil {
		return failed(r.d, deployer.ClassConfig, "check deployd's data directory", err)
	}
	r.step(ctx, "rollout", r.h.cfg.Now(), nil, fmt.Sprintf("rollout %d of %s to %s (%s)",
		r.id, deployer.ShortDigest(r.d.Digest), strings.Join(hosts, ", "), r.spec.Rollout))

	results := r.deploy(ctx, hosts)
	r.saveSteps(ctx)
	return r.end(ctx, st, hosts, results)
}

// hostsToDeploy returns the service's hosts that do not run the digest
// yet, or all of them for a forced deployment.
func (r *rollout) hostsToDeploy(ctx context.Context) ([]string, error) {
	if r.d.Force {
		return r.spec.Hosts, nil
	}
	statuses, err := r.h.cfg.Store.HostStatuses(ctx, r.spec.Name)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, host := range r.spec.Hosts {
		if !slices.ContainsFunc(statuses, func(s deployer.HostStatus) bool { return s.Host == host && s.Digest == r.d.Digest }) {
			hosts = append(hosts, host)
		}
	}
	return hosts, nil
}

// deploy sends the intents by the service's policy and returns each
// reached host's result, in the order of hosts.
func (r *rollout) deploy(ctx context.Context, hosts []string) []Report {
	if r.spec.Rollout == deployer.RolloutOneByOne {
		var results []Report
		for _, host := range hosts {
			res := r.wait(ctx, r.send(ctx, host))
			results = append(results, res)
			if res.State != deployer.StateSucceeded && res.State != deployer.StateUnchanged {
				break
			}
		}
		return results
	}
	waits := make([]sent, len(hosts))
	for i, host := range hosts {
		waits[i] = r.send(ctx, host)
	}
	results := make([]Report, len(hosts))
	for i, s := range waits {
		results[i] = r.wait(ctx, s)
	}
	return results
}

// sent is an intent on its way: the host deployment and where its result
// arrives; res is set instead when sending failed.
type sent struct {
	d   deployer.Deployment
	ch  chan Report
	res *Report
}

// send records host's deployment and publishes its intent.
func (r *rollout) send(ctx context.Context, host string) sent {
	hd, err := r.h.cfg.Store.StartHostDeployment(ctx, r.id, r.d, host)
	if err != nil {
		return sent{res: &Report{Host: host, State: deployer.StateFailed, ErrorClass: deployer.ClassConfig, Error: err.Error()}}
	}
	in := Intent{Seq: hd.ID, RolloutID: r.id, Host: host, Service: r.d.Service, Image: r.spec.Image,
		Tag: r.d.Tag, Digest: r.d.Digest, Force: r.d.Force, DryRun: r.d.DryRun || r.spec.DryRun,
		Trigger: r.d.Trigger, IssuedAt: r.h.cfg.Now()}
	if !r.cred.Anonymous() {
		if in.Credential, err = SealCredential(r.h.cfg.Key, r.h.cfg.Agents[host], in, r.cred, in.IssuedAt); err != nil {
			return r.sendFailed(ctx, hd, deployer.ClassConfig, err)
		}
	}
	ch := make(chan Report, 1)
	r.h.mu.Lock()
	r.h.waiters[hd.ID] = ch
	r.h.mu.Unlock()
	if err := Publish(ctx, r.h.cfg.JetStream, in); err != nil {
		r.h.forget(hd.ID)
		return r.sendFailed(ctx, hd, deployer.ClassNetwork, err)
	}
	r.log.Info().Str("host", host).Int64("host_deployment_id", hd.ID).Msg("intent published")
	r.saveSteps(ctx)
	return sent{d: hd, ch: ch}
}

// sendFailed ends host deployment hd failed before its intent left.
func (r *rollout) sendFailed(ctx context.Context, hd deployer.Deployment, class string, err error) sent {
	res := Report{Kind: ReportResult, Host: hd.Host, Service: hd.Service, Seq: hd.ID, State: deployer.StateFailed,
		ErrorClass: class, Error: "send the intent: " + err.Error()}
	r.h.finishHost(ctx, hd, res)
	return sent{d: hd, res: &res}
}

// wait waits for s's result, until the result timeout or ctx ends.
func (r *rollout) wait(ctx context.Context, s sent) Report {
	if s.res != nil {
		return *s.res
	}
	defer r.h.forget(s.d.ID)
	timer := time.NewTimer(r.h.cfg.ResultTimeout)
	defer timer.Stop()
	select {
	case res := <-s.ch:
		return res
	case <-timer.C:
	case <-ctx.Done():
	}
	res := Report{Kind: ReportResult, Host: s.d.Host, Service: s.d.Service, Seq: s.d.ID, State: deployer.StateInterrupted,
		ErrorClass: deployer.ClassNetwork,
		Error:      fmt.Sprintf("no result from host %s within %s; its intent stays queued for it", s.d.Host, r.h.cfg.ResultTimeout),
		Hint:       "check that the agent on " + s.d.Host + " runs and reaches NATS"}
	if ctx.Err() == nil {
		r.h.finishHost(ctx, s.d, res)
	}
	return res
}

// end sums the hosts' results up as the deployment's end.
func (r *rollout) end(ctx context.Context, st deployer.ServiceStatus, hosts []string, results []Report) deployer.Deployment {
	var bad *Report
	for i := range results {
		res := results[i]
		msg := res.Host + ": " + string(res.State)
		if res.Error != "" {
			msg += ": " + res.Error
		}
		var stepErr error
		if res.State != deployer.StateSucceeded && res.State != deployer.StateUnchanged {
			stepErr = errors.New(msg)
			if bad == nil {
				bad = &results[i]
			}
		}
		r.step(ctx, "host", r.h.cfg.Now(), stepErr, msg)
		if res.ErrorClass == deployer.ClassAuth {
			r.h.cfg.Credentials.Denied(deployer.CredentialRequest{Host: r.spec.Host, Image: r.spec.Image, Repository: r.spec.Repository},
				r.cred.Source, "refused on host "+res.Host)
		}
	}
	if bad == nil {
		if ctx.Err() != nil {
			r.d.State = deployer.StateInterrupted
			return r.d
		}
		if !r.d.DryRun && !r.spec.DryRun {
			if err := r.h.cfg.Store.SetServiceStatus(ctx, deployer.ServiceStatus{Name: r.spec.Name, Tag: r.d.Tag, Digest: r.d.Digest,
				PreviousDigest: st.Digest, LastDeploymentID: r.d.ID, LastRunNumber: r.d.Trigger.RunNumber,
				LastRunID: r.d.Trigger.RunID, Credential: r.cred.Source, UpdatedAt: r.h.cfg.Now()}); err != nil {
				return failed(r.d, deployer.ClassConfig, "check deployd's data directory", err)
			}
		}
		r.d.State = deployer.StateSucceeded
		return r.d
	}
	untouched := hosts[len(results):]
	msg := fmt.Sprintf("rollout %d failed on %s (%s)", r.id, bad.Host, bad.State)
	if bad.Error != "" {
		msg += ": " + bad.Error
	}
	if len(untouched) > 0 {
		msg += "; not sent to " + strings.Join(untouched, ", ") + ", left on the version they run"
	}
	class := bad.ErrorClass
	if class == "" {
		class = deployer.ClassHealth
	}
	hint := bad.Hint
	if hint == "" {
		hint = "see host " + bad.Host + "'s deployment for its step log"
	}
	if ctx.Err() != nil {
		r.d.State = deployer.StateInterrupted
		r.d.Error = msg
		return r.d
	}
	return failed(r.d, class, hint, errors.New(msg))
}

// step records a step of the rollout's own deployment; it reaches the
// store with saveSteps.
func (r *rollout) step(_ context.Context, name string, started time.Time, err error, msg string) {
	s := deployer.Step{Name: name, Started: started, Duration: r.h.cfg.Now().Sub(started), Outcome: "ok", Message: msg}
	if err != nil {
		s.Outcome, s.Message = "failed", err.Error()
	}
	r.d.Steps = append(r.d.Steps, s)
	r.unsaved = append(r.unsaved, s)
}

// saveSteps writes the steps not yet in the store, in order.
func (r *rollout) saveSteps(ctx context.Context) {
	for _, s := range r.unsaved {
		if err := r.h.cfg.Store.AppendStep(context.WithoutCancel(ctx), r.d.ID, s); err != nil {
			r.log.Error().Err(err).Str("step", s.Name).Msg("record step")
		}
	}
	r.unsaved = nil
}

// forget drops the waiter of host deployment id.
func (h *Hub) forget(id int64) {
	h.mu.Lock()
	delete(h.waiters, id)
	h.mu.Unlock()
}

// finishHost records a host deployment's end from its result.
func (h *Hub) finishHost(ctx context.Context, hd deployer.Deployment, res Report) {
	hd.State, hd.ErrorClass, hd.Error, hd.Hint = res.State, res.ErrorClass, res.Error, res.Hint
	if res.Digest != "" {
		hd.Digest = res.Digest
	}
	if err := h.cfg.Store.FinishHostDeployment(ctx, hd, res.Running); err != nil {
		h.cfg.Logger.Error().Err(err).Str("host", hd.Host).Int64("host_deployment_id", hd.ID).Msg("record host result")
	}
}

// Run reads the agents' reports until ctx ends, recording each step and
// result in its host deployment and waking the rollout that waits for
// it. A report is taken only from the host whose deployment it names: a
// report for another host's deployment is refused and logged. It returns
// ctx's error, or the error that stopped it reading.
func (h *Hub) Run(ctx context.Context) error {
	cons, err := h.cfg.JetStream.Consumer(ctx, ReportStream, HubConsumer)
	if err != nil {
		return fmt.Errorf("read reports: %w", err)
	}
	for {
		msg, err := nextMsg(ctx, cons)
		if err != nil {
			return fmt.Errorf("read reports: %w", err)
		}
		if msg == nil {
			continue
		}
		if reason := h.take(ctx, msg); reason != "" {
			h.cfg.Logger.Warn().Str("subject", msg.Subject()).Str("reason", reason).Msg("report refused")
			if err := msg.Term(); err != nil {
				return fmt.Errorf("refuse report: %w", err)
			}
			continue
		}
		if err := msg.Ack(); err != nil {
			return fmt.Errorf("ack report: %w", err)
		}
	}
}

// take records one report; a refusal returns the reason.
func (h *Hub) take(ctx context.Context, msg jetstream.Msg) string {
	rep, err := DecodeReport(msg.Data())
	if err != nil {
		return err.Error()
	}
	if msg.Subject() != ReportSubject(rep.Host, rep.Service) {
		return fmt.Sprintf("report of host %s service %s on subject %s", rep.Host, rep.Service, msg.Subject())
	}
	hd, err := h.cfg.Store.Deployment(ctx, rep.Seq)
	if err != nil {
		return fmt.Sprintf("report for deployment %d: %v", rep.Seq, err)
	}
	if hd.Host != rep.Host || hd.Service != rep.Service {
		return fmt.Sprintf("host %s reported on deployment %d, which is %s's of %s", rep.Host, hd.ID, hd.Host, hd.Service)
	}
	switch rep.Kind {
	case ReportStep:
		if err := h.cfg.Store.AppendStep(ctx, hd.ID, *rep.Step); err != nil {
			return fmt.Sprintf("record step: %v", err)
		}
	case ReportResult:
		h.finishHost(ctx, hd, rep)
		h.mu.Lock()
		ch := h.waiters[hd.ID]
		h.mu.Unlock()
		if ch != nil {
			select {
			case ch <- rep:
			default:
			}
		}
	}
	return ""
}
