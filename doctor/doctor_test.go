package doctor_test

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

	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/deployer"
	"github.com/deployd/deployd/doctor"
)

// noRegistry is a Resolver for checks that must not reach the registry.
type noRegistry struct{ t *testing.T }

func (r noRegistry) Digest(context.Context, string, deployer.Credential, bool) (string, error) {
	r.t.Error("doctor resolved a tag although every registry check should be skipped")
	return "", fmt.Errorf("no registry")
}

func noClassify(_, _ string, err error) *deployer.Failure {
	return &deployer.Failure{Class: deployer.ClassNetwork, Err: err}
}

// writeConfig writes an App key, a webhook secret and a configuration
// whose one registry lists only github_app and whose GitHub is apiURL, and
// returns the configuration's path.
func writeConfig(t *testing.T, apiURL string) string {
	t.Helper()
	dir := t.TempDir()
	_, keyPEM := githubtest.NewKey(t)
	write := func(name string, content []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := write("app.pem", keyPEM)
	secret := write("webhook-secret", []byte("whsec-0123456789abcdef\n"))
	return write("deployd.yaml", fmt.Appendf(nil, `listen: 127.0.0.1:0
data_dir: %s
github:
  api_url: %s
  webhook_secret_file: %s
  app:
    id: 424242
    private_key_file: %s
registries:
  127.0.0.1:1:
    insecure: true
    github_packages: true
    credentials: [github_app]
services:
  backend:
    image: 127.0.0.1:1/acme/v7/backend
    repository: acme/v7
    tags: [latest]
    container: {name: v7-backend}
`, filepath.Join(dir, "data"), apiURL, secret, key))
}

// wantLine checks that out has a line with status and check and every want.
func wantLine(t *testing.T, out, status, check string, want ...string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, fmt.Sprintf("%-4s  %s: ", status, check)) {
			continue
		}
		for _, w := range want {
			if !strings.Contains(l, w) {
				t.Errorf("%s %s: %q is missing from\n%s", status, check, w, l)
			}
		}
		return
	}
	t.Errorf("no line %q %q in:\n%s", status, check, out)
}

func TestGitHubDoesNotAnswerInTime(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	path := writeConfig(t, hang.URL)
	var out bytes.Buffer
	counts, err := doctor.Run(context.Background(), doctor.Config{
		Out: &out, Getenv: func(string) string { return "" }, Timeout: 300 * time.Millisecond,
		Resolver: noRegistry{t}, Classify: noClassify,
	}, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("doctor:\n%s", out.String())
	if counts.Fail != 1 {
		t.Errorf("counts %+v, want one FAIL", counts)
	}
	wantLine(t, out.String(), "FAIL", "App JWT", "GitHub did not answer GET /app in time")
}

func TestRunNeedsItsDependencies(t *testing.T) {
	var out bytes.Buffer
	for name, cfg := range map[string]doctor.Config{
		"no Out":      {Resolver: noRegistry{t}, Classify: noClassify},
		"no Resolver": {Out: &out, Classify: noClassify},
		"no Classify": {Out: &out, Resolver: noRegistry{t}},
	} {
		if _, err := doctor.Run(context.Background(), cfg, "deployd.yaml"); err == nil {
			t.Errorf("%s: Run succeeded", name)
		}
	}
	if out.Len() != 0 {
		t.Errorf("Run without its dependencies wrote %q", out.String())
	}
}

func TestDataDirOpenMode(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if mode, err := doctor.DataDirOpenMode(dir); err != nil || mode != 0o750 {
		t.Errorf("DataDirOpenMode(0750) = %04o, %v; want 0750", mode, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if mode, err := doctor.DataDirOpenMode(dir); err != nil || mode != 0 {
		t.Errorf("DataDirOpenMode(0700) = %04o, %v; want 0", mode, err)
	}
	if mode, err := doctor.DataDirOpenMode(filepath.Join(dir, "not-yet")); err != nil || mode != 0 {
		t.Errorf("DataDirOpenMode(missing) = %04o, %v; want 0", mode, err)
	}
	if fix := doctor.DataDirFix(dir); !strings.Contains(fix, "chmod 700 "+dir) {
		t.Errorf("DataDirFix = %q", fix)
	}
}
