package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/internal/testlog"
	"github.com/rs/zerolog"
)

// TestNoSecretLeaks drives a whole flow (key file, App, chain, mints,
// refusals, fallbacks, GitHub down, errors) with a logger writing into a
// buffer, prints every value that holds a secret in every way, and checks
// that no token, PAT, JWT or key material appears anywhere.
func TestNoSecretLeaks(t *testing.T) {
	ctx := context.Background()
	k, pemBytes := appKey(t)
	keyPath := writeFile(t, "app.pem", pemBytes, 0o644) // also exercises the warning path
	key, warning, err := github.LoadPrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	logs := &testlog.Buffer{}
	logger := zerolog.New(logs).Level(zerolog.DebugLevel)
	gh := githubtest.NewFakeGitHub(t, testAppID, &k.PublicKey)
	gh.SetClock(clk.Now)
	gh.AddInstallation(githubtest.Installation{ID: testInstallation, Account: "acme"})
	rt := &recordingTransport{}
	appCfg := github.AppConfig{ID: testAppID, Key: key, APIURL: gh.URL, Transport: rt, Clock: clk.Now, Logger: logger}
	app, err := github.NewApp(appCfg)
	if err != nil {
		t.Fatal(err)
	}
	patPath := writeFile(t, "pat", []byte(pat+"\n"), 0o600)
	chainCfg := registry.ChainConfig{
		Registries: map[string]registry.HostConfig{
			ghcr: {Sources: []string{registry.SourceGitHubApp, registry.SourceTokenFile}, TokenFile: patPath},
		},
		App: app, Clock: clk.Now, Logger: logger,
	}
	chain, err := registry.NewChain(chainCfg)
	if err != nil {
		t.Fatal(err)
	}

	var printed []any // everything that must print without secrets
	keep := func(vs ...any) { printed = append(printed, vs...) }

	info, err := app.Verify(ctx)
	keep(info, err)
	inst, err := app.Installation(ctx, testInstallation)
	keep(inst, err)

	c1, err := chain.Credential(ctx, backendReq)
	keep(c1, &c1, err)
	chain.Invalidate(onGHCR(backend))
	c2, err := chain.Credential(ctx, backendReq)
	keep(c2, err)
	chain.Denied(onGHCR(backend), registry.SourceGitHubApp, "403 DENIED")
	c3, err := chain.Credential(ctx, backendReq)
	keep(c3, err)
	if c3.Source != registry.SourceTokenFile {
		t.Fatalf("fallback source %s", c3.Source)
	}
	chain.Accepted(onGHCR(backend), registry.SourceTokenFile)

	webReq := deployer.CredentialRequest{Host: ghcr, Image: "ghcr.io/acme/web", Repository: "acme/web"}
	c4, err := chain.Credential(ctx, webReq)
	keep(c4, err)
	gh.SetDown(githubtest.DownHangUp)
	clk.Add(57 * time.Minute)
	c5, err := chain.Credential(ctx, webReq) // stale token served with a warning
	keep(c5, err)
	tok, exp, err := app.InstallationToken(ctx, testInstallation, []string{"other"}) // down, no cache
	keep(tok, exp, err)
	gh.SetDown(githubtest.Up)

	chain.Denied(onGHCR(backend), registry.SourceGitHubApp, "403 DENIED") // the first put-aside has ended
	chain.Denied(onGHCR(backend), registry.SourceTokenFile, "403 DENIED")
	refused := backendReq
	refused.Refused = []string{registry.SourceGitHubApp, registry.SourceTokenFile}
	_, chainErr := chain.Credential(ctx, refused)
	keep(chainErr)
	if chainErr == nil {
		t.Fatal("no error with every source refused")
	}

	other, _ := githubtest.NewKey(t)
	gh.SetPublicKey(&other.PublicKey)
	_, badJWT := app.Verify(ctx)
	keep(badJWT)
	if badJWT == nil {
		t.Fatal("wrong key accepted")
	}

	keep(appCfg, &appCfg, chainCfg, key, app, chain, chain.Health(), app.Stats(), warning)

	// The secrets.
	secrets := []string{pat, k.D.String(), k.Primes[0].String(), fmt.Sprint(k.D.Bytes()[:8])}
	for _, line := range strings.Split(string(pemBytes), "\n") {
		if line != "" && !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	for _, m := range gh.Mints() {
		secrets = append(secrets, m.Token)
	}
	if len(gh.Mints()) < 3 {
		t.Fatalf("only %d tokens minted: the flow did not run", len(gh.Mints()))
	}
	for _, a := range rt.auths {
		if jwt, ok := strings.CutPrefix(a, "Bearer "); ok {
			secrets = append(secrets, jwt)
		}
	}

	var out strings.Builder
	for _, v := range printed {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
		if b, err := json.Marshal(v); err == nil {
			out.Write(b)
		}
		if e, ok := v.(error); ok && e != nil {
			out.WriteString(e.Error())
		}
		logger.Info().Interface("v", v).Msg("print")
	}
	logger.Info().Err(chainErr).Err(badJWT).Msg("errors")
	out.WriteString(logs.String())

	all := out.String()
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("secret %.12s... appears in the output", s)
		}
	}
	for _, want := range []string{"[redacted]", "minted GitHub App installation token", "using the cached one", "putting this source aside"} {
		if !strings.Contains(all, want) {
			t.Errorf("output lacks %q: the flow did not reach it", want)
		}
	}
}

// TestCredentialNeverPrints checks every printed form of a credential the
// chain hands out: its password shows as [redacted].
func TestCredentialNeverPrints(t *testing.T) {
	const secret = "ghs_s3cr3t-value"
	c := deployer.Credential{Source: registry.SourceTokenFile, Username: "u", Password: deployer.NewPassword(secret)}
	var forms []string
	// fmt prints an unexported field without calling its methods: a
	// struct that keeps a credential so must not show it either.
	holder := struct{ cred deployer.Credential }{c}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		forms = append(forms, fmt.Sprintf(verb, c), fmt.Sprintf(verb, holder))
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	forms = append(forms, string(b))
	var buf strings.Builder
	zl := zerolog.New(&buf)
	zl.Info().Interface("v", c).Msg("x")
	forms = append(forms, buf.String())
	for _, f := range forms {
		if strings.Contains(f, secret) {
			t.Errorf("secret printed in %q", f)
		}
	}
}
