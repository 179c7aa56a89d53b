package deployer

import "context"

// Executor carries out deployments: it is the seam between the Queue,
// which decides what runs and when, and whatever puts a version in place.
// deployer/podman's Pipeline is the Executor for the host deployd runs on;
// an executor that hands the work to another host implements the same
// contract.
//
// The queue calls Execute from a service's worker: one deployment of a
// service at a time, while other services' deployments run concurrently,
// so an Executor must be safe for concurrent use. d is marked running in
// the Store and carries its step log so far (a request's Note first, as
// StepRequest). ctx carries the deployment's logger (zerolog.Ctx) and is
// cancelled when the queue shuts down past its deadline.
//
// Execute, in turn:
//
//   - records each step as it goes with Store.AppendStep, so that the
//     history and the status page follow the deployment live; the queue
//     records no steps;
//   - asks Guard.Digest, once the digest to deploy is known and before
//     anything changes, whether the deployment would go backwards, and if
//     so ends it unchanged with a StepGuard step saying why;
//   - records what runs afterwards with Store.SetServiceStatus (the new
//     digest and tag, or Degraded when a failure left the service in an
//     unknown state);
//   - returns d in its final state, with Digest set to what was deployed
//     and, for a failure, ErrorClass, Error and Hint (see Failure), never
//     a secret. The queue records the end with Store.Finish. A deployment
//     returned in a state that is not final is recorded as interrupted;
//   - returns promptly when ctx ends, with State interrupted if it could
//     not finish. The queue then leaves it running in the store, and the
//     next start queues it again.
type Executor interface {
	Execute(ctx context.Context, d Deployment) Deployment
}

// ExecutorFunc adapts a function to Executor.
type ExecutorFunc func(ctx context.Context, d Deployment) Deployment

// Execute calls f.
func (f ExecutorFunc) Execute(ctx context.Context, d Deployment) Deployment { return f(ctx, d) }
