package configs

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/deployd/deployd/deployer"
)

// env returns a getenv over m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func parse(t *testing.T, src string, vars map[string]string) (*Config, error) {
	t.Helper()
	return Parse(strings.NewReader(src), env(vars))
}

func mustParse(t *testing.T, src string, vars map[string]string) *Config {
	t.Helper()
	c, err := parse(t, src, vars)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// problems returns the problems of a *ValidationError, failing otherwise.
func problems(t *testing.T, err error) []Problem {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want a *ValidationError, got %v", err)
	}
	return ve.Problems
}

// wantProblem fails unless ps has a problem at path on line whose message
// contains msg. line < 0 skips the line check.
func wantProblem(t *testing.T, ps []Problem, path string, line int, msg string) {
	t.Helper()
	for _, p := range ps {
		if p.Path == path && (line < 0 || p.Line == line) && strings.Contains(p.Message, msg) {
			return
		}
	}
	t.Errorf("no problem at %s line %d containing %q; got:\n%s", path, line, msg, (&ValidationError{ps}).Error())
}

const minimal = `
github:
  webhook_secret: s3cret-value
registries:
  ghcr.io: {}
services:
  backend:
    image: ghcr.io/acme/backend
    repository: acme/app
`

func TestExampleFilesLoad(t *testing.T) {
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "webhook-secret"), []byte("from-credentials-dir\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(creds, "notify-secret"), []byte("notify-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"CREDENTIALS_DIRECTORY": creds, "DEPLOYD_WEBHOOK_SECRET": "local-secret"}

	c, err := Load("deployd.example.yaml", env(vars))
	if err != nil {
		t.Fatalf("example: %v", err)
	}
	if got := c.GitHub.WebhookSecret.Reveal(); got != "from-credentials-dir" {
		t.Errorf("example webhook secret = %q", got)
	}
	for _, name := range []string{"backend", "web"} {
		img, err := ParseImage(c.Services[name].Image)
		if err != nil || img.Host != "ghcr.io" {
			t.Errorf("example service %s: image %q on %q, %v", name, c.Services[name].Image, img.Host, err)
		}
	}
	if got := c.Services["web"].Container.Name; got != "v7-web" {
		t.Errorf("web container name = %q", got)
	}

	c, err = Load("deployd.local.yaml", env(vars))
	if err != nil {
		t.Fatalf("local: %v", err)
	}
	r := c.Registries["127.0.0.1:5000"]
	switch {
	case c.Listen != "127.0.0.1:8080", c.DataDir != "./data":
		t.Errorf("local listen %q data_dir %q", c.Listen, c.DataDir)
	case c.GitHub.App.configured():
		t.Error("local config configures a GitHub App")
	case r == nil || !r.Insecure || !c.IsGitHubPackages("127.0.0.1:5000"):
		t.Errorf("local registry = %+v", r)
	case !reflect.DeepEqual(r.Credentials, []string{CredentialNone}):
		t.Errorf("local credentials = %v", r.Credentials)
	case c.GitHub.WebhookSecret.Reveal() != "local-secret":
		t.Error("local webhook secret not from DEPLOYD_WEBHOOK_SECRET")
	}

	if _, err := Load("deployd.local.yaml", env(nil)); err == nil || !strings.Contains(err.Error(), "DEPLOYD_WEBHOOK_SECRET") {
		t.Errorf("local config without DEPLOYD_WEBHOOK_SECRET: %v", err)
	}
}

// documentedInComment lists keys that are alternatives to a key set in the
// example, so they appear there commented out.
var documentedInComment = map[string]string{
	"github.webhook_secret":        "# webhook_secret:",
	"notifications.url_file":       "# - url_file:",
	"notifications.webhook.secret": "#     secret:",
}

func TestExampleDocumentsEveryKey(t *testing.T) {
	raw, err := os.ReadFile("deployd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	inExample := map[string]bool{}
	examplePaths(doc.Content[0], reflect.TypeFor[Config](), "", inExample)

	keys := typePaths(reflect.TypeFor[Config](), "")
	if len(keys) < 40 {
		t.Fatalf("found only %d keys in the Config type: %v", len(keys), keys)
	}
	for _, k := range keys {
		if inExample[k] {
			continue
		}
		if c, ok := documentedInComment[k]; ok && strings.Contains(string(raw), c) {
			continue
		}
		t.Errorf("key %s is not documented in deployd.example.yaml", k)
	}
}

// typePaths lists the dotted YAML paths of every key of t, "*" standing for
// a map key.
func typePaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	var paths []string
	switch {
	case t.Kind() == reflect.Map:
		paths = append(paths, typePaths(t.Elem(), prefix+".*")...)
	case t.Kind() == reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			name := yamlName(t.Field(i))
			if name == "" {
				continue
			}
			p := strings.TrimPrefix(prefix+"."+name, ".")
			paths = append(paths, p)
			paths = append(paths, typePaths(t.Field(i).Type, p)...)
		}
	}
	return paths
}

