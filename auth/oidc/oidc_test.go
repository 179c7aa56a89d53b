package oidc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/auth/oidc"
	"github.com/deployd/deployd/auth/oidc/actionstest"
	"github.com/deployd/deployd/internal/testclock"
	"github.com/deployd/deployd/internal/testlog"
)

const audience = "deployd-test"

// backendRule is the rule of the examples: main of repository 74 in
// environment production deploys backend.
var backendRule = oidc.Rule{RepositoryID: "74", Ref: "refs/heads/main", Environment: "production", Scopes: []string{"deploy:backend"}}

// newVerifier returns a verifier of iss with rules, ready to check tokens.
func newVerifier(t *testing.T, iss *actionstest.Issuer, cfg oidc.Config) *oidc.Verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg.Issuer, cfg.Audience = iss.URL, audience
	if cfg.Rules == nil {
		cfg.Rules = []oidc.Rule{backendRule}
	}
	v, err := oidc.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, v)
	return v
}

func waitReady(t *testing.T, v *oidc.Verifier) {
	t.Helper()
	select {
	case <-v.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("the verifier did not discover the issuer within 30s")
	}
}

func TestVerifyAcceptsAWorkflowToken(t *testing.T) {
	iss := actionstest.Start(t)
	v := newVerifier(t, iss, oidc.Config{})
	claims := iss.Claims(audience)
	tok := iss.Token(t, claims)
	if !v.Issued(tok) {
		t.Fatal("Issued does not recognise the issuer's token")
	}
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Scopes, []string{"deploy:backend"}) {
		t.Errorf("scopes %v, want [deploy:backend]", c.Scopes)
	}
	if c.RepositoryID != "74" || c.Actor != "octocat" || c.RunID != "6512345678" || c.ID != claims["jti"] {
		t.Errorf("claims %+v do not say what the token does", c)
	}
	if want := time.Unix(claims["exp"].(int64), 0); !c.ExpiresAt.Equal(want) {
		t.Errorf("expires at %v, want %v", c.ExpiresAt, want)
	}
	want := "oidc: octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main run 6512345678 by octocat"
	if got := c.Trigger(); got != want {
		t.Errorf("trigger %q, want %q", got, want)
	}
}

func TestVerifyRefusesBadTokens(t *testing.T) {
	iss := actionstest.Start(t)
	v := newVerifier(t, iss, oidc.Config{})
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	with := func(k string, val any) map[string]any {
		c := iss.Claims(audience)
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	tests := []struct {
		name   string
		token  string
		reason string
	}{
		{"wrong audience", iss.Token(t, with("aud", "another-service")), "wrong audience"},
		{"wrong issuer", iss.Token(t, with("iss", "https://token.actions.example.com")), "wrong issuer"},
		{"expired", iss.Token(t, with("exp", now.Add(-time.Minute).Unix())), "expired"},
		{"no exp", iss.Token(t, with("exp", nil)), "expired"},
		// Two minutes is inside go-oidc's own 5 minutes of nbf leeway: the
		// verifier's 30 seconds refuse it.
		{"nbf in the future", iss.Token(t, with("nbf", now.Add(2*time.Minute).Unix())), "not valid yet"},
		{"nbf far in the future", iss.Token(t, with("nbf", now.Add(time.Hour).Unix())), "not valid yet"},
		{"iat in the future", iss.Token(t, with("iat", now.Add(2*time.Minute).Unix())), "issued in the future"},
		{"no jti", iss.Token(t, with("jti", nil)), "no jti"},
		{"alg none", actionstest.Unsigned(t, iss.Claims(audience)), "not signed with RS256"},
		{"HS256 keyed with the public key", iss.HS256WithPublicKey(t, iss.Claims(audience)), "not signed with RS256"},
		{"ES256 under the issuer's key id", actionstest.Sign(t, ec, actionstest.KeyID, "ES256", iss.Claims(audience)), "not signed with RS256"},
		{"RS384", actionstest.Sign(t, iss.Key, actionstest.KeyID, "RS384", iss.Claims(audience)), "not signed with RS256"},
		{"unknown key id", actionstest.Sign(t, otherRSA, "someone-elses-key", "RS256", iss.Claims(audience)), "not signed by a key of the issuer"},
		{"another key under the issuer's key id", actionstest.Sign(t, otherRSA, actionstest.KeyID, "RS256", iss.Claims(audience)), "not signed by a key of the issuer"},
		{"not a JWT", "ghp_0123456789abcdef", "malformed"},
		{"too long", strings.Repeat("a", 9000), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tt.token)
			if !errors.Is(err, oidc.ErrInvalid) {
				t.Fatalf("Verify: %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not say %q", err, tt.reason)
			}
			if strings.Contains(err.Error(), tt.token) || strings.Contains(err.Error(), "another-service") || strings.Contains(err.Error(), "example.com") {
				t.Errorf("error %q quotes the token", err)
			}
		})
	}
}

