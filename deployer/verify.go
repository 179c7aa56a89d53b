package deployer

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// ClassVerification is the failure class of a deployment whose image's
// attestations did not satisfy the service's verify policy.
const ClassVerification = "verification"

// StepVerifyImage names the pipeline step that verifies the image's
// attestations, between resolve and pull (the step named "verify" is the
// health check after the switch).
const StepVerifyImage = "verify-image"

// Attestation modes of a service (verify.attestations).
const (
	// AttestationsOff verifies nothing (the default).
	AttestationsOff = "off"
	// AttestationsWarn verifies, records the outcome and deploys anyway.
	AttestationsWarn = "warn"
	// AttestationsRequired deploys only an image whose attestation
	// verifies; otherwise the deployment fails with ClassVerification and
	// the running version is left alone.
	AttestationsRequired = "required"
)

// DefaultPredicateType is verify.predicate_type's default: SLSA
// provenance v1, what GitHub's build provenance attestations carry.
const DefaultPredicateType = "https://slsa.dev/provenance/v1"

// Verify is a service's image verification policy (verify: in the
// configuration): which identity must have attested the image.
type Verify struct {
	// Attestations is AttestationsOff (default), AttestationsWarn or
	// AttestationsRequired.
	Attestations string `yaml:"attestations"`
	// Repository is the GitHub repository, OWNER/NAME, whose workflow run
	// built the image (default: the service's repository).
	Repository string `yaml:"repository"`
	// Workflow, if set, is the workflow that must have signed: a path in
	// Repository (.github/workflows/build.yml) or a job_workflow_ref
	// (OWNER/REPO/.github/workflows/build.yml@refs/heads/main).
	Workflow string `yaml:"workflow"`
	// Ref, if set, is a path.Match pattern of the git ref the run built
	// (refs/heads/main, refs/tags/v*).
	Ref string `yaml:"ref"`
	// PredicateType is the attestation's predicate type (default
	// DefaultPredicateType).
	PredicateType string `yaml:"predicate_type"`
}

// Enabled reports whether the image is verified at all.
func (v Verify) Enabled() bool {
	return v.Attestations == AttestationsWarn || v.Attestations == AttestationsRequired
}

// Check returns what is wrong with the policy's fields, keyed by their
// key under verify, or nil.
func (v Verify) Check() map[string]error {
	problems := map[string]error{}
	switch v.Attestations {
	case AttestationsOff, AttestationsWarn, AttestationsRequired:
	default:
		problems["attestations"] = fmt.Errorf("unknown mode %q (one of off, warn, required)", v.Attestations)
	}
	if owner, name, ok := strings.Cut(v.Repository, "/"); !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		problems["repository"] = fmt.Errorf("%q is not a GitHub repository OWNER/NAME", v.Repository)
	}
	if w := v.Workflow; w != "" {
		job, ref, isRef := strings.Cut(w, "@")
		switch {
		case isRef && (ref == "" || strings.Count(job, "/") < 4 || !strings.Contains(job, "/.github/workflows/")):
			problems["workflow"] = fmt.Errorf("%q is not a job_workflow_ref OWNER/REPO/.github/workflows/FILE@REF", w)
		case !isRef && (!strings.HasPrefix(w, ".github/workflows/") || strings.HasSuffix(w, "/")):
			problems["workflow"] = fmt.Errorf("%q is neither a workflow path .github/workflows/FILE nor a job_workflow_ref OWNER/REPO/.github/workflows/FILE@REF", w)
		}
	}
	if v.Ref != "" {
		if _, err := path.Match(v.Ref, ""); err != nil {
			problems["ref"] = fmt.Errorf("invalid ref pattern %q (path.Match syntax: * ? [a-z] \\x)", v.Ref)
		}
	}
	if v.PredicateType == "" {
		problems["predicate_type"] = errors.New("required (default " + DefaultPredicateType + ")")
	}
	if len(problems) == 0 {
		return nil
	}
	return problems
}

// Verification is the outcome of a deployment's verify-image step, kept
// with the deployment.
type Verification struct {
	// Mode is the service's verify.attestations when the step ran.
	Mode string `json:"mode"`
	// Verified is true when an attestation satisfied the policy.
	Verified bool `json:"verified"`
	// Workflow is the signer workflow of the verified attestation, as a
	// job_workflow_ref.
	Workflow string `json:"workflow,omitempty"`
	// PredicateType is the verified attestation's predicate type.
	PredicateType string `json:"predicate_type,omitempty"`
	// VerifiedAt is when the step ran.
	VerifiedAt time.Time `json:"verified_at"`
	// Problem says what did not match when Verified is false (in warn
	// mode the deployment went on regardless).
	Problem string `json:"problem,omitempty"`
}

// ImageVerifier verifies the attestations of the digest about to be
// deployed against the service's Verify policy. A failure to verify is a
// *Failure of ClassVerification whose hint names what did not match; the
// Verification is filled in either way (Verified false on failure).
type ImageVerifier interface {
	VerifyImage(ctx context.Context, s Service, installationID int64, digest string) (Verification, error)
}
