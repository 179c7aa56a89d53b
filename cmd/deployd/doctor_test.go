package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/deployer/podmantest"
	"github.com/deployd/deployd/deployer/registrytest"
)

// The App of the doctor tests and its installation on acme.
const (
	doctorAppID        = 424242
	doctorInstallation = 9001
)

// The names of the installation checks.
const (
	checkInstallation = "installation"
	checkToken        = "installation token"
)

// How the doctor tests' registry treats GitHub App installation tokens.
const (
	appPull     int32 = iota // the token may pull
	appNoAccess              // login OK, pull denied: ghcr.io and a private package
	appRefused               // the token endpoint answers 403
)

// doctorFixture is a fake GitHub with the App installed on acme, the App's
// key, a webhook secret and a PAT in a temporary directory, and optionally
// a real registry holding acme/v7/backend:latest.
type doctorFixture struct {
	t      *testing.T
	dir    string
	github *githubtest.FakeGitHub
	keyPEM []byte
	secret string
	pat    string

	reg     *registrytest.Registry // nil without a registry
	host    string                 // the registry host services use
	digest  string                 // of acme/v7/backend:latest
	appMode atomic.Int32           // appPull, appNoAccess or appRefused

	extraSecrets []string // webhook secrets of the configurations written
}

func newDoctorFixture(t *testing.T) *doctorFixture {
	t.Helper()
	key, keyPEM := githubtest.NewKey(t)
	f := &doctorFixture{
		t:      t,
		dir:    t.TempDir(),
		github: githubtest.NewFakeGitHub(t, doctorAppID, &key.PublicKey),
		keyPEM: keyPEM,
		secret: "whsec-" + rand.Text(),
		pat:    "ghp_" + rand.Text(),
		host:   "127.0.0.1:1", // nothing listens: for tests that stop before the registry
	}
	f.github.AddInstallation(githubtest.Installation{ID: doctorInstallation, Account: "acme"})
	return f
}

// startRegistry runs a registry whose token endpoint accepts the PAT and,
// as appMode says, the installation tokens the fake GitHub minted, and
// pushes acme/v7/backend:latest to it.
func (f *doctorFixture) startRegistry() {
	f.t.Helper()
	f.reg = registrytest.Start(f.t, registrytest.Options{
		Authorize: func(_, password string, _ registrytest.Scope) ([]string, bool) {
			switch {
			case password == f.pat:
				return []string{"pull"}, true
			case f.github.ValidToken(password):
				switch f.appMode.Load() {
				case appPull:
					return []string{"pull"}, true
				case appNoAccess:
					return nil, true
				}
			}
			return nil, false
		},
	})
	f.host = f.reg.Host()
	pm := podmantest.New(f.t)
	f.digest = pm.BuildApp(f.t, f.reg.Image("acme/v7/backend")+":latest", "v1",
		podmantest.AppOptions{Username: f.reg.PushUser, Password: f.reg.PushPassword})
}

// doctorConfig varies the configuration file of a test.
type doctorConfig struct {
	appID          int64    // 0: doctorAppID
	installationID int64    // github.app.installation_id
	credentials    []string // nil: [github_app, token_file]
	keyMode        os.FileMode
	keyPEM         []byte // nil: the App's key
	tag            string // "" : latest
	noApp          bool
	apiURL         string // "": the fake GitHub
	secret         string // "": the fixture's webhook secret
	brokenService  bool   // leave out required service keys
}

// write writes the secrets and the configuration and returns its path.
func (f *doctorFixture) write(c doctorConfig) string {
	f.t.Helper()
	dir := f.t.TempDir()
	if c.appID == 0 {
		c.appID = doctorAppID
	}
	if c.credentials == nil {
		c.credentials = []string{"github_app", "token_file"}
	}
	if c.keyMode == 0 {
		c.keyMode = 0o600
	}
	if c.keyPEM == nil {
		c.keyPEM = f.keyPEM
	}
	if c.tag == "" {
		c.tag = "latest"
	}
	if c.apiURL == "" {
		c.apiURL = f.github.URL
	}
	if c.secret == "" {
		c.secret = f.secret
	}
	f.extraSecrets = append(f.extraSecrets, c.secret)
	keyPath := writeDoctorFile(f.t, dir, "app.pem", c.keyPEM, c.keyMode)
	secretPath := writeDoctorFile(f.t, dir, "webhook-secret", []byte(c.secret+"\n"), 0o600)
	patPath := writeDoctorFile(f.t, dir, "ghcr-pat", []byte(f.pat+"\n"), 0o600)

	app := fmt.Sprintf("  app:\n    id: %d\n    private_key_file: %s\n    installation_id: %d\n",
		c.appID, keyPath, c.installationID)
	if c.noApp {
		app = ""
	}
	service := fmt.Sprintf("    image: %s/acme/v7/backend\n    repository: acme/v7\n    tags: [%s]\n    container: {name: v7-backend}\n",
		f.host, c.tag)
	if c.brokenService {
		service = "    tags: [latest]\n"
	}
	yaml := fmt.Sprintf(`listen: 127.0.0.1:0
data_dir: %s
github:
  api_url: %s
  webhook_secret_file: %s
%sregistries:
  %s:
    insecure: true
    github_packages: true
    credentials: [%s]
    token_file: %s
services:
  backend:
%s`, filepath.Join(dir, "data"), c.apiURL, secretPath, app, f.host, strings.Join(c.credentials, ", "), patPath, service)
	return writeDoctorFile(f.t, dir, "deployd.yaml", []byte(yaml), 0o600)
}

