package main

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/oidc"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/server"
	"github.com/deployd/deployd/server/metrics"
)

// apiTokens adapts *apitoken.Key to the server's TokenVerifier.
type apiTokens struct{ key *apitoken.Key }

func (t apiTokens) Verify(_ context.Context, token string) (server.Caller, error) {
	c, err := t.key.Verify(token)
	if err != nil {
		return server.Caller{}, err
	}
	return server.Caller{Subject: c.Subject, TokenID: c.ID, Allows: c.Allows, ExpiresAt: c.ExpiresAt}, nil
}

// newAPITokens loads api.token_key_file and, with api.oidc, starts the
// GitHub Actions OIDC verifier (its discovery runs until ctx ends), which
// records the tokens it accepts in used. With neither it returns nil: the
// write API is then off and says so.
func newAPITokens(ctx context.Context, cfg *configs.Config, used oidc.UsedTokens, log zerolog.Logger) (server.TokenVerifier, error) {
	var tokens bearerTokens
	if cfg.API.TokenKeyFile == "" {
		log.Info().Msg("api.token_key_file is not set: API tokens are not accepted")
	} else {
		key, warning, err := apitoken.LoadKey(cfg.API.TokenKeyFile)
		if err != nil {
			return nil, fmt.Errorf("api.token_key_file: %w", err)
		}
		if warning != "" {
			log.Warn().Str("file", cfg.API.TokenKeyFile).Msg(warning)
		}
		tokens.api = &apiTokens{key}
	}
	v, err := newOIDC(ctx, cfg, used, log)
	if err != nil {
		return nil, err
	}
	tokens.oidc = v
	if tokens.api == nil && tokens.oidc == nil {
		log.Info().Msg("neither api.token_key_file nor api.oidc is set: the deploy and rollback API is off")
		return nil, nil
	}
	return tokens, nil
}

// newMetrics registers deployd's metrics on a registry of their own. app
// may be nil (no GitHub App configured), and so may chain.
func newMetrics(cfg *configs.Config, store *sqlite.Store, app *github.App, chain *registry.Chain) (*metrics.Metrics, error) {
	mc := metrics.Config{Registry: prometheus.NewRegistry(), History: store, Services: slices.Sorted(maps.Keys(cfg.Services)),
		StoreWriteErrors: store.WriteErrors, StorePruned: prunedByTable(store)}
	if chain != nil {
		mc.Credentials = chain.Health
	}
	if app != nil {
		mc.Tokens = app.Stats
	}
	return metrics.New(mc)
}