func TestVerifyRefusesAReplayedToken(t *testing.T) {
	iss := actionstest.Start(t)
	v := newVerifier(t, iss, oidc.Config{})
	tok := iss.Token(t, iss.Claims(audience))
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(context.Background(), tok)
	if !errors.Is(err, oidc.ErrInvalid) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed token: %v, want ErrInvalid saying it was already used", err)
	}
	// A new token of the same run (same claims, another jti) is fine.
	if _, err := v.Verify(context.Background(), iss.Token(t, iss.Claims(audience))); err != nil {
		t.Errorf("a fresh token after a replay: %v", err)
	}
}

func TestReplayMemoryIsBoundedAndForgetsExpiredTokens(t *testing.T) {
	iss := actionstest.Start(t)
	clock := testclock.New(time.Now())
	v := newVerifier(t, iss, oidc.Config{MaxReplay: 2, Now: clock.Now})
	token := func(exp time.Duration) string {
		c := iss.Claims(audience)
		c["exp"] = clock.Now().Add(exp).Unix()
		return iss.Token(t, c)
	}
	short := token(time.Minute)
	for _, tok := range []string{short, token(10 * time.Minute)} {
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	third := token(10 * time.Minute)
	if _, err := v.Verify(context.Background(), third); !errors.Is(err, oidc.ErrUnavailable) {
		t.Fatalf("third token while two unexpired are remembered: %v, want ErrUnavailable", err)
	}
	clock.Add(2 * time.Minute) // the first token has expired: its id may go
	if _, err := v.Verify(context.Background(), third); err != nil {
		t.Fatalf("third token once the first expired: %v", err)
	}
	if _, err := v.Verify(context.Background(), short); !errors.Is(err, oidc.ErrInvalid) {
		t.Errorf("the expired first token: %v, want ErrInvalid", err)
	}
}

func TestRulesMatchIDsNotNames(t *testing.T) {
	iss := actionstest.Start(t)
	v := newVerifier(t, iss, oidc.Config{Rules: []oidc.Rule{
		backendRule,
		{RepositoryOwnerID: "065", Scopes: []string{"status:read"}},
	}})
	tests := []struct {
		name string
		edit func(c map[string]any)
		want []string
	}{
		{"as GitHub sends it", func(map[string]any) {}, []string{"deploy:backend", "status:read"}},
		{"ids as JSON numbers", func(c map[string]any) { c["repository_id"], c["repository_owner_id"] = 74, 65 }, []string{"deploy:backend", "status:read"}},
		{"another repository of the owner", func(c map[string]any) { c["repository_id"] = "75" }, []string{"status:read"}},
		{"the same name, another repository id (recreated)", func(c map[string]any) {
			c["repository_id"], c["repository_owner_id"] = "9001", "9002"
		}, nil},
		{"another branch", func(c map[string]any) { c["ref"] = "refs/heads/feature" }, []string{"status:read"}},
		{"no environment", func(c map[string]any) { delete(c, "environment") }, []string{"status:read"}},
		{"id not a number", func(c map[string]any) { c["repository_id"], c["repository_owner_id"] = "74a", "6.5e1" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := iss.Claims(audience)
			tt.edit(c)
			got, err := v.Verify(context.Background(), iss.Token(t, c))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Scopes, tt.want) {
				t.Errorf("scopes %v, want %v", got.Scopes, tt.want)
			}
		})
	}
}