func writeDoctorFile(t *testing.T, dir, name string, content []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // the umask may have narrowed it
		t.Fatal(err)
	}
	return p
}

// doctor runs `deployd doctor --config path` with more args and returns
// stdout and the error. It fails the test if stdout or stderr holds a
// secret: the PAT, the webhook secret, the key or a minted token.
func (f *doctorFixture) doctor(path string, args ...string) (string, error) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, append([]string{"doctor", "--config", path}, args...), func(string) string { return "" }, &stdout, &stderr)
	out := stdout.String()
	f.t.Logf("deployd doctor:\n%s", out)
	all := out + stderr.String()
	secrets := map[string]string{"PAT": f.pat, "webhook secret": f.secret}
	for i, m := range f.github.Mints() {
		secrets[fmt.Sprintf("minted token %d", i)] = m.Token
	}
	for i, s := range f.extraSecrets {
		secrets[fmt.Sprintf("webhook secret %d", i)] = s
	}
	for i, l := range strings.Split(string(f.keyPEM), "\n")[1:3] {
		secrets[fmt.Sprintf("App key line %d", i+2)] = l
	}
	for what, s := range secrets {
		if s != "" && strings.Contains(all, s) {
			f.t.Errorf("doctor printed the %s", what)
		}
	}
	return out, err
}

// wantLine returns the line of out that starts with status and has check
// right after it, failing the test when there is none; every want must be
// on that line or the line after it (its fix).
func wantLine(t *testing.T, out, status, check string, want ...string) string {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, fmt.Sprintf("%-4s  %s: ", status, check)) {
			continue
		}
		text := l
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "      fix: ") {
			text += "\n" + lines[i+1]
		}
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s %s: %q is missing from\n%s", status, check, w, text)
			}
		}
		return text
	}
	t.Errorf("no line %q %q in:\n%s", status, check, out)
	return ""
}

// wantExit checks that err is nil for code 0, or an exitError with code.
func wantExit(t *testing.T, err error, code int) {
	t.Helper()
	if code == 0 {
		if err != nil {
			t.Errorf("doctor: %v, want exit status 0", err)
		}
		return
	}
	var ee exitError
	if !errors.As(err, &ee) || ee.code != code || ee.msg != "" {
		t.Errorf("doctor: %#v, want exitError{code: %d} without message", err, code)
	}
}

// statuses returns the status word of every check line.
func statuses(out string) []string {
	var st []string
	for _, l := range strings.Split(out, "\n") {
		if l == "" || strings.HasPrefix(l, " ") || !strings.Contains(l, ": ") {
			continue
		}
		if w, _, ok := strings.Cut(l, " "); ok && (w == "OK" || w == "WARN" || w == "FAIL" || w == "SKIP") {
			st = append(st, w)
		}
	}
	return st
}

