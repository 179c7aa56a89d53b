// Package notify turns deployment outcomes into messages and delivers
// them: a failed or rolled back deployment, a service left degraded, a
// registry credential that was refused so that the next source was used,
// and, for targets that ask, a success. Targets are shoutrrr URLs (Slack,
// Discord, Microsoft Teams, ntfy, e-mail and the rest of shoutrrr's
// services) or a generic JSON webhook signed with HMAC-SHA256.
//
// Its Notifier is a subscriber of deployment events, handed to the
// queue's Notify hook. Notify only queues: one worker of its own builds
// the messages and sends them, retrying with backoff, so a receiver that
// is slow, down or hanging never holds up or fails a deployment.
package notify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/deployer"
)

// Event is what a notification is about.
type Event string

// The events a target may ask for.
const (
	// EventFailed: a deployment failed.
	EventFailed Event = "failed"
	// EventRolledBack: a deployment failed its health check and the
	// previous version was restored.
	EventRolledBack Event = "rolled_back"
	// EventDegraded: a failed deployment left the service in an unknown
	// state (the rollback failed too, or there was none to make).
	EventDegraded Event = "degraded"
	// EventCredentialFallback: the registry refused a credential source
	// (say the GitHub App token) and the deployment succeeded with the
	// next one (say token_file).
	EventCredentialFallback Event = "credential_fallback"
	// EventSucceeded: a deployment succeeded.
	EventSucceeded Event = "succeeded"
)

// Events returns every event, in the order of the documentation.
func Events() []Event {
	return []Event{EventFailed, EventRolledBack, EventDegraded, EventCredentialFallback, EventSucceeded}
}

// DefaultEvents returns the events of a target that lists none: all but
// succeeded.
func DefaultEvents() []Event {
	return []Event{EventFailed, EventRolledBack, EventDegraded, EventCredentialFallback}
}

// Metric results of deployd_notifications_total.
const (
	ResultSent    = "sent"    // the receiver accepted the message
	ResultRetried = "retried" // an attempt failed; the message is sent again
	ResultFailed  = "failed"  // every attempt failed; the message is given up
	ResultDropped = "dropped" // the queue was full; the oldest waiting message was dropped
)

// Results returns the metric results, for counters created at zero.
func Results() []string { return []string{ResultSent, ResultRetried, ResultFailed, ResultDropped} }

// Defaults of a Notifier.
const (
	DefaultQueueSize = 64
	DefaultAttempts  = 3
	DefaultBackoff   = 2 * time.Second
	DefaultTimeout   = 15 * time.Second
	// CloseTimeout is how long shutdown should wait for the messages
	// still queued (the wait given to Close).
	CloseTimeout = 10 * time.Second
)

// Sender delivers one message to one receiver. Errors must not contain
// the receiver's URL or any secret.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// Target is one receiver of notifications and what it wants.
type Target struct {
	// Kind names the target in logs and metrics: the shoutrrr service
	// (slack, discord, teams, ntfy, smtp, ...) or webhook.
	Kind string
	// Sender delivers the messages. Required.
	Sender Sender
	// Events the target wants; empty means DefaultEvents.
	Events []Event
	// Services whose deployments it hears of; empty means all.
	Services []string
}

// wants reports whether the target hears of service's deployments.
func (t Target) wants(service string) bool {
	return len(t.Services) == 0 || slices.Contains(t.Services, service)
}

// Status reads what runs for a service; deployer.Store implements it. The
// worker reads it to tell a degraded service and a credential fallback.
type Status interface {
	ServiceStatus(ctx context.Context, name string) (deployer.ServiceStatus, error)
}

// Config is what New needs.
type Config struct {
	// Targets receive the messages. New fails without any.
	Targets []Target
	// Status tells degraded services and credential fallbacks. Required.
	Status Status
	// PublicURL is deployd's public_url: messages link to the deployment
	// on the status page. No link without it.
	PublicURL string
	Logger    zerolog.Logger
	// Count, if set, counts each send's result per target kind
	// (deployd_notifications_total).
	Count func(kind, result string)
	// QueueSize, Attempts, Backoff (the first wait between attempts; it
	// doubles) and Timeout (per attempt) default to the Default* values.
	QueueSize int
	Attempts  int
	Backoff   time.Duration
	Timeout   time.Duration
	// Now is the clock of the messages' time; nil means time.Now.
	Now func() time.Time
}

