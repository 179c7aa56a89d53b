package github_test

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github"
	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/golang-jwt/jwt/v5"
)

func asGitHubError(t *testing.T, err error, kind github.ErrorKind) *github.Error {
	t.Helper()
	var ge *github.Error
	if !errors.As(err, &ge) {
		t.Fatalf("error %v (%T) is not a *github.Error", err, err)
	}
	if ge.Kind != kind {
		t.Fatalf("kind = %s, want %s; error: %v", ge.Kind, kind, err)
	}
	return ge
}

func TestVerify(t *testing.T) {
	e := newEnv(t)
	info, err := e.app.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != testAppID || info.Slug == "" || info.Permissions["packages"] != "read" {
		t.Errorf("Verify = %+v", info)
	}
}

func TestEnterpriseAPIURL(t *testing.T) {
	var e *env
	e = newEnv(t, func(c *github.AppConfig) { c.APIURL = "" })
	if got := e.app.APIURL(); got != github.DefaultAPIURL {
		t.Errorf("default APIURL = %q", got)
	}
	e = newEnv(t)
	app, err := github.NewApp(github.AppConfig{ID: testAppID, Key: mustKey(t), APIURL: e.gh.EnterpriseURL(), Clock: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(app.APIURL(), "/api/v3/") {
		t.Errorf("APIURL = %q, want a trailing slash", app.APIURL())
	}
	if _, err := app.Verify(context.Background()); err != nil {
		t.Fatalf("Verify through /api/v3: %v", err)
	}
}

func mustKey(t *testing.T) *github.PrivateKey {
	t.Helper()
	_, p := appKey(t)
	k, err := github.ParsePrivateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewAppRefusesBadConfig(t *testing.T) {
	k := mustKey(t)
	for name, cfg := range map[string]github.AppConfig{
		"no id":        {Key: k},
		"no key":       {ID: 1},
		"relative url": {ID: 1, Key: k, APIURL: "api.github.com"},
		"ftp url":      {ID: 1, Key: k, APIURL: "ftp://example.com/"},
		"credentials":  {ID: 1, Key: k, APIURL: "https://user:pw@example.com/"},
	} {
		if _, err := github.NewApp(cfg); err == nil {
			t.Errorf("%s: NewApp accepted %+v", name, cfg)
		}
	}
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

func TestJWTClaims(t *testing.T) {
	rt := &recordingTransport{}
	e := newEnv(t, func(c *github.AppConfig) { c.Transport = rt })
	if _, err := e.app.Verify(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw, ok := strings.CutPrefix(rt.auths[0], "Bearer ")
	if !ok {
		t.Fatalf("Authorization = %q", rt.auths[0])
	}
	k, _ := appKey(t)
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return &k.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(e.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Method.Alg() != "RS256" {
		t.Errorf("alg = %s", tok.Method.Alg())
	}
	now := e.clock.Now()
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	iss, _ := claims.GetIssuer()
	if iss != strconv.Itoa(testAppID) {
		t.Errorf("iss = %q", iss)
	}
	if !iat.Equal(now.Add(-60 * time.Second)) {
		t.Errorf("iat = %v, want now-60s", iat)
	}
	if d := exp.Sub(now); d <= 0 || d > 10*time.Minute || exp.Sub(iat.Time) > 10*time.Minute {
		t.Errorf("exp = now+%v (iat..exp %v), want within GitHub's 10 minutes", d, exp.Sub(iat.Time))
	}
}

func TestInstallationTokenConcurrentCallersShareOneMint(t *testing.T) {
	e := newEnv(t)
	const callers = 100
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		toks  = make([]string, callers)
		errs  = make([]error, callers)
	)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tok, _, err := e.app.InstallationToken(context.Background(), testInstallation, []string{"acme/v7"})
			toks[i], errs[i] = tok.Reveal(), err
		}()
	}
	close(start)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if toks[i] != toks[0] {
			t.Fatalf("caller %d got a different token", i)
		}
	}
	if n := e.gh.MintCount(); n != 1 {
		t.Fatalf("mints = %d, want 1", n)
	}
	if !e.gh.ValidToken(toks[0]) {
		t.Error("the token is not one the fake minted")
	}
	if s := e.app.Stats(); s.Mints != 1 || len(s.Tokens) != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestInstallationTokenRefreshedFiveMinutesBeforeExpiry(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	first, exp, err := e.app.InstallationToken(ctx, testInstallation, []string{"v7"})
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clock.Now().Add(time.Hour); !exp.Equal(want) {
		t.Fatalf("expiry = %v, want %v", exp, want)
	}
	st := e.app.Stats()
	if !st.Tokens[0].ExpiresAt.Equal(exp) || !st.Tokens[0].RefreshAt.Equal(exp.Add(-5*time.Minute)) {
		t.Errorf("Stats tokens = %+v", st.Tokens)
	}

	e.clock.Add(55*time.Minute - time.Second)
	again, _, err := e.app.InstallationToken(ctx, testInstallation, []string{"v7"})
	if err != nil {
		t.Fatal(err)
	}
	if again.Reveal() != first.Reveal() || e.gh.MintCount() != 1 {
		t.Fatalf("token replaced %v before the refresh window (mints %d)", exp.Sub(e.clock.Now()), e.gh.MintCount())
	}

	e.clock.Add(time.Second) // exactly 5 minutes before expiry
	fresh, exp2, err := e.app.InstallationToken(ctx, testInstallation, []string{"v7"})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Reveal() == first.Reveal() || e.gh.MintCount() != 2 {
		t.Fatalf("no fresh token 5 minutes before expiry (mints %d)", e.gh.MintCount())
	}
	if !exp2.After(exp) {
		t.Errorf("new expiry %v not after %v", exp2, exp)
	}
}

func TestInstallationTokenCacheKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	get := func(repos ...string) string {
		t.Helper()
		tok, _, err := e.app.InstallationToken(ctx, testInstallation, repos)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Reveal()
	}
	a := get("acme/v7", "web")
	if b := get("web", "V7", "v7"); b != a {
		t.Error("same repositories in another order or case minted a new token")
	}
	if c := get(); c == a {
		t.Error("a token for all repositories reused the down-scoped one")
	}
	if _, _, err := e.app.ScopedToken(ctx, testInstallation, github.Permissions{"deployments": "write"}, []string{"v7"}); err != nil {
		t.Fatal(err)
	}
	if n := e.gh.MintCount(); n != 3 {
		t.Errorf("mints = %d, want 3 (one per key)", n)
	}
	e.app.Invalidate(testInstallation, []string{"v7", "web"})
	if d := get("v7", "web"); d == a {
		t.Error("Invalidate did not force a fresh token")
	}
	if n := e.gh.MintCount(); n != 4 {
		t.Errorf("mints = %d, want 4", n)
	}
}

func TestScopedTokenRefusesBadPermissions(t *testing.T) {
	e := newEnv(t)
	for _, p := range []github.Permissions{nil, {"packages": "reed"}, {"no_such_permission": "read"}} {
		if _, _, err := e.app.ScopedToken(context.Background(), testInstallation, p, nil); err == nil {
			t.Errorf("ScopedToken accepted permissions %v", p)
		}
	}
	if _, _, err := e.app.InstallationToken(context.Background(), 0, nil); err == nil {
		t.Error("InstallationToken accepted installation 0")
	}
	if e.gh.Requests() != 0 {
		t.Errorf("bad requests reached GitHub")
	}
}

func TestDownScopingBody(t *testing.T) {
	e := newEnv(t)
	if _, _, err := e.app.InstallationToken(context.Background(), testInstallation, []string{"acme/v7"}); err != nil {
		t.Fatal(err)
	}
	m := e.gh.Mints()[0]
	if m.InstallationID != testInstallation ||
		!reflect.DeepEqual(m.Permissions, map[string]string{"packages": "read"}) ||
		!reflect.DeepEqual(m.Repositories, []string{"v7"}) {
		t.Errorf("GitHub received %+v, want packages: read for repository v7", m)
	}
}

func TestWrongKeyIsPlainWords(t *testing.T) {
	e := newEnv(t)
	other, _ := githubtest.NewKey(t)
	e.gh.SetPublicKey(&other.PublicKey)
	_, err := e.app.Verify(context.Background())
	ge := asGitHubError(t, err, github.KindBadJWT)
	msg := err.Error()
	for _, want := range []string{"rejected the JWT of App 424242", "401", githubtest.MsgJWTUndecodable, "github.app.id", "private key"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if ge.Status != 401 || ge.Op != "GET /app" {
		t.Errorf("Status %d Op %q", ge.Status, ge.Op)
	}
	_, _, err = e.app.InstallationToken(context.Background(), testInstallation, nil)
	asGitHubError(t, err, github.KindBadJWT)
}

func TestWrongAppIDIsPlainWords(t *testing.T) {
	e := newEnv(t, func(c *github.AppConfig) { c.ID = 999 })
	_, err := e.app.Verify(context.Background())
	asGitHubError(t, err, github.KindBadJWT)
	if !strings.Contains(err.Error(), "github.app.id (999)") {
		t.Errorf("error %q does not point at the App ID", err)
	}
}

func TestClockSkewIsNamed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offset time.Duration // this host's clock minus GitHub's
		want   string
	}{
		{"ahead", 5 * time.Minute, "this host's clock is 5m0s ahead of GitHub's"},
		{"behind", -15 * time.Minute, "this host's clock is 15m0s behind GitHub's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e *env
			e = newEnv(t, func(c *github.AppConfig) {
				c.Clock = func() time.Time { return e.clock.Now().Add(tc.offset) }
			})
			_, err := e.app.Verify(context.Background())
			ge := asGitHubError(t, err, github.KindBadJWT)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if ge.ClockOffset != -tc.offset {
				t.Errorf("ClockOffset = %v, want %v", ge.ClockOffset, -tc.offset)
			}
		})
	}
	t.Run("small skew is not blamed", func(t *testing.T) {
		e := newEnv(t)
		other, _ := githubtest.NewKey(t)
		e.gh.SetPublicKey(&other.PublicKey)
		_, err := e.app.Verify(context.Background())
		if strings.Contains(err.Error(), "clock") {
			t.Errorf("error blames the clock without skew: %v", err)
		}
	})
}

