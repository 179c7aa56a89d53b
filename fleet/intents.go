package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Intents is an agent's intake of its intents, through the durable
// consumer the hub made for its host. It hands out each service's intents
// in increasing Seq only: an intent not newer than the last handed out for
// its service (a redelivery, or an older one a newer has overtaken) is
// acknowledged and dropped. Next must not be called concurrently; the
// Pending it returns may be settled from another goroutine.
type Intents struct {
	host string
	cons jetstream.Consumer
	// OnSkip, when set, hears of each intent dropped and why.
	OnSkip func(subject, reason string)

	mu   sync.Mutex
	last map[string]int64 // service → newest Seq handed out
}

// OpenIntents binds to host's intent consumer. It needs only the rights an
// agent has: to read its consumer's state and take messages from it.
func OpenIntents(ctx context.Context, js jetstream.JetStream, host string) (*Intents, error) {
	if err := ValidName(host); err != nil {
		return nil, fmt.Errorf("open intents: host: %w", err)
	}
	cons, err := js.Consumer(ctx, IntentStream, AgentConsumer(host))
	if err != nil {
		return nil, fmt.Errorf("open intents for %s (has the hub added the host?): %w", host, err)
	}
	return &Intents{host: host, cons: cons, last: map[string]int64{}}, nil
}

// Pending is an intent handed out and not yet settled.
type Pending struct {
	Intent Intent
	msg    jetstream.Msg
}

// Working tells JetStream that the agent is still at the intent, so that
// it is not handed out again while the agent works.
func (p *Pending) Working() error {
	if err := p.msg.InProgress(); err != nil {
		return fmt.Errorf("intent %d: say in progress: %w", p.Intent.Seq, err)
	}
	return nil
}

// Done acknowledges the intent: it is not handed out again.
func (p *Pending) Done(ctx context.Context) error {
	if err := p.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("intent %d: ack: %w", p.Intent.Seq, err)
	}
	return nil
}

// Next waits for the next intent to act on and returns it, until ctx ends
// (then it returns ctx's error). Intents that do not parse, name another
// host, or are not newer than the last handed out for their service are
// acknowledged and dropped (OnSkip hears of them).
func (i *Intents) Next(ctx context.Context) (*Pending, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		msg, err := nextMsg(ctx, i.cons)
		if err != nil {
			return nil, fmt.Errorf("next intent for %s: %w", i.host, err)
		}
		if msg == nil {
			continue
		}
		in, reason := i.accept(msg)
		if reason == "" {
			return &Pending{Intent: in, msg: msg}, nil
		}
		if i.OnSkip != nil {
			i.OnSkip(msg.Subject(), reason)
		}
		if err := msg.Term(); err != nil {
			return nil, fmt.Errorf("drop intent on %s: %w", msg.Subject(), err)
		}
	}
}

// nextMsg waits up to a few seconds for cons's next message. It returns
// nil and no error when none came in that time, and ctx's error once ctx
// ends.
func nextMsg(ctx context.Context, cons jetstream.Consumer) (jetstream.Msg, error) {
	fetchCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := cons.Next(jetstream.FetchContext(fetchCtx))
	switch {
	case err == nil:
		return msg, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages), errors.Is(err, context.DeadlineExceeded):
		return nil, nil
	}
	return nil, err
}

// accept decides whether msg is an intent to hand out; if not, the reason
// says why.
func (i *Intents) accept(msg jetstream.Msg) (Intent, string) {
	in, err := DecodeIntent(msg.Data())
	if err != nil {
		return Intent{}, err.Error()
	}
	if in.Host != i.host || msg.Subject() != IntentSubject(in.Host, in.Service) {
		return Intent{}, fmt.Sprintf("intent for host %s service %s on subject %s", in.Host, in.Service, msg.Subject())
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if last := i.last[in.Service]; in.Seq <= last {
		return Intent{}, fmt.Sprintf("intent %d is not newer than %d, already taken", in.Seq, last)
	}
	i.last[in.Service] = in.Seq
	return in, ""
}
