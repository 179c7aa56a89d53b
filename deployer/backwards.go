package deployer

import (
	"context"
	"fmt"
)

// Guard is the never-deploy-backwards policy (SPEC §6), all of it: who it
// holds back, what it checks, and where. GitHub signs a delivery's body but
// not its id, so a captured delivery can be replayed under a new id, and a
// tag can be pointed back at an older digest; history on this host is the
// judge, not timestamps (GHCR sends zero created_at times).
//
// Who: deployments no person asked for, webhook and reconcile. An
// operator's authenticated manual deploy or rollback may go back on
// purpose and is never held back.
//
// Where, and what (the scope differs by point, see holdsBack):
//
//   - At intake ([Guard.Request], called by [Queue.RecordDelivery] before a
//     delivery's requests are queued), a webhook request is judged by what
//     it names: a digest this host ran and replaced, or a workflow run
//     older than the one deployed or being deployed. A held-back request
//     is not queued; the delivery says why.
//   - Before the switch ([Guard.Digest], called by the [Executor] once the
//     digest is resolved, and by the [Reconciler] before it queues one), a
//     webhook or reconcile deployment is judged by its resolved digest: a
//     webhook that named only a tag is caught here. A held-back deployment
//     ends unchanged, with a step named StepGuard saying why.
//
// A Guard is safe for concurrent use.
type Guard struct {
	store Store
}

// NewGuard returns the policy judged by the history in store.
func NewGuard(store Store) Guard { return Guard{store: store} }

// StepGuard names the step that records why a deployment was held back.
const StepGuard = "guard"

// point is where the policy is applied.
type point int

// The points at which the policy is applied.
const (
	atIntake     point = iota // a delivery's requests, before they are queued
	beforeSwitch              // a resolved digest, before it is put in place
)

// holdsBack reports whether the policy applies to triggers of kind k at
// point p. Webhooks are judged at both points. Reconcile requests never
// come from a delivery, so they meet the policy before the switch only.
// Manual deploys and rollbacks are never held back.
func holdsBack(p point, k TriggerKind) bool {
	switch k {
	case TriggerWebhook:
		return true
	case TriggerReconcile:
		return p == beforeSwitch
	}
	return false
}

// Request says why queuing r, a request of a webhook delivery, would
// deploy its service backwards, or "" when it would not or r is not held
// back at intake. It fails only when the store does.
func (g Guard) Request(ctx context.Context, r Request) (string, error) {
	if !holdsBack(atIntake, r.Trigger.Kind) {
		return "", nil
	}
	if r.Digest != "" {
		replaced, err := g.store.DigestReplaced(ctx, r.Service, r.Digest)
		if err != nil {
			return "", err
		}
		if replaced {
			return ShortDigest(r.Digest) + " already ran on this host and was replaced; webhooks never deploy backwards", nil
		}
	}
	if r.Trigger.RunID > 0 {
		// Run ids grow across all of the repository's workflows, so they
		// order runs where run numbers (per workflow) cannot.
		st, err := g.store.ServiceStatus(ctx, r.Service)
		if err != nil {
			return "", err
		}
		if r.Trigger.RunID < st.LastRunID {
			return fmt.Sprintf("workflow run %d (#%d) is older than run %d (#%d), which is deployed",
				r.Trigger.RunID, r.Trigger.RunNumber, st.LastRunID, st.LastRunNumber), nil
		}
		// Runs can complete out of order: a newer one queued or running wins.
		recent, err := g.store.Deployments(ctx, r.Service, Page{Limit: 20})
		if err != nil {
			return "", err
		}
		for _, d := range recent {
			if !d.State.Final() && d.Trigger.RunID > r.Trigger.RunID {
				return fmt.Sprintf("workflow run %d (#%d) is older than run %d (#%d), which is being deployed",
					r.Trigger.RunID, r.Trigger.RunNumber, d.Trigger.RunID, d.Trigger.RunNumber), nil
			}
		}
	}
	return "", nil
}

// Digest says why putting digest in place for service, for a deployment
// triggered by t, would move the service back to a version this host
// already ran and replaced, or "" when it would not or t is not held back.
// It fails only when the store does.
func (g Guard) Digest(ctx context.Context, service string, t Trigger, digest string) (string, error) {
	if !holdsBack(beforeSwitch, t.Kind) {
		return "", nil
	}
	replaced, err := g.store.DigestReplaced(ctx, service, digest)
	if err != nil || !replaced {
		return "", err
	}
	return ShortDigest(digest) + " already ran on this host and was replaced; " + string(t.Kind) +
		" triggers never deploy backwards (deploy it manually or roll back to go back)", nil
}
