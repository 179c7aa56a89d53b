package apitoken_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/deployd/deployd/auth/apitoken"
	"github.com/deployd/deployd/auth/github/githubtest"
	"github.com/deployd/deployd/internal/testclock"
)

const testAPIKey = "0123456789abcdef0123456789abcdef-test-key"

func newClock() *testclock.Clock { return testclock.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) }

func apiKey(t *testing.T, opts ...apitoken.KeyOption) *apitoken.Key {
	t.Helper()
	k, err := apitoken.NewKey([]byte(testAPIKey+"\n"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign makes a token with arbitrary claims and method, as an attacker or a
// foreign issuer would.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func goodClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss":   apitoken.Issuer,
		"aud":   apitoken.Audience,
		"sub":   "ci",
		"scope": "deploy:backend",
		"iat":   now.Unix(),
		"nbf":   now.Unix(),
		"exp":   now.Add(time.Hour).Unix(),
	}
}

func TestAPITokenRoundTrip(t *testing.T) {
	c := newClock()
	k := apiKey(t, apitoken.WithClock(c.Now))
	tok, err := k.Issue("ci", []string{"deploy:backend", "status:read", "deploy:backend"}, 720*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "ci" || strings.Join(got.Scopes, " ") != "deploy:backend status:read" {
		t.Errorf("claims = %+v", got)
	}
	if !got.ExpiresAt.Equal(c.Now().Add(720*time.Hour)) || got.ID == "" {
		t.Errorf("expiry %v id %q", got.ExpiresAt, got.ID)
	}
	// Just before expiry it still holds; after expiry (and the leeway) not.
	c.Add(720*time.Hour - time.Second)
	if _, err := k.Verify(tok); err != nil {
		t.Errorf("before expiry: %v", err)
	}
	c.Add(time.Minute + time.Second)
	if _, err := k.Verify(tok); !errors.Is(err, apitoken.ErrInvalid) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("after expiry: %v", err)
	}
}

func TestAPITokenScopeClaimAsList(t *testing.T) {
	c := newClock()
	k := apiKey(t, apitoken.WithClock(c.Now))
	cl := goodClaims(c.Now())
	cl["scope"] = []string{"deploy:web", "status:read"}
	got, err := k.Verify(sign(t, jwt.SigningMethodHS256, []byte(testAPIKey), cl))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Allows("deploy:web") || got.Allows("deploy:backend") {
		t.Errorf("scopes = %v", got.Scopes)
	}
}

func TestAPITokenRefused(t *testing.T) {
	c := newClock()
	now := c.Now()
	k := apiKey(t, apitoken.WithClock(c.Now))
	rsaKey, _ := githubtest.NewKey(t)
	with := func(change func(jwt.MapClaims)) jwt.MapClaims {
		cl := goodClaims(now)
		change(cl)
		return cl
	}
	noneToken := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims(now)).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	secret := []byte(testAPIKey)
	tests := []struct {
		name, token, reason string
	}{
		{"empty", "", "empty"},
		{"garbage", "not.a.jwt", "malformed"},
		{"alg none", noneToken(), "HS256"},
		{"alg none without signature", strings.TrimSuffix(noneToken(), "."), "malformed"},
		{"RS256", sign(t, jwt.SigningMethodRS256, rsaKey, goodClaims(now)), "HS256"},
		{"HS384 same key", sign(t, jwt.SigningMethodHS384, secret, goodClaims(now)), "HS256"},
		{"HS512 same key", sign(t, jwt.SigningMethodHS512, secret, goodClaims(now)), "HS256"},
		{"other key", sign(t, jwt.SigningMethodHS256, []byte("another-key-another-key-another-key!!"), goodClaims(now)), "key"},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })), "expired"},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { delete(c, "exp") })), "exp, iss or aud"},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["aud"] = "someone-else" })), "audience"},
		{"no audience", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { delete(c, "aud") })), "exp, iss or aud"},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["iss"] = "github" })), "issuer"},
		{"not before in the future", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })), "not valid yet"},
		{"issued in the future", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Hour).Unix() })), "future"},
		{"no subject", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { delete(c, "sub") })), "subject"},
		{"no scope", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { delete(c, "scope") })), "scope"},
		{"scope of wrong type", sign(t, jwt.SigningMethodHS256, secret, with(func(c jwt.MapClaims) { c["scope"] = 7 })), "malformed"},
		{"too long", strings.Repeat("a", 5000), "longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := k.Verify(tt.token)
			if !errors.Is(err, apitoken.ErrInvalid) {
				t.Fatalf("Verify = %v, want ErrInvalidToken", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not say %q", err, tt.reason)
			}
			if tt.token != "" && len(tt.token) > 20 && strings.Contains(err.Error(), tt.token[len(tt.token)-20:]) {
				t.Errorf("error quotes the token: %q", err)
			}
		})
	}
}