// Notifier sends notifications about deployments to its targets. Notify
// never blocks: it queues the deployment for the Notifier's one worker,
// and when the queue is full the oldest waiting deployment is dropped
// (logged and counted). A nil *Notifier does nothing. Its methods are
// safe for concurrent use.
type Notifier struct {
	targets   []Target
	status    Status
	publicURL string
	log       zerolog.Logger
	count     func(kind, result string)
	size      int
	attempts  int
	backoff   time.Duration
	timeout   time.Duration
	now       func() time.Time

	ctx    context.Context // the worker's; cancelled when Close gives up
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{} // capacity 1: a job is waiting

	mu     sync.Mutex
	jobs   []job // oldest first, at most size
	closed bool
}

// job is one finished deployment and the targets that may hear of it.
type job struct {
	d       deployer.Deployment
	targets []int
}

// New checks cfg and starts the worker; call Close to stop it.
func New(cfg Config) (*Notifier, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("new notifier: no targets")
	}
	if cfg.Status == nil {
		return nil, errors.New("new notifier: no service status")
	}
	for i, t := range cfg.Targets {
		if t.Sender == nil {
			return nil, fmt.Errorf("new notifier: target %d (%s) has no sender", i, t.Kind)
		}
		for _, e := range t.Events {
			if !slices.Contains(Events(), e) {
				return nil, fmt.Errorf("new notifier: target %d (%s): unknown event %q", i, t.Kind, e)
			}
		}
		if len(t.Events) == 0 {
			cfg.Targets[i].Events = DefaultEvents()
		}
	}
	n := &Notifier{
		targets:   slices.Clone(cfg.Targets),
		status:    cfg.Status,
		publicURL: linkBase(cfg.PublicURL),
		log:       cfg.Logger.With().Str("component", "notify").Logger(),
		count:     cfg.Count,
		size:      orDefault(cfg.QueueSize, DefaultQueueSize),
		attempts:  orDefault(cfg.Attempts, DefaultAttempts),
		backoff:   orDefault(cfg.Backoff, DefaultBackoff),
		timeout:   orDefault(cfg.Timeout, DefaultTimeout),
		now:       cfg.Now,
		done:      make(chan struct{}),
		wake:      make(chan struct{}, 1),
	}
	if n.count == nil {
		n.count = func(string, string) {}
	}
	if n.now == nil {
		n.now = time.Now
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	go n.work()
	return n, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// candidates returns the events a deployment in state may turn out to be.
func candidates(state deployer.State) []Event {
	switch state {
	case deployer.StateFailed:
		return []Event{EventDegraded, EventFailed}
	case deployer.StateRolledBack:
		return []Event{EventRolledBack}
	case deployer.StateSucceeded:
		return []Event{EventCredentialFallback, EventSucceeded}
	}
	return nil
}

// Notify is a deployer Notify hook (deployer.QueueConfig.Notify): it
// queues the final states of deployments that are not dry runs for the
// targets that may want them, and never blocks.
func (n *Notifier) Notify(d deployer.Deployment) {
	if n == nil || d.DryRun {
		return
	}
	events := candidates(d.State)
	if len(events) == 0 {
		return
	}
	var targets []int
	for i, t := range n.targets {
		if t.wants(d.Service) && slices.ContainsFunc(events, func(e Event) bool { return slices.Contains(t.Events, e) }) {
			targets = append(targets, i)
		}
	}
	if len(targets) == 0 {
		return
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	var dropped *job
	if len(n.jobs) == n.size {
		dropped = &job{d: n.jobs[0].d, targets: n.jobs[0].targets}
		n.jobs = slices.Delete(n.jobs, 0, 1)
	}
	n.jobs = append(n.jobs, job{d: d, targets: targets})
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
	if dropped != nil {
		for _, i := range dropped.targets {
			n.count(n.targets[i].Kind, ResultDropped)
		}
		n.log.Warn().Str(deployer.KeyService, dropped.d.Service).Int64(deployer.KeyDeploymentID, dropped.d.ID).
			Int("queue_size", n.size).Msg("notification dropped: too many waiting; the oldest goes first")
	}
}

// Close stops taking deployments and waits up to wait for the queued
// ones to be sent; then it abandons the rest (the send in flight is
// cancelled).
func (n *Notifier) Close(wait time.Duration) {
	if n == nil {
		return
	}
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-n.done:
	case <-t.C:
		n.log.Warn().Dur("waited", wait).Msg("notifications abandoned at shutdown")
		n.cancel()
		<-n.done
	}
	n.cancel()
}

// next takes the oldest queued job; ok is false when the Notifier is
// closed and nothing is left.
func (n *Notifier) next() (j job, ok bool) {
	for {
		n.mu.Lock()
		if len(n.jobs) > 0 {
			j = n.jobs[0]
			n.jobs = slices.Delete(n.jobs, 0, 1)
			n.mu.Unlock()
			return j, true
		}
		closed := n.closed
		n.mu.Unlock()
		if closed {
			return job{}, false
		}
		<-n.wake
	}
}

func (n *Notifier) work() {
	defer close(n.done)
	for {
		j, ok := n.next()
		if !ok {
			return
		}
		if n.ctx.Err() != nil {
			continue // Close gave up: drain without sending
		}
		n.deliver(j)
	}
}

// deliver builds the job's message for each of its targets and sends it.
func (n *Notifier) deliver(j job) {
	events := n.events(j)
	for _, i := range j.targets {
		t := n.targets[i]
		idx := slices.IndexFunc(events, func(e Event) bool { return slices.Contains(t.Events, e) })
		if idx < 0 {
			continue
		}
		m := newMessage(j.d, events[idx], n.publicURL, n.now())
		n.send(t, m)
	}
}

// events returns what the job's deployment turned out to be, the most
// specific first: degraded before failed, credential_fallback before
// succeeded. The service's status is read only when a target wants to
// know.
func (n *Notifier) events(j job) []Event {
	d := j.d
	var special Event
	switch d.State {
	case deployer.StateFailed:
		special = EventDegraded
	case deployer.StateSucceeded:
		special = EventCredentialFallback
	}
	wanted := special != "" && slices.ContainsFunc(j.targets, func(i int) bool { return slices.Contains(n.targets[i].Events, special) })
	plain := candidates(d.State)
	plain = plain[len(plain)-1:]
	if !wanted {
		return plain
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.timeout)
	defer cancel()
	st, err := n.status.ServiceStatus(ctx, d.Service)
	if err != nil {
		n.log.Warn().Err(err).Str(deployer.KeyService, d.Service).Int64(deployer.KeyDeploymentID, d.ID).
			Msg("read service status for a notification")
		return plain
	}
	if st.LastDeploymentID != d.ID { // a later deployment changed it since
		return plain
	}
	if (special == EventDegraded && st.Degraded) || (special == EventCredentialFallback && st.CredentialNote != "") {
		return []Event{special, plain[0]}
	}
	return plain
}

// send delivers m to t, with up to n.attempts attempts and a doubling
// wait between them; each failure is logged (never the receiver's URL)
// and counted.
func (n *Notifier) send(t Target, m Message) {
	log := n.log.With().Str(deployer.KeyService, m.Service).Int64(deployer.KeyDeploymentID, m.DeploymentID).
		Str("kind", t.Kind).Str("event", string(m.Event)).Str("notification_id", m.ID).Logger()
	wait := n.backoff
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(log.WithContext(n.ctx), n.timeout)
		err := t.Sender.Send(ctx, m)
		cancel()
		if err == nil {
			n.count(t.Kind, ResultSent)
			log.Info().Int("attempt", attempt).Msg("notification sent")
			return
		}
		if attempt >= n.attempts || n.ctx.Err() != nil {
			n.count(t.Kind, ResultFailed)
			log.Error().Err(err).Int("attempt", attempt).Msg("notification not sent; giving up")
			return
		}
		n.count(t.Kind, ResultRetried)
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("notification not sent; retrying")
		timer := time.NewTimer(wait)
		select {
		case <-n.ctx.Done():
		case <-timer.C:
		}
		timer.Stop()
		wait *= 2
	}
}
