package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Releaser runs release sets: the services of a set go live together at
// the images of one commit, or not at all.
//
// At intake (RecordDelivery, the webhook's recorder) it takes the
// requests of a delivery for services that belong to a set away from the
// plain queue: a successful workflow_run is the set's gate and queues a
// release of its commit; a package event is held in a waiting release of
// its commit until the run arrives, or matched to the release the run
// already queued. Waiting releases older than the set's wait expire
// (Expire), with the reason.
//
// One worker per set runs its releases one at a time, newest first; a
// release's members deploy one after another, in the set's order, through
// the Queue. When a member fails, the members that already switched are
// deployed back to the digest they had in the set's previous succeeded
// release (or, for the set's first release, to what ran before it), and
// the release is rolled_back naming the member. It is safe for concurrent
// use.
type Releaser struct {
	sets    map[string]ReleaseSet
	setOf   map[string]string // service → set
	store   ReleaseStore
	status  Store
	queue   *Queue
	now     func() time.Time
	log     zerolog.Logger
	expiry  time.Duration
	notify  func(Release)
	mu      sync.Mutex
	waiters map[int64]chan Deployment
	wakes   map[string]chan struct{}
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// ReleaserConfig holds a Releaser's dependencies.
type ReleaserConfig struct {
	// Sets are the release sets; their services must exist.
	Sets []ReleaseSet
	// Store keeps the releases; Status is the deployments' store, read
	// for what runs before a release.
	Store  ReleaseStore
	Status Store
	// Queue runs the members' deployments. The Releaser must hear of
	// every change of a deployment's state: call Observe from the
	// queue's Notify hook.
	Queue *Queue
	// Now is the clock (default time.Now).
	Now func() time.Time
	// ExpiryInterval is how often waiting releases are checked for
	// expiry (default 1m).
	ExpiryInterval time.Duration
	// Notify, if set, is called after every change of a release's state.
	Notify func(Release)
	Logger zerolog.Logger
}

// NewReleaser checks its dependencies and returns a Releaser; call Start.
func NewReleaser(cfg ReleaserConfig) (*Releaser, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("new releaser: no release store")
	case cfg.Status == nil:
		return nil, errors.New("new releaser: no store")
	case cfg.Queue == nil:
		return nil, errors.New("new releaser: no queue")
	}
	r := &Releaser{
		sets:    map[string]ReleaseSet{},
		setOf:   map[string]string{},
		store:   cfg.Store,
		status:  cfg.Status,
		queue:   cfg.Queue,
		now:     cfg.Now,
		log:     cfg.Logger.With().Str("component", "releases").Logger(),
		expiry:  cfg.ExpiryInterval,
		notify:  cfg.Notify,
		waiters: map[int64]chan Deployment{},
		wakes:   map[string]chan struct{}{},
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.expiry <= 0 {
		r.expiry = time.Minute
	}
	if r.notify == nil {
		r.notify = func(Release) {}
	}
	for _, s := range cfg.Sets {
		if s.Wait <= 0 {
			return nil, fmt.Errorf("new releaser: release set %s: wait must be positive", s.Name)
		}
		r.sets[s.Name] = s
		r.wakes[s.Name] = make(chan struct{}, 1)
		for _, svc := range s.Services {
			if other, dup := r.setOf[svc]; dup {
				return nil, fmt.Errorf("new releaser: service %s is in release sets %s and %s", svc, other, s.Name)
			}
			r.setOf[svc] = s.Name
		}
	}
	return r, nil
}

// RecordDelivery records a webhook delivery as Queue.RecordDelivery does,
// except that requests for services of a release set go to the release
// of their commit instead of deploying alone (see ReleaseStore.
// RecordReleaseDelivery). A member request that names no commit, or that
// the Guard holds back, is not deployed; the delivery's reason says why.
func (r *Releaser) RecordDelivery(ctx context.Context, d Delivery, reqs []Request) (Receipt, error) {
	plain, intakes, notes, err := r.split(ctx, d, reqs)
	if err != nil {
		return Receipt{}, err
	}
	if len(intakes) == 0 && len(notes) == 0 {
		return r.queue.RecordDelivery(ctx, d, reqs)
	}
	kept, held, err := r.queue.keep(ctx, plain)
	if err != nil {
		return Receipt{}, err
	}
	held = append(held, notes...)
	ignored := len(kept) == 0 && len(intakes) == 0
	switch {
	case ignored:
		d.Result, d.Reason = ResultIgnored, strings.Join(held, "; ")
	case len(intakes) > 0:
		d.Result, d.Reason = ResultQueued, strings.Join(held, "; ")
	}
	rec, _, err := r.store.RecordReleaseDelivery(ctx, d, kept, intakes)
	if err != nil {
		return Receipt{}, err
	}
	if rec.Duplicate {
		return rec, nil
	}
	if ignored {
		rec.Ignored = d.Reason
	}
	r.queue.queued(ctx, kept)
	for _, in := range intakes {
		if in.Gate {
			r.wake(in.Set)
		}
	}
	return rec, nil
}

// split sorts a delivery's requests into those of no set and intakes per
// set and commit; notes say why member requests were dropped.
func (r *Releaser) split(ctx context.Context, d Delivery, reqs []Request) (plain []Request, intakes []ReleaseIntake, notes []string, err error) {
	for _, q := range reqs {
		set, ok := r.setOf[q.Service]
		if !ok {
			plain = append(plain, q)
			continue
		}
		if q.Trigger.Commit == "" {
			notes = append(notes, fmt.Sprintf("%s: in release set %s, and the event names no commit to match it to a workflow run (a revision label or target_oid); not deployed alone", q.Service, set))
			continue
		}
		reason, err := r.queue.guard.Request(ctx, q)
		if err != nil {
			return nil, nil, nil, err
		}
		if reason != "" {
			notes = append(notes, q.Service+": "+reason)
			continue
		}
		gate := q.Trigger.Event == GateWorkflowRun
		m := ReleaseMember{Service: q.Service, Tag: q.Tag, Digest: q.Digest, DeliveryID: d.ID}
		i := slices.IndexFunc(intakes, func(in ReleaseIntake) bool {
			return in.Set == set && in.Commit == q.Trigger.Commit && in.Gate == gate
		})
		if i < 0 {
			t := q.Trigger
			t.DeliveryID = d.ID
			intakes = append(intakes, ReleaseIntake{Set: set, Commit: q.Trigger.Commit, Gate: gate, Trigger: t})
			i = len(intakes) - 1
		}
		intakes[i].Members = append(intakes[i].Members, m)
	}
	return plain, intakes, notes, nil
}

// Observe hears of every change of a deployment's state (the queue's
// Notify hook): the end of a member's deployment moves its release on.
// A nil Releaser hears nothing.
func (r *Releaser) Observe(d Deployment) {
	if r == nil || d.ReleaseID == 0 || !d.State.Final() {
		return
	}
	r.mu.Lock()
	ch := r.waiters[d.ID]
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- d:
		default:
		}
	}
}

