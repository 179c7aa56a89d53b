// Package apitoken is deployd's own API tokens: HS256 JWTs that deployd
// issues (`deployd token issue`) and checks on its HTTP API. Their claims:
//
//	iss   "deployd"            (Issuer)
//	aud   "deployd-api"        (Audience)
//	sub   who the token is for, recorded as the trigger of the deployments it asks for
//	scope space-separated scopes (a JSON list is accepted too)
//	iat, nbf, exp, jti
//
// A token is only ever valid under the key that signed it: rotating the key
// file revokes every token issued with the old one.
//
// Of deployd's packages it imports only auth, to read the key file.
package apitoken

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/deployd/deployd/auth"
)

// Token claims fixed by deployd.
const (
	Issuer   = "deployd"
	Audience = "deployd-api"
)

// redacted is what every printed form of the key shows.
const redacted = "[redacted]"

// Scopes an API token can carry.
const (
	// ScopeStatusRead reads the status page and the read API when
	// status.public is false.
	ScopeStatusRead = "status:read"
	// ScopeDeployAll deploys and rolls back every service.
	ScopeDeployAll = "deploy:*"
	// ScopeDeployPrefix followed by a service name deploys and rolls back
	// that service.
	ScopeDeployPrefix = "deploy:"
)

// MinKeyBytes is the shortest key accepted, after trimming whitespace.
const MinKeyBytes = 32

// maxAPITokenBytes bounds what Verify parses; deployd's tokens are a few
// hundred bytes.
const maxAPITokenBytes = 4096

// clockLeeway is how far iat, nbf and exp may be off, for clock skew between
// the host that issued a token and the one that checks it.
const clockLeeway = 30 * time.Second

// KeygenHint says how to make a key file.
const KeygenHint = "create one with: head -c 32 /dev/urandom | base64 > api-key && chmod 600 api-key (or deployd token keygen)"

var (
	// ErrInvalid is returned (wrapped, with the reason) by Verify for a
	// token that is malformed, not signed with the key, expired or has the
	// wrong claims. The reason never quotes the token.
	ErrInvalid = errors.New("invalid API token")
	// ErrBadScope is returned (wrapped) by Issue for a malformed scope.
	ErrBadScope = errors.New("bad scope")
)

// scopeNameRE matches the service part of deploy:NAME; it is the service
// name rule of the configuration.
var scopeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ValidScope reports whether s is a scope deployd knows: status:read,
// deploy:* or deploy:NAME with a well-formed service name. The error says
// which scopes exist.
func ValidScope(s string) error {
	switch {
	case s == ScopeStatusRead, s == ScopeDeployAll:
		return nil
	case strings.HasPrefix(s, ScopeDeployPrefix) && scopeNameRE.MatchString(strings.TrimPrefix(s, ScopeDeployPrefix)):
		return nil
	}
	return fmt.Errorf("%w %q: want deploy:SERVICE, deploy:* or status:read", ErrBadScope, s)
}

// Key signs and verifies API tokens. Like every secret of deployd, it never
// prints: its String, GoString, Format, MarshalJSON and MarshalText forms
// are "[redacted]". It is immutable and safe for concurrent use.
type Key struct {
	k   []byte
	now func() time.Time
}

// KeyOption configures an Key.
type KeyOption func(*Key)

// WithClock sets the clock used to issue and check tokens (default time.Now).
func WithClock(now func() time.Time) KeyOption {
	return func(k *Key) { k.now = now }
}

// NewKey returns the key made of material with surrounding whitespace
// trimmed. It fails when fewer than MinKeyBytes remain. The key keeps its
// own copy of material.
func NewKey(material []byte, opts ...KeyOption) (*Key, error) {
	m := bytes.TrimSpace(material)
	if len(m) < MinKeyBytes {
		return nil, fmt.Errorf("API token key is %d bytes; at least %d are needed: %s", len(m), MinKeyBytes, KeygenHint)
	}
	k := &Key{k: bytes.Clone(m), now: time.Now}
	for _, o := range opts {
		o(k)
	}
	return k, nil
}

// LoadKey reads the key file (api.token_key_file). It fails with a
// message naming the path, never the content, when the file is missing,
// unreadable or too short. warning is non-empty when the file is readable
// by group or others: the key still loads.
func LoadKey(path string, opts ...KeyOption) (key *Key, warning string, err error) {
	if path == "" {
		return nil, "", errors.New("load API token key: api.token_key_file is not set; " + KeygenHint)
	}
	data, mode, err := auth.ReadSecretFile("load API token key", path, "; "+KeygenHint)
	if err != nil {
		return nil, "", err
	}
	key, err = NewKey(data, opts...)
	if err != nil {
		return nil, "", fmt.Errorf("load API token key %s: %w", path, err)
	}
	return key, auth.PermissionWarning("API token key", path, mode), nil
}

// GenerateKey returns new key file content: 32 random bytes, base64
// encoded, with a trailing newline.
func GenerateKey() ([]byte, error) {
	b := make([]byte, MinKeyBytes)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate API token key: %w", err)
	}
	return []byte(base64.StdEncoding.EncodeToString(b) + "\n"), nil
}

