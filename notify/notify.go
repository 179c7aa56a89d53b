// Package notify turns deployment outcomes into messages and delivers
// them: a failed or rolled back deployment, a service left degraded, a
// registry credential that was refused so that the next source was used,
// and, for targets that ask, a success. Targets are shoutrrr URLs (Slack,
// Discord, Microsoft Teams, ntfy, e-mail and the rest of shoutrrr's
// services) or a generic JSON webhook signed with HMAC-SHA256.
//
// Its Notifier is a subscriber of deployment events, handed to the
// queue's Notify hook. Notify only queues: a worker per receiver builds
// the messages and sends them, retrying with backoff, so a receiver that
// is slow, down or hanging never holds up or fails a deployment, nor
// delays the other receivers.
package notify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	// PublicURL is deployd's public_url, an absolute http(s) URL without
	// credentials (as the configuration checks it): messages link to the
	// deployment on the status page. No link without it.
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
// never blocks: it queues the deployment for each target that may want
// it, and each target has a worker of its own, so that a receiver that
// hangs delays only its own messages. When a target's queue is full its
// oldest waiting deployment is dropped (logged and counted). A nil
// *Notifier does nothing. Its methods are safe for concurrent use.
type Notifier struct {
	workers   []*worker
	status    Status
	publicURL string
	log       zerolog.Logger
	count     func(kind, result string)
	size      int
	attempts  int
	backoff   time.Duration
	timeout   time.Duration
	now       func() time.Time

	ctx    context.Context // the workers'; cancelled when Close gives up
	cancel context.CancelFunc
}

// worker sends one target's messages, oldest first.
type worker struct {
	n    *Notifier
	t    Target
	wake chan struct{} // capacity 1: a deployment is waiting
	done chan struct{}

	mu     sync.Mutex
	queue  []deployer.Deployment // oldest first, at most n.size
	closed bool
}

// New checks cfg and starts a worker per target; call Close to stop them.
func New(cfg Config) (*Notifier, error) {
	if len(cfg.Targets) == 0 {
		return nil, errors.New("new notifier: no targets")
	}
	if cfg.Status == nil {
		return nil, errors.New("new notifier: no service status")
	}
	targets := slices.Clone(cfg.Targets)
	for i, t := range targets {
		if t.Sender == nil {
			return nil, fmt.Errorf("new notifier: target %d (%s) has no sender", i, t.Kind)
		}
		for _, e := range t.Events {
			if !slices.Contains(Events(), e) {
				return nil, fmt.Errorf("new notifier: target %d (%s): unknown event %q", i, t.Kind, e)
			}
		}
		if len(t.Events) == 0 {
			targets[i].Events = DefaultEvents()
		}
	}
	n := &Notifier{
		status:    cfg.Status,
		publicURL: strings.TrimRight(cfg.PublicURL, "/"),
		log:       cfg.Logger.With().Str("component", "notify").Logger(),
		count:     cfg.Count,
		size:      orDefault(cfg.QueueSize, DefaultQueueSize),
		attempts:  orDefault(cfg.Attempts, DefaultAttempts),
		backoff:   orDefault(cfg.Backoff, DefaultBackoff),
		timeout:   orDefault(cfg.Timeout, DefaultTimeout),
		now:       cfg.Now,
	}
	if n.count == nil {
		n.count = func(string, string) {}
	}
	if n.now == nil {
		n.now = time.Now
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for _, t := range targets {
		w := &worker{n: n, t: t, wake: make(chan struct{}, 1), done: make(chan struct{})}
		n.workers = append(n.workers, w)
		go w.work()
	}
	return n, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// candidates returns the events a deployment in state may turn out to
// be, the most specific first.
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

// wantsAny reports whether the target hears of service's deployments and
// of one of events.
func (t Target) wantsAny(service string, events []Event) bool {
	return t.wants(service) && slices.ContainsFunc(events, func(e Event) bool { return slices.Contains(t.Events, e) })
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
	for _, w := range n.workers {
		if w.t.wantsAny(d.Service, events) {
			w.add(d)
		}
	}
}

// add queues d, dropping the oldest waiting deployment when the queue is
// full.
func (w *worker) add(d deployer.Deployment) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	var dropped *deployer.Deployment
	if len(w.queue) == w.n.size {
		oldest := w.queue[0]
		dropped = &oldest
		w.queue = slices.Delete(w.queue, 0, 1)
	}
	w.queue = append(w.queue, d)
	w.mu.Unlock()
	w.signal()
	if dropped != nil {
		w.n.count(w.t.Kind, ResultDropped)
		w.n.log.Warn().Str("kind", w.t.Kind).Str(deployer.KeyService, dropped.Service).Int64(deployer.KeyDeploymentID, dropped.ID).
			Int("queue_size", w.n.size).Msg("notification dropped: too many waiting; the oldest goes first")
	}
}

func (w *worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Close stops taking deployments and waits up to wait for the queued
// ones to be sent; then it abandons the rest (the sends in flight are
// cancelled).
func (n *Notifier) Close(wait time.Duration) {
	if n == nil {
		return
	}
	for _, w := range n.workers {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.signal()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for _, w := range n.workers {
		select {
		case <-w.done:
		case <-t.C:
			n.log.Warn().Dur("waited", wait).Msg("notifications abandoned at shutdown")
			n.cancel()
			<-w.done
		}
	}
	n.cancel()
	for _, w := range n.workers {
		<-w.done
	}
}

// next takes the oldest queued deployment; ok is false when the worker is
// closed and nothing is left.
func (w *worker) next() (d deployer.Deployment, ok bool) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			d = w.queue[0]
			w.queue = slices.Delete(w.queue, 0, 1)
			w.mu.Unlock()
			return d, true
		}
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return deployer.Deployment{}, false
		}
		<-w.wake
	}
}