// Start marks the releases that ran when deployd last stopped as
// interrupted and starts one worker per set, which lives until Shutdown.
// A nil Releaser does nothing.
func (r *Releaser) Start(ctx context.Context) error {
	if r == nil {
		return nil
	}
	ids, err := r.store.InterruptRunningReleases(ctx)
	if err != nil {
		return fmt.Errorf("start releases: %w", err)
	}
	for _, id := range ids {
		r.log.Warn().Int64(KeyReleaseID, id).Msg("release interrupted by the last stop; its members' deployments resume on their own")
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	for name := range r.sets {
		r.wg.Add(1)
		go r.work(wctx, name)
		r.wake(name)
	}
	return nil
}

// Shutdown stops the workers and waits for them. A release cut short
// stays running and is marked interrupted at the next start. A nil
// Releaser does nothing.
func (r *Releaser) Shutdown() {
	if r == nil || r.cancel == nil {
		return
	}
	r.cancel()
	r.wg.Wait()
}

func (r *Releaser) wake(set string) {
	select {
	case r.wakes[set] <- struct{}{}:
	default:
	}
}

// work is a set's worker: it expires waiting releases and runs queued ones.
func (r *Releaser) work(ctx context.Context, set string) {
	defer r.wg.Done()
	tick := time.NewTicker(r.expiry)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := r.Expire(ctx, set); err != nil {
				r.log.Error().Err(err).Str(KeyReleaseSet, set).Msg("expire held package events")
			}
			continue
		case <-r.wakes[set]:
		}
		for {
			rel, ok, err := r.store.ClaimRelease(ctx, set)
			if err != nil {
				r.log.Error().Err(err).Str(KeyReleaseSet, set).Msg("claim next release; trying again at the next check")
				break
			}
			if !ok {
				break
			}
			r.notify(rel)
			end, err := r.Run(ctx, rel)
			if err != nil && (ctx.Err() != nil || errors.Is(err, ErrDraining)) {
				r.log.Warn().Err(err).Int64(KeyReleaseID, rel.ID).Msg("release cut short by shutdown; it is marked interrupted at the next start")
				return
			}
			if err != nil {
				// The store failed under it: end it, or it would hold the set.
				r.log.Error().Err(err).Int64(KeyReleaseID, rel.ID).Msg("release failed")
				end = rel
				end.State, end.Reason = ReleaseFailed, "deployd could not carry the release out: "+err.Error()
				if err := r.store.FinishRelease(context.WithoutCancel(ctx), end); err != nil {
					r.log.Error().Err(err).Int64(KeyReleaseID, rel.ID).Msg("record release end")
				}
			}
			r.notify(end)
		}
	}
}

