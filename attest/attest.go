// Package attest verifies the attestations of an image digest against a
// service's policy: a Sigstore bundle signed by a GitHub Actions workflow
// of the expected repository (certificate identity), over the digest about
// to run (artifact digest), with the expected predicate type (SLSA
// provenance v1 by default), and with the timestamp and transparency
// evidence the trust root calls for. It uses sigstore-go's bundle, verify
// and root packages; trust roots come from a file or through TUF with a
// cache (see Roots).
//
// Of deployd's packages it imports only deployer: a Checker is the
// pipeline's deployer.ImageVerifier.
package attest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// GitHubIssuer is the OIDC issuer of GitHub Actions: the only issuer whose
// certificates are accepted.
const GitHubIssuer = "https://token.actions.githubusercontent.com"

// SLSAProvenanceV1 is the default predicate type, that of GitHub's build
// provenance attestations (actions/attest-build-provenance).
const SLSAProvenanceV1 = "https://slsa.dev/provenance/v1"

// Policy is what an image's attestation must show.
type Policy struct {
	// Repository is the GitHub repository, "owner/name", whose workflow
	// run built the image (the certificate's source repository). Required.
	Repository string
	// Workflow, if set, is the workflow that must have signed: a path in
	// Repository (".github/workflows/build.yml"), or a job_workflow_ref
	// ("owner/repo/.github/workflows/build.yml@refs/heads/main", a
	// reusable workflow possibly of another repository). Empty means any
	// workflow of Repository.
	Workflow string
	// Ref, if set, is a path.Match pattern the git ref of the run must
	// match ("refs/heads/main", "refs/tags/v*").
	Ref string
	// PredicateType is the statement's predicate type; empty means
	// SLSAProvenanceV1.
	PredicateType string
}

func (p Policy) predicateType() string {
	if p.PredicateType == "" {
		return SLSAProvenanceV1
	}
	return p.PredicateType
}

// Validate checks the policy's own fields.
func (p Policy) Validate() error {
	if owner, name, ok := strings.Cut(p.Repository, "/"); !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("repository %q is not owner/name", p.Repository)
	}
	if p.Workflow != "" {
		if _, err := p.sanRegexp(); err != nil {
			return err
		}
	}
	if p.Ref != "" {
		if _, err := path.Match(p.Ref, ""); err != nil {
			return fmt.Errorf("ref pattern %q: %w", p.Ref, err)
		}
	}
	return nil
}

// sanRegexp is the pattern the certificate's SAN (the signer workflow's
// URI) must match.
func (p Policy) sanRegexp() (string, error) {
	const gh = "https://github.com/"
	w := p.Workflow
	switch {
	case w == "":
		return "^" + regexp.QuoteMeta(gh+p.Repository+"/.github/workflows/") + "[^@]+@.+$", nil
	case strings.Contains(w, "@"):
		// A job_workflow_ref names the workflow, its repository and ref.
		if strings.Count(w, "/") < 3 {
			return "", fmt.Errorf("workflow %q: a job_workflow_ref is owner/repo/.github/workflows/FILE@REF", w)
		}
		return "^" + regexp.QuoteMeta(gh+w) + "$", nil
	case strings.HasPrefix(w, ".github/workflows/") && !strings.HasSuffix(w, "/"):
		return "^" + regexp.QuoteMeta(gh+p.Repository+"/"+w+"@") + ".+$", nil
	}
	return "", fmt.Errorf("workflow %q is neither a path .github/workflows/FILE nor a job_workflow_ref", w)
}

// Kind says what did not match.
type Kind string

