package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/server"
	"github.com/deployd/deployd/server/httperr"
)

// unavailable answers every token as a verifier that cannot check any
// now (the OIDC issuer not discovered yet) does.
type unavailable struct{}

func (unavailable) Verify(context.Context, string) (server.Caller, error) {
	return server.Caller{}, &httperr.Error{Status: http.StatusServiceUnavailable, RetryAfter: "30",
		Message: "tokens cannot be checked right now", Cause: errors.New("issuer unreachable")}
}

func TestVerifierThatCannotCheckAnswers503(t *testing.T) {
	e := newAPIEnv(t, apiOpts{tokens: func(*apitoken.Key) server.TokenVerifier { return unavailable{} }})
	r := e.post("/api/v1/services/backend/deploy", "some.token.here", "")
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "30" {
		t.Fatalf("deploy: %d Retry-After %q %s, want 503 with Retry-After 30", r.status, r.header.Get("Retry-After"), r.body)
	}
	if msg, _ := r.json(t)["error"].(string); msg != "tokens cannot be checked right now" {
		t.Errorf("error %q", msg)
	}
	if strings.Contains(string(r.body), "issuer unreachable") {
		t.Errorf("the cause reached the client: %s", r.body)
	}
	if n := e.count(); n != 0 {
		t.Errorf("%d deployments queued, want none", n)
	}
}

// singleUse marks every verified token as accepted once only.
type singleUse struct{ verifier }

func (v singleUse) Verify(ctx context.Context, tok string) (server.Caller, error) {
	c, err := v.verifier.Verify(ctx, tok)
	c.SingleUse = true
	return c, err
}

func TestLoginRefusesSingleUseTokens(t *testing.T) {
	e := newAPIEnv(t, apiOpts{private: true, tokens: func(k *apitoken.Key) server.TokenVerifier { return singleUse{verifier{k}} }})
	r := e.login(e.token("status:read"))
	if r.status != http.StatusUnauthorized || r.loginCookie() != nil {
		t.Fatalf("login with a single-use token: %d, cookie %v; want 401 and no cookie", r.status, r.loginCookie())
	}
	if !strings.Contains(string(r.body), "accepted only once") {
		t.Errorf("the form does not say why: %s", r.body)
	}
}

func TestSingleUseTokenWithoutScopePointsAtTheRules(t *testing.T) {
	e := newAPIEnv(t, apiOpts{tokens: func(k *apitoken.Key) server.TokenVerifier { return singleUse{verifier{k}} }})
	r := e.post("/api/v1/services/backend/deploy", e.token("deploy:web"), "")
	if r.status != http.StatusForbidden {
		t.Fatalf("deploy: %d %s, want 403", r.status, r.body)
	}
	if hint, _ := r.json(t)["hint"].(string); !strings.Contains(hint, "api.oidc.rules") {
		t.Errorf("hint %q does not point at api.oidc.rules", hint)
	}
	if n := e.count(); n != 0 {
		t.Errorf("%d deployments queued, want none", n)
	}
}
