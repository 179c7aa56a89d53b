// Package deployer owns deployments: the requests that ask for one, the
// queue that orders them per service, the reconciler that catches up with
// the registry, the never-backwards policy (Guard), and the vocabulary
// every other package speaks about them (Deployment, Delivery, State,
// Failure, Credential).
//
// It imports none of deployd's other packages. What it needs from outside
// it declares as small interfaces that the command wires up: a Store
// (deployer/sqlite), an Executor that carries deployments out on a host
// (deployer/podman), registry Credentials (auth).
package deployer

import (
	"errors"
	"strings"
	"time"
)

// State is where a deployment is in its life.
//
//	queued → running → succeeded | unchanged | failed | rolled_back
//	queued → superseded (a newer request for the same service arrived first)
//	running → interrupted (deployd stopped while it ran)
type State string

// The states of a deployment.
const (
	StateQueued      State = "queued"
	StateRunning     State = "running"
	StateSucceeded   State = "succeeded"
	StateUnchanged   State = "unchanged"
	StateFailed      State = "failed"
	StateRolledBack  State = "rolled_back"
	StateSuperseded  State = "superseded"
	StateInterrupted State = "interrupted"
)

// Final reports whether s is an end state.
func (s State) Final() bool {
	switch s {
	case StateQueued, StateRunning:
		return false
	}
	return true
}

// TriggerKind says what asked for a deployment.
type TriggerKind string

// The kinds of trigger.
const (
	TriggerWebhook   TriggerKind = "webhook"
	TriggerManual    TriggerKind = "manual"
	TriggerRollback  TriggerKind = "rollback"
	TriggerReconcile TriggerKind = "reconcile"
)

// Trigger records why a deployment exists.
type Trigger struct {
	Kind TriggerKind `json:"kind"`
	// DeliveryID and Event name the webhook delivery (Kind webhook).
	DeliveryID string `json:"delivery_id,omitempty"`
	Event      string `json:"event,omitempty"`
	// Subject is who asked (Kind manual or rollback): the API token's subject.
	Subject string `json:"subject,omitempty"`
	// InstallationID is the GitHub App installation named by the delivery, 0 if none.
	InstallationID int64 `json:"installation_id,omitempty"`
	// RunID and RunNumber identify the workflow run behind a workflow_run trigger.
	RunID     int64 `json:"run_id,omitempty"`
	RunNumber int   `json:"run_number,omitempty"`
	// Commit is the commit the event is about, when it names one: a
	// workflow run's head_sha, a package version's revision label or
	// target_oid. Release sets match package events to runs by it.
	Commit string `json:"commit,omitempty"`
}

// Request asks for one service to be deployed.
type Request struct {
	Service string  `json:"service"`
	Tag     string  `json:"tag,omitempty"`
	Digest  string  `json:"digest,omitempty"` // "sha256:<64 hex>"; wins over Tag when set
	Trigger Trigger `json:"trigger"`
	// Force deploys even when the digest is already running.
	Force bool `json:"force,omitempty"`
	// DryRun resolves and plans but changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Note, when set, says how the request was read, e.g. that a webhook's
	// digest was unusable and the tag is resolved instead. Queuing the
	// request starts the deployment's step log with it, as a step named
	// StepRequest.
	Note string `json:"note,omitempty"`
	// ReleaseID is the release the deployment is a member of, 0 for none.
	ReleaseID int64 `json:"release_id,omitempty"`
}

// tagChars are the bytes an image tag is made of.
const tagChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"

// ValidTag reports whether tag is a well-formed image tag:
// [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
func ValidTag(tag string) bool {
	return tag != "" && len(tag) <= 128 && tag[0] != '.' && tag[0] != '-' &&
		strings.Trim(tag, tagChars) == ""
}

