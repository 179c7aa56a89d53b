package github_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func newAttestations(t *testing.T, e *env) *github.Attestations {
	t.Helper()
	a, err := github.NewAttestations(github.AttestationsConfig{App: e.app})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAttestationsPagedInlineAndByURL lists more attestations than fit on a
// page, some inline and some behind a bundle_url, and gets every bundle in
// order, the bundle_url ones fetched without the token and decompressed,
// with one token minted for attestations: read on the one repository.
func TestAttestationsPagedInlineAndByURL(t *testing.T) {
	e := newEnv(t)
	var want [][]byte
	for i := range 130 {
		b := fmt.Appendf(nil, `{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","n":%d}`, i)
		e.gh.AddAttestation("acme/v7", testDigest, b, i%3 == 0)
		want = append(want, b)
	}
	e.gh.AddAttestation("acme/web", testDigest, []byte(`{"other":true}`), false)
	got, err := newAttestations(t, e).Bundles(context.Background(), "acme/v7", 0, testDigest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d bundles, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("bundle %d = %s, want %s", i, got[i], want[i])
		}
	}
	lists, authorized := e.gh.AttestationRequests()
	if lists != 5 || authorized != 0 {
		t.Fatalf("%d list requests (want 5 pages of 30), %d bundle fetches with credentials (want 0)", lists, authorized)
	}
	mints := e.gh.Mints()
	if len(mints) != 1 || len(mints[0].Permissions) != 1 || mints[0].Permissions["attestations"] != "read" ||
		len(mints[0].Repositories) != 1 || mints[0].Repositories[0] != "v7" {
		t.Fatalf("mints = %+v, want one for attestations: read on v7", mints)
	}
}

func TestAttestationsNone(t *testing.T) {
	e := newEnv(t)
	got, err := newAttestations(t, e).Bundles(context.Background(), "acme/v7", 0, testDigest)
	if err != nil || len(got) != 0 {
		t.Fatalf("bundles %q, error %v; want none and no error", got, err)
	}
}

// TestAttestationsPermissionMissing: an installation without attestations:
// read cannot mint the token; the error says which permission is missing.
func TestAttestationsPermissionMissing(t *testing.T) {
	e := newEnv(t)
	e.gh.AddInstallation(githubtest.Installation{ID: testInstallation, Account: "acme", Permissions: map[string]string{"packages": "read", "metadata": "read"}})
	e.gh.AddAttestation("acme/v7", testDigest, []byte(`{}`), false)
	_, err := newAttestations(t, e).Bundles(context.Background(), "acme/v7", 0, testDigest)
	var ge *github.Error
	if !errors.As(err, &ge) || ge.Kind != github.KindPermission || !strings.Contains(err.Error(), "attestations: read") {
		t.Fatalf("error %v, want a missing attestations: read permission", err)
	}
}

func TestAttestationsBadInput(t *testing.T) {
	a := newAttestations(t, newEnv(t))
	for _, c := range []struct{ repo, digest string }{{"acme", testDigest}, {"acme/v7", "latest"}, {"acme/v7", "sha256:../../x"}} {
		if _, err := a.Bundles(context.Background(), c.repo, 0, c.digest); err == nil {
			t.Errorf("%s %s: no error", c.repo, c.digest)
		}
	}
}
