package deployer

import (
	"context"
	"time"
)

// Log keys of releases, stable as the others (see KeyService).
const (
	KeyReleaseID  = "release_id"
	KeyReleaseSet = "release_set"
	KeyCommit     = "commit"
)

// GateWorkflowRun is the one gate a release set has: the successful
// workflow_run of the commit.
const GateWorkflowRun = "workflow_run"

// ReleaseSet is a group of services whose images of one commit go live
// together: the configuration's release_sets.NAME, loaded straight from
// the YAML file (the yaml tags are its keys).
type ReleaseSet struct {
	// Name is the set's key under release_sets.
	Name string `yaml:"-"`
	// Services are the members, deployed in this order; each one is in at
	// most one set and has an on.workflow_run rule giving its tag.
	Services []string `yaml:"services"`
	// Gate is what starts a release: GateWorkflowRun (the default and the
	// only one).
	Gate string `yaml:"gate"`
	// Wait bounds how long package events of the set's services are held
	// for the workflow run of their commit before they expire (default 30m).
	Wait time.Duration `yaml:"wait"`
}

// ReleaseState is where a release is in its life.
//
//	waiting → queued → running → succeeded | failed | rolled_back
//	waiting → expired (no gate for its commit within the set's wait)
//	queued → superseded (a newer release of the same set arrived first)
//	running → interrupted (deployd stopped while it ran)
type ReleaseState string

// The states of a release.
const (
	ReleaseWaiting     ReleaseState = "waiting"
	ReleaseQueued      ReleaseState = "queued"
	ReleaseRunning     ReleaseState = "running"
	ReleaseSucceeded   ReleaseState = "succeeded"
	ReleaseFailed      ReleaseState = "failed"
	ReleaseRolledBack  ReleaseState = "rolled_back"
	ReleaseSuperseded  ReleaseState = "superseded"
	ReleaseExpired     ReleaseState = "expired"
	ReleaseInterrupted ReleaseState = "interrupted"
)

// Final reports whether s is an end state.
func (s ReleaseState) Final() bool {
	switch s {
	case ReleaseWaiting, ReleaseQueued, ReleaseRunning:
		return false
	}
	return true
}

// ReleaseMember is one service of a release: what it deploys and, once
// it ran, how that went.
type ReleaseMember struct {
	Service string `json:"service"`
	// Tag is what the member deploys: from a package event for the commit,
	// else from the service's on.workflow_run tag rule.
	Tag string `json:"tag,omitempty"`
	// Digest is the package event's digest; empty when the tag is resolved
	// at the registry. Once the member deployed, the digest it deployed.
	Digest string `json:"digest,omitempty"`
	// DeliveryID is the delivery that named the member.
	DeliveryID string `json:"delivery_id,omitempty"`
	// DeploymentID and State are the member's deployment in the release,
	// 0 and "" before it is queued.
	DeploymentID int64 `json:"deployment_id,omitempty"`
	State        State `json:"state,omitempty"`
	// RollbackID is the deployment that put the member back to the set's
	// previous release, 0 when none was needed.
	RollbackID    int64 `json:"rollback_id,omitempty"`
	RollbackState State `json:"rollback_state,omitempty"`
}

// Release is one commit of a release set going live, all of its members
// or none.
type Release struct {
	ID     int64        `json:"id"`
	Set    string       `json:"set"`
	Commit string       `json:"commit"`
	State  ReleaseState `json:"state"`
	// FailedMember names the member whose deployment failed.
	FailedMember string `json:"failed_member,omitempty"`
	// Reason explains a release that did not succeed.
	Reason string `json:"reason,omitempty"`
	// Trigger is the gate's delivery: the workflow run (zero while waiting).
	Trigger    Trigger         `json:"trigger"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Members    []ReleaseMember `json:"members"`
}

// ReleaseIntake is what one delivery brings to the release of a set's
// commit: the gate itself, or a package event held until it arrives.
type ReleaseIntake struct {
	Set    string
	Commit string
	// Gate is set for the set's gate (a successful workflow_run of the
	// commit); Trigger is then the run's.
	Gate    bool
	Trigger Trigger
	// Members are the set's services the delivery names, with their tag
	// (and a package event's digest).
	Members []ReleaseMember
}

// ReleaseStore is the durable state of releases. Implementations are safe
// for concurrent use, and each method either takes full effect or none.
type ReleaseStore interface {
	// RecordReleaseDelivery is Store.RecordDelivery for a delivery that
	// also brings intakes to releases, all in one transaction. For each
	// intake, the newest release of its set and commit that is waiting,
	// queued or running takes it:
	//
	//   - a gate makes a waiting release queued, adding the members it
	//     names that the release does not hold yet, or creates a queued
	//     release when there is none; a queued or running one ignores it;
	//   - a package event adds its member (or its digest) to a waiting
	//     release, sets the digest of a queued release's member not yet
	//     deployed, or creates a waiting release when there is none.
	//
	// A release that becomes queued supersedes the older queued releases
	// of its set. The delivery is recorded as queued, its reason naming
	// the releases; the ids are returned in intake order.
	RecordReleaseDelivery(ctx context.Context, d Delivery, reqs []Request, intakes []ReleaseIntake) (Receipt, []int64, error)
	// ClaimRelease marks the newest queued release of set running, the
	// older queued ones superseded, and returns it; ok is false when none
	// is queued.
	ClaimRelease(ctx context.Context, set string) (r Release, ok bool, err error)
	// FinishRelease records a release's end state, failed member and reason.
	FinishRelease(ctx context.Context, r Release) error
	// ExpireReleases marks the waiting releases of set created before
	// createdBefore expired with reason and returns them.
	ExpireReleases(ctx context.Context, set string, createdBefore time.Time, reason string) ([]Release, error)
	// InterruptRunningReleases marks every running release interrupted and
	// returns their ids. Called once at start-up.
	InterruptRunningReleases(ctx context.Context) ([]int64, error)
	// Release returns one release with its members, or ErrNotFound.
	Release(ctx context.Context, id int64) (Release, error)
	// Releases lists releases newest first, of one set if set is not empty.
	Releases(ctx context.Context, set string, p Page) ([]Release, error)
	// PreviousRelease returns the newest succeeded release of set older
	// than release before; ok is false when there is none.
	PreviousRelease(ctx context.Context, set string, before int64) (r Release, ok bool, err error)
}
