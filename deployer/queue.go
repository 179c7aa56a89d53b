package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// ErrDraining is returned for new work while the deployer shuts down.
var ErrDraining = errors.New("deployer is shutting down")

// Queue runs deployments: one worker per service, so that a service's
// deployments never overlap while services deploy in parallel. The queue
// itself lives in the Store; Queue only wakes workers. It is safe for
// concurrent use.
type Queue struct {
	store    Store
	executor Executor
	guard    Guard
	log      zerolog.Logger
	notify   func(Deployment)

	mu sync.Mutex
	// shown holds, per service, the deployments announced as queued
	// (manual, rollback, reconcile) that have not started: when a newer
	// request supersedes them, listeners are told. Webhook deployments are
	// announced when they start, so a burst costs no reads.
	shown    map[string][]int64
	idle     *sync.Cond // signalled when busy drops
	busy     int        // deployments executing now
	workers  map[string]chan struct{}
	draining bool
	ctx      context.Context // owned by the queue, not by any request
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// QueueConfig holds a Queue's dependencies.
type QueueConfig struct {
	Store    Store
	Executor Executor
	Logger   zerolog.Logger
	// Notify, if set, is called after every change of a deployment's state.
	Notify func(Deployment)
}

// NewQueue checks its dependencies and returns an idle queue; call Start.
func NewQueue(cfg QueueConfig) (*Queue, error) {
	if cfg.Store == nil {
		return nil, errors.New("new queue: no store")
	}
	if cfg.Executor == nil {
		return nil, errors.New("new queue: no executor")
	}
	notify := cfg.Notify
	if notify == nil {
		notify = func(Deployment) {}
	}
	q := &Queue{
		store:    cfg.Store,
		executor: cfg.Executor,
		guard:    NewGuard(cfg.Store),
		log:      cfg.Logger,
		notify:   notify,
		workers:  make(map[string]chan struct{}),
		shown:    make(map[string][]int64),
	}
	q.idle = sync.NewCond(&q.mu)
	return q, nil
}

// Start marks the deployments that were running when deployd last stopped
// as interrupted and starts workers for every service with queued work.
// Workers live until Shutdown; ctx bounds only Start's own store calls.
func (q *Queue) Start(ctx context.Context) error {
	if err := q.resumeInterrupted(ctx); err != nil {
		return fmt.Errorf("start queue: %w", err)
	}
	services, err := q.store.QueuedServices(ctx)
	if err != nil {
		return fmt.Errorf("start queue: %w", err)
	}
	q.mu.Lock()
	q.ctx, q.cancel = context.WithCancel(context.WithoutCancel(ctx))
	q.mu.Unlock()
	for _, s := range services {
		q.wake(s)
	}
	return nil
}

// resumeInterrupted marks the deployments that were running when deployd
// last stopped as interrupted, and queues each one again unless a newer
// request for its service is already queued: what was asked for still
// gets done.
func (q *Queue) resumeInterrupted(ctx context.Context) error {
	ids, err := q.store.InterruptRunning(ctx)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	queued, err := q.store.QueuedServices(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		d, err := q.store.Deployment(ctx, id)
		if err != nil {
			return err
		}
		log := q.log.With().Str(KeyService, d.Service).Int64(KeyDeploymentID, d.ID).Logger()
		if slices.Contains(queued, d.Service) {
			log.Warn().Msg("deployment interrupted by the last stop; a newer one is queued")
			continue
		}
		again, err := q.store.Enqueue(ctx, Request{Service: d.Service, Tag: d.Tag, Digest: d.Digest,
			Trigger: d.Trigger, Force: d.Force, DryRun: d.DryRun, Note: requestNote(d), ReleaseID: d.ReleaseID})
		if err != nil {
			return fmt.Errorf("queue interrupted deployment %d again: %w", d.ID, err)
		}
		queued = append(queued, d.Service)
		log.Warn().Int64("resumed_as", again.ID).Msg("deployment interrupted by the last stop; queued again")
	}
	return nil
}

// RecordDelivery records a webhook delivery with its requests (see
// Store.RecordDelivery) and wakes the workers of the services it queued.
// Requests that would move a service backwards (see Guard.Request: a
// digest this host ran and replaced, a workflow run older than the one
// deployed) are held back; when that leaves none, the delivery is recorded
// as ignored with the reason, which Receipt.Ignored repeats.
//
// Deliveries are recorded even while the queue drains: GitHub never
// retries, and what is queued in the store runs at the next start.
func (q *Queue) RecordDelivery(ctx context.Context, d Delivery, reqs []Request) (Receipt, error) {
	kept, held, err := q.keep(ctx, reqs)
	if err != nil {
		return Receipt{}, err
	}
	if len(reqs) > 0 && len(kept) == 0 {
		d.Result, d.Reason = ResultIgnored, strings.Join(held, "; ")
	}
	rec, err := q.store.RecordDelivery(ctx, d, kept)
	if err != nil {
		return Receipt{}, err
	}
	if rec.Duplicate {
		return rec, nil
	}
	if len(reqs) > 0 && len(kept) == 0 {
		rec.Ignored = d.Reason
	}
	q.queued(ctx, kept)
	return rec, nil
}

// keep returns the requests of a webhook delivery that the Guard lets
// through, and for the others "service: reason".
func (q *Queue) keep(ctx context.Context, reqs []Request) (kept []Request, held []string, err error) {
	kept = make([]Request, 0, len(reqs))
	for _, r := range reqs {
		reason, err := q.guard.Request(ctx, r)
		if err != nil {
			return nil, nil, err
		}
		if reason != "" {
			held = append(held, r.Service+": "+reason)
			continue
		}
		kept = append(kept, r)
	}
	return kept, held, nil
}

// queued wakes the workers of requests a delivery queued in the store.
func (q *Queue) queued(ctx context.Context, reqs []Request) {
	for _, r := range reqs {
		q.announceSuperseded(ctx, r.Service)
		q.wake(r.Service)
	}
}

// announceSuperseded tells the listeners about the service's announced
// queued deployments that are no longer queued: superseded by a newer
// request, or started (then the worker announces them itself).
func (q *Queue) announceSuperseded(ctx context.Context, service string) {
	q.mu.Lock()
	ids := q.shown[service]
	delete(q.shown, service)
	q.mu.Unlock()
	var still []int64
	for _, id := range ids {
		d, err := q.store.Deployment(ctx, id)
		switch {
		case err != nil:
			q.log.Warn().Err(err).Int64(KeyDeploymentID, id).Msg("read superseded deployment")
		case d.State == StateQueued:
			still = append(still, id)
		case d.State == StateSuperseded:
			q.notify(d)
		}
	}
	if len(still) > 0 {
		q.mu.Lock()
		q.shown[service] = append(still, q.shown[service]...)
		q.mu.Unlock()
	}
}

// Enqueue queues one request that comes from no delivery and wakes its worker.
func (q *Queue) Enqueue(ctx context.Context, r Request) (Deployment, error) {
	if q.Draining() {
		return Deployment{}, ErrDraining
	}
	if err := r.Validate(); err != nil {
		return Deployment{}, err
	}
	d, err := q.store.Enqueue(ctx, r)
	if err != nil {
		return Deployment{}, err
	}
	q.announceSuperseded(ctx, r.Service)
	q.mu.Lock()
	q.shown[r.Service] = append(q.shown[r.Service], d.ID)
	q.mu.Unlock()
	q.notify(d)
	q.wake(r.Service)
	return d, nil
}

// Draining reports whether Shutdown has begun.
func (q *Queue) Draining() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.draining
}