func (w *worker) work() {
	defer close(w.done)
	for {
		d, ok := w.next()
		if !ok {
			return
		}
		if w.n.ctx.Err() != nil {
			continue // Close gave up: drain without sending
		}
		if e, ok := w.event(d); ok {
			w.send(newMessage(d, e, w.n.publicURL, w.n.now()))
		}
	}
}

// event returns what d turned out to be, of what the target wants: the
// most specific event first (degraded before failed, credential_fallback
// before succeeded). The service's status is read only when the target
// wants to know.
func (w *worker) event(d deployer.Deployment) (Event, bool) {
	var wanted []Event
	for _, e := range candidates(d.State) {
		if slices.Contains(w.t.Events, e) {
			wanted = append(wanted, e)
		}
	}
	if len(wanted) == 0 {
		return "", false
	}
	special := wanted[0]
	if special != EventDegraded && special != EventCredentialFallback {
		return special, true
	}
	if w.special(d, special) {
		return special, true
	}
	if len(wanted) > 1 {
		return wanted[1], true
	}
	return "", false
}

// special reports whether d left its service degraded or fell back to
// another credential source, as the service's status says; it does not
// when a later deployment changed the status since.
func (w *worker) special(d deployer.Deployment, e Event) bool {
	ctx, cancel := context.WithTimeout(w.n.ctx, w.n.timeout)
	defer cancel()
	st, err := w.n.status.ServiceStatus(ctx, d.Service)
	if err != nil {
		w.n.log.Warn().Err(err).Str(deployer.KeyService, d.Service).Int64(deployer.KeyDeploymentID, d.ID).
			Msg("read service status for a notification")
		return false
	}
	if st.LastDeploymentID != d.ID {
		return false
	}
	if e == EventDegraded {
		return st.Degraded
	}
	return st.CredentialNote != ""
}

// send delivers m, with up to n.attempts attempts and a doubling wait
// between them; each failure is logged (never the receiver's URL) and
// counted.
func (w *worker) send(m Message) {
	n, t := w.n, w.t
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