// examplePaths records the paths of n, read as type t, in the same form.
func examplePaths(n *yaml.Node, t reflect.Type, prefix string, out map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if n.Kind == yaml.SequenceNode {
		for _, item := range n.Content {
			examplePaths(item, t, prefix, out)
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		switch t.Kind() {
		case reflect.Map:
			examplePaths(v, t.Elem(), prefix+".*", out)
		case reflect.Struct:
			f, ok := yamlFields(t)[k]
			if !ok {
				continue
			}
			p := strings.TrimPrefix(prefix+"."+k, ".")
			out[p] = true
			examplePaths(v, f.Type, p, out)
		}
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, minimal, nil)
	s := c.Services["backend"]
	r := c.Registries["ghcr.io"]
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"data_dir", c.DataDir, "/var/lib/deployd"},
		{"log", c.Log, Log{Level: "info", Format: "json"}},
		{"reconcile_interval", c.ReconcileInterval, Duration(10 * time.Minute)},
		{"github.api_url", c.GitHub.APIURL, "https://api.github.com"},
		{"podman.command", c.Podman.Command, "podman"},
		{"AuthFile", c.AuthFile(), "/var/lib/deployd/auth.json"},
		{"StatusPublic", c.StatusPublic(), true},
		{"registry username", r.Username, "x-access-token"},
		{"registry credentials without app", r.Credentials, []string{"none"}},
		{"strategy", s.Strategy, "container"},
		{"tags", s.Tags, []string{"latest"}},
		{"DefaultTag", s.DefaultTag, "latest"},
		{"container.name", s.Container.Name, "backend"},
		{"health.timeout", s.Health.Timeout, 60 * time.Second},
		{"health.interval", s.Health.Interval, 2 * time.Second},
		{"keep_images", s.KeepImages, 3},
		{"PackageEnabled", s.PackageEnabled(), true},
		{"rollback", s.Rollback, true},
		{"IsGitHubPackages(ghcr.io)", c.IsGitHubPackages("ghcr.io"), true},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestDefaultCredentials(t *testing.T) {
	const app = `
github:
  webhook_secret: x
  app: {id: 1, private_key_file: /k.pem}
registries:
  ghcr.io: {token_file: /pat}
  registry.example.com: {}
  127.0.0.1:5000: {github_packages: true}
  quay.io: {token_file: /pat}
`
	c := mustParse(t, app, nil)
	for host, want := range map[string][]string{
		"ghcr.io":              {"github_app", "token_file"},
		"registry.example.com": {"none"},
		"127.0.0.1:5000":       {"github_app"},
		"quay.io":              {"token_file"},
	} {
		if got := c.Registries[host].Credentials; !reflect.DeepEqual(got, want) {
			t.Errorf("%s credentials = %v, want %v", host, got, want)
		}
	}
}

func TestExplicitZeroVersusUnset(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want Duration
	}{
		{"unset", "", Duration(10 * time.Minute)},
		{"null means unset", "reconcile_interval: ~\n", Duration(10 * time.Minute)},
		{"zero turns it off", "reconcile_interval: 0\n", 0},
		{"zero with unit", "reconcile_interval: 0s\n", 0},
		{"explicit", "reconcile_interval: 90s\n", Duration(90 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, minimal+tt.yaml, nil)
			if c.ReconcileInterval != tt.want {
				t.Errorf("reconcile_interval = %v, want %v", c.ReconcileInterval, tt.want)
			}
		})
	}

	// An explicit zero where zero is meaningless is refused, not defaulted.
	_, err := parse(t, minimal+"    keep_images: 0\n    health: {timeout: 0s}\n    tags: []\n", nil)
	ps := problems(t, err)
	wantProblem(t, ps, "services.backend.keep_images", 10, "at least 1")
	wantProblem(t, ps, "services.backend.health.timeout", 11, "positive")
	wantProblem(t, ps, "services.backend.tags", 12, "at least one tag")
}

func TestUnknownKey(t *testing.T) {
	tests := []struct {
		name, yaml, path string
		line             int
		msg              string
	}{
		{"top level", "lisen: :8080\n" + minimal, "lisen", 1, `unknown key "lisen" (did you mean "listen"?)`},
		{"nested", minimal + "    health: {url: http://x/, timout: 5s}\n", "services.backend.health.timout", 10, `unknown key "timout"`},
		{"registry", strings.Replace(minimal, "ghcr.io: {}", "ghcr.io: {passwd: x}", 1), "registries.ghcr.io.passwd", 5, `unknown key "passwd"`},
		{"repeated", minimal + "    image: ghcr.io/acme/other\n", "services.backend.image", 10, "key repeated (first at line 8)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.yaml, nil)
			ps := problems(t, err)
			wantProblem(t, ps, tt.path, tt.line, tt.msg)
			if !strings.Contains(err.Error(), fmt.Sprintf("%s (line %d): ", tt.path, tt.line)) {
				t.Errorf("error text lacks path and line: %v", err)
			}
		})
	}
}

