package main

import (
	"fmt"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer/ghdeployments"
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

// newCredentials builds the App (nil when none is configured) and the
// registry credential chain, which is the pipeline's deployer.Credentials.
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

// newGitHubDeployments builds the reporter of deployments to GitHub's
// Deployments API from the configuration: nil when github.deployments is
// off or no App is configured.
func newGitHubDeployments(cfg *configs.Config, app *github.App, log zerolog.Logger) (*ghdeployments.Reporter, error) {
	if !cfg.GitHub.Deployments || app == nil {
		return nil, nil
	}
	api, err := github.NewDeploymentReporter(github.DeploymentReporterConfig{App: app})
	if err != nil {
		return nil, err
	}
	repos := make(map[string]string, len(cfg.Services))
	for name, s := range cfg.Services {
		repos[name] = s.Repository
	}
	return ghdeployments.New(ghdeployments.Config{
		API: api, Repositories: repos, PublicURL: cfg.PublicURL,
		Logger: log.With().Str("component", "github_deployments").Logger(),
	})
}
