package registrytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	readerUser = "reader"
	readerPass = "reader-secret"
	appUser    = "x-access-token"
	appPass    = "ghs_installation-token"
)

// authorize accepts the reader for pulls and the "App" for nothing, like
// ghcr.io with an App installation token and a private package.
func authorize(username, password string, _ Scope) ([]string, bool) {
	switch {
	case username == readerUser && password == readerPass:
		return []string{"pull"}, true
	case username == appUser && password == appPass:
		return nil, true
	}
	return nil, false
}

// getToken asks the token endpoint for scopes with Basic credentials
// (none when user is empty) and returns the status and token.
func getToken(t *testing.T, r *Registry, user, pass string, scopes ...string) (int, string) {
	t.Helper()
	q := url.Values{"service": {r.Service()}, "scope": scopes}
	req, err := http.NewRequest(http.MethodGet, r.TokenURL()+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		IssuedAt    string `json:"issued_at"`
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("decode token response: %v", err)
		}
		if body.Token == "" || body.AccessToken != body.Token || body.ExpiresIn != 300 || body.IssuedAt == "" {
			t.Fatalf("token response = %+v, want token = access_token, expires_in 300, issued_at", body)
		}
	}
	return resp.StatusCode, body.Token
}

// registryGet sends GET path to the registry with a bearer token and
// returns the status and WWW-Authenticate challenge.
func registryGet(t *testing.T, r *Registry, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

func TestChallengeNamesTokenServer(t *testing.T) {
	r := Start(t, Options{})
	status, challenge := registryGet(t, r, "/v2/", "")
	want := fmt.Sprintf(`Bearer realm=%q,service=%q`, r.TokenURL(), r.Service())
	if status != http.StatusUnauthorized || challenge != want {
		t.Fatalf("GET /v2/ = %d %q, want 401 %q", status, challenge, want)
	}
	if !strings.HasPrefix(r.Host(), "127.0.0.1:") || r.Image("team/app") != r.Host()+"/team/app" {
		t.Fatalf("Host() = %q, Image() = %q", r.Host(), r.Image("team/app"))
	}
}

func TestTokenEndpoint(t *testing.T) {
	r := Start(t, Options{Authorize: authorize})
	const scope = "repository:team/app:pull,push"

	tests := []struct {
		name, user, pass string
		wantStatus       int
		wantActions      []string // granted on team/app
	}{
		{"no credentials", "", "", http.StatusUnauthorized, nil},
		{"refused credentials", readerUser, "wrong", http.StatusForbidden, nil},
		{"unknown user", "mallory", readerPass, http.StatusForbidden, nil},
		{"reader gets pull only", readerUser, readerPass, http.StatusOK, []string{"pull"}},
		{"app token gets no access", appUser, appPass, http.StatusOK, nil},
		{"push account gets all", r.PushUser, r.PushPassword, http.StatusOK, []string{"pull", "push"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, token := getToken(t, r, tt.user, tt.pass, scope)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d", status, tt.wantStatus)
			}
			if status != http.StatusOK {
				return
			}
			claims := verify(t, r, token)
			if claims.Subject != tt.user {
				t.Errorf("sub = %q, want %q", claims.Subject, tt.user)
			}
			if len(claims.Access) != 1 || claims.Access[0].Type != "repository" || claims.Access[0].Name != "team/app" {
				t.Fatalf("access = %+v, want one entry for repository team/app", claims.Access)
			}
			if got := claims.Access[0].Actions; !slices.Equal(got, tt.wantActions) {
				t.Errorf("actions = %q, want %q", got, tt.wantActions)
			}
		})
	}

	// Records: one per request, no passwords.
	reqs := r.TokenRequests()
	if len(reqs) != len(tests) {
		t.Fatalf("recorded %d token requests, want %d", len(reqs), len(tests))
	}
	for i, rec := range reqs {
		if rec.Status != tests[i].wantStatus || rec.Username != tests[i].user {
			t.Errorf("request %d recorded as %s %d, want %s %d", i, rec.Username, rec.Status, tests[i].user, tests[i].wantStatus)
		}
		if len(rec.Scopes) != 1 || rec.Scopes[0].String() != scope {
			t.Errorf("request %d scopes = %v, want [%s]", i, rec.Scopes, scope)
		}
		dump := fmt.Sprintf("%+v", rec)
		for _, secret := range []string{readerPass, appPass, r.PushPassword, "wrong"} {
			if strings.Contains(dump, secret) {
				t.Errorf("request %d record contains a password: %s", i, dump)
			}
		}
	}
	if g := reqs[3].Granted; len(g) != 1 || g[0].String() != "repository:team/app:pull" {
		t.Errorf("reader granted %v, want [repository:team/app:pull]", g)
	}
}