func TestTypeErrors(t *testing.T) {
	src := `github:
  webhook_secret: x
  app: {id: abc, private_key_file: /k}
  deployments: maybe
reconcile_interval: 60
log: info
services:
  backend:
    tags: latest
    health: {timeout: soon}
`
	_, err := parse(t, src, nil)
	ps := problems(t, err)
	wantProblem(t, ps, "github.app.id", 3, `expected a whole number, got "abc"`)
	wantProblem(t, ps, "github.deployments", 4, "expected true or false")
	wantProblem(t, ps, "reconcile_interval", 5, `invalid duration "60"`)
	wantProblem(t, ps, "log", 6, "expected a mapping")
	wantProblem(t, ps, "services.backend.tags", 9, "expected a list")
	wantProblem(t, ps, "services.backend.health.timeout", 10, `invalid duration "soon"`)
}

func TestMultipleProblemsAtOnce(t *testing.T) {
	src := `listen: localhost
public_url: /relative
log: {level: loud, format: xml}
reconcile_interval: -1m
github:
  app: {id: 7}
registries:
  ghcr.io:
    credentials: [github_app, token_file, magic]
services:
  backend:
    image: ghcr.io/acme/Backend
    repository: not-a-repo
    tags: ["v[", "a/b*", "*", "-x"]
    on:
      workflow_run:
        branches: ["release-["]
        tag: "{{.Commit}}"
    strategy: rocket
  web:
    image: docker.io/library/nginx
    repository: acme/web
    tags: ["v*"]
    container: {args: ["--name", "x"]}
    health: {url: "ftp://host/", interval: -2s}
    keep_images: 0
  db:
    image: ghcr.io/acme/db
    repository: acme/db
    strategy: systemd
  job:
    image: ghcr.io/acme/job
    repository: acme/job
    strategy: command
`
	_, err := parse(t, src, nil)
	ps := problems(t, err)
	want := []struct {
		path string
		line int
		msg  string
	}{
		{"listen", 1, "not HOST:PORT"},
		{"public_url", 2, "not an absolute http(s) URL"},
		{"log.level", 3, `unknown level "loud"`},
		{"log.format", 3, `unknown format "xml"`},
		{"reconcile_interval", 4, "negative"},
		{"github.webhook_secret", 5, "required"},
		{"github.app.private_key_file", 6, "required"},
		{"registries.ghcr.io.credentials[0]", 9, "github_app source needs github.app.id"},
		{"registries.ghcr.io.credentials[1]", 9, "needs registries.ghcr.io.token_file"},
		{"registries.ghcr.io.credentials[2]", 9, `unknown credential source "magic"`},
		{"services.backend.image", 12, "parse image"},
		{"services.backend.repository", 13, "not a GitHub repository"},
		{"services.backend.tags[0]", 14, "invalid pattern"},
		{"services.backend.tags[1]", 14, "can never match"},
		{"services.backend.tags[3]", 14, "not a valid tag"},
		{"services.backend.on.workflow_run.workflows", 16, "at least one workflow"},
		{"services.backend.on.workflow_run.branches[0]", 17, "invalid branch pattern"},
		{"services.backend.on.workflow_run.tag", 18, "Commit"},
		{"services.backend.strategy", 19, `unknown strategy "rocket"`},
		{"services.web.image", 21, "registry docker.io is not configured"},
		{"services.web.tags[0]", 23, "must be a plain tag"},
		{"services.web.container.args[0]", 24, "--name"},
		{"services.web.health.url", 25, "not an absolute http(s) URL"},
		{"services.web.health.interval", 25, "positive"},
		{"services.web.keep_images", 26, "at least 1"},
		{"services.db.systemd.unit", 27, "required for strategy systemd"},
		{"services.job.command", 31, "required for strategy command"},
	}
	for _, w := range want {
		wantProblem(t, ps, w.path, w.line, w.msg)
	}
	if len(ps) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(ps), len(want), err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(ps) {
		t.Errorf("Error() has %d lines for %d problems", len(lines), len(ps))
	}
	for i := 1; i < len(ps); i++ {
		if ps[i].Line < ps[i-1].Line && ps[i].Line != 0 {
			t.Errorf("problems not in file order: %v before %v", ps[i-1], ps[i])
		}
	}
}