func TestGitHubDownServesCachedToken(t *testing.T) {
	for name, mode := range map[string]githubtest.Down{
		"refused": githubtest.DownRefused, "hang-up": githubtest.DownHangUp, "503": githubtest.Down500,
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			tok, exp, err := e.app.InstallationToken(ctx, testInstallation, []string{"v7"})
			if err != nil {
				t.Fatal(err)
			}
			e.gh.SetDown(mode)
			e.clock.Add(56 * time.Minute) // inside the refresh window
			got, gotExp, err := e.app.InstallationToken(ctx, testInstallation, []string{"v7"})
			if err != nil {
				t.Fatalf("GitHub down with a valid cached token: %v", err)
			}
			if got.Reveal() != tok.Reveal() || !gotExp.Equal(exp) {
				t.Error("did not serve the cached token")
			}
			if !strings.Contains(e.logs.String(), "using the cached one") {
				t.Errorf("no warning logged: %s", e.logs)
			}
			asked := e.gh.Requests()
			if _, _, err := e.app.InstallationToken(ctx, testInstallation, []string{"v7"}); err != nil {
				t.Fatal(err)
			}
			if e.gh.Requests() != asked {
				t.Error("asked GitHub again right after a failed refresh")
			}

			e.clock.Add(5 * time.Minute) // past expiry
			_, _, err = e.app.InstallationToken(ctx, testInstallation, []string{"v7"})
			asGitHubError(t, err, github.KindUnreachable)

			e.gh.SetDown(githubtest.Up)
			if _, _, err := e.app.InstallationToken(ctx, testInstallation, []string{"v7"}); err != nil {
				t.Fatalf("GitHub back: %v", err)
			}
			if s := e.app.Stats(); s.Mints != 2 || s.MintFailures != 2 || s.StaleServed != 2 {
				t.Errorf("Stats = %+v", s)
			}
		})
	}
}

