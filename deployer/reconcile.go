package deployer

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"
)

// DigestResolver looks up the digest a service's tag points at now.
// deployer/podman's *Pipeline satisfies it.
type DigestResolver interface {
	Resolve(ctx context.Context, service, tag string) (string, error)
}

// Reconciler catches up with the registry: GitHub never retries a webhook
// it failed to deliver, so at start-up and then every interval it resolves
// each service's default tag and queues a deployment (trigger reconcile)
// when the registry has a digest that is not running. It skips a digest
// this host ran and replaced, or one that failed its health check, so
// that it never undoes a rollback or loops on a broken version; failures
// that may pass (auth, network) are tried again. Dry-run services are
// left alone. A
// registry or GitHub outage is logged and waited out, not turned into
// failed deployments.
type Reconciler struct {
	services []Service
	resolver DigestResolver
	store    Store
	queue    *Queue
	guard    Guard
	interval time.Duration
	log      zerolog.Logger
}

// ReconcilerConfig holds a Reconciler's dependencies.
type ReconcilerConfig struct {
	Services []Service
	Resolver DigestResolver
	Store    Store
	Queue    *Queue
	// Interval between passes; 0 turns reconciling off.
	Interval time.Duration
	Logger   zerolog.Logger
}

// NewReconciler checks its dependencies.
func NewReconciler(cfg ReconcilerConfig) (*Reconciler, error) {
	if cfg.Resolver == nil || cfg.Store == nil || cfg.Queue == nil {
		return nil, errors.New("new reconciler: resolver, store and queue are required")
	}
	return &Reconciler{services: cfg.Services, resolver: cfg.Resolver, store: cfg.Store, queue: cfg.Queue,
		guard: NewGuard(cfg.Store), interval: cfg.Interval, log: cfg.Logger.With().Str("component", "reconcile").Logger()}, nil
}

// Run reconciles at once and then every interval until ctx ends. It
// returns at once when the interval is 0.
func (r *Reconciler) Run(ctx context.Context) {
	if r.interval <= 0 {
		return
	}
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		r.Once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once runs one pass over every service and returns the deployments it queued.
func (r *Reconciler) Once(ctx context.Context) []Deployment {
	var queued []Deployment
	for _, s := range r.services {
		if ctx.Err() != nil || r.queue.Draining() {
			break
		}
		d, err := r.service(ctx, s)
		log := r.log.With().Str(KeyService, s.Name).Logger()
		switch {
		case err != nil:
			log.Warn().Err(err).Msg("reconcile: registry not checked; will try again next pass")
		case d != nil:
			log.Info().Int64(KeyDeploymentID, d.ID).Str("digest", d.Digest).Msg("reconcile: registry has a newer digest; deploying")
			queued = append(queued, *d)
		}
	}
	return queued
}

// service checks one service and queues a deployment when it is behind.
func (r *Reconciler) service(ctx context.Context, s Service) (*Deployment, error) {
	if s.DefaultTag == "" || s.DryRun {
		return nil, nil // no plain default tag to follow, or nothing to change
	}
	recent, err := r.store.Deployments(ctx, s.Name, Page{Limit: 20})
	if err != nil {
		return nil, err
	}
	if len(recent) > 0 && !recent[0].State.Final() {
		return nil, nil // a deployment is queued or running; it decides
	}
	digest, err := r.resolver.Resolve(ctx, s.Name, s.DefaultTag)
	if err != nil {
		return nil, err
	}
	st, err := r.store.ServiceStatus(ctx, s.Name)
	if err != nil {
		return nil, err
	}
	if digest == st.Digest {
		return nil, nil
	}
	trigger := Trigger{Kind: TriggerReconcile}
	if reason, err := r.guard.Digest(ctx, s.Name, trigger, digest); err != nil || reason != "" {
		return nil, err // the executor would hold it back: never undo a rollback
	}
	for _, d := range recent {
		if d.Digest == digest && (d.State == StateRolledBack || d.State == StateFailed && d.ErrorClass == ClassHealth) {
			r.log.Debug().Str(KeyService, s.Name).Str("digest", digest).Msg("reconcile: this digest failed its health check; waiting for a new one")
			return nil, nil
		}
		if d.Digest == digest && d.State == StateFailed && d.ErrorClass == ClassVerification {
			r.log.Debug().Str(KeyService, s.Name).Str("digest", digest).Msg("reconcile: this digest failed image verification; waiting for a new one")
			return nil, nil
		}
	}
	d, err := r.queue.Enqueue(ctx, Request{Service: s.Name, Tag: s.DefaultTag, Digest: digest,
		Trigger: trigger})
	if err != nil {
		return nil, err
	}
	return &d, nil
}
