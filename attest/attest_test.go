package attest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/deployd/deployd/attest"
	"github.com/deployd/deployd/attest/attesttest"
)

const repo = "acme/v7"

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

type fixture struct {
	ss       *attesttest.Sigstore
	verifier *attest.Verifier
	digest   string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ss, err := attesttest.New()
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ss: ss, verifier: verifierFor(t, ss.WriteTrustedRoot(t, time.Time{})), digest: digestOf("image")}
}

func verifierFor(t testing.TB, path string) *attest.Verifier {
	t.Helper()
	r, err := attest.NewFileRoot(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.NewVerifier(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (f *fixture) bundle(t testing.TB, g attesttest.Signing) []byte {
	t.Helper()
	if g.Repository == "" {
		g.Repository = repo
	}
	if g.Workflow == "" {
		g.Workflow = ".github/workflows/build.yml"
	}
	if g.Digest == "" {
		g.Digest = f.digest
	}
	b, err := f.ss.Bundle(g)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantKind(t *testing.T, err error, kind attest.Kind, mention string) {
	t.Helper()
	var ae *attest.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *attest.Error", err, err)
	}
	if ae.Kind != kind {
		t.Fatalf("kind %s, want %s (%v)", ae.Kind, kind, err)
	}
	if !strings.Contains(err.Error(), mention) {
		t.Fatalf("error %q does not mention %q", err, mention)
	}
	if ae.Hint() == "" || ae.Hint() == "see the step log" {
		t.Fatalf("kind %s has no hint of its own", kind)
	}
}

func TestVerifyGood(t *testing.T) {
	f := newFixture(t)
	for _, workflow := range []string{"", ".github/workflows/build.yml", "acme/v7/.github/workflows/build.yml@refs/heads/main"} {
		t.Run("workflow="+workflow, func(t *testing.T) {
			res, err := f.verifier.Verify(f.digest, [][]byte{f.bundle(t, attesttest.Signing{})},
				attest.Policy{Repository: repo, Workflow: workflow, Ref: "refs/heads/*"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Workflow != "acme/v7/.github/workflows/build.yml@refs/heads/main" || res.Repository != repo ||
				res.Ref != "refs/heads/main" || res.PredicateType != attest.SLSAProvenanceV1 || res.VerifiedAt.IsZero() {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

func TestVerifyPicksTheMatchingBundle(t *testing.T) {
	f := newFixture(t)
	other := f.bundle(t, attesttest.Signing{Workflow: ".github/workflows/other.yml"})
	good := f.bundle(t, attesttest.Signing{})
	res, err := f.verifier.Verify(f.digest, [][]byte{other, good}, attest.Policy{Repository: repo, Workflow: ".github/workflows/build.yml"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Workflow, "build.yml") {
		t.Fatalf("verified %s", res.Workflow)
	}
}

func TestVerifyReusableWorkflow(t *testing.T) {
	f := newFixture(t)
	b := f.bundle(t, attesttest.Signing{SignerRepository: "acme/ci", Workflow: ".github/workflows/release.yml", Ref: "refs/tags/v1.2.0"})
	p := attest.Policy{Repository: repo, Workflow: "acme/ci/.github/workflows/release.yml@refs/tags/v1.2.0", Ref: "refs/tags/v*"}
	if _, err := f.verifier.Verify(f.digest, [][]byte{b}, p); err != nil {
		t.Fatal(err)
	}
	// A path names a workflow of the service's own repository, not acme/ci.
	_, err := f.verifier.Verify(f.digest, [][]byte{b}, attest.Policy{Repository: repo, Workflow: ".github/workflows/release.yml"})
	wantKind(t, err, attest.KindWorkflow, "signed by workflow acme/ci/.github/workflows/release.yml@refs/tags/v1.2.0")
}

func TestVerifyNoAttestation(t *testing.T) {
	f := newFixture(t)
	_, err := f.verifier.Verify(f.digest, nil, attest.Policy{Repository: repo})
	wantKind(t, err, attest.KindNoAttestation, "no attestation for "+f.digest)
}

// TestVerifyMismatch: a bundle that verifies but does not match the
// policy fails with the kind of mismatch, naming what it shows and what
// was wanted.
func TestVerifyMismatch(t *testing.T) {
	f := newFixture(t)
	other := digestOf("another image")
	for _, c := range []struct {
		name    string
		signing attesttest.Signing
		policy  attest.Policy
		kind    attest.Kind
		mention string
	}{
		{"predicate type", attesttest.Signing{PredicateType: "https://spdx.dev/Document/v2.3"}, attest.Policy{Repository: repo},
			attest.KindNoAttestation, "predicate type https://spdx.dev/Document/v2.3, not " + attest.SLSAProvenanceV1},
		{"workflow", attesttest.Signing{Workflow: ".github/workflows/sneaky.yml"}, attest.Policy{Repository: repo, Workflow: ".github/workflows/build.yml"},
			attest.KindWorkflow, "signed by workflow acme/v7/.github/workflows/sneaky.yml@refs/heads/main, not .github/workflows/build.yml"},
		{"repository", attesttest.Signing{Repository: "mallory/v7"}, attest.Policy{Repository: repo},
			attest.KindRepository, "built by repository mallory/v7, not acme/v7"},
		{"ref", attesttest.Signing{Ref: "refs/heads/experiment"}, attest.Policy{Repository: repo, Ref: "refs/heads/main"},
			attest.KindRef, "built from ref refs/heads/experiment, which does not match refs/heads/main"},
		{"issuer", attesttest.Signing{Issuer: "https://accounts.example.com"}, attest.Policy{Repository: repo},
			attest.KindIssuer, `issuer "https://accounts.example.com"`},
		{"digest", attesttest.Signing{Digest: other}, attest.Policy{Repository: repo},
			attest.KindDigest, "it attests " + other + ", not " + f.digest},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.verifier.Verify(f.digest, [][]byte{f.bundle(t, c.signing)}, c.policy)
			wantKind(t, err, c.kind, c.mention)
		})
	}
}
func TestVerifyTamperedBundle(t *testing.T) {
	f := newFixture(t)
	// The signed statement is rewritten to name another workflow path: the
	// signature no longer covers the payload.
	tampered, err := attesttest.Tamper(f.bundle(t, attesttest.Signing{}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.verifier.Verify(f.digest, [][]byte{tampered}, attest.Policy{Repository: repo})
	wantKind(t, err, attest.KindSignature, "the bundle does not verify")

	_, err = f.verifier.Verify(f.digest, [][]byte{[]byte(`{"mediaType": "nonsense"}`)}, attest.Policy{Repository: repo})
	wantKind(t, err, attest.KindSignature, "unreadable bundle")
}

func TestVerifyUnknownRoot(t *testing.T) {
	f := newFixture(t)
	other, err := attesttest.New()
	if err != nil {
		t.Fatal(err)
	}
	b, err := other.Bundle(attesttest.Signing{Repository: repo, Workflow: ".github/workflows/build.yml", Digest: f.digest})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.verifier.Verify(f.digest, [][]byte{b}, attest.Policy{Repository: repo})
	wantKind(t, err, attest.KindSignature, "the bundle does not verify")
}

func TestVerifyExpiredRoot(t *testing.T) {
	f := newFixture(t)
	b := f.bundle(t, attesttest.Signing{})
	_, err := verifierFor(t, f.ss.WriteTrustedRoot(t, time.Now().Add(-time.Minute))).Verify(f.digest, [][]byte{b}, attest.Policy{Repository: repo})
	wantKind(t, err, attest.KindTrustRoot, "the trust root has expired")
}

func TestPolicyValidate(t *testing.T) {
	for _, p := range []attest.Policy{
		{Repository: "acme"},
		{Repository: "acme/v7/x"},
		{Repository: repo, Workflow: "build.yml"},
		{Repository: repo, Workflow: "build.yml@refs/heads/main"},
		{Repository: repo, Ref: "refs/heads/["},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: no error", p)
		}
	}
}

// FuzzVerify feeds arbitrary bytes as a bundle: nothing may panic, and
// nothing but a real bundle signed for the policy verifies.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	good := fx.bundle(f, attesttest.Signing{})
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Add(bytes.Replace(good, []byte(`"sig"`), []byte(`"sag"`), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := fx.verifier.Verify(fx.digest, [][]byte{b}, attest.Policy{Repository: repo, Workflow: ".github/workflows/build.yml"})
		if err == nil && !bytes.Equal(b, good) {
			// Only re-encodings of the good bundle may verify.
			var pb, pg bundle.Bundle
			if pb.UnmarshalJSON(b) != nil || pg.UnmarshalJSON(good) != nil ||
				!bytes.Equal(pb.GetDsseEnvelope().GetPayload(), pg.GetDsseEnvelope().GetPayload()) {
				t.Fatalf("a bundle other than the signed one verified: %q", b)
			}
		}
	})
}

// BenchmarkVerify measures deployd's verification of one good bundle with
// a warm trust root, against the bare sigstore-go verify call on the same
// bundle (parse and verify, same trusted material and policy) in the same
// run: report the ratio of the two ns/op.
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b)
	raw := f.bundle(b, attesttest.Signing{})
	p := attest.Policy{Repository: repo, Workflow: ".github/workflows/build.yml"}
	rootJSON, err := f.ss.TrustedRoot(time.Time{})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("deployd", func(b *testing.B) {
		for b.Loop() {
			if _, err := f.verifier.Verify(f.digest, [][]byte{raw}, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bare-sigstore-go", func(b *testing.B) {
		fr, err := attest.ParseRoot(rootJSON)
		if err != nil {
			b.Fatal(err)
		}
		tm, _, _ := fr.Material()
		want, _ := hex.DecodeString(strings.TrimPrefix(f.digest, "sha256:"))
		id, err := verify.NewShortCertificateIdentity(attest.GitHubIssuer, "", "", "^https://github.com/acme/v7/.github/workflows/build.yml@")
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			sv, err := verify.NewVerifier(tm, verify.WithSignedTimestamps(1))
			if err != nil {
				b.Fatal(err)
			}
			var bb bundle.Bundle
			if err := bb.UnmarshalJSON(raw); err != nil {
				b.Fatal(err)
			}
			if _, err := sv.Verify(&bb, verify.NewPolicy(verify.WithArtifactDigest("sha256", want), verify.WithCertificateIdentity(id))); err != nil {
				b.Fatal(err)
			}
		}
	})
}
