// Package actionstest is a fake GitHub Actions OIDC issuer for tests: an
// HTTP server with the discovery document and the JWKS (go-oidc's
// oidctest server behind a switch that takes it down), an RSA key made in
// the test, and tokens with the claims GitHub puts in a workflow's token.
//
// It imports nothing of deployd.
package actionstest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/coreos/go-oidc/v3/oidc/oidctest"
)

// KeyID is the key id of the issuer's signing key.
const KeyID = "actions-test-key-1"

// Issuer is a running fake issuer. It is safe for concurrent use.
type Issuer struct {
	// URL is the issuer (iss) and the base of its endpoints.
	URL string
	// Key signs the tokens Token returns; its public half is in the JWKS.
	Key *rsa.PrivateKey

	down       atomic.Bool
	keyFetches atomic.Int64
	jti        atomic.Int64
}

// Start runs an issuer on a loopback port until the test ends.
func Start(t testing.TB) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	i := &Issuer{Key: key}
	inner := &oidctest.Server{PublicKeys: []oidctest.PublicKey{{PublicKey: key.Public(), KeyID: KeyID, Algorithm: gooidc.RS256}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i.down.Load() {
			http.Error(w, "issuer down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/keys" {
			i.keyFetches.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	inner.SetIssuer(srv.URL)
	i.URL = srv.URL
	return i
}

// SetDown makes every endpoint answer 503 (true) or serve again (false).
func (i *Issuer) SetDown(down bool) { i.down.Store(down) }

// KeyFetches returns how many times the JWKS was served.
func (i *Issuer) KeyFetches() int64 { return i.keyFetches.Load() }

// Claims returns the claims of a token GitHub would give a workflow run of
// repository octo-org/octo-repo (id 74, owner id 65) on refs/heads/main in
// environment production, for audience, issued now and valid for 5
// minutes, with a jti of its own. Change them before signing.
func (i *Issuer) Claims(audience string) map[string]any {
	now := time.Now().Unix()
	return map[string]any{
		"jti":                   fmt.Sprintf("jti-%d-%s", i.jti.Add(1), rand.Text()),
		"sub":                   "repo:octo-org/octo-repo:environment:production",
		"aud":                   audience,
		"iss":                   i.URL,
		"environment":           "production",
		"ref":                   "refs/heads/main",
		"sha":                   "e2b6f4b5c0d4a0f3c1c0f0d2b1a9e8f7d6c5b4a3",
		"repository":            "octo-org/octo-repo",
		"repository_owner":      "octo-org",
		"actor_id":              "12",
		"repository_visibility": "private",
		"repository_id":         "74",
		"repository_owner_id":   "65",
		"run_id":                "6512345678",
		"run_number":            "10",
		"run_attempt":           "1",
		"runner_environment":    "github-hosted",
		"actor":                 "octocat",
		"workflow":              "deploy",
		"head_ref":              "",
		"base_ref":              "",
		"event_name":            "push",
		"ref_type":              "branch",
		"workflow_ref":          "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main",
		"job_workflow_ref":      "octo-org/octo-repo/.github/workflows/deploy.yml@refs/heads/main",
		"nbf":                   now - 600,
		"iat":                   now,
		"exp":                   now + 300,
	}
}

// Token signs claims with the issuer's key (RS256, kid KeyID).
func (i *Issuer) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	return Sign(t, i.Key, KeyID, gooidc.RS256, claims)
}

// Sign signs claims with key under alg and kid, for tokens the issuer
// would never make (another key, another algorithm).
func Sign(t testing.TB, key crypto.PrivateKey, kid, alg string, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return oidctest.SignIDToken(key, kid, alg, string(b))
}

// HS256WithPublicKey signs claims with HMAC-SHA256 keyed with the issuer's
// public key in PEM, under the issuer's key id: the classic attack on
// verifiers that take the algorithm from the token.
func (i *Issuer) HS256WithPublicKey(t testing.TB, claims map[string]any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(i.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return Sign(t, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), KeyID, "HS256", claims)
}

// Unsigned returns claims under alg none, with no signature, naming the
// issuer's key id.
func Unsigned(t testing.TB, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"` + KeyID + `"}`))
	return h + "." + base64.RawURLEncoding.EncodeToString(b) + "."
}