func TestDoctorGitHubFailures(t *testing.T) {
	f := newDoctorFixture(t)
	_, otherKey := githubtest.NewKey(t)

	t.Run("wrong App ID", func(t *testing.T) {
		out, err := f.doctor(f.write(doctorConfig{appID: 777, credentials: []string{"github_app"}}))
		wantExit(t, err, 1)
		wantLine(t, out, "OK", "App key")
		wantLine(t, out, "FAIL", "App JWT", "GitHub rejected the JWT of App 777", githubtest.MsgJWTUndecodable,
			"fix: check that github.app.id (777) is the App's ID")
		wantLine(t, out, "SKIP", checkInstallation, "needs GitHub to accept the App JWT")
		wantLine(t, out, "SKIP", checkToken)
		wantLine(t, out, "SKIP", "pull backend via github_app", "GitHub refused the App JWT")
		wantLine(t, out, "SKIP", "pull backend", "no credential source could be checked")
	})

	t.Run("wrong key", func(t *testing.T) {
		out, err := f.doctor(f.write(doctorConfig{keyPEM: otherKey, credentials: []string{"github_app"}}))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "App JWT", fmt.Sprintf("GitHub rejected the JWT of App %d", doctorAppID),
			"private key file holds a current key of that App")
		wantLine(t, out, "SKIP", checkInstallation)
	})

	t.Run("clock skew", func(t *testing.T) {
		f.github.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
		defer f.github.SetClock(time.Now)
		out, err := f.doctor(f.write(doctorConfig{credentials: []string{"github_app"}}))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "App JWT", "GitHub rejected the JWT", "fix: this host's clock is ", "behind GitHub's (from the Date header)")
	})

	t.Run("key not RSA", func(t *testing.T) {
		out, err := f.doctor(f.write(doctorConfig{keyPEM: []byte("not a key\n")}))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "App key", "not a PEM file", "fix: download a private key from the App's settings page")
		wantLine(t, out, "SKIP", "App JWT", "needs the App key")
	})

	t.Run("App not installed on the repository", func(t *testing.T) {
		f.github.RemoveInstallation(doctorInstallation)
		f.github.AddInstallation(githubtest.Installation{ID: 1234, Account: "someone-else"})
		defer func() {
			f.github.RemoveInstallation(1234)
			f.github.AddInstallation(githubtest.Installation{ID: doctorInstallation, Account: "acme"})
		}()
		out, err := f.doctor(f.write(doctorConfig{credentials: []string{"github_app"}}))
		wantExit(t, err, 1)
		wantLine(t, out, "OK", "App JWT", `"deployd test" (deployd-test)`)
		wantLine(t, out, "FAIL", "installation for acme/v7", fmt.Sprintf("GitHub App %d is not installed on acme/v7", doctorAppID),
			"fix: install the App on acme/v7")
		wantLine(t, out, "SKIP", "installation token for acme/v7", "needs the installation")
		wantLine(t, out, "SKIP", "pull backend via github_app", "installation on acme/v7 was not found")
	})

	t.Run("configured installation unknown", func(t *testing.T) {
		out, err := f.doctor(f.write(doctorConfig{installationID: 5555, credentials: []string{"github_app"}}))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "installation", "installation 5555 of GitHub App", "fix: check github.app.installation_id")
	})

	t.Run("short webhook secret", func(t *testing.T) {
		out, _ := f.doctor(f.write(doctorConfig{secret: "short-secret", credentials: []string{"github_app"}}))
		wantLine(t, out, "WARN", "webhook secret", "only 12 characters long", "fix: use a random secret of at least 16 characters")
	})

	t.Run("GitHub unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String() + "/"
		ln.Close()
		out, err := f.doctor(f.write(doctorConfig{apiURL: url, credentials: []string{"github_app"}}))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "App JWT", "cannot reach GitHub for GET /app", "fix: check this host's network")
	})

	t.Run("invalid config stops", func(t *testing.T) {
		out, err := f.doctor(f.write(doctorConfig{brokenService: true}))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "config", "problem(s)")
		for _, w := range []string{"services.backend.image", "services.backend.repository", "fix: correct the problems above"} {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q", w)
			}
		}
		if got := statuses(out); len(got) != 1 {
			t.Errorf("doctor went on after a bad config: %v", got)
		}
	})

	t.Run("missing config file", func(t *testing.T) {
		out, err := f.doctor(filepath.Join(t.TempDir(), "nope.yaml"))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "config", "no such file")
	})
}

