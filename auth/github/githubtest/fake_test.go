package githubtest_test

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/internal/testclock"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-github/v62/github"
)

const appID = 31337

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(t *testing.T, f *githubtest.FakeGitHub, path, auth string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.URL+strings.TrimPrefix(path, "/"), nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := f.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Message string }
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body.Message, resp.Header
}

func TestFakeChecksTheJWTLikeGitHub(t *testing.T) {
	key, _ := githubtest.NewKey(t)
	other, _ := githubtest.NewKey(t)
	f := githubtest.NewFakeGitHub(t, appID, &key.PublicKey)
	f.SetClock(func() time.Time { return now })
	good := jwt.MapClaims{"iss": "31337", "iat": now.Add(-time.Minute).Unix(), "exp": now.Add(9 * time.Minute).Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for n, x := range good {
			c[n] = x
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		token  string
		status int
		msg    string
	}{
		{"valid", sign(t, jwt.SigningMethodRS256, key, good), 200, ""},
		{"numeric iss", sign(t, jwt.SigningMethodRS256, key, with("iss", appID)), 200, ""},
		{"other key", sign(t, jwt.SigningMethodRS256, other, good), 401, githubtest.MsgJWTUndecodable},
		{"other app", sign(t, jwt.SigningMethodRS256, key, with("iss", "1")), 401, githubtest.MsgJWTUndecodable},
		{"no iss", sign(t, jwt.SigningMethodRS256, key, with("iss", nil)), 401, githubtest.MsgJWTUndecodable},
		{"HS256", sign(t, jwt.SigningMethodHS256, []byte("k"), good), 401, githubtest.MsgJWTUndecodable},
		{"garbage", "not.a.jwt", 401, githubtest.MsgJWTUndecodable},
		{"expired", sign(t, jwt.SigningMethodRS256, key, with("exp", now.Add(-time.Second).Unix())), 401, githubtest.MsgJWTExpired},
		{"no exp", sign(t, jwt.SigningMethodRS256, key, with("exp", nil)), 401, githubtest.MsgJWTExpired},
		{"exp too far", sign(t, jwt.SigningMethodRS256, key, with("exp", now.Add(11*time.Minute).Unix())), 401, githubtest.MsgJWTTooFar},
		{"window too long", sign(t, jwt.SigningMethodRS256, key, with("iat", now.Add(-5*time.Minute).Unix())), 401, githubtest.MsgJWTTooFar},
		{"iat in the future", sign(t, jwt.SigningMethodRS256, key, with("iat", now.Add(time.Minute).Unix())), 401, githubtest.MsgJWTIssuedAt},
	} {
		status, msg, hdr := get(t, f, "/app", "Bearer "+tc.token)
		if status != tc.status || msg != tc.msg {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, msg, tc.status, tc.msg)
		}
		if d, err := http.ParseTime(hdr.Get("Date")); err != nil || !d.Equal(now) {
			t.Errorf("%s: Date %q, want the fake's clock", tc.name, hdr.Get("Date"))
		}
	}
	if status, _, _ := get(t, f, "/app", ""); status != 401 {
		t.Errorf("no Authorization: %d", status)
	}
}

// appTransport signs a fresh JWT for every request.
type appTransport struct {
	key *rsa.PrivateKey
	now func() time.Time
}

func (a appTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "31337", "iat": a.now().Add(-time.Minute).Unix(), "exp": a.now().Add(9 * time.Minute).Unix(),
	}).SignedString(a.key)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+s)
	return http.DefaultTransport.RoundTrip(r)
}

func client(f *githubtest.FakeGitHub, c *github.Client) *github.Client {
	c.BaseURL, _ = c.BaseURL.Parse(f.URL)
	return c
}

func TestFakeMintsTokensAndRecordsDeployments(t *testing.T) {
	key, _ := githubtest.NewKey(t)
	f := githubtest.NewFakeGitHub(t, appID, &key.PublicKey)
	clk := testclock.New(now) // shared with the fake's handlers
	f.SetClock(clk.Now)
	f.AddInstallation(githubtest.Installation{ID: 5, Account: "Acme", Repositories: []string{"v7"}})
	ctx := context.Background()
	app := client(f, github.NewClient(&http.Client{Transport: appTransport{key: key, now: clk.Now}}))

	inst, _, err := app.Apps.FindRepositoryInstallation(ctx, "acme", "V7")
	if err != nil || inst.GetID() != 5 {
		t.Fatalf("installation: %v, %v", inst, err)
	}
	if _, _, err := app.Apps.FindRepositoryInstallation(ctx, "acme", "other"); err == nil {
		t.Error("found an installation for a repository outside it")
	}
	tok, _, err := app.Apps.CreateInstallationToken(ctx, 5, &github.InstallationTokenOptions{
		Repositories: []string{"v7"},
		Permissions:  &github.InstallationPermissions{Packages: github.String("read"), Deployments: github.String("write")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !tok.GetExpiresAt().Time.Equal(now.Add(time.Hour)) || !f.ValidToken(tok.GetToken()) || f.ValidToken("ghs_other") {
		t.Fatalf("token expires %v, valid %v", tok.GetExpiresAt(), f.ValidToken(tok.GetToken()))
	}
	if m := f.Mints()[0]; m.Permissions["packages"] != "read" || m.Repositories[0] != "v7" || f.MintCount() != 1 {
		t.Errorf("mint = %+v", m)
	}
	if _, _, err := app.Apps.CreateInstallationToken(ctx, 5, &github.InstallationTokenOptions{
		Permissions: &github.InstallationPermissions{Administration: github.String("write")},
	}); err == nil || !strings.Contains(err.Error(), "not granted") {
		t.Errorf("ungranted permission: %v", err)
	}

	repo := client(f, github.NewClient(nil).WithAuthToken(tok.GetToken()))
	d, _, err := repo.Repositories.CreateDeployment(ctx, "acme", "v7", &github.DeploymentRequest{
		Ref: github.String("sha256:abc"), Environment: github.String("production"), AutoMerge: github.Bool(false),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := repo.Repositories.CreateDeploymentStatus(ctx, "acme", "v7", d.GetID(), &github.DeploymentStatusRequest{
		State: github.String("success"), LogURL: github.String("https://deploy.example.com/d/1"),
	}); err != nil {
		t.Fatal(err)
	}
	ds, ss := f.Deployments(), f.DeploymentStatuses()
	if len(ds) != 1 || ds[0].Ref != "sha256:abc" || len(ss) != 1 || ss[0].State != "success" || ss[0].DeploymentID != d.GetID() {
		t.Errorf("recorded %+v %+v", ds, ss)
	}

	clk.Add(time.Hour)
	if f.ValidToken(tok.GetToken()) {
		t.Error("token valid after expires_at")
	}
	if _, _, err := repo.Repositories.CreateDeployment(ctx, "acme", "v7", &github.DeploymentRequest{Ref: github.String("x")}); err == nil {
		t.Error("expired token accepted")
	}
}
