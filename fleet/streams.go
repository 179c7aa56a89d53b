package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// IntentAckWait is how long an agent may hold an intent without acking it
// or saying it is still at work before JetStream hands it out again.
const IntentAckWait = 30 * time.Second

// Setup creates or updates the fleet's streams and the hub's report
// consumer. Only the hub calls it: agents have no right to.
func Setup(ctx context.Context, js jetstream.JetStream) error {
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        IntentStream,
		Description: "deployd deploy intents, the newest per host and service",
		Subjects:    []string{IntentPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		// Latest wins: a newer intent for a host and service replaces the
		// older one, whether or not the agent read it.
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardOld,
	}); err != nil {
		return fmt.Errorf("set up stream %s: %w", IntentStream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        ReportStream,
		Description: "deployd agents' steps and results",
		Subjects:    []string{ReportPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
	}); err != nil {
		return fmt.Errorf("set up stream %s: %w", ReportStream, err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, ReportStream, jetstream.ConsumerConfig{
		Durable:       HubConsumer,
		FilterSubject: ReportPrefix + ".>",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
	}); err != nil {
		return fmt.Errorf("set up consumer %s: %w", HubConsumer, err)
	}
	return nil
}

// AddAgent creates or updates host's durable intent consumer, which sees
// only host's intents. Only the hub calls it; an agent binds to the
// consumer it made (OpenIntents).
func AddAgent(ctx context.Context, js jetstream.JetStream, host string) error {
	if err := ValidName(host); err != nil {
		return fmt.Errorf("add agent: host: %w", err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, IntentStream, jetstream.ConsumerConfig{
		Durable:       AgentConsumer(host),
		Description:   "intents for host " + host,
		FilterSubject: IntentPrefix + "." + host + ".>",
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       IntentAckWait,
	}); err != nil {
		return fmt.Errorf("add agent %s: %w", host, err)
	}
	return nil
}

// ErrStale is returned by Publish for an intent whose Seq is not above
// the one already published for its host and service.
var ErrStale = errors.New("a newer intent is already published")

// Publish publishes in on its host's subject, where it replaces any older
// intent for the service. It refuses with ErrStale an intent not newer
// than the one the stream holds, so that the stream never goes backwards.
// It returns once JetStream has stored the intent.
func Publish(ctx context.Context, js jetstream.JetStream, in Intent) error {
	if err := in.Validate(); err != nil {
		return fmt.Errorf("publish intent: %w", err)
	}
	subject := IntentSubject(in.Host, in.Service)
	stream, err := js.Stream(ctx, IntentStream)
	if err != nil {
		return fmt.Errorf("publish intent: %w", err)
	}
	opts := []jetstream.PublishOpt{}
	last, err := stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(0))
	case err != nil:
		return fmt.Errorf("publish intent: read the last on %s: %w", subject, err)
	default:
		prev, err := DecodeIntent(last.Data)
		if err == nil && prev.Seq >= in.Seq {
			return fmt.Errorf("publish intent %d for %s on %s: %w (%d)", in.Seq, in.Service, in.Host, ErrStale, prev.Seq)
		}
		// Another publisher racing this one makes the publish fail
		// rather than interleave.
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(last.Sequence))
	}
	data, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("publish intent: %w", err)
	}
	if _, err := js.Publish(ctx, subject, data, opts...); err != nil {
		return fmt.Errorf("publish intent %d for %s on %s: %w", in.Seq, in.Service, in.Host, err)
	}
	return nil
}
