package server

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/deployd/deployd/server/httperr"
)

// The status page login. With status.public: false a browser cannot send
// an Authorization header on a page load or an EventSource, so the operator
// pastes an API token into a form once and deployd keeps it in a cookie:
//
//   - the cookie holds the token itself (a signed, expiring JWT; nothing is
//     kept server side), is HttpOnly and SameSite=Strict, Secure over TLS or
//     when public_url is https, and expires no later than the token;
//   - it is accepted only for reading (GET and HEAD of the page, the read
//     API, the event stream and /metrics), never for the write API, so a
//     request forged by another site cannot deploy anything;
//   - POST /login and POST /logout refuse requests whose Origin (or, without
//     one, Referer) is not this deployd.

// Login routes and limits.
const (
	loginPath  = "/login"
	logoutPath = "/logout"
	// loginCookieName names the cookie that holds the token.
	loginCookieName = "deployd_token"
	// maxLoginBody bounds the login form; a token is at most 4 KiB.
	maxLoginBody = 16 << 10
)

// loginData is what login.html renders.
type loginData struct {
	CSS, Icon string
	// Message says why the last attempt failed; "" on a fresh form.
	Message string
}

// loginCookie returns the token in the request's login cookie and whether
// there is one.
func loginCookie(r *http.Request) (string, bool) {
	c, err := r.Cookie(loginCookieName)
	if err != nil || c.Value == "" {
		return "", false
	}
	return c.Value, true
}