// tokenClaims is the claim set distribution 2.8 decodes.
type tokenClaims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  string `json:"aud"` // a string: a list would not decode in 2.8
	ExpiresAt int64  `json:"exp"`
	NotBefore int64  `json:"nbf"`
	IssuedAt  int64  `json:"iat"`
	ID        string `json:"jti"`
	Access    []struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	} `json:"access"`
}

// verify checks token the way distribution does (x5c chain to the root
// certificate, ES256 signature, issuer, audience, time window) and returns
// its claims.
func verify(t *testing.T, r *Registry, token string) tokenClaims {
	t.Helper()
	_, err := jwt.Parse(token, func(tok *jwt.Token) (any, error) {
		x5c, _ := tok.Header["x5c"].([]any)
		if len(x5c) != 1 || x5c[0] != r.signer.x5c() {
			return nil, fmt.Errorf("x5c = %v, want the signing certificate", tok.Header["x5c"])
		}
		return &r.signer.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(issuer), jwt.WithAudience(r.Service()),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatalf("verify token: %v", err)
	}
	part := strings.Split(token, ".")[1]
	raw, err := jwt.NewParser().DecodeSegment(part)
	if err != nil {
		t.Fatal(err)
	}
	var c tokenClaims
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("claims do not decode as distribution 2.8's ClaimSet: %v", err)
	}
	if strings.Contains(string(raw), `"actions":null`) {
		t.Errorf("claims %s: actions must be a list, [] for no access", raw)
	}
	if c.ExpiresAt-c.IssuedAt != 300 || c.NotBefore > time.Now().Unix() || c.ID == "" {
		t.Errorf("claims = %+v: want exp = iat+300, nbf in the past, jti set", c)
	}
	return c
}

// TestRegistryVerifiesTokens proves the registry really checks the tokens:
// a token with pull access reaches the repository (404 for a repository
// that does not exist yet), a token without access and a forged one are
// refused.
func TestRegistryVerifiesTokens(t *testing.T) {
	r := Start(t, Options{Authorize: authorize, Service: "ghcr.test"})
	const path = "/v2/team/app/tags/list"
	const scope = "repository:team/app:pull"

	_, readerToken := getToken(t, r, readerUser, readerPass, scope)
	if status, _ := registryGet(t, r, path, readerToken); status != http.StatusNotFound {
		t.Errorf("reader token: GET %s = %d, want 404 (authorized, no such repository)", path, status)
	}

	_, appToken := getToken(t, r, appUser, appPass, scope)
	if status, _ := registryGet(t, r, "/v2/", appToken); status != http.StatusOK {
		t.Errorf("app token: GET /v2/ = %d, want 200 (valid token, as for podman login)", status)
	}
	status, challenge := registryGet(t, r, path, appToken)
	if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="insufficient_scope"`) {
		t.Errorf("app token: GET %s = %d %q, want 401 insufficient_scope", path, status, challenge)
	}

	other, err := newSigner()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.sign(readerUser, r.Service(), []Scope{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}}, time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wrongAudience, err := r.signer.sign(readerUser, "other-service", []Scope{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}}, time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := r.signer.sign(readerUser, r.Service(), []Scope{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}}, time.Now().Add(-time.Hour), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"forged": forged, "wrong audience": wrongAudience, "expired": expired} {
		status, challenge := registryGet(t, r, path, tok)
		if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
			t.Errorf("%s token: GET %s = %d %q, want 401 invalid_token", name, path, status, challenge)
		}
	}
}

func TestClose(t *testing.T) {
	r := Start(t, Options{})
	r.Close()
	r.Close() // idempotent
	select {
	case <-r.done:
	default:
		t.Fatal("registry process still running after Close")
	}
	client := &http.Client{Timeout: 2 * time.Second}
	if resp, err := client.Get(r.URL() + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /v2/ after Close answered %s, want a connection error", resp.Status)
	}
}

func TestParseScope(t *testing.T) {
	tests := []struct {
		in   string
		want Scope
		err  bool
	}{
		{"repository:team/app:pull,push", Scope{"repository", "team/app", []string{"pull", "push"}}, false},
		{"repository:app:pull", Scope{"repository", "app", []string{"pull"}}, false},
		{"registry:catalog:*", Scope{"registry", "catalog", []string{"*"}}, false},
		{"repository:app:", Scope{"repository", "app", nil}, false},
		{"repository:app", Scope{}, true},
		{"repository::pull", Scope{}, true},
		{":app:pull", Scope{}, true},
		{"", Scope{}, true},
	}
	for _, tt := range tests {
		got, err := ParseScope(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("ParseScope(%q) error = %v, want error %t", tt.in, err, tt.err)
			continue
		}
		if got.Type != tt.want.Type || got.Name != tt.want.Name || !slices.Equal(got.Actions, tt.want.Actions) {
			t.Errorf("ParseScope(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if !tt.err && len(got.Actions) > 0 && got.String() != tt.in {
			t.Errorf("ParseScope(%q).String() = %q", tt.in, got.String())
		}
	}
}
