package attest

import (
	"context"
	"errors"
	"time"

	"github.com/deployd/deployd/deployer"
)

// Source lists the attestations (Sigstore bundle JSON) GitHub holds for a
// digest in a repository; auth/github's Attestations is one.
type Source interface {
	Bundles(ctx context.Context, repository string, installationID int64, digest string) ([][]byte, error)
}

// Checker is the pipeline's deployer.ImageVerifier: it fetches the
// digest's attestations from its Source and verifies them with its
// Verifier against the service's verify policy. It is safe for
// concurrent use.
type Checker struct {
	source   Source
	verifier *Verifier
	clock    func() time.Time
}

// NewChecker returns a Checker; clock nil means time.Now.
func NewChecker(source Source, verifier *Verifier, clock func() time.Time) (*Checker, error) {
	switch {
	case source == nil:
		return nil, errors.New("new checker: no attestation source")
	case verifier == nil:
		return nil, errors.New("new checker: no verifier")
	}
	if clock == nil {
		clock = time.Now
	}
	return &Checker{source: source, verifier: verifier, clock: clock}, nil
}

// VerifyImage fetches and verifies digest's attestations for s. See
// deployer.ImageVerifier. A failure is a *deployer.Failure of class
// verification whose error names what did not match and whose hint says
// what to do; the returned Verification records it either way.
func (c *Checker) VerifyImage(ctx context.Context, s deployer.Service, installationID int64, digest string) (deployer.Verification, error) {
	v := deployer.Verification{Mode: s.Verify.Attestations, VerifiedAt: c.clock().UTC()}
	p := Policy{Repository: s.Verify.Repository, Workflow: s.Verify.Workflow, Ref: s.Verify.Ref, PredicateType: s.Verify.PredicateType}
	if p.Repository == "" {
		p.Repository = s.Repository
	}
	bundles, err := c.source.Bundles(ctx, p.Repository, installationID, digest)
	if err != nil {
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
		return c.failed(v, &Error{Kind: KindFetch, Detail: "fetch the attestations of " + digest + " from " + p.Repository, Err: err})
	}
	res, err := c.verifier.Verify(digest, bundles, p)
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return c.failed(v, ae)
		}
		return v, &deployer.Failure{Class: deployer.ClassConfig, Hint: "check the service's verify settings", Err: err}
	}
	v.Verified = true
	v.Workflow, v.PredicateType, v.VerifiedAt = res.Workflow, res.PredicateType, res.VerifiedAt
	return v, nil
}

func (c *Checker) failed(v deployer.Verification, e *Error) (deployer.Verification, error) {
	v.Problem = e.Error()
	return v, &deployer.Failure{Class: deployer.ClassVerification, Hint: e.Hint(), Err: e}
}
