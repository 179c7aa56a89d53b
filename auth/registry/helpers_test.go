package registry_test

import (
	"crypto/rsa"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/internal/testclock"
	"github.com/deployd/deployd/internal/testlog"
)

// The chain's tests run against the fake GitHub the way package github's
// own tests do: one App on one installation, a settable clock, a log buffer.

const (
	testAppID        = 424242
	testInstallation = 77
)

// The App key is generated once: RSA generation is slow.
var (
	keyOnce sync.Once
	keyRSA  *rsa.PrivateKey
	keyPEM  []byte
)

func appKey(t *testing.T) (*rsa.PrivateKey, []byte) {
	t.Helper()
	keyOnce.Do(func() { keyRSA, keyPEM = githubtest.NewKey(t) })
	return keyRSA, keyPEM
}

func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

// env is a fake GitHub with one installation on acme (repositories v7 and
// web) and an App pointed at it, sharing a fake clock.
type env struct {
	gh    *githubtest.FakeGitHub
	app   *github.App
	clock *testclock.Clock
	logs  *testlog.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	k, pemBytes := appKey(t)
	e := &env{clock: newClock(), logs: &testlog.Buffer{}}
	e.gh = githubtest.NewFakeGitHub(t, testAppID, &k.PublicKey)
	e.gh.SetClock(e.clock.Now)
	e.gh.AddInstallation(githubtest.Installation{ID: testInstallation, Account: "acme", Repositories: []string{"v7", "web"}})
	key, err := github.ParsePrivateKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	e.app, err = github.NewApp(github.AppConfig{
		ID:     testAppID,
		Key:    key,
		APIURL: e.gh.URL,
		Clock:  e.clock.Now,
		Logger: zerolog.New(e.logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func writeFile(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is masked by umask
		t.Fatal(err)
	}
	return p
}

// recordingTransport keeps the Authorization header of every request.
type recordingTransport struct {
	mu    sync.Mutex
	auths []string
}

// String and GoString keep the recorded JWTs out of printed configs: the
// recorder is the test's, not a leak of the code under test.
func (r *recordingTransport) String() string   { return "recordingTransport" }
func (r *recordingTransport) GoString() string { return "recordingTransport" }

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.auths = append(r.auths, req.Header.Get("Authorization"))
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}
