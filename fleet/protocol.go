// Package fleet is how a hub deployd hands deployments to agent deployds
// on other hosts over NATS JetStream: the messages (Intent, Report), the
// subjects they travel on, the streams and consumers the hub sets up, the
// sealing of the pull credential an intent carries, and the two ends that
// use them (the hub's publisher, the agent's intake of its intents).
//
// Intents keep only the newest message per host and service (the intent
// stream has MaxMsgsPerSubject 1), and each agent reads them through a
// durable consumer of its own: an agent that was down finds the newest
// intent for each of its services when it returns, and never an older one
// after a newer (Intents skips any intent whose Seq is not above the last
// one it handed out for the service).
//
// Of the project it imports only deployer.
package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/deployd/deployd/deployer"
)

// The streams, subjects and consumers of the fleet. Subjects end in
// HOST.SERVICE tokens, so that NATS permissions can give each agent its own
// subjects only.
const (
	// IntentStream holds the intents, one (the newest) per host and service.
	IntentStream = "DEPLOYD_INTENTS"
	// ReportStream holds the agents' progress and results.
	ReportStream = "DEPLOYD_REPORTS"
	// IntentPrefix starts every intent subject: IntentPrefix.HOST.SERVICE.
	IntentPrefix = "deployd.intent"
	// ReportPrefix starts every report subject: ReportPrefix.HOST.SERVICE.
	ReportPrefix = "deployd.report"
	// HubConsumer is the hub's durable consumer of the report stream.
	HubConsumer = "hub"
)

// IntentSubject returns the subject of host's intents for service.
func IntentSubject(host, service string) string {
	return IntentPrefix + "." + host + "." + service
}

// ReportSubject returns the subject of host's reports for service.
func ReportSubject(host, service string) string {
	return ReportPrefix + "." + host + "." + service
}

// AgentConsumer returns the name of host's durable intent consumer.
func AgentConsumer(host string) string { return "agent-" + host }

// ErrBadName is wrapped by ValidName's errors.
var ErrBadName = errors.New("must be 1 to 64 of [A-Za-z0-9_-]")

// ValidName checks that a host or service name can be a subject token and
// a consumer name: 1 to 64 of [A-Za-z0-9_-]. It returns an error wrapping
// ErrBadName otherwise.
func ValidName(name string) error {
	if name == "" || len(name) > 64 ||
		strings.Trim(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
		return fmt.Errorf("name %q: %w", name, ErrBadName)
	}
	return nil
}

// Intent asks one host to put one digest of one service in place.
type Intent struct {
	// Seq orders a service's intents: a newer intent has a larger Seq (the
	// hub's deployment id). An agent never acts on an intent whose Seq is
	// not above the last it acted on for the service.
	Seq       int64  `json:"seq"`
	RolloutID int64  `json:"rollout_id"`
	Host      string `json:"host"`
	Service   string `json:"service"`
	// Image is the repository without tag or digest; the agent refuses an
	// intent whose image is not the one its own configuration names.
	Image  string `json:"image"`
	Tag    string `json:"tag,omitempty"`
	Digest string `json:"digest"`
	Force  bool   `json:"force,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
	// Trigger is why the hub deploys, for the agent's history.
	Trigger deployer.Trigger `json:"trigger"`
	// Credential is the pull credential sealed for the agent's curve key
	// (see Seal), empty for an anonymous pull.
	Credential []byte    `json:"credential,omitempty"`
	IssuedAt   time.Time `json:"issued_at"`
}

// Errors returned by DecodeIntent for a well-formed message that is no
// valid intent.
var (
	ErrBadIntent = errors.New("invalid intent")
)

// DecodeIntent parses an intent message and checks its fields: names that
// are subject tokens, a positive Seq, a well-formed digest and tag. It
// returns an error wrapping ErrBadIntent for a message that is not one.
func DecodeIntent(data []byte) (Intent, error) {
	var in Intent
	if err := json.Unmarshal(data, &in); err != nil {
		return Intent{}, fmt.Errorf("%w: %w", ErrBadIntent, err)
	}
	if err := in.Validate(); err != nil {
		return Intent{}, err
	}
	return in, nil
}

// Validate checks an intent's fields; its errors wrap ErrBadIntent.
func (in Intent) Validate() error {
	switch {
	case in.Seq <= 0:
		return fmt.Errorf("%w: seq %d is not positive", ErrBadIntent, in.Seq)
	case ValidName(in.Host) != nil:
		return fmt.Errorf("%w: host: %w", ErrBadIntent, ValidName(in.Host))
	case ValidName(in.Service) != nil:
		return fmt.Errorf("%w: service: %w", ErrBadIntent, ValidName(in.Service))
	case in.Image == "":
		return fmt.Errorf("%w: no image", ErrBadIntent)
	case !deployer.ValidDigest(in.Digest):
		return fmt.Errorf("%w: %w", ErrBadIntent, deployer.ErrBadDigest)
	case in.Tag != "" && !deployer.ValidTag(in.Tag):
		return fmt.Errorf("%w: %w", ErrBadIntent, deployer.ErrBadTag)
	}
	return nil
}

// ReportKind says what a Report carries.
type ReportKind string

// The kinds of report.
const (
	// ReportStep carries one step of the agent's step log.
	ReportStep ReportKind = "step"
	// ReportResult carries the end of the agent's deployment.
	ReportResult ReportKind = "result"
)

// Report is what an agent tells the hub about one intent: a step as it
// goes, then the result.
type Report struct {
	Kind    ReportKind `json:"kind"`
	Host    string     `json:"host"`
	Service string     `json:"service"`
	// Seq is the Seq of the intent reported on.
	Seq int64 `json:"seq"`
	// Step is set for ReportStep.
	Step *deployer.Step `json:"step,omitempty"`
	// State, Digest (what the intent deployed), Running (the digest that
	// runs for the service on the host afterwards, "" if unknown) and the
	// failure fields are set for ReportResult.
	State      deployer.State `json:"state,omitempty"`
	Digest     string         `json:"digest,omitempty"`
	Running    string         `json:"running,omitempty"`
	ErrorClass string         `json:"error_class,omitempty"`
	Error      string         `json:"error,omitempty"`
	Hint       string         `json:"hint,omitempty"`
}

// DecodeReport parses a report message and checks that its names are
// subject tokens and its kind known; its errors wrap ErrBadReport.
func DecodeReport(data []byte) (Report, error) {
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return Report{}, fmt.Errorf("%w: %w", ErrBadReport, err)
	}
	switch {
	case ValidName(r.Host) != nil:
		return Report{}, fmt.Errorf("%w: host: %w", ErrBadReport, ValidName(r.Host))
	case ValidName(r.Service) != nil:
		return Report{}, fmt.Errorf("%w: service: %w", ErrBadReport, ValidName(r.Service))
	case r.Kind == ReportStep && r.Step == nil:
		return Report{}, fmt.Errorf("%w: step report without a step", ErrBadReport)
	case r.Kind == ReportResult && (r.State == "" || !r.State.Final()):
		return Report{}, fmt.Errorf("%w: result in state %q", ErrBadReport, r.State)
	case r.Kind != ReportStep && r.Kind != ReportResult:
		return Report{}, fmt.Errorf("%w: kind %q", ErrBadReport, r.Kind)
	}
	return r, nil
}

// ErrBadReport is wrapped by DecodeReport's errors.
var ErrBadReport = errors.New("invalid report")
