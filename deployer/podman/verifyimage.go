package podman

import (
	"context"
	"errors"
	"time"

	"github.com/deployd/deployd/deployer"
)

// verifying reports whether any service verifies its images.
func verifying(services map[string]deployer.Service) bool {
	for _, s := range services {
		if s.Verify.Enabled() {
			return true
		}
	}
	return false
}

// verifyImage is the verify-image step, between resolve and pull: the
// resolved digest's attestations are verified against the service's
// policy. In required mode a failure ends the deployment (class
// verification) before anything is pulled, so the running version stays;
// in warn mode it is recorded and the deployment goes on. The outcome is
// kept on the deployment either way.
func (j *job) verifyImage(ctx context.Context) error {
	if !j.spec.Verify.Enabled() {
		return nil
	}
	start := time.Now()
	v, err := j.p.images.VerifyImage(ctx, j.spec, j.d.Trigger.InstallationID, j.d.Digest)
	j.d.Verification = &v
	switch {
	case err == nil:
		j.step(ctx, deployer.StepVerifyImage, start, nil, "verified "+deployer.ShortDigest(j.d.Digest)+
			": attested by workflow "+v.Workflow+" ("+v.PredicateType+")")
		return nil
	case ctx.Err() == nil && j.spec.Verify.Attestations == deployer.AttestationsWarn:
		j.step(ctx, deployer.StepVerifyImage, start, err, "not verified (verify.attestations: warn, deploying anyway)")
		return nil
	}
	j.step(ctx, deployer.StepVerifyImage, start, err, "")
	if f := (*deployer.Failure)(nil); !errors.As(err, &f) {
		err = fail(deployer.ClassVerification, "see the step log", err)
	}
	return err
}
