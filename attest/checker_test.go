package attest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/attest"
	"github.com/deployd/deployd/attest/attesttest"
	"github.com/deployd/deployd/deployer"
)

// source is a hand-written attest.Source: bundles by digest, or an error.
type source struct {
	bundles map[string][][]byte
	err     error
	asked   []string
}

func (s *source) Bundles(_ context.Context, repository string, _ int64, digest string) ([][]byte, error) {
	s.asked = append(s.asked, repository+"@"+digest)
	return s.bundles[digest], s.err
}

func service(mode string) deployer.Service {
	return deployer.Service{Name: "backend", Repository: repo, Verify: deployer.Verify{
		Attestations: mode, Repository: repo, Workflow: ".github/workflows/build.yml", PredicateType: deployer.DefaultPredicateType}}
}

func TestCheckerVerifiesWhatTheSourceHolds(t *testing.T) {
	f := newFixture(t)
	src := &source{bundles: map[string][][]byte{f.digest: {f.bundle(t, attesttest.Signing{})}}}
	c, err := attest.NewChecker(src, f.verifier, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.VerifyImage(context.Background(), service(deployer.AttestationsRequired), 7, f.digest)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verified || v.Mode != deployer.AttestationsRequired || v.Workflow != "acme/v7/.github/workflows/build.yml@refs/heads/main" ||
		v.PredicateType != deployer.DefaultPredicateType || v.VerifiedAt.IsZero() || v.Problem != "" {
		t.Fatalf("verification %+v", v)
	}
	if len(src.asked) != 1 || src.asked[0] != repo+"@"+f.digest {
		t.Fatalf("asked %v", src.asked)
	}

	// Another digest has no attestation: a verification failure, recorded.
	other := digestOf("other")
	v, err = c.VerifyImage(context.Background(), service(deployer.AttestationsWarn), 7, other)
	var fl *deployer.Failure
	if !errors.As(err, &fl) || fl.Class != deployer.ClassVerification || !strings.Contains(fl.Hint, "attest the image") {
		t.Fatalf("error %v, want a verification failure with the no-attestation hint", err)
	}
	if v.Verified || v.Mode != deployer.AttestationsWarn || !strings.Contains(v.Problem, "no attestation for "+other) {
		t.Fatalf("verification %+v", v)
	}
}

// TestCheckerFetchFailure: GitHub's refusal is a verification failure
// naming the fetch, with the permission hint.
func TestCheckerFetchFailure(t *testing.T) {
	f := newFixture(t)
	c, err := attest.NewChecker(&source{err: errors.New("403 Resource not accessible by integration")}, f.verifier, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.VerifyImage(context.Background(), service(deployer.AttestationsRequired), 7, f.digest)
	var fl *deployer.Failure
	if !errors.As(err, &fl) || fl.Class != deployer.ClassVerification || !strings.Contains(err.Error(), "fetch the attestations") ||
		!strings.Contains(fl.Hint, "attestations: read") {
		t.Fatalf("error %v (hint %v)", err, fl)
	}
}

// TestTUFRootUnreachable: with no cache and a TUF repository that cannot
// be reached, verification fails with the trust-root hint, and says where
// it looked.
func TestTUFRootUnreachable(t *testing.T) {
	f := newFixture(t)
	r, err := attest.NewTUFRoot(attest.TUFConfig{Instance: attest.RootPublicGood, URL: "http://127.0.0.1:1", CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.NewVerifier(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(f.digest, [][]byte{f.bundle(t, attesttest.Signing{})}, attest.Policy{Repository: repo})
	wantKind(t, err, attest.KindTrustRoot, "http://127.0.0.1:1")

	if _, err := attest.NewTUFRoot(attest.TUFConfig{Instance: attest.RootGitHub, CacheDir: t.TempDir()}); err == nil {
		t.Error("github's instance without its TUF root: no error")
	}
}

// TestTUFRootWorksOfflineFromItsCache: the trusted root comes through a
// TUF repository once; with the repository gone, a fresh TUFRoot on the
// same cache still verifies, for as long as the cached metadata is valid.
func TestTUFRootWorksOfflineFromItsCache(t *testing.T) {
	f := newFixture(t)
	repoTUF := f.ss.ServeTUF(t, time.Time{}, time.Time{})
	cache := t.TempDir()
	good := f.bundle(t, attesttest.Signing{})
	verifyThrough := func() error {
		t.Helper()
		r, err := attest.NewTUFRoot(attest.TUFConfig{Instance: attest.RootGitHub, URL: repoTUF.URL, InitialRoot: repoTUF.Root, CacheDir: cache})
		if err != nil {
			t.Fatal(err)
		}
		v, err := attest.NewVerifier(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(f.digest, [][]byte{good}, attest.Policy{Repository: repo})
		return err
	}
	if err := verifyThrough(); err != nil {
		t.Fatalf("online: %v", err)
	}
	if repoTUF.Requests() == 0 {
		t.Fatal("the TUF repository was never asked")
	}
	repoTUF.Close()
	if err := verifyThrough(); err != nil {
		t.Fatalf("offline with a valid cache: %v", err)
	}
	// Without the cache, offline is a trust-root failure.
	cache = t.TempDir()
	wantKind(t, verifyThrough(), attest.KindTrustRoot, "no usable trust root")
}

// TestTUFRootExpiredMetadata: a TUF repository whose metadata has expired
// gives no trust root: verification fails with the trust-root hint.
func TestTUFRootExpiredMetadata(t *testing.T) {
	f := newFixture(t)
	repoTUF := f.ss.ServeTUF(t, time.Time{}, time.Now().Add(-time.Hour))
	r, err := attest.NewTUFRoot(attest.TUFConfig{Instance: attest.RootGitHub, URL: repoTUF.URL, InitialRoot: repoTUF.Root, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.NewVerifier(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(f.digest, [][]byte{f.bundle(t, attesttest.Signing{})}, attest.Policy{Repository: repo})
	wantKind(t, err, attest.KindTrustRoot, "expired")
}
