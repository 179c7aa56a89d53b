package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/auth/oidc"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/server"
	"github.com/deployd/deployd/server/httperr"
)

// oidcRetryAfter is what a client refused for want of the issuer's
// discovery is asked to wait, in seconds.
const oidcRetryAfter = "30"

// bearerTokens is the server's TokenVerifier: deployd's own API tokens
// and, with api.oidc, GitHub Actions OIDC tokens. A token whose
// (unverified) iss is the OIDC issuer goes to the OIDC verifier, any other
// to the API token key; either may be nil when not configured.
type bearerTokens struct {
	api  *apiTokens
	oidc *oidc.Verifier
}

// errNoAPITokens refuses an API token when only OIDC tokens are accepted.
var errNoAPITokens = errors.New("invalid API token: api.token_key_file is not set, so only GitHub Actions OIDC tokens are accepted")

func (t bearerTokens) Verify(ctx context.Context, token string) (server.Caller, error) {
	if t.oidc == nil || !t.oidc.Issued(token) {
		if t.api == nil {
			return server.Caller{}, errNoAPITokens
		}
		return t.api.Verify(ctx, token)
	}
	c, err := t.oidc.Verify(ctx, token)
	if errors.Is(err, oidc.ErrUnavailable) {
		return server.Caller{}, &httperr.Error{Status: http.StatusServiceUnavailable, RetryAfter: oidcRetryAfter,
			Message: err.Error(), Cause: err,
			Hint: "retry shortly; deployd's log says why (the issuer cannot be reached, or the token could not be recorded as used); API tokens from deployd token issue still work"}
	}
	if err != nil {
		return server.Caller{}, err
	}
	return server.Caller{Subject: c.Trigger(), TokenID: c.ID, Allows: apitoken.Claims{Scopes: c.Scopes}.Allows,
		ExpiresAt: c.ExpiresAt, SingleUse: true}, nil
}

// newOIDC starts the GitHub Actions OIDC verifier of api.oidc, or returns
// nil when it is not configured. Discovery of the issuer goes on in the
// background until it succeeds or ctx ends. used (the store) remembers the
// tokens accepted, across restarts.
func newOIDC(ctx context.Context, cfg *configs.Config, used oidc.UsedTokens, log zerolog.Logger) (*oidc.Verifier, error) {
	o := cfg.API.OIDC
	if o == nil {
		return nil, nil
	}
	rules := make([]oidc.Rule, len(o.Rules))
	for i, r := range o.Rules {
		rules[i] = oidc.Rule{RepositoryID: r.RepositoryID, RepositoryOwnerID: r.RepositoryOwnerID, Ref: r.Ref,
			Environment: r.Environment, EventName: r.EventName, WorkflowRef: r.WorkflowRef,
			JobWorkflowRef: r.JobWorkflowRef, Scopes: r.Scopes}
	}
	v, err := oidc.New(ctx, oidc.Config{Issuer: o.Issuer, Audience: o.Audience, Rules: rules, UsedTokens: used,
		Log: log.With().Str("component", "oidc").Logger()})
	if err != nil {
		return nil, fmt.Errorf("api.oidc: %w", err)
	}
	return v, nil
}