func TestDoctorRegistry(t *testing.T) {
	f := newDoctorFixture(t)
	f.startRegistry()

	t.Run("everything OK", func(t *testing.T) {
		f.appMode.Store(appPull)
		out, err := f.doctor(f.write(doctorConfig{}))
		wantExit(t, err, 0)
		for _, st := range statuses(out) {
			if st != "OK" {
				t.Errorf("a %s line, want every line OK", st)
			}
		}
		wantLine(t, out, "OK", "config", "1 service, 1 registry")
		wantLine(t, out, "OK", "webhook secret", "characters")
		wantLine(t, out, "OK", "App key", "RSA 2048-bit key, mode 0600")
		wantLine(t, out, "OK", "App JWT", fmt.Sprintf("App %d", doctorAppID))
		wantLine(t, out, "OK", "installation for acme/v7", fmt.Sprintf("installation %d on acme", doctorInstallation))
		wantLine(t, out, "OK", "installation token for acme/v7", "packages: read", "expires", "the installation grants packages: read")
		ref := f.reg.Image("acme/v7/backend") + ":latest"
		wantLine(t, out, "OK", "pull backend via github_app", "pull token granted", ref+" is "+f.digest)
		wantLine(t, out, "OK", "pull backend via token_file", f.digest)
		wantLine(t, out, "OK", "pull backend", "github_app OK → token_file OK: deploys will use github_app")
		if n := f.github.MintCount(); n == 0 {
			t.Error("no installation token was minted")
		}
	})

	for _, mode := range []struct {
		name   string
		mode   int32
		reason string
	}{
		{"registry grants App tokens no access", appNoAccess, "(requested access to the resource is denied)"},
		{"token endpoint refuses App tokens", appRefused, "(403 Forbidden)"},
	} {
		t.Run(mode.name+", PAT works", func(t *testing.T) {
			f.appMode.Store(mode.mode)
			path := f.write(doctorConfig{})
			out, err := f.doctor(path)
			wantExit(t, err, 0) // deploys work: a warning, not a failure
			wantLine(t, out, "OK", "installation token for acme/v7")
			wantLine(t, out, "WARN", "pull backend via github_app",
				"registry denied the GitHub App token for "+f.reg.Image("acme/v7/backend"), mode.reason,
				"GitHub App installation tokens cannot read this private package", "deploys fall back to token_file",
				"fix: for the App to read it, make the package inherit access from a repository the App is installed on",
				"Inherit access from source repository", "not the App")
			wantLine(t, out, "OK", "pull backend via token_file", f.digest)
			wantLine(t, out, "WARN", "pull backend", "github_app denied → token_file OK: deploys will use token_file")
			if slices.Contains(statuses(out), "FAIL") {
				t.Error("a FAIL line although deploys work through token_file")
			}

			_, err = f.doctor(path, "--strict")
			wantExit(t, err, 1)
		})
	}

	t.Run("only the App, and the registry denies it", func(t *testing.T) {
		f.appMode.Store(appNoAccess)
		out, err := f.doctor(f.write(doctorConfig{credentials: []string{"github_app"}}))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "pull backend via github_app", "GitHub App installation tokens cannot read this private package",
			"fix: add token_file with a classic personal access token that has read:packages to registries.", "after github_app",
			"or make the package inherit access", "Inherit access from source repository")
		wantLine(t, out, "FAIL", "pull backend", "github_app denied: no credential source can pull")
	})

	t.Run("App works, PAT is refused", func(t *testing.T) {
		f.appMode.Store(appPull)
		path := f.write(doctorConfig{})
		patPath := filepath.Join(filepath.Dir(path), "ghcr-pat")
		writeDoctorFile(t, filepath.Dir(path), "ghcr-pat", []byte("ghp_revoked\n"), 0o600)
		out, err := f.doctor(path)
		wantExit(t, err, 0)
		wantLine(t, out, "WARN", "pull backend via token_file", "registry denied the token in "+patPath,
			"this fallback would not help", "fix: put a classic personal access token with read:packages")
		wantLine(t, out, "OK", "pull backend", "github_app OK → token_file denied: deploys will use github_app")
	})

	t.Run("key file readable by everyone", func(t *testing.T) {
		f.appMode.Store(appPull)
		out, err := f.doctor(f.write(doctorConfig{keyMode: 0o644}))
		wantExit(t, err, 1)
		text := wantLine(t, out, "FAIL", "App key", "mode 0644", "every user of this host")
		if !strings.Contains(text, "fix: chmod 600 ") {
			t.Errorf("no chmod fix in %q", text)
		}
		wantLine(t, out, "OK", "App JWT") // the key still works: the checks go on
		wantLine(t, out, "OK", "pull backend", "deploys will use github_app")
	})

	t.Run("key file readable by its group", func(t *testing.T) {
		f.appMode.Store(appPull)
		out, err := f.doctor(f.write(doctorConfig{keyMode: 0o640}))
		wantExit(t, err, 0)
		wantLine(t, out, "WARN", "App key", "mode 0640", "fix: chmod 600 ")
	})

	t.Run("tag not in the registry", func(t *testing.T) {
		f.appMode.Store(appPull)
		out, err := f.doctor(f.write(doctorConfig{tag: "v9.9.9", credentials: []string{"github_app"}}))
		wantExit(t, err, 1)
		wantLine(t, out, "FAIL", "pull backend via github_app", "fix: the registry has no such tag or digest")
	})

	t.Run("no App configured", func(t *testing.T) {
		out, err := f.doctor(f.write(doctorConfig{noApp: true, credentials: []string{"token_file"}}))
		wantExit(t, err, 0)
		for _, c := range []string{"App key", "App JWT", checkInstallation, checkToken} {
			wantLine(t, out, "SKIP", c, "no GitHub App configured")
		}
		wantLine(t, out, "OK", "pull backend", "token_file OK: deploys will use token_file")
	})
}