// ValidDigest reports whether d is a well-formed sha256 digest: "sha256:"
// followed by 64 lower-case hex digits.
func ValidDigest(d string) bool {
	hexDigits, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexDigits) != 64 {
		return false
	}
	for i := 0; i < len(hexDigits); i++ {
		if c := hexDigits[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ShortDigest returns the first 12 hex digits of a sha256 digest, as
// step logs and messages show it.
func ShortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// Errors returned by Request.Validate.
var (
	ErrNoService  = errors.New("request names no service")
	ErrBadTag     = errors.New("tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
	ErrBadDigest  = errors.New("digest must be sha256: followed by 64 lower-case hex digits")
	ErrNoTagOrRef = errors.New("request has neither a tag nor a digest")
)

// Validate checks the request's own fields (not whether the service exists).
func (r Request) Validate() error {
	switch {
	case r.Service == "":
		return ErrNoService
	case r.Tag == "" && r.Digest == "":
		return ErrNoTagOrRef
	case r.Tag != "" && !ValidTag(r.Tag):
		return ErrBadTag
	case r.Digest != "" && !ValidDigest(r.Digest):
		return ErrBadDigest
	}
	return nil
}

// Step is one entry of a deployment's step log.
type Step struct {
	Name     string        `json:"name"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Outcome  string        `json:"outcome"` // ok | failed | skipped
	Message  string        `json:"message,omitempty"`
}

// StepRequest names the step that records a request's Note, first in the
// deployment's step log.
const StepRequest = "request"

// requestNote returns the Note of the request behind d, from its step log.
func requestNote(d Deployment) string {
	if len(d.Steps) > 0 && d.Steps[0].Name == StepRequest {
		return d.Steps[0].Message
	}
	return ""
}

// Deployment is one attempt to put a version of a service in place.
type Deployment struct {
	ID      int64   `json:"id"`
	Service string  `json:"service"`
	Trigger Trigger `json:"trigger"`
	Tag     string  `json:"tag,omitempty"`
	// Digest is the requested digest, or the resolved one once known.
	Digest     string     `json:"digest,omitempty"`
	Force      bool       `json:"force,omitempty"`
	DryRun     bool       `json:"dry_run,omitempty"`
	State      State      `json:"state"`
	QueuedAt   time.Time  `json:"queued_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// ErrorClass, Error and Hint explain a failure (SPEC §6 classes).
	ErrorClass string `json:"error_class,omitempty"`
	Error      string `json:"error,omitempty"`
	Hint       string `json:"hint,omitempty"`
	Steps      []Step `json:"steps,omitempty"`
	// ReleaseID is the release the deployment is a member of, 0 for none.
	ReleaseID int64 `json:"release_id,omitempty"`
	// Verification is the outcome of the verify-image step, when the
	// service verifies its images.
	Verification *Verification `json:"verification,omitempty"`
	// Host and RolloutID are set on a fleet host's deployment: the host it
	// ran on and the rollout of the deployment that sent it there.
	Host      string `json:"host,omitempty"`
	RolloutID int64  `json:"rollout_id,omitempty"`
}

// Failure classes (SPEC §6). Transient classes are retried; the others are
// reported with a hint.
const (
	ClassAuth     = "auth"
	ClassNotFound = "not_found"
	ClassNetwork  = "network"
	ClassPodman   = "podman"
	ClassHealth   = "health"
	ClassConfig   = "config"
)

// Failure is why a deployment failed: a class to branch on, the cause, and
// a hint a person can act on.
type Failure struct {
	Class string
	Hint  string
	Err   error
}

// Error returns the cause's message.
func (f *Failure) Error() string { return f.Err.Error() }

// Unwrap returns the cause.
func (f *Failure) Unwrap() error { return f.Err }

// Transient reports whether a failure may go away by itself (network, 5xx, 429).
func (f *Failure) Transient() bool { return f.Class == ClassNetwork }

// Delivery is one webhook delivery as received, and what came of it.
type Delivery struct {
	// Seq orders deliveries as the store received them; it is the paging cursor.
	Seq        int64     `json:"seq"`
	ID         string    `json:"delivery_id"` // X-GitHub-Delivery
	Event      string    `json:"event"`
	Action     string    `json:"action,omitempty"`
	BodySHA256 string    `json:"body_sha256"` // hex
	ReceivedAt time.Time `json:"received_at"`
	// Result is "queued", "ignored", "duplicate" or "rejected".
	Result string `json:"result"`
	// Reason explains an ignored, duplicate or rejected delivery.
	Reason        string  `json:"reason,omitempty"`
	DeploymentIDs []int64 `json:"deployment_ids,omitempty"`
	// Recovered is true for a delivery that arrived because deployd asked
	// GitHub to redeliver it, having found it failed in the App's delivery
	// log.
	Recovered bool `json:"recovered"`
}

// Delivery results.
const (
	ResultQueued    = "queued"
	ResultIgnored   = "ignored"
	ResultDuplicate = "duplicate"
	ResultRejected  = "rejected"
)

// Receipt is what recording a delivery produced.
type Receipt struct {
	// Duplicate is true when the delivery id or the body was seen before;
	// the delivery was then recorded as a duplicate and nothing was queued.
	Duplicate bool
	// Deployments are the ids of the deployments queued for it.
	Deployments []int64
	// Ignored, when set, says why the delivery's requests were all held
	// back (they would deploy backwards); it was recorded as ignored.
	Ignored string
	// Releases are the ids of the releases of release sets that the
	// delivery's requests were held for or joined, in the order of its
	// intakes; the delivery was recorded as queued even when Deployments
	// is empty.
	Releases []int64
	// Reason is the reason recorded with a delivery that went to
	// releases: which release each intake went to, after any note on
	// requests held back. Empty otherwise.
	Reason string
}