// TestDecodeAndValidationProblemsTogether checks that problems with the
// file's shape (unknown keys, wrong types) do not hide problems with its
// values: all are reported at once, in line order.
func TestDecodeAndValidationProblemsTogether(t *testing.T) {
	src := `services:
  backend:
    image: ghcr.io/acme/backend
    repository: acme/app
    tags: ["latest", "v["]
    rollbak: false
    strategy: docker
registries:
  ghcr.io:
    insecure: maybe
github:
  webhook_secret: s3cret-value
`
	_, err := parse(t, src, nil)
	ps := problems(t, err)
	want := []struct {
		path string
		line int
		msg  string
	}{
		{"services.backend.tags[1]", 5, `invalid pattern "v["`},
		{"services.backend.rollbak", 6, `unknown key "rollbak" (did you mean "rollback"?)`},
		{"services.backend.strategy", 7, `unknown strategy "docker"`},
		{"registries.ghcr.io.insecure", 10, `expected true or false, got "maybe"`},
	}
	if len(ps) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(ps), len(want), err)
	}
	for i, w := range want {
		if p := ps[i]; p.Path != w.path || p.Line != w.line || !strings.Contains(p.Message, w.msg) {
			t.Errorf("problem %d = %v, want %s (line %d) containing %q", i, p, w.path, w.line, w.msg)
		}
	}
	lines := strings.Split(err.Error(), "\n")
	for i, w := range want {
		if i < len(lines) && !strings.HasPrefix(lines[i], fmt.Sprintf("%s (line %d): ", w.path, w.line)) {
			t.Errorf("Error() line %d = %q, want it to start with the path and line of %s", i+1, lines[i], w.path)
		}
	}
}

// TestNoFollowOnProblems checks that a value that could not be read is
// reported once: validation does not also complain about it being missing,
// nor about the settings that depend on it.
func TestNoFollowOnProblems(t *testing.T) {
	app := "github:\n  webhook_secret: s3cret-value\n  app: {id: abc, private_key_file: /k.pem}\n  deployments: true\n"
	tests := []struct {
		name, yaml, path string
		line             int
		msg              string
	}{
		{"secret file", strings.Replace(minimal, "webhook_secret: s3cret-value", "webhook_secret_file: [a, b]", 1),
			"github.webhook_secret_file", 3, "expected a single value"},
		{"secret variable", strings.Replace(minimal, "s3cret-value", "${UNSET_SECRET}", 1),
			"github.webhook_secret", 3, "UNSET_SECRET is not set"},
		{"misspelt secret", strings.Replace(minimal, "webhook_secret:", "webhok_secret:", 1),
			"github.webhok_secret", 3, `did you mean "webhook_secret"?`},
		{"app id", app + strings.Replace(strings.TrimPrefix(minimal, "\ngithub:\n  webhook_secret: s3cret-value\n"), "ghcr.io: {}", "ghcr.io: {credentials: [github_app]}", 1),
			"github.app.id", 3, "expected a whole number"},
		{"app id without key", strings.Replace(minimal, "webhook_secret: s3cret-value", "webhook_secret: s3cret-value\n  app: {id: abc}\n  deployments: true", 1),
			"github.app.id", 4, "expected a whole number"},
		{"image", strings.Replace(minimal, "image: ghcr.io/acme/backend", "image: {name: backend}", 1),
			"services.backend.image", 8, "expected a single value"},
		{"misspelt image", strings.Replace(minimal, "image:", "imag:", 1),
			"services.backend.imag", 8, `did you mean "image"?`},
		{"registry", strings.Replace(minimal, "ghcr.io: {}", "ghcr.io: 5", 1),
			"registries.ghcr.io", 5, "expected a mapping"},
		{"registries", strings.Replace(minimal, "  ghcr.io: {}", "  - ghcr.io", 1),
			"registries", 5, "expected a mapping"},
		{"token file", strings.Replace(minimal, "ghcr.io: {}", "ghcr.io: {credentials: [token_file], token_file: [x]}", 1),
			"registries.ghcr.io.token_file", 5, "expected a single value"},
		{"credentials item", strings.Replace(minimal, "ghcr.io: {}", "ghcr.io: {credentials: [{a: b}]}", 1),
			"registries.ghcr.io.credentials[0]", 5, "expected a single value"},
		{"service", strings.Replace(minimal, "  backend:\n    image: ghcr.io/acme/backend\n    repository: acme/app\n", "  backend: 5\n", 1),
			"services.backend", 7, "expected a mapping"},
		{"strategy", minimal + "    strategy: [systemd]\n    systemd: {unit: x.service}\n    container: {name: 'not used'}\n",
			"services.backend.strategy", 10, "expected a single value"},
		{"command", minimal + "    strategy: command\n    command: [[restart]]\n",
			"services.backend.command[0]", 11, "expected a single value"},
		{"first tag", minimal + "    tags: [[latest]]\n    on: {workflow_run: {workflows: [CI]}}\n",
			"services.backend.tags[0]", 10, "expected a single value"},
		{"tags", minimal + "    tags: latest\n",
			"services.backend.tags", 10, "expected a list"},
		{"keep images", minimal + "    keep_images: many\n",
			"services.backend.keep_images", 10, "expected a whole number"},
		{"health timeout", minimal + "    health: {timeout: soon}\n",
			"services.backend.health.timeout", 10, `invalid duration "soon"`},
		{"merged", "github: {webhook_secret: s3cret-value}\nregistries: {ghcr.io: {}}\nservices:\n" +
			"  backend: &svc\n    image: ghcr.io/acme/backend\n    repository: [acme/app]\n" +
			"  web:\n    <<: *svc\n    image: ghcr.io/acme/web\n",
			"services.backend.repository", 6, "expected a single value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.yaml, nil)
			ps := problems(t, err)
			wantProblem(t, ps, tt.path, tt.line, tt.msg)
			if len(ps) != 1 {
				t.Errorf("got %d problems, want only the one at %s:\n%v", len(ps), tt.path, err)
			}
		})
	}
}

