package server

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// Caller is who a verified API token speaks for.
type Caller struct {
	// Subject is the token's subject, recorded as the trigger of the
	// deployments it asks for.
	Subject string
	// TokenID identifies the token in logs (never the token itself).
	TokenID string
	// Allows reports whether the token grants a scope ("deploy:backend",
	// "status:read"); it must not be nil.
	Allows func(scope string) bool
}

// TokenVerifier checks API bearer tokens. Verify returns the caller, or an
// error whose text is safe to show to the client (it says why the token is
// refused, never the token). Implementations must be safe for concurrent use.
type TokenVerifier interface {
	Verify(token string) (Caller, error)
}

// Scopes the server checks; see auth.Claims.Allows for what grants them.
const scopeStatusRead = "status:read"

func deployScope(service string) string { return "deploy:" + service }

// bearerRealm is the realm of every WWW-Authenticate challenge.
const bearerRealm = `Bearer realm="deployd"`

// bearerToken returns the token of an "Authorization: Bearer TOKEN" header
// and whether there is one.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// authorize checks the request's bearer token and that it grants scope. It
// returns an *Error for 401 (no or invalid token, with a WWW-Authenticate
// challenge), 403 (valid token without the scope) or 503 (no token key
// configured, so no token can be checked).
func (s *Server) authorize(r *http.Request, scope string) (Caller, error) {
	if s.tokens == nil {
		return Caller{}, &Error{Status: http.StatusServiceUnavailable,
			Message: "the write API is off: api.token_key_file is not set",
			Hint:    "set api.token_key_file to a key of at least 32 bytes (head -c 32 /dev/urandom | base64 > api-key), restart deployd and issue a token with deployd token issue"}
	}
	tok, ok := bearerToken(r)
	if !ok {
		return Caller{}, &Error{Status: http.StatusUnauthorized, Challenge: bearerRealm,
			Message: "missing API token",
			Hint:    "send Authorization: Bearer TOKEN with a token from deployd token issue --scope " + scope}
	}
	c, err := s.tokens.Verify(tok)
	if err != nil {
		zerolog.Ctx(r.Context()).Info().Str("reason", err.Error()).Msg("API token refused")
		return Caller{}, &Error{Status: http.StatusUnauthorized, Challenge: bearerRealm + `, error="invalid_token"`,
			Message: err.Error(),
			Hint:    "issue a new token with deployd token issue; tokens are only valid on the deployd whose api.token_key_file signed them"}
	}
	if c.Allows == nil || !c.Allows(scope) {
		zerolog.Ctx(r.Context()).Info().Str("subject", c.Subject).Str("token_id", c.TokenID).Str("scope", scope).Msg("API token lacks scope")
		return Caller{}, &Error{Status: http.StatusForbidden,
			Challenge: bearerRealm + `, error="insufficient_scope", scope=` + strconv.Quote(scope),
			Message:   "the token of " + strconv.Quote(c.Subject) + " does not grant " + scope,
			Hint:      "issue a token with --scope " + scope + hintAll(scope)}
	}
	return c, nil
}

func hintAll(scope string) string {
	if strings.HasPrefix(scope, "deploy:") {
		return " or --scope deploy:*"
	}
	return " or any deploy: scope"
}

// requireStatusRead guards reading requests (GET and HEAD) of the read API,
// the event stream and /metrics when status.public is false: they then need
// a token granting status:read, which every deploy scope implies. Other
// methods pass: the write endpoints check their own deploy scope. With a
// public status it does nothing.
func (s *Server) requireStatusRead(next http.Handler) http.Handler {
	if !s.statusPrivate {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		if _, err := s.authorize(r, scopeStatusRead); err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}
