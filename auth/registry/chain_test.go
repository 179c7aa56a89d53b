package registry_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/auth/registry"
	"github.com/deployd/deployd/deployer"
	"github.com/rs/zerolog"
)

const (
	ghcr    = "ghcr.io"
	backend = "ghcr.io/acme/v7/backend"
	pat     = "ghp_classicPATvalue0123456789"
)

type chainEnv struct {
	*env
	chain   *registry.Chain
	patFile string
}

// newChainEnv configures ghcr.io with github_app, token_file, and a local
// registry with none.
func newChainEnv(t *testing.T, sources ...string) *chainEnv {
	t.Helper()
	e := &chainEnv{env: newEnv(t)}
	e.patFile = writeFile(t, "ghcr-pat", []byte(pat+"\n"), 0o600)
	if len(sources) == 0 {
		sources = []string{registry.SourceGitHubApp, registry.SourceTokenFile}
	}
	var err error
	e.chain, err = registry.NewChain(registry.ChainConfig{
		Registries: map[string]registry.HostConfig{
			ghcr:             {Username: "x-access-token", Sources: sources, TokenFile: e.patFile},
			"127.0.0.1:5000": {Sources: []string{registry.SourceNone}},
		},
		App:    e.app,
		Clock:  e.clock.Now,
		Logger: zerolog.New(e.logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *chainEnv) credential(t *testing.T, req deployer.CredentialRequest) deployer.Credential {
	t.Helper()
	c, err := e.chain.Credential(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var backendReq = deployer.CredentialRequest{Host: ghcr, Image: backend + ":latest", Repository: "acme/v7"}

// onGHCR names image on ghcr.io, as the pipeline's reports of a refusal or
// an acceptance do.
func onGHCR(image string) deployer.CredentialRequest {
	return deployer.CredentialRequest{Host: ghcr, Image: image}
}

func TestChainFirstSourceIsTheApp(t *testing.T) {
	e := newChainEnv(t)
	c := e.credential(t, backendReq)
	if c.Source != registry.SourceGitHubApp || c.Username != "x-access-token" || c.Anonymous() {
		t.Fatalf("credential = %+v", c)
	}
	if !e.gh.ValidToken(c.Password.Reveal()) {
		t.Error("password is not a minted installation token")
	}
	if want, got := e.clock.Now().Add(time.Hour), health(e.chain, ghcr)[registry.SourceGitHubApp].Expires; !got.Equal(want) {
		t.Errorf("Expires = %v, want %v", got, want)
	}
	m := e.gh.Mints()[0]
	if m.InstallationID != testInstallation || len(m.Repositories) != 1 || m.Repositories[0] != "v7" || m.Permissions["packages"] != "read" {
		t.Errorf("mint = %+v; want installation looked up for acme/v7, down-scoped to v7 with packages: read", m)
	}
	// The same image again: the cached token.
	if again := e.credential(t, backendReq); again.Password.Reveal() != c.Password.Reveal() || e.gh.MintCount() != 1 {
		t.Error("token not reused")
	}
	// The delivery's installation wins over the lookup.
	e.gh.AddInstallation(githubtest.Installation{ID: 90, Account: "acme"})
	req := backendReq
	req.InstallationID = 90
	e.credential(t, req)
	if got := e.gh.Mints()[1].InstallationID; got != 90 {
		t.Errorf("minted for installation %d, want the delivery's 90", got)
	}
}

func TestChainAnonymousHosts(t *testing.T) {
	e := newChainEnv(t)
	for _, req := range []deployer.CredentialRequest{
		{Host: "127.0.0.1:5000", Image: "127.0.0.1:5000/acme/app:1"},
		{Image: "127.0.0.1:5000/acme/app"},
		{Host: "docker.io", Image: "library/nginx"},
	} {
		c := e.credential(t, req)
		if !c.Anonymous() || c.Username != "" || c.Password.Reveal() != "" {
			t.Errorf("%+v: credential %+v, want anonymous", req, c)
		}
	}
}

// TestChainGHCRDeniesAppToken plays ghcr.io's reality: the login with the
// App token succeeds but the pull of the private package is denied.
func TestChainGHCRDeniesAppToken(t *testing.T) {
	e := newChainEnv(t)
	c := e.credential(t, backendReq)
	if c.Source != registry.SourceGitHubApp {
		t.Fatalf("source %s", c.Source)
	}
	// Retry once with a fresh token.
	e.chain.Invalidate(onGHCR(backend))
	fresh := e.credential(t, backendReq)
	if fresh.Password.Reveal() == c.Password.Reveal() || e.gh.MintCount() != 2 {
		t.Fatal("Invalidate did not give a fresh token")
	}
	// Denied again: put aside, next source.
	const reason = "403 DENIED: requesting bearer token"
	e.chain.Denied(onGHCR(backend+"@sha256:"+strings.Repeat("0", 64)), registry.SourceGitHubApp, reason)
	c = e.credential(t, backendReq)
	if c.Source != registry.SourceTokenFile || c.Password.Reveal() != pat || c.Username != "x-access-token" || !health(e.chain, ghcr)[registry.SourceTokenFile].Expires.IsZero() {
		t.Fatalf("after denial: %+v", c)
	}
	e.chain.Accepted(onGHCR(backend), registry.SourceTokenFile)

	// Other images still get the App token.
	web := e.credential(t, deployer.CredentialRequest{Host: ghcr, Image: "ghcr.io/acme/web", Repository: "acme/web"})
	if web.Source != registry.SourceGitHubApp {
		t.Errorf("web: %s", web.Source)
	}

	h := health(e.chain, ghcr)
	app, file := h[registry.SourceGitHubApp], h[registry.SourceTokenFile]
	if app.State != registry.HealthDenied || app.Reason != reason || app.Image != "acme/v7/backend" ||
		!app.PutAsideUntil.Equal(e.clock.Now().Add(registry.DefaultPutAsideFor)) || app.Expires.IsZero() {
		t.Errorf("github_app health = %+v", app)
	}
	if file.State != registry.HealthOK || file.Reason != "" {
		t.Errorf("token_file health = %+v", file)
	}

	// The put-aside ends after DefaultPutAsideFor: the App is tried again.
	e.clock.Add(registry.DefaultPutAsideFor - time.Second)
	if c := e.credential(t, backendReq); c.Source != registry.SourceTokenFile {
		t.Fatalf("put-aside ended early: %s", c.Source)
	}
	e.clock.Add(time.Second)
	if c := e.credential(t, backendReq); c.Source != registry.SourceGitHubApp {
		t.Fatalf("put-aside did not end: %s", c.Source)
	}
	if h := health(e.chain, ghcr)[registry.SourceGitHubApp]; !h.PutAsideUntil.IsZero() || h.State != registry.HealthDenied {
		t.Errorf("after the put-aside: %+v (want the last verdict kept, no put-aside)", h)
	}
	e.chain.Accepted(onGHCR(backend), registry.SourceGitHubApp)
	if h := health(e.chain, ghcr)[registry.SourceGitHubApp]; h.State != registry.HealthOK {
		t.Errorf("after Accepted: %+v", h)
	}
}

func health(c *registry.Chain, host string) map[string]registry.SourceHealth {
	m := make(map[string]registry.SourceHealth)
	for _, h := range c.Health() {
		if h.Host == host {
			m[h.Source] = h
		}
	}
	return m
}

func TestChainAllSourcesRefused(t *testing.T) {
	e := newChainEnv(t)
	e.chain.Denied(onGHCR(backend), registry.SourceGitHubApp, "403 Forbidden at the token endpoint")
	e.chain.Denied(onGHCR(backend), registry.SourceTokenFile, "403 Forbidden at the token endpoint")
	req := backendReq
	req.Refused = []string{registry.SourceGitHubApp, registry.SourceTokenFile}
	_, err := e.chain.Credential(context.Background(), req)
	var ce *registry.ChainError
	if !errors.As(err, &ce) || !errors.Is(err, registry.ErrNoCredential) {
		t.Fatalf("error %v (%T), want *ChainError", err, err)
	}
	msg := err.Error()
	for _, want := range []string{
		"ghcr.io/acme/v7/backend",
		"registry denied the GitHub App token (403 Forbidden at the token endpoint)",
		"registry denied the token_file token",
		"GitHub App installation tokens cannot read",
		"the token in " + e.patFile + " was refused: it must be a classic personal access token with read:packages",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if len(ce.Attempts) != 2 || !ce.Attempts[0].Denied || ce.Attempts[0].Source != registry.SourceGitHubApp {
		t.Errorf("attempts = %+v", ce.Attempts)
	}
}

func TestChainAppDeniedWithoutTokenFileSaysAddOne(t *testing.T) {
	e := newChainEnv(t, registry.SourceGitHubApp)
	e.chain.Denied(onGHCR(backend), registry.SourceGitHubApp, "403 DENIED")
	req := backendReq
	req.Refused = []string{registry.SourceGitHubApp}
	_, err := e.chain.Credential(context.Background(), req)
	for _, want := range []string{
		"no registry credential left for ghcr.io/acme/v7/backend: registry denied the GitHub App token (403 DENIED), put aside until 2026-03-01T12:01:00Z",
		"GitHub App installation tokens cannot read the private package ghcr.io/acme/v7/backend",
		"add token_file to the credentials of ghcr.io with a classic personal access token that has read:packages",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestChainGitHubDownFallsBack(t *testing.T) {
	e := newChainEnv(t)
	e.gh.SetDown(githubtest.DownHangUp)
	c := e.credential(t, backendReq)
	if c.Source != registry.SourceTokenFile {
		t.Fatalf("source %s, want the token file while GitHub is down", c.Source)
	}
	if h := health(e.chain, ghcr)[registry.SourceGitHubApp]; h.State != registry.HealthFailed || !strings.Contains(h.Reason, "cannot reach GitHub") {
		t.Errorf("health = %+v", h)
	}

	only := newChainEnv(t, registry.SourceGitHubApp)
	only.gh.SetDown(githubtest.Down500)
	_, err := only.chain.Credential(context.Background(), backendReq)
	var ge *github.Error
	if !errors.As(err, &ge) || ge.Kind != github.KindUnreachable || !errors.Is(err, registry.ErrNoCredential) {
		t.Fatalf("error %v: want a ChainError wrapping an unreachable GitHubError", err)
	}
	if !strings.Contains(err.Error(), "github_app failed") {
		t.Errorf("error = %v", err)
	}
}

func TestChainTokenFileReReadOnChange(t *testing.T) {
	e := newChainEnv(t, registry.SourceTokenFile)
	if c := e.credential(t, backendReq); c.Password.Reveal() != pat {
		t.Fatal("wrong token")
	}
	// Rotated: different size.
	if err := os.WriteFile(e.patFile, []byte("ghp_rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := e.credential(t, backendReq); c.Password.Reveal() != "ghp_rotated" {
		t.Fatalf("token file not re-read after a change")
	}
	// Same size, new modification time.
	if err := os.WriteFile(e.patFile, []byte("ghp_ROTATED\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(e.patFile, later, later); err != nil {
		t.Fatal(err)
	}
	if c := e.credential(t, backendReq); c.Password.Reveal() != "ghp_ROTATED" {
		t.Fatal("token file not re-read after an mtime change")
	}
	// Unchanged mtime and size: not read again (the content is cached).
	if err := os.WriteFile(e.patFile, []byte("ghp_sneaky!\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(e.patFile, later, later); err != nil {
		t.Fatal(err)
	}
	if c := e.credential(t, backendReq); c.Password.Reveal() != "ghp_ROTATED" {
		t.Fatal("token file read again although mtime and size are unchanged")
	}
	if strings.Contains(e.logs.String(), "ghp_") {
		t.Errorf("token in the log: %s", e.logs)
	}
}

func TestChainTokenFileProblems(t *testing.T) {
	e := newChainEnv(t, registry.SourceTokenFile)
	for name, content := range map[string]string{"empty": "  \n", "two lines": "a\nb\n"} {
		if err := os.WriteFile(e.patFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Duration(len(name)) * time.Minute)
		_ = os.Chtimes(e.patFile, later, later)
		if _, err := e.chain.Credential(context.Background(), backendReq); err == nil {
			t.Errorf("%s token file accepted", name)
		}
	}
	if err := os.Remove(e.patFile); err != nil {
		t.Fatal(err)
	}
	_, err := e.chain.Credential(context.Background(), backendReq)
	if err == nil || !strings.Contains(err.Error(), "token_file failed: token file "+e.patFile+" does not exist") {
		t.Errorf("error = %v", err)
	}
	if h := health(e.chain, ghcr)[registry.SourceTokenFile]; h.State != registry.HealthFailed {
		t.Errorf("health = %+v", h)
	}
}

func TestChainTokenFileWorldReadableWarns(t *testing.T) {
	e := newChainEnv(t, registry.SourceTokenFile)
	if err := os.Chmod(e.patFile, 0o644); err != nil {
		t.Fatal(err)
	}
	e.credential(t, backendReq)
	if !strings.Contains(e.logs.String(), "readable by group or others") {
		t.Errorf("no warning: %s", e.logs)
	}
}

func TestChainSourceCredentialIgnoresPutAside(t *testing.T) {
	e := newChainEnv(t)
	e.chain.Denied(onGHCR(backend), registry.SourceGitHubApp, "denied")
	c, err := e.chain.SourceCredential(context.Background(), backendReq, registry.SourceGitHubApp)
	if err != nil || c.Source != registry.SourceGitHubApp {
		t.Fatalf("SourceCredential = %+v, %v", c, err)
	}
	if _, err := e.chain.SourceCredential(context.Background(), backendReq, registry.SourceNone); err == nil {
		t.Error("a source the registry does not list was given")
	}
}

func TestChainHealthListsEverySource(t *testing.T) {
	e := newChainEnv(t)
	got := e.chain.Health()
	want := []string{"127.0.0.1:5000 none", "ghcr.io github_app", "ghcr.io token_file"}
	if len(got) != len(want) {
		t.Fatalf("Health = %+v", got)
	}
	for i, h := range got {
		if h.Host+" "+h.Source != want[i] || h.State != registry.HealthUnknown {
			t.Errorf("Health[%d] = %+v, want %s unknown", i, h, want[i])
		}
	}
}

func TestNewChainRefusesBadConfig(t *testing.T) {
	e := newEnv(t)
	for name, tc := range map[string]struct {
		cfg  registry.ChainConfig
		want string
	}{
		"unknown source":     {registry.ChainConfig{App: e.app, Registries: map[string]registry.HostConfig{ghcr: {Sources: []string{"password"}}}}, `unknown credential source "password"`},
		"app without App":    {registry.ChainConfig{Registries: map[string]registry.HostConfig{ghcr: {Sources: []string{"github_app"}}}}, "needs the GitHub App"},
		"file without path":  {registry.ChainConfig{Registries: map[string]registry.HostConfig{ghcr: {Sources: []string{"token_file"}}}}, "needs token_file"},
		"no sources":         {registry.ChainConfig{Registries: map[string]registry.HostConfig{ghcr: {}}}, "no credential sources"},
		"duplicate source":   {registry.ChainConfig{Registries: map[string]registry.HostConfig{ghcr: {Sources: []string{"none", "none"}}}}, "listed twice"},
		"host twice by case": {registry.ChainConfig{Registries: map[string]registry.HostConfig{ghcr: {Sources: []string{"none"}}, "GHCR.io": {Sources: []string{"none"}}}}, "configured twice"},
	} {
		_, err := registry.NewChain(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
	}
}

func TestChainPutAsideTimeConfigurable(t *testing.T) {
	e := newEnv(t)
	p := filepath.Join(t.TempDir(), "pat")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := registry.NewChain(registry.ChainConfig{
		Registries:  map[string]registry.HostConfig{ghcr: {Sources: []string{"none", "token_file"}, TokenFile: p}},
		PutAsideFor: time.Minute,
		Clock:       e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Denied(onGHCR(backend), registry.SourceNone, "401 UNAUTHORIZED")
	if cr, _ := c.Credential(context.Background(), backendReq); cr.Source != registry.SourceTokenFile {
		t.Fatalf("source %s", cr.Source)
	}
	e.clock.Add(time.Minute)
	if cr, _ := c.Credential(context.Background(), backendReq); cr.Source != registry.SourceNone {
		t.Fatalf("source %s after a minute", cr.Source)
	}
}

func TestChainConcurrentUse(t *testing.T) {
	e := newChainEnv(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.chain.Credential(context.Background(), backendReq)
			if err != nil {
				if !errors.Is(err, registry.ErrNoCredential) { // every source denied: a valid outcome here
					t.Error(err)
				}
				return
			}
			switch i % 4 {
			case 0:
				e.chain.Denied(onGHCR(backend), c.Source, "403")
			case 1:
				e.chain.Accepted(onGHCR(backend), c.Source)
			case 2:
				e.chain.Invalidate(onGHCR(backend))
			default:
				_ = e.chain.Health()
			}
		}()
	}
	wg.Wait()
}

func TestChainExplain(t *testing.T) {
	onlyApp := newChainEnv(t, registry.SourceGitHubApp)
	got := onlyApp.chain.Explain(ghcr, backend+":latest", registry.SourceGitHubApp, "403 Forbidden")
	want := "registry denied the GitHub App token for ghcr.io/acme/v7/backend (403 Forbidden): GitHub App installation tokens cannot read this private package; add a token_file with a read:packages token to the credentials of ghcr.io"
	if got != want {
		t.Errorf("Explain =\n%s\nwant\n%s", got, want)
	}
	both := newChainEnv(t)
	if got := both.chain.Explain(ghcr, backend, registry.SourceGitHubApp, "403"); !strings.Contains(got, "token_file credential is used instead") {
		t.Errorf("Explain = %s", got)
	}
	if got := both.chain.Explain(ghcr, backend, registry.SourceTokenFile, "403"); !strings.Contains(got, both.patFile) || !strings.Contains(got, "read:packages") {
		t.Errorf("Explain = %s", got)
	}
}

// deny hands out a credential for backend, requires it to come from
// source, and reports it refused.
func (e *chainEnv) deny(t *testing.T, source string) deployer.Credential {
	t.Helper()
	c := e.credential(t, backendReq)
	if c.Source != source {
		t.Fatalf("credential from %s, want %s to deny", c.Source, source)
	}
	e.chain.Denied(onGHCR(backend), source, "403 Forbidden")
	return c
}

func TestChainEverySourceAsideTriesAllAgainInOrder(t *testing.T) {
	e := newChainEnv(t)
	e.deny(t, registry.SourceGitHubApp)
	e.deny(t, registry.SourceTokenFile)
	// Both are put aside: the chain is reordered, never empty.
	c := e.credential(t, backendReq)
	if c.Source != registry.SourceGitHubApp || !e.gh.ValidToken(c.Password.Reveal()) {
		t.Fatalf("with every source put aside: %+v, want the App token first", c)
	}
	// The caller reports the App refused again: the next one in order.
	req := backendReq
	req.Refused = []string{registry.SourceGitHubApp}
	if c := e.credential(t, req); c.Source != registry.SourceTokenFile || c.Password.Reveal() != pat {
		t.Fatalf("after the App was refused again: %+v, want the token file", c)
	}
	// Both refused in this pull: nothing is left.
	req.Refused = append(req.Refused, registry.SourceTokenFile)
	_, err := e.chain.Credential(context.Background(), req)
	var ce *registry.ChainError
	if !errors.As(err, &ce) || len(ce.Attempts) != 2 || !ce.Attempts[0].Denied || !ce.Attempts[1].Denied ||
		ce.Attempts[1].Reason != "403 Forbidden" || ce.Attempts[1].Until.IsZero() {
		t.Fatalf("every source refused: %v (%+v), want a ChainError with both refusals", err, ce)
	}
	if !strings.Contains(e.logs.String(), "trying them again in order") {
		t.Errorf("the log does not say the put-aside sources are tried again: %s", e.logs)
	}

	// A source aside is tried after those that are not.
	e.chain.Accepted(onGHCR(backend), registry.SourceTokenFile)
	if c := e.credential(t, backendReq); c.Source != registry.SourceTokenFile {
		t.Errorf("with only the App put aside: %s, want the token file", c.Source)
	}
}

func TestChainChangedTokenFileEndsItsPutAside(t *testing.T) {
	e := newChainEnv(t, registry.SourceTokenFile, registry.SourceNone)
	e.deny(t, registry.SourceTokenFile)
	if c := e.credential(t, backendReq); c.Source != registry.SourceNone {
		t.Fatalf("after the refusal: %s, want none", c.Source)
	}
	// Written again with the same content: still put aside.
	later := time.Now().Add(time.Minute)
	if err := os.WriteFile(e.patFile, []byte(pat+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(e.patFile, later, later); err != nil {
		t.Fatal(err)
	}
	if c := e.credential(t, backendReq); c.Source != registry.SourceNone {
		t.Fatalf("same token written again: %s, want it still put aside", c.Source)
	}
	// A new token: its put-aside ends at once.
	if err := os.WriteFile(e.patFile, []byte("ghp_restored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := e.credential(t, backendReq)
	if c.Source != registry.SourceTokenFile || c.Password.Reveal() != "ghp_restored" {
		t.Fatalf("after the token file changed: %s, want the new token", c.Source)
	}
	if h := health(e.chain, ghcr)[registry.SourceTokenFile]; !h.PutAsideUntil.IsZero() {
		t.Errorf("health still shows a put-aside: %+v", h)
	}
	// The new token refused too: put aside again, for longer.
	e.chain.Denied(onGHCR(backend), registry.SourceTokenFile, "403 Forbidden")
	if h := health(e.chain, ghcr)[registry.SourceTokenFile]; !h.PutAsideUntil.Equal(e.clock.Now().Add(2 * registry.DefaultPutAsideFor)) {
		t.Errorf("second refusal in a row put aside until %v, want %v", h.PutAsideUntil, e.clock.Now().Add(2*registry.DefaultPutAsideFor))
	}
	if c := e.credential(t, backendReq); c.Source != registry.SourceNone {
		t.Errorf("the refused new token is offered again: %s", c.Source)
	}
	if strings.Contains(e.logs.String(), "ghp_") {
		t.Errorf("token in the log: %s", e.logs)
	}
}

func TestChainFreshAppTokenEndsItsPutAside(t *testing.T) {
	e := newChainEnv(t)
	refused := e.deny(t, registry.SourceGitHubApp)
	if c := e.credential(t, backendReq); c.Source != registry.SourceTokenFile {
		t.Fatalf("after the refusal: %s, want the token file", c.Source)
	}
	// The refused token is still cached: still put aside.
	if c := e.credential(t, backendReq); c.Source != registry.SourceTokenFile || e.gh.MintCount() != 1 {
		t.Fatalf("with the refused token cached: %s after %d mints, want the token file and no mint", c.Source, e.gh.MintCount())
	}
	// A token minted afresh (another job's retry, or the cache's refresh)
	// ends the put-aside.
	e.chain.Invalidate(onGHCR(backend))
	c := e.credential(t, backendReq)
	if c.Source != registry.SourceGitHubApp || c.Password.Reveal() == refused.Password.Reveal() || e.gh.MintCount() != 2 {
		t.Fatalf("after a fresh mint: %s (%d mints), want the fresh App token", c.Source, e.gh.MintCount())
	}

	// So does the cache's own refresh before expiry, with a put-aside
	// long enough to still be in force then.
	long, err := registry.NewChain(registry.ChainConfig{
		Registries:  map[string]registry.HostConfig{ghcr: {Sources: []string{registry.SourceGitHubApp, registry.SourceTokenFile}, TokenFile: e.patFile}},
		App:         e.app,
		PutAsideFor: 2 * time.Hour,
		Clock:       e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := long.Credential(context.Background(), backendReq); err != nil || c.Source != registry.SourceGitHubApp {
		t.Fatalf("long chain: %+v, %v", c, err)
	}
	long.Denied(onGHCR(backend), registry.SourceGitHubApp, "403 DENIED")
	e.clock.Add(time.Hour - github.RefreshBefore - time.Second)
	if c, _ := long.Credential(context.Background(), backendReq); c.Source != registry.SourceTokenFile || e.gh.MintCount() != 2 {
		t.Fatalf("before the refresh: %s (%d mints), want the token file", c.Source, e.gh.MintCount())
	}
	e.clock.Add(time.Second)
	if c, _ := long.Credential(context.Background(), backendReq); c.Source != registry.SourceGitHubApp || e.gh.MintCount() != 3 {
		t.Fatalf("after the cached token was refreshed: %s (%d mints), want the new App token", c.Source, e.gh.MintCount())
	}
}

func TestChainIgnorePutAsideTriesEverySource(t *testing.T) {
	e := newChainEnv(t)
	e.deny(t, registry.SourceGitHubApp)
	manual := backendReq
	manual.IgnorePutAside = true
	if c := e.credential(t, manual); c.Source != registry.SourceGitHubApp {
		t.Fatalf("manual request: %s, want the App first despite its put-aside", c.Source)
	}
	manual.Refused = []string{registry.SourceGitHubApp}
	if c := e.credential(t, manual); c.Source != registry.SourceTokenFile {
		t.Fatalf("manual request after the App was refused: %s, want the token file", c.Source)
	}
	if c := e.credential(t, backendReq); c.Source != registry.SourceTokenFile {
		t.Errorf("a request without IgnorePutAside: %s, want the token file", c.Source)
	}
}

func TestChainPutAsideGrowsAndStartsOverOnSuccess(t *testing.T) {
	e := newChainEnv(t)
	for i, want := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 15 * time.Minute, 15 * time.Minute} {
		e.chain.Denied(onGHCR(backend), registry.SourceGitHubApp, "403 DENIED")
		until := health(e.chain, ghcr)[registry.SourceGitHubApp].PutAsideUntil
		if got := until.Sub(e.clock.Now()); got != want {
			t.Fatalf("refusal %d in a row: put aside for %v, want %v", i+1, got, want)
		}
		e.clock.Add(want - time.Second)
		if c := e.credential(t, backendReq); c.Source != registry.SourceTokenFile {
			t.Fatalf("refusal %d: %s a second before the put-aside ends, want the token file", i+1, c.Source)
		}
		e.clock.Add(time.Second)
		if c := e.credential(t, backendReq); c.Source != registry.SourceGitHubApp {
			t.Fatalf("refusal %d: %s when the put-aside ends, want the App", i+1, c.Source)
		}
	}
	e.chain.Accepted(onGHCR(backend), registry.SourceGitHubApp)
	e.chain.Denied(onGHCR(backend), registry.SourceGitHubApp, "403 DENIED")
	if got := health(e.chain, ghcr)[registry.SourceGitHubApp].PutAsideUntil.Sub(e.clock.Now()); got != registry.DefaultPutAsideFor {
		t.Errorf("after an acceptance the next refusal puts aside for %v, want %v", got, registry.DefaultPutAsideFor)
	}
}
