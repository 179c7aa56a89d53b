package main

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/oidc/actionstest"
)

const oidcAudience = "https://deploy.example.test"

// oidcConfig is the api.oidc section for issuer: main of repository 74 in
// environment production may deploy backend.
func oidcConfig(issuer string) string {
	return fmt.Sprintf(`
api:
  oidc:
    issuer: %s
    audience: %s
    rules:
      - {repository_id: 74, ref: refs/heads/main, environment: production, scopes: [deploy:backend]}
`, issuer, oidcAudience)
}

// deploy asks for a deploy of service with a bearer token and returns the
// answer read whole.
func (i *instance) deploy(service, token string) (int, http.Header, string) {
	i.t.Helper()
	req, err := http.NewRequest(http.MethodPost, i.url("/api/v1/services/"+service+"/deploy"), nil)
	if err != nil {
		i.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		i.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// deployments lists every deployment the API knows, newest first.
func (i *instance) deployments() []deploymentJSON {
	i.t.Helper()
	var page struct {
		Deployments []deploymentJSON `json:"deployments"`
	}
	i.getJSON("/api/v1/deployments?limit=100", http.StatusOK, &page)
	return page.Deployments
}

// waitLog waits until deployd's log has a line containing msg.
func (i *instance) waitLog(msg string) {
	i.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(i.logs.String(), msg) {
		if time.Now().After(deadline) {
			i.t.Fatalf("no log line %q within 30s:\n%s", msg, i.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startOIDCStack starts a fake issuer, the end-to-end stack with api.oidc
// for it and deployd, once it has discovered the issuer, and pushes v1 as
// latest; it returns them and v1's digest.
func startOIDCStack(t *testing.T) (*actionstest.Issuer, *stack, *instance, string) {
	t.Helper()
	iss := actionstest.Start(t)
	s := newStack(t, stackOptions{extraConfig: oidcConfig(iss.URL)})
	d := startDeployd(t, s.config, nil)
	d.waitLog("OIDC issuer discovered")
	return iss, s, d, s.push("latest", "v1")
}

// badOIDCTokens are tokens of the issuer that must not deploy backend,
// with the status each must get.
func badOIDCTokens(t *testing.T, iss *actionstest.Issuer) []struct {
	name   string
	token  string
	status int
} {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	with := func(k string, v any) map[string]any {
		c := iss.Claims(oidcAudience)
		c[k] = v
		return c
	}
	return []struct {
		name   string
		token  string
		status int
	}{
		{"wrong audience", iss.Token(t, with("aud", "https://other.example.test")), http.StatusUnauthorized},
		{"wrong repository id", iss.Token(t, with("repository_id", "75")), http.StatusForbidden},
		{"pull_request_target", iss.Token(t, with("event_name", "pull_request_target")), http.StatusForbidden},
		{"expired", iss.Token(t, with("exp", time.Now().Add(-time.Minute).Unix())), http.StatusUnauthorized},
		{"alg none", actionstest.Unsigned(t, iss.Claims(oidcAudience)), http.StatusUnauthorized},
		{"HS256 keyed with the public key", iss.HS256WithPublicKey(t, iss.Claims(oidcAudience)), http.StatusUnauthorized},
		{"unknown key id", actionstest.Sign(t, other, "unknown-key", "RS256", iss.Claims(oidcAudience)), http.StatusUnauthorized},
	}
}

// TestEndToEndOIDCDeploy deploys backend from a GitHub Actions OIDC token
// over HTTP, with real podman and registry: bad tokens queue nothing, a
// good one deploys and is recorded as the trigger, it cannot be replayed,
// and the issuer's cached keys keep working while it is down.
func TestEndToEndOIDCDeploy(t *testing.T) {
	iss, s, d, v1 := startOIDCStack(t)

	var sent []string
	for _, tt := range badOIDCTokens(t, iss) {
		sent = append(sent, tt.token)
		status, _, body := d.deploy("backend", tt.token)
		if status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, status, body, tt.status)
		}
		if strings.Contains(body, tt.token) {
			t.Errorf("%s: the answer quotes the token", tt.name)
		}
		if n := len(d.deployments()); n != 0 {
			t.Fatalf("%s: %d deployments after a refused token, want none", tt.name, n)
		}
	}

	good := iss.Token(t, iss.Claims(oidcAudience))
	sent = append(sent, good)
	status, header, body := d.deploy("backend", good)
	if status != http.StatusAccepted {
		t.Fatalf("valid OIDC token: %d %s, want 202", status, body)
	}
	deps := d.deployments()
	if len(deps) != 1 || header.Get("Location") != fmt.Sprintf("/api/v1/deployments/%d", deps[0].ID) {
		t.Fatalf("after the valid token: deployments %+v, Location %q", deps, header.Get("Location"))
	}
	dep := waitDeployment(t, d, deps[0].ID)
	wantTrigger := "oidc: octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main run 6512345678 by octocat"
	if dep.State != "succeeded" || dep.Digest != v1 || dep.Trigger.Kind != "manual" || dep.Trigger.Subject != wantTrigger {
		t.Fatalf("deployment %+v, want succeeded %s triggered manual by %q", dep, v1, wantTrigger)
	}

	if status, _, body := d.deploy("backend", good); status != http.StatusUnauthorized || !strings.Contains(body, "already used") {
		t.Errorf("replayed token: %d %s, want 401 saying it was already used", status, body)
	}
	if n := len(d.deployments()); n != 1 {
		t.Errorf("%d deployments after the replay, want 1", n)
	}

	// The issuer goes down: a token signed with its cached key still works.
	iss.SetDown(true)
	later := iss.Token(t, iss.Claims(oidcAudience))
	sent = append(sent, later)
	if status, _, body := d.deploy("backend", later); status != http.StatusAccepted {
		t.Errorf("valid token while the issuer is down: %d %s, want 202", status, body)
	}

	logs := d.logs.String()
	for _, tok := range sent {
		sig := tok[strings.LastIndex(tok, ".")+1:]
		if strings.Contains(logs, tok) || (sig != "" && strings.Contains(logs, sig)) {
			t.Errorf("a token (or its signature) is in deployd's log")
		}
	}
	s.assertNoTokenInArgv()
}

// TestServeOIDCIssuerDownAtStart starts deployd while the OIDC issuer is
// unreachable: it serves, answers OIDC tokens 503 with Retry-After and
// queues nothing, and checks tokens once the issuer is back.
func TestServeOIDCIssuerDownAtStart(t *testing.T) {
	iss := actionstest.Start(t)
	iss.SetDown(true)
	dir := t.TempDir()
	cfg := intakeConfig(t, t.TempDir())
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := startDeployd(t, writeFile(t, dir, "deployd.yaml", string(raw)+oidcConfig(iss.URL), 0o600), nil)
	d.waitLog("OIDC issuer discovery failed")

	status, header, body := d.deploy("backend", iss.Token(t, iss.Claims(oidcAudience)))
	if status != http.StatusServiceUnavailable || header.Get("Retry-After") == "" || !strings.Contains(body, "has not been reached yet") {
		t.Fatalf("before discovery: %d Retry-After %q %s, want 503 with Retry-After", status, header.Get("Retry-After"), body)
	}
	if strings.Contains(body, "issuer down") {
		t.Errorf("the issuer's own answer reached the client: %s", body)
	}
	if n := len(d.deployments()); n != 0 {
		t.Fatalf("%d deployments queued before discovery, want none", n)
	}

	iss.SetDown(false)
	d.waitLog("OIDC issuer discovered")
	c := iss.Claims(oidcAudience)
	c["repository_id"] = "75"
	if status, _, body := d.deploy("backend", iss.Token(t, c)); status != http.StatusForbidden {
		t.Errorf("after discovery, a token of another repository: %d %s, want 403", status, body)
	}
	if n := len(d.deployments()); n != 0 {
		t.Errorf("%d deployments queued, want none", n)
	}
}

func TestCommandCheckConfigOIDC(t *testing.T) {
	raw, err := os.ReadFile(intakeConfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, t.TempDir(), "deployd.yaml", string(raw)+oidcConfig("https://token.actions.githubusercontent.com"), 0o600)
	stdout, _, err := cliRun([]string{"check-config", "--config", path}, nil)
	if err != nil {
		t.Fatalf("check-config: %v", err)
	}
	if want := "api: GitHub Actions OIDC tokens of https://token.actions.githubusercontent.com for audience " + oidcAudience + ", 1 rule(s)"; !strings.Contains(stdout, want) {
		t.Errorf("check-config output lacks %q:\n%s", want, stdout)
	}

	bad := strings.Replace(string(raw)+oidcConfig("https://token.actions.githubusercontent.com"), "repository_id: 74", "repository: octo-org/octo-repo", 1)
	_, _, err = cliRun([]string{"check-config", "--config", writeFile(t, t.TempDir(), "deployd.yaml", bad, 0o600)}, nil)
	if err == nil || !strings.Contains(err.Error(), `api.oidc.rules[0].repository (line`) || !strings.Contains(err.Error(), "set repository_id or repository_owner_id") {
		t.Errorf("check-config with a rule by name: %v, want the unknown key and the missing id, with lines", err)
	}
}
