package main

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

// newApp builds the GitHub App from the configuration, or returns nil when
// no App is configured.
func newApp(cfg *configs.Config, log zerolog.Logger) (*github.App, error) {
	if cfg.GitHub.App.ID == 0 {
		return nil, nil
	}
	key, warning, err := github.LoadPrivateKey(cfg.GitHub.App.PrivateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("github.app.private_key_file: %w", err)
	}
	if warning != "" {
		log.Warn().Str("file", cfg.GitHub.App.PrivateKeyFile).Msg(warning)
	}
	return github.NewApp(github.AppConfig{
		ID:             cfg.GitHub.App.ID,
		Key:            key,
		APIURL:         cfg.GitHub.APIURL,
		InstallationID: cfg.GitHub.App.InstallationID,
		Logger:         log.With().Str("component", "github").Logger(),
	})
}

// newChain builds the registry credential chain from the configuration.
func newChain(cfg *configs.Config, app *github.App, log zerolog.Logger) (*registry.Chain, error) {
	regs := make(map[string]registry.HostConfig, len(cfg.Registries))
	for host, r := range cfg.Registries {
		regs[host] = registry.HostConfig{Username: r.Username, Sources: r.Credentials, TokenFile: r.TokenFile}
	}
	return registry.NewChain(registry.ChainConfig{
		Registries: regs,
		App:        app,
		Logger:     log.With().Str("component", "credentials").Logger(),
	})
}

// chainCredentials adapts *registry.Chain to the deployer's Credentials.
type chainCredentials struct{ chain *registry.Chain }

func (c chainCredentials) Credential(ctx context.Context, req deployer.CredentialRequest) (deployer.Credential, error) {
	cred, err := c.chain.Credential(ctx, registry.CredentialRequest{
		Host: req.Host, Image: req.Image, Repository: req.Repository, InstallationID: req.InstallationID,
		Refused: req.Refused, IgnorePutAside: req.IgnorePutAside,
	})
	if err != nil {
		return deployer.Credential{}, err
	}
	if cred.Anonymous() {
		return deployer.Credential{Source: cred.Source}, nil
	}
	return deployer.Credential{Source: cred.Source, Username: cred.Username, Password: deployer.Password(cred.Password.Reveal())}, nil
}

func (c chainCredentials) Denied(req deployer.CredentialRequest, source, reason string) {
	c.chain.Denied(req.Host, req.Image, source, reason)
}

func (c chainCredentials) Accepted(req deployer.CredentialRequest, source string) {
	c.chain.Accepted(req.Host, req.Image, source)
}

func (c chainCredentials) Invalidate(req deployer.CredentialRequest) {
	c.chain.Invalidate(req.Host, req.Image)
}

// newCredentials builds the App (nil when none is configured) and the
// registry credential chain; chainCredentials adapts the chain for the pipeline.
func newCredentials(cfg *configs.Config, log zerolog.Logger) (*github.App, *registry.Chain, error) {
	app, err := newApp(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	chain, err := newChain(cfg, app, log)
	if err != nil {
		return nil, nil, err
	}
	return app, chain, nil
}