func TestAPITokenLeewayForSkew(t *testing.T) {
	c := newClock()
	k := apiKey(t, apitoken.WithClock(c.Now))
	cl := goodClaims(c.Now().Add(10 * time.Second)) // issued by a host 10s ahead
	if _, err := k.Verify(sign(t, jwt.SigningMethodHS256, []byte(testAPIKey), cl)); err != nil {
		t.Errorf("10s skew refused: %v", err)
	}
}

func TestAPITokenIssueRefusesBadInput(t *testing.T) {
	k := apiKey(t)
	tests := []struct {
		subject string
		scopes  []string
		ttl     time.Duration
		want    string
	}{
		{"", []string{"deploy:backend"}, time.Hour, "subject"},
		{"ci", nil, time.Hour, "scope"},
		{"ci", []string{"deploy:backend"}, 0, "positive"},
		{"ci", []string{"deploy:"}, time.Hour, "deploy:SERVICE"},
		{"ci", []string{"admin"}, time.Hour, "deploy:SERVICE"},
		{"ci", []string{"deploy:back end"}, time.Hour, "deploy:SERVICE"},
		{"ci", []string{"status:write"}, time.Hour, "deploy:SERVICE"},
	}
	for _, tt := range tests {
		_, err := k.Issue(tt.subject, tt.scopes, tt.ttl)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Issue(%q, %v, %v) = %v, want error with %q", tt.subject, tt.scopes, tt.ttl, err, tt.want)
		}
	}
}

func TestClaimsAllows(t *testing.T) {
	tests := []struct {
		scopes []string
		scope  string
		want   bool
	}{
		{[]string{"deploy:backend"}, "deploy:backend", true},
		{[]string{"deploy:backend"}, "deploy:web", false},
		{[]string{"deploy:backend"}, "deploy:*", false},
		{[]string{"deploy:backend"}, "status:read", true},
		{[]string{"deploy:*"}, "deploy:backend", true},
		{[]string{"deploy:*"}, "deploy:web", true},
		{[]string{"deploy:*"}, "status:read", true},
		{[]string{"status:read"}, "status:read", true},
		{[]string{"status:read"}, "deploy:backend", false},
		{[]string{"status:read"}, "deploy:*", false},
		{[]string{"deploy:web", "status:read"}, "deploy:web", true},
		{nil, "status:read", false},
		{[]string{"deploy:backendx"}, "deploy:backend", false},
		{[]string{"deploy:back"}, "deploy:backend", false},
	}
	for _, tt := range tests {
		if got := (apitoken.Claims{Subject: "x", Scopes: tt.scopes}).Allows(tt.scope); got != tt.want {
			t.Errorf("%v allows %q = %v, want %v", tt.scopes, tt.scope, got, tt.want)
		}
	}
}

func TestAPIKeyMaterial(t *testing.T) {
	if _, err := apitoken.NewKey([]byte("   short   \n")); err == nil || !strings.Contains(err.Error(), "/dev/urandom") {
		t.Errorf("short key: %v", err)
	}
	gen, err := apitoken.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apitoken.NewKey(gen); err != nil {
		t.Errorf("generated key refused: %v", err)
	}
	k := apiKey(t)
	for _, got := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s %q %x", k, k, k, k, k, k), string(must(json.Marshal(k)))} {
		if strings.Contains(got, "0123456789") {
			t.Errorf("key printed: %q", got)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestLoadAPIKey(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "api-key")
	if err := os.WriteFile(good, []byte(testAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, warning, err := apitoken.LoadKey(good)
	if err != nil || warning != "" {
		t.Fatalf("LoadAPIKey = %v, %q", err, warning)
	}
	// The loaded key verifies what the same material signed.
	tok, err := apiKey(t).Issue("ci", []string{"status:read"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Verify(tok); err != nil {
		t.Errorf("loaded key: %v", err)
	}

	open := filepath.Join(dir, "open-key")
	if err := os.WriteFile(open, []byte(testAPIKey), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, warning, err := apitoken.LoadKey(open); err != nil || !strings.Contains(warning, "chmod 600") {
		t.Errorf("world-readable key: %v, warning %q", err, warning)
	}

	short := filepath.Join(dir, "short-key")
	if err := os.WriteFile(short, []byte("tiny-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"":                            "token_key_file is not set",
		filepath.Join(dir, "missing"): "does not exist",
		dir:                           "directory",
		short:                         "at least 32",
	} {
		_, _, err := apitoken.LoadKey(path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadAPIKey(%q) = %v, want %q", path, err, want)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), []byte("tiny-secret")) {
			t.Errorf("error quotes the key: %v", err)
		}
	}
}