// TestKeyProblemsStandWhenValueUnread checks that a bad registry host or
// service name is still reported when the value under it cannot be read.
func TestKeyProblemsStandWhenValueUnread(t *testing.T) {
	src := `github: {webhook_secret: s3cret-value}
registries:
  ghcr: 5
services:
  'back end': [x]
`
	_, err := parse(t, src, nil)
	ps := problems(t, err)
	wantProblem(t, ps, "registries.ghcr", 3, "expected a mapping")
	wantProblem(t, ps, "registries.ghcr", 3, "not a registry host")
	wantProblem(t, ps, "services.back end", 5, "expected a mapping")
	wantProblem(t, ps, "services.back end", 5, "service name")
	if len(ps) != 4 {
		t.Errorf("got %d problems, want 4:\n%v", len(ps), err)
	}
}

func TestEnvExpansion(t *testing.T) {
	src := `listen: ${HOST}:${PORT}
data_dir: "${HOME}/deployd"
podman: {global_args: ["--url", "$${NOT_EXPANDED}", "$$PATH"]}
github:
  webhook_secret: ${SECRET}
  app:
    id: ${APP_ID}
    private_key_file: /k.pem
  deployments: ${DEPLOYMENTS}
registries:
  ghcr.io: {}
services:
  backend:
    image: ghcr.io/acme/backend
    repository: acme/app
    health:
      timeout: '${TIMEOUT}'
`
	vars := map[string]string{
		"HOST": "0.0.0.0", "PORT": "9000", "HOME": "/srv", "SECRET": "true",
		"APP_ID": "42", "DEPLOYMENTS": "true", "TIMEOUT": "5s",
	}
	c := mustParse(t, src, vars)
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, "0.0.0.0:9000"},
		{"data_dir", c.DataDir, "/srv/deployd"},
		{"escape", c.Podman.GlobalArgs, []string{"--url", "${NOT_EXPANDED}", "$$PATH"}},
		{"a secret that looks like a boolean stays text", c.GitHub.WebhookSecret.Reveal(), "true"},
		{"number", c.GitHub.App.ID, int64(42)},
		{"boolean", c.GitHub.Deployments, true},
		{"duration", c.Services["backend"].Health.Timeout, 5 * time.Second},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestEnvExpansionErrors(t *testing.T) {
	tests := []struct {
		name, yaml, path string
		line             int
		msg              string
	}{
		{"unset", "listen: ${NOPE}\n", "listen", 1, "environment variable NOPE is not set"},
		{"empty", "listen: ${EMPTY}\n", "listen", 1, "environment variable EMPTY is not set"},
		{"unterminated", "data_dir: ${HOME\n", "data_dir", 1, "unterminated"},
		{"bad name", "data_dir: ${1X}\n", "data_dir", 1, "invalid variable reference"},
		{"nested path", "podman:\n  global_args: [a, '${MISSING}']\n", "podman.global_args[1]", 2, "MISSING"},
		{"not a number", "github: {app: {id: '${HOME}'}}\n", "github.app.id", 1, "expected a whole number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.yaml+strings.TrimPrefix(minimal, "\n"), map[string]string{"EMPTY": "", "HOME": "/home/x"})
			wantProblem(t, problems(t, err), tt.path, tt.line, tt.msg)
		})
	}
}

// TestAnchoredVariableUnset checks that an anchored value whose variable is
// not set is reported wherever it is used, and not validated as written.
func TestAnchoredVariableUnset(t *testing.T) {
	src := minimal + `    health: {url: &health "${HEALTH_URL}"}
  web:
    image: ghcr.io/acme/web
    repository: acme/web
    health: {url: *health}
`
	_, err := parse(t, src, nil)
	ps := problems(t, err)
	wantProblem(t, ps, "services.backend.health.url", 10, "HEALTH_URL is not set")
	wantProblem(t, ps, "services.web.health.url", 10, "HEALTH_URL is not set")
	if len(ps) != 2 {
		t.Errorf("got %d problems, want 2:\n%v", len(ps), err)
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("webhook-secret", "file-s3cret\r\n\n")
	write("empty", "")
	write("newline-only", "\n")
	base := strings.Replace(minimal, "  webhook_secret: s3cret-value\n", "", 1)
	base = strings.Replace(base, "github:\n", "", 1)
	vars := map[string]string{"CREDENTIALS_DIRECTORY": dir}

	c := mustParse(t, base+"github:\n  webhook_secret_file: ${CREDENTIALS_DIRECTORY}/webhook-secret\n", vars)
	if got := c.GitHub.WebhookSecret.Reveal(); got != "file-s3cret" {
		t.Errorf("secret = %q, want trailing newlines trimmed", got)
	}

	tests := []struct {
		name, file, path, msg string
	}{
		{"missing file", "${CREDENTIALS_DIRECTORY}/nope", "github.webhook_secret_file", "cannot read the webhook secret"},
		{"empty file", "${CREDENTIALS_DIRECTORY}/empty", "github.webhook_secret_file", "is empty"},
		{"newline only", "${CREDENTIALS_DIRECTORY}/newline-only", "github.webhook_secret_file", "is empty"},
		{"unset directory", "${UNSET_DIR}/webhook-secret", "github.webhook_secret_file", "UNSET_DIR is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, base+"github:\n  webhook_secret_file: "+tt.file+"\n", vars)
			ps := problems(t, err)
			wantProblem(t, ps, tt.path, 9, tt.msg)
			if len(ps) != 1 {
				t.Errorf("want one problem, got %v", err)
			}
		})
	}

	_, err := parse(t, strings.Replace(minimal, "  webhook_secret: s3cret-value\n",
		"  webhook_secret: s3cret-value\n  webhook_secret_file: "+filepath.Join(dir, "webhook-secret")+"\n", 1), nil)
	wantProblem(t, problems(t, err), "github.webhook_secret", 3, "not both")
}

