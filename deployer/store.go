package deployer

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by stores for a deployment or service they do not hold.
var ErrNotFound = errors.New("not found")

// ServiceStatus is what runs for a service now, as deployd last left it.
type ServiceStatus struct {
	Name string `json:"name"`
	// Tag and Digest are what runs; empty before the first deployment.
	Tag    string `json:"tag,omitempty"`
	Digest string `json:"digest,omitempty"`
	// PreviousDigest is what ran before Digest, the target of a rollback.
	PreviousDigest string `json:"previous_digest,omitempty"`
	// Container is the name of the running container (strategy container).
	Container string `json:"container,omitempty"`
	// LastDeploymentID is the newest deployment of the service, 0 if none.
	LastDeploymentID int64 `json:"last_deployment_id,omitempty"`
	// LastRunNumber and LastRunID identify the newest workflow run that
	// deployed. Run ids grow across all of a repository's workflows; run
	// numbers count per workflow and are shown for people.
	LastRunNumber int   `json:"last_run_number,omitempty"`
	LastRunID     int64 `json:"last_run_id,omitempty"`
	// Credential is the registry credential source the last deployment
	// used; CredentialNote says why earlier sources were passed over.
	Credential     string `json:"credential,omitempty"`
	CredentialNote string `json:"credential_note,omitempty"`
	// Degraded is set when a failure left the service in an unknown state.
	Degraded  bool      `json:"degraded,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Page selects a slice of a newest-first listing.
type Page struct {
	// Limit is the most rows to return; stores clamp it to [1, 500], 0 means 50.
	Limit int
	// Before, when not zero, returns only rows older than this cursor
	// (a deployment id, or a delivery's Seq).
	Before int64
}

// Store is the durable state behind the deployer. Implementations are safe
// for concurrent use, and each method either takes full effect or none.
type Store interface {
	// RecordDelivery commits a webhook delivery and queues its requests in one
	// transaction. If a delivery with the same ID or the same BodySHA256 was
	// recorded before (other than as a duplicate), it records d with result
	// "duplicate" and a reason naming that delivery, queues nothing, changes
	// nothing else and returns Receipt{Duplicate: true}. Queuing a request
	// supersedes the queued deployments of its service; a request's Note
	// becomes the first step of the deployment's log (StepRequest).
	RecordDelivery(ctx context.Context, d Delivery, reqs []Request) (Receipt, error)
	// Enqueue queues a request that comes from no delivery (manual, rollback,
	// reconcile), superseding the queued deployments of its service, with
	// its Note as the first step as RecordDelivery does.
	Enqueue(ctx context.Context, r Request) (Deployment, error)
	// ClaimNext marks the newest queued deployment of service running and
	// returns it with its step log so far; ok is false when none is queued.
	ClaimNext(ctx context.Context, service string) (d Deployment, ok bool, err error)
	// AppendStep adds a step to a deployment's step log.
	AppendStep(ctx context.Context, id int64, s Step) error
	// Finish records a deployment's end state, resolved digest and failure, if any.
	Finish(ctx context.Context, d Deployment) error
	// InterruptRunning marks every running deployment interrupted and
	// returns their ids, oldest first. Called once at start-up.
	InterruptRunning(ctx context.Context) ([]int64, error)
	// QueuedServices lists the services with queued deployments.
	QueuedServices(ctx context.Context) ([]string, error)

	// Deployment returns one deployment with its step log, or ErrNotFound.
	Deployment(ctx context.Context, id int64) (Deployment, error)
	// Deployments lists deployments newest first, of one service if service is not empty.
	Deployments(ctx context.Context, service string, p Page) ([]Deployment, error)
	// Deliveries lists webhook deliveries newest first, duplicates included.
	Deliveries(ctx context.Context, p Page) ([]Delivery, error)

	// ServiceStatus returns what runs for a service; a service never deployed
	// yields a zero status with its Name set, not an error.
	ServiceStatus(ctx context.Context, name string) (ServiceStatus, error)
	// SetServiceStatus replaces what runs for a service.
	SetServiceStatus(ctx context.Context, s ServiceStatus) error
	// DigestReplaced reports whether digest ran for service and was later
	// replaced (and does not run now).
	DigestReplaced(ctx context.Context, service, digest string) (bool, error)

	// Ping checks that the store answers.
	Ping(ctx context.Context) error
}