// wake makes sure the service has a worker and that it looks for work.
func (q *Queue) wake(service string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.draining || q.ctx == nil {
		return
	}
	ch, ok := q.workers[service]
	if !ok {
		ch = make(chan struct{}, 1)
		q.workers[service] = ch
		q.wg.Add(1)
		go q.work(service, ch)
	}
	select {
	case ch <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// work is a service's worker: it runs that service's queued deployments,
// newest first, one at a time, until the queue stops.
func (q *Queue) work(service string, wake <-chan struct{}) {
	defer q.wg.Done()
	log := q.log.With().Str(KeyService, service).Logger()
	for {
		select {
		case <-q.ctx.Done():
			return
		case <-wake:
		}
		for q.claimAndRun(service, log) {
		}
	}
}

// claimAndRun runs the service's next queued deployment, if any, and
// reports whether it ran one.
func (q *Queue) claimAndRun(service string, log zerolog.Logger) bool {
	q.mu.Lock()
	if q.draining {
		q.mu.Unlock()
		return false
	}
	q.busy++
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.busy--
		q.idle.Broadcast()
		q.mu.Unlock()
	}()
	d, ok, err := q.store.ClaimNext(q.ctx, service)
	if err != nil {
		log.Error().Err(err).Msg("claim next deployment; trying again shortly")
		time.AfterFunc(5*time.Second, func() { q.wake(service) })
		return false
	}
	if !ok {
		return false
	}
	q.announceSuperseded(q.ctx, service) // forget what was shown queued
	q.notify(d)
	q.run(log, d)
	return true
}

// run executes one claimed deployment and records its end.
func (q *Queue) run(log zerolog.Logger, d Deployment) {
	log = log.With().Int64(KeyDeploymentID, d.ID).Logger()
	ctx := log.WithContext(q.ctx)
	start := time.Now()
	log.Info().Str("tag", d.Tag).Str("digest", d.Digest).Str("trigger", string(d.Trigger.Kind)).Msg("deployment started")

	end := q.executor.Execute(ctx, d)
	if !end.State.Final() {
		end.State = StateInterrupted
	}
	if end.State == StateInterrupted && q.ctx.Err() != nil {
		// Cut short by shutdown: leave it running in the store, so that the
		// next start marks it interrupted and asks for it again, as after
		// a crash; tell the listeners it was interrupted.
		log.Warn().Msg("deployment cut short by shutdown; it resumes at the next start")
		q.notify(end)
		return
	}
	// Record the end even when the queue is stopping: the store outlives
	// it. A failed write is tried again: a deployment left running would
	// hold its service until the next start.
	for attempt := 1; ; attempt++ {
		err := q.store.Finish(context.WithoutCancel(ctx), end)
		if err == nil {
			break
		}
		log.Error().Err(err).Int("attempt", attempt).Msg("record deployment end")
		if attempt == 5 {
			break
		}
		time.Sleep(time.Duration(attempt) * time.Second)
	}
	q.notify(end)
	ev := log.Info()
	if end.State == StateFailed || end.State == StateRolledBack || end.State == StateInterrupted {
		ev = log.Warn().Str("error_class", end.ErrorClass).Str("error", end.Error)
	}
	ev.Str("state", string(end.State)).Dur("duration", time.Since(start)).Msg("deployment ended")
}

// Shutdown stops taking new work and waits for running deployments to end.
// When ctx ends first, it cancels them (they end interrupted) and waits for
// the workers to return. Queued deployments stay queued for the next start.
func (q *Queue) Shutdown(ctx context.Context) error {
	q.mu.Lock()
	q.draining = true
	cancel := q.cancel
	q.mu.Unlock()
	if cancel == nil {
		return nil
	}
	idle := make(chan struct{})
	go func() {
		q.mu.Lock()
		for q.busy > 0 {
			q.idle.Wait()
		}
		q.mu.Unlock()
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = fmt.Errorf("drain deployments: %w", ctx.Err())
	}
	cancel()
	q.wg.Wait()
	return err
}