// String returns "[redacted]".
func (k *Key) String() string { return redacted }

// GoString returns "[redacted]".
func (k *Key) GoString() string { return redacted }

// Format prints "[redacted]" for every verb.
func (k *Key) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalJSON returns the JSON string "[redacted]".
func (k *Key) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "[redacted]".
func (k *Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Claims is what a verified API token says. It holds no secret.
type Claims struct {
	// Subject is who the token is for ("ci", "alice").
	Subject string `json:"subject"`
	// Scopes are the token's scopes as issued.
	Scopes []string `json:"scopes"`
	// ID is the token's unique id (jti), safe to log.
	ID        string    `json:"id,omitempty"`
	IssuedAt  time.Time `json:"issued_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Allows reports whether the token grants scope:
//
//   - a scope the token carries is granted;
//   - deploy:* grants deploy:NAME for every service;
//   - any deploy scope also grants status:read, so that a client that may
//     deploy can follow its deployment (the Location of a 202) and read the
//     status when status.public is false.
//
// status:read grants nothing else.
func (c Claims) Allows(scope string) bool {
	for _, s := range c.Scopes {
		switch {
		case s == scope:
			return true
		case s == ScopeDeployAll && strings.HasPrefix(scope, ScopeDeployPrefix):
			return true
		case scope == ScopeStatusRead && strings.HasPrefix(s, ScopeDeployPrefix):
			return true
		}
	}
	return false
}

// scopeClaim is the scope claim: a space-separated string when issued, a
// string or a list of strings when read.
type scopeClaim []string

func (s scopeClaim) MarshalJSON() ([]byte, error) { return json.Marshal(strings.Join(s, " ")) }

func (s *scopeClaim) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = strings.Fields(one)
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("scope claim must be a string or a list of strings")
	}
	*s = nil
	for _, m := range many {
		*s = append(*s, strings.Fields(m)...)
	}
	return nil
}

// tokenClaims is the JWT body of an API token.
type tokenClaims struct {
	Scope scopeClaim `json:"scope"`
	jwt.RegisteredClaims
}

// Issue returns a signed token for subject with scopes, valid for ttl from
// now. It fails for an empty subject, no scopes, a scope ValidScope refuses
// or a ttl that is not positive.
func (k *Key) Issue(subject string, scopes []string, ttl time.Duration) (string, error) {
	subject = strings.TrimSpace(subject)
	switch {
	case subject == "":
		return "", errors.New("issue API token: no subject (say who the token is for, e.g. ci)")
	case len(scopes) == 0:
		return "", errors.New("issue API token: no scope (e.g. deploy:backend, deploy:* or status:read)")
	case ttl <= 0:
		return "", errors.New("issue API token: the lifetime must be positive (e.g. 720h)")
	}
	seen := make(map[string]bool, len(scopes))
	var clean []string
	for _, s := range scopes {
		if err := ValidScope(s); err != nil {
			return "", fmt.Errorf("issue API token: %w", err)
		}
		if !seen[s] {
			seen[s] = true
			clean = append(clean, s)
		}
	}
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("issue API token: %w", err)
	}
	now := k.now().Truncate(time.Second)
	claims := tokenClaims{
		Scope: clean,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Audience:  jwt.ClaimStrings{Audience},
			Subject:   subject,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			ID:        base64.RawURLEncoding.EncodeToString(id),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(k.k)
	if err != nil {
		return "", fmt.Errorf("issue API token: %w", err)
	}
	return s, nil
}

// Verify checks a token: HS256 only (alg none and every other algorithm
// are refused), signed with this key, issuer Issuer, audience
// Audience, exp present and not passed, iat and nbf not in the future
// (30s leeway each), a subject and at least one scope. It returns the claims,
// or an error wrapping ErrInvalid that says why without quoting the
// token.
func (k *Key) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(token) > maxAPITokenBytes {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, maxAPITokenBytes)
	}
	p := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(Issuer),
		jwt.WithAudience(Audience),
		jwt.WithLeeway(clockLeeway),
		jwt.WithTimeFunc(k.now),
		jwt.WithStrictDecoding(),
	)
	var tc tokenClaims
	_, err := p.ParseWithClaims(token, &tc, func(t *jwt.Token) (any, error) {
		return k.k, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %s", ErrInvalid, verifyReason(err))
	}
	if strings.TrimSpace(tc.Subject) == "" {
		return Claims{}, fmt.Errorf("%w: no subject", ErrInvalid)
	}
	if len(tc.Scope) == 0 {
		return Claims{}, fmt.Errorf("%w: no scope", ErrInvalid)
	}
	c := Claims{Subject: tc.Subject, Scopes: tc.Scope, ID: tc.ID, ExpiresAt: tc.ExpiresAt.Time}
	if tc.IssuedAt != nil {
		c.IssuedAt = tc.IssuedAt.Time
	}
	return c, nil
}

// verifyReason turns a jwt error into a short reason of our own words, so
// that nothing from the token is echoed.
func verifyReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "not signed with this deployd's key using HS256"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unsupported signing algorithm"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "a required claim (exp, iss or aud) is missing"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	default:
		return "claims are malformed"
	}
}