// wantsHTML reports whether the client asked for a web page, as a browser
// loading a page does (Accept: text/html,...).
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// loginForm serves GET /login: the form, or a redirect to the status page
// when there is nothing to log in to (public status) or the browser's
// cookie is still good. A cookie that no longer works is cleared and the
// form says why.
func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	if !s.statusPrivate {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	var data loginData
	if tok, ok := loginCookie(r); ok {
		c, err := s.tokens.Verify(r.Context(), tok)
		switch {
		case err != nil:
			data.Message = "Your saved token is no longer accepted (" + err.Error() + "). Paste a current one."
		case c.Allows == nil || !c.Allows(scopeStatusRead):
			data.Message = "Your saved token does not grant " + scopeStatusRead + ". Paste one that does."
		default:
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		s.clearLoginCookie(w, r)
	}
	s.renderLogin(w, r, http.StatusOK, data)
}

// login serves POST /login: it checks the pasted token and, when it grants
// status:read, keeps it in the login cookie and sends the browser to the
// status page (303). A refused token gets the form again with the reason
// (401) and sets nothing.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !s.statusPrivate {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if err := s.checkSameOrigin(r); err != nil {
		httperr.Write(w, r, err)
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/x-www-form-urlencoded" {
		s.renderLogin(w, r, http.StatusUnsupportedMediaType, loginData{Message: "Send the token with the form below."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			s.renderLogin(w, r, http.StatusRequestEntityTooLarge, loginData{Message: "That is far longer than an API token. Paste just the token."})
			return
		}
		s.renderLogin(w, r, http.StatusBadRequest, loginData{Message: "The form could not be read. Try again."})
		return
	}
	// Only the body counts: a token in the query string would be in URLs.
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if tok == "" {
		s.refuseLogin(w, r, "Paste an API token.")
		return
	}
	c, err := s.tokens.Verify(r.Context(), tok)
	if err != nil {
		zerolog.Ctx(r.Context()).Info().Str("reason", err.Error()).Msg("status page login refused")
		s.refuseLogin(w, r, "That token was refused: "+err.Error()+".")
		return
	}
	if c.SingleUse {
		zerolog.Ctx(r.Context()).Info().Str("subject", c.Subject).Str("token_id", c.TokenID).Msg("status page login refused: single-use token")
		s.refuseLogin(w, r, "That token is accepted only once (a GitHub Actions OIDC token), so it cannot keep you logged in. Paste an API token from deployd token issue.")
		return
	}
	if c.Allows == nil || !c.Allows(scopeStatusRead) {
		zerolog.Ctx(r.Context()).Info().Str("subject", c.Subject).Str("token_id", c.TokenID).Msg("status page login refused: no status:read")
		s.refuseLogin(w, r, "The token of "+strconv.Quote(c.Subject)+" does not grant "+scopeStatusRead+
			". Issue one with --scope "+scopeStatusRead+" or any deploy: scope.")
		return
	}
	cookie := s.loginCookieFor(r, tok)
	if !c.ExpiresAt.IsZero() {
		// Never outlive the token; one that is about to expire (it may
		// still pass within the verifier's clock leeway) is refused.
		left := time.Until(c.ExpiresAt)
		if left < time.Second {
			s.refuseLogin(w, r, "That token was refused: it has expired.")
			return
		}
		cookie.MaxAge = int(left / time.Second)
	}
	http.SetCookie(w, cookie)
	zerolog.Ctx(r.Context()).Info().Str("subject", c.Subject).Str("token_id", c.TokenID).Msg("status page login")
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout serves POST /logout: it clears the login cookie and sends the
// browser to the login form (or, with a public status, to the page).
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if err := s.checkSameOrigin(r); err != nil {
		httperr.Write(w, r, err)
		return
	}
	s.clearLoginCookie(w, r)
	w.Header().Set("Cache-Control", "no-store")
	to := "/"
	if s.statusPrivate {
		to = loginPath
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// refuseLogin answers a failed login: the form with message, 401.
func (s *Server) refuseLogin(w http.ResponseWriter, r *http.Request, message string) {
	w.Header().Set("WWW-Authenticate", bearerRealm)
	s.renderLogin(w, r, http.StatusUnauthorized, loginData{Message: message})
}

// renderLogin writes the login form with status.
func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, data loginData) {
	data.CSS, data.Icon = s.page.css, s.page.icon
	var buf bytes.Buffer
	if err := s.page.tmpl.ExecuteTemplate(&buf, "login.html", data); err != nil {
		httperr.Write(w, r, fmt.Errorf("render login form: %w", err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w) // the client went away; nothing to do
}

// loginCookieFor is the login cookie holding tok, without an expiry.
func (s *Server) loginCookieFor(r *http.Request, tok string) *http.Cookie {
	return &http.Cookie{
		Name:     loginCookieName,
		Value:    tok,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   s.secureCookie || r.TLS != nil,
	}
}

// clearLoginCookie tells the browser to drop the login cookie.
func (s *Server) clearLoginCookie(w http.ResponseWriter, r *http.Request) {
	c := s.loginCookieFor(r, "")
	c.MaxAge = -1 // Max-Age=0
	http.SetCookie(w, c)
}

// checkSameOrigin refuses (403) a form post that does not come from this
// deployd's own pages: its Origin header, or without one its Referer, must
// name the host the request was sent to or public_url's origin. A browser
// always sends one of them on a form post (the pages' Referrer-Policy is
// same-origin, so Origin is not "null"); a request with neither is refused.
func (s *Server) checkSameOrigin(r *http.Request) error {
	from := r.Header.Get("Origin")
	if from == "" {
		from = r.Header.Get("Referer")
	}
	if s.sameOrigin(r, from) {
		return nil
	}
	zerolog.Ctx(r.Context()).Warn().Str("path", r.URL.Path).Msg("cross-origin form post refused")
	hint := "post the form from deployd's own " + loginPath + " page"
	if s.publicOrigin == "" {
		hint += "; behind a proxy that rewrites the Host header, set public_url to the URL you open deployd at"
	}
	return &httperr.Error{Status: http.StatusForbidden, Message: "cross-origin form post refused", Hint: hint}
}

// sameOrigin reports whether the origin or referrer URL from is this
// deployd: the request's own host (over https if the request came over
// TLS) or public_url's origin.
func (s *Server) sameOrigin(r *http.Request, from string) bool {
	u, err := url.Parse(from)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return false // includes "null" and ""
	}
	origin := strings.ToLower(u.Scheme + "://" + u.Host)
	if s.publicOrigin != "" && origin == s.publicOrigin {
		return true
	}
	if !strings.EqualFold(u.Host, r.Host) {
		return false
	}
	return r.TLS == nil || u.Scheme == "https"
}