func TestSecretsNeverInErrors(t *testing.T) {
	const secret = "hunter2-very-secret"
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, yaml string }{
		{"secret as a mapping", "github: {webhook_secret: {v: " + secret + "}}\n"},
		{"secret as a list", "github: {webhook_secret: [" + secret + "]}\n"},
		{"secret and file", "github: {webhook_secret: " + secret + ", webhook_secret_file: " + file + "}\n"},
		{"secret from env, other errors", "github: {webhook_secret: '${S}'}\nlisten: nope\nservices: {x: {image: y}}\n"},
		{"secret with a dollar brace", "github: {webhook_secret: 'ab${" + secret + "}cd'}\n"},
		{"secret with an open dollar brace", "github: {webhook_secret: 'ab${" + secret + "'}\n"},
		{"url with password", "github: {webhook_secret: x, api_url: 'https://u:" + secret + "@h/'}\npublic_url: 'https://u:" + secret + "@h'\n"},
		{"notification url, bad and doubled", "github: {webhook_secret: x}\nnotifications: [{url: 'slack//" + secret + "'}, {url: 'ntfy://" + secret + "', url_file: " + file + "}, {url: 'smtp://u:" + secret + "@h', webhook: {url: 'https://h/" + secret + "'}}]\n"},
		{"notification url from a file, bad", "github: {webhook_secret: x}\nnotifications: [{url_file: " + file + "}]\n"},
		{"notification webhook url and secret", "github: {webhook_secret: x}\nnotifications: [{webhook: {url: 'ftp://" + secret + "', secret: " + secret + ", secret_file: " + file + "}}, {url: [" + secret + "]}]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.yaml, map[string]string{"S": secret})
			if err == nil {
				t.Fatal("want an error")
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%#v", err), secret) {
				t.Errorf("error reveals the secret: %v", err)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	const value = "p4ssw0rd"
	s := Secret(value)
	c := &Config{GitHub: GitHub{WebhookSecret: s}}
	outs := map[string]string{}
	for _, f := range []string{"%v", "%s", "%q", "%#v", "%+v", "%x", "%d", "%10.3s"} {
		outs["Secret "+f] = fmt.Sprintf(f, s)
		outs["Config "+f] = fmt.Sprintf(f, c)
		outs["*Config "+f] = fmt.Sprintf(f, *c)
	}
	outs["Sprint"] = fmt.Sprint(s, &s)
	outs["Println"] = fmt.Sprintln(s)
	for name, v := range map[string]any{"Secret": s, "Config": c, "map": map[string]Secret{"k": s}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json %s: %v", name, err)
		}
		outs["json "+name] = string(b)
	}
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outs["yaml"] = string(y)
	var log strings.Builder
	slog.New(slog.NewTextHandler(&log, nil)).Info("x", "secret", s)
	outs["slog"] = log.String()
	for name, out := range outs {
		if strings.Contains(out, value) {
			t.Errorf("%s prints the secret: %s", name, out)
		}
	}
	if !strings.Contains(outs["json Secret"], "[redacted]") || !strings.Contains(outs["Secret %v"], "[redacted]") {
		t.Errorf("redaction marker missing: %v", outs)
	}
	if s.Reveal() != value {
		t.Errorf("Reveal = %q", s.Reveal())
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"60s", time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"0", 0, ""},
		{"60", 0, "invalid duration"},
		{"soon", 0, "invalid duration"},
		{"[1s]", 0, "expected a duration"},
	}
	for _, tt := range tests {
		var d Duration
		err := yaml.Unmarshal([]byte(tt.in), &d)
		switch {
		case tt.err == "" && (err != nil || d.Std() != tt.want):
			t.Errorf("%q: got %v, %v; want %v", tt.in, d, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
		}
	}
	if out, _ := yaml.Marshal(Duration(90 * time.Second)); string(out) != "1m30s\n" {
		t.Errorf("marshal = %q", out)
	}
}

func TestTagPattern(t *testing.T) {
	tests := []struct {
		pattern string
		err     string // "" means valid
	}{
		{"latest", ""},
		{"v1.2.3", ""},
		{"sha-*", ""},
		{"*", ""},
		{"v?.*", ""},
		{"[a-z]*", ""},
		{"[^.]*", ""},
		{"[!.]*", "never match"}, // path.Match negates with ^; this is the class {!, .}
		{`\*`, "never match"},
		{`v\.1`, ""},
		{"", "empty"},
		{"v[", "invalid pattern"},
		{"a/b*", "never match"},
		{"*:*", "never match"},
		{`[.\-]*`, "never match"},
		{".*", "never match"},
		{"-latest", "not a valid tag"},
		{"with space", "not a valid tag"},
		{strings.Repeat("a", 128), ""},
		{strings.Repeat("a", 129), "not a valid tag"},
		{strings.Repeat("a", 128) + "*", ""},
		{strings.Repeat("a", 128) + "?", "never match"},
		{strings.Repeat("?", 128), ""},
		{"é*", "never match"},
		{"[é]x", "never match"},
	}
	for _, tt := range tests {
		err := checkTagPattern(tt.pattern)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: unexpected error %v", tt.pattern, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want %q", tt.pattern, err, tt.err)
		}
	}
}