// Expire marks the waiting releases of set older than its wait expired:
// package events held for a workflow run that did not come.
func (r *Releaser) Expire(ctx context.Context, set string) ([]Release, error) {
	s, ok := r.sets[set]
	if !ok {
		return nil, fmt.Errorf("expire releases: no release set %s", set)
	}
	reason := fmt.Sprintf("no successful workflow_run for this commit arrived within %s; the held package events were not deployed", s.Wait)
	out, err := r.store.ExpireReleases(ctx, set, r.now().Add(-s.Wait), reason)
	if err != nil {
		return nil, fmt.Errorf("expire releases of %s: %w", set, err)
	}
	for _, rel := range out {
		r.log.Warn().Int64(KeyReleaseID, rel.ID).Str(KeyReleaseSet, set).Str(KeyCommit, rel.Commit).Msg(reason)
		r.notify(rel)
	}
	return out, nil
}

// Run carries out a claimed (running) release and records its end. It
// returns an error only when ctx ended first or the store failed; the
// release is then left running.
func (r *Releaser) Run(ctx context.Context, rel Release) (Release, error) {
	log := r.log.With().Int64(KeyReleaseID, rel.ID).Str(KeyReleaseSet, rel.Set).Str(KeyCommit, rel.Commit).Logger()
	prev, hasPrev, err := r.store.PreviousRelease(ctx, rel.Set, rel.ID)
	if err != nil {
		return rel, fmt.Errorf("run release %d: %w", rel.ID, err)
	}
	type ran struct {
		member ReleaseMember
		before ServiceStatus
	}
	var switched []ran
	for _, m := range r.ordered(rel) {
		before, err := r.status.ServiceStatus(ctx, m.Service)
		if err != nil {
			return rel, fmt.Errorf("run release %d: %w", rel.ID, err)
		}
		t := rel.Trigger
		if m.DeliveryID != "" && t.DeliveryID == "" {
			t.DeliveryID = m.DeliveryID
		}
		d, err := r.deploy(ctx, Request{Service: m.Service, Tag: m.Tag, Digest: m.Digest, Trigger: t, ReleaseID: rel.ID})
		if err != nil {
			return rel, fmt.Errorf("run release %d: %w", rel.ID, err)
		}
		held := guardReason(d)
		switch {
		case d.State == StateSucceeded:
			switched = append(switched, ran{m, before})
			continue
		case d.State == StateUnchanged && held == "":
			continue
		}
		rel.State, rel.FailedMember = ReleaseRolledBack, m.Service
		rel.Reason = fmt.Sprintf("%s's deployment %d ended %s", m.Service, d.ID, d.State)
		if d.Error != "" {
			rel.Reason += ": " + d.Error
		}
		if held != "" {
			// The commit's image ran here and was replaced: the member did
			// not go live, so neither does the release.
			rel.Reason += ", held back: " + held
		}
		var back []string
		for i := len(switched) - 1; i >= 0; i-- {
			s := switched[i]
			target, tag := s.before.Digest, s.before.Tag
			if pm, ok := memberOf(prev, s.member.Service); hasPrev && ok && pm.Digest != "" {
				target, tag = pm.Digest, pm.Tag
			}
			if target == "" {
				rel.State = ReleaseFailed
				back = append(back, s.member.Service+" had nothing running before this release to go back to")
				continue
			}
			rb, err := r.deploy(ctx, Request{Service: s.member.Service, Tag: tag, Digest: target, Force: true,
				Trigger:   Trigger{Kind: TriggerRollback, Subject: "release " + strconv.FormatInt(rel.ID, 10), Commit: rel.Commit},
				ReleaseID: rel.ID})
			if err != nil {
				return rel, fmt.Errorf("run release %d: %w", rel.ID, err)
			}
			if rb.State != StateSucceeded && rb.State != StateUnchanged {
				rel.State = ReleaseFailed
				back = append(back, fmt.Sprintf("rolling %s back to %s ended %s", s.member.Service, ShortDigest(target), rb.State))
				continue
			}
			back = append(back, fmt.Sprintf("%s rolled back to %s", s.member.Service, ShortDigest(target)))
		}
		if len(back) > 0 {
			rel.Reason += "; " + strings.Join(back, "; ")
		}
		break
	}
	if rel.State == ReleaseRunning {
		rel.State = ReleaseSucceeded
	}
	if err := r.store.FinishRelease(context.WithoutCancel(ctx), rel); err != nil {
		return rel, fmt.Errorf("run release %d: %w", rel.ID, err)
	}
	ev := log.Info()
	if rel.State != ReleaseSucceeded {
		ev = log.Warn().Str("failed_member", rel.FailedMember).Str("reason", rel.Reason)
	}
	ev.Str("state", string(rel.State)).Msg("release ended")
	return r.store.Release(context.WithoutCancel(ctx), rel.ID)
}

