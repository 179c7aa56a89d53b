package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/deployer/sqlite"
	"github.com/deployd/deployd/server"
)

const cliKeyMaterial = "cli-test-key-0123456789abcdef0123456789"

// cliExecutor fails deployments whose tag starts with "fail-" and makes
// every other one what runs for the service.
type cliExecutor struct{ store deployer.Store }

func (x cliExecutor) Execute(ctx context.Context, d deployer.Deployment) deployer.Deployment {
	if d.Digest == "" {
		d.Digest = "sha256:" + strings.Repeat(fmt.Sprintf("%x", len(d.Tag)%16), 64)
	}
	now := time.Now().UTC()
	d.FinishedAt = &now
	if strings.HasPrefix(d.Tag, "fail-") {
		s := deployer.Step{Name: "pull", Started: now, Outcome: "failed", Message: "403 DENIED"}
		_ = x.store.AppendStep(ctx, d.ID, s)
		d.Steps = append(d.Steps, s)
		d.State, d.ErrorClass, d.Error, d.Hint = deployer.StateFailed, "auth", "the registry refused the pull (403 DENIED)", "grant the App read access to the package"
		return d
	}
	st, _ := x.store.ServiceStatus(ctx, d.Service)
	if st.Digest != d.Digest {
		st.PreviousDigest = st.Digest
	}
	st.Digest, st.Tag, st.LastDeploymentID, st.UpdatedAt = d.Digest, d.Tag, d.ID, now
	if err := x.store.SetServiceStatus(ctx, st); err != nil {
		d.State, d.Error = deployer.StateFailed, err.Error()
		return d
	}
	d.State = deployer.StateSucceeded
	return d
}

// cliServer is the real API over a real store and queue, with the
// command's token adapter.
func cliServer(t *testing.T) (url string, key *apitoken.Key) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "deployd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := deployer.NewQueue(deployer.QueueConfig{Store: st, Executor: cliExecutor{st}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Shutdown(ctx) })
	key, err = apitoken.NewKey([]byte(cliKeyMaterial))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{
		Webhook:  http.NotFoundHandler(),
		Reads:    server.Reads{Store: st},
		Queue:    q,
		Auth:     server.Auth{Tokens: apiTokens{key}},
		Services: []deployer.Service{{Name: "backend", Image: "ghcr.io/acme/v7/backend", Strategy: "container", Tags: []string{"latest"}, DefaultTag: "latest"}},
		Logger:   zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts.URL, key
}

// cliRun runs deployd with args and the environment env.
func cliRun(args []string, env map[string]string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), err
}