func TestValidTagAndMatch(t *testing.T) {
	for tag, want := range map[string]bool{
		"latest": true, "_x": true, "v1.2-rc_3": true, "": false, ".x": false,
		"-x": false, "a:b": false, strings.Repeat("x", 128): true, strings.Repeat("x", 129): false,
	} {
		if deployer.ValidTag(tag) != want {
			t.Errorf("deployer.ValidTag(%q) = %v", tag, !want)
		}
	}
	pats := []string{"latest", "sha-*", "v[", "release-?"}
	for tag, want := range map[string]bool{"latest": true, "sha-abc": true, "v[": false, "release-1": true, "release-10": false} {
		if MatchTag(pats, tag) != want {
			t.Errorf("MatchTag(%q) = %v", tag, !want)
		}
	}
}

func TestExecuteTag(t *testing.T) {
	data := TagData{SHA: strings.Repeat("ab", 20), ShortSHA: "abababa", Branch: "main", RunID: 77, RunNumber: 5}
	tests := []struct {
		tmpl, want, err string
	}{
		{"sha-{{.ShortSHA}}", "sha-abababa", ""},
		{"{{.Branch}}-{{.RunNumber}}", "main-5", ""},
		{"run-{{.RunID}}", "run-77", ""},
		{"{{.SHA}}", strings.Repeat("ab", 20), ""},
		{"latest", "latest", ""},
		{"{{.Commit}}", "", "can't evaluate field Commit"},
		{"{{.ShortSHA", "", "parse tag template"},
		{"{{/* empty */}}", "", "not a valid tag"},
		{"a/{{.Branch}}", "", "not a valid tag"},
		{"{{range 100000}}x{{end}}", "", "too long"},
	}
	for _, tt := range tests {
		got, err := ExecuteTag(tt.tmpl, data)
		switch {
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("%q: got %q, %v; want %q", tt.tmpl, got, err, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want %q", tt.tmpl, err, tt.err)
		}
	}
}

func TestWorkflowRunDefaults(t *testing.T) {
	c := mustParse(t, minimal+"    on: {workflow_run: {workflows: [CI]}}\n", nil)
	if got := c.Services["backend"].On.WorkflowRun.Tag; got != "latest" {
		t.Errorf("workflow_run.tag default = %q, want the first tag", got)
	}
}

func TestWorkflowRunEvents(t *testing.T) {
	c := mustParse(t, minimal+"    on: {workflow_run: {workflows: [CI]}}\n", nil)
	if got := c.Services["backend"].On.WorkflowRun.Events; !reflect.DeepEqual(got, []string{"push"}) {
		t.Errorf("workflow_run.events default = %q, want [push]", got)
	}
	c = mustParse(t, minimal+"    on: {workflow_run: {workflows: [CI], events: [push, workflow_dispatch, release, schedule]}}\n", nil)
	if got := c.Services["backend"].On.WorkflowRun.Events; len(got) != 4 {
		t.Errorf("workflow_run.events = %q, want the four listed", got)
	}

	src := minimal + `    on:
      workflow_run:
        workflows: [CI]
        events:
          - push
          - pull_request
          - pull_request_target
          - workflow_run
          - repository_dispatch
          - Push
          - push
`
	_, err := parse(t, src, nil)
	ps := problems(t, err)
	p := "services.backend.on.workflow_run.events"
	wantProblem(t, ps, p+"[1]", 15, "runs started by pull_request never deploy: a pull_request run builds a pull request's code")
	wantProblem(t, ps, p+"[2]", 16, "runs started by pull_request_target never deploy")
	wantProblem(t, ps, p+"[3]", 17, "runs started by workflow_run never deploy")
	wantProblem(t, ps, p+"[4]", 18, `unknown event "repository_dispatch" (one of push, workflow_dispatch, release, schedule)`)
	wantProblem(t, ps, p+"[5]", 19, `unknown event "Push"`)
	wantProblem(t, ps, p+"[6]", 20, "push listed twice")
	if len(ps) != 6 {
		t.Errorf("got %d problems, want 6:\n%v", len(ps), err)
	}

	_, err = parse(t, minimal+"    on: {workflow_run: {workflows: [CI], events: []}}\n", nil)
	wantProblem(t, problems(t, err), p, 10, "list at least one event")
}

func TestYAMLFeatures(t *testing.T) {
	src := `
github: {webhook_secret: x}
registries: {ghcr.io: ~}
defaults: &svc
  repository: acme/app
  health: {timeout: 5s}
services:
  backend:
    <<: *svc
    image: ghcr.io/acme/backend
`
	// "defaults" is not a key: anchors must live under known keys.
	_, err := parse(t, src, nil)
	wantProblem(t, problems(t, err), "defaults", 4, "unknown key")

	src = `
github: {webhook_secret: x}
registries: {ghcr.io: ~}
services:
  backend: &svc
    image: ghcr.io/acme/backend
    repository: acme/app
    health: {timeout: 5s}
    status: ~
  web:
    <<: *svc
    image: ghcr.io/acme/web
`
	_, err = parse(t, src, nil)
	wantProblem(t, problems(t, err), "services.backend.status", 9, "unknown key")
	c := mustParse(t, strings.Replace(src, "    status: ~\n", "", 1), nil)
	if w := c.Services["web"]; w.Image != "ghcr.io/acme/web" || w.Repository != "acme/app" || w.Health.Timeout != 5*time.Second || w.Container.Name != "web" {
		t.Errorf("merged service = %+v", w)
	}
	if r := c.Registries["ghcr.io"]; r == nil || r.Username != "x-access-token" {
		t.Errorf("null registry entry = %+v", r)
	}
	// yaml cannot merge null: that is one more problem, not the end.
	_, err = parse(t, minimal+"    <<: ~\n    keep_images: 0\n", nil)
	ps := problems(t, err)
	wantProblem(t, ps, "services.backend", 10, `expected a mapping to merge, got "~"`)
	wantProblem(t, ps, "services.backend.keep_images", 11, "at least 1")
}

func TestParseRefusesNonConfig(t *testing.T) {
	tests := []struct{ name, src, msg string }{
		{"empty", "", "github.webhook_secret: required"},
		{"scalar", "hello", "expected a mapping"},
		{"list", "- a\n", "expected a mapping"},
		{"two documents", minimal + "---\n" + minimal, "more than one YAML document"},
		{"syntax", "a: [\n", "parse config"},
		{"bad registry host", strings.Replace(minimal, "ghcr.io: {}", "ghcr: {}", 1), "not a registry host"},
		{"bad service name", strings.Replace(minimal, "backend:", "'back end':", 1), "service name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.src, nil)
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %v, want %q", err, tt.msg)
			}
		})
	}
}