// The kinds of verification failure.
const (
	KindNoAttestation Kind = "no_attestation"   // GitHub has none for the digest, or none with the predicate type
	KindWorkflow      Kind = "wrong_workflow"   // signed by another workflow
	KindRepository    Kind = "wrong_repository" // built by another repository
	KindRef           Kind = "wrong_ref"        // built from a ref the pattern refuses
	KindIssuer        Kind = "wrong_issuer"     // the certificate is not GitHub Actions'
	KindDigest        Kind = "wrong_digest"     // attests another digest
	KindSignature     Kind = "bad_signature"    // the bundle does not verify against the trust root
	KindTrustRoot     Kind = "trust_root"       // no usable trust root (expired, unreachable)
	KindFetch         Kind = "fetch"            // the attestations could not be fetched
)

// Error is a failed verification: what did not match, in words that name
// it, and a hint saying what to do. It never holds a secret.
type Error struct {
	Kind   Kind
	Detail string
	Err    error
}

// Error returns "image verification: DETAIL".
func (e *Error) Error() string {
	if e.Err != nil {
		return "image verification: " + e.Detail + ": " + e.Err.Error()
	}
	return "image verification: " + e.Detail
}

// Unwrap returns the cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Hint says what to do about the failure.
func (e *Error) Hint() string {
	switch e.Kind {
	case KindNoAttestation:
		return "attest the image in the workflow that pushes it (actions/attest-build-provenance with push-to-registry or the attestations API), or set verify.attestations to warn or off"
	case KindWorkflow:
		return "the image was signed by another workflow: deploy an image built by the configured verify.workflow, or change verify.workflow"
	case KindRepository:
		return "the image was built in another repository: check the service's image and verify.repository"
	case KindRef:
		return "the image was built from a ref verify.ref does not allow: build it from an allowed branch or tag, or widen verify.ref"
	case KindIssuer:
		return "only attestations signed by GitHub Actions workflows are accepted"
	case KindDigest:
		return "the attestation is for another digest: attest the digest that is pushed (for multi-arch images, the index digest the tag points to)"
	case KindSignature:
		return "the attestation does not verify against the trust root: check trust.root (public-good for public repositories, github for private ones); a tampered bundle cannot be fixed"
	case KindTrustRoot:
		return "refresh the trust root: deployd must reach the TUF repository (trust.tuf_url) once the cached metadata expires, or point trust.root at a current trusted_root.json"
	case KindFetch:
		return "check that the GitHub App has the attestations: read permission and is installed on the repository"
	}
	return "see the step log"
}

// Result is what a verified attestation shows.
type Result struct {
	// Workflow is the signer workflow, as a job_workflow_ref:
	// "owner/repo/.github/workflows/build.yml@refs/heads/main".
	Workflow string
	// Repository is the repository the run built, "owner/name".
	Repository string
	// Ref is the git ref of the run.
	Ref string
	// PredicateType is the statement's predicate type.
	PredicateType string
	// VerifiedAt is when the verification was done.
	VerifiedAt time.Time
}

// Verifier verifies bundles with one trust root. It is safe for
// concurrent use.
type Verifier struct {
	roots Roots
	clock func() time.Time
}

// NewVerifier returns a Verifier that takes its trusted material from
// roots. clock nil means time.Now.
func NewVerifier(roots Roots, clock func() time.Time) (*Verifier, error) {
	if roots == nil {
		return nil, errors.New("new verifier: no trust root")
	}
	if clock == nil {
		clock = time.Now
	}
	return &Verifier{roots: roots, clock: clock}, nil
}

