package registry_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containers/image/v5/docker"
	"github.com/docker/distribution/registry/api/errcode"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
)

func TestAnswer(t *testing.T) {
	denied := errcode.ErrorCodeDenied.WithMessage(errcode.ErrorCodeDenied.Message())
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"error code, default message", fmt.Errorf("resolve %s:latest: reading manifest latest in %s: %w", backend, backend, denied), "requested access to the resource is denied"},
		{"error code, own message", fmt.Errorf("resolve: %w", errcode.ErrorCodeUnauthorized.WithMessage("authentication required")), "authentication required"},
		{"error code without message", fmt.Errorf("resolve: %w", errcode.Error{Code: errcode.ErrorCodeDenied}), "requested access to the resource is denied"},
		{"token endpoint status", fmt.Errorf("resolve: requesting bearer token: %w", docker.UnexpectedHTTPStatusError{StatusCode: 403}), "403 Forbidden"},
		{"credentials refused, no body", fmt.Errorf("resolve: %w", docker.ErrUnauthorizedForCredentials{Err: errors.New(`StatusCode: 401, ""`)}), "401 Unauthorized"},
		{"credentials refused with a code", fmt.Errorf("resolve: %w", docker.ErrUnauthorizedForCredentials{Err: fmt.Errorf("%w", errcode.ErrorCodeUnauthorized.WithMessage("bad token"))}), "bad token"},
		{"no registry answer", errors.New("resolve: dial tcp: connection refused: something: else"), ""},
	} {
		if got := registry.Answer(c.err); got != c.want {
			t.Errorf("%s: Answer(%q) = %q, want %q", c.name, c.err, got, c.want)
		}
	}
}

func TestChainExplainDenied(t *testing.T) {
	onlyApp := newChainEnv(t, registry.SourceGitHubApp)
	got := onlyApp.chain.ExplainDenied(ghcr, backend, registry.SourceGitHubApp, "403 Forbidden")
	if want := "registry denied the GitHub App token for ghcr.io/acme/v7/backend (403 Forbidden): GitHub App installation tokens cannot read this private package"; got.Detail != want {
		t.Errorf("Detail =\n%s\nwant\n%s", got.Detail, want)
	}
	for _, w := range []string{"add token_file with a classic personal access token that has read:packages to registries.ghcr.io.credentials",
		"after github_app", "or make the package inherit access", "Inherit access from source repository", "not the App"} {
		if !strings.Contains(got.Fix, w) {
			t.Errorf("Fix lacks %q: %s", w, got.Fix)
		}
	}

	both := newChainEnv(t)
	got = both.chain.ExplainDenied(ghcr, backend, registry.SourceGitHubApp, "DENIED")
	if !strings.HasPrefix(got.Fix, "for the App to read it, make the package inherit access") || strings.Contains(got.Fix, "add token_file") {
		t.Errorf("with token_file configured, Fix = %s", got.Fix)
	}
	got = both.chain.ExplainDenied(ghcr, backend, registry.SourceTokenFile, "403 Forbidden")
	if got.Detail != both.chain.Explain(ghcr, backend, registry.SourceTokenFile, "403 Forbidden") {
		t.Errorf("token_file Detail = %s, want Explain's words", got.Detail)
	}
	if want := "put a classic personal access token with read:packages that can see ghcr.io/acme/v7/backend in " + both.patFile; got.Fix != want {
		t.Errorf("token_file Fix = %s, want %s", got.Fix, want)
	}
	got = both.chain.ExplainDenied("127.0.0.1:5000", "127.0.0.1:5000/acme/app", registry.SourceNone, "401 Unauthorized")
	if !strings.Contains(got.Detail, "requires a login for 127.0.0.1:5000/acme/app (401 Unauthorized)") ||
		got.Fix != "list github_app or token_file in registries.127.0.0.1:5000.credentials" {
		t.Errorf("none: %+v", got)
	}
}

func TestChainExplainUnavailable(t *testing.T) {
	e := newChainEnv(t)
	appErr := fmt.Errorf("mint: %w", &github.Error{Kind: github.KindNotInstalled, Message: "not installed", Hint: "install the App on acme/v7"})
	if got := e.chain.ExplainUnavailable(ghcr, registry.SourceGitHubApp, appErr); got.Fix != "install the App on acme/v7" ||
		got.Detail != "no credential: "+appErr.Error() {
		t.Errorf("App failure: %+v", got)
	}
	fileErr := errors.New("token file is empty")
	if got := e.chain.ExplainUnavailable(ghcr, registry.SourceTokenFile, fileErr); !strings.Contains(got.Fix, "write a classic personal access token with read:packages to "+e.patFile) {
		t.Errorf("token_file failure: %+v", got)
	}
	if got := e.chain.ExplainUnavailable(ghcr, registry.SourceGitHubApp, errors.New("boom")); got.Fix != "check the credentials of the registry" {
		t.Errorf("other failure: %+v", got)
	}
}

// TestChainExplainRefusal: the pipeline's hint for a refused credential
// names what was refused and gives doctor's fix for this configuration.
func TestChainExplainRefusal(t *testing.T) {
	onlyApp := newChainEnv(t, registry.SourceGitHubApp)
	req := deployer.CredentialRequest{Host: ghcr, Image: backend}
	got := onlyApp.chain.ExplainRefusal(req, registry.SourceGitHubApp)
	want := "the registry refused the GitHub App token for ghcr.io/acme/v7/backend: " +
		onlyApp.chain.ExplainDenied(ghcr, backend, registry.SourceGitHubApp, "").Fix
	if got != want || !strings.Contains(got, "add token_file") {
		t.Errorf("ExplainRefusal(github_app) =\n%s\nwant\n%s", got, want)
	}
	both := newChainEnv(t)
	if got := both.chain.ExplainRefusal(req, registry.SourceTokenFile); !strings.HasPrefix(got, "the registry refused the token in token_file for ghcr.io/acme/v7/backend: put a classic personal access token with read:packages") ||
		!strings.Contains(got, both.patFile) {
		t.Errorf("ExplainRefusal(token_file) = %s", got)
	}
}