func TestGitHubDownWithoutCache(t *testing.T) {
	e := newEnv(t)
	e.gh.SetDown(githubtest.DownRefused)
	_, _, err := e.app.InstallationToken(context.Background(), testInstallation, nil)
	asGitHubError(t, err, github.KindUnreachable)
	for _, want := range []string{"cannot reach GitHub", "connection refused", "network"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	e.gh.SetDown(githubtest.DownHangUp)
	_, _, err = e.app.InstallationToken(context.Background(), testInstallation, nil)
	asGitHubError(t, err, github.KindUnreachable)

	e.gh.SetDown(githubtest.Down500)
	_, err = e.app.Verify(context.Background())
	asGitHubError(t, err, github.KindUnreachable)
	if !strings.Contains(err.Error(), "503") {
		t.Errorf("error = %v", err)
	}
}

func TestCallerContextEndsWait(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := e.app.InstallationToken(ctx, testInstallation, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
}

func TestInstallationNotFound(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.app.InstallationForRepo(ctx, "acme", "secret-repo")
	asGitHubError(t, err, github.KindNotInstalled)
	if !strings.Contains(err.Error(), "App 424242 is not installed on acme/secret-repo") {
		t.Errorf("error = %v", err)
	}

	_, _, err = e.app.InstallationToken(ctx, 5, nil)
	asGitHubError(t, err, github.KindNotInstalled)
	if !strings.Contains(err.Error(), "installation 5") || !strings.Contains(err.Error(), "installation_id") {
		t.Errorf("error = %v", err)
	}

	_, err = e.app.Installation(ctx, 5)
	asGitHubError(t, err, github.KindNotInstalled)

	_, _, err = e.app.InstallationToken(ctx, testInstallation, []string{"secret-repo"})
	asGitHubError(t, err, github.KindNotInstalled)
	if !strings.Contains(err.Error(), "cannot access repository secret-repo") {
		t.Errorf("error = %v", err)
	}
}

func TestInstallationLookupCached(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for range 3 {
		id, err := e.app.InstallationForRepo(ctx, "Acme", "v7")
		if err != nil {
			t.Fatal(err)
		}
		if id != testInstallation {
			t.Fatalf("id = %d", id)
		}
	}
	if n := e.gh.Requests(); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
	info, err := e.app.Installation(ctx, testInstallation)
	if err != nil || info.Account != "acme" || info.RepositorySelection != "selected" {
		t.Errorf("Installation = %+v, %v", info, err)
	}

	// A reinstalled App has a new installation id: the old one 404s on mint
	// and the lookup is done again.
	e.gh.RemoveInstallation(testInstallation)
	e.gh.AddInstallation(githubtest.Installation{ID: 78, Account: "acme"})
	id, _ := e.app.ResolveInstallation(ctx, 0, "acme/v7")
	if _, _, err := e.app.InstallationToken(ctx, id, nil); err == nil {
		t.Fatal("minted for a removed installation")
	}
	if id, err := e.app.ResolveInstallation(ctx, 0, "acme/v7"); err != nil || id != 78 {
		t.Errorf("after reinstall: id %d, %v; want 78", id, err)
	}
}

func TestResolveInstallation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if id, _ := e.app.ResolveInstallation(ctx, 9, "acme/v7"); id != 9 {
		t.Errorf("delivery's installation not used: %d", id)
	}
	if id, err := e.app.ResolveInstallation(ctx, 0, "acme/v7"); err != nil || id != testInstallation {
		t.Errorf("lookup: %d, %v", id, err)
	}
	if _, err := e.app.ResolveInstallation(ctx, 0, ""); err == nil {
		t.Error("no installation and no repository: no error")
	}
	if _, err := e.app.ResolveInstallation(ctx, 0, "just-a-name"); err == nil {
		t.Error("repository without owner: no error")
	}
	cfgd := newEnv(t, func(c *github.AppConfig) { c.InstallationID = 12 })
	if id, _ := cfgd.app.ResolveInstallation(ctx, 0, "acme/v7"); id != 12 {
		t.Errorf("configured installation not used: %d", id)
	}
}

func TestMissingPermission(t *testing.T) {
	e := newEnv(t)
	e.gh.AddInstallation(githubtest.Installation{ID: testInstallation, Account: "acme", Permissions: map[string]string{"metadata": "read"}})
	_, _, err := e.app.InstallationToken(context.Background(), testInstallation, nil)
	asGitHubError(t, err, github.KindPermission)
	for _, want := range []string{"packages: read", "Packages: Read-only"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestRateLimited(t *testing.T) {
	e := newEnv(t)
	reset := time.Now().Add(20 * time.Minute).Truncate(time.Second)
	e.gh.SetRateLimited(reset)
	_, _, err := e.app.InstallationToken(context.Background(), testInstallation, nil)
	ge := asGitHubError(t, err, github.KindRateLimited)
	if !ge.RateLimitReset.Equal(reset) {
		t.Errorf("reset = %v, want %v", ge.RateLimitReset, reset)
	}
	if !strings.Contains(err.Error(), reset.UTC().Format(time.RFC3339)) {
		t.Errorf("error %q lacks the reset time", err)
	}
}
