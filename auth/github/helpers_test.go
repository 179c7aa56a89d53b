package github_test

import (
	"crypto/rsa"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/internal/testclock"
	"github.com/deployd/deployd/internal/testlog"
	"github.com/rs/zerolog"
)

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

func newEnv(t *testing.T, mod ...func(*github.AppConfig)) *env {
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
	cfg := github.AppConfig{
		ID:     testAppID,
		Key:    key,
		APIURL: e.gh.URL,
		Clock:  e.clock.Now,
		Logger: zerolog.New(e.logs),
	}
	for _, m := range mod {
		m(&cfg)
	}
	e.app, err = github.NewApp(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