func TestRiskyEventsNeedARuleThatNamesThem(t *testing.T) {
	iss := actionstest.Start(t)
	broad := oidc.Rule{RepositoryID: "74", Scopes: []string{"deploy:backend"}}
	named := oidc.Rule{RepositoryID: "74", EventName: oidc.EventWorkflowRun, Scopes: []string{"deploy:web"}}
	v := newVerifier(t, iss, oidc.Config{Rules: []oidc.Rule{broad, named}})
	for event, want := range map[string][]string{
		"push":                      {"deploy:backend"},
		"workflow_dispatch":         {"deploy:backend"},
		oidc.EventPullRequestTarget: nil,
		oidc.EventWorkflowRun:       {"deploy:web"},
	} {
		c := iss.Claims(audience)
		c["event_name"] = event
		got, err := v.Verify(context.Background(), iss.Token(t, c))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Scopes, want) {
			t.Errorf("event %s: scopes %v, want %v", event, got.Scopes, want)
		}
	}
}

func TestCachedKeysWorkWhileTheIssuerIsDown(t *testing.T) {
	iss := actionstest.Start(t)
	v := newVerifier(t, iss, oidc.Config{})
	if _, err := v.Verify(context.Background(), iss.Token(t, iss.Claims(audience))); err != nil {
		t.Fatal(err)
	}
	fetches := iss.KeyFetches()
	if fetches == 0 {
		t.Fatal("the first token was verified without fetching the issuer's keys")
	}
	iss.SetDown(true)
	if _, err := v.Verify(context.Background(), iss.Token(t, iss.Claims(audience))); err != nil {
		t.Fatalf("a token signed with a cached key while the issuer is down: %v", err)
	}
	// A key the cache does not hold cannot be fetched now: refused.
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), actionstest.Sign(t, other, "rotated-key", "RS256", iss.Claims(audience))); !errors.Is(err, oidc.ErrInvalid) {
		t.Errorf("unknown key id while the issuer is down: %v, want ErrInvalid", err)
	}
	if got := iss.KeyFetches(); got != fetches {
		t.Errorf("the issuer served its keys %d more times while down", got-fetches)
	}
}

