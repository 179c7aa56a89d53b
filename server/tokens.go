package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/server/httperr"
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
	// ExpiresAt is when the token expires; zero if the verifier does not
	// say. A status page login cookie never outlives it.
	ExpiresAt time.Time
	// SingleUse is set for a token that is accepted only once (a GitHub
	// Actions OIDC token): the status page login refuses it, since its
	// cookie would be refused at the next request.
	SingleUse bool
}

// TokenVerifier checks API bearer tokens. Verify returns the caller, or an
// error whose text is safe to show to the client (it says why the token is
// refused, never the token); an *httperr.Error is answered as it is (a
// 503 when no token of that kind can be checked for now), any other error
// is a 401. ctx is the request's: it bounds what the check fetches.
// Implementations must be safe for concurrent use.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (Caller, error)
}

// Scopes the server checks; see apitoken.Claims.Allows for what grants them.
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
// returns an *httperr.Error for 401 (no or invalid token, with a WWW-Authenticate
// challenge), 403 (valid token without the scope) or 503 (no token key
// configured, so no token can be checked).
func (s *Server) authorize(r *http.Request, scope string) (Caller, error) {
	if s.tokens == nil {
		return Caller{}, &httperr.Error{Status: http.StatusServiceUnavailable,
			Message: "the write API is off: neither api.token_key_file nor api.oidc is set",
			Hint:    "set api.token_key_file to a key of at least 32 bytes (head -c 32 /dev/urandom | base64 > api-key), restart deployd and issue a token with deployd token issue; or set api.oidc for GitHub Actions"}
	}
	tok, ok := bearerToken(r)
	if !ok {
		return Caller{}, &httperr.Error{Status: http.StatusUnauthorized, Challenge: bearerRealm,
			Message: "missing API token",
			Hint:    "send Authorization: Bearer TOKEN with a token from deployd token issue --scope " + scope}
	}
	c, err := s.tokens.Verify(r.Context(), tok)
	if he, ok := errors.AsType[*httperr.Error](err); ok {
		zerolog.Ctx(r.Context()).Warn().Str("reason", he.Message).Msg("API token not checked")
		return Caller{}, he
	}
	if err != nil {
		zerolog.Ctx(r.Context()).Info().Str("reason", err.Error()).Msg("API token refused")
		return Caller{}, &httperr.Error{Status: http.StatusUnauthorized, Challenge: bearerRealm + `, error="invalid_token"`,
			Message: err.Error(),
			Hint: "issue a new token with deployd token issue (tokens are only valid on the deployd whose api.token_key_file signed them); " +
				"from GitHub Actions, ask GitHub for a new OIDC token with api.oidc.audience for each call"}
	}
	if c.Allows == nil || !c.Allows(scope) {
		zerolog.Ctx(r.Context()).Info().Str("subject", c.Subject).Str("token_id", c.TokenID).Str("scope", scope).Msg("API token lacks scope")
		hint := "issue a token with --scope " + scope + hintAll(scope)
		if c.SingleUse {
			hint = "add a rule to api.oidc.rules that grants " + scope + " to this run's repository_id (and ref, environment or event_name as needed)"
		}
		return Caller{}, &httperr.Error{Status: http.StatusForbidden,
			Challenge: bearerRealm + `, error="insufficient_scope", scope=` + strconv.Quote(scope),
			Message:   "the token of " + strconv.Quote(c.Subject) + " does not grant " + scope,
			Hint:      hint}
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
// a token granting status:read, which every deploy scope implies, sent as
// an Authorization: Bearer header or, from a browser, in the cookie that
// POST /login sets. Other methods pass: the write endpoints check their own
// deploy scope, from the header only, so the cookie is never a credential
// for a write. With a public status it does nothing.
func (s *Server) requireStatusRead(next http.Handler) http.Handler {
	return s.statusGuard(next, false)
}

// requireStatusPage is requireStatusRead for the status page: a browser
// that asks for it without a usable token or cookie is sent to /login
// instead of getting a 401 JSON error.
func (s *Server) requireStatusPage(next http.Handler) http.Handler {
	return s.statusGuard(next, true)
}

// statusGuard implements requireStatusRead and, with toLogin,
// requireStatusPage.
func (s *Server) statusGuard(next http.Handler, toLogin bool) http.Handler {
	if !s.statusPrivate {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		if _, err := s.authorizeRead(r); err != nil {
			if _, bearer := bearerToken(r); toLogin && !bearer && wantsHTML(r) {
				http.Redirect(w, r, loginPath, http.StatusSeeOther)
				return
			}
			httperr.Write(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorizeRead checks that a reading request may see the status: its
// bearer token if it sends one, else its login cookie, must grant
// status:read. Errors are those of authorize.
func (s *Server) authorizeRead(r *http.Request) (Caller, error) {
	if _, bearer := bearerToken(r); bearer {
		return s.authorize(r, scopeStatusRead)
	}
	tok, ok := loginCookie(r)
	if !ok {
		return s.authorize(r, scopeStatusRead) // the missing token error
	}
	c, err := s.tokens.Verify(r.Context(), tok)
	if err != nil {
		zerolog.Ctx(r.Context()).Info().Str("reason", err.Error()).Msg("login cookie refused")
		return Caller{}, &httperr.Error{Status: http.StatusUnauthorized, Challenge: bearerRealm + `, error="invalid_token"`,
			Message: "the login cookie holds a token that is no longer accepted: " + err.Error(),
			Hint:    "log in again at " + loginPath + " with a current token"}
	}
	if c.Allows == nil || !c.Allows(scopeStatusRead) {
		return Caller{}, &httperr.Error{Status: http.StatusForbidden,
			Challenge: bearerRealm + `, error="insufficient_scope", scope=` + strconv.Quote(scopeStatusRead),
			Message:   "the token of " + strconv.Quote(c.Subject) + " does not grant " + scopeStatusRead,
			Hint:      "log in again at " + loginPath + " with a token issued with --scope " + scopeStatusRead}
	}
	return c, nil
}
