package main

import (
	"testing"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/configs"
	"github.com/deployd/deployd/deployer"
)

func TestGitHubDeploymentsOffOrWithoutApp(t *testing.T) {
	const appID = 5150
	key, keyPEM := githubtest.NewKey(t)
	gh := githubtest.NewFakeGitHub(t, appID, &key.PublicKey)
	pk, err := github.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	app, err := github.NewApp(github.AppConfig{ID: appID, Key: pk, APIURL: gh.URL, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &configs.Config{
		PublicURL: "https://deploy.example.com/",
		GitHub:    configs.GitHub{Deployments: true},
		Services:  map[string]*deployer.Service{"web": {Repository: "acme/web"}},
	}

	// github.deployments off, or no App: no mirror.
	cfg.GitHub.Deployments = false
	g, err := newGitHubDeployments(cfg, app, zerolog.Nop())
	if err != nil || g != nil {
		t.Fatalf("mirror with github.deployments off = %v, %v", g, err)
	}
	cfg.GitHub.Deployments = true
	if g, err := newGitHubDeployments(cfg, nil, zerolog.Nop()); err != nil || g != nil {
		t.Fatalf("mirror without App = %v, %v", g, err)
	}
	if n := gh.Requests(); n != 0 {
		t.Errorf("GitHub got %d requests", n)
	}
}
