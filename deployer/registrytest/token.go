package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// signer signs registry tokens. Its self-signed certificate is the
// registry's rootcertbundle and travels in each token's x5c header, which
// is how distribution 2.8 finds and checks the signing key.
type signer struct {
	key     *ecdsa.PrivateKey
	certDER []byte
	certPEM []byte
}

func newSigner() (*signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate token key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "registrytest token signer"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create token certificate: %w", err)
	}
	return &signer{
		key:     key,
		certDER: der,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// access is one entry of a token's "access" claim, as distribution
// expects it.
type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// sign returns a registry token for subject with the granted scopes.
func (s *signer) sign(subject, audience string, granted []Scope, now time.Time, ttl time.Duration) (string, error) {
	acc := make([]access, 0, len(granted))
	for _, g := range granted {
		if g.Type == "" {
			continue // the zero Scope of a login: no resource
		}
		actions := g.Actions
		if actions == nil {
			actions = []string{} // "actions": [] — valid token, no access
		}
		acc = append(acc, access{Type: g.Type, Name: g.Name, Actions: actions})
	}
	claims := jwt.MapClaims{
		"iss":    issuer,
		"sub":    subject,
		"aud":    audience, // distribution 2.8 wants a string, not a list
		"iat":    now.Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"exp":    now.Add(ttl).Unix(),
		"jti":    rand.Text(),
		"access": acc,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["x5c"] = []string{s.x5c()}
	return tok.SignedString(s.key)
}

// x5c returns the signing certificate as an x5c header element.
func (s *signer) x5c() string { return base64.StdEncoding.EncodeToString(s.certDER) }

// serveToken is the token endpoint: GET /token?service=S&scope=SCOPE...
// with HTTP Basic credentials.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/token" {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "only GET is supported")
		return
	}
	q := req.URL.Query()
	rec := TokenRequest{Time: time.Now(), Service: q.Get("service")}
	defer func() { r.record(rec) }()

	// A scope parameter may hold several space-separated scopes.
	for _, param := range q["scope"] {
		for _, s := range strings.Fields(param) {
			sc, err := ParseScope(s)
			if err != nil {
				rec.Status = http.StatusBadRequest
				writeError(w, rec.Status, "INVALID_REQUEST", err.Error())
				return
			}
			rec.Scopes = append(rec.Scopes, sc)
		}
	}

	user, pass, ok := req.BasicAuth()
	if !ok {
		rec.Status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Basic realm="registrytest"`)
		writeError(w, rec.Status, "UNAUTHORIZED", "authentication required")
		return
	}
	rec.Username = user
	if rec.Service != r.service {
		rec.Status = http.StatusBadRequest
		writeError(w, rec.Status, "INVALID_REQUEST", fmt.Sprintf("unknown service %q", rec.Service))
		return
	}

	granted, ok := r.decide(user, pass, rec.Scopes)
	if !ok {
		rec.Status = http.StatusForbidden
		writeError(w, rec.Status, "DENIED", "requested access to the resource is denied")
		return
	}
	now := time.Now()
	token, err := r.signer.sign(user, r.service, granted, now, r.ttl)
	if err != nil {
		rec.Status = http.StatusInternalServerError
		writeError(w, rec.Status, "UNKNOWN", "sign token: "+err.Error())
		return
	}
	rec.Status = http.StatusOK
	rec.Granted = granted
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        token,
		"access_token": token,
		"expires_in":   int(r.ttl / time.Second),
		"issued_at":    now.UTC().Format(time.RFC3339),
	})
}

// decide returns the granted actions for each scope, or ok false when the
// credentials are refused.
func (r *Registry) decide(user, pass string, scopes []Scope) (granted []Scope, ok bool) {
	push := subtle.ConstantTimeCompare([]byte(user), []byte(r.PushUser)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(r.PushPassword)) == 1
	if !push && r.auth == nil {
		return nil, false
	}
	if len(scopes) == 0 {
		if !push {
			if _, ok := r.auth(user, pass, Scope{}); !ok {
				return nil, false
			}
		}
		return []Scope{}, true
	}
	granted = make([]Scope, 0, len(scopes))
	for _, sc := range scopes {
		g := Scope{Type: sc.Type, Name: sc.Name}
		if push {
			g.Actions = slices.Clone(sc.Actions)
		} else {
			actions, ok := r.auth(user, pass, sc)
			if !ok {
				return nil, false
			}
			for _, a := range sc.Actions {
				if slices.Contains(actions, a) || slices.Contains(actions, "*") {
					g.Actions = append(g.Actions, a)
				}
			}
		}
		granted = append(granted, g)
	}
	return granted, true
}

func (r *Registry) record(rec TokenRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, rec)
}

// writeError answers in the registry's error format.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": code, "message": msg}},
	})
}