// Verify checks bundles (Sigstore bundle JSON, as GitHub's attestations
// API returns them) for one that satisfies p for digest ("sha256:<hex>").
// It returns the first that does; else an *Error naming what did not
// match, preferring a bundle of the expected predicate type.
func (v *Verifier) Verify(digest string, bundles [][]byte, p Policy) (Result, error) {
	want, err := digestBytes(digest)
	if err != nil {
		return Result{}, &Error{Kind: KindDigest, Detail: "digest " + digest + " is not sha256:<64 hex>"}
	}
	if err := p.Validate(); err != nil {
		return Result{}, fmt.Errorf("image verification: policy: %w", err)
	}
	if len(bundles) == 0 {
		return Result{}, &Error{Kind: KindNoAttestation, Detail: "GitHub has no attestation for " + digest + " in " + p.Repository}
	}
	tm, evidence, err := v.roots.Material()
	if err != nil {
		return Result{}, &Error{Kind: KindTrustRoot, Detail: "no usable trust root", Err: err}
	}
	sv, err := verify.NewVerifier(tm, evidence...)
	if err != nil {
		return Result{}, &Error{Kind: KindTrustRoot, Detail: "trust root", Err: err}
	}
	identity, err := p.identity()
	if err != nil {
		return Result{}, fmt.Errorf("image verification: policy: %w", err)
	}
	var best *Error
	for i, raw := range bundles {
		res, verr := v.verifyOne(sv, tm, raw, want, digest, identity, p)
		if verr == nil {
			return res, nil
		}
		verr.Detail = fmt.Sprintf("attestation %d of %d: %s", i+1, len(bundles), verr.Detail)
		if best == nil || rank(verr.Kind) > rank(best.Kind) {
			best = verr
		}
	}
	return Result{}, best
}

// rank orders failures by how much they say: a bundle that verifies but
// names another workflow says more than one of another predicate type.
func rank(k Kind) int {
	switch k {
	case KindNoAttestation:
		return 0
	case KindSignature:
		return 1
	case KindTrustRoot:
		return 2
	}
	return 3
}

func (p Policy) identity() (verify.CertificateIdentity, error) {
	san, err := p.sanRegexp()
	if err != nil {
		return verify.CertificateIdentity{}, err
	}
	sanMatcher, err := verify.NewSANMatcher("", san)
	if err != nil {
		return verify.CertificateIdentity{}, fmt.Errorf("workflow: %w", err)
	}
	issuer, err := verify.NewIssuerMatcher(GitHubIssuer, "")
	if err != nil {
		return verify.CertificateIdentity{}, fmt.Errorf("issuer: %w", err)
	}
	return verify.NewCertificateIdentity(sanMatcher, issuer, certificate.Extensions{
		SourceRepositoryURI: "https://github.com/" + p.Repository,
	})
}

// verifyOne verifies one bundle against the full policy; when that fails,
// it verifies the bundle again without identity and artifact, so as to
// tell a bundle that does not verify at all from one that verifies but
// names another workflow, repository or digest.
func (v *Verifier) verifyOne(sv *verify.Verifier, tm root.TrustedMaterial, raw, want []byte, digest string, identity verify.CertificateIdentity, p Policy) (Result, *Error) {
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw); err != nil {
		return Result{}, &Error{Kind: KindSignature, Detail: "unreadable bundle", Err: err}
	}
	res, err := sv.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest("sha256", want), verify.WithCertificateIdentity(identity)))
	if err == nil {
		return v.check(res, p)
	}
	loose, lerr := sv.Verify(&b, verify.NewPolicy(verify.WithoutArtifactUnsafe(), verify.WithoutIdentitiesUnsafe()))
	if lerr != nil {
		if expired(tm, v.clock()) {
			return Result{}, &Error{Kind: KindTrustRoot, Detail: "the trust root has expired: none of its certificate authorities is valid now", Err: lerr}
		}
		return Result{}, &Error{Kind: KindSignature, Detail: "the bundle does not verify", Err: lerr}
	}
	if loose.Statement != nil && loose.Statement.GetPredicateType() != p.predicateType() {
		return Result{}, &Error{Kind: KindNoAttestation, Detail: fmt.Sprintf("predicate type %s, not %s", loose.Statement.GetPredicateType(), p.predicateType())}
	}
	if e := mismatch(loose, p); e != nil {
		return Result{}, e
	}
	var subjects []string
	if loose.Statement != nil {
		for _, s := range loose.Statement.GetSubject() {
			if h := s.GetDigest()["sha256"]; h != "" {
				subjects = append(subjects, "sha256:"+h)
			}
		}
	}
	if len(subjects) > 0 && !slices.Contains(subjects, digest) {
		return Result{}, &Error{Kind: KindDigest, Detail: "it attests " + strings.Join(subjects, ", ") + ", not " + digest}
	}
	return Result{}, &Error{Kind: KindSignature, Detail: "the bundle does not satisfy the policy", Err: err}
}