func TestIssuerUnreachableAtStart(t *testing.T) {
	iss := actionstest.Start(t)
	iss.SetDown(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v, err := oidc.New(ctx, oidc.Config{Issuer: iss.URL, Audience: audience, Rules: []oidc.Rule{backendRule}})
	if err != nil {
		t.Fatalf("New while the issuer is down: %v; start-up must not depend on it", err)
	}
	tok := iss.Token(t, iss.Claims(audience))
	if _, err := v.Verify(ctx, tok); !errors.Is(err, oidc.ErrUnavailable) {
		t.Fatalf("Verify before discovery: %v, want ErrUnavailable", err)
	}
	iss.SetDown(false)
	waitReady(t, v)
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify once the issuer is back: %v", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]oidc.Config{
		"no audience":     {Rules: []oidc.Rule{backendRule}},
		"no id":           {Audience: audience, Rules: []oidc.Rule{{Ref: "refs/heads/main", Scopes: []string{"deploy:backend"}}}},
		"id not a number": {Audience: audience, Rules: []oidc.Rule{{RepositoryID: "octo-org/octo-repo", Scopes: []string{"deploy:backend"}}}},
		"no scope":        {Audience: audience, Rules: []oidc.Rule{{RepositoryID: "74"}}},
	} {
		if _, err := oidc.New(context.Background(), cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

func TestIssued(t *testing.T) {
	iss := actionstest.Start(t)
	v := newVerifier(t, iss, oidc.Config{})
	other := iss.Claims(audience)
	other["iss"] = "deployd"
	for tok, want := range map[string]bool{
		iss.Token(t, iss.Claims(audience)):            true,
		actionstest.Unsigned(t, iss.Claims(audience)): true, // shape only: Verify refuses it
		iss.Token(t, other):                           false,
		"not.a.jwt":                                   false,
		"":                                            false,
	} {
		if got := v.Issued(tok); got != want {
			t.Errorf("Issued(%.40q…) = %v, want %v", tok, got, want)
		}
	}
}

func TestUnknownKeyIDsFetchTheKeysAtMostEveryTenSeconds(t *testing.T) {
	iss := actionstest.Start(t)
	clock := testclock.New(time.Now())
	v := newVerifier(t, iss, oidc.Config{Now: clock.Now})
	if _, err := v.Verify(context.Background(), iss.Token(t, iss.Claims(audience))); err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	unknown := func() string { return actionstest.Sign(t, other, "not-cached", "RS256", iss.Claims(audience)) }
	fetches := iss.KeyFetches()
	clock.Add(11 * time.Second)
	verifyUntilFetched(t, v, unknown, iss, fetches)
	if got := iss.KeyFetches(); got != fetches+1 {
		t.Fatalf("an unknown key id 11s after the last fetch made %d fetches, want 1", got-fetches)
	}
	for range 5 {
		if _, err := v.Verify(context.Background(), unknown()); !errors.Is(err, oidc.ErrInvalid) {
			t.Fatalf("unknown key id: %v, want ErrInvalid", err)
		}
	}
	if got := iss.KeyFetches(); got != fetches+1 {
		t.Errorf("5 more unknown key ids within 10s made %d more fetches, want none", got-fetches-1)
	}
	// The cached key still verifies meanwhile, and after 10s a fetch is
	// let through again.
	if _, err := v.Verify(context.Background(), iss.Token(t, iss.Claims(audience))); err != nil {
		t.Errorf("a token of the cached key while fetches are held back: %v", err)
	}
	clock.Add(11 * time.Second)
	verifyUntilFetched(t, v, unknown, iss, fetches+1)
	if got := iss.KeyFetches(); got != fetches+2 {
		t.Errorf("an unknown key id 11s later made %d fetches in all, want 2", got-fetches)
	}
}

// verifyUntilFetched verifies tokens of unknown() until the issuer has
// seen more than fetches key fetches, at most 100 times. go-oidc hands a
// finished fetch's result to callers that come before it has let go of
// that fetch, so the first token after a fetch may be answered from it
// without asking the issuer.
func verifyUntilFetched(t *testing.T, v *oidc.Verifier, unknown func() string, iss *actionstest.Issuer, fetches int64) {
	t.Helper()
	for range 100 {
		if _, err := v.Verify(context.Background(), unknown()); !errors.Is(err, oidc.ErrInvalid) {
			t.Fatalf("unknown key id: %v, want ErrInvalid", err)
		}
		if iss.KeyFetches() > fetches {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// failingUsedTokens is a UsedTokens whose store cannot be written.
type failingUsedTokens struct{ calls int }

func (f *failingUsedTokens) UseTokenID(context.Context, string, time.Time) (bool, error) {
	f.calls++
	return false, errors.New("write /var/lib/deployd/deployd.db: disk I/O error")
}

// usedTokensFunc adapts a function to UsedTokens.
type usedTokensFunc func(ctx context.Context, id string, exp time.Time) (bool, error)

func (f usedTokensFunc) UseTokenID(ctx context.Context, id string, exp time.Time) (bool, error) {
	return f(ctx, id, exp)
}

func TestVerifyRecordsTokensInUsedTokens(t *testing.T) {
	iss := actionstest.Start(t)
	seen := map[string]time.Time{}
	v := newVerifier(t, iss, oidc.Config{UsedTokens: usedTokensFunc(func(_ context.Context, id string, exp time.Time) (bool, error) {
		_, used := seen[id]
		seen[id] = exp
		return !used, nil
	})})
	c := iss.Claims(audience)
	tok := iss.Token(t, c)
	got, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if exp, ok := seen[c["jti"].(string)]; !ok || !exp.Equal(got.ExpiresAt) {
		t.Errorf("UsedTokens holds %v, want the token's jti until %v", seen, got.ExpiresAt)
	}
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, oidc.ErrInvalid) || !strings.Contains(err.Error(), "already used") {
		t.Errorf("a token UsedTokens knows: %v, want ErrInvalid saying it was already used", err)
	}
}

func TestVerifyRefusesWhenTheTokenCannotBeRecorded(t *testing.T) {
	iss := actionstest.Start(t)
	var logs testlog.Buffer
	used := &failingUsedTokens{}
	v := newVerifier(t, iss, oidc.Config{UsedTokens: used, Log: zerolog.New(&logs)})
	_, err := v.Verify(context.Background(), iss.Token(t, iss.Claims(audience)))
	if !errors.Is(err, oidc.ErrUnavailable) || !strings.Contains(err.Error(), "could not be recorded as used") {
		t.Fatalf("Verify while UsedTokens fails: %v, want ErrUnavailable saying the token could not be recorded", err)
	}
	if strings.Contains(err.Error(), "deployd.db") {
		t.Errorf("the store's error reached the caller: %v", err)
	}
	if used.calls != 1 || !strings.Contains(logs.String(), "disk I/O error") {
		t.Errorf("%d calls to UsedTokens, log %q; want 1 and the cause logged", used.calls, logs.String())
	}
}