// guardReason is why the Guard held deployment d back before its switch,
// "" when it did not.
func guardReason(d Deployment) string {
	for _, st := range d.Steps {
		if st.Name == StepGuard {
			return st.Message
		}
	}
	return ""
}

// ordered returns the release's members in the set's order.
func (r *Releaser) ordered(rel Release) []ReleaseMember {
	order := r.sets[rel.Set].Services
	out := slices.Clone(rel.Members)
	slices.SortStableFunc(out, func(a, b ReleaseMember) int {
		return slices.Index(order, a.Service) - slices.Index(order, b.Service)
	})
	return out
}

func memberOf(rel Release, service string) (ReleaseMember, bool) {
	for _, m := range rel.Members {
		if m.Service == service {
			return m, true
		}
	}
	return ReleaseMember{}, false
}

// deploy queues one member's request and waits for its deployment to end.
func (r *Releaser) deploy(ctx context.Context, req Request) (Deployment, error) {
	ch := make(chan Deployment, 1)
	d, err := r.queue.Enqueue(ctx, req)
	if err != nil {
		return Deployment{}, fmt.Errorf("queue %s: %w", req.Service, err)
	}
	r.mu.Lock()
	r.waiters[d.ID] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, d.ID)
		r.mu.Unlock()
	}()
	// It may have ended before the waiter was in place.
	if now, err := r.status.Deployment(ctx, d.ID); err == nil && now.State.Final() {
		return now, nil
	}
	select {
	case end := <-ch:
		return end, nil
	case <-ctx.Done():
		return Deployment{}, ctx.Err()
	}
}