func cliToken(t *testing.T, key *apitoken.Key, scopes ...string) string {
	t.Helper()
	tok, err := key.Issue("ci", scopes, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenIssueRoundTrip(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "api-key")
	if err := os.WriteFile(keyFile, []byte(cliKeyMaterial+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "webhook-secret")
	if err := os.WriteFile(secret, []byte("cli-test-webhook-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "deployd.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
listen: 0.0.0.0:18080
data_dir: %s
github:
  webhook_secret_file: %s
api:
  token_key_file: %s
registries:
  ghcr.io:
    credentials: [none]
services:
  backend:
    image: ghcr.io/acme/v7/backend
    repository: acme/v7
`, dir, secret, keyFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	key, _, err := apitoken.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range [][]string{{"--config", cfg}, {"--key-file", keyFile}} {
		args := append([]string{"token", "issue", "--scope", "deploy:backend", "--scope", "status:read", "--subject", "ci", "--ttl", "2h"}, from...)
		stdout, stderr, err := cliRun(args, nil)
		if err != nil {
			t.Fatalf("%v: %v\n%s", from, err, stderr)
		}
		tok := strings.TrimSpace(stdout)
		if strings.Count(stdout, "\n") != 1 || strings.Count(tok, ".") != 2 {
			t.Fatalf("stdout is not one token: %q", stdout)
		}
		if strings.Contains(stderr, tok) {
			t.Error("the token is on stderr too")
		}
		c, err := key.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		if c.Subject != "ci" || !c.Allows("deploy:backend") || c.Allows("deploy:web") {
			t.Errorf("claims = %+v", c)
		}
		if d := time.Until(c.ExpiresAt); d < 119*time.Minute || d > 2*time.Hour {
			t.Errorf("expires in %v", d)
		}
	}

	for _, tt := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"token", "issue", "--key-file", keyFile, "--scope", "deploy:backend"}, 2, "--subject"},
		{[]string{"token", "issue", "--key-file", keyFile, "--subject", "ci"}, 2, "--scope"},
		{[]string{"token", "issue", "--key-file", keyFile, "--subject", "ci", "--scope", "admin"}, 1, "deploy:SERVICE"},
		{[]string{"token", "issue", "--key-file", filepath.Join(dir, "nope"), "--subject", "ci", "--scope", "deploy:*"}, 1, "/dev/urandom"},
		{[]string{"token", "frobnicate"}, 2, "unknown subcommand"},
	} {
		stdout, _, err := cliRun(tt.args, nil)
		if err == nil || exitCode(err) != tt.code || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%v: err %v (exit %d), want exit %d saying %q", tt.args, err, exitCode(err), tt.code, tt.says)
		}
		if stdout != "" {
			t.Errorf("%v: stdout %q", tt.args, stdout)
		}
	}

	// The listen address of the config gives the API URL.
	got, err := apiURL(env{getenv: func(string) string { return "" }, stderr: &bytes.Buffer{}},
		apiFlags{config: &cfg, url: new(string), token: new(string), tokenFile: new(string)}, true)
	if err != nil || got != "http://127.0.0.1:18080" {
		t.Errorf("apiURL = %q, %v", got, err)
	}
}

func TestTokenKeygen(t *testing.T) {
	out := filepath.Join(t.TempDir(), "api-key")
	if _, _, err := cliRun([]string{"token", "keygen", "--out", out}, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if _, _, err := apitoken.LoadKey(out); err != nil {
		t.Error(err)
	}
	if _, _, err := cliRun([]string{"token", "keygen", "--out", out}, nil); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("overwrote the key: %v", err)
	}
}

func TestDeployCommand(t *testing.T) {
	url, key := cliServer(t)
	tok := cliToken(t, key, "deploy:backend")
	env := map[string]string{"DEPLOYD_TOKEN": tok}
	noLeak := func(outs ...string) {
		t.Helper()
		for _, o := range outs {
			if strings.Contains(o, tok) {
				t.Errorf("output holds the token: %q", o)
			}
		}
	}

	stdout, stderr, err := cliRun([]string{"deploy", "backend", "--url", url, "--wait"}, env)
	if err != nil {
		t.Fatalf("deploy --wait: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "of backend succeeded: tag latest") {
		t.Errorf("stdout = %q", stdout)
	}
	noLeak(stdout, stderr)

	// Flags before the service name work too; without --wait it is queued.
	stdout, stderr, err = cliRun([]string{"deploy", "--url", url, "--tag", "v2", "backend"}, env)
	if err != nil || !strings.Contains(stdout, "queued") || !strings.Contains(stdout, url+"/api/v1/deployments/") {
		t.Errorf("deploy: %v %q %q", err, stdout, stderr)
	}

	// A failed deploy exits non-zero with the failure's error and hint.
	stdout, stderr, err = cliRun([]string{"deploy", "backend", "--url", url, "--tag", "fail-1", "--wait", "--timeout", "30s"}, env)
	if err == nil || exitCode(err) != 1 {
		t.Fatalf("failed deploy: err %v", err)
	}
	for _, want := range []string{"failed: the registry refused the pull (403 DENIED)", "hint: grant the App read access", "pull", "403 DENIED"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not say %q", stderr, want)
		}
	}
	noLeak(stdout, stderr)

	// Rollback to the version before the running one.
	if _, stderr, err := cliRun([]string{"deploy", "backend", "--url", url, "--tag", "v333", "--wait"}, env); err != nil {
		t.Fatalf("deploy v333: %v %s", err, stderr)
	}
	stdout, stderr, err = cliRun([]string{"rollback", "backend", "--url", url, "--wait"}, env)
	if err != nil || !strings.Contains(stdout, "succeeded") {
		t.Errorf("rollback: %v %q %q", err, stdout, stderr)
	}

	// Refusals: no token, the wrong scope, bad input.
	for _, tt := range []struct {
		args []string
		env  map[string]string
		code int
		says string
	}{
		{[]string{"deploy", "backend", "--url", url}, nil, 2, "DEPLOYD_TOKEN"},
		{[]string{"deploy", "backend", "--url", url}, map[string]string{"DEPLOYD_TOKEN": cliToken(t, key, "deploy:web")}, 1, "does not grant deploy:backend"},
		{[]string{"deploy", "nope", "--url", url}, env, 1, "does not grant deploy:nope"},
		{[]string{"deploy", "nope", "--url", url}, map[string]string{"DEPLOYD_TOKEN": cliToken(t, key, "deploy:*")}, 1, "unknown service"},
		{[]string{"deploy", "backend", "--url", url, "--tag", "a b"}, env, 2, "--tag"},
		{[]string{"deploy", "backend", "--url", url, "--tag", "v1", "--digest", "sha256:00"}, env, 2, "not both"},
		{[]string{"deploy", "--url", url}, env, 2, "name the service"},
	} {
		_, stderr, err := cliRun(tt.args, tt.env)
		if err == nil || exitCode(err) != tt.code || !strings.Contains(err.Error()+stderr, tt.says) {
			t.Errorf("%v: err %v (exit %d) stderr %q, want exit %d saying %q", tt.args, err, exitCode(err), stderr, tt.code, tt.says)
		}
	}
}

func TestStatusCommand(t *testing.T) {
	url, key := cliServer(t)
	env := map[string]string{"DEPLOYD_TOKEN": cliToken(t, key, "deploy:*")}
	stdout, stderr, err := cliRun([]string{"status", "--url", url}, nil)
	if err != nil || !strings.Contains(stdout, "backend") || !strings.Contains(stdout, "never deployed") {
		t.Fatalf("status before: %v %q %q", err, stdout, stderr)
	}
	if _, stderr, err := cliRun([]string{"deploy", "backend", "--url", url, "--tag", "v1.2.3", "--wait"}, env); err != nil {
		t.Fatalf("deploy: %v %s", err, stderr)
	}
	stdout, stderr, err = cliRun([]string{"status", "--url", url}, env)
	if err != nil {
		t.Fatalf("status: %v %s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "SERVICE") {
		t.Fatalf("table = %q", stdout)
	}
	for _, want := range []string{"backend", "succeeded", "v1.2.3", "manual by ci", "just now"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
}

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080": "127.0.0.1:8080",
		":8080":          "127.0.0.1:8080",
		"0.0.0.0:80":     "127.0.0.1:80",
		"[::]:8080":      "[::1]:8080",
		"deploy.lan:9":   "deploy.lan:9",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