// check applies what sigstore-go's policy does not express: the predicate
// type and the ref pattern.
func (v *Verifier) check(res *verify.VerificationResult, p Policy) (Result, *Error) {
	if res.Statement == nil {
		return Result{}, &Error{Kind: KindNoAttestation, Detail: "the bundle holds no in-toto statement"}
	}
	if got := res.Statement.GetPredicateType(); got != p.predicateType() {
		return Result{}, &Error{Kind: KindNoAttestation, Detail: fmt.Sprintf("predicate type %s, not %s", got, p.predicateType())}
	}
	if e := mismatch(res, p); e != nil {
		return Result{}, e
	}
	c := summary(res)
	return Result{
		Workflow:      strings.TrimPrefix(c.SubjectAlternativeName, "https://github.com/"),
		Repository:    strings.TrimPrefix(c.SourceRepositoryURI, "https://github.com/"),
		Ref:           c.SourceRepositoryRef,
		PredicateType: res.Statement.GetPredicateType(),
		VerifiedAt:    v.clock().UTC(),
	}, nil
}

func summary(res *verify.VerificationResult) certificate.Summary {
	if res.Signature == nil || res.Signature.Certificate == nil {
		return certificate.Summary{}
	}
	return *res.Signature.Certificate
}

// mismatch compares a verified bundle's certificate with p and names the
// first field that differs, or returns nil.
func mismatch(res *verify.VerificationResult, p Policy) *Error {
	c := summary(res)
	if c.Issuer != GitHubIssuer {
		return &Error{Kind: KindIssuer, Detail: fmt.Sprintf("signed with a certificate of issuer %q, not %s", c.Issuer, GitHubIssuer)}
	}
	if repo := strings.TrimPrefix(c.SourceRepositoryURI, "https://github.com/"); repo != p.Repository {
		return &Error{Kind: KindRepository, Detail: fmt.Sprintf("built by repository %s, not %s", repo, p.Repository)}
	}
	san, _ := p.sanRegexp() // the policy was validated
	signer := strings.TrimPrefix(c.SubjectAlternativeName, "https://github.com/")
	if ok, _ := regexp.MatchString(san, c.SubjectAlternativeName); !ok {
		want := p.Workflow
		if want == "" {
			want = "a workflow of " + p.Repository
		}
		return &Error{Kind: KindWorkflow, Detail: fmt.Sprintf("signed by workflow %s, not %s", signer, want)}
	}
	if p.Ref != "" {
		if ok, _ := path.Match(p.Ref, c.SourceRepositoryRef); !ok {
			return &Error{Kind: KindRef, Detail: fmt.Sprintf("built from ref %s, which does not match %s", c.SourceRepositoryRef, p.Ref)}
		}
	}
	return nil
}

// expired reports whether no certificate authority of tm is valid at now.
func expired(tm root.TrustedMaterial, now time.Time) bool {
	cas := tm.FulcioCertificateAuthorities()
	if len(cas) == 0 {
		return false
	}
	for _, ca := range cas {
		f, ok := ca.(*root.FulcioCertificateAuthority)
		if !ok || f.ValidityPeriodEnd.IsZero() || now.Before(f.ValidityPeriodEnd) {
			return false
		}
	}
	return true
}

// digestBytes decodes "sha256:<64 hex>".
func digestBytes(d string) ([]byte, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return nil, errors.New("not a sha256 digest")
	}
	return hex.DecodeString(h)
}