func TestValidateBuiltInCode(t *testing.T) {
	c := &Config{
		GitHub:     GitHub{WebhookSecret: "x"},
		Registries: map[string]*Registry{"ghcr.io": nil},
		Services:   map[string]*deployer.Service{"backend": {Image: "ghcr.io/acme/backend", Repository: "acme/app"}},
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	c.Services["backend"].KeepImages = 0
	err := c.Validate()
	wantProblem(t, problems(t, err), "services.backend.keep_images", 0, "at least 1")
	if want := "services.backend.keep_images: must be at least 1"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Error() = %q, want prefix %q", err, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), env(nil))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not exist", err)
	}
}

func TestSampleTagDataShape(t *testing.T) {
	d := sampleTagData()
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(d.SHA) || d.ShortSHA != d.SHA[:7] {
		t.Errorf("sample data = %+v", d)
	}
}

func TestDeliveryRecoveryInterval(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want Duration
	}{
		{"unset", "", Duration(10 * time.Minute)},
		{"zero turns it off", "  delivery_recovery_interval: 0\n", 0},
		{"explicit", "  delivery_recovery_interval: 30m\n", Duration(30 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, strings.Replace(minimal, "github:\n", "github:\n"+tt.yaml, 1), nil)
			if c.GitHub.DeliveryRecoveryInterval != tt.want {
				t.Errorf("github.delivery_recovery_interval = %v, want %v", c.GitHub.DeliveryRecoveryInterval, tt.want)
			}
		})
	}
	_, err := parse(t, strings.Replace(minimal, "github:\n", "github:\n  delivery_recovery_interval: -1m\n", 1), nil)
	wantProblem(t, problems(t, err), "github.delivery_recovery_interval", 3, "must not be negative")
}
